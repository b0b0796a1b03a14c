// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Self-test of the test VM: checks, from inside it, what the project's kernel-facing tests
//! rely on. Run it there with `testhost run-kernel-tests -p testhost` (and, for the riscv64
//! host, `testhost --arch riscv64 run-kernel-tests -p testhost --bind none`).
//!
//! Outside the VM (`TESTHOST_IN_GUEST` is not `1`) each test says why it is skipped and
//! returns; inside, a missing device is a failure. The aarch64 host's checks (NICs on
//! vfio-pci behind the SMMUv3) are not built for riscv64, whose boot for this suite keeps the
//! NICs on igb (upstream 7.2 cannot bind vfio-pci behind the RISC-V IOMMU; the patched
//! kernel's passthrough is checked by vfio-cdev's `riscv_imsic_msi` in a boot of its own);
//! the riscv64 host's checks (the AIA with guest interrupt files, the IOMMU in front of the
//! NICs) are not built for aarch64.

use std::fs;
use std::os::unix::fs::FileTypeExt;
#[cfg(not(target_arch = "riscv64"))]
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[cfg(not(target_arch = "riscv64"))]
/// The IOMMU_RESV_SW_MSI window as sysfs prints it for an SMMUv3-attached device
/// (`drivers/iommu/iommu.c` reserved_regions format: start, end, type), 0x8000000 + 1 MiB.
const MSI_REGION_LINE: &str = "0x0000000008000000 0x00000000080fffff msi";

fn in_guest() -> bool {
    std::env::var_os("TESTHOST_IN_GUEST").is_some_and(|v| v == "1")
}

macro_rules! guest_only {
    () => {
        if !in_guest() {
            eprintln!("skipped: not in the test VM (TESTHOST_IN_GUEST is not 1)");
            return;
        }
    };
}

#[cfg(not(target_arch = "riscv64"))]
/// The NICs /init bound to vfio-pci, from `TESTHOST_VFIO_BDFS`; at least one.
fn vfio_bdfs() -> Vec<String> {
    let list = std::env::var("TESTHOST_VFIO_BDFS").unwrap_or_default();
    let bdfs: Vec<String> = list.split_whitespace().map(str::to_owned).collect();
    assert!(
        !bdfs.is_empty(),
        "TESTHOST_VFIO_BDFS is empty: /init bound no NIC to vfio-pci"
    );
    bdfs
}

fn pci_dev(bdf: &str) -> PathBuf {
    Path::new("/sys/bus/pci/devices").join(bdf)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn assert_char_device(path: &str) -> fs::Metadata {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(
        meta.file_type().is_char_device(),
        "{path} is not a character device"
    );
    meta
}

/// Linux's `dev_t` split (glibc `gnu_dev_major`/`gnu_dev_minor`: 12-bit major and 20-bit
/// minor spread over the 64-bit value).
fn major_minor(rdev: u64) -> (u64, u64) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major, minor)
}

#[test]
fn dev_iommu_is_present() {
    guest_only!();
    assert_char_device("/dev/iommu");
}

#[test]
fn dev_kvm_is_present() {
    guest_only!();
    assert_char_device("/dev/kvm");
}

#[cfg(not(target_arch = "riscv64"))]
#[test]
fn bound_nics_are_on_vfio_pci() {
    guest_only!();
    for bdf in vfio_bdfs() {
        let link = fs::read_link(pci_dev(&bdf).join("driver"))
            .unwrap_or_else(|e| panic!("{bdf} has no driver: {e}"));
        assert!(link.ends_with("vfio-pci"), "{bdf} is on {}", link.display());
    }
}

#[cfg(not(target_arch = "riscv64"))]
#[test]
fn vfio0_is_the_first_bound_nic() {
    guest_only!();
    let meta = assert_char_device("/dev/vfio/devices/vfio0");
    let first = &vfio_bdfs()[0];
    let sysfs = pci_dev(first).join("vfio-dev").join("vfio0");
    assert!(sysfs.is_dir(), "{} missing", sysfs.display());
    // The node in /dev carries the number sysfs announces for it.
    let announced = read(&sysfs.join("dev"));
    let (major, minor) = major_minor(meta.rdev());
    assert_eq!(announced.trim(), format!("{major}:{minor}"));
}

