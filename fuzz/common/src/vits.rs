// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Target `vits`: the vITS driven through its register frame, a command queue and tables
//! in guest memory (IHI 0069H chapter 5 and the `GITS_*` registers of chapter 12).
//!
//! The harness lays out guest memory (flat or two-level Device table, Collection table,
//! a one-page command queue, a pool of 16 ITT slots), programs the registers the way
//! Linux does, and then plays the input's operations. Commands are written into the queue
//! one at a time and `GITS_CWRITER` advanced past each, so every command's outcome is seen
//! (`CommandErrorPolicy::Skip`).
//!
//! The reference model is a set of maps: DeviceID -> (ITT address, EventID bits),
//! (ITT address, EventID) -> (INTID, ICID) (an ITT lives in memory, so its entries
//! survive a re-MAPD to the same ITT, as in hardware), ICID -> vCPU. It predicts, from the
//! spec's checks in the spec's order (§5.3, "Command errors"), whether each command fails
//! and with which error, and the redistributor effects of those that succeed; it is
//! updated from each command once the ITS agreed. After every operation the translations
//! of the events the touched device maps must equal the model's, and at the end (and after
//! a save/restore, which starts with empty caches) every mapped event's translation must.
//!
//! In *chaos* mode the input may also write guest memory and any register (moving tables,
//! the queue, disabling the ITS): the model is then void and only the invariants that hold
//! whatever the guest does are checked: no panic, every redistributor call names a vCPU
//! below the configured count, every translation is an in-range LPI, `GITS_CREADR` stays
//! inside the queue, and one register write processes at most one queue's worth of
//! commands.

use std::collections::{BTreeMap, BTreeSet};

use vgic_its::cmd::decode::{RawCommand, opcode};
use vgic_its::regs::{
    GITS_BASER0, GITS_CBASER, GITS_CREADR, GITS_CTLR, GITS_CWRITER, GITS_TRANSLATER,
};
use vgic_its::{
    CommandErrorKind, CommandErrorPolicy, Its, ItsConfig, MappingEvent, Redistributors,
    Translation, TranslationError,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::wire::{Reader, Wire, Writer, decode_ops};

/// Most operations one input runs.
pub const MAX_OPS: usize = 192;

/// Guest memory size.
const MEM_SIZE: u64 = 0x60_0000;
/// Device table (flat) or its level-1 table.
const DT_BASE: u64 = 0x1_0000;
/// Level-2 Device table pages, one per level-1 entry.
const DT_L2_BASE: u64 = 0x4_0000;
/// Collection table.
const CT_BASE: u64 = 0x2_0000;
/// Command queue, one 4 KiB page.
const CQ_BASE: u64 = 0x3_0000;
/// Command queue size.
const CQ_SIZE: u64 = 0x1000;
/// First ITT slot; slot `k` is at `ITT_POOL + k * ITT_SLOT`.
const ITT_POOL: u64 = 0x10_0000;
/// Bytes per ITT slot: 2^14 events (so that MAPI's EventID can be an LPI) of at most
/// 16 bytes.
const ITT_SLOT: u64 = 0x4_0000;
/// Number of ITT slots.
const ITT_SLOTS: u64 = 16;

/// The ITS configuration and memory layout an input chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Setup {
    /// vCPUs, 1..=4.
    pub vcpus: u8,
    /// DeviceID bits, 1..=10.
    pub device_id_bits: u8,
    /// EventID bits, 1..=8 or 14.
    pub event_id_bits: u8,
    /// INTID bits, 14..=16.
    pub intid_bits: u8,
    /// ITT entry size, 8..=16.
    pub itt_entry_size: u8,
    /// Collection ID bits, 1..=4.
    pub collection_id_bits: u8,
    /// HCC, 0..=8.
    pub hcc: u8,
    /// log2 of the translation cache entries, 0..=4.
    pub cache_log2: u8,
    /// Device table pages, 1..=2 (flat) or level-1 entries made valid, 0..=2 (two-level).
    pub dt_pages: u8,
    /// Two-level Device table.
    pub indirect: bool,
    /// Whether `GITS_BASER1` is made valid (when the configuration implements it).
    pub ct_valid: bool,
    /// Chaos mode: memory and register writes allowed, model off.
    pub chaos: bool,
    /// Stall on error instead of skipping (chaos mode only).
    pub stall: bool,
}

impl Wire for Setup {
    fn decode(r: &mut Reader<'_>) -> Self {
        Setup {
            vcpus: 1 + r.u8() % 4,
            device_id_bits: 1 + r.u8() % 10,
            event_id_bits: [1, 2, 3, 4, 5, 6, 7, 8, 14][usize::from(r.u8() % 9)],
            intid_bits: 14 + r.u8() % 3,
            itt_entry_size: 8 + r.u8() % 9,
            collection_id_bits: 1 + r.u8() % 4,
            hcc: r.u8() % 9,
            cache_log2: r.u8() % 5,
            dt_pages: r.u8() % 3,
            indirect: r.bool(),
            ct_valid: r.bool(),
            chaos: r.bool(),
            stall: r.bool(),
        }
    }
    fn encode(&self, w: &mut Writer) {
        w.u8(self.vcpus - 1);
        w.u8(self.device_id_bits - 1);
        w.u8(if self.event_id_bits == 14 {
            8
        } else {
            self.event_id_bits - 1
        });
        w.u8(self.intid_bits - 14);
        w.u8(self.itt_entry_size - 8);
        w.u8(self.collection_id_bits - 1);
        w.u8(self.hcc);
        w.u8(self.cache_log2);
        w.u8(self.dt_pages);
        w.bool(self.indirect);
        w.bool(self.ct_valid);
        w.bool(self.chaos);
        w.bool(self.stall);
    }
}

