// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The accelerated backend driven for real: `VSmmu` with [`IommufdBackend`] on the test host's
//! SMMUv3, a real igb behind it. The test plays the guest: it brings the virtual SMMU up
//! through the model's register interface, writes a stream table, a CD and stage-1 tables in
//! "guest RAM" (4 MiB at IPA 0x4000_0000, mapped in the nest parent's IOAS at IOVA = IPA),
//! and issues `CFGI_STE`, TLBIs and `CMD_SYNC` through the model's command queue. Then:
//!
//! - the backend installed the guest's stage 1 (a nested HWPT, device attached) and the igb's
//!   TX descriptor fetch and write-back go through gIOVA -> IPA;
//! - a PTE change is used only after the guest's `TLBI_NH_VA`, which the model forwarded;
//! - a DMA to an unmapped gIOVA faults, the kernel's vEVENTQ record injected into the model
//!   lands in the guest's event queue with the stream's vSID;
//! - the model translates the MSI gIOVA to the doorbell IPA, and the MSI written through to
//!   that gIOVA reaches the host (the vector's eventfd fires).
//!
//! Runs in the test host's nesting boot (`TESTHOST_NESTING=1` and the test-only switch
//! `arm_smmu_v3.viommu_assume_coherent=1`, as `tests/run-all.sh` runs
//! `crates/vfio-cdev/tests/nesting.rs`); elsewhere it says why and returns.

