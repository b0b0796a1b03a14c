// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`InterruptGroup`]: a device's MSI-X vectors as a VMM's interrupt manager hands them out,
//! and [`RouterGroup`], the group over a VM-wide [`MsiRouter`].
//!
//! The passthrough device speaks only to its group: it stages each vector's route and mask
//! ([`InterruptGroup::update`]), applies a batch with ONE [`InterruptGroup::commit`] (at most
//! one routing-table update), fires a pending vector with [`InterruptGroup::trigger`], and
//! gives VFIO the vector's eventfd ([`InterruptGroup::notifier`]). That is the shape of
//! cloud-hypervisor's `InterruptSourceGroup` (`update(index, config, masked, set_gsi)`,
//! `set_gsi()`, `trigger(index)`, `notifier(index)`), so a VMM that has one implements this
//! trait in a few dozen lines (`tests/interrupt_group.rs` shows it) and keeps its own
//! routing table: no second writer of `KVM_SET_GSI_ROUTING` exists.
//!
//! For VMMs without an interrupt manager, [`RouterGroup`] implements the trait over a
//! VM-wide [`MsiRouter`]; with [`crate::KvmMsiRouter`] shared as `Arc<Mutex<_>>` every device
//! gets its own group from one routing table that also keeps the VMM's other routes.

use std::sync::Arc;

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::backend::{BackendError, MsiRoute, MsiRouter};

/// A device's MSI-X vectors in the VM's interrupt routing.
///
/// Staged updates take effect at [`commit`](Self::commit). A vector is *delivering* when it
/// has a route and is not masked: an interrupt on its notifier reaches the guest without
/// leaving the kernel. Otherwise its interrupts wait in the notifier (the passthrough device
/// drains them into the PBA and injects them on unmask with [`trigger`](Self::trigger)).
pub trait InterruptGroup: Send {
    /// How many vectors the group serves.
    fn vectors(&self) -> u16;
    /// The eventfd VFIO signals for `vector`, owned by the group for its whole life.
    fn notifier(&self, vector: u16) -> Option<&EventFd>;
    /// Stages `vector`'s route (`None`: no route) and whether it is masked.
    fn update(&mut self, vector: u16, route: Option<MsiRoute>, masked: bool);
    /// Applies every staged update: at most one routing-table update, then the delivery
    /// changes. On failure what did not take stays staged, and the next commit retries it.
    fn commit(&mut self) -> Result<(), BackendError>;
    /// Delivers `vector`'s committed message now (a pending vector released by an unmask).
    fn trigger(&mut self, vector: u16) -> Result<(), BackendError>;
    /// The GSI carrying `vector`'s route, for reports; `None` when the group keeps its
    /// GSIs to itself (the default).
    fn gsi(&self, vector: u16) -> Option<u32> {
        let _ = vector;
        None
    }
}

/// One vector of a [`RouterGroup`].
#[derive(Debug)]
struct Slot {
    eventfd: Arc<EventFd>,
    gsi: Option<u32>,
    /// The route installed for `gsi` (as far as the router confirmed).
    installed: Option<MsiRoute>,
    irqfd: bool,
    /// What the device asked for.
    route: Option<MsiRoute>,
    masked: bool,
    dirty: bool,
}

/// An [`InterruptGroup`] over an [`MsiRouter`]: GSIs allocated per routed vector, one
/// routing update per commit, irqfds assigned to delivering vectors.
///
/// Failures are logged (operation, vector, GSI, errno) and retried: a failed routing update
/// re-sends every live route with the next one; a GSI whose route could not be removed is
/// not released until its removal goes through (the [`MsiRouter::release_gsi`] contract);
/// an irqfd that could not be deassigned keeps its route, so that an interrupt on it never
/// meets a removed route. Dropping the group removes everything it installed.
#[derive(Debug)]
pub struct RouterGroup<R: MsiRouter> {
    router: R,
    slots: Vec<Slot>,
    /// GSIs whose route removal failed: removed and released with the next update.
    stale_gsis: Vec<u32>,
    /// After a failed routing update: send every live route again with the next one.
    resync: bool,
    failures: u64,
    /// The vectors staged since the last commit (each once: its `dirty` flag), so that a
    /// commit costs what changed, not the group's size.
    dirty: Vec<u16>,
    // Buffers of `commit`, kept so that a commit does not allocate.
    /// Route changes of the routing update being built.
    changes: Vec<(u32, Option<MsiRoute>)>,
    /// GSIs released once that routing update went through.
    release: Vec<u32>,
    /// Vectors whose irqfd is assigned after that routing update.
    to_assign: Vec<u16>,
}

