// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A real MSI-X interrupt behind the RISC-V IOMMU, in the riscv64 QEMU test host
//! (`tests/testhost/run-riscv64.sh`): an igb on vfio-pci, opened through
//! `/dev/vfio/devices` with iommufd, attached to an IOAS with RAM mapped, raises MSI-X
//! vectors whose eventfds fire, also after a vector moved to another hart.
//!
//! Upstream Linux 7.2 cannot do this: vfio-pci refuses every device behind the RISC-V IOMMU
//! (no `IOMMU_CAP_CACHE_COHERENCY`), and nothing maps an IMSIC interrupt file into an iommufd
//! domain. The riscv64 test kernel's patches 0002-0004 (`tests/testhost/kernel-riscv64/
//! patches`, `docs/uapi.md` "The RISC-V IMSIC behind the RISC-V IOMMU") add the capability, a
//! software MSI window at 0x8000000 (1 MiB) and the IMSIC's side: when an MSI is allocated,
//! every hart's S-level interrupt file page is mapped in the window, one page per hart in
//! CPU order, and the message carries the window page of the target hart. MSIs are not
//! isolated there, so the test host boots with `iommufd.allow_unsafe_interrupts=1`.
//!
//! The tests run on riscv64 only (elsewhere they print why and return). On the `patched`
//! kernel they need `/dev/iommu` and an igb bound to vfio-pci (the harness's `--bind 1`),
//! whose absence inside the test host is a failure. On the `upstream` kernel
//! (`TESTHOST_KERNEL_VARIANT=upstream`), `upstream_refuses_vfio_pci` binds an igb to vfio-pci
//! itself and checks the refusal; the others print why they cannot run.
//!
//! What the tests saw (the reserved regions, the table addresses, the harts) goes to stdout
//! unbuffered by the test harness, so the run log keeps it.

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use common::{FIRE_WAIT, Fixture, igb_fires, in_guest, msix_table_addresses};

use iommufd_ioas::{Access, IovaRange, ReservedKind};
use vfio_cdev::{IrqIndex, PciAddress, VfioDevice};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

/// The software MSI window the patched RISC-V IOMMU driver reports (patch 0003).
const SW_MSI: IovaRange = IovaRange {
    start: 0x800_0000,
    last: 0x80f_ffff,
};
/// One IMSIC interrupt file page; the window holds one per hart.
const IMSIC_PAGE: u64 = 0x1000;
/// Where the tests put RAM in the IOAS.
const RAM_IOVA: u64 = 0x4000_0000;

/// A line in the run log, past the test harness's capture.
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "riscv_imsic_msi: {line}");
    let _ = out.flush();
}

fn variant() -> String {
    std::env::var("TESTHOST_KERNEL_VARIANT").unwrap_or_default()
}

/// The fixture on a riscv64 patched kernel; `None` with the reason printed elsewhere.
fn fixture() -> Option<Fixture> {
    if !cfg!(target_arch = "riscv64") {
        eprintln!("skipped: the RISC-V IOMMU and IMSIC exist only in the riscv64 test host");
        return None;
    }
    if in_guest() && variant() != "patched" {
        report(&format!(
            "skipped: on the {:?} kernel vfio-pci cannot bind behind the RISC-V IOMMU and no \
             MSI window exists (upstream_refuses_vfio_pci checks the refusal)",
            variant()
        ));
        return None;
    }
    common::fixture()
}

/// NIC `nic` bound to the fixture's iommufd; an `EPERM` is explained (MSIs are not isolated
/// behind the RISC-V IOMMU).
fn bind(f: &Fixture, nic: usize) -> (VfioDevice, u32) {
    let mut dev = VfioDevice::open_pci(f.nics[nic]).expect("open by PCI address");
    match dev.bind(&f.iommufd) {
        Ok(id) => (dev, id),
        Err(e) => panic!(
            "bind {}: {e} (EPERM here means the kernel lacks \
             iommufd.allow_unsafe_interrupts=1: IMSIC MSIs are not isolated)",
            f.nics[nic]
        ),
    }
}

/// The number of online CPUs (harts).
fn online_cpus() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    assert!(n > 0, "sysconf(_SC_NPROCESSORS_ONLN) = {n}");
    n as u64
}

