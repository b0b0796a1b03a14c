// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`MsixEngine`]: the MSI-X passthrough engine on its own.
//!
//! It holds the guest's view of the function's MSI-X (`msi-trap`'s [`MsixState`]) and what
//! the host did about each vector: the route staged with the [`InterruptGroup`], the enable
//! on the physical device ([`VectorBackend`]), the doorbell write-through, the PBA drain, the
//! remapping through a guest IOMMU and the fault counters. It owns no config space and no
//! BARs: a VMM with its own VFIO device type routes the guest's accesses to the MSI-X
//! capability, table and PBA here ([`write_config`](MsixEngine::write_config),
//! [`read_bar`](MsixEngine::read_bar), [`write_bar`](MsixEngine::write_bar)) and performs
//! what comes back as [`BarAccess::Forward`] on the device itself.
//! [`crate::PassthroughDevice`] is the whole device built on it.

use std::sync::Arc;

use msi_trap::msix::layout::{BarIndex, GuestAccess, MsixLayout};
use msi_trap::msix::{BarAccess, MsixState};
use msi_trap::update::{UpdateBatch, VectorUpdate};
use msi_trap::write_through::{DeviceProgram, DoorbellPolicy};
use vmm_sys_util::eventfd::EventFd;

use crate::PassthroughConfig;
use crate::backend::{MsiRemapping, MsiRoute, RemapError, VectorBackend};
use crate::error::{Error, Result};
use crate::group::InterruptGroup;

/// Per-vector host state (the eventfd, GSI and irqfd are the interrupt group's).
#[derive(Debug)]
struct VectorSlot {
    /// The route last staged with the group (`None`: none).
    route: Option<MsiRoute>,
    /// The mask last staged with the group: a masked vector's interrupts wait in its
    /// notifier.
    masked: bool,
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

/// The MSI-X passthrough engine of one function: the guest's view of its MSI-X and what the
/// host did about each vector, owning no config space and no BARs. A VMM with its own VFIO
/// device type routes the guest's accesses to the MSI-X capability, table and PBA here
/// ([`write_config`](Self::write_config), [`read_bar`](Self::read_bar),
/// [`write_bar`](Self::write_bar)) and performs what comes back as [`BarAccess::Forward`]
/// on the device itself; [`crate::PassthroughDevice`] is the whole device built on it.
///
/// Interrupts go through its [`InterruptGroup`], which owns one eventfd per vector. When
/// the guest makes a vector deliverable (enabled, unmasked) the engine stages its route
/// (guest address, or with a vIOMMU the doorbell GPA it translates to; guest data;
/// DeviceID), commits the batch with ONE group commit (one routing update), enables the
/// vector on the physical device with the group's eventfd and applies the doorbell
/// write-through; a device interrupt then reaches the guest without leaving the kernel.
/// Masking stages the vector masked, so its interrupts wait in the eventfd: a PBA read
/// drains them into the Pending bits, and an unmask delivers them once (either from the
/// Pending bit, through [`InterruptGroup::trigger`], or from the eventfd count when the
/// group delivers it again, never both).
///
/// Before dropping the engine, call [`shutdown`](Self::shutdown) with the device: it
/// disables the vectors on the device (the group's own drop removes its routes).
pub struct MsixEngine<G: InterruptGroup> {
    msix: MsixState,
    group: G,
    slots: Vec<VectorSlot>,
    settings: PassthroughConfig,
    faults: FaultCounters,
    /// The batch buffer, boxed so that lending it to `apply` moves a pointer (a 48-byte
    /// move of the two vectors right after `msi-trap` wrote them was a store-forwarding
    /// stall on the trapped-write path).
    batch: Option<Box<UpdateBatch>>,
    remap: Option<(Arc<dyn MsiRemapping>, u32)>,
    /// Buffers of `apply`, kept so that a commit does not allocate.
    scratch: Option<Box<Scratch>>,
}

/// Reused buffers of [`MsixEngine::apply`].
#[derive(Default)]
struct Scratch {
    to_enable: Vec<VectorUpdate>,
}

impl<G: InterruptGroup> std::fmt::Debug for MsixEngine<G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsixEngine")
            .field("settings", &self.settings)
            .field("vectors", &self.slots.len())
            .field("faults", &self.faults)
            .finish()
    }
}

