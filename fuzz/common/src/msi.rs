// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Target `msi_trap`: arbitrary config accesses over an arbitrary MSI capability (PCI 3.0
//! §6.8.1), checked against a byte-level reference model.
//!
//! The model keeps the capability as registers, applies every write byte by byte through
//! the write mask the spec gives (Enable and Multiple Message Enable in Message Control,
//! address bits 31:2, the upper address when 64-bit capable, 16 data bits, the Mask Bits
//! of the capable vectors), clamps Multiple Message Enable to Multiple Message Capable,
//! and derives each vector's route (data with its low MME bits replaced by the vector
//! number, PCI 3.0 §6.8.1.6). The invariants are those of [`crate::msix`]: routes held by
//! the harness's router equal the deliverable vectors whenever no batch is due, batches
//! and deliveries match the model, reads return the model's image, signals have the
//! model's outcome, write-through carries the address only and never depends on data.
//! Write-through is asked under every [`PolicyChoice`], `KernelProgrammedWindow` with any
//! `start`/`last` included (issue 19): `TableAddressWrite` is refused (no table), the
//! kernel-programmed policies program nothing and report `address_matches` as the model's
//! test (`address == doorbell`, or `start <= address <= last`).

use std::collections::BTreeMap;

use msi_trap::caps::PCI_CAP_ID_MSI;
use msi_trap::msi::{MsiCapability, MsiState};
use msi_trap::update::UpdateBatch;
use msi_trap::{MsiMessage, SignalOutcome};

use crate::msix::PolicyChoice;
use crate::wire::{Reader, Wire, Writer, decode_ops};

/// Most operations one input runs.
pub const MAX_OPS: usize = 256;

/// One guest or host action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MsiOp {
    /// Config write at `cap - 2 + rel` of `len` (1..=8) bytes of `value`.
    ConfigWrite {
        /// Offset relative to 2 bytes before the capability, 0..28.
        rel: u8,
        /// Length, 1..=8.
        len: u8,
        /// Little-endian value.
        value: u64,
    },
    /// Config read.
    ConfigRead {
        /// As `ConfigWrite`.
        rel: u8,
        /// Length, 1..=8.
        len: u8,
    },
    /// The host reports the device signalled `vector` (may be out of range).
    Signal(u16),
    /// Take the batch and apply it to the router.
    Commit,
    /// Function reset.
    Reset,
    /// Snapshot, restore into a fresh state, compare; `adopt` continues with it.
    Snapshot {
        /// Continue with the restored state.
        adopt: bool,
    },
    /// Check what write-through sends to the device.
    Program(PolicyChoice),
    /// Linux-style setup: address, data, then Message Control (MME, Enable) in one write.
    Setup {
        /// Message address.
        address: u64,
        /// Message data.
        data: u16,
        /// Multiple Message Enable requested (0..=7, may exceed the capability).
        mme: u8,
        /// MSI Enable.
        enable: bool,
    },
    /// A DWORD write of the Mask Bits register.
    Mask(u32),
}

impl Wire for MsiOp {
    fn decode(r: &mut Reader<'_>) -> Self {
        match r.u8() % 9 {
            0 => MsiOp::ConfigWrite {
                rel: r.u8() % 28,
                len: r.u8() % 8 + 1,
                value: r.u64(),
            },
            1 => MsiOp::ConfigRead {
                rel: r.u8() % 28,
                len: r.u8() % 8 + 1,
            },
            2 => MsiOp::Signal(r.u16()),
            3 => MsiOp::Commit,
            4 => MsiOp::Reset,
            5 => MsiOp::Snapshot { adopt: r.bool() },
            6 => MsiOp::Program(PolicyChoice::decode(r)),
            7 => MsiOp::Setup {
                address: r.u64(),
                data: r.u16(),
                mme: r.u8() % 8,
                enable: r.bool(),
            },
            _ => MsiOp::Mask(r.u32()),
        }
    }

