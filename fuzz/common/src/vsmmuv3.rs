// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Target `vsmmuv3`: the virtual SMMUv3 driven through its registers, its command queue,
//! Stream table, CDs and page tables in guest memory, host events and snapshots
//! (IHI 0070).
//!
//! The harness brings the vSMMU up the way Linux does (linear or 2-level Stream table with
//! random level-1 spans, a small command queue, a 4-entry event queue, MSIs or wired
//! interrupts), declares up to eight host streams, and plays the input's operations: STE,
//! CD and page-table writes, commands written to the queue and published, translations,
//! host events, enable/GBPA toggles, save/restore; in *chaos* mode also any register
//! write and any guest-memory write.
//!
//! Invariants, always:
//! - no panic; one MMIO write or `process_pending` call consumes at most the configured
//!   number of commands, and draining a published queue terminates;
//! - every backend install names a host stream and carries an allowed vSTE; a stage-1
//!   install is exactly the guest's legal stage-1 STE as it is in memory at that moment,
//!   with the SMMU enabled; a bypass install means a bypass STE or the SMMU disabled with
//!   GBPA bypass;
//! - every forwarded batch is non-empty, at most the batch size, only of the opcodes the
//!   kernel takes, SID-carrying ones only for host streams;
//! - when a forwarded batch fails, CONS points at the command the backend did not complete,
//!   with `CERROR_ABT`;
//! - every reachable state passes the snapshot validation.
//!
//! Model mode (not chaos), in addition:
//! - the commands consumed by each drain are exactly what a reference reading of §4 says
//!   is legal, the queue stops with `CERROR_ILL` exactly at the first illegal one, and the
//!   forwarded commands equal the reference's;
//! - a translation of a stream whose STE, CD and tables were not changed since their last
//!   invalidation equals the translation of a fresh vSMMU restored from a snapshot (empty
//!   caches), and its page walk equals a naive reference walker's.

use std::collections::BTreeSet;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vsmmuv3::backend::{BackendCall, GuestSte, InvalidateError, SmmuBackend};
use vsmmuv3::cd::{Cd, CdContext, cd_words, decode_cd};
use vsmmuv3::cmd::{DecodeContext, RawCommand, decode};
use vsmmuv3::regs::*;
use vsmmuv3::ste::{config_ste_words, stage1_ste_words};
use vsmmuv3::strtab::StreamTable;
use vsmmuv3::walk::{Access, walk};
use vsmmuv3::{
    BackendError, QEMU_HOST_IDRS, RecordingBackend, RecordingSink, SmmuConfig, TranslateFault,
    VSmmu,
};

use crate::wire::{Reader, Wire, Writer, decode_ops};

/// Most operations one input runs.
pub const MAX_OPS: usize = 160;

const MEM_SIZE: u64 = 0x40_0000;
const STRTAB: u64 = 0x1_0000;
const L2_BASE: u64 = 0x2_0000;
const CMDQ: u64 = 0x8_0000;
const EVTQ: u64 = 0x9_0000;
const CD_BASE: u64 = 0xa_0000;
const SYNC_SLOT: u64 = 0xb_0000;
const PT_POOL: u64 = 0x10_0000;
const PT_PAGES: u64 = 32;
const SID_BITS: u8 = 8;
/// Where a "not RAM" MSI goes.
const DOORBELL: u64 = 0x1000_0000;

/// The configuration and layout an input chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Setup {
    /// 2-level Stream table (SPLIT 6, four level-1 descriptors).
    pub two_level: bool,
    /// Level-1 spans (3 bits each, 0..=7) of the four descriptors.
    pub spans: u16,
    /// Advertise MSIs.
    pub msi: bool,
    /// Commands per call, 1..=64.
    pub max_per_call: u8,
    /// Forwarded commands per batch, 1..=16.
    pub batch: u8,
    /// TLB entries, 1..=16.
    pub tlb: u8,
    /// Command queue LOG2SIZE, 2..=6.
    pub cmdq_log2: u8,
    /// Host streams: bit i = StreamID `8 * i + 1`.
    pub hosts: u8,
    /// Chaos mode: raw registers and memory, the model off.
    pub chaos: bool,
}

impl Wire for Setup {
    fn decode(r: &mut Reader<'_>) -> Self {
        Setup {
            two_level: r.bool(),
            spans: r.u16() & 0xfff,
            msi: r.bool(),
            max_per_call: 1 + r.u8() % 64,
            batch: 1 + r.u8() % 16,
            tlb: 1 + r.u8() % 16,
            cmdq_log2: 2 + r.u8() % 5,
            hosts: r.u8(),
            chaos: r.bool(),
        }
    }
    fn encode(&self, w: &mut Writer) {
        w.bool(self.two_level);
        w.u16(self.spans);
        w.bool(self.msi);
        w.u8(self.max_per_call - 1);
        w.u8(self.batch - 1);
        w.u8(self.tlb - 1);
        w.u8(self.cmdq_log2 - 2);
        w.u8(self.hosts);
        w.bool(self.chaos);
    }
}

/// A command to put in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    /// CFGI_STE.
    CfgiSte(u8),
    /// CFGI_STE_RANGE (range 0..=31).
    CfgiRange(u8, u8),
    /// CFGI_CD with a SubstreamID 0..=1.
    CfgiCd(u8, u8),
    /// CFGI_CD_ALL.
    CfgiCdAll(u8),
    /// TLBI_NH_ALL.
    TlbiAll,
    /// TLBI_NH_ASID.
    TlbiAsid(u16),
    /// TLBI_NH_VA.
    TlbiVa(u16, u64),
    /// TLBI_NH_VAA.
    TlbiVaa(u64),
    /// TLBI_NSNH_ALL.
    Nsnh,
    /// CMD_SYNC with CS 0..=3 and an MSI target 0..=2 (none, RAM, not RAM).
    Sync(u8, u8),
    /// PREFETCH_CONFIG.
    Prefetch(u8),
    /// Any 16 bytes.
    Raw(u64, u64),
}

