// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! One test per rule of IHI 0070 the model implements (or per choice it makes where the
//! spec leaves one), each citing the section.

mod common;

use common::Bench;
use vsmmuv3::backend::{BackendCall, GuestSte};
use vsmmuv3::cd::cd_words;
use vsmmuv3::cmd::RawCommand;
use vsmmuv3::event::id;
use vsmmuv3::irq::{IrqLine, MsiMessage};
use vsmmuv3::regs::*;
use vsmmuv3::ste::{config_ste_words, stage1_ste_words};
use vsmmuv3::{
    Access, EventOutcome, QEMU_HOST_IDRS, SmmuConfig, StateError, StreamChanges, TranslateFault,
    VSmmu,
};

const STRTAB: u64 = 0x10_0000;
const CMDQ: u64 = 0x20_0000;
const EVTQ: u64 = 0x30_0000;

/// A vSMMU with a linear 256-STE table, a 256-entry command queue, a 4-entry event queue,
/// everything enabled, no IRQ MSIs (wired lines).
fn enabled(b: &mut Bench) -> common::CmdQueue {
    b.w64(STRTAB_BASE, STRTAB);
    b.w32(STRTAB_BASE_CFG, 8);
    b.w64(EVTQ_BASE, EVTQ | 2);
    let q = b.cmdq(CMDQ, 8);
    b.w32(IRQ_CTRL, irq_ctrl::GERROR_IRQEN | irq_ctrl::EVENTQ_IRQEN);
    b.w32(CR2, 0b10);
    b.w32(CR0, cr0::CMDQEN | cr0::EVENTQEN | cr0::SMMUEN);
    q
}

fn no_msi() -> SmmuConfig {
    SmmuConfig::builder(&QEMU_HOST_IDRS)
        .msi(false)
        .build()
        .unwrap()
}

// ------------------------------------------------------------------ registers

/// §6.2: 8- and 16-bit accesses, unaligned accesses, 64-bit accesses to 32-bit registers
/// and reserved offsets are CONSTRAINED UNPREDICTABLE: RAZ/WI here.
#[test]
fn undefined_accesses_are_raz_wi() {
    let mut b = Bench::new();
    let mut byte = [0xffu8; 1];
    b.smmu.mmio_read(IDR0, &mut byte);
    assert_eq!(byte, [0]);
    b.smmu
        .mmio_write(&b.mem, &mut b.host, &mut b.irq, CR0, &[1]);
    b.smmu
        .mmio_write(&b.mem, &mut b.host, &mut b.irq, CR0, &[1, 0]);
    assert_eq!(b.r32(CR0), 0);
    b.w64(CR0, 1);
    assert_eq!(b.r32(CR0), 0);
    assert_eq!(b.r64(CR0), 0);
    b.w32(STRTAB_BASE + 2, 0x1234_5678);
    assert_eq!(b.r64(STRTAB_BASE), 0);
    // Page 0 0xA8/0xAC are "optional alias, otherwise RAZ/WI": not aliases here.
    b.w32(0xa8, 3);
    assert_eq!(b.r32(0xa8), 0);
    assert_eq!(b.r32(EVTQ_PROD), 0);
    for off in [
        0x30,
        0x100,
        0xfd0,
        0x1_0000,
        0x1_00c8,
        0x2_0000,
        u64::MAX - 3,
    ] {
        b.w32(off, u32::MAX);
        assert_eq!(b.r32(off), 0, "{off:#x}");
    }
}

/// §6.2: 64-bit registers take 32-bit accesses to either half.
#[test]
fn halves_of_64_bit_registers() {
    let mut b = Bench::new();
    b.w32(CMDQ_BASE, 0x2_0008);
    b.w32(CMDQ_BASE + 4, 0x4000_0001);
    assert_eq!(b.r64(CMDQ_BASE), 0x4000_0001_0002_0008);
    assert_eq!(b.r32(CMDQ_BASE + 4), 0x4000_0001);
    // Reserved bits (63, 61:52) are not stored.
    b.w64(CMDQ_BASE, u64::MAX);
    assert_eq!(b.r64(CMDQ_BASE), Q_BASE_IMPLEMENTED);
}

