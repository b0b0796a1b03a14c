// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! KVM's ITS table ABI, revision 0: the entry layouts, field by field, and the registers
//! that select and describe it.
//!
//! Source: Linux `Documentation/virt/kvm/devices/arm-vgic-its.rst`, "ITS Table ABI REV0"
//! (KVM's implementation: `arch/arm64/kvm/vgic/vgic-its.c`). Every entry is one
//! little-endian 64-bit word:
//!
//! ```text
//! Device Table Entry (indexed by DeviceID)
//!   | 63 | 62 ... 49 | 48 ... 5              | 4 ... 0 |
//!   | V  |   next    | ITT_addr[51:8]        |  Size   |
//! Interrupt Translation Entry (indexed by EventID; pINTID 0 = invalid)
//!   | 63 ... 48 | 47 ... 16 | 15 ... 0 |
//!   |   next    |  pINTID   |   ICID   |
//! Collection Table Entry (a list in no particular order, ended by an invalid entry)
//!   | 63 | 62 ... 52 | 51 ... 16 | 15 ... 0 |
//!   | V  |   RES0    |  RDBase   |   ICID   |
//! ```
//!
//! - `next` of a DTE is the DeviceID offset to the next valid DTE (0: the last one),
//!   capped at 2^14 - 1; `next` of an ITE is the EventID offset to the next ITE (0: the
//!   last one), capped at 2^16 - 1. A capped offset lands on an invalid entry and the
//!   reader walks on entry by entry.
//! - `Size` is the number of EventID bits minus one; RDBase is a processor number
//!   (`GITS_TYPER.PTA == 0`, the `GICR_TYPER.Processor_Number` of the target); a CTE whose
//!   RDBase is `0xffff_ffff` is a collection KVM knows (an ITE names it) but that is not
//!   mapped.
//! - The revision is `GITS_IIDR.Revision` (bits \[15:12\]; IHI 0069H ch. 12, GITS_IIDR):
//!   userspace restores `GITS_IIDR` before `KVM_DEV_ARM_ITS_RESTORE_TABLES` to select it.
//! - KVM's ITS uses 64 KiB ITS pages only (`GITS_BASER<n>.Page_Size` reads 0b10 whatever
//!   is written), and its level-1 descriptors (IHI 0069H §5.2, two-level tables) hold the
//!   level-2 page address in bits \[51:16\].
//!
//! Tests: `kvm_fields_sit_where_the_abi_says` (every field at its documented bits) and the
//! property tests `kvm_entries_round_trip` in this module.

use crate::tables::genmask;

pub use super::kvm_tables::{
    AbiError, EEXIST, EFAULT, EINVAL, KvmItsRegs, LoadParams, load, offsets, store,
};

/// `GITS_IIDR.Revision` of ABI revision 0.
pub const ABI_REV0: u8 = 0;
/// `GITS_IIDR.ProductID` of KVM's ITS: ASCII `K` (`PRODUCT_ID_KVM` in KVM's `vgic.h`).
pub const KVM_PRODUCT_ID: u32 = 0x4b;
/// `GITS_IIDR.Implementer`: JEP106 code of Arm (`IMPLEMENTER_ARM`).
pub const IMPLEMENTER_ARM: u32 = 0x43b;
/// Shift of `GITS_IIDR.Revision` (bits \[15:12\]).
pub const IIDR_REVISION_SHIFT: u32 = 12;
/// Shift of `GITS_IIDR.ProductID` (bits \[31:24\]).
pub const IIDR_PRODUCT_SHIFT: u32 = 24;
/// `GITS_IIDR` of KVM's ITS with table ABI revision 0: `0x4b00_043b`.
pub const KVM_IIDR_REV0: u32 = (KVM_PRODUCT_ID << IIDR_PRODUCT_SHIFT)
    | ((ABI_REV0 as u32) << IIDR_REVISION_SHIFT)
    | IMPLEMENTER_ARM;
/// DeviceID bits of KVM's ITS (`VITS_TYPER_DEVBITS`).
pub const KVM_DEVICE_ID_BITS: u8 = 16;
/// EventID bits of KVM's ITS (`VITS_TYPER_IDBITS`): the largest DTE `Size` is 15.
pub const KVM_EVENT_ID_BITS: u8 = 16;
/// INTID bits of KVM's vGICv3 with an ITS (`INTERRUPT_ID_BITS_ITS`): LPIs below 65536.
pub const KVM_INTID_BITS: u8 = 16;
/// `GITS_TYPER` of KVM's ITS: Physical (PLPIS), ITT_entry_size 8, ID_bits 16, Devbits 16,
/// HCC 0, CIL 0 (16-bit collection IDs), PTA 0: `0x1_ef71`.
pub const KVM_TYPER: u64 = 1 | (7 << 4) | (15 << 8) | (15 << 13);
/// Bytes of every ABI rev 0 entry (DTE, ITE, CTE) and of a level-1 descriptor.
pub const ENTRY_BYTES: u64 = 8;
/// KVM's only ITS page size, 64 KiB: the unit of `GITS_BASER<n>.Size` and the size of a
/// level-2 Device table page.
pub const KVM_PAGE_BYTES: u64 = 0x1_0000;

