// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The Stream table: from a StreamID to the address of its STE, linear or 2-level
//! (IHI 0070 §3.3, §5.1 L1STD, §6.3.23-§6.3.24 `SMMU_STRTAB_BASE`/`_CFG`).
//!
//! Every lookup is at most two guest reads of fixed size (an 8-byte L1STD, a 64-byte STE).
//!
//! - `LOG2SIZE` above `IDR1.SIDSIZE` behaves as `SIDSIZE`; a StreamID at or above
//!   `2^LOG2SIZE` is `C_BAD_STREAMID`.
//! - `FMT` values other than 0b00/0b01, and 0b01 when 2-level tables are not advertised,
//!   behave as linear (§6.3.24: "Other values are reserved, behave as 0b00").
//! - `SPLIT` values other than 6, 8, 10 behave as 6.
//! - The base is aligned by the SMMU: linear tables to `2^(LOG2SIZE + 6)` bytes, 2-level
//!   level-1 tables to `max(64, 2^(LOG2SIZE - SPLIT + 3))` bytes, using the literal
//!   `LOG2SIZE` (§6.3.23).
//! - An L1STD with `Span` 0 or reserved (12..=31), or `Span - 1 > SPLIT`, or a StreamID
//!   beyond the level-2 array it describes, makes the StreamID invalid: `C_BAD_STREAMID`
//!   (§5.1.1). `L2Ptr` is aligned to the level-2 array's size.
//! - A read that guest RAM does not back is `F_STE_FETCH` with the address read.

use vm_memory::GuestMemory;

use crate::fault::TranslateFault;
use crate::mem;
use crate::regs::{STRTAB_BASE_ADDR_MASK, mask};

/// Bytes per STE.
pub const STE_SIZE: u64 = 64;

/// The Stream table's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An array of STEs.
    Linear,
    /// Level-1 descriptors indexed by `StreamID[LOG2SIZE-1:SPLIT]`.
    TwoLevel {
        /// The effective split point (6, 8 or 10).
        split: u8,
    },
}

/// The Stream table as the registers describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamTable {
    /// Effective base address.
    pub base: u64,
    /// Effective log2 of the StreamID range: `min(LOG2SIZE, SIDSIZE)`.
    pub log2size: u8,
    /// Format.
    pub format: Format,
}

impl StreamTable {
    /// Decodes `SMMU_STRTAB_BASE` and `SMMU_STRTAB_BASE_CFG`.
    pub fn from_regs(base_reg: u64, cfg_reg: u32, sid_bits: u8, two_level: bool) -> Self {
        let literal = (cfg_reg & 0x3f) as u8;
        let log2size = literal.min(sid_bits);
        let fmt = (cfg_reg >> 16) & 0b11;
        let format = if two_level && fmt == 0b01 {
            let split = match (cfg_reg >> 6) & 0x1f {
                8 => 8,
                10 => 10,
                _ => 6,
            };
            Format::TwoLevel { split }
        } else {
            Format::Linear
        };
        let align_log2 = match format {
            Format::Linear => u32::from(literal) + 6,
            Format::TwoLevel { split } => {
                (u32::from(literal).saturating_sub(u32::from(split)) + 3).max(6)
            }
        };
        let base = if align_log2 >= 64 {
            0
        } else {
            base_reg & STRTAB_BASE_ADDR_MASK & !((1u64 << align_log2) - 1)
        };
        StreamTable {
            base,
            log2size,
            format,
        }
    }

    /// The guest address of `sid`'s STE.
    pub fn ste_address<M: GuestMemory>(&self, mem: &M, sid: u32) -> Result<u64, TranslateFault> {
        if u64::from(sid) >> self.log2size != 0 {
            return Err(TranslateFault::BadStreamId);
        }
        match self.format {
            Format::Linear => Ok(self.base + u64::from(sid) * STE_SIZE),
            Format::TwoLevel { split } => {
                let l1 = self.base + (u64::from(sid) >> split) * 8;
                let [desc] = mem::read_words::<M, 1>(mem, l1)
                    .map_err(|f| TranslateFault::SteFetch { addr: f.addr })?;
                let span = (desc & 0x1f) as u32;
                if span == 0 || span >= 12 || span - 1 > u32::from(split) {
                    return Err(TranslateFault::BadStreamId);
                }
                let l2_index = u64::from(sid) & ((1u64 << split) - 1);
                if l2_index >> (span - 1) != 0 {
                    return Err(TranslateFault::BadStreamId);
                }
                let l2 = desc & mask(51, 6) & !mask(5 + span - 1, 0);
                Ok(l2 + l2_index * STE_SIZE)
            }
        }
    }