    fn encode(&self, w: &mut Writer) {
        match *self {
            MsiOp::ConfigWrite { rel, len, value } => {
                w.u8(0);
                w.u8(rel);
                w.u8(len - 1);
                w.u64(value);
            }
            MsiOp::ConfigRead { rel, len } => {
                w.u8(1);
                w.u8(rel);
                w.u8(len - 1);
            }
            MsiOp::Signal(v) => {
                w.u8(2);
                w.u16(v);
            }
            MsiOp::Commit => w.u8(3),
            MsiOp::Reset => w.u8(4),
            MsiOp::Snapshot { adopt } => {
                w.u8(5);
                w.bool(adopt);
            }
            MsiOp::Program(p) => {
                w.u8(6);
                p.encode(w);
            }
            MsiOp::Setup {
                address,
                data,
                mme,
                enable,
            } => {
                w.u8(7);
                w.u64(address);
                w.u16(data);
                w.u8(mme);
                w.bool(enable);
            }
            MsiOp::Mask(m) => {
                w.u8(8);
                w.u32(m);
            }
        }
    }
}

/// An MSI capability and a sequence of accesses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsiInput {
    /// Capability offset selector: `0x40 + 4 * (sel % 43)`.
    pub cap_sel: u8,
    /// Message Control as the device reports it (reserved MMC encodings are refused).
    pub control: u16,
    /// The accesses.
    pub ops: Vec<MsiOp>,
}

impl Wire for MsiInput {
    fn decode(r: &mut Reader<'_>) -> Self {
        MsiInput {
            cap_sel: r.u8() % 43,
            control: r.u16(),
            ops: decode_ops(r, MAX_OPS),
        }
    }
    fn encode(&self, w: &mut Writer) {
        w.u8(self.cap_sel);
        w.u16(self.control);
        for op in &self.ops {
            op.encode(w);
        }
    }
}

crate::impl_arbitrary!(MsiInput);

impl MsiInput {
    /// Offset of the capability.
    pub fn cap_offset(&self) -> u8 {
        0x40 + 4 * self.cap_sel
    }
}

/// The reference model.
#[derive(Debug, Clone)]
struct Model {
    offset: u16,
    mmc: u8,
    is64: bool,
    pvm: bool,
    ext: bool,
    enabled: bool,
    mme: u8,
    addr_lo: u32,
    addr_hi: u32,
    data: u16,
    mask: u32,
    pending: u32,
    released: BTreeMap<u16, (u64, u32)>,
}

impl Model {
    fn new(offset: u8, control: u16) -> Self {
        Model {
            offset: u16::from(offset),
            mmc: ((control >> 1) & 7) as u8,
            is64: control & (1 << 7) != 0,
            pvm: control & (1 << 8) != 0,
            ext: control & (1 << 9) != 0,
            enabled: false,
            mme: 0,
            addr_lo: 0,
            addr_hi: 0,
            data: 0,
            mask: 0,
            pending: 0,
            released: BTreeMap::new(),
        }
    }

    /// Capable vectors, 2^MMC.
    fn vectors(&self) -> u16 {
        1 << self.mmc
    }

    /// Structure length (PCI 3.0 §6.8.1, Figure 6-9; PCIe 6.0 §7.7.1 extended data).
    fn len(&self) -> usize {
        match (self.pvm, self.is64) {
            (true, true) => 24,
            (true, false) => 20,
            (false, is64) => (if is64 { 14 } else { 10 }) + if self.ext { 2 } else { 0 },
        }
    }

    fn data_at(&self) -> usize {
        if self.is64 { 12 } else { 8 }
    }

    fn implemented(&self) -> u32 {
        if !self.pvm {
            0
        } else if self.vectors() >= 32 {
            u32::MAX
        } else {
            (1u32 << self.vectors()) - 1
        }
    }

    fn control(&self) -> u16 {
        u16::from(self.enabled)
            | u16::from(self.mmc) << 1
            | u16::from(self.mme) << 4
            | u16::from(self.is64) << 7
            | u16::from(self.pvm) << 8
    }

