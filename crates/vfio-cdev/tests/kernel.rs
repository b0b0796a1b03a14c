// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! VFIO cdev + iommufd calls against a real kernel and a real (QEMU-emulated) igb NIC
//! behind an SMMUv3 and a GICv3 ITS.
//!
//! They need `/dev/iommu` and an Intel 82576 (8086:10c9) bound to vfio-pci (or the device
//! named by `VFIO_TEST_DEVICE=dddd:bb:dd.f`). Where either is absent they print why and
//! return; inside the QEMU test host (`TESTHOST_IN_GUEST=1`) absence is a failure. A device
//! can be bound by one open file at a time, so the tests take a lock.
//!
//! `TESTHOST_KERNEL_VARIANT=patched` says the kernel carries the project's SW_MSI window
//! patch; otherwise the proposed UAPI must be reported absent, as upstream 7.2 does.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{
    FIRE_WAIT, GITS_TRANSLATER_PAGE_OFFSET, fixture, msix_cap, msix_table_addresses,
    patched_kernel, poll_eventfd,
};

use iommufd_ioas::proposed::Support;
use iommufd_ioas::{
    Access, Error as IoasError, HwInfoData, Hwpt, HwptFlags, Iommufd, IovaRange, ReservedKind,
    Viommu, ViommuRefusal, ViommuType, probe_viommu,
};
use vfio_cdev::{Error, IrqIndex, RegionCap, VfioDevice};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

/// The software MSI window an upstream SMMUv3 kernel uses (`MSI_IOVA_BASE`, 1 MiB).
const SW_MSI: IovaRange = IovaRange {
    start: 0x800_0000,
    last: 0x80f_ffff,
};
#[test]
fn open_by_pci_address_and_by_cdev() {
    let Some(f) = fixture() else { return };
    let dev = VfioDevice::open_pci(f.addr()).unwrap();
    assert!(dev.name().starts_with("vfio"), "{}", dev.name());
    // Before bind the kernel grants nothing; the API says so without an ioctl.
    assert!(matches!(dev.info(), Err(Error::NotBound { .. })));
    let cdev = PathBuf::from("/dev/vfio/devices").join(dev.name());
    drop(dev);
    let mut dev = VfioDevice::open_cdev(&cdev).unwrap();
    assert_eq!(
        dev.sysfs_dir()
            .and_then(|d| d.file_name())
            .and_then(|n| n.to_str()),
        Some(f.addr().to_string().as_str())
    );
    dev.bind(&f.iommufd).unwrap();
    let info = dev.info().unwrap();
    assert!(info.is_pci());
    assert!(info.num_regions >= 9 && info.num_irqs >= 5, "{info:?}");
}

#[test]
fn config_space_of_the_igb() {
    let Some(f) = fixture() else { return };
    let (dev, _) = common::open_bound(&f, 0);
    assert_eq!(dev.read_config_u16(0).unwrap(), 0x8086);
    assert_eq!(dev.read_config_u16(2).unwrap(), 0x10c9);
    let cfg = dev.read_config_space().unwrap();
    assert!(cfg.len() == 256 || cfg.len() == 4096, "{}", cfg.len());
    assert_eq!(msix_cap(&dev) % 4, 0);
    // Past the end of config space: a bounds error naming the region, no kernel call.
    let mut b = [0u8; 4];
    let e = dev.read_config(cfg.len() as u64 - 2, &mut b).unwrap_err();
    assert!(matches!(e, Error::Bounds { index: 7, .. }), "{e}");
}

