// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Interrupt translation table entry (ITE) format: IMPLEMENTATION DEFINED (IHI 0069H §5.2).
//!
//! The first eight bytes of each `GITS_TYPER.ITT_entry_size`-byte entry hold one
//! little-endian word: Valid \[63\], ICID \[47:32\], pINTID \[31:0\]. Bytes past the first
//! eight are written as zero and ignored on read.

const ITE_VALID: u64 = 1 << 63;
/// Bits \[62:48\]: never written by this ITS.
const ITE_RESERVED: u64 = super::genmask(62, 48);

/// A valid event mapping (what MAPTI/MAPI record, IHI 0069H §5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IttEntry {
    /// Physical LPI INTID.
    pub intid: u32,
    /// Interrupt collection.
    pub icid: u16,
}

/// Encode an ITE; `None` encodes an invalid entry.
pub fn encode(entry: Option<IttEntry>) -> u64 {
    match entry {
        None => 0,
        Some(e) => ITE_VALID | (u64::from(e.icid) << 32) | u64::from(e.intid),
    }
}

/// Decode an ITE word read from guest memory: `None` (invalid) when Valid is clear or a
/// reserved bit (\[62:48\]) is set, since MAPTI never writes those. The caller still checks
/// the INTID and ICID against what the ITS advertises (`Its::read_ite`), since guest memory
/// may hold anything.
pub fn decode(word: u64) -> Option<IttEntry> {
    if word & ITE_VALID == 0 || word & ITE_RESERVED != 0 {
        return None;
    }
    Some(IttEntry {
        intid: word as u32,
        icid: (word >> 32) as u16,
    })
}

/// Guest address of the ITE for `event_id` in an ITT at `itt_addr` with `entry_size`-byte
/// entries; `None` on address overflow.
pub fn entry_address(itt_addr: u64, event_id: u32, entry_size: u8) -> Option<u64> {
    itt_addr.checked_add(u64::from(event_id) * u64::from(entry_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let e = IttEntry {
            intid: 0xffff_ffff,
            icid: 0xffff,
        };
        assert_eq!(decode(encode(Some(e))), Some(e));
        assert_eq!(decode(0x7fff_ffff_ffff_ffff), None);
        assert_eq!(decode(encode(Some(e)) | (1 << 48)), None, "reserved bit");
        assert_eq!(entry_address(0x1000, 3, 16), Some(0x1030));
        assert_eq!(entry_address(u64::MAX - 8, 1, 16), None);
    }
}
