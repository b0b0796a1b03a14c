// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Reading and writing KVM's ITS state: the registers of `KVM_DEV_ARM_VGIC_GRP_ITS_REGS`
//! and the tables of `KVM_DEV_ARM_ITS_SAVE_TABLES` / `KVM_DEV_ARM_ITS_RESTORE_TABLES`
//! (Linux `Documentation/virt/kvm/devices/arm-vgic-its.rst`, ABI revision 0, field layouts
//! in [`super::kvm`]).
//!
//! [`load`] reads exactly what `RESTORE_TABLES` restores, in its order, with its checks:
//!
//! 1. the Collection table (`GITS_BASER1`, a list): CTEs from the start until the first
//!    invalid one or the end of the table; each target must be a vCPU or
//!    `COLLECTION_NOT_MAPPED` (else `EINVAL`), an ICID may appear once (`EEXIST`) and must
//!    index a backed entry of the table (`EINVAL`);
//! 2. the Device table (`GITS_BASER0`, flat or two-level): from DeviceID 0, an invalid
//!    entry moves on by one, a valid one by its `next` (0 ends the table), a jump past the
//!    end of the (level-2) table ends it; per valid DTE: Size + 1 at most
//!    `GITS_TYPER.ID_bits + 1`, the DeviceID within `GITS_TYPER.Devbits` and covered by the
//!    table (`EINVAL`), then its ITT the same way from EventID 0: pINTID 0 is an invalid
//!    entry, a valid ITE needs pINTID >= 8192, `EventID + next` inside the ITT and a
//!    collection from step 1 (`EINVAL`). A two-level table is walked descriptor by
//!    descriptor, each valid level-2 page from its first entry.
//!
//! Offsets only move forward and 0 ends a chain, so no chain can loop; what a hostile
//! table can do is make the walk long (a 16 MiB table of invalid entries, 65536 devices of
//! 65536 events), and the [`WorkLimit`] ends it with [`AbiError::Budget`]. An unbacked
//! entry is [`AbiError::Read`] (`EFAULT`). [`AbiError::kvm_errno`] gives the errno
//! `RESTORE_TABLES` returns for the same tables; `tests/e2e.rs` in `passthrough-vmm`
//! compares the two on the real kernel.
//!
//! [`store`] writes what `SAVE_TABLES` writes (DTEs and ITEs in ID order with their `next`
//! offsets, capped at 2^14 - 1 and 2^16 - 1; the CTE list and an invalid terminator when
//! the table has room) and also clears every entry a restore would walk over, so that the
//! tables restore to exactly the image whatever the memory held before (KVM's own save
//! leaves stale entries in place). It returns the registers in the order the restore
//! sequence needs ([`KvmItsRegs::restore_order`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vm_memory::GuestMemory;

use super::image::{DeviceImage, EventImage, ItsImage, zero_fill};
use super::kvm::{self, Cte, Dte, Ite};
use super::{Budget, WorkLimit};
use crate::config::LPI_BASE;
use crate::regs::{GITS_CQUEUE_OFFSET_MASK, cbaser_queue_bytes};
use crate::tables::baser::{
    BASER_ENTRY_SIZE_SHIFT, BASER_INDIRECT, BASER_PAGE_SIZE_SHIFT, BASER_SIZE_MASK,
    BASER_TYPE_SHIFT, BASER_VALID, TableType,
};
use crate::tables::{TableError, TableKind, genmask, read_u64, write_u64};

/// `EFAULT` (Linux): a table entry is not in a memory slot.
pub const EFAULT: i32 = 14;
/// `EEXIST` (Linux): an ICID listed twice in the Collection table.
pub const EEXIST: i32 = 17;
/// `EINVAL` (Linux): inconsistent restored data.
pub const EINVAL: i32 = 22;

/// Offsets of the registers in `KVM_DEV_ARM_VGIC_GRP_ITS_REGS` (the `attr` of
/// `kvm_device_attr`, relative to the ITS control frame).
pub mod offsets {
    pub use crate::regs::{
        GITS_BASER0, GITS_CBASER, GITS_CREADR, GITS_CTLR, GITS_CWRITER, GITS_IIDR, GITS_TYPER,
    };
}

/// The ITS registers KVM exposes through `KVM_DEV_ARM_VGIC_GRP_ITS_REGS` (each read or
/// written as a `u64`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmItsRegs {
    /// `GITS_CTLR` (Enabled \[0\], Quiescent \[31\]).
    pub ctlr: u32,
    /// `GITS_IIDR`: its Revision selects the table ABI.
    pub iidr: u32,
    /// `GITS_TYPER` (read-only).
    pub typer: u64,
    /// `GITS_CBASER`.
    pub cbaser: u64,
    /// `GITS_CWRITER`.
    pub cwriter: u64,
    /// `GITS_CREADR`.
    pub creadr: u64,
    /// `GITS_BASER0..7` (KVM implements 0, Devices, and 1, Collections).
    pub baser: [u64; 8],
}