impl<R: MsiRouter> RouterGroup<R> {
    /// A group of `vectors` vectors over `router`, each with a fresh non-blocking eventfd.
    pub fn new(router: R, vectors: u16) -> std::io::Result<Self> {
        let mut slots = Vec::with_capacity(usize::from(vectors));
        for _ in 0..vectors {
            slots.push(Slot {
                eventfd: Arc::new(EventFd::new(EFD_NONBLOCK)?),
                gsi: None,
                installed: None,
                irqfd: false,
                route: None,
                masked: true,
                dirty: false,
            });
        }
        Ok(RouterGroup {
            router,
            slots,
            stale_gsis: Vec::new(),
            resync: false,
            failures: 0,
            dirty: Vec::new(),
            changes: Vec::new(),
            release: Vec::new(),
            to_assign: Vec::new(),
        })
    }

    /// The router (for reports and tests).
    pub fn router(&self) -> &R {
        &self.router
    }

    /// Whether `vector`'s irqfd is assigned.
    pub fn delivering(&self, vector: u16) -> bool {
        self.slots.get(usize::from(vector)).is_some_and(|s| s.irqfd)
    }

    /// Router, irqfd and injection calls that failed so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Stages `vector` again for the next commit (a call that failed is retried then).
    fn mark_dirty(&mut self, vector: u16) {
        let slot = &mut self.slots[usize::from(vector)];
        if !slot.dirty {
            slot.dirty = true;
            self.dirty.push(vector);
        }
    }

    /// Deassigns vector `i`'s irqfd if it has one; on failure the books keep it assigned.
    fn deassign(&mut self, i: usize) -> bool {
        let slot = &mut self.slots[i];
        let (true, Some(gsi)) = (slot.irqfd, slot.gsi) else {
            return true;
        };
        match self.router.deassign_irqfd(&slot.eventfd, gsi) {
            Ok(()) => {
                slot.irqfd = false;
                true
            }
            Err(e) => {
                log::error!("MSI-X vector {i}: irqfd deassign from GSI {gsi} failed: {e}");
                self.failures += 1;
                false
            }
        }
    }

    /// One routing update of `self.changes`, preceded after a failed update by every live
    /// route and followed by the removal of GSIs whose removal failed before; on success the
    /// GSIs in `self.release` and those go back to the router. Leaves both buffers empty.
    fn push_routes(&mut self) -> bool {
        if self.resync {
            let live: Vec<(u32, Option<MsiRoute>)> = self
                .slots
                .iter()
                .filter_map(|s| Some((s.gsi?, Some(s.installed?))))
                .collect();
            self.changes.splice(0..0, live);
        }
        self.changes
            .extend(self.stale_gsis.iter().map(|g| (*g, None)));
        let ok = if self.changes.is_empty() {
            true
        } else {
            match self.router.set_routes(&self.changes) {
                Ok(()) => {
                    self.resync = false;
                    for &gsi in self.release.iter().chain(self.stale_gsis.iter()) {
                        self.router.release_gsi(gsi);
                    }
                    self.stale_gsis.clear();
                    true
                }
                Err(e) => {
                    let mut gsis: Vec<u32> = self.changes.iter().map(|(g, _)| *g).collect();
                    gsis.sort_unstable();
                    gsis.dedup();
                    log::error!("routing update of GSIs {gsis:?} failed: {e}");
                    self.failures += 1;
                    self.resync = true;
                    self.stale_gsis.extend_from_slice(&self.release);
                    false
                }
            }
        };
        self.changes.clear();
        self.release.clear();
        ok
    }
}

impl<R: MsiRouter> InterruptGroup for RouterGroup<R> {
    fn vectors(&self) -> u16 {
        self.slots.len() as u16
    }

    fn notifier(&self, vector: u16) -> Option<&EventFd> {
        self.slots
            .get(usize::from(vector))
            .map(|s| s.eventfd.as_ref())
    }

