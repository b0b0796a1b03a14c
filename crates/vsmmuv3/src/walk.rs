// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The stage-1 walker: VMSAv8-64 translation tables (Arm ARM D8, "The AArch64 Virtual
//! Memory System Architecture"), as an SMMUv3 walks them for an EL1 stream (IHI 0070 §3.4,
//! §5.4), over guest memory.
//!
//! - Granules 4K, 16K, 64K; input size `64 - TxSZ` (16..=39, so 25..=48 bits); the
//!   starting level follows from both (`4 - ceil((ia - g) / (g - 3))`); at most four
//!   8-byte descriptor reads per walk.
//! - Range selection: `VA[55]` picks TTB0/TTB1; the bits above the input size (up to bit
//!   55 with `TBIx`, 63 without) must all equal it, else a Translation fault at level 0.
//!   A region disabled by `EPDx` gives a Translation fault at level 0.
//! - Descriptors: bit 0 clear is invalid (Translation fault); a block is allowed at level
//!   1 and 2 with 4K, level 2 with 16K and 64K (48-bit OA, no `DS`), anything else with
//!   `[1:0] == 0b01` is a Translation fault; at level 3 `0b01` is reserved (Translation
//!   fault).
//! - Output addresses: OA bits \[47:g\] of the descriptor; OA bits \[51:48\] of a
//!   48-bit-OA descriptor, or any output above the effective IPS, give an Address size
//!   fault at that level.
//! - Leaf checks in the architecture's priority order: Address size, Access flag
//!   (`AF == 0` faults: no hardware updates), Permission.
//! - Permissions (stage 1, EL1&0 regime, data accesses): `AP[2]` (bit 7) read-only,
//!   `AP[1]` (bit 6) unprivileged access allowed; table descriptors' `APTable[1]` (bit 62)
//!   removes write and `APTable[0]` (bit 61) removes unprivileged access below them
//!   (`IDR3.HAD == 0`: always applied). Execute permissions are not modelled (no
//!   instruction fetches through an SMMU in this model).
//! - `nG` (bit 11) is kept for TLB tagging; the Contiguous hint is ignored (as the
//!   architecture permits).
//! - A descriptor read that guest RAM does not back is `F_WALK_EABT`.
//! - Tables are little-endian (`CD.ENDI == 1` was refused by the CD decoder).

use vm_memory::GuestMemory;

use crate::cd::{Cd, TtRegion};
use crate::fault::TranslateFault;
use crate::mem;
use crate::regs::mask;

/// The kind of access being translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Access {
    /// A write (an MSI is a write).
    pub write: bool,
    /// Privileged (`PnU == 1`); a PCIe device without PASID is unprivileged.
    pub privileged: bool,
}

impl Access {
    /// An unprivileged write: what a device's MSI is.
    pub const WRITE: Access = Access {
        write: true,
        privileged: false,
    };
    /// An unprivileged read.
    pub const READ: Access = Access {
        write: false,
        privileged: false,
    };
}

/// A leaf the walk found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaf {
    /// First input address the leaf maps.
    pub va_base: u64,
    /// Output address of `va_base`.
    pub oa_base: u64,
    /// log2 of the mapping's size (page or block).
    pub size_log2: u8,
    /// Level of the leaf.
    pub level: u8,
    /// Writes allowed (AP\[2\] == 0 and no `APTable[1]` above).
    pub writable: bool,
    /// Unprivileged accesses allowed (AP\[1\] == 1 and no `APTable[0]` above).
    pub unprivileged: bool,
    /// `nG == 0`.
    pub global: bool,
}

impl Leaf {
    /// The output address of `va` (which must lie in the leaf).
    pub fn output(&self, va: u64) -> u64 {
        self.oa_base | (va & ((1u64 << self.size_log2) - 1))
    }

    /// Whether `va` lies in the leaf.
    pub fn covers(&self, va: u64) -> bool {
        (va ^ self.va_base) >> self.size_log2 == 0
    }