/// §6.3.24, §6.3.25, §6.3.28, §6.3.11, §6.3.12: registers guarded by an enable are RO
/// while it is set.
#[test]
fn guarded_registers_are_read_only_while_enabled() {
    let mut b = Bench::new();
    enabled(&mut b);
    let before = *b.smmu.registers();
    b.w64(STRTAB_BASE, 0x99_0000);
    b.w32(STRTAB_BASE_CFG, 4);
    b.w64(CMDQ_BASE, 0x99_0000);
    b.w32(CMDQ_CONS, 7);
    b.w64(EVTQ_BASE, 0x99_0000);
    b.w32(EVTQ_PROD, 3);
    b.w32(CR1, 0xfff);
    b.w32(CR2, 0);
    assert_eq!(*b.smmu.registers(), before);
    // SMMUEN off: STRTAB_BASE and CR2 writable; the queue guards still hold.
    b.w32(CR0, cr0::CMDQEN | cr0::EVENTQEN);
    b.w64(STRTAB_BASE, 0x99_0000);
    b.w32(CR2, 0);
    b.w32(CR1, 0xfff);
    assert_eq!(b.r64(STRTAB_BASE), 0x99_0000);
    assert_eq!(b.r32(CR2), 0);
    assert_eq!(b.r32(CR1), 0);
    b.w32(CR0, 0);
    b.w32(CR1, 0xfff);
    assert_eq!(b.r32(CR1), 0xfff);
    // ID registers, ACKs and GERROR are read-only.
    for off in [IDR0, IDR1, IDR5, IIDR, AIDR, CR0ACK, IRQ_CTRLACK, GERROR] {
        let v = b.r32(off);
        b.w32(off, !v);
        assert_eq!(b.r32(off), v, "{off:#x}");
    }
}

/// §6.3.21: `*_IRQ_CFGn` are RO while the interrupt is enabled, RES0 without MSIs.
#[test]
fn irq_cfg_registers() {
    let mut b = Bench::new();
    b.w64(GERROR_IRQ_CFG0, 0xffff_ffff_ffff_ffff);
    assert_eq!(b.r64(GERROR_IRQ_CFG0), IRQ_CFG0_ADDR_MASK);
    b.w32(IRQ_CTRL, irq_ctrl::GERROR_IRQEN);
    b.w64(GERROR_IRQ_CFG0, 0x1000);
    b.w32(GERROR_IRQ_CFG1, 5);
    assert_eq!(b.r64(GERROR_IRQ_CFG0), IRQ_CFG0_ADDR_MASK);
    assert_eq!(b.r32(GERROR_IRQ_CFG1), 0);
    b.w64(EVTQ_IRQ_CFG0, 0x1000);
    assert_eq!(b.r64(EVTQ_IRQ_CFG0), 0x1000);
    let mut n = Bench::with_config(no_msi());
    n.w64(EVTQ_IRQ_CFG0, 0x1000);
    n.w32(EVTQ_IRQ_CFG1, 5);
    assert_eq!((n.r64(EVTQ_IRQ_CFG0), n.r32(EVTQ_IRQ_CFG1)), (0, 0));
}

