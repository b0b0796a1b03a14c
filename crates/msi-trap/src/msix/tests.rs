// Copyright 2025 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Unit tests of the MSI-X emulation against PCI 3.0 §6.8.2 / PCIe Base 6.0 §7.7.2.

use super::layout::{BarInfo, MsixLayout, RelocationPolicy};
use super::*;
use crate::write_through::TableAddressWrite;

const CAP: u16 = 0x70;

fn bar(i: u8) -> BarIndex {
    BarIndex::new(i).unwrap()
}

/// `n` vectors, table at BAR3 + 0 and PBA at BAR3 + 0x8000 (BAR3: 64 KiB, 64-bit).
fn state_with(n: u16, policy: RelocationPolicy) -> MsixState {
    let cap = MsixCapability::from_registers(CAP as u8, 0x90, n - 1, 3, 0x8003).unwrap();
    let mut bars = [BarInfo::ABSENT; 6];
    bars[0] = BarInfo::memory64(0x2_0000);
    bars[3] = BarInfo::memory64(0x1_0000);
    let layout = MsixLayout::compute(&bars, cap.real(), 0x1000, policy).unwrap();
    MsixState::new(cap, layout).unwrap()
}

fn state(n: u16) -> MsixState {
    state_with(n, RelocationPolicy::Never)
}

fn cfg32(m: &MsixState, off: u16) -> u32 {
    let mut b = [0u8; 4];
    m.read_config(CAP + off, &mut b);
    u32::from_le_bytes(b)
}

fn set_control(m: &mut MsixState, enable: bool, function_mask: bool) {
    let hi = (u8::from(enable) << 7) | (u8::from(function_mask) << 6);
    assert_eq!(m.write_config(CAP + 3, &[hi]), Coverage::Inside);
}

fn wr(m: &mut MsixState, offset: u64, value: u32) {
    assert_eq!(
        m.write_table(offset, &value.to_le_bytes()),
        MmioOutcome::Done
    );
}

fn rd(m: &MsixState, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    assert_eq!(m.read_table(offset, &mut b), MmioOutcome::Done);
    u32::from_le_bytes(b)
}

/// Programs entry `v` with (addr, data) and the given mask, as four dword writes.
fn program(m: &mut MsixState, v: u16, addr: u64, data: u32, masked: bool) {
    let base = u64::from(v) * 16;
    wr(m, base, addr as u32);
    wr(m, base + 4, (addr >> 32) as u32);
    wr(m, base + 8, data);
    wr(m, base + 12, u32::from(masked));
}

fn pba_word(m: &MsixState, k: u64) -> u64 {
    let mut b = [0u8; 8];
    assert_eq!(m.read_pba(k * 8, &mut b), MmioOutcome::Done);
    u64::from_le_bytes(b)
}

#[test]
fn reset_state() {
    let m = state(8);
    assert!(!m.enabled() && !m.function_masked());
    for v in 0..8 {
        assert_eq!(m.entry(v), Some(MsixEntry::RESET));
        assert_eq!(rd(&m, u64::from(v) * 16 + 12), 1, "masked at reset");
        assert_eq!(rd(&m, u64::from(v) * 16), 0);
        assert!(!m.is_pending(v));
    }
    assert_eq!(pba_word(&m, 0), 0);
    assert_eq!(m.entry(8), None);
    assert_eq!(m.vector(8), None);
}

#[test]
fn capability_reads() {
    let m = state(2048);
    assert_eq!(
        cfg32(&m, 0),
        0x07ff_9011,
        "ID 0x11, next 0x90, Table Size 2047"
    );
    assert_eq!(cfg32(&m, 4), 3);
    assert_eq!(cfg32(&m, 8), 0x8003);
    let mut b = [0xee; 4];
    assert_eq!(m.read_config(CAP + 12, &mut b), Coverage::Outside);
    assert_eq!(b, [0xee; 4]);
    assert_eq!(m.read_config(CAP + 10, &mut b), Coverage::Partial);
    assert_eq!(b, [0, 0, 0xee, 0xee]);
    let mut b = [0xee; 4];
    assert_eq!(m.read_config(CAP - 1, &mut b), Coverage::Partial);
    assert_eq!(b, [0xee, 0x11, 0x90, 0xff]);
}