#[test]
fn bind_probe_attach_and_the_msi_hole() {
    let Some(f) = fixture() else { return };
    let (mut dev, dev_id) = common::open_bound(&f, 0);

    // The proposed window UAPI: absent on upstream (EOPNOTSUPP), present on the patched
    // kernel.
    let probe = f.iommufd.probe_sw_msi_window(dev_id).unwrap();
    match (&probe, patched_kernel()) {
        (Support::Absent { errno }, false) => assert_eq!(errno.raw(), libc::EOPNOTSUPP),
        (Support::Available(w), true) => assert_eq!(w.start, SW_MSI.start, "{w:?}"),
        (p, patched) => panic!("probe {p:?} on patched={patched}"),
    }
    // The per-vector MSI IOVA: absent upstream (EINVAL), present with the project's patch.
    let vprobe = dev.probe_msi_iova(IrqIndex::Msix).unwrap();
    assert_eq!(vprobe.is_available(), patched_kernel(), "{vprobe:?}");

    // Reserved regions are visible in sysfs before attach.
    let resv = dev.reserved_regions().unwrap();
    assert!(
        resv.iter()
            .any(|r| r.kind == ReservedKind::Msi && r.range == SW_MSI),
        "{resv:?}"
    );

    let ioas = Arc::new(f.iommufd.alloc_ioas().unwrap());
    let hwpt_id = dev.attach_ioas(&ioas).unwrap();
    assert_ne!(hwpt_id, ioas.id());
    assert_eq!(dev.attached_to(), Some(ioas.id()));

    // After attach the window is a hole in the IOAS's allowed ranges.
    let ranges = ioas.iova_ranges().unwrap();
    assert!(ranges.holes().contains(&SW_MSI), "{:?}", ranges.ranges());
    assert!(!ranges.allows(&SW_MSI));

    // Mapping over it is a typed EINVAL naming the range; mapping RAM elsewhere works.
    let mem =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(SW_MSI.start), 0x20_0000)]).unwrap();
    let e = ioas.map_guest_memory(&mem, Access::READ_WRITE).unwrap_err();
    assert!(
        matches!(
            e,
            IoasError::IoasMap {
                iova: Some(0x800_0000),
                length: 0x20_0000,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.errno().map(|e| e.raw()), Some(libc::EINVAL), "{e}");
    let ram =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x4000_0000), 0x20_0000)]).unwrap();
    ioas.map_guest_memory(&ram, Access::READ_WRITE).unwrap();

    // GET_HW_INFO: the SMMUv3 behind the device.
    let hw = f.iommufd.hw_info(dev_id).unwrap();
    assert!(matches!(hw.data, HwInfoData::ArmSmmuV3 { .. }), "{hw:?}");

    // Attaching again replaces the page table (the kernel's replace semantics).
    dev.attach_ioas(&ioas).unwrap();
    dev.detach().unwrap();
    assert_eq!(dev.attached_to(), None);
    // Detached: the window is no longer reserved in this IOAS.
    assert!(ioas.iova_ranges().unwrap().holes().is_empty());
}

#[test]
fn region_info_capabilities_and_bar_mmap() {
    let Some(f) = fixture() else { return };
    let (dev, _) = common::open_bound(&f, 0);
    let cap = msix_cap(&dev);
    let table = dev.read_config_u32(cap + 4).unwrap();
    let (bir, table_off) = (table & 7, u64::from(table & !7));
    let bar = dev.region_info(bir).unwrap();
    assert!(bar.mappable() && bar.msix_mappable(), "{bar:?}");
    assert!(bar.caps.contains(&RegionCap::MsixMappable));
    // Every BAR answers (absent BARs with size 0) without a parse error.
    for i in 0..6 {
        dev.region_info(i).unwrap();
    }
    // The page holding the MSI-X table maps because of MSIX_MAPPABLE; entries start masked.
    let page = table_off & !0xfff;
    let map = dev.mmap_region(&bar, page, 0x1000).unwrap();
    let ctrl = map.read_u32((table_off - page) as usize + 12).unwrap();
    assert_eq!(ctrl & 1, 1, "vector 0 should be masked at reset");
    // Out of bounds or misaligned accessors refuse instead of faulting.
    assert_eq!(map.read_u32(0x1000), None);
    assert_eq!(map.read_u32(2), None);
    // Mapping beyond the BAR is a bounds error.
    let e = dev.mmap_region(&bar, bar.size, 0x1000).unwrap_err();
    assert!(matches!(e, Error::Bounds { .. }), "{e}");
    // BAR0 (registers): STATUS (0x8) reads through the mapping.
    let bar0 = dev.region_info(0).unwrap();
    let regs = dev.mmap_region(&bar0, 0, 0x10000.min(bar0.size)).unwrap();
    assert_ne!(regs.read_u32(0x8), Some(u32::MAX));
}

