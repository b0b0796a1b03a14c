// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The [`VSmmu`] device: register state, the command-queue consumer, the event-queue
//! producer, the host-stream installs, translation with its caches.

use std::collections::{BTreeMap, BTreeSet};

use log::{debug, warn};
use vm_memory::GuestMemory;

use crate::backend::{GuestSte, SmmuBackend};
use crate::cd::{Cd, CdContext, decode_cd};
use crate::cmd::{Command, DecodeContext, RawCommand, SyncSignal, decode};
use crate::event::{EventOutcome, EventRecord, id};
use crate::fault::TranslateFault;
use crate::idr::SmmuConfig;
use crate::irq::{InterruptSink, IrqLine, MsiMessage};
use crate::mem;
use crate::observer::{ChangeTracker, StreamChanges};
use crate::queue::QueueGeometry;
use crate::regs::*;
use crate::state::{Registers, StateError, VSMMU_STATE_VERSION, VSmmuState};
use crate::ste::{Ste, decode_ste};
use crate::strtab::StreamTable;
use crate::tlb::{Tlb, TlbEntry, TlbStats};
use crate::walk::{Access, walk};

/// `SMMU_CMDQ_CONS.ERR` codes (IHI 0070 §7.1).
pub mod cerror {
    /// No error.
    pub const NONE: u8 = 0;
    /// `CERROR_ILL`: illegal command.
    pub const ILL: u8 = 1;
    /// `CERROR_ABT`: abort on command fetch (also: the host refused a forwarded command).
    pub const ABT: u8 = 2;
}

/// Commands read from guest memory with one access.
const READ_AHEAD: usize = 16;
/// Host streams a VMM may declare.
pub const MAX_HOST_STREAMS: usize = 4096;

/// What a register write or [`VSmmu::process_pending`] did to the command queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Commands consumed.
    pub commands: u32,
    /// Commands are still pending (the per-call bound was reached): call
    /// [`VSmmu::process_pending`] again.
    pub more: bool,
}

/// A translated address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// The input (gIOVA).
    pub iova: u64,
    /// The output address (IPA).
    pub output: u64,
    /// log2 of the size of the mapping containing it (12 for bypass).
    pub size_log2: u8,
    /// Whether the mapping allows writes.
    pub writable: bool,
    /// Whether stage 1 translated it (false: bypass).
    pub stage1: bool,
}

impl Translation {
    fn bypass(iova: u64) -> Self {
        Translation {
            iova,
            output: iova,
            size_log2: 12,
            writable: true,
            stage1: false,
        }
    }
}

/// Counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Commands consumed.
    pub commands: u64,
    /// Commands forwarded to the backend.
    pub forwarded: u64,
    /// Backend `invalidate` calls.
    pub batches: u64,
    /// Backend `install_ste` calls.
    pub installs: u64,
    /// Backend calls that failed.
    pub backend_errors: u64,
    /// Events written to the guest's queue.
    pub events_recorded: u64,
    /// Events dropped (queue disabled, full, or write abort).
    pub events_dropped: u64,
}

/// Why a host stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostStreamError {
    /// The StreamID is beyond `IDR1.SIDSIZE`.
    #[error("stream {0:#x} is beyond the advertised StreamID size")]
    OutOfRange(u32),
    /// Too many host streams.
    #[error("more than {MAX_HOST_STREAMS} host streams")]
    TooMany,
}

/// A decoded stream configuration, cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamConfig {
    Abort,
    Bypass,
    Stage1(Cd),
}

/// A bounded cache of decoded configurations, round-robin replacement.
#[derive(Debug, Clone)]
struct ConfigCache {
    entries: Vec<Option<(u32, StreamConfig)>>,
    next: usize,
}

impl ConfigCache {
    fn new(n: usize) -> Self {
        ConfigCache {
            entries: vec![None; n.max(1)],
            next: 0,
        }
    }
    fn get(&self, sid: u32) -> Option<StreamConfig> {
        self.entries
            .iter()
            .flatten()
            .find(|(s, _)| *s == sid)
            .map(|(_, c)| *c)
    }
    fn insert(&mut self, sid: u32, c: StreamConfig) {
        let slot = self
            .entries
            .iter()
            .position(|e| e.is_some_and(|(s, _)| s == sid))
            .unwrap_or_else(|| {
                let s = self.next;
                self.next = (s + 1) % self.entries.len();
                s
            });
        self.entries[slot] = Some((sid, c));
    }
    fn flush(&mut self, first: u32, last: u32) {
        for e in self.entries.iter_mut() {
            if e.is_some_and(|(s, _)| (first..=last).contains(&s)) {
                *e = None;
            }
        }
    }
}

/// The guest memory, host backend and interrupt sink one call works with.
struct Io<'a, M, B, S> {
    mem: &'a M,
    backend: &'a mut B,
    irq: &'a mut S,
}

/// A virtual SMMUv3 (IHI 0070) as one guest sees it. See the crate documentation.
#[derive(Debug, Clone)]
pub struct VSmmu {
    config: SmmuConfig,
    regs: Registers,
    host_streams: BTreeSet<u32>,
    installed: BTreeMap<u32, GuestSte>,
    tlb: Tlb,
    configs: ConfigCache,
    batch_cmds: Vec<RawCommand>,
    batch_ptrs: Vec<u32>,
    changes: ChangeTracker,
    stats: Stats,
}

