// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The definitions the passthrough crates share, in one place, with no kernel, libc or
//! `vmm-sys-util` dependency, so that the pure crates (`msi-trap`, `doorbell-planner`,
//! `vgic-its`, `vsmmuv3`) and the kernel-facing ones (`iommufd-ioas`, `vfio-cdev`,
//! `vfio-passthrough`) agree on every number:
//!
//! - [`pci`]: configuration space offsets, command bits, capability IDs;
//! - [`msix`]: the MSI-X capability, table entry and PBA layout;
//! - [`gic`]: the GICv3 ITS frame and its `GITS_TRANSLATER` doorbell;
//! - [`smmuv3`]: SMMUv3 command opcodes, event numbers, the nested-STE fields;
//! - [`iova`]: IOVA ranges and the validated `IOMMU_IOAS_IOVA_RANGES` answer;
//! - [`reserved`]: the reserved IOVA regions of an IOMMU group (the sysfs format);
//! - [`msi_window`]: the software MSI window (`IOMMU_RESV_SW_MSI`, and the proposed
//!   user-settable one);
//! - [`igb`]: the test NIC's IDs and the registers the tests drive.
//!
//! ```
//! use hw_defs::{gic, iova::IovaRange, msi_window};
//! let window = IovaRange::from_len(msi_window::LINUX_MSI_IOVA_BASE, msi_window::LINUX_MSI_IOVA_LENGTH).unwrap();
//! // A vITS at 0x7ff0000 puts its doorbell inside the kernel's window: strategy 2.
//! assert!(window.contains(0x7ff_0000 + gic::GITS_TRANSLATER));
//! ```

#![deny(missing_docs)]

pub mod gic;
pub mod igb;
pub mod iova;
pub mod msi_window;
pub mod msix;
pub mod pci;
pub mod reserved;
pub mod smmuv3;
