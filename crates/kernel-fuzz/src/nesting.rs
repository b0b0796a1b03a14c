// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A model of iommufd's nesting objects for one device on an SMMUv3 (vIOMMU, vDEVICE,
//! vEVENTQ, nested HWPTs, the device's attachment, invalidations) and a seeded generator of
//! operations on them, for the stateful fuzz of `tests/nesting_fuzz.rs`.
//!
//! The rules, from Linux 7.2's `drivers/iommu/iommufd/{viommu,eventq,driver}.c` and
//! `drivers/iommu/arm/arm-smmu-v3/arm-smmu-v3-iommufd.c`:
//!
//! * `IOMMU_DESTROY` of an object others hold is `EBUSY`: a vIOMMU with a vDEVICE, a vEVENTQ
//!   or a nested HWPT on it; a nested HWPT the device is attached to; the nest parent while a
//!   vIOMMU sits on it or the device is attached to it. Of an ID nothing holds, `ENOENT`.
//! * `IOMMU_VDEVICE_ALLOC`: one vDEVICE per device, whatever the vIOMMU (`EEXIST`).
//! * `IOMMU_VEVENTQ_ALLOC`: one per vIOMMU and type (`EEXIST`); a depth of 0 or above
//!   `MAX_DEPTH` is refused by the crate before the kernel.
//! * `IOMMU_HWPT_ALLOC` of a nested HWPT: any abort, bypass or stage-1 vSTE is taken (the CD
//!   pointer is not read); a vSTE with a bit outside the allowed set is `EIO`.
//! * Attaching the device to a stage-1 nested HWPT needs a vDEVICE of the device on that
//!   HWPT's vIOMMU (`ENOENT`); abort and bypass ones do not (the GBPA case).
//! * `IOMMU_HWPT_INVALIDATE` on a vIOMMU: the TLBI commands are taken; `CFGI_CD`,
//!   `CFGI_CD_ALL` and `ATC_INV` name a virtual StreamID, and one that is no vDEVICE of that
//!   vIOMMU stops the array with `EIO` at that command (those before it were issued).
//!   Commands the kernel never forwards (`CMD_SYNC`, `CFGI_STE`, ...) are refused by the
//!   crate before the kernel.

use std::collections::{BTreeMap, BTreeSet};

use crate::{Answer, Rng};

/// What the crate refuses before any ioctl (its `Error::InvalidArgument`): [`Answer::Err`]
/// of this value.
pub const REFUSED: i32 = 0;

/// A vSTE kind the generator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SteKind {
    /// `Config = abort`.
    Abort,
    /// `Config = bypass`.
    Bypass,
    /// `Config = stage 1`, CD pointer in the guest's RAM.
    Stage1,
    /// `Config = stage 1` with the CD pointer anywhere.
    Stage1Anywhere(u64),
    /// Stage 1 with a forbidden bit set in word `0` or `1` (bit `u8`).
    Forbidden(usize, u8),
}

/// The device's attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// Not attached.
    None,
    /// To the IOAS (the kernel's own paging HWPT).
    Ioas,
    /// To the nest parent (stage 2 alone).
    Parent,
    /// To a nested HWPT (model slot).
    Nested(u32),
}

/// One invalidation command as generated: the crate's command is built from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inval {
    /// `TLBI_NH_ALL`.
    NhAll,
    /// `TLBI_NH_ASID`.
    NhAsid(u16),
    /// `TLBI_NH_VA`.
    NhVa(u16, u64, bool),
    /// `TLBI_NH_VAA`.
    NhVaa(u64, bool),
    /// `TLBI_NSNH_ALL`.
    NsnhAll,
    /// `CFGI_CD` of a vSID.
    CfgiCd(u32, bool),
    /// `CFGI_CD_ALL` of a vSID.
    CfgiCdAll(u32),
    /// `ATC_INV` of a vSID (only generated for vSIDs that are no vDEVICE: the test host's
    /// SMMU has no ATS).
    AtcInv(u32),
    /// A raw command with this opcode, never forwarded (refused by the crate).
    Unforwarded(u8),
}

impl Inval {
    /// The vSID it names, if any.
    pub fn vsid(&self) -> Option<u32> {
        match self {
            Inval::CfgiCd(s, _) | Inval::CfgiCdAll(s) | Inval::AtcInv(s) => Some(*s),
            _ => None,
        }
    }
}

