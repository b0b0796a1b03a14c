// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The kernel-facing layer: every ioctl this crate issues on `/dev/iommu` goes through here.
//!
//! The ioctls that `iommufd-ioctls` already wraps (`IOMMU_DESTROY`, `IOMMU_IOAS_ALLOC`,
//! `IOMMU_IOAS_UNMAP`, `IOMMU_HWPT_ALLOC`, `IOMMU_GET_HW_INFO`, `IOMMU_VIOMMU_ALLOC`,
//! `IOMMU_VDEVICE_ALLOC`, `IOMMU_HWPT_INVALIDATE`, `IOMMU_VEVENTQ_ALLOC`) are called through
//! it; so is the `poll()` of a vEVENTQ. The ones it lacks (`IOMMU_IOAS_IOVA_RANGES`,
//! `IOMMU_IOAS_ALLOW_IOVAS`, `IOMMU_IOAS_COPY`, `IOMMU_OPTION`) are declared here from
//! `iommufd-bindings`' command numbers. `IOMMU_IOAS_MAP` and `IOMMU_IOAS_MAP_FILE` use
//! `iommufd-ioctls`' ioctl numbers but are issued here with a mutable argument, because the
//! kernel writes the chosen IOVA back when it allocates one (`iommufd-ioctls` passes a shared
//! reference, which cannot carry that output).
//!
//! Everything above this module works on plain values and is tested without a kernel.

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use iommufd_bindings::iommufd::{
    IOMMUFD_CMD_IOAS_ALLOW_IOVAS, IOMMUFD_CMD_IOAS_COPY, IOMMUFD_CMD_IOAS_IOVA_RANGES,
    IOMMUFD_CMD_OPTION, IOMMUFD_TYPE, iommu_hw_info, iommu_hwpt_alloc, iommu_hwpt_invalidate,
    iommu_ioas_alloc, iommu_ioas_allow_iovas, iommu_ioas_copy, iommu_ioas_iova_ranges,
    iommu_ioas_map, iommu_ioas_map_file, iommu_ioas_unmap, iommu_iova_range, iommu_option,
    iommu_vdevice_alloc, iommu_veventq_alloc, iommu_viommu_alloc,
};
use iommufd_ioctls::{IommuFd, IommufdError};
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref};
use vmm_sys_util::ioctl_io_nr;

use crate::errno::Errno;

ioctl_io_nr!(
    IOMMU_IOAS_ALLOW_IOVAS,
    IOMMUFD_TYPE as u32,
    IOMMUFD_CMD_IOAS_ALLOW_IOVAS
);
ioctl_io_nr!(IOMMU_IOAS_COPY, IOMMUFD_TYPE as u32, IOMMUFD_CMD_IOAS_COPY);
ioctl_io_nr!(
    IOMMU_IOAS_IOVA_RANGES,
    IOMMUFD_TYPE as u32,
    IOMMUFD_CMD_IOAS_IOVA_RANGES
);
ioctl_io_nr!(IOMMU_OPTION, IOMMUFD_TYPE as u32, IOMMUFD_CMD_OPTION);

/// The `size` field every iommufd ioctl structure starts with.
pub(crate) fn size_of_u32<T>() -> u32 {
    std::mem::size_of::<T>() as u32
}

/// The errno inside an `iommufd-ioctls` error. Every variant its ioctl wrappers return
/// carries the `SysError` of the failed ioctl; the others cannot come from the calls below.
fn errno_of(e: IommufdError) -> Errno {
    match e {
        IommufdError::IommuDestroy(e)
        | IommufdError::IommuIoasAlloc(e)
        | IommufdError::IommuIoasMap(e)
        | IommufdError::IommuIoasMapFile(e)
        | IommufdError::IommuIoasUnmap(e)
        | IommufdError::IommuHwptAlloc(e)
        | IommufdError::IommuViommuAlloc(e)
        | IommufdError::IommuVdeviceAlloc(e)
        | IommufdError::IommuGetHwInfo(e)
        | IommufdError::IommuHwptInvalidate(e)
        | IommufdError::IommuVeventqAlloc(e)
        | IommufdError::VeventqNonBlocking(e)
        | IommufdError::IommuHwQueueAlloc(e) => Errno::from(e),
        IommufdError::OpenIommufd(e) | IommufdError::AttachHwpt(e) => {
            Errno(e.raw_os_error().unwrap_or(libc::EIO))
        }
        _ => Errno(libc::EIO),
    }
}

