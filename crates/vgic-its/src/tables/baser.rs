// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `GITS_BASER<n>` (IHI 0069H ch. 12): fields, write rules and the table walk.
//!
//! Field layout: Valid \[63\], Indirect \[62\], InnerCache \[61:59\], Type \[58:56\],
//! OuterCache \[55:53\], Entry_Size \[52:48\] (bytes - 1), Physical_Address \[47:12\] (with 64 KiB
//! pages, \[47:16\] holds PA\[47:16\] and \[15:12\] holds PA\[51:48\]), Shareability \[11:10\],
//! Page_Size \[9:8\] (0b00 4 KiB, 0b01 16 KiB, 0b10 64 KiB), Size \[7:0\] (pages - 1).
//!
//! Write rules chosen here (the spec lets an implementation fix some fields):
//! - Type and Entry_Size are read-only: a probe write reads back this ITS's values.
//! - Page_Size accepts all three sizes; the reserved encoding 0b11 is stored as 0b10 (64 KiB).
//! - Indirect is supported for both tables (two-level tables, IHI 0069H §5.2).
//! - InnerCache, OuterCache and Shareability are stored as written and have no effect: the
//!   emulated ITS reads guest memory coherently. Keeping them read/write means Linux's probe
//!   (write, read back, compare) sees its values stick and does not fall back to
//!   non-shareable, cache-flushing mode.

use super::{TableError, TableKind, genmask, read_u64};
use vm_memory::GuestMemory;

/// `GITS_BASER.Valid`.
pub const BASER_VALID: u64 = 1 << 63;
/// `GITS_BASER.Indirect`.
pub const BASER_INDIRECT: u64 = 1 << 62;
/// Shift of `GITS_BASER.InnerCache`.
pub const BASER_INNER_CACHE_SHIFT: u32 = 59;
/// Shift of `GITS_BASER.Type`.
pub const BASER_TYPE_SHIFT: u32 = 56;
/// Shift of `GITS_BASER.OuterCache`.
pub const BASER_OUTER_CACHE_SHIFT: u32 = 53;
/// Shift of `GITS_BASER.Entry_Size`.
pub const BASER_ENTRY_SIZE_SHIFT: u32 = 48;
/// Shift of `GITS_BASER.Shareability`.
pub const BASER_SHAREABILITY_SHIFT: u32 = 10;
/// Shift of `GITS_BASER.Page_Size`.
pub const BASER_PAGE_SIZE_SHIFT: u32 = 8;
/// Mask of `GITS_BASER.Size`.
pub const BASER_SIZE_MASK: u64 = 0xff;
/// `GITS_BASER.Physical_Address` bits \[47:12\].
pub const BASER_PA_MASK: u64 = genmask(47, 12);
/// Level-1 entry Valid bit (IHI 0069H §5.2: bit 63 of each 64-bit level-1 descriptor).
pub const L1_VALID: u64 = 1 << 63;
/// Level-1 entry address bits \[51:12\]; bits below the page size are RES0 and ignored.
pub const L1_ADDR_MASK: u64 = genmask(51, 12);
/// Size in bytes of a level-1 descriptor.
pub const L1_ENTRY_SIZE: u64 = 8;

/// Bits software may change in an implemented `GITS_BASER<n>`.
const BASER_RW_MASK: u64 = BASER_VALID
    | BASER_INDIRECT
    | genmask(61, 59)
    | genmask(55, 53)
    | BASER_PA_MASK
    | genmask(11, 10)
    | genmask(9, 8)
    | BASER_SIZE_MASK;

/// `GITS_BASER<n>.Type` encodings (IHI 0069H ch. 12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TableType {
    /// 0b001: Devices.
    Devices = 1,
    /// 0b100: Interrupt Collections.
    Collections = 4,
}

/// Supported ITS page sizes (`GITS_BASER.Page_Size`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    /// 0b00: 4 KiB.
    Size4K,
    /// 0b01: 16 KiB.
    Size16K,
    /// 0b10 (and the reserved 0b11): 64 KiB.
    Size64K,
}

impl PageSize {
    /// Decode the two-bit field.
    pub fn from_field(field: u64) -> Self {
        match field & 3 {
            0 => PageSize::Size4K,
            1 => PageSize::Size16K,
            _ => PageSize::Size64K,
        }
    }

