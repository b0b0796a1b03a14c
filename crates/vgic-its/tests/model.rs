// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Property tests: random command streams agree with a small HashMap reference model, and
//! random bytes in the queue, tables and registers never panic.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::*;
use proptest::prelude::*;
use vgic_its::cmd::decode::RawCommand;
use vgic_its::regs::{
    GITS_BASER0, GITS_CBASER, GITS_CREADR, GITS_CTLR, GITS_CWRITER, GITS_TYPER, ITS_FRAME_SIZE,
};
use vgic_its::{CommandErrorPolicy, ItsConfig, TableFormat};
use vm_memory::{Bytes, GuestAddress};

const DEV_BITS: u8 = 4; // DeviceIDs 0..16
const EV_BITS: u8 = 5; // MAPD Size 0..=4
const CID_BITS: u8 = 3; // ICIDs 0..8
const HCC: u8 = 2; // ICIDs 0, 1 on chip
const VCPUS: u32 = 3;
const INTID_BITS: u8 = 14; // LPIs 8192..16384

/// The reference model: what guest memory and the on-chip state hold, as maps.
#[derive(Default, Debug)]
struct Model {
    /// DeviceID -> (ITT region, EventID bits).
    devices: HashMap<u32, (u32, u8)>,
    /// (ITT region, EventID) -> (INTID, ICID). Regions persist across MAPDs like memory.
    ites: HashMap<(u32, u32), (u32, u16)>,
    /// ICID -> vCPU.
    collections: HashMap<u16, u32>,
    pending: BTreeSet<(u32, u32)>,
}

#[derive(Clone, Debug)]
enum Cmd {
    Mapd(u32, u8, u32, bool),
    Mapc(u16, u64, bool),
    Mapti(u32, u32, u32, u16),
    Mapi(u32, u32, u16),
    Movi(u32, u32, u16),
    Int(u32, u32),
    Clear(u32, u32),
    Inv(u32, u32),
    Discard(u32, u32),
    Invall(u16),
    Sync(u64),
    Movall(u64, u64),
}

fn itt_addr(dev: u32, region: u32) -> u64 {
    ITT_BASE + u64::from(dev * 2 + region) * 0x1000
}

impl Cmd {
    fn raw(&self) -> RawCommand {
        match *self {
            Cmd::Mapd(d, s, r, v) => RawCommand::mapd(d, s, itt_addr(d % 32, r), v),
            Cmd::Mapc(i, rd, v) => RawCommand::mapc(i, rd, v),
            Cmd::Mapti(d, e, p, i) => RawCommand::mapti(d, e, p, i),
            Cmd::Mapi(d, e, i) => RawCommand::mapi(d, e, i),
            Cmd::Movi(d, e, i) => RawCommand::movi(d, e, i),
            Cmd::Int(d, e) => RawCommand::int(d, e),
            Cmd::Clear(d, e) => RawCommand::clear(d, e),
            Cmd::Inv(d, e) => RawCommand::inv(d, e),
            Cmd::Discard(d, e) => RawCommand::discard(d, e),
            Cmd::Invall(i) => RawCommand::invall(i),
            Cmd::Sync(r) => RawCommand::sync(r),
            Cmd::Movall(a, b) => RawCommand::movall(a, b),
        }
    }
}

impl Model {
    fn dev_ok(d: u32) -> Result<(), u8> {
        if d >> DEV_BITS != 0 {
            Err(0x01)
        } else {
            Ok(())
        }
    }
    fn icid_ok(i: u16) -> Result<(), u8> {
        if u32::from(i) >> CID_BITS != 0 {
            Err(0x03)
        } else {
            Ok(())
        }
    }
    fn cpu(r: u64) -> Result<u32, u8> {
        if r < u64::from(VCPUS) {
            Ok(r as u32)
        } else {
            Err(0x02)
        }
    }
    fn device(&self, d: u32) -> Result<(u32, u8), u8> {
        Self::dev_ok(d)?;
        self.devices.get(&d).copied().ok_or(0x04)
    }
    /// (region, ITE) with DEVICE_OOR, UNMAPPED_DEVICE, ID_OOR, UNMAPPED_INTERRUPT.
    fn event(&self, d: u32, e: u32) -> Result<(u32, (u32, u16)), u8> {
        let (region, bits) = self.device(d)?;
        if u64::from(e) >> bits != 0 {
            return Err(0x05);
        }
        let ite = self.ites.get(&(region, e)).copied().ok_or(0x07)?;
        Ok((region, ite))
    }
    fn translate(&self, d: u32, e: u32) -> Result<(u32, u32), u8> {
        let (_, (intid, icid)) = self.event(d, e)?;
        let vcpu = self.collections.get(&icid).copied().ok_or(0x09)?;
        Ok((intid, vcpu))
    }