impl<G: InterruptGroup> MsixEngine<G> {
    /// An engine for the function whose guest MSI-X view is `msix`, its vectors going
    /// through `group` (which must serve at least `msix.vectors()` vectors).
    pub fn new(msix: MsixState, group: G, settings: PassthroughConfig) -> Result<Self> {
        let vectors = msix.vectors();
        if group.vectors() < vectors {
            return Err(Error::Unsupported {
                device: "MSI-X engine".to_owned(),
                reason: format!(
                    "its interrupt group serves {} vectors, the function has {vectors}",
                    group.vectors()
                ),
            });
        }
        let slots = (0..vectors)
            .map(|_| VectorSlot {
                route: None,
                masked: true,
                host_enabled: false,
                record: None,
                guest_address: None,
                unroutable: None,
            })
            .collect();
        Ok(MsixEngine {
            msix,
            group,
            slots,
            settings,
            faults: FaultCounters::default(),
            batch: Some(Box::default()),
            remap: None,
            scratch: Some(Box::default()),
        })
    }

    /// The guest's MSI-X view (for snapshots and reports).
    pub fn state(&self) -> &MsixState {
        &self.msix
    }

    /// The MSI-X layout: the guest's table and PBA and the device's.
    pub fn layout(&self) -> &MsixLayout {
        self.msix.layout()
    }

    /// The interrupt group.
    pub fn group(&self) -> &G {
        &self.group
    }

    /// The eventfd VFIO signals for `vector` (the group's).
    pub fn notifier(&self, vector: u16) -> Option<&EventFd> {
        self.group.notifier(vector)
    }

    /// What went wrong on the host side so far (`mapping` is the whole device's and stays
    /// zero here).
    pub fn faults(&self) -> FaultCounters {
        self.faults
    }

    /// Overlays the MSI-X capability on a guest config-space read at `offset` (absolute):
    /// the caller fills `data` from its own config space first.
    pub fn read_config(&self, offset: u16, data: &mut [u8]) {
        self.msix.read_config(offset, data);
    }

    /// A guest config-space write at `offset` (absolute): the bytes inside the MSI-X
    /// capability take effect (Function Mask, MSI-X Enable), and a batch that became due is
    /// committed. Writes outside the capability change nothing but still commit what is due
    /// (a failed disable is retried).
    pub fn write_config<B: VectorBackend + ?Sized>(
        &mut self,
        backend: &B,
        offset: u16,
        data: &[u8],
    ) {
        self.msix.write_config(offset, data);
        self.commit_if_due(backend);
    }

    /// A guest read of guest BAR `bar` at `offset`: the table and PBA are emulated (a PBA
    /// read first drains the masked vectors' waiting interrupts into the Pending bits);
    /// [`BarAccess::Forward`] says where on the device the caller performs the access.
    pub fn read_bar(&mut self, bar: BarIndex, offset: u64, data: &mut [u8]) -> BarAccess {
        match self.msix.layout().classify(bar, offset, data.len()) {
            // The MSI-X table: one classification, no other work (the hot read).
            GuestAccess::Table(o) => {
                self.msix.read_table(o, data);
                BarAccess::Handled
            }
            GuestAccess::Pba(_) => {
                self.drain_masked();
                self.msix.read_bar(bar, offset, data)
            }
            _ => self.msix.read_bar(bar, offset, data),
        }
    }

    /// A guest write of guest BAR `bar` at `offset`: table and PBA writes are emulated and a
    /// batch they make due is committed through `msi-trap`'s fused
    /// [`MsixState::write_bar_commit`] (no separate bookkeeping per access);
    /// [`BarAccess::Forward`] says where on the device the caller performs the access.
    pub fn write_bar<B: VectorBackend + ?Sized>(
        &mut self,
        backend: &B,
        bar: BarIndex,
        offset: u64,
        data: &[u8],
    ) -> BarAccess {
        let mut batch = self.batch.take().unwrap_or_default();
        let (access, taken) = self.msix.write_bar_commit(bar, offset, data, &mut batch);
        if taken && !batch.is_empty() {
            self.apply(backend, &batch);
        }
        self.batch = Some(batch);
        if self.host_state_stale() {
            self.commit(backend);
        }
        access
    }

