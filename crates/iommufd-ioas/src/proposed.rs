// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! **Not-yet-upstream UAPI**, kept in this one module, and the probes that tell whether the
//! running kernel has it.
//!
//! Nothing here is in Linux 7.2. The values follow the series posted on the iommu and kvm
//! lists (see the project's `docs/uapi.md`):
//!
//! - `IOMMU_OPTION_SW_MSI_START` (2) and `IOMMU_OPTION_SW_MSI_SIZE` (3) on `IOMMU_OPTION`,
//!   object = the iommufd device ID, set before the device is attached (`EBUSY` after): the
//!   software MSI window of that device, start 1 MiB aligned, size in MiB; `EADDRINUSE` when
//!   the window overlaps another reserved region. The window replaces the driver's
//!   `IOMMU_RESV_SW_MSI` (0x8000000 on Arm) for the device, so the physical ITS doorbell lands
//!   at an IOVA the VMM chose ("iommufd: Allow userspace to set the MSI window", Part-2 v2,
//!   Oct 2025).
//! - `VFIO_IRQ_SET_DATA_MSI_IOVA` (1 << 6) with `VFIO_IRQ_SET_ACTION_PREPARE` (1 << 7) on
//!   `VFIO_DEVICE_SET_IRQS`: one `u64` IOVA per vector, used by vfio-pci as the MSI address
//!   of that vector when it is enabled ("vfio: Allow userspace to specify the address for each
//!   MSI vector", RFC, Nov 2024 / Jan 2025). The `vfio-cdev` crate issues it.
//!
//! Upstream kernels reject all of these: option 2 and 3 with `EOPNOTSUPP`, the two
//! `SET_IRQS` flag bits with `EINVAL`. The probes turn exactly those answers into
//! [`Support::Absent`] and any other failure into an error, so that a broken setup is not
//! mistaken for an old kernel.

use crate::errno::Errno;

/// `IOMMU_OPTION` option ID of the device's software MSI window start (proposed).
pub const IOMMU_OPTION_SW_MSI_START: u32 = 2;
/// `IOMMU_OPTION` option ID of the device's software MSI window size in MiB (proposed).
pub const IOMMU_OPTION_SW_MSI_SIZE: u32 = 3;
/// `VFIO_DEVICE_SET_IRQS` data type: an array of `u64` MSI IOVAs, one per vector (proposed).
pub const VFIO_IRQ_SET_DATA_MSI_IOVA: u32 = 1 << 6;
/// `VFIO_DEVICE_SET_IRQS` action: store per-vector data for a later enable (proposed).
pub const VFIO_IRQ_SET_ACTION_PREPARE: u32 = 1 << 7;

pub use hw_defs::msi_window::{SW_MSI_ALIGN, SwMsiWindow};

/// Whether the running kernel offers a piece of not-yet-upstream UAPI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support<T> {
    /// The kernel understood the request; `T` is what it answered.
    Available(T),
    /// The kernel answered the way an upstream kernel does for an unknown request.
    Absent {
        /// The errno that marked it absent.
        errno: Errno,
    },
}

impl<T> Support<T> {
    /// Whether the kernel offers it.
    pub fn is_available(&self) -> bool {
        matches!(self, Support::Available(_))
    }
}

/// Classifies the answer to a get of a proposed `IOMMU_OPTION`: a value means the kernel has
/// it; `EOPNOTSUPP` (the upstream answer for an unknown option ID) means absent; any other
/// errno is a real failure (for example `ENOENT` for a wrong device ID) and is returned as is.
pub fn classify_option_probe(answer: Result<u64, Errno>) -> Result<Support<u64>, Errno> {
    match answer {
        Ok(v) => Ok(Support::Available(v)),
        Err(e) if e.raw() == libc::EOPNOTSUPP => Ok(Support::Absent { errno: e }),
        Err(e) => Err(e),
    }
}

/// Classifies the answer to the per-vector MSI IOVA probe (`VFIO_DEVICE_SET_IRQS` with
/// `DATA_MSI_IOVA | ACTION_PREPARE` and zero vectors): success means the kernel has it;
/// `EINVAL` (upstream rejects unknown flag bits so) means absent; anything else is a failure.
pub fn classify_set_irqs_probe(answer: Result<(), Errno>) -> Result<Support<()>, Errno> {
    match answer {
        Ok(()) => Ok(Support::Available(())),
        Err(e) if e.raw() == libc::EINVAL => Ok(Support::Absent { errno: e }),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_answers_mean_absent() {
        assert_eq!(
            classify_option_probe(Err(Errno(libc::EOPNOTSUPP))),
            Ok(Support::Absent {
                errno: Errno(libc::EOPNOTSUPP)
            })
        );
        assert_eq!(
            classify_set_irqs_probe(Err(Errno(libc::EINVAL))),
            Ok(Support::Absent {
                errno: Errno(libc::EINVAL)
            })
        );
    }

    #[test]
    fn other_failures_are_not_mistaken_for_absence() {
        assert_eq!(
            classify_option_probe(Err(Errno(libc::ENOENT))),
            Err(Errno(libc::ENOENT))
        );
        assert_eq!(
            classify_set_irqs_probe(Err(Errno(libc::ENOTTY))),
            Err(Errno(libc::ENOTTY))
        );
    }

    #[test]
    fn values_mean_available() {
        assert_eq!(
            classify_option_probe(Ok(0x800_0000)),
            Ok(Support::Available(0x800_0000))
        );
        assert!(classify_set_irqs_probe(Ok(())).unwrap().is_available());
    }
}
