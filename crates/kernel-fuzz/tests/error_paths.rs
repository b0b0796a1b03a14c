// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Error paths of the passthrough bring-up for real, in the QEMU test host (issue 18): each
//! kernel call made to fail on purpose must produce an error naming the operation, the
//! object and the errno, and leave nothing behind: the IOAS holds nothing more than before,
//! the device can be bound again, the FOLL_PIN pinned-page count is back, and fresh IOASes
//! get every object ID the failed attempt used (iommufd allocates IDs lowest-free).
//!
//! - an IOAS map over the software MSI window after attach (`EINVAL`);
//! - the whole bring-up (`vfio_passthrough::setup`) with guest RAM across that window:
//!   `PreparedDevice::attach` fails in its map, and rolls back;
//! - an attach to a HWPT that was destroyed (`ENOENT`): the device stays where it was;
//! - a second bind of the device from another descriptor: `EINVAL` (Linux's `vfio_df_open`
//!   lets a cdev device be opened by one binding only), and the first binding works on;
//! - the real MSI-X table with the device's memory decode off, then in D3hot: reads answer
//!   "not readable now" and writes are refused by name instead of a SIGBUS (the fix of
//!   commit 6ce0bfb, "never touch the real MSI-X table while memory decode is off").
//!
//! Outside the test host they print why and pass; inside it a missing device fails.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use iommufd_ioas::{Access, Hwpt, HwptFlags, Iommufd};
use vfio_cdev::{PciAddress, VfioDevice};
use vm_memory::{GuestAddress, GuestMemoryMmap};

static DEVICE_LOCK: Mutex<()> = Mutex::new(());

/// Straight to the stdout descriptor: libtest captures `println!` of passing tests, and the
/// test host shows this output with the suite's.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

fn in_guest() -> bool {
    std::env::var_os("TESTHOST_IN_GUEST").is_some()
}

fn read_hex(path: &std::path::Path) -> Option<u32> {
    let s = std::fs::read_to_string(path).ok()?;
    u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
}

/// The igb bound to vfio-pci, with the lock that serialises the tests on it.
fn device() -> Option<(std::sync::MutexGuard<'static, ()>, PciAddress)> {
    let guard = DEVICE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut found: Vec<PathBuf> = std::fs::read_dir("/sys/bus/pci/devices")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            read_hex(&p.join("vendor")) == Some(0x8086)
                && read_hex(&p.join("device")) == Some(0x10c9)
                && p.join("vfio-dev").is_dir()
        })
        .collect();
    found.sort();
    let addr = found
        .first()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok());
    match addr {
        Some(a) if std::path::Path::new("/dev/iommu").exists() => Some((guard, a)),
        _ => {
            assert!(
                !in_guest(),
                "in the test host without /dev/iommu or an igb on vfio-pci"
            );
            out!(
                "error paths: skipped: needs /dev/iommu and an igb on vfio-pci (the QEMU test host)"
            );
            None
        }
    }
}

fn pinned_pages() -> i64 {
    testhost::proc_stats::pinned_pages().expect("/proc/vmstat has the FOLL_PIN counters")
}

/// Waits (up to 2 s) for the pinned-page count to come back to `want`.
fn pins_back_to(want: i64) -> i64 {
    for _ in 0..40 {
        let now = pinned_pages();
        if now == want {
            return now;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    pinned_pages()
}

/// Every word of `words` appears in the error's text.
fn names(e: &dyn std::fmt::Display, words: &[&str]) {
    let text = e.to_string();
    for w in words {
        assert!(text.contains(w), "the error {text:?} does not name {w:?}");
    }
}

/// Allocates `n` fresh IOASes on `iommufd` and checks they get the lowest IDs but `held`.
fn ids_free(iommufd: &Arc<Iommufd>, held: &[u32], n: usize) {
    let fresh: Vec<_> = (0..n)
        .map(|_| iommufd.alloc_ioas().expect("IOAS"))
        .collect();
    let got: Vec<u32> = fresh.iter().map(|i| i.id()).collect();
    let want: Vec<u32> = (1..).filter(|i| !held.contains(i)).take(n).collect();
    assert_eq!(got, want, "object IDs left in use (held: {held:?})");
}

#[test]
fn ioas_map_over_the_msi_window_fails_cleanly() {
    let Some((_g, addr)) = device() else { return };
    let pins = pinned_pages();
    let iommufd = Iommufd::open().unwrap();
    let mut dev = VfioDevice::open_pci(addr).unwrap();
    dev.bind(&iommufd).unwrap();
    let ioas = Arc::new(iommufd.alloc_ioas().unwrap());
    dev.attach_ioas(&ioas).unwrap();
    // 2 MiB of "guest RAM" across 0x8000000 (the window is 0x8000000-0x80fffff).
    let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x7f0_0000), 2 << 20)]).unwrap();
    let e = ioas
        .map_guest_memory(&ram, Access::READ_WRITE)
        .expect_err("a map over the MSI window");
    assert_eq!(e.errno().map(|e| e.raw()), Some(libc::EINVAL), "{e}");
    names(
        &e,
        &[
            "IOMMU_IOAS_MAP",
            "0x7f00000",
            &format!("IOAS {}", ioas.id()),
            "EINVAL",
        ],
    );
    // Nothing mapped, nothing pinned.
    assert_eq!(ioas.unmap_all().unwrap(), 0);
    assert_eq!(pins_back_to(pins), pins);
    out!("error path: {e}");
    dev.detach().unwrap();
    drop(dev);
    Arc::try_unwrap(ioas).unwrap().destroy().unwrap();
    ids_free(&iommufd, &[], 8);
}