/// §6.3.14.1: GBPA changes only through a write with Update = 1, which completes at
/// once; GBPA.ABORT decides what streams do while SMMUEN == 0.
#[test]
fn gbpa_update_protocol() {
    let mut b = Bench::new();
    assert_eq!(b.r32(GBPA), gbpa::RESET);
    b.add_host_stream(5);
    b.w32(GBPA, gbpa::ABORT);
    assert_eq!(b.r32(GBPA), gbpa::RESET, "Update = 0: ignored");
    assert_eq!(
        b.smmu
            .translate(&b.mem, 5, 0x1234, Access::WRITE)
            .unwrap()
            .output,
        0x1234
    );
    b.w32(GBPA, gbpa::UPDATE | gbpa::ABORT | 0xf);
    assert_eq!(b.r32(GBPA), gbpa::ABORT | 0xf);
    assert_eq!(
        b.smmu.translate(&b.mem, 5, 0x1234, Access::WRITE),
        Err(TranslateFault::GlobalAbort)
    );
    assert_eq!(
        b.host.installs(),
        vec![(5, GuestSte::Bypass), (5, GuestSte::Abort)]
    );
    assert_eq!(
        b.smmu.take_changed_streams(),
        StreamChanges::Streams(vec![5])
    );
    let cfg = SmmuConfig::builder(&QEMU_HOST_IDRS)
        .gbpa_abort_at_reset(true)
        .build()
        .unwrap();
    assert_ne!(VSmmu::new(cfg).registers().gbpa & gbpa::ABORT, 0);
}

/// §6.3.19: only active errors can be acknowledged; a stray GERRORN toggle cannot make
/// an error active.
#[test]
fn gerrorn_acknowledges_active_errors_only() {
    let mut b = Bench::new();
    b.w32(GERRORN, gerror::CMDQ_ERR | gerror::EVTQ_ABT_ERR);
    assert_eq!(b.r32(GERRORN), 0);
    assert!(!b.smmu.cmdq_error_active());
}

// ------------------------------------------------------------------ command queue

/// §7.1: an abort fetching a command is CERROR_ABT with CONS at it; GERROR.CMDQ_ERR
/// becomes active and is signalled (wired here: no MSI address).
#[test]
fn command_fetch_abort() {
    let mut b = Bench::new();
    b.w64(CMDQ_BASE, (0x1_0000_0000u64) | 4); // beyond guest RAM
    b.w32(IRQ_CTRL, irq_ctrl::GERROR_IRQEN);
    b.w32(CR0, cr0::CMDQEN);
    b.w32(CMDQ_PROD, 3);
    assert_eq!(b.r32(CMDQ_CONS), (2 << 24), "CERROR_ABT at index 0");
    assert!(b.smmu.cmdq_error_active());
    assert_eq!(b.irq.wired, vec![IrqLine::Gerror]);
    // Stopped until acknowledged; a second error while active does not re-signal.
    assert_eq!(b.w32(CMDQ_PROD, 4).commands, 0);
    let g = b.r32(GERROR);
    b.w32(GERRORN, g);
    assert!(b.smmu.cmdq_error_active(), "re-fetch failed again");
    assert_eq!(b.irq.wired.len(), 2);
}

/// §4.1, §7.1: an illegal command stops the queue at it with CERROR_ILL; commands
/// before it took effect.
#[test]
fn illegal_command_stops_the_queue() {
    let mut b = Bench::new();
    let mut q = enabled(&mut b);
    b.add_host_stream(1);
    b.host.take();
    let p = b.submit(
        &mut q,
        &[
            RawCommand::tlbi_nh_asid(3),
            RawCommand([0x2a, 0]), // TLBI_S2_IPA: no stage 2
            RawCommand::tlbi_nh_asid(4),
        ],
    );
    assert_eq!(p.commands, 1);
    assert_eq!(b.r32(CMDQ_CONS), 1 | (1 << 24));
    assert_eq!(
        b.host.take(),
        vec![BackendCall::Invalidate(vec![RawCommand::tlbi_nh_asid(3)])]
    );
}