    /// Apply a command; the error reason byte on failure (nothing changes then).
    fn apply(&mut self, c: &Cmd) -> Result<(), u8> {
        match *c {
            Cmd::Mapd(d, size, r, v) => {
                Self::dev_ok(d)?;
                if v {
                    if size + 1 > EV_BITS {
                        return Err(0x02);
                    }
                    self.devices.insert(d, (d * 2 + r, size + 1));
                } else {
                    self.devices.remove(&d);
                }
            }
            Cmd::Mapc(i, rd, v) => {
                Self::icid_ok(i)?;
                if v {
                    let cpu = Self::cpu(rd)?;
                    self.collections.insert(i, cpu);
                } else {
                    self.collections.remove(&i);
                }
            }
            Cmd::Mapti(d, e, p, i) => {
                Self::dev_ok(d)?;
                Self::icid_ok(i)?;
                let (region, bits) = self.device(d)?;
                if u64::from(e) >> bits != 0 {
                    return Err(0x05);
                }
                if p < 8192 || u64::from(p) >> INTID_BITS != 0 {
                    return Err(0x06);
                }
                self.ites.insert((region, e), (p, i));
            }
            Cmd::Mapi(d, e, i) => return self.apply(&Cmd::Mapti(d, e, e, i)),
            Cmd::Movi(d, e, i) => {
                Self::dev_ok(d)?;
                Self::icid_ok(i)?;
                let (region, (intid, old)) = self.event(d, e)?;
                // IHI 0069H 5.3.21: the current collection, then the new one.
                let from = self.collections.get(&old).copied().ok_or(0x09)?;
                let to = self.collections.get(&i).copied().ok_or(0x09)?;
                if from != to && self.pending.remove(&(from, intid)) {
                    self.pending.insert((to, intid));
                }
                self.ites.insert((region, e), (intid, i));
            }
            Cmd::Int(d, e) => {
                let t = self.translate(d, e)?;
                self.pending.insert((t.1, t.0));
            }
            Cmd::Clear(d, e) => {
                let t = self.translate(d, e)?;
                self.pending.remove(&(t.1, t.0));
            }
            Cmd::Inv(d, e) => {
                self.translate(d, e)?;
            }
            Cmd::Discard(d, e) => {
                let (region, (intid, icid)) = self.event(d, e)?;
                // IHI 0069H 5.3.11: the collection must be mapped.
                let v = self.collections.get(&icid).copied().ok_or(0x09)?;
                self.pending.remove(&(v, intid));
                self.ites.remove(&(region, e));
            }
            Cmd::Invall(i) => {
                Self::icid_ok(i)?;
                self.collections.get(&i).ok_or(0x09)?;
            }
            Cmd::Sync(r) => {
                Self::cpu(r)?;
            }
            Cmd::Movall(a, b) => {
                let from = Self::cpu(a)?;
                let to = Self::cpu(b)?;
                if from != to {
                    let moved: Vec<_> = self
                        .pending
                        .iter()
                        .filter(|p| p.0 == from)
                        .copied()
                        .collect();
                    for (_, i) in moved {
                        self.pending.remove(&(from, i));
                        self.pending.insert((to, i));
                    }
                }
            }
        }
        Ok(())
    }
}