    /// The permission check for `access` (a Permission fault at the leaf's level).
    pub fn check(&self, access: Access) -> Result<(), TranslateFault> {
        if (access.write && !self.writable) || (!access.privileged && !self.unprivileged) {
            return Err(TranslateFault::Permission { level: self.level });
        }
        Ok(())
    }
}

/// Selects the VA range (IHI 0070 §3.4.1 with Arm ARM D8.1): region index and config.
pub fn select_region(cd: &Cd, va: u64) -> Result<(usize, TtRegion), TranslateFault> {
    let r = ((va >> 55) & 1) as usize;
    let region = cd.regions[r].ok_or(TranslateFault::Translation { level: 0 })?;
    let ia = 64 - u32::from(region.tsz);
    let top = if cd.tbi[r] { 55 } else { 63 };
    let upper = (va & mask(top, ia)) >> ia;
    let expect = if r == 1 { mask(top - ia, 0) } else { 0 };
    if upper != expect {
        return Err(TranslateFault::Translation { level: 0 });
    }
    Ok((r, region))
}

/// The starting level and the number of index bits resolved there.
pub fn start_level(ia_bits: u32, granule_log2: u32) -> (u8, u32) {
    let stride = granule_log2 - 3;
    let levels = (ia_bits - granule_log2).div_ceil(stride);
    let start = 4 - levels;
    let first_bits = ia_bits - granule_log2 - stride * (levels - 1);
    (start as u8, first_bits)
}

/// Walks `cd`'s tables for `va` (permissions are not checked: see [`Leaf::check`]).
pub fn walk<M: GuestMemory>(mem: &M, cd: &Cd, va: u64) -> Result<Leaf, TranslateFault> {
    let (_, region) = select_region(cd, va)?;
    let g = u32::from(region.granule_log2);
    let stride = g - 3;
    let ia = 64 - u32::from(region.tsz);
    let ips = u32::from(cd.ips_bits);
    let (start, first_bits) = start_level(ia, g);
    // The starting table is aligned to its size (at least 8 bytes): lower TTB bits are
    // treated as zero.
    let mut table = region.ttb & !((1u64 << (first_bits + 3)) - 1);
    let mut writable = true;
    let mut unprivileged = true;
    let mut level = start;
    loop {
        let shift = g + stride * (3 - u32::from(level));
        let bits = if level == start { first_bits } else { stride };
        let index = (va >> shift) & ((1u64 << bits) - 1);
        let addr = table + index * 8;
        let [desc] = mem::read_words::<M, 1>(mem, addr)
            .map_err(|_| TranslateFault::WalkAbort { level, addr })?;
        if desc & 1 == 0 {
            return Err(TranslateFault::Translation { level });
        }
        let is_table = desc & 2 != 0 && level < 3;
        let oa_hi_bad = desc & mask(51, 48) != 0;
        if is_table {
            let next = desc & mask(47, g);
            if oa_hi_bad || next >> ips != 0 {
                return Err(TranslateFault::AddressSize { level });
            }
            if desc & (1 << 62) != 0 {
                writable = false;
            }
            if desc & (1 << 61) != 0 {
                unprivileged = false;
            }
            table = next;
            level += 1;
            continue;
        }
        let block_ok = match (g, level) {
            (12, 1) | (12, 2) | (14, 2) | (16, 2) => true,
            (_, 3) => desc & 2 != 0,
            _ => false,
        };
        if !block_ok {
            return Err(TranslateFault::Translation { level });
        }
        let oa = desc & mask(47, shift);
        if oa_hi_bad || oa >> ips != 0 {
            return Err(TranslateFault::AddressSize { level });
        }
        if desc & (1 << 10) == 0 {
            return Err(TranslateFault::AccessFlag { level });
        }
        if desc & (1 << 7) != 0 {
            writable = false;
        }
        if desc & (1 << 6) == 0 {
            unprivileged = false;
        }
        return Ok(Leaf {
            va_base: va & !((1u64 << shift) - 1),
            oa_base: oa,
            size_log2: shift as u8,
            level,
            writable,
            unprivileged,
            global: desc & (1 << 11) == 0,
        });
    }
}

