// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Opening the passed-through device the way a cloud-hypervisor-like VMM does: through
//! vfio-ioctls, on an iommufd and an IOAS the VMM owns (issue 16).
//!
//! The VMM creates the iommufd as iommufd-ioctls' `IommuFd` and its IOAS as `IommufdIoas`,
//! builds vfio-ioctls' `VfioIommufd` on them (no KVM device handle: the VMM registers the
//! device file with its own `KvmVfioDevice`), and opens the device with
//! `vfio_ioctls::VfioDevice::new(sysfs_dir, .., attach_ioas = false)`, which opens the cdev
//! named under `<sysfs_dir>/vfio-dev/` and binds it (`VFIO_DEVICE_BIND_IOMMUFD`). The
//! attach is left to the planned bring-up (`PreparedDevice::attach_to`), because the plan's
//! MSI window must be set between the bind and the attach.
//!
//! Everything after the open runs on a duplicate of vfio-ioctls' descriptor, adopted with
//! `vfio_cdev::VfioDevice::from_bound_file`: a duplicate shares the kernel's open file, and
//! so its binding. The vfio-ioctls device is held by the adopted device
//! (`VfioDevice::hold_owner`) and dropped after it: the adopted device detaches (so that
//! vfio-ioctls' own detach at drop, which it unwraps, is a no-op the kernel accepts), closes
//! its descriptor and lets go of the IOAS view first.

use std::error::Error as StdError;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use iommufd_ioas::{Errno, Ioas, Iommufd};
use iommufd_ioctls::{IommuFd, IommufdError, IommufdIoas};
use vfio_cdev::SysRoots;
use vfio_ioctls::{VfioError, VfioIommufd};
use vfio_passthrough::setup::DeviceSpec;

/// Who opened and bound the device, for the report.
pub const OPENED_BY: &str = "vfio-ioctls";

