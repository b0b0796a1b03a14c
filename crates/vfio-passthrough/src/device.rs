// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`PassthroughDevice`]: a passed-through PCI function as the guest sees it.

use std::sync::Arc;

use msi_trap::msix::layout::{BarIndex, GuestAccess, MsixLayout};
use msi_trap::msix::{BarAccess, MsixState};
use msi_trap::update::{UpdateBatch, VectorUpdate};
use msi_trap::write_through::{DeviceProgram, DoorbellPolicy};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::backend::{DeviceBackend, GuestMapper, MsiRemapping, MsiRoute, MsiRouter, RemapError};
use crate::bars::{BarChange, BarWindow};
use crate::config::VirtualConfig;
use crate::error::{Error, Result};

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

/// Per-vector host state.
#[derive(Debug)]
struct VectorSlot {
    eventfd: Arc<EventFd>,
    gsi: Option<u32>,
    route: Option<MsiRoute>,
    irqfd: bool,
    host_enabled: bool,
    /// The last time the vector was enabled on the device, kept across disables.
    record: Option<EnableRecord>,
    /// With MSI remapping: the address the guest programmed for the live route, and why it
    /// is not routed when it reaches no doorbell.
    guest_address: Option<u64>,
    unroutable: Option<RemapError>,
}

/// What happened the last time a vector was enabled on the physical device: the guest's
/// message and the address the device's real table held right after (read through the
/// `MSIX_MAPPABLE` mapping). Kept after the guest disables MSI-X, for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct EnableRecord {
    /// Vector index.
    pub index: u16,
    /// The address the guest programmed.
    pub guest_address: u64,
    /// The data the guest programmed (its EventID; never sent to the device).
    pub guest_data: u32,
    /// The address the device's real table held after the enable and write-through, when
    /// readable.
    pub device_address: Option<u64>,
    /// The address the vector's route carried at the enable: the guest's address, or with
    /// MSI remapping the doorbell GPA it translated to (`None`: not routed).
    pub route_address: Option<u64>,
    /// How many times the vector was enabled on the device.
    pub enables: u32,
}

/// One vector as the VMM reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct VectorReport {
    /// Vector index.
    pub index: u16,
    /// The address the guest programmed.
    pub guest_address: u64,
    /// The data the guest programmed (its EventID).
    pub guest_data: u32,
    /// Masked (vector mask or function mask).
    pub masked: bool,
    /// MSI-X enabled.
    pub enabled: bool,
    /// The GSI carrying its route.
    pub gsi: Option<u32>,
    /// Enabled on the physical device.
    pub host_enabled: bool,
    /// The Message Address in the device's real table, when it can be read.
    pub device_address: Option<u64>,
    /// The address its route carries: the guest's address, or with MSI remapping the
    /// doorbell GPA it translates to.
    pub route_address: Option<u64>,
    /// With MSI remapping, why the vector is not routed (its address reaches no doorbell).
    #[serde(serialize_with = "ser_display_opt")]
    pub unroutable: Option<RemapError>,
}

fn ser_display_opt<S: serde::Serializer>(
    v: &Option<RemapError>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match v {
        Some(e) => s.serialize_some(&e.to_string()),
        None => s.serialize_none(),
    }
}

