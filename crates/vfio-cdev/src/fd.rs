// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`DeviceFd`]: the VFIO device operations over any device file descriptor.
//!
//! A VMM that already has its own VFIO device object (cloud-hypervisor holds `vfio-ioctls`'
//! `VfioDevice`, which implements `AsRawFd`) uses this crate's hardened pieces on that
//! descriptor without opening the device a second time:
//!
//! ```no_run
//! use std::os::fd::AsFd;
//! use vfio_cdev::{DeviceFd, IrqIndex};
//! # fn vmm_device() -> std::fs::File { unimplemented!() }
//! let file = vmm_device(); // the VMM's bound VFIO cdev (or its VfioDevice's descriptor)
//! let dev = DeviceFd::new(file.as_fd(), "vfio0");
//! let bar3 = dev.region_info(3)?; // bounded capability-chain parser
//! let msix = dev.irq_info(IrqIndex::Msix)?;
//! println!("BAR3 {:#x} bytes, MSI-X mappable: {}, {} vectors", bar3.size, bar3.msix_mappable(), msix.count);
//! # Ok::<(), vfio_cdev::Error>(())
//! ```
//!
//! Every operation is one ioctl, `pread`/`pwrite` or `mmap` on the descriptor (in `sys.rs`);
//! the replies are checked as [`crate::VfioDevice`] checks them, and errors name the device
//! by the name given to [`DeviceFd::new`].

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::ptr::NonNull;

#[cfg(feature = "proposed")]
use iommufd_ioas::proposed::{self, Support};
use vmm_sys_util::eventfd::EventFd;

use crate::device::{DeviceInfo, u32_at, u64_at};
use crate::error::{Error, Result};
use crate::irq::{IrqIndex, IrqInfo, IrqSet};
use crate::region::{RegionInfo, RegionMapping};
use crate::region_caps::{REGION_INFO_HEADER_LEN, parse_region_caps};
use crate::{MAX_REGION_INFO_LEN, sys};

/// A VFIO device's descriptor, borrowed, with the name errors use for it.
#[derive(Clone, Copy, Debug)]
pub struct DeviceFd<'a> {
    fd: BorrowedFd<'a>,
    name: &'a str,
}