#[test]
fn bring_up_with_guest_ram_across_the_msi_window_rolls_back() {
    use doorbell_planner::{GuestMap, StrategyChoice};
    use vfio_passthrough::setup::{DeviceSpec, GuestSetup, PreparedDevice};
    let Some((_g, addr)) = device() else { return };
    let pins = pinned_pages();
    let iommufd = Iommufd::open().unwrap();
    // The guest map the planner sees is fine (4 MiB of RAM at 64 MiB), but the memory
    // handed to attach also has a region across the window above it: its map fails after
    // the first region's succeeded (regions map in address order), and attach must undo
    // everything.
    let guest = GuestSetup {
        map: GuestMap {
            ram: vec![iommufd_ioas::IovaRange::from_len(0x400_0000, 4 << 20).unwrap()],
            mmio: Vec::new(),
            ipa_bits: 40,
        },
        preferred_base: None,
        strategy: StrategyChoice::Auto,
        viommu: false,
    };
    let prepared =
        PreparedDevice::open_with(iommufd.clone(), &DeviceSpec::Pci(addr), guest.clone()).unwrap();
    let ram = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0x400_0000), 4 << 20),
        (GuestAddress(0x7f0_0000), 2 << 20),
    ])
    .unwrap();
    let e = prepared
        .attach(&ram)
        .expect_err("attach with RAM over the window");
    names(&e, &["IOMMU_IOAS_MAP", "0x7f00000", "EINVAL"]);
    out!("error path: {e}");
    assert_eq!(
        pins_back_to(pins),
        pins,
        "pages left pinned after the failed attach"
    );
    // The device was closed with the failed attempt: every ID is free again, and the
    // device binds again on the same iommufd and comes up.
    ids_free(&iommufd, &[], 8);
    let again = PreparedDevice::open_with(iommufd.clone(), &DeviceSpec::Pci(addr), guest).unwrap();
    let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x400_0000), 4 << 20)]).unwrap();
    let attached = again.attach(&ram).expect("the bring-up after the failure");
    assert!(pinned_pages() >= pins + 1024);
    drop(attached);
    assert_eq!(pins_back_to(pins), pins);
    ids_free(&iommufd, &[], 8);
}

#[test]
fn attach_to_a_destroyed_hwpt_fails_and_keeps_the_attachment() {
    let Some((_g, addr)) = device() else { return };
    let iommufd = Iommufd::open().unwrap();
    let mut dev = VfioDevice::open_pci(addr).unwrap();
    let dev_id = dev.bind(&iommufd).unwrap();
    let ioas = Arc::new(iommufd.alloc_ioas().unwrap());
    // Attached first: iommufd hands out the lowest free ID, so the automatic HWPT of an
    // attach made after the destroy would take the destroyed HWPT's ID.
    dev.attach_ioas(&ioas).unwrap();
    let before = dev.attached_to();
    let hwpt = Hwpt::alloc_paging(&ioas, dev_id, HwptFlags::default()).unwrap();
    let gone = hwpt.id();
    hwpt.destroy().unwrap();
    // A view of the destroyed ID: the crate passes it, the kernel finds nothing.
    let stale = Arc::new(iommufd.ioas_view(gone));
    let e = dev
        .attach_ioas(&stale)
        .expect_err("attach to a destroyed HWPT");
    assert_eq!(e.errno().map(|e| e.raw()), Some(libc::ENOENT), "{e}");
    names(
        &e,
        &[
            "VFIO_DEVICE_ATTACH_IOMMUFD_PT",
            &format!("pt {gone}"),
            "ENOENT",
        ],
    );
    out!("error path: {e}");
    assert_eq!(dev.attached_to(), before, "the attachment changed");
    // Still attached to the IOAS: the kernel refuses to destroy it.
    let busy = iommufd.destroy_raw(ioas.id()).expect_err("IOAS in use");
    assert_eq!(busy.errno().map(|e| e.raw()), Some(libc::EBUSY), "{busy}");
    dev.detach().unwrap();
    drop(dev);
    Arc::try_unwrap(ioas).unwrap().destroy().unwrap();
    ids_free(&iommufd, &[], 8);
}