impl KvmItsRegs {
    /// Every register with its offset, for a save (`KVM_GET_DEVICE_ATTR`), in frame order.
    pub fn offsets() -> [u64; 14] {
        use crate::regs::*;
        let b = |n: u64| GITS_BASER0 + 8 * n;
        [
            GITS_CTLR,
            GITS_IIDR,
            GITS_TYPER,
            GITS_CBASER,
            GITS_CWRITER,
            GITS_CREADR,
            b(0),
            b(1),
            b(2),
            b(3),
            b(4),
            b(5),
            b(6),
            b(7),
        ]
    }

    /// Set the register at `offset` from a `KVM_GET_DEVICE_ATTR` value; `false` for an
    /// offset that is not one of [`KvmItsRegs::offsets`].
    pub fn set(&mut self, offset: u64, value: u64) -> bool {
        use crate::regs::*;
        match offset {
            GITS_CTLR => self.ctlr = value as u32,
            GITS_IIDR => self.iidr = value as u32,
            GITS_TYPER => self.typer = value,
            GITS_CBASER => self.cbaser = value,
            GITS_CWRITER => self.cwriter = value,
            GITS_CREADR => self.creadr = value,
            o if (GITS_BASER0..GITS_BASER0 + 64).contains(&o) && o % 8 == 0 => {
                self.baser[((o - GITS_BASER0) / 8) as usize] = value;
            }
            _ => return false,
        }
        true
    }

    /// The writes of the documented restore sequence (arm-vgic-its.rst, "ITS Restore
    /// Sequence", step d): `GITS_CBASER` first (writing it resets `GITS_CREADR`), then
    /// `GITS_IIDR` (the ABI revision, before the tables), the `GITS_BASER<n>`,
    /// `GITS_CWRITER`, `GITS_CREADR`; then the caller runs `KVM_DEV_ARM_ITS_RESTORE_TABLES`
    /// and writes [`KvmItsRegs::ctlr`] last. `GITS_TYPER` is read-only and not written.
    pub fn restore_order(&self) -> Vec<(u64, u64)> {
        use crate::regs::*;
        let mut v = vec![
            (GITS_CBASER, self.cbaser),
            (GITS_IIDR, u64::from(self.iidr)),
        ];
        for n in 0..2 {
            v.push((GITS_BASER0 + 8 * n, self.baser[n as usize]));
        }
        v.push((GITS_CWRITER, self.cwriter));
        v.push((GITS_CREADR, self.creadr));
        v
    }
}

/// What [`load`] and [`store`] need besides the registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadParams {
    /// vCPUs of the VM: CTE targets are processor numbers below this.
    pub vcpus: u32,
    /// INTID bits: LPIs must be below 2^intid_bits (KVM: 16).
    pub intid_bits: u8,
    /// The most table entries to read or write.
    pub limit: WorkLimit,
}

impl LoadParams {
    /// KVM's vGICv3 ITS with `vcpus` vCPUs and the default [`WorkLimit`].
    pub fn kvm(vcpus: u32) -> Self {
        LoadParams {
            vcpus,
            intid_bits: kvm::KVM_INTID_BITS,
            limit: WorkLimit::default(),
        }
    }
}

