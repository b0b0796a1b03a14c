// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The kernel-facing layer: every ioctl, `pread`/`pwrite` and `mmap` on a VFIO cdev goes
//! through here. Above it, everything works on plain values.
//!
//! `vfio-ioctls` keeps its ioctl numbers private, so the ones used here are declared from
//! `vfio-bindings`' `VFIO_TYPE` and `VFIO_BASE` exactly as `include/uapi/linux/vfio.h` does.

use std::os::fd::{AsRawFd, BorrowedFd};

use iommufd_ioas::Errno;
use vfio_bindings::bindings::vfio::{
    VFIO_BASE, VFIO_TYPE, vfio_device_attach_iommufd_pt, vfio_device_bind_iommufd,
    vfio_device_detach_iommufd_pt, vfio_device_info, vfio_irq_info,
};
use vmm_sys_util::ioctl::{ioctl, ioctl_with_mut_ref, ioctl_with_ptr, ioctl_with_ref};
use vmm_sys_util::ioctl_io_nr;

ioctl_io_nr!(VFIO_DEVICE_GET_INFO, VFIO_TYPE as u32, VFIO_BASE + 7);
ioctl_io_nr!(VFIO_DEVICE_GET_REGION_INFO, VFIO_TYPE as u32, VFIO_BASE + 8);
ioctl_io_nr!(VFIO_DEVICE_GET_IRQ_INFO, VFIO_TYPE as u32, VFIO_BASE + 9);
ioctl_io_nr!(VFIO_DEVICE_SET_IRQS, VFIO_TYPE as u32, VFIO_BASE + 10);
ioctl_io_nr!(VFIO_DEVICE_RESET, VFIO_TYPE as u32, VFIO_BASE + 11);
ioctl_io_nr!(VFIO_DEVICE_BIND_IOMMUFD, VFIO_TYPE as u32, VFIO_BASE + 18);
ioctl_io_nr!(
    VFIO_DEVICE_ATTACH_IOMMUFD_PT,
    VFIO_TYPE as u32,
    VFIO_BASE + 19
);
ioctl_io_nr!(
    VFIO_DEVICE_DETACH_IOMMUFD_PT,
    VFIO_TYPE as u32,
    VFIO_BASE + 20
);

fn check(ret: i32) -> Result<(), Errno> {
    if ret < 0 { Err(Errno::last()) } else { Ok(()) }
}

fn argsz<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

/// `VFIO_DEVICE_BIND_IOMMUFD`; returns the iommufd device ID.
pub(crate) fn bind_iommufd(dev: BorrowedFd<'_>, iommufd: i32) -> Result<u32, Errno> {
    let mut arg = vfio_device_bind_iommufd {
        argsz: argsz::<vfio_device_bind_iommufd>(),
        flags: 0,
        iommufd,
        out_devid: 0,
        token_uuid_ptr: 0,
    };
    // SAFETY: `dev` is an open VFIO cdev and `arg` a live, initialised structure whose
    // `argsz` matches its type; `token_uuid_ptr` is 0 (no token), so the kernel reads and
    // writes only `arg`.
    check(unsafe { ioctl_with_mut_ref(&dev, VFIO_DEVICE_BIND_IOMMUFD(), &mut arg) })?;
    Ok(arg.out_devid)
}

/// `VFIO_DEVICE_ATTACH_IOMMUFD_PT`; returns the ID of the page table actually attached (the
/// kernel allocates a HWPT when given an IOAS).
pub(crate) fn attach_pt(dev: BorrowedFd<'_>, pt_id: u32) -> Result<u32, Errno> {
    let mut arg = vfio_device_attach_iommufd_pt {
        argsz: argsz::<vfio_device_attach_iommufd_pt>(),
        flags: 0,
        pt_id,
        pasid: 0,
    };
    // SAFETY: `dev` is an open VFIO cdev; `arg` is live and initialised with a matching
    // `argsz`; the kernel reads and writes only inside it.
    check(unsafe { ioctl_with_mut_ref(&dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT(), &mut arg) })?;
    Ok(arg.pt_id)
}

pub(crate) fn detach_pt(dev: BorrowedFd<'_>) -> Result<(), Errno> {
    let arg = vfio_device_detach_iommufd_pt {
        argsz: argsz::<vfio_device_detach_iommufd_pt>(),
        flags: 0,
        pasid: 0,
    };
    // SAFETY: `dev` is an open VFIO cdev; `arg` is initialised with a matching `argsz`; the
    // kernel only reads it.
    check(unsafe { ioctl_with_ref(&dev, VFIO_DEVICE_DETACH_IOMMUFD_PT(), &arg) })
}

