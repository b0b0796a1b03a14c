// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Errors: one variant per operation, each naming the ioctl, the object and the errno.

use std::path::PathBuf;

use crate::errno::Errno;

/// Formats an optional IOVA: `0x1000` or `auto` when the kernel chooses it.
pub(crate) struct IovaFmt(pub Option<u64>);

impl std::fmt::Display for IovaFmt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(iova) => write!(f, "{iova:#x}"),
            None => f.write_str("auto"),
        }
    }
}

/// An error from an iommufd operation.
///
/// Kernel failures carry the [`Errno`]; validation failures detected before any ioctl is
/// issued are [`Error::InvalidArgument`]; replies from the kernel that break the UAPI contract
/// (which this crate treats as hostile input) are [`Error::KernelReply`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening `/dev/iommu` (or another path) failed.
    #[error("open of {} failed: {source}", path.display())]
    Open {
        /// The path that was opened.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `IOMMU_DESTROY` failed.
    #[error("IOMMU_DESTROY of {kind} {id} failed: {errno}")]
    Destroy {
        /// What kind of object it was.
        kind: &'static str,
        /// The object ID.
        id: u32,
        /// The kernel's answer.
        errno: Errno,
    },
    /// `IOMMU_IOAS_ALLOC` failed.
    #[error("IOMMU_IOAS_ALLOC failed: {errno}")]
    IoasAlloc {
        /// The kernel's answer.
        errno: Errno,
    },
    /// `IOMMU_IOAS_MAP` failed.
    #[error("IOMMU_IOAS_MAP of {}+{length:#x} into IOAS {ioas} failed: {errno}", IovaFmt(*iova))]
    IoasMap {
        /// The IOAS ID.
        ioas: u32,
        /// The fixed IOVA, or `None` when the kernel was asked to choose.
        iova: Option<u64>,
        /// The length in bytes.
        length: u64,
        /// The kernel's answer.
        errno: Errno,
    },
    /// `IOMMU_IOAS_MAP_FILE` failed.
    #[error(
        "IOMMU_IOAS_MAP_FILE of fd {fd} offset {offset:#x} at {}+{length:#x} into IOAS {ioas} failed: {errno}",
        IovaFmt(*iova)
    )]
    IoasMapFile {
        /// The IOAS ID.
        ioas: u32,
        /// The file descriptor.
        fd: i32,
        /// The offset into the file.
        offset: u64,
        /// The fixed IOVA, or `None` when the kernel was asked to choose.
        iova: Option<u64>,
        /// The length in bytes.
        length: u64,
        /// The kernel's answer.
        errno: Errno,
    },
    /// `IOMMU_IOAS_UNMAP` failed.
    #[error("IOMMU_IOAS_UNMAP of {iova:#x}+{length:#x} from IOAS {ioas} failed: {errno}")]
    IoasUnmap {
        /// The IOAS ID.
        ioas: u32,
        /// The first IOVA.
        iova: u64,
        /// The length in bytes.
        length: u64,
        /// The kernel's answer.
        errno: Errno,
    },
    /// `IOMMU_IOAS_COPY` failed.
    #[error(
        "IOMMU_IOAS_COPY of {src_iova:#x}+{length:#x} from IOAS {src_ioas} to {} in IOAS {dst_ioas} failed: {errno}",
        IovaFmt(*dst_iova)
    )]
    IoasCopy {
        /// The source IOAS ID.
        src_ioas: u32,
        /// The destination IOAS ID.
        dst_ioas: u32,
        /// The source IOVA.
        src_iova: u64,
        /// The destination IOVA, or `None` when the kernel was asked to choose.
        dst_iova: Option<u64>,
        /// The length in bytes.
        length: u64,
        /// The kernel's answer.
        errno: Errno,
    },
    /// `IOMMU_IOAS_IOVA_RANGES` failed.
    #[error("IOMMU_IOAS_IOVA_RANGES of IOAS {ioas} failed: {errno}")]
    IovaRanges {
        /// The IOAS ID.
        ioas: u32,
        /// The kernel's answer.
        errno: Errno,
    },
    /// `IOMMU_IOAS_ALLOW_IOVAS` failed.
    #[error("IOMMU_IOAS_ALLOW_IOVAS of {count} ranges on IOAS {ioas} failed: {errno}")]
    AllowIovas {
        /// The IOAS ID.
        ioas: u32,
        /// How many ranges were passed.
        count: usize,
        /// The kernel's answer.
        errno: Errno,
    },
    /// `IOMMU_OPTION` failed.
    #[error("IOMMU_OPTION {op} of option {option} on object {object_id} failed: {errno}")]
    Option {
        /// `"get"` or `"set"` (with the value).
        op: String,
        /// The option, by name.
        option: crate::option::IommuOption,
        /// The object ID (0 for global options).
        object_id: u32,
        /// The kernel's answer.
        errno: Errno,
    },
    /// `IOMMU_HWPT_ALLOC` failed.
    #[error(
        "IOMMU_HWPT_ALLOC for device {dev_id} on pt {pt_id} with flags {flags:#x} failed: {errno}"
    )]
    HwptAlloc {
        /// The iommufd device ID.
        dev_id: u32,
        /// The IOAS (or parent HWPT) ID.
        pt_id: u32,
        /// The allocation flags.
        flags: u32,
        /// The kernel's answer.
        errno: Errno,
    },
    /// `IOMMU_VIOMMU_ALLOC` failed.
    #[error(
        "IOMMU_VIOMMU_ALLOC of type {viommu_type} for device {dev_id} on HWPT {hwpt_id} failed: {errno}"
    )]
    ViommuAlloc {
        /// The iommufd device ID.
        dev_id: u32,
        /// The nesting-parent HWPT ID.
        hwpt_id: u32,
        /// The vIOMMU type number.
        viommu_type: u32,
        /// The kernel's answer.
        errno: Errno,
    },
    /// `IOMMU_VDEVICE_ALLOC` failed.
    #[error(
        "IOMMU_VDEVICE_ALLOC of device {dev_id} as virtual ID {virt_id:#x} on vIOMMU {viommu_id} failed: {errno}"
    )]
    VdeviceAlloc {
        /// The vIOMMU ID.
        viommu_id: u32,
        /// The iommufd device ID.
        dev_id: u32,
        /// The virtual (guest-visible) device ID.
        virt_id: u64,
        /// The kernel's answer.
        errno: Errno,
    },
    /// `IOMMU_GET_HW_INFO` failed.
    #[error("IOMMU_GET_HW_INFO of device {dev_id} failed: {errno}")]
    HwInfo {
        /// The iommufd device ID.
        dev_id: u32,
        /// The kernel's answer.
        errno: Errno,
    },
    /// `IOMMU_HWPT_INVALIDATE` failed, after the kernel handled `consumed` of the entries.
    #[error(
        "IOMMU_HWPT_INVALIDATE of {entries} entries (data type {data_type}) on {kind} {id} failed at entry {consumed}: {errno}"
    )]
    HwptInvalidate {
        /// `"vIOMMU"` or `"HWPT"`.
        kind: &'static str,
        /// The object ID.
        id: u32,
        /// The invalidation data type.
        data_type: u32,
        /// How many entries were passed.
        entries: usize,
        /// How many the kernel handled before failing (the failing one is this index).
        consumed: usize,
        /// The kernel's answer.
        errno: Errno,
    },
    /// `IOMMU_VEVENTQ_ALLOC` failed.
    #[error(
        "IOMMU_VEVENTQ_ALLOC of type {veventq_type} depth {depth} on vIOMMU {viommu_id} failed: {errno}"
    )]
    VeventqAlloc {
        /// The vIOMMU ID.
        viommu_id: u32,
        /// The vEVENTQ type.
        veventq_type: u32,
        /// The requested depth.
        depth: u32,
        /// The kernel's answer.
        errno: Errno,
    },
    /// Polling or reading a vEVENTQ failed.
    #[error("read of vEVENTQ {id} failed: {errno}")]
    VeventqRead {
        /// The vEVENTQ ID.
        id: u32,
        /// The kernel's answer.
        errno: Errno,
    },
    /// An argument was rejected before any ioctl was issued.
    #[error("{op}: invalid argument: {reason}")]
    InvalidArgument {
        /// The operation (ioctl name).
        op: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// The kernel's reply broke the UAPI contract.
    #[error("{op}: unexpected reply from the kernel: {reason}")]
    KernelReply {
        /// The operation (ioctl name).
        op: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// A guest memory region has no host mapping that could be handed to the kernel.
    #[error("guest memory region at {gpa:#x}+{length:#x} has no host address: {source}")]
    HostAddress {
        /// The region's guest physical address.
        gpa: u64,
        /// The region's length.
        length: u64,
        /// The underlying error.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    /// Reading a sysfs file failed.
    #[error("read of {} failed: {source}", path.display())]
    Sysfs {
        /// The sysfs path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A sysfs file had content that does not follow the kernel's format.
    #[error("{}: line {line}: {reason}", path.display())]
    SysfsFormat {
        /// The sysfs path.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What was wrong with it.
        reason: String,
    },
}

impl Error {
    /// The errno the kernel answered with, if this error came from a kernel call.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Destroy { errno, .. }
            | Error::IoasAlloc { errno }
            | Error::IoasMap { errno, .. }
            | Error::IoasMapFile { errno, .. }
            | Error::IoasUnmap { errno, .. }
            | Error::IoasCopy { errno, .. }
            | Error::IovaRanges { errno, .. }
            | Error::AllowIovas { errno, .. }
            | Error::Option { errno, .. }
            | Error::HwptAlloc { errno, .. }
            | Error::ViommuAlloc { errno, .. }
            | Error::VdeviceAlloc { errno, .. }
            | Error::HwInfo { errno, .. }
            | Error::HwptInvalidate { errno, .. }
            | Error::VeventqAlloc { errno, .. }
            | Error::VeventqRead { errno, .. } => Some(*errno),
            Error::Open { source, .. } | Error::Sysfs { source, .. } => {
                source.raw_os_error().map(Errno)
            }
            Error::InvalidArgument { .. }
            | Error::KernelReply { .. }
            | Error::HostAddress { .. }
            | Error::SysfsFormat { .. } => None,
        }
    }
}

/// A `Result` whose error is [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_error_names_ioctl_range_and_errno() {
        let e = Error::IoasMap {
            ioas: 3,
            iova: Some(0x4000_0000),
            length: 0x1000_0000,
            errno: Errno(libc::EINVAL),
        };
        assert_eq!(
            e.to_string(),
            "IOMMU_IOAS_MAP of 0x40000000+0x10000000 into IOAS 3 failed: EINVAL (Invalid argument)"
        );
        assert_eq!(e.errno(), Some(Errno(libc::EINVAL)));
    }

    #[test]
    fn auto_iova_prints_auto() {
        let e = Error::IoasMap {
            ioas: 1,
            iova: None,
            length: 0x1000,
            errno: Errno(libc::ENOSPC),
        };
        assert!(e.to_string().starts_with("IOMMU_IOAS_MAP of auto+0x1000"));
    }
}