#[test]
fn capability_reflects_relocated_layout() {
    let m = state_with(16, RelocationPolicy::Always);
    // BAR0 (slots 0-1) and BAR3 (slots 3-4) are 64-bit: free slots 2 and 5, not
    // consecutive: new 32-bit BAR2, table at 0, PBA at 0x1000.
    assert_eq!(cfg32(&m, 4), 2);
    assert_eq!(cfg32(&m, 8), 0x1002);
}

#[test]
fn read_only_fields_stay_read_only() {
    let mut m = state(10);
    let before: Vec<u32> = (0..3).map(|k| cfg32(&m, k * 4)).collect();
    assert_eq!(m.write_config(CAP, &[0xff; 4]), Coverage::Inside);
    assert_eq!(m.write_config(CAP + 4, &[0xff; 4]), Coverage::Inside);
    assert_eq!(m.write_config(CAP + 8, &[0xff; 4]), Coverage::Inside);
    assert!(m.enabled() && m.function_masked());
    assert_eq!(
        cfg32(&m, 0),
        before[0] | 0xc000_0000,
        "only bits 15:14 changed"
    );
    assert_eq!(cfg32(&m, 4), before[1]);
    assert_eq!(cfg32(&m, 8), before[2]);
    // Byte writes at every offset, any value: RO stays RO.
    for off in 0..12 {
        m.write_config(CAP + off, &[0]);
    }
    assert_eq!(cfg32(&m, 0), before[0]);
    assert!(!m.enabled() && !m.function_masked());
}

#[test]
fn odd_config_accesses() {
    let mut m = state(4);
    // A 2-byte write straddling Next and Message Control low byte: nothing writable.
    assert_eq!(m.write_config(CAP + 1, &[0xff, 0xff]), Coverage::Inside);
    assert!(!m.enabled());
    // A 4-byte write starting 2 bytes before the cap: the cap's ID/Next are RO.
    assert_eq!(m.write_config(CAP - 2, &[0xff; 4]), Coverage::Partial);
    // A 4-byte write at CAP + 2 covers Message Control and half of Table Offset/BIR.
    assert_eq!(
        m.write_config(CAP + 2, &[0, 0x80, 0xff, 0xff]),
        Coverage::Inside
    );
    assert!(m.enabled());
    assert_eq!(cfg32(&m, 4), 3);
    assert_eq!(m.write_config(0xfff0, &[0xff; 4]), Coverage::Outside);
    assert_eq!(m.write_config(CAP, &[]), Coverage::Outside);
}

#[test]
fn table_dword_and_qword_access() {
    let mut m = state(4);
    wr(&mut m, 0x10, 0xfee0_0003);
    assert_eq!(rd(&m, 0x10), 0xfee0_0000, "address bits 1:0 read 0");
    wr(&mut m, 0x14, 0x1);
    wr(&mut m, 0x18, 0xdead_beef);
    wr(&mut m, 0x1c, 0xffff_fffe);
    assert_eq!(
        rd(&m, 0x1c),
        0,
        "vector control: reserved bits read 0, mask cleared"
    );
    let mut q = [0u8; 8];
    assert_eq!(m.read_table(0x10, &mut q), MmioOutcome::Done);
    assert_eq!(u64::from_le_bytes(q), 0x1_fee0_0000);
    assert_eq!(m.read_table(0x18, &mut q), MmioOutcome::Done);
    assert_eq!(u64::from_le_bytes(q), 0xdead_beef);
    // QWORD write of data + vector control.
    assert_eq!(
        m.write_table(0x28, &(1u64 << 32 | 0x55).to_le_bytes()),
        MmioOutcome::Done
    );
    assert_eq!(m.entry(2).unwrap().data, 0x55);
    assert!(m.entry(2).unwrap().masked());
    assert_eq!(
        m.write_table(0x20, &0x2_0000_1004u64.to_le_bytes()),
        MmioOutcome::Done
    );
    assert_eq!(m.entry(2).unwrap().address(), 0x2_0000_1004);
}

