// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The guest's virtual SMMUv3 (`--viommu smmuv3`): the `vsmmuv3` model behind the SMMU's
//! MMIO frame, its backend (iommufd nesting in the VMM, a recording fake in tests), its wired
//! interrupts, the host's events, and the MSI remapping the passthrough device needs.
//!
//! Locking: the model, its backend and its interrupt sink sit behind one mutex. A guest
//! access to the frame takes it, runs the model (which may install STEs and forward
//! invalidations through the backend), drains the command queue, collects which streams'
//! translations may have changed, and releases it; only then are the change listeners called
//! (the passthrough device recomputes its MSI routes, taking its own lock and calling back
//! into [`VirtualSmmu::translate_msi`]). So the SMMU lock is never held while the device
//! lock is taken, and the device may call the SMMU from its own lock: no lock-order cycle.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use vfio_passthrough::{MsiRemapping, RemapError};
use vm_memory::GuestMemory;
use vsmmuv3::{
    Access, EventOutcome, InterruptSink, IrqLine, MsiMessage, SmmuBackend, StreamChanges, VSmmu,
};

use crate::mmio::MmioDevice;

/// Called outside the SMMU lock after the guest's SMMU consumed commands, with the streams
/// whose translations may have changed (`StreamChanges::None` when none did: a translation
/// that failed before may succeed now, since the model caches no failures and the
/// architecture needs no invalidation for a new mapping, so a listener with unroutable
/// addresses retries them then).
pub type ChangeListener = Box<dyn Fn(&StreamChanges) + Send + Sync>;

/// Counters for the VMM's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ViommuCounters {
    /// Guest reads of the frame.
    pub reads: u64,
    /// Guest writes of the frame.
    pub writes: u64,
    /// Commands the guest's queue carried (from the model's counters).
    pub commands: u64,
    /// Backend STE installs.
    pub installs: u64,
    /// Backend invalidation batches.
    pub invalidation_batches: u64,
    /// Backend calls that failed.
    pub backend_errors: u64,
    /// Host events (vEVENTQ) injected into the guest's event queue.
    pub host_events: u64,
    /// Host events the guest's queue did not take (disabled, full).
    pub host_events_dropped: u64,
    /// MSI translations asked for.
    pub translations: u64,
    /// Change notifications delivered to listeners.
    pub change_notifications: u64,
}

struct Inner<B, S> {
    smmu: VSmmu,
    backend: B,
    sink: S,
    counters: ViommuCounters,
    /// Host streams the guest ever gave a stage 1.
    stage1_seen: std::collections::BTreeSet<u32>,
    /// Whether the guest ever enabled its SMMU (`SMMU_CR0ACK.SMMUEN`).
    enabled_seen: bool,
}

impl<B, S> Inner<B, S> {
    fn note_state(&mut self) {
        let mut cr0 = [0u8; 4];
        self.smmu.mmio_read(vsmmuv3::regs::CR0ACK, &mut cr0);
        self.enabled_seen |= u32::from_le_bytes(cr0) & vsmmuv3::regs::cr0::SMMUEN != 0;
        let Inner {
            smmu, stage1_seen, ..
        } = self;
        for sid in smmu.host_streams() {
            if matches!(smmu.installed(sid), Some(vsmmuv3::GuestSte::Stage1(_))) {
                stage1_seen.insert(sid);
            }
        }
    }
}

/// A virtual SMMUv3 on the VMM's MMIO bus.
pub struct VirtualSmmu<M, B, S> {
    inner: Mutex<Inner<B, S>>,
    mem: M,
    /// The guest physical address of the vITS doorbell (`GITS_TRANSLATER`): the only
    /// address an MSI may reach.
    doorbell: u64,
    listeners: Mutex<Vec<ChangeListener>>,
}

impl<M, B, S> std::fmt::Debug for VirtualSmmu<M, B, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualSmmu")
            .field("doorbell", &format_args!("{:#x}", self.doorbell))
            .finish_non_exhaustive()
    }
}