#[cfg(not(target_arch = "riscv64"))]
#[test]
fn msi_window_is_a_reserved_region() {
    guest_only!();
    for bdf in vfio_bdfs() {
        let regions = read(&pci_dev(&bdf).join("iommu_group").join("reserved_regions"));
        assert!(
            regions.lines().any(|l| l.trim() == MSI_REGION_LINE),
            "{bdf}: no `{MSI_REGION_LINE}` in reserved_regions:\n{regions}"
        );
    }
}

#[cfg(not(target_arch = "riscv64"))]
#[test]
fn nic_config_space_has_igb_ids() {
    guest_only!();
    for bdf in vfio_bdfs() {
        let config =
            fs::read(pci_dev(&bdf).join("config")).unwrap_or_else(|e| panic!("{bdf} config: {e}"));
        assert!(
            config.len() >= 4,
            "{bdf}: config space is {} bytes",
            config.len()
        );
        // PCI Local Bus 3.0 6.2.1: Vendor ID at 0x00, Device ID at 0x02, little-endian.
        let vendor = u16::from_le_bytes([config[0], config[1]]);
        let device = u16::from_le_bytes([config[2], config[3]]);
        assert_eq!(
            (vendor, device),
            (0x8086, 0x10c9),
            "{bdf}: {vendor:04x}:{device:04x}"
        );
    }
}

/// The SMMU still offers what the nesting tests and the vIOMMU end-to-end run rely on, read
/// through `IOMMU_GET_HW_INFO` (SMMU_IDR0-5, Arm IHI 0070 6.3): stage 1 and stage 2
/// (nesting), AArch64 tables, coherent, and no S2FWB (which is why a vIOMMU needs the
/// test-only kernel switch); no PASIDs, no ATS, no PRI, no stall; the 44-bit OAS and 4 KiB
/// granule the tests build tables for. A QEMU update that changes any of it fails here first.
#[cfg(not(target_arch = "riscv64"))]
#[test]
fn smmu_offers_nesting_without_fwb() {
    guest_only!();
    let bdf = &vfio_bdfs()[0];
    let iommufd = iommufd_ioas::Iommufd::open().expect("open /dev/iommu");
    let mut dev = vfio_cdev::VfioDevice::open_pci(bdf.parse().expect("BDF")).expect("open");
    let dev_id = dev.bind(&iommufd).expect("bind");
    let info = iommufd.hw_info(dev_id).expect("IOMMU_GET_HW_INFO");
    let iommufd_ioas::HwInfoData::ArmSmmuV3 { idr, .. } = info.data else {
        panic!("not an SMMUv3: {:?}", info.data);
    };
    let idr = iommufd_ioas::smmuv3::SmmuV3Idr::new(idr);
    println!("SMMU IDR0-5: {:08x?}", idr.raw());
    assert_eq!(idr.check_nesting(), Ok(()), "{:08x?}", idr.raw());
    assert!(idr.coherent(), "IDR0.COHACC");
    assert!(
        !idr.fwb(),
        "IDR3.FWB: a vIOMMU would not need the test-only switch"
    );
    assert_eq!(idr.ssid_bits(), 0, "IDR1.SSIDSIZE");
    assert!(!idr.ats() && !idr.pri(), "IDR0.ATS/PRI");
    assert_eq!(
        idr.stall_model(),
        iommufd_ioas::smmuv3::StallModel::TerminateOnly
    );
    assert_eq!(idr.oas_bits(), 44, "IDR5.OAS");
    assert!(idr.granules().g4k, "IDR5.GRAN4K");
}

