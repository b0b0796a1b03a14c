// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! VFIO cdev device layer for VMMs on iommufd.
//!
//! [`VfioDevice`] opens a device by cdev path or PCI address, binds it to an
//! [`iommufd_ioas::Iommufd`], attaches it to an IOAS or HWPT, and offers what a PCI
//! passthrough device model needs: region info with the full capability chain
//! ([`RegionInfo`], parsed by [`parse_region_caps`], which treats the kernel's blob as hostile),
//! BAR `mmap` ([`RegionMapping`], volatile accessors only), configuration space access, IRQ
//! info, per-vector `VFIO_DEVICE_SET_IRQS` (assign an eventfd to vector *i*, unassign it with
//! -1, disable all), reset, and the proposed per-vector MSI IOVA
//! ([`VfioDevice::prepare_msi_iovas`], [`VfioDevice::probe_msi_iova`]) from
//! `iommufd_ioas::proposed`.
//!
//! Why not `vfio-ioctls`' `VfioDevice`: it walks the region capability chain through raw
//! pointer casts trusting the kernel (no bounds, no loop guard), drops region read/write and
//! reset errors, and enables MSI-X vectors only as a block. This crate keeps the same
//! `vfio-bindings` structures and adds what the passthrough path needs; the ioctl numbers it
//! uses are private in `vfio-ioctls`, so they are declared in `sys.rs` from the bindings'
//! `VFIO_TYPE`/`VFIO_BASE`.
//!
//! A VMM that already holds a VFIO device descriptor (vfio-ioctls' `VfioDevice`, say) uses
//! the same operations through [`DeviceFd`] over that descriptor.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use iommufd_ioas::Iommufd;
//! use vfio_cdev::{IrqIndex, VfioDevice};
//! use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let iommufd = Iommufd::open()?;
//! let mut dev = VfioDevice::open_pci("0000:00:06.0".parse()?)?;
//! dev.bind(&iommufd)?;
//! let ioas = Arc::new(iommufd.alloc_ioas()?);
//! dev.attach_ioas(&ioas)?;
//! // BAR 3's region info, capability chain parsed with bounds and a loop guard.
//! let bar3 = dev.region_info(3)?;
//! println!("BAR3: {} bytes, MSI-X table mappable: {}", bar3.size, bar3.msix_mappable());
//! // MSI-X vector 2 to an eventfd, alone (the other vectors keep their triggers).
//! let efd = EventFd::new(EFD_NONBLOCK)?;
//! dev.set_vector_eventfd(IrqIndex::Msix, 2, Some(&efd))?;
//! // The same through a borrowed descriptor.
//! dev.fd().set_vector_eventfd(IrqIndex::Msix, 2, None)?;
//! # Ok(())
//! # }
//! ```
//!
//! Every error names the ioctl, the device, the object and the errno, for example
//! `VFIO_DEVICE_SET_IRQS eventfd trigger (1 assigned, 0 unassigned) of vfio0 MSI-X vectors
//! 3..4 failed: EINVAL (Invalid argument)`.

#![deny(missing_docs)]

mod attacher;
mod device;
mod error;
mod fd;
mod irq;
mod pci;
mod region;
mod region_caps;
mod sys;

pub use attacher::{AttachedTo, Attacher};
pub use device::{DeviceInfo, MAX_REGION_INFO_LEN, VfioDevice};
pub use error::{Error, Result};
pub use fd::DeviceFd;
pub use irq::{IRQ_SET_HEADER_LEN, IrqIndex, IrqInfo, IrqSet};
pub use pci::{PciAddress, SysRoots};
pub use region::{RegionInfo, RegionMapping};
pub use region_caps::{
    CapChainError, REGION_INFO_HEADER_LEN, RegionCap, SparseMmapArea, parse_region_caps,
};