    fn image(&self) -> Vec<u8> {
        let mut img = vec![0u8; 24];
        img[0] = PCI_CAP_ID_MSI;
        img[2..4].copy_from_slice(&self.control().to_le_bytes());
        img[4..8].copy_from_slice(&self.addr_lo.to_le_bytes());
        if self.is64 {
            img[8..12].copy_from_slice(&self.addr_hi.to_le_bytes());
        }
        let d = self.data_at();
        img[d..d + 2].copy_from_slice(&self.data.to_le_bytes());
        if self.pvm {
            img[d + 4..d + 8].copy_from_slice(&self.mask.to_le_bytes());
            img[d + 8..d + 12].copy_from_slice(&self.pending.to_le_bytes());
        }
        img.truncate(self.len());
        img
    }

    fn write_mask(&self) -> Vec<u8> {
        let mut m = vec![0u8; 24];
        m[2] = 0x71; // Enable (bit 0), Multiple Message Enable (bits 6:4)
        m[4..8].copy_from_slice(&(!3u32).to_le_bytes());
        if self.is64 {
            m[8..12].fill(0xff);
        }
        let d = self.data_at();
        m[d..d + 2].fill(0xff);
        if self.pvm {
            m[d + 4..d + 8].copy_from_slice(&self.implemented().to_le_bytes());
        }
        m.truncate(self.len());
        m
    }

    fn write(&mut self, offset: u16, bytes: &[u8]) {
        let mut img = self.image();
        let mask = self.write_mask();
        let mut touched = false;
        for (i, b) in bytes.iter().enumerate() {
            let a = usize::from(offset) + i;
            let Some(k) = a.checked_sub(usize::from(self.offset)) else {
                continue;
            };
            if k < img.len() {
                img[k] = (img[k] & !mask[k]) | (b & mask[k]);
                touched = true;
            }
        }
        if !touched {
            return;
        }
        let u32_at = |k: usize| u32::from_le_bytes([img[k], img[k + 1], img[k + 2], img[k + 3]]);
        let control = u16::from_le_bytes([img[2], img[3]]);
        self.enabled = control & 1 != 0;
        self.mme = (((control >> 4) & 7) as u8).min(self.mmc);
        self.addr_lo = u32_at(4);
        if self.is64 {
            self.addr_hi = u32_at(8);
        }
        let d = self.data_at();
        self.data = u16::from_le_bytes([img[d], img[d + 1]]);
        if self.pvm {
            self.mask = u32_at(d + 4);
        }
        self.release();
    }

    fn address(&self) -> u64 {
        u64::from(self.addr_hi) << 32 | u64::from(self.addr_lo)
    }

    fn allocated(&self, v: u16) -> bool {
        v < (1 << self.mme)
    }

    fn masked(&self, v: u16) -> bool {
        v < 32 && self.mask & (1 << v) != 0
    }

    fn deliverable(&self, v: u16) -> bool {
        v < self.vectors() && self.enabled && self.allocated(v) && !self.masked(v)
    }

    /// PCI 3.0 §6.8.1.6: the low MME bits of the data carry the vector number.
    fn vector_data(&self, v: u16) -> u32 {
        let low = (1u32 << self.mme) - 1;
        (u32::from(self.data) & !low) | (u32::from(v) & low)
    }

    fn release(&mut self) {
        for v in 0..self.vectors() {
            if v < 32 && self.pending & (1 << v) != 0 && self.deliverable(v) {
                self.pending &= !(1 << v);
                self.released
                    .insert(v, (self.address(), self.vector_data(v)));
            }
        }
    }

    fn signal(&mut self, v: u16) -> Option<SignalOutcome> {
        if v >= self.vectors() {
            return None;
        }
        Some(if !(self.enabled && self.allocated(v)) {
            SignalOutcome::Dropped
        } else if self.masked(v) {
            self.pending |= 1 << v;
            SignalOutcome::Pending
        } else {
            SignalOutcome::Deliver(MsiMessage {
                address: self.address(),
                data: self.vector_data(v),
            })
        })
    }

    fn reset(&mut self) {
        self.enabled = false;
        self.mme = 0;
        self.addr_lo = 0;
        self.addr_hi = 0;
        self.data = 0;
        self.mask = 0;
        self.pending = 0;
        self.released.clear();
    }