impl<M, B, S> VirtualSmmu<M, B, S>
where
    M: GuestMemory + Send + Sync,
    B: SmmuBackend + Send,
    S: InterruptSink + Send,
{
    /// Wraps a model whose host streams are already declared.
    pub fn new(smmu: VSmmu, backend: B, sink: S, mem: M, doorbell: u64) -> Self {
        VirtualSmmu {
            inner: Mutex::new(Inner {
                smmu,
                backend,
                sink,
                counters: ViommuCounters::default(),
                stage1_seen: std::collections::BTreeSet::new(),
                enabled_seen: false,
            }),
            mem,
            doorbell,
            listeners: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<B, S>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a listener for translation changes (the passthrough device's `remap_changed`).
    pub fn on_change(&self, listener: ChangeListener) {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(listener);
    }

    fn notify(&self, changes: &StreamChanges) {
        if !matches!(changes, StreamChanges::None) {
            self.lock().counters.change_notifications += 1;
        }
        for l in self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            l(changes);
        }
    }

    /// Injects events the host reported on the vEVENTQ (32-byte SMMUv3 records, vSID in
    /// place) into the guest's event queue; `lost` when the host dropped some.
    pub fn inject_host_events(&self, records: &[[u8; 32]], lost: bool) {
        let mut g = self.lock();
        let Inner {
            smmu,
            sink,
            counters,
            ..
        } = &mut *g;
        for r in records {
            counters.host_events += 1;
            if smmu.inject_host_event(&self.mem, sink, r) != EventOutcome::Recorded {
                counters.host_events_dropped += 1;
            }
        }
        if lost {
            smmu.inject_host_overflow();
        }
    }

    /// The counters, with the model's own.
    pub fn counters(&self) -> ViommuCounters {
        let g = self.lock();
        let s = g.smmu.stats();
        ViommuCounters {
            commands: s.commands,
            installs: s.installs,
            invalidation_batches: s.batches,
            backend_errors: s.backend_errors,
            ..g.counters
        }
    }

    /// Runs `f` on the model and its backend (reports, tests).
    pub fn with<R>(&self, f: impl FnOnce(&VSmmu, &B) -> R) -> R {
        let g = self.lock();
        f(&g.smmu, &g.backend)
    }

    /// Whether the guest ever configured host stream `sid` with a stage 1 (an STE whose
    /// Config is stage-1 translation, installed as a nested HWPT).
    pub fn stage1_seen(&self, sid: u32) -> bool {
        self.lock().stage1_seen.contains(&sid)
    }

    /// Whether the model's SMMU is enabled by the guest now (`SMMU_CR0ACK.SMMUEN`).
    pub fn guest_enabled(&self) -> bool {
        let mut v = [0u8; 4];
        self.lock().smmu.mmio_read(vsmmuv3::regs::CR0ACK, &mut v);
        u32::from_le_bytes(v) & vsmmuv3::regs::cr0::SMMUEN != 0
    }

    /// Whether the guest enabled its SMMU at some point (a guest disables it again when it
    /// shuts down).
    pub fn guest_enabled_seen(&self) -> bool {
        self.lock().enabled_seen
    }
}

impl<M, B, S> MmioDevice for VirtualSmmu<M, B, S>
where
    M: GuestMemory + Send + Sync,
    B: SmmuBackend + Send,
    S: InterruptSink + Send,
{
    fn mmio_read(&self, offset: u64, data: &mut [u8]) {
        let mut g = self.lock();
        g.counters.reads += 1;
        g.smmu.mmio_read(offset, data);
    }

    fn mmio_write(&self, offset: u64, data: &[u8]) {
        let (changes, consumed) = {
            let mut g = self.lock();
            let changes = {
                let Inner {
                    smmu,
                    backend,
                    sink,
                    counters,
                    ..
                } = &mut *g;
                counters.writes += 1;
                let mut progress = smmu.mmio_write(&self.mem, backend, sink, offset, data);
                let mut consumed = progress.commands;
                // The model bounds the work of one call; the queue the guest published is
                // finite (at most 2^CMDQS entries), so the rest is consumed here.
                while progress.more {
                    progress = smmu.process_pending(&self.mem, backend, sink);
                    consumed = consumed.saturating_add(progress.commands);
                }
                (smmu.take_changed_streams(), consumed)
            };
            g.note_state();
            changes
        };
        if consumed > 0 || !matches!(changes, StreamChanges::None) {
            self.notify(&changes);
        }
    }
}

impl<M, B, S> MsiRemapping for VirtualSmmu<M, B, S>
where
    M: GuestMemory + Send + Sync,
    B: SmmuBackend + Send,
    S: InterruptSink + Send,
{
    /// The guest's stage 1 (or bypass) for `stream`, checked to end on the vITS doorbell.
    fn translate_msi(&self, stream: u32, address: u64) -> Result<u64, RemapError> {
        let mut g = self.lock();
        g.counters.translations += 1;
        let t = g
            .smmu
            .translate(&self.mem, stream, address, Access::WRITE)
            .map_err(|fault| RemapError::NotTranslated {
                stream,
                address,
                reason: fault.to_string(),
            })?;
        if t.output != self.doorbell {
            return Err(RemapError::NotADoorbell {
                address,
                gpa: t.output,
            });
        }
        Ok(t.output)
    }
}

/// The SMMU's wired interrupts as SPI edges, through a VMM-provided line setter
/// (`KVM_IRQ_LINE` in the VMM: level 1 then 0 on an edge-triggered SPI).
pub struct SpiSink {
    spis: [u32; 3],
    set_line: Arc<dyn Fn(u32, bool) + Send + Sync>,
    /// MSIs the model could not deliver itself (it writes RAM-backed ones): counted; this
    /// VMM advertises no SMMU MSIs, so none are expected.
    pub undelivered_msis: u64,
}

impl SpiSink {
    /// SPIs for "eventq", "gerror" and "cmdq-sync", in that order.
    pub fn new(spis: [u32; 3], set_line: Arc<dyn Fn(u32, bool) + Send + Sync>) -> Self {
        SpiSink {
            spis,
            set_line,
            undelivered_msis: 0,
        }
    }
}

impl InterruptSink for SpiSink {
    fn raise(&mut self, line: IrqLine) {
        let spi = match line {
            IrqLine::EventQueue => self.spis[0],
            IrqLine::Gerror => self.spis[1],
            IrqLine::CmdSync => self.spis[2],
        };
        (self.set_line)(spi, true);
        (self.set_line)(spi, false);
    }

    fn msi(&mut self, msg: MsiMessage) {
        log::warn!(
            "vSMMU: MSI {:#x} <- {:#x} from {:?} not delivered",
            msg.address,
            msg.data,
            msg.source
        );
        self.undelivered_msis += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    use vsmmuv3::backend::{GuestSte, RecordingBackend};
    use vsmmuv3::cd::cd_words;
    use vsmmuv3::cmd::RawCommand;
    use vsmmuv3::regs::*;
    use vsmmuv3::ste::stage1_ste_words;
    use vsmmuv3::walk::desc;
    use vsmmuv3::{QEMU_HOST_IDRS, SmmuConfig};

    const DOORBELL: u64 = 0x0800_0040;
    const SID: u32 = 8;
    const GIOVA: u64 = 0xffff_f000;

    type Smmu = VirtualSmmu<GuestMemoryMmap<()>, RecordingBackend, SpiSink>;
    type Lines = Arc<Mutex<Vec<(u32, bool)>>>;

    fn put(mem: &GuestMemoryMmap<()>, addr: u64, words: &[u64]) {
        for (i, w) in words.iter().enumerate() {
            mem.write_obj(*w, GuestAddress(addr + 8 * i as u64))
                .unwrap();
        }
    }

    fn w32(s: &Smmu, off: u64, v: u32) {
        s.mmio_write(off, &v.to_le_bytes());
    }

    fn w64(s: &Smmu, off: u64, v: u64) {
        s.mmio_write(off, &v.to_le_bytes());
    }

    /// An SMMU the way Linux brings it up, stream `SID` at stage 1 with gIOVA `GIOVA`
    /// mapped to the doorbell page; the edges its sink saw.
    fn smmu() -> (Arc<Smmu>, GuestMemoryMmap<()>, Lines) {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        let sink = SpiSink::new(
            [2, 3, 4],
            Arc::new(move |spi, level| l2.lock().unwrap().push((spi, level))),
        );
        let mut model = VSmmu::new(SmmuConfig::builder(&QEMU_HOST_IDRS).build().unwrap());
        let mut backend = RecordingBackend::new();
        let mut irq = vsmmuv3::RecordingSink::default();
        model
            .add_host_stream(&mem, &mut backend, &mut irq, SID)
            .unwrap();
        let s = Arc::new(VirtualSmmu::new(
            model,
            backend,
            sink,
            mem.clone(),
            DOORBELL,
        ));
        w64(&s, STRTAB_BASE, 0x1_0000);
        w32(&s, STRTAB_BASE_CFG, 8);
        w64(&s, CMDQ_BASE, 0x2_0000 | 8);
        w32(&s, CR0, cr0::CMDQEN);
        put(
            &mem,
            0x1_0000 + 64 * u64::from(SID),
            &stage1_ste_words(0x3_0000),
        );
        put(&mem, 0x3_0000, &cd_words(0x4_0000, 16, 0, 5, 1));
        let idx = |l: u32| (GIOVA >> (12 + 9 * (3 - l))) & 0x1ff;
        put(&mem, 0x4_0000 + idx(0) * 8, &[desc::table(0x5_0000)]);
        put(&mem, 0x5_0000 + idx(1) * 8, &[desc::table(0x6_0000)]);
        put(&mem, 0x6_0000 + idx(2) * 8, &[desc::table(0x7_0000)]);
        put(
            &mem,
            0x7_0000 + idx(3) * 8,
            &[desc::page(DOORBELL & !0xfff)],
        );
        w32(&s, CR0, cr0::CMDQEN | cr0::SMMUEN);
        put(&mem, 0x2_0000, &RawCommand::cfgi_ste(SID, true).0);
        put(&mem, 0x2_0010, &RawCommand::sync(0, 0, 0).0);
        w32(&s, CMDQ_PROD, 2);
        (s, mem, lines)
    }

    #[test]
    fn msi_giova_translates_to_the_doorbell() {
        let (s, _, _) = smmu();
        assert!(s.guest_enabled());
        assert_eq!(s.translate_msi(SID, GIOVA | 0x40), Ok(DOORBELL));
        // Another offset in the page is not the doorbell.
        assert_eq!(
            s.translate_msi(SID, GIOVA | 0x80),
            Err(RemapError::NotADoorbell {
                address: GIOVA | 0x80,
                gpa: DOORBELL + 0x40
            })
        );
        // An unmapped gIOVA does not translate, with the model's reason.
        match s.translate_msi(SID, 0x1000_0040) {
            Err(RemapError::NotTranslated { stream, reason, .. }) => {
                assert_eq!(stream, SID);
                assert!(!reason.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert!(s.stage1_seen(SID));
        assert!(s.guest_enabled_seen());
        assert!(!s.stage1_seen(SID + 1));
        s.with(|m, b| {
            assert!(matches!(m.installed(SID), Some(GuestSte::Stage1(_))));
            assert!(b.installs().iter().any(|(sid, _)| *sid == SID));
        });
        assert_eq!(s.counters().translations, 3);
    }

    #[test]
    fn invalidations_reach_the_listeners_outside_the_lock() {
        let (s, mem, _) = smmu();
        assert_eq!(s.translate_msi(SID, GIOVA | 0x40), Ok(DOORBELL));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (seen2, weak) = (seen.clone(), Arc::downgrade(&s));
        s.on_change(Box::new(move |c| {
            // The listener may call back into the SMMU: the lock is free.
            let again = weak.upgrade().unwrap().translate_msi(SID, GIOVA | 0x40);
            seen2.lock().unwrap().push((c.clone(), again));
        }));
        // The guest remaps the page away and invalidates: TLBI_NH_ALL + CMD_SYNC.
        let idx3 = (GIOVA >> 12) & 0x1ff;
        put(&mem, 0x7_0000 + idx3 * 8, &[0]);
        put(&mem, 0x2_0020, &RawCommand([0x10, 0]).0);
        put(&mem, 0x2_0030, &RawCommand::sync(0, 0, 0).0);
        w32(&s, CMDQ_PROD, 4);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_ne!(seen[0].0, StreamChanges::None);
        assert!(matches!(seen[0].1, Err(RemapError::NotTranslated { .. })));
        assert_eq!(s.counters().change_notifications, 1);
    }

    #[test]
    fn host_events_raise_the_eventq_spi() {
        let (s, _, lines) = smmu();
        // Event queue at 0x8000, 256 entries, enabled, with its interrupt.
        w64(&s, EVTQ_BASE, 0x8_0000 | 8);
        w32(&s, CR0, cr0::CMDQEN | cr0::SMMUEN | cr0::EVENTQEN);
        w32(&s, IRQ_CTRL, irq_ctrl::EVENTQ_IRQEN);
        let mut rec = [0u8; 32];
        rec[0] = 0x10; // F_TRANSLATION
        rec[4] = SID as u8;
        lines.lock().unwrap().clear();
        s.inject_host_events(&[rec], false);
        assert_eq!(*lines.lock().unwrap(), [(2, true), (2, false)]);
        let c = s.counters();
        assert_eq!((c.host_events, c.host_events_dropped), (1, 0));
    }
}