#[test]
fn per_vector_set_irqs() {
    let Some(f) = fixture() else { return };
    let (mut dev, _) = common::open_bound(&f, 0);
    let ioas = Arc::new(f.iommufd.alloc_ioas().unwrap());
    dev.attach_ioas(&ioas).unwrap();
    let info = dev.irq_info(IrqIndex::Msix).unwrap();
    assert_eq!(info.count, 10, "{info:?}");
    assert!(info.eventfd());
    let efd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    // Assign vector 3 only, fire it from userspace, see it, unassign it.
    dev.set_vector_eventfd(IrqIndex::Msix, 3, Some(&efd))
        .unwrap();
    dev.trigger_irq(IrqIndex::Msix, 3).unwrap();
    assert!(poll_eventfd(&efd, FIRE_WAIT));
    dev.set_vector_eventfd(IrqIndex::Msix, 3, None).unwrap();
    dev.trigger_irq(IrqIndex::Msix, 3).unwrap();
    assert!(!poll_eventfd(&efd, Duration::from_millis(100)));
    // A vector the device does not have: typed error naming index and range.
    let e = dev
        .set_vector_eventfd(IrqIndex::Msix, info.count + 5, Some(&efd))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::SetIrqs {
                index: IrqIndex::Msix,
                start: 15,
                count: 1,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.errno().map(|e| e.raw()), Some(libc::EINVAL), "{e}");
    dev.disable_irqs(IrqIndex::Msix).unwrap();
}

#[test]
fn real_msix_interrupt_through_smmu_and_its() {
    let Some(f) = fixture() else { return };
    let (mut dev, _) = common::open_bound(&f, 0);
    let ioas = Arc::new(f.iommufd.alloc_ioas().unwrap());
    dev.attach_ioas(&ioas).unwrap();
    let ram =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x4000_0000), 0x20_0000)]).unwrap();
    ioas.map_guest_memory(&ram, Access::READ_WRITE).unwrap();

    let efds = [
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
    ];
    dev.set_vector_eventfds(IrqIndex::Msix, 0, &[Some(&efds[0]), Some(&efds[1])])
        .unwrap();

    // What the kernel programmed into the device's own table: the doorbell at its software
    // MSI window (sw_msi IOVA + GITS_TRANSLATER's page offset), read through the mappable BAR.
    for (v, addr) in msix_table_addresses(&dev, 2).into_iter().enumerate() {
        assert_eq!(
            addr,
            SW_MSI.start + GITS_TRANSLATER_PAGE_OFFSET,
            "vector {v}"
        );
    }

    // Bus master on, then make the igb raise vectors 0 and 1: GPIE = NSICR | MSIX_MODE |
    // EIAME | PBA, EIMS enables both, EICS sets the cause.
    let cmd = dev.read_config_u16(4).unwrap();
    dev.write_config_u16(4, cmd | 0x4).unwrap();
    let bar0 = dev.region_info(0).unwrap();
    let regs = dev.mmap_region(&bar0, 0, 0x2000).unwrap();
    assert!(regs.write_u32(0x1514, 1 | (1 << 4) | (1 << 30) | (1 << 31)));
    assert!(regs.write_u32(0x1524, 0x3));
    assert!(regs.write_u32(0x1520, 0x1));
    assert!(poll_eventfd(&efds[0], FIRE_WAIT), "vector 0 did not fire");
    assert!(regs.write_u32(0x1520, 0x2));
    assert!(poll_eventfd(&efds[1], FIRE_WAIT), "vector 1 did not fire");

    assert!(regs.write_u32(0x1528, 0x3)); // EIMC: mask again
    dev.write_config_u16(4, cmd).unwrap();
    dev.disable_irqs(IrqIndex::Msix).unwrap();
}