impl VSmmu {
    /// A vSMMU in its reset state.
    pub fn new(config: SmmuConfig) -> Self {
        VSmmu {
            regs: Registers::reset(config.gbpa_abort_at_reset),
            host_streams: BTreeSet::new(),
            installed: BTreeMap::new(),
            tlb: Tlb::new(config.tlb_entries),
            configs: ConfigCache::new(config.config_cache_entries),
            batch_cmds: Vec::with_capacity(config.batch),
            batch_ptrs: Vec::with_capacity(config.batch),
            changes: ChangeTracker::new(config.watch_capacity),
            stats: Stats::default(),
            config,
        }
    }

    /// The configuration (guest ID registers and bounds).
    pub fn config(&self) -> &SmmuConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// TLB counters.
    pub fn tlb_stats(&self) -> TlbStats {
        self.tlb.stats()
    }

    /// The registers as stored.
    pub fn registers(&self) -> &Registers {
        &self.regs
    }

    /// Whether `SMMU_GERROR.CMDQ_ERR` is active (the command queue is stopped until the
    /// guest acknowledges it through `SMMU_GERRORN`).
    pub fn cmdq_error_active(&self) -> bool {
        (self.regs.gerror ^ self.regs.gerrorn) & gerror::CMDQ_ERR != 0
    }

