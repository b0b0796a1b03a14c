// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Collection table entry (CTE) format: IMPLEMENTATION DEFINED (IHI 0069H §5.2).
//!
//! One little-endian 64-bit word: Valid \[63\], target processor number \[31:0\]
//! (`GITS_TYPER.PTA == 0`, so MAPC's RDbase is a processor number, IHI 0069H §5.3).
//! The table is indexed by ICID from 0, also when `GITS_TYPER.HCC` collections are held on
//! chip (those ICIDs never touch the table).

const CTE_VALID: u64 = 1 << 63;
/// Bits \[62:32\]: never written by this ITS.
const CTE_RESERVED: u64 = super::genmask(62, 32);

/// Encode a CTE; `None` encodes an unmapped collection.
pub fn encode(target: Option<u32>) -> u64 {
    match target {
        None => 0,
        Some(t) => CTE_VALID | u64::from(t),
    }
}

/// Decode a CTE read from guest memory: unmapped unless the word is one MAPC could have
/// written, that is Valid set, bits \[62:32\] clear and a target below `vcpus` (a word
/// with high bits set used to truncate to a small, valid-looking processor number).
pub fn decode(word: u64, vcpus: u32) -> Option<u32> {
    if word & CTE_VALID == 0 || word & CTE_RESERVED != 0 {
        return None;
    }
    let target = word as u32;
    (target < vcpus).then_some(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_range() {
        assert_eq!(decode(encode(Some(3)), 4), Some(3));
        assert_eq!(decode(encode(Some(4)), 4), None);
        assert_eq!(decode(encode(None), 4), None);
        assert_eq!(decode(u64::MAX, u32::MAX), None);
        assert_eq!(decode(encode(Some(1)) | (1 << 32), 4), None, "high bits");
    }
}
