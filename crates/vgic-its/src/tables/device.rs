// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Device table entry (DTE) format: IMPLEMENTATION DEFINED (IHI 0069H §5.2), chosen here to
//! mirror the MAPD fields.
//!
//! One little-endian 64-bit word: Valid \[63\], ITT_addr\[51:8\] in bits \[51:8\],
//! Size (EventID bits - 1) in bits \[4:0\]; everything else zero.
//!
//! The guest can write its Device table itself (software must not, IHI 0069H §5.2, but a
//! hostile guest does), so [`decode`] accepts exactly the words [`encode`] produces for an
//! entry this ITS could have made: a valid word with a reserved bit set, or with a Size
//! beyond `GITS_TYPER.ID_bits` (MAPD would have refused it with `ITTSIZE_OOR`), reads as an
//! invalid entry (`UNMAPPED_DEVICE`), the way KVM refuses such a DTE when it restores a
//! table. Test: `guest_written_tables_are_not_trusted` (tests/its.rs).

use super::genmask;

const DTE_VALID: u64 = 1 << 63;
const DTE_ITT_MASK: u64 = genmask(51, 8);
const DTE_SIZE_MASK: u64 = 0x1f;

/// A valid device mapping (what MAPD with V = 1 records, IHI 0069H §5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceEntry {
    /// Guest physical address of the device's ITT (256-byte aligned).
    pub itt_addr: u64,
    /// Number of EventID bits the ITT covers (`Size + 1`, 1..=32).
    pub event_id_bits: u8,
}

impl DeviceEntry {
    /// Whether `event_id` is inside the range MAPD gave (`EventID < 2^(Size+1)`).
    pub fn covers(&self, event_id: u32) -> bool {
        u64::from(event_id) >> self.event_id_bits == 0
    }
}

/// Encode a DTE; `None` encodes an invalid entry.
pub fn encode(entry: Option<DeviceEntry>) -> u64 {
    match entry {
        None => 0,
        Some(e) => {
            DTE_VALID
                | (e.itt_addr & DTE_ITT_MASK)
                | (u64::from(e.event_id_bits.saturating_sub(1)) & DTE_SIZE_MASK)
        }
    }
}

/// Decode a DTE read from guest memory for an ITS with `max_event_id_bits` EventID bits
/// (`GITS_TYPER.ID_bits + 1`). `None` (invalid) unless the word is one MAPD could have
/// written: Valid set, no reserved bit set, `Size + 1 <= max_event_id_bits`.
pub fn decode(word: u64, max_event_id_bits: u8) -> Option<DeviceEntry> {
    if word & DTE_VALID == 0 || word & !(DTE_VALID | DTE_ITT_MASK | DTE_SIZE_MASK) != 0 {
        return None;
    }
    let event_id_bits = (word & DTE_SIZE_MASK) as u8 + 1;
    (event_id_bits <= max_event_id_bits).then_some(DeviceEntry {
        itt_addr: word & DTE_ITT_MASK,
        event_id_bits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let e = DeviceEntry {
            itt_addr: 0x000f_ffff_ffff_ff00,
            event_id_bits: 32,
        };
        assert_eq!(decode(encode(Some(e)), 32), Some(e));
        assert_eq!(decode(encode(Some(e)), 31), None, "Size beyond ID_bits");
        assert_eq!(decode(encode(None), 32), None);
        // Reserved bits set: not a word MAPD writes.
        assert_eq!(decode(u64::MAX, 32), None);
        assert_eq!(decode(encode(Some(e)) | (1 << 62), 32), None);
        assert_eq!(decode(encode(Some(e)) | (1 << 5), 32), None);
        let g = decode(DTE_VALID | DTE_ITT_MASK | DTE_SIZE_MASK, 32).unwrap();
        assert_eq!(g.event_id_bits, 32);
        assert_eq!(g.itt_addr, 0x000f_ffff_ffff_ff00);
        assert!(g.covers(u32::MAX));
        let four = DeviceEntry {
            itt_addr: 0x1000,
            event_id_bits: 4,
        };
        assert_eq!(decode(encode(Some(four)), 4), Some(four));
        assert_eq!(decode(encode(Some(four)), 3), None);
        let small = DeviceEntry {
            itt_addr: 0,
            event_id_bits: 1,
        };
        assert!(small.covers(1) && !small.covers(2));
    }
}
