// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Nested translation on the real kernel: a guest-owned stage 1 (built here, in "guest RAM"
//! that is an IOAS mapping at IPA 0x4000_0000) over the VMM's stage 2, through iommufd's
//! vIOMMU on QEMU's SMMUv3, with the igb's DMA and MSI-X as the device.
//!
//! These run only in the test host boot that passes `arm_smmu_v3.viommu_assume_coherent=1`
//! (the project's test-only kernel switch, patch 0003: without it Linux 7.2 refuses a vIOMMU
//! on QEMU's SMMUv3, which `tests/kernel.rs` checks on the untainted boots) and
//! `TESTHOST_NESTING=1`, run by `tests/run-all.sh` as `run-kernel-tests -p vfio-cdev --test
//! nesting --append ...`. With `TESTHOST_NESTING=1` but without the switch they fail; in
//! other boots and outside the test host they skip.
//!
//! What each test shows, after the probe `vsmmu-nesting-probe.c` measured it once:
//! - every object (nest parent, vIOMMU, vDEVICE, vEVENTQ, nested HWPTs) and the kernel's
//!   teardown order;
//! - DMA through stage 1 + stage 2: an igb TX descriptor fetched from a gIOVA and its status
//!   written back;
//! - a changed PTE is stale without an invalidation and fresh with `TLBI_NH_VA`; a changed CD
//!   likewise with `CFGI_CD`;
//! - a DMA to an unmapped gIOVA is an `F_TRANSLATION` on the vEVENTQ with the virtual SID;
//! - MSI-X under the guest's stage 1: the address vfio-pci programs faults; the gIOVA written
//!   through the `MSIX_MAPPABLE` mapping delivers (and, on the patched kernel,
//!   `VFIO_IRQ_SET_DATA_MSI_IOVA` does); `VFIO_DEVICE_RESET` puts the kernel's address back.

mod common;

use hw_defs::igb;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{FIRE_WAIT, fixture, in_guest, msix_cap, patched_kernel, poll_eventfd};