/// One generated operation; slots are the model's names for objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NestOp {
    /// A vIOMMU on the nest parent.
    AllocViommu,
    /// Destroy a vIOMMU.
    DestroyViommu(u32),
    /// A vDEVICE of the device on a vIOMMU, with a virtual StreamID.
    AllocVdevice(u32, u64),
    /// Destroy the vDEVICE.
    DestroyVdevice,
    /// A vEVENTQ on a vIOMMU, of a depth.
    AllocVeventq(u32, u32),
    /// Destroy a vIOMMU's vEVENTQ.
    DestroyVeventq(u32),
    /// A nested HWPT on a vIOMMU.
    AllocNested(u32, SteKind),
    /// Destroy a nested HWPT.
    DestroyNested(u32),
    /// Destroy the nest parent (always held here: `EBUSY` or, with nothing on it, fine but
    /// never generated then).
    DestroyParent,
    /// Destroy an ID nothing holds.
    DestroyUnknown(u32),
    /// Attach (or replace) the device.
    Attach(Attach),
    /// Invalidate through a vIOMMU.
    Invalidate(u32, Vec<Inval>),
}

/// A nested HWPT of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nested {
    /// Its vIOMMU's slot.
    pub viommu: u32,
    /// Stage 1 (needs a vDEVICE to attach).
    pub stage1: bool,
}

/// The nesting objects of one device, as the kernel holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NestModel {
    /// vIOMMU slots.
    pub viommus: BTreeSet<u32>,
    /// vIOMMUs with a vEVENTQ.
    pub veventqs: BTreeSet<u32>,
    /// Nested HWPTs by slot.
    pub nested: BTreeMap<u32, Nested>,
    /// The device's vDEVICE: (vIOMMU slot, vSID).
    pub vdevice: Option<(u32, u64)>,
    /// The device's attachment.
    pub attached: Option<Attach>,
    next: u32,
}

/// The largest vEVENTQ depth the crate takes (`iommufd_ioas::veventq::MAX_DEPTH`).
pub const MAX_DEPTH: u32 = 1 << 19;

impl NestModel {
    /// Nothing but the nest parent, the device attached to the IOAS.
    pub fn new() -> Self {
        NestModel {
            attached: Some(Attach::Ioas),
            ..Default::default()
        }
    }

    /// A fresh slot for a new object.
    pub fn slot(&mut self) -> u32 {
        self.next += 1;
        self.next
    }

    fn viommu_busy(&self, v: u32) -> bool {
        self.vdevice.is_some_and(|(w, _)| w == v)
            || self.veventqs.contains(&v)
            || self.nested.values().any(|n| n.viommu == v)
    }

    /// The kernel's answer to `op` (before applying it).
    pub fn predict(&self, op: &NestOp) -> Answer {
        use libc::{EBUSY, EEXIST, EIO, ENOENT};
        let err = Answer::Err;
        match op {
            NestOp::AllocViommu => Answer::Ok,
            NestOp::DestroyViommu(v) if self.viommu_busy(*v) => err(EBUSY),
            NestOp::DestroyViommu(_) => Answer::Ok,
            NestOp::AllocVdevice(..) if self.vdevice.is_some() => err(EEXIST),
            NestOp::AllocVdevice(..) | NestOp::DestroyVdevice => Answer::Ok,
            NestOp::AllocVeventq(_, d) if *d == 0 || *d > MAX_DEPTH => err(REFUSED),
            NestOp::AllocVeventq(v, _) if self.veventqs.contains(v) => err(EEXIST),
            NestOp::AllocVeventq(..) | NestOp::DestroyVeventq(_) => Answer::Ok,
            NestOp::AllocNested(_, SteKind::Forbidden(..)) => err(EIO),
            NestOp::AllocNested(..) => Answer::Ok,
            NestOp::DestroyNested(h) if self.attached == Some(Attach::Nested(*h)) => err(EBUSY),
            NestOp::DestroyNested(_) => Answer::Ok,
            NestOp::DestroyParent
                if !self.viommus.is_empty() || self.attached == Some(Attach::Parent) =>
            {
                err(EBUSY)
            }
            NestOp::DestroyParent => Answer::Ok,
            NestOp::DestroyUnknown(_) => err(ENOENT),
            NestOp::Attach(Attach::Nested(h)) => match self.nested.get(h) {
                Some(n) if n.stage1 && self.vdevice.is_none_or(|(v, _)| v != n.viommu) => {
                    err(ENOENT)
                }
                _ => Answer::Ok,
            },
            // Detaching a detached device is refused by the crate.
            NestOp::Attach(Attach::None) if self.attached == Some(Attach::None) => err(REFUSED),
            NestOp::Attach(_) => Answer::Ok,
            NestOp::Invalidate(v, cmds) => match self.predict_invalidate(*v, cmds) {
                Ok(()) => Answer::Ok,
                Err((code, _)) => err(code),
            },
        }
    }