    /// Page size in bytes.
    pub fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => 0x1000,
            PageSize::Size16K => 0x4000,
            PageSize::Size64K => 0x1_0000,
        }
    }
}

/// Reset value of an implemented `GITS_BASER<n>` of the given type and entry size: everything
/// zero (Valid = 0, 4 KiB pages) except the read-only Type and Entry_Size.
pub fn baser_reset(ty: TableType, entry_size: u8) -> u64 {
    ((ty as u64) << BASER_TYPE_SHIFT)
        | ((u64::from(entry_size.saturating_sub(1)) & 0x1f) << BASER_ENTRY_SIZE_SHIFT)
}

/// Apply a software write of `value` to an implemented `GITS_BASER<n>` currently holding `old`.
///
/// Read-only fields (Type, Entry_Size) keep their value, RES0 bits stay zero, and Page_Size
/// 0b11 is stored as 0b10. Test: `baser_write_keeps_ro_fields`.
pub fn baser_write(old: u64, value: u64) -> u64 {
    let mut new = (old & !BASER_RW_MASK) | (value & BASER_RW_MASK);
    if (new >> BASER_PAGE_SIZE_SHIFT) & 3 == 3 {
        new &= !(1 << BASER_PAGE_SIZE_SHIFT);
    }
    new
}

/// A decoded, valid `GITS_BASER<n>`: where a table is and how to index it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableDescriptor {
    /// Guest physical base address of the (level-1, if indirect) table.
    pub base: u64,
    /// ITS page size.
    pub page_size: PageSize,
    /// Number of pages (`Size + 1`).
    pub pages: u64,
    /// Bytes per entry (`Entry_Size + 1`).
    pub entry_size: u64,
    /// Two-level table.
    pub indirect: bool,
}

impl TableDescriptor {
    /// Decode a `GITS_BASER<n>` value; `None` when Valid is 0.
    pub fn from_baser(value: u64) -> Option<Self> {
        if value & BASER_VALID == 0 {
            return None;
        }
        let page_size = PageSize::from_field(value >> BASER_PAGE_SIZE_SHIFT);
        let base = match page_size {
            PageSize::Size4K => value & BASER_PA_MASK,
            PageSize::Size16K => value & genmask(47, 14),
            PageSize::Size64K => (value & genmask(47, 16)) | (((value >> 12) & 0xf) << 48),
        };
        Some(TableDescriptor {
            base,
            page_size,
            pages: (value & BASER_SIZE_MASK) + 1,
            entry_size: ((value >> BASER_ENTRY_SIZE_SHIFT) & 0x1f) + 1,
            indirect: value & BASER_INDIRECT != 0,
        })
    }

    /// Size in bytes of the (level-1, if indirect) table: at most 256 * 64 KiB.
    pub fn table_bytes(&self) -> u64 {
        self.pages * self.page_size.bytes()
    }

    /// Number of IDs the table can hold if every level-2 page were present.
    pub fn capacity(&self) -> u64 {
        let per_page = self.page_size.bytes() / self.entry_size;
        if self.indirect {
            (self.table_bytes() / L1_ENTRY_SIZE) * per_page
        } else {
            self.table_bytes() / self.entry_size
        }
    }

    /// Guest address of the entry for `id`, or `None` when the table does not cover `id`
    /// (beyond the flat table, beyond the level-1 table, or level-1 descriptor invalid).
    ///
    /// IHI 0069H §5.2: with Indirect = 1 the level-1 table is an array of 64-bit descriptors,
    /// each giving a level-2 page of `Page_Size` bytes holding `Page_Size / Entry_Size`
    /// entries. One guest read at most; no loop. Tests: `flat_walk`, `two_level_walk`.
    pub fn entry_address<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        id: u32,
    ) -> Result<Option<u64>, TableError> {
        let id = u64::from(id);
        if !self.indirect {
            let offset = id * self.entry_size;
            if offset + self.entry_size > self.table_bytes() {
                return Ok(None);
            }
            return Ok(self.base.checked_add(offset));
        }
        let page = self.page_size.bytes();
        let per_page = page / self.entry_size;
        let l1_offset = (id / per_page) * L1_ENTRY_SIZE;
        if l1_offset + L1_ENTRY_SIZE > self.table_bytes() {
            return Ok(None);
        }
        let Some(l1_addr) = self.base.checked_add(l1_offset) else {
            return Ok(None);
        };
        let l1 = read_u64(mem, l1_addr, TableKind::Level1)?;
        if l1 & L1_VALID == 0 {
            return Ok(None);
        }
        let l2_base = l1 & L1_ADDR_MASK & !(page - 1);
        Ok(l2_base.checked_add((id % per_page) * self.entry_size))
    }
}

