// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Table formats, whole-ITS images, and KVM's table ABI.
//!
//! The entry formats of the Device table, the ITTs and the Collection table are
//! IMPLEMENTATION DEFINED (IHI 0069H §5.2). This crate speaks two:
//!
//! | | [`TableFormat::Native`] | [`TableFormat::KvmRev0`] |
//! |---|---|---|
//! | DTE | 8 bytes: V \[63\], ITT_addr\[51:8\] at \[51:8\], Size \[4:0\] | 8 bytes: V \[63\], next \[62:49\], ITT_addr\[51:8\] at \[48:5\], Size \[4:0\] |
//! | ITE | `ITT_entry_size` bytes, first word: V \[63\], ICID \[47:32\], pINTID \[31:0\] | 8 bytes: next \[63:48\], pINTID \[47:16\] (0 = invalid), ICID \[15:0\] |
//! | Collection table | indexed by ICID, CTE: V \[63\], processor \[31:0\] | a list written at save, CTE: V \[63\], RDBase \[51:16\], ICID \[15:0\]; collections held by the ITS |
//! | "next" offsets | none | to the next valid DTE/ITE, written at save ([`kvm::store`]) |
//! | ITS page size | 4, 16 or 64 KiB | 64 KiB only |
//! | `GITS_IIDR` | the VMM's choice | `0x4b00_043b`: KVM, Revision 0 |
//!
//! A model built with [`TableFormat::KvmRev0`] (see
//! [`ItsConfigBuilder::kvm_abi`](crate::ItsConfigBuilder::kvm_abi)) keeps its Device table
//! and ITTs in guest memory in exactly KVM's layout and presents KVM's `GITS_TYPER`,
//! `GITS_IIDR` and `GITS_BASER<n>` rules. Like KVM it holds its collections itself and
//! writes the "next" offsets and the collection list only when the tables are saved.
//!
//! [`ItsImage`] is the whole state of an ITS decoded (registers, devices, events,
//! collections), independent of any format: [`Its::export_image`](crate::Its::export_image)
//! and [`Its::import_image`](crate::Its::import_image) move a model to and from it;
//! [`kvm::load`] and [`kvm::store`] read and write KVM's registers and tables the way
//! `KVM_DEV_ARM_ITS_RESTORE_TABLES` and `KVM_DEV_ARM_ITS_SAVE_TABLES` do. Every walk is
//! bounded by a [`WorkLimit`]. docs/its-abi.md describes the format and the checks.

pub mod image;
pub mod kvm;
mod kvm_tables;

use serde::{Deserialize, Serialize};

use crate::tables::device::DeviceEntry;
use crate::tables::itt::IttEntry;

pub use image::{DeviceImage, EventImage, ImageError, ItsImage};
pub use kvm_tables::{AbiError, KvmItsRegs, LoadParams, load, store};

/// The layout of the ITS tables in guest memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TableFormat {
    /// This crate's own format (see [`crate::tables`]).
    #[default]
    Native,
    /// KVM's ITS table ABI, revision 0 ([`kvm`]).
    KvmRev0,
}

impl TableFormat {
    /// Bytes of a Device table entry (`GITS_BASER0.Entry_Size + 1`).
    pub const fn dte_bytes(self) -> u8 {
        8
    }

    /// Bytes of a Collection table entry (`GITS_BASER1.Entry_Size + 1`).
    pub const fn cte_bytes(self) -> u8 {
        8
    }

    /// The ITT entry sizes the format allows (`GITS_TYPER.ITT_entry_size + 1`).
    pub const fn ite_bytes(self) -> std::ops::RangeInclusive<u8> {
        match self {
            TableFormat::Native => 8..=16,
            TableFormat::KvmRev0 => 8..=8,
        }
    }

    /// `GITS_IIDR.Revision` the format is selected by, when it is selected by one.
    pub const fn iidr_revision(self) -> Option<u8> {
        match self {
            TableFormat::Native => None,
            TableFormat::KvmRev0 => Some(kvm::ABI_REV0),
        }
    }

    /// Whether valid DTEs and ITEs carry the offset to the next valid one.
    pub const fn next_offsets(self) -> bool {
        matches!(self, TableFormat::KvmRev0)
    }

    /// Whether the Collection table is indexed by ICID and read on every lookup (else the
    /// ITS holds its collections and the table is a list written at save).
    pub const fn collection_table_indexed(self) -> bool {
        matches!(self, TableFormat::Native)
    }

    /// The only ITS page size of the format, if it has one.
    pub const fn fixed_page_bytes(self) -> Option<u64> {
        match self {
            TableFormat::Native => None,
            TableFormat::KvmRev0 => Some(kvm::KVM_PAGE_BYTES),
        }
    }

    /// Encode a DTE as the live ITS writes it (KVM: `next` 0, fixed up at save).
    pub(crate) fn encode_dte(self, entry: Option<DeviceEntry>) -> u64 {
        match self {
            TableFormat::Native => crate::tables::device::encode(entry),
            TableFormat::KvmRev0 => match entry {
                None => 0,
                Some(e) => kvm::Dte {
                    valid: true,
                    next: 0,
                    itt_addr: e.itt_addr & crate::tables::genmask(51, 8),
                    size: e.event_id_bits.saturating_sub(1) & 0x1f,
                }
                .encode()
                .unwrap_or(0),
            },
        }
    }