/// The window slot (the hart in CPU order) an MSI-X table address targets.
fn slot_of(addr: u64) -> u64 {
    assert!(
        (SW_MSI.start..=SW_MSI.last).contains(&addr),
        "MSI address {addr:#x} is outside the window {SW_MSI:?}"
    );
    assert_eq!(
        addr % IMSIC_PAGE,
        0,
        "MSI address {addr:#x} is not an interrupt file page"
    );
    (addr - SW_MSI.start) / IMSIC_PAGE
}

/// The host IRQ of vfio-pci's MSI-X vector `vector` of `addr` and its per-CPU counts, from
/// /proc/interrupts (`NN: c0 c1 ... chip ... vfio-msix[V](BDF)`).
fn host_irq(addr: PciAddress, vector: u32) -> (u32, Vec<u64>) {
    let name = format!("vfio-msix[{vector}]({addr})");
    let text = std::fs::read_to_string("/proc/interrupts").expect("/proc/interrupts");
    let cpus = online_cpus() as usize;
    for line in text.lines() {
        if !line.trim_end().ends_with(&name) {
            continue;
        }
        let (irq, rest) = line.trim_start().split_once(':').expect("irq line");
        let counts = rest
            .split_whitespace()
            .take(cpus)
            .map(|c| c.parse().expect("count"))
            .collect();
        return (irq.trim().parse().expect("irq number"), counts);
    }
    panic!("no {name} in /proc/interrupts:\n{text}");
}

#[test]
fn sw_msi_window_is_reserved_behind_the_riscv_iommu() {
    let Some(f) = fixture() else { return };
    let (mut dev, _) = bind(&f, 0);

    // The group's reserved regions (sysfs) carry the software MSI window, before attach.
    let resv = dev.reserved_regions().unwrap();
    let shown: Vec<String> = resv
        .iter()
        .map(|r| format!("{} {:?}", r.range, r.kind))
        .collect();
    report(&format!("{}: reserved regions {shown:?}", f.addr()));
    assert!(
        resv.iter()
            .any(|r| r.kind == ReservedKind::Msi && r.range == SW_MSI),
        "{resv:?}"
    );

    // After attach it is a hole of the IOAS: RAM cannot go there, it can go elsewhere.
    let ioas = Arc::new(f.iommufd.alloc_ioas().unwrap());
    dev.attach_ioas(&ioas).unwrap();
    let ranges = ioas.iova_ranges().unwrap();
    let holes: Vec<String> = ranges.holes().iter().map(|h| h.to_string()).collect();
    report(&format!("IOAS holes after attach {holes:?}"));
    assert!(ranges.holes().contains(&SW_MSI), "{:?}", ranges.ranges());
    let over = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(SW_MSI.start), 0x1000)]).unwrap();
    let e = ioas
        .map_guest_memory(&over, Access::READ_WRITE)
        .unwrap_err();
    assert_eq!(e.errno().map(|e| e.raw()), Some(libc::EINVAL), "{e}");
    let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(RAM_IOVA), 0x20_0000)]).unwrap();
    ioas.map_guest_memory(&ram, Access::READ_WRITE).unwrap();
    dev.detach().unwrap();
}