/// DTE `V`.
pub const DTE_VALID: u64 = 1 << 63;
/// Shift of DTE `next`.
pub const DTE_NEXT_SHIFT: u32 = 49;
/// DTE `next` (bits \[62:49\]).
pub const DTE_NEXT_MASK: u64 = genmask(62, 49);
/// Largest DTE `next`: 2^14 - 1.
pub const DTE_NEXT_MAX: u32 = (1 << 14) - 1;
/// Shift of DTE `ITT_addr`.
pub const DTE_ITT_SHIFT: u32 = 5;
/// DTE `ITT_addr` (bits \[48:5\], the ITT address bits \[51:8\]).
pub const DTE_ITT_MASK: u64 = genmask(48, 5);
/// DTE `Size` (bits \[4:0\]).
pub const DTE_SIZE_MASK: u64 = genmask(4, 0);
/// Shift of ITE `next`.
pub const ITE_NEXT_SHIFT: u32 = 48;
/// Largest ITE `next`: 2^16 - 1.
pub const ITE_NEXT_MAX: u32 = (1 << 16) - 1;
/// Shift of ITE `pINTID`.
pub const ITE_PINTID_SHIFT: u32 = 16;
/// ITE `pINTID` (bits \[47:16\]).
pub const ITE_PINTID_MASK: u64 = genmask(47, 16);
/// ITE `ICID` (bits \[15:0\]).
pub const ITE_ICID_MASK: u64 = genmask(15, 0);
/// CTE `V`.
pub const CTE_VALID: u64 = 1 << 63;
/// CTE RES0 (bits \[62:52\], "Should-Be-Zero-or-Preserved": KVM ignores them).
pub const CTE_RES0_MASK: u64 = genmask(62, 52);
/// Shift of CTE `RDBase`.
pub const CTE_RDBASE_SHIFT: u32 = 16;
/// CTE `RDBase` (bits \[51:16\]).
pub const CTE_RDBASE_MASK: u64 = genmask(51, 16);
/// CTE `ICID` (bits \[15:0\]).
pub const CTE_ICID_MASK: u64 = genmask(15, 0);
/// The RDBase of a collection KVM knows but that is not mapped (`COLLECTION_NOT_MAPPED`).
pub const COLLECTION_NOT_MAPPED: u32 = u32::MAX;
/// Level-1 descriptor `V` (IHI 0069H §5.2).
pub const L1_VALID: u64 = 1 << 63;
/// Level-1 descriptor address of a 64 KiB level-2 page (bits \[51:16\]).
pub const L1_ADDR_MASK: u64 = genmask(51, 16);

/// A Device Table Entry, field by field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dte {
    /// `V`: the entry is valid.
    pub valid: bool,
    /// `next`: DeviceID offset to the next valid DTE, 0 for the last (14 bits).
    pub next: u32,
    /// ITT address; bits \[51:8\] are stored, the rest must be 0.
    pub itt_addr: u64,
    /// `Size`: EventID bits minus one (5 bits).
    pub size: u8,
}

impl Dte {
    /// The fields of `word` (nothing is checked: the reader decides what to refuse).
    pub fn decode(word: u64) -> Self {
        Dte {
            valid: word & DTE_VALID != 0,
            next: ((word & DTE_NEXT_MASK) >> DTE_NEXT_SHIFT) as u32,
            itt_addr: ((word & DTE_ITT_MASK) >> DTE_ITT_SHIFT) << 8,
            size: (word & DTE_SIZE_MASK) as u8,
        }
    }

    /// The word, or `None` when a field does not fit (next beyond 14 bits, an ITT address
    /// not 256-byte aligned or beyond 52 bits, Size beyond 5 bits).
    pub fn encode(&self) -> Option<u64> {
        if self.next > DTE_NEXT_MAX || self.itt_addr & !genmask(51, 8) != 0 || self.size > 0x1f {
            return None;
        }
        Some(
            (u64::from(self.valid) << 63)
                | (u64::from(self.next) << DTE_NEXT_SHIFT)
                | ((self.itt_addr >> 8) << DTE_ITT_SHIFT)
                | u64::from(self.size),
        )
    }
}

