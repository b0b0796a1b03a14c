// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`PassthroughDevice`]: a passed-through PCI function as the guest sees it, on top of the
//! [`MsixEngine`].

use std::sync::Arc;

use msi_trap::msix::BarAccess;
use msi_trap::msix::MsixState;
use msi_trap::msix::layout::{BarIndex, MsixLayout};
use vmm_sys_util::eventfd::EventFd;

use crate::backend::{DeviceBackend, GuestMapper, MsiRemapping};
use crate::bars::{BarChange, BarWindow};
use crate::config::VirtualConfig;
use crate::engine::{EnableRecord, FaultCounters, MsixEngine, VectorReport};
use crate::error::{Error, Result};
use crate::group::InterruptGroup;
use msi_trap::write_through::DoorbellPolicy;

/// Host memory of a device BAR that may be mapped straight into the guest: a page-aligned
/// piece of a BAR mmap that holds no MSI-X table or PBA page.
#[derive(Debug)]
pub struct DirectPiece {
    /// The BAR it belongs to.
    pub bar: u8,
    /// Offset of the piece within the BAR (the same in the guest's BAR).
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Host address of the mapping.
    pub host: *mut u8,
}

// SAFETY: a `DirectPiece` is an address into a BAR mapping owned by the device backend; the
// pointer is only handed to `GuestMapper::map` (never dereferenced here), from whichever
// thread holds the device.
unsafe impl Send for DirectPiece {}

/// Static configuration of a passthrough device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PassthroughConfig {
    /// The DeviceID the guest's interrupt controller sees for this function (on Arm, the ITS
    /// DeviceID the FDT `msi-map` gives: the guest RID with `msi-map = <0 &its 0 0x10000>`).
    pub devid: Option<u32>,
    /// How the guest's MSI address reaches the device (from the doorbell planner).
    pub policy: DoorbellPolicy,
}

/// A PCI function passed through to a guest.
///
/// The VMM calls it from its traps: [`read_config`](Self::read_config) /
/// [`write_config`](Self::write_config) from the config-space (ECAM) handler, and
/// [`read_bar`](Self::read_bar) / [`write_bar`](Self::write_bar) for guest accesses inside a
/// BAR window that are not mapped directly (the MSI-X table and PBA pages, and anything the
/// kernel does not let userspace map). Every other BAR page is mapped into the guest through
/// the [`GuestMapper`] as the guest places the BARs.
///
/// Its MSI-X is an [`MsixEngine`] (see there for how vectors reach the guest); a VMM that
/// keeps its own config space and BARs uses the engine alone.
pub struct PassthroughDevice<D: DeviceBackend, R: InterruptGroup, M: GuestMapper> {
    /// Dropped by hand in `Drop`: kept alive for good (leaked) when a direct BAR mapping
    /// could not be removed from the guest, so that the guest never reaches memory that
    /// the BAR's host mapping would leave behind.
    backend: std::mem::ManuallyDrop<D>,
    engine: Option<MsixEngine<R>>,
    mapper: M,
    config: VirtualConfig,
    pieces: Vec<DirectPiece>,
    mapped: Vec<(u8, u32)>,
    settings: PassthroughConfig,
    /// Guest BAR direct-mapping changes that failed (`FaultCounters::mapping`).
    mapping_faults: u64,
    /// Direct mappings whose removal failed: retried at the next BAR change and teardown.
    stale_maps: Vec<(u8, u32)>,
    /// A direct mapping could not be removed at teardown: never drop the backend.
    leak_backend: bool,
}

impl<D: DeviceBackend, R: InterruptGroup, M: GuestMapper> std::fmt::Debug
    for PassthroughDevice<D, R, M>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassthroughDevice")
            .field("settings", &self.settings)
            .field("engine", &self.engine)
            .field("faults", &self.faults())
            .finish()
    }
}

impl<D: DeviceBackend, R: InterruptGroup, M: GuestMapper> PassthroughDevice<D, R, M> {
    /// Assembles a device from its parts: the virtual config space, the MSI-X emulation (if
    /// the function has MSI-X; `group` then serves its vectors, else it is dropped) and the
    /// directly mappable BAR pieces.
    pub fn new(
        backend: D,
        group: R,
        mapper: M,
        config: VirtualConfig,
        msix: Option<MsixState>,
        pieces: Vec<DirectPiece>,
        settings: PassthroughConfig,
    ) -> Result<Self> {
        let engine = match msix {
            Some(m) => Some(MsixEngine::new(m, group, settings).map_err(|e| match e {
                Error::Unsupported { reason, .. } => Error::Unsupported {
                    device: "passthrough device".to_owned(),
                    reason,
                },
                e => e,
            })?),
            None => None,
        };
        Ok(PassthroughDevice {
            backend: std::mem::ManuallyDrop::new(backend),
            engine,
            mapper,
            config,
            pieces,
            mapped: Vec::new(),
            settings,
            mapping_faults: 0,
            stale_maps: Vec::new(),
            leak_backend: false,
        })
    }