    fn expected_routes(&self) -> BTreeMap<u16, (u64, u32)> {
        (0..self.vectors())
            .filter(|&v| self.deliverable(v))
            .map(|v| (v, (self.address(), self.vector_data(v))))
            .collect()
    }
}

struct Run {
    cap: MsiCapability,
    msi: MsiState,
    model: Model,
    routes: BTreeMap<u16, (u64, u32)>,
    last_batch: UpdateBatch,
}

impl Run {
    fn check_routes(&self, when: &str) {
        assert_eq!(self.routes, self.model.expected_routes(), "{when}: routes");
    }

    fn write(&mut self, offset: u16, bytes: &[u8]) {
        self.msi.write_config(offset, bytes);
        self.model.write(offset, bytes);
    }

    fn commit(&mut self) {
        let batch = self.msi.take_updates();
        let mut last = None;
        for u in &batch.updates {
            assert!(
                last < Some(u.index),
                "batch unsorted or repeats {}",
                u.index
            );
            last = Some(u.index);
            let v = u.index;
            assert!(
                v < self.model.vectors(),
                "update of vector {v} beyond 2^MMC"
            );
            assert_eq!(u.is_deliverable(), self.model.deliverable(v), "vector {v}");
            assert_eq!(u.masked, self.model.masked(v), "mask of vector {v}");
            assert_eq!(
                u.enabled,
                self.model.enabled && self.model.allocated(v),
                "vector {v}"
            );
            if u.is_deliverable() {
                let want = (self.model.address(), self.model.vector_data(v));
                assert_eq!((u.address, u.data), want, "message of vector {v}");
                self.routes.insert(v, (u.address, u.data));
            } else {
                self.routes.remove(&v);
            }
        }
        let got: BTreeMap<u16, (u64, u32)> = batch
            .deliveries
            .iter()
            .map(|d| (d.index, (d.address, d.data)))
            .collect();
        assert_eq!(got.len(), batch.deliveries.len(), "a delivery repeats");
        assert_eq!(got, self.model.released, "deliveries");
        self.model.released.clear();
        self.check_routes("after a commit");
        self.last_batch = batch;
    }

    fn check_programs(&self, choice: PolicyChoice) {
        let policy = choice.policy();
        let all = self.msi.device_program(policy);
        let for_batch = self.msi.device_program_for(policy, &self.last_batch);
        if choice == PolicyChoice::TableWrite {
            assert!(
                all.is_err() && for_batch.is_err(),
                "MSI has no table to write"
            );
            return;
        }
        let (Ok(all), Ok(for_batch)) = (all, for_batch) else {
            panic!("device program refused under {choice:?}");
        };
        for p in all.iter().chain(&for_batch) {
            let v = p.vector();
            assert!(
                self.model.deliverable(v),
                "program for undeliverable vector {v}"
            );
            let addr = self.model.address();
            if choice.check_program(p, addr).is_some() {
                panic!("MSI table write: {p:?}");
            }
        }
        let n = (0..self.model.vectors())
            .filter(|&v| self.model.deliverable(v))
            .count();
        assert_eq!(all.len(), n, "device_program misses deliverable vectors");
        let mut other = self.msi.clone();
        let d = self.model.offset + self.model.data_at() as u16;
        other.write_config(d, &(!self.model.data).to_le_bytes());
        assert_eq!(
            other.device_program(policy).ok(),
            Some(all),
            "device program depends on the guest's data"
        );
    }