/// Why KVM's registers and tables could not be read, or an image not written, in ABI rev 0.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AbiError {
    /// A register KVM would not hold (or that selects another ABI).
    #[error("KVM ITS ABI: {register} = {value:#x}: {reason}")]
    Register {
        /// The register.
        register: &'static str,
        /// Its value.
        value: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A table entry is not in guest memory.
    #[error("KVM ITS ABI {op}: {source}")]
    Memory {
        /// `"load"` or `"store"`.
        op: &'static str,
        /// The access.
        #[source]
        source: TableError,
    },
    /// A valid DTE whose Size + 1 is beyond `GITS_TYPER.ID_bits + 1`.
    #[error("KVM ITS ABI load: DTE of DeviceID {device_id:#x}: {bits} EventID bits, at most {max}")]
    DteSize {
        /// DeviceID.
        device_id: u32,
        /// Size + 1.
        bits: u8,
        /// ID_bits + 1.
        max: u8,
    },
    /// A valid DTE for a DeviceID beyond `GITS_TYPER.Devbits` or not covered by the table.
    #[error("KVM ITS ABI: DeviceID {device_id:#x} is not a valid entry of the Device table")]
    DeviceOutOfRange {
        /// DeviceID.
        device_id: u32,
    },
    /// A valid ITE whose pINTID is not an LPI (below 8192, or beyond the INTID bits).
    #[error(
        "KVM ITS ABI: ITE of DeviceID {device_id:#x} EventID {event_id:#x}: pINTID {intid} is not an LPI below 2^{intid_bits}"
    )]
    IteLpi {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
        /// pINTID.
        intid: u32,
        /// INTID bits.
        intid_bits: u8,
    },
    /// A valid ITE whose `next` leaves the ITT.
    #[error(
        "KVM ITS ABI load: ITE of DeviceID {device_id:#x} EventID {event_id:#x}: next {next} leaves the {bits}-bit ITT"
    )]
    IteNext {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
        /// `next`.
        next: u32,
        /// EventID bits of the ITT.
        bits: u8,
    },
    /// An event beyond its device's EventID bits (store).
    #[error(
        "KVM ITS ABI store: EventID {event_id:#x} of DeviceID {device_id:#x} is beyond its {bits} EventID bits"
    )]
    EventOutOfRange {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
        /// EventID bits.
        bits: u8,
    },
    /// A valid ITE naming a collection the Collection table does not list.
    #[error(
        "KVM ITS ABI: ITE of DeviceID {device_id:#x} EventID {event_id:#x} names collection {icid:#x}, which the Collection table does not list"
    )]
    IteCollection {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
        /// ICID.
        icid: u16,
    },
    /// A CTE whose target is not a vCPU.
    #[error(
        "KVM ITS ABI: collection {icid:#x} targets processor {target:#x}, not one of {vcpus} vCPUs"
    )]
    CteTarget {
        /// ICID.
        icid: u16,
        /// RDBase as KVM reads it.
        target: u32,
        /// vCPUs.
        vcpus: u32,
    },
    /// An ICID listed twice.
    #[error("KVM ITS ABI load: collection {icid:#x} is listed twice")]
    CteDuplicate {
        /// ICID.
        icid: u16,
    },
    /// An ICID that does not index a backed entry of the Collection table.
    #[error("KVM ITS ABI: collection {icid:#x} is beyond the Collection table")]
    CteOutOfRange {
        /// ICID.
        icid: u16,
    },
    /// The walk needed more than the [`WorkLimit`].
    #[error("KVM ITS ABI {op}: more than {limit} table entries to read or write")]
    Budget {
        /// `"load"` or `"store"`.
        op: &'static str,
        /// The limit.
        limit: u64,
    },
    /// The image cannot be written in KVM's format.
    #[error("KVM ITS ABI store: {0}")]
    Unrepresentable(&'static str),
    /// Two tables of the image overlap in guest memory.
    #[error(
        "KVM ITS ABI store: the {first} at {first_addr:#x} overlaps the {second} at {second_addr:#x}"
    )]
    Overlap {
        /// The structure lower in memory.
        first: TableKind,
        /// Its address.
        first_addr: u64,
        /// The other one.
        second: TableKind,
        /// Its address.
        second_addr: u64,
    },
}

impl AbiError {
    /// The errno `KVM_DEV_ARM_ITS_RESTORE_TABLES` returns for tables on which [`load`]
    /// fails this way, when KVM refuses them too; `None` for a refusal of the model alone
    /// (a register KVM would not report, the work limit, a pINTID at or beyond 2^16 that
    /// KVM would accept if the guest's LPI property table reached it) and for store errors.
    pub fn kvm_errno(&self) -> Option<i32> {
        match self {
            AbiError::Memory { op: "load", .. } => Some(EFAULT),
            AbiError::DteSize { .. }
            | AbiError::DeviceOutOfRange { .. }
            | AbiError::IteNext { .. }
            | AbiError::IteCollection { .. }
            | AbiError::CteTarget { .. }
            | AbiError::CteOutOfRange { .. } => Some(EINVAL),
            AbiError::IteLpi { intid, .. } if *intid < LPI_BASE => Some(EINVAL),
            AbiError::CteDuplicate { .. } => Some(EEXIST),
            _ => None,
        }
    }
}

/// A `GITS_BASER<n>` as KVM's ITS holds it: 64 KiB pages, 8-byte entries.
#[derive(Clone, Copy, Debug)]
struct KvmTable {
    base: u64,
    bytes: u64,
    indirect: bool,
}

impl KvmTable {
    /// Decode and check `GITS_BASER<n>` (`None` when not valid).
    fn from_baser(
        register: &'static str,
        value: u64,
        ty: TableType,
    ) -> Result<Option<Self>, AbiError> {
        let bad = |reason| AbiError::Register {
            register,
            value,
            reason,
        };
        if value & BASER_VALID == 0 {
            return Ok(None);
        }
        if (value >> BASER_TYPE_SHIFT) & 7 != ty as u64 {
            return Err(bad("Type is not the one KVM implements in this register"));
        }
        if (value >> BASER_ENTRY_SIZE_SHIFT) & 0x1f != kvm::ENTRY_BYTES - 1 {
            return Err(bad("Entry_Size is not 8 bytes (ABI rev 0)"));
        }
        if (value >> BASER_PAGE_SIZE_SHIFT) & 3 != 2 {
            return Err(bad("Page_Size is not 64 KiB (KVM's only page size)"));
        }
        let indirect = value & BASER_INDIRECT != 0;
        if indirect && ty == TableType::Collections {
            return Err(bad("KVM's Collection table is never two-level"));
        }
        Ok(Some(KvmTable {
            // GITS_BASER_ADDR_48_to_52: PA[47:16] in place, PA[51:48] in bits [15:12].
            base: (value & genmask(47, 16)) | (((value >> 12) & 0xf) << 48),
            bytes: ((value & BASER_SIZE_MASK) + 1) * kvm::KVM_PAGE_BYTES,
            indirect,
        }))
    }

