// Copyright © 2026 The passthrough-msi authors
//
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Property tests: the IMSIC against a plain reference model written from AIA
//! 1.0 §3.5-§3.10 with sets of identities, under random (often invalid)
//! MSIs, MMIO, indirect accesses, claims, resets, MRIF merges and
//! save/restore round trips.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use riscv_imsic::{
    ExternalInterruptSink, FileKind, FileTarget, GeometryConfig, HartConfig, Imsic, ImsicConfig,
    ImsicError, ImsicEvent, ImsicGeometry, ImsicState, IselectError, NumIds, WriteOutcome, Xlen,
};

/// Checks the edge-only contract and mirrors enables from events.
#[derive(Default, Debug)]
struct Checker {
    level: BTreeMap<FileTarget, bool>,
    enabled: BTreeMap<FileTarget, BTreeSet<u32>>,
    delivery: BTreeMap<FileTarget, u32>,
    threshold: BTreeMap<FileTarget, u32>,
    violations: Vec<String>,
}

impl ExternalInterruptSink for Checker {
    fn raise(&mut self, t: FileTarget) {
        if self.level.insert(t, true) == Some(true) {
            self.violations.push(format!("double raise {t:?}"));
        }
    }
    fn lower(&mut self, t: FileTarget) {
        if self.level.insert(t, false) != Some(true) {
            self.violations.push(format!("lower while low {t:?}"));
        }
    }
    fn event(&mut self, e: ImsicEvent) {
        match e {
            ImsicEvent::IdentityEnabled { target, id } => {
                if !self.enabled.entry(target).or_default().insert(id) {
                    self.violations
                        .push(format!("enable event for enabled {id}"));
                }
            }
            ImsicEvent::IdentityDisabled { target, id } => {
                if !self.enabled.entry(target).or_default().remove(&id) {
                    self.violations
                        .push(format!("disable event for disabled {id}"));
                }
            }
            ImsicEvent::DeliveryChanged { target, from, to } => {
                let prev = self
                    .delivery
                    .insert(target, to.value())
                    .unwrap_or(reset_delivery(target));
                if prev != from.value() || from == to {
                    self.violations
                        .push(format!("delivery event {from:?}->{to:?} after {prev}"));
                }
            }
            ImsicEvent::ThresholdChanged { target, from, to } => {
                let prev = self.threshold.insert(target, to).unwrap_or(0);
                if prev != from || from == to {
                    self.violations
                        .push(format!("threshold event {from}->{to} after {prev}"));
                }
            }
        }
    }
}

fn reset_delivery(t: FileTarget) -> u32 {
    if APLIC && !matches!(t.file, FileKind::Guest(_)) {
        0x4000_0000
    } else {
        0
    }
}

const APLIC: bool = true;
const HARTS: usize = 2;

fn geometry() -> GeometryConfig {
    GeometryConfig {
        machine_base: Some(0x2400_0000),
        machine_hart_shift: 12,
        supervisor_base: 0x2800_0000,
        guest_index_bits: 1,
        hart_index_bits: 2,
        group_index_bits: 0,
        group_index_shift: 24,
    }
}

fn config() -> ImsicConfig {
    let harts = (0..HARTS as u32)
        .map(|h| HartConfig {
            group: 0,
            hart: h,
            machine_ids: Some(NumIds::new(63).unwrap()),
            supervisor_ids: NumIds::new(127).unwrap(),
            guest_ids: NumIds::new(255).unwrap(),
            geilen: 1,
        })
        .collect();
    ImsicConfig {
        geometry: geometry(),
        harts,
        aplic_delivery: APLIC,
    }
}

/// Reference model of one file.
#[derive(Clone, Debug)]
struct RefFile {
    n: u32,
    aplic: bool,
    delivery: u32,
    threshold: u32,
    pending: BTreeSet<u32>,
    enabled: BTreeSet<u32>,
}

impl RefFile {
    fn new(n: u32, aplic: bool) -> Self {
        RefFile {
            n,
            aplic,
            delivery: if aplic { 0x4000_0000 } else { 0 },
            threshold: 0,
            pending: BTreeSet::new(),
            enabled: BTreeSet::new(),
        }
    }

    fn top(&self) -> u32 {
        self.pending
            .intersection(&self.enabled)
            .copied()
            .find(|id| self.threshold == 0 || *id < self.threshold)
            .unwrap_or(0)
    }

    fn line(&self) -> bool {
        self.delivery == 1 && self.top() != 0
    }