    fn step(&mut self, op: &MsiOp) {
        let base = self.model.offset;
        match *op {
            MsiOp::ConfigWrite { rel, len, value } => {
                let bytes: Vec<u8> = value.to_le_bytes()[..usize::from(len)].to_vec();
                self.write(base + u16::from(rel) - 2, &bytes);
            }
            MsiOp::ConfigRead { rel, len } => {
                let off = base + u16::from(rel) - 2;
                let mut buf = vec![0xa5u8; usize::from(len)];
                self.msi.read_config(off, &mut buf);
                let img = self.model.image();
                for (i, b) in buf.iter().enumerate() {
                    let a = usize::from(off) + i;
                    let want = a
                        .checked_sub(usize::from(base))
                        .and_then(|k| img.get(k).copied())
                        .unwrap_or(0xa5);
                    assert_eq!(*b, want, "config byte {a:#x} (image {img:02x?})");
                }
            }
            MsiOp::Signal(v) => {
                let v = v % (self.model.vectors() + 2);
                assert_eq!(self.msi.signal(v).ok(), self.model.signal(v), "signal {v}");
            }
            MsiOp::Commit => self.commit(),
            MsiOp::Reset => {
                self.msi.reset();
                self.model.reset();
            }
            MsiOp::Snapshot { adopt } => {
                let snap = self.msi.snapshot();
                let mut fresh = MsiState::new(self.cap);
                if let Err(e) = fresh.restore(&snap) {
                    panic!("restore of a live snapshot failed: {e}");
                }
                assert_eq!(fresh.snapshot(), snap, "snapshot round trip");
                if adopt {
                    self.msi = fresh;
                    assert!(self.msi.updates_due());
                }
            }
            MsiOp::Program(choice) => self.check_programs(choice),
            MsiOp::Setup {
                address,
                data,
                mme,
                enable,
            } => {
                self.write(base + 4, &(address as u32).to_le_bytes());
                if self.model.is64 {
                    self.write(base + 8, &((address >> 32) as u32).to_le_bytes());
                }
                let d = base + self.model.data_at() as u16;
                self.write(d, &data.to_le_bytes());
                let ctrl = (mme << 4) | u8::from(enable);
                self.write(base + 2, &[ctrl]);
            }
            MsiOp::Mask(m) => {
                let at = base + self.model.data_at() as u16 + 4;
                self.write(at, &m.to_le_bytes());
            }
        }
        assert_eq!(self.msi.enabled(), self.model.enabled, "MSI Enable");
        assert_eq!(self.msi.allocated_vectors(), 1 << self.model.mme, "MME");
        assert_eq!(self.msi.address(), self.model.address(), "address");
        assert_eq!(self.msi.data(), self.model.data, "data");
        for v in 0..self.model.vectors() {
            let pending = v < 32 && self.model.pending & (1 << v) != 0;
            assert_eq!(self.msi.is_pending(v), pending, "Pending bit {v}");
            assert_eq!(
                self.msi.is_deliverable(v),
                self.model.deliverable(v),
                "vector {v}"
            );
        }
        if !self.msi.updates_due() {
            self.check_routes("no batch due");
        }
    }
}

/// Replays one input, panicking on the first broken invariant.
pub fn run(input: &MsiInput) {
    let Ok(cap) = MsiCapability::from_registers(input.cap_offset(), 0, input.control) else {
        assert!(
            (input.control >> 1) & 7 >= 6,
            "capability with MMC {} refused",
            (input.control >> 1) & 7
        );
        return;
    };
    let model = Model::new(input.cap_offset(), input.control);
    assert_eq!(cap.vectors(), model.vectors(), "capable vectors");
    assert_eq!(cap.len(), model.len(), "capability length");
    let mut run = Run {
        cap,
        msi: MsiState::new(cap),
        model,
        routes: BTreeMap::new(),
        last_batch: UpdateBatch::default(),
    };
    for op in &input.ops {
        run.step(op);
    }
    run.commit();
}