    fn entries(&self) -> u64 {
        self.bytes / kvm::ENTRY_BYTES
    }
}

/// Geometry `GITS_TYPER` advertises, checked for ABI rev 0.
struct Geometry {
    device_id_bits: u8,
    event_id_bits: u8,
}

fn geometry(regs: &KvmItsRegs) -> Result<Geometry, AbiError> {
    let t = regs.typer;
    let bad = |reason| AbiError::Register {
        register: "GITS_TYPER",
        value: t,
        reason,
    };
    if t & 1 == 0 {
        return Err(bad("Physical (PLPIS) is 0"));
    }
    if ((t >> 4) & 0xf) + 1 != kvm::ENTRY_BYTES {
        return Err(bad("ITT_entry_size is not 8 bytes (ABI rev 0)"));
    }
    Ok(Geometry {
        event_id_bits: ((t >> 8) & 0x1f) as u8 + 1,
        device_id_bits: ((t >> 13) & 0x1f) as u8 + 1,
    })
}

/// The registers every image shares with KVM: revision, queue, tables.
struct Checked {
    geo: Geometry,
    devices: Option<KvmTable>,
    collections: Option<KvmTable>,
}

fn check_registers(regs: &KvmItsRegs) -> Result<Checked, AbiError> {
    let rev = kvm::iidr_revision(regs.iidr);
    if rev != kvm::ABI_REV0 {
        return Err(AbiError::Register {
            register: "GITS_IIDR",
            value: u64::from(regs.iidr),
            reason: "Revision selects a table ABI other than revision 0",
        });
    }
    let geo = geometry(regs)?;
    let cb = regs.cbaser;
    if cb & genmask(15, 12) != 0 {
        return Err(AbiError::Register {
            register: "GITS_CBASER",
            value: cb,
            reason: "the command queue is not 64 KiB aligned (KVM clears bits [15:12])",
        });
    }
    let queue = cbaser_queue_bytes(cb);
    for (register, value) in [("GITS_CWRITER", regs.cwriter), ("GITS_CREADR", regs.creadr)] {
        if value & !GITS_CQUEUE_OFFSET_MASK != 0 || value >= queue {
            return Err(AbiError::Register {
                register,
                value,
                reason: "not a command slot of the queue",
            });
        }
    }
    for (n, &v) in regs.baser.iter().enumerate().skip(2) {
        if v != 0 {
            return Err(AbiError::Register {
                register: [
                    "",
                    "",
                    "GITS_BASER2",
                    "GITS_BASER3",
                    "GITS_BASER4",
                    "GITS_BASER5",
                    "GITS_BASER6",
                    "GITS_BASER7",
                ][n],
                value: v,
                reason: "KVM implements GITS_BASER0 and GITS_BASER1 only",
            });
        }
    }
    Ok(Checked {
        geo,
        devices: KvmTable::from_baser("GITS_BASER0", regs.baser[0], TableType::Devices)?,
        collections: KvmTable::from_baser("GITS_BASER1", regs.baser[1], TableType::Collections)?,
    })
}

/// What one entry of a scan says.
enum Step {
    /// Go on `n` entries further (an invalid entry: 1).
    Next(u32),
    /// The last valid entry (`next == 0`).
    Last,
}

/// How a scan ended.
#[derive(PartialEq, Eq)]
enum End {
    /// A valid entry with `next == 0`.
    Last,
    /// A jump or the walk passed the end of the table.
    Exhausted,
}

struct Loader<'a, M: GuestMemory + ?Sized> {
    mem: &'a M,
    params: LoadParams,
    budget: Budget,
    checked: Checked,
    image: ItsImage,
}

