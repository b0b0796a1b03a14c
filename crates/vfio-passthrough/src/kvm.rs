// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! KVM implementations of [`MsiRouter`] and [`GuestMapper`], and the KVM VFIO device
//! ([`KvmVfioDevice`]) a VMM registers its VFIO files with.
//!
//! The router keeps the VM's whole MSI routing table (KVM replaces the table on every
//! `KVM_SET_GSI_ROUTING`), so one router serves all devices of a VM: share it as
//! `Arc<Mutex<KvmMsiRouter>>` (which implements [`MsiRouter`] too).

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    KVM_DEV_VFIO_FILE, KVM_DEV_VFIO_FILE_ADD, KVM_DEV_VFIO_FILE_DEL, KVM_IRQ_ROUTING_MSI,
    KVM_MSI_VALID_DEVID, KvmIrqRouting, kvm_create_device, kvm_device_attr,
    kvm_device_type_KVM_DEV_TYPE_VFIO, kvm_irq_routing_entry, kvm_irq_routing_entry__bindgen_ty_1,
    kvm_irq_routing_msi, kvm_irq_routing_msi__bindgen_ty_1, kvm_msi, kvm_userspace_memory_region,
};
use kvm_ioctls::{DeviceFd, VmFd};
use vmm_sys_util::eventfd::EventFd;

use crate::backend::{BackendError, GuestMapper, MsiRoute, MsiRouter};
use crate::group::RouterGroup;

/// The interrupt group of a device over the VM-wide KVM router.
pub type KvmInterruptGroup = RouterGroup<Arc<Mutex<KvmMsiRouter>>>;

/// The VM's KVM VFIO device (`KVM_DEV_TYPE_VFIO`): VMMs add every VFIO file they pass
/// through (`KVM_DEV_VFIO_FILE_ADD`), so that KVM knows the VM has assigned devices (on x86
/// it then honours guest cache attributes for non-coherent DMA; everywhere it holds a
/// reference to the file for as long as it is added). One per VM.
#[derive(Debug)]
pub struct KvmVfioDevice {
    fd: DeviceFd,
    /// The raw descriptors added and not deleted yet, for reports.
    files: Vec<i32>,
}

impl KvmVfioDevice {
    /// Creates the VM's KVM VFIO device (`KVM_CREATE_DEVICE` of `KVM_DEV_TYPE_VFIO`).
    pub fn new(vm: &VmFd) -> Result<Self, BackendError> {
        let mut d = kvm_create_device {
            type_: kvm_device_type_KVM_DEV_TYPE_VFIO,
            fd: 0,
            flags: 0,
        };
        let fd = vm
            .create_device(&mut d)
            .map_err(|e| format!("KVM_CREATE_DEVICE of KVM_DEV_TYPE_VFIO failed: {e}"))?;
        Ok(KvmVfioDevice {
            fd,
            files: Vec::new(),
        })
    }

    fn file_attr(&self, attr: u32, file: BorrowedFd<'_>) -> Result<(), BackendError> {
        let raw: i32 = file.as_raw_fd();
        let a = kvm_device_attr {
            flags: 0,
            group: KVM_DEV_VFIO_FILE,
            attr: u64::from(attr),
            // The kernel reads one `int32_t` descriptor from this address during the call;
            // `raw` outlives it.
            addr: &raw as *const i32 as u64,
        };
        self.fd.set_device_attr(&a).map_err(|e| e.into())
    }

    /// Adds a VFIO file (a device cdev, or a group) to the VM (`KVM_DEV_VFIO_FILE_ADD`).
    pub fn add(&mut self, file: BorrowedFd<'_>) -> Result<(), BackendError> {
        let raw = file.as_raw_fd();
        self.file_attr(KVM_DEV_VFIO_FILE_ADD, file)
            .map_err(|e| format!("KVM_DEV_VFIO_FILE_ADD of fd {raw} failed: {e}"))?;
        self.files.push(raw);
        Ok(())
    }