    /// The host streams.
    pub fn host_streams(&self) -> impl Iterator<Item = u32> + '_ {
        self.host_streams.iter().copied()
    }

    /// What was last installed successfully for `sid` (a cache of the backend's state).
    pub fn installed(&self, sid: u32) -> Option<GuestSte> {
        self.installed.get(&sid).copied()
    }

    fn smmu_enabled(&self) -> bool {
        self.regs.cr0 & cr0::SMMUEN != 0
    }

    // ---------------------------------------------------------------- MMIO

    /// A guest read of `data.len()` bytes at `offset` in the register frame
    /// ([`FRAME_SIZE`] bytes). Accesses the spec does not define read as zero (see
    /// [`regs`](crate::regs)).
    pub fn mmio_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some(access) = classify(offset, data.len()) else {
            return;
        };
        let v = match access {
            Access32(o) => u64::from(self.read32(o)),
            Access64(o) => self.read64(o),
            Half(o, hi) => {
                let v = self.read64(o);
                if hi { v >> 32 } else { v & 0xffff_ffff }
            }
        };
        let bytes = v.to_le_bytes();
        data.copy_from_slice(&bytes[..data.len()]);
    }

    fn read32(&self, o: u64) -> u32 {
        let r = &self.regs;
        let msi = self.config.msi();
        match o {
            IDR0..=IDR5 => self.config.idr[(o / 4) as usize],
            IIDR => self.config.iidr,
            AIDR => self.config.aidr,
            CR0 | CR0ACK => r.cr0,
            CR1 => r.cr1,
            CR2 => r.cr2,
            GBPA => r.gbpa,
            IRQ_CTRL | IRQ_CTRLACK => r.irq_ctrl,
            GERROR => r.gerror,
            GERRORN => r.gerrorn,
            GERROR_IRQ_CFG1 if msi => r.gerror_irq_cfg1,
            GERROR_IRQ_CFG2 if msi => r.gerror_irq_cfg2,
            STRTAB_BASE_CFG => r.strtab_base_cfg,
            CMDQ_PROD => r.cmdq_prod,
            CMDQ_CONS => r.cmdq_cons,
            EVTQ_IRQ_CFG1 if msi => r.evtq_irq_cfg1,
            EVTQ_IRQ_CFG2 if msi => r.evtq_irq_cfg2,
            EVTQ_PROD => r.evtq_prod,
            EVTQ_CONS => r.evtq_cons,
            _ => 0,
        }
    }

    fn read64(&self, o: u64) -> u64 {
        let r = &self.regs;
        let msi = self.config.msi();
        match o {
            GERROR_IRQ_CFG0 if msi => r.gerror_irq_cfg0,
            STRTAB_BASE => r.strtab_base,
            CMDQ_BASE => r.cmdq_base,
            EVTQ_BASE => r.evtq_base,
            EVTQ_IRQ_CFG0 if msi => r.evtq_irq_cfg0,
            _ => 0,
        }
    }

    /// A guest write of `data` (4 or 8 bytes, little-endian) at `offset`. Undefined
    /// accesses are ignored. A write that starts command processing (`CMDQ_PROD`,
    /// `CR0.CMDQEN`, a `GERRORN` acknowledging `CMDQ_ERR`) consumes at most
    /// [`SmmuConfig::max_commands_per_call`] commands; [`Progress::more`] says whether
    /// the VMM should call [`process_pending`](Self::process_pending).
    pub fn mmio_write<M: GuestMemory, B: SmmuBackend, S: InterruptSink>(
        &mut self,
        mem: &M,
        backend: &mut B,
        irq: &mut S,
        offset: u64,
        data: &[u8],
    ) -> Progress {
        let Some(access) = classify(offset, data.len()) else {
            return Progress::default();
        };
        let mut raw = [0u8; 8];
        raw[..data.len()].copy_from_slice(data);
        let v = u64::from_le_bytes(raw);
        let mut io = Io { mem, backend, irq };
        match access {
            Access32(o) => self.write32(&mut io, o, v as u32),
            Access64(o) => self.write64(&mut io, o, v),
            Half(o, hi) => {
                let old = self.read64(o);
                let new = if hi {
                    (old & 0xffff_ffff) | (v << 32)
                } else {
                    (old & !0xffff_ffff) | (v & 0xffff_ffff)
                };
                self.write64(&mut io, o, new)
            }
        }
    }

    fn write32<M: GuestMemory, B: SmmuBackend, S: InterruptSink>(
        &mut self,
        io: &mut Io<'_, M, B, S>,
        o: u64,
        v: u32,
    ) -> Progress {
        let msi = self.config.msi();
        let cr0 = self.regs.cr0;
        match o {
            CR0 => return self.write_cr0(io, v & cr0::IMPLEMENTED),
            // IHI 0070 §6.3.11: RW only while the queues are disabled.
            CR1 if cr0 & (cr0::EVENTQEN | cr0::CMDQEN) == 0 => {
                self.regs.cr1 = v & CR1_IMPLEMENTED;
            }
            // §6.3.12: RW only while SMMUEN == 0.
            CR2 if cr0 & cr0::SMMUEN == 0 => self.regs.cr2 = v & CR2_IMPLEMENTED,
            GBPA => self.write_gbpa(io, v),
            IRQ_CTRL => self.regs.irq_ctrl = v & irq_ctrl::IMPLEMENTED,
            GERRORN => return self.write_gerrorn(io, v),
            GERROR_IRQ_CFG1 if msi && self.regs.irq_ctrl & irq_ctrl::GERROR_IRQEN == 0 => {
                self.regs.gerror_irq_cfg1 = v;
            }
            GERROR_IRQ_CFG2 if msi && self.regs.irq_ctrl & irq_ctrl::GERROR_IRQEN == 0 => {
                self.regs.gerror_irq_cfg2 = v & IRQ_CFG2_IMPLEMENTED;
            }
            // §6.3.24: RW only while SMMUEN == 0; FMT and SPLIT are RES0 without 2-level.
            STRTAB_BASE_CFG if cr0 & cr0::SMMUEN == 0 => {
                let m = if self.config.two_level() {
                    STRTAB_BASE_CFG_IMPLEMENTED
                } else {
                    0x3f
                };
                self.regs.strtab_base_cfg = v & m;
            }
            CMDQ_PROD => {
                self.regs.cmdq_prod = v & Q_PTR_MASK;
                return self.process_commands(io);
            }
            // §6.3.28: RW only while CMDQEN == 0; ERR is the SMMU's.
            CMDQ_CONS if cr0 & cr0::CMDQEN == 0 => {
                self.regs.cmdq_cons = (self.regs.cmdq_cons & !Q_PTR_MASK) | (v & Q_PTR_MASK);
            }
            EVTQ_IRQ_CFG1 if msi && self.regs.irq_ctrl & irq_ctrl::EVENTQ_IRQEN == 0 => {
                self.regs.evtq_irq_cfg1 = v;
            }
            EVTQ_IRQ_CFG2 if msi && self.regs.irq_ctrl & irq_ctrl::EVENTQ_IRQEN == 0 => {
                self.regs.evtq_irq_cfg2 = v & IRQ_CFG2_IMPLEMENTED;
            }
            // §6.3.95: RW only while EVENTQEN == 0.
            EVTQ_PROD if cr0 & cr0::EVENTQEN == 0 => {
                self.regs.evtq_prod = v & (Q_PTR_MASK | EVTQ_PROD_OVFLG);
            }
            EVTQ_CONS => self.regs.evtq_cons = v & (Q_PTR_MASK | EVTQ_CONS_OVACKFLG),
            _ => {}
        }
        Progress::default()
    }

    fn write64<M: GuestMemory, B: SmmuBackend, S: InterruptSink>(
        &mut self,
        _io: &mut Io<'_, M, B, S>,
        o: u64,
        v: u64,
    ) -> Progress {
        let msi = self.config.msi();
        let cr0 = self.regs.cr0;
        let irqen = self.regs.irq_ctrl;
        match o {
            GERROR_IRQ_CFG0 if msi && irqen & irq_ctrl::GERROR_IRQEN == 0 => {
                self.regs.gerror_irq_cfg0 = v & IRQ_CFG0_ADDR_MASK;
            }
            STRTAB_BASE if cr0 & cr0::SMMUEN == 0 => {
                self.regs.strtab_base = v & STRTAB_BASE_IMPLEMENTED;
            }
            CMDQ_BASE if cr0 & cr0::CMDQEN == 0 => self.regs.cmdq_base = v & Q_BASE_IMPLEMENTED,
            EVTQ_BASE if cr0 & cr0::EVENTQEN == 0 => self.regs.evtq_base = v & Q_BASE_IMPLEMENTED,
            EVTQ_IRQ_CFG0 if msi && irqen & irq_ctrl::EVENTQ_IRQEN == 0 => {
                self.regs.evtq_irq_cfg0 = v & IRQ_CFG0_ADDR_MASK;
            }
            _ => {}
        }
        Progress::default()
    }

    /// `SMMU_CR0` (IHI 0070 §6.3.9): the update completes at once, `CR0ACK` mirrors it.
    /// `SMMUEN` changes what every stream does: caches are flushed, watched streams
    /// reported changed, and every host stream re-installed.
    fn write_cr0<M: GuestMemory, B: SmmuBackend, S: InterruptSink>(
        &mut self,
        io: &mut Io<'_, M, B, S>,
        v: u32,
    ) -> Progress {
        let old = self.regs.cr0;
        self.regs.cr0 = v;
        if (old ^ v) & cr0::SMMUEN != 0 {
            self.invalidate_all_caches();
            self.sync_all_host_streams(io);
        }
        if v & cr0::CMDQEN != 0 {
            self.process_commands(io)
        } else {
            Progress::default()
        }
    }

    /// `SMMU_GBPA` (IHI 0070 §6.3.14.1): a write with `Update == 1` sets the fields and
    /// completes at once (Update reads 0). A write with `Update == 0` is ignored (the spec
    /// asks software to write with Update set; the new attributes would have no defined
    /// time to take effect).
    fn write_gbpa<M: GuestMemory, B: SmmuBackend, S: InterruptSink>(
        &mut self,
        io: &mut Io<'_, M, B, S>,
        v: u32,
    ) {
        if v & gbpa::UPDATE == 0 {
            return;
        }
        let old = self.regs.gbpa;
        self.regs.gbpa = v & (gbpa::ABORT | gbpa::ATTRS);
        if (old ^ self.regs.gbpa) & gbpa::ABORT != 0 && !self.smmu_enabled() {
            self.invalidate_all_caches();
            self.sync_all_host_streams(io);
        }
    }

    /// `SMMU_GERRORN` (IHI 0070 §6.3.19): the guest acknowledges active errors by making
    /// their GERRORN bit equal the GERROR bit. Toggling a bit that is not active is
    /// UNPREDICTABLE in the spec; here only active bits can change, so a stray write can
    /// never make an error appear active. Acknowledging `CMDQ_ERR` restarts the queue.
    fn write_gerrorn<M: GuestMemory, B: SmmuBackend, S: InterruptSink>(
        &mut self,
        io: &mut Io<'_, M, B, S>,
        v: u32,
    ) -> Progress {
        let was = self.cmdq_error_active();
        let active = self.regs.gerror ^ self.regs.gerrorn;
        self.regs.gerrorn = (self.regs.gerrorn & !active) | (v & active);
        if was && !self.cmdq_error_active() {
            return self.process_commands(io);
        }
        Progress::default()
    }

    // ---------------------------------------------------------------- interrupts

    fn raise_gerror<M: GuestMemory, S: InterruptSink>(&mut self, mem: &M, irq: &mut S, bit: u32) {
        if (self.regs.gerror ^ self.regs.gerrorn) & bit != 0 {
            return; // already active
        }
        self.regs.gerror ^= bit;
        if self.regs.irq_ctrl & irq_ctrl::GERROR_IRQEN != 0 {
            let addr = self.regs.gerror_irq_cfg0 & IRQ_CFG0_ADDR_MASK;
            let data = self.regs.gerror_irq_cfg1;
            self.signal(mem, irq, IrqLine::Gerror, addr, data);
        }
    }

    /// An interrupt from `line`: an MSI when advertised and `addr != 0`, else the wired
    /// line.
    fn signal<M: GuestMemory, S: InterruptSink>(
        &self,
        mem: &M,
        irq: &mut S,
        line: IrqLine,
        addr: u64,
        data: u32,
    ) {
        if self.config.msi() && addr != 0 {
            if mem::write(mem, addr, &data.to_le_bytes()).is_err() {
                irq.msi(MsiMessage {
                    address: addr,
                    data,
                    source: line,
                });
            }
        } else {
            irq.raise(line);
        }
    }

    // ---------------------------------------------------------------- events

    /// Writes an event record to the guest's event queue (IHI 0070 §7.2, §7.4).
    fn record_event<M: GuestMemory, S: InterruptSink>(
        &mut self,
        mem: &M,
        irq: &mut S,
        rec: &EventRecord,
    ) -> EventOutcome {
        let outcome = self.record_event_inner(mem, irq, rec);
        if outcome == EventOutcome::Recorded {
            self.stats.events_recorded += 1;
        } else {
            self.stats.events_dropped += 1;
        }
        outcome
    }

    fn record_event_inner<M: GuestMemory, S: InterruptSink>(
        &mut self,
        mem: &M,
        irq: &mut S,
        rec: &EventRecord,
    ) -> EventOutcome {
        let enables = cr0::SMMUEN | cr0::EVENTQEN;
        if self.regs.cr0 & enables != enables {
            return EventOutcome::QueueDisabled;
        }
        let q = QueueGeometry::from_base(self.regs.evtq_base, self.config.evtq_log2(), 5);
        let prod = self.regs.evtq_prod;
        let cons = self.regs.evtq_cons;
        if q.is_full(prod, cons) {
            // §7.4: the first overflow since the last acknowledgement toggles OVFLG.
            if (prod & EVTQ_PROD_OVFLG != 0) == (cons & EVTQ_CONS_OVACKFLG != 0) {
                self.regs.evtq_prod ^= EVTQ_PROD_OVFLG;
            }
            return EventOutcome::Overflow;
        }
        let addr = q.slot(q.index(prod));
        if mem::write(mem, addr, &rec.to_bytes()).is_err() {
            self.raise_gerror(mem, irq, gerror::EVTQ_ABT_ERR);
            return EventOutcome::WriteAbort;
        }
        self.regs.evtq_prod = (prod & EVTQ_PROD_OVFLG) | q.next(prod);
        if self.regs.irq_ctrl & irq_ctrl::EVENTQ_IRQEN != 0 {
            let addr = self.regs.evtq_irq_cfg0 & IRQ_CFG0_ADDR_MASK;
            let data = self.regs.evtq_irq_cfg1;
            self.signal(mem, irq, IrqLine::EventQueue, addr, data);
        }
        EventOutcome::Recorded
    }

    /// Injects an event the host reported for a guest stream (a `struct
    /// iommu_vevent_arm_smmuv3` read from the vEVENTQ, vSID already in place) into the
    /// guest's event queue, with the queue's overflow and interrupt rules.
    pub fn inject_host_event<M: GuestMemory, S: InterruptSink>(
        &mut self,
        mem: &M,
        irq: &mut S,
        record: &[u8; 32],
    ) -> EventOutcome {
        let rec = EventRecord::from_bytes(record);
        self.record_event(mem, irq, &rec)
    }

    /// The host lost events (`IOMMU_VEVENTQ_FLAG_LOST_EVENTS`): signal an overflow to the
    /// guest the way a full queue does (`SMMU_EVENTQ_PROD.OVFLG`), if the queue is
    /// enabled and no overflow is already unacknowledged.
    pub fn inject_host_overflow(&mut self) {
        let enables = cr0::SMMUEN | cr0::EVENTQEN;
        if self.regs.cr0 & enables != enables {
            return;
        }
        let prod = self.regs.evtq_prod;
        if (prod & EVTQ_PROD_OVFLG != 0) == (self.regs.evtq_cons & EVTQ_CONS_OVACKFLG != 0) {
            self.regs.evtq_prod ^= EVTQ_PROD_OVFLG;
        }
    }

    fn record_config_fault<M: GuestMemory, S: InterruptSink>(
        &mut self,
        mem: &M,
        irq: &mut S,
        sid: u32,
        fault: &TranslateFault,
    ) {
        let rec = match fault {
            // §6.3.12: C_BAD_STREAMID only with CR2.RECINVSID.
            TranslateFault::BadStreamId if self.regs.cr2 & 0b10 == 0 => return,
            TranslateFault::SteFetch { addr } | TranslateFault::CdFetch { addr } => {
                EventRecord::new(fault.event_id().unwrap_or(id::F_STE_FETCH), sid)
                    .with_fetch_addr(*addr)
            }
            f => match f.event_id() {
                Some(t) => EventRecord::new(t, sid),
                None => return,
            },
        };
        self.record_event(mem, irq, &rec);
    }

    // ---------------------------------------------------------------- host streams

    /// Declares `sid` as a host stream (a passthrough device with a vDEVICE whose vSID is
    /// `sid`) and installs what the guest currently configures for it.
    pub fn add_host_stream<M: GuestMemory, B: SmmuBackend, S: InterruptSink>(
        &mut self,
        mem: &M,
        backend: &mut B,
        irq: &mut S,
        sid: u32,
    ) -> Result<(), HostStreamError> {
        if u64::from(sid) >> self.config.sid_bits() != 0 {
            return Err(HostStreamError::OutOfRange(sid));
        }
        if !self.host_streams.contains(&sid) && self.host_streams.len() >= MAX_HOST_STREAMS {
            return Err(HostStreamError::TooMany);
        }
        self.host_streams.insert(sid);
        let mut io = Io { mem, backend, irq };
        self.sync_stream(&mut io, sid);
        Ok(())
    }

    /// Forgets a host stream (the VMM detaches the device itself).
    pub fn remove_host_stream(&mut self, sid: u32) {
        self.host_streams.remove(&sid);
        self.installed.remove(&sid);
    }

    /// Re-installs every host stream from the guest's tables (after a restore, or after
    /// the VMM recreated its host objects).
    pub fn resync_backend<M: GuestMemory, B: SmmuBackend, S: InterruptSink>(
        &mut self,
        mem: &M,
        backend: &mut B,
        irq: &mut S,
    ) {
        self.installed.clear();
        let mut io = Io { mem, backend, irq };
        self.sync_all_host_streams(&mut io);
    }

    fn sync_all_host_streams<M: GuestMemory, B: SmmuBackend, S: InterruptSink>(
        &mut self,
        io: &mut Io<'_, M, B, S>,
    ) {
        let sids: Vec<u32> = self.host_streams.iter().copied().collect();
        for sid in sids {
            self.sync_stream(io, sid);
        }
    }

    /// The STE the guest configured for `sid` (SMMUEN must be 1).
    fn read_ste<M: GuestMemory>(&self, mem: &M, sid: u32) -> Result<Ste, TranslateFault> {
        let t = StreamTable::from_regs(
            self.regs.strtab_base,
            self.regs.strtab_base_cfg,
            self.config.sid_bits(),
            self.config.two_level(),
        );
        let words = t.read_ste(mem, sid)?;
        decode_ste(&words, self.config.oas_bits()).map_err(TranslateFault::BadSte)
    }

    /// What the host should do for `sid` now, and the configuration error that made it
    /// abort, if any.
    fn desired(&self, mem: &impl GuestMemory, sid: u32) -> (GuestSte, Option<TranslateFault>) {
        if !self.smmu_enabled() {
            let abort = self.regs.gbpa & gbpa::ABORT != 0;
            return (
                if abort {
                    GuestSte::Abort
                } else {
                    GuestSte::Bypass
                },
                None,
            );
        }
        match self.read_ste(mem, sid) {
            Ok(Ste::Abort) => (GuestSte::Abort, None),
            Ok(Ste::Bypass) => (GuestSte::Bypass, None),
            Ok(Ste::Stage1 { vste, .. }) => (GuestSte::Stage1(vste), None),
            Err(f) => (GuestSte::Abort, Some(f)),
        }
    }

    /// Installs `sid`'s configuration on the host if it changed. An STE the guest got
    /// wrong aborts the stream and records its event (`C_BAD_STREAMID`, `F_STE_FETCH`,
    /// `C_BAD_STE`): the host never sees that STE, so it cannot report it. A backend
    /// failure installs abort instead and records `C_BAD_STE` for the stream.
    fn sync_stream<M: GuestMemory, B: SmmuBackend, S: InterruptSink>(
        &mut self,
        io: &mut Io<'_, M, B, S>,
        sid: u32,
    ) {
        let (want, fault) = self.desired(io.mem, sid);
        if let Some(f) = fault {
            self.record_config_fault(io.mem, &mut *io.irq, sid, &f);
        }
        if self.installed.get(&sid) == Some(&want) {
            return;
        }
        self.stats.installs += 1;
        match io.backend.install_ste(sid, &want) {
            Ok(()) => {
                self.installed.insert(sid, want);
            }
            Err(e) => {
                warn!("vsmmuv3: installing {want:?} for stream {sid:#x} failed: {e}");
                self.stats.backend_errors += 1;
                self.installed.remove(&sid);
                if want != GuestSte::Abort {
                    self.stats.installs += 1;
                    if io.backend.install_ste(sid, &GuestSte::Abort).is_ok() {
                        self.installed.insert(sid, GuestSte::Abort);
                    } else {
                        self.stats.backend_errors += 1;
                    }
                }
                let rec = EventRecord::new(id::C_BAD_STE, sid);
                self.record_event(io.mem, &mut *io.irq, &rec);
            }
        }
    }

    // ---------------------------------------------------------------- command queue

    /// Continues consuming the command queue: at most
    /// [`SmmuConfig::max_commands_per_call`] commands.
    pub fn process_pending<M: GuestMemory, B: SmmuBackend, S: InterruptSink>(
        &mut self,
        mem: &M,
        backend: &mut B,
        irq: &mut S,
    ) -> Progress {
        let mut io = Io { mem, backend, irq };
        self.process_commands(&mut io)
    }

    /// The command consumer (IHI 0070 §3.5, §4, §7.1).
    fn process_commands<M: GuestMemory, B: SmmuBackend, S: InterruptSink>(
        &mut self,
        io: &mut Io<'_, M, B, S>,
    ) -> Progress {
        if self.regs.cr0 & cr0::CMDQEN == 0 || self.cmdq_error_active() {
            return Progress::default();
        }
        let q = QueueGeometry::from_base(self.regs.cmdq_base, self.config.cmdq_log2(), 4);
        let prod = self.regs.cmdq_prod & q.ptr_mask();
        let mut cons = self.regs.cmdq_cons & q.ptr_mask();
        let max = self.config.max_commands_per_call;
        let ctx = DecodeContext {
            asid16: self.config.asid16(),
        };
        let mut done = 0u32;
        let mut error: Option<(u32, u8)> = None;
        let mut buf = [RawCommand::default(); READ_AHEAD];
        'outer: while cons != prod && done < max {
            let idx = q.index(cons);
            let n = (READ_AHEAD as u32)
                .min(q.entries() - idx)
                .min(q.pending(prod, cons))
                .min(max - done) as usize;
            let got = read_commands(io.mem, &q, idx, &mut buf[..n]);
            if got == 0 {
                // §7.1: CERROR_ABT, CONS at the command that could not be fetched.
                error = Some((self.flush_batch(io).err().unwrap_or(cons), cerror::ABT));
                break;
            }
            for raw in &buf[..got] {
                match decode(raw, &ctx) {
                    Err(why) => {
                        debug!("vsmmuv3: illegal command {raw:x?}: {why}");
                        error = Some(match self.flush_batch(io) {
                            Err(p) => (p, cerror::ABT),
                            Ok(()) => (cons, cerror::ILL),
                        });
                        break 'outer;
                    }
                    Ok(cmd) => {
                        if let Err(p) = self.execute(io, cmd, cons) {
                            error = Some((p, cerror::ABT));
                            break 'outer;
                        }
                    }
                }
                cons = q.next(cons);
                done += 1;
                self.stats.commands += 1;
            }
        }
        if error.is_none()
            && let Err(p) = self.flush_batch(io)
        {
            error = Some((p, cerror::ABT));
        }
        match error {
            Some((ptr, code)) => {
                self.regs.cmdq_cons = (ptr & Q_PTR_MASK) | (u32::from(code) << CMDQ_CONS_ERR_SHIFT);
                self.raise_gerror(io.mem, &mut *io.irq, gerror::CMDQ_ERR);
                Progress {
                    commands: done,
                    more: false,
                }
            }
            None => {
                self.regs.cmdq_cons = (self.regs.cmdq_cons & !Q_PTR_MASK) | cons;
                Progress {
                    commands: done,
                    more: cons != prod,
                }
            }
        }
    }

    /// Hands the pending forwarded commands to the backend; on failure, the queue pointer
    /// of the command the host did not complete.
    fn flush_batch<M, B: SmmuBackend, S>(&mut self, io: &mut Io<'_, M, B, S>) -> Result<(), u32> {
        if self.batch_cmds.is_empty() {
            return Ok(());
        }
        self.stats.batches += 1;
        self.stats.forwarded += self.batch_cmds.len() as u64;
        let result = io.backend.invalidate(&self.batch_cmds);
        let out = match result {
            Ok(()) => Ok(()),
            Err(e) => {
                warn!("vsmmuv3: forwarded invalidation failed: {e}");
                self.stats.backend_errors += 1;
                let i = e.consumed.min(self.batch_ptrs.len() - 1);
                Err(self.batch_ptrs[i])
            }
        };
        self.batch_cmds.clear();
        self.batch_ptrs.clear();
        out
    }

    fn forward<M, B: SmmuBackend, S>(
        &mut self,
        io: &mut Io<'_, M, B, S>,
        cmd: &Command,
        ptr: u32,
    ) -> Result<(), u32> {
        let Some(raw) = cmd.forwardable() else {
            return Ok(());
        };
        self.batch_cmds.push(raw);
        self.batch_ptrs.push(ptr);
        if self.batch_cmds.len() >= self.config.batch {
            self.flush_batch(io)?;
        }
        Ok(())
    }

    fn invalidate_streams(&mut self, first: u32, last: u32) {
        self.configs.flush(first, last);
        self.tlb.flush_streams(first, last);
        self.changes.streams(first, last);
    }

    fn invalidate_all_caches(&mut self) {
        self.configs.flush(0, u32::MAX);
        self.tlb.flush_all();
        self.changes.all();
    }

    /// One legal command's effect (IHI 0070 §4.2-§4.7).
    fn execute<M: GuestMemory, B: SmmuBackend, S: InterruptSink>(
        &mut self,
        io: &mut Io<'_, M, B, S>,
        cmd: Command,
        ptr: u32,
    ) -> Result<(), u32> {
        match cmd {
            Command::PrefetchConfig { .. } | Command::PrefetchAddr { .. } => {}
            Command::CfgiSte { .. } | Command::CfgiSteRange { .. } => {
                // Installs must follow the invalidations the guest queued before.
                self.flush_batch(io)?;
                let (first, last) = cmd.ste_range().unwrap_or((0, u32::MAX));
                self.invalidate_streams(first, last);
                let sids: Vec<u32> = self.host_streams.range(first..=last).copied().collect();
                for sid in sids {
                    self.sync_stream(io, sid);
                }
            }
            Command::CfgiCd { sid, .. } | Command::CfgiCdAll { sid } => {
                self.invalidate_streams(sid, sid);
                if self.host_streams.contains(&sid) {
                    self.forward(io, &cmd, ptr)?;
                }
            }
            Command::TlbiNhAll | Command::TlbiNsnhAll => {
                self.tlb.flush_all();
                self.changes.stage1();
                if !self.host_streams.is_empty() {
                    self.forward(io, &cmd, ptr)?;
                }
            }
            Command::TlbiNhAsid { asid } => {
                self.tlb.flush_asid(asid);
                self.changes.asid(asid, false);
                if !self.host_streams.is_empty() {
                    self.forward(io, &cmd, ptr)?;
                }
            }
            Command::TlbiNhVa { asid, addr, .. } => {
                self.tlb.flush_va(Some(asid), addr);
                self.changes.asid(asid, true);
                if !self.host_streams.is_empty() {
                    self.forward(io, &cmd, ptr)?;
                }
            }
            Command::TlbiNhVaa { addr, .. } => {
                self.tlb.flush_va(None, addr);
                self.changes.stage1();
                if !self.host_streams.is_empty() {
                    self.forward(io, &cmd, ptr)?;
                }
            }
            Command::Sync {
                cs,
                msi_data,
                msi_addr,
            } => {
                // §4.7.3: CMD_SYNC completes when every earlier command has; the host's
                // share completes when the forwarded batch returned.
                self.flush_batch(io)?;
                if cs == SyncSignal::Irq {
                    self.signal(io.mem, &mut *io.irq, IrqLine::CmdSync, msi_addr, msi_data);
                }
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------- translation

    /// Translates `iova` for stream `sid` as the guest configured it (IHI 0070 §3.3,
    /// §3.4): the VMM's oracle for the MSI doorbell address a guest programmed into a
    /// device (gIOVA -> IPA). Uses and fills the configuration cache and TLB, which the
    /// guest's invalidations flush; records no event (it is not a device transaction).
    pub fn translate<M: GuestMemory>(
        &mut self,
        mem: &M,
        sid: u32,
        iova: u64,
        access: Access,
    ) -> Result<Translation, TranslateFault> {
        if !self.smmu_enabled() {
            self.changes.watch(sid, None, false);
            return if self.regs.gbpa & gbpa::ABORT != 0 {
                Err(TranslateFault::GlobalAbort)
            } else {
                Ok(Translation::bypass(iova))
            };
        }
        let config = match self.stream_config(mem, sid) {
            Ok(c) => c,
            Err(f) => {
                self.changes.watch(sid, None, false);
                return Err(f);
            }
        };
        let cd = match config {
            StreamConfig::Abort => {
                self.changes.watch(sid, None, false);
                return Err(TranslateFault::StreamAbort);
            }
            StreamConfig::Bypass => {
                self.changes.watch(sid, None, false);
                return Ok(Translation::bypass(iova));
            }
            StreamConfig::Stage1(cd) => cd,
        };
        let leaf = match self.tlb.lookup(sid, cd.asid, iova) {
            Some(l) => l,
            None => match walk(mem, &cd, iova) {
                Ok(l) => {
                    self.tlb.insert(TlbEntry {
                        sid,
                        asid: cd.asid,
                        leaf: l,
                    });
                    l
                }
                Err(f) => {
                    self.changes.watch(sid, Some(cd.asid), false);
                    return Err(f);
                }
            },
        };
        self.changes.watch(sid, Some(cd.asid), leaf.global);
        leaf.check(access)?;
        Ok(Translation {
            iova,
            output: leaf.output(iova),
            size_log2: leaf.size_log2,
            writable: leaf.writable,
            stage1: true,
        })
    }

    fn stream_config<M: GuestMemory>(
        &mut self,
        mem: &M,
        sid: u32,
    ) -> Result<StreamConfig, TranslateFault> {
        if let Some(c) = self.configs.get(sid) {
            return Ok(c);
        }
        let c = match self.read_ste(mem, sid)? {
            Ste::Abort => StreamConfig::Abort,
            Ste::Bypass => StreamConfig::Bypass,
            Ste::Stage1 { context_ptr, .. } => {
                let words = mem::read_words::<M, 8>(mem, context_ptr)
                    .map_err(|f| TranslateFault::CdFetch { addr: f.addr })?;
                let ctx = CdContext {
                    oas_bits: self.config.oas_bits(),
                    asid16: self.config.asid16(),
                    term_model: self.config.term_model(),
                    granules: [
                        self.config.granule_supported(12),
                        self.config.granule_supported(14),
                        self.config.granule_supported(16),
                    ],
                };
                StreamConfig::Stage1(decode_cd(&words, &ctx).map_err(TranslateFault::BadCd)?)
            }
        };
        self.configs.insert(sid, c);
        Ok(c)
    }

    /// Streams whose translations may have changed since the last call (see
    /// [`observer`](crate::observer)).
    pub fn take_changed_streams(&mut self) -> StreamChanges {
        self.changes.take()
    }

    /// A counter bumped whenever a change is reported: compare it to avoid calling
    /// [`take_changed_streams`](Self::take_changed_streams) for nothing.
    pub fn change_generation(&self) -> u64 {
        self.changes.generation()
    }

    // ---------------------------------------------------------------- snapshot

    /// The guest-visible state.
    pub fn save_state(&self) -> VSmmuState {
        VSmmuState {
            version: VSMMU_STATE_VERSION,
            idr: self.config.idr,
            iidr: self.config.iidr,
            aidr: self.config.aidr,
            regs: self.regs,
        }
    }

    /// Restores a snapshot after validating it; caches are emptied and every watched
    /// stream is reported changed. Call [`resync_backend`](Self::resync_backend) next.
    pub fn restore_state(&mut self, state: &VSmmuState) -> Result<(), StateError> {
        state.validate(&self.config)?;
        self.regs = state.regs;
        self.installed.clear();
        self.batch_cmds.clear();
        self.batch_ptrs.clear();
        self.invalidate_all_caches();
        Ok(())
    }
}

use crate::regs::Access::{Half64 as Half, Reg32 as Access32, Reg64 as Access64};

/// Reads `out.len()` consecutive commands starting at slot `idx` with one access; if that
/// fails, the first alone. Returns how many were read (0: the first could not be).
fn read_commands<M: GuestMemory>(
    mem: &M,
    q: &QueueGeometry,
    idx: u32,
    out: &mut [RawCommand],
) -> usize {
    let mut bytes = [0u8; READ_AHEAD * 16];
    let n = out.len().min(READ_AHEAD);
    let addr = q.slot(idx);
    let got = if mem::read(mem, addr, &mut bytes[..n * 16]).is_ok() {
        n
    } else if n > 1 && mem::read(mem, addr, &mut bytes[..16]).is_ok() {
        1
    } else {
        0
    };
    for (slot, chunk) in out.iter_mut().zip(bytes.chunks_exact(16)).take(got) {
        let mut b = [0u8; 16];
        b.copy_from_slice(chunk);
        *slot = RawCommand::from_bytes(&b);
    }
    got
}