#[test]
fn msix_reaches_every_hart_through_the_window() {
    let Some(f) = fixture() else { return };
    let (mut dev, _) = bind(&f, 0);
    let ioas = Arc::new(f.iommufd.alloc_ioas().unwrap());
    dev.attach_ioas(&ioas).unwrap();
    let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(RAM_IOVA), 0x20_0000)]).unwrap();
    ioas.map_guest_memory(&ram, Access::READ_WRITE).unwrap();

    let efds = [
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
    ];
    dev.set_vector_eventfds(IrqIndex::Msix, 0, &[Some(&efds[0]), Some(&efds[1])])
        .unwrap();

    // The device's own table holds window addresses, one interrupt file page per hart:
    // never the physical IMSIC page (0x28000000 on QEMU virt), which the device cannot
    // reach through the iommufd domain.
    let harts = online_cpus();
    let table = msix_table_addresses(&dev, 2);
    report(&format!(
        "{}: {harts} harts, MSI-X table addresses {table:#x?}",
        f.addr()
    ));
    for &addr in &table {
        assert!(slot_of(addr) < harts, "{addr:#x} beyond {harts} harts");
    }

    // device -> RISC-V IOMMU (window page -> the hart's S-level interrupt file) -> IMSIC ->
    // vfio-pci's handler -> eventfd.
    for (v, efd) in efds.iter().enumerate() {
        assert!(
            igb_fires(&dev, v as u32, efd, FIRE_WAIT),
            "vector {v} did not fire through the window"
        );
    }

    // Move vector 0 to every other hart in turn: the IMSIC moves a PCI vector when it next
    // fires (IRQCHIP_MOVE_DEFERRED), writing the new hart's window page, which was mapped
    // when the vector was allocated. The interrupt is then taken on the new hart.
    let (irq, _) = host_irq(f.addr(), 0);
    let mut slot = slot_of(msix_table_addresses(&dev, 1)[0]);
    for step in 1..=harts {
        let target = (slot + 1) % harts;
        std::fs::write(
            format!("/proc/irq/{irq}/smp_affinity_list"),
            format!("{target}\n"),
        )
        .unwrap_or_else(|e| panic!("irq {irq} to CPU {target}: {e}"));
        // This interrupt still goes to the old hart and moves the vector.
        assert!(
            igb_fires(&dev, 0, &efds[0], FIRE_WAIT),
            "step {step}: vector 0 lost while moving to CPU {target}"
        );
        let addr = msix_table_addresses(&dev, 1)[0];
        assert_eq!(
            slot_of(addr),
            target,
            "step {step}: table address {addr:#x} after moving irq {irq} to CPU {target}"
        );
        let before = host_irq(f.addr(), 0).1;
        assert!(
            igb_fires(&dev, 0, &efds[0], FIRE_WAIT),
            "step {step}: vector 0 did not fire through CPU {target}'s page {addr:#x}"
        );
        let after = host_irq(f.addr(), 0).1;
        let taken_on: Vec<usize> = (0..after.len()).filter(|&c| after[c] > before[c]).collect();
        report(&format!(
            "step {step}: irq {irq} on CPU {target}, table address {addr:#x}, taken on CPU(s) \
             {taken_on:?}"
        ));
        assert_eq!(taken_on, vec![target as usize], "{before:?} -> {after:?}");
        slot = target;
    }
    dev.disable_irqs(IrqIndex::Msix).unwrap();
    dev.detach().unwrap();
}

/// Writes `value` to a sysfs file, returning the errno of a refusal.
fn sysfs_write(path: &Path, value: &str) -> Result<(), i32> {
    std::fs::write(path, value).map_err(|e| e.raw_os_error().unwrap_or(-1))
}

#[test]
fn upstream_refuses_vfio_pci() {
    if !cfg!(target_arch = "riscv64") || !in_guest() || variant() != "upstream" {
        eprintln!("skipped: checks the upstream riscv64 kernel inside the test host");
        return;
    }
    // The second igb (slot 6), whatever its driver (the upstream run binds none).
    let mut nics: Vec<_> = std::fs::read_dir("/sys/bus/pci/devices")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::read_to_string(p.join("device")).is_ok_and(|d| d.trim() == "0x10c9"))
        .collect();
    nics.sort();
    let dev = nics.last().expect("an igb NIC").clone();
    let bdf = dev.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        dev.join("iommu_group").exists(),
        "{bdf} is not behind the IOMMU"
    );
    sysfs_write(&dev.join("driver_override"), "vfio-pci").unwrap();
    if dev.join("driver").exists() {
        sysfs_write(&dev.join("driver/unbind"), &bdf).unwrap();
    }
    let refused = sysfs_write(Path::new("/sys/bus/pci/drivers/vfio-pci/bind"), &bdf);
    // Give the NIC back to igb before judging.
    sysfs_write(&dev.join("driver_override"), "\n").unwrap();
    let _ = sysfs_write(Path::new("/sys/bus/pci/drivers_probe"), &bdf);
    report(&format!(
        "upstream: binding {bdf} to vfio-pci: {}",
        match refused {
            Ok(()) => "accepted".to_owned(),
            Err(errno) => format!("refused, errno {errno}"),
        }
    ));
    assert_eq!(
        refused,
        Err(libc::EINVAL),
        "upstream 7.2 was expected to refuse vfio-pci behind the RISC-V IOMMU (no \
         IOMMU_CAP_CACHE_COHERENCY)"
    );
}
