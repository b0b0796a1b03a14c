// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`ItsImage`]: the whole state of an ITS, decoded and independent of any table format.
//!
//! An ITS keeps its Device table, ITTs and (with an indexed format) Collection table in
//! guest memory, so its registers alone do not say which DeviceID/EventID reaches which LPI
//! on which vCPU. An image does: the registers plus every valid device, event and
//! collection. [`Its::export_image`] reads one out of a live model (any format),
//! [`Its::import_image`] builds a live model from one by writing its tables into guest
//! memory, [`crate::abi::kvm::load`] and [`crate::abi::kvm::store`] translate one from and
//! to KVM's tables.
//!
//! Tables are untrusted guest memory: every entry is decoded with the model's own rules
//! (an entry this ITS could not have written reads as invalid), every walk is bounded by a
//! [`WorkLimit`], and an image whose tables would overlap in memory is refused rather than
//! written half over itself. Tests: `tests/abi.rs`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::{Budget, WorkLimit};
use crate::config::ItsConfig;
use crate::its::{BASER_COUNT, COLLECTION_BASER, DEVICE_BASER, Its};
use crate::state::{ITS_STATE_VERSION, ItsState, StateError};
use crate::tables::baser::{L1_ADDR_MASK, L1_ENTRY_SIZE, L1_VALID, TableDescriptor};
use crate::tables::device::DeviceEntry;
use crate::tables::itt::IttEntry;
use crate::tables::{TableError, TableKind};

/// One device of an [`ItsImage`]: what MAPD recorded and the events MAPTI/MAPI mapped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceImage {
    /// Guest physical address of the device's ITT.
    pub itt_addr: u64,
    /// EventID bits of the ITT (MAPD `Size + 1`).
    pub event_id_bits: u8,
    /// Valid events: EventID -> mapping.
    pub events: BTreeMap<u32, EventImage>,
}

/// One valid event (ITE) of an [`ItsImage`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventImage {
    /// The LPI.
    pub intid: u32,
    /// The collection.
    pub icid: u16,
}

/// The whole state of an ITS (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItsImage {
    /// `GITS_CTLR.Enabled`.
    pub enabled: bool,
    /// `GITS_CBASER`.
    pub cbaser: u64,
    /// `GITS_CWRITER.Offset` in bytes.
    pub cwriter: u64,
    /// `GITS_CREADR.Offset` in bytes.
    pub creadr: u64,
    /// `GITS_CREADR.Stalled` (KVM never stalls).
    pub stalled: bool,
    /// `GITS_BASER0`: the Device table.
    pub device_baser: u64,
    /// `GITS_BASER1`: the Collection table (0 when not implemented).
    pub collection_baser: u64,
    /// Valid level-1 descriptors of a two-level Device table: index -> level-2 page.
    pub device_l2_pages: BTreeMap<u32, u64>,
    /// Valid level-1 descriptors of a two-level Collection table: index -> level-2 page.
    pub collection_l2_pages: BTreeMap<u32, u64>,
    /// Valid devices: DeviceID -> device.
    pub devices: BTreeMap<u32, DeviceImage>,
    /// Collections: ICID -> target processor number, or `None` for a collection that is
    /// not mapped (KVM keeps one an ITE names, and needs it to restore the ITE). A model
    /// keeps only the unmapped collections an ITE names: one nothing names changes no
    /// translation, and is gone after an import and export.
    pub collections: BTreeMap<u16, Option<u32>>,
}

impl ItsImage {
    /// Where (DeviceID, EventID) goes: (LPI, target processor), `None` when the ITS is
    /// disabled, the device, the event or the collection is not mapped. The same answer
    /// as [`Its::translate`] on a model imported from this image (test
    /// `image_translation_is_the_models`).
    pub fn translate(&self, device_id: u32, event_id: u32) -> Option<(u32, u32)> {
        if !self.enabled {
            return None;
        }
        let ev = self.devices.get(&device_id)?.events.get(&event_id)?;
        let target = self.collections.get(&ev.icid).copied().flatten()?;
        Some((ev.intid, target))
    }

    /// Number of valid events over all devices.
    pub fn event_count(&self) -> usize {
        self.devices.values().map(|d| d.events.len()).sum()
    }
}