impl Setup {
    fn config(&self) -> ItsConfig {
        let policy = if self.chaos && self.stall {
            CommandErrorPolicy::Stall
        } else {
            CommandErrorPolicy::Skip
        };
        let built = ItsConfig::builder()
            .vcpus(u32::from(self.vcpus))
            .device_id_bits(self.device_id_bits)
            .event_id_bits(self.event_id_bits)
            .intid_bits(self.intid_bits)
            .itt_entry_size(self.itt_entry_size)
            .collection_id_bits(self.collection_id_bits)
            .hcc(self.hcc)
            .cache_entries(1 << self.cache_log2)
            .error_policy(policy)
            .build();
        match built {
            Ok(c) => c,
            Err(e) => panic!("an in-range configuration was refused: {e}"),
        }
    }

    /// Device table entries reachable: flat `pages * 512`; two-level, 512 per valid
    /// level-1 entry.
    fn dt_capacity(&self) -> u64 {
        if self.indirect {
            u64::from(self.dt_pages) * 512
        } else {
            u64::from(self.dt_pages.max(1)) * 512
        }
    }
}

/// A command, typed (fields reduced to small domains around the valid ranges) or raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    /// MAPD DeviceID, Size, ITT slot, V.
    Mapd(u16, u8, u8, bool),
    /// MAPC ICID, RDbase, V.
    Mapc(u8, u8, bool),
    /// MAPTI DeviceID, EventID, pINTID - 8191, ICID.
    Mapti(u16, u16, u16, u8),
    /// MAPI DeviceID, EventID, ICID.
    Mapi(u16, u16, u8),
    /// MOVI DeviceID, EventID, ICID.
    Movi(u16, u16, u8),
    /// INT.
    Int(u16, u16),
    /// CLEAR.
    Clear(u16, u16),
    /// INV.
    Inv(u16, u16),
    /// DISCARD.
    Discard(u16, u16),
    /// INVALL ICID.
    Invall(u8),
    /// SYNC RDbase.
    Sync(u8),
    /// MOVALL RDbase1, RDbase2.
    Movall(u8, u8),
    /// Any 32 bytes.
    Raw([u64; 4]),
}

impl Wire for Cmd {
    fn decode(r: &mut Reader<'_>) -> Self {
        match r.u8() % 13 {
            0 => Cmd::Mapd(r.u16(), r.u8(), r.u8() % ITT_SLOTS as u8, r.bool()),
            1 => Cmd::Mapc(r.u8(), r.u8(), r.bool()),
            2 => Cmd::Mapti(r.u16(), r.u16(), r.u16(), r.u8()),
            3 => Cmd::Mapi(r.u16(), r.u16(), r.u8()),
            4 => Cmd::Movi(r.u16(), r.u16(), r.u8()),
            5 => Cmd::Int(r.u16(), r.u16()),
            6 => Cmd::Clear(r.u16(), r.u16()),
            7 => Cmd::Inv(r.u16(), r.u16()),
            8 => Cmd::Discard(r.u16(), r.u16()),
            9 => Cmd::Invall(r.u8()),
            10 => Cmd::Sync(r.u8()),
            11 => Cmd::Movall(r.u8(), r.u8()),
            _ => Cmd::Raw([r.u64(), r.u64(), r.u64(), r.u64()]),
        }
    }
    fn encode(&self, w: &mut Writer) {
        match *self {
            Cmd::Mapd(d, s, slot, v) => {
                w.u8(0);
                w.u16(d);
                w.u8(s);
                w.u8(slot);
                w.bool(v);
            }
            Cmd::Mapc(i, rd, v) => {
                w.u8(1);
                w.u8(i);
                w.u8(rd);
                w.bool(v);
            }
            Cmd::Mapti(d, e, p, i) => {
                w.u8(2);
                w.u16(d);
                w.u16(e);
                w.u16(p);
                w.u8(i);
            }
            Cmd::Mapi(d, e, i) | Cmd::Movi(d, e, i) => {
                w.u8(if matches!(self, Cmd::Mapi(..)) { 3 } else { 4 });
                w.u16(d);
                w.u16(e);
                w.u8(i);
            }
            Cmd::Int(d, e) | Cmd::Clear(d, e) | Cmd::Inv(d, e) | Cmd::Discard(d, e) => {
                w.u8(match self {
                    Cmd::Int(..) => 5,
                    Cmd::Clear(..) => 6,
                    Cmd::Inv(..) => 7,
                    _ => 8,
                });
                w.u16(d);
                w.u16(e);
            }
            Cmd::Invall(i) => {
                w.u8(9);
                w.u8(i);
            }
            Cmd::Sync(rd) => {
                w.u8(10);
                w.u8(rd);
            }
            Cmd::Movall(a, b) => {
                w.u8(11);
                w.u8(a);
                w.u8(b);
            }
            Cmd::Raw(dw) => {
                w.u8(12);
                for d in dw {
                    w.u64(d);
                }
            }
        }
    }
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VitsOp {
    /// Queue one command and process it.
    Command(Cmd),
    /// A device MSI: `send_msi`, or a `GITS_TRANSLATER` write carrying the DeviceID.
    Msi {
        /// DeviceID (reduced around the DeviceID range).
        device: u16,
        /// EventID (reduced around the EventID range).
        event: u16,
        /// Through the register frame.
        via_frame: bool,
    },
    /// A register read of 1, 2, 4 or 8 bytes anywhere in the frame.
    Read {
        /// Offset in the 128 KiB frame.
        offset: u32,
        /// Length selector.
        len_sel: u8,
    },
    /// Save the registers, build a new ITS from them (caches empty), continue with it.
    SaveRestore,
    /// Chaos only: write guest memory.
    Mem {
        /// Guest address (inside or beyond memory).
        addr: u32,
        /// Bytes.
        bytes: Vec<u8>,
    },
    /// Chaos only: write a register.
    Write {
        /// Offset in the frame.
        offset: u32,
        /// Length selector.
        len_sel: u8,
        /// Value.
        value: u64,
    },
}

const LENS: [usize; 4] = [8, 4, 2, 1];

impl Wire for VitsOp {
    fn decode(r: &mut Reader<'_>) -> Self {
        match r.u8() % 6 {
            0 => VitsOp::Command(Cmd::decode(r)),
            1 => VitsOp::Msi {
                device: r.u16(),
                event: r.u16(),
                via_frame: r.bool(),
            },
            2 => VitsOp::Read {
                offset: r.u32() % 0x2_0000,
                len_sel: r.u8() % 4,
            },
            3 => VitsOp::SaveRestore,
            4 => {
                let addr = r.u32();
                let n = usize::from(r.u8() % 64);
                VitsOp::Mem {
                    addr,
                    bytes: r.bytes(n),
                }
            }
            _ => VitsOp::Write {
                offset: r.u32() % 0x2_0000,
                len_sel: r.u8() % 4,
                value: r.u64(),
            },
        }
    }
    fn encode(&self, w: &mut Writer) {
        match self {
            VitsOp::Command(c) => {
                w.u8(0);
                c.encode(w);
            }
            VitsOp::Msi {
                device,
                event,
                via_frame,
            } => {
                w.u8(1);
                w.u16(*device);
                w.u16(*event);
                w.bool(*via_frame);
            }
            VitsOp::Read { offset, len_sel } => {
                w.u8(2);
                w.u32(*offset);
                w.u8(*len_sel);
            }
            VitsOp::SaveRestore => w.u8(3),
            VitsOp::Mem { addr, bytes } => {
                w.u8(4);
                w.u32(*addr);
                w.u8(bytes.len() as u8);
                w.bytes(bytes);
            }
            VitsOp::Write {
                offset,
                len_sel,
                value,
            } => {
                w.u8(5);
                w.u32(*offset);
                w.u8(*len_sel);
                w.u64(*value);
            }
        }
    }
}

/// An ITS setup and the operations on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VitsInput {
    /// Configuration and layout.
    pub setup: Setup,
    /// Operations.
    pub ops: Vec<VitsOp>,
}