impl Wire for Cmd {
    fn decode(r: &mut Reader<'_>) -> Self {
        match r.u8() % 12 {
            0 => Cmd::CfgiSte(r.u8()),
            1 => Cmd::CfgiRange(r.u8(), r.u8() % 32),
            2 => Cmd::CfgiCd(r.u8(), r.u8() % 2),
            3 => Cmd::CfgiCdAll(r.u8()),
            4 => Cmd::TlbiAll,
            5 => Cmd::TlbiAsid(r.u16()),
            6 => Cmd::TlbiVa(r.u16(), r.u64()),
            7 => Cmd::TlbiVaa(r.u64()),
            8 => Cmd::Nsnh,
            9 => Cmd::Sync(r.u8() % 4, r.u8() % 3),
            10 => Cmd::Prefetch(r.u8()),
            _ => Cmd::Raw(r.u64(), r.u64()),
        }
    }
    fn encode(&self, w: &mut Writer) {
        match *self {
            Cmd::CfgiSte(s) => {
                w.u8(0);
                w.u8(s);
            }
            Cmd::CfgiRange(s, r) => {
                w.u8(1);
                w.u8(s);
                w.u8(r);
            }
            Cmd::CfgiCd(s, ss) => {
                w.u8(2);
                w.u8(s);
                w.u8(ss);
            }
            Cmd::CfgiCdAll(s) => {
                w.u8(3);
                w.u8(s);
            }
            Cmd::TlbiAll => w.u8(4),
            Cmd::TlbiAsid(a) => {
                w.u8(5);
                w.u16(a);
            }
            Cmd::TlbiVa(a, v) => {
                w.u8(6);
                w.u16(a);
                w.u64(v);
            }
            Cmd::TlbiVaa(v) => {
                w.u8(7);
                w.u64(v);
            }
            Cmd::Nsnh => w.u8(8),
            Cmd::Sync(cs, t) => {
                w.u8(9);
                w.u8(cs);
                w.u8(t);
            }
            Cmd::Prefetch(s) => {
                w.u8(10);
                w.u8(s);
            }
            Cmd::Raw(a, b) => {
                w.u8(11);
                w.u64(a);
                w.u64(b);
            }
        }
    }
}

impl Cmd {
    fn raw(&self) -> RawCommand {
        match *self {
            Cmd::CfgiSte(s) => RawCommand::cfgi_ste(s.into(), true),
            Cmd::CfgiRange(s, r) => RawCommand::cfgi_ste_range(s.into(), r),
            Cmd::CfgiCd(s, ss) => {
                let c = RawCommand::cfgi_cd(s.into(), true);
                RawCommand([c.0[0] | (u64::from(ss) << 12), c.0[1]])
            }
            Cmd::CfgiCdAll(s) => RawCommand::cfgi_cd_all(s.into()),
            Cmd::TlbiAll => RawCommand::tlbi_nh_all(),
            Cmd::TlbiAsid(a) => RawCommand::tlbi_nh_asid(a),
            Cmd::TlbiVa(a, v) => RawCommand::tlbi_nh_va(a, v, true),
            Cmd::TlbiVaa(v) => RawCommand::tlbi_nh_vaa(v, false),
            Cmd::Nsnh => RawCommand::tlbi_nsnh_all(),
            Cmd::Sync(cs, t) => {
                let addr = [0, SYNC_SLOT, DOORBELL][usize::from(t)];
                RawCommand::sync(cs, addr, 0x5eed)
            }
            Cmd::Prefetch(s) => RawCommand::prefetch_config(s.into()),
            Cmd::Raw(a, b) => RawCommand([a, b]),
        }
    }
}

/// One operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Write stream `sid`'s STE: kind 0 V=0, 1 abort, 2 bypass, 3 stage 1 (CD slot
    /// `cd % 8`), 4 raw words.
    SetSte {
        /// StreamID.
        sid: u8,
        /// Kind 0..=4.
        kind: u8,
        /// CD slot.
        cd: u8,
        /// Raw words 0 and 1 (kind 4).
        raw: [u64; 2],
    },
    /// Write CD slot `slot % 8`: T0SZ, TG0, IPS, ASID, root table page, and flag flips.
    SetCd {
        /// Slot.
        slot: u8,
        /// T0SZ (any 6 bits).
        tsz: u8,
        /// TG0 (any 2 bits).
        tg: u8,
        /// IPS (any 3 bits).
        ips: u8,
        /// ASID.
        asid: u16,
        /// Root table page in the pool.
        root: u8,
        /// Bits flipped in word 0: EPD0, ENDI, A, S, HA, AA64, V, TBI0.
        flips: u8,
    },
    /// Write one descriptor in the page-table pool.
    SetPte {
        /// Page of the pool.
        page: u8,
        /// Index in the page.
        index: u16,
        /// The descriptor: kind 0 table to `target` page, 1 block at `value`'s address,
        /// 2 raw `value`, 3 page at `value`'s address; leaves take `value`'s attribute
        /// bits (AP, SH, AF, nG).
        kind: u8,
        /// Target pool page (tables).
        target: u8,
        /// Output address or raw value.
        value: u64,
    },
    /// Write a command at the local PROD.
    Command(Cmd),
    /// Publish: write CMDQ_PROD and drain.
    Publish,
    /// Translate.
    Translate {
        /// StreamID.
        sid: u8,
        /// Input address.
        iova: u64,
        /// Write access.
        write: bool,
    },
    /// Inject a host event (32 bytes from four words).
    HostEvent([u64; 4]),
    /// Toggle: 0 SMMUEN, 1 GBPA.ABORT, 2 drain the event queue, 3 IRQ enables,
    /// 4 host overflow, 5 next invalidation batch fails after `arg` commands,
    /// 6 next install fails.
    Toggle(u8, u8),
    /// Save, restore into a fresh vSMMU, resync the backend.
    SaveRestore,
    /// Chaos: write `value` to the register at `offset % FRAME_SIZE` (4 or 8 bytes).
    Reg {
        /// Offset.
        offset: u32,
        /// 8-byte access.
        wide: bool,
        /// Value.
        value: u64,
    },
    /// Chaos: write `value` at guest address `addr % MEM_SIZE`.
    Mem {
        /// Address.
        addr: u32,
        /// Value.
        value: u64,
    },
}