/// Work per MMIO write is bounded; `process_pending` continues.
#[test]
fn bounded_work_per_write() {
    let cfg = SmmuConfig::builder(&QEMU_HOST_IDRS)
        .max_commands_per_call(10)
        .build()
        .unwrap();
    let mut b = Bench::with_config(cfg);
    let mut q = enabled(&mut b);
    let cmds = vec![RawCommand::prefetch_config(1); 25];
    let p = b.submit(&mut q, &cmds);
    assert_eq!((p.commands, p.more), (10, true));
    assert_eq!(b.r32(CMDQ_CONS), 10);
    let p = b.process();
    assert_eq!((p.commands, p.more), (10, true));
    let p = b.process();
    assert_eq!((p.commands, p.more), (5, false));
    assert_eq!(b.process().commands, 0);
    assert_eq!(b.r32(CMDQ_CONS), 25);
}

/// §3.5: indices wrap with the wrap bit; a queue of 4 entries processes 10 commands in
/// three rounds.
#[test]
fn command_queue_wraps() {
    let mut b = Bench::new();
    b.w64(STRTAB_BASE, STRTAB);
    let mut q = b.cmdq(CMDQ, 2);
    for round in 0..3 {
        let n = if round == 2 { 2 } else { 4 };
        b.submit(&mut q, &vec![RawCommand::sync(0, 0, 0); n]);
        assert_eq!(b.r32(CMDQ_CONS), q.prod);
    }
    assert_eq!(
        q.prod, 0b010,
        "10 commands: index 2, wrap 0 (wrapped twice)"
    );
}

/// §4.7.3: CMD_SYNC with SIG_IRQ: an MSI (written to RAM, or handed to the VMM when RAM
/// does not back it), the wired line without MSIs or without an address; SIG_SEV is
/// SIG_NONE without IDR0.SEV.
#[test]
fn cmd_sync_completion_signals() {
    let mut b = Bench::new();
    let mut q = enabled(&mut b);
    b.put(0x8000, &[u64::MAX]);
    b.submit(&mut q, &[RawCommand::sync(1, 0x8000, 0xabcd)]);
    assert_eq!(b.get(0x8000), 0xffff_ffff_0000_abcd, "32-bit MSI write");
    b.submit(&mut q, &[RawCommand::sync(1, 0x0800_0040, 7)]);
    assert_eq!(
        b.irq.msis,
        vec![MsiMessage {
            address: 0x0800_0040,
            data: 7,
            source: IrqLine::CmdSync
        }]
    );
    b.submit(
        &mut q,
        &[RawCommand::sync(1, 0, 7), RawCommand::sync(2, 0x8000, 1)],
    );
    assert_eq!(b.irq.wired, vec![IrqLine::CmdSync]);
    let mut n = Bench::with_config(no_msi());
    let mut q = enabled(&mut n);
    n.submit(&mut q, &[RawCommand::sync(1, 0x8000, 1)]);
    assert_eq!(n.irq.wired, vec![IrqLine::CmdSync]);
    assert_eq!(n.get(0x8000), 0);
}

/// Forwarding: only host streams' CFGI_CDs go to the kernel, TLBIs only when a host
/// stream exists, in batches of at most `batch`, flushed before CFGI_STE (installs follow
/// earlier invalidations) and at CMD_SYNC.
#[test]
fn forwarding_rules() {
    let cfg = SmmuConfig::builder(&QEMU_HOST_IDRS)
        .batch(2)
        .build()
        .unwrap();
    let mut b = Bench::with_config(cfg);
    let mut q = enabled(&mut b);
    b.submit(
        &mut q,
        &[RawCommand::tlbi_nh_all(), RawCommand::cfgi_cd(3, true)],
    );
    assert!(
        b.host.take().is_empty(),
        "no host stream: nothing forwarded"
    );
    b.add_host_stream(3);
    b.host.take();
    b.submit(
        &mut q,
        &[
            RawCommand::cfgi_cd(4, true),
            RawCommand::tlbi_nh_va(1, 0x1000, true),
            RawCommand::cfgi_cd_all(3),
            RawCommand::tlbi_nh_vaa(0x2000, false),
            RawCommand::cfgi_ste(3, true),
            RawCommand::tlbi_nh_asid(9),
            RawCommand::sync(0, 0, 0),
        ],
    );
    assert_eq!(
        b.host.take(),
        vec![
            BackendCall::Invalidate(vec![
                RawCommand::tlbi_nh_va(1, 0x1000, true),
                RawCommand::cfgi_cd_all(3)
            ]),
            BackendCall::Invalidate(vec![RawCommand::tlbi_nh_vaa(0x2000, false)]),
            BackendCall::Invalidate(vec![RawCommand::tlbi_nh_asid(9)]),
        ],
        "STE 3 is V = 0 both times: no install change"
    );
    assert_eq!(
        b.r32(EVTQ_PROD),
        2,
        "C_BAD_STE recorded when the stream was added and at CFGI_STE"
    );
}