    /// Routes MSIs through a guest IOMMU (see [`MsixEngine::set_msi_remapping`]).
    pub fn set_msi_remapping(&mut self, remap: Arc<dyn MsiRemapping>, stream: u32) {
        if let Some(engine) = &mut self.engine {
            engine.set_msi_remapping(remap, stream);
        }
    }

    /// Live vectors left unrouted by the remapping (see
    /// [`MsixEngine::unroutable_vectors`]).
    pub fn unroutable_vectors(&self) -> usize {
        self.engine.as_ref().map_or(0, |e| e.unroutable_vectors())
    }

    /// Recomputes the routes through the remapping (see [`MsixEngine::remap_changed`]).
    pub fn remap_changed(&mut self) -> usize {
        self.engine.as_mut().map_or(0, |e| e.remap_changed())
    }

    /// The MSI-X layout, when the function has MSI-X.
    pub fn msix_layout(&self) -> Option<&MsixLayout> {
        self.engine.as_ref().map(|e| e.layout())
    }

    /// The MSI-X engine, when the function has MSI-X.
    pub fn msix_engine(&self) -> Option<&MsixEngine<R>> {
        self.engine.as_ref()
    }

    /// Where the guest's BARs decode now.
    pub fn bar_windows(&self) -> &[BarWindow] {
        self.config.windows()
    }

    /// The backend (for reports that read the device).
    pub fn backend(&self) -> &D {
        &self.backend
    }

    /// The eventfd of vector `vector`: the VFIO trigger of the physical vector. A VMM may
    /// poll it while the vector is masked (no irqfd), and tests write it to play the device.
    pub fn vector_eventfd(&self, vector: u16) -> Option<&EventFd> {
        let engine = self.engine.as_ref()?;
        if vector >= engine.state().vectors() {
            return None;
        }
        engine.notifier(vector)
    }

    /// The device's interrupt group, when the function has MSI-X.
    pub fn interrupt_group(&self) -> Option<&R> {
        self.engine.as_ref().map(|e| e.group())
    }

    /// The fault counters.
    pub fn faults(&self) -> FaultCounters {
        let mut f = self.engine.as_ref().map(|e| e.faults()).unwrap_or_default();
        f.mapping = self.mapping_faults;
        f
    }

    /// A guest config-space read.
    pub fn read_config(&mut self, offset: u16, data: &mut [u8]) {
        self.config.read(&*self.backend, offset, data);
        if let Some(engine) = &self.engine {
            engine.read_config(offset, data);
        }
    }

    /// A guest config-space write. Returns the BAR decode changes, for the VMM's MMIO bus
    /// (the device has already updated its own direct mappings).
    pub fn write_config(&mut self, offset: u16, data: &[u8]) -> Vec<BarChange> {
        let changes = self.config.write(&*self.backend, offset, data);
        let touches = self.config.touches_msix(offset, data.len());
        self.remap(&changes);
        if let Some(engine) = &mut self.engine {
            if touches {
                engine.write_config(&*self.backend, offset, data);
            } else {
                engine.commit_if_due(&*self.backend);
            }
        }
        changes
    }

    /// A guest read inside BAR `bar` at `offset` that trapped.
    pub fn read_bar(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        let forward = match (&mut self.engine, BarIndex::new(bar)) {
            (Some(engine), Some(index)) => match engine.read_bar(index, offset, data) {
                BarAccess::Handled => None,
                BarAccess::Forward(region) => Some((region.bar.get(), region.offset)),
            },
            _ => Some((bar, offset)),
        };
        if let Some((bar, offset)) = forward
            && let Err(e) = self.backend.read_bar(bar, offset, data)
        {
            log::warn!(
                "BAR{bar} read of {} bytes at {offset:#x} failed: {e}",
                data.len()
            );
            data.fill(0xff);
        }
    }

    /// A guest write inside BAR `bar` at `offset` that trapped: MSI-X table and PBA writes go
    /// to the engine (which commits what they make due), the rest to the device.
    pub fn write_bar(&mut self, bar: u8, offset: u64, data: &[u8]) {
        let forward = match (&mut self.engine, BarIndex::new(bar)) {
            (Some(engine), Some(index)) => {
                match engine.write_bar(&*self.backend, index, offset, data) {
                    BarAccess::Handled => None,
                    BarAccess::Forward(region) => Some((region.bar.get(), region.offset)),
                }
            }
            _ => Some((bar, offset)),
        };
        if let Some((bar, offset)) = forward
            && let Err(e) = self.backend.write_bar(bar, offset, data)
        {
            log::warn!(
                "BAR{bar} write of {} bytes at {offset:#x} failed: {e}",
                data.len()
            );
        }
    }