/// Why an image could not be exported or imported.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// The walk needed more than the [`WorkLimit`].
    #[error("ITS image {op}: more than {limit} table entries to read or write")]
    Budget {
        /// `"export"` or `"import"`.
        op: &'static str,
        /// The limit.
        limit: u64,
    },
    /// A guest-memory access failed.
    #[error("ITS image: {0}")]
    Table(#[from] TableError),
    /// The image's registers are not ones this ITS could hold.
    #[error("ITS image import: {0}")]
    Registers(#[from] StateError),
    /// A device this ITS cannot hold where the image puts it.
    #[error("ITS image import: DeviceID {device_id:#x}: {reason}")]
    Device {
        /// DeviceID.
        device_id: u32,
        /// Why.
        reason: &'static str,
    },
    /// An event this ITS cannot hold.
    #[error("ITS image import: DeviceID {device_id:#x} EventID {event_id:#x}: {reason}")]
    Event {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
        /// Why.
        reason: &'static str,
    },
    /// A collection this ITS cannot hold.
    #[error("ITS image import: collection {icid:#x}: {reason}")]
    Collection {
        /// ICID.
        icid: u16,
        /// Why.
        reason: &'static str,
    },
    /// Two tables of the image overlap in guest memory: writing one would corrupt the other.
    #[error(
        "ITS image import: the {first} at {first_addr:#x} overlaps the {second} at {second_addr:#x}"
    )]
    Overlap {
        /// The structure lower in memory.
        first: TableKind,
        /// Its address.
        first_addr: u64,
        /// The structure it overlaps.
        second: TableKind,
        /// Its address.
        second_addr: u64,
    },
}

/// Entries read from guest memory per access by the table walks.
const CHUNK_ENTRIES: u64 = 4096;

/// Read `count` entries of `stride` bytes at `base`, calling `f(index, first word)` for each,
/// in chunks; a failing chunk is retried entry by entry to name the first unbacked entry.
pub(crate) fn read_entries<M: GuestMemory + ?Sized>(
    mem: &M,
    base: u64,
    count: u64,
    stride: u64,
    kind: TableKind,
    mut f: impl FnMut(u64, u64),
) -> Result<(), TableError> {
    let mut buf = Vec::new();
    let mut done = 0u64;
    while done < count {
        let n = (count - done).min(CHUNK_ENTRIES);
        let addr = entry_addr(base, done, stride, kind)?;
        buf.resize((n * stride) as usize, 0);
        if mem.read_slice(&mut buf, GuestAddress(addr)).is_err() {
            for i in 0..n {
                let a = entry_addr(base, done + i, stride, kind)?;
                let w = mem
                    .read_obj::<u64>(GuestAddress(a))
                    .map_err(|_| TableError::Read {
                        kind,
                        addr: a,
                        len: 8,
                    })?;
                f(done + i, u64::from_le(w));
            }
        } else {
            for i in 0..n {
                let at = (i * stride) as usize;
                let mut w = [0u8; 8];
                w.copy_from_slice(&buf[at..at + 8]);
                f(done + i, u64::from_le_bytes(w));
            }
        }
        done += n;
    }
    Ok(())
}

/// Write `bytes` zero bytes at `addr`, in chunks.
pub(crate) fn zero_fill<M: GuestMemory + ?Sized>(
    mem: &M,
    addr: u64,
    bytes: u64,
    kind: TableKind,
) -> Result<(), TableError> {
    const CHUNK: u64 = 64 * 1024;
    let zeros = [0u8; CHUNK as usize];
    let mut done = 0;
    while done < bytes {
        let n = (bytes - done).min(CHUNK);
        let a = addr.checked_add(done).ok_or(TableError::Write {
            kind,
            addr,
            len: bytes as usize,
        })?;
        mem.write_slice(&zeros[..n as usize], GuestAddress(a))
            .map_err(|_| TableError::Write {
                kind,
                addr: a,
                len: n as usize,
            })?;
        done += n;
    }
    Ok(())
}

fn entry_addr(base: u64, index: u64, stride: u64, kind: TableKind) -> Result<u64, TableError> {
    index
        .checked_mul(stride)
        .and_then(|o| base.checked_add(o))
        .ok_or(TableError::Read {
            kind,
            addr: base,
            len: 8,
        })
}

