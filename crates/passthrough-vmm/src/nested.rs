// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `--viommu smmuv3` on KVM and iommufd: the nesting objects behind the guest's virtual
//! SMMUv3, the vEVENTQ reader, and the wiring to the passthrough device.
//!
//! The order is the kernel's: the device is attached to its IOAS (with guest RAM mapped at
//! IOVA = GPA) by the passthrough bring-up; then a nest-parent HWPT is allocated from that
//! IOAS (the stage 2), a vIOMMU on it, a vDEVICE with the device's RID as its virtual
//! StreamID (the FDT's `iommu-map` is the identity), and a vEVENTQ. The model then declares
//! the stream, which installs what the guest configures now (bypass at reset): the device
//! moves to a nested HWPT, and from then on follows every STE the guest writes.
//!
//! Teardown: [`Nested`] stops the reader and destroys the vEVENTQ and the vDEVICE while
//! the device is still open (closing the device first would make the kernel tombstone the
//! vDEVICE). The model, its backend (holding the nested HWPTs and the attacher, which
//! detaches first) and the vIOMMU go when the passthrough device, which holds the model for
//! its MSI remapping, is dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use iommufd_ioas::{HwInfoData, Hwpt, Vdevice, Vevent, Veventq, Viommu, ViommuType};
use kvm_bindings::{KVM_ARM_IRQ_TYPE_SHIFT, KVM_ARM_IRQ_TYPE_SPI};
use kvm_ioctls::VmFd;
use vfio_passthrough::setup::AttachedDevice;
use vm_memory::GuestMemoryMmap;
use vsmmuv3::iommufd::IommufdBackend;
use vsmmuv3::{HostIdrs, SmmuConfig, VSmmu};

use crate::fdt::SMMU_SPIS;
use crate::layout::MemoryLayout;
use crate::mmio::MmioBus;
use crate::viommu::{SpiSink, VirtualSmmu};

/// The vSMMU as the VMM holds it.
pub type Smmu = VirtualSmmu<GuestMemoryMmap, IommufdBackend, SpiSink>;

/// The vEVENTQ depth.
const EVENTQ_DEPTH: u32 = 256;
/// How many faulting addresses the report keeps: the first one of each 4 KiB page (a
/// descriptor fetch alone faults four times, at consecutive words).
const FAULT_ADDRESSES_KEPT: usize = 16;

/// What the vEVENTQ reader saw.
#[derive(Debug, Default)]
pub struct EventCounts {
    /// Records read.
    pub records: AtomicU64,
    /// Translation faults among them.
    pub translation_faults: AtomicU64,
    /// Lost-events markers.
    pub lost: AtomicU64,
    /// The first faulting input addresses.
    pub fault_addresses: Mutex<Vec<u64>>,
}

/// The nesting objects and the vEVENTQ reader of a passed-through device.
pub struct Nested {
    /// The model on the MMIO bus, also the device's MSI remapping.
    pub smmu: Arc<Smmu>,
    /// The virtual StreamID.
    pub vsid: u32,
    /// The host SMMU's IDR0-5.
    pub host_idr: [u32; 6],
    /// What the reader saw.
    pub events: Arc<EventCounts>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<Veventq>>,
    vdevice: Option<Vdevice>,
}

impl std::fmt::Debug for Nested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nested")
            .field("vsid", &self.vsid)
            .finish_non_exhaustive()
    }
}