    /// Applies everything the guest changed since the last commit (see
    /// [`MsixEngine::commit`]).
    pub fn commit(&mut self) {
        if let Some(engine) = &mut self.engine {
            engine.commit(&*self.backend);
        }
    }

    fn remap(&mut self, changes: &[BarChange]) {
        if changes.is_empty() {
            return;
        }
        // Mappings whose removal failed before: try again first.
        for (bar, handle) in std::mem::take(&mut self.stale_maps) {
            self.unmap_or_keep(bar, handle);
        }
        for change in changes {
            let bar = change.bar;
            let mut keep = Vec::with_capacity(self.mapped.len());
            for (b, handle) in std::mem::take(&mut self.mapped) {
                if b == bar {
                    self.unmap_or_keep(b, handle);
                } else {
                    keep.push((b, handle));
                }
            }
            self.mapped = keep;
            let Some(window) = change.new else { continue };
            for piece in self.pieces.iter().filter(|p| p.bar == bar) {
                let Some(gpa) = window.gpa.checked_add(piece.offset) else {
                    continue;
                };
                // SAFETY: `piece.host..+len` is part of a BAR mapping owned by the backend,
                // which lives as long as this device; every mapping made here is unmapped
                // before the device (and so the backend) is dropped (see `Drop`) or when
                // the BAR moves.
                match unsafe { self.mapper.map(gpa, piece.len, piece.host) } {
                    Ok(handle) => self.mapped.push((bar, handle)),
                    Err(e) => {
                        log::error!(
                            "direct map of BAR{bar}+{:#x} ({:#x} bytes) at {gpa:#x} failed: {e}; \
                             accesses will trap",
                            piece.offset,
                            piece.len
                        );
                        self.mapping_faults += 1;
                    }
                }
            }
        }
    }

    /// Resets the physical device (`VFIO_DEVICE_RESET`, for a VMM that forwards a guest's
    /// function reset or recovers the device) and puts the guest's MSI addresses back (see
    /// [`MsixEngine::after_reset`]). Failures after the reset are counted in the fault
    /// counters; the reset's own failure is returned.
    pub fn reset_device(&mut self) -> Result<()> {
        self.backend.reset().map_err(|source| Error::Backend {
            op: "VFIO_DEVICE_RESET",
            source,
        })?;
        if let Some(engine) = &mut self.engine {
            engine.after_reset(&*self.backend);
        }
        Ok(())
    }

    /// The last enable of every vector that was ever enabled on the device.
    pub fn enable_records(&self) -> Vec<EnableRecord> {
        self.engine
            .as_ref()
            .map_or_else(Vec::new, |e| e.enable_records())
    }

    /// Every vector's guest and host state, with the real table's address read live.
    pub fn vectors(&self) -> Vec<VectorReport> {
        self.engine
            .as_ref()
            .map_or_else(Vec::new, |e| e.vectors(&*self.backend))
    }

    /// Removes a direct mapping; a failure is reported and the mapping kept in
    /// `stale_maps` for a later attempt.
    fn unmap_or_keep(&mut self, bar: u8, handle: u32) {
        if let Err(e) = self.mapper.unmap(handle) {
            log::error!("unmap of BAR{bar} piece (handle {handle}) failed: {e}");
            self.mapping_faults += 1;
            self.stale_maps.push((bar, handle));
        }
    }

    /// Tears the device down: the MSI-X engine's routes and vectors, then the direct
    /// mappings. Each failed call is reported and tried once more; what still fails stays
    /// (and is reported): an irqfd or route the VM's teardown removes, or a direct mapping,
    /// for which the backend's BAR mappings are kept for good so that the guest never
    /// reaches reused memory.
    fn teardown(&mut self) {
        if let Some(engine) = &mut self.engine {
            engine.shutdown(&*self.backend);
        }
        let mut left = std::mem::take(&mut self.stale_maps);
        left.append(&mut self.mapped);
        for (bar, handle) in left {
            self.unmap_or_keep(bar, handle);
        }
        for (bar, handle) in std::mem::take(&mut self.stale_maps) {
            if let Err(e) = self.mapper.unmap(handle) {
                log::error!(
                    "unmap of BAR{bar} piece (handle {handle}) failed again: {e}; the guest \
                     still maps it, so the device's BAR mappings are kept (leaked)"
                );
                self.leak_backend = true;
            }
        }
    }
}

impl<D: DeviceBackend, R: InterruptGroup, M: GuestMapper> Drop for PassthroughDevice<D, R, M> {
    fn drop(&mut self) {
        self.teardown();
        if !self.leak_backend {
            // SAFETY: `backend` is dropped exactly once, here, and never used afterwards
            // (this is the device's drop; no method runs after it).
            unsafe { std::mem::ManuallyDrop::drop(&mut self.backend) };
        }
    }
}