    /// Routes MSIs through a guest IOMMU: from now on the address of each route is what
    /// `remap` translates the guest's address to for stream `stream` (the device's requester
    /// ID as the guest IOMMU sees it), and a vector whose address reaches no doorbell is not
    /// routed (and is counted and reported). Call [`remap_changed`](Self::remap_changed)
    /// when the guest IOMMU's translations for the stream may have changed.
    pub fn set_msi_remapping(&mut self, remap: Arc<dyn MsiRemapping>, stream: u32) {
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
            .filter(|s| s.host_enabled && s.unroutable.is_some())
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
        let mut changed = 0;
        for i in 0..self.slots.len() {
            let (Some(guest), true) = (self.slots[i].guest_address, self.slots[i].host_enabled)
            else {
                continue;
            };
            let Some(data) = self.slots[i]
                .route
                .map(|r| r.data)
                .or_else(|| self.msix.vector(i as u16).map(|v| v.data))
            else {
                continue;
            };
            let route = match self.route_address(guest) {
                Ok(address) => {
                    self.slots[i].unroutable = None;
                    Some(MsiRoute {
                        address,
                        data,
                        devid,
                    })
                }
                Err(e) => {
                    if self.slots[i].route.is_some() {
                        log::warn!("MSI-X vector {i}: no longer routed: {e}");
                        self.faults.unroutable += 1;
                    }
                    self.slots[i].unroutable = Some(e);
                    None
                }
            };
            if self.slots[i].route != route {
                self.slots[i].route = route;
                let masked = self.slots[i].masked;
                self.group.update(i as u16, route, masked);
                changed += 1;
            }
        }
        if changed > 0 {
            self.commit_group();
        }
        changed
    }

    /// Commits the staged interrupt changes (ONE routing update); a failure is counted (the
    /// group logged what failed, and retries it at the next commit).
    fn commit_group(&mut self) {
        if let Err(e) = self.group.commit() {
            log::debug!("interrupt group commit: {e}");
            self.faults.router += 1;
        }
    }

    /// Moves masked vectors' waiting interrupts (their eventfd counts) into the Pending bits,
    /// so that a PBA read shows them.
    fn drain_masked(&mut self) {
        let msix = &mut self.msix;
        for (i, slot) in self.slots.iter().enumerate() {
            let delivering = slot.route.is_some() && !slot.masked;
            if slot.host_enabled
                && !delivering
                && self
                    .group
                    .notifier(i as u16)
                    .is_some_and(|e| e.read().is_ok())
            {
                // The vector is masked (no irqfd): this sets its Pending bit.
                if let Err(e) = msix.signal(i as u16) {
                    log::warn!("MSI-X vector {i}: {e}");
                }
            }
        }
    }

    /// Whether the host still holds MSI-X state (an enabled vector, a GSI) that the guest's
    /// view no longer allows: MSI-X Enable clear (PCIe 6.0 §7.7.2.2: the function must not
    /// use MSI-X then). `msi-trap` does not mark such a change due when every vector was
    /// masked already (no deliverability changed), so the device checks it itself.
    fn host_state_stale(&self) -> bool {
        !self.msix.enabled()
            && self
                .slots
                .iter()
                .any(|s| s.host_enabled || s.route.is_some())
    }

    pub(crate) fn commit_if_due<B: VectorBackend + ?Sized>(&mut self, backend: &B) {
        if self.msix.updates_due() || self.host_state_stale() {
            self.commit(backend);
        }
    }

