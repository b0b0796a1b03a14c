// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The proposed user-settable software MSI window (`IOMMU_OPTION_SW_MSI_START` /
//! `IOMMU_OPTION_SW_MSI_SIZE`) and per-vector MSI addresses (`VFIO_IRQ_SET_DATA_MSI_IOVA |
//! VFIO_IRQ_SET_ACTION_PREPARE`), see `iommufd_ioas::proposed` and the project's
//! `docs/uapi.md`, against the project's patched test kernel and a real (QEMU-emulated) igb
//! NIC behind an SMMUv3 and a GICv3 ITS.
//!
//! Only the patched kernel has this UAPI, so every test here prints why and returns unless
//! `TESTHOST_KERNEL_VARIANT=patched` (the kernel argument `TESTHOST_KERNEL_VARIANT=patched`
//! reaches the test host's /init as an environment variable). Then, like `tests/kernel.rs`,
//! the tests need `/dev/iommu` and an Intel 82576 (8086:10c9) bound to vfio-pci; where either
//! is absent they print why and return, and inside the QEMU test host (`TESTHOST_IN_GUEST=1`)
//! absence is a failure. A device can be bound by one open file at a time, so the tests take
//! a lock.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    Fixture, GITS_TRANSLATER_PAGE_OFFSET, igb_fires, msix_table_addresses, open_bound,
    patched_kernel,
};

use iommufd_ioas::proposed::{Support, SwMsiWindow};
use iommufd_ioas::{Access, IommuOption, Iommufd, IovaRange, ReservedKind};
use vfio_cdev::IrqIndex;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

/// The software MSI window the SMMUv3 driver reports (`MSI_IOVA_BASE`, 1 MiB).
const DRIVER_SW_MSI: IovaRange = IovaRange {
    start: 0x800_0000,
    last: 0x80f_ffff,
};
/// Where the tests move the window: the page a VMM would give its vITS `GITS_TRANSLATER`.
const USER_START: u64 = 0x0a00_0000;
/// An IOVA with nothing mapped behind it.
const NOWHERE: u64 = 0x0b00_0000;

/// The common fixture, on the patched kernel only.
fn fixture() -> Option<Fixture> {
    if !patched_kernel() {
        eprintln!(
            "skipped: the SW_MSI window UAPI exists only on the project's patched kernel \
             (TESTHOST_KERNEL_VARIANT=patched)"
        );
        return None;
    }
    common::fixture()
}

/// The errno of an `IOMMU_OPTION` set, or 0 when it succeeded.
fn set_errno(iommufd: &Iommufd, option: IommuOption, dev_id: u32, value: u64) -> i32 {
    match iommufd.set_option(option, dev_id, value) {
        Ok(()) => 0,
        Err(e) => e.errno().map_or(-1, |e| e.raw()),
    }
}

fn window_of(iommufd: &Iommufd, dev_id: u32) -> SwMsiWindow {
    match iommufd.probe_sw_msi_window(dev_id).expect("probe") {
        Support::Available(w) => w,
        Support::Absent { errno } => panic!("window UAPI absent on the patched kernel: {errno}"),
    }
}

fn range(start: u64, mib: u64) -> IovaRange {
    IovaRange {
        start,
        last: start + (mib << 20) - 1,
    }
}

#[test]
fn get_reports_the_driver_window_until_set() {
    let Some(f) = fixture() else { return };
    let (dev, dev_id) = open_bound(&f, 0);
    // Before any SET: the driver's IOMMU_RESV_SW_MSI region, size rounded up to MiB.
    let w = window_of(&f.iommufd, dev_id);
    assert_eq!(w.range(), DRIVER_SW_MSI, "{w:?}");
    assert_eq!(w.size_mib, 1);
    // sysfs shows the same region (the group's view, unchanged by the option).
    let resv = dev.reserved_regions().unwrap();
    assert!(
        resv.iter()
            .any(|r| r.kind == ReservedKind::Msi && r.range == DRIVER_SW_MSI),
        "{resv:?}"
    );

    // SET then GET: the user values are the effective ones.
    f.iommufd
        .set_sw_msi_window(dev_id, SwMsiWindow::new(USER_START, 2).unwrap())
        .unwrap();
    let w = window_of(&f.iommufd, dev_id);
    assert_eq!((w.start, w.size_mib), (USER_START, 2));
    // The group's sysfs view keeps the driver's region.
    assert!(
        dev.reserved_regions()
            .unwrap()
            .iter()
            .any(|r| r.range == DRIVER_SW_MSI)
    );

    // An object that is not a device (an IOAS) or no object at all: ENOENT, which the probe
    // reports as an error, not as an old kernel.
    let ioas = f.iommufd.alloc_ioas().unwrap();
    for id in [ioas.id(), 0xffff] {
        let e = f.iommufd.probe_sw_msi_window(id).unwrap_err();
        assert_eq!(e.errno().map(|e| e.raw()), Some(libc::ENOENT), "{e}");
    }
    // An op that is neither SET nor GET is refused the way unknown options are.
    // (Not reachable through the typed API; the known ops are covered above.)
}