#[test]
fn odd_table_accesses_are_defined() {
    let mut m = state(4);
    program(&mut m, 1, 0x1000, 7, false);
    let snapshot = m.snapshot();
    let table_len = 4 * 16;
    let shapes: &[(u64, usize)] = &[
        (0x10, 1),
        (0x10, 2),
        (0x10, 3),
        (0x11, 4),
        (0x12, 4),
        (0x14, 8),
        (0x10, 5),
        (0x10, 16),
        (0x10, 0),
        (table_len, 4),
        (table_len - 4, 8),
        (u64::MAX - 3, 4),
        (u64::MAX, 8),
    ];
    for &(offset, len) in shapes {
        let mut buf = vec![0u8; len];
        assert_eq!(
            m.read_table(offset, &mut buf),
            MmioOutcome::Unsupported,
            "read {len} at {offset:#x}"
        );
        assert!(buf.iter().all(|b| *b == 0xff), "all-ones");
        assert_eq!(
            m.write_table(offset, &vec![0u8; len]),
            MmioOutcome::Unsupported
        );
        let mut buf = vec![0u8; len];
        assert_eq!(m.read_pba(offset, &mut buf), MmioOutcome::Unsupported);
    }
    assert_eq!(m.snapshot(), snapshot, "ignored writes changed nothing");
}

#[test]
fn pba_is_div_ceil_qwords() {
    for n in [1u16, 63, 64, 65, 127, 128, 129, 2047, 2048] {
        let mut m = state(n);
        let words = u64::from(n).div_ceil(64);
        let mut q = [0u8; 8];
        for k in 0..words {
            assert_eq!(m.read_pba(k * 8, &mut q), MmioOutcome::Done, "n={n} k={k}");
            let mut d = [0u8; 4];
            assert_eq!(m.read_pba(k * 8 + 4, &mut d), MmioOutcome::Done);
        }
        assert_eq!(
            m.read_pba(words * 8, &mut q),
            MmioOutcome::Unsupported,
            "n={n}: no QWORD past div_ceil(n, 64)"
        );
        // The last vector's pending bit lands in the last QWORD.
        set_control(&mut m, true, false);
        assert_eq!(m.signal(n - 1), Ok(SignalOutcome::Pending));
        let last = pba_word(&m, words - 1);
        assert_eq!(last, 1u64 << ((n - 1) % 64), "n={n}");
        let mut d = [0u8; 4];
        m.read_pba((words - 1) * 8 + u64::from((n - 1) % 64 / 32) * 4, &mut d);
        assert_eq!(u32::from_le_bytes(d), 1u32 << ((n - 1) % 32));
        // Writes to the PBA are ignored.
        assert_eq!(m.write_pba((words - 1) * 8, &[0u8; 8]), MmioOutcome::Done);
        assert!(m.is_pending(n - 1));
    }
}

#[test]
fn masked_vector_goes_pending_and_unmask_releases_once() {
    let mut m = state(4);
    set_control(&mut m, true, false);
    program(&mut m, 2, 0x0800_0040, 0x22, true);
    m.take_updates();
    assert_eq!(m.signal(2), Ok(SignalOutcome::Pending));
    assert_eq!(m.signal(2), Ok(SignalOutcome::Pending), "coalesced");
    assert_eq!(pba_word(&m, 0), 0b100);
    assert!(!m.updates_due());
    wr(&mut m, 0x2c, 0); // unmask
    assert_eq!(pba_word(&m, 0), 0, "bit cleared at unmask");
    assert!(m.updates_due());
    let b = m.take_updates();
    assert_eq!(
        b.deliveries,
        vec![PendingDelivery {
            index: 2,
            address: 0x0800_0040,
            data: 0x22
        }]
    );
    assert_eq!(b.updates.len(), 1);
    assert!(b.updates[0].is_deliverable());
    assert!(m.take_updates().is_empty(), "delivered once");
    assert_eq!(
        m.signal(2),
        Ok(SignalOutcome::Deliver(MsiMessage {
            address: 0x0800_0040,
            data: 0x22
        }))
    );
    assert_eq!(
        m.signal(4),
        Err(MsixError::VectorOutOfRange {
            vector: 4,
            vectors: 4
        })
    );
}