/// The igb NICs (8086:10c9) by PCI address, whatever their driver.
#[cfg(not(target_arch = "aarch64"))]
fn igb_nics() -> Vec<String> {
    let mut nics: Vec<String> = fs::read_dir("/sys/bus/pci/devices")
        .expect("/sys/bus/pci/devices")
        .map(|e| {
            e.expect("readdir")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|bdf| {
            let id = |f: &str| read(&pci_dev(bdf).join(f)).trim().to_owned();
            id("vendor") == "0x8086" && id("device") == "0x10c9"
        })
        .collect();
    nics.sort();
    nics
}

/// The riscv64 host's hart has what KVM's AIA needs: the H extension and Ssaia (AIA 1.0
/// §1.2: the S-level AIA CSRs; Smaia for M-level, which OpenSBI uses), as the kernel reports
/// them in /proc/cpuinfo's `isa` line (`rv64imafdch_..._smaia_ssaia_...`).
#[cfg(not(target_arch = "aarch64"))]
#[test]
fn hart_has_hypervisor_and_aia() {
    guest_only!();
    let cpuinfo = read(Path::new("/proc/cpuinfo"));
    let isa = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("isa")
                .map(|v| v.trim_start_matches([' ', '\t', ':']))
        })
        .unwrap_or_else(|| panic!("no isa line in /proc/cpuinfo:\n{cpuinfo}"));
    let (base, extensions) = isa.split_once('_').unwrap_or((isa, ""));
    assert!(base.starts_with("rv64"), "{isa}");
    assert!(base[4..].contains('h'), "no H extension: {isa}");
    for ext in ["ssaia", "smaia", "sstc"] {
        assert!(extensions.split('_').any(|e| e == ext), "no {ext}: {isa}");
    }
}

/// The IMSIC has guest interrupt files for KVM's hardware-accelerated AIA: the kernel's
/// IMSIC driver reports them at boot (`riscv-imsic: ... guest-index-bits: N`, N > 0, from
/// QEMU's `aia-guests=5`).
#[cfg(not(target_arch = "aarch64"))]
#[test]
fn imsic_has_guest_files() {
    guest_only!();
    let log = std::process::Command::new("dmesg")
        .output()
        .expect("run dmesg");
    let log = String::from_utf8_lossy(&log.stdout);
    let line = log
        .lines()
        .find(|l| l.contains("guest-index-bits"))
        .unwrap_or_else(|| panic!("no IMSIC guest-index-bits line in dmesg"));
    let bits: u32 = line
        .split("guest-index-bits:")
        .nth(1)
        .and_then(|v| {
            v.split(|c: char| !c.is_ascii_digit())
                .find(|t| !t.is_empty())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cannot read guest-index-bits from {line:?}"));
    assert!(bits > 0, "no guest files: {line}");
}

/// The RISC-V IOMMU is in front of every NIC: it is registered and each igb has an IOMMU
/// group (upstream 7.2 still refuses vfio-pci there, which is why the NICs stay on igb in
/// this boot).
#[cfg(not(target_arch = "aarch64"))]
#[test]
fn riscv_iommu_fronts_the_nics() {
    guest_only!();
    let iommus: Vec<_> = fs::read_dir("/sys/class/iommu")
        .expect("/sys/class/iommu")
        .map(|e| {
            e.expect("readdir")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert!(!iommus.is_empty(), "no IOMMU registered");
    let nics = igb_nics();
    assert_eq!(nics.len(), 2, "igb NICs: {nics:?}");
    for bdf in nics {
        let group = pci_dev(&bdf).join("iommu_group");
        assert!(group.exists(), "{bdf} has no IOMMU group");
        let iommu = fs::read_link(pci_dev(&bdf).join("iommu"))
            .unwrap_or_else(|e| panic!("{bdf}/iommu: {e}"));
        let name = iommu.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            iommus.contains(&name),
            "{bdf} behind {name}, not in {iommus:?}"
        );
    }
}

#[test]
fn dev_t_split_matches_linux() {
    // Not guest-only: the split is checked against known numbers everywhere.
    assert_eq!(major_minor(0x0000_0000_0000_0501), (5, 1));
    // major 250, minor 0 (vfio cdevs get a dynamic major like this).
    assert_eq!(major_minor(250 << 8), (250, 0));
    // major 511, minor 300000: both spill into the high fields.
    let (maj, min) = (511u64, 300_000u64);
    let rdev = ((maj & 0xfff) << 8) | ((maj & !0xfff) << 32) | (min & 0xff) | ((min & !0xff) << 12);
    assert_eq!(major_minor(rdev), (maj, min));
}