/// Sets up the guest's virtual SMMUv3 for `attached` (step 2 done: attached to its IOAS,
/// guest RAM mapped) with virtual StreamID `vsid`, and puts its frame on `mmio`.
pub fn setup(
    attached: &AttachedDevice,
    vsid: u32,
    layout: &MemoryLayout,
    memory: &GuestMemoryMmap,
    vm_fd: &Arc<VmFd>,
    mmio: &MmioBus,
) -> Result<Nested, String> {
    let frame = layout
        .smmu
        .ok_or("--viommu needs the SMMU region in the memory map")?;
    let iommufd = attached.iommufd().clone();
    let dev_id = attached.dev_id().ok_or("the device is not bound")?;
    let info = iommufd.hw_info(dev_id).map_err(|e| e.to_string())?;
    let HwInfoData::ArmSmmuV3 {
        idr, iidr, aidr, ..
    } = info.data
    else {
        return Err(format!(
            "the device's IOMMU is not an SMMUv3 ({:?}): no virtual SMMUv3 for it",
            info.data
        ));
    };
    let host = HostIdrs { idr, iidr, aidr };
    let config = SmmuConfig::builder(&host)
        .build()
        .map_err(|e| format!("virtual SMMUv3 from host IDRs {idr:08x?}: {e}"))?;

    let parent =
        Arc::new(Hwpt::alloc_nest_parent(attached.ioas(), dev_id).map_err(|e| e.to_string())?);
    let viommu = match Viommu::alloc(&parent, dev_id, ViommuType::ArmSmmuV3) {
        Ok(v) => Arc::new(v),
        Err(e) => {
            // Say why, the way the probe classifies it.
            let why = iommufd_ioas::probe_viommu(attached.ioas(), dev_id)
                .ok()
                .and_then(|p| p.support.err())
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            return Err(format!("{e}{why}"));
        }
    };
    let vdevice = Vdevice::alloc(&viommu, dev_id, u64::from(vsid)).map_err(|e| e.to_string())?;
    let eventq = Veventq::alloc(&viommu, EVENTQ_DEPTH).map_err(|e| e.to_string())?;

    let attacher = attached.attacher().map_err(|e| e.to_string())?;
    let mut backend = IommufdBackend::new(viommu);
    backend.add_stream(
        vsid,
        dev_id,
        Box::new(move |hwpt| {
            attacher
                .attach_hwpt(hwpt)
                .map(drop)
                .map_err(|e| e.to_string())
        }),
    );
    let irq_vm = Arc::clone(vm_fd);
    let mut sink = SpiSink::new(
        SMMU_SPIS,
        Arc::new(move |spi, level| {
            // KVM_IRQ_LINE on arm64: irq_type in bits 27:24, INTID in bits 15:0.
            let irq = (KVM_ARM_IRQ_TYPE_SPI << KVM_ARM_IRQ_TYPE_SHIFT) | (32 + spi);
            if let Err(e) = irq_vm.set_irq_line(irq, level) {
                log::warn!("KVM_IRQ_LINE vSMMU SPI {spi} level {level}: {e}");
            }
        }),
    );
    let mut model = VSmmu::new(config);
    model
        .add_host_stream(memory, &mut backend, &mut sink, vsid)
        .map_err(|e| format!("virtual SMMUv3 stream {vsid:#x}: {e}"))?;
    let failed = backend.stats().failures;
    if failed > 0 {
        return Err(format!(
            "virtual SMMUv3: the first STE of stream {vsid:#x} could not be installed \
             ({failed} backend failures)"
        ));
    }
    let smmu = Arc::new(VirtualSmmu::new(
        model,
        backend,
        sink,
        memory.clone(),
        layout.its_doorbell(),
    ));
    mmio.insert(frame, smmu.clone())
        .map_err(|e| e.to_string())?;

    let stop = Arc::new(AtomicBool::new(false));
    let events = Arc::new(EventCounts::default());
    let reader = {
        let (smmu, stop, events) = (Arc::clone(&smmu), Arc::clone(&stop), Arc::clone(&events));
        std::thread::Builder::new()
            .name("veventq".to_owned())
            .spawn(move || read_events(eventq, &smmu, &stop, &events))
            .map_err(|e| format!("spawning the vEVENTQ reader: {e}"))?
    };
    log::info!(
        "virtual SMMUv3 at {frame} for stream {vsid:#x}, host IDRs {idr:08x?}, parent HWPT {}",
        parent.id()
    );
    Ok(Nested {
        smmu,
        vsid,
        host_idr: idr,
        events,
        stop,
        reader: Some(reader),
        vdevice: Some(vdevice),
    })
}

/// The reader: waits on the vEVENTQ, hands the records to the model (which writes them into
/// the guest's event queue and raises its interrupt), counts them.
fn read_events(
    mut eventq: Veventq,
    smmu: &Smmu,
    stop: &AtomicBool,
    counts: &EventCounts,
) -> Veventq {
    while !stop.load(Ordering::Acquire) {
        match eventq.wait(Duration::from_millis(100)) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                log::error!("{e}");
                break;
            }
        }
        let batch = match eventq.drain(1024) {
            Ok(b) => b,
            Err(e) => {
                log::error!("{e}");
                break;
            }
        };
        let mut records = Vec::with_capacity(batch.len());
        let mut lost = false;
        for e in batch {
            match e {
                Vevent::Event {
                    record,
                    lost_before,
                    ..
                } => {
                    counts.records.fetch_add(1, Ordering::Relaxed);
                    if lost_before > 0 {
                        lost = true;
                    }
                    if record.is_translation_fault() {
                        counts.translation_faults.fetch_add(1, Ordering::Relaxed);
                        let mut a = counts
                            .fault_addresses
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner);
                        let addr = record.input_addr();
                        if a.len() < FAULT_ADDRESSES_KEPT
                            && !a.iter().any(|x| x & !0xfff == addr & !0xfff)
                        {
                            a.push(addr);
                        }
                    }
                    log::info!("vEVENTQ: {record}");
                    let mut raw = [0u8; 32];
                    for (i, w) in record.words().iter().enumerate() {
                        raw[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
                    }
                    records.push(raw);
                }
                Vevent::Lost { .. } => {
                    counts.lost.fetch_add(1, Ordering::Relaxed);
                    lost = true;
                }
            }
        }
        smmu.inject_host_events(&records, lost);
    }
    eventq
}

impl Nested {
    /// Stops the reader and destroys the vEVENTQ and vDEVICE (the device must still be
    /// open). Idempotent.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(reader) = self.reader.take() {
            match reader.join() {
                Ok(q) => {
                    if let Err(e) = q.destroy() {
                        log::error!("{e}");
                    }
                }
                Err(_) => log::error!("the vEVENTQ reader panicked"),
            }
        }
        if let Some(v) = self.vdevice.take()
            && let Err(e) = v.destroy()
        {
            log::error!("{e}");
        }
    }
}

impl Drop for Nested {
    fn drop(&mut self) {
        self.shutdown();
    }
}
