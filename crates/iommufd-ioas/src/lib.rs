// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Safe iommufd IO address space management for VMMs.
//!
//! This crate sits on `iommufd-ioctls` and `iommufd-bindings` and gives a VMM what it needs
//! to give a passed-through device DMA access to guest memory through `/dev/iommu`:
//!
//! - [`Iommufd`]: open `/dev/iommu` or adopt a descriptor; `IOMMU_OPTION` get/set;
//!   `IOMMU_GET_HW_INFO` ([`HwInfo`]).
//! - [`Ioas`]: map guest memory at IOVA = GPA from a `vm-memory` region
//!   ([`Ioas::map_guest_memory`]) or a file/memfd ([`Ioas::map_file`]), unmap, copy between
//!   IOASes, query the allowed IOVA ranges ([`Ioas::iova_ranges`], whose
//!   [`IovaRanges::holes`] are the reserved windows, the SMMUv3 software MSI window among
//!   them) and pin ranges with [`Ioas::allow_iovas`]. Raw user addresses only go through the
//!   `unsafe` [`Ioas::map_user`], whose contract is stated.
//! - [`Hwpt`], [`Viommu`], [`Vdevice`]: paging, nest-parent and nested HWPTs, vIOMMUs and
//!   vDEVICEs. Every object is RAII (destroyed with `IOMMU_DESTROY` on drop, or explicitly
//!   with `destroy`, which hands the object back on failure) and holds its parent, so the
//!   kernel's reference order cannot be broken from safe code.
//! - Nesting (a guest-owned stage 1 over the VMM's stage 2): [`Hwpt::alloc_nest_parent`],
//!   [`Viommu`] and [`Vdevice`], nested HWPTs from a checked guest STE
//!   ([`Hwpt::alloc_nested_smmuv3`], [`smmuv3::VSte`]), batched invalidation of the guest's
//!   TLB and CD caches ([`Viommu::invalidate`] with [`smmuv3::SmmuV3Command`]s), the
//!   [`Veventq`] that delivers the guest's faults, the SMMU's decoded ID registers
//!   ([`smmuv3::SmmuV3Idr`]), and [`probe_viommu`], which says whether the kernel gives a
//!   device a vIOMMU and why not.
//! - [`IommuGroup`]: the typed reserved regions of a device's IOMMU group from sysfs.
//! - [`proposed`]: the not-yet-upstream UAPI (`IOMMU_OPTION_SW_MSI_START`/`SIZE`, the VFIO
//!   per-vector MSI IOVA) in one labelled module, and [`Iommufd::probe_sw_msi_window`], which
//!   tells whether the running kernel has it.
//!
//! Every error names the ioctl, the object or range, and the errno, for example
//! `IOMMU_IOAS_MAP of 0x8000000+0x200000 into IOAS 1 failed: EINVAL (Invalid argument)`.
//!
//! Binding and attaching a VFIO device to an IOAS is the `vfio-cdev` crate's job.
//!
//! # Example
//!
//! ```no_run
//! use iommufd_ioas::{Access, Iommufd, IovaRange, MapTarget};
//! use vm_memory::{GuestAddress, GuestMemoryMmap};
//!
//! let iommufd = Iommufd::open()?;
//! let ioas = iommufd.alloc_ioas()?;
//! // Keep the doorbell window free whatever device gets attached later.
//! ioas.allow_iovas(&[IovaRange::new(0x4000_0000, 0xffff_ffff).unwrap()])?;
//! let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x4000_0000), 1 << 28)])
//!     .expect("guest memory");
//! ioas.map_guest_memory(&mem, Access::READ_WRITE)?;
//! // ... attach a device (vfio-cdev), run the guest ...
//! ioas.unmap_all()?;
//! # Ok::<(), iommufd_ioas::Error>(())
//! ```

#![deny(missing_docs)]

mod errno;
mod error;
mod hw_info;
mod hwpt;
mod ioas;
mod iommufd;
mod iova;
pub mod nesting;
mod object;
mod option;
pub mod proposed;
mod reserved;
pub mod smmuv3;
mod sys;
mod veventq;

pub use errno::Errno;
pub use error::{Error, Result};
pub use hw_info::{HwInfo, HwInfoData};
pub use hwpt::{Hwpt, HwptFlags, MAX_INVALIDATION_BATCH, Vdevice, Viommu, ViommuType};
pub use ioas::{Access, Ioas, MAX_IOVA_RANGES, MapTarget};
pub use iommufd::{IOMMUFD_PATH, Iommufd};
pub use iova::{IovaRange, IovaRanges, IovaRangesError};
pub use nesting::{ViommuProbe, ViommuRefusal, probe_viommu};
pub use object::DestroyError;
pub use option::IommuOption;
pub use reserved::{
    IommuGroup, MAX_RESERVED_REGIONS, ReservedKind, ReservedRegion, ReservedRegionsError,
    parse_reserved_regions,
};
pub use veventq::{
    MAX_DEPTH as VEVENTQ_MAX_DEPTH, READ_BUFFER_LEN, Vevent, Veventq, parse_vevents,
};