#[cfg(test)]
mod tests {
    use super::super::write_u64;
    use super::*;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    #[test]
    fn baser_write_keeps_ro_fields() {
        let reset = baser_reset(TableType::Devices, 8);
        assert_eq!(reset, (1 << 56) | (7 << 48));
        // Software tries to change Type and Entry_Size and sets reserved Page_Size 0b11.
        let v = baser_write(reset, u64::MAX);
        assert_eq!((v >> 56) & 7, 1);
        assert_eq!((v >> 48) & 0x1f, 7);
        assert_eq!((v >> 8) & 3, 2);
        assert_eq!(v & genmask(51, 48), 7 << 48);
        assert!(v & BASER_VALID != 0 && v & BASER_INDIRECT != 0);
        // Everything software owns sticks.
        let want = BASER_VALID | (5 << 59) | (2 << 53) | 0x1234_5000 | (1 << 10) | (1 << 8) | 3;
        let v = baser_write(reset, want);
        assert_eq!(v, want | reset);
    }

    #[test]
    fn decode_addresses_per_page_size() {
        let v = BASER_VALID | 0x0000_1234_5678_f000 | 4;
        let d = TableDescriptor::from_baser(v).unwrap();
        assert_eq!(d.base, 0x0000_1234_5678_f000);
        assert_eq!(d.pages, 5);
        assert_eq!(d.table_bytes(), 5 * 4096);
        let d = TableDescriptor::from_baser(v | (1 << 8)).unwrap();
        assert_eq!(d.base, 0x0000_1234_5678_c000);
        let d = TableDescriptor::from_baser(v | (2 << 8)).unwrap();
        // PA[15:12] = 0xf moves to PA[51:48].
        assert_eq!(d.base, 0x000f_1234_5678_0000);
        assert_eq!(d.table_bytes(), 5 * 65536);
        assert!(TableDescriptor::from_baser(v & !BASER_VALID).is_none());
    }

    #[test]
    fn flat_walk() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let v = baser_write(baser_reset(TableType::Devices, 8), BASER_VALID | 0x2000);
        let d = TableDescriptor::from_baser(v).unwrap();
        assert_eq!(d.capacity(), 512);
        assert_eq!(d.entry_address(&mem, 0).unwrap(), Some(0x2000));
        assert_eq!(d.entry_address(&mem, 511).unwrap(), Some(0x2ff8));
        assert_eq!(d.entry_address(&mem, 512).unwrap(), None);
        assert_eq!(d.entry_address(&mem, u32::MAX).unwrap(), None);
    }

    #[test]
    fn two_level_walk() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let v = baser_write(
            baser_reset(TableType::Devices, 8),
            BASER_VALID | BASER_INDIRECT | 0x1000,
        );
        let d = TableDescriptor::from_baser(v).unwrap();
        // 512 level-1 descriptors, 512 entries per level-2 page.
        assert_eq!(d.capacity(), 512 * 512);
        // Level-1 descriptor 1 (IDs 512..1024) points at 0x4000; others invalid.
        write_u64(&mem, 0x1008, L1_VALID | 0x4000, TableKind::Level1).unwrap();
        assert_eq!(d.entry_address(&mem, 5).unwrap(), None);
        assert_eq!(d.entry_address(&mem, 512 + 3).unwrap(), Some(0x4018));
        // Low bits of the descriptor below the page size are ignored.
        write_u64(&mem, 0x1010, L1_VALID | 0x5fff, TableKind::Level1).unwrap();
        assert_eq!(d.entry_address(&mem, 1024).unwrap(), Some(0x5000));
        // Beyond the level-1 table.
        assert_eq!(d.entry_address(&mem, 512 * 512).unwrap(), None);
        // A level-1 table outside guest memory is a fault, not a panic.
        let bad = TableDescriptor {
            base: 0x10_0000,
            ..d
        };
        assert!(bad.entry_address(&mem, 0).is_err());
    }
}