#[test]
fn a_second_bind_of_the_device_is_refused_and_the_first_works_on() {
    let Some((_g, addr)) = device() else { return };
    let a = Iommufd::open().unwrap();
    let b = Iommufd::open().unwrap();
    let mut first = VfioDevice::open_pci(addr).unwrap();
    first.bind(&a).unwrap();
    let second = VfioDevice::open_pci(addr).and_then(|mut d| d.bind(&b).map(|_| d));
    let e = second.expect_err("a second bind of one device");
    assert_eq!(e.errno().map(|e| e.raw()), Some(libc::EINVAL), "{e}");
    names(&e, &["VFIO_DEVICE_BIND_IOMMUFD", first.name(), "EINVAL"]);
    out!("error path: {e}");
    let ioas = Arc::new(a.alloc_ioas().unwrap());
    first
        .attach_ioas(&ioas)
        .expect("the first binding works on");
    first.detach().unwrap();
    drop(first);
    Arc::try_unwrap(ioas).unwrap().destroy().unwrap();
    ids_free(&a, &[], 4);
    ids_free(&b, &[], 4);
}

#[test]
fn the_real_msix_table_is_left_alone_while_memory_decode_is_off() {
    use msi_trap::caps::CapabilityList;
    use msi_trap::msix::cap::MsixCapability;
    use vfio_passthrough::{DeviceBackend, VectorBackend, VfioBackend};
    let Some((_g, addr)) = device() else { return };
    let iommufd = Iommufd::open().unwrap();
    let mut dev = VfioDevice::open_pci(addr).unwrap();
    dev.bind(&iommufd).unwrap();
    let ioas = Arc::new(iommufd.alloc_ioas().unwrap());
    dev.attach_ioas(&ioas).unwrap();
    let (mut backend, facts) = VfioBackend::new(dev).unwrap();
    let msix = CapabilityList::parse_lenient(&facts.config)
        .unwrap()
        .list
        .msix()
        .expect("MSI-X");
    let cap = MsixCapability::parse(&facts.config, msix.offset).unwrap();
    assert!(
        backend.map_table(&cap.real(), 4096).unwrap(),
        "MSIX_MAPPABLE"
    );
    let mut cmd = [0u8; 2];
    backend.read_config(4, &mut cmd).unwrap();
    let on = u16::from_le_bytes(cmd) | 0x2;
    backend.write_config(4, &on.to_le_bytes()).unwrap();
    assert!(backend.read_table_address(0).unwrap().is_some());
    // Memory decode off: before the fix, this read was a SIGBUS that killed the process.
    backend.write_config(4, &(on & !0x2).to_le_bytes()).unwrap();
    assert_eq!(backend.read_table_address(0).unwrap(), None);
    let e = backend
        .write_table_address(0, 0x800_0040, 0)
        .expect_err("a table write with decode off");
    names(&e, &["vector 0", "memory decode is off"]);
    backend.write_config(4, &on.to_le_bytes()).unwrap();
    assert!(backend.read_table_address(0).unwrap().is_some());
    // D3hot (what the guest's driver does at shutdown): the same, through PMCSR.
    let pm = CapabilityList::parse_lenient(&facts.config)
        .unwrap()
        .list
        .find(0x01)
        .expect("a PM capability");
    let pmcsr = u16::from(pm.offset) + 4;
    let mut cur = [0u8; 2];
    backend.read_config(pmcsr, &mut cur).unwrap();
    let d0 = u16::from_le_bytes(cur) & !0x3;
    backend
        .write_config(pmcsr, &(d0 | 0x3).to_le_bytes())
        .unwrap();
    assert_eq!(backend.read_table_address(0).unwrap(), None);
    backend.write_config(pmcsr, &d0.to_le_bytes()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    backend.write_config(4, &on.to_le_bytes()).unwrap();
    assert!(backend.read_table_address(0).unwrap().is_some());
    drop(backend);
    Arc::try_unwrap(ioas).unwrap().destroy().unwrap();
}