    /// Applies everything the guest changed since the last commit. Called automatically at
    /// the end of each trapped write that made a batch due; a VMM may call it at any time
    /// (an explicit flush).
    pub fn commit<B: VectorBackend + ?Sized>(&mut self, backend: &B) {
        let stale = self.host_state_stale();
        let msix = &mut self.msix;
        let mut batch = self.batch.take().unwrap_or_default();
        msix.take_updates_into(&mut batch);
        if !batch.is_empty() || stale {
            self.apply(backend, &batch);
        }
        batch.clear();
        self.batch = Some(batch);
    }

    fn apply<B: VectorBackend + ?Sized>(&mut self, backend: &B, batch: &UpdateBatch) {
        let mut scratch = self.scratch.take().unwrap_or_default();
        self.apply_with(backend, batch, &mut scratch);
        self.scratch = Some(scratch);
    }

    fn apply_with<B: VectorBackend + ?Sized>(
        &mut self,
        backend: &B,
        batch: &UpdateBatch,
        scratch: &mut Scratch,
    ) {
        let Scratch { to_enable } = scratch;
        to_enable.clear();
        let devid = self.settings.devid;
        let msix_enabled = self.msix.enabled();
        let mut staged = false;

        for u in &batch.updates {
            let i = usize::from(u.index);
            if i >= self.slots.len() {
                continue;
            }
            let vector = u.index;
            if u.is_deliverable() {
                self.slots[i].guest_address = Some(u.address);
                if !self.slots[i].host_enabled {
                    to_enable.push(*u);
                }
                let address = self.route_address(u.address);
                let slot = &mut self.slots[i];
                let route = match address {
                    Ok(address) => {
                        slot.unroutable = None;
                        Some(MsiRoute {
                            address,
                            data: u.data,
                            devid,
                        })
                    }
                    Err(e) => {
                        // Enabled on the device (its address written through), but not
                        // routed: its interrupts wait in the eventfd until the address
                        // reaches a doorbell. Reported when it becomes unroutable, not at
                        // every commit (a guest toggling the mask must not flood the log).
                        if slot.unroutable.is_none() {
                            log::warn!("MSI-X vector {i}: not routed: {e}");
                        } else {
                            log::debug!("MSI-X vector {i}: still not routed: {e}");
                        }
                        self.faults.unroutable += 1;
                        slot.unroutable = Some(e);
                        None
                    }
                };
                slot.route = route;
                slot.masked = false;
                self.group.update(vector, route, false);
            } else {
                let slot = &mut self.slots[i];
                slot.masked = true;
                if !u.enabled {
                    // Disabled: the route (and its GSI) goes.
                    slot.route = None;
                }
                self.group.update(vector, slot.route, true);
            }
            staged = true;
        }

        // ONE group commit (one routing-table update) for the whole batch.
        if staged {
            self.commit_group();
        }

        if !msix_enabled && self.slots.iter().any(|s| s.host_enabled) {
            match backend.disable_vectors() {
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
            self.enable_on_device(backend, u);
        }
        for d in &batch.deliveries {
            // A vector with no route (its address reaches no doorbell) has nowhere to go:
            // it was counted as unroutable.
            if self
                .slots
                .get(usize::from(d.index))
                .is_none_or(|s| s.route.is_none())
            {
                continue;
            }
            if self.group.trigger(d.index).is_err() {
                self.faults.router += 1;
            }
        }
    }

    /// Enables one vector on the physical device and applies the write-through policy.
    fn enable_on_device<B: VectorBackend + ?Sized>(&mut self, backend: &B, u: &VectorUpdate) {
        let i = usize::from(u.index);
        let policy = self.settings.policy;
        let real_table = Some(self.msix.layout().real().table);
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
            && let Err(e) = backend.prepare_msi_iova(u.index, iova)
        {
            log::error!("MSI-X vector {i}: MSI IOVA {iova:#x} not accepted: {e}");
            self.faults.device += 1;
            return;
        }
        let Some(eventfd) = self.group.notifier(u.index) else {
            log::error!("MSI-X vector {i}: the interrupt group has no notifier for it");
            self.faults.device += 1;
            return;
        };
        if let Err(e) = backend.set_vector(u.index, Some(eventfd)) {
            log::error!("MSI-X vector {i}: enable on the device failed: {e}");
            self.faults.device += 1;
            return;
        }
        self.slots[i].host_enabled = true;
        if let DeviceProgram::WriteTableAddress(w) = program
            && let Err(e) = backend.write_table_address(u.index, w.lo, w.hi)
        {
            log::error!("MSI-X vector {i}: table address write failed: {e}");
            self.faults.device += 1;
        }
        // What the device uses now, read once: the check of the plan and the record.
        let device_address = match backend.read_table_address(u.index) {
            Ok(a) => a,
            Err(e) => {
                log::warn!("MSI-X vector {i}: real table not readable: {e}");
                None
            }
        };
        if let (
            DeviceProgram::KernelProgrammed { guest_address, .. },
            DoorbellPolicy::KernelProgrammedWindow { start, last },
        ) = (program, policy)
        {
            // One page per host CPU (RISC-V IMSIC): any page of the window is the plan's.
            if let Some(real) = device_address
                && !(start..=last).contains(&real)
            {
                log::error!(
                    "MSI-X vector {i}: the device uses doorbell {real:#x}, outside the planned \
                     window {start:#x}..={last:#x}; the doorbell plan did not hold"
                );
                self.faults.address_mismatch += 1;
            } else if !(start..=last).contains(&guest_address) {
                log::debug!(
                    "MSI-X vector {i}: the guest programmed {guest_address:#x}, outside the \
                     window {start:#x}..={last:#x} of its interrupt controller"
                );
                self.faults.guest_address_not_doorbell += 1;
            }
        }
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

    /// Puts the guest's MSI addresses back after the VMM reset the device
    /// (`VFIO_DEVICE_RESET`): the kernel restores the MSI-X table from its own messages, so
    /// with `DoorbellPolicy::TableAddressWrite` every vector enabled on the device gets its
    /// guest address written through again (a per-vector MSI IOVA is the kernel's own and
    /// survives; with `KernelProgrammed` the kernel's address is the plan). Failures are
    /// counted in the fault counters.
    pub fn after_reset<B: VectorBackend + ?Sized>(&mut self, backend: &B) {
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
                if let Err(e) = backend.write_table_address(i as u16, lo, hi) {
                    log::error!("MSI-X vector {i}: table address write after reset failed: {e}");
                    self.faults.device += 1;
                }
            }
            let device_address = match backend.read_table_address(i as u16) {
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
    }

    /// The last enable of every vector that was ever enabled on the device.
    pub fn enable_records(&self) -> Vec<EnableRecord> {
        self.slots.iter().filter_map(|s| s.record).collect()
    }

    /// Every vector's guest and host state, with the real table's address read live.
    pub fn vectors<B: VectorBackend + ?Sized>(&self, backend: &B) -> Vec<VectorReport> {
        let msix = &self.msix;
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
                    gsi: self.group.gsi(i),
                    host_enabled: slot.host_enabled,
                    device_address: backend.read_table_address(i).ok().flatten(),
                    route_address: slot.route.map(|r| r.address),
                    unroutable: slot.unroutable.clone(),
                })
            })
            .collect()
    }

    /// Takes the function's interrupts down: every route goes (one group commit) and the
    /// vectors are disabled on the device (tried twice; what still fails is reported).
    /// The engine stays usable: a guest that enables MSI-X again starts over.
    pub fn shutdown<B: VectorBackend + ?Sized>(&mut self, backend: &B) {
        let mut staged = false;
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            if slot.route.is_some() || slot.host_enabled || !slot.masked {
                slot.route = None;
                slot.masked = true;
                self.group.update(i as u16, None, true);
                staged = true;
            }
        }
        if staged {
            self.commit_group();
        }
        if self.slots.iter().any(|s| s.host_enabled) {
            let mut result = backend.disable_vectors();
            if let Err(e) = &result {
                log::error!("MSI-X disable on the device failed: {e}; trying again");
                self.faults.device += 1;
                result = backend.disable_vectors();
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
    }
}
