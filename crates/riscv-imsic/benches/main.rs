// Copyright © 2026 The passthrough-msi authors
//
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Benchmarks of the MSI path: a `seteipnum_le` write routed by address, a
//! `*topei` read and the claim, with the sink called on both edges.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use riscv_imsic::{
    ExternalInterruptSink, FileKind, FileTarget, GeometryConfig, Imsic, ImsicConfig, ImsicGeometry,
    InterruptFile, NumIds, Xlen,
};

/// Counts edges, as a VMM that sets a vCPU's SEIP would.
#[derive(Default)]
struct Edges(u64);

impl ExternalInterruptSink for Edges {
    fn raise(&mut self, _: FileTarget) {
        self.0 += 1;
    }
    fn lower(&mut self, _: FileTarget) {
        self.0 += 1;
    }
}

fn geometry() -> GeometryConfig {
    GeometryConfig {
        machine_base: Some(0x2400_0000),
        machine_hart_shift: 12,
        supervisor_base: 0x2800_0000,
        guest_index_bits: 2,
        hart_index_bits: 4,
        group_index_bits: 2,
        group_index_shift: 24,
    }
}

/// 64 harts, 2047 identities per file, all identities enabled and delivery on
/// in the supervisor files.
fn armed() -> Imsic<Edges> {
    let config = ImsicConfig::uniform(geometry(), 64, NumIds::MAX, 3);
    let mut imsic = Imsic::new(config, Edges::default()).unwrap();
    for hart in 0..64 {
        let t = FileTarget::new(hart, FileKind::Supervisor);
        imsic.write_indirect(t, 0x70, 1, Xlen::Rv64).unwrap();
        for k in (0..64).step_by(2) {
            imsic
                .write_indirect(t, 0xC0 + k, u64::MAX, Xlen::Rv64)
                .unwrap();
        }
    }
    imsic
}

fn msi_to_claim(c: &mut Criterion) {
    let mut imsic = armed();
    let target = FileTarget::new(45, FileKind::Supervisor);
    let addr = imsic.file_address(target).unwrap();
    c.bench_function("msi_write_topei_claim/low_id", |b| {
        b.iter(|| {
            imsic.write_msi(black_box(addr), black_box(3)).unwrap();
            let top = imsic.topei(target).unwrap();
            let claimed = imsic.claim_topei(target).unwrap();
            black_box((top, claimed))
        })
    });
    // Identity 2000: the topei scan walks 31 words of the arrays.
    c.bench_function("msi_write_topei_claim/high_id", |b| {
        b.iter(|| {
            imsic.write_msi(black_box(addr), black_box(2000)).unwrap();
            let top = imsic.topei(target).unwrap();
            let claimed = imsic.claim_topei(target).unwrap();
            black_box((top, claimed))
        })
    });
    assert!(imsic.sink().0 > 0);
}

fn pieces(c: &mut Criterion) {
    let geo = ImsicGeometry::new(geometry()).unwrap();
    let addr = geo.file_address(3, 9, FileKind::Guest(2)).unwrap();
    c.bench_function("geometry_decode", |b| {
        b.iter(|| geo.decode(black_box(addr)).unwrap())
    });

    let mut imsic = armed();
    c.bench_function("msi_write_ignored_identity", |b| {
        b.iter(|| imsic.write_msi(black_box(addr), black_box(0)).unwrap())
    });

    let mut file = InterruptFile::new(NumIds::MAX, false);
    file.write_indirect(0x70, 1, Xlen::Rv64).unwrap();
    file.write_indirect(0xFE, u64::MAX, Xlen::Rv64).unwrap();
    c.bench_function("file_seteipnum_claim", |b| {
        b.iter(|| {
            file.seteipnum(black_box(2040));
            black_box(file.claim_topei())
        })
    });

    let mut imsic = armed();
    let target = FileTarget::new(0, FileKind::Supervisor);
    c.bench_function("state_save_restore_64_harts", |b| {
        b.iter(|| {
            let s = imsic.save();
            imsic.restore(black_box(&s)).unwrap();
        })
    });
    black_box(target);
}

criterion_group!(benches, msi_to_claim, pieces);
criterion_main!(benches);