    /// Removes a VFIO file added before (`KVM_DEV_VFIO_FILE_DEL`), before the file is closed
    /// or the device goes.
    pub fn remove(&mut self, file: BorrowedFd<'_>) -> Result<(), BackendError> {
        let raw = file.as_raw_fd();
        self.file_attr(KVM_DEV_VFIO_FILE_DEL, file)
            .map_err(|e| format!("KVM_DEV_VFIO_FILE_DEL of fd {raw} failed: {e}"))?;
        self.files.retain(|f| *f != raw);
        Ok(())
    }

    /// How many files are added now.
    pub fn files(&self) -> usize {
        self.files.len()
    }
}

/// The routing table size KVM accepts (`KVM_MAX_IRQ_ROUTES`).
pub const KVM_MAX_IRQ_ROUTES: u32 = 4096;

/// The KVM routing entry of an MSI route (`KVM_IRQ_ROUTING_MSI`, with
/// `KVM_MSI_VALID_DEVID` when the route carries a DeviceID, as the arm64 vITS needs).
pub fn msi_entry(gsi: u32, route: &MsiRoute) -> kvm_irq_routing_entry {
    kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        flags: if route.devid.is_some() {
            KVM_MSI_VALID_DEVID
        } else {
            0
        },
        pad: 0,
        u: kvm_irq_routing_entry__bindgen_ty_1 {
            msi: kvm_irq_routing_msi {
                address_lo: route.address as u32,
                address_hi: (route.address >> 32) as u32,
                data: route.data,
                __bindgen_anon_1: kvm_irq_routing_msi__bindgen_ty_1 {
                    devid: route.devid.unwrap_or(0),
                },
            },
        },
    }
}

/// Checks that the VMM's own routing entries stay out of the router's GSI range.
fn check_other_routes(
    entries: &[kvm_irq_routing_entry],
    first_gsi: u32,
) -> Result<(), BackendError> {
    match entries.iter().find(|e| e.gsi >= first_gsi) {
        Some(e) => Err(format!(
            "routing entry for GSI {} is in the range the router allocates from ({first_gsi}..)",
            e.gsi
        )
        .into()),
        None => Ok(()),
    }
}

/// The VM-wide MSI router over a KVM VM.
#[derive(Debug)]
pub struct KvmMsiRouter {
    vm: Arc<VmFd>,
    /// Entries the VMM wants kept in every table it sets (for example irqchip routes).
    base: Vec<kvm_irq_routing_entry>,
    routes: BTreeMap<u32, MsiRoute>,
    allocated: std::collections::BTreeSet<u32>,
    first_gsi: u32,
    /// Counts of `KVM_SET_GSI_ROUTING` calls, for reports and tests.
    table_updates: u64,
}

impl KvmMsiRouter {
    /// A router that allocates GSIs from `first_gsi` up to `KVM_MAX_IRQ_ROUTES` and keeps
    /// `base` entries (GSIs below `first_gsi`) in every table.
    pub fn new(vm: Arc<VmFd>, first_gsi: u32, base: Vec<kvm_irq_routing_entry>) -> Self {
        KvmMsiRouter {
            vm,
            base,
            routes: BTreeMap::new(),
            allocated: Default::default(),
            first_gsi,
            table_updates: 0,
        }
    }

    /// A device's interrupt group over the shared router: every device of the VM gets its
    /// own group, and all of them write the one routing table this router keeps.
    pub fn group(router: &Arc<Mutex<Self>>, vectors: u16) -> std::io::Result<KvmInterruptGroup> {
        RouterGroup::new(Arc::clone(router), vectors)
    }

    /// Replaces the VMM's own entries (its irqchip routes, or MSI routes it manages itself)
    /// and pushes the table, so that the VMM's routes and the devices' live in one table with
    /// one writer. Every entry's GSI must lie below the first GSI this router allocates.
    pub fn set_other_routes(
        &mut self,
        entries: Vec<kvm_irq_routing_entry>,
    ) -> Result<(), BackendError> {
        check_other_routes(&entries, self.first_gsi)?;
        let old = std::mem::replace(&mut self.base, entries);
        self.push_table().inspect_err(|_| self.base = old)
    }

