// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! IOAS calls against a real kernel.
//!
//! They need `/dev/iommu` (`CONFIG_IOMMUFD`). Where it is absent they print why and return;
//! inside the QEMU test host (`TESTHOST_IN_GUEST=1`) absence is a failure. No device is
//! needed: everything here works on an IOAS with nothing attached. Device-dependent calls
//! (attach, reserved windows, hw info, the proposed options) are tested in `vfio-cdev`.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use iommufd_ioas::{Access, Error, IommuOption, Iommufd, IovaRange, MapTarget};
use vm_memory::{GuestAddress, GuestMemoryMmap};

fn iommufd() -> Option<Arc<Iommufd>> {
    if !Path::new("/dev/iommu").exists() {
        assert!(
            std::env::var_os("TESTHOST_IN_GUEST").is_none(),
            "/dev/iommu is missing inside the test host"
        );
        eprintln!("skipped: /dev/iommu absent (no CONFIG_IOMMUFD); runs in the QEMU test host");
        return None;
    }
    Some(Iommufd::open().expect("open /dev/iommu"))
}

fn errno(e: &Error) -> i32 {
    e.errno().map(|e| e.raw()).unwrap_or(0)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn fresh_ioas_allows_everything() {
    let Some(fd) = iommufd() else { return };
    let ioas = fd.alloc_ioas().unwrap();
    let ranges = ioas.iova_ranges().unwrap();
    assert_eq!(
        ranges.ranges(),
        &[IovaRange {
            start: 0,
            last: u64::MAX
        }]
    );
    assert!(ranges.holes().is_empty());
    assert!(ranges.alignment().is_power_of_two());
}

#[test]
fn map_guest_memory_unmap_and_errors() {
    let Some(fd) = iommufd() else { return };
    let ioas = fd.alloc_ioas().unwrap();
    let mem = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0x4000_0000), 0x20_0000),
        (GuestAddress(0x8000_0000), 0x10_0000),
    ])
    .unwrap();
    let mapped = ioas.map_guest_memory(&mem, Access::READ_WRITE).unwrap();
    assert_eq!(
        mapped,
        vec![
            IovaRange::from_len(0x4000_0000, 0x20_0000).unwrap(),
            IovaRange::from_len(0x8000_0000, 0x10_0000).unwrap()
        ]
    );
    // Mapping the same IOVA again is refused (FIXED_IOVA over a used range).
    let e = ioas.map_guest_memory(&mem, Access::READ_WRITE).unwrap_err();
    assert!(
        matches!(
            e,
            Error::IoasMap {
                iova: Some(0x4000_0000),
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(errno(&e), libc::EEXIST, "{e}");
    // Unmapping what is not mapped is a typed ENOENT.
    let e = ioas.unmap(0x1000_0000, 0x1000).unwrap_err();
    assert!(
        matches!(
            e,
            Error::IoasUnmap {
                iova: 0x1000_0000,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(errno(&e), libc::ENOENT, "{e}");
    assert!(
        e.to_string()
            .starts_with("IOMMU_IOAS_UNMAP of 0x10000000+0x1000 from IOAS")
    );
    // Splitting a mapping is refused.
    let e = ioas.unmap(0x4000_0000, 0x1000).unwrap_err();
    assert!(matches!(e, Error::IoasUnmap { .. }), "{e}");
    assert_eq!(ioas.unmap(0x4000_0000, 0x20_0000).unwrap(), 0x20_0000);
    assert_eq!(ioas.unmap_all().unwrap(), 0x10_0000);
    assert_eq!(ioas.unmap_all().unwrap(), 0);
}

#[test]
fn local_validation_happens_before_the_kernel() {
    let Some(fd) = iommufd() else { return };
    let ioas = fd.alloc_ioas().unwrap();
    let e = ioas.unmap(0x1000, 0).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
    let e = ioas.unmap(u64::MAX - 0xfff, 0x2000).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
}

#[test]
fn auto_iova_and_copy_between_ioases() {
    let Some(fd) = iommufd() else { return };
    let src = fd.alloc_ioas().unwrap();
    let dst = fd.alloc_ioas().unwrap();
    let mem =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x4000_0000), 0x10_0000)]).unwrap();
    src.map_guest_memory(&mem, Access::READ_WRITE).unwrap();
    // Copy to a fixed IOVA and to one the kernel picks.
    let at = dst
        .copy_from(
            &src,
            0x4000_0000,
            0x10_0000,
            MapTarget::Fixed(0x9000_0000),
            Access::READ_WRITE,
        )
        .unwrap();
    assert_eq!(at, 0x9000_0000);
    let auto = dst
        .copy_from(&src, 0x4000_0000, 0x10_0000, MapTarget::Auto, Access::READ)
        .unwrap();
    assert_ne!(auto, 0x9000_0000);
    assert_eq!(auto % 0x1000, 0);
    // A part of a mapping can be copied (Linux 7.2 accepts any fully mapped source range);
    // a source range with nothing mapped is a typed ENOENT naming both IOASes.
    let part = dst
        .copy_from(&src, 0x4000_1000, 0x1000, MapTarget::Auto, Access::READ)
        .unwrap();
    let e = dst
        .copy_from(&src, 0x5000_0000, 0x1000, MapTarget::Auto, Access::READ)
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::IoasCopy {
                src_iova: 0x5000_0000,
                dst_iova: None,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(errno(&e), libc::ENOENT, "{e}");
    dst.unmap(part, 0x1000).unwrap();
    assert_eq!(dst.unmap_all().unwrap(), 0x20_0000);
}

#[test]
fn map_file_from_memfd() {
    let Some(fd) = iommufd() else { return };
    let ioas = fd.alloc_ioas().unwrap();
    // SAFETY: memfd_create with a valid NUL-terminated name; the result is checked.
    let raw = unsafe { libc::memfd_create(c"iommufd-ioas-test".as_ptr(), 0) };
    assert!(raw >= 0);
    // SAFETY: `raw` is a fresh descriptor we own.
    let memfd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ftruncate on our own descriptor.
    assert_eq!(unsafe { libc::ftruncate(raw, 0x40_0000) }, 0);
    let iova = ioas
        .map_file(
            memfd.as_fd(),
            0x20_0000,
            0x20_0000,
            MapTarget::Fixed(0x4000_0000),
            Access::READ_WRITE,
        )
        .unwrap();
    assert_eq!(iova, 0x4000_0000);
    // Over an existing mapping: a typed EEXIST naming the fd, offset and IOVA. (Without an
    // attached device iommufd pins file pages lazily, so a bad file is only refused when a
    // device needs the pages; the fixed-IOVA conflict is checked at once.)
    let e = ioas
        .map_file(
            memfd.as_fd(),
            0,
            0x1000,
            MapTarget::Fixed(0x4010_0000),
            Access::READ,
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::IoasMapFile {
                offset: 0,
                iova: Some(0x4010_0000),
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(errno(&e), libc::EEXIST, "{e}");
    assert_eq!(ioas.unmap(0x4000_0000, 0x20_0000).unwrap(), 0x20_0000);
}

#[test]
fn allow_iovas_and_ranges() {
    let Some(fd) = iommufd() else { return };
    let ioas = fd.alloc_ioas().unwrap();
    let win = IovaRange::new(0x4000_0000, 0x7fff_ffff).unwrap();
    ioas.allow_iovas(&[win]).unwrap();
    // Automatic placement now stays inside the allowed list.
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
    let region = vm_memory::GuestMemoryBackend::find_region(&mem, GuestAddress(0)).unwrap();
    let host =
        vm_memory::GuestMemoryRegion::get_host_address(region, vm_memory::MemoryRegionAddress(0))
            .unwrap();
    // SAFETY: `host` is guest memory owned by `mem`, accessed only through vm-memory's
    // volatile accessors, and unmapped below before `mem` is dropped.
    let iova = unsafe { ioas.map_user(host, 0x1000, MapTarget::Auto, Access::READ_WRITE) }.unwrap();
    assert!(win.contains(iova), "{iova:#x}");
    ioas.unmap(iova, 0x1000).unwrap();
    // An inverted range is refused by the kernel with a typed error.
    let bad = IovaRange {
        start: 0x2000,
        last: 0x1000,
    };
    let e = ioas.allow_iovas(&[bad]).unwrap_err();
    assert!(matches!(e, Error::AllowIovas { count: 1, .. }), "{e}");
    ioas.allow_iovas(&[]).unwrap();
}

#[test]
fn options_huge_pages_and_unknown() {
    let Some(fd) = iommufd() else { return };
    let ioas = fd.alloc_ioas().unwrap();
    assert!(ioas.huge_pages().unwrap());
    ioas.set_huge_pages(false).unwrap();
    assert!(!ioas.huge_pages().unwrap());
    assert_eq!(fd.get_option(IommuOption::RlimitMode, 0).unwrap(), 0);
    // An option no kernel knows: EOPNOTSUPP, named in the error.
    let e = fd.get_option(IommuOption::Other(0x7777), 0).unwrap_err();
    assert_eq!(errno(&e), libc::EOPNOTSUPP, "{e}");
    // The proposed options on an object that is not a device: an error, never a value.
    assert!(fd.get_option(IommuOption::SwMsiStart, ioas.id()).is_err());
}

#[test]
fn destroy_and_drop_leave_nothing_behind() {
    let Some(fd) = iommufd() else { return };
    let before = open_fds();
    for _ in 0..32 {
        let fd2 = Iommufd::open().unwrap();
        let a = fd2.alloc_ioas().unwrap();
        let b = fd2.alloc_ioas().unwrap();
        let id = b.id();
        a.destroy().unwrap();
        drop(b);
        // The ID is gone: destroying it again is ENOENT.
        let e = fd2.destroy_raw(id).unwrap_err();
        assert_eq!(errno(&e), libc::ENOENT, "{e}");
    }
    assert_eq!(open_fds(), before);
    // A destroyed ID cannot be reached from another iommufd either.
    let ioas = fd.alloc_ioas().unwrap();
    let other = Iommufd::open().unwrap();
    assert!(other.destroy_raw(ioas.id()).is_err());
}
