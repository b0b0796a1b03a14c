// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The vSMMU driven the way Linux's arm-smmu-v3 driver drives an SMMU
//! (`arm_smmu_device_probe` -> `arm_smmu_device_hw_probe`, `arm_smmu_init_structures`,
//! `arm_smmu_device_reset`, then `arm_smmu_attach_dev` for a DMA domain, map/unmap with
//! TLBI + `CMD_SYNC` polled through its MSI write, and detach), with a 2-level and a linear
//! Stream table. Every backend call is checked.

mod common;

use common::{Bench, CmdQueue};
use vsmmuv3::backend::{BackendCall, GuestSte, VSte};
use vsmmuv3::cd::cd_words;
use vsmmuv3::cmd::RawCommand;
use vsmmuv3::irq::IrqLine;
use vsmmuv3::regs::*;
use vsmmuv3::ste::{config_ste_words, stage1_ste_words};
use vsmmuv3::{Access, QEMU_HOST_IDRS, SmmuConfig, StreamChanges, TranslateFault};

const STRTAB: u64 = 0x10_0000;
const L2_POOL: u64 = 0x18_0000;
const CMDQ: u64 = 0x20_0000;
const EVTQ: u64 = 0x30_0000;
const CD: u64 = 0x40_0000;
const PGD: u64 = 0x50_0000;
const PT_POOL: u64 = 0x51_0000;
/// Where the guest's vITS doorbell page is (IPA).
const DOORBELL: u64 = 0x0800_0000;
/// The gIOVA the guest's DMA domain gave the doorbell.
const MSI_IOVA: u64 = 0xffff_f000;
const GITS_IRQ_DOORBELL: u64 = 0x0808_0040;

/// The device's vSID: bus 0, device 3, function 0.
const SID: u32 = 0x18;
/// A second device, without a host device behind it (emulated).
const EMU_SID: u32 = 0x20;

/// Submits `cmds` followed by Linux's `CMD_SYNC` with MSI polling: the completion MSI
/// writes 0 over the sync command's own first word, which the driver polls
/// (`__arm_smmu_cmdq_poll_until_msi`).
fn submit_sync(b: &mut Bench, q: &mut CmdQueue, cmds: &[RawCommand]) {
    let sync_idx = (q.prod + cmds.len() as u32) & ((1 << q.log2) - 1);
    let slot = CMDQ + 16 * u64::from(sync_idx);
    let mut all = cmds.to_vec();
    all.push(RawCommand::sync(1, slot, 0));
    let p = b.submit(q, &all);
    assert!(!p.more);
    assert_eq!(b.get32(slot), 0, "CMD_SYNC completed through its MSI");
}