impl<M: GuestMemory + ?Sized> Loader<'_, M> {
    fn read(&mut self, addr: u64, kind: TableKind) -> Result<u64, AbiError> {
        if !self.budget.take(1) {
            return Err(AbiError::Budget {
                op: "load",
                limit: self.budget.limit(),
            });
        }
        read_u64(self.mem, addr, kind).map_err(|source| AbiError::Memory { op: "load", source })
    }

    /// KVM's `scan_its_table`: from `base`, `size` bytes, IDs from `start`.
    fn scan(
        &mut self,
        base: u64,
        size: u64,
        start: u64,
        kind: TableKind,
        mut entry: impl FnMut(&mut Self, u64, u64) -> Result<Step, AbiError>,
    ) -> Result<End, AbiError> {
        let (mut gpa, mut id, mut len) = (base, start, size);
        loop {
            let word = self.read(gpa, kind)?;
            let n = match entry(self, id, word)? {
                Step::Last => return Ok(End::Last),
                Step::Next(n) => u64::from(n),
            };
            let bytes = n * kvm::ENTRY_BYTES;
            if bytes >= len {
                return Ok(End::Exhausted);
            }
            id += n;
            gpa += bytes;
            len -= bytes;
        }
    }

    /// KVM's `vgic_its_check_id` for the Device table: DeviceID within Devbits, covered by
    /// the (two-level) table, entry backed.
    fn device_covered(&mut self, table: KvmTable, id: u64) -> Result<bool, AbiError> {
        if id >> self.checked.geo.device_id_bits != 0 {
            return Ok(false);
        }
        let addr = if !table.indirect {
            if id >= table.entries() {
                return Ok(false);
            }
            table.base + id * kvm::ENTRY_BYTES
        } else {
            let per_page = kvm::KVM_PAGE_BYTES / kvm::ENTRY_BYTES;
            let index = id / per_page;
            if index >= table.entries() {
                return Ok(false);
            }
            let Ok(l1) = read_u64(
                self.mem,
                table.base + index * kvm::ENTRY_BYTES,
                TableKind::Level1,
            ) else {
                return Ok(false);
            };
            if l1 & kvm::L1_VALID == 0 {
                return Ok(false);
            }
            (l1 & kvm::L1_ADDR_MASK) + (id % per_page) * kvm::ENTRY_BYTES
        };
        Ok(crate::tables::backed(self.mem, addr))
    }

    fn collections(&mut self) -> Result<(), AbiError> {
        let Some(t) = self.checked.collections else {
            return Ok(());
        };
        let mut read = 0;
        while read < t.bytes {
            let cte = Cte::decode(self.read(t.base + read, TableKind::Collections)?);
            if !cte.valid {
                break;
            }
            let target = cte.target();
            if target != kvm::COLLECTION_NOT_MAPPED && target >= self.params.vcpus {
                return Err(AbiError::CteTarget {
                    icid: cte.icid,
                    target,
                    vcpus: self.params.vcpus,
                });
            }
            if self.image.collections.contains_key(&cte.icid) {
                return Err(AbiError::CteDuplicate { icid: cte.icid });
            }
            let slot = t.base + u64::from(cte.icid) * kvm::ENTRY_BYTES;
            if u64::from(cte.icid) >= t.entries() || !crate::tables::backed(self.mem, slot) {
                return Err(AbiError::CteOutOfRange { icid: cte.icid });
            }
            self.image.collections.insert(
                cte.icid,
                (target != kvm::COLLECTION_NOT_MAPPED).then_some(target),
            );
            read += kvm::ENTRY_BYTES;
        }
        Ok(())
    }

    fn dte(&mut self, table: KvmTable, id: u64, word: u64) -> Result<Step, AbiError> {
        let dte = Dte::decode(word);
        if !dte.valid {
            return Ok(Step::Next(1));
        }
        let device_id = id as u32;
        let bits = dte.size + 1;
        let max = self.checked.geo.event_id_bits;
        if bits > max {
            return Err(AbiError::DteSize {
                device_id,
                bits,
                max,
            });
        }
        if !self.device_covered(table, id)? {
            return Err(AbiError::DeviceOutOfRange { device_id });
        }
        let mut events = BTreeMap::new();
        let itt_bytes = (1u64 << bits) * kvm::ENTRY_BYTES;
        self.scan(dte.itt_addr, itt_bytes, 0, TableKind::Itt, |l, event, w| {
            l.ite(device_id, bits, event, w, &mut events)
        })?;
        self.image.devices.insert(
            device_id,
            DeviceImage {
                itt_addr: dte.itt_addr,
                event_id_bits: bits,
                events,
            },
        );
        Ok(if dte.next == 0 {
            Step::Last
        } else {
            Step::Next(dte.next)
        })
    }

    fn ite(
        &mut self,
        device_id: u32,
        bits: u8,
        event: u64,
        word: u64,
        events: &mut BTreeMap<u32, EventImage>,
    ) -> Result<Step, AbiError> {
        let ite = Ite::decode(word);
        if !ite.valid() {
            return Ok(Step::Next(1));
        }
        let event_id = event as u32;
        let intid_bits = self.params.intid_bits;
        if ite.pintid < LPI_BASE || u64::from(ite.pintid) >> intid_bits != 0 {
            return Err(AbiError::IteLpi {
                device_id,
                event_id,
                intid: ite.pintid,
                intid_bits,
            });
        }
        if (event + u64::from(ite.next)) >> bits != 0 {
            return Err(AbiError::IteNext {
                device_id,
                event_id,
                next: ite.next,
                bits,
            });
        }
        if !self.image.collections.contains_key(&ite.icid) {
            return Err(AbiError::IteCollection {
                device_id,
                event_id,
                icid: ite.icid,
            });
        }
        events.insert(
            event_id,
            EventImage {
                intid: ite.pintid,
                icid: ite.icid,
            },
        );
        Ok(if ite.next == 0 {
            Step::Last
        } else {
            Step::Next(ite.next)
        })
    }

    fn devices(&mut self) -> Result<(), AbiError> {
        let Some(t) = self.checked.devices else {
            return Ok(());
        };
        if !t.indirect {
            self.scan(t.base, t.bytes, 0, TableKind::Devices, |l, id, w| {
                l.dte(t, id, w)
            })?;
            return Ok(());
        }
        let per_page = kvm::KVM_PAGE_BYTES / kvm::ENTRY_BYTES;
        // KVM's handle_l1_dte: an invalid descriptor moves on by one; a valid one scans its
        // page from its first entry and ends everything if that page holds the last DTE.
        let named_pages = t
            .entries()
            .min((1u64 << self.checked.geo.device_id_bits).div_ceil(per_page));
        self.scan(t.base, t.bytes, 0, TableKind::Level1, |l, index, w| {
            if w & kvm::L1_VALID == 0 {
                return Ok(Step::Next(1));
            }
            let page = w & kvm::L1_ADDR_MASK;
            // Recorded when it can hold a DeviceID the ITS names (Devbits); a page beyond
            // is still walked, as KVM walks it, and a valid DTE there is refused.
            if index < named_pages {
                l.image.device_l2_pages.insert(index as u32, page);
            }
            match l.scan(
                page,
                kvm::KVM_PAGE_BYTES,
                index * per_page,
                TableKind::Devices,
                |l, id, w| l.dte(t, id, w),
            )? {
                End::Last => Ok(Step::Last),
                End::Exhausted => Ok(Step::Next(1)),
            }
        })?;
        // The descriptors after the page of the last device are not walked by a restore
        // but are guest memory a later MAPD uses: record the valid ones for DeviceIDs the
        // ITS can name.
        for index in 0..named_pages {
            if self.image.device_l2_pages.contains_key(&(index as u32)) {
                continue;
            }
            let w = self.read(t.base + index * kvm::ENTRY_BYTES, TableKind::Level1)?;
            if w & kvm::L1_VALID != 0 {
                self.image
                    .device_l2_pages
                    .insert(index as u32, w & kvm::L1_ADDR_MASK);
            }
        }
        Ok(())
    }
}