/// The level-1 entries of a two-level table that cover IDs below `ids`.
fn l1_entries_for(desc: &TableDescriptor, ids: u64) -> u64 {
    let per_page = desc.page_size.bytes() / desc.entry_size;
    (desc.table_bytes() / L1_ENTRY_SIZE).min(ids.div_ceil(per_page))
}

/// Walk the entries of the table `desc` for IDs below `ids`: `f(id, word)` for every entry
/// present, `l1(index, page)` for every valid level-1 descriptor.
fn walk_table<M: GuestMemory + ?Sized>(
    mem: &M,
    desc: &TableDescriptor,
    ids: u64,
    kind: TableKind,
    budget: &mut Budget,
    mut l1: impl FnMut(u32, u64),
    mut f: impl FnMut(u32, u64),
) -> Result<(), ImageError> {
    let over = |budget: &Budget| ImageError::Budget {
        op: "export",
        limit: budget.limit(),
    };
    if !desc.indirect {
        let n = desc.capacity().min(ids);
        if !budget.take(n) {
            return Err(over(budget));
        }
        read_entries(mem, desc.base, n, desc.entry_size, kind, |i, w| {
            f(i as u32, w)
        })?;
        return Ok(());
    }
    let page = desc.page_size.bytes();
    let per_page = page / desc.entry_size;
    let n1 = l1_entries_for(desc, ids);
    if !budget.take(n1) {
        return Err(over(budget));
    }
    let mut pages = Vec::new();
    read_entries(
        mem,
        desc.base,
        n1,
        L1_ENTRY_SIZE,
        TableKind::Level1,
        |i, w| {
            if w & L1_VALID != 0 {
                pages.push((i, w & L1_ADDR_MASK & !(page - 1)));
            }
        },
    )?;
    for (index, l2) in pages {
        l1(index as u32, l2);
        let first = index * per_page;
        let n = per_page.min(ids.saturating_sub(first));
        if !budget.take(n) {
            return Err(over(budget));
        }
        read_entries(mem, l2, n, desc.entry_size, kind, |i, w| {
            f((first + i) as u32, w)
        })?;
    }
    Ok(())
}