impl Wire for VitsInput {
    fn decode(r: &mut Reader<'_>) -> Self {
        VitsInput {
            setup: Setup::decode(r),
            ops: decode_ops(r, MAX_OPS),
        }
    }
    fn encode(&self, w: &mut Writer) {
        self.setup.encode(w);
        for op in &self.ops {
            op.encode(w);
        }
    }
}

crate::impl_arbitrary!(VitsInput);

/// A redistributor effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effect {
    /// set_lpi_pending(vcpu, intid).
    Set(u32, u32),
    /// clear_lpi_pending(vcpu, intid).
    Clear(u32, u32),
    /// move_lpi(from, to, intid).
    Move(u32, u32, u32),
    /// move_all_lpis(from, to).
    MoveAll(u32, u32),
    /// invalidate_lpi(vcpu, intid).
    Inv(u32, u32),
    /// invalidate_all(vcpu).
    InvAll(u32),
    /// sync(vcpu).
    Sync(u32),
}

/// A recording redistributor that checks the trait's promises on every call.
#[derive(Debug, Default)]
pub struct Rd {
    vcpus: u32,
    /// Effects since the last take.
    pub effects: Vec<Effect>,
    /// Mapping events since the last take.
    pub events: Vec<MappingEvent>,
}

impl Rd {
    fn vcpu(&self, v: u32, what: &str) {
        assert!(v < self.vcpus, "{what}: vCPU {v} not below {}", self.vcpus);
    }
}

impl Redistributors for Rd {
    fn set_lpi_pending(&mut self, vcpu: u32, intid: u32) {
        self.vcpu(vcpu, "set_lpi_pending");
        self.effects.push(Effect::Set(vcpu, intid));
    }
    fn clear_lpi_pending(&mut self, vcpu: u32, intid: u32) {
        self.vcpu(vcpu, "clear_lpi_pending");
        self.effects.push(Effect::Clear(vcpu, intid));
    }
    fn move_lpi(&mut self, from: u32, to: u32, intid: u32) {
        self.vcpu(from, "move_lpi from");
        self.vcpu(to, "move_lpi to");
        assert_ne!(from, to, "move_lpi to the same vCPU");
        self.effects.push(Effect::Move(from, to, intid));
    }
    fn move_all_lpis(&mut self, from: u32, to: u32) {
        self.vcpu(from, "move_all_lpis from");
        self.vcpu(to, "move_all_lpis to");
        assert_ne!(from, to, "move_all_lpis to the same vCPU");
        self.effects.push(Effect::MoveAll(from, to));
    }
    fn invalidate_lpi(&mut self, vcpu: u32, intid: u32) {
        self.vcpu(vcpu, "invalidate_lpi");
        self.effects.push(Effect::Inv(vcpu, intid));
    }
    fn invalidate_all(&mut self, vcpu: u32) {
        self.vcpu(vcpu, "invalidate_all");
        self.effects.push(Effect::InvAll(vcpu));
    }
    fn sync(&mut self, vcpu: u32) {
        self.vcpu(vcpu, "sync");
        self.effects.push(Effect::Sync(vcpu));
    }
    fn mapping_changed(&mut self, event: &MappingEvent) {
        self.events.push(*event);
    }
}