/// Read a whole ITS from KVM's registers and the tables `KVM_DEV_ARM_ITS_SAVE_TABLES`
/// wrote in `mem`, with exactly `KVM_DEV_ARM_ITS_RESTORE_TABLES`'s rules (see the module
/// documentation): the image is the state KVM would restore from them.
pub fn load<M: GuestMemory + ?Sized>(
    regs: &KvmItsRegs,
    mem: &M,
    params: LoadParams,
) -> Result<ItsImage, AbiError> {
    let checked = check_registers(regs)?;
    let mut l = Loader {
        mem,
        params,
        budget: Budget::new(params.limit),
        image: ItsImage {
            enabled: regs.ctlr & 1 != 0,
            cbaser: regs.cbaser,
            cwriter: regs.cwriter,
            creadr: regs.creadr,
            stalled: false,
            device_baser: regs.baser[0],
            collection_baser: regs.baser[1],
            ..ItsImage::default()
        },
        checked,
    };
    l.collections()?;
    l.devices()?;
    Ok(l.image)
}

/// Write `image` into `mem` as KVM's tables (ABI rev 0) and return the registers to give
/// KVM: after the writes of [`KvmItsRegs::restore_order`],
/// `KVM_DEV_ARM_ITS_RESTORE_TABLES` restores exactly `image` (test
/// `stored_images_load_back`; on the real kernel, `passthrough-vmm`'s e2e).
///
/// Refused: a stalled queue (KVM never stalls), registers KVM would not hold, a device,
/// event or collection KVM's restore would refuse, an ITE naming a collection the image
/// does not list, tables that overlap, more than the work limit. On error `mem` may be
/// partly written.
pub fn store<M: GuestMemory + ?Sized>(
    image: &ItsImage,
    mem: &M,
    params: LoadParams,
) -> Result<KvmItsRegs, AbiError> {
    if image.stalled {
        return Err(AbiError::Unrepresentable(
            "the command queue is stalled (KVM never stalls)",
        ));
    }
    let mut regs = KvmItsRegs {
        ctlr: u32::from(image.enabled),
        iidr: kvm::KVM_IIDR_REV0,
        typer: kvm::KVM_TYPER,
        cbaser: image.cbaser,
        cwriter: image.cwriter,
        creadr: image.creadr,
        baser: [0; 8],
    };
    regs.baser[0] = image.device_baser;
    regs.baser[1] = image.collection_baser;
    let checked = check_registers(&regs)?;
    let mut budget = Budget::new(params.limit);
    let mut take = |n: u64| {
        if budget.take(n) {
            Ok(())
        } else {
            Err(AbiError::Budget {
                op: "store",
                limit: params.limit.entries,
            })
        }
    };
    let mem_err = |source| AbiError::Memory {
        op: "store",
        source,
    };
    let write = |addr: u64, word: u64, kind| write_u64(mem, addr, word, kind).map_err(mem_err);
    let zero = |addr: u64, bytes: u64, kind| zero_fill(mem, addr, bytes, kind).map_err(mem_err);

    // Check everything before writing anything.
    let geo = &checked.geo;
    if image.enabled
        && (checked.devices.is_none()
            || checked.collections.is_none()
            || image.cbaser & (1 << 63) == 0)
    {
        return Err(AbiError::Unrepresentable(
            "enabled without valid GITS_BASER0, GITS_BASER1 and GITS_CBASER (KVM refuses to enable)",
        ));
    }
    let per_page = kvm::KVM_PAGE_BYTES / kvm::ENTRY_BYTES;
    let dt = checked.devices;
    let mut dte_addr = BTreeMap::new();
    for (&device_id, dev) in &image.devices {
        let id = u64::from(device_id);
        let out = AbiError::DeviceOutOfRange { device_id };
        let t = dt.ok_or(out.clone())?;
        if id >> geo.device_id_bits != 0 {
            return Err(out);
        }
        let addr = if t.indirect {
            let index = id / per_page;
            let page = image
                .device_l2_pages
                .get(&(index as u32))
                .ok_or(out.clone())?;
            if index >= t.entries() {
                return Err(out);
            }
            page + (id % per_page) * kvm::ENTRY_BYTES
        } else {
            if id >= t.entries() {
                return Err(out);
            }
            t.base + id * kvm::ENTRY_BYTES
        };
        dte_addr.insert(device_id, addr);
        if dev.event_id_bits == 0 || dev.event_id_bits > geo.event_id_bits {
            return Err(AbiError::DteSize {
                device_id,
                bits: dev.event_id_bits,
                max: geo.event_id_bits,
            });
        }
        let probe = Dte {
            valid: true,
            next: 0,
            itt_addr: dev.itt_addr,
            size: dev.event_id_bits - 1,
        };
        if probe.encode().is_none() {
            return Err(AbiError::Unrepresentable(
                "an ITT address is not 256-byte aligned or beyond 52 bits",
            ));
        }
        for (&event_id, ev) in &dev.events {
            if u64::from(event_id) >> dev.event_id_bits != 0 {
                return Err(AbiError::EventOutOfRange {
                    device_id,
                    event_id,
                    bits: dev.event_id_bits,
                });
            }
            if ev.intid < LPI_BASE || u64::from(ev.intid) >> params.intid_bits != 0 {
                return Err(AbiError::IteLpi {
                    device_id,
                    event_id,
                    intid: ev.intid,
                    intid_bits: params.intid_bits,
                });
            }
            if !image.collections.contains_key(&ev.icid) {
                return Err(AbiError::IteCollection {
                    device_id,
                    event_id,
                    icid: ev.icid,
                });
            }
        }
    }
    if let Some(t) = dt
        && t.indirect
    {
        for (&index, &page) in &image.device_l2_pages {
            if u64::from(index) >= t.entries() || page & !kvm::L1_ADDR_MASK != 0 {
                return Err(AbiError::Unrepresentable(
                    "a level-1 descriptor beyond the table or not a 64 KiB page",
                ));
            }
        }
    }
    if !image.collections.is_empty() {
        let t = checked.collections.ok_or(AbiError::Unrepresentable(
            "collections without a valid Collection table (GITS_BASER1)",
        ))?;
        if image.collections.len() as u64 > t.entries() {
            return Err(AbiError::Unrepresentable(
                "more collections than Collection table entries",
            ));
        }
        for (&icid, &target) in &image.collections {
            if let Some(target) = target
                && target >= params.vcpus
            {
                return Err(AbiError::CteTarget {
                    icid,
                    target,
                    vcpus: params.vcpus,
                });
            }
            if u64::from(icid) >= t.entries() {
                return Err(AbiError::CteOutOfRange { icid });
            }
        }
    }
    check_overlaps(image, &checked)?;

    // Device table: clear what a restore walks before the last DTE, then the DTEs with
    // their next offsets.
    if let Some(t) = dt {
        let ids: Vec<u32> = image.devices.keys().copied().collect();
        if t.indirect {
            take(t.entries())?;
            zero(t.base, t.bytes, TableKind::Level1)?;
            // A restore walks every level-2 page up to the one holding the last DTE (all of
            // them without devices); the pages after it are never read and may even be
            // unbacked (a load records their descriptors all the same).
            let last_page = ids.last().map(|&l| u64::from(l) / per_page);
            for (&index, &page) in &image.device_l2_pages {
                if last_page.is_none_or(|last| u64::from(index) <= last) {
                    take(per_page + 1)?;
                    zero(page, kvm::KVM_PAGE_BYTES, TableKind::Devices)?;
                }
                write(
                    t.base + u64::from(index) * kvm::ENTRY_BYTES,
                    kvm::L1_VALID | page,
                    TableKind::Level1,
                )?;
            }
        } else {
            // Without devices a restore walks the whole table.
            let end = ids.last().map_or(t.entries(), |&l| u64::from(l) + 1);
            take(end)?;
            zero(t.base, end * kvm::ENTRY_BYTES, TableKind::Devices)?;
        }
        for (i, &device_id) in ids.iter().enumerate() {
            let dev = &image.devices[&device_id];
            let next = ids
                .get(i + 1)
                .map_or(0, |&n| (n - device_id).min(kvm::DTE_NEXT_MAX));
            store_itt(dev, &mut take, &write, &zero)?;
            let word = Dte {
                valid: true,
                next,
                itt_addr: dev.itt_addr,
                size: dev.event_id_bits - 1,
            }
            .encode()
            .ok_or(AbiError::Unrepresentable("a DTE field does not fit"))?;
            take(1)?;
            write(dte_addr[&device_id], word, TableKind::Devices)?;
        }
    }
    // Collection table: the list in ICID order, then an invalid entry if there is room.
    if let Some(t) = checked.collections {
        let mut at = t.base;
        for (&icid, &target) in &image.collections {
            let word = Cte {
                valid: true,
                rdbase: u64::from(target.unwrap_or(kvm::COLLECTION_NOT_MAPPED)),
                icid,
            }
            .encode()
            .ok_or(AbiError::Unrepresentable("a CTE field does not fit"))?;
            take(1)?;
            write(at, word, TableKind::Collections)?;
            at += kvm::ENTRY_BYTES;
        }
        if at < t.base + t.bytes {
            take(1)?;
            write(at, 0, TableKind::Collections)?;
        }
    }
    Ok(regs)
}