#[test]
fn function_mask_semantics() {
    let mut m = state(4);
    set_control(&mut m, true, false);
    program(&mut m, 0, 0x1000, 1, false);
    program(&mut m, 1, 0x1000, 2, true);
    m.take_updates();
    set_control(&mut m, true, true);
    assert!(m.updates_due(), "function mask removes vector 0's route");
    let b = m.take_updates();
    assert_eq!(b.updates.len(), 1, "vector 1 was masked already: unchanged");
    assert!(b.updates[0].masked && b.updates[0].index == 0);
    // Vector control still reads the vector's own mask (Function Mask does not change it).
    assert_eq!(rd(&m, 0xc), 0);
    assert_eq!(m.signal(0), Ok(SignalOutcome::Pending));
    assert_eq!(m.signal(1), Ok(SignalOutcome::Pending));
    // Unmasking vector 0's entry under Function Mask releases nothing.
    wr(&mut m, 0xc, 0);
    assert!(m.is_pending(0));
    set_control(&mut m, true, false);
    let b = m.take_updates();
    assert_eq!(b.deliveries.len(), 1, "only vector 0 is deliverable");
    assert_eq!(b.deliveries[0].index, 0);
    assert!(m.is_pending(1), "vector 1 still masked by its own bit");
    wr(&mut m, 0x1c, 0);
    assert_eq!(m.take_updates().deliveries[0].index, 1);
}

#[test]
fn enable_disable_ordering() {
    let mut m = state(2);
    program(&mut m, 0, 0x1000, 1, false);
    assert!(!m.updates_due(), "disabled: nothing deliverable");
    assert_eq!(m.signal(0), Ok(SignalOutcome::Dropped));
    assert!(!m.is_pending(0), "a disabled function does not use MSI-X");
    set_control(&mut m, true, false);
    assert!(m.updates_due());
    let b = m.take_updates();
    assert_eq!(b.updates.len(), 2);
    assert!(b.updates[0].is_deliverable() && !b.updates[1].is_deliverable());
    set_control(&mut m, false, false);
    assert!(m.updates_due());
    let b = m.take_updates();
    assert!(b.updates.iter().all(|u| !u.enabled));
    // Pending bits set under Function Mask survive a disable and release on re-enable.
    set_control(&mut m, true, true);
    m.signal(0).unwrap();
    set_control(&mut m, false, false);
    assert!(m.is_pending(0));
    set_control(&mut m, true, false);
    assert_eq!(m.take_updates().deliveries.len(), 1);
}

#[test]
fn full_table_rewrite_under_function_mask_is_one_batch() {
    let mut m = state(2048);
    set_control(&mut m, true, true);
    m.take_updates();
    for v in 0..2048u16 {
        program(&mut m, v, 0x0800_0040, u32::from(v), false);
        assert!(
            !m.updates_due(),
            "vector {v}: nothing due under Function Mask"
        );
    }
    set_control(&mut m, true, false);
    assert!(m.updates_due());
    let b = m.take_updates();
    assert_eq!(b.updates.len(), 2048);
    assert!(b.updates.iter().all(|u| u.is_deliverable()));
    assert!(
        b.updates
            .iter()
            .enumerate()
            .all(|(i, u)| usize::from(u.index) == i && u.data == i as u32)
    );
    assert!(!m.updates_due());
    assert!(m.take_updates().is_empty(), "exactly one batch");
}