/// The reference model of the ITS tables.
#[derive(Debug, Clone, Default)]
struct Model {
    devices: BTreeMap<u32, (u64, u8)>,
    ites: BTreeMap<(u64, u32), (u32, u16)>,
    collections: BTreeMap<u16, u32>,
}

/// What the model knows of the configuration.
#[derive(Debug, Clone, Copy)]
struct Limits {
    vcpus: u32,
    device_id_bits: u8,
    event_id_bits: u8,
    intid_bits: u8,
    collection_count: u32,
    on_chip: u32,
    ct_usable: bool,
    dt_capacity: u64,
}

impl Limits {
    fn device_ok(&self, d: u32) -> bool {
        u64::from(d) >> self.device_id_bits == 0 && u64::from(d) < self.dt_capacity
    }
    fn collection_ok(&self, icid: u16) -> bool {
        u32::from(icid) < self.collection_count
            && (u32::from(icid) < self.on_chip || self.ct_usable)
    }
    fn lpi(&self, intid: u32) -> bool {
        intid >= 8192 && u64::from(intid) >> self.intid_bits == 0
    }
}

type Outcome = Result<Vec<Effect>, CommandErrorKind>;

impl Model {
    fn event(&self, lim: &Limits, d: u32, e: u32) -> Result<(u64, u32, u16), CommandErrorKind> {
        if !lim.device_ok(d) {
            return Err(CommandErrorKind::DeviceOor { device_id: d });
        }
        let &(itt, bits) = self
            .devices
            .get(&d)
            .ok_or(CommandErrorKind::UnmappedDevice { device_id: d })?;
        if u64::from(e) >> bits != 0 {
            return Err(CommandErrorKind::IdOor {
                device_id: d,
                event_id: e,
                bits,
            });
        }
        let &(intid, icid) =
            self.ites
                .get(&(itt, e))
                .ok_or(CommandErrorKind::UnmappedInterrupt {
                    device_id: d,
                    event_id: e,
                })?;
        Ok((itt, intid, icid))
    }

    fn translate(&self, lim: &Limits, d: u32, e: u32) -> Result<(u32, u32, u16), CommandErrorKind> {
        let (_, intid, icid) = self.event(lim, d, e)?;
        let vcpu = *self
            .collections
            .get(&icid)
            .ok_or(CommandErrorKind::UnmappedCollection { icid })?;
        Ok((intid, vcpu, icid))
    }

    fn processor(lim: &Limits, rd: u64) -> Result<u32, CommandErrorKind> {
        if rd < u64::from(lim.vcpus) {
            Ok(rd as u32)
        } else {
            Err(CommandErrorKind::ProcnumOor {
                rdbase: rd,
                vcpus: lim.vcpus,
            })
        }
    }