/// `arm_smmu_device_hw_probe` + `arm_smmu_device_reset`. Returns the command queue.
fn probe_and_reset(b: &mut Bench, two_level: bool) -> CmdQueue {
    // hw_probe: the ID registers.
    let idr0 = b.r32(IDR0);
    assert_ne!(idr0 & idr0::S1P, 0, "stage 1");
    assert_eq!(idr0 & idr0::S2P, 0, "no stage 2 for the guest");
    assert_eq!((idr0 >> idr0::TTF_SHIFT) & 3, 0b10, "AArch64 tables");
    assert_eq!((idr0 >> idr0::STALL_MODEL_SHIFT) & 3, 0b01, "no stall");
    assert_eq!(idr0 & (idr0::ATS | idr0::PRI | idr0::HYP), 0);
    assert_ne!(idr0 & idr0::MSI, 0);
    assert_eq!((idr0 >> idr0::ST_LVL_SHIFT) & 3, u32::from(two_level));
    let idr1 = b.r32(IDR1);
    assert_eq!(idr1 & 0x3f, 16, "SIDSIZE");
    assert_eq!((idr1 >> 6) & 0x1f, 0, "SSIDSIZE");
    assert!((idr1 >> 21) & 0x1f > 6, "Linux needs CMDQS > 6");
    let idr5 = b.r32(IDR5);
    assert_eq!(idr5 & 7, 4, "44-bit OAS from the host");
    assert_eq!(idr5 & 0x70, 0x70, "4K/16K/64K from the host");
    assert_eq!(b.r32(IDR3), 0);
    assert_eq!(b.r32(AIDR), 0);

    // device_reset: SMMUEN is clear at reset; disable anyway, poll CR0ACK.
    assert_eq!(b.r32(CR0), 0);
    b.w32(CR0, 0);
    assert_eq!(b.r32(CR0ACK), 0);
    b.w32(CR1, 0xd75);
    b.w32(CR2, 0b110); // PTM | RECINVSID
    if two_level {
        // 2^16 StreamIDs, SPLIT 8: 256 L1 descriptors, all Span 0.
        b.w64(STRTAB_BASE, STRTAB | (1 << 62));
        b.w32(STRTAB_BASE_CFG, 16 | (8 << 6) | (1 << 16));
    } else {
        // Linear: every STE bypass until a master is attached (arm_smmu_init_initial_stes).
        for sid in 0..256u64 {
            b.put(STRTAB + 64 * sid, &config_ste_words(0b100));
        }
        b.w64(STRTAB_BASE, STRTAB | (1 << 62));
        b.w32(STRTAB_BASE_CFG, 8);
    }
    assert_eq!(b.r64(STRTAB_BASE), STRTAB | (1 << 62));
    let mut q = b.cmdq(CMDQ, 8);
    assert_eq!(b.r32(CR0ACK), cr0::CMDQEN);
    // Invalidate any cached configuration and TLB entries.
    submit_sync(b, &mut q, &[RawCommand::cfgi_all()]);
    submit_sync(b, &mut q, &[RawCommand::tlbi_nsnh_all()]);
    assert_eq!(b.r32(CMDQ_CONS), 4);
    // Event queue (PROD/CONS in page 1).
    b.w64(EVTQ_BASE, EVTQ | 7);
    b.w32(EVTQ_PROD, 0);
    b.w32(EVTQ_CONS, 0);
    b.w32(CR0, cr0::CMDQEN | cr0::EVENTQEN);
    // IRQs: disable, program MSIs to the guest's vITS, enable.
    b.w32(IRQ_CTRL, 0);
    assert_eq!(b.r32(IRQ_CTRLACK), 0);
    b.w64(GERROR_IRQ_CFG0, GITS_IRQ_DOORBELL);
    b.w32(GERROR_IRQ_CFG1, 100);
    b.w32(GERROR_IRQ_CFG2, 0x13);
    b.w64(EVTQ_IRQ_CFG0, GITS_IRQ_DOORBELL);
    b.w32(EVTQ_IRQ_CFG1, 101);
    b.w32(EVTQ_IRQ_CFG2, 0x13);
    b.w32(IRQ_CTRL, irq_ctrl::GERROR_IRQEN | irq_ctrl::EVENTQ_IRQEN);
    assert_eq!(b.r32(IRQ_CTRLACK), 0b101);
    // GBPA abort (as the driver does when it will not bypass), then enable.
    b.w32(GBPA, gbpa::UPDATE | gbpa::ABORT);
    assert_eq!(b.r32(GBPA) & gbpa::UPDATE, 0, "update completed");
    b.w32(CR0, cr0::CMDQEN | cr0::EVENTQEN | cr0::SMMUEN);
    assert_eq!(b.r32(CR0ACK), cr0::CMDQEN | cr0::EVENTQEN | cr0::SMMUEN);
    assert_eq!(b.r32(GERROR), b.r32(GERRORN), "no global error");
    q
}

/// `arm_smmu_attach_dev` for a DMA domain: CD, then STE, each followed by its
/// invalidation and a sync.
fn attach(b: &mut Bench, q: &mut CmdQueue, two_level: bool, sid: u32, asid: u16) {
    if two_level {
        // arm_smmu_init_l2_strtab: an L2 table of 256 STEs for this SID's span.
        let l1 = STRTAB + 8 * u64::from(sid >> 8);
        let l2 = L2_POOL + 0x4000 * u64::from(sid >> 8);
        if b.get(l1) == 0 {
            // arm_smmu_init_initial_stes: abort until attached (disable_bypass).
            for i in 0..256u64 {
                b.put(l2 + 64 * i, &config_ste_words(0));
            }
            b.put(l1, &[l2 | 9]);
        }
    }
    // CD: T0SZ 16 (48-bit VA), 4K granule, IPS 48 bits, the domain's ASID.
    let cd = CD + 0x1000 * u64::from(asid);
    b.put(cd, &cd_words(PGD, 16, 0, 5, asid));
    submit_sync(b, q, &[RawCommand::cfgi_cd(sid, true)]);
    let ste = ste_addr(two_level, sid);
    b.put(ste, &stage1_ste_words(cd));
    submit_sync(b, q, &[RawCommand::cfgi_ste(sid, true)]);
}