    /// How many routing tables were pushed to KVM.
    pub fn table_updates(&self) -> u64 {
        self.table_updates
    }

    /// The current MSI routes by GSI.
    pub fn routes(&self) -> &BTreeMap<u32, MsiRoute> {
        &self.routes
    }

    fn push_table(&mut self) -> Result<(), BackendError> {
        let mut table = KvmIrqRouting::new(0).map_err(|e| format!("routing table: {e:?}"))?;
        for e in &self.base {
            table
                .push(*e)
                .map_err(|e| format!("routing table: {e:?}"))?;
        }
        for (gsi, route) in &self.routes {
            table
                .push(msi_entry(*gsi, route))
                .map_err(|e| format!("routing table: {e:?}"))?;
        }
        self.vm.set_gsi_routing(&table).map_err(|e| {
            format!(
                "KVM_SET_GSI_ROUTING of {} entries failed: {e}",
                self.base.len() + self.routes.len()
            )
        })?;
        self.table_updates += 1;
        Ok(())
    }
}

impl MsiRouter for KvmMsiRouter {
    fn allocate_gsi(&mut self) -> Result<u32, BackendError> {
        let gsi = (self.first_gsi..KVM_MAX_IRQ_ROUTES)
            .find(|g| !self.allocated.contains(g))
            .ok_or("all GSIs are in use")?;
        self.allocated.insert(gsi);
        Ok(gsi)
    }

    fn release_gsi(&mut self, gsi: u32) {
        self.allocated.remove(&gsi);
    }

    fn set_routes(&mut self, changes: &[(u32, Option<MsiRoute>)]) -> Result<(), BackendError> {
        for (gsi, route) in changes {
            match route {
                Some(r) => {
                    self.routes.insert(*gsi, *r);
                }
                None => {
                    self.routes.remove(gsi);
                }
            }
        }
        self.push_table()
    }

    fn assign_irqfd(&mut self, eventfd: &EventFd, gsi: u32) -> Result<(), BackendError> {
        self.vm
            .register_irqfd(eventfd, gsi)
            .map_err(|e| format!("KVM_IRQFD assign of GSI {gsi} failed: {e}").into())
    }

    fn deassign_irqfd(&mut self, eventfd: &EventFd, gsi: u32) -> Result<(), BackendError> {
        self.vm
            .unregister_irqfd(eventfd, gsi)
            .map_err(|e| format!("KVM_IRQFD deassign of GSI {gsi} failed: {e}").into())
    }

    fn inject(&mut self, route: MsiRoute) -> Result<(), BackendError> {
        let msi = kvm_msi {
            address_lo: route.address as u32,
            address_hi: (route.address >> 32) as u32,
            data: route.data,
            flags: if route.devid.is_some() {
                KVM_MSI_VALID_DEVID
            } else {
                0
            },
            devid: route.devid.unwrap_or(0),
            pad: [0; 12],
        };
        self.vm
            .signal_msi(msi)
            .map(|_| ())
            .map_err(|e| format!("KVM_SIGNAL_MSI to {:#x} failed: {e}", route.address).into())
    }
}

/// A router shared by the devices of one VM.
impl<T: MsiRouter> MsiRouter for Arc<Mutex<T>> {
    fn allocate_gsi(&mut self) -> Result<u32, BackendError> {
        self.lock()
            .map_err(|_| "router lock poisoned")?
            .allocate_gsi()
    }
    fn release_gsi(&mut self, gsi: u32) {
        if let Ok(mut r) = self.lock() {
            r.release_gsi(gsi)
        }
    }
    fn set_routes(&mut self, changes: &[(u32, Option<MsiRoute>)]) -> Result<(), BackendError> {
        self.lock()
            .map_err(|_| "router lock poisoned")?
            .set_routes(changes)
    }
    fn assign_irqfd(&mut self, eventfd: &EventFd, gsi: u32) -> Result<(), BackendError> {
        self.lock()
            .map_err(|_| "router lock poisoned")?
            .assign_irqfd(eventfd, gsi)
    }
    fn deassign_irqfd(&mut self, eventfd: &EventFd, gsi: u32) -> Result<(), BackendError> {
        self.lock()
            .map_err(|_| "router lock poisoned")?
            .deassign_irqfd(eventfd, gsi)
    }
    fn inject(&mut self, route: MsiRoute) -> Result<(), BackendError> {
        self.lock()
            .map_err(|_| "router lock poisoned")?
            .inject(route)
    }
}

