// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The traits a passthrough device drives: the physical device, the interrupt router and the
//! guest memory map. The VMM plugs in implementations (VFIO and KVM ones are in this crate);
//! tests plug in fakes, so every decision above these calls is tested without a kernel.

use vmm_sys_util::eventfd::EventFd;

/// An error from a backend, boxed so that fakes and real implementations share the traits.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The physical device's MSI-X vectors, as the MSI-X engine ([`crate::MsixEngine`]) needs
/// them: a VMM that keeps its own VFIO device type implements this on it.
pub trait VectorBackend: Send {
    /// Connects MSI-X vector `vector` to `eventfd` (enabling it on the device), or
    /// disconnects it with `None`.
    fn set_vector(&self, vector: u16, eventfd: Option<&EventFd>) -> Result<(), BackendError>;
    /// Disables MSI-X on the device.
    fn disable_vectors(&self) -> Result<(), BackendError>;
    /// Stores the MSI address vector `vector` must use when enabled (proposed
    /// `VFIO_IRQ_SET_DATA_MSI_IOVA`).
    fn prepare_msi_iova(&self, vector: u16, iova: u64) -> Result<(), BackendError>;
    /// Reads the Message Address of vector `vector` in the device's real MSI-X table;
    /// `Ok(None)` when the real table cannot be read (not mappable).
    fn read_table_address(&self, vector: u16) -> Result<Option<u64>, BackendError>;
    /// Writes the two address dwords of vector `vector` in the device's real MSI-X table
    /// (never the data dword).
    fn write_table_address(&self, vector: u16, lo: u32, hi: u32) -> Result<(), BackendError>;
}

/// The physical device, as the whole passthrough device ([`crate::PassthroughDevice`])
/// needs it: its vectors, config space, trapped BAR registers and reset.
pub trait DeviceBackend: VectorBackend {
    /// Reads the device's configuration space.
    fn read_config(&self, offset: u16, buf: &mut [u8]) -> Result<(), BackendError>;
    /// Writes the device's configuration space.
    fn write_config(&self, offset: u16, buf: &[u8]) -> Result<(), BackendError>;
    /// Reads device registers of BAR `bar` at `offset` (the slow, trapped path).
    fn read_bar(&self, bar: u8, offset: u64, buf: &mut [u8]) -> Result<(), BackendError>;
    /// Writes device registers of BAR `bar` at `offset` (the slow, trapped path).
    fn write_bar(&self, bar: u8, offset: u64, buf: &[u8]) -> Result<(), BackendError>;
    /// Resets the device (`VFIO_DEVICE_RESET`). The kernel restores the MSI-X table from its
    /// own messages, so written-through addresses must be written again. Backends that cannot
    /// reset say so.
    fn reset(&self) -> Result<(), BackendError> {
        Err("this backend cannot reset the device".into())
    }
}

/// One MSI route of the VM's interrupt routing table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MsiRoute {
    /// The guest's message address (the vITS doorbell GPA).
    pub address: u64,
    /// The guest's message data (its EventID).
    pub data: u32,
    /// The requester ID the guest's interrupt controller sees (the ITS DeviceID, matching
    /// the FDT `msi-map`), when the platform needs one.
    pub devid: Option<u32>,
}

/// The VM's MSI routing: GSIs, routes, irqfds and direct injection.
///
/// A VM has one routing table shared by all devices (KVM replaces it whole on
/// `KVM_SET_GSI_ROUTING`), so one router serves every device; each device holds the GSIs it
/// allocated.
pub trait MsiRouter: Send {
    /// Allocates a free GSI.
    fn allocate_gsi(&mut self) -> Result<u32, BackendError>;
    /// Returns a GSI (its route must already be removed).
    fn release_gsi(&mut self, gsi: u32);
    /// Applies route changes (`Some` installs or replaces, `None` removes) as ONE update of
    /// the routing table.
    fn set_routes(&mut self, changes: &[(u32, Option<MsiRoute>)]) -> Result<(), BackendError>;
    /// Connects `eventfd` to `gsi` (`KVM_IRQFD`): signals inject the route's message.
    fn assign_irqfd(&mut self, eventfd: &EventFd, gsi: u32) -> Result<(), BackendError>;
    /// Disconnects `eventfd` from `gsi`.
    fn deassign_irqfd(&mut self, eventfd: &EventFd, gsi: u32) -> Result<(), BackendError>;
    /// Injects one message now (`KVM_SIGNAL_MSI`), for pending vectors released by an unmask.
    fn inject(&mut self, route: MsiRoute) -> Result<(), BackendError>;
}

/// The guest physical address space, for mapping device BAR pages straight into the guest.
pub trait GuestMapper: Send {
    /// Maps `len` bytes of host memory at `host` into the guest at `gpa`; returns a handle
    /// for [`GuestMapper::unmap`].
    ///
    /// # Safety
    ///
    /// `host..host + len` must be a live mapping (a device BAR mmap) that stays mapped until
    /// `unmap` of the returned handle has returned.
    unsafe fn map(&mut self, gpa: u64, len: u64, host: *mut u8) -> Result<u32, BackendError>;
    /// Removes a mapping made by [`GuestMapper::map`].
    fn unmap(&mut self, handle: u32) -> Result<(), BackendError>;
}

/// Why an MSI address a device was programmed with does not reach an interrupt doorbell.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RemapError {
    /// The guest's IOMMU does not translate the address for this device (its stage 1 has no
    /// mapping, the stream aborts, the SMMU is disabled with aborting GBPA, ...).
    #[error("the guest IOMMU does not translate {address:#x} for stream {stream:#x}: {reason}")]
    NotTranslated {
        /// The stream (requester) ID.
        stream: u32,
        /// The address the guest programmed (a gIOVA).
        address: u64,
        /// The guest IOMMU's reason.
        reason: String,
    },
    /// The address translates, but not to a doorbell of the VM's interrupt controller.
    #[error("{address:#x} translates to {gpa:#x}, which is no interrupt doorbell")]
    NotADoorbell {
        /// The address the guest programmed.
        address: u64,
        /// Where it translates to.
        gpa: u64,
    },
}

/// MSI address remapping for guests with a virtual IOMMU: the address a guest programs into
/// a device's MSI-X table is then an IOVA of the guest's own (a gIOVA), and the VM's
/// interrupt controller (KVM finds its vITS by guest physical address) needs the doorbell GPA
/// it translates to.
///
/// Shaped like cloud-hypervisor's `DmaRemapping::translate_gva(id, addr)`, so that a VMM's
/// virtual IOMMU implements it directly: `stream` is the requester ID the guest IOMMU sees
/// for the device.
pub trait MsiRemapping: Send + Sync {
    /// Translates the MSI address `address` that device `stream` was programmed with into
    /// the doorbell GPA it reaches, or says why it reaches none.
    fn translate_msi(&self, stream: u32, address: u64) -> Result<u64, RemapError>;
}
