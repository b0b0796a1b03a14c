// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`Iommufd`]: an open `/dev/iommu`, the root every object of this crate hangs from.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use iommufd_bindings::iommufd::iommu_option;
use iommufd_ioctls::IommuFd;

use crate::error::{Error, Result};
use crate::hw_info::{HW_INFO_BUF_LEN, HwInfo};
use crate::ioas::Ioas;
use crate::option::{IommuOption, OptionOp};
#[cfg(feature = "proposed")]
use crate::proposed::{self, Support, SwMsiWindow};
use crate::sys;

/// The default iommufd character device.
pub const IOMMUFD_PATH: &str = "/dev/iommu";

/// An open iommufd.
///
/// Objects allocated from it ([`Ioas`], [`crate::Hwpt`], [`crate::Viommu`],
/// [`crate::Vdevice`]) hold an `Arc<Iommufd>`, so the file stays open until the last of them
/// is gone; each destroys its kernel object when dropped.
///
/// The underlying descriptor is a shared `iommufd_ioctls::IommuFd`: a VMM that already holds
/// one (cloud-hypervisor does, and hands it to `vfio-ioctls`) adopts it with
/// [`Iommufd::from_iommufd_ioctls`], and code built on `iommufd-ioctls` gets it back with
/// [`Iommufd::as_iommufd_ioctls`] or [`Iommufd::shared_iommufd_ioctls`]; both sides then issue
/// their ioctls on the same descriptor.
pub struct Iommufd {
    fd: Arc<IommuFd>,
}

impl std::fmt::Debug for Iommufd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iommufd")
            .field("fd", &self.fd.as_raw_fd())
            .finish()
    }
}

impl Iommufd {
    /// Opens `/dev/iommu`.
    pub fn open() -> Result<Arc<Self>> {
        Self::open_path(Path::new(IOMMUFD_PATH))
    }