#[test]
fn set_validates_alignment_size_and_overflow() {
    let Some(f) = fixture() else { return };
    let (_dev, dev_id) = open_bound(&f, 0);
    let start = IommuOption::SwMsiStart;
    let size = IommuOption::SwMsiSize;
    // START must be 1 MiB aligned; SIZE at least 1 MiB and representable in bytes.
    for bad in [USER_START + 0x1000, USER_START + 0x8_0000, 1] {
        assert_eq!(set_errno(&f.iommufd, start, dev_id, bad), libc::EINVAL);
    }
    assert_eq!(set_errno(&f.iommufd, size, dev_id, 0), libc::EINVAL);
    assert_eq!(set_errno(&f.iommufd, size, dev_id, u64::MAX), libc::EINVAL);
    assert_eq!(set_errno(&f.iommufd, size, dev_id, 1 << 44), libc::EINVAL);
    // Failed SETs change nothing.
    assert_eq!(window_of(&f.iommufd, dev_id).range(), DRIVER_SW_MSI);

    // The last MiB of the IOVA space fits with 1 MiB; growing it to 2 MiB would wrap.
    let top = u64::MAX - (1 << 20) + 1;
    assert_eq!(set_errno(&f.iommufd, start, dev_id, top), 0);
    assert_eq!(set_errno(&f.iommufd, size, dev_id, 2), libc::EINVAL);
    assert_eq!(window_of(&f.iommufd, dev_id).size_mib, 1);
    // And the other way round: a 4 MiB window cannot move to the top.
    assert_eq!(set_errno(&f.iommufd, start, dev_id, USER_START), 0);
    assert_eq!(set_errno(&f.iommufd, size, dev_id, 4), 0);
    assert_eq!(set_errno(&f.iommufd, start, dev_id, top), libc::EINVAL);
    assert_eq!(window_of(&f.iommufd, dev_id).range(), range(USER_START, 4));
    // An address 0 window is as valid as any other (the kernel does not special-case it).
    assert_eq!(set_errno(&f.iommufd, start, dev_id, 0), 0);
    assert_eq!(window_of(&f.iommufd, dev_id).start, 0);
}

#[test]
fn attach_moves_the_hole_and_freezes_the_window() {
    let Some(f) = fixture() else { return };
    let (mut dev, dev_id) = open_bound(&f, 0);
    f.iommufd
        .set_sw_msi_window(dev_id, SwMsiWindow::new(USER_START, 1).unwrap())
        .unwrap();
    let ioas = Arc::new(f.iommufd.alloc_ioas().unwrap());
    dev.attach_ioas(&ioas).unwrap();

    // IOMMU_IOAS_IOVA_RANGES: the user window is the hole, 0x8000000 is allowed again.
    let ranges = ioas.iova_ranges().unwrap();
    let user = range(USER_START, 1);
    assert!(ranges.holes().contains(&user), "{:?}", ranges.ranges());
    assert!(!ranges.allows(&user));
    assert!(ranges.allows(&DRIVER_SW_MSI), "{:?}", ranges.ranges());
    // So guest RAM can be mapped where the driver's window was, and not over the new one.
    let low = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(DRIVER_SW_MSI.start), 0x10_0000)])
        .unwrap();
    ioas.map_guest_memory(&low, Access::READ_WRITE).unwrap();
    let over = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(USER_START), 0x1000)]).unwrap();
    let e = ioas
        .map_guest_memory(&over, Access::READ_WRITE)
        .unwrap_err();
    assert_eq!(e.errno().map(|e| e.raw()), Some(libc::EINVAL), "{e}");

    // Attached: both options refuse SET with EBUSY (even valid values), GET still answers.
    let start = IommuOption::SwMsiStart;
    assert_eq!(
        set_errno(&f.iommufd, start, dev_id, 0x0b00_0000),
        libc::EBUSY
    );
    assert_eq!(
        set_errno(&f.iommufd, IommuOption::SwMsiSize, dev_id, 2),
        libc::EBUSY
    );
    // Argument errors are still reported as such.
    assert_eq!(
        set_errno(&f.iommufd, start, dev_id, 0x0b00_1000),
        libc::EINVAL
    );
    assert_eq!(window_of(&f.iommufd, dev_id).range(), user);

    // Detached before any MSI was set up: the window may change again, and the next attach
    // uses the new one.
    dev.detach().unwrap();
    assert!(ioas.iova_ranges().unwrap().holes().is_empty());
    f.iommufd
        .set_sw_msi_window(dev_id, SwMsiWindow::new(0x0c00_0000, 2).unwrap())
        .unwrap();
    dev.attach_ioas(&ioas).unwrap();
    let holes = ioas.iova_ranges().unwrap().holes();
    assert_eq!(holes, vec![range(0x0c00_0000, 2)]);
    dev.detach().unwrap();
}