fn dev() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..4, 1 => 0u32..20]
}
fn ev() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..4, 1 => 0u32..40]
}
fn icid() -> impl Strategy<Value = u16> {
    prop_oneof![4 => 0u16..4, 1 => 0u16..10]
}
fn rdbase() -> impl Strategy<Value = u64> {
    0u64..5
}
fn intid() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 8192u32..8200, 1 => Just(8191u32), 1 => Just(16383u32), 1 => Just(16384u32)]
}

fn cmd() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        3 => (dev(), 0u8..6, 0u32..2, prop::bool::weighted(0.85))
            .prop_map(|(d, s, r, v)| Cmd::Mapd(d, s, r, v)),
        3 => (icid(), rdbase(), prop::bool::weighted(0.85))
            .prop_map(|(i, r, v)| Cmd::Mapc(i, r, v)),
        5 => (dev(), ev(), intid(), icid()).prop_map(|(d, e, p, i)| Cmd::Mapti(d, e, p, i)),
        1 => (dev(), ev(), icid()).prop_map(|(d, e, i)| Cmd::Mapi(d, e, i)),
        2 => (dev(), ev(), icid()).prop_map(|(d, e, i)| Cmd::Movi(d, e, i)),
        4 => (dev(), ev()).prop_map(|(d, e)| Cmd::Int(d, e)),
        2 => (dev(), ev()).prop_map(|(d, e)| Cmd::Clear(d, e)),
        1 => (dev(), ev()).prop_map(|(d, e)| Cmd::Inv(d, e)),
        2 => (dev(), ev()).prop_map(|(d, e)| Cmd::Discard(d, e)),
        1 => icid().prop_map(Cmd::Invall),
        1 => rdbase().prop_map(Cmd::Sync),
        1 => (rdbase(), rdbase()).prop_map(|(a, b)| Cmd::Movall(a, b)),
    ]
}

/// The geometry of these tests in either table format (KVM's holds its collections, so it
/// has no HCC).
fn format(kvm: bool) -> (TableFormat, u8) {
    if kvm {
        (TableFormat::KvmRev0, 0)
    } else {
        (TableFormat::Native, HCC)
    }
}

fn config(policy: CommandErrorPolicy, cache: usize, kvm: bool) -> ItsConfig {
    let (table_format, hcc) = format(kvm);
    ItsConfig::builder()
        .vcpus(VCPUS)
        .device_id_bits(DEV_BITS)
        .event_id_bits(EV_BITS)
        .collection_id_bits(CID_BITS)
        .hcc(hcc)
        .table_format(table_format)
        .intid_bits(INTID_BITS)
        .error_policy(policy)
        .cache_entries(cache)
        .build()
        .unwrap()
}