impl Its {
    /// The whole state of this ITS as an [`ItsImage`]: its registers, and every valid
    /// device, event and collection its tables (in its format) and its on-chip or held
    /// collections hold. An entry this ITS would not honour (see [`crate::tables`]) is left
    /// out, as a lookup would ignore it. Reads at most `limit` entries.
    pub fn export_image<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        limit: WorkLimit,
    ) -> Result<ItsImage, ImageError> {
        let mut budget = Budget::new(limit);
        let c = &self.config;
        let format = c.table_format;
        let mut img = ItsImage {
            enabled: self.enabled,
            cbaser: self.cbaser,
            cwriter: self.cwriter,
            creadr: self.creadr,
            stalled: self.stalled,
            device_baser: self.baser[DEVICE_BASER],
            collection_baser: self.baser[COLLECTION_BASER],
            ..ItsImage::default()
        };
        if let Some(desc) = TableDescriptor::from_baser(self.baser[DEVICE_BASER]) {
            let mut found = Vec::new();
            walk_table(
                mem,
                &desc,
                1u64 << c.device_id_bits,
                TableKind::Devices,
                &mut budget,
                |i, p| {
                    img.device_l2_pages.insert(i, p);
                },
                |id, w| {
                    if let Some(e) = format.decode_dte(w, c.event_id_bits) {
                        found.push((id, e));
                    }
                },
            )?;
            for (id, dte) in found {
                let events = self.export_itt(mem, &dte, &mut budget)?;
                img.devices.insert(
                    id,
                    DeviceImage {
                        itt_addr: dte.itt_addr,
                        event_id_bits: dte.event_id_bits,
                        events,
                    },
                );
            }
        }
        for (icid, t) in self.collections.iter().enumerate() {
            if let Some(t) = t {
                img.collections.insert(icid as u16, Some(*t));
            }
        }
        for (&icid, &t) in &self.held_collections {
            img.collections.insert(icid, Some(t));
        }
        if c.collections_in_memory()
            && !c.collections_held()
            && let Some(desc) = TableDescriptor::from_baser(self.baser[COLLECTION_BASER])
        {
            let hcc = u32::from(c.hcc);
            let vcpus = c.vcpus;
            walk_table(
                mem,
                &desc,
                u64::from(c.collection_count()),
                TableKind::Collections,
                &mut budget,
                |i, p| {
                    img.collection_l2_pages.insert(i, p);
                },
                |icid, w| {
                    if icid >= hcc
                        && let Some(t) = crate::tables::collection::decode(w, vcpus)
                    {
                        img.collections.insert(icid as u16, Some(t));
                    }
                },
            )?;
        }
        // A collection an ITE names but nobody mapped is still part of the state.
        let named: Vec<u16> = img
            .devices
            .values()
            .flat_map(|d| d.events.values().map(|e| e.icid))
            .collect();
        for icid in named {
            img.collections.entry(icid).or_insert(None);
        }
        Ok(img)
    }

    fn export_itt<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        dte: &DeviceEntry,
        budget: &mut Budget,
    ) -> Result<BTreeMap<u32, EventImage>, ImageError> {
        let n = 1u64 << dte.event_id_bits;
        if !budget.take(n) {
            return Err(ImageError::Budget {
                op: "export",
                limit: budget.limit(),
            });
        }
        let mut events = BTreeMap::new();
        let format = self.config.table_format;
        let count = self.config.collection_count();
        read_entries(
            mem,
            dte.itt_addr,
            n,
            u64::from(self.config.itt_entry_size),
            TableKind::Itt,
            |e, w| {
                if let Some(ite) = format.decode_ite(w)
                    && self.intid_is_lpi(ite.intid)
                    && u32::from(ite.icid) < count
                {
                    events.insert(
                        e as u32,
                        EventImage {
                            intid: ite.intid,
                            icid: ite.icid,
                        },
                    );
                }
            },
        )?;
        Ok(events)
    }

    /// A live ITS with `config` whose state is `image`: the registers go through the
    /// restore checks ([`ItsState::validate`]), then the tables are written into `mem` in
    /// the configuration's format at the addresses the image gives (the Device table and
    /// each ITT cleared first, so that nothing but the image's entries is valid there).
    ///
    /// Refused with a defined error: registers this ITS could not hold, a device, event
    /// or collection beyond what it advertises or beyond its tables, a collection target
    /// that is not a vCPU, tables that overlap, more than `limit` entries of work, guest
    /// memory that is not backed. On error `mem` may be partly written.
    pub fn import_image<M: GuestMemory + ?Sized>(
        config: ItsConfig,
        image: &ItsImage,
        mem: &M,
        limit: WorkLimit,
    ) -> Result<Its, ImageError> {
        let mut budget = Budget::new(limit);
        let on_chip = config.on_chip_collections() as usize;
        let mut collections = vec![None; on_chip];
        let mut held = BTreeMap::new();
        for (&icid, &target) in &image.collections {
            if u32::from(icid) >= config.collection_count() {
                return Err(ImageError::Collection {
                    icid,
                    reason: "ICID beyond the collection ID bits",
                });
            }
            let Some(t) = target else { continue };
            if let Some(slot) = collections.get_mut(usize::from(icid)) {
                *slot = Some(t);
            } else if config.collections_held() {
                held.insert(icid, t);
            }
        }
        let mut baser = vec![0u64; BASER_COUNT];
        baser[DEVICE_BASER] = image.device_baser;
        baser[COLLECTION_BASER] = image.collection_baser;
        let state = ItsState {
            version: ITS_STATE_VERSION,
            config: config.clone(),
            enabled: image.enabled,
            cbaser: image.cbaser,
            cwriter: image.cwriter,
            creadr: image.creadr,
            stalled: image.stalled,
            baser,
            collections,
            held_collections: held,
        };
        let mut its = Its::from_state(&state)?;
        check_overlaps(&its, image)?;
        its.write_device_tables(mem, image, &mut budget)?;
        its.write_collections(mem, image, &mut budget)?;
        its.flush_caches();
        Ok(its)
    }

    fn write_device_tables<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        image: &ItsImage,
        budget: &mut Budget,
    ) -> Result<(), ImageError> {
        let over = |b: &Budget| ImageError::Budget {
            op: "import",
            limit: b.limit(),
        };
        let ids = 1u64 << self.config.device_id_bits;
        let Some(desc) = TableDescriptor::from_baser(self.baser[DEVICE_BASER]) else {
            return match image.devices.keys().next() {
                Some(&device_id) => Err(ImageError::Device {
                    device_id,
                    reason: "the Device table is not valid (GITS_BASER0.Valid = 0)",
                }),
                None => Ok(()),
            };
        };
        write_level1(
            mem,
            &desc,
            ids,
            &image.device_l2_pages,
            |index| {
                let per_page = desc.page_size.bytes() / desc.entry_size;
                image
                    .devices
                    .keys()
                    .any(|&d| u64::from(d) / per_page == u64::from(index))
            },
            TableKind::Devices,
            budget,
        )?;
        if !desc.indirect {
            let n = desc.capacity().min(ids);
            if !budget.take(n) {
                return Err(over(budget));
            }
            zero_fill(mem, desc.base, n * desc.entry_size, TableKind::Devices)?;
        }
        let stride = u64::from(self.config.itt_entry_size);
        for (&device_id, dev) in &image.devices {
            let err = |reason| ImageError::Device { device_id, reason };
            if !self.device_in_range(device_id) {
                return Err(err("beyond GITS_TYPER.Devbits"));
            }
            if dev.event_id_bits == 0 || dev.event_id_bits > self.config.event_id_bits {
                return Err(err("EventID bits outside 1..=GITS_TYPER.ID_bits + 1"));
            }
            if dev.itt_addr & 0xff != 0 || dev.itt_addr >> 52 != 0 {
                return Err(err("ITT address not 256-byte aligned or beyond 52 bits"));
            }
            let addr = self
                .device_entry_addr(mem, device_id)
                .map_err(|_| err("not covered by the Device table"))?;
            let entry = DeviceEntry {
                itt_addr: dev.itt_addr,
                event_id_bits: dev.event_id_bits,
            };
            self.write_device(mem, device_id, addr, Some(entry))?;
            let n = 1u64 << dev.event_id_bits;
            if !budget.take(n.saturating_add(dev.events.len() as u64)) {
                return Err(over(budget));
            }
            zero_fill(mem, dev.itt_addr, n * stride, TableKind::Itt)?;
            for (&event_id, ev) in &dev.events {
                let eerr = |reason| ImageError::Event {
                    device_id,
                    event_id,
                    reason,
                };
                if !entry.covers(event_id) {
                    return Err(eerr("EventID beyond the device's EventID bits"));
                }
                if !self.intid_is_lpi(ev.intid) {
                    return Err(eerr("the INTID is not an LPI of this ITS"));
                }
                if u32::from(ev.icid) >= self.config.collection_count() {
                    return Err(eerr("ICID beyond the collection ID bits"));
                }
                self.write_ite(
                    mem,
                    &entry,
                    event_id,
                    Some(IttEntry {
                        intid: ev.intid,
                        icid: ev.icid,
                    }),
                )?;
            }
        }
        Ok(())
    }

    fn write_collections<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        image: &ItsImage,
        budget: &mut Budget,
    ) -> Result<(), ImageError> {
        let c = &self.config;
        if c.collections_in_memory()
            && !c.collections_held()
            && let Some(desc) = TableDescriptor::from_baser(self.baser[COLLECTION_BASER])
        {
            let ids = u64::from(c.collection_count());
            write_level1(
                mem,
                &desc,
                ids,
                &image.collection_l2_pages,
                |index| {
                    let per_page = desc.page_size.bytes() / desc.entry_size;
                    image
                        .collections
                        .iter()
                        .any(|(&i, t)| t.is_some() && u64::from(i) / per_page == u64::from(index))
                },
                TableKind::Collections,
                budget,
            )?;
            if !desc.indirect {
                let n = desc.capacity().min(ids);
                if !budget.take(n) {
                    return Err(ImageError::Budget {
                        op: "import",
                        limit: budget.limit(),
                    });
                }
                zero_fill(mem, desc.base, n * desc.entry_size, TableKind::Collections)?;
            }
        }
        for (&icid, &target) in &image.collections {
            let Some(t) = target else { continue };
            let in_memory = usize::from(icid) >= self.collections.len();
            if in_memory {
                self.write_collection(mem, icid, Some(t))
                    .map_err(|_| ImageError::Collection {
                        icid,
                        reason: "not covered by the Collection table (or it is not valid)",
                    })?;
            }
        }
        Ok(())
    }
}