    /// Reads `sid`'s 64-byte STE.
    pub fn read_ste<M: GuestMemory>(&self, mem: &M, sid: u32) -> Result<[u64; 8], TranslateFault> {
        let addr = self.ste_address(mem, sid)?;
        mem::read_words::<M, 8>(mem, addr).map_err(|f| TranslateFault::SteFetch { addr: f.addr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    fn mem() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    #[test]
    fn linear_lookup_and_range() {
        let m = mem();
        let t = StreamTable::from_regs(0x4_0000 | 0x3f, 8, 16, true);
        assert_eq!(t.format, Format::Linear);
        assert_eq!(t.base, 0x4_0000);
        assert_eq!(t.ste_address(&m, 3), Ok(0x4_00c0));
        assert_eq!(t.ste_address(&m, 256), Err(TranslateFault::BadStreamId));
        // LOG2SIZE above SIDSIZE behaves as SIDSIZE.
        let t = StreamTable::from_regs(0x4_0000, 20, 8, true);
        assert_eq!(t.log2size, 8);
        assert_eq!(t.ste_address(&m, 256), Err(TranslateFault::BadStreamId));
        // Linear base aligned to the literal table size: 2^(10+6).
        let t = StreamTable::from_regs(0x4_8000, 10, 16, true);
        assert_eq!(t.base, 0x4_0000);
        // Unbacked STE: F_STE_FETCH.
        let t = StreamTable::from_regs(0x20_0000, 4, 16, true);
        assert_eq!(
            t.read_ste(&m, 1),
            Err(TranslateFault::SteFetch { addr: 0x20_0040 })
        );
    }

    /// IHI 0070 §5.1.1: Span 0, reserved Span, Span beyond SPLIT+1 and StreamIDs beyond
    /// the span are C_BAD_STREAMID.
    #[test]
    fn two_level_lookup() {
        let m = mem();
        // 16 SID bits, SPLIT 8: L1 at 0x1000, 256 descriptors.
        let cfg = 16 | (8 << 6) | (1 << 16);
        let t = StreamTable::from_regs(0x1000, cfg, 16, true);
        assert_eq!(t.format, Format::TwoLevel { split: 8 });
        let l1 = |i: u64, v: u64| m.write_obj(v, GuestAddress(0x1000 + i * 8)).unwrap();
        l1(1, 0x8_0000 | 9); // full span: 256 STEs
        l1(2, 0x9_0000 | 3); // 4 STEs
        l1(3, 0xa_0000 | 12); // reserved
        l1(4, 0xb_0000 | 10); // span - 1 > split
        assert_eq!(t.ste_address(&m, 0x100 + 5), Ok(0x8_0000 + 5 * 64));
        assert_eq!(t.ste_address(&m, 0x1ff), Ok(0x8_0000 + 255 * 64));
        assert_eq!(t.ste_address(&m, 0x203), Ok(0x9_0000 + 3 * 64));
        assert_eq!(t.ste_address(&m, 0x204), Err(TranslateFault::BadStreamId));
        assert_eq!(t.ste_address(&m, 0x005), Err(TranslateFault::BadStreamId));
        assert_eq!(t.ste_address(&m, 0x301), Err(TranslateFault::BadStreamId));
        assert_eq!(t.ste_address(&m, 0x401), Err(TranslateFault::BadStreamId));
        // L2Ptr low bits are ignored (aligned to the array size).
        l1(5, 0x9_0000 | 0x40 | 2);
        assert_eq!(t.ste_address(&m, 0x501), Ok(0x9_0000 + 64));
        // Reserved SPLIT behaves as 6; FMT 0b01 without ST_LVL is linear.
        let t6 = StreamTable::from_regs(0x1000, 16 | (7 << 6) | (1 << 16), 16, true);
        assert_eq!(t6.format, Format::TwoLevel { split: 6 });
        let lin = StreamTable::from_regs(0x1000, cfg, 16, false);
        assert_eq!(lin.format, Format::Linear);
        let rsv = StreamTable::from_regs(0x1000, 16 | (3 << 16), 16, true);
        assert_eq!(rsv.format, Format::Linear);
        // Level-1 table unbacked: F_STE_FETCH at the descriptor.
        let far = StreamTable::from_regs(0x20_0000, cfg, 16, true);
        assert_eq!(
            far.ste_address(&m, 0x100),
            Err(TranslateFault::SteFetch { addr: 0x20_0008 })
        );
    }
}