/// An Interrupt Translation Entry, field by field (valid when `pintid != 0`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ite {
    /// `next`: EventID offset to the next ITE, 0 for the last (16 bits).
    pub next: u32,
    /// `pINTID`: the LPI; 0 marks an invalid entry.
    pub pintid: u32,
    /// `ICID`.
    pub icid: u16,
}

impl Ite {
    /// The fields of `word`.
    pub fn decode(word: u64) -> Self {
        Ite {
            next: (word >> ITE_NEXT_SHIFT) as u32,
            pintid: ((word & ITE_PINTID_MASK) >> ITE_PINTID_SHIFT) as u32,
            icid: (word & ITE_ICID_MASK) as u16,
        }
    }

    /// The word, or `None` when `next` does not fit 16 bits.
    pub fn encode(&self) -> Option<u64> {
        if self.next > ITE_NEXT_MAX {
            return None;
        }
        Some(
            (u64::from(self.next) << ITE_NEXT_SHIFT)
                | (u64::from(self.pintid) << ITE_PINTID_SHIFT)
                | u64::from(self.icid),
        )
    }

    /// Whether the entry is valid (`pINTID != 0`).
    pub fn valid(&self) -> bool {
        self.pintid != 0
    }
}

/// A Collection Table Entry, field by field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cte {
    /// `V`: the entry is valid (an invalid entry ends the list).
    pub valid: bool,
    /// `RDBase` (36 bits): a processor number, or [`COLLECTION_NOT_MAPPED`].
    pub rdbase: u64,
    /// `ICID`.
    pub icid: u16,
}

impl Cte {
    /// The fields of `word` (RES0 bits are dropped, as KVM does).
    pub fn decode(word: u64) -> Self {
        Cte {
            valid: word & CTE_VALID != 0,
            rdbase: (word & CTE_RDBASE_MASK) >> CTE_RDBASE_SHIFT,
            icid: (word & CTE_ICID_MASK) as u16,
        }
    }

    /// The word, or `None` when RDBase does not fit 36 bits.
    pub fn encode(&self) -> Option<u64> {
        if self.rdbase >> 36 != 0 {
            return None;
        }
        Some(
            (u64::from(self.valid) << 63)
                | (self.rdbase << CTE_RDBASE_SHIFT)
                | u64::from(self.icid),
        )
    }

    /// The processor number KVM takes from RDBase: its low 32 bits (`(u32)(val >> 16)` in
    /// `vgic_its_restore_cte`), so RDBase bits \[35:32\] are dropped.
    pub fn target(&self) -> u32 {
        self.rdbase as u32
    }
}

/// The memory attributes of `GITS_CBASER` or `GITS_BASER<n>` (InnerCache \[61:59\],
/// OuterCache \[55:53\], Shareability \[11:10\]) as KVM keeps them when they are written
/// (`vgic_sanitise_its_baser`, `vgic_sanitise_its_cbaser`): inner Non-cacheable becomes
/// Read-allocate Write-back, an outer cacheability other than Non-cacheable or
/// Same-as-inner becomes Same-as-inner, Outer Shareable becomes Inner Shareable. They say
/// how the ITS may cache the tables, nothing about what the tables hold.
pub fn sanitise_attributes(value: u64) -> u64 {
    let field = |v: u64, shift: u32, mask: u64| (v >> shift) & mask;
    let set = |v: u64, shift: u32, mask: u64, f: u64| (v & !(mask << shift)) | (f << shift);
    let mut v = value;
    let inner = match field(v, 59, 7) {
        0 | 1 => 3,
        f => f,
    };
    v = set(v, 59, 7, inner);
    let outer = match field(v, 53, 7) {
        0 | 1 => field(v, 53, 7),
        _ => 0,
    };
    v = set(v, 53, 7, outer);
    let share = match field(v, 10, 3) {
        2 => 1,
        f => f,
    };
    set(v, 10, 3, share)
}

/// `image` with its `GITS_CBASER` and `GITS_BASER<n>` memory attributes as KVM keeps them
/// ([`sanitise_attributes`]): what a `SAVE_TABLES` after restoring `image` reads back.
pub fn sanitised(image: &super::ItsImage) -> super::ItsImage {
    let mut i = image.clone();
    i.cbaser = sanitise_attributes(i.cbaser);
    i.device_baser = sanitise_attributes(i.device_baser);
    i.collection_baser = sanitise_attributes(i.collection_baser);
    i
}