/// Write the level-1 descriptors of a two-level table (every descriptor for IDs below
/// `ids`: the image's valid ones, the rest invalid) and clear each level-2 page.
fn write_level1<M: GuestMemory + ?Sized>(
    mem: &M,
    desc: &TableDescriptor,
    ids: u64,
    pages: &BTreeMap<u32, u64>,
    holds: impl Fn(u32) -> bool,
    kind: TableKind,
    budget: &mut Budget,
) -> Result<(), ImageError> {
    let over = |b: &Budget| ImageError::Budget {
        op: "import",
        limit: b.limit(),
    };
    if !desc.indirect {
        return Ok(());
    }
    let page = desc.page_size.bytes();
    let n1 = l1_entries_for(desc, ids);
    if !budget.take(n1) {
        return Err(over(budget));
    }
    zero_fill(mem, desc.base, n1 * L1_ENTRY_SIZE, TableKind::Level1)?;
    for (&index, &l2) in pages {
        if u64::from(index) >= n1 {
            continue;
        }
        if l2 & !(L1_ADDR_MASK & !(page - 1)) != 0 {
            return Err(ImageError::Table(TableError::Write {
                kind: TableKind::Level1,
                addr: l2,
                len: L1_ENTRY_SIZE as usize,
            }));
        }
        if !budget.take(page / desc.entry_size + 1) {
            return Err(over(budget));
        }
        // A page no entry of the image lives in may be unbacked (a KVM restore never reads
        // the pages after the last DTE): lookups there fault and find nothing, as wanted.
        if holds(index) || crate::tables::backed(mem, l2) {
            zero_fill(mem, l2, page, kind)?;
        }
        let at = desc.base + u64::from(index) * L1_ENTRY_SIZE;
        crate::tables::write_u64(mem, at, L1_VALID | l2, TableKind::Level1)?;
    }
    Ok(())
}

