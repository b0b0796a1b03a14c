// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Target `vimsic`: the vIMSIC driven through MSIs, interrupt-file MMIO at any address and
//! size, the indirect registers (`*iselect`/`*ireg` read-modify-writes at both XLENs),
//! `*topei` reads and claims, reset and save/restore (RISC-V AIA 1.0 chapter 3).
//!
//! The reference model keeps, per interrupt file, a pending and an enable bit per identity
//! 1..=N, `eidelivery` and `eithreshold`, written by the rules of AIA 1.0 §3.5 (a
//! `seteipnum` write of an implemented identity sets its bit; others are ignored), §3.8
//! (the WARL choices the crate documents: bit 0 of `eidelivery`, or 0x40000000 on an
//! APLIC-capable file; bits 10:0 of `eithreshold`; identity 0 and those above N read-only
//! zero; odd `eip`/`eie` absent at RV64) and §3.9 (`*topei`). Invariants checked after
//! every operation, for every file:
//!
//! * pending and enable bits, `eidelivery` and `eithreshold` equal the model's;
//! * `*topei` is the minimum pending-and-enabled identity below the threshold (when
//!   nonzero), in both fields, and a claim clears exactly that identity;
//! * the signal the sink saw (edges only: never two raises or two lowers in a row) equals
//!   `eidelivery == 1 && topei != 0`, and equals [`Imsic::line`];
//! * every address that resolves to a file lies in that file's page;
//! * reads of interrupt-file pages return zeros; a save restores into an identical IMSIC.

use std::collections::BTreeMap;

use riscv_imsic::{
    ExternalInterruptSink, FileKind, FileTarget, GeometryConfig, Imsic, ImsicConfig, NumIds,
    WriteOutcome, Xlen,
};

use crate::wire::{Reader, Wire, Writer, decode_ops};

/// Most operations one input runs.
pub const MAX_OPS: usize = 256;

const S_BASE: u64 = 0x2800_0000;
const M_BASE: u64 = 0x2400_0000;
const IDS: [u32; 4] = [63, 127, 255, 2047];

/// The IMSIC an input builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImsicSetup {
    /// Harts, 1..=4.
    pub harts: u8,
    /// Guest index bits, 0..=2.
    pub guest_bits: u8,
    /// GEILEN requested (may exceed what the geometry holds: refused).
    pub geilen: u8,
    /// Identity count selector (63, 127, 255, 2047).
    pub ids_sel: u8,
    /// Machine-level files at 0x2400_0000.
    pub machine: bool,
    /// APLIC-capable `eidelivery` on machine and supervisor files.
    pub aplic: bool,
    /// Hart index bits override: 0 = the smallest that holds `harts`, else 1..=2.
    pub hart_bits: u8,
    /// Group index bits, 0..=1, at bit 24 + `group_shift`.
    pub group_bits: u8,
    /// Added to 24 for the group index position.
    pub group_shift: u8,
}

impl Wire for ImsicSetup {
    fn decode(r: &mut Reader<'_>) -> Self {
        ImsicSetup {
            harts: 1 + r.u8() % 4,
            guest_bits: r.u8() % 3,
            geilen: r.u8() % 5,
            ids_sel: r.u8() % 4,
            machine: r.bool(),
            aplic: r.bool(),
            hart_bits: r.u8() % 3,
            group_bits: r.u8() % 2,
            group_shift: r.u8() % 8,
        }
    }
    fn encode(&self, w: &mut Writer) {
        w.u8(self.harts - 1);
        w.u8(self.guest_bits);
        w.u8(self.geilen);
        w.u8(self.ids_sel);
        w.bool(self.machine);
        w.bool(self.aplic);
        w.u8(self.hart_bits);
        w.u8(self.group_bits);
        w.u8(self.group_shift);
    }
}

impl ImsicSetup {
    fn config(&self) -> Option<ImsicConfig> {
        let mut g = GeometryConfig::supervisor_only(S_BASE, u32::from(self.harts), self.guest_bits);
        if self.machine {
            g.machine_base = Some(M_BASE);
        }
        if self.hart_bits != 0 {
            g.hart_index_bits = self.hart_bits;
        }
        g.group_index_bits = self.group_bits;
        g.group_index_shift = 24 + self.group_shift;
        let ids = NumIds::new(IDS[usize::from(self.ids_sel) % 4]).ok()?;
        let mut c = ImsicConfig::uniform(g, u32::from(self.harts), ids, self.geilen);
        c.aplic_delivery = self.aplic;
        Some(c)
    }
}