/// A failure of the vfio-ioctls or iommufd-ioctls side, with the operation, the object and
/// the errno (found in the error's source chain; `None` where the crate dropped it).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// vfio-ioctls failed.
    #[error("vfio-ioctls {call} of {object}: {op} failed: {}: {source}", errno_text(*errno))]
    VfioIoctls {
        /// The vfio-ioctls call (`VfioDevice::new`, `VfioIommufd::new`).
        call: &'static str,
        /// The step inside it that failed, as far as the error variant tells.
        op: &'static str,
        /// The device (sysfs directory) or object.
        object: String,
        /// The kernel's answer, when the error carries it.
        errno: Option<Errno>,
        /// The error.
        #[source]
        source: VfioError,
    },
    /// iommufd-ioctls failed.
    #[error("iommufd-ioctls {op} of {object} failed: {}: {source}", errno_text(*errno))]
    IommufdIoctls {
        /// The operation.
        op: &'static str,
        /// The object.
        object: String,
        /// The kernel's answer, when the error carries it.
        errno: Option<Errno>,
        /// The error.
        #[source]
        source: IommufdError,
    },
    /// Finding the device in sysfs, or adopting its descriptor, failed.
    #[error(transparent)]
    Cdev(#[from] vfio_cdev::Error),
    /// Duplicating vfio-ioctls' descriptor failed.
    #[error("dup of the descriptor (fd {fd}) of {object} failed: {source}")]
    Dup {
        /// The descriptor.
        fd: i32,
        /// The device.
        object: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn errno_text(errno: Option<Errno>) -> String {
    errno.map_or_else(|| "errno not reported".to_owned(), |e| e.to_string())
}

/// The first errno in `e`'s source chain (`std::io::Error` or vmm-sys-util's `Error`), `e`
/// included.
pub fn errno_in(e: &(dyn StdError + 'static)) -> Option<Errno> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(raw) = io.raw_os_error()
        {
            return Some(Errno(raw));
        }
        if let Some(sys) = e.downcast_ref::<vmm_sys_util::errno::Error>() {
            return Some(Errno(sys.errno()));
        }
        next = e.source();
    }
    None
}

/// The step of `VfioDevice::new` on a `VfioIommufd` that a vfio-ioctls error names.
pub fn vfio_ioctls_op(e: &VfioError) -> &'static str {
    match e {
        VfioError::InvalidVfioDev => "finding the cdev under <sysfs>/vfio-dev",
        VfioError::OpenDeviceCdev(_) => "open of /dev/vfio/devices/<cdev>",
        VfioError::SetDeviceAttr(_) => "KVM_DEV_VFIO_FILE_ADD",
        VfioError::VfioDeviceBindIommufd(_) => "VFIO_DEVICE_BIND_IOMMUFD",
        VfioError::VfioDeviceAttachIommufdPt(_) => "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
        VfioError::VfioDeviceGetInfo(_)
        | VfioError::VfioDeviceGetInfoPCI
        | VfioError::VfioDeviceGetInfoOther => "VFIO_DEVICE_GET_INFO",
        VfioError::VfioDeviceGetRegionInfo(_) => "VFIO_DEVICE_GET_REGION_INFO",
        VfioError::VfioDeviceGetIrqInfo => "VFIO_DEVICE_GET_IRQ_INFO",
        VfioError::NewVfioIommufd(_) | VfioError::IommufdIoctlError(_) => "an iommufd ioctl",
        _ => "a VFIO call",
    }
}

fn vfio_error(call: &'static str, object: String, source: VfioError) -> OpenError {
    OpenError::VfioIoctls {
        call,
        op: vfio_ioctls_op(&source),
        object,
        errno: errno_in(&source),
        source,
    }
}

fn iommufd_error(op: &'static str, object: String, source: IommufdError) -> OpenError {
    OpenError::IommufdIoctls {
        op,
        object,
        errno: errno_in(&source),
        source,
    }
}

/// The VMM's iommufd and IOAS, made through iommufd-ioctls, and vfio-ioctls' `VfioIommufd`
/// on them. Dropped after every device on it (the IOAS is destroyed with the last
/// reference: vfio-ioctls' devices hold the `VfioIommufd`).
pub struct VmmIommu {
    iommufd: Arc<Iommufd>,
    ioas: Arc<IommufdIoas>,
    vfio: Arc<VfioIommufd>,
}

impl VmmIommu {
    /// Opens `/dev/iommu`, allocates the VMM's IOAS, and builds the `VfioIommufd`.
    pub fn new() -> Result<Self, OpenError> {
        let fd = Arc::new(
            IommuFd::new().map_err(|e| iommufd_error("open", "/dev/iommu".to_owned(), e))?,
        );
        let ioas = Arc::new(
            IommufdIoas::new(Arc::clone(&fd))
                .map_err(|e| iommufd_error("IOMMU_IOAS_ALLOC", "/dev/iommu".to_owned(), e))?,
        );
        let vfio = VfioIommufd::new(Arc::clone(&fd), Some(Arc::clone(&ioas)), None)
            .map_err(|e| vfio_error("VfioIommufd::new", format!("IOAS {}", ioas.id()), e))?;
        Ok(VmmIommu {
            iommufd: Iommufd::from_iommufd_ioctls(fd),
            ioas,
            vfio: Arc::new(vfio),
        })
    }

    /// The iommufd, in `iommufd-ioas`' terms (the same descriptor).
    pub fn iommufd(&self) -> &Arc<Iommufd> {
        &self.iommufd
    }

    /// A non-owning view of the VMM's IOAS, for the bring-up (attach, RAM mapping, the
    /// nest-parent HWPT).
    pub fn ioas_view(&self) -> Arc<Ioas> {
        Arc::new(self.iommufd.ioas_view(self.ioas.id()))
    }

    /// Opens and binds the device with vfio-ioctls (not attached), and adopts a duplicate
    /// of its descriptor as a `vfio_cdev::VfioDevice`, which holds the vfio-ioctls device
    /// until it is dropped itself.
    pub fn open_device(&self, spec: &DeviceSpec) -> Result<vfio_cdev::VfioDevice, OpenError> {
        let (sysfs, name) = sysfs_dir_of(spec, &SysRoots::default())?;
        let object = format!("{name} ({})", sysfs.display());
        let theirs = vfio_ioctls::VfioDevice::new(
            &sysfs,
            Arc::clone(&self.vfio) as Arc<dyn vfio_ioctls::VfioOps>,
            false,
        )
        .map_err(|e| vfio_error("VfioDevice::new", object.clone(), e))?;
        let Some(dev_id) = theirs.iommufd_dev_id() else {
            // `new` on a VfioIommufd always binds; without an ID nothing can be planned.
            return Err(vfio_error(
                "VfioDevice::iommufd_dev_id",
                object,
                VfioError::DowncastVfioOps,
            ));
        };
        // SAFETY: `theirs` owns this descriptor and is alive for the call; the borrow is
        // only used to duplicate it.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(theirs.as_raw_fd()) };
        let dup = borrowed
            .try_clone_to_owned()
            .map_err(|source| OpenError::Dup {
                fd: theirs.as_raw_fd(),
                object: object.clone(),
                source,
            })?;
        let mut ours = vfio_cdev::VfioDevice::from_bound_file(
            std::fs::File::from(dup),
            name,
            Some(sysfs),
            &self.iommufd,
            dev_id,
        )?;
        ours.hold_owner(theirs);
        Ok(ours)
    }
}

/// The device's sysfs directory and its cdev name (`vfioN`, as errors name it), for a cdev
/// path or a PCI address.
pub fn sysfs_dir_of(
    spec: &DeviceSpec,
    roots: &SysRoots,
) -> Result<(PathBuf, String), vfio_cdev::Error> {
    let cdev_name = |p: &std::path::Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| p.display().to_string())
    };
    match spec {
        DeviceSpec::Cdev(path) => Ok((roots.device_dir_of_cdev(path)?, cdev_name(path))),
        DeviceSpec::Pci(addr) => {
            let cdev = roots.cdev_of_pci(addr)?;
            Ok((roots.pci_device_dir(addr), cdev_name(&cdev)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_errno_is_found_in_the_source_chain() {
        let e = VfioError::VfioDeviceBindIommufd(vmm_sys_util::errno::Error::new(libc::EBUSY));
        assert_eq!(errno_in(&e), Some(Errno(libc::EBUSY)));
        assert_eq!(vfio_ioctls_op(&e), "VFIO_DEVICE_BIND_IOMMUFD");
        let e = VfioError::OpenDeviceCdev(std::io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(errno_in(&e), Some(Errno(libc::ENOENT)));
        let e = VfioError::NewVfioIommufd(IommufdError::IommuIoasAlloc(
            vmm_sys_util::errno::Error::new(libc::ENOMEM),
        ));
        assert_eq!(errno_in(&e), Some(Errno(libc::ENOMEM)));
        // vfio-ioctls drops the errno of some calls.
        assert_eq!(errno_in(&VfioError::VfioDeviceGetIrqInfo), None);
    }

    #[test]
    fn a_wrapped_error_names_call_step_object_and_errno() {
        let e = vfio_error(
            "VfioDevice::new",
            "vfio0 (/sys/bus/pci/devices/0000:00:06.0)".to_owned(),
            VfioError::VfioDeviceBindIommufd(vmm_sys_util::errno::Error::new(libc::EBUSY)),
        );
        let msg = e.to_string();
        for part in [
            "vfio-ioctls VfioDevice::new",
            "vfio0 (/sys/bus/pci/devices/0000:00:06.0)",
            "VFIO_DEVICE_BIND_IOMMUFD failed",
            "EBUSY",
        ] {
            assert!(msg.contains(part), "{msg}");
        }
        let e = vfio_error(
            "VfioDevice::new",
            "x".into(),
            VfioError::VfioDeviceGetIrqInfo,
        );
        assert!(e.to_string().contains("errno not reported"), "{e}");
    }

    #[test]
    fn sysfs_dir_of_a_pci_address_and_of_a_cdev() {
        let root = std::env::temp_dir().join(format!("vfio-open-{}", std::process::id()));
        let dev = root.join("sys/bus/pci/devices/0000:00:06.0");
        std::fs::create_dir_all(dev.join("vfio-dev/vfio3")).unwrap();
        std::fs::create_dir_all(root.join("sys/class/vfio-dev/vfio3")).unwrap();
        std::os::unix::fs::symlink(&dev, root.join("sys/class/vfio-dev/vfio3/device")).unwrap();
        let roots = SysRoots {
            sys: root.join("sys"),
            dev: root.join("dev"),
        };
        let pci = DeviceSpec::Pci("0000:00:06.0".parse().unwrap());
        assert_eq!(
            sysfs_dir_of(&pci, &roots).unwrap(),
            (dev.clone(), "vfio3".to_owned())
        );
        let cdev = DeviceSpec::Cdev(PathBuf::from("/dev/vfio/devices/vfio3"));
        let (dir, name) = sysfs_dir_of(&cdev, &roots).unwrap();
        assert_eq!(dir, std::fs::canonicalize(&dev).unwrap());
        assert_eq!(name, "vfio3");
        let absent = DeviceSpec::Pci("0000:00:07.0".parse().unwrap());
        assert!(matches!(
            sysfs_dir_of(&absent, &roots),
            Err(vfio_cdev::Error::NoCdev { .. })
        ));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
