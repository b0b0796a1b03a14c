// Copyright 2025 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Property tests against the PCI 3.0 / PCIe MSI and MSI-X rules, driven only through the
//! public API (the same invariants a fuzz target checks).

use proptest::prelude::*;

use msi_trap::caps::{CapabilityList, PCI_CONFIG_SPACE_SIZE, PCI_STATUS_CAP_LIST};
use msi_trap::msi::{MsiCapability, MsiState};
use msi_trap::msix::cap::MsixCapability;
use msi_trap::msix::layout::{BarIndex, BarInfo, MsixLayout, RelocationPolicy, pba_len};
use msi_trap::msix::{MmioOutcome, MsixState};
use msi_trap::update::{UpdateBatch, VectorUpdate};
use msi_trap::write_through::{DeviceProgram, DoorbellPolicy};
use msi_trap::{Coverage, SignalOutcome};

const CAP: u16 = 0x70;

fn msix(n: u16, policy: RelocationPolicy) -> MsixState {
    // Table at BAR0 + 0, PBA at BAR0 + 0x8000; BAR0 64 KiB, 64-bit.
    let cap = MsixCapability::from_registers(CAP as u8, 0x90, n - 1, 0, 0x8000).unwrap();
    let mut bars = [BarInfo::ABSENT; 6];
    bars[0] = BarInfo::memory64(0x1_0000);
    bars[2] = BarInfo::memory32(0x1000);
    let layout = MsixLayout::compute(&bars, cap.real(), 0x1000, policy).unwrap();
    MsixState::new(cap, layout).unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    Config {
        offset: u16,
        bytes: Vec<u8>,
    },
    TableWrite {
        offset: u64,
        len: usize,
        value: u64,
    },
    TableRead {
        offset: u64,
        len: usize,
    },
    PbaWrite {
        offset: u64,
        len: usize,
    },
    BarWrite {
        bar: u8,
        offset: u64,
        len: usize,
        value: u64,
    },
    Signal(u16),
    Take,
    Reset,
}

fn access_len() -> impl Strategy<Value = usize> {
    prop_oneof![8 => Just(4usize), 4 => Just(8usize), 1 => 0usize..=9]
}

fn op(n: u16) -> impl Strategy<Value = Op> {
    let table_len = u64::from(n) * 16;
    prop_oneof![
        3 => (CAP - 4..CAP + 16, prop::collection::vec(any::<u8>(), 0..=5))
            .prop_map(|(offset, bytes)| Op::Config { offset, bytes }),
        // Mostly well-formed table writes, biased to Vector Control and the data dword.
        12 => (0..n, 0u64..4, any::<u64>(), prop::bool::weighted(0.2)).prop_map(
            move |(v, field, value, qword)| {
                let offset = u64::from(v) * 16 + field * 4;
                if qword {
                    Op::TableWrite { offset: offset & !7, len: 8, value }
                } else {
                    let value = if field == 3 { value & 1 } else { value };
                    Op::TableWrite { offset, len: 4, value }
                }
            }
        ),
        2 => (0..table_len + 32, access_len(), any::<u64>())
            .prop_map(|(offset, len, value)| Op::TableWrite { offset, len, value }),
        1 => (0..table_len + 32, access_len()).prop_map(|(offset, len)| Op::TableRead { offset, len }),
        1 => (0u64..300, access_len()).prop_map(|(offset, len)| Op::PbaWrite { offset, len }),
        1 => (0u8..6, 0u64..0x1_1000, access_len(), any::<u64>())
            .prop_map(|(bar, offset, len, value)| Op::BarWrite { bar, offset, len, value }),
        4 => (0..n + 2).prop_map(Op::Signal),
        2 => Just(Op::Take),
        1 => Just(Op::Reset),
    ]
}

fn vector_counts() -> impl Strategy<Value = u16> {
    prop_oneof![Just(1u16), Just(2), Just(5), Just(64), Just(65), Just(130)]
}

fn cap_image(m: &MsixState) -> [u8; 12] {
    let mut b = [0u8; 12];
    m.read_config(CAP, &mut b);
    b
}