fn ste_addr(two_level: bool, sid: u32) -> u64 {
    if two_level {
        L2_POOL + 0x4000 * u64::from(sid >> 8) + 64 * u64::from(sid & 0xff)
    } else {
        STRTAB + 64 * u64::from(sid)
    }
}

fn bring_up(two_level: bool) {
    let config = SmmuConfig::builder(&QEMU_HOST_IDRS)
        .two_level_stream_table(two_level)
        .build()
        .unwrap();
    let mut b = Bench::with_config(config);
    // The VMM declares its passthrough device before the guest boots: SMMU disabled, GBPA
    // bypass (reset value).
    b.add_host_stream(SID);
    assert_eq!(
        b.host.take(),
        vec![BackendCall::Install {
            stream_id: SID,
            ste: GuestSte::Bypass
        }]
    );

    let mut q = probe_and_reset(&mut b, two_level);
    // GBPA abort while disabled moved the stream to abort; enabling read its STE: in the
    // 2-level table its L1 descriptor has Span 0 (C_BAD_STREAMID: abort, and an event
    // since CR2.RECINVSID); the linear table says bypass. The TLBI_NSNH_ALL was forwarded.
    let calls = b.host.take();
    let mut expect = vec![
        BackendCall::Invalidate(vec![RawCommand::tlbi_nsnh_all()]),
        BackendCall::Install {
            stream_id: SID,
            ste: GuestSte::Abort,
        },
    ];
    if !two_level {
        expect.push(BackendCall::Install {
            stream_id: SID,
            ste: GuestSte::Bypass,
        });
    }
    assert_eq!(calls, expect);
    if two_level {
        assert_eq!(b.r32(EVTQ_PROD), 1, "C_BAD_STREAMID recorded");
        assert_eq!(b.get(EVTQ) & 0xff, 0x02);
        assert_eq!(b.get(EVTQ) >> 32, u64::from(SID));
        // The event queue interrupt went to the guest's vITS as an MSI.
        let msi = b.irq.msis.pop().unwrap();
        assert_eq!(
            (msi.address, msi.data, msi.source),
            (GITS_IRQ_DOORBELL, 101, IrqLine::EventQueue)
        );
        b.w32(EVTQ_CONS, 1);
    }

    // Attach the passthrough device and an emulated one.
    attach(&mut b, &mut q, two_level, SID, 1);
    attach(&mut b, &mut q, two_level, EMU_SID, 2);
    let calls = b.host.take();
    let vste = VSte([(CD + 0x1000) | 0b1011, 0]);
    assert_eq!(
        calls,
        vec![
            BackendCall::Invalidate(vec![RawCommand::cfgi_cd(SID, true)]),
            BackendCall::Install {
                stream_id: SID,
                ste: GuestSte::Stage1(vste)
            },
        ],
        "CFGI_CD for the host stream forwarded, its STE installed; nothing for the \
         emulated stream"
    );
    assert!(vste.is_allowed());
    assert_eq!(b.r32(CMDQ_CONS), q.prod);
    assert_eq!(b.r32(GERROR), b.r32(GERRORN));

    // The DMA domain maps the doorbell page at MSI_IOVA; the VMM translates the address
    // the guest wrote into the device's MSI-X table.
    b.map_4k(PGD, PT_POOL, MSI_IOVA, DOORBELL, 0);
    let t = b
        .smmu
        .translate(&b.mem, SID, MSI_IOVA + 0x40, Access::WRITE)
        .unwrap();
    assert_eq!(t.output, DOORBELL + 0x40);
    assert!(t.stage1 && t.writable);
    assert_eq!(b.smmu.take_changed_streams(), StreamChanges::None);
    // Cached: a PTE change without invalidation is not seen (the architecture allows the
    // old translation until TLBI).
    b.map_4k(PGD, PT_POOL, MSI_IOVA, DOORBELL + 0x1_0000, 0);
    let t = b
        .smmu
        .translate(&b.mem, SID, MSI_IOVA, Access::WRITE)
        .unwrap();
    assert_eq!(t.output, DOORBELL);
    // Unmap/remap: TLBI_NH_VA + CMD_SYNC, forwarded; the VMM is told.
    submit_sync(&mut b, &mut q, &[RawCommand::tlbi_nh_va(1, MSI_IOVA, true)]);
    assert_eq!(
        b.host.take(),
        vec![BackendCall::Invalidate(vec![RawCommand::tlbi_nh_va(
            1, MSI_IOVA, true
        )])]
    );
    assert_eq!(
        b.smmu.take_changed_streams(),
        StreamChanges::Streams(vec![SID])
    );
    let t = b
        .smmu
        .translate(&b.mem, SID, MSI_IOVA, Access::WRITE)
        .unwrap();
    assert_eq!(t.output, DOORBELL + 0x1_0000);
    // A TLBI for another ASID leaves the stream alone.
    submit_sync(&mut b, &mut q, &[RawCommand::tlbi_nh_asid(2)]);
    assert_eq!(b.smmu.take_changed_streams(), StreamChanges::None);
    assert_eq!(
        b.host.take(),
        vec![BackendCall::Invalidate(vec![RawCommand::tlbi_nh_asid(2)])]
    );

    // Detach: the STE goes back to abort, CFGI_STE; the host follows.
    b.put(ste_addr(two_level, SID), &config_ste_words(0));
    submit_sync(&mut b, &mut q, &[RawCommand::cfgi_ste(SID, true)]);
    assert_eq!(
        b.host.take(),
        vec![BackendCall::Install {
            stream_id: SID,
            ste: GuestSte::Abort
        }]
    );
    assert_eq!(
        b.smmu.translate(&b.mem, SID, MSI_IOVA, Access::WRITE),
        Err(TranslateFault::StreamAbort)
    );
    // Every CMD_SYNC completed through its MSI, never the wired line; no GERROR.
    assert!(b.irq.wired.is_empty());
    assert_eq!(b.r32(GERROR), b.r32(GERRORN));
    assert_eq!(b.r32(CMDQ_CONS), q.prod);
}