/// Maps device BAR pages into the guest as KVM memory slots.
#[derive(Debug)]
pub struct KvmSlotMapper {
    vm: Arc<VmFd>,
    slots: std::ops::Range<u32>,
    used: BTreeMap<u32, (u64, u64)>,
}

impl KvmSlotMapper {
    /// A mapper that uses KVM memory slots in `slots` (keep them apart from the VMM's RAM
    /// slots).
    pub fn new(vm: Arc<VmFd>, slots: std::ops::Range<u32>) -> Self {
        KvmSlotMapper {
            vm,
            slots,
            used: BTreeMap::new(),
        }
    }

    /// The slots in use: slot -> (gpa, len).
    pub fn used(&self) -> &BTreeMap<u32, (u64, u64)> {
        &self.used
    }
}

impl GuestMapper for KvmSlotMapper {
    unsafe fn map(&mut self, gpa: u64, len: u64, host: *mut u8) -> Result<u32, BackendError> {
        let slot = self
            .slots
            .clone()
            .find(|s| !self.used.contains_key(s))
            .ok_or("no free KVM memory slot")?;
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: len,
            userspace_addr: host as u64,
        };
        // SAFETY: the caller guarantees `host..host + len` stays mapped until `unmap` of this
        // slot; the slot is free (not in `used`) so no existing guest memory is replaced.
        unsafe { self.vm.set_user_memory_region(region) }.map_err(|e| {
            format!("KVM_SET_USER_MEMORY_REGION slot {slot} at {gpa:#x}+{len:#x} failed: {e}")
        })?;
        self.used.insert(slot, (gpa, len));
        Ok(slot)
    }

    fn unmap(&mut self, slot: u32) -> Result<(), BackendError> {
        let (gpa, _) = self
            .used
            .get(&slot)
            .copied()
            .ok_or_else(|| format!("slot {slot} is not mapped"))?;
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: 0,
            userspace_addr: 0,
        };
        // SAFETY: a zero-sized region deletes slot `slot`, which this mapper created; no
        // memory is handed to KVM.
        unsafe { self.vm.set_user_memory_region(region) }
            .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION delete of slot {slot} failed: {e}"))?;
        self.used.remove(&slot);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_routes_stay_below_the_allocated_range() {
        let route = MsiRoute {
            address: 0x800_0040,
            data: 1,
            devid: None,
        };
        assert!(check_other_routes(&[msi_entry(0, &route), msi_entry(31, &route)], 32).is_ok());
        let err = check_other_routes(&[msi_entry(3, &route), msi_entry(32, &route)], 32)
            .unwrap_err()
            .to_string();
        assert!(err.contains("GSI 32"), "{err}");
        assert!(check_other_routes(&[], 0).is_ok());
    }

    #[test]
    fn msi_entry_layout() {
        let e = msi_entry(
            40,
            &MsiRoute {
                address: 0x1_0800_0040,
                data: 7,
                devid: Some(8),
            },
        );
        assert_eq!(e.gsi, 40);
        assert_eq!(e.type_, 2);
        assert_eq!(e.flags, 1);
        // SAFETY: `msi` is the variant just written.
        let msi = unsafe { e.u.msi };
        assert_eq!(
            (msi.address_lo, msi.address_hi, msi.data),
            (0x0800_0040, 1, 7)
        );
        // SAFETY: `devid` is the variant just written.
        assert_eq!(unsafe { msi.__bindgen_anon_1.devid }, 8);
        let e = msi_entry(
            1,
            &MsiRoute {
                address: 0,
                data: 0,
                devid: None,
            },
        );
        assert_eq!(e.flags, 0);
    }
}