/// Model of what the router has been told, and of pending/released vectors.
struct Model {
    reported: Vec<VectorUpdate>,
    pending: Vec<bool>,
    released: Vec<bool>,
}

impl Model {
    fn new(m: &MsixState) -> Self {
        let n = m.vectors();
        Model {
            reported: (0..n).map(|v| m.vector(v).unwrap()).collect(),
            pending: vec![false; n.into()],
            released: vec![false; n.into()],
        }
    }

    /// Checks a batch against the state and the model, then applies it.
    fn apply(&mut self, m: &MsixState, batch: &UpdateBatch) -> Result<(), TestCaseError> {
        let mut last = None;
        for u in &batch.updates {
            prop_assert!(last < Some(u.index), "updates sorted, each vector once");
            last = Some(u.index);
            prop_assert_eq!(Some(*u), m.vector(u.index), "update is the current state");
            prop_assert_ne!(
                self.reported[usize::from(u.index)],
                *u,
                "only changed vectors"
            );
            self.reported[usize::from(u.index)] = *u;
        }
        for v in 0..m.vectors() {
            // Nothing lost: after a commit the router's view equals the state, so a route
            // exists iff the vector is deliverable (a masked vector never has one).
            prop_assert_eq!(Some(self.reported[usize::from(v)]), m.vector(v));
            prop_assert_eq!(
                self.reported[usize::from(v)].is_deliverable(),
                m.is_deliverable(v)
            );
        }
        let mut last = None;
        for d in &batch.deliveries {
            prop_assert!(last < Some(d.index));
            last = Some(d.index);
            prop_assert!(
                std::mem::take(&mut self.released[usize::from(d.index)]),
                "delivery of vector {} that was never released",
                d.index
            );
        }
        prop_assert!(
            self.released.iter().all(|r| !r),
            "released but not delivered"
        );
        Ok(())
    }
}