impl Wire for Op {
    fn decode(r: &mut Reader<'_>) -> Self {
        match r.u8() % 11 {
            0 => Op::SetSte {
                sid: r.u8(),
                kind: r.u8() % 5,
                cd: r.u8() % 8,
                raw: [r.u64(), r.u64()],
            },
            1 => Op::SetCd {
                slot: r.u8() % 8,
                tsz: r.u8() % 64,
                tg: r.u8() % 4,
                ips: r.u8() % 8,
                asid: r.u16(),
                root: r.u8() % PT_PAGES as u8,
                flips: r.u8(),
            },
            2 => Op::SetPte {
                page: r.u8() % PT_PAGES as u8,
                index: r.u16() % 512,
                kind: r.u8() % 4,
                target: r.u8() % PT_PAGES as u8,
                value: r.u64(),
            },
            3 => Op::Command(Cmd::decode(r)),
            4 => Op::Publish,
            5 => Op::Translate {
                sid: r.u8(),
                iova: r.u64(),
                write: r.bool(),
            },
            6 => Op::HostEvent([r.u64(), r.u64(), r.u64(), r.u64()]),
            7 => Op::Toggle(r.u8() % 7, r.u8()),
            8 => Op::SaveRestore,
            9 => Op::Reg {
                offset: r.u32() % FRAME_SIZE as u32,
                wide: r.bool(),
                value: r.u64(),
            },
            _ => Op::Mem {
                addr: r.u32() % MEM_SIZE as u32,
                value: r.u64(),
            },
        }
    }
    fn encode(&self, w: &mut Writer) {
        match *self {
            Op::SetSte { sid, kind, cd, raw } => {
                w.u8(0);
                w.u8(sid);
                w.u8(kind);
                w.u8(cd);
                w.u64(raw[0]);
                w.u64(raw[1]);
            }
            Op::SetCd {
                slot,
                tsz,
                tg,
                ips,
                asid,
                root,
                flips,
            } => {
                w.u8(1);
                w.u8(slot);
                w.u8(tsz);
                w.u8(tg);
                w.u8(ips);
                w.u16(asid);
                w.u8(root);
                w.u8(flips);
            }
            Op::SetPte {
                page,
                index,
                kind,
                target,
                value,
            } => {
                w.u8(2);
                w.u8(page);
                w.u16(index);
                w.u8(kind);
                w.u8(target);
                w.u64(value);
            }
            Op::Command(c) => {
                w.u8(3);
                c.encode(w);
            }
            Op::Publish => w.u8(4),
            Op::Translate { sid, iova, write } => {
                w.u8(5);
                w.u8(sid);
                w.u64(iova);
                w.bool(write);
            }
            Op::HostEvent(words) => {
                w.u8(6);
                for x in words {
                    w.u64(x);
                }
            }
            Op::Toggle(t, a) => {
                w.u8(7);
                w.u8(t);
                w.u8(a);
            }
            Op::SaveRestore => w.u8(8),
            Op::Reg {
                offset,
                wide,
                value,
            } => {
                w.u8(9);
                w.u32(offset);
                w.bool(wide);
                w.u64(value);
            }
            Op::Mem { addr, value } => {
                w.u8(10);
                w.u32(addr);
                w.u64(value);
            }
        }
    }
}

/// A setup and the operations on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsmmuInput {
    /// Configuration and layout.
    pub setup: Setup,
    /// Operations.
    pub ops: Vec<Op>,
}