#[test]
fn due_rules_for_table_writes() {
    let mut m = state(2);
    set_control(&mut m, true, false);
    m.take_updates();
    // Masked entry: address/data changes are not due.
    wr(&mut m, 0, 0x1000);
    wr(&mut m, 8, 5);
    assert!(!m.updates_due());
    assert!(m.has_updates());
    // Unmask: due; the batch carries the final values once.
    wr(&mut m, 0xc, 0);
    assert!(m.updates_due());
    let b = m.take_updates();
    assert_eq!(
        b.updates,
        vec![VectorUpdate {
            index: 0,
            address: 0x1000,
            data: 5,
            masked: false,
            enabled: true
        }]
    );
    // Data change of a live vector (undefined by the spec): applied and due at once.
    wr(&mut m, 8, 6);
    assert!(m.updates_due());
    assert_eq!(m.take_updates().updates[0].data, 6);
    // Rewriting the same value is not a change.
    wr(&mut m, 8, 6);
    assert!(!m.updates_due());
    assert!(m.take_updates().is_empty());
}

#[test]
fn pending_implies_not_deliverable() {
    let mut m = state(3);
    set_control(&mut m, true, true);
    for v in 0..3 {
        program(&mut m, v, 0x1000, 0, v == 1);
        m.signal(v).unwrap();
    }
    set_control(&mut m, true, false);
    for v in 0..3 {
        assert!(!(m.is_pending(v) && m.is_deliverable(v)), "vector {v}");
    }
    assert!(m.is_pending(1));
}

#[test]
fn bar_dispatch_with_relocation() {
    let mut m = state_with(4, RelocationPolicy::Always);
    let new_bar = bar(2);
    let mut b = [0u8; 4];
    // Guest table in the new BAR.
    assert_eq!(
        m.write_bar(new_bar, 0x10, &0x1000u32.to_le_bytes()),
        BarAccess::Handled
    );
    assert_eq!(m.entry(1).unwrap().address_lo, 0x1000);
    assert_eq!(m.read_bar(new_bar, 0x10, &mut b), BarAccess::Handled);
    assert_eq!(u32::from_le_bytes(b), 0x1000);
    // Hidden real table: reads zero, writes ignored.
    let before = m.snapshot();
    assert_eq!(m.write_bar(bar(3), 0x0, &[0xff; 4]), BarAccess::Handled);
    assert_eq!(m.write_bar(bar(3), 0x8000, &[0xff; 8]), BarAccess::Handled);
    assert_eq!(m.read_bar(bar(3), 0x0, &mut b), BarAccess::Handled);
    assert_eq!(b, [0; 4]);
    assert_eq!(m.snapshot(), before);
    // Device registers are forwarded.
    assert_eq!(
        m.read_bar(bar(3), 0x100, &mut b),
        BarAccess::Forward(MsixRegion {
            bar: bar(3),
            offset: 0x100
        })
    );
    // Unsupported shape on the table: all-ones.
    let mut two = [0u8; 2];
    assert_eq!(m.read_bar(new_bar, 0x10, &mut two), BarAccess::Handled);
    assert_eq!(two, [0xff; 2]);
    // Padding of the new BAR: zero.
    assert_eq!(m.read_bar(new_bar, 0x800, &mut b), BarAccess::Handled);
    assert_eq!(b, [0; 4]);
}

