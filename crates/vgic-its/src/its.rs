// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The [`Its`] device: register state, on-chip collections, the translation cache and the
//! table lookups every command and translation shares.

use std::collections::BTreeMap;

use vm_memory::GuestMemory;

use crate::cache::{CacheStats, Cached, EntryCache, TranslationCache};
use crate::cmd::{CommandError, CommandErrorKind};
use crate::config::{ItsConfig, LPI_BASE, TABLE_ENTRY_SIZE};
use crate::tables::baser::{BASER_PAGE_SIZE_SHIFT, TableDescriptor, TableType, baser_reset};
use crate::tables::device::DeviceEntry;
use crate::tables::itt::{self, IttEntry};
use crate::tables::{TableError, TableKind, collection, read_u64, write_u64};

/// Index of the `GITS_BASER<n>` describing the Device table.
pub const DEVICE_BASER: usize = 0;
/// Index of the `GITS_BASER<n>` describing the Collection table (implemented only when
/// [`ItsConfig::collections_in_memory`]).
pub const COLLECTION_BASER: usize = 1;
/// Number of `GITS_BASER<n>` registers in the frame.
pub const BASER_COUNT: usize = 8;
/// Entries of the Device table entry cache.
const DEVICE_CACHE_ENTRIES: usize = 256;
/// Entries of the Collection table entry cache.
const COLLECTION_CACHE_ENTRIES: usize = 64;

/// An emulated GICv3 ITS (IHI 0069H chapter 5) as one guest sees it.
///
/// It owns the registers and whatever the spec lets an ITS keep on chip (HCC collections and
/// a translation cache); the Device table, ITTs and Collection table live in guest memory,
/// reached through the `GuestMemory` passed to each call. Effects on interrupts go to the
/// VMM's [`Redistributors`](crate::Redistributors).
#[derive(Debug)]
pub struct Its {
    pub(crate) config: ItsConfig,
    pub(crate) enabled: bool,
    pub(crate) cbaser: u64,
    /// `GITS_CWRITER.Offset` as a byte offset (bits \[19:5\]).
    pub(crate) cwriter: u64,
    /// `GITS_CREADR.Offset` as a byte offset (bits \[19:5\]).
    pub(crate) creadr: u64,
    pub(crate) stalled: bool,
    pub(crate) baser: [u64; BASER_COUNT],
    /// On-chip collections `0..HCC`: target processor number when mapped.
    pub(crate) collections: Vec<Option<u32>>,
    /// Collections held by the ITS when the format has no indexed Collection table
    /// ([`ItsConfig::collections_held`]): ICID -> target processor number.
    pub(crate) held_collections: BTreeMap<u16, u32>,
    pub(crate) cache: TranslationCache,
    /// Decoded DTEs by DeviceID (`None` = invalid entry).
    pub(crate) device_cache: EntryCache<Option<DeviceEntry>>,
    /// Memory-held CTEs by ICID (`None` = unmapped).
    pub(crate) collection_cache: EntryCache<Option<u32>>,
    pub(crate) last_error: Option<CommandError>,
    pub(crate) commands_processed: u64,
}

/// Where a collection's mapping is held.
enum CollectionSlot {
    OnChip(usize),
    Memory(u64),
    /// Held by the ITS (KVM format); the Collection table has room for it at save.
    Held,
}

/// Reset values of the `GITS_BASER<n>` of an ITS with `config`: Device table at
/// [`DEVICE_BASER`], Collection table at [`COLLECTION_BASER`] when some collections live in
/// memory, 0 (not implemented) elsewhere.
///
/// A format with one fixed page size (KVM's: 64 KiB) reports it from reset on.
pub(crate) fn reset_basers(config: &ItsConfig) -> [u64; BASER_COUNT] {
    let page = match config.table_format.fixed_page_bytes() {
        Some(0x1_0000) => 2 << BASER_PAGE_SIZE_SHIFT,
        _ => 0,
    };
    let mut baser = [0u64; BASER_COUNT];
    baser[DEVICE_BASER] = baser_reset(TableType::Devices, TABLE_ENTRY_SIZE) | page;
    if config.collections_in_memory() {
        baser[COLLECTION_BASER] = baser_reset(TableType::Collections, TABLE_ENTRY_SIZE) | page;
    }
    baser
}