/// `GITS_IIDR.Revision` of an IIDR value.
pub fn iidr_revision(iidr: u32) -> u8 {
    ((iidr >> IIDR_REVISION_SHIFT) & 0xf) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kvm_fields_sit_where_the_abi_says() {
        // DTE: V at 63, next at [62:49], ITT_addr[51:8] at [48:5], Size at [4:0].
        let d = Dte {
            valid: true,
            next: 1,
            itt_addr: 0x100,
            size: 1,
        };
        assert_eq!(d.encode(), Some((1 << 63) | (1 << 49) | (1 << 5) | 1));
        let top = Dte {
            valid: false,
            next: DTE_NEXT_MAX,
            itt_addr: genmask(51, 8),
            size: 0x1f,
        };
        assert_eq!(top.encode(), Some(genmask(62, 0)));
        assert_eq!(Dte::decode(u64::MAX).itt_addr, genmask(51, 8));
        assert_eq!(Dte::decode(u64::MAX).next, DTE_NEXT_MAX);
        assert_eq!(
            Dte {
                next: DTE_NEXT_MAX + 1,
                ..d
            }
            .encode(),
            None
        );
        assert_eq!(
            Dte {
                itt_addr: 0x180,
                ..d
            }
            .encode(),
            None
        );
        assert_eq!(
            Dte {
                itt_addr: 1 << 52,
                ..d
            }
            .encode(),
            None
        );
        assert_eq!(Dte { size: 0x20, ..d }.encode(), None);
        // ITE: next at [63:48], pINTID at [47:16], ICID at [15:0].
        let i = Ite {
            next: 2,
            pintid: 8192,
            icid: 3,
        };
        assert_eq!(i.encode(), Some((2 << 48) | (8192 << 16) | 3));
        assert_eq!(
            Ite::decode(u64::MAX),
            Ite {
                next: 0xffff,
                pintid: u32::MAX,
                icid: 0xffff
            }
        );
        assert!(!Ite::decode(0xffff_0000_0000_ffff).valid());
        assert_eq!(Ite { next: 1 << 16, ..i }.encode(), None);
        // CTE: V at 63, RES0 [62:52], RDBase at [51:16], ICID at [15:0].
        let c = Cte {
            valid: true,
            rdbase: 1,
            icid: 7,
        };
        assert_eq!(c.encode(), Some((1 << 63) | (1 << 16) | 7));
        let c = Cte::decode(CTE_RES0_MASK | CTE_VALID | (0xf_0000_0002 << 16) | 5);
        assert_eq!((c.valid, c.rdbase, c.icid), (true, 0xf_0000_0002, 5));
        assert_eq!(c.target(), 2, "KVM keeps RDBase bits [31:0]");
        assert_eq!(
            Cte {
                rdbase: 1 << 36,
                ..c
            }
            .encode(),
            None
        );
        // Registers.
        assert_eq!(KVM_IIDR_REV0, 0x4b00_043b);
        assert_eq!(iidr_revision(KVM_IIDR_REV0), 0);
        assert_eq!(iidr_revision(0x4b00_143b), 1);
        assert_eq!(KVM_TYPER, 0x1_ef71);
        // KVM's attribute rules: nC inner -> RaWb, outer WaWb -> SameAsInner, outer
        // shareable -> inner shareable; the address, Valid, Size stay.
        let v = (1 << 63) | (1 << 59) | (5 << 53) | (2 << 10) | 0x4030_0000 | 3;
        assert_eq!(
            sanitise_attributes(v),
            (1 << 63) | (3 << 59) | (1 << 10) | 0x4030_0000 | 3
        );
        let kept = (7 << 59) | (1 << 53) | (1 << 10);
        assert_eq!(sanitise_attributes(kept), kept);
    }

    proptest! {
        #[test]
        fn kvm_entries_round_trip(
            valid in any::<bool>(),
            next in 0u32..=DTE_NEXT_MAX,
            itt in 0u64..(1 << 44),
            size in 0u8..32,
            inext in 0u32..=ITE_NEXT_MAX,
            pintid in any::<u32>(),
            icid in any::<u16>(),
            rdbase in 0u64..(1 << 36),
            word in any::<u64>(),
        ) {
            let d = Dte { valid, next, itt_addr: itt << 8, size };
            prop_assert_eq!(Dte::decode(d.encode().unwrap()), d);
            let i = Ite { next: inext, pintid, icid };
            prop_assert_eq!(Ite::decode(i.encode().unwrap()), i);
            let c = Cte { valid, rdbase, icid };
            prop_assert_eq!(Cte::decode(c.encode().unwrap()), c);
            // Decoding any word and encoding it again keeps every defined bit (the CTE
            // drops RES0, as KVM does).
            prop_assert_eq!(Dte::decode(word).encode(), Some(word));
            prop_assert_eq!(Ite::decode(word).encode(), Some(word));
            prop_assert_eq!(Cte::decode(word).encode(), Some(word & !CTE_RES0_MASK));
        }
    }
}