fn run(m: &mut MsixState, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    let n = m.vectors();
    let ro_before = cap_image(m);
    let before: Vec<(bool, Option<VectorUpdate>)> =
        (0..n).map(|v| (m.is_deliverable(v), m.vector(v))).collect();
    match op {
        Op::Config { offset, bytes } => {
            m.write_config(*offset, bytes);
        }
        Op::TableWrite { offset, len, value } => {
            let bytes = value.to_le_bytes();
            let data: Vec<u8> = bytes.iter().copied().cycle().take(*len).collect();
            let outcome = m.write_table(*offset, &data);
            let good = (*len == 4 && offset % 4 == 0 || *len == 8 && offset % 8 == 0)
                && offset + *len as u64 <= u64::from(n) * 16;
            prop_assert_eq!(outcome == MmioOutcome::Done, good);
        }
        Op::TableRead { offset, len } => {
            let mut buf = vec![0u8; *len];
            if m.read_table(*offset, &mut buf) == MmioOutcome::Unsupported {
                prop_assert!(buf.iter().all(|b| *b == 0xff));
            }
        }
        Op::PbaWrite { offset, len } => {
            let snap = m.snapshot();
            m.write_pba(*offset, &vec![0xff; *len]);
            prop_assert_eq!(m.snapshot(), snap, "PBA is read-only");
        }
        Op::BarWrite {
            bar,
            offset,
            len,
            value,
        } => {
            let bytes = value.to_le_bytes();
            let data: Vec<u8> = bytes.iter().copied().cycle().take(*len).collect();
            let bar = BarIndex::new(*bar).unwrap();
            m.write_bar(bar, *offset, &data);
        }
        Op::Signal(v) => {
            let outcome = m.signal(*v);
            if *v >= n {
                prop_assert!(outcome.is_err());
            } else {
                let (deliverable, state) = before[usize::from(*v)];
                let state = state.unwrap();
                match outcome.unwrap() {
                    SignalOutcome::Deliver(msg) => {
                        prop_assert!(deliverable);
                        prop_assert_eq!((msg.address, msg.data), (state.address, state.data));
                    }
                    SignalOutcome::Pending => {
                        prop_assert!(state.enabled && state.masked);
                        prop_assert!(m.is_pending(*v));
                        model.pending[usize::from(*v)] = true;
                    }
                    SignalOutcome::Dropped => prop_assert!(!state.enabled),
                }
            }
        }
        Op::Take => {
            let batch = m.take_updates();
            model.apply(m, &batch)?;
            prop_assert!(!m.updates_due());
            prop_assert!(m.take_updates().is_empty(), "a commit takes everything");
        }
        Op::Reset => {
            m.reset();
            model.pending.fill(false);
            model.released.fill(false);
            prop_assert!(m.queued_deliveries().is_empty());
        }
    }
    // Read-only capability bytes never change: only bits 15:14 of Message Control.
    let ro_after = cap_image(m);
    for (k, (a, b)) in ro_before.iter().zip(ro_after.iter()).enumerate() {
        let writable = if k == 3 { 0xc0 } else { 0 };
        prop_assert_eq!(a & !writable, b & !writable, "cap byte {}", k);
    }
    for v in 0..n {
        let i = usize::from(v);
        prop_assert!(
            !(m.is_pending(v) && m.is_deliverable(v)),
            "vector {} pending and deliverable",
            v
        );
        if model.pending[i] && !m.is_pending(v) {
            model.pending[i] = false;
            model.released[i] = true;
            // Released exactly when it became deliverable.
            prop_assert!(m.is_deliverable(v));
        }
        prop_assert_eq!(model.pending[i], m.is_pending(v));
        // Batching: a vector whose deliverability changed since the last commit makes the
        // batch due.
        if m.is_deliverable(v) != model.reported[i].is_deliverable() {
            prop_assert!(m.updates_due(), "vector {} changed deliverability", v);
        }
    }
    // Device-bound output only for deliverable vectors.
    for p in m.device_program(DoorbellPolicy::PerVectorIova) {
        prop_assert!(m.is_deliverable(p.vector()));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary access sequences keep every MSI-X invariant (masking, PBA, batching, RO).
    #[test]
    fn msix_invariants(
        (n, relocate, ops) in vector_counts().prop_flat_map(|n| {
            (Just(n), any::<bool>(), prop::collection::vec(op(n), 1..120))
        })
    ) {
        let policy = if relocate { RelocationPolicy::Always } else { RelocationPolicy::Never };
        let mut m = msix(n, policy);
        let mut model = Model::new(&m);
        for op in &ops {
            run(&mut m, &mut model, op)?;
        }
        let batch = m.take_updates();
        model.apply(&m, &batch)?;
        // Snapshot round trip through serde.
        let json = serde_json::to_string(&m.snapshot()).unwrap();
        let mut restored = msix(n, policy);
        restored.restore(&serde_json::from_str(&json).unwrap()).unwrap();
        prop_assert_eq!(restored.snapshot(), m.snapshot());
    }

    /// Write-through never carries guest data: the same access sequence with every data
    /// dword replaced (by a bijection fixing 0, the reset value, so equal values stay equal)
    /// yields identical device-bound output under all three policies, at every step.
    #[test]
    fn device_program_ignores_guest_data(
        (n, relocate, ops) in vector_counts().prop_flat_map(|n| {
            (Just(n), any::<bool>(), prop::collection::vec(op(n), 1..120))
        }),
        key in 3u32..,
    ) {
        let policy = if relocate { RelocationPolicy::Always } else { RelocationPolicy::Never };
        let mut a = msix(n, policy);
        let mut b = msix(n, policy);
        let policies = [
            DoorbellPolicy::KernelProgrammed { doorbell_iova: 0x800_0040 },
            DoorbellPolicy::PerVectorIova,
            DoorbellPolicy::TableAddressWrite,
        ];
        for op in &ops {
            let scrambled = match op {
                // The data dword of an entry: offset % 16 == 8, DWORD or low half of QWORD.
                Op::TableWrite { offset, len: len @ (4 | 8), value } if offset % 16 == 8 => {
                    let data = (*value as u32).wrapping_mul(key | 1);
                    Op::TableWrite {
                        offset: *offset,
                        len: *len,
                        value: (*value & !0xffff_ffff) | u64::from(data),
                    }
                }
                other => other.clone(),
            };
            let apply = |m: &mut MsixState, op: &Op| -> Option<UpdateBatch> {
                match op {
                    Op::TableWrite { offset, len, value } => {
                        let bytes = value.to_le_bytes();
                        let data: Vec<u8> = bytes.iter().copied().cycle().take(*len).collect();
                        m.write_table(*offset, &data);
                    }
                    Op::Config { offset, bytes } => { m.write_config(*offset, bytes); }
                    Op::Signal(v) => { let _ = m.signal(*v); }
                    Op::Take => return Some(m.take_updates()),
                    Op::Reset => m.reset(),
                    Op::TableRead { .. } | Op::PbaWrite { .. } | Op::BarWrite { .. } => {}
                }
                None
            };
            let ba = apply(&mut a, op);
            let bb = apply(&mut b, &scrambled);
            prop_assert_eq!(a.updates_due(), b.updates_due());
            for policy in policies {
                prop_assert_eq!(a.device_program(policy), b.device_program(policy));
                if let (Some(ba), Some(bb)) = (&ba, &bb) {
                    let pa: Vec<DeviceProgram> = a.device_program_for(policy, ba);
                    let pb: Vec<DeviceProgram> = b.device_program_for(policy, bb);
                    prop_assert_eq!(pa, pb);
                }
            }
            if let (Some(ba), Some(bb)) = (ba, bb) {
                // Batches differ in data only.
                let strip = |batch: UpdateBatch| -> Vec<(u16, u64, bool, bool)> {
                    batch.updates.iter().map(|u| (u.index, u.address, u.masked, u.enabled)).collect()
                };
                prop_assert_eq!(strip(ba), strip(bb));
            }
        }
    }

    /// PBA size is div_ceil(n, 64) QWORDs for every table size; the last vector's bit is
    /// in the last QWORD.
    #[test]
    fn pba_size_for_all_table_sizes(n in 1u16..=2048) {
        let mut m = msix(n, RelocationPolicy::Never);
        let len = pba_len(n);
        prop_assert_eq!(len, u64::from(n).div_ceil(64) * 8);
        let mut q = [0u8; 8];
        prop_assert_eq!(m.read_pba(len - 8, &mut q), MmioOutcome::Done);
        prop_assert_eq!(m.read_pba(len, &mut q), MmioOutcome::Unsupported);
        prop_assert_eq!(m.write_table(u64::from(n) * 16 - 4, &[0; 4]), MmioOutcome::Done);
        prop_assert_eq!(m.write_table(u64::from(n) * 16, &[0; 4]), MmioOutcome::Unsupported);
        m.write_config(CAP + 3, &[0xc0]);
        prop_assert_eq!(m.signal(n - 1), Ok(SignalOutcome::Pending));
        m.read_pba(len - 8, &mut q);
        prop_assert_eq!(u64::from_le_bytes(q), 1u64 << ((n - 1) % 64));
        let mut c = [0u8; 2];
        m.read_config(CAP + 2, &mut c);
        prop_assert_eq!(u16::from_le_bytes(c) & 0x7ff, n - 1);
    }

    /// Arbitrary config images: the parser never panics, and what it accepts is sound.
    #[test]
    fn capability_parser_is_total(
        mut config in prop::collection::vec(any::<u8>(), PCI_CONFIG_SPACE_SIZE),
        chain in prop::collection::vec((0x10u8..0x40, any::<u8>()), 0..12),
        extended in any::<bool>(),
    ) {
        config[6] |= PCI_STATUS_CAP_LIST as u8;
        config[0x0e] &= 0x81;
        // Thread a random chain through the image so walks get long.
        let mut at = 0x34usize;
        for (slot, id) in chain {
            let next = usize::from(slot) * 4;
            config[at] = next as u8;
            config[next] = id;
            at = next + 1;
        }
        if extended {
            config.resize(4096, 0);
        }
        match CapabilityList::parse(&config) {
            Ok(list) => {
                let caps = list.standard();
                prop_assert!(caps.len() <= 48);
                for (i, c) in caps.iter().enumerate() {
                    prop_assert!(c.offset >= 0x40 && c.offset % 4 == 0);
                    prop_assert!(usize::from(c.offset) + usize::from(c.len) <= 256);
                    for d in &caps[..i] {
                        let (a0, a1) = (usize::from(c.offset), usize::from(c.offset) + usize::from(c.len));
                        let (b0, b1) = (usize::from(d.offset), usize::from(d.offset) + usize::from(d.len));
                        prop_assert!(a1 <= b0 || b1 <= a0, "overlap {:?} {:?}", c, d);
                    }
                }
                prop_assert!(list.extended().len() <= 960);
                let lenient = CapabilityList::parse_lenient(&config).unwrap();
                prop_assert_eq!(lenient.list, list);
                prop_assert!(lenient.standard_error.is_none() && lenient.extended_error.is_none());
            }
            Err(_) => {
                let lenient = CapabilityList::parse_lenient(&config).unwrap();
                prop_assert!(lenient.standard_error.is_some() || lenient.extended_error.is_some());
            }
        }
    }

    /// MSI: arbitrary config writes keep RO bits, MME <= MMC, the per-vector data rule and
    /// pending => not deliverable.
    #[test]
    fn msi_invariants(
        control in any::<u16>(),
        mmc in 0u16..=5,
        ops in prop::collection::vec(
            prop_oneof![
                4 => (0x4cu16..0x6c, prop::collection::vec(any::<u8>(), 1..=4)).prop_map(Some),
                1 => Just(None),
            ],
            1..80,
        ),
        signals in prop::collection::vec(0u16..33, 0..20),
    ) {
        let control = (control & !0x000e) | (mmc << 1);
        let cap = MsiCapability::from_registers(0x50, 0x70, control).unwrap();
        let mut m = MsiState::new(cap);
        let mut ro = [0u8; 4];
        m.read_config(0x50, &mut ro);
        let mut signals = signals.into_iter();
        for op in ops {
            match op {
                Some((offset, bytes)) => {
                    let c = m.write_config(offset, &bytes);
                    let end = u64::from(offset) + bytes.len() as u64;
                    let inside = u64::from(offset) >= 0x50 && end <= 0x50 + cap.len() as u64;
                    prop_assert_eq!(c == Coverage::Inside, inside);
                }
                None => {
                    if let Some(v) = signals.next() {
                        let r = m.signal(v);
                        prop_assert_eq!(r.is_err(), v >= cap.vectors());
                    }
                }
            }
            let mut now = [0u8; 4];
            m.read_config(0x50, &mut now);
            prop_assert_eq!(&now[..2], &ro[..2]);
            let ctrl = u16::from_le_bytes([now[2], now[3]]);
            let ro_ctrl = u16::from_le_bytes([ro[2], ro[3]]);
            prop_assert_eq!(ctrl & !0x71, ro_ctrl & !0x71, "RO Message Control bits");
            prop_assert_eq!(ctrl & 0x0200, 0, "Extended Message Data Capable hidden");
            let mme = (ctrl >> 4) & 7;
            prop_assert!(mme <= u16::from(cap.multiple_message_capable()));
            prop_assert_eq!(m.allocated_vectors(), 1 << mme);
            for v in 0..cap.vectors() {
                prop_assert!(!(m.is_pending(v) && m.is_deliverable(v)));
                if m.is_deliverable(v) {
                    let low = (1u32 << mme) - 1;
                    let want = (u32::from(m.data()) & !low) | u32::from(v);
                    prop_assert_eq!(m.vector(v).unwrap().data, want);
                    prop_assert!(v < m.allocated_vectors());
                }
            }
            if m.updates_due() || m.has_updates() {
                let batch = m.take_updates();
                for u in &batch.updates {
                    prop_assert_eq!(Some(*u), m.vector(u.index));
                }
            }
        }
    }
}