use hw_defs::igb;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iommufd_ioas::{Access as IoAccess, HwInfoData, Hwpt, Iommufd, Vdevice, Vevent, Veventq};
use iommufd_ioas::{Viommu, ViommuType};
use vfio_cdev::{IrqIndex, PciAddress, RegionMapping, VfioDevice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use vsmmuv3::backend::GuestSte;
use vsmmuv3::cd::cd_words;
use vsmmuv3::cmd::RawCommand;
use vsmmuv3::iommufd::IommufdBackend;
use vsmmuv3::regs::*;
use vsmmuv3::ste::stage1_ste_words;
use vsmmuv3::walk::desc;
use vsmmuv3::{Access, HostIdrs, RecordingSink, SmmuConfig, VSmmu};

const RAM_IPA: u64 = 0x4000_0000;
const RAM_LEN: usize = 4 << 20;
const STRTAB: u64 = RAM_IPA;
const CMDQ: u64 = RAM_IPA + 0x1_0000;
const EVTQ: u64 = RAM_IPA + 0x2_0000;
const CD: u64 = RAM_IPA + 0x3_0000;
const L1: u64 = RAM_IPA + 0x4_0000;
const L2: u64 = RAM_IPA + 0x5_0000;
const L3: u64 = RAM_IPA + 0x6_0000;
const RING: u64 = RAM_IPA + 0x20_0000;
const PKT: u64 = RAM_IPA + 0x20_1000;
const RING2: u64 = RAM_IPA + 0x20_4000;
const GIOVA_RING: u64 = 0x1000_0000;
const GIOVA_PKT: u64 = 0x1000_1000;
const GIOVA_MSI: u64 = 0x1000_2000;
const GIOVA_UNMAPPED: u64 = 0x1040_0000;
/// The upstream kernel's software MSI window: the physical doorbell's IPA in stage 2.
const MSI_IPA: u64 = 0x800_0000;
const VSID: u32 = 8;
const ASID: u16 = 1;

fn nesting_boot() -> bool {
    let in_guest = std::env::var_os("TESTHOST_IN_GUEST").is_some_and(|v| v == "1");
    let asked = std::env::var("TESTHOST_NESTING").is_ok_and(|v| v == "1");
    if !in_guest || !asked {
        eprintln!(
            "skipped: runs in the QEMU test host's nesting boot \
             (TESTHOST_NESTING=1 arm_smmu_v3.viommu_assume_coherent=1)"
        );
        return false;
    }
    true
}

/// The first igb (8086:10c9) bound to vfio-pci.
fn first_nic() -> PciAddress {
    let mut found: Vec<String> = std::fs::read_dir("/sys/bus/pci/devices")
        .expect("sysfs")
        .flatten()
        .filter(|e| {
            let p = e.path();
            let rd = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
            rd("vendor").trim() == "0x8086"
                && rd("device").trim() == "0x10c9"
                && p.join("vfio-dev").is_dir()
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    found
        .first()
        .expect("no igb bound to vfio-pci")
        .parse()
        .expect("PCI address")
}

/// The guest side of the test: its RAM and its accesses to the SMMU frame.
struct Guest {
    mem: GuestMemoryMmap<()>,
    smmu: VSmmu,
    backend: IommufdBackend,
    irq: RecordingSink,
    cmdq_prod: u32,
}

impl Guest {
    fn put(&self, addr: u64, words: &[u64]) {
        for (i, w) in words.iter().enumerate() {
            self.mem
                .write_obj(*w, GuestAddress(addr + 8 * i as u64))
                .unwrap();
        }
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }

    fn r32(&self, addr: u64) -> u32 {
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.mem.read_obj(GuestAddress(addr)).unwrap()
    }

    fn w32(&mut self, off: u64, v: u32) {
        self.smmu.mmio_write(
            &self.mem,
            &mut self.backend,
            &mut self.irq,
            off,
            &v.to_le_bytes(),
        );
    }

    fn w64(&mut self, off: u64, v: u64) {
        self.smmu.mmio_write(
            &self.mem,
            &mut self.backend,
            &mut self.irq,
            off,
            &v.to_le_bytes(),
        );
    }

    fn read32(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.smmu.mmio_read(off, &mut b);
        u32::from_le_bytes(b)
    }

    /// Queues `cmds` and a `CMD_SYNC`, publishes them, and checks the SMMU consumed all.
    fn submit(&mut self, cmds: &[RawCommand]) {
        for c in cmds.iter().chain([&RawCommand::sync(0, 0, 0)]) {
            let slot = u64::from(self.cmdq_prod & 0xff);
            self.put(CMDQ + 16 * slot, &c.0);
            self.cmdq_prod = (self.cmdq_prod + 1) & 0x1ff;
        }
        self.w32(CMDQ_PROD, self.cmdq_prod);
        assert_eq!(self.read32(CMDQ_CONS), self.cmdq_prod, "CMDQ_CONS");
        assert_eq!(self.read32(GERROR), 0, "GERROR");
    }

    fn map(&self, l3: u64, giova: u64, ipa: u64) {
        self.put(l3 + 8 * ((giova >> 12) & 511), &[desc::page(ipa)]);
    }
}

/// igb TX queue 0 through BAR 0: ring at `ring` (a device address), 4 KiB.
fn tx_setup(g: &Guest, regs: &RegionMapping, ring: u64) {
    let zero = vec![0u8; 0x1000];
    g.mem.write_slice(&zero, GuestAddress(RING)).unwrap();
    g.mem.write_slice(&zero, GuestAddress(RING2)).unwrap();
    let mut pkt = [0u8; 66];
    pkt[..6].fill(0xff);
    g.mem.write_slice(&pkt, GuestAddress(PKT)).unwrap();
    let tctl = regs.read_u32(igb::TCTL as usize).unwrap();
    assert!(regs.write_u32(igb::TCTL as usize, tctl | igb::TCTL_EN));
    assert!(regs.write_u32(igb::TDBAL0 as usize, ring as u32));
    assert!(regs.write_u32(igb::TDBAH0 as usize, (ring >> 32) as u32));
    assert!(regs.write_u32(igb::TDLEN0 as usize, 4096));
    assert!(regs.write_u32(igb::TDH0 as usize, 0));
    assert!(regs.write_u32(igb::TDT0 as usize, 0));
}

/// One 60-byte packet from `pkt` in `slot` of both ring pages; the DD bit of (page 1, page 2).
fn tx_one(g: &Guest, regs: &RegionMapping, slot: u64, pkt: u64) -> (bool, bool) {
    for ring in [RING, RING2] {
        g.put(ring + 16 * slot, &[pkt, igb::tx_data_descriptor(60)]);
    }
    assert!(regs.write_u32(igb::TDT0 as usize, (slot + 1) as u32));
    let start = Instant::now();
    loop {
        let a = g.r32(RING + 16 * slot + 12) & 1 == 1;
        let b = g.r32(RING2 + 16 * slot + 12) & 1 == 1;
        if a || b || start.elapsed() > Duration::from_secs(2) {
            return (a, b);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn accelerated_backend_on_the_real_smmu() {
    if !nesting_boot() {
        return;
    }
    let iommufd: Arc<Iommufd> = Iommufd::open().expect("/dev/iommu");
    let mut dev = VfioDevice::open_pci(first_nic()).expect("open");
    let dev_id = dev.bind(&iommufd).expect("bind");
    let ioas = Arc::new(iommufd.alloc_ioas().unwrap());
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(RAM_IPA), RAM_LEN)]).unwrap();
    ioas.map_guest_memory(&mem, IoAccess::READ_WRITE).unwrap();
    dev.attach_ioas(&ioas).unwrap();

    // The host side of the VMM: nest parent, vIOMMU, vDEVICE, vEVENTQ, the backend.
    let HwInfoData::ArmSmmuV3 {
        idr, iidr, aidr, ..
    } = iommufd.hw_info(dev_id).unwrap().data
    else {
        panic!("not an SMMUv3");
    };
    let parent = Arc::new(Hwpt::alloc_nest_parent(&ioas, dev_id).unwrap());
    let viommu = Arc::new(Viommu::alloc(&parent, dev_id, ViommuType::ArmSmmuV3).unwrap());
    let vdev = Vdevice::alloc(&viommu, dev_id, u64::from(VSID)).unwrap();
    let mut eventq = Veventq::alloc(&viommu, 64).unwrap();
    let attacher = dev.attacher().unwrap();
    let mut backend = IommufdBackend::new(viommu.clone());
    backend.add_stream(
        VSID,
        dev_id,
        Box::new(move |h| attacher.attach_hwpt(h).map(drop).map_err(|e| e.to_string())),
    );
    let config = SmmuConfig::builder(&HostIdrs { idr, iidr, aidr })
        .build()
        .unwrap();
    let mut g = Guest {
        mem: mem.clone(),
        smmu: VSmmu::new(config),
        backend,
        irq: RecordingSink::default(),
        cmdq_prod: 0,
    };
    g.smmu
        .add_host_stream(&g.mem, &mut g.backend, &mut g.irq, VSID)
        .unwrap();
    assert_eq!(g.smmu.installed(VSID), Some(GuestSte::Bypass));
    let bypass_hwpt = g
        .backend
        .current_hwpt(VSID)
        .expect("attached at declaration");

    // The guest brings its SMMU up: linear stream table of 256 STEs, 256-entry command and
    // event queues, stage-1 STE for vSID 8 with a CD (39-bit VA, 4 KiB, 40-bit IPS, ASID 1).
    let zero = vec![0u8; 0x7_0000];
    g.mem.write_slice(&zero, GuestAddress(RAM_IPA)).unwrap();
    g.put(STRTAB + 64 * u64::from(VSID), &stage1_ste_words(CD));
    g.put(CD, &cd_words(L1, 25, 0, 2, ASID));
    g.put(L1 + 8 * ((GIOVA_RING >> 30) & 511), &[desc::table(L2)]);
    g.put(L2 + 8 * ((GIOVA_RING >> 21) & 511), &[desc::table(L3)]);
    g.map(L3, GIOVA_RING, RING);
    g.map(L3, GIOVA_PKT, PKT);
    g.map(L3, GIOVA_MSI, MSI_IPA);
    g.w64(STRTAB_BASE, STRTAB);
    g.w32(STRTAB_BASE_CFG, 8);
    g.w64(CMDQ_BASE, CMDQ | 8);
    g.w64(EVTQ_BASE, EVTQ | 8);
    g.w32(CR0, cr0::CMDQEN | cr0::EVENTQEN);
    g.w32(CR0, cr0::CMDQEN | cr0::EVENTQEN | cr0::SMMUEN);
    g.submit(&[
        RawCommand::cfgi_ste(VSID, true),
        RawCommand::cfgi_cd(VSID, true),
    ]);
    assert!(matches!(g.smmu.installed(VSID), Some(GuestSte::Stage1(_))));
    let s1_hwpt = g.backend.current_hwpt(VSID).unwrap();
    assert_ne!(
        s1_hwpt, bypass_hwpt,
        "a nested HWPT for the guest's stage 1"
    );
    let stats = g.backend.stats();
    assert_eq!(stats.failures, 0, "{stats:?}");
    assert!(
        stats.invalidation_calls >= 1,
        "CFGI_CD forwarded: {stats:?}"
    );

    // DMA through the guest's stage 1 and the host's stage 2.
    let bar0 = dev.region_info(0).unwrap();
    let regs = dev.mmap_region(&bar0, 0, 0x2_0000).unwrap();
    let cmd = dev.read_config_u16(4).unwrap();
    dev.write_config_u16(4, cmd | 0x6).unwrap();
    tx_setup(&g, &regs, GIOVA_RING);
    assert_eq!(
        tx_one(&g, &regs, 0, GIOVA_PKT),
        (true, false),
        "stage 1 DMA"
    );
    // A PTE change is used only after the guest's TLBI_NH_VA, forwarded by the model.
    g.map(L3, GIOVA_RING, RING2);
    assert_eq!(tx_one(&g, &regs, 1, GIOVA_PKT), (true, false), "stale PTE");
    g.submit(&[RawCommand::tlbi_nh_va(ASID, GIOVA_RING, true)]);
    assert_eq!(tx_one(&g, &regs, 2, GIOVA_PKT), (false, true), "fresh PTE");

    // A fault: the kernel reports it on the vEVENTQ; the VMM injects it; the guest's event
    // queue has it with the vSID.
    tx_setup(&g, &regs, GIOVA_UNMAPPED);
    tx_one(&g, &regs, 0, GIOVA_PKT);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut injected = 0;
    while injected == 0 && Instant::now() < deadline {
        if !eventq.wait(Duration::from_millis(200)).unwrap() {
            continue;
        }
        for e in eventq.drain(64).unwrap() {
            if let Vevent::Event { record, .. } = e {
                let mut raw = [0u8; 32];
                for (i, w) in record.words().iter().enumerate() {
                    raw[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
                }
                g.smmu.inject_host_event(&g.mem, &mut g.irq, &raw);
                injected += 1;
            }
        }
    }
    assert!(injected >= 1, "no event on the vEVENTQ");
    let prod = g.read32(EVTQ_PROD);
    assert!(prod & 0xff >= 1, "EVTQ_PROD {prod:#x}");
    let rec0: u64 = g.mem.read_obj(GuestAddress(EVTQ)).unwrap();
    assert_eq!(
        rec0 as u8, 0x10,
        "F_TRANSLATION in the guest's queue: {rec0:#x}"
    );
    assert_eq!((rec0 >> 32) as u32, VSID);

    // MSI: the model translates the gIOVA to the doorbell IPA; the device, given the gIOVA,
    // reaches the host.
    let t = g
        .smmu
        .translate(&g.mem, VSID, GIOVA_MSI + 0x40, Access::WRITE)
        .unwrap();
    assert_eq!(t.output, MSI_IPA + 0x40);
    let efd = EventFd::new(EFD_NONBLOCK).unwrap();
    dev.set_vector_eventfd(IrqIndex::Msix, 0, Some(&efd))
        .unwrap();
    let cfg = dev.read_config_space().unwrap();
    let mut p = usize::from(cfg[0x34]) & !3;
    let mut table = None;
    for _ in 0..48 {
        if p < 0x40 || p + 8 > cfg.len() {
            break;
        }
        if cfg[p] == 0x11 {
            table = Some(u32::from_le_bytes([
                cfg[p + 4],
                cfg[p + 5],
                cfg[p + 6],
                cfg[p + 7],
            ]));
            break;
        }
        p = usize::from(cfg[p + 1]) & !3;
    }
    let table = table.expect("MSI-X capability");
    let bar = dev.region_info(table & 7).unwrap();
    let off = u64::from(table & !7);
    let tmap = dev.mmap_region(&bar, off & !0xfff, 0x1000).unwrap();
    let entry = (off & 0xfff) as usize;
    assert_eq!(tmap.read_u32(entry).unwrap(), (MSI_IPA + 0x40) as u32);
    assert!(tmap.write_u32(entry, t.iova as u32));
    assert!(tmap.write_u32(entry + 4, (t.iova >> 32) as u32));
    assert!(regs.write_u32(igb::GPIE as usize, igb::GPIE_MSIX));
    assert!(regs.write_u32(igb::EIMS as usize, 0x1));
    assert!(regs.write_u32(igb::EICS as usize, 0x1));
    let mut pfd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&efd),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let fired = unsafe { libc::poll(&mut pfd, 1, 10_000) } > 0;
    assert!(fired, "the MSI through the guest's stage 1 did not arrive");
    assert!(regs.write_u32(igb::EIMC as usize, 0x1));
    dev.disable_irqs(IrqIndex::Msix).unwrap();

    // Teardown in the kernel's order: the guest disables its SMMU (bypass installed), the
    // vEVENTQ and vDEVICE go while the device is open, then the backend (detaching first).
    g.w32(CR0, 0);
    assert_eq!(g.smmu.installed(VSID), Some(GuestSte::Bypass));
    eventq.destroy().unwrap();
    vdev.destroy().unwrap();
    drop(regs);
    drop(tmap);
    drop(g);
    drop(viommu);
    dev.detach().unwrap();
}