proptest! {
    /// Every command's outcome (success or error reason), the pending state and every
    /// translation agree with the model, in both table formats. A tiny cache (4 entries)
    /// forces evictions.
    #[test]
    fn commands_agree_with_model(
        cmds in prop::collection::vec(cmd(), 1..120),
        stall in any::<bool>(),
        cache in prop_oneof![Just(4usize), Just(1024usize)],
        probes in prop::collection::vec((dev(), ev()), 0..20),
        kvm in any::<bool>(),
    ) {
        let policy = if stall { CommandErrorPolicy::Stall } else { CommandErrorPolicy::Skip };
        let mut g = Guest::booted(config(policy, cache, kvm));
        let mut m = Model::default();
        for (n, c) in cmds.iter().enumerate() {
            let want = m.apply(c);
            let got = g.cmd(c.raw());
            prop_assert_eq!(
                got.map(|e| e.kind.reason()).ok_or(()),
                want.err().ok_or(()),
                "command {} {:?}", n, c
            );
            prop_assert!(!g.its.is_stalled());
            // Interleave MSIs to exercise the cache between commands.
            if let Some(&(d, e)) = probes.get(n % probes.len().max(1)) {
                let got = g.its.translate(&g.mem, d, e).map(|t| (t.intid, t.vcpu));
                prop_assert_eq!(got.ok(), m.translate(d, e).ok(), "probe {} {}", d, e);
            }
        }
        prop_assert_eq!(&g.rd.pending, &m.pending);
        for d in 0..20u32 {
            for e in 0..40u32 {
                let got = g.its.translate(&g.mem, d, e).map(|t| (t.intid, t.vcpu));
                prop_assert_eq!(got.ok(), m.translate(d, e).ok(), "translate {} {}", d, e);
            }
        }
        // A snapshot restores to the same answers.
        let state = g.its.save_state();
        let mut its = vgic_its::Its::from_state(&state).unwrap();
        for d in 0..16u32 {
            for e in 0..8u32 {
                prop_assert_eq!(
                    its.translate(&g.mem, d, e).ok(),
                    g.its.translate(&g.mem, d, e).ok()
                );
            }
        }
    }

    /// Random queue contents, random table words and random register writes never panic,
    /// and command processing stays bounded by the queue size.
    #[test]
    fn garbage_never_panics(
        queue in prop::collection::vec(any::<[u64; 4]>(), 1..64),
        tables in prop::collection::vec((0u64..0x2000, any::<u64>()), 0..64),
        regs in prop::collection::vec((0u64..ITS_FRAME_SIZE + 0x100, any::<u64>(), 0usize..4), 0..64),
        msis in prop::collection::vec((any::<u32>(), any::<u32>()), 0..32),
        kvm in any::<bool>(),
    ) {
        let mut g = Guest::new(
            ItsConfig::builder().vcpus(2).device_id_bits(32).event_id_bits(32)
                .intid_bits(32).error_policy(CommandErrorPolicy::Skip)
                .table_format(format(kvm).0).build().unwrap(),
        );
        g.setup_baser(0, (1 << 63) | (1 << 62) | DEVICE_TABLE);
        g.setup_baser(1, (1 << 63) | COLLECTION_TABLE);
        g.setup_queue(1);
        g.enable();
        for (off, word) in &tables {
            let base = if off & 1 == 0 { DEVICE_TABLE } else { COLLECTION_TABLE };
            g.mem.write_obj(*word, GuestAddress(base + (off & !7))).unwrap();
        }
        for (i, c) in queue.iter().enumerate() {
            g.mem.write_slice(&RawCommand(*c).to_bytes(), GuestAddress(CMD_QUEUE + 32 * i as u64)).unwrap();
        }
        let before = g.its.commands_processed();
        g.write64(GITS_CWRITER, 32 * queue.len() as u64);
        prop_assert!(g.its.commands_processed() - before <= 128);
        for (off, v, size) in &regs {
            let len = [1usize, 2, 4, 8][*size];
            let bytes = v.to_le_bytes();
            g.its.mmio_write(&g.mem, &mut g.rd, *off, &bytes[..len], Some(*v as u32));
            let mut out = [0u8; 8];
            g.its.mmio_read(*off, &mut out[..len]);
        }
        for (d, e) in &msis {
            let _ = g.its.send_msi(&g.mem, &mut g.rd, *d, *e);
        }
        for (v, _) in &g.rd.pending {
            prop_assert!(*v < 2);
        }
        let _ = vgic_its::Its::from_state(&g.its.save_state()).unwrap();
    }

    /// Issue 15 finding 1: whatever registers and commands the guest throws at the ITS,
    /// every state it reaches passes the restore checks, save -> restore -> save is the
    /// identity, and the restored ITS reads back the same registers.
    #[test]
    fn state_round_trips_whatever_the_guest_does(
        ops in prop::collection::vec(guest_op(), 1..80),
        stall in any::<bool>(),
        per_call in prop_oneof![Just(1usize), Just(3), Just(1024)],
        kvm in any::<bool>(),
    ) {
        let policy = if stall { CommandErrorPolicy::Stall } else { CommandErrorPolicy::Skip };
        let (table_format, hcc) = format(kvm);
        let config = ItsConfig::builder()
            .vcpus(VCPUS)
            .device_id_bits(DEV_BITS)
            .event_id_bits(EV_BITS)
            .collection_id_bits(CID_BITS)
            .hcc(hcc)
            .table_format(table_format)
            .intid_bits(INTID_BITS)
            .error_policy(policy)
            .commands_per_call(per_call)
            .build()
            .unwrap();
        let mut g = Guest::new(config);
        for op in &ops {
            match op {
                GuestOp::Reg(off, value, half) => {
                    if *half {
                        g.write32(*off, *value as u32);
                    } else {
                        g.write64(*off & !7, *value);
                    }
                }
                GuestOp::Queue(slot, c) => {
                    let _ = g.mem.write_slice(&c.raw().to_bytes(), GuestAddress(CMD_QUEUE + 32 * u64::from(*slot)));
                }
                GuestOp::Continue => {
                    g.its.process_commands(&g.mem, &mut g.rd);
                }
            }
            let state = g.its.save_state();
            prop_assert_eq!(state.validate(), Ok(()), "after {:?}", op);
            let restored = vgic_its::Its::from_state(&state);
            prop_assert!(restored.is_ok(), "restore refused a saved state after {:?}: {:?}", op, restored.err());
            let restored = restored.unwrap();
            prop_assert_eq!(&restored.save_state(), &state);
            prop_assert_eq!(restored.commands_pending(), g.its.commands_pending());
            for off in [GITS_CTLR, GITS_TYPER, GITS_CBASER, GITS_CWRITER, GITS_CREADR, GITS_BASER0, GITS_BASER0 + 8] {
                let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
                g.its.mmio_read(off, &mut a);
                restored.mmio_read(off, &mut b);
                prop_assert_eq!(a, b, "register {:#x}", off);
            }
        }
    }
}