    /// (first identity, bit count) of eipk/eiek for xlen, or None if the
    /// register does not exist.
    fn window(k: u64, xlen: Xlen) -> Option<(u32, u32)> {
        match xlen {
            Xlen::Rv32 => Some((k as u32 * 32, 32)),
            Xlen::Rv64 => k.is_multiple_of(2).then_some((k as u32 * 32, 64)),
        }
    }

    fn read_set(set: &BTreeSet<u32>, first: u32, bits: u32) -> u64 {
        (0..bits)
            .filter(|b| set.contains(&(first + b)))
            .fold(0, |acc, b| acc | (1u64 << b))
    }

    fn write_set(set: &mut BTreeSet<u32>, n: u32, first: u32, bits: u32, value: u64) {
        for b in 0..bits {
            let id = first + b;
            if id == 0 || id > n {
                continue;
            }
            if value & (1u64 << b) != 0 {
                set.insert(id);
            } else {
                set.remove(&id);
            }
        }
    }

    /// Ok(old) or Err for an access that traps.
    fn rmw(&mut self, iselect: u64, new: u64, mask: u64, xlen: Xlen) -> Result<u64, ()> {
        let width = match xlen {
            Xlen::Rv32 => u64::from(u32::MAX),
            Xlen::Rv64 => u64::MAX,
        };
        let mask = mask & width;
        let merge = |old: u64| (old & !mask) | (new & mask);
        match iselect {
            0x70 => {
                let old = u64::from(self.delivery);
                if mask != 0 {
                    let v = merge(old);
                    self.delivery = if self.aplic && v & 0x4000_0000 != 0 {
                        0x4000_0000
                    } else {
                        (v & 1) as u32
                    };
                }
                Ok(old)
            }
            0x72 => {
                let old = u64::from(self.threshold);
                if mask != 0 {
                    self.threshold = (merge(old) & 0x7FF) as u32;
                }
                Ok(old)
            }
            0x71 | 0x73..=0x7F => Ok(0),
            0x80..=0xFF => {
                let pend = iselect < 0xC0;
                let k = if pend { iselect - 0x80 } else { iselect - 0xC0 };
                let (first, bits) = Self::window(k, xlen).ok_or(())?;
                let set = if pend {
                    &mut self.pending
                } else {
                    &mut self.enabled
                };
                let old = Self::read_set(set, first, bits);
                if mask != 0 {
                    Self::write_set(set, self.n, first, bits, merge(old));
                }
                Ok(old)
            }
            _ => Err(()),
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// MSI (or MMIO write) to file `f` of hart `h`, at page offset `off`.
    Write {
        h: usize,
        f: u8,
        off: u64,
        len: usize,
        value: u32,
    },
    Read {
        h: usize,
        f: u8,
        off: u64,
        len: usize,
    },
    Rmw {
        h: usize,
        f: u8,
        iselect: u64,
        new: u64,
        mask: u64,
        rv32: bool,
    },
    Claim {
        h: usize,
        f: u8,
    },
    WriteTopei {
        h: usize,
        f: u8,
    },
    Reset,
    SaveRestore,
    Mrif {
        h: usize,
        f: u8,
        pend: Vec<u64>,
        enab: Vec<u64>,
    },
    Stray {
        addr: u64,
        value: u32,
    },
}

fn kind(f: u8) -> FileKind {
    match f % 3 {
        0 => FileKind::Machine,
        1 => FileKind::Supervisor,
        _ => FileKind::Guest(1),
    }
}

fn value_strategy() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => 0u32..=10,
        3 => 60u32..=70,
        2 => 0u32..=300,
        1 => any::<u32>(),
    ]
}