#[test]
fn error_paths_and_teardown_order() {
    let Some(f) = fixture() else { return };
    let fds_before = std::fs::read_dir("/proc/self/fd").unwrap().count();
    {
        let (mut dev, _) = common::open_bound(&f, 0);
        // Binding twice through the API: refused locally.
        let e = dev.bind(&f.iommufd).unwrap_err();
        assert!(matches!(e, Error::AlreadyBound { .. }), "{e}");
        // A second open file of the same device cannot bind while the first is bound.
        let mut second = VfioDevice::open_pci(f.addr()).unwrap();
        let e = second.bind(&f.iommufd).unwrap_err();
        assert!(matches!(e, Error::Bind { .. }), "{e}");
        assert!(e.errno().is_some(), "{e}");
        drop(second);

        // An IOAS of another iommufd: refused before the kernel sees it.
        let other = Iommufd::open().unwrap();
        let foreign = Arc::new(other.alloc_ioas().unwrap());
        let e = dev.attach_ioas(&foreign).unwrap_err();
        assert!(matches!(e, Error::ForeignIommufd { .. }), "{e}");

        // Destroying an IOAS a device is attached to: EBUSY, and the IOAS comes back alive.
        let ioas = Arc::new(f.iommufd.alloc_ioas().unwrap());
        dev.attach_ioas(&ioas).unwrap();
        dev.detach().unwrap();
        dev.attach_ioas(&ioas).unwrap();
        let raw_id = ioas.id();
        let e = f.iommufd.destroy_raw(raw_id).unwrap_err();
        assert_eq!(e.errno().map(|e| e.raw()), Some(libc::EBUSY), "{e}");
        dev.detach().unwrap();
        let ioas = Arc::try_unwrap(ioas).expect("the device released its reference at detach");
        ioas.destroy().unwrap();
        // Detaching when nothing is attached: refused locally (the kernel would accept it
        // silently, which would hide the caller's confusion).
        let e = dev.detach().unwrap_err();
        assert!(matches!(e, Error::NotAttached { .. }), "{e}");
    }
    {
        // Dropping the device while attached and mapped, then the IOAS, then the iommufd:
        // the kernel unwinds it all; a fresh bind works right away.
        let (mut dev, _) = common::open_bound(&f, 0);
        let ioas = Arc::new(f.iommufd.alloc_ioas().unwrap());
        dev.attach_ioas(&ioas).unwrap();
        drop(ioas); // the device still holds it
        drop(dev);
        let (mut dev, _) = common::open_bound(&f, 0);
        let ioas = Arc::new(f.iommufd.alloc_ioas().unwrap());
        dev.attach_ioas(&ioas).unwrap();
    }
    assert_eq!(
        std::fs::read_dir("/proc/self/fd").unwrap().count(),
        fds_before
    );
}

#[test]
fn reset_and_reenable() {
    let Some(f) = fixture() else { return };
    let (mut dev, _) = common::open_bound(&f, 0);
    let ioas = Arc::new(f.iommufd.alloc_ioas().unwrap());
    dev.attach_ioas(&ioas).unwrap();
    let efd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    dev.set_vector_eventfd(IrqIndex::Msix, 0, Some(&efd))
        .unwrap();
    if !dev.info().unwrap().can_reset() {
        let e = dev.reset().unwrap_err();
        assert!(matches!(e, Error::ResetUnsupported { .. }), "{e}");
        return;
    }
    dev.reset().unwrap();
    // Vectors can be enabled again after a reset.
    dev.set_vector_eventfd(IrqIndex::Msix, 0, Some(&efd))
        .unwrap();
    dev.trigger_irq(IrqIndex::Msix, 0).unwrap();
    assert!(poll_eventfd(&efd, FIRE_WAIT));
    dev.disable_irqs(IrqIndex::Msix).unwrap();
}

