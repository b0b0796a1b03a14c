// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Property tests against small reference models written independently of the crate:
//!
//! - a naive VMSAv8-64 stage-1 walker (levels found by searching, not by formula; every
//!   check spelled out) compared with `walk` + `Leaf::check` over random tables;
//! - a command-semantics model (which opcodes are legal, what is forwarded, where the
//!   queue stops and with which error) compared with the vSMMU over random command streams,
//!   random batch sizes and per-call bounds;
//! - hostile registers and memory: no panic, bounded work, and every install is a legal
//!   guest STE.

mod common;

use std::collections::BTreeSet;

use common::Bench;
use proptest::prelude::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vsmmuv3::backend::{BackendCall, GuestSte};
use vsmmuv3::cd::{Cd, TtRegion};
use vsmmuv3::cmd::RawCommand;
use vsmmuv3::regs::*;
use vsmmuv3::ste::config_ste_words;
use vsmmuv3::walk::{Access, walk};
use vsmmuv3::{QEMU_HOST_IDRS, SmmuConfig, TranslateFault};

// ------------------------------------------------------------------ reference walker

#[derive(Debug, PartialEq, Eq)]
enum RefOut {
    Ok { oa: u64, size_log2: u32 },
    Fault(&'static str, u8),
}

/// Arm ARM D8: the naive walk. `g` = granule bits; bits resolved per level `g - 3`.
fn ref_walk(mem: &GuestMemoryMmap<()>, cd: &Cd, va: u64, access: Access) -> RefOut {
    let upper = va >> 55 & 1;
    let r = upper as usize;
    let Some(reg) = cd.regions[r] else {
        return RefOut::Fault("translation", 0);
    };
    let ia = 64 - u32::from(reg.tsz);
    let g = u32::from(reg.granule_log2);
    let top = if cd.tbi[r] { 55 } else { 63 };
    for bit in ia..=top {
        if (va >> bit) & 1 != upper {
            return RefOut::Fault("translation", 0);
        }
    }
    // The level whose entries cover the most bits without exceeding... : search.
    let low = |l: u32| g + (g - 3) * (3 - l); // lowest VA bit indexed at level l
    let mut start = 3u32;
    while start > 0 && low(start) + (g - 3) < ia {
        start -= 1;
    }
    let mut table = reg.ttb;
    // Align the starting table to its size.
    let first_bits = ia - low(start);
    table &= !((8u64 << first_bits) - 1);
    let mut can_write = true;
    let mut can_user = true;
    let mut level = start;
    loop {
        let hi = if level == start {
            ia
        } else {
            low(level) + (g - 3)
        };
        let mut index = 0u64;
        for bit in (low(level)..hi).rev() {
            index = (index << 1) | ((va >> bit) & 1);
        }
        let mut raw = [0u8; 8];
        if mem
            .read_slice(&mut raw, GuestAddress(table + 8 * index))
            .is_err()
        {
            return RefOut::Fault("walk-eabt", level as u8);
        }
        let d = u64::from_le_bytes(raw);
        let valid = d & 1 == 1;
        let bit1 = d & 2 == 2;
        if !valid {
            return RefOut::Fault("translation", level as u8);
        }
        // Output address: bits [47:12] of the descriptor, then aligned.
        let mut addr = 0u64;
        for bit in 12..48 {
            addr |= d & (1 << bit);
        }
        let addr_bad = (48..52).any(|bit| d & (1 << bit) != 0);
        if level < 3 && bit1 {
            let next = addr & !((1u64 << g) - 1);
            if addr_bad || (next >> cd.ips_bits) != 0 {
                return RefOut::Fault("address-size", level as u8);
            }
            if d >> 62 & 1 == 1 {
                can_write = false;
            }
            if d >> 61 & 1 == 1 {
                can_user = false;
            }
            table = next;
            level += 1;
            continue;
        }
        let leaf_ok = if level == 3 {
            bit1
        } else {
            // Blocks: 4K at levels 1-2, 16K and 64K at level 2.
            level == 2 || (g == 12 && level == 1)
        };
        if !leaf_ok {
            return RefOut::Fault("translation", level as u8);
        }
        let size_log2 = low(level);
        let oa = addr & !((1u64 << size_log2) - 1);
        if addr_bad || (oa >> cd.ips_bits) != 0 {
            return RefOut::Fault("address-size", level as u8);
        }
        if d & (1 << 10) == 0 {
            return RefOut::Fault("access", level as u8);
        }
        if d & (1 << 7) != 0 {
            can_write = false;
        }
        if d & (1 << 6) == 0 {
            can_user = false;
        }
        if (access.write && !can_write) || (!access.privileged && !can_user) {
            return RefOut::Fault("permission", level as u8);
        }
        return RefOut::Ok {
            oa: oa | (va & ((1u64 << size_log2) - 1)),
            size_log2,
        };
    }
}

fn crate_walk(mem: &GuestMemoryMmap<()>, cd: &Cd, va: u64, access: Access) -> RefOut {
    let r = walk(mem, cd, va).and_then(|leaf| leaf.check(access).map(|()| leaf));
    match r {
        Ok(leaf) => RefOut::Ok {
            oa: leaf.output(va),
            size_log2: u32::from(leaf.size_log2),
        },
        Err(TranslateFault::Translation { level }) => RefOut::Fault("translation", level),
        Err(TranslateFault::AddressSize { level }) => RefOut::Fault("address-size", level),
        Err(TranslateFault::AccessFlag { level }) => RefOut::Fault("access", level),
        Err(TranslateFault::Permission { level }) => RefOut::Fault("permission", level),
        Err(TranslateFault::WalkAbort { level, .. }) => RefOut::Fault("walk-eabt", level),
        Err(e) => panic!("walk returned a config fault {e:?}"),
    }
}

/// Tables in a 4 MiB pool: `paths` are (va, leaf level, descriptor bits) built as
/// table chains; `junk` are random descriptors at random pool slots.
#[derive(Debug, Clone)]
struct Tables {
    g: u8,
    tsz: u8,
    ips: u8,
    tbi: bool,
    paths: Vec<(u64, u8, u64)>,
    junk: Vec<(u32, u64)>,
    probes: Vec<u64>,
    access: (bool, bool),
}

const POOL: u64 = 0x10_0000;
const POOL_PAGES: u64 = 48;

fn tables() -> impl Strategy<Value = Tables> {
    (
        prop_oneof![Just(12u8), Just(14u8), Just(16u8)],
        16u8..=39,
        prop_oneof![Just(32u8), Just(36), Just(40), Just(44), Just(48)],
        any::<bool>(),
        prop::collection::vec((any::<u64>(), 0u8..4, any::<u64>()), 1..6),
        prop::collection::vec((any::<u32>(), any::<u64>()), 0..8),
        prop::collection::vec(any::<u64>(), 0..6),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(|(g, tsz, ips, tbi, paths, junk, probes, access)| Tables {
            g,
            tsz,
            ips,
            tbi,
            paths,
            junk,
            probes,
            access,
        })
}

fn build(t: &Tables) -> (GuestMemoryMmap<()>, Cd, Vec<u64>) {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x80_0000)]).unwrap();
    let g = u32::from(t.g);
    let page = 1u64 << g;
    let ia = 64 - u32::from(t.tsz);
    let root = POOL;
    let mut next_page = 1u64;
    let mut vas = Vec::new();
    for &(raw_va, leaf_level, bits) in &t.paths {
        let va = raw_va & ((1u64 << ia) - 1);
        vas.push(va);
        let low = |l: u32| g + (g - 3) * (3 - l);
        let mut start = 3u32;
        while start > 0 && low(start) + (g - 3) < ia {
            start -= 1;
        }
        let leaf_level = u32::from(leaf_level).max(start);
        let mut table = root;
        for level in start..=3 {
            let bits_here = if level == start {
                ia - low(level)
            } else {
                g - 3
            };
            let idx = (va >> low(level)) & ((1u64 << bits_here) - 1);
            let slot = table + 8 * idx;
            if level == leaf_level {
                // Leaf: a random OA within 16 MiB (some beyond RAM), random attributes and
                // sometimes random junk in the type bits.
                let oa = (bits & 0xff_f000) & !((1u64 << low(level)) - 1);
                let kind = if bits >> 60 == 0 {
                    bits & 3
                } else if level == 3 {
                    3
                } else {
                    1
                };
                let attrs = bits & ((1 << 6) | (1 << 7) | (1 << 10) | (1 << 11));
                let attrs = if bits >> 56 & 7 == 0 {
                    attrs
                } else {
                    attrs | (1 << 10)
                };
                let hi = if bits >> 52 & 0xf == 1 { 1 << 49 } else { 0 };
                mem.write_obj(oa | kind | attrs | hi, GuestAddress(slot))
                    .unwrap();
                break;
            }
            let cur: u64 = mem.read_obj(GuestAddress(slot)).unwrap();
            let next = if cur & 3 == 3 && (cur & 0xffff_ffff_f000) >= POOL {
                cur & 0xffff_ffff_f000 & !(page - 1)
            } else {
                let n = POOL + page * next_page;
                next_page = (next_page + 1) % POOL_PAGES.max(1);
                let ap = bits >> (40 + level) & 1;
                mem.write_obj(
                    n | 3 | (ap << 61) | ((bits >> 44 & 1) << 62),
                    GuestAddress(slot),
                )
                .unwrap();
                n
            };
            if next + page > 0x80_0000 {
                break;
            }
            table = next;
        }
    }
    for &(slot, v) in &t.junk {
        let addr = POOL + u64::from(slot) % (POOL_PAGES * 0x1_0000 / 8) * 8;
        if addr + 8 <= 0x80_0000 {
            mem.write_obj(v, GuestAddress(addr)).unwrap();
        }
    }
    let cd = Cd {
        asid: 1,
        ips_bits: t.ips,
        tbi: [t.tbi, false],
        regions: [
            Some(TtRegion {
                ttb: root,
                tsz: t.tsz,
                granule_log2: t.g,
            }),
            None,
        ],
        aset: false,
        mair: 0,
    };
    vas.extend(t.probes.iter().map(|p| p & ((1u64 << ia) - 1)));
    vas.extend(t.probes.iter().copied());
    (mem, cd, vas)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The walker agrees with the naive reference on random tables (Arm ARM D8 rules;
    /// IHI 0070 §3.4).
    #[test]
    fn walker_matches_reference(t in tables()) {
        let (mem, cd, vas) = build(&t);
        let access = Access { write: t.access.0, privileged: t.access.1 };
        for va in vas {
            prop_assert_eq!(
                crate_walk(&mem, &cd, va, access),
                ref_walk(&mem, &cd, va, access),
                "va {:#x}", va
            );
        }
    }
}