impl Wire for VsmmuInput {
    fn decode(r: &mut Reader<'_>) -> Self {
        VsmmuInput {
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

crate::impl_arbitrary!(VsmmuInput);

/// The recording backend plus one-shot failure injection; it also reads, at each
/// install, the STE the guest has in memory at that moment (the Stream table registers
/// cannot change during the one register write that causes an install).
#[derive(Debug)]
struct Host {
    rec: RecordingBackend,
    fail_next_install: bool,
    mem: GuestMemoryMmap<()>,
    /// `SMMU_STRTAB_BASE`, `SMMU_STRTAB_BASE_CFG`, `SMMU_CR0`, `SMMU_GBPA` before the
    /// current MMIO write.
    regs: (u64, u32, u32, u32),
    /// Per install: the STE read then, with the registers.
    seen: Vec<(Option<[u64; 8]>, u32, u32)>,
}

impl SmmuBackend for Host {
    fn install_ste(&mut self, stream_id: u32, ste: &GuestSte) -> Result<(), BackendError> {
        let (base, cfg, cr0, gbpa) = self.regs;
        let t = StreamTable::from_regs(base, cfg, SID_BITS, true);
        self.seen
            .push((t.read_ste(&self.mem, stream_id).ok(), cr0, gbpa));
        let r = self.rec.install_ste(stream_id, ste);
        if std::mem::take(&mut self.fail_next_install) {
            return Err(BackendError {
                errno: Some(5),
                message: "injected".into(),
            });
        }
        r
    }
    fn invalidate(&mut self, commands: &[RawCommand]) -> Result<(), InvalidateError> {
        self.rec.invalidate(commands)
    }
}

/// A naive VMSAv8-64 stage-1 walk (Arm ARM D8), the harness's reference: `Ok(output)`
/// or the fault kind and level.
fn ref_walk(mem: &GuestMemoryMmap<()>, cd: &Cd, va: u64, access: Access) -> Result<u64, (u8, u8)> {
    let upper = (va >> 55) & 1;
    let r = upper as usize;
    let reg = cd.regions[r].ok_or((0, 0))?;
    let ia = 64 - u32::from(reg.tsz);
    let g = u32::from(reg.granule_log2);
    let top = if cd.tbi[r] { 55 } else { 63 };
    if (ia..=top).any(|bit| (va >> bit) & 1 != upper) {
        return Err((0, 0));
    }
    let low = |l: u32| g + (g - 3) * (3 - l);
    let mut start = 3u32;
    while start > 0 && low(start) + (g - 3) < ia {
        start -= 1;
    }
    let mut table = reg.ttb & !((8u64 << (ia - low(start))) - 1);
    let (mut wr, mut user) = (true, true);
    let mut level = start;
    loop {
        let hi = if level == start {
            ia
        } else {
            low(level) + g - 3
        };
        let index = (va >> low(level)) & ((1u64 << (hi - low(level))) - 1);
        let mut raw = [0u8; 8];
        mem.read_slice(&mut raw, GuestAddress(table + 8 * index))
            .map_err(|_| (4, level as u8))?;
        let d = u64::from_le_bytes(raw);
        if d & 1 == 0 {
            return Err((0, level as u8));
        }
        let addr = d & 0x0000_ffff_ffff_f000;
        let addr_bad = d & 0x000f_0000_0000_0000 != 0;
        if level < 3 && d & 2 != 0 {
            let next = addr & !((1u64 << g) - 1);
            if addr_bad || next >> cd.ips_bits != 0 {
                return Err((1, level as u8));
            }
            wr &= d & (1 << 62) == 0;
            user &= d & (1 << 61) == 0;
            table = next;
            level += 1;
            continue;
        }
        let ok = if level == 3 {
            d & 2 != 0
        } else {
            level == 2 || (g == 12 && level == 1)
        };
        if !ok {
            return Err((0, level as u8));
        }
        let size = low(level);
        let oa = addr & !((1u64 << size) - 1);
        if addr_bad || oa >> cd.ips_bits != 0 {
            return Err((1, level as u8));
        }
        if d & (1 << 10) == 0 {
            return Err((2, level as u8));
        }
        wr &= d & (1 << 7) == 0;
        user &= d & (1 << 6) != 0;
        if (access.write && !wr) || (!access.privileged && !user) {
            return Err((3, level as u8));
        }
        return Ok(oa | (va & ((1u64 << size) - 1)));
    }
}

fn fault_code(f: &TranslateFault) -> (u8, u8) {
    match *f {
        TranslateFault::Translation { level } => (0, level),
        TranslateFault::AddressSize { level } => (1, level),
        TranslateFault::AccessFlag { level } => (2, level),
        TranslateFault::Permission { level } => (3, level),
        TranslateFault::WalkAbort { level, .. } => (4, level),
        _ => (9, 9),
    }
}

/// The reference's reading of IHI 0070 §4 for this vSMMU: `None` when illegal, else the
/// command the kernel should get, if any.
fn ref_command(raw: &RawCommand, hosts: &BTreeSet<u32>) -> Option<Option<RawCommand>> {
    let [w0, w1] = raw.0;
    let op = w0 & 0xff;
    let sid = (w0 >> 32) as u32;
    let ssec = (w0 >> 10) & 1 == 1;
    let ssv = (w0 >> 11) & 1 == 1;
    let ssid = (w0 >> 12) & 0xf_ffff;
    let asid = w0 >> 48;
    let any = !hosts.is_empty();
    let host = hosts.contains(&sid);
    let va = (w1 & !0xfff) | (w1 & 1);
    Some(match op {
        0x01 | 0x02 if ssec || ssv || ssid != 0 => return None,
        0x01..=0x04 if !ssec => None,
        0x05 if !ssec && ssid == 0 => {
            host.then_some(RawCommand([0x05 | (u64::from(sid) << 32), w1 & 1]))
        }
        0x06 if !ssec => host.then_some(RawCommand([0x06 | (u64::from(sid) << 32), 0])),
        0x10 | 0x30 => any.then_some(RawCommand([op, 0])),
        0x11 => any.then_some(RawCommand([0x11 | (asid << 48), 0])),
        0x12 => any.then_some(RawCommand([0x12 | (asid << 48), va])),
        0x13 => any.then_some(RawCommand([0x13, va])),
        0x46 if (w0 >> 12) & 3 != 3 => None,
        _ => return None,
    })
}

struct Run {
    setup: Setup,
    mem: GuestMemoryMmap<()>,
    smmu: VSmmu,
    host: Host,
    irq: RecordingSink,
    hosts: BTreeSet<u32>,
    /// Local PROD (what the next Publish writes).
    prod: u32,
    /// Whether the model applies.
    exact: bool,
    /// Streams whose STE/CD changed since their last invalidation.
    dirty_cfg: BTreeSet<u32>,
    /// Streams whose tables may be cached stale.
    dirty_tlb: BTreeSet<u32>,
    /// The next invalidation batch fails.
    fail_invalidate: bool,
}

fn all_sids() -> BTreeSet<u32> {
    (0..1u32 << SID_BITS).collect()
}

impl Run {
    fn new(setup: Setup) -> Self {
        let config = SmmuConfig::builder(&QEMU_HOST_IDRS)
            .sid_bits(SID_BITS)
            .cmdq_log2(7)
            .evtq_log2(2)
            .msi(setup.msi)
            .max_commands_per_call(setup.max_per_call.into())
            .batch(setup.batch.into())
            .tlb_entries(setup.tlb.into())
            .config_cache_entries(4)
            .watch_capacity(8)
            .build();
        let config = match config {
            Ok(c) => c,
            Err(e) => panic!("an in-range configuration was refused: {e}"),
        };
        let mem = match GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)])
        {
            Ok(m) => m,
            Err(e) => panic!("guest memory: {e}"),
        };
        let host = Host {
            rec: RecordingBackend::new(),
            fail_next_install: false,
            mem: mem.clone(),
            regs: (0, 0, 0, 0),
            seen: Vec::new(),
        };
        let mut run = Run {
            setup,
            mem,
            smmu: VSmmu::new(config),
            host,
            irq: RecordingSink::default(),
            hosts: BTreeSet::new(),
            prod: 0,
            exact: !setup.chaos,
            dirty_cfg: BTreeSet::new(),
            dirty_tlb: BTreeSet::new(),
            fail_invalidate: false,
        };
        for i in 0..8u32 {
            if setup.hosts & (1 << i) != 0 {
                let sid = 8 * i + 1;
                run.hosts.insert(sid);
                let r = run
                    .smmu
                    .add_host_stream(&run.mem, &mut run.host, &mut run.irq, sid);
                assert!(r.is_ok(), "host stream {sid}: {r:?}");
            }
        }
        // Stream table: every STE abort; 2-level: SPLIT 6, spans from the setup.
        if setup.two_level {
            for i in 0..4u64 {
                let span = u64::from((setup.spans >> (3 * i)) & 7);
                run.put(STRTAB + 8 * i, &[(L2_BASE + 0x1000 * i) | span]);
            }
            run.w64(STRTAB_BASE, STRTAB);
            run.w32(STRTAB_BASE_CFG, 8 | (6 << 6) | (1 << 16));
        } else {
            run.w64(STRTAB_BASE, STRTAB);
            run.w32(STRTAB_BASE_CFG, 8);
        }
        for sid in 0..256u32 {
            run.put(run.ste_addr(sid), &config_ste_words(0));
        }
        run.w32(CR2, 0b10);
        run.w64(CMDQ_BASE, CMDQ | u64::from(setup.cmdq_log2));
        run.w64(EVTQ_BASE, EVTQ | 2);
        run.w64(GERROR_IRQ_CFG0, DOORBELL);
        run.w64(EVTQ_IRQ_CFG0, DOORBELL + 4);
        run.w32(IRQ_CTRL, irq_ctrl::GERROR_IRQEN | irq_ctrl::EVENTQ_IRQEN);
        run.w32(CR0, cr0::CMDQEN | cr0::EVENTQEN | cr0::SMMUEN);
        run.check_backend(0);
        run
    }

