// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What the in-guest VFIO test files share: finding the test NICs, skipping outside the QEMU
//! test host, the device lock, and helpers that read the device's MSI-X table and make the
//! igb raise an interrupt.
//!
//! Each test file compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

use hw_defs::igb;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use iommufd_ioas::Iommufd;
use vfio_cdev::{PciAddress, VfioDevice};
use vmm_sys_util::eventfd::EventFd;

/// `GITS_TRANSLATER`'s offset within its 4 KiB page (ITS frame + 0x10040).
pub const GITS_TRANSLATER_PAGE_OFFSET: u64 = 0x40;

/// How long to wait for an interrupt that must arrive. It returns as soon as the eventfd
/// fires; the bound only matters when the test fails, and leaves room for a loaded TCG host.
pub const FIRE_WAIT: Duration = Duration::from_secs(10);

/// A device can be bound by one open file at a time: tests that bind take this lock.
static DEVICE_LOCK: Mutex<()> = Mutex::new(());

pub fn in_guest() -> bool {
    std::env::var_os("TESTHOST_IN_GUEST").is_some()
}

/// The kernel carries the project's patches (`TESTHOST_KERNEL_VARIANT=patched`).
pub fn patched_kernel() -> bool {
    std::env::var("TESTHOST_KERNEL_VARIANT").is_ok_and(|v| v == "patched")
}

/// Prints why a test does not run here; inside the test host that is a failure.
pub fn skip(why: &str) {
    assert!(!in_guest(), "inside the test host: {why}");
    eprintln!("skipped: {why}; runs in the QEMU test host");
}

fn read_hex(path: &Path) -> Option<u32> {
    let s = std::fs::read_to_string(path).ok()?;
    u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
}

/// The igb NICs (8086:10c9) bound to vfio-pci, in BDF order (`VFIO_TEST_DEVICE` alone if
/// set).
pub fn find_nics() -> Vec<PciAddress> {
    if let Ok(s) = std::env::var("VFIO_TEST_DEVICE") {
        return vec![s.parse().expect("VFIO_TEST_DEVICE")];
    }
    let Ok(dir) = std::fs::read_dir("/sys/bus/pci/devices") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            read_hex(&p.join("vendor")) == Some(0x8086)
                && read_hex(&p.join("device")) == Some(0x10c9)
                && p.join("vfio-dev").is_dir()
        })
        .collect();
    found.sort();
    found
        .iter()
        .filter_map(|p| p.file_name()?.to_str()?.parse().ok())
        .collect()
}

/// The device lock, an iommufd and the NICs to test.
pub struct Fixture {
    _guard: MutexGuard<'static, ()>,
    pub iommufd: Arc<Iommufd>,
    pub nics: Vec<PciAddress>,
}

impl Fixture {
    /// The first test NIC.
    pub fn addr(&self) -> PciAddress {
        self.nics[0]
    }
}

/// The fixture, or `None` (with the reason printed) where `/dev/iommu` or a vfio-pci igb is
/// missing, which inside the test host is a failure.
pub fn fixture() -> Option<Fixture> {
    let guard = DEVICE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !Path::new("/dev/iommu").exists() {
        skip("/dev/iommu absent (no CONFIG_IOMMUFD)");
        return None;
    }
    let nics = find_nics();
    if nics.is_empty() {
        skip("no 8086:10c9 NIC bound to vfio-pci");
        return None;
    }
    Some(Fixture {
        _guard: guard,
        iommufd: Iommufd::open().expect("open /dev/iommu"),
        nics,
    })
}

/// NIC `nic` opened by PCI address and bound to the fixture's iommufd.
pub fn open_bound(f: &Fixture, nic: usize) -> (VfioDevice, u32) {
    let mut dev = VfioDevice::open_pci(f.nics[nic]).expect("open by PCI address");
    let dev_id = dev.bind(&f.iommufd).expect("bind");
    (dev, dev_id)
}

/// The offset of the MSI-X capability in config space, walking the standard list.
pub fn msix_cap(dev: &VfioDevice) -> u64 {
    let cfg = dev.read_config_space().unwrap();
    let mut p = cfg[0x34] as usize & !3;
    for _ in 0..48 {
        if p < 0x40 || p + 2 > cfg.len() {
            break;
        }
        if cfg[p] == 0x11 {
            return p as u64;
        }
        p = cfg[p + 1] as usize & !3;
    }
    panic!("no MSI-X capability");
}

/// Waits up to `timeout` for `efd` to fire and consumes it.
pub fn poll_eventfd(efd: &EventFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(efd),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `pfd` is one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    r > 0 && efd.read().is_ok()
}

/// The addresses of the first `n` entries of the device's own MSI-X table, read through the
/// `MSIX_MAPPABLE` BAR mapping.
pub fn msix_table_addresses(dev: &VfioDevice, n: usize) -> Vec<u64> {
    let cap = msix_cap(dev);
    let table = dev.read_config_u32(cap + 4).unwrap();
    let (bir, table_off) = (table & 7, u64::from(table & !7));
    let bar = dev.region_info(bir).unwrap();
    let page = table_off & !0xfff;
    let map = dev.mmap_region(&bar, page, 0x1000).unwrap();
    let entry = (table_off - page) as usize;
    (0..n)
        .map(|v| {
            let lo = map.read_u32(entry + 16 * v).unwrap();
            let hi = map.read_u32(entry + 16 * v + 4).unwrap();
            (u64::from(hi) << 32) | u64::from(lo)
        })
        .collect()
}

/// Makes the igb raise MSI-X vector `vector` (0 or 1) and waits for `efd`: bus master on,
/// GPIE = NSICR | MSIX_MODE | EIAME | PBA, EIMS enables vectors 0 and 1, EICS sets the
/// cause; everything is masked and bus master restored afterwards.
pub fn igb_fires(dev: &VfioDevice, vector: u32, efd: &EventFd, timeout: Duration) -> bool {
    let cmd = dev.read_config_u16(4).unwrap();
    dev.write_config_u16(4, cmd | 0x4).unwrap();
    let bar0 = dev.region_info(0).unwrap();
    let regs = dev.mmap_region(&bar0, 0, 0x2000).unwrap();
    assert!(regs.write_u32(igb::GPIE as usize, igb::GPIE_MSIX));
    assert!(regs.write_u32(igb::EIMS as usize, 0x3));
    assert!(regs.write_u32(igb::EICS as usize, 1 << vector));
    let fired = poll_eventfd(efd, timeout);
    assert!(regs.write_u32(igb::EIMC as usize, 0x3)); // EIMC: mask again
    dev.write_config_u16(4, cmd).unwrap();
    fired
}