// ------------------------------------------------------------------ command model

/// A command as generated: legal kinds around the valid ranges, or raw.
#[derive(Debug, Clone)]
enum GenCmd {
    CfgiSte(u32),
    CfgiRange(u32, u8),
    CfgiCd(u32, u32),
    CfgiCdAll(u32),
    TlbiAll,
    TlbiAsid(u16),
    TlbiVa(u16, u64),
    TlbiVaa(u64),
    Nsnh,
    Sync(u8),
    Prefetch(u32),
    Raw(u64, u64),
}

fn gen_cmd() -> impl Strategy<Value = GenCmd> {
    prop_oneof![
        (0u32..8).prop_map(GenCmd::CfgiSte),
        (0u32..8, 0u8..32).prop_map(|(s, r)| GenCmd::CfgiRange(s, r)),
        (0u32..8, prop_oneof![Just(0u32), 0u32..3]).prop_map(|(s, ss)| GenCmd::CfgiCd(s, ss)),
        (0u32..8).prop_map(GenCmd::CfgiCdAll),
        Just(GenCmd::TlbiAll),
        any::<u16>().prop_map(GenCmd::TlbiAsid),
        (any::<u16>(), any::<u64>()).prop_map(|(a, v)| GenCmd::TlbiVa(a, v)),
        any::<u64>().prop_map(GenCmd::TlbiVaa),
        Just(GenCmd::Nsnh),
        (0u8..4).prop_map(GenCmd::Sync),
        (0u32..8).prop_map(GenCmd::Prefetch),
        (any::<u64>(), any::<u64>()).prop_map(|(a, b)| GenCmd::Raw(a, b)),
        (0u64..0x50, any::<u64>()).prop_map(|(op, b)| GenCmd::Raw(op, b)),
    ]
}