#[test]
fn device_program_uses_real_table_and_no_data() {
    let mut m = state_with(4, RelocationPolicy::Always);
    set_control(&mut m, true, false);
    program(&mut m, 1, 0x1_0800_0040, 0xdead, false);
    program(&mut m, 2, 0x0800_0040, 0xbeef, true);
    let batch = m.take_updates();
    let p = m.device_program_for(DoorbellPolicy::TableAddressWrite, &batch);
    assert_eq!(
        p,
        vec![DeviceProgram::WriteTableAddress(TableAddressWrite {
            vector: 1,
            at: MsixRegion {
                bar: bar(3),
                offset: 0x10
            },
            lo: 0x0800_0040,
            hi: 1
        })],
        "real BAR3 entry, not the guest's relocated one; masked vector 2 left out"
    );
    assert_eq!(m.device_program(DoorbellPolicy::TableAddressWrite), p);
    let k = m.device_program(DoorbellPolicy::KernelProgrammed {
        doorbell_iova: 0x1_0800_0040,
    });
    assert_eq!(
        k,
        vec![DeviceProgram::KernelProgrammed {
            vector: 1,
            guest_address: 0x1_0800_0040,
            address_matches: true
        }]
    );
    let i = m.device_program(DoorbellPolicy::PerVectorIova);
    assert_eq!(
        i,
        vec![DeviceProgram::SetIova {
            vector: 1,
            iova: 0x1_0800_0040
        }]
    );
}

#[test]
fn reset_tears_down_routes() {
    let mut m = state(4);
    set_control(&mut m, true, false);
    program(&mut m, 0, 0x1000, 1, false);
    program(&mut m, 1, 0x1000, 1, true);
    m.signal(1).unwrap();
    m.take_updates();
    m.reset();
    assert!(m.updates_due());
    assert!(!m.is_pending(1));
    let b = m.take_updates();
    assert!(b.updates.iter().all(|u| !u.is_deliverable()));
    assert_eq!(m.entry(0), Some(MsixEntry::RESET));
    assert_eq!(cfg32(&m, 0) >> 30, 0);
}

#[test]
fn snapshot_round_trip() {
    let mut m = state(100);
    set_control(&mut m, true, false);
    for v in 0..100 {
        program(
            &mut m,
            v,
            0x0800_0040 + u64::from(v),
            u32::from(v) * 3,
            v % 3 == 0,
        );
    }
    m.signal(3).unwrap();
    m.signal(99).unwrap();
    wr(&mut m, 3 * 16 + 12, 0); // releases 3, not yet taken
    let snap = m.snapshot();
    assert_eq!(snap.deliveries.len(), 1);
    let json = serde_json::to_string(&snap).unwrap();
    let back: MsixSnapshot = serde_json::from_str(&json).unwrap();
    let mut n = state(100);
    n.restore(&back).unwrap();
    assert_eq!(n.snapshot(), snap);
    assert!(n.is_pending(99));
    let b = n.take_updates();
    assert_eq!(b.updates.len(), 100, "restore reports every vector");
    assert_eq!(b.deliveries.len(), 1);
}

#[test]
fn snapshot_validation() {
    let mut m = state(100);
    set_control(&mut m, true, false);
    let good = m.snapshot();
    let check = |m: &mut MsixState, snap: MsixSnapshot| {
        let before = m.snapshot();
        assert!(m.restore(&snap).is_err(), "{snap:?}");
        assert_eq!(m.snapshot(), before, "a failed restore changes nothing");
    };
    check(
        &mut m,
        MsixSnapshot {
            vectors: 99,
            ..good.clone()
        },
    );
    check(
        &mut m,
        MsixSnapshot {
            table_offset_bir: 4,
            ..good.clone()
        },
    );
    check(
        &mut m,
        MsixSnapshot {
            entries: vec![MsixEntry::RESET; 99],
            ..good.clone()
        },
    );
    check(
        &mut m,
        MsixSnapshot {
            pba: vec![0; 3],
            ..good.clone()
        },
    );
    check(
        &mut m,
        MsixSnapshot {
            pba: vec![0, 1 << 36],
            ..good.clone()
        },
    );
    let mut bad = good.clone();
    bad.entries[5].vector_control = 3;
    check(&mut m, bad);
    let mut bad = good.clone();
    bad.entries[5].address_lo = 2;
    check(&mut m, bad);
    let mut bad = good.clone();
    bad.entries[5].vector_control = 0;
    bad.pba[0] = 1 << 5; // pending while deliverable
    check(&mut m, bad);
    let mut bad = good.clone();
    bad.deliveries = vec![
        PendingDelivery {
            index: 1,
            address: 0,
            data: 0,
        };
        2
    ];
    check(&mut m, bad);
    let mut bad = good.clone();
    bad.deliveries = vec![PendingDelivery {
        index: 100,
        address: 0,
        data: 0,
    }];
    check(&mut m, bad);
    m.restore(&good).unwrap();
}