#[test]
fn attach_refuses_a_window_over_mappings_and_other_windows() {
    let Some(f) = fixture() else { return };
    let (mut dev, dev_id) = open_bound(&f, 0);
    let ioas = Arc::new(f.iommufd.alloc_ioas().unwrap());
    // RAM already mapped at the window: the window cannot be reserved.
    let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(USER_START), 0x20_0000)]).unwrap();
    ioas.map_guest_memory(&ram, Access::READ_WRITE).unwrap();
    f.iommufd
        .set_sw_msi_window(dev_id, SwMsiWindow::new(USER_START + 0x10_0000, 1).unwrap())
        .unwrap();
    let e = dev.attach_ioas(&ioas).unwrap_err();
    assert_eq!(e.errno().map(|e| e.raw()), Some(libc::EADDRINUSE), "{e}");
    assert_eq!(dev.attached_to(), None);
    // Nothing was left reserved by the failed attach.
    assert!(ioas.iova_ranges().unwrap().holes().is_empty());

    // Beyond the SMMU's input range (the aperture is reserved by the domain): EADDRINUSE.
    f.iommufd
        .set_sw_msi_window(dev_id, SwMsiWindow::new(1 << 60, 1).unwrap())
        .unwrap();
    let e = dev.attach_ioas(&ioas).unwrap_err();
    assert_eq!(e.errno().map(|e| e.raw()), Some(libc::EADDRINUSE), "{e}");

    // Elsewhere it attaches.
    f.iommufd
        .set_sw_msi_window(dev_id, SwMsiWindow::new(0x0e00_0000, 2).unwrap())
        .unwrap();
    dev.attach_ioas(&ioas).unwrap();

    // A second NIC in the same IOAS: a window that overlaps the first device's window but
    // starts elsewhere is refused; the same start, or a disjoint window, is fine.
    if f.nics.len() < 2 {
        eprintln!("second-device checks skipped: only one igb is bound to vfio-pci");
        return;
    }
    let (mut dev2, dev2_id) = open_bound(&f, 1);
    f.iommufd
        .set_sw_msi_window(dev2_id, SwMsiWindow::new(0x0e10_0000, 1).unwrap())
        .unwrap();
    let e = dev2.attach_ioas(&ioas).unwrap_err();
    assert_eq!(e.errno().map(|e| e.raw()), Some(libc::EADDRINUSE), "{e}");
    // The driver's window of the second device does not touch the first one's: fine, and
    // both holes show.
    let (mut dev2, dev2_id) = {
        drop(dev2);
        open_bound(&f, 1)
    };
    dev2.attach_ioas(&ioas).unwrap();
    let holes = ioas.iova_ranges().unwrap().holes();
    assert!(holes.contains(&DRIVER_SW_MSI), "{holes:?}");
    assert!(holes.contains(&range(0x0e00_0000, 2)), "{holes:?}");
    dev2.detach().unwrap();
    // Same start as the first device's window (smaller): shares its doorbell IOVAs.
    f.iommufd
        .set_sw_msi_window(dev2_id, SwMsiWindow::new(0x0e00_0000, 1).unwrap())
        .unwrap();
    dev2.attach_ioas(&ioas).unwrap();
    dev2.detach().unwrap();
    dev.detach().unwrap();
}