/// One operation. `target` selects a file among all files of all harts (modulo their count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImsicOp {
    /// A device MSI of `id` to the file's `seteipnum_le` (or `_be`, byte-swapped).
    Msi {
        /// File selector.
        target: u8,
        /// Identity (may be 0 or above N).
        id: u16,
        /// Through `seteipnum_be`.
        big_endian: bool,
    },
    /// An MMIO write anywhere near the regions.
    MmioWrite {
        /// Offset from the supervisor (or machine) base.
        offset: u32,
        /// From the machine base.
        machine: bool,
        /// Length selector (4, 4, 1, 2, 8, 0).
        len_sel: u8,
        /// Value.
        value: u32,
    },
    /// An MMIO read, as `MmioWrite`.
    MmioRead {
        /// Offset.
        offset: u32,
        /// From the machine base.
        machine: bool,
        /// Length selector.
        len_sel: u8,
    },
    /// `csrrw`/`csrrs`/`csrrc` of `*ireg` through `*iselect`.
    Indirect {
        /// File selector.
        target: u8,
        /// `*iselect` value: 0x60 + `sel` (so some are outside 0x70..=0xff).
        sel: u8,
        /// New value.
        new: u64,
        /// Write mask.
        mask: u64,
        /// RV32 access.
        rv32: bool,
    },
    /// `csrrw rd, *topei, x0`.
    Claim(u8),
    /// A `*topei` write (claim without reading).
    WriteTopei(u8),
    /// Reset every file.
    Reset,
    /// Save, restore into a fresh IMSIC, compare, continue with it.
    SaveRestore,
}

const LENS: [usize; 6] = [4, 4, 1, 2, 8, 0];

impl Wire for ImsicOp {
    fn decode(r: &mut Reader<'_>) -> Self {
        match r.u8() % 8 {
            0 => ImsicOp::Msi {
                target: r.u8(),
                id: r.u16() % 2100,
                big_endian: r.bool(),
            },
            1 => ImsicOp::MmioWrite {
                offset: r.u32() % 0x0400_0000,
                machine: r.bool(),
                len_sel: r.u8() % 6,
                value: r.u32(),
            },
            2 => ImsicOp::MmioRead {
                offset: r.u32() % 0x0400_0000,
                machine: r.bool(),
                len_sel: r.u8() % 6,
            },
            3 => ImsicOp::Indirect {
                target: r.u8(),
                sel: r.u8() % 0xa4,
                new: r.u64(),
                mask: r.u64(),
                rv32: r.bool(),
            },
            4 => ImsicOp::Claim(r.u8()),
            5 => ImsicOp::WriteTopei(r.u8()),
            6 => ImsicOp::Reset,
            _ => ImsicOp::SaveRestore,
        }
    }
    fn encode(&self, w: &mut Writer) {
        match *self {
            ImsicOp::Msi {
                target,
                id,
                big_endian,
            } => {
                w.u8(0);
                w.u8(target);
                w.u16(id);
                w.bool(big_endian);
            }
            ImsicOp::MmioWrite {
                offset,
                machine,
                len_sel,
                value,
            } => {
                w.u8(1);
                w.u32(offset);
                w.bool(machine);
                w.u8(len_sel);
                w.u32(value);
            }
            ImsicOp::MmioRead {
                offset,
                machine,
                len_sel,
            } => {
                w.u8(2);
                w.u32(offset);
                w.bool(machine);
                w.u8(len_sel);
            }
            ImsicOp::Indirect {
                target,
                sel,
                new,
                mask,
                rv32,
            } => {
                w.u8(3);
                w.u8(target);
                w.u8(sel);
                w.u64(new);
                w.u64(mask);
                w.bool(rv32);
            }
            ImsicOp::Claim(t) => {
                w.u8(4);
                w.u8(t);
            }
            ImsicOp::WriteTopei(t) => {
                w.u8(5);
                w.u8(t);
            }
            ImsicOp::Reset => w.u8(6),
            ImsicOp::SaveRestore => w.u8(7),
        }
    }
}