impl Its {
    /// Create an ITS in its reset state (IHI 0069H ch. 12: `GITS_CTLR.Enabled == 0`,
    /// Quiescent, every `GITS_BASER<n>.Valid == 0`, `GITS_CBASER.Valid == 0`).
    pub fn new(config: ItsConfig) -> Self {
        let baser = reset_basers(&config);
        let on_chip = config.on_chip_collections() as usize;
        Its {
            cache: TranslationCache::new(config.cache_entries),
            device_cache: EntryCache::new(DEVICE_CACHE_ENTRIES),
            collection_cache: EntryCache::new(COLLECTION_CACHE_ENTRIES),
            collections: vec![None; on_chip],
            held_collections: BTreeMap::new(),
            config,
            enabled: false,
            cbaser: 0,
            cwriter: 0,
            creadr: 0,
            stalled: false,
            baser,
            last_error: None,
            commands_processed: 0,
        }
    }

    /// Put the ITS back in its reset state (keeps the configuration).
    pub fn reset(&mut self) {
        *self = Its::new(self.config.clone());
    }

    /// The configuration this ITS was built with.
    pub fn config(&self) -> &ItsConfig {
        &self.config
    }

    /// `GITS_CTLR.Enabled`.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// `GITS_CREADR.Stalled`: the queue stopped at a failing command
    /// ([`CommandErrorPolicy::Stall`](crate::CommandErrorPolicy::Stall)).
    pub fn is_stalled(&self) -> bool {
        self.stalled
    }

    /// The most recent command error, if any (kept until the next one; not migrated).
    pub fn last_command_error(&self) -> Option<&CommandError> {
        self.last_error.as_ref()
    }

    /// Take the most recent command error, leaving none (lets a VMM or test attribute each
    /// error to the command that raised it).
    pub fn take_last_command_error(&mut self) -> Option<CommandError> {
        self.last_error.take()
    }

    /// Number of commands executed (successfully or not) since creation or restore.
    pub fn commands_processed(&self) -> u64 {
        self.commands_processed
    }

    /// Translation cache hit/miss counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Drop every cached translation. Only needed if the VMM itself rewrites ITS tables in
    /// guest memory (for example after loading guest memory from a snapshot).
    pub fn invalidate_cache(&mut self) {
        self.flush_caches();
    }

    /// Drop every cached translation and table entry.
    pub(crate) fn flush_caches(&mut self) {
        self.cache.clear();
        self.device_cache.clear();
        self.collection_cache.clear();
    }

    pub(crate) fn device_in_range(&self, device_id: u32) -> bool {
        u64::from(device_id) >> self.config.device_id_bits == 0
    }

    pub(crate) fn intid_is_lpi(&self, intid: u32) -> bool {
        intid >= LPI_BASE && u64::from(intid) >> self.config.intid_bits == 0
    }