    /// The answer to an invalidation array: `Err((errno, consumed))` with the number of
    /// commands the kernel handled before the failing one; `REFUSED` (with 0) when the crate
    /// refuses a command before any call.
    pub fn predict_invalidate(&self, viommu: u32, cmds: &[Inval]) -> Result<(), (i32, usize)> {
        if cmds.iter().any(|c| matches!(c, Inval::Unforwarded(_))) {
            return Err((REFUSED, 0));
        }
        let vsid = self.vdevice.and_then(|(v, s)| (v == viommu).then_some(s));
        for (i, c) in cmds.iter().enumerate() {
            if let Some(s) = c.vsid()
                && Some(u64::from(s)) != vsid
            {
                return Err((libc::EIO, i));
            }
        }
        Ok(())
    }

    /// Applies `op`, whose answer was `answer`, with `slot` the new object's slot for
    /// allocations.
    pub fn apply(&mut self, op: &NestOp, answer: Answer, slot: u32) {
        if answer != Answer::Ok {
            return;
        }
        match op {
            NestOp::AllocViommu => {
                self.viommus.insert(slot);
            }
            NestOp::DestroyViommu(v) => {
                self.viommus.remove(v);
            }
            NestOp::AllocVdevice(v, s) => self.vdevice = Some((*v, *s)),
            NestOp::DestroyVdevice => self.vdevice = None,
            NestOp::AllocVeventq(v, _) => {
                self.veventqs.insert(*v);
            }
            NestOp::DestroyVeventq(v) => {
                self.veventqs.remove(v);
            }
            NestOp::AllocNested(v, k) => {
                self.nested.insert(
                    slot,
                    Nested {
                        viommu: *v,
                        stage1: matches!(k, SteKind::Stage1 | SteKind::Stage1Anywhere(_)),
                    },
                );
            }
            NestOp::DestroyNested(h) => {
                self.nested.remove(h);
            }
            NestOp::Attach(a) => self.attached = Some(*a),
            NestOp::DestroyParent | NestOp::DestroyUnknown(_) | NestOp::Invalidate(..) => {}
        }
    }
}

/// vSIDs the generator names: the device's usual one and others.
pub const VSIDS: [u32; 4] = [0x8, 0x9, 0x20, 0xffff];

fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> Option<T> {
    (!items.is_empty()).then(|| items[rng.below(items.len() as u64) as usize])
}

fn inval(rng: &mut Rng, known: Option<u32>) -> Inval {
    let sid = |rng: &mut Rng| match known {
        Some(s) if rng.chance(70) => s,
        _ => VSIDS[rng.below(VSIDS.len() as u64) as usize],
    };
    let addr = rng.below(1 << 36) & !0xfff;
    let asid = rng.below(4) as u16;
    match rng.below(20) {
        0..=2 => Inval::NhAll,
        3..=5 => Inval::NhAsid(asid),
        6..=8 => Inval::NhVa(asid, addr, rng.chance(50)),
        9..=10 => Inval::NhVaa(addr, rng.chance(50)),
        11 => Inval::NsnhAll,
        12..=14 => Inval::CfgiCd(sid(rng), rng.chance(50)),
        15..=16 => Inval::CfgiCdAll(sid(rng)),
        17 => {
            // Never the device's own vSID: no ATS here.
            let s = VSIDS[rng.below(VSIDS.len() as u64) as usize];
            Inval::AtcInv(if Some(s) == known { s ^ 1 } else { s })
        }
        _ if rng.chance(30) => {
            Inval::Unforwarded(pick(rng, &[0x46u8, 0x03, 0x04, 0x20]).unwrap_or(0x46))
        }
        _ => Inval::NhAll,
    }
}