    fn ste_addr(&self, sid: u32) -> u64 {
        if self.setup.two_level {
            L2_BASE + 0x1000 * u64::from(sid >> 6) + 64 * u64::from(sid & 63)
        } else {
            STRTAB + 64 * u64::from(sid)
        }
    }

    fn put(&self, addr: u64, words: &[u64]) {
        for (i, w) in words.iter().enumerate() {
            let a = addr + 8 * i as u64;
            if a + 8 <= MEM_SIZE {
                let _ = self.mem.write_obj(*w, GuestAddress(a));
            }
        }
    }

    fn r32(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.smmu.mmio_read(off, &mut b);
        u32::from_le_bytes(b)
    }

    /// Records the registers an install during the next write will have been made under.
    /// `SMMUEN` and `GBPA` are the values after the write when it changes them (installs
    /// follow the change).
    fn capture(&mut self, off: u64, v: u64) {
        let r = *self.smmu.registers();
        let cr0 = if off == CR0 {
            v as u32 & cr0::IMPLEMENTED
        } else {
            r.cr0
        };
        let gbpa = if off == GBPA && v as u32 & gbpa::UPDATE != 0 {
            v as u32 & (gbpa::ABORT | gbpa::ATTRS)
        } else {
            r.gbpa
        };
        self.host.regs = (r.strtab_base, r.strtab_base_cfg, cr0, gbpa);
    }

    fn w32(&mut self, off: u64, v: u32) -> u32 {
        self.capture(off, v.into());
        let p = self.smmu.mmio_write(
            &self.mem,
            &mut self.host,
            &mut self.irq,
            off,
            &v.to_le_bytes(),
        );
        self.bounded(p.commands);
        self.drain_if(p.more)
    }

    fn w64(&mut self, off: u64, v: u64) -> u32 {
        self.capture(off, v);
        let p = self.smmu.mmio_write(
            &self.mem,
            &mut self.host,
            &mut self.irq,
            off,
            &v.to_le_bytes(),
        );
        self.bounded(p.commands);
        self.drain_if(p.more)
    }

    fn bounded(&self, n: u32) {
        assert!(
            n <= u32::from(self.setup.max_per_call),
            "{n} commands in one call, limit {}",
            self.setup.max_per_call
        );
    }

    /// Calls `process_pending` while there is more; returns commands consumed.
    fn drain_if(&mut self, mut more: bool) -> u32 {
        let mut total = 0u32;
        let mut rounds = 0u32;
        while more {
            let p = self
                .smmu
                .process_pending(&self.mem, &mut self.host, &mut self.irq);
            self.bounded(p.commands);
            total += p.commands;
            more = p.more;
            rounds += 1;
            assert!(rounds <= 1 << 20, "draining does not terminate");
            assert!(p.commands > 0 || !more, "no progress but more work");
        }
        total
    }

    fn smmu_enabled(&self) -> bool {
        self.r32(CR0) & cr0::SMMUEN != 0
    }

    /// Invariants over the backend calls made since index `from`.
    fn check_backend(&mut self, from: usize) {
        let mut install_no = self.host.rec.calls[..from]
            .iter()
            .filter(|c| matches!(c, BackendCall::Install { .. }))
            .count();
        let calls = self.host.rec.calls[from..].to_vec();
        let last_batch = self.setup.batch as usize;
        for call in &calls {
            match call {
                BackendCall::Install { stream_id, ste } => {
                    assert!(self.hosts.contains(stream_id), "install for {stream_id}");
                    assert!(ste.vste().is_allowed(), "{ste:?}");
                    let (words, cr0, gbpa) = self.host.seen[install_no];
                    install_no += 1;
                    let enabled = cr0 & cr0::SMMUEN != 0;
                    match ste {
                        GuestSte::Stage1(v) => {
                            assert!(enabled, "stage-1 install while disabled");
                            let Some(w) = words else {
                                panic!("stage-1 install of an unreadable STE")
                            };
                            assert_eq!(w[0] & 0xf, 0b1011, "STE {w:x?}");
                            assert_eq!(w[1] & (1 << 27), 0, "S1STALLD");
                            let ptr = w[0] & 0x00ff_ffff_ffff_ffc0;
                            assert!(ptr >> 44 == 0, "CD pointer beyond the OAS");
                            assert_eq!(v.0[0], ptr | 0b1011);
                            assert_eq!(v.0[1], w[1] & 0xff);
                        }
                        GuestSte::Bypass => {
                            if enabled {
                                let Some(w) = words else {
                                    panic!("bypass install of an unreadable STE")
                                };
                                assert_eq!(w[0] & 0xf, 0b1001, "bypass install, STE {w:x?}");
                            } else {
                                assert_eq!(gbpa & gbpa::ABORT, 0, "bypass with GBPA.ABORT");
                            }
                        }
                        GuestSte::Abort => {}
                    }
                }
                BackendCall::Invalidate(cmds) => {
                    assert!(!cmds.is_empty() && cmds.len() <= last_batch);
                    for c in cmds {
                        let op = c.opcode();
                        assert!(
                            matches!(op, 0x05 | 0x06 | 0x10 | 0x11 | 0x12 | 0x13 | 0x30),
                            "forwarded opcode {op:#x}"
                        );
                        if matches!(op, 0x05 | 0x06) {
                            assert!(self.hosts.contains(&c.sid()), "CFGI_CD for {}", c.sid());
                        }
                    }
                }
            }
        }
        let state = self.smmu.save_state();
        if let Err(e) = state.validate(self.smmu.config()) {
            panic!("reachable state refused by the restore checks: {e}");
        }
    }

    fn cmdq_geometry(&self) -> vsmmuv3::queue::QueueGeometry {
        vsmmuv3::queue::QueueGeometry::from_base(self.smmu.registers().cmdq_base, 7, 4)
    }

    fn write_command(&mut self, c: &Cmd) {
        let q = self.cmdq_geometry();
        let cons = self.r32(CMDQ_CONS) & q.ptr_mask();
        if q.is_full(self.prod, cons) {
            self.publish();
            let cons = self.r32(CMDQ_CONS) & q.ptr_mask();
            if q.is_full(self.prod, cons) {
                return;
            }
        }
        let mut raw = c.raw();
        if self.exact && raw.opcode() == 0x46 {
            // Keep completion MSIs off the tables the model compares against.
            raw.0[1] = if raw.0[1] == 0 { 0 } else { SYNC_SLOT };
        }
        self.put(q.slot(q.index(self.prod)), &raw.0);
        self.prod = q.next(self.prod);
    }

