// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The host-side cost of a stateful run: generating 2000 operations and predicting each
//! answer with the model (what the test adds to every kernel call).

use criterion::{Criterion, criterion_group, criterion_main};
use kernel_fuzz::{Answer, DEFAULT_SEED, IoasModel, IoasOp, Rng, SW_MSI, generate};

fn run_model(ops: u32) -> u64 {
    let mut rng = Rng::new(DEFAULT_SEED);
    let mut a = IoasModel::new();
    a.attach(vec![SW_MSI], 0x1000);
    let b = IoasModel::new();
    let mut ok = 0;
    for _ in 0..ops {
        match generate(&mut rng, &a, &b) {
            IoasOp::Map { iova, len, .. } if a.predict_map(iova, len) == Answer::Ok => {
                a.map(iova, len);
                ok += 1;
            }
            IoasOp::Unmap { iova, len, .. } => {
                ok += u64::from(a.unmap(iova, len) != Answer::Err(libc::ENOENT));
            }
            _ => {}
        }
    }
    ok + a.unmap_all()
}

fn model(c: &mut Criterion) {
    c.bench_function("generate_and_predict_2000_ops", |b| {
        b.iter(|| run_model(std::hint::black_box(2000)))
    });
}

criterion_group!(benches, model);
criterion_main!(benches);