use iommufd_ioas::smmuv3::{SmmuV3Command, VSte, event_id};
use iommufd_ioas::{
    Access, Error as IoasError, Hwpt, Ioas, Iommufd, Vdevice, Vevent, Veventq, Viommu, ViommuType,
    probe_viommu,
};
use vfio_cdev::{IrqIndex, RegionMapping, VfioDevice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

/// Guest RAM: 4 MiB at IPA 0x4000_0000.
const RAM_IPA: u64 = 0x4000_0000;
const RAM_LEN: usize = 4 << 20;
/// The CD and the first stage-1 table set (L1, L2, L3).
const CD_IPA: u64 = RAM_IPA;
const L1_IPA: u64 = RAM_IPA + 0x1000;
const L2_IPA: u64 = RAM_IPA + 0x2000;
const L3_IPA: u64 = RAM_IPA + 0x3000;
/// A second table set for the CD test.
const L1B_IPA: u64 = RAM_IPA + 0x5000;
const L2B_IPA: u64 = RAM_IPA + 0x6000;
const L3B_IPA: u64 = RAM_IPA + 0x7000;
/// Two TX rings and a packet buffer.
const RING_IPA: u64 = RAM_IPA + 0x20_0000;
const PKT_IPA: u64 = RAM_IPA + 0x20_1000;
const RING2_IPA: u64 = RAM_IPA + 0x20_4000;
/// gIOVAs of the guest's stage 1.
const GIOVA_RING: u64 = 0x1000_0000;
const GIOVA_PKT: u64 = 0x1000_1000;
const GIOVA_MSI: u64 = 0x1000_2000;
const GIOVA_UNMAPPED: u64 = 0x1040_0000;
/// Where the upstream kernel maps the physical ITS doorbell in stage 2 (its SW_MSI window).
const MSI_IPA: u64 = 0x800_0000;
/// `GITS_TRANSLATER`'s offset in the doorbell page.
const TRANSLATER: u64 = 0x40;
const VSID: u64 = 0x20;
const ASID: u16 = 1;

/// The kernel command line carries the test-only switch.
fn switch_on() -> bool {
    std::fs::read_to_string("/proc/cmdline").is_ok_and(|c| {
        c.split_whitespace()
            .any(|a| a == "arm_smmu_v3.viommu_assume_coherent=1")
    })
}

/// Whether this boot is the nesting boot. `TESTHOST_NESTING=1` (passed on the kernel command
/// line with the switch by `tests/run-all.sh`) asks for it: then a missing switch is a
/// failure. Other boots (the untainted tiers, where `tests/kernel.rs` checks the refusal) and
/// machines outside the test host skip.
fn nesting_host() -> bool {
    let asked = std::env::var("TESTHOST_NESTING").is_ok_and(|v| v == "1");
    if !in_guest() || !asked {
        eprintln!(
            "skipped: nesting tests run in the QEMU test host's vIOMMU boot \
             (TESTHOST_NESTING=1 arm_smmu_v3.viommu_assume_coherent=1)"
        );
        return false;
    }
    assert!(
        switch_on(),
        "TESTHOST_NESTING=1 without arm_smmu_v3.viommu_assume_coherent=1 on the command line"
    );
    true
}

/// A page descriptor of the guest's stage 1 (4 KiB granule): AF, inner shareable, AP[1]
/// (unprivileged access, which SMMU stage 1 checks for non-privileged transactions),
/// AttrIndx 0 (write-back in the CD's MAIR), valid page.
fn page_desc(out: u64) -> u64 {
    out | 1 << 10 | 3 << 8 | 1 << 6 | 3
}

/// A stage-1 lab: a bound igb attached to a nested HWPT whose STE points at a CD this test
/// writes in guest RAM.
///
/// Fields drop in the kernel's order (after `Drop` detached the device): the BAR mapping,
/// the vDEVICE (before the device is closed, which would tombstone it), the vEVENTQ, the
/// nested HWPTs, the vIOMMU and its nest parent, the IOAS, guest RAM, the device.
struct Lab {
    bar0: Option<RegionMapping>,
    _vdev: Vdevice,
    eventq: Veventq,
    s1: Arc<Hwpt>,
    bypass: Arc<Hwpt>,
    abort: Arc<Hwpt>,
    viommu: Arc<Viommu>,
    _ioas: Arc<Ioas>,
    ram: GuestMemoryMmap<()>,
    dev: VfioDevice,
    iommufd: Arc<Iommufd>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.dev.attached_to().is_some()
            && let Err(e) = self.dev.detach()
        {
            eprintln!("lab teardown: {e}");
        }
    }
}