    fn update(&mut self, vector: u16, route: Option<MsiRoute>, masked: bool) {
        if let Some(slot) = self.slots.get_mut(usize::from(vector)) {
            slot.route = route;
            slot.masked = masked;
            if !slot.dirty {
                slot.dirty = true;
                self.dirty.push(vector);
            }
        }
    }

    fn commit(&mut self) -> Result<(), BackendError> {
        let before = self.failures;
        self.changes.clear();
        self.release.clear();
        self.to_assign.clear();
        // Vectors staged again below (a call failed) land after the first `staged` entries
        // and wait for the next commit.
        let staged = self.dirty.len();
        for k in 0..staged {
            let vector = self.dirty[k];
            let i = usize::from(vector);
            self.slots[i].dirty = false;
            let deliver = self.slots[i].route.is_some() && !self.slots[i].masked;
            if !deliver && !self.deassign(i) {
                // Retried at the next commit; the route stays under the irqfd.
                self.mark_dirty(vector);
                continue;
            }
            match self.slots[i].route {
                Some(route) => {
                    let gsi = match self.slots[i].gsi {
                        Some(g) => g,
                        None => match self.router.allocate_gsi() {
                            Ok(g) => {
                                self.slots[i].gsi = Some(g);
                                g
                            }
                            Err(e) => {
                                log::error!("MSI-X vector {i}: no GSI: {e}");
                                self.failures += 1;
                                self.mark_dirty(vector);
                                continue;
                            }
                        },
                    };
                    let slot = &mut self.slots[i];
                    if slot.installed != Some(route) {
                        self.changes.push((gsi, Some(route)));
                        slot.installed = Some(route);
                    }
                    if deliver && !slot.irqfd {
                        self.to_assign.push(vector);
                    }
                }
                None => {
                    let slot = &mut self.slots[i];
                    if let Some(gsi) = slot.gsi.take() {
                        self.changes.push((gsi, None));
                        self.release.push(gsi);
                        slot.installed = None;
                    }
                }
            }
        }
        self.dirty.drain(..staged);
        // ONE routing-table update for the whole batch.
        self.push_routes();
        for k in 0..self.to_assign.len() {
            let vector = self.to_assign[k];
            let slot = &mut self.slots[usize::from(vector)];
            let Some(gsi) = slot.gsi else { continue };
            match self.router.assign_irqfd(&slot.eventfd, gsi) {
                Ok(()) => slot.irqfd = true,
                Err(e) => {
                    log::error!("MSI-X vector {vector}: irqfd assign to GSI {gsi} failed: {e}");
                    self.failures += 1;
                    self.mark_dirty(vector);
                }
            }
        }
        if self.failures == before {
            Ok(())
        } else {
            Err(format!("{} interrupt routing calls failed", self.failures - before).into())
        }
    }

    fn gsi(&self, vector: u16) -> Option<u32> {
        self.slots.get(usize::from(vector)).and_then(|s| s.gsi)
    }

    fn trigger(&mut self, vector: u16) -> Result<(), BackendError> {
        let i = usize::from(vector);
        let Some(route) = self.slots.get(i).and_then(|s| s.installed.or(s.route)) else {
            return Err(format!("MSI-X vector {vector}: no route to deliver").into());
        };
        self.router.inject(route).map_err(|e| {
            log::error!("MSI-X vector {vector}: pending delivery failed: {e}");
            self.failures += 1;
            e
        })
    }
}

impl<R: MsiRouter> Drop for RouterGroup<R> {
    /// Removes everything the group installed: irqfds (each tried twice), routes (one
    /// update, retried once), GSIs. What still fails is reported and left to the VM's
    /// teardown; a GSI whose irqfd stayed keeps its route.
    fn drop(&mut self) {
        for i in 0..self.slots.len() {
            if !self.deassign(i) {
                self.deassign(i);
            }
        }
        self.changes.clear();
        self.release.clear();
        for slot in &mut self.slots {
            if slot.irqfd {
                continue;
            }
            if let Some(gsi) = slot.gsi.take() {
                self.changes.push((gsi, None));
                self.release.push(gsi);
                slot.installed = None;
            }
        }
        // The resync is moot: every route is going.
        self.resync = false;
        // A failed update leaves the GSIs in `stale_gsis`: one retry removes them.
        if !self.push_routes() && !self.push_routes() {
            log::error!(
                "GSIs {:?} stay allocated: their routes could not be removed",
                self.stale_gsis
            );
        }
    }
}