    /// Publishes PROD and drains, recovering from errors the way Linux does
    /// (`arm_smmu_cmdq_skip_err`: an illegal command becomes CMD_SYNC, an aborted one is
    /// retried; then GERRORN acknowledges).
    fn publish(&mut self) {
        let q = self.cmdq_geometry();
        let ctx = DecodeContext { asid16: true };
        let mut ack = false;
        for _attempt in 0..(q.entries() + 2) {
            let from = self.host.rec.calls.len();
            let cons0 = self.r32(CMDQ_CONS) & q.ptr_mask();
            let armed = std::mem::take(&mut self.fail_invalidate);
            if armed {
                self.host.rec.fail_invalidate_after = Some(0);
            }
            if ack {
                let g = self.r32(GERROR);
                self.w32(GERRORN, g);
            } else {
                self.w32(CMDQ_PROD, self.prod);
            }
            let injected = armed && self.host.rec.fail_invalidate_after.take().is_none();
            let cons_reg = self.r32(CMDQ_CONS);
            let cons1 = cons_reg & q.ptr_mask();
            let err = self.smmu.cmdq_error_active();
            let code = (cons_reg >> 24) & 0x7f;
            self.check_backend(from);
            let mut expect = Vec::new();
            let mut consumed_legal = true;
            let mut ptr = cons0;
            while ptr != cons1 {
                let raw = self.read_cmd(&q, ptr);
                match ref_command(&raw, &self.hosts) {
                    Some(f) => expect.extend(f),
                    None => consumed_legal = false,
                }
                self.note_invalidation(&raw);
                ptr = q.next(ptr);
            }
            let got = self.host.rec.calls[from..]
                .iter()
                .filter_map(|c| match c {
                    BackendCall::Invalidate(v) => Some(v.clone()),
                    BackendCall::Install { .. } => None,
                })
                .flatten()
                .collect::<Vec<_>>();
            if self.exact {
                if err && code == 2 {
                    // A failed batch: CONS is at the command the backend did not complete.
                    assert!(injected, "CERROR_ABT without an injected failure");
                    let last = self.host.rec.calls.iter().rev().find_map(|c| match c {
                        BackendCall::Invalidate(v) => v.first().copied(),
                        BackendCall::Install { .. } => None,
                    });
                    let at = self.read_cmd(&q, cons1);
                    let fwd = decode(&at, &ctx).ok().and_then(|c| c.forwardable());
                    assert_eq!(fwd, last, "CONS is not at the failed command");
                } else {
                    assert!(consumed_legal, "an illegal command was consumed");
                    assert_eq!(got, expect, "forwarded commands");
                    if err {
                        assert_eq!(code, 1, "CERROR_ILL");
                        let at = self.read_cmd(&q, cons1);
                        assert!(
                            ref_command(&at, &self.hosts).is_none(),
                            "stopped at a legal command {at:x?}"
                        );
                    } else {
                        assert_eq!(cons1, self.prod & q.ptr_mask(), "queue not drained");
                    }
                }
            }
            if !err {
                return;
            }
            if code == 1 {
                self.put(q.slot(q.index(cons1)), &RawCommand::sync(0, 0, 0).0);
            }
            ack = true;
        }
    }

    fn read_cmd(&self, q: &vsmmuv3::queue::QueueGeometry, ptr: u32) -> RawCommand {
        let a = q.slot(q.index(ptr));
        let w0: u64 = self.mem.read_obj(GuestAddress(a)).unwrap_or(0);
        let w1: u64 = self.mem.read_obj(GuestAddress(a + 8)).unwrap_or(0);
        RawCommand([w0, w1])
    }

    fn note_invalidation(&mut self, raw: &RawCommand) {
        let Ok(c) = decode(raw, &DecodeContext { asid16: true }) else {
            return;
        };
        use vsmmuv3::cmd::Command as C;
        match c {
            C::CfgiSte { .. } | C::CfgiSteRange { .. } => {
                if let Some((a, b)) = c.ste_range() {
                    self.dirty_cfg.retain(|s| *s < a || *s > b);
                    self.dirty_tlb.retain(|s| *s < a || *s > b);
                }
            }
            C::CfgiCd { sid, .. } | C::CfgiCdAll { sid } => {
                self.dirty_cfg.remove(&sid);
                self.dirty_tlb.remove(&sid);
            }
            C::TlbiNhAll | C::TlbiNsnhAll => self.dirty_tlb.clear(),
            _ => {}
        }
    }

    fn translate(&mut self, sid: u32, iova: u64, write: bool) {
        let access = Access {
            write,
            privileged: false,
        };
        let got = self.smmu.translate(&self.mem, sid, iova, access);
        if let Ok(t) = &got {
            assert!(t.size_log2 >= 12 && t.size_log2 <= 42);
            if t.stage1 {
                assert!(t.output >> 48 == 0, "output beyond 48 bits");
                assert_eq!(t.output & 0xfff, iova & 0xfff);
            }
        }
        if !self.exact || self.dirty_cfg.contains(&sid) || self.dirty_tlb.contains(&sid) {
            return;
        }
        // A fresh vSMMU (empty caches) must agree.
        let mut fresh = VSmmu::new(self.smmu.config().clone());
        assert!(fresh.restore_state(&self.smmu.save_state()).is_ok());
        let want = fresh.translate(&self.mem, sid, iova, access);
        assert_eq!(got, want, "cached and uncached translations differ");
        // The walk agrees with the naive reference.
        if self.smmu_enabled()
            && let Some(cd) = self.cd_of(sid)
        {
            let reference = ref_walk(&self.mem, &cd, iova, access);
            let crate_walk = walk(&self.mem, &cd, iova).and_then(|l| l.check(access).map(|_| l));
            match (crate_walk, reference) {
                (Ok(l), Ok(oa)) => assert_eq!(l.output(iova), oa),
                (Err(f), Err(code)) => assert_eq!(fault_code(&f), code, "{f:?}"),
                (a, b) => panic!("walker {a:?}, reference {b:?}"),
            }
        }
    }