/// A backend refusing a forwarded batch: CERROR_ABT at the command it did not complete,
/// and the queue stops there (the guest's retry re-forwards it).
#[test]
fn backend_invalidation_failure_is_cerror_abt() {
    let mut b = Bench::new();
    let mut q = enabled(&mut b);
    b.add_host_stream(1);
    b.host.fail_invalidate_after = Some(1);
    b.submit(
        &mut q,
        &[
            RawCommand::tlbi_nh_asid(1),
            RawCommand::tlbi_nh_asid(2),
            RawCommand::tlbi_nh_asid(3),
            RawCommand::sync(1, 0x8000, 5),
        ],
    );
    assert_eq!(b.r32(CMDQ_CONS), 1 | (2 << 24));
    assert!(b.smmu.cmdq_error_active());
    assert_eq!(b.get(0x8000), 0, "the CMD_SYNC did not complete");
    let g = b.r32(GERROR);
    b.host.take();
    b.w32(GERRORN, g);
    assert_eq!(b.r32(CMDQ_CONS) & 0xfffff, 4);
    assert_eq!(
        b.host.forwarded(),
        vec![RawCommand::tlbi_nh_asid(2), RawCommand::tlbi_nh_asid(3)]
    );
    assert_eq!(b.get32(0x8000), 5);
}

/// A backend refusing an install: the stream is made to abort and C_BAD_STE is
/// recorded for it.
#[test]
fn backend_install_failure_aborts_and_records() {
    let mut b = Bench::new();
    let mut q = enabled(&mut b);
    b.put(STRTAB + 64 * 2, &stage1_ste_words(0x4_0000));
    b.host.fail_install.push(2);
    b.add_host_stream(2);
    assert_eq!(
        b.host.installs().iter().map(|i| i.1).collect::<Vec<_>>(),
        vec![
            GuestSte::Stage1(vsmmuv3::VSte([0x4_0000 | 0b1011, 0])),
            GuestSte::Abort
        ]
    );
    assert_eq!(b.get(EVTQ) & 0xff, u64::from(id::C_BAD_STE));
    assert_eq!(b.smmu.installed(2), None, "both installs failed");
    b.host.fail_install.clear();
    b.submit(&mut q, &[RawCommand::cfgi_ste(2, true)]);
    assert!(matches!(b.smmu.installed(2), Some(GuestSte::Stage1(_))));
}