/// An IMSIC and the operations on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImsicInput {
    /// The IMSIC.
    pub setup: ImsicSetup,
    /// The operations.
    pub ops: Vec<ImsicOp>,
}

impl Wire for ImsicInput {
    fn decode(r: &mut Reader<'_>) -> Self {
        ImsicInput {
            setup: ImsicSetup::decode(r),
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

crate::impl_arbitrary!(ImsicInput);

/// The sink: the level per file as edges told it, checking edges alternate.
#[derive(Debug, Default)]
pub struct Lines {
    level: BTreeMap<FileTarget, bool>,
}

impl ExternalInterruptSink for Lines {
    fn raise(&mut self, t: FileTarget) {
        let was = self.level.insert(t, true).unwrap_or(false);
        assert!(!was, "raise of {t:?}, already raised");
    }
    fn lower(&mut self, t: FileTarget) {
        let was = self.level.insert(t, false).unwrap_or(false);
        assert!(was, "lower of {t:?}, not raised");
    }
}

/// `eidelivery` as the model holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Off,
    On,
    Aplic,
}

/// One interrupt file of the model.
#[derive(Debug, Clone)]
struct File {
    n: u32,
    aplic: bool,
    pending: Vec<bool>,
    enabled: Vec<bool>,
    delivery: Delivery,
    threshold: u32,
    /// Identities both pending and enabled, kept in step with the arrays so that `top` is
    /// a lookup, not a scan (the model runs after every operation).
    active: std::collections::BTreeSet<u32>,
    /// The pending and enable bits packed as the file's `eip`/`eie` words, for comparison.
    words: [Vec<u64>; 2],
}

impl File {
    fn refresh(&mut self, id: u32) {
        let i = id as usize;
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        for (k, array) in [&self.pending, &self.enabled].into_iter().enumerate() {
            if let Some(word) = self.words[k].get_mut(w) {
                if array.get(i) == Some(&true) {
                    *word |= bit;
                } else {
                    *word &= !bit;
                }
            }
        }
        if self.pending.get(i) == Some(&true) && self.enabled.get(i) == Some(&true) {
            self.active.insert(id);
        } else {
            self.active.remove(&id);
        }
    }

    fn clear(&mut self, id: u32) {
        if let Some(p) = self.pending.get_mut(id as usize) {
            *p = false;
        }
        self.refresh(id);
    }

    fn new(n: u32, aplic: bool) -> Self {
        File {
            n,
            aplic,
            pending: vec![false; n as usize + 1],
            enabled: vec![false; n as usize + 1],
            // AIA 1.0 §3.8.1: an APLIC-capable file resets to 0x40000000.
            delivery: if aplic {
                Delivery::Aplic
            } else {
                Delivery::Off
            },
            threshold: 0,
            active: std::collections::BTreeSet::new(),
            words: [
                vec![0; (n as usize + 1) / 64],
                vec![0; (n as usize + 1) / 64],
            ],
        }
    }

    /// AIA 1.0 §3.9: the minimum pending-and-enabled identity, if below a nonzero threshold.
    fn top(&self) -> u32 {
        self.active
            .first()
            .copied()
            .filter(|&i| self.threshold == 0 || i < self.threshold)
            .unwrap_or(0)
    }

    fn output(&self) -> bool {
        self.delivery == Delivery::On && self.top() != 0
    }

    fn set(&mut self, id: u32) {
        if (1..=self.n).contains(&id) {
            self.pending[id as usize] = true;
            self.refresh(id);
        }
    }

    /// Bits `first..first + width` of an `eip`/`eie` array as a value.
    fn bits(array: &[bool], first: u32, width: u32) -> u64 {
        (0..width)
            .filter(|b| array.get((first + b) as usize).copied().unwrap_or(false))
            .fold(0, |acc, b| acc | 1 << b)
    }

    fn read(&self, sel: u64, rv32: bool) -> Option<u64> {
        let width = if rv32 { 32 } else { 64 };
        match sel {
            0x70 => Some(match self.delivery {
                Delivery::Off => 0,
                Delivery::On => 1,
                Delivery::Aplic => 0x4000_0000,
            }),
            0x72 => Some(u64::from(self.threshold)),
            0x71 | 0x73..=0x7f => Some(0),
            0x80..=0xff => {
                let k = (sel & 0x3f) as u32;
                if !rv32 && k % 2 == 1 {
                    return None;
                }
                let array = if sel < 0xc0 {
                    &self.pending
                } else {
                    &self.enabled
                };
                Some(Self::bits(array, k * 32, width))
            }
            _ => None,
        }
    }

    fn write(&mut self, sel: u64, value: u64, rv32: bool) {
        let width = if rv32 { 32 } else { 64 };
        match sel {
            0x70 => {
                self.delivery = if self.aplic && value & 0x4000_0000 != 0 {
                    Delivery::Aplic
                } else if value & 1 != 0 {
                    Delivery::On
                } else {
                    Delivery::Off
                }
            }
            0x72 => self.threshold = (value as u32) & 0x7ff,
            0x80..=0xff => {
                let k = (sel & 0x3f) as u32;
                for b in 0..width {
                    let id = k * 32 + b;
                    if (1..=self.n).contains(&id) {
                        let array = if sel < 0xc0 {
                            &mut self.pending
                        } else {
                            &mut self.enabled
                        };
                        array[id as usize] = value & (1 << b) != 0;
                        self.refresh(id);
                    }
                }
            }
            _ => {}
        }
    }
}

struct Run {
    imsic: Imsic<Lines>,
    targets: Vec<FileTarget>,
    files: BTreeMap<FileTarget, File>,
    config: ImsicConfig,
}

impl Run {
    fn target(&self, sel: u8) -> FileTarget {
        self.targets[usize::from(sel) % self.targets.len()]
    }

    fn file(&mut self, t: FileTarget) -> &mut File {
        match self.files.get_mut(&t) {
            Some(f) => f,
            None => panic!("model has no file {t:?}"),
        }
    }

    /// Checks `only` (or every file) against the model, and every file's signal.
    fn check(&self, only: Option<FileTarget>) {
        for (t, f) in &self.files {
            let line = f.output();
            assert_eq!(self.imsic.line(*t).ok(), Some(line), "{t:?} line");
            let sunk = self.imsic.sink().level.get(t).copied().unwrap_or(false);
            assert_eq!(sunk, line, "{t:?} level seen by the sink");
            if only.is_some_and(|o| o != *t) {
                continue;
            }
            let Some(real) = self.imsic.file(*t) else {
                panic!("file {t:?} vanished");
            };
            assert_eq!(real.eip_words(), &f.words[0][..], "{t:?} eip");
            assert_eq!(real.eie_words(), &f.words[1][..], "{t:?} eie");
            if only.is_none() {
                for id in [0, f.n + 1] {
                    assert!(
                        !real.is_pending(id) && !real.is_enabled(id),
                        "{t:?} identity {id}"
                    );
                }
            }
            assert_eq!(
                u64::from(real.eithreshold()),
                u64::from(f.threshold),
                "{t:?} eithreshold"
            );
            let top = f.top();
            assert_eq!(
                self.imsic.topei(*t).ok(),
                Some(top << 16 | top),
                "{t:?} topei"
            );
        }
    }

    fn step(&mut self, op: &ImsicOp) {
        let mut touched = None;
        match *op {
            ImsicOp::Msi {
                target,
                id,
                big_endian,
            } => {
                let t = self.target(target);
                touched = Some(t);
                let page = match self.imsic.file_address(t) {
                    Ok(a) => a,
                    Err(e) => panic!("file {t:?} has no address: {e}"),
                };
                let id = u32::from(id);
                let got = if big_endian {
                    self.imsic.mmio_write(page + 4, &id.to_be_bytes())
                } else {
                    self.imsic.write_msi(page, id)
                };
                let implemented = (1..=self.file(t).n).contains(&id);
                match got {
                    Ok(WriteOutcome::Pending {
                        target, id: got_id, ..
                    }) => {
                        assert!(implemented && target == t && got_id == id, "{got:?}");
                    }
                    Ok(WriteOutcome::Ignored(_)) => assert!(!implemented, "MSI {id} ignored"),
                    Err(e) => panic!("MSI to a file's own page failed: {e}"),
                }
                self.file(t).set(id);
            }
            ImsicOp::MmioWrite {
                offset,
                machine,
                len_sel,
                value,
            } => {
                let base = if machine { M_BASE } else { S_BASE };
                let addr = base + u64::from(offset);
                let len = LENS[usize::from(len_sel) % LENS.len()];
                let bytes = &value.to_le_bytes().repeat(2)[..len];
                let resolved = self.imsic.resolve(addr);
                let got = self.imsic.mmio_write(addr, bytes);
                if let Ok(r) = resolved {
                    let page = self.imsic.file_address(r.target).ok();
                    assert_eq!(
                        page,
                        Some(addr & !0xfff),
                        "{addr:#x} resolves outside its page"
                    );
                    assert_eq!(u64::from(r.offset), addr & 0xfff);
                    touched = Some(r.target);
                    if len == 4 && (r.offset == 0 || r.offset == 4) {
                        let id = if r.offset == 0 {
                            value
                        } else {
                            u32::from_be_bytes(value.to_le_bytes())
                        };
                        assert!(got.is_ok(), "seteipnum write at {addr:#x}: {got:?}");
                        self.file(r.target).set(id);
                    }
                }
                if let Ok(WriteOutcome::Pending { target, id, .. }) = got {
                    assert_eq!(resolved.map(|r| r.target).ok(), Some(target));
                    assert!(
                        self.files
                            .get(&target)
                            .is_some_and(|f| f.pending[id as usize])
                    );
                }
            }
            ImsicOp::MmioRead {
                offset,
                machine,
                len_sel,
            } => {
                let base = if machine { M_BASE } else { S_BASE };
                let len = LENS[usize::from(len_sel) % LENS.len()];
                let mut buf = vec![0xa5u8; len];
                let _ = self.imsic.mmio_read(base + u64::from(offset), &mut buf);
                assert!(
                    buf.iter().all(|b| *b == 0),
                    "IMSIC read returned {buf:02x?}"
                );
            }
            ImsicOp::Indirect {
                target,
                sel,
                new,
                mask,
                rv32,
            } => {
                let t = self.target(target);
                touched = Some(t);
                let iselect = 0x60 + u64::from(sel);
                let xlen = if rv32 { Xlen::Rv32 } else { Xlen::Rv64 };
                let got = self.imsic.rmw_indirect(t, iselect, new, mask, xlen);
                let f = self.file(t);
                let want = f.read(iselect, rv32);
                assert_eq!(
                    got.as_ref().ok().copied(),
                    want,
                    "{t:?} rmw of iselect {iselect:#x}"
                );
                if let Some(old) = want {
                    let m = if rv32 { mask & 0xffff_ffff } else { mask };
                    if m != 0 {
                        f.write(iselect, (old & !m) | (new & m), rv32);
                    }
                }
            }
            ImsicOp::Claim(target) | ImsicOp::WriteTopei(target) => {
                let t = self.target(target);
                touched = Some(t);
                let f = self.file(t);
                let top = f.top();
                if top != 0 {
                    f.clear(top);
                }
                let got = if matches!(op, ImsicOp::Claim(_)) {
                    self.imsic.claim_topei(t).map(|v| v >> 16)
                } else {
                    self.imsic.write_topei(t)
                };
                assert_eq!(got.ok(), Some(top), "{t:?} claimed identity");
            }
            ImsicOp::Reset => {
                self.imsic.reset();
                for f in self.files.values_mut() {
                    *f = File::new(f.n, f.aplic);
                }
            }
            ImsicOp::SaveRestore => {
                let state = self.imsic.save();
                let mut fresh = match Imsic::new(self.config.clone(), Lines::default()) {
                    Ok(i) => i,
                    Err(e) => panic!("rebuilding the IMSIC failed: {e}"),
                };
                if let Err(e) = fresh.restore(&state) {
                    panic!("restore of a live state failed: {e}");
                }
                assert_eq!(fresh.save(), state, "state round trip");
                self.imsic = fresh;
            }
        }
        let all = matches!(op, ImsicOp::Reset | ImsicOp::SaveRestore);
        match touched {
            Some(t) if !all => self.check(Some(t)),
            _ if all => self.check(None),
            _ => self.check(Some(FileTarget::new(usize::MAX, FileKind::Supervisor))),
        }
    }
}

/// Replays one input, panicking on the first broken invariant.
pub fn run(input: &ImsicInput) {
    let Some(config) = input.setup.config() else {
        return;
    };
    let Ok(imsic) = Imsic::new(config.clone(), Lines::default()) else {
        return;
    };
    let targets: Vec<FileTarget> = imsic.targets().collect();
    let mut files = BTreeMap::new();
    for (t, hc) in targets.iter().map(|t| (*t, config.harts[t.hart])) {
        let (ids, aplic) = match t.file {
            FileKind::Machine => (hc.machine_ids, config.aplic_delivery),
            FileKind::Supervisor => (Some(hc.supervisor_ids), config.aplic_delivery),
            FileKind::Guest(_) => (Some(hc.guest_ids), false),
        };
        let Some(ids) = ids else {
            panic!("target {t:?} listed without a file");
        };
        files.insert(t, File::new(ids.get(), aplic));
    }
    assert_eq!(files.len(), targets.len(), "targets repeat");
    let mut run = Run {
        imsic,
        targets,
        files,
        config,
    };
    run.check(None);
    for op in &input.ops {
        run.step(op);
    }
    run.check(None);
}

/// Seeds: Linux's IMSIC driver sequence (delivery on, threshold, enable, MSI, claim).
pub fn seeds() -> Vec<(&'static str, ImsicInput)> {
    let setup = ImsicSetup {
        harts: 2,
        guest_bits: 1,
        geilen: 1,
        ids_sel: 2,
        machine: false,
        aplic: false,
        hart_bits: 0,
        group_bits: 0,
        group_shift: 0,
    };
    let s1 = 2; // hart 1 supervisor (hart 0: S, G1; hart 1: S, G1)
    let linux = vec![
        ImsicOp::Indirect {
            target: s1,
            sel: 0x10,
            new: 1,
            mask: !0,
            rv32: false,
        },
        ImsicOp::Indirect {
            target: s1,
            sel: 0x12,
            new: 0,
            mask: !0,
            rv32: false,
        },
        ImsicOp::Indirect {
            target: s1,
            sel: 0x60,
            new: !0,
            mask: 1 << 33,
            rv32: false,
        },
        ImsicOp::Msi {
            target: s1,
            id: 33,
            big_endian: false,
        },
        ImsicOp::Msi {
            target: s1,
            id: 34,
            big_endian: true,
        },
        ImsicOp::Claim(s1),
        ImsicOp::Claim(s1),
    ];
    let mut rv32 = linux.clone();
    rv32.extend([
        ImsicOp::Indirect {
            target: 1,
            sel: 0x61,
            new: 0xffff_ffff,
            mask: 0xffff_ffff,
            rv32: true,
        },
        ImsicOp::Indirect {
            target: 1,
            sel: 0x21,
            new: 0xffff_ffff,
            mask: 0xffff_ffff,
            rv32: true,
        },
        ImsicOp::Indirect {
            target: 1,
            sel: 0x12,
            new: 40,
            mask: !0,
            rv32: true,
        },
        ImsicOp::Indirect {
            target: 1,
            sel: 0x10,
            new: 1,
            mask: 1,
            rv32: true,
        },
        ImsicOp::WriteTopei(1),
        ImsicOp::SaveRestore,
        ImsicOp::MmioWrite {
            offset: 0x1000,
            machine: false,
            len_sel: 0,
            value: 7,
        },
        ImsicOp::MmioRead {
            offset: 0x1008,
            machine: false,
            len_sel: 0,
        },
        ImsicOp::Reset,
    ]);
    let machine = ImsicSetup {
        machine: true,
        aplic: true,
        harts: 4,
        hart_bits: 1,
        group_bits: 1,
        ids_sel: 3,
        ..setup
    };
    vec![
        ("linux_driver", ImsicInput { setup, ops: linux }),
        (
            "rv32_threshold_guest",
            ImsicInput {
                setup,
                ops: rv32.clone(),
            },
        ),
        (
            "machine_groups_aplic",
            ImsicInput {
                setup: machine,
                ops: rv32,
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
        check_round_trip::<ImsicInput>(4, 300, 500);
    }

    #[test]
    fn seeds_replay_clean() {
        for (name, s) in seeds() {
            assert!(s.setup.config().is_some(), "seed {name}");
            assert_eq!(ImsicInput::from_bytes(&s.to_bytes()), s, "seed {name}");
            run(&s);
        }
    }

    #[test]
    fn random_inputs_replay() {
        let mut rng = crate::wire::XorShift::new(9);
        for _ in 0..300 {
            let len = (rng.next_u64() % 400) as usize;
            run(&ImsicInput::from_bytes(&rng.bytes(len)));
        }
    }
}