    /// Predicts a command's outcome (IHI 0069H §5.3, checks in the spec's order) and, on
    /// success, applies it. Returns whether the model stays exact (an ITT outside the pool,
    /// or one shared by two mapped devices, makes it void).
    fn apply(&mut self, lim: &Limits, c: &RawCommand) -> (Outcome, bool) {
        let d = c.device_id();
        let e = c.event_id();
        let icid = c.icid();
        let mut exact = true;
        let coll_oor = |icid| CommandErrorKind::CollectionOor { icid };
        let outcome = (|| -> Outcome {
            match c.cmd_type() {
                opcode::MAPD => {
                    if !lim.device_ok(d) {
                        return Err(CommandErrorKind::DeviceOor { device_id: d });
                    }
                    if c.valid() {
                        let bits = c.size() + 1;
                        if bits > lim.event_id_bits {
                            return Err(CommandErrorKind::IttSizeOor {
                                bits,
                                max: lim.event_id_bits,
                            });
                        }
                        let itt = c.itt_addr();
                        let in_pool = (ITT_POOL..ITT_POOL + ITT_SLOTS * ITT_SLOT).contains(&itt)
                            && (itt - ITT_POOL).is_multiple_of(ITT_SLOT);
                        // Two mapped DeviceIDs sharing an ITT is a guest error with
                        // UNPREDICTABLE results (IHI 0069H §5.2: each device has its own ITT;
                        // an ITS may cache per DeviceID): the model stops predicting.
                        let shared = self
                            .devices
                            .iter()
                            .any(|(other, (t, _))| *other != d && *t == itt);
                        exact = in_pool && !shared;
                        self.devices.insert(d, (itt, bits));
                    } else {
                        self.devices.remove(&d);
                    }
                    Ok(vec![])
                }
                opcode::MAPC => {
                    if !lim.collection_ok(icid) {
                        return Err(coll_oor(icid));
                    }
                    if c.valid() {
                        let vcpu = Self::processor(lim, c.rdbase())?;
                        self.collections.insert(icid, vcpu);
                    } else {
                        self.collections.remove(&icid);
                    }
                    Ok(vec![])
                }
                op @ (opcode::MAPTI | opcode::MAPI) => {
                    let intid = if op == opcode::MAPI { e } else { c.p_intid() };
                    if !lim.device_ok(d) {
                        return Err(CommandErrorKind::DeviceOor { device_id: d });
                    }
                    if !lim.collection_ok(icid) {
                        return Err(coll_oor(icid));
                    }
                    let &(itt, bits) = self
                        .devices
                        .get(&d)
                        .ok_or(CommandErrorKind::UnmappedDevice { device_id: d })?;
                    if u64::from(e) >> bits != 0 {
                        return Err(CommandErrorKind::IdOor {
                            device_id: d,
                            event_id: e,
                            bits,
                        });
                    }
                    if !lim.lpi(intid) {
                        return Err(CommandErrorKind::PhysicalIdOor {
                            intid,
                            intid_bits: lim.intid_bits,
                        });
                    }
                    self.ites.insert((itt, e), (intid, icid));
                    Ok(vec![])
                }
                op @ (opcode::INT | opcode::CLEAR | opcode::INV) => {
                    let (intid, vcpu, _) = self.translate(lim, d, e)?;
                    Ok(vec![match op {
                        opcode::INT => Effect::Set(vcpu, intid),
                        opcode::CLEAR => Effect::Clear(vcpu, intid),
                        _ => Effect::Inv(vcpu, intid),
                    }])
                }
                opcode::DISCARD => {
                    // IHI 0069H 5.3.11: the ITE's collection must be mapped (issue 15: the
                    // harness used to expect a discard through an unmapped collection).
                    let (itt, intid, old) = self.event(lim, d, e)?;
                    let vcpu = *self
                        .collections
                        .get(&old)
                        .ok_or(CommandErrorKind::UnmappedCollection { icid: old })?;
                    self.ites.remove(&(itt, e));
                    Ok(vec![Effect::Clear(vcpu, intid)])
                }
                opcode::MOVI => {
                    if !lim.device_ok(d) {
                        return Err(CommandErrorKind::DeviceOor { device_id: d });
                    }
                    if !lim.collection_ok(icid) {
                        return Err(coll_oor(icid));
                    }
                    let (itt, intid, old) = self.event(lim, d, e)?;
                    // IHI 0069H 5.3.21: the current collection first, then the new one
                    // (issue 15 finding 3: the harness encoded the old, wrong success).
                    let from = *self
                        .collections
                        .get(&old)
                        .ok_or(CommandErrorKind::UnmappedCollection { icid: old })?;
                    let to = *self
                        .collections
                        .get(&icid)
                        .ok_or(CommandErrorKind::UnmappedCollection { icid })?;
                    let fx = if from != to {
                        vec![Effect::Move(from, to, intid)]
                    } else {
                        vec![]
                    };
                    self.ites.insert((itt, e), (intid, icid));
                    Ok(fx)
                }
                opcode::INVALL => {
                    if !lim.collection_ok(icid) {
                        return Err(coll_oor(icid));
                    }
                    let vcpu = *self
                        .collections
                        .get(&icid)
                        .ok_or(CommandErrorKind::UnmappedCollection { icid })?;
                    Ok(vec![Effect::InvAll(vcpu)])
                }
                opcode::SYNC => Ok(vec![Effect::Sync(Self::processor(lim, c.rdbase())?)]),
                opcode::MOVALL => {
                    let from = Self::processor(lim, c.rdbase())?;
                    let to = Self::processor(lim, c.rdbase2())?;
                    Ok(if from != to {
                        vec![Effect::MoveAll(from, to)]
                    } else {
                        vec![]
                    })
                }
                _ => Err(CommandErrorKind::Unsupported),
            }
        })();
        (outcome, exact)
    }
}

fn translation_error(kind: CommandErrorKind, d: u32, e: u32) -> TranslationError {
    match kind {
        CommandErrorKind::DeviceOor { device_id } => {
            TranslationError::DeviceOutOfRange { device_id }
        }
        CommandErrorKind::UnmappedDevice { device_id } => {
            TranslationError::DeviceUnmapped { device_id }
        }
        CommandErrorKind::IdOor {
            device_id,
            event_id,
            bits,
        } => TranslationError::EventOutOfRange {
            device_id,
            event_id,
            bits,
        },
        CommandErrorKind::UnmappedCollection { icid } => {
            TranslationError::CollectionUnmapped { icid }
        }
        _ => TranslationError::EventUnmapped {
            device_id: d,
            event_id: e,
        },
    }
}

struct Run {
    setup: Setup,
    lim: Limits,
    mem: GuestMemoryMmap<()>,
    its: Its,
    rd: Rd,
    model: Model,
    /// The model is exact (not chaos, no stray ITT).
    exact: bool,
    cwriter: u64,
}

fn w64(its: &mut Its, mem: &GuestMemoryMmap<()>, rd: &mut Rd, off: u64, v: u64) {
    its.mmio_write(mem, rd, off, &v.to_le_bytes(), None);
}