/// An `*iselect` value with a value to write that makes sense for it most of
/// the time, and garbage some of the time.
fn indirect_strategy() -> impl Strategy<Value = (u64, u64)> {
    let eix_value = prop_oneof![
        3 => any::<u64>().prop_map(|v| v & 0x7FE),
        2 => (0u32..64).prop_map(|b| 1u64 << b),
        1 => any::<u64>(),
    ];
    prop_oneof![
        4 => (Just(0x70u64), prop_oneof![4 => Just(1u64), 2 => Just(0u64), 1 => Just(0x4000_0000u64), 1 => any::<u64>()]),
        3 => (Just(0x72u64), prop_oneof![3 => Just(0u64), 3 => 1u64..=12, 1 => any::<u64>()]),
        6 => (0xC0u64..=0xC3, eix_value.clone()),
        3 => (0x80u64..=0x83, eix_value),
        1 => (0x6Cu64..=0x104, any::<u64>()),
        1 => (any::<u64>(), any::<u64>()),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let h = prop_oneof![8 => 0usize..HARTS, 1 => Just(HARTS)]; // HARTS is out of range
    let f = prop_oneof![1 => Just(0u8), 3 => Just(1u8), 1 => Just(2u8)];
    let len = prop_oneof![12 => Just(4usize), 1 => 0usize..9];
    let off = prop_oneof![8 => Just(0u64), 3 => Just(4u64), 1 => 0u64..0x1004];
    prop_oneof![
        8 => (h.clone(), f.clone(), off, len, value_strategy())
            .prop_map(|(h, f, off, len, value)| Op::Write { h, f, off, len, value }),
        1 => (h.clone(), f.clone(), 0u64..0x1000, 0usize..9).prop_map(|(h, f, off, len)| Op::Read { h, f, off, len }),
        8 => (
            h.clone(),
            f.clone(),
            indirect_strategy(),
            prop_oneof![6 => Just(u64::MAX), 1 => Just(0u64), 2 => any::<u64>()],
            prop_oneof![4 => Just(false), 1 => Just(true)],
        )
            .prop_map(|(h, f, (iselect, new), mask, rv32)| Op::Rmw { h, f, iselect, new, mask, rv32 }),
        4 => (h.clone(), f.clone()).prop_map(|(h, f)| Op::Claim { h, f }),
        1 => (h.clone(), f.clone()).prop_map(|(h, f)| Op::WriteTopei { h, f }),
        1 => Just(Op::Reset),
        1 => Just(Op::SaveRestore),
        1 => (h.clone(), f.clone(), prop::collection::vec(any::<u64>(), 32), prop::collection::vec(any::<u64>(), 32))
            .prop_map(|(h, f, pend, enab)| Op::Mrif { h, f, pend, enab }),
        1 => (any::<u64>(), any::<u32>()).prop_map(|(addr, value)| Op::Stray { addr, value }),
    ]
}

struct Harness {
    imsic: Imsic<Checker>,
    model: BTreeMap<FileTarget, RefFile>,
}

impl Harness {
    fn new() -> Self {
        let imsic = Imsic::new(config(), Checker::default()).unwrap();
        let mut model = BTreeMap::new();
        for h in 0..HARTS {
            model.insert(
                FileTarget::new(h, FileKind::Machine),
                RefFile::new(63, APLIC),
            );
            model.insert(
                FileTarget::new(h, FileKind::Supervisor),
                RefFile::new(127, APLIC),
            );
            model.insert(
                FileTarget::new(h, FileKind::Guest(1)),
                RefFile::new(255, false),
            );
        }
        Harness { imsic, model }
    }

    fn addr(h: usize, f: u8) -> u64 {
        let geo = ImsicGeometry::new(geometry()).unwrap();
        geo.file_address(0, h as u32, kind(f)).unwrap()
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op.clone() {
            Op::Write {
                h,
                f,
                off,
                len,
                value,
            } => {
                let target = FileTarget::new(h, kind(f));
                let addr = Self::addr(h, f) + off;
                let mut data = vec![0u8; len];
                let le = value.to_le_bytes();
                for (d, s) in data.iter_mut().zip(le.iter()) {
                    *d = *s;
                }
                let got = self.imsic.mmio_write(addr, &data);
                let aligned = len == 4 && off % 4 == 0 && off < 0x1000;
                if off >= 0x1000 {
                    // Next hart's page (or an unoccupied one): the write lands wherever the
                    // geometry routes it, so the model follows the same route.
                    if let Ok(WriteOutcome::Pending { target, id, .. }) = got {
                        let m = self.model.get_mut(&target).unwrap();
                        m.pending.insert(id);
                        prop_assert_eq!(self.imsic.resolve(addr).unwrap().target, target);
                    }
                    return Ok(());
                }
                if !aligned {
                    prop_assert_eq!(got, Err(ImsicError::UnsupportedAccess { addr, len }));
                    return Ok(());
                }
                let Some(m) = self.model.get_mut(&target) else {
                    prop_assert!(matches!(got, Ok(WriteOutcome::Ignored(_))), "{:?}", got);
                    return Ok(());
                };
                let id = match off {
                    0 => value,
                    4 => value.swap_bytes(),
                    _ => {
                        prop_assert!(matches!(got, Ok(WriteOutcome::Ignored(_))));
                        return Ok(());
                    }
                };
                if id != 0 && id <= m.n {
                    let was = !m.pending.insert(id);
                    prop_assert_eq!(
                        got,
                        Ok(WriteOutcome::Pending {
                            target,
                            id,
                            was_pending: was
                        })
                    );
                } else {
                    prop_assert!(matches!(got, Ok(WriteOutcome::Ignored(_))));
                }
            }
            Op::Read { h, f, off, len } => {
                let addr = Self::addr(h, f) + off;
                let mut buf = vec![0x5Au8; len];
                let got = self.imsic.mmio_read(addr, &mut buf);
                prop_assert!(buf.iter().all(|b| *b == 0));
                let aligned = len == 4 && off % 4 == 0;
                prop_assert_eq!(got.is_ok(), aligned);
            }
            Op::Rmw {
                h,
                f,
                iselect,
                new,
                mask,
                rv32,
            } => {
                let target = FileTarget::new(h, kind(f));
                let xlen = if rv32 { Xlen::Rv32 } else { Xlen::Rv64 };
                let got = self.imsic.rmw_indirect(target, iselect, new, mask, xlen);
                match self.model.get_mut(&target) {
                    None => prop_assert_eq!(got, Err(ImsicError::NoSuchFile { target })),
                    Some(m) => match m.rmw(iselect, new, mask, xlen) {
                        Ok(old) => prop_assert_eq!(got, Ok(old)),
                        Err(()) => {
                            let Err(ImsicError::Indirect { source, .. }) = got else {
                                return Err(TestCaseError::fail(format!(
                                    "expected trap, got {got:?}"
                                )));
                            };
                            let expected = if (0x70..=0xFF).contains(&iselect) {
                                IselectError::OddRegisterOnRv64 { iselect }
                            } else {
                                IselectError::NotImsicRegister { iselect }
                            };
                            prop_assert_eq!(source, expected);
                        }
                    },
                }
            }
            Op::Claim { h, f } => {
                let target = FileTarget::new(h, kind(f));
                let got = self.imsic.claim_topei(target);
                match self.model.get_mut(&target) {
                    None => prop_assert!(got.is_err()),
                    Some(m) => {
                        let top = m.top();
                        m.pending.remove(&top);
                        prop_assert_eq!(got, Ok((top << 16) | top));
                    }
                }
            }
            Op::WriteTopei { h, f } => {
                let target = FileTarget::new(h, kind(f));
                let got = self.imsic.write_topei(target);
                match self.model.get_mut(&target) {
                    None => prop_assert!(got.is_err()),
                    Some(m) => {
                        let top = m.top();
                        m.pending.remove(&top);
                        prop_assert_eq!(got, Ok(top));
                    }
                }
            }
            Op::Reset => {
                self.imsic.reset();
                for m in self.model.values_mut() {
                    *m = RefFile::new(m.n, m.aplic);
                }
            }
            Op::SaveRestore => {
                let json = serde_json::to_vec(&self.imsic.save()).unwrap();
                let state: ImsicState = serde_json::from_slice(&json).unwrap();
                let before = self.imsic.sink().violations.len();
                self.imsic.restore(&state).unwrap();
                prop_assert_eq!(self.imsic.sink().violations.len(), before);
            }
            Op::Mrif { h, f, pend, enab } => {
                let target = FileTarget::new(h, kind(f));
                let mut image = [0u8; 512];
                for k in 0..32 {
                    image[k * 16..k * 16 + 8].copy_from_slice(&pend[k].to_le_bytes());
                    image[k * 16 + 8..k * 16 + 16].copy_from_slice(&enab[k].to_le_bytes());
                }
                let got = self.imsic.merge_mrif(target, &image);
                match self.model.get_mut(&target) {
                    None => prop_assert!(got.is_err()),
                    Some(m) => {
                        prop_assert!(got.is_ok());
                        m.enabled.clear();
                        for id in 1..=m.n {
                            let (k, b) = ((id / 64) as usize, id % 64);
                            if pend[k] & (1u64 << b) != 0 {
                                m.pending.insert(id);
                            }
                            if enab[k] & (1u64 << b) != 0 {
                                m.enabled.insert(id);
                            }
                        }
                    }
                }
            }
            Op::Stray { addr, value } => {
                // Any address: routed only where the geometry says.
                let got = self.imsic.write_msi(addr, value);
                if let Ok(WriteOutcome::Pending { target, id, .. }) = got {
                    let m = self.model.get_mut(&target).unwrap();
                    m.pending.insert(id);
                    prop_assert_eq!(self.imsic.resolve(addr).unwrap().target, target);
                }
            }
        }
        self.check()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let sink = self.imsic.sink();
        prop_assert!(sink.violations.is_empty(), "{:?}", sink.violations);
        for (target, m) in &self.model {
            let file = self.imsic.file(*target).unwrap();
            prop_assert_eq!(file.top_id(), m.top(), "{:?}", target);
            prop_assert_eq!(file.eidelivery().value(), m.delivery);
            prop_assert_eq!(file.eithreshold(), m.threshold);
            let line = sink.level.get(target).copied().unwrap_or(false);
            prop_assert_eq!(line, m.line(), "line of {:?}", target);
            prop_assert_eq!(self.imsic.line(*target), Ok(m.line()));
            let mirror = sink.enabled.get(target).cloned().unwrap_or_default();
            prop_assert_eq!(&mirror, &m.enabled, "event mirror of {:?}", target);
            let pending: BTreeSet<u32> = (0..=2048).filter(|id| file.is_pending(*id)).collect();
            prop_assert_eq!(&pending, &m.pending);
            prop_assert_eq!(
                sink.delivery
                    .get(target)
                    .copied()
                    .unwrap_or(reset_delivery(*target)),
                m.delivery
            );
            prop_assert_eq!(
                sink.threshold.get(target).copied().unwrap_or(0),
                m.threshold
            );
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn events_mirror_enables(ops in prop::collection::vec(op_strategy(), 1..120)) {
        let mut h = Harness::new();
        for op in &ops {
            h.apply(op)?;
        }
    }

    #[test]
    fn geometry_round_trips(
        machine in any::<bool>(),
        c_extra in 0u8..3,
        gib in 0u8..=7,
        k in 0u8..=15,
        j in 0u8..=7,
        e in 0u8..=55,
        a_page in any::<u64>(),
        b_page in any::<u64>(),
        probes in prop::collection::vec((any::<u32>(), any::<u32>(), 0u8..=128, 0u16..4096), 16),
        stray in prop::collection::vec(any::<u64>(), 16),
    ) {
        // Mostly valid layouts: bases aligned to their regions and clear of the
        // group field, E at or a little above its minimum.
        let c = 12 + c_extra;
        let d = 12 + gib;
        let e = (k + c.max(d) + e % 8).min(55);
        let group_field = ((1u64 << j) - 1) << e;
        let base = |raw: u64, bits: u8| ((raw % (1 << 24)) << (k + bits)) & !group_field;
        let cfg = GeometryConfig {
            machine_base: machine.then_some(base(a_page, c)),
            machine_hart_shift: c,
            supervisor_base: base(b_page, d),
            guest_index_bits: gib,
            hart_index_bits: k,
            group_index_bits: j,
            group_index_shift: e,
        };
        let Ok(geo) = ImsicGeometry::new(cfg) else {
            // Only overlapping regions are expected to be refused here.
            let err = ImsicGeometry::new(cfg).unwrap_err();
            prop_assert!(matches!(err, riscv_imsic::GeometryError::RegionsOverlap { .. }), "{:?}", err);
            return Ok(());
        };
        for (g, h, sel, off) in probes {
            let g = g % geo.groups();
            let h = h % geo.harts_per_group();
            let file = match sel {
                0 if machine => FileKind::Machine,
                0 | 1 => FileKind::Supervisor,
                i => FileKind::Guest(i % 128),
            };
            match geo.file_address(g, h, file) {
                Ok(a) => {
                    let d = geo.decode(a + u64::from(off)).unwrap();
                    prop_assert_eq!((d.group, d.hart, d.file, d.offset), (g, h, file, off));
                }
                Err(_) => {
                    let FileKind::Guest(i) = file else {
                        return Err(TestCaseError::fail("only guest numbers may be out of range"));
                    };
                    prop_assert!(i == 0 || i > geo.max_guest_files());
                }
            }
        }
        for addr in stray {
            if let Ok(d) = geo.decode(addr) {
                let a = geo.file_address(d.group, d.hart, d.file).unwrap();
                prop_assert_eq!(a + u64::from(d.offset), addr);
            }
        }
        // Regions of different levels never overlap.
        let regions: Vec<_> = geo.regions().collect();
        for x in &regions {
            for y in &regions {
                if x != y {
                    let disjoint = x.base + (x.size - 1) < y.base || y.base + (y.size - 1) < x.base;
                    prop_assert!(disjoint, "{:?} {:?}", x, y);
                }
            }
        }
    }
}