fn check(ret: i32) -> Result<(), Errno> {
    if ret < 0 { Err(Errno::last()) } else { Ok(()) }
}

pub(crate) fn destroy(fd: &IommuFd, id: u32) -> Result<(), Errno> {
    fd.destroy_iommu_object(id).map_err(errno_of)
}

pub(crate) fn ioas_alloc(fd: &IommuFd) -> Result<u32, Errno> {
    let mut arg = iommu_ioas_alloc {
        size: size_of_u32::<iommu_ioas_alloc>(),
        flags: 0,
        out_ioas_id: 0,
    };
    fd.alloc_iommu_ioas(&mut arg).map_err(errno_of)?;
    Ok(arg.out_ioas_id)
}

/// `IOMMU_IOAS_MAP`; returns the IOVA the mapping was placed at.
///
/// # Safety
///
/// `arg.user_va..arg.user_va + arg.length` must satisfy the contract of
/// [`crate::Ioas::map_user`].
pub(crate) unsafe fn ioas_map(fd: &IommuFd, arg: &mut iommu_ioas_map) -> Result<u64, Errno> {
    // SAFETY: `fd` is an open iommufd and `arg` is a live, fully initialised
    // `iommu_ioas_map` whose `size` matches its type, so the kernel reads and writes only
    // inside it. What the kernel does with `user_va` (pinning those pages for DMA) is the
    // caller's contract, stated on this function.
    let ret = unsafe { ioctl_with_mut_ref(fd, iommufd_ioctls::IOMMU_IOAS_MAP(), arg) };
    check(ret)?;
    Ok(arg.iova)
}

/// `IOMMU_IOAS_MAP_FILE`; returns the IOVA the mapping was placed at.
pub(crate) fn ioas_map_file(fd: &IommuFd, arg: &mut iommu_ioas_map_file) -> Result<u64, Errno> {
    // SAFETY: `fd` is an open iommufd and `arg` is a live, fully initialised
    // `iommu_ioas_map_file` whose `size` matches its type. The kernel pins pages of the file
    // `arg.fd` refers to; no memory of this process is handed over.
    let ret = unsafe { ioctl_with_mut_ref(fd, iommufd_ioctls::IOMMU_IOAS_MAP_FILE(), arg) };
    check(ret)?;
    Ok(arg.iova)
}

/// `IOMMU_IOAS_UNMAP`; returns the number of bytes unmapped.
pub(crate) fn ioas_unmap(fd: &IommuFd, ioas: u32, iova: u64, length: u64) -> Result<u64, Errno> {
    let mut arg = iommu_ioas_unmap {
        size: size_of_u32::<iommu_ioas_unmap>(),
        ioas_id: ioas,
        iova,
        length,
    };
    fd.unmap_iommu_ioas(&mut arg).map_err(errno_of)?;
    Ok(arg.length)
}

/// `IOMMU_IOAS_COPY`; returns the destination IOVA.
pub(crate) fn ioas_copy(fd: &IommuFd, arg: &mut iommu_ioas_copy) -> Result<u64, Errno> {
    // SAFETY: `fd` is an open iommufd and `arg` is a live, fully initialised
    // `iommu_ioas_copy` whose `size` matches its type; the kernel touches nothing else.
    let ret = unsafe { ioctl_with_mut_ref(fd, IOMMU_IOAS_COPY(), arg) };
    check(ret)?;
    Ok(arg.dst_iova)
}