impl Run {
    fn new(setup: Setup) -> Self {
        let config = setup.config();
        let lim = Limits {
            vcpus: config.vcpus(),
            device_id_bits: config.device_id_bits(),
            event_id_bits: config.event_id_bits(),
            intid_bits: config.intid_bits(),
            collection_count: config.collection_count(),
            on_chip: config.on_chip_collections(),
            ct_usable: config.collections_in_memory() && setup.ct_valid,
            dt_capacity: setup.dt_capacity(),
        };
        let mem = match GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)])
        {
            Ok(m) => m,
            Err(e) => panic!("guest memory: {e}"),
        };
        let mut its = Its::new(config);
        let mut rd = Rd {
            vcpus: lim.vcpus,
            ..Rd::default()
        };
        // Linux's order: Device table, Collection table, queue, enable.
        let dt = if setup.indirect {
            for k in 0..u64::from(setup.dt_pages) {
                let l1 = (1u64 << 63) | (DT_L2_BASE + k * 0x1000);
                let _ = mem.write_obj(l1, GuestAddress(DT_BASE + 8 * k));
            }
            (1u64 << 63) | (1 << 62) | DT_BASE
        } else {
            (1u64 << 63) | DT_BASE | u64::from(setup.dt_pages.max(1) - 1)
        };
        w64(&mut its, &mem, &mut rd, GITS_BASER0, dt);
        if setup.ct_valid {
            w64(
                &mut its,
                &mem,
                &mut rd,
                GITS_BASER0 + 8,
                (1u64 << 63) | CT_BASE,
            );
        }
        w64(&mut its, &mem, &mut rd, GITS_CBASER, (1u64 << 63) | CQ_BASE);
        its.mmio_write(&mem, &mut rd, GITS_CTLR, &1u32.to_le_bytes(), None);
        assert!(its.is_enabled(), "ITS did not enable");
        Run {
            setup,
            lim,
            mem,
            its,
            rd,
            model: Model::default(),
            exact: !setup.chaos,
            cwriter: 0,
        }
    }

    fn reduce_device(&self, d: u16) -> u32 {
        u32::from(d) % ((1u32 << self.lim.device_id_bits) + 2)
    }

    fn reduce_event(&self, e: u16) -> u32 {
        u32::from(e) % ((1u32 << self.lim.event_id_bits) + 2)
    }

    fn reduce_icid(&self, i: u8) -> u16 {
        (u32::from(i) % (self.lim.collection_count + 2)) as u16
    }

    fn reduce_rd(&self, r: u8) -> u64 {
        u64::from(r) % (u64::from(self.lim.vcpus) + 1)
    }

    fn raw(&self, c: &Cmd) -> RawCommand {
        match *c {
            Cmd::Mapd(d, size, slot, v) => RawCommand::mapd(
                self.reduce_device(d),
                size % (self.lim.event_id_bits + 1),
                ITT_POOL + u64::from(slot) * ITT_SLOT,
                v,
            ),
            Cmd::Mapc(i, r, v) => RawCommand::mapc(self.reduce_icid(i), self.reduce_rd(r), v),
            Cmd::Mapti(d, e, p, i) => RawCommand::mapti(
                self.reduce_device(d),
                self.reduce_event(e),
                8191 + u32::from(p),
                self.reduce_icid(i),
            ),
            Cmd::Mapi(d, e, i) => {
                // MAPI uses the EventID as pINTID: offer LPI-sized EventIDs too.
                let ev = if e & 0x8000 != 0 {
                    8192 + u32::from(e & 0x3fff)
                } else {
                    self.reduce_event(e)
                };
                RawCommand::mapi(self.reduce_device(d), ev, self.reduce_icid(i))
            }
            Cmd::Movi(d, e, i) => RawCommand::movi(
                self.reduce_device(d),
                self.reduce_event(e),
                self.reduce_icid(i),
            ),
            Cmd::Int(d, e) => RawCommand::int(self.reduce_device(d), self.reduce_event(e)),
            Cmd::Clear(d, e) => RawCommand::clear(self.reduce_device(d), self.reduce_event(e)),
            Cmd::Inv(d, e) => RawCommand::inv(self.reduce_device(d), self.reduce_event(e)),
            Cmd::Discard(d, e) => RawCommand::discard(self.reduce_device(d), self.reduce_event(e)),
            Cmd::Invall(i) => RawCommand::invall(self.reduce_icid(i)),
            Cmd::Sync(r) => RawCommand::sync(self.reduce_rd(r)),
            Cmd::Movall(a, b) => RawCommand::movall(self.reduce_rd(a), self.reduce_rd(b)),
            Cmd::Raw(dw) => RawCommand(dw),
        }
    }

    fn check_translation(&mut self, d: u32, e: u32) {
        let got = self.its.translate(&self.mem, d, e);
        if let Ok(t) = got {
            self.check_translation_sane(&t);
        }
        if !self.exact {
            return;
        }
        let want = self
            .model
            .translate(&self.lim, d, e)
            .map(|(intid, vcpu, icid)| Translation { intid, vcpu, icid })
            .map_err(|k| translation_error(k, d, e));
        assert_eq!(got, want, "translation of DeviceID {d:#x} EventID {e:#x}");
    }

    fn check_translation_sane(&self, t: &Translation) {
        assert!(t.vcpu < self.lim.vcpus, "translation to vCPU {}", t.vcpu);
        assert!(self.lim.lpi(t.intid), "translation to non-LPI {}", t.intid);
        assert!(
            u32::from(t.icid) < self.lim.collection_count,
            "translation through ICID {}",
            t.icid
        );
    }

    /// Every event the model maps, or the events of one device.
    fn check_all(&mut self, only: Option<u32>) {
        if !self.exact {
            return;
        }
        let pairs: BTreeSet<(u32, u32)> = self
            .model
            .devices
            .iter()
            .filter(|(d, _)| only.is_none_or(|o| o == **d))
            .flat_map(|(d, (itt, _))| {
                self.model
                    .ites
                    .range((*itt, 0)..=(*itt, u32::MAX))
                    .map(move |((_, e), _)| (*d, *e))
            })
            .collect();
        for (d, e) in pairs {
            self.check_translation(d, e);
        }
    }

    fn creadr(&self) -> u64 {
        let mut b = [0u8; 8];
        self.its.mmio_read(GITS_CREADR, &mut b);
        u64::from_le_bytes(b)
    }

    fn command(&mut self, c: &Cmd) {
        let raw = self.raw(c);
        let at = CQ_BASE + self.cwriter;
        if let Err(e) = self.mem.write_slice(&raw.to_bytes(), GuestAddress(at)) {
            panic!("queue write at {at:#x}: {e}");
        }
        self.cwriter = (self.cwriter + 32) % CQ_SIZE;
        self.its.take_last_command_error();
        self.rd.effects.clear();
        let before = self.its.commands_processed();
        let cw = self.cwriter;
        w64(&mut self.its, &self.mem, &mut self.rd, GITS_CWRITER, cw);
        let processed = self.its.commands_processed() - before;
        let error = self.its.take_last_command_error().map(|e| e.kind);
        if self.exact {
            assert_eq!(processed, 1, "one command queued, {processed} processed");
            assert_eq!(self.creadr(), self.cwriter, "GITS_CREADR after the command");
            let (want, exact) = self.model.apply(&self.lim, &raw);
            match (&want, error) {
                (Ok(fx), None) => {
                    assert_eq!(&self.rd.effects, fx, "effects of {raw:x?}")
                }
                (Err(k), Some(got)) => assert_eq!(got, *k, "error of {raw:x?}"),
                _ => panic!("command {raw:x?}: model says {want:?}, ITS says {error:?}"),
            }
            self.exact = exact;
            self.check_all(Some(raw.device_id()));
        }
    }

    fn step(&mut self, op: &VitsOp) {
        let mut before = self.its.commands_processed();
        match op {
            VitsOp::Command(c) => self.command(c),
            VitsOp::Msi {
                device,
                event,
                via_frame,
            } => {
                let (d, e) = (self.reduce_device(*device), self.reduce_event(*event));
                self.rd.effects.clear();
                let got = if *via_frame {
                    let mem = &self.mem;
                    self.its.mmio_write(
                        mem,
                        &mut self.rd,
                        GITS_TRANSLATER,
                        &e.to_le_bytes(),
                        Some(d),
                    );
                    None
                } else {
                    Some(self.its.send_msi(&self.mem, &mut self.rd, d, e))
                };
                if let Some(Ok(t)) = &got {
                    self.check_translation_sane(t);
                    assert_eq!(self.rd.effects, vec![Effect::Set(t.vcpu, t.intid)]);
                }
                if self.exact {
                    let want: Vec<Effect> = match self.model.translate(&self.lim, d, e) {
                        Ok((intid, vcpu, _)) => vec![Effect::Set(vcpu, intid)],
                        Err(_) => vec![],
                    };
                    assert_eq!(self.rd.effects, want, "MSI from {d:#x}/{e:#x}");
                    self.check_translation(d, e);
                }
            }
            VitsOp::Read { offset, len_sel } => {
                let mut b = vec![0u8; LENS[usize::from(*len_sel) % 4]];
                self.its.mmio_read(u64::from(*offset), &mut b);
            }
            VitsOp::SaveRestore => {
                let state = self.its.save_state();
                self.its = match Its::from_state(&state) {
                    Ok(its) => its,
                    Err(e) => panic!("restore of a live state failed: {e}"),
                };
                assert_eq!(self.its.save_state(), state, "state round trip");
                before = self.its.commands_processed();
                self.check_all(None);
            }
            VitsOp::Mem { addr, bytes } => {
                if self.setup.chaos {
                    let _ = self.mem.write_slice(bytes, GuestAddress(u64::from(*addr)));
                }
            }
            VitsOp::Write {
                offset,
                len_sel,
                value,
            } => {
                let len = LENS[usize::from(*len_sel) % 4];
                let off = u64::from(*offset);
                if self.setup.chaos {
                    let bytes = &value.to_le_bytes()[..len];
                    self.its
                        .mmio_write(&self.mem, &mut self.rd, off, bytes, None);
                    // Keep queueing where the guest's CWRITER now is.
                    let mut b = [0u8; 8];
                    self.its.mmio_read(GITS_CWRITER, &mut b);
                    self.cwriter = (u64::from_le_bytes(b) & 0xf_ffe0) % CQ_SIZE;
                } else {
                    let mut b = vec![0u8; len];
                    self.its.mmio_read(off, &mut b);
                }
            }
        }
        // Whatever the guest did: the queue pointer stays inside the queue, and one
        // operation processes at most one queue's worth of commands.
        let mut cb = [0u8; 8];
        self.its.mmio_read(GITS_CBASER, &mut cb);
        let queue = ((u64::from_le_bytes(cb) & 0xff) + 1) * 0x1000;
        let creadr = self.creadr() & !1;
        assert!(
            creadr.is_multiple_of(32),
            "GITS_CREADR {creadr:#x} not command aligned"
        );
        assert!(
            creadr < queue || creadr == 0,
            "GITS_CREADR {creadr:#x} beyond the queue"
        );
        let processed = self.its.commands_processed() - before;
        assert!(
            processed <= queue / 32,
            "{processed} commands for one operation"
        );
        // Issue 15 finding 5: one MMIO exit does bounded work.
        let per_call = self.its.config().commands_per_call() as u64;
        assert!(
            processed <= per_call,
            "{processed} commands for one operation, limit {per_call}"
        );
        // Issue 15 finding 1: every reachable state is one a restore accepts.
        if let Err(e) = self.its.check_state() {
            panic!("reachable state refused by the restore checks: {e}");
        }
    }
}