#[test]
fn linux_bring_up_two_level_stream_table() {
    bring_up(true);
}

#[test]
fn linux_bring_up_linear_stream_table() {
    bring_up(false);
}

/// Linux's error recovery (`arm_smmu_cmdq_skip_err`): on CERROR_ILL it replaces the
/// command at CONS with a CMD_SYNC and acknowledges GERROR; processing resumes there.
#[test]
fn linux_skips_an_illegal_command() {
    let mut b = Bench::new();
    let _ = probe_and_reset(&mut b, true);
    b.host.take();
    let mut q = CmdQueue {
        base: CMDQ,
        log2: 8,
        prod: b.r32(CMDQ_PROD),
    };
    let start = q.prod;
    // TLBI_EL2_ALL needs IDR0.HYP: illegal.
    b.submit(
        &mut q,
        &[
            RawCommand::prefetch_config(1),
            RawCommand([0x20, 0]),
            RawCommand::sync(0, 0, 0),
        ],
    );
    let cons = b.r32(CMDQ_CONS);
    assert_eq!(cons & 0xfffff, start + 1, "CONS at the illegal command");
    assert_eq!((cons >> 24) & 0x7f, 1, "CERROR_ILL");
    let gerror = b.r32(GERROR);
    assert_eq!(
        (gerror ^ b.r32(GERRORN)) & gerror::CMDQ_ERR,
        gerror::CMDQ_ERR
    );
    let msi = b.irq.msis.pop().unwrap();
    assert_eq!((msi.data, msi.source), (100, IrqLine::Gerror));
    // Stopped: more PROD writes do nothing.
    let p = b.w32(CMDQ_PROD, q.prod);
    assert_eq!(p.commands, 0);
    // The driver's fix-up and acknowledgement.
    b.put(
        CMDQ + 16 * u64::from(start + 1),
        &RawCommand::sync(0, 0, 0).0,
    );
    let p = b.w32(GERRORN, gerror);
    assert_eq!(p.commands, 2);
    assert_eq!(b.r32(CMDQ_CONS) & 0xfffff, q.prod);
    assert!(!b.smmu.cmdq_error_active());
}