/// Descriptor bits for tests, benchmarks and harnesses.
pub mod desc {
    /// A table descriptor to `next`.
    pub fn table(next: u64) -> u64 {
        next | 0b11
    }
    /// A page descriptor (level 3) to `oa`: AF, AP\[1\] (unprivileged RW), inner shareable.
    pub fn page(oa: u64) -> u64 {
        oa | 0b11 | (1 << 10) | (1 << 6) | (0b11 << 8)
    }
    /// A block descriptor to `oa`, same attributes as [`page`].
    pub fn block(oa: u64) -> u64 {
        oa | 0b01 | (1 << 10) | (1 << 6) | (0b11 << 8)
    }
    /// Read-only (AP\[2\]).
    pub const READ_ONLY: u64 = 1 << 7;
    /// Not global.
    pub const NG: u64 = 1 << 11;
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    fn cd(ttb: u64, tsz: u8, g: u8) -> Cd {
        Cd {
            asid: 1,
            ips_bits: 40,
            tbi: [false, false],
            regions: [
                Some(TtRegion {
                    ttb,
                    tsz,
                    granule_log2: g,
                }),
                None,
            ],
            aset: false,
            mair: 0,
        }
    }

    fn mem() -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap()
    }

    fn put(m: &GuestMemoryMmap<()>, addr: u64, v: u64) {
        m.write_obj(v, GuestAddress(addr)).unwrap();
    }

    #[test]
    fn start_levels() {
        assert_eq!(start_level(48, 12), (0, 9));
        assert_eq!(start_level(39, 12), (1, 9));
        assert_eq!(start_level(25, 12), (2, 4));
        assert_eq!(start_level(48, 14), (0, 1));
        assert_eq!(start_level(47, 14), (1, 11));
        assert_eq!(start_level(48, 16), (1, 6));
        assert_eq!(start_level(42, 16), (2, 13));
        assert_eq!(start_level(25, 16), (3, 9));
    }

    /// A 4-level 4K walk (T0SZ 16) to a page, then a 2 MiB block.
    #[test]
    fn four_level_4k() {
        let m = mem();
        let va: u64 = 0x0000_1234_5678_9abc;
        let idx = |l: u32| (va >> (12 + 9 * (3 - l))) & 0x1ff;
        put(&m, 0x1000 + idx(0) * 8, desc::table(0x2000));
        put(&m, 0x2000 + idx(1) * 8, desc::table(0x3000));
        put(&m, 0x3000 + idx(2) * 8, desc::table(0x4000));
        put(&m, 0x4000 + idx(3) * 8, desc::page(0x80_0000));
        let c = cd(0x1000, 16, 12);
        let leaf = walk(&m, &c, va).unwrap();
        assert_eq!(leaf.output(va), 0x80_0abc);
        assert_eq!((leaf.level, leaf.size_log2), (3, 12));
        assert!(leaf.writable && leaf.unprivileged && leaf.global);
        put(&m, 0x3000 + idx(2) * 8, desc::block(0x60_0000));
        let leaf = walk(&m, &c, va).unwrap();
        assert_eq!((leaf.level, leaf.size_log2), (2, 21));
        assert_eq!(leaf.output(va), 0x60_0000 | (va & 0x1f_ffff));
    }

    #[test]
    fn faults() {
        let m = mem();
        let c = cd(0x1000, 25, 12); // 39-bit VA, start level 1... (25 => ia 39)
        // Out of range of TTB0 (bit 39 set) and TTB1 disabled.
        assert_eq!(
            walk(&m, &c, 1 << 39),
            Err(TranslateFault::Translation { level: 0 })
        );
        assert_eq!(
            walk(&m, &c, 1 << 63),
            Err(TranslateFault::Translation { level: 0 })
        );
        // Invalid level-1 descriptor.
        assert_eq!(
            walk(&m, &c, 0),
            Err(TranslateFault::Translation { level: 1 })
        );
        // Table beyond IPS (40 bits).
        put(&m, 0x1000, desc::table(1 << 40));
        assert_eq!(
            walk(&m, &c, 0),
            Err(TranslateFault::AddressSize { level: 1 })
        );
        // OA[51:48] set in a 48-bit descriptor.
        put(&m, 0x1000, desc::table(0x2000) | (1 << 48));
        assert_eq!(
            walk(&m, &c, 0),
            Err(TranslateFault::AddressSize { level: 1 })
        );
        // 1 GiB block at level 1 is fine for 4K; AF = 0 faults.
        put(&m, 0x1000, desc::block(0x4000_0000) & !(1 << 10));
        assert_eq!(
            walk(&m, &c, 0),
            Err(TranslateFault::AccessFlag { level: 1 })
        );
        // Table to unbacked memory: walk abort at the next level.
        put(&m, 0x1000, desc::table(0x100_0000_0000 >> 4));
        assert_eq!(
            walk(&m, &c, 0),
            Err(TranslateFault::WalkAbort {
                level: 2,
                addr: 0x10_0000_0000
            })
        );
        // Level-3 0b01 is reserved.
        put(&m, 0x1000, desc::table(0x2000));
        put(&m, 0x2000, desc::table(0x3000));
        put(&m, 0x3000, desc::block(0x5000));
        assert_eq!(
            walk(&m, &c, 0),
            Err(TranslateFault::Translation { level: 3 })
        );
        // A read-only page: a write is a Permission fault at level 3.
        put(&m, 0x3000, desc::page(0x5000) | desc::READ_ONLY);
        let leaf = walk(&m, &c, 0).unwrap();
        assert_eq!(
            leaf.check(Access::WRITE),
            Err(TranslateFault::Permission { level: 3 })
        );
        assert_eq!(leaf.check(Access::READ), Ok(()));
        // APTable[1] removes write below; APTable[0] removes unprivileged access.
        put(&m, 0x3000, desc::page(0x5000));
        put(&m, 0x2000, desc::table(0x3000) | (1 << 62));
        assert!(walk(&m, &c, 0).unwrap().check(Access::WRITE).is_err());
        put(&m, 0x2000, desc::table(0x3000) | (1 << 61));
        let leaf = walk(&m, &c, 0).unwrap();
        assert!(leaf.check(Access::READ).is_err());
        assert!(
            leaf.check(Access {
                write: true,
                privileged: true
            })
            .is_ok()
        );
    }

    /// 16K: no block at level 1; 64K with a 42-bit VA starts at level 2.
    #[test]
    fn granules() {
        let m = mem();
        let c16 = cd(0x4000, 17, 14); // ia 47: start level 1
        put(&m, 0x4000, desc::block(0x10_0000_0000));
        assert_eq!(
            walk(&m, &c16, 0),
            Err(TranslateFault::Translation { level: 1 })
        );
        let c64 = cd(0x1_0000, 22, 16);
        put(&m, 0x1_0000 + 8, desc::table(0x2_0000));
        put(&m, 0x2_0000 + 2 * 8, desc::page(0x30_0000));
        let va = (1u64 << 29) | (2 << 16) | 0x1234;
        let leaf = walk(&m, &c64, va).unwrap();
        assert_eq!(leaf.output(va), 0x30_1234);
        assert_eq!(leaf.level, 3);
    }

    /// TTB1 range: the top bits must be all ones; TBI ignores the top byte.
    #[test]
    fn ttb1_and_tbi() {
        let m = mem();
        let mut c = cd(0x1000, 25, 12);
        c.regions[1] = Some(TtRegion {
            ttb: 0x8000,
            tsz: 25,
            granule_log2: 12,
        });
        put(&m, 0x8000 + 511 * 8, desc::block(0x4000_0000));
        let va = 0xffff_ffff_ffe0_0000u64 | 0x1234;
        let leaf = walk(&m, &c, va).unwrap();
        assert_eq!(leaf.output(va), 0x4000_0000 | (va & 0x3fff_ffff));
        assert_eq!(
            walk(&m, &c, 0xfff0_ffff_ffe0_0000),
            Err(TranslateFault::Translation { level: 0 })
        );
        put(&m, 0x1000, desc::block(0));
        assert!(walk(&m, &c, 0xab00_0000_0000_1000).is_err());
        c.tbi[0] = true;
        assert!(walk(&m, &c, 0x2b00_0000_0000_1000).is_ok());
    }
}