#[derive(Clone, Debug)]
enum GuestOp {
    /// A register write: offset, value, 32-bit (else 64-bit).
    Reg(u64, u64, bool),
    /// A command written into queue slot n (queues reach 4 pages here).
    Queue(u16, Cmd),
    /// The VMM continues pending commands.
    Continue,
}

fn reg_value(off: u64) -> BoxedStrategy<u64> {
    match off {
        GITS_CBASER => (any::<bool>(), 0u64..4, any::<u64>())
            .prop_map(|(v, pages, noise)| {
                if noise & 7 == 0 {
                    noise
                } else {
                    (u64::from(v) << 63) | CMD_QUEUE | pages
                }
            })
            .boxed(),
        GITS_CWRITER => (0u64..0x4000, any::<bool>())
            .prop_map(|(o, retry)| (o & !31) | u64::from(retry))
            .boxed(),
        GITS_CTLR => (0u64..2).boxed(),
        o if o == GITS_BASER0 => prop_oneof![
            Just((1u64 << 63) | DEVICE_TABLE),
            Just((1u64 << 63) | (1 << 62) | DEVICE_TABLE),
            any::<u64>()
        ]
        .boxed(),
        o if o == GITS_BASER0 + 8 => {
            prop_oneof![Just((1u64 << 63) | COLLECTION_TABLE), any::<u64>()].boxed()
        }
        _ => any::<u64>().boxed(),
    }
}

fn guest_op() -> impl Strategy<Value = GuestOp> {
    let reg = prop::sample::select(vec![
        GITS_CTLR,
        GITS_CBASER,
        GITS_CBASER + 4,
        GITS_CWRITER,
        GITS_CWRITER + 4,
        GITS_CREADR,
        GITS_BASER0,
        GITS_BASER0 + 4,
        GITS_BASER0 + 8,
        GITS_BASER0 + 16,
        GITS_TYPER,
    ]);
    prop_oneof![
        4 => (reg, any::<bool>()).prop_flat_map(|(off, half)| {
            let half = half || off % 8 != 0 || off == GITS_CTLR;
            reg_value(off & !7).prop_map(move |v| {
                // A 32-bit write of the upper half carries the value's upper half.
                let v = if off % 8 == 4 { v >> 32 } else { v };
                GuestOp::Reg(off, v, half)
            })
        }),
        4 => (0u16..512, cmd()).prop_map(|(slot, c)| GuestOp::Queue(slot, c)),
        1 => Just(GuestOp::Continue),
    ]
}