/// One `IOMMU_IOAS_IOVA_RANGES` call with room for `buf.len()` ranges.
///
/// Returns the total number of ranges and the alignment. When the kernel has more ranges
/// than fit it fails with `EMSGSIZE` and reports the count it needs; that case is returned as
/// `Err((EMSGSIZE, needed))`.
pub(crate) fn ioas_iova_ranges(
    fd: &IommuFd,
    ioas: u32,
    buf: &mut [iommu_iova_range],
) -> Result<(u32, u64), (Errno, u32)> {
    let capacity = u32::try_from(buf.len()).unwrap_or(u32::MAX);
    let mut arg = iommu_ioas_iova_ranges {
        size: size_of_u32::<iommu_ioas_iova_ranges>(),
        ioas_id: ioas,
        num_iovas: capacity,
        __reserved: 0,
        allowed_iovas: buf.as_mut_ptr() as u64,
        out_iova_alignment: 0,
    };
    // SAFETY: `fd` is an open iommufd; `arg` is a live, initialised structure whose
    // `allowed_iovas` points at `buf`, which holds `num_iovas` writable `iommu_iova_range`s and
    // outlives the call. The kernel writes at most `num_iovas` entries there.
    let ret = unsafe { ioctl_with_mut_ref(fd, IOMMU_IOAS_IOVA_RANGES(), &mut arg) };
    if ret < 0 {
        return Err((Errno::last(), arg.num_iovas));
    }
    Ok((arg.num_iovas, arg.out_iova_alignment))
}

pub(crate) fn ioas_allow_iovas(
    fd: &IommuFd,
    ioas: u32,
    ranges: &[iommu_iova_range],
) -> Result<(), Errno> {
    let num_iovas = u32::try_from(ranges.len()).map_err(|_| Errno(libc::E2BIG))?;
    let arg = iommu_ioas_allow_iovas {
        size: size_of_u32::<iommu_ioas_allow_iovas>(),
        ioas_id: ioas,
        num_iovas,
        __reserved: 0,
        allowed_iovas: ranges.as_ptr() as u64,
    };
    // SAFETY: `fd` is an open iommufd; `arg` is initialised and its `allowed_iovas` points at
    // `ranges`, `num_iovas` readable entries that outlive the call. The kernel only reads.
    let ret = unsafe { ioctl_with_ref(fd, IOMMU_IOAS_ALLOW_IOVAS(), &arg) };
    check(ret)
}

/// `IOMMU_OPTION`; returns `val64` as the kernel left it (the value on a get).
pub(crate) fn option(fd: &IommuFd, arg: &mut iommu_option) -> Result<u64, Errno> {
    // SAFETY: `fd` is an open iommufd and `arg` is a live, initialised `iommu_option` whose
    // `size` matches its type; the kernel reads and writes only inside it.
    let ret = unsafe { ioctl_with_mut_ref(fd, IOMMU_OPTION(), arg) };
    check(ret)?;
    Ok(arg.val64)
}

pub(crate) fn hwpt_alloc(fd: &IommuFd, arg: &mut iommu_hwpt_alloc) -> Result<u32, Errno> {
    fd.alloc_iommu_hwpt(arg).map_err(errno_of)?;
    Ok(arg.out_hwpt_id)
}

pub(crate) fn viommu_alloc(fd: &IommuFd, arg: &mut iommu_viommu_alloc) -> Result<u32, Errno> {
    fd.alloc_iommu_viommu(arg).map_err(errno_of)?;
    Ok(arg.out_viommu_id)
}

pub(crate) fn vdevice_alloc(fd: &IommuFd, arg: &mut iommu_vdevice_alloc) -> Result<u32, Errno> {
    fd.alloc_iommu_vdevice(arg).map_err(errno_of)?;
    Ok(arg.out_vdevice_id)
}