    /// The CD stream `sid` uses, as the crate decodes it (for the walker comparison).
    fn cd_of(&self, sid: u32) -> Option<Cd> {
        let regs = self.smmu.registers();
        let t = StreamTable::from_regs(regs.strtab_base, regs.strtab_base_cfg, SID_BITS, true);
        let ste = t.read_ste(&self.mem, sid).ok()?;
        let s = vsmmuv3::ste::decode_ste(&ste, 44).ok()?;
        let vsmmuv3::ste::Ste::Stage1 { context_ptr, .. } = s else {
            return None;
        };
        let mut words = [0u64; 8];
        for (i, w) in words.iter_mut().enumerate() {
            *w = self
                .mem
                .read_obj(GuestAddress(context_ptr + 8 * i as u64))
                .ok()?;
        }
        let ctx = CdContext {
            oas_bits: 44,
            asid16: true,
            term_model: true,
            granules: [true, true, true],
        };
        decode_cd(&words, &ctx).ok()
    }

    fn step(&mut self, op: &Op) {
        let from = self.host.rec.calls.len();
        match *op {
            Op::SetSte { sid, kind, cd, raw } => {
                let sid = u32::from(sid);
                let words = match kind {
                    0 => [0; 8],
                    1 => config_ste_words(0),
                    2 => config_ste_words(0b100),
                    3 => stage1_ste_words(CD_BASE + 64 * u64::from(cd)),
                    _ => {
                        let mut w = [0u64; 8];
                        w[0] = raw[0];
                        w[1] = raw[1];
                        w
                    }
                };
                self.put(self.ste_addr(sid), &words);
                self.dirty_cfg.insert(sid);
            }
            Op::SetCd {
                slot,
                tsz,
                tg,
                ips,
                asid,
                root,
                flips,
            } => {
                let ttb = PT_POOL + 0x1_0000 * u64::from(root);
                let mut w = cd_words(ttb, tsz, tg, ips, asid);
                const FLIPS: [u32; 8] = [14, 15, 46, 44, 43, 41, 31, 38];
                for (i, bit) in FLIPS.iter().enumerate() {
                    if flips & (1 << i) != 0 {
                        w[0] ^= 1 << bit;
                    }
                }
                self.put(CD_BASE + 64 * u64::from(slot), &w);
                self.dirty_cfg = all_sids();
            }
            Op::SetPte {
                page,
                index,
                kind,
                target,
                value,
            } => {
                let page_addr = PT_POOL + 0x1_0000 * u64::from(page);
                let target_addr = PT_POOL + 0x1_0000 * u64::from(target);
                let d = match kind {
                    0 => target_addr | 3 | (value & (3 << 61)),
                    1 => (value & 0x0000_0fff_ffff_f000) | (value & 0xfc0) | 1,
                    3 => (value & 0x0000_0fff_ffff_f000) | (value & 0xfc0) | 3,
                    _ => value,
                };
                self.put(page_addr + 8 * u64::from(index), &[d]);
                self.dirty_tlb = all_sids();
            }
            Op::Command(c) => self.write_command(&c),
            Op::Publish => self.publish(),
            Op::Translate { sid, iova, write } => self.translate(u32::from(sid), iova, write),
            Op::HostEvent(words) => {
                let mut rec = [0u8; 32];
                for (i, w) in words.iter().enumerate() {
                    rec[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
                }
                let prod0 = self.r32(EVTQ_PROD);
                let out = self.smmu.inject_host_event(&self.mem, &mut self.irq, &rec);
                if out == vsmmuv3::EventOutcome::Recorded {
                    let q = vsmmuv3::queue::QueueGeometry::from_base(
                        self.smmu.registers().evtq_base,
                        2,
                        5,
                    );
                    let mut back = [0u8; 32];
                    let slot = q.slot(q.index(prod0));
                    assert!(self.mem.read_slice(&mut back, GuestAddress(slot)).is_ok());
                    assert_eq!(back, rec, "event record written as given");
                }
            }
            Op::Toggle(t, arg) => match t {
                0 => {
                    let cr0 = self.r32(CR0);
                    self.w32(CR0, cr0 ^ cr0::SMMUEN);
                    self.dirty_cfg.clear();
                    self.dirty_tlb.clear();
                }
                1 => {
                    let g = self.r32(GBPA);
                    self.w32(GBPA, (g ^ gbpa::ABORT) | gbpa::UPDATE);
                }
                2 => {
                    let p = self.r32(EVTQ_PROD);
                    self.w32(EVTQ_CONS, p & (Q_PTR_MASK | EVTQ_PROD_OVFLG));
                }
                3 => {
                    let i = self.r32(IRQ_CTRL);
                    self.w32(IRQ_CTRL, i ^ u32::from(arg & 5));
                }
                4 => self.smmu.inject_host_overflow(),
                5 => self.fail_invalidate = true,
                _ => self.host.fail_next_install = true,
            },
            Op::SaveRestore => {
                let state = self.smmu.save_state();
                let mut fresh = VSmmu::new(self.smmu.config().clone());
                assert!(fresh.restore_state(&state).is_ok());
                let r = *fresh.registers();
                self.host.regs = (r.strtab_base, r.strtab_base_cfg, r.cr0, r.gbpa);
                for &sid in &self.hosts {
                    let r = fresh.add_host_stream(&self.mem, &mut self.host, &mut self.irq, sid);
                    assert!(r.is_ok());
                }
                let r = *fresh.registers();
                self.host.regs = (r.strtab_base, r.strtab_base_cfg, r.cr0, r.gbpa);
                fresh.resync_backend(&self.mem, &mut self.host, &mut self.irq);
                self.smmu = fresh;
                self.dirty_cfg.clear();
                self.dirty_tlb.clear();
            }
            Op::Reg {
                offset,
                wide,
                value,
            } => {
                if self.setup.chaos {
                    if wide {
                        self.w64(u64::from(offset) & !7, value);
                    } else {
                        self.w32(u64::from(offset) & !3, value as u32);
                    }
                }
            }
            Op::Mem { addr, value } => {
                if self.setup.chaos {
                    self.put(u64::from(addr) & !7, &[value]);
                }
            }
        }
        self.check_backend(from);
        if self.exact {
            let q = self.cmdq_geometry();
            let cons = self.r32(CMDQ_CONS) & Q_PTR_MASK;
            assert_eq!(cons & !q.ptr_mask(), 0, "CONS {cons:#x} beyond the queue");
        }
        // A disabled-with-GBPA-abort SMMU translates nothing.
        if !self.smmu_enabled() && self.r32(GBPA) & gbpa::ABORT != 0 {
            assert_eq!(
                self.smmu.translate(&self.mem, 1, 0, Access::WRITE),
                Err(TranslateFault::GlobalAbort)
            );
        }
    }
}

/// Replays one input, panicking on the first broken invariant.
pub fn run(input: &VsmmuInput) {
    let mut run = Run::new(input.setup);
    for op in &input.ops {
        run.step(op);
    }
    run.publish();
}

/// Seeds: the crate's Linux bring-up, translation and error scenarios.
pub fn seeds() -> Vec<(&'static str, VsmmuInput)> {
    let setup = Setup {
        two_level: false,
        spans: 0,
        msi: true,
        max_per_call: 64,
        batch: 16,
        tlb: 8,
        cmdq_log2: 5,
        hosts: 0b11,
        chaos: false,
    };
    // Stream 1 (a host stream): stage 1 through CD 0, ASID 1, 4K tables mapping
    // gIOVA 0x1000 to 0x7000 (pool pages 0..3).
    let pte = |page: u8, index: u16, kind: u8, target: u8, value: u64| Op::SetPte {
        page,
        index,
        kind,
        target,
        value,
    };
    let linux = vec![
        Op::SetCd {
            slot: 0,
            tsz: 16,
            tg: 0,
            ips: 5,
            asid: 1,
            root: 0,
            flips: 0,
        },
        Op::Command(Cmd::CfgiCd(1, 0)),
        Op::Command(Cmd::Sync(1, 1)),
        Op::SetSte {
            sid: 1,
            kind: 3,
            cd: 0,
            raw: [0, 0],
        },
        Op::Command(Cmd::CfgiSte(1)),
        Op::Command(Cmd::Sync(1, 1)),
        Op::Publish,
        pte(0, 0, 0, 1, 0),
        pte(1, 0, 0, 2, 0),
        pte(2, 0, 0, 3, 0),
        pte(3, 1, 3, 0, 0x7000 | (1 << 10) | (1 << 6)),
        Op::Translate {
            sid: 1,
            iova: 0x1040,
            write: true,
        },
        Op::Command(Cmd::TlbiVa(1, 0x1000)),
        Op::Command(Cmd::Sync(0, 0)),
        Op::Publish,
        Op::Translate {
            sid: 1,
            iova: 0x1040,
            write: true,
        },
        Op::Command(Cmd::TlbiAsid(1)),
        Op::Command(Cmd::CfgiCdAll(9)),
        Op::Command(Cmd::Nsnh),
        Op::Command(Cmd::Sync(1, 2)),
        Op::Publish,
    ];
    let mut errors = linux.clone();
    errors.extend([
        Op::Command(Cmd::Raw(0x20, 0)),
        Op::Command(Cmd::CfgiCd(1, 1)),
        Op::Command(Cmd::Sync(3, 0)),
        Op::Publish,
        Op::Toggle(5, 0),
        Op::Command(Cmd::TlbiAll),
        Op::Command(Cmd::Sync(0, 0)),
        Op::Publish,
        Op::Toggle(6, 0),
        Op::SetSte {
            sid: 9,
            kind: 2,
            cd: 0,
            raw: [0, 0],
        },
        Op::Command(Cmd::CfgiRange(8, 3)),
        Op::Publish,
        Op::HostEvent([0x10 | (1 << 32), 0, 0x1000, 0]),
        Op::HostEvent([0x10 | (1 << 32), 0, 0x2000, 0]),
        Op::HostEvent([0x10 | (1 << 32), 0, 0x3000, 0]),
        Op::HostEvent([0x10 | (1 << 32), 0, 0x4000, 0]),
        Op::HostEvent([0x10 | (1 << 32), 0, 0x5000, 0]),
        Op::Toggle(2, 0),
        Op::Toggle(4, 0),
        Op::SaveRestore,
        Op::Translate {
            sid: 1,
            iova: 0x1040,
            write: false,
        },
        Op::Toggle(0, 0),
        Op::Toggle(1, 0),
        Op::Translate {
            sid: 1,
            iova: 0x1040,
            write: false,
        },
    ]);
    let two_level = Setup {
        two_level: true,
        spans: 0b111_000_111_111,
        batch: 2,
        max_per_call: 3,
        cmdq_log2: 2,
        ..setup
    };
    let chaos = Setup {
        chaos: true,
        ..setup
    };
    let mut garbage = linux.clone();
    garbage.extend([
        Op::Reg {
            offset: CMDQ_BASE as u32,
            wide: true,
            value: 0xfff_ffff_ffe0,
        },
        Op::Mem {
            addr: CMDQ as u32,
            value: u64::MAX,
        },
        Op::Reg {
            offset: CR0 as u32,
            wide: false,
            value: 0xf,
        },
        Op::Command(Cmd::Raw(u64::MAX, u64::MAX)),
        Op::Publish,
    ]);
    vec![
        (
            "linux_bring_up",
            VsmmuInput {
                setup,
                ops: linux.clone(),
            },
        ),
        ("errors_and_events", VsmmuInput { setup, ops: errors }),
        (
            "two_level_small_queue",
            VsmmuInput {
                setup: two_level,
                ops: linux,
            },
        ),
        (
            "chaos_registers",
            VsmmuInput {
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
        check_round_trip::<VsmmuInput>(13, 300, 600);
    }

    #[test]
    fn seeds_replay_clean() {
        for (name, s) in seeds() {
            assert_eq!(VsmmuInput::from_bytes(&s.to_bytes()), s, "seed {name}");
            run(&s);
        }
    }

    /// The Linux seed translates through stage 1 (the model comparison is not vacuous).
    #[test]
    fn linux_seed_translates() {
        let (_, s) = seeds().remove(0);
        let mut r = Run::new(s.setup);
        for op in &s.ops {
            r.step(op);
        }
        let t = r.smmu.translate(&r.mem, 1, 0x1040, Access::WRITE);
        assert_eq!(t.map(|t| t.output), Ok(0x7040));
        assert!(!r.host.rec.forwarded().is_empty());
    }

    #[test]
    fn random_inputs_replay() {
        let mut rng = crate::wire::XorShift::new(77);
        for _ in 0..200 {
            let len = (rng.next_u64() % 700) as usize;
            let bytes = rng.bytes(len);
            run(&VsmmuInput::from_bytes(&bytes));
        }
    }
}