    /// Opens an iommufd character device at `path`.
    pub fn open_path(path: &Path) -> Result<Arc<Self>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| Error::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self::from_file(file))
    }

    /// Adopts an already open iommufd (for example one passed in by a management stack).
    /// Ownership of the descriptor moves to the returned object.
    pub fn from_file(file: File) -> Arc<Self> {
        Arc::new(Iommufd {
            fd: Arc::new(IommuFd::new_from_fd(file)),
        })
    }

    /// Adopts the `iommufd-ioctls` descriptor a VMM already holds (and shares, for example
    /// with `vfio-ioctls`' `VfioIommufd`): no second open of `/dev/iommu`, the same kernel
    /// context, so objects allocated by either side can be used by the other.
    ///
    /// ```no_run
    /// use std::sync::Arc;
    /// let vmm_fd = Arc::new(iommufd_ioctls::IommuFd::new().expect("/dev/iommu"));
    /// let iommufd = iommufd_ioas::Iommufd::from_iommufd_ioctls(vmm_fd.clone());
    /// assert!(Arc::ptr_eq(&vmm_fd, &iommufd.shared_iommufd_ioctls()));
    /// ```
    pub fn from_iommufd_ioctls(fd: Arc<IommuFd>) -> Arc<Self> {
        Arc::new(Iommufd { fd })
    }

    /// The `iommufd-ioctls` descriptor, for code built on that crate.
    pub fn as_iommufd_ioctls(&self) -> &IommuFd {
        &self.fd
    }

    /// The shared `iommufd-ioctls` descriptor (for `vfio-ioctls`' `VfioIommufd::new`).
    pub fn shared_iommufd_ioctls(&self) -> Arc<IommuFd> {
        self.fd.clone()
    }

    pub(crate) fn raw(&self) -> &IommuFd {
        &self.fd
    }

    /// A non-owning view of IOAS `id`, which the VMM allocated and owns (for example through
    /// `iommufd-ioctls`' `IommufdIoas`): the same operations as an owned [`Ioas`], but
    /// dropping it destroys nothing, and [`Ioas::destroy`] on it is refused. The caller keeps
    /// the IOAS alive while the view is used; a vanished ID makes the kernel answer `ENOENT`.
    pub fn ioas_view(self: &Arc<Self>, id: u32) -> Ioas {
        Ioas::view(self.clone(), id)
    }

    /// Allocates a new, empty IOAS.
    pub fn alloc_ioas(self: &Arc<Self>) -> Result<Ioas> {
        let id = sys::ioas_alloc(&self.fd).map_err(|errno| Error::IoasAlloc { errno })?;
        Ok(Ioas::from_id(self.clone(), id))
    }

    fn option(&self, option: IommuOption, object_id: u32, op: OptionOp) -> Result<u64> {
        let mut arg = iommu_option {
            size: sys::size_of_u32::<iommu_option>(),
            option_id: option.id(),
            op: op.raw(),
            __reserved: 0,
            object_id,
            val64: match op {
                OptionOp::Get => 0,
                OptionOp::Set(v) => v,
            },
        };
        sys::option(&self.fd, &mut arg).map_err(|errno| Error::Option {
            op: op.describe(),
            option,
            object_id,
            errno,
        })
    }

    /// `IOMMU_OPTION` get of `option` on `object_id` (0 for global options).
    pub fn get_option(&self, option: IommuOption, object_id: u32) -> Result<u64> {
        self.option(option, object_id, OptionOp::Get)
    }

    /// `IOMMU_OPTION` set of `option` on `object_id` (0 for global options) to `value`.
    pub fn set_option(&self, option: IommuOption, object_id: u32, value: u64) -> Result<()> {
        self.option(option, object_id, OptionOp::Set(value))
            .map(|_| ())
    }

    /// `IOMMU_GET_HW_INFO` for the iommufd device `dev_id` (the ID `VFIO_DEVICE_BIND_IOMMUFD`
    /// returned).
    pub fn hw_info(&self, dev_id: u32) -> Result<HwInfo> {
        let mut buf = [0u8; HW_INFO_BUF_LEN];
        let out = sys::get_hw_info(&self.fd, dev_id, &mut buf)
            .map_err(|errno| Error::HwInfo { dev_id, errno })?;
        // SAFETY: `out_data_type` and `in_data_type` are both a plain `u32` at the same
        // offset; every bit pattern is valid for either name.
        let data_type = unsafe { out.__bindgen_anon_1.out_data_type };
        HwInfo::decode(
            data_type,
            out.data_len,
            &buf,
            out.out_capabilities,
            out.out_max_pasid_log2,
        )
    }

    /// Probes the proposed per-device software MSI window (see [`crate::proposed`]) by reading
    /// its start on device `dev_id`: [`Support::Available`] with the effective window on a
    /// kernel that has it, [`Support::Absent`] on upstream kernels (which answer
    /// `EOPNOTSUPP`), and an error for any other failure.
    #[cfg(feature = "proposed")]
    pub fn probe_sw_msi_window(&self, dev_id: u32) -> Result<Support<SwMsiWindow>> {
        let get = |option: IommuOption| {
            let mut arg = iommu_option {
                size: sys::size_of_u32::<iommu_option>(),
                option_id: option.id(),
                op: OptionOp::Get.raw(),
                __reserved: 0,
                object_id: dev_id,
                val64: 0,
            };
            let answer = sys::option(&self.fd, &mut arg);
            proposed::classify_option_probe(answer).map_err(|errno| Error::Option {
                op: OptionOp::Get.describe(),
                option,
                object_id: dev_id,
                errno,
            })
        };
        let start = match get(IommuOption::SwMsiStart)? {
            Support::Available(v) => v,
            Support::Absent { errno } => return Ok(Support::Absent { errno }),
        };
        let size_mib = match get(IommuOption::SwMsiSize)? {
            Support::Available(v) => v,
            Support::Absent { errno } => {
                return Err(Error::KernelReply {
                    op: "IOMMU_OPTION",
                    reason: format!(
                        "IOMMU_OPTION_SW_MSI_START is supported but IOMMU_OPTION_SW_MSI_SIZE \
                         answered {errno}"
                    ),
                });
            }
        };
        Ok(Support::Available(SwMsiWindow { start, size_mib }))
    }

    /// Sets the proposed per-device software MSI window of `dev_id` (see
    /// [`crate::proposed`]). Must be called after binding and before attaching the device;
    /// the kernel answers `EBUSY` after attach and `EADDRINUSE` when the window overlaps
    /// another reserved region. Upstream kernels answer `EOPNOTSUPP`.
    #[cfg(feature = "proposed")]
    pub fn set_sw_msi_window(&self, dev_id: u32, window: SwMsiWindow) -> Result<()> {
        let window = SwMsiWindow::new(window.start, window.size_mib).map_err(|reason| {
            Error::InvalidArgument {
                op: "IOMMU_OPTION",
                reason,
            }
        })?;
        self.set_option(IommuOption::SwMsiStart, dev_id, window.start)?;
        self.set_option(IommuOption::SwMsiSize, dev_id, window.size_mib)
    }

    /// `IOMMU_DESTROY` of a raw object ID. Objects of this crate destroy themselves; this is
    /// for IDs allocated elsewhere.
    pub fn destroy_raw(&self, id: u32) -> Result<()> {
        sys::destroy(&self.fd, id).map_err(|errno| Error::Destroy {
            kind: "object",
            id,
            errno,
        })
    }
}

impl AsRawFd for Iommufd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for Iommufd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor is owned by `self.fd` and stays open for as long as `self`
        // is borrowed, which bounds the returned `BorrowedFd`'s lifetime.
        unsafe { BorrowedFd::borrow_raw(self.fd.as_raw_fd()) }
    }
}