/// `IOMMU_HWPT_INVALIDATE` of `entry_num` entries of `entry_len` bytes at `data` (which
/// holds at least `entry_len * entry_num` bytes). Returns the number of entries the kernel
/// handled; on failure, the errno and that number (the kernel writes it back either way).
pub(crate) fn hwpt_invalidate(
    fd: &IommuFd,
    id: u32,
    data_type: u32,
    entry_len: u32,
    data: &[u8],
) -> Result<u32, (Errno, u32)> {
    let entry_num = if entry_len == 0 {
        0
    } else {
        u32::try_from(data.len() / entry_len as usize).unwrap_or(u32::MAX)
    };
    let mut arg = iommu_hwpt_invalidate {
        size: size_of_u32::<iommu_hwpt_invalidate>(),
        hwpt_id: id,
        data_uptr: data.as_ptr() as u64,
        data_type,
        entry_len,
        entry_num,
        __reserved: 0,
    };
    // `IommuFd::invalidate_hwpt` issues the ioctl with `&mut arg`; the kernel reads at most
    // `entry_len * entry_num` bytes at `data_uptr`, which `data` holds (computed above from
    // its length), alive for the call.
    match fd.invalidate_hwpt(&mut arg) {
        Ok(()) => Ok(arg.entry_num),
        Err(e) => Err((errno_of(e), arg.entry_num.min(entry_num))),
    }
}

/// `IOMMU_VEVENTQ_ALLOC`; returns the object ID and the queue's file, already non-blocking.
pub(crate) fn veventq_alloc(
    fd: &IommuFd,
    arg: &mut iommu_veventq_alloc,
) -> Result<(u32, File), Errno> {
    fd.alloc_veventq(arg).map_err(errno_of)
}

/// Waits up to `timeout` for `fd` to be readable.
pub(crate) fn poll_in(fd: BorrowedFd<'_>, timeout: Duration) -> Result<bool, Errno> {
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: `pfd` is one valid, initialised `pollfd` that outlives the call, and the
        // count passed is 1; `fd` is borrowed, so it stays open for the call.
        let ret = unsafe { libc::poll(&mut pfd, 1, ms) };
        if ret >= 0 {
            return Ok(ret > 0 && pfd.revents & libc::POLLIN != 0);
        }
        let errno = Errno::last();
        if errno.raw() != libc::EINTR {
            return Err(errno);
        }
    }
}