/// Counters of what went wrong outside the guest's view (a guest access cannot fail; the
/// host side can).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FaultCounters {
    /// Routing, irqfd or injection calls that failed.
    pub router: u64,
    /// VFIO vector enables or table writes that failed.
    pub device: u64,
    /// Guest BAR direct-mapping changes that failed.
    pub mapping: u64,
    /// Vectors whose real table address differed from the planned doorbell under
    /// `KernelProgrammed` (the doorbell plan did not hold).
    pub address_mismatch: u64,
    /// Vectors the guest enabled with an address other than the doorbell under
    /// `KernelProgrammed`: a guest error, not a host fault (the device keeps the kernel's
    /// doorbell; the route carries the guest's address, which reaches no vITS). Counted,
    /// logged at debug level only, so that a guest cannot flood the VMM's log.
    pub guest_address_not_doorbell: u64,
    /// Deliverable vectors left unrouted because, through the guest's IOMMU, their address
    /// reached no doorbell.
    pub unroutable: u64,
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
/// Interrupts: each MSI-X vector owns an eventfd. When the guest makes a vector deliverable
/// (enabled, unmasked) the device allocates a GSI, installs the route (guest address, guest
/// data, DeviceID) in ONE routing update per batch, enables the vector on the physical device
/// with that eventfd, applies the doorbell write-through, and assigns the irqfd; a device
/// interrupt then reaches the guest without leaving the kernel. Masking deassigns the irqfd, so
/// a masked vector's interrupts wait in its eventfd: a PBA read drains them into the Pending
/// bits, and an unmask delivers them once (either from the Pending bit or from the eventfd
/// count when the irqfd is reassigned, never both).
pub struct PassthroughDevice<D: DeviceBackend, R: MsiRouter, M: GuestMapper> {
    /// Dropped by hand in `Drop`: kept alive for good (leaked) when a direct BAR mapping
    /// could not be removed from the guest, so that the guest never reaches memory that
    /// the BAR's host mapping would leave behind.
    backend: std::mem::ManuallyDrop<D>,
    router: R,
    mapper: M,
    config: VirtualConfig,
    msix: Option<MsixState>,
    slots: Vec<VectorSlot>,
    pieces: Vec<DirectPiece>,
    mapped: Vec<(u8, u32)>,
    settings: PassthroughConfig,
    faults: FaultCounters,
    /// The batch buffer, boxed so that lending it to `apply` moves a pointer (a 48-byte
    /// move of the two vectors right after `msi-trap` wrote them was a store-forwarding
    /// stall on the trapped-write path).
    batch: Option<Box<UpdateBatch>>,
    remap: Option<(std::sync::Arc<dyn MsiRemapping>, u32)>,
    /// Buffers of `apply`, kept so that a commit does not allocate.
    scratch: Option<Box<Scratch>>,
    /// GSIs whose route removal failed: not released (`MsiRouter::release_gsi` wants the
    /// route gone first); removed and released with the next routing update.
    stale_gsis: Vec<u32>,
    /// After a failed routing update: send every live route again with the next one.
    routes_resync: bool,
    /// Direct mappings whose removal failed: retried at the next BAR change and teardown.
    stale_maps: Vec<(u8, u32)>,
    /// A direct mapping could not be removed at teardown: never drop the backend.
    leak_backend: bool,
}

/// Reused buffers of [`PassthroughDevice::apply`].
#[derive(Default)]
struct Scratch {
    changes: Vec<(u32, Option<MsiRoute>)>,
    to_enable: Vec<VectorUpdate>,
    to_assign: Vec<usize>,
    release: Vec<u32>,
}

impl<D: DeviceBackend, R: MsiRouter, M: GuestMapper> std::fmt::Debug
    for PassthroughDevice<D, R, M>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassthroughDevice")
            .field("settings", &self.settings)
            .field("vectors", &self.slots.len())
            .field("faults", &self.faults)
            .finish()
    }
}

impl<D: DeviceBackend, R: MsiRouter, M: GuestMapper> PassthroughDevice<D, R, M> {
    /// Assembles a device from its parts: the virtual config space, the MSI-X emulation (if
    /// the function has MSI-X) and the directly mappable BAR pieces.
    pub fn new(
        backend: D,
        router: R,
        mapper: M,
        config: VirtualConfig,
        msix: Option<MsixState>,
        pieces: Vec<DirectPiece>,
        settings: PassthroughConfig,
    ) -> Result<Self> {
        let vectors = msix.as_ref().map_or(0, |m| m.vectors());
        let mut slots = Vec::with_capacity(usize::from(vectors));
        for _ in 0..vectors {
            let eventfd = EventFd::new(EFD_NONBLOCK).map_err(Error::Eventfd)?;
            slots.push(VectorSlot {
                eventfd: Arc::new(eventfd),
                gsi: None,
                route: None,
                irqfd: false,
                host_enabled: false,
                record: None,
                guest_address: None,
                unroutable: None,
            });
        }
        Ok(PassthroughDevice {
            backend: std::mem::ManuallyDrop::new(backend),
            router,
            mapper,
            config,
            msix,
            slots,
            pieces,
            mapped: Vec::new(),
            settings,
            faults: FaultCounters::default(),
            batch: Some(Box::default()),
            scratch: Some(Box::default()),
            remap: None,
            stale_gsis: Vec::new(),
            routes_resync: false,
            stale_maps: Vec::new(),
            leak_backend: false,
        })
    }