/// Write one device's ITT: clear what a restore walks up to the last ITE (the whole ITT
/// when it has none), then the ITEs with their next offsets.
fn store_itt(
    dev: &DeviceImage,
    take: &mut impl FnMut(u64) -> Result<(), AbiError>,
    write: &impl Fn(u64, u64, TableKind) -> Result<(), AbiError>,
    zero: &impl Fn(u64, u64, TableKind) -> Result<(), AbiError>,
) -> Result<(), AbiError> {
    let events: Vec<(u32, EventImage)> = dev.events.iter().map(|(&e, &v)| (e, v)).collect();
    let end = events
        .last()
        .map_or(1u64 << dev.event_id_bits, |(l, _)| u64::from(*l) + 1);
    take(end)?;
    zero(dev.itt_addr, end * kvm::ENTRY_BYTES, TableKind::Itt)?;
    for (i, &(event_id, ev)) in events.iter().enumerate() {
        let next = events
            .get(i + 1)
            .map_or(0, |(n, _)| (n - event_id).min(kvm::ITE_NEXT_MAX));
        let word = Ite {
            next,
            pintid: ev.intid,
            icid: ev.icid,
        }
        .encode()
        .ok_or(AbiError::Unrepresentable("an ITE field does not fit"))?;
        write(
            dev.itt_addr + u64::from(event_id) * kvm::ENTRY_BYTES,
            word,
            TableKind::Itt,
        )?;
    }
    Ok(())
}