/// `IOMMU_GET_HW_INFO` into `data`; returns the header the kernel filled in.
pub(crate) fn get_hw_info(
    fd: &IommuFd,
    dev_id: u32,
    data: &mut [u8],
) -> Result<iommu_hw_info, Errno> {
    let mut arg = iommu_hw_info {
        size: size_of_u32::<iommu_hw_info>(),
        dev_id,
        data_len: u32::try_from(data.len()).unwrap_or(u32::MAX),
        data_uptr: data.as_mut_ptr() as u64,
        ..Default::default()
    };
    // `IommuFd::get_hw_info` issues the ioctl with `&mut arg`; the kernel writes at most
    // `data_len` bytes to `data_uptr`, which is `data`, alive for the call.
    fd.get_hw_info(&mut arg).map_err(errno_of)?;
    Ok(arg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `_IO(type, nr)` on every Linux architecture this crate targets: no direction, no size.
    const fn io(ty: u32, nr: u32) -> u64 {
        ((ty << 8) | nr) as u64
    }

    /// The ioctl numbers against `include/uapi/linux/iommufd.h`: `IOMMUFD_TYPE` is `';'` and
    /// the commands count up from `IOMMUFD_CMD_BASE = 0x80` in the order of the header's enum.
    #[test]
    fn ioctl_numbers_match_uapi_header() {
        assert_eq!(IOMMUFD_TYPE, b';');
        assert_eq!(IOMMU_IOAS_ALLOW_IOVAS() as u64, io(0x3b, 0x82));
        assert_eq!(IOMMU_IOAS_COPY() as u64, io(0x3b, 0x83));
        assert_eq!(IOMMU_IOAS_IOVA_RANGES() as u64, io(0x3b, 0x84));
        assert_eq!(IOMMU_OPTION() as u64, io(0x3b, 0x87));
        assert_eq!(iommufd_ioctls::IOMMU_IOAS_MAP() as u64, io(0x3b, 0x85));
        assert_eq!(iommufd_ioctls::IOMMU_IOAS_MAP_FILE() as u64, io(0x3b, 0x8f));
        assert_eq!(iommufd_ioctls::IOMMU_DESTROY() as u64, io(0x3b, 0x80));
    }

    /// Struct layouts against the uapi header (sizes and the offsets of every field this
    /// crate writes or reads). A bindings update that moved a field would fail here.
    #[test]
    fn struct_layouts_match_uapi_header() {
        use std::mem::{offset_of, size_of};
        assert_eq!(size_of::<iommu_iova_range>(), 16);
        assert_eq!(size_of::<iommu_ioas_iova_ranges>(), 32);
        assert_eq!(offset_of!(iommu_ioas_iova_ranges, num_iovas), 8);
        assert_eq!(offset_of!(iommu_ioas_iova_ranges, allowed_iovas), 16);
        assert_eq!(offset_of!(iommu_ioas_iova_ranges, out_iova_alignment), 24);
        assert_eq!(size_of::<iommu_ioas_allow_iovas>(), 24);
        assert_eq!(offset_of!(iommu_ioas_allow_iovas, allowed_iovas), 16);
        assert_eq!(size_of::<iommu_ioas_map>(), 40);
        assert_eq!(offset_of!(iommu_ioas_map, user_va), 16);
        assert_eq!(offset_of!(iommu_ioas_map, length), 24);
        assert_eq!(offset_of!(iommu_ioas_map, iova), 32);
        assert_eq!(size_of::<iommu_ioas_map_file>(), 40);
        assert_eq!(offset_of!(iommu_ioas_map_file, fd), 12);
        assert_eq!(offset_of!(iommu_ioas_map_file, start), 16);
        assert_eq!(size_of::<iommu_ioas_copy>(), 40);
        assert_eq!(offset_of!(iommu_ioas_copy, length), 16);
        assert_eq!(offset_of!(iommu_ioas_copy, dst_iova), 24);
        assert_eq!(offset_of!(iommu_ioas_copy, src_iova), 32);
        assert_eq!(size_of::<iommu_ioas_unmap>(), 24);
        assert_eq!(size_of::<iommu_option>(), 24);
        assert_eq!(offset_of!(iommu_option, op), 8);
        assert_eq!(offset_of!(iommu_option, object_id), 12);
        assert_eq!(offset_of!(iommu_option, val64), 16);
        assert_eq!(offset_of!(iommu_hw_info, data_uptr), 16);
        assert_eq!(offset_of!(iommu_hw_info, out_capabilities), 32);
        assert_eq!(offset_of!(iommu_hwpt_alloc, out_hwpt_id), 16);
        assert_eq!(size_of::<iommu_hwpt_invalidate>(), 32);
        assert_eq!(offset_of!(iommu_hwpt_invalidate, data_uptr), 8);
        assert_eq!(offset_of!(iommu_hwpt_invalidate, entry_num), 24);
        assert_eq!(size_of::<iommu_veventq_alloc>(), 32);
        assert_eq!(offset_of!(iommu_veventq_alloc, veventq_depth), 16);
        assert_eq!(offset_of!(iommu_veventq_alloc, out_veventq_fd), 24);
        assert_eq!(
            size_of::<iommufd_bindings::iommufd::iommu_hwpt_arm_smmuv3>(),
            16
        );
        assert_eq!(
            size_of::<iommufd_bindings::iommufd::iommu_viommu_arm_smmuv3_invalidate>(),
            16
        );
        assert_eq!(
            size_of::<iommufd_bindings::iommufd::iommufd_vevent_header>(),
            crate::veventq::HEADER_LEN
        );
        assert_eq!(
            size_of::<iommufd_bindings::iommufd::iommu_vevent_arm_smmuv3>(),
            crate::veventq::SMMUV3_RECORD_LEN
        );
    }
}