/// HWPT and vIOMMU objects on the real SMMUv3: a paging HWPT mirrors its IOAS and a device
/// attaches to it; destroying it while attached is EBUSY; a nesting parent comes up; a vIOMMU
/// is refused on an untainted kernel and the probe reports why.
#[test]
fn hwpt_viommu_and_vdevice_objects() {
    let Some(f) = fixture() else { return };
    let (mut dev, dev_id) = common::open_bound(&f, 0);
    let ioas = Arc::new(f.iommufd.alloc_ioas().unwrap());
    let hwpt = Arc::new(Hwpt::alloc_paging(&ioas, dev_id, HwptFlags::default()).unwrap());
    assert_eq!(hwpt.parent_id(), ioas.id());
    assert!(!hwpt.is_nest_parent());
    assert_eq!(dev.attach_hwpt(&hwpt, &f.iommufd).unwrap(), hwpt.id());
    // Mappings of the IOAS reach the HWPT; the reserved window shows through it.
    let ram =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x4000_0000), 0x20_0000)]).unwrap();
    ioas.map_guest_memory(&ram, Access::READ_WRITE).unwrap();
    assert!(ioas.iova_ranges().unwrap().holes().contains(&SW_MSI));
    // The HWPT is in use: EBUSY through a raw destroy, and the object stays.
    let e = f.iommufd.destroy_raw(hwpt.id()).unwrap_err();
    assert_eq!(e.errno().map(|e| e.raw()), Some(libc::EBUSY), "{e}");
    dev.detach().unwrap();
    let hwpt = Arc::try_unwrap(hwpt).expect("released at detach");
    hwpt.destroy().unwrap();

    // A nest parent comes up on QEMU's SMMUv3 (stage 1 + stage 2); a vIOMMU does not on
    // these untainted boots: no S2FWB, and a DT-described igb is not CANWBS. The probe names
    // that reason, and whether the kernel carries the test-only switch (patched variant: yes,
    // off; upstream: absent). The nesting suite (tests/nesting.rs) runs on the boot that
    // turns the switch on.
    let parent = Arc::new(Hwpt::alloc_nest_parent(&ioas, dev_id).unwrap());
    assert!(parent.is_nest_parent());
    let e = Viommu::alloc(&parent, dev_id, ViommuType::ArmSmmuV3).unwrap_err();
    assert!(
        matches!(e, IoasError::ViommuAlloc { viommu_type: 1, .. }),
        "{e}"
    );
    assert_eq!(e.errno().map(|e| e.raw()), Some(libc::EOPNOTSUPP), "{e}");
    let probe = probe_viommu(&ioas, dev_id).unwrap();
    let idr = probe.idr.expect("an SMMUv3");
    assert!(idr.s1p() && idr.s2p() && !idr.fwb(), "{:08x?}", idr.raw());
    assert_eq!(idr.check_nesting(), Ok(()));
    let switch = if patched_kernel() { Some(false) } else { None };
    assert_eq!(
        probe.support,
        Err(ViommuRefusal::Incoherent {
            assume_coherent: switch
        })
    );
    println!(
        "nest parent {} allocated; vIOMMU refused: {}",
        parent.id(),
        probe.support.unwrap_err()
    );
    // A vIOMMU needs a nesting parent: refused before the kernel sees it.
    let plain = Arc::new(Hwpt::alloc_paging(&ioas, dev_id, HwptFlags::default()).unwrap());
    let e = Viommu::alloc(&plain, dev_id, ViommuType::ArmSmmuV3).unwrap_err();
    assert!(matches!(e, IoasError::InvalidArgument { .. }), "{e}");
}