#[test]
fn layout_must_match_capability() {
    let cap = MsixCapability::from_registers(0x70, 0, 9, 3, 0x8003).unwrap();
    let other = MsixCapability::from_registers(0x70, 0, 10, 3, 0x8003).unwrap();
    let mut bars = [BarInfo::ABSENT; 6];
    bars[3] = BarInfo::memory64(0x1_0000);
    let layout = MsixLayout::compute(&bars, other.real(), 0x1000, RelocationPolicy::Never).unwrap();
    assert_eq!(
        MsixState::new(cap, layout).err(),
        Some(MsixError::LayoutMismatch {
            cap: 10,
            layout: 11
        })
    );
}

/// Issue 15: the fused trapped-write commit gives, access by access, exactly the batches of
/// `write_table` followed by `take_updates_into` when due, and leaves the same state: every
/// semantic (per-vector masks, Function Mask, Enable, pending release, one batch) is kept.
#[test]
fn write_and_commit_matches_write_then_take() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for n in [1u16, 3, 64, 65, 130] {
        let mut a = state(n);
        let mut b = state(n);
        let (mut ba, mut bb) = (UpdateBatch::default(), UpdateBatch::default());
        let mut fused = 0;
        for _ in 0..4000 {
            let r = next();
            let v = (r >> 8) % u64::from(n);
            let field = (r >> 20) % 4;
            let value = match (r >> 24) % 4 {
                0 => 0,
                1 => 1,
                2 => 0x0800_0040,
                _ => (r >> 32) as u32,
            }
            .to_le_bytes();
            match r % 16 {
                0 => {
                    let (en, fm) = ((r >> 40) & 1 != 0, (r >> 41) & 1 != 0);
                    set_control(&mut a, en, fm);
                    set_control(&mut b, en, fm);
                    if a.updates_due() {
                        a.take_updates_into(&mut ba);
                        b.take_updates_into(&mut bb);
                        assert_eq!(ba, bb);
                    }
                }
                1 => {
                    let _ = a.signal(v as u16);
                    let _ = b.signal(v as u16);
                }
                2 => {
                    // QWORD and odd shapes go the slow way in both.
                    let q = r.to_le_bytes();
                    let off = v * 16 + 8 * ((r >> 50) & 1);
                    a.write_table(off, &q);
                    if a.updates_due() {
                        a.take_updates_into(&mut ba);
                    } else {
                        ba.clear();
                    }
                    let (_, taken) = b.write_table_commit(off, &q, &mut bb);
                    if !taken {
                        bb.clear();
                    }
                    assert_eq!(ba, bb);
                }
                _ => {
                    let off = v * 16 + field * 4;
                    a.write_table(off, &value);
                    let due = a.updates_due();
                    if due {
                        a.take_updates_into(&mut ba);
                    }
                    let (_, taken) = b.write_table_commit(off, &value, &mut bb);
                    assert_eq!(due, taken, "write at {off:#x}");
                    if due {
                        assert_eq!(ba, bb, "write at {off:#x}");
                        fused += 1;
                    }
                }
            }
            assert_eq!(a.snapshot(), b.snapshot());
            assert_eq!(a.updates_due(), b.updates_due());
            assert_eq!(a.has_updates(), b.has_updates());
        }
        // The rest of what is pending comes out the same way too.
        a.take_updates_into(&mut ba);
        b.take_updates_into(&mut bb);
        assert_eq!(ba, bb);
        assert!(fused > 0, "{n} vectors: the commit path was exercised");
    }
}