fn raw_of(c: &GenCmd) -> RawCommand {
    match *c {
        GenCmd::CfgiSte(s) => RawCommand::cfgi_ste(s, true),
        GenCmd::CfgiRange(s, r) => RawCommand::cfgi_ste_range(s, r),
        GenCmd::CfgiCd(s, ss) => {
            RawCommand([RawCommand::cfgi_cd(s, true).0[0] | u64::from(ss) << 12, 1])
        }
        GenCmd::CfgiCdAll(s) => RawCommand::cfgi_cd_all(s),
        GenCmd::TlbiAll => RawCommand::tlbi_nh_all(),
        GenCmd::TlbiAsid(a) => RawCommand::tlbi_nh_asid(a),
        GenCmd::TlbiVa(a, v) => RawCommand::tlbi_nh_va(a, v, true),
        GenCmd::TlbiVaa(v) => RawCommand::tlbi_nh_vaa(v, false),
        GenCmd::Nsnh => RawCommand::tlbi_nsnh_all(),
        GenCmd::Sync(cs) => RawCommand::sync(cs, 0, 0),
        GenCmd::Prefetch(s) => RawCommand::prefetch_config(s),
        GenCmd::Raw(a, b) => RawCommand([a, b]),
    }
}

/// The reference's reading of IHI 0070 §4: `Err(())` for illegal, else the command the
/// kernel should get (if any), normalized to its defined fields.
fn ref_command(raw: &RawCommand, host: &BTreeSet<u32>) -> Result<Option<RawCommand>, ()> {
    let [w0, w1] = raw.0;
    let op = w0 & 0xff;
    let sid = (w0 >> 32) as u32;
    let ssec = (w0 >> 10) & 1 == 1;
    let ssid = (w0 >> 12) & 0xf_ffff;
    let ssv = (w0 >> 11) & 1 == 1;
    let asid = (w0 >> 48) as u16;
    let any_host = !host.is_empty();
    match op {
        0x01 | 0x02 => {
            if ssec || ssv || ssid != 0 {
                Err(())
            } else {
                Ok(None)
            }
        }
        0x03 | 0x04 | 0x06 if ssec => Err(()),
        0x03 | 0x04 => Ok(None),
        0x05 => {
            if ssec || ssid != 0 {
                Err(())
            } else if host.contains(&sid) {
                Ok(Some(RawCommand([0x05 | u64::from(sid) << 32, w1 & 1])))
            } else {
                Ok(None)
            }
        }
        0x06 => Ok(host
            .contains(&sid)
            .then(|| RawCommand([0x06 | u64::from(sid) << 32, 0]))),
        0x10 | 0x30 => Ok(any_host.then_some(RawCommand([op, 0]))),
        0x11 => Ok(any_host.then(|| RawCommand([0x11 | u64::from(asid) << 48, 0]))),
        0x12 => {
            Ok(any_host
                .then(|| RawCommand([0x12 | u64::from(asid) << 48, (w1 & !0xfff) | (w1 & 1)])))
        }
        0x13 => Ok(any_host.then_some(RawCommand([0x13, (w1 & !0xfff) | (w1 & 1)]))),
        0x46 => {
            if (w0 >> 12) & 3 == 3 {
                Err(())
            } else {
                Ok(None)
            }
        }
        _ => Err(()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The command queue against the reference: forwarded commands in order, where it
    /// stops and with which error; work per call bounded.
    #[test]
    fn command_stream_matches_reference(
        cmds in prop::collection::vec(gen_cmd(), 0..60),
        host in prop::collection::btree_set(0u32..8, 0..3),
        batch in 1usize..8,
        max in 1u32..40,
        log2 in 2u32..7,
    ) {
        let cfg = SmmuConfig::builder(&QEMU_HOST_IDRS)
            .batch(batch)
            .max_commands_per_call(max)
            .build()
            .unwrap();
        let mut b = Bench::with_config(cfg);
        // Every STE bypass, so CFGI_STE installs nothing new after the first.
        for sid in 0..256u64 {
            b.put(0x10_0000 + 64 * sid, &config_ste_words(0b100));
        }
        b.w64(STRTAB_BASE, 0x10_0000);
        b.w32(STRTAB_BASE_CFG, 8);
        b.w32(CR0, cr0::SMMUEN);
        for &s in &host {
            b.add_host_stream(s);
        }
        b.host.take();
        let mut q = b.cmdq(0x20_0000, log2);
        let cap = 1usize << log2;
        // Expected.
        let mut expect_fwd = Vec::new();
        let mut stop: Option<usize> = None;
        let raws: Vec<RawCommand> = cmds.iter().map(raw_of).collect();
        for (i, r) in raws.iter().enumerate() {
            match ref_command(r, &host) {
                Err(()) => { stop = Some(i); break; }
                Ok(Some(f)) => expect_fwd.push(f),
                Ok(None) => {}
            }
        }
        // Submit in queue-sized chunks, draining each (a guest never overruns CONS).
        let mut consumed = 0usize;
        for chunk in raws.chunks(cap) {
            let mut p = b.submit(&mut q, chunk);
            prop_assert!(p.commands <= max);
            while p.more {
                p = b.process();
                prop_assert!(p.commands <= max);
                prop_assert!(p.commands > 0 || b.smmu.cmdq_error_active());
            }
            if b.smmu.cmdq_error_active() {
                break;
            }
            consumed += chunk.len();
        }
        let cons = b.r32(CMDQ_CONS);
        let mask = (2u32 << log2) - 1;
        match stop {
            Some(i) => {
                prop_assert!(b.smmu.cmdq_error_active());
                prop_assert_eq!(cons >> 24, 1, "CERROR_ILL");
                prop_assert_eq!(cons & 0xfffff, i as u32 & mask);
            }
            None => {
                prop_assert!(!b.smmu.cmdq_error_active());
                prop_assert_eq!(consumed, raws.len());
                prop_assert_eq!(cons & 0xfffff, raws.len() as u32 & mask);
            }
        }
        prop_assert_eq!(b.host.forwarded(), expect_fwd);
        for call in &b.host.calls {
            match call {
                BackendCall::Invalidate(v) => prop_assert!(!v.is_empty() && v.len() <= batch),
                BackendCall::Install { .. } => prop_assert!(false, "no install expected"),
            }
        }
    }

    /// Hostile MMIO and memory: no panic, every call bounded, every install a host
    /// stream's legal STE as it is in memory at that moment.
    #[test]
    fn hostile_guest_never_breaks_invariants(
        ops in prop::collection::vec((0u64..0x20, any::<u64>(), 0u8..6, any::<u64>()), 0..80),
        max in 1u32..64,
    ) {
        let cfg = SmmuConfig::builder(&QEMU_HOST_IDRS)
            .max_commands_per_call(max)
            .sid_bits(8)
            .build()
            .unwrap();
        let mut b = Bench::with_config(cfg);
        b.add_host_stream(1);
        b.add_host_stream(2);
        let offs = [CR0, CR1, CR2, GBPA, IRQ_CTRL, GERRORN, GERROR_IRQ_CFG0, STRTAB_BASE,
            STRTAB_BASE_CFG, CMDQ_BASE, CMDQ_PROD, CMDQ_CONS, EVTQ_BASE, EVTQ_PROD, EVTQ_CONS,
            EVTQ_IRQ_CFG0];
        for (sel, v, kind, addr) in ops {
            let seen = b.host.calls.len();
            match kind {
                0 | 1 => {
                    let off = offs[sel as usize % offs.len()];
                    let p = if kind == 0 { b.w32(off, v as u32) } else { b.w64(off, v) };
                    prop_assert!(p.commands <= max);
                }
                2 => {
                    // Memory: small addresses so queues and tables are hit.
                    let a = (addr % 0x40_0000) & !7;
                    b.put(a, &[v]);
                }
                3 => {
                    let _ = b.smmu.translate(&b.mem, (v & 0xff) as u32, addr, Access::WRITE);
                }
                4 => {
                    let p = b.process();
                    prop_assert!(p.commands <= max);
                }
                _ => {
                    let mut rec = [0u8; 32];
                    rec[..8].copy_from_slice(&v.to_le_bytes());
                    b.smmu.inject_host_event(&b.mem, &mut b.irq, &rec);
                }
            }
            let regs = *b.smmu.registers();
            for call in &b.host.calls[seen..] {
                if let BackendCall::Install { stream_id, ste } = call {
                    prop_assert!(*stream_id == 1 || *stream_id == 2);
                    prop_assert!(ste.vste().is_allowed());
                    if let GuestSte::Stage1(vste) = ste {
                        prop_assert_ne!(regs.cr0 & cr0::SMMUEN, 0);
                        let t = vsmmuv3::strtab::StreamTable::from_regs(
                            regs.strtab_base, regs.strtab_base_cfg, 8, true);
                        let words = t.read_ste(&b.mem, *stream_id).unwrap();
                        prop_assert_eq!(words[0] & 0xf, 0b1011);
                        prop_assert_eq!(words[0] & 0x000f_ffff_ffff_ffc0, vste.0[0] & !0xf);
                        prop_assert_eq!(words[1] & 0xff, vste.0[1]);
                    }
                }
            }
        }
    }
}

/// The random tables are not all faults: a good share of the generated paths translate,
/// so the comparison above covers successful walks, blocks and pages at every granule.
#[test]
fn generated_tables_translate_often() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut ok, mut total) = (0, 0);
    let mut sizes = BTreeSet::new();
    for _ in 0..300 {
        let t = tables().new_tree(&mut runner).unwrap().current();
        let (mem, cd, vas) = build(&t);
        for va in vas.iter().take(t.paths.len()) {
            total += 1;
            if let RefOut::Ok { size_log2, .. } = ref_walk(&mem, &cd, *va, Access::READ) {
                ok += 1;
                sizes.insert(size_log2);
            }
        }
    }
    assert!(ok * 5 > total, "{ok} of {total} translated");
    assert!(sizes.len() >= 5, "page and block sizes seen: {sizes:?}");
}