/// Generates the next operation from the model.
pub fn generate(rng: &mut Rng, m: &NestModel) -> NestOp {
    let viommus: Vec<u32> = m.viommus.iter().copied().collect();
    let nested: Vec<u32> = m.nested.keys().copied().collect();
    let Some(v) = pick(rng, &viommus) else {
        return NestOp::AllocViommu;
    };
    match rng.below(100) {
        0..=4 if viommus.len() < 3 => NestOp::AllocViommu,
        0..=7 => {
            // Mostly one that nothing holds, so that destroys also succeed.
            let free: Vec<u32> = viommus
                .iter()
                .copied()
                .filter(|w| !m.viommu_busy(*w))
                .collect();
            match pick(rng, &free) {
                Some(w) if rng.chance(70) => NestOp::DestroyViommu(w),
                _ => NestOp::DestroyViommu(v),
            }
        }
        8..=14 => NestOp::AllocVdevice(v, u64::from(pick(rng, &VSIDS).unwrap_or(8))),
        15..=18 if m.vdevice.is_some() => NestOp::DestroyVdevice,
        15..=18 => NestOp::AllocVdevice(v, u64::from(pick(rng, &VSIDS).unwrap_or(8))),
        19..=23 => {
            let depth = match rng.below(10) {
                0 => 0,
                1 => MAX_DEPTH + 1,
                _ => 1 + rng.below(512) as u32,
            };
            NestOp::AllocVeventq(v, depth)
        }
        24..=26 => match pick(rng, &m.veventqs.iter().copied().collect::<Vec<_>>()) {
            Some(q) => NestOp::DestroyVeventq(q),
            None => NestOp::AllocVeventq(v, 64),
        },
        27..=40 => {
            let kind = match rng.below(10) {
                0..=1 => SteKind::Abort,
                2..=3 => SteKind::Bypass,
                4..=6 => SteKind::Stage1,
                7..=8 => SteKind::Stage1Anywhere(rng.below(1 << 40) & !0x3f),
                _ => SteKind::Forbidden(rng.below(2) as usize, rng.below(64) as u8),
            };
            NestOp::AllocNested(v, kind)
        }
        41..=48 => match pick(rng, &nested) {
            // Now and then the one the device is attached to (EBUSY).
            _ if rng.chance(25)
                && let Some(Attach::Nested(h)) = m.attached =>
            {
                NestOp::DestroyNested(h)
            }
            Some(h) => NestOp::DestroyNested(h),
            None => NestOp::DestroyUnknown(1000 + rng.below(1000) as u32),
        },
        49..=50 if !m.viommus.is_empty() || m.attached == Some(Attach::Parent) => {
            NestOp::DestroyParent
        }
        49..=52 => NestOp::DestroyUnknown(1000 + rng.below(1000) as u32),
        53..=72 => {
            let target = match (rng.below(10), pick(rng, &nested)) {
                (0, _) => Attach::Ioas,
                (1, _) => Attach::Parent,
                (2, _) => Attach::None,
                (_, Some(h)) => Attach::Nested(h),
                (_, None) => Attach::Parent,
            };
            NestOp::Attach(target)
        }
        _ => {
            let known = m.vdevice.and_then(|(w, s)| (w == v).then_some(s as u32));
            let n = match rng.below(20) {
                0 => 129 + rng.below(200) as usize,
                _ => 1 + rng.below(8) as usize,
            };
            NestOp::Invalidate(v, (0..n).map(|_| inval(rng, known)).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destroy_order_and_one_vdevice() {
        let mut m = NestModel::new();
        let v = m.slot();
        m.apply(&NestOp::AllocViommu, Answer::Ok, v);
        assert_eq!(m.predict(&NestOp::DestroyParent), Answer::Err(libc::EBUSY));
        let op = NestOp::AllocVdevice(v, 8);
        assert_eq!(m.predict(&op), Answer::Ok);
        m.apply(&op, Answer::Ok, 0);
        assert_eq!(
            m.predict(&NestOp::AllocVdevice(v, 9)),
            Answer::Err(libc::EEXIST)
        );
        assert_eq!(
            m.predict(&NestOp::DestroyViommu(v)),
            Answer::Err(libc::EBUSY)
        );
        m.apply(&NestOp::DestroyVdevice, Answer::Ok, 0);
        assert_eq!(m.predict(&NestOp::DestroyViommu(v)), Answer::Ok);
        assert_eq!(m.predict(&NestOp::AllocVeventq(v, 0)), Answer::Err(REFUSED));
    }

    #[test]
    fn stage1_attach_needs_a_vdevice_on_its_viommu() {
        let mut m = NestModel::new();
        let (a, b) = (m.slot(), m.slot());
        m.apply(&NestOp::AllocViommu, Answer::Ok, a);
        m.apply(&NestOp::AllocViommu, Answer::Ok, b);
        let (s1, byp) = (m.slot(), m.slot());
        m.apply(&NestOp::AllocNested(a, SteKind::Stage1), Answer::Ok, s1);
        m.apply(&NestOp::AllocNested(a, SteKind::Bypass), Answer::Ok, byp);
        assert_eq!(
            m.predict(&NestOp::Attach(Attach::Nested(s1))),
            Answer::Err(libc::ENOENT)
        );
        assert_eq!(m.predict(&NestOp::Attach(Attach::Nested(byp))), Answer::Ok);
        m.apply(&NestOp::AllocVdevice(b, 8), Answer::Ok, 0);
        assert_eq!(
            m.predict(&NestOp::Attach(Attach::Nested(s1))),
            Answer::Err(libc::ENOENT),
            "a vDEVICE on another vIOMMU does not count"
        );
        m.apply(&NestOp::DestroyVdevice, Answer::Ok, 0);
        m.apply(&NestOp::AllocVdevice(a, 8), Answer::Ok, 0);
        let op = NestOp::Attach(Attach::Nested(s1));
        assert_eq!(m.predict(&op), Answer::Ok);
        m.apply(&op, Answer::Ok, 0);
        assert_eq!(
            m.predict(&NestOp::DestroyNested(s1)),
            Answer::Err(libc::EBUSY)
        );
    }

    #[test]
    fn invalidation_stops_at_an_unknown_vsid() {
        let mut m = NestModel::new();
        let v = m.slot();
        m.apply(&NestOp::AllocViommu, Answer::Ok, v);
        m.apply(&NestOp::AllocVdevice(v, 8), Answer::Ok, 0);
        let cmds = [Inval::NhAll, Inval::CfgiCd(8, true), Inval::CfgiCdAll(9)];
        assert_eq!(m.predict_invalidate(v, &cmds), Err((libc::EIO, 2)));
        assert_eq!(m.predict_invalidate(v, &cmds[..2]), Ok(()));
        assert_eq!(
            m.predict_invalidate(v, &[Inval::NhAll, Inval::Unforwarded(0x46)]),
            Err((REFUSED, 0))
        );
    }

    #[test]
    fn the_generator_reaches_every_operation() {
        let mut rng = Rng::new(crate::DEFAULT_SEED);
        let mut m = NestModel::new();
        let mut seen = BTreeSet::new();
        for _ in 0..5000 {
            let op = generate(&mut rng, &m);
            let answer = m.predict(&op);
            seen.insert(
                format!("{op:?}")
                    .split(['(', ' '])
                    .next()
                    .unwrap_or("")
                    .to_owned()
                    + if answer == Answer::Ok { "+" } else { "-" },
            );
            let slot = m.slot();
            m.apply(&op, answer, slot);
        }
        for want in [
            "AllocViommu+",
            "DestroyViommu+",
            "DestroyViommu-",
            "AllocVdevice+",
            "AllocVdevice-",
            "DestroyVdevice+",
            "AllocVeventq+",
            "AllocVeventq-",
            "DestroyVeventq+",
            "AllocNested+",
            "AllocNested-",
            "DestroyNested+",
            "DestroyNested-",
            "DestroyParent-",
            "DestroyUnknown-",
            "Attach+",
            "Attach-",
            "Invalidate+",
            "Invalidate-",
        ] {
            assert!(seen.contains(want), "{want} never generated: {seen:?}");
        }
    }
}