/// §5.2: STE configuration errors found when the model reads an STE for a host stream
/// are recorded (the host never sees that STE); C_BAD_STREAMID only with RECINVSID.
#[test]
fn ste_errors_are_recorded() {
    let mut b = Bench::new();
    let mut q = enabled(&mut b);
    b.add_host_stream(1);
    b.put(STRTAB + 64, &config_ste_words(0b110));
    b.submit(&mut q, &[RawCommand::cfgi_ste(1, false)]);
    b.put(STRTAB + 64, &stage1_ste_words(1 << 50));
    b.submit(&mut q, &[RawCommand::cfgi_ste(1, false)]);
    let ids: Vec<u64> = (0..3).map(|i| b.get(EVTQ + 32 * i) & 0xff).collect();
    assert_eq!(
        ids,
        vec![4, 4, 4],
        "V = 0 at add, stage 2 Config, CD pointer beyond OAS"
    );
    assert!(b.host.installs().iter().all(|i| i.1 == GuestSte::Abort));
    // Fetch abort: F_STE_FETCH with the address.
    b.w32(CR0, cr0::CMDQEN | cr0::EVENTQEN);
    b.w64(STRTAB_BASE, 0x1_0000_0000);
    b.w32(EVTQ_CONS, 3);
    b.w32(CR0, cr0::CMDQEN | cr0::EVENTQEN | cr0::SMMUEN);
    let e = EVTQ + 32 * 3;
    assert_eq!(b.get(e) & 0xff, u64::from(id::F_STE_FETCH));
    assert_eq!(b.get(e + 24), 0x1_0000_0040);
    // Out of range SID: C_BAD_STREAMID with RECINVSID, nothing without.
    assert!(
        b.smmu
            .add_host_stream(&b.mem, &mut b.host, &mut b.irq, 1 << 16)
            .is_err()
    );
    b.w32(CR0, cr0::CMDQEN);
    b.w64(STRTAB_BASE, STRTAB);
    b.w32(STRTAB_BASE_CFG, 0);
    b.w32(EVTQ_CONS, 0);
    b.w32(EVTQ_PROD, 0);
    b.w32(CR0, cr0::CMDQEN | cr0::EVENTQEN | cr0::SMMUEN);
    assert_eq!(b.get(EVTQ) & 0xff, u64::from(id::C_BAD_STREAMID));
    b.w32(CR0, cr0::CMDQEN | cr0::EVENTQEN);
    b.w32(CR2, 0);
    b.w32(EVTQ_CONS, 1);
    b.w32(CR0, cr0::CMDQEN | cr0::EVENTQEN | cr0::SMMUEN);
    assert_eq!(b.r32(EVTQ_PROD), 1, "nothing recorded without RECINVSID");
    let _ = &mut q;
}

// ------------------------------------------------------------------ event queue

/// §7.4: a full queue drops the event and toggles OVFLG once until the guest
/// acknowledges with OVACKFLG.
#[test]
fn event_queue_overflow() {
    let mut b = Bench::new();
    enabled(&mut b);
    let rec = |n: u8| {
        let mut r = [0u8; 32];
        r[0] = 0x10;
        r[4] = n;
        r
    };
    for i in 0..4 {
        assert_eq!(
            b.smmu.inject_host_event(&b.mem, &mut b.irq, &rec(i)),
            EventOutcome::Recorded
        );
    }
    assert_eq!(b.r32(EVTQ_PROD), 4, "index 0, wrap 1: full");
    assert_eq!(b.irq.wired, vec![IrqLine::EventQueue; 4]);
    assert_eq!(
        b.smmu.inject_host_event(&b.mem, &mut b.irq, &rec(9)),
        EventOutcome::Overflow
    );
    assert_eq!(b.r32(EVTQ_PROD), 4 | EVTQ_PROD_OVFLG);
    b.smmu.inject_host_event(&b.mem, &mut b.irq, &rec(9));
    assert_eq!(b.r32(EVTQ_PROD), 4 | EVTQ_PROD_OVFLG, "toggled once");
    // The guest drains two and acknowledges the overflow.
    b.w32(EVTQ_CONS, 2 | EVTQ_CONS_OVACKFLG);
    assert_eq!(
        b.smmu.inject_host_event(&b.mem, &mut b.irq, &rec(5)),
        EventOutcome::Recorded
    );
    assert_eq!(b.r32(EVTQ_PROD), 5 | EVTQ_PROD_OVFLG);
    assert_eq!(b.get(EVTQ) >> 32, 5, "written at index 0 after the wrap");
    // Lost host events: another overflow.
    b.smmu.inject_host_overflow();
    assert_eq!(b.r32(EVTQ_PROD), 5, "OVFLG toggled back: a new overflow");
    b.smmu.inject_host_overflow();
    assert_eq!(b.r32(EVTQ_PROD), 5);
}