    /// Routes MSIs through a guest IOMMU: from now on the address of each route is what
    /// `remap` translates the guest's address to for stream `stream` (the device's requester
    /// ID as the guest IOMMU sees it), and a vector whose address reaches no doorbell is not
    /// routed (and is counted and reported). Call [`remap_changed`](Self::remap_changed)
    /// when the guest IOMMU's translations for the stream may have changed.
    pub fn set_msi_remapping(&mut self, remap: std::sync::Arc<dyn MsiRemapping>, stream: u32) {
        self.remap = Some((remap, stream));
    }

    /// The route address of a guest MSI address: itself without remapping, else its
    /// translation.
    fn route_address(&self, guest: u64) -> std::result::Result<u64, RemapError> {
        match &self.remap {
            None => Ok(guest),
            Some((remap, stream)) => remap.translate_msi(*stream, guest),
        }
    }

    /// How many vectors are live (enabled with a GSI) but unrouted because their address
    /// reached no doorbell through the remapping; a VMM retries them
    /// ([`remap_changed`](Self::remap_changed)) after the guest touched its IOMMU.
    pub fn unroutable_vectors(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.gsi.is_some() && s.unroutable.is_some())
            .count()
    }

    /// Recomputes every live route through the MSI remapping (after the guest changed or
    /// invalidated its IOMMU's translations): changed routes go to the router in ONE update;
    /// a vector whose address now reaches no doorbell loses its route and irqfd (its
    /// interrupts wait in its eventfd) until a later recomputation or guest update reaches a
    /// doorbell again. Returns how many routes changed.
    pub fn remap_changed(&mut self) -> usize {
        if self.remap.is_none() {
            return 0;
        }
        let devid = self.settings.devid;
        let mut changes: Vec<(u32, Option<MsiRoute>)> = Vec::new();
        let mut lost: Vec<usize> = Vec::new();
        let mut regained: Vec<usize> = Vec::new();
        for i in 0..self.slots.len() {
            let (Some(guest), Some(gsi)) = (self.slots[i].guest_address, self.slots[i].gsi) else {
                continue;
            };
            let data = match (self.slots[i].route, self.msix.as_ref()) {
                (Some(r), _) => r.data,
                (None, Some(m)) => match m.vector(i as u16) {
                    Some(v) => v.data,
                    None => continue,
                },
                (None, None) => continue,
            };
            match self.route_address(guest) {
                Ok(address) => {
                    let route = MsiRoute {
                        address,
                        data,
                        devid,
                    };
                    let slot = &mut self.slots[i];
                    slot.unroutable = None;
                    if slot.route != Some(route) {
                        if slot.route.is_none() {
                            regained.push(i);
                        }
                        slot.route = Some(route);
                        changes.push((gsi, Some(route)));
                    }
                }
                Err(e) => {
                    let slot = &mut self.slots[i];
                    if slot.route.is_some() {
                        log::warn!("MSI-X vector {i}: no longer routed: {e}");
                        self.faults.unroutable += 1;
                        slot.route = None;
                        changes.push((gsi, None));
                        lost.push(i);
                    }
                    slot.unroutable = Some(e);
                }
            }
        }
        for &i in &lost {
            self.deassign(i);
        }
        self.push_routes(&mut changes, &[]);
        // A vector that regained its route gets its irqfd back if it is deliverable.
        for i in regained {
            let deliverable = self
                .msix
                .as_ref()
                .and_then(|m| m.vector(i as u16))
                .is_some_and(|v| v.enabled && !v.masked);
            let slot = &mut self.slots[i];
            if deliverable
                && !slot.irqfd
                && let Some(gsi) = slot.gsi
            {
                match self.router.assign_irqfd(&slot.eventfd, gsi) {
                    Ok(()) => slot.irqfd = true,
                    Err(e) => {
                        log::error!("MSI-X vector {i}: irqfd assign to GSI {gsi} failed: {e}");
                        self.faults.router += 1;
                    }
                }
            }
        }
        changes.len()
    }

    /// The MSI-X layout, when the function has MSI-X.
    pub fn msix_layout(&self) -> Option<&MsixLayout> {
        self.msix.as_ref().map(|m| m.layout())
    }

    /// Where the guest's BARs decode now.
    pub fn bar_windows(&self) -> &[BarWindow] {
        self.config.windows()
    }

    /// The physical-device side, for reports and tests.
    pub fn backend(&self) -> &D {
        &self.backend
    }

    /// The eventfd of vector `vector`: the VFIO trigger of the physical vector. A VMM may
    /// poll it while the vector is masked (no irqfd), and tests write it to play the device.
    pub fn vector_eventfd(&self, vector: u16) -> Option<&EventFd> {
        self.slots
            .get(usize::from(vector))
            .map(|s| s.eventfd.as_ref())
    }

    /// The fault counters.
    pub fn faults(&self) -> FaultCounters {
        self.faults
    }

    /// A guest config-space read.
    pub fn read_config(&mut self, offset: u16, data: &mut [u8]) {
        self.config.read(&*self.backend, offset, data);
        if let Some(msix) = &self.msix {
            msix.read_config(offset, data);
        }
    }

    /// A guest config-space write. Returns the BAR decode changes, for the VMM's MMIO bus
    /// (the device has already updated its own direct mappings).
    pub fn write_config(&mut self, offset: u16, data: &[u8]) -> Vec<BarChange> {
        let changes = self.config.write(&*self.backend, offset, data);
        if let Some(msix) = &mut self.msix
            && self.config.touches_msix(offset, data.len())
        {
            msix.write_config(offset, data);
        }
        self.remap(&changes);
        self.commit_if_due();
        changes
    }

    /// A guest read inside BAR `bar` at `offset` that trapped.
    pub fn read_bar(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        let index = BarIndex::new(bar);
        let access = match (&self.msix, index) {
            (Some(msix), Some(index)) => Some(msix.layout().classify(index, offset, data.len())),
            _ => None,
        };
        let forward = match (access, &self.msix) {
            // The MSI-X table: one classification, no other work (the hot read).
            (Some(GuestAccess::Table(o)), Some(msix)) => {
                msix.read_table(o, data);
                None
            }
            (Some(GuestAccess::Pba(_)), _) => {
                self.drain_masked();
                self.read_msix_bar(index, offset, data)
            }
            (Some(_), _) => self.read_msix_bar(index, offset, data),
            (None, _) => Some((bar, offset)),
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

    /// The MSI-X emulation's BAR read; `Some` when the access goes to the device.
    fn read_msix_bar(
        &self,
        index: Option<BarIndex>,
        offset: u64,
        data: &mut [u8],
    ) -> Option<(u8, u64)> {
        match (&self.msix, index) {
            (Some(msix), Some(index)) => match msix.read_bar(index, offset, data) {
                BarAccess::Handled => None,
                BarAccess::Forward(region) => Some((region.bar.get(), region.offset)),
            },
            (_, Some(index)) => Some((index.get(), offset)),
            (_, None) => None,
        }
    }

    /// A guest write inside BAR `bar` at `offset` that trapped. A write to the MSI-X table
    /// and the commit it makes due go through `msi-trap`'s fused
    /// [`MsixState::write_bar_commit`] (issue 15: no separate bookkeeping per access).
    pub fn write_bar(&mut self, bar: u8, offset: u64, data: &[u8]) {
        let mut batch = self.batch.take().unwrap_or_default();
        let (forward, taken) = match (&mut self.msix, BarIndex::new(bar)) {
            (Some(msix), Some(index)) => {
                match msix.write_bar_commit(index, offset, data, &mut batch) {
                    (BarAccess::Handled, taken) => (None, taken),
                    (BarAccess::Forward(region), taken) => {
                        (Some((region.bar.get(), region.offset)), taken)
                    }
                }
            }
            _ => (Some((bar, offset)), false),
        };
        if let Some((bar, offset)) = forward
            && let Err(e) = self.backend.write_bar(bar, offset, data)
        {
            log::warn!(
                "BAR{bar} write of {} bytes at {offset:#x} failed: {e}",
                data.len()
            );
        }
        if taken && !batch.is_empty() {
            self.apply(&batch);
        }
        self.batch = Some(batch);
        if self.host_state_stale() {
            self.commit();
        }
    }

    /// Moves masked vectors' waiting interrupts (their eventfd counts) into the Pending bits,
    /// so that a PBA read shows them.
    fn drain_masked(&mut self) {
        let Some(msix) = &mut self.msix else { return };
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.host_enabled && !slot.irqfd && slot.eventfd.read().is_ok() {
                // The vector is masked (no irqfd): this sets its Pending bit.
                if let Err(e) = msix.signal(i as u16) {
                    log::warn!("MSI-X vector {i}: {e}");
                }
            }
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
                        self.faults.mapping += 1;
                    }
                }
            }
        }
    }

    /// Whether the host still holds MSI-X state (an enabled vector, a GSI) that the guest's
    /// view no longer allows: MSI-X Enable clear (PCIe 6.0 §7.7.2.2: the function must not
    /// use MSI-X then). `msi-trap` does not mark such a change due when every vector was
    /// masked already (no deliverability changed), so the device checks it itself.
    fn host_state_stale(&self) -> bool {
        self.msix.as_ref().is_some_and(|m| !m.enabled())
            && self.slots.iter().any(|s| s.host_enabled || s.gsi.is_some())
    }

    fn commit_if_due(&mut self) {
        if self.msix.as_ref().is_some_and(|m| m.updates_due()) || self.host_state_stale() {
            self.commit();
        }
    }

    /// Applies everything the guest changed since the last commit. Called automatically at
    /// the end of each trapped write that made a batch due; a VMM may call it at any time
    /// (an explicit flush).
    pub fn commit(&mut self) {
        let stale = self.host_state_stale();
        let Some(msix) = &mut self.msix else { return };
        let mut batch = self.batch.take().unwrap_or_default();
        msix.take_updates_into(&mut batch);
        if !batch.is_empty() || stale {
            self.apply(&batch);
        }
        batch.clear();
        self.batch = Some(batch);
    }

    fn apply(&mut self, batch: &UpdateBatch) {
        let mut scratch = self.scratch.take().unwrap_or_default();
        self.apply_with(batch, &mut scratch);
        self.scratch = Some(scratch);
    }

    fn apply_with(&mut self, batch: &UpdateBatch, scratch: &mut Scratch) {
        let Scratch {
            changes,
            to_enable,
            to_assign,
            release,
        } = scratch;
        changes.clear();
        to_enable.clear();
        to_assign.clear();
        release.clear();
        let devid = self.settings.devid;
        let msix_enabled = self.msix.as_ref().is_some_and(|m| m.enabled());

        for u in &batch.updates {
            let i = usize::from(u.index);
            let Some(slot) = self.slots.get_mut(i) else {
                continue;
            };
            if u.is_deliverable() {
                let gsi = match slot.gsi {
                    Some(g) => g,
                    None => match self.router.allocate_gsi() {
                        Ok(g) => {
                            slot.gsi = Some(g);
                            g
                        }
                        Err(e) => {
                            log::error!("MSI-X vector {i}: no GSI: {e}");
                            self.faults.router += 1;
                            continue;
                        }
                    },
                };
                slot.guest_address = Some(u.address);
                if !slot.host_enabled {
                    to_enable.push(*u);
                }
                let address = match &self.remap {
                    None => Ok(u.address),
                    Some((remap, stream)) => remap.translate_msi(*stream, u.address),
                };
                let slot = &mut self.slots[i];
                match address {
                    Ok(address) => {
                        slot.unroutable = None;
                        let route = MsiRoute {
                            address,
                            data: u.data,
                            devid,
                        };
                        if slot.route != Some(route) {
                            changes.push((gsi, Some(route)));
                            slot.route = Some(route);
                        }
                        if !slot.irqfd {
                            to_assign.push(i);
                        }
                    }
                    Err(e) => {
                        // Enabled on the device (its address written through), but not
                        // routed: its interrupts wait in the eventfd until the address
                        // reaches a doorbell.
                        // Reported when it becomes unroutable, not at every commit (a
                        // guest toggling the mask must not flood the log).
                        if slot.unroutable.is_none() {
                            log::warn!("MSI-X vector {i}: not routed: {e}");
                        } else {
                            log::debug!("MSI-X vector {i}: still not routed: {e}");
                        }
                        self.faults.unroutable += 1;
                        if slot.route.take().is_some() {
                            changes.push((gsi, None));
                        }
                        slot.unroutable = Some(e);
                        self.deassign(i);
                    }
                }
            } else {
                self.deassign(i);
                let slot = &mut self.slots[i];
                // A GSI whose irqfd is still assigned (its deassign failed) stays with the
                // vector until the deassign succeeds (retried at the next change, and at
                // teardown).
                if !u.enabled
                    && !slot.irqfd
                    && let Some(gsi) = slot.gsi.take()
                {
                    changes.push((gsi, None));
                    release.push(gsi);
                    slot.route = None;
                }
            }
        }

        // One routing-table update for the whole batch.
        self.push_routes(changes, release);

        if !msix_enabled && self.slots.iter().any(|s| s.host_enabled) {
            match self.backend.disable_vectors() {
                Ok(()) => {
                    for slot in &mut self.slots {
                        slot.host_enabled = false;
                    }
                }
                // The vectors stay enabled on the device: the next commit tries again
                // (`host_state_stale`), and so does teardown.
                Err(e) => {
                    log::error!("MSI-X disable on the device failed: {e}");
                    self.faults.device += 1;
                }
            }
        }

        for u in to_enable.iter() {
            self.enable_on_device(u);
        }
        for &i in to_assign.iter() {
            let slot = &mut self.slots[i];
            let Some(gsi) = slot.gsi else { continue };
            match self.router.assign_irqfd(&slot.eventfd, gsi) {
                Ok(()) => slot.irqfd = true,
                Err(e) => {
                    log::error!("MSI-X vector {i}: irqfd assign to GSI {gsi} failed: {e}");
                    self.faults.router += 1;
                }
            }
        }
        for d in &batch.deliveries {
            let route = MsiRoute {
                address: d.address,
                data: d.data,
                devid,
            };
            if let Err(e) = self.router.inject(route) {
                log::error!("MSI-X vector {}: pending delivery failed: {e}", d.index);
                self.faults.router += 1;
            }
        }
    }

    /// Enables one vector on the physical device and applies the write-through policy.
    fn enable_on_device(&mut self, u: &VectorUpdate) {
        let i = usize::from(u.index);
        let policy = self.settings.policy;
        let real_table = self.msix.as_ref().map(|m| m.layout().real().table);
        let program = match msi_trap::write_through::program_address(
            policy, u.index, u.address, real_table,
        ) {
            Ok(p) => p,
            Err(e) => {
                log::error!("{e}");
                self.faults.device += 1;
                return;
            }
        };
        if let DeviceProgram::SetIova { iova, .. } = program
            && let Err(e) = self.backend.prepare_msi_iova(u.index, iova)
        {
            log::error!("MSI-X vector {i}: MSI IOVA {iova:#x} not accepted: {e}");
            self.faults.device += 1;
            return;
        }
        let slot = &mut self.slots[i];
        if let Err(e) = self.backend.set_vector(u.index, Some(&slot.eventfd)) {
            log::error!("MSI-X vector {i}: enable on the device failed: {e}");
            self.faults.device += 1;
            return;
        }
        slot.host_enabled = true;
        if let DeviceProgram::WriteTableAddress(w) = program
            && let Err(e) = self.backend.write_table_address(u.index, w.lo, w.hi)
        {
            log::error!("MSI-X vector {i}: table address write failed: {e}");
            self.faults.device += 1;
        }
        // What the device uses now, read once: the check of the plan and the record.
        let device_address = match self.backend.read_table_address(u.index) {
            Ok(a) => a,
            Err(e) => {
                log::warn!("MSI-X vector {i}: real table not readable: {e}");
                None
            }
        };
        if let (
            DeviceProgram::KernelProgrammed { guest_address, .. },
            DoorbellPolicy::KernelProgrammed { doorbell_iova },
        ) = (program, policy)
        {
            if let Some(real) = device_address
                && real != doorbell_iova
            {
                log::error!(
                    "MSI-X vector {i}: the device uses doorbell {real:#x}, not the planned \
                     {doorbell_iova:#x}; the doorbell plan did not hold"
                );
                self.faults.address_mismatch += 1;
            } else if guest_address != doorbell_iova {
                log::debug!(
                    "MSI-X vector {i}: the guest programmed {guest_address:#x}, not the \
                     doorbell {doorbell_iova:#x}; its interrupts reach no vITS"
                );
                self.faults.guest_address_not_doorbell += 1;
            }
        }
        let slot = &mut self.slots[i];
        slot.record = Some(EnableRecord {
            index: u.index,
            guest_address: u.address,
            guest_data: u.data,
            device_address,
            route_address: slot.route.map(|r| r.address),
            enables: slot.record.map_or(1, |r| r.enables.saturating_add(1)),
        });
    }

    /// Resets the physical device (`VFIO_DEVICE_RESET`, for a VMM that forwards a guest's
    /// function reset or recovers the device) and puts the guest's MSI addresses back: the
    /// kernel restores the MSI-X table from its own messages, so with
    /// `DoorbellPolicy::TableAddressWrite` every vector enabled on the device gets its
    /// guest address written through again (a per-vector MSI IOVA is the kernel's own and
    /// survives; with `KernelProgrammed` the kernel's address is the plan). Failures are
    /// counted in the fault counters; the reset's own failure is returned.
    pub fn reset_device(&mut self) -> Result<()> {
        self.backend.reset().map_err(|source| Error::Backend {
            op: "VFIO_DEVICE_RESET",
            source,
        })?;
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            let (true, Some(record)) = (slot.host_enabled, slot.record) else {
                continue;
            };
            if self.settings.policy == DoorbellPolicy::TableAddressWrite {
                let (lo, hi) = (
                    record.guest_address as u32,
                    (record.guest_address >> 32) as u32,
                );
                if let Err(e) = self.backend.write_table_address(i as u16, lo, hi) {
                    log::error!("MSI-X vector {i}: table address write after reset failed: {e}");
                    self.faults.device += 1;
                }
            }
            let device_address = match self.backend.read_table_address(i as u16) {
                Ok(a) => a,
                Err(e) => {
                    log::warn!("MSI-X vector {i}: real table not readable after reset: {e}");
                    None
                }
            };
            if let Some(r) = self.slots[i].record.as_mut() {
                r.device_address = device_address;
            }
        }
        Ok(())
    }

    /// The last enable of every vector that was ever enabled on the device.
    pub fn enable_records(&self) -> Vec<EnableRecord> {
        self.slots.iter().filter_map(|s| s.record).collect()
    }

    /// Every vector's guest and host state, with the real table's address read live.
    pub fn vectors(&self) -> Vec<VectorReport> {
        let Some(msix) = &self.msix else {
            return Vec::new();
        };
        (0..msix.vectors())
            .filter_map(|i| {
                let v = msix.vector(i)?;
                let slot = &self.slots[usize::from(i)];
                Some(VectorReport {
                    index: i,
                    guest_address: v.address,
                    guest_data: v.data,
                    masked: v.masked,
                    enabled: v.enabled,
                    gsi: slot.gsi,
                    host_enabled: slot.host_enabled,
                    device_address: self.backend.read_table_address(i).ok().flatten(),
                    route_address: slot.route.map(|r| r.address),
                    unroutable: slot.unroutable.clone(),
                })
            })
            .collect()
    }

    /// Tears the interrupt state down: irqfds, routes, GSIs and the device's vectors.
    /// Removes a direct mapping; a failure is reported and the mapping kept in
    /// `stale_maps` for a later attempt.
    fn unmap_or_keep(&mut self, bar: u8, handle: u32) {
        if let Err(e) = self.mapper.unmap(handle) {
            log::error!("unmap of BAR{bar} piece (handle {handle}) failed: {e}");
            self.faults.mapping += 1;
            self.stale_maps.push((bar, handle));
        }
    }

    /// Deassigns vector `i`'s irqfd if it has one. On failure the irqfd is still assigned
    /// and the books say so (`irqfd` stays set), so that the next change of the vector and
    /// teardown try again.
    fn deassign(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let (true, Some(gsi)) = (slot.irqfd, slot.gsi) else {
            return;
        };
        match self.router.deassign_irqfd(&slot.eventfd, gsi) {
            Ok(()) => slot.irqfd = false,
            Err(e) => {
                log::error!("MSI-X vector {i}: irqfd deassign from GSI {gsi} failed: {e}");
                self.faults.router += 1;
            }
        }
    }

    /// One routing update: `changes`, preceded after a failed update by every live route
    /// (so that the table is whole again) and followed by the removal of the GSIs whose
    /// removal failed before. On success the GSIs in `release` and those go back to the
    /// router; on failure they are kept, since a GSI must not be released with its route
    /// still installed (`MsiRouter::release_gsi`), and the next update carries them.
    /// Returns whether the update went through.
    fn push_routes(&mut self, changes: &mut Vec<(u32, Option<MsiRoute>)>, release: &[u32]) -> bool {
        if self.routes_resync {
            let live: Vec<(u32, Option<MsiRoute>)> = self
                .slots
                .iter()
                .filter_map(|s| Some((s.gsi?, Some(s.route?))))
                .collect();
            changes.splice(0..0, live);
        }
        changes.extend(self.stale_gsis.iter().map(|g| (*g, None)));
        if changes.is_empty() {
            return true;
        }
        match self.router.set_routes(changes) {
            Ok(()) => {
                self.routes_resync = false;
                for &gsi in release.iter().chain(self.stale_gsis.iter()) {
                    self.router.release_gsi(gsi);
                }
                self.stale_gsis.clear();
                true
            }
            Err(e) => {
                let mut gsis: Vec<u32> = changes.iter().map(|(g, _)| *g).collect();
                gsis.sort_unstable();
                gsis.dedup();
                log::error!("routing update of GSIs {gsis:?} failed: {e}");
                self.faults.router += 1;
                self.routes_resync = true;
                self.stale_gsis.extend_from_slice(release);
                false
            }
        }
    }

    /// Tears the interrupt state down: irqfds, routes, GSIs, the device's vectors and the
    /// direct mappings. Each failed call is reported and tried once more; what still fails
    /// stays (and is reported): an irqfd or route the VM's teardown removes, a GSI never
    /// released, or a direct mapping, for which the backend's BAR mappings are kept for
    /// good so that the guest never reaches reused memory.
    fn teardown(&mut self) {
        for i in 0..self.slots.len() {
            self.deassign(i);
            if self.slots[i].irqfd {
                self.deassign(i);
            }
        }
        let mut changes = Vec::new();
        let mut release = Vec::new();
        for slot in &mut self.slots {
            // A GSI whose irqfd could not be deassigned keeps its route: an interrupt on it
            // must not meet a removed route.
            if slot.irqfd {
                continue;
            }
            if let Some(gsi) = slot.gsi.take() {
                changes.push((gsi, None));
                release.push(gsi);
                slot.route = None;
            }
        }
        // The resync is moot: every route is going.
        self.routes_resync = false;
        if !self.push_routes(&mut changes.clone(), &release) {
            // The failed GSIs are in `stale_gsis` now; one more attempt.
            let mut none = Vec::new();
            if !self.push_routes(&mut none, &[]) {
                log::error!(
                    "GSIs {:?} stay allocated: their routes could not be removed",
                    self.stale_gsis
                );
            }
        }
        if self.slots.iter().any(|s| s.host_enabled) {
            let mut result = self.backend.disable_vectors();
            if let Err(e) = &result {
                log::error!("MSI-X disable on the device failed: {e}; trying again");
                self.faults.device += 1;
                result = self.backend.disable_vectors();
            }
            match result {
                Ok(()) => {
                    for slot in &mut self.slots {
                        slot.host_enabled = false;
                    }
                }
                Err(e) => log::error!("MSI-X disable on the device failed again: {e}"),
            }
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

impl<D: DeviceBackend, R: MsiRouter, M: GuestMapper> Drop for PassthroughDevice<D, R, M> {
    fn drop(&mut self) {
        self.teardown();
        if !self.leak_backend {
            // SAFETY: `backend` is dropped exactly once, here, and never used afterwards
            // (this is the device's drop; no method runs after it).
            unsafe { std::mem::ManuallyDrop::drop(&mut self.backend) };
        }
    }
}