/// Seeds: Linux's MSI bring-up on 32- and 64-bit, masking and multi-message capabilities.
pub fn seeds() -> Vec<(&'static str, MsiInput)> {
    let bringup = |mme| {
        vec![
            MsiOp::Setup {
                address: 0x0800_0040,
                data: 0x20,
                mme,
                enable: true,
            },
            MsiOp::Commit,
        ]
    };
    let mut masked = bringup(2);
    masked.extend([
        MsiOp::Mask(0b10),
        MsiOp::Commit,
        MsiOp::Signal(1),
        MsiOp::ConfigRead { rel: 22, len: 4 },
        MsiOp::Mask(0),
        MsiOp::Commit,
        MsiOp::Program(PolicyChoice::PerVector),
        MsiOp::Snapshot { adopt: true },
        MsiOp::Reset,
    ]);
    // RISC-V (issue 19): the guest's vIMSIC page in the host's software MSI window, asked
    // under windows that hold it, do not (inverted, or above it), and every address; then
    // an address outside every window.
    let window = |start, last| MsiOp::Program(PolicyChoice::KernelWindow { start, last });
    let mut imsic = vec![
        MsiOp::Setup {
            address: 0x2800_1000,
            data: 0x20,
            mme: 2,
            enable: true,
        },
        MsiOp::Commit,
        window(0x2800_0000, 0x2800_3fff),
        window(0x2800_3fff, 0x2800_0000),
        window(0x2800_2000, 0x2800_2fff),
        window(0, u64::MAX),
        MsiOp::Mask(0b10),
        MsiOp::Commit,
        window(0x2800_1000, 0x2800_1000),
    ];
    imsic.extend([
        MsiOp::Setup {
            address: 0x0800_0040,
            data: 0x20,
            mme: 2,
            enable: true,
        },
        MsiOp::Commit,
        window(0x2800_0000, 0x2800_3fff),
    ]);
    vec![
        (
            "msi32_single",
            MsiInput {
                cap_sel: 4,
                control: 0,
                ops: bringup(0),
            },
        ),
        (
            "msi64_pvm_4vec",
            MsiInput {
                cap_sel: 4,
                control: 0x0184,
                ops: masked,
            },
        ),
        (
            "msi64_32vec_mme_clamp",
            MsiInput {
                cap_sel: 42,
                control: 0x018a,
                ops: bringup(7),
            },
        ),
        (
            "msi32_extdata",
            MsiInput {
                cap_sel: 10,
                control: 0x0200,
                ops: vec![
                    MsiOp::ConfigWrite {
                        rel: 10,
                        len: 4,
                        value: 0xffff_ffff,
                    },
                    MsiOp::ConfigRead { rel: 8, len: 8 },
                ],
            },
        ),
        (
            "msi64_pvm_imsic_window",
            MsiInput {
                cap_sel: 4,
                control: 0x0184,
                ops: imsic,
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::check_round_trip;
    use msi_trap::write_through::DeviceProgram;

    #[test]
    fn wire_round_trips() {
        check_round_trip::<MsiInput>(2, 300, 400);
    }

    #[test]
    fn seeds_replay_clean() {
        for (name, s) in seeds() {
            assert_eq!(MsiInput::from_bytes(&s.to_bytes()), s, "seed {name}");
            run(&s);
        }
    }

    #[test]
    fn imsic_seed_reaches_both_window_answers() {
        // The seed's `Program(KernelWindow)` checks see `address_matches` true and false.
        let (_, s) = seeds()
            .into_iter()
            .find(|(n, _)| *n == "msi64_pvm_imsic_window")
            .unwrap();
        let cap = MsiCapability::from_registers(s.cap_offset(), 0, s.control).unwrap();
        let mut m = MsiState::new(cap);
        let mut answers = Vec::new();
        for op in &s.ops {
            let base = u16::from(s.cap_offset());
            match *op {
                MsiOp::Setup {
                    address,
                    data,
                    mme,
                    enable,
                } => {
                    m.write_config(base + 4, &(address as u32).to_le_bytes());
                    m.write_config(base + 8, &((address >> 32) as u32).to_le_bytes());
                    m.write_config(base + 12, &data.to_le_bytes());
                    m.write_config(base + 2, &[(mme << 4) | u8::from(enable)]);
                }
                MsiOp::Program(choice) => {
                    for p in m.device_program(choice.policy()).unwrap() {
                        let DeviceProgram::KernelProgrammed {
                            address_matches, ..
                        } = p
                        else {
                            panic!("{p:?}");
                        };
                        answers.push(address_matches);
                    }
                }
                _ => {}
            }
        }
        assert!(
            answers.contains(&true) && answers.contains(&false),
            "{answers:?}"
        );
    }

    #[test]
    fn random_inputs_replay() {
        let mut rng = crate::wire::XorShift::new(11);
        for _ in 0..500 {
            let len = (rng.next_u64() % 300) as usize;
            run(&MsiInput::from_bytes(&rng.bytes(len)));
        }
    }
}