/// §7.2: no events while EVENTQEN or SMMUEN is 0; §7.4: a write abort activates
/// GERROR.EVENTQ_ABT_ERR.
#[test]
fn event_queue_disabled_and_abort() {
    let mut b = Bench::new();
    let r = [0x10u8; 32];
    assert_eq!(
        b.smmu.inject_host_event(&b.mem, &mut b.irq, &r),
        EventOutcome::QueueDisabled
    );
    enabled(&mut b);
    b.w32(CR0, cr0::SMMUEN | cr0::CMDQEN);
    b.w64(EVTQ_BASE, 0x1_0000_0000 | 2);
    b.w32(CR0, cr0::SMMUEN | cr0::CMDQEN | cr0::EVENTQEN);
    assert_eq!(
        b.smmu.inject_host_event(&b.mem, &mut b.irq, &r),
        EventOutcome::WriteAbort
    );
    assert_eq!(b.r32(GERROR) & gerror::EVTQ_ABT_ERR, gerror::EVTQ_ABT_ERR);
    assert_eq!(b.irq.wired, vec![IrqLine::Gerror]);
    assert_eq!(b.r32(EVTQ_PROD), 0);
}

// ------------------------------------------------------------------ translation

/// §3.4 / §5.4: translate() reports why: CD fetch abort, ILLEGAL CD, and succeeds
/// through a valid one; with SMMUEN == 0 it follows GBPA.
#[test]
fn translate_reasons() {
    let mut b = Bench::new();
    assert_eq!(
        b.smmu
            .translate(&b.mem, 1, 0x5000, Access::WRITE)
            .unwrap()
            .output,
        0x5000,
        "disabled, GBPA bypass"
    );
    let mut q = enabled(&mut b);
    assert!(matches!(
        b.smmu.translate(&b.mem, 1, 0, Access::WRITE),
        Err(TranslateFault::BadSte(_))
    ));
    b.put(STRTAB + 64, &stage1_ste_words(0x1_0000_0000 - 64));
    b.submit(&mut q, &[RawCommand::cfgi_ste(1, true)]);
    assert!(matches!(
        b.smmu.translate(&b.mem, 1, 0, Access::WRITE),
        Err(TranslateFault::BadSte(_)) | Err(TranslateFault::CdFetch { .. })
    ));
    b.put(STRTAB + 64, &stage1_ste_words(0x20_0000_0000));
    b.submit(&mut q, &[RawCommand::cfgi_ste(1, true)]);
    assert_eq!(
        b.smmu.translate(&b.mem, 1, 0, Access::WRITE),
        Err(TranslateFault::CdFetch {
            addr: 0x20_0000_0000
        })
    );
    b.put(STRTAB + 64, &stage1_ste_words(0x4_0000));
    b.put(0x4_0000, &cd_words(0x5_0000, 16, 3, 5, 1));
    b.submit(&mut q, &[RawCommand::cfgi_ste(1, true)]);
    assert!(matches!(
        b.smmu.translate(&b.mem, 1, 0, Access::WRITE),
        Err(TranslateFault::BadCd(_))
    ));
    b.put(0x4_0000, &cd_words(0x5_0000, 16, 0, 5, 1));
    b.submit(&mut q, &[RawCommand::cfgi_cd(1, true)]);
    assert_eq!(
        b.smmu.translate(&b.mem, 1, 0, Access::WRITE),
        Err(TranslateFault::Translation { level: 0 })
    );
    b.map_4k(
        0x5_0000,
        0x6_0000,
        0x7000,
        0x9000,
        vsmmuv3::walk::desc::READ_ONLY,
    );
    assert_eq!(
        b.smmu.translate(&b.mem, 1, 0x7010, Access::WRITE),
        Err(TranslateFault::Permission { level: 3 })
    );
    assert_eq!(
        b.smmu
            .translate(&b.mem, 1, 0x7010, Access::READ)
            .unwrap()
            .output,
        0x9010
    );
    assert_eq!(
        b.smmu.tlb_stats().hits,
        1,
        "the write fault came from the TLB entry"
    );
}