impl Lab {
    fn new(f: &common::Fixture) -> Self {
        let (dev, dev_id) = common::open_bound(f, 0);
        let ioas = Arc::new(f.iommufd.alloc_ioas().unwrap());
        let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(RAM_IPA), RAM_LEN)]).unwrap();
        ioas.map_guest_memory(&ram, Access::READ_WRITE).unwrap();
        let parent = Arc::new(Hwpt::alloc_nest_parent(&ioas, dev_id).unwrap());
        let viommu = Arc::new(Viommu::alloc(&parent, dev_id, ViommuType::ArmSmmuV3).unwrap());
        let vdev = Vdevice::alloc(&viommu, dev_id, VSID).unwrap();
        let eventq = Veventq::alloc(&viommu, 64).unwrap();
        let abort = Arc::new(Hwpt::alloc_nested_smmuv3(&viommu, dev_id, &VSte::abort()).unwrap());
        let bypass = Arc::new(Hwpt::alloc_nested_smmuv3(&viommu, dev_id, &VSte::bypass()).unwrap());
        let s1 = Arc::new(
            Hwpt::alloc_nested_smmuv3(&viommu, dev_id, &VSte::stage1(CD_IPA).unwrap()).unwrap(),
        );
        let mut lab = Lab {
            bar0: None,
            _vdev: vdev,
            eventq,
            s1,
            bypass,
            abort,
            viommu,
            _ioas: ioas,
            ram,
            dev,
            iommufd: f.iommufd.clone(),
        };
        lab.build_stage1();
        let s1 = lab.s1.clone();
        assert_eq!(lab.dev.attach_hwpt(&s1, &lab.iommufd).unwrap(), s1.id());
        lab.inval(&[SmmuV3Command::CfgiCd {
            sid: VSID as u32,
            ssid: 0,
            leaf: true,
        }]);
        lab
    }

    fn w64(&self, ipa: u64, v: u64) {
        self.ram.write_obj(v, GuestAddress(ipa)).unwrap();
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }

    fn r32(&self, ipa: u64) -> u32 {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.ram.read_obj(GuestAddress(ipa)).unwrap()
    }

    /// The CD (39-bit VA, 4 KiB granule, 40-bit IPS, AArch64, ASID 1, TTB0 = the first
    /// table set, MAIR attr0 write-back) and tables mapping the ring, the packet and the MSI
    /// page.
    fn build_stage1(&mut self) {
        let zero = vec![0u8; 0x9000];
        self.ram.write_slice(&zero, GuestAddress(RAM_IPA)).unwrap();
        self.write_cd(ASID, L1_IPA);
        self.w64(L1_IPA + 8 * ((GIOVA_RING >> 30) & 511), L2_IPA | 3);
        self.w64(L2_IPA + 8 * ((GIOVA_RING >> 21) & 511), L3_IPA | 3);
        self.map(L3_IPA, GIOVA_RING, RING_IPA);
        self.map(L3_IPA, GIOVA_PKT, PKT_IPA);
        self.map(L3_IPA, GIOVA_MSI, MSI_IPA);
    }

    fn write_cd(&self, asid: u16, ttb0: u64) {
        let w0 = 25 // T0SZ: 39-bit VA
            | 1 << 8 | 1 << 10 | 3 << 12 // IR0/OR0 WBRA, SH0 inner
            | 1 << 30 // EPD1
            | 1 << 31 // V
            | 2 << 32 // IPS: 40 bits
            | 1 << 41 // AA64
            | 1 << 45 | 1 << 46 | 1 << 47 // R, A, ASET
            | u64::from(asid) << 48;
        self.w64(CD_IPA, w0);
        self.w64(CD_IPA + 8, ttb0);
        self.w64(CD_IPA + 24, 0x04ff); // MAIR: attr0 normal WB, attr1 device
    }

    fn map(&self, l3: u64, giova: u64, ipa: u64) {
        self.w64(l3 + 8 * ((giova >> 12) & 511), page_desc(ipa));
    }

    fn inval(&self, cmds: &[SmmuV3Command]) {
        self.viommu.invalidate(cmds).unwrap();
    }

    fn bar0(&mut self) -> &RegionMapping {
        if self.bar0.is_none() {
            let r0 = self.dev.region_info(0).unwrap();
            let map = self.dev.mmap_region(&r0, 0, 0x2_0000).unwrap();
            let cmd = self.dev.read_config_u16(4).unwrap();
            self.dev.write_config_u16(4, cmd | 0x6).unwrap();
            self.bar0 = Some(map);
        }
        self.bar0.as_ref().unwrap()
    }

    /// Points TX queue 0 at `ring` (a device address: gIOVA under stage 1), 4 KiB long, and
    /// clears both ring pages.
    fn tx_setup(&mut self, ring: u64) {
        let zero = vec![0u8; 0x1000];
        self.ram.write_slice(&zero, GuestAddress(RING_IPA)).unwrap();
        self.ram
            .write_slice(&zero, GuestAddress(RING2_IPA))
            .unwrap();
        let mut pkt = [0u8; 66];
        pkt[..6].fill(0xff);
        self.ram.write_slice(&pkt, GuestAddress(PKT_IPA)).unwrap();
        let regs = self.bar0();
        let tctl = regs.read_u32(igb::TCTL as usize).unwrap();
        assert!(regs.write_u32(igb::TCTL as usize, tctl | igb::TCTL_EN)); // TCTL.EN
        assert!(regs.write_u32(igb::TDBAL0 as usize, ring as u32));
        assert!(regs.write_u32(igb::TDBAH0 as usize, (ring >> 32) as u32));
        assert!(regs.write_u32(igb::TDLEN0 as usize, 4096));
        assert!(regs.write_u32(igb::TDH0 as usize, 0));
        assert!(regs.write_u32(igb::TDT0 as usize, 0));
    }

    /// Queues one 60-byte packet at buffer `pkt` (a device address) in slot `slot` of both ring
    /// pages and rings the doorbell; returns the DD bit of the slot in (ring page 1, ring
    /// page 2), polled for up to 2 s until one is set.
    fn tx_one(&mut self, slot: u64, pkt: u64) -> (bool, bool) {
        let d1 = igb::tx_data_descriptor(60);
        for ring in [RING_IPA, RING2_IPA] {
            self.w64(ring + 16 * slot, pkt);
            self.w64(ring + 16 * slot + 8, d1);
        }
        let regs = self.bar0();
        assert!(regs.write_u32(igb::TDT0 as usize, (slot + 1) as u32));
        let start = Instant::now();
        loop {
            let a = self.r32(RING_IPA + 16 * slot + 12) & 1 == 1;
            let b = self.r32(RING2_IPA + 16 * slot + 12) & 1 == 1;
            if a || b || start.elapsed() > Duration::from_secs(2) {
                return (a, b);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Events on the vEVENTQ within `wait` (returns once some arrived and the queue is
    /// drained).
    fn events(&mut self, wait: Duration) -> Vec<iommufd_ioas::smmuv3::SmmuV3Event> {
        let mut out = Vec::new();
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if !self.eventq.wait(left).unwrap() {
                break;
            }
            for e in self.eventq.drain(256).unwrap() {
                match e {
                    Vevent::Event { record, .. } => out.push(record),
                    Vevent::Lost { sequence } => panic!("vEVENTQ lost events at {sequence}"),
                }
            }
            if !out.is_empty() {
                // Give stragglers of the same burst a moment.
                if self.eventq.wait(Duration::from_millis(200)).unwrap() {
                    continue;
                }
                break;
            }
        }
        out
    }
}

/// The probe says the kernel offers a vIOMMU here, with the SMMU's registers.
#[test]
fn probe_reports_a_viommu() {
    if !nesting_host() {
        return;
    }
    let Some(f) = fixture() else { return };
    let (_dev, dev_id) = common::open_bound(&f, 0);
    let ioas = Arc::new(f.iommufd.alloc_ioas().unwrap());
    let probe = probe_viommu(&ioas, dev_id).unwrap();
    assert!(probe.offered(), "{:?}", probe.support);
    let idr = probe.idr.expect("an SMMUv3");
    assert!(idr.s1p() && idr.s2p(), "{:08x?}", idr.raw());
    assert!(!idr.fwb());
    println!("probe: vIOMMU offered; SMMU IDRs {:08x?}", idr.raw());
}

/// Every nesting object, the kernel's checks on them and its teardown order.
#[test]
fn objects_and_teardown_order() {
    if !nesting_host() {
        return;
    }
    let Some(f) = fixture() else { return };
    let (mut dev, dev_id) = common::open_bound(&f, 0);
    let ioas = Arc::new(f.iommufd.alloc_ioas().unwrap());
    let parent = Arc::new(Hwpt::alloc_nest_parent(&ioas, dev_id).unwrap());
    let viommu = Arc::new(Viommu::alloc(&parent, dev_id, ViommuType::ArmSmmuV3).unwrap());
    // An empty batch issues nothing (the SMMUv3 driver would answer EINVAL to it).
    viommu.invalidate(&[]).unwrap();
    let vdev = Vdevice::alloc(&viommu, dev_id, VSID).unwrap();
    assert_eq!(vdev.virt_id(), VSID);
    // One vDEVICE per device per vIOMMU.
    let e = Vdevice::alloc(&viommu, dev_id, VSID + 1).unwrap_err();
    assert!(matches!(e, IoasError::VdeviceAlloc { .. }), "{e}");
    let q = Veventq::alloc(&viommu, 16).unwrap();
    // One vEVENTQ per type per vIOMMU; a depth of 0 never reaches the kernel.
    let e = Veventq::alloc(&viommu, 16).unwrap_err();
    assert_eq!(e.errno().map(|e| e.raw()), Some(libc::EEXIST), "{e}");
    assert!(matches!(
        Veventq::alloc(&viommu, 0),
        Err(IoasError::InvalidArgument { .. })
    ));
    let abort = Arc::new(Hwpt::alloc_nested_smmuv3(&viommu, dev_id, &VSte::abort()).unwrap());
    let bypass = Arc::new(Hwpt::alloc_nested_smmuv3(&viommu, dev_id, &VSte::bypass()).unwrap());
    let s1 = Arc::new(
        Hwpt::alloc_nested_smmuv3(&viommu, dev_id, &VSte::stage1(CD_IPA).unwrap()).unwrap(),
    );
    assert_eq!(s1.parent_id(), viommu.id());
    // A forbidden STE bit: the typed STE refuses it, and the kernel agrees (EIO) when the raw
    // bytes are sent anyway.
    let good = VSte::stage1(CD_IPA).unwrap().words();
    assert!(VSte::from_words([good[0] | 1 << 58, good[1]]).is_err());
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&(good[0] | 1 << 58).to_le_bytes());
    raw[8..].copy_from_slice(&(good[1] | 1 << 40).to_le_bytes());
    let e = Hwpt::alloc_nested(&viommu, dev_id, iommufd_ioas::smmuv3::HWPT_DATA_TYPE, &raw)
        .unwrap_err();
    assert_eq!(e.errno().map(|e| e.raw()), Some(libc::EIO), "{e}");
    // Attach, then replace between the nested HWPTs and back to the parent.
    assert_eq!(dev.attach_hwpt(&abort, &f.iommufd).unwrap(), abort.id());
    assert_eq!(dev.attach_hwpt(&bypass, &f.iommufd).unwrap(), bypass.id());
    assert_eq!(dev.attach_hwpt(&s1, &f.iommufd).unwrap(), s1.id());
    assert_eq!(dev.attach_hwpt(&parent, &f.iommufd).unwrap(), parent.id());
    assert_eq!(dev.attach_hwpt(&s1, &f.iommufd).unwrap(), s1.id());
    // Wrong order: in-use objects are refused (EBUSY) and stay.
    for (what, id) in [
        ("attached nested HWPT", s1.id()),
        ("vIOMMU with HWPTs, a vDEVICE and a vEVENTQ", viommu.id()),
        ("nest parent under a vIOMMU", parent.id()),
    ] {
        let e = f.iommufd.destroy_raw(id).unwrap_err();
        assert_eq!(e.errno().map(|e| e.raw()), Some(libc::EBUSY), "{what}: {e}");
    }
    dev.detach().unwrap();
    // An attacher (a dup of the bound file) replaces the attachment from elsewhere in the
    // VMM, and detaches when dropped, so its HWPT can then be destroyed.
    let attacher = dev.attacher().unwrap();
    assert_eq!(attacher.attach_hwpt(&bypass).unwrap(), bypass.id());
    assert_eq!(attacher.attach_hwpt(&s1).unwrap(), s1.id());
    assert_eq!(attacher.attached_to(), Some(s1.id()));
    let e = f.iommufd.destroy_raw(s1.id()).unwrap_err();
    assert_eq!(e.errno().map(|e| e.raw()), Some(libc::EBUSY), "{e}");
    drop(attacher);
    // Right order: HWPTs, vEVENTQ and vDEVICE, then the vIOMMU, then its parent.
    for h in [s1, bypass, abort] {
        Arc::try_unwrap(h).expect("sole owner").destroy().unwrap();
    }
    q.destroy().unwrap();
    vdev.destroy().unwrap();
    let viommu = Arc::try_unwrap(viommu).expect("sole owner");
    let viommu_id = viommu.id();
    viommu.destroy().unwrap();
    // Gone: a second destroy of the ID is ENOENT.
    let e = f.iommufd.destroy_raw(viommu_id).unwrap_err();
    assert_eq!(e.errno().map(|e| e.raw()), Some(libc::ENOENT), "{e}");
    Arc::try_unwrap(parent)
        .expect("sole owner")
        .destroy()
        .unwrap();

    // Closing the device first: the kernel tombstones its vDEVICE, whose destroy then
    // finds nothing (and the vIOMMU it held can go).
    let parent = Arc::new(Hwpt::alloc_nest_parent(&ioas, dev_id).unwrap());
    let viommu = Arc::new(Viommu::alloc(&parent, dev_id, ViommuType::ArmSmmuV3).unwrap());
    let vdev = Vdevice::alloc(&viommu, dev_id, VSID).unwrap();
    drop(dev);
    let e = vdev.destroy().unwrap_err().error;
    assert_eq!(e.errno().map(|e| e.raw()), Some(libc::ENOENT), "{e}");
}

/// What `IOMMU_HWPT_INVALIDATE` takes from a vIOMMU, and a failing batch reports how far it
/// got.
#[test]
fn invalidation_commands_and_partial_batches() {
    if !nesting_host() {
        return;
    }
    let Some(f) = fixture() else { return };
    let lab = Lab::new(&f);
    let sid = VSID as u32;
    lab.inval(&[
        SmmuV3Command::TlbiNhAll,
        SmmuV3Command::TlbiNhAsid { asid: ASID },
        SmmuV3Command::TlbiNhVa {
            asid: ASID,
            addr: GIOVA_RING,
            leaf: true,
        },
        SmmuV3Command::TlbiNhVaa {
            addr: GIOVA_RING,
            leaf: true,
        },
        SmmuV3Command::TlbiNsnhAll,
        SmmuV3Command::CfgiCd {
            sid,
            ssid: 0,
            leaf: true,
        },
        SmmuV3Command::CfgiCdAll { sid },
    ]);
    // More than one kernel batch in one call.
    let many = vec![SmmuV3Command::TlbiNhAsid { asid: ASID }; 300];
    lab.inval(&many);
    // A CFGI_CD naming a virtual SID without a vDEVICE: EIO at index 2, two handled.
    let e = lab
        .viommu
        .invalidate(&[
            SmmuV3Command::TlbiNhAll,
            SmmuV3Command::TlbiNhAsid { asid: ASID },
            SmmuV3Command::CfgiCd {
                sid: 0x99,
                ssid: 0,
                leaf: true,
            },
            SmmuV3Command::TlbiNhAll,
        ])
        .unwrap_err();
    match e {
        IoasError::HwptInvalidate {
            consumed, errno, ..
        } => {
            assert_eq!(errno.raw(), libc::EIO, "{e}");
            assert_eq!(consumed, 2, "{e}");
        }
        other => panic!("{other}"),
    }
    // What the VMM must handle itself is refused before the call.
    for raw in [
        [0x03 | VSID << 32, 1], // CFGI_STE
        [0x04, 31],             // CFGI_ALL
        [0x46, 0],              // CMD_SYNC
        [0x2a, 0],              // TLBI_S2_IPA
    ] {
        let e = lab
            .viommu
            .invalidate(&[SmmuV3Command::Raw(raw)])
            .unwrap_err();
        assert!(matches!(e, IoasError::InvalidArgument { .. }), "{e}");
    }
}

/// DMA through both stages; a stale PTE until `TLBI_NH_VA`; a stale CD until `CFGI_CD`.
#[test]
fn dma_through_stage1_and_invalidation() {
    if !nesting_host() {
        return;
    }
    let Some(f) = fixture() else { return };
    let mut lab = Lab::new(&f);
    lab.tx_setup(GIOVA_RING);
    // 1: the ring at gIOVA 0x10000000 -> IPA RING_IPA: the descriptor completes there.
    assert_eq!(
        lab.tx_one(0, GIOVA_PKT),
        (true, false),
        "DMA through stage 1"
    );
    // 2: the PTE now points at RING2, no invalidation: the SMMU still uses the old one.
    lab.map(L3_IPA, GIOVA_RING, RING2_IPA);
    assert_eq!(
        lab.tx_one(1, GIOVA_PKT),
        (true, false),
        "stale PTE without TLBI"
    );
    // 3: after TLBI_NH_VA the new PTE is used.
    lab.inval(&[SmmuV3Command::TlbiNhVa {
        asid: ASID,
        addr: GIOVA_RING,
        leaf: true,
    }]);
    assert_eq!(
        lab.tx_one(2, GIOVA_PKT),
        (false, true),
        "fresh PTE after TLBI_NH_VA"
    );

    // CD: a second table set maps the ring to RING2; the CD switches to it with ASID 2.
    lab.map(L3_IPA, GIOVA_RING, RING_IPA);
    lab.inval(&[SmmuV3Command::TlbiNhAsid { asid: ASID }]);
    lab.tx_setup(GIOVA_RING);
    assert_eq!(lab.tx_one(0, GIOVA_PKT), (true, false), "table set A");
    lab.w64(L1B_IPA + 8 * ((GIOVA_RING >> 30) & 511), L2B_IPA | 3);
    lab.w64(L2B_IPA + 8 * ((GIOVA_RING >> 21) & 511), L3B_IPA | 3);
    lab.map(L3B_IPA, GIOVA_RING, RING2_IPA);
    lab.map(L3B_IPA, GIOVA_PKT, PKT_IPA);
    lab.write_cd(2, L1B_IPA);
    assert_eq!(
        lab.tx_one(1, GIOVA_PKT),
        (true, false),
        "stale CD without CFGI_CD"
    );
    lab.inval(&[SmmuV3Command::CfgiCd {
        sid: VSID as u32,
        ssid: 0,
        leaf: true,
    }]);
    assert_eq!(
        lab.tx_one(2, GIOVA_PKT),
        (false, true),
        "fresh CD after CFGI_CD"
    );
    let events = lab.events(Duration::from_millis(300));
    assert!(events.is_empty(), "no faults expected: {events:?}");
}

/// A DMA to a gIOVA the guest did not map faults in stage 1 and the event reaches the
/// vEVENTQ with the virtual StreamID and the address; the abort STE stops DMA.
#[test]
fn faults_reach_the_veventq() {
    if !nesting_host() {
        return;
    }
    let Some(f) = fixture() else { return };
    let mut lab = Lab::new(&f);
    lab.tx_setup(GIOVA_UNMAPPED);
    lab.tx_one(0, GIOVA_PKT);
    let events = lab.events(Duration::from_secs(5));
    let fault = events
        .iter()
        .find(|e| e.id() == event_id::F_TRANSLATION)
        .unwrap_or_else(|| panic!("no F_TRANSLATION among {events:?}"));
    assert_eq!(u64::from(fault.stream_id()), VSID, "{fault}");
    assert_eq!(fault.input_addr() & !0xfff, GIOVA_UNMAPPED, "{fault}");
    assert!(!fault.stage2(), "{fault}");
    println!("vEVENTQ: {fault}");

    // Under the abort STE nothing reaches memory, whatever the ring address means.
    let abort = lab.abort.clone();
    lab.dev.attach_hwpt(&abort, &lab.iommufd).unwrap();
    lab.tx_setup(RING_IPA);
    assert_eq!(lab.tx_one(0, PKT_IPA), (false, false), "abort STE");
    // Under bypass the ring address is an IPA again.
    let bypass = lab.bypass.clone();
    lab.dev.attach_hwpt(&bypass, &lab.iommufd).unwrap();
    lab.tx_setup(RING_IPA);
    assert_eq!(lab.tx_one(0, PKT_IPA), (true, false), "bypass STE");
}

/// Makes the igb raise `vector` and waits for its eventfd, after consuming whatever an
/// earlier interrupt left there (the igb may re-raise a still-set cause on another vector
/// when its mask register is rewritten, and that count must not pass for this interrupt).
fn fires(lab: &Lab, vector: u32, efd: &EventFd, timeout: Duration) -> bool {
    while poll_eventfd(efd, Duration::ZERO) {}
    common::igb_fires(&lab.dev, vector, efd, timeout)
}

/// The device's MSI-X table, mapped through the `MSIX_MAPPABLE` BAR.
struct Table {
    map: RegionMapping,
    entry: usize,
}

impl Table {
    fn new(dev: &VfioDevice) -> Self {
        let cap = msix_cap(dev);
        let t = dev.read_config_u32(cap + 4).unwrap();
        let (bir, off) = (t & 7, u64::from(t & !7));
        let bar = dev.region_info(bir).unwrap();
        assert!(bar.msix_mappable(), "MSI-X BAR is not MSIX_MAPPABLE");
        let page = off & !0xfff;
        Table {
            map: dev.mmap_region(&bar, page, 0x1000).unwrap(),
            entry: (off - page) as usize,
        }
    }

    fn addr(&self, v: usize) -> u64 {
        let lo = self.map.read_u32(self.entry + 16 * v).unwrap();
        let hi = self.map.read_u32(self.entry + 16 * v + 4).unwrap();
        u64::from(hi) << 32 | u64::from(lo)
    }

    fn data(&self, v: usize) -> u32 {
        self.map.read_u32(self.entry + 16 * v + 8).unwrap()
    }

    /// Writes the address words only, never the data.
    fn write_addr(&self, v: usize, addr: u64) {
        assert!(self.map.write_u32(self.entry + 16 * v, addr as u32));
        assert!(
            self.map
                .write_u32(self.entry + 16 * v + 4, (addr >> 32) as u32)
        );
    }
}

/// MSI-X under the guest's stage 1: the kernel's address faults, the written-through gIOVA
/// delivers, a reset puts the kernel's address back.
#[test]
fn msix_through_a_guest_stage1() {
    if !nesting_host() {
        return;
    }
    let Some(f) = fixture() else { return };
    let mut lab = Lab::new(&f);
    let efds: Vec<EventFd> = (0..3)
        .map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
        .collect();
    let msi_iova = patched_kernel();
    if msi_iova {
        // Vector 1 gets the gIOVA from the kernel itself (patch 0002).
        lab.dev
            .prepare_msi_iovas(IrqIndex::Msix, 1, &[GIOVA_MSI + TRANSLATER])
            .unwrap();
    }
    let fds: Vec<Option<&EventFd>> = efds.iter().map(Some).collect();
    lab.dev
        .set_vector_eventfds(IrqIndex::Msix, 0, &fds)
        .unwrap();
    let table = Table::new(&lab.dev);
    let kernel_addr = MSI_IPA + TRANSLATER;
    assert_eq!(table.addr(0), kernel_addr);
    if msi_iova {
        assert_eq!(table.addr(1), GIOVA_MSI + TRANSLATER, "MSI_IOVA vector");
    }
    let data: Vec<u32> = (0..3).map(|v| table.data(v)).collect();

    // Vector 0 as vfio-pci programmed it: 0x8000040 is no gIOVA of the guest: it faults.
    lab.bar0();
    assert!(
        !fires(&lab, 0, &efds[0], Duration::from_secs(2)),
        "the kernel's doorbell IOVA must not translate under the guest's stage 1"
    );
    let events = lab.events(Duration::from_secs(5));
    assert!(
        events.iter().any(|e| e.is_translation_fault()
            && e.input_addr() & !0xfff == MSI_IPA
            && u64::from(e.stream_id()) == VSID),
        "expected a stage-1 fault at 0x8000000 for vSID 0x20: {events:?}"
    );
    // Write-through of the gIOVA (address words only): delivered.
    table.write_addr(0, GIOVA_MSI + TRANSLATER);
    assert_eq!(table.data(0), data[0], "the data stays the host's");
    assert!(fires(&lab, 0, &efds[0], FIRE_WAIT), "written-through gIOVA");
    if msi_iova {
        assert!(fires(&lab, 1, &efds[1], FIRE_WAIT), "MSI_IOVA vector");
    }

    // VFIO_DEVICE_RESET: the PCI core restores the table from the kernel's MSI messages.
    lab.dev.reset().unwrap();
    lab.bar0 = None;
    lab.bar0();
    assert_eq!(
        table.addr(0),
        kernel_addr,
        "reset restores the kernel's address"
    );
    assert_eq!(table.data(0), data[0]);
    if msi_iova {
        assert_eq!(
            table.addr(1),
            GIOVA_MSI + TRANSLATER,
            "the MSI_IOVA vector survives"
        );
    }
    assert!(
        !fires(&lab, 0, &efds[0], Duration::from_secs(2)),
        "vector 0 with the kernel's address after reset delivered"
    );
    table.write_addr(0, GIOVA_MSI + TRANSLATER);
    assert!(fires(&lab, 0, &efds[0], FIRE_WAIT), "written through again");
    if msi_iova {
        assert!(fires(&lab, 1, &efds[1], FIRE_WAIT));
    }
    let _ = lab.events(Duration::from_millis(200));
    lab.dev.disable_irqs(IrqIndex::Msix).unwrap();
    assert!(!poll_eventfd(&efds[2], Duration::from_millis(1)));
}