/// Refuse an image whose KVM tables would share memory.
fn check_overlaps(image: &ItsImage, checked: &Checked) -> Result<(), AbiError> {
    let mut regions: Vec<(u64, u64, TableKind)> = Vec::new();
    if let Some(t) = checked.devices {
        if t.indirect {
            regions.push((t.base, t.bytes, TableKind::Level1));
            for &p in image.device_l2_pages.values() {
                regions.push((p, kvm::KVM_PAGE_BYTES, TableKind::Devices));
            }
        } else {
            let end = image
                .devices
                .keys()
                .last()
                .map_or(t.entries(), |&l| u64::from(l) + 1);
            regions.push((t.base, end * kvm::ENTRY_BYTES, TableKind::Devices));
        }
    }
    if let Some(t) = checked.collections
        && !image.collections.is_empty()
    {
        let n = (image.collections.len() as u64 + 1).min(t.entries());
        regions.push((t.base, n * kvm::ENTRY_BYTES, TableKind::Collections));
    }
    for dev in image.devices.values() {
        regions.push((
            dev.itt_addr,
            (1u64 << dev.event_id_bits.min(32)) * kvm::ENTRY_BYTES,
            TableKind::Itt,
        ));
    }
    regions.sort_by_key(|r| r.0);
    for w in regions.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a.0.saturating_add(a.1) > b.0 {
            return Err(AbiError::Overlap {
                first: a.2,
                first_addr: a.0,
                second: b.2,
                second_addr: b.0,
            });
        }
    }
    Ok(())
}