/// The observer: enabling or disabling the SMMU reports every watched stream.
#[test]
fn observer_reports_enable_changes() {
    let mut b = Bench::new();
    b.smmu.translate(&b.mem, 7, 0, Access::WRITE).unwrap();
    let g = b.smmu.change_generation();
    enabled(&mut b);
    assert!(b.smmu.change_generation() > g);
    assert_eq!(
        b.smmu.take_changed_streams(),
        StreamChanges::Streams(vec![7])
    );
    assert_eq!(b.smmu.take_changed_streams(), StreamChanges::None);
}

// ------------------------------------------------------------------ snapshot

#[test]
fn snapshot_round_trip_and_resync() {
    let mut b = Bench::new();
    let mut q = enabled(&mut b);
    b.put(STRTAB + 64 * 3, &config_ste_words(0b100));
    b.add_host_stream(3);
    b.submit(&mut q, &[RawCommand::sync(0, 0, 0)]);
    let state = b.smmu.save_state();
    let json = serde_json::to_string(&state).unwrap();
    let back: vsmmuv3::VSmmuState = serde_json::from_str(&json).unwrap();
    let mut other = VSmmu::new(b.smmu.config().clone());
    other.restore_state(&back).unwrap();
    assert_eq!(other.save_state(), state);
    let mut host = vsmmuv3::RecordingBackend::new();
    other
        .add_host_stream(&b.mem, &mut host, &mut b.irq, 3)
        .unwrap();
    other.resync_backend(&b.mem, &mut host, &mut b.irq);
    assert_eq!(
        host.installs(),
        vec![(3, GuestSte::Bypass), (3, GuestSte::Bypass)]
    );
    let mut r = [0u8; 4];
    other.mmio_read(CMDQ_CONS, &mut r);
    assert_eq!(u32::from_le_bytes(r), 1);
}

#[test]
fn hostile_snapshots_are_refused() {
    let b = Bench::new();
    let good = b.smmu.save_state();
    let mut smmu = VSmmu::new(b.smmu.config().clone());
    let bad = |f: &dyn Fn(&mut vsmmuv3::VSmmuState)| {
        let mut s = good.clone();
        f(&mut s);
        s
    };
    assert_eq!(
        smmu.restore_state(&bad(&|s| s.version = 9)),
        Err(StateError::Version(9))
    );
    assert_eq!(
        smmu.restore_state(&bad(&|s| s.idr[0] ^= 1)),
        Err(StateError::Identity)
    );
    type Edit = fn(&mut vsmmuv3::VSmmuState);
    let edits: [Edit; 8] = [
        |s| s.regs.cr0 = 1 << 1,
        |s| s.regs.gbpa |= gbpa::UPDATE,
        |s| s.regs.gerror = 1 << 8,
        |s| s.regs.cmdq_prod = 1 << 20,
        |s| s.regs.cmdq_base = 1 << 63,
        |s| s.regs.evtq_prod = 1 << 30,
        |s| s.regs.strtab_base_cfg = 1 << 20,
        |s| s.regs.gerror_irq_cfg0 = 3,
    ];
    for f in edits {
        assert!(matches!(
            smmu.restore_state(&bad(&f)),
            Err(StateError::Register { .. })
        ));
    }
    let mut n = VSmmu::new(no_msi());
    let mut s = n.save_state();
    s.regs.evtq_irq_cfg1 = 1;
    assert!(n.restore_state(&s).is_err(), "IRQ config without MSIs");
}