pub(crate) fn device_info(dev: BorrowedFd<'_>) -> Result<vfio_device_info, Errno> {
    let mut arg = vfio_device_info {
        argsz: argsz::<vfio_device_info>(),
        ..Default::default()
    };
    // SAFETY: `dev` is an open VFIO cdev; `arg` is live with a matching `argsz`, so the
    // kernel writes at most that many bytes into it (capabilities it could not fit are only
    // announced through a larger `argsz`, which this crate does not follow).
    check(unsafe { ioctl_with_mut_ref(&dev, VFIO_DEVICE_GET_INFO(), &mut arg) })?;
    Ok(arg)
}

/// `VFIO_DEVICE_GET_REGION_INFO` into `buf`: the header (`struct vfio_region_info`, 32
/// bytes) is written with `argsz` = the buffer's byte length and `index`, the kernel fills the
/// rest, and the caller reads the reply (header and capability chain) out of `buf`.
pub(crate) fn region_info(dev: BorrowedFd<'_>, index: u32, buf: &mut [u64]) -> Result<(), Errno> {
    let bytes = std::mem::size_of_val(buf);
    let argsz = u32::try_from(bytes).map_err(|_| Errno(libc::E2BIG))?;
    if bytes < 32 {
        return Err(Errno(libc::EINVAL));
    }
    // Header: argsz u32 @0, flags u32 @4, index u32 @8, cap_offset u32 @12, size u64 @16,
    // offset u64 @24. Written as native-endian words into the u64-aligned buffer.
    buf.fill(0);
    buf[0] = if cfg!(target_endian = "little") {
        u64::from(argsz)
    } else {
        u64::from(argsz) << 32
    };
    buf[1] = if cfg!(target_endian = "little") {
        u64::from(index)
    } else {
        u64::from(index) << 32
    };
    // SAFETY: `dev` is an open VFIO cdev; `buf` is a live, writable, 8-byte-aligned buffer of
    // `argsz` bytes starting with a valid `struct vfio_region_info` header whose `argsz` is
    // the buffer length, so the kernel writes at most `argsz` bytes into it.
    check(unsafe { ioctl_with_ptr(&dev, VFIO_DEVICE_GET_REGION_INFO(), buf.as_mut_ptr()) })
}

pub(crate) fn irq_info(dev: BorrowedFd<'_>, index: u32) -> Result<vfio_irq_info, Errno> {
    let mut arg = vfio_irq_info {
        argsz: argsz::<vfio_irq_info>(),
        flags: 0,
        index,
        count: 0,
    };
    // SAFETY: `dev` is an open VFIO cdev; `arg` is live with a matching `argsz`; the kernel
    // reads and writes only inside it.
    check(unsafe { ioctl_with_mut_ref(&dev, VFIO_DEVICE_GET_IRQ_INFO(), &mut arg) })?;
    Ok(arg)
}

/// `VFIO_DEVICE_SET_IRQS` with a complete `struct vfio_irq_set` in `arg` (header and data,
/// `argsz` equal to `arg.len()`, as `IrqSet::to_bytes` builds it).
pub(crate) fn set_irqs(dev: BorrowedFd<'_>, arg: &[u8]) -> Result<(), Errno> {
    // SAFETY: `dev` is an open VFIO cdev; `arg` is a readable buffer holding a complete
    // `struct vfio_irq_set` whose `argsz` is `arg.len()`, so the kernel copies at most that
    // many bytes from it and writes nothing. Eventfd numbers in it are only looked up by the
    // kernel; an invalid one fails the call.
    check(unsafe { ioctl_with_ptr(&dev, VFIO_DEVICE_SET_IRQS(), arg.as_ptr()) })
}

pub(crate) fn reset(dev: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: `dev` is an open VFIO cdev; `VFIO_DEVICE_RESET` takes no argument.
    check(unsafe { ioctl(&dev, VFIO_DEVICE_RESET()) })
}

/// `pread` of exactly `buf.len()` bytes at `offset` (retrying short reads and `EINTR`).
pub(crate) fn pread_exact(dev: BorrowedFd<'_>, buf: &mut [u8], offset: u64) -> Result<(), String> {
    let mut done = 0usize;
    while done < buf.len() {
        let at = offset
            .checked_add(done as u64)
            .and_then(|o| libc::off_t::try_from(o).ok())
            .ok_or("offset overflows off_t")?;
        let rest = &mut buf[done..];
        // SAFETY: `rest` is a live, writable buffer of `rest.len()` bytes, the most the
        // kernel writes; `dev` is borrowed, so it stays open for the call.
        let n = unsafe { libc::pread(dev.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len(), at) };
        match n {
            n if n > 0 => done += n as usize,
            0 => return Err(format!("end of region after {done} of {} bytes", buf.len())),
            _ => {
                let errno = Errno::last();
                if errno.raw() != libc::EINTR {
                    return Err(errno.to_string());
                }
            }
        }
    }
    Ok(())
}