#[test]
fn real_msix_interrupt_through_the_moved_window() {
    let Some(f) = fixture() else { return };
    let (mut dev, dev_id) = open_bound(&f, 0);
    f.iommufd
        .set_sw_msi_window(dev_id, SwMsiWindow::new(USER_START, 1).unwrap())
        .unwrap();
    let ioas = Arc::new(f.iommufd.alloc_ioas().unwrap());
    dev.attach_ioas(&ioas).unwrap();
    // Guest RAM where the driver's window used to be: DMA and MSI must not collide.
    let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(DRIVER_SW_MSI.start), 0x20_0000)])
        .unwrap();
    ioas.map_guest_memory(&ram, Access::READ_WRITE).unwrap();

    let efds = [
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
    ];
    dev.set_vector_eventfds(IrqIndex::Msix, 0, &[Some(&efds[0]), Some(&efds[1])])
        .unwrap();

    // The device's own table holds the doorbell at the user window: window + the
    // GITS_TRANSLATER page offset (the first doorbell page of the window).
    let doorbell = USER_START + GITS_TRANSLATER_PAGE_OFFSET;
    assert_eq!(msix_table_addresses(&dev, 2), vec![doorbell, doorbell]);

    // The MSI write goes device -> SMMUv3 (IOVA 0x0a000040 -> the ITS doorbell) -> ITS ->
    // VFIO eventfd.
    for (v, efd) in efds.iter().enumerate() {
        assert!(
            igb_fires(&dev, v as u32, efd, Duration::from_secs(10)),
            "vector {v} did not fire through the moved window"
        );
    }
    dev.disable_irqs(IrqIndex::Msix).unwrap();

    // Once doorbells were mapped through the window the device's MSI messages carry IOVAs
    // in it: the window stays fixed for this binding even after detach.
    dev.detach().unwrap();
    assert_eq!(
        set_errno(&f.iommufd, IommuOption::SwMsiStart, dev_id, 0x0b00_0000),
        libc::EBUSY
    );
    assert_eq!(window_of(&f.iommufd, dev_id).range(), range(USER_START, 1));
}

#[test]
fn prepared_msi_iova_is_the_address_the_device_uses() {
    let Some(f) = fixture() else { return };
    let (mut dev, dev_id) = open_bound(&f, 0);
    // The zero-vector probe answers on both MSI indexes.
    assert!(dev.probe_msi_iova(IrqIndex::Msix).unwrap().is_available());
    assert!(dev.probe_msi_iova(IrqIndex::Msi).unwrap().is_available());
    f.iommufd
        .set_sw_msi_window(dev_id, SwMsiWindow::new(USER_START, 1).unwrap())
        .unwrap();
    let ioas = Arc::new(f.iommufd.alloc_ioas().unwrap());
    dev.attach_ioas(&ioas).unwrap();

    // Refused: vectors past the table, an address that is not 4-byte aligned, MSI vectors
    // other than 0 (MSI has one address), INTx.
    let doorbell = USER_START + GITS_TRANSLATER_PAGE_OFFSET;
    let count = dev.irq_info(IrqIndex::Msix).unwrap().count;
    let refused = [
        dev.prepare_msi_iovas(IrqIndex::Msix, count, &[doorbell]),
        dev.prepare_msi_iovas(IrqIndex::Msix, count - 1, &[doorbell, doorbell]),
        dev.prepare_msi_iovas(IrqIndex::Msix, 0, &[doorbell + 2]),
        dev.prepare_msi_iovas(IrqIndex::Msi, 1, &[doorbell]),
        dev.prepare_msi_iovas(IrqIndex::Intx, 0, &[doorbell]),
    ];
    for (i, r) in refused.into_iter().enumerate() {
        let e = r.unwrap_err();
        assert_eq!(
            e.errno().map(|e| e.raw()),
            Some(libc::EINVAL),
            "case {i}: {e}"
        );
    }

    // Vector 0 gets an address with nothing behind it, vector 1 the window's doorbell page.
    dev.prepare_msi_iovas(
        IrqIndex::Msix,
        0,
        &[NOWHERE + GITS_TRANSLATER_PAGE_OFFSET, doorbell],
    )
    .unwrap();
    let efds = [
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
    ];
    dev.set_vector_eventfds(IrqIndex::Msix, 0, &[Some(&efds[0]), Some(&efds[1])])
        .unwrap();
    assert_eq!(
        msix_table_addresses(&dev, 2),
        vec![NOWHERE + GITS_TRANSLATER_PAGE_OFFSET, doorbell]
    );
    // The address is what the device writes to: vector 1 arrives, vector 0's write faults in
    // the SMMU and never reaches the ITS.
    assert!(igb_fires(&dev, 1, &efds[1], Duration::from_secs(10)));
    assert!(!igb_fires(&dev, 0, &efds[0], Duration::from_millis(300)));

    // A new address takes effect when the vector is enabled again.
    dev.prepare_msi_iovas(IrqIndex::Msix, 0, &[doorbell])
        .unwrap();
    dev.set_vector_eventfd(IrqIndex::Msix, 0, Some(&efds[0]))
        .unwrap();
    assert_eq!(msix_table_addresses(&dev, 1), vec![doorbell]);
    assert!(igb_fires(&dev, 0, &efds[0], Duration::from_secs(10)));
    dev.disable_irqs(IrqIndex::Msix).unwrap();
}