    /// Address of `device_id`'s DTE, or `DEVICE_OOR` when the DeviceID is beyond
    /// `GITS_TYPER.Devbits` or the Device table does not cover it (IHI 0069H §5.3).
    pub(crate) fn device_entry_addr<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        device_id: u32,
    ) -> Result<u64, CommandErrorKind> {
        let oor = CommandErrorKind::DeviceOor { device_id };
        if !self.device_in_range(device_id) {
            return Err(oor);
        }
        let desc = TableDescriptor::from_baser(self.baser[DEVICE_BASER]).ok_or(oor)?;
        desc.entry_address(mem, device_id)?.ok_or(oor)
    }

    /// The device's DTE, `None` when invalid; `DEVICE_OOR` when out of range or not covered.
    /// Served from the Device entry cache when possible.
    pub(crate) fn device_entry<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        device_id: u32,
    ) -> Result<Option<DeviceEntry>, CommandErrorKind> {
        if !self.device_in_range(device_id) {
            return Err(CommandErrorKind::DeviceOor { device_id });
        }
        if let Some(e) = self.device_cache.get(device_id) {
            return Ok(e);
        }
        let addr = self.device_entry_addr(mem, device_id)?;
        let entry = self.config.table_format.decode_dte(
            read_u64(mem, addr, TableKind::Devices)?,
            self.config.event_id_bits,
        );
        self.device_cache.insert(device_id, entry);
        Ok(entry)
    }

    /// The device's DTE: `DEVICE_OOR`, or `UNMAPPED_DEVICE` when invalid.
    pub(crate) fn read_device<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        device_id: u32,
    ) -> Result<DeviceEntry, CommandErrorKind> {
        self.device_entry(mem, device_id)?
            .ok_or(CommandErrorKind::UnmappedDevice { device_id })
    }

    pub(crate) fn write_device<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        device_id: u32,
        addr: u64,
        entry: Option<DeviceEntry>,
    ) -> Result<(), TableError> {
        self.device_cache.invalidate(device_id);
        let word = self.config.table_format.encode_dte(entry);
        write_u64(mem, addr, word, TableKind::Devices)
    }

    fn ite_addr(&self, dte: &DeviceEntry, event_id: u32) -> Result<u64, TableError> {
        itt::entry_address(dte.itt_addr, event_id, self.config.itt_entry_size).ok_or(
            TableError::Read {
                kind: TableKind::Itt,
                addr: dte.itt_addr,
                len: 8,
            },
        )
    }

    /// The event's ITE, `None` when invalid. An ITE whose INTID is not an LPI below
    /// 2^INTID bits or whose ICID is beyond the collection ID space (only possible if the
    /// guest wrote the ITT itself: MAPTI refuses both) reads as invalid.
    pub(crate) fn read_ite<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        dte: &DeviceEntry,
        event_id: u32,
    ) -> Result<Option<IttEntry>, TableError> {
        let addr = self.ite_addr(dte, event_id)?;
        let ite = self
            .config
            .table_format
            .decode_ite(read_u64(mem, addr, TableKind::Itt)?);
        Ok(ite.filter(|e| {
            self.intid_is_lpi(e.intid) && u32::from(e.icid) < self.config.collection_count()
        }))
    }

    pub(crate) fn write_ite<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        dte: &DeviceEntry,
        event_id: u32,
        entry: Option<IttEntry>,
    ) -> Result<(), TableError> {
        let addr = self.ite_addr(dte, event_id)?;
        let word = self.config.table_format.encode_ite(entry);
        write_u64(mem, addr, word, TableKind::Itt)
    }

    fn collection_slot<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        icid: u16,
    ) -> Result<CollectionSlot, CommandErrorKind> {
        let oor = CommandErrorKind::CollectionOor { icid };
        if u32::from(icid) >= self.config.collection_count() {
            return Err(oor);
        }
        if usize::from(icid) < self.collections.len() {
            return Ok(CollectionSlot::OnChip(usize::from(icid)));
        }
        let desc = TableDescriptor::from_baser(self.baser[COLLECTION_BASER]).ok_or(oor)?;
        let addr = desc.entry_address(mem, u32::from(icid))?.ok_or(oor)?;
        if self.config.collections_held() {
            // KVM's MAPC/MAPTI accept an ICID only if the Collection table has a backed
            // entry at the ICID's index (`vgic_its_check_id`): a save always fits, and a
            // restore accepts what was saved.
            if !crate::tables::backed(mem, addr) {
                return Err(oor);
            }
            return Ok(CollectionSlot::Held);
        }
        Ok(CollectionSlot::Memory(addr))
    }

    /// The collection's target: `COLLECTION_OOR` when the ICID is beyond the collection ID
    /// space or the Collection table, `None` when unmapped.
    pub(crate) fn read_collection<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        icid: u16,
    ) -> Result<Option<u32>, CommandErrorKind> {
        if u32::from(icid) < self.config.collection_count()
            && let Some(target) = self.collection_cache.get(u32::from(icid))
        {
            return Ok(target);
        }
        match self.collection_slot(mem, icid)? {
            CollectionSlot::OnChip(i) => Ok(self.collections.get(i).copied().flatten()),
            CollectionSlot::Held => Ok(self.held_collections.get(&icid).copied()),
            CollectionSlot::Memory(addr) => {
                let target = collection::decode(
                    read_u64(mem, addr, TableKind::Collections)?,
                    self.config.vcpus,
                );
                self.collection_cache.insert(u32::from(icid), target);
                Ok(target)
            }
        }
    }

    pub(crate) fn write_collection<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        icid: u16,
        target: Option<u32>,
    ) -> Result<(), CommandErrorKind> {
        match self.collection_slot(mem, icid)? {
            CollectionSlot::OnChip(i) => {
                if let Some(slot) = self.collections.get_mut(i) {
                    *slot = target;
                }
            }
            CollectionSlot::Held => match target {
                Some(t) => {
                    self.held_collections.insert(icid, t);
                }
                None => {
                    self.held_collections.remove(&icid);
                }
            },
            CollectionSlot::Memory(addr) => {
                self.collection_cache.invalidate(u32::from(icid));
                write_u64(
                    mem,
                    addr,
                    collection::encode(target),
                    TableKind::Collections,
                )?
            }
        }
        Ok(())
    }

    /// Resolve (DeviceID, EventID) to its DTE and ITE with the spec's checks in the spec's
    /// order: `DEVICE_OOR`, `UNMAPPED_DEVICE`, `ID_OOR`, `UNMAPPED_INTERRUPT`.
    pub(crate) fn resolve_event<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        device_id: u32,
        event_id: u32,
    ) -> Result<(DeviceEntry, IttEntry), CommandErrorKind> {
        let dte = self.read_device(mem, device_id)?;
        if !dte.covers(event_id) {
            return Err(CommandErrorKind::IdOor {
                device_id,
                event_id,
                bits: dte.event_id_bits,
            });
        }
        let ite =
            self.read_ite(mem, &dte, event_id)?
                .ok_or(CommandErrorKind::UnmappedInterrupt {
                    device_id,
                    event_id,
                })?;
        Ok((dte, ite))
    }

    /// Full translation through the cache: (INTID, ICID, vCPU) or the first failing check,
    /// ending with `UNMAPPED_COLLECTION`.
    pub(crate) fn lookup<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        device_id: u32,
        event_id: u32,
    ) -> Result<Cached, CommandErrorKind> {
        if let Some(hit) = self.cache.get(device_id, event_id) {
            return Ok(hit);
        }
        let (_, ite) = self.resolve_event(mem, device_id, event_id)?;
        let vcpu = self.collection_target(mem, ite.icid)?;
        let value = Cached {
            intid: ite.intid,
            vcpu,
            icid: ite.icid,
        };
        self.cache.insert(device_id, event_id, value);
        Ok(value)
    }

    /// Target of a collection an ITE names: `UNMAPPED_COLLECTION` when it is unmapped or not
    /// covered by the Collection table (the ICID itself was range-checked when mapped).
    pub(crate) fn collection_target<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        icid: u16,
    ) -> Result<u32, CommandErrorKind> {
        match self.read_collection(mem, icid) {
            Ok(Some(vcpu)) => Ok(vcpu),
            Ok(None) | Err(CommandErrorKind::CollectionOor { .. }) => {
                Err(CommandErrorKind::UnmappedCollection { icid })
            }
            Err(e) => Err(e),
        }
    }
}