/// `pwrite` of exactly `buf.len()` bytes at `offset` (retrying short writes and `EINTR`).
pub(crate) fn pwrite_all(dev: BorrowedFd<'_>, buf: &[u8], offset: u64) -> Result<(), String> {
    let mut done = 0usize;
    while done < buf.len() {
        let at = offset
            .checked_add(done as u64)
            .and_then(|o| libc::off_t::try_from(o).ok())
            .ok_or("offset overflows off_t")?;
        let rest = &buf[done..];
        // SAFETY: `rest` is a live, readable buffer of `rest.len()` bytes, the most the
        // kernel reads; `dev` is borrowed, so it stays open for the call.
        let n = unsafe { libc::pwrite(dev.as_raw_fd(), rest.as_ptr().cast(), rest.len(), at) };
        match n {
            n if n > 0 => done += n as usize,
            0 => return Err(format!("wrote nothing after {done} of {} bytes", buf.len())),
            _ => {
                let errno = Errno::last();
                if errno.raw() != libc::EINTR {
                    return Err(errno.to_string());
                }
            }
        }
    }
    Ok(())
}

/// `mmap(NULL, len, prot, MAP_SHARED, dev, offset)`.
pub(crate) fn mmap(
    dev: BorrowedFd<'_>,
    len: usize,
    prot: i32,
    offset: u64,
) -> Result<*mut u8, Errno> {
    let off = libc::off_t::try_from(offset).map_err(|_| Errno(libc::EOVERFLOW))?;
    // SAFETY: a fresh shared mapping at an address the kernel chooses (NULL hint, no
    // MAP_FIXED), so no existing memory of this process is replaced; the result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            dev.as_raw_fd(),
            off,
        )
    };
    if p == libc::MAP_FAILED {
        Err(Errno::last())
    } else {
        Ok(p.cast())
    }
}

/// `munmap` of a mapping made by [`mmap`].
///
/// # Safety
///
/// `addr..addr + len` must be exactly a mapping returned by [`mmap`] that nothing uses any
/// more.
pub(crate) unsafe fn munmap(addr: *mut u8, len: usize) {
    // SAFETY: the caller guarantees `addr`/`len` is one live mapping of ours, unused from now.
    if unsafe { libc::munmap(addr.cast(), len) } != 0 {
        log::error!("munmap of {addr:p}+{len:#x} failed: {}", Errno::last());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn io(nr: u32) -> u64 {
        ((0x3b << 8) | nr) as u64
    }

    /// The numbers of `include/uapi/linux/vfio.h`: `_IO(VFIO_TYPE, VFIO_BASE + n)` with
    /// `VFIO_TYPE = ';'` and `VFIO_BASE = 100`.
    #[test]
    fn ioctl_numbers_match_uapi_header() {
        assert_eq!(VFIO_TYPE, b';');
        assert_eq!(VFIO_BASE, 100);
        assert_eq!(VFIO_DEVICE_GET_INFO() as u64, io(107));
        assert_eq!(VFIO_DEVICE_GET_REGION_INFO() as u64, io(108));
        assert_eq!(VFIO_DEVICE_GET_IRQ_INFO() as u64, io(109));
        assert_eq!(VFIO_DEVICE_SET_IRQS() as u64, io(110));
        assert_eq!(VFIO_DEVICE_RESET() as u64, io(111));
        assert_eq!(VFIO_DEVICE_BIND_IOMMUFD() as u64, io(118));
        assert_eq!(VFIO_DEVICE_ATTACH_IOMMUFD_PT() as u64, io(119));
        assert_eq!(VFIO_DEVICE_DETACH_IOMMUFD_PT() as u64, io(120));
    }

    #[test]
    fn struct_layouts_match_uapi_header() {
        use std::mem::{offset_of, size_of};
        use vfio_bindings::bindings::vfio::vfio_region_info;
        assert_eq!(size_of::<vfio_region_info>(), 32);
        assert_eq!(offset_of!(vfio_region_info, cap_offset), 12);
        assert_eq!(offset_of!(vfio_region_info, size), 16);
        assert_eq!(offset_of!(vfio_region_info, offset), 24);
        assert_eq!(size_of::<vfio_device_bind_iommufd>(), 24);
        assert_eq!(offset_of!(vfio_device_bind_iommufd, out_devid), 12);
        assert_eq!(size_of::<vfio_device_attach_iommufd_pt>(), 16);
        assert_eq!(offset_of!(vfio_device_attach_iommufd_pt, pt_id), 8);
        assert_eq!(size_of::<vfio_device_detach_iommufd_pt>(), 12);
        assert_eq!(size_of::<vfio_irq_info>(), 16);
        assert_eq!(size_of::<vfio_device_info>(), 24);
    }
}