/// Replays one input, panicking on the first broken invariant.
pub fn run(input: &VitsInput) {
    let mut run = Run::new(input.setup);
    for op in &input.ops {
        run.step(op);
    }
    run.check_all(None);
}

/// Seeds: the crate's Linux boot sequence and model scenarios.
pub fn seeds() -> Vec<(&'static str, VitsInput)> {
    let setup = Setup {
        vcpus: 2,
        device_id_bits: 8,
        event_id_bits: 14,
        intid_bits: 16,
        itt_entry_size: 8,
        collection_id_bits: 3,
        hcc: 2,
        cache_log2: 2,
        dt_pages: 1,
        indirect: false,
        ct_valid: true,
        chaos: false,
        stall: false,
    };
    let boot = vec![
        VitsOp::Command(Cmd::Mapc(0, 0, true)),
        VitsOp::Command(Cmd::Mapc(1, 1, true)),
        VitsOp::Command(Cmd::Mapc(5, 1, true)),
        VitsOp::Command(Cmd::Mapd(8, 13, 3, true)),
        VitsOp::Command(Cmd::Mapti(8, 3, 4, 1)),
        VitsOp::Command(Cmd::Mapi(8, 0x8004, 5)),
        VitsOp::Command(Cmd::Sync(1)),
        VitsOp::Msi {
            device: 8,
            event: 3,
            via_frame: false,
        },
        VitsOp::Msi {
            device: 8,
            event: 3,
            via_frame: true,
        },
    ];
    let mut moves = boot.clone();
    moves.extend([
        VitsOp::Command(Cmd::Movi(8, 3, 0)),
        VitsOp::Command(Cmd::Int(8, 3)),
        VitsOp::Command(Cmd::Movall(0, 1)),
        VitsOp::Command(Cmd::Invall(1)),
        VitsOp::Command(Cmd::Inv(8, 3)),
        VitsOp::Command(Cmd::Clear(8, 3)),
        VitsOp::Command(Cmd::Discard(8, 3)),
        VitsOp::Command(Cmd::Int(8, 3)),
        VitsOp::Command(Cmd::Mapd(8, 0, 3, false)),
        VitsOp::Command(Cmd::Mapd(8, 4, 3, true)),
        VitsOp::SaveRestore,
        VitsOp::Msi {
            device: 8,
            event: 4,
            via_frame: false,
        },
    ]);
    let mut two_level = Setup {
        indirect: true,
        dt_pages: 1,
        device_id_bits: 10,
        ..setup
    };
    two_level.hcc = 0;
    let mut errors = boot.clone();
    errors.extend([
        VitsOp::Command(Cmd::Mapd(600, 4, 1, true)),
        VitsOp::Command(Cmd::Mapd(9, 31, 1, true)),
        VitsOp::Command(Cmd::Mapti(9, 0, 0, 0)),
        VitsOp::Command(Cmd::Mapti(8, 40, 5, 0)),
        VitsOp::Command(Cmd::Mapti(8, 1, 0, 0)),
        VitsOp::Command(Cmd::Mapc(9, 0, true)),
        VitsOp::Command(Cmd::Sync(7)),
        VitsOp::Command(Cmd::Raw([0x2a, 0, 0, 0])),
    ]);
    let chaos = Setup {
        chaos: true,
        stall: true,
        ..setup
    };
    let mut garbage = boot.clone();
    garbage.extend([
        VitsOp::Mem {
            addr: CQ_BASE as u32 + 0x120,
            bytes: vec![0x08; 32],
        },
        VitsOp::Write {
            offset: GITS_CWRITER as u32,
            len_sel: 0,
            value: 0x140,
        },
        VitsOp::Write {
            offset: GITS_CWRITER as u32,
            len_sel: 0,
            value: 0x141,
        },
        VitsOp::Write {
            offset: GITS_CTLR as u32,
            len_sel: 1,
            value: 0,
        },
        VitsOp::Write {
            offset: GITS_CBASER as u32,
            len_sel: 0,
            value: (1 << 63) | 0x1f_f000 | 0xff,
        },
        VitsOp::Write {
            offset: GITS_CTLR as u32,
            len_sel: 1,
            value: 1,
        },
        VitsOp::Command(Cmd::Int(8, 3)),
    ]);
    vec![
        ("linux_boot", VitsInput { setup, ops: boot }),
        ("moves_and_discard", VitsInput { setup, ops: moves }),
        (
            "two_level_errors",
            VitsInput {
                setup: two_level,
                ops: errors,
            },
        ),
        (
            "chaos_queue",
            VitsInput {
                setup: chaos,
                ops: garbage,
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::check_round_trip;

    #[test]
    fn wire_round_trips() {
        check_round_trip::<VitsInput>(3, 300, 600);
    }

    #[test]
    fn seeds_replay_clean() {
        for (name, s) in seeds() {
            assert_eq!(VitsInput::from_bytes(&s.to_bytes()), s, "seed {name}");
            run(&s);
        }
    }

    #[test]
    fn random_inputs_replay() {
        let mut rng = crate::wire::XorShift::new(5);
        for _ in 0..200 {
            let len = (rng.next_u64() % 500) as usize;
            run(&VitsInput::from_bytes(&rng.bytes(len)));
        }
    }

    #[test]
    fn model_predicts_the_boot() {
        // The model is not vacuous: after the boot seed it maps two events and the
        // translation of (8, 3) is LPI 8195 on vCPU 1.
        let (_, s) = seeds().remove(0);
        let mut run = Run::new(s.setup);
        for op in &s.ops {
            run.step(op);
        }
        assert!(run.exact);
        assert_eq!(run.model.ites.len(), 2);
        let t = run.its.translate(&run.mem, 8, 3).unwrap();
        assert_eq!((t.intid, t.vcpu), (8195, 1));
    }
}
