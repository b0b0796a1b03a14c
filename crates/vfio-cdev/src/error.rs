// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Errors: one variant per operation, naming the ioctl, the device, the object and the
//! errno.

use std::path::PathBuf;

use iommufd_ioas::Errno;

use crate::region_caps::CapChainError;

/// An error from a VFIO device operation. `device` fields hold the cdev name (`vfio0`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening the cdev failed.
    #[error("open of {} failed: {source}", path.display())]
    Open {
        /// The cdev path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A PCI address string did not parse.
    #[error("{input:?} is not a PCI address (expected [dddd:]bb:dd.f)")]
    BadPciAddress {
        /// What was given.
        input: String,
    },
    /// Reading sysfs failed.
    #[error("read of {} failed: {source}", path.display())]
    Sysfs {
        /// The sysfs path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The PCI device has no VFIO cdev (not bound to vfio-pci, or no `CONFIG_VFIO_DEVICE_CDEV`).
    #[error("PCI device {bdf} has no VFIO cdev under {}: is it bound to vfio-pci?", path.display())]
    NoCdev {
        /// The PCI address.
        bdf: String,
        /// Where the cdev was looked for.
        path: PathBuf,
    },
    /// `VFIO_DEVICE_BIND_IOMMUFD` failed.
    #[error("VFIO_DEVICE_BIND_IOMMUFD of {device} to iommufd fd {iommufd} failed: {errno}")]
    Bind {
        /// The device.
        device: String,
        /// The iommufd descriptor number.
        iommufd: i32,
        /// The kernel's answer.
        errno: Errno,
    },
    /// The device is already bound; a cdev can be bound once for its lifetime.
    #[error("{device} is already bound to an iommufd (device ID {dev_id})")]
    AlreadyBound {
        /// The device.
        device: String,
        /// Its iommufd device ID.
        dev_id: u32,
    },
    /// An operation needs a bound device.
    #[error("{op} on {device}: the device is not bound to an iommufd")]
    NotBound {
        /// The operation.
        op: &'static str,
        /// The device.
        device: String,
    },
    /// The page table belongs to another iommufd than the one the device is bound to.
    #[error("{op} on {device}: page table {pt_id} belongs to another iommufd")]
    ForeignIommufd {
        /// The operation.
        op: &'static str,
        /// The device.
        device: String,
        /// The page table ID.
        pt_id: u32,
    },
    /// `VFIO_DEVICE_ATTACH_IOMMUFD_PT` failed.
    #[error("VFIO_DEVICE_ATTACH_IOMMUFD_PT of {device} to pt {pt_id} failed: {errno}")]
    Attach {
        /// The device.
        device: String,
        /// The IOAS or HWPT ID.
        pt_id: u32,
        /// The kernel's answer.
        errno: Errno,
    },
    /// The device is not attached to a page table.
    #[error("VFIO_DEVICE_DETACH_IOMMUFD_PT of {device}: the device is not attached")]
    NotAttached {
        /// The device.
        device: String,
    },
    /// `VFIO_DEVICE_DETACH_IOMMUFD_PT` failed.
    #[error("VFIO_DEVICE_DETACH_IOMMUFD_PT of {device} failed: {errno}")]
    Detach {
        /// The device.
        device: String,
        /// The kernel's answer.
        errno: Errno,
    },
    /// `VFIO_DEVICE_GET_INFO` failed.
    #[error("VFIO_DEVICE_GET_INFO of {device} failed: {errno}")]
    DeviceInfo {
        /// The device.
        device: String,
        /// The kernel's answer.
        errno: Errno,
    },
    /// A file adopted as already bound ([`crate::VfioDevice::from_bound_file`]) answered
    /// `EINVAL`: the kernel's answer to every ioctl but the bind on an unbound cdev file.
    #[error(
        "{op} of {device} failed: {errno}: the adopted file is not bound to an iommufd \
         (a fresh open of the cdev is unbound; adopt a duplicate of the bound descriptor)"
    )]
    AdoptUnbound {
        /// The operation.
        op: &'static str,
        /// The device.
        device: String,
        /// The kernel's answer.
        errno: Errno,
    },
    /// The device is not a PCI device, and the operation needs one.
    #[error("{op} on {device}: not a PCI device (flags {flags:#x})")]
    NotPci {
        /// The operation.
        op: &'static str,
        /// The device.
        device: String,
        /// Its `VFIO_DEVICE_FLAGS_*`.
        flags: u32,
    },
    /// `VFIO_DEVICE_GET_REGION_INFO` failed.
    #[error("VFIO_DEVICE_GET_REGION_INFO of {device} region {index} failed: {errno}")]
    RegionInfo {
        /// The device.
        device: String,
        /// The region index.
        index: u32,
        /// The kernel's answer.
        errno: Errno,
    },
    /// The kernel's region info reply was malformed.
    #[error("VFIO_DEVICE_GET_REGION_INFO of {device} region {index}: {reason}")]
    RegionInfoReply {
        /// The device.
        device: String,
        /// The region index.
        index: u32,
        /// What was wrong.
        reason: String,
    },
    /// The region's capability chain was malformed.
    #[error(
        "VFIO_DEVICE_GET_REGION_INFO of {device} region {index}: bad capability chain: {source}"
    )]
    RegionCaps {
        /// The device.
        device: String,
        /// The region index.
        index: u32,
        /// What was wrong.
        #[source]
        source: CapChainError,
    },
    /// `VFIO_DEVICE_GET_IRQ_INFO` failed.
    #[error("VFIO_DEVICE_GET_IRQ_INFO of {device} {index} failed: {errno}")]
    IrqInfo {
        /// The device.
        device: String,
        /// The IRQ index.
        index: crate::IrqIndex,
        /// The kernel's answer.
        errno: Errno,
    },
    /// `VFIO_DEVICE_SET_IRQS` failed.
    #[error(
        "VFIO_DEVICE_SET_IRQS {action} of {device} {index} vectors {start}..{end} failed: {errno}",
        end = u64::from(*start) + *count as u64
    )]
    SetIrqs {
        /// The device.
        device: String,
        /// The IRQ index.
        index: crate::IrqIndex,
        /// What was asked.
        action: String,
        /// The first vector.
        start: u32,
        /// How many vectors.
        count: usize,
        /// The kernel's answer.
        errno: Errno,
    },
    /// `VFIO_DEVICE_RESET` failed.
    #[error("VFIO_DEVICE_RESET of {device} failed: {errno}")]
    Reset {
        /// The device.
        device: String,
        /// The kernel's answer.
        errno: Errno,
    },
    /// The device does not support reset (`VFIO_DEVICE_FLAGS_RESET` clear).
    #[error("VFIO_DEVICE_RESET of {device}: the device does not support reset")]
    ResetUnsupported {
        /// The device.
        device: String,
    },
    /// A read or write of a region failed or was short.
    #[error("{op} of {device} region {index} at {offset:#x}+{len:#x} failed: {reason}")]
    RegionAccess {
        /// `"read"` or `"write"`.
        op: &'static str,
        /// The device.
        device: String,
        /// The region index.
        index: u32,
        /// Offset within the region.
        offset: u64,
        /// Bytes asked for.
        len: usize,
        /// What happened (errno or short count).
        reason: String,
    },
    /// An access or mapping was outside the region, misaligned, or not permitted by its
    /// flags or sparse areas.
    #[error("{op} of {device} region {index} at {offset:#x}+{len:#x}: {reason}")]
    Bounds {
        /// The operation.
        op: &'static str,
        /// The device.
        device: String,
        /// The region index.
        index: u32,
        /// Offset within the region.
        offset: u64,
        /// Length.
        len: u64,
        /// Why it was refused.
        reason: String,
    },
    /// `mmap` of a region failed.
    #[error("mmap of {device} region {index} at {offset:#x}+{len:#x} failed: {errno}")]
    Mmap {
        /// The device.
        device: String,
        /// The region index.
        index: u32,
        /// Offset within the region.
        offset: u64,
        /// Length.
        len: u64,
        /// The kernel's answer.
        errno: Errno,
    },
    /// An IOMMU-side operation failed.
    #[error(transparent)]
    Iommu(#[from] iommufd_ioas::Error),
}

impl Error {
    /// The errno the kernel answered with, if this error came from a kernel call.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Bind { errno, .. }
            | Error::Attach { errno, .. }
            | Error::Detach { errno, .. }
            | Error::DeviceInfo { errno, .. }
            | Error::AdoptUnbound { errno, .. }
            | Error::RegionInfo { errno, .. }
            | Error::IrqInfo { errno, .. }
            | Error::SetIrqs { errno, .. }
            | Error::Reset { errno, .. }
            | Error::Mmap { errno, .. } => Some(*errno),
            Error::Open { source, .. } | Error::Sysfs { source, .. } => {
                source.raw_os_error().map(Errno)
            }
            Error::Iommu(e) => e.errno(),
            _ => None,
        }
    }
}

/// A `Result` whose error is [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