impl AsRawFd for DeviceFd<'_> {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl<'a> DeviceFd<'a> {
    /// Operations on the VFIO device file `fd` (a bound cdev, or a group-era device fd),
    /// named `name` in errors.
    pub fn new(fd: BorrowedFd<'a>, name: &'a str) -> Self {
        DeviceFd { fd, name }
    }

    /// `VFIO_DEVICE_GET_INFO` (a cdev answers it only once bound).
    pub fn device_info(&self) -> Result<DeviceInfo> {
        let raw = sys::device_info(self.fd).map_err(|errno| Error::DeviceInfo {
            device: self.name.to_owned(),
            errno,
        })?;
        Ok(DeviceInfo {
            flags: raw.flags,
            num_regions: raw.num_regions,
            num_irqs: raw.num_irqs,
        })
    }

    /// `VFIO_DEVICE_GET_REGION_INFO` of region `index`, with the capability chain parsed
    /// and the reply checked (sparse areas inside the region, bounded length).
    pub fn region_info(&self, index: u32) -> Result<RegionInfo> {
        let reply_err = |reason: String| Error::RegionInfoReply {
            device: self.name.to_owned(),
            index,
            reason,
        };
        let mut words = vec![0u64; REGION_INFO_HEADER_LEN / 8];
        let mut bytes = Vec::new();
        // Two rounds: the header alone, then (if the kernel asks for more room to carry
        // capabilities) the size it asked for.
        for round in 0..2 {
            sys::region_info(self.fd, index, &mut words).map_err(|errno| Error::RegionInfo {
                device: self.name.to_owned(),
                index,
                errno,
            })?;
            bytes = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
            let argsz = u32_at(&bytes, 0) as usize;
            if argsz <= bytes.len() {
                break;
            }
            if round == 1 {
                return Err(reply_err(format!(
                    "asked for {argsz} bytes after being given them"
                )));
            }
            if argsz > MAX_REGION_INFO_LEN {
                return Err(reply_err(format!(
                    "asked for {argsz} bytes, more than the {MAX_REGION_INFO_LEN} accepted"
                )));
            }
            words = vec![0u64; argsz.div_ceil(8)];
        }
        let argsz = (u32_at(&bytes, 0) as usize).min(bytes.len());
        let flags = u32_at(&bytes, 4);
        let reported_index = u32_at(&bytes, 8);
        let cap_offset = u32_at(&bytes, 12);
        if reported_index != index {
            return Err(reply_err(format!("answered for region {reported_index}")));
        }
        let caps = if flags & vfio_bindings::bindings::vfio::VFIO_REGION_INFO_FLAG_CAPS != 0 {
            parse_region_caps(&bytes[..argsz], cap_offset).map_err(|source| Error::RegionCaps {
                device: self.name.to_owned(),
                index,
                source,
            })?
        } else {
            Vec::new()
        };
        let info = RegionInfo {
            index,
            flags,
            size: u64_at(&bytes, 16),
            offset: u64_at(&bytes, 24),
            caps,
        };
        info.validate().map_err(reply_err)?;
        Ok(info)
    }

    /// `VFIO_DEVICE_GET_IRQ_INFO` of an IRQ index.
    pub fn irq_info(&self, index: IrqIndex) -> Result<IrqInfo> {
        let raw = sys::irq_info(self.fd, index.raw()).map_err(|errno| Error::IrqInfo {
            device: self.name.to_owned(),
            index,
            errno,
        })?;
        Ok(IrqInfo {
            index: raw.index,
            count: raw.count,
            flags: raw.flags,
        })
    }

    /// Issues one `VFIO_DEVICE_SET_IRQS` for `index` starting at vector `start`.
    pub fn set_irqs(&self, index: IrqIndex, start: u32, set: &IrqSet) -> Result<()> {
        let fail = |errno| Error::SetIrqs {
            device: self.name.to_owned(),
            index,
            action: set.describe(),
            start,
            count: set.count(),
            errno,
        };
        let arg = set
            .to_bytes(index.raw(), start)
            .ok_or_else(|| fail(iommufd_ioas::Errno(libc::EOVERFLOW)))?;
        sys::set_irqs(self.fd, &arg).map_err(fail)
    }

    /// Assigns `eventfd` to vector `vector` of `index` (or unassigns it with `None`), leaving
    /// the other vectors as they are. On MSI-X the first assignment enables MSI-X; later ones
    /// add vectors dynamically (unless [`IrqInfo::noresize`]).
    pub fn set_vector_eventfd(
        &self,
        index: IrqIndex,
        vector: u32,
        eventfd: Option<&EventFd>,
    ) -> Result<()> {
        self.set_irqs(
            index,
            vector,
            &IrqSet::Eventfds(vec![eventfd.map(|fd| fd.as_raw_fd())]),
        )
    }

    /// Assigns eventfds to vectors `start..start + fds.len()` in one call (`None` unassigns).
    pub fn set_vector_eventfds(
        &self,
        index: IrqIndex,
        start: u32,
        fds: &[Option<&EventFd>],
    ) -> Result<()> {
        let raw: Vec<Option<RawFd>> = fds.iter().map(|f| f.map(|fd| fd.as_raw_fd())).collect();
        self.set_irqs(index, start, &IrqSet::Eventfds(raw))
    }

    /// Disables every vector of `index`.
    pub fn disable_irqs(&self, index: IrqIndex) -> Result<()> {
        self.set_irqs(index, 0, &IrqSet::DisableAll)
    }

    /// Fires vector `vector` of `index` from userspace (a loopback through the eventfd).
    pub fn trigger_irq(&self, index: IrqIndex, vector: u32) -> Result<()> {
        self.set_irqs(index, vector, &IrqSet::Trigger(1))
    }

    /// **Proposed UAPI** (see `iommufd_ioas::proposed`): stores the MSI address each of the
    /// vectors `start..` must use when it is enabled (`VFIO_IRQ_SET_DATA_MSI_IOVA |
    /// VFIO_IRQ_SET_ACTION_PREPARE`). Upstream kernels answer `EINVAL`.
    #[cfg(feature = "proposed")]
    pub fn prepare_msi_iovas(&self, index: IrqIndex, start: u32, iovas: &[u64]) -> Result<()> {
        self.set_irqs(index, start, &IrqSet::PrepareMsiIova(iovas.to_vec()))
    }

    /// Probes the proposed per-vector MSI IOVA UAPI with a zero-vector `PREPARE` call:
    /// [`Support::Absent`] on upstream kernels (`EINVAL`), an error for any other failure.
    #[cfg(feature = "proposed")]
    pub fn probe_msi_iova(&self, index: IrqIndex) -> Result<Support<()>> {
        let arg = IrqSet::PrepareMsiIova(Vec::new())
            .to_bytes(index.raw(), 0)
            .ok_or_else(|| Error::RegionInfoReply {
                device: self.name.to_owned(),
                index: 0,
                reason: "unreachable: empty SET_IRQS argument overflowed".into(),
            })?;
        let answer = sys::set_irqs(self.fd, &arg);
        proposed::classify_set_irqs_probe(answer).map_err(|errno| Error::SetIrqs {
            device: self.name.to_owned(),
            index,
            action: IrqSet::PrepareMsiIova(Vec::new()).describe(),
            start: 0,
            count: 0,
            errno,
        })
    }

    /// Resets the device (`VFIO_DEVICE_RESET`). The kernel tears down MSI/MSI-X; the caller
    /// must re-enable vectors (and re-apply any address write-through) afterwards.
    pub fn reset(&self) -> Result<()> {
        if !self.device_info()?.can_reset() {
            return Err(Error::ResetUnsupported {
                device: self.name.to_owned(),
            });
        }
        self.reset_unchecked()
    }

    /// `VFIO_DEVICE_RESET` without first checking `VFIO_DEVICE_FLAGS_RESET` (the kernel
    /// answers `EINVAL` for a device that cannot reset).
    pub fn reset_unchecked(&self) -> Result<()> {
        sys::reset(self.fd).map_err(|errno| Error::Reset {
            device: self.name.to_owned(),
            errno,
        })
    }

    /// Reads `buf.len()` bytes at `offset` of region `region` through the device file.
    pub fn read_region(&self, region: &RegionInfo, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.region_io("read", region, offset, buf.len())?;
        sys::pread_exact(self.fd, buf, region.offset + offset).map_err(|reason| {
            Error::RegionAccess {
                op: "read",
                device: self.name.to_owned(),
                index: region.index,
                offset,
                len: buf.len(),
                reason,
            }
        })
    }

    /// Writes `buf` at `offset` of region `region` through the device file.
    pub fn write_region(&self, region: &RegionInfo, offset: u64, buf: &[u8]) -> Result<()> {
        self.region_io("write", region, offset, buf.len())?;
        sys::pwrite_all(self.fd, buf, region.offset + offset).map_err(|reason| {
            Error::RegionAccess {
                op: "write",
                device: self.name.to_owned(),
                index: region.index,
                offset,
                len: buf.len(),
                reason,
            }
        })
    }

    fn region_io(
        &self,
        op: &'static str,
        region: &RegionInfo,
        offset: u64,
        len: usize,
    ) -> Result<()> {
        let allowed = if op == "read" {
            region.readable()
        } else {
            region.writable()
        };
        let bounds = |reason: String| Error::Bounds {
            op,
            device: self.name.to_owned(),
            index: region.index,
            offset,
            len: len as u64,
            reason,
        };
        if !allowed {
            return Err(bounds(format!("the region is not {op}able")));
        }
        region.check_range(offset, len as u64).map_err(bounds)
    }

    /// Maps `len` bytes at `offset` of `region` (read/write as the region allows). The range
    /// must be page aligned, inside the region, and inside a sparse mmap area when the
    /// region has them: the MSI-X table page of a BAR is only mappable when the kernel
    /// reports `VFIO_REGION_INFO_CAP_MSIX_MAPPABLE`.
    pub fn mmap_region(&self, region: &RegionInfo, offset: u64, len: u64) -> Result<RegionMapping> {
        let bounds = |reason: String| Error::Bounds {
            op: "mmap",
            device: self.name.to_owned(),
            index: region.index,
            offset,
            len,
            reason,
        };
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
        if len == 0 || !offset.is_multiple_of(page) || !len.is_multiple_of(page) {
            return Err(bounds(format!("not page ({page:#x}) aligned or empty")));
        }
        region.check_mappable(offset, len).map_err(bounds)?;
        let len_usize = usize::try_from(len).map_err(|_| bounds("too large".into()))?;
        let mut prot = 0;
        if region.readable() {
            prot |= libc::PROT_READ;
        }
        if region.writable() {
            prot |= libc::PROT_WRITE;
        }
        let p = sys::mmap(self.fd, len_usize, prot, region.offset + offset).map_err(|errno| {
            Error::Mmap {
                device: self.name.to_owned(),
                index: region.index,
                offset,
                len,
                errno,
            }
        })?;
        let ptr = NonNull::new(p).ok_or_else(|| bounds("mmap returned NULL".into()))?;
        // SAFETY: `ptr`/`len_usize` is the mapping just created, owned by the new value only.
        Ok(unsafe { RegionMapping::new(ptr, len_usize, region.index, offset) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// On a descriptor that is no VFIO device every operation fails with an error naming
    /// the operation, the device and the errno; nothing panics.
    #[test]
    fn a_foreign_descriptor_gives_named_errors() {
        let null = std::fs::File::open("/dev/null").unwrap();
        let dev = DeviceFd::new(null.as_fd(), "not-a-vfio-device");
        let e = dev.region_info(0).unwrap_err().to_string();
        assert!(
            e.contains("not-a-vfio-device") && e.contains("ENOTTY"),
            "{e}"
        );
        let e = dev.irq_info(IrqIndex::Msix).unwrap_err().to_string();
        assert!(e.contains("not-a-vfio-device"), "{e}");
        let e = dev.device_info().unwrap_err().to_string();
        assert!(e.contains("VFIO_DEVICE_GET_INFO"), "{e}");
        let e = dev.disable_irqs(IrqIndex::Msix).unwrap_err().to_string();
        assert!(e.contains("ENOTTY"), "{e}");
        assert!(dev.reset_unchecked().is_err());
        assert_eq!(dev.as_raw_fd(), null.as_raw_fd());
    }
}