    /// Decode a DTE read from guest memory for an ITS with `max_event_id_bits` EventID bits:
    /// `None` unless it is an entry this ITS could have written (the `next` field of a KVM
    /// DTE is not part of the mapping and is ignored).
    pub(crate) fn decode_dte(self, word: u64, max_event_id_bits: u8) -> Option<DeviceEntry> {
        match self {
            TableFormat::Native => crate::tables::device::decode(word, max_event_id_bits),
            TableFormat::KvmRev0 => {
                let d = kvm::Dte::decode(word);
                let bits = d.size + 1;
                (d.valid && bits <= max_event_id_bits).then_some(DeviceEntry {
                    itt_addr: d.itt_addr,
                    event_id_bits: bits,
                })
            }
        }
    }

    /// Encode an ITE as the live ITS writes it (KVM: `next` 0, fixed up at save).
    pub(crate) fn encode_ite(self, entry: Option<IttEntry>) -> u64 {
        match self {
            TableFormat::Native => crate::tables::itt::encode(entry),
            TableFormat::KvmRev0 => match entry {
                // pINTID 0 is KVM's invalid entry; a valid one always has an LPI (>= 8192).
                None => 0,
                Some(e) => kvm::Ite {
                    next: 0,
                    pintid: e.intid,
                    icid: e.icid,
                }
                .encode()
                .unwrap_or(0),
            },
        }
    }

    /// Decode an ITE word (the caller still checks INTID and ICID against the ITS).
    pub(crate) fn decode_ite(self, word: u64) -> Option<IttEntry> {
        match self {
            TableFormat::Native => crate::tables::itt::decode(word),
            TableFormat::KvmRev0 => {
                let i = kvm::Ite::decode(word);
                i.valid().then_some(IttEntry {
                    intid: i.pintid,
                    icid: i.icid,
                })
            }
        }
    }
}

/// Default of [`WorkLimit`]: 4 Mi table entries (32 MiB of guest memory read or written),
/// far beyond any real ITS (KVM's largest: 65536 devices) and about a second of work.
pub const DEFAULT_WORK_ENTRIES: u64 = 1 << 22;

/// The most table entries one image operation reads or writes before it gives up with a
/// defined error instead of working on (a hostile table can describe billions of entries:
/// 65536 devices of 65536 events).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkLimit {
    /// Entries (8-byte words, or ITEs) read or written, at most.
    pub entries: u64,
}

impl Default for WorkLimit {
    fn default() -> Self {
        WorkLimit {
            entries: DEFAULT_WORK_ENTRIES,
        }
    }
}

/// Counts work against a [`WorkLimit`].
#[derive(Debug)]
pub(crate) struct Budget {
    limit: u64,
    used: u64,
}

impl Budget {
    pub(crate) fn new(limit: WorkLimit) -> Self {
        Budget {
            limit: limit.entries,
            used: 0,
        }
    }

    /// Take `n` entries of work; `false` when that would pass the limit.
    pub(crate) fn take(&mut self, n: u64) -> bool {
        match self.used.checked_add(n) {
            Some(u) if u <= self.limit => {
                self.used = u;
                true
            }
            _ => false,
        }
    }

    #[cfg(test)]
    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_describe_themselves() {
        assert_eq!(TableFormat::KvmRev0.iidr_revision(), Some(0));
        assert_eq!(TableFormat::Native.iidr_revision(), None);
        assert_eq!(TableFormat::KvmRev0.ite_bytes(), 8..=8);
        assert!(TableFormat::KvmRev0.next_offsets() && !TableFormat::Native.next_offsets());
        assert!(!TableFormat::KvmRev0.collection_table_indexed());
        assert_eq!(TableFormat::KvmRev0.fixed_page_bytes(), Some(0x1_0000));
    }

    #[test]
    fn live_entries_per_format() {
        let e = DeviceEntry {
            itt_addr: 0x4_1230_0000,
            event_id_bits: 5,
        };
        for f in [TableFormat::Native, TableFormat::KvmRev0] {
            assert_eq!(f.decode_dte(f.encode_dte(Some(e)), 16), Some(e), "{f:?}");
            assert_eq!(
                f.decode_dte(f.encode_dte(Some(e)), 4),
                None,
                "{f:?}: Size beyond ID_bits"
            );
            assert_eq!(f.decode_dte(f.encode_dte(None), 16), None);
            let i = IttEntry {
                intid: 8195,
                icid: 9,
            };
            assert_eq!(f.decode_ite(f.encode_ite(Some(i))), Some(i));
            assert_eq!(f.decode_ite(f.encode_ite(None)), None);
        }
        // KVM's DTE: the ITT address moves to [48:5]; its next field does not matter.
        let w = TableFormat::KvmRev0.encode_dte(Some(e));
        assert_eq!(w, (1 << 63) | ((0x4_1230_0000 >> 8) << 5) | 4);
        assert_eq!(TableFormat::KvmRev0.decode_dte(w | (77 << 49), 16), Some(e));
        // KVM's ITE: pINTID 0 is invalid, whatever else the word holds.
        assert_eq!(TableFormat::KvmRev0.decode_ite(0xffff_0000_0000_ffff), None);
        assert_eq!(
            TableFormat::KvmRev0.encode_ite(Some(IttEntry {
                intid: 8192,
                icid: 1
            })),
            (8192 << 16) | 1
        );
    }

    #[test]
    fn budget_stops_at_the_limit() {
        let mut b = Budget::new(WorkLimit { entries: 10 });
        assert!(b.take(4) && b.take(6));
        assert!(!b.take(1));
        assert!(!b.take(u64::MAX));
        assert_eq!((b.used(), b.limit()), (10, 10));
    }
}