/// The memory every table of `image` takes on `its`, in address order; `Overlap` when two
/// share a byte.
fn check_overlaps(its: &Its, image: &ItsImage) -> Result<(), ImageError> {
    let mut regions: Vec<(u64, u64, TableKind)> = Vec::new();
    let c = its.config();
    let tables = [
        (
            its.baser[DEVICE_BASER],
            1u64 << c.device_id_bits,
            &image.device_l2_pages,
            TableKind::Devices,
        ),
        (
            its.baser[COLLECTION_BASER],
            if c.collections_held() {
                0
            } else {
                u64::from(c.collection_count())
            },
            &image.collection_l2_pages,
            TableKind::Collections,
        ),
    ];
    for (baser, ids, pages, kind) in tables {
        let Some(desc) = TableDescriptor::from_baser(baser) else {
            continue;
        };
        if ids == 0 {
            continue;
        }
        if desc.indirect {
            let n1 = l1_entries_for(&desc, ids);
            regions.push((desc.base, n1 * L1_ENTRY_SIZE, TableKind::Level1));
            for (&i, &p) in pages {
                if u64::from(i) < n1 {
                    regions.push((p, desc.page_size.bytes(), kind));
                }
            }
        } else {
            regions.push((desc.base, desc.capacity().min(ids) * desc.entry_size, kind));
        }
    }
    let stride = u64::from(c.itt_entry_size);
    for dev in image.devices.values() {
        let bits = u32::from(dev.event_id_bits.min(32));
        regions.push((dev.itt_addr, (1u64 << bits) * stride, TableKind::Itt));
    }
    regions.retain(|r| r.1 > 0);
    regions.sort_by_key(|r| r.0);
    for w in regions.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a.0.saturating_add(a.1) > b.0 {
            return Err(ImageError::Overlap {
                first: a.2,
                first_addr: a.0,
                second: b.2,
                second_addr: b.0,
            });
        }
    }
    Ok(())
}
