// Copyright 2025 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Trap-path costs: one table dword write through to its vector update, and a full
//! 2048-entry table rewrite with one commit.
//!
//! `issue15/*`: the four cases of issue 15, each access followed by the VMM's per-access
//! commit (`updates_due`, then `take_updates_into` and a router stub applying the batch:
//! one route store per update and one routing-table push per non-empty batch). The same
//! cases run on cloud-hypervisor's `MsixConfig` with an equivalent stub in a throwaway
//! benchmark outside the repository (docs/benchmarks.md).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

use msi_trap::caps::CapabilityList;
use msi_trap::msix::MsixState;
use msi_trap::msix::cap::MsixCapability;
use msi_trap::msix::layout::{BarInfo, MsixLayout, RelocationPolicy};
use msi_trap::update::UpdateBatch;
use msi_trap::write_through::DoorbellPolicy;

const CAP: u16 = 0x70;

fn msix(n: u16) -> MsixState {
    let cap = MsixCapability::from_registers(CAP as u8, 0, n - 1, 0, 0x8000).unwrap();
    let mut bars = [BarInfo::ABSENT; 6];
    bars[0] = BarInfo::memory64(0x1_0000);
    let layout = MsixLayout::compute(&bars, cap.real(), 0x1000, RelocationPolicy::Never).unwrap();
    MsixState::new(cap, layout).unwrap()
}

fn live(n: u16) -> MsixState {
    let mut m = msix(n);
    m.write_config(CAP + 3, &[0x80]);
    for v in 0..u64::from(n) {
        m.write_table(v * 16, &0x0800_0040u32.to_le_bytes());
        m.write_table(v * 16 + 12, &0u32.to_le_bytes());
    }
    m.take_updates();
    m
}

fn bench_dword(c: &mut Criterion) {
    let mut m = live(2048);
    let mut data = 0u32;
    c.bench_function("msix_table_dword_write", |b| {
        b.iter(|| {
            data = data.wrapping_add(1);
            m.write_table(black_box(0x408), black_box(&data.to_le_bytes()))
        })
    });

    let mut m = live(2048);
    let mut batch = UpdateBatch::default();
    c.bench_function("msix_table_dword_write_commit", |b| {
        b.iter(|| {
            data = data.wrapping_add(1);
            m.write_table(black_box(0x408), black_box(&data.to_le_bytes()));
            m.take_updates_into(&mut batch);
            assert_eq!(batch.updates.len(), 1);
            black_box(&batch);
        })
    });
}

fn bench_full_table(c: &mut Criterion) {
    let mut m = msix(2048);
    let mut batch = UpdateBatch::default();
    let mut round = 0u32;
    c.bench_function("msix_full_table_rewrite_2048_commit", |b| {
        b.iter(|| {
            round = round.wrapping_add(1);
            m.write_config(CAP + 3, &[0xc0]); // Enable + Function Mask
            for v in 0..2048u64 {
                let base = v * 16;
                m.write_table(base, &0x0800_0040u32.to_le_bytes());
                m.write_table(base + 4, &0u32.to_le_bytes());
                m.write_table(base + 8, &(v as u32 ^ round).to_le_bytes());
                m.write_table(base + 12, &0u32.to_le_bytes());
            }
            m.write_config(CAP + 3, &[0x80]); // clear Function Mask: due
            m.take_updates_into(&mut batch);
            assert_eq!(batch.updates.len(), 2048);
            black_box(&batch);
        })
    });

    let m = live(2048);
    c.bench_function("msix_device_program_2048", |b| {
        b.iter(|| black_box(m.device_program(DoorbellPolicy::TableAddressWrite)))
    });
}

fn bench_caps(c: &mut Criterion) {
    let mut config = vec![0u8; 4096];
    config[0x06] = 0x10;
    config[0x34] = 0x40;
    for at in (0x40..0x100).step_by(4) {
        config[at] = 0x09;
        config[at + 1] = if at == 0xfc { 0 } else { (at + 4) as u8 };
    }
    c.bench_function("caps_parse_48_standard", |b| {
        b.iter(|| CapabilityList::parse(black_box(&config)).map(|l| l.standard().len()))
    });
}

/// One installed route of the router stub (what the peer benchmark's stub stores too).
#[derive(Clone, Copy, Default)]
struct Route {
    address: u64,
    data: u32,
    masked: bool,
}

/// The router stub: a route table and a count of routing-table pushes.
struct Router {
    routes: Vec<Route>,
    pushes: u64,
}

impl Router {
    fn new(n: u16) -> Self {
        Router {
            routes: vec![Route::default(); usize::from(n)],
            pushes: 0,
        }
    }

    fn apply(&mut self, batch: &UpdateBatch) {
        for u in &batch.updates {
            if let Some(r) = self.routes.get_mut(usize::from(u.index)) {
                *r = Route {
                    address: u.address,
                    data: u.data,
                    masked: u.masked,
                };
            }
        }
        if !batch.updates.is_empty() {
            self.pushes += 1;
        }
    }
}

/// A trapped table write and the VMM's commit when due, through the fused
/// `write_table_commit` (before issue 15 the bench, built against the old crate, called
/// `write_table`, `updates_due` and `take_updates_into`: the same work for the VMM).
#[inline]
fn trapped_write(m: &mut MsixState, r: &mut Router, batch: &mut UpdateBatch, off: u64, v: u32) {
    if m.write_table_commit(off, &v.to_le_bytes(), batch).1 {
        r.apply(batch);
    }
}

fn bench_issue15(c: &mut Criterion) {
    let mut m = live(2048);
    let mut r = Router::new(2048);
    let mut batch = UpdateBatch::default();
    let mut data = 0u32;
    c.bench_function("issue15/live_data_write_route_update", |b| {
        b.iter(|| {
            data = data.wrapping_add(1);
            trapped_write(
                &mut m,
                &mut r,
                &mut batch,
                black_box(0x408),
                black_box(data),
            );
        })
    });
    // (criterion's --list mode builds the closures without running them: no asserts here)
    black_box(
        r.routes
            .iter()
            .filter(|x| !x.masked && x.address != 0)
            .count(),
    );

    let mut m = msix(2048);
    m.write_config(CAP + 3, &[0x80]);
    m.take_updates();
    let mut r = Router::new(2048);
    let mut round = 0u32;
    let pushes = r.pushes;
    c.bench_function("issue15/program_masked_vector_then_mask", |b| {
        b.iter(|| {
            round = round.wrapping_add(1);
            trapped_write(&mut m, &mut r, &mut batch, black_box(0x400), 0x0800_0040);
            trapped_write(&mut m, &mut r, &mut batch, black_box(0x404), round);
            trapped_write(&mut m, &mut r, &mut batch, black_box(0x408), round);
            trapped_write(&mut m, &mut r, &mut batch, black_box(0x40c), 0);
            trapped_write(&mut m, &mut r, &mut batch, black_box(0x40c), 1);
        })
    });
    black_box(r.pushes - pushes);

    // The issue's case exactly: address low, address high, data, unmask of one masked
    // vector (four trapped writes, the unmask commits). Each iteration programs the next
    // vector; every 2048 the vectors are masked again outside the timed region.
    let mut m = msix(2048);
    m.write_config(CAP + 3, &[0x80]);
    m.take_updates();
    let mut r = Router::new(2048);
    let mut round = 0u32;
    c.bench_function("issue15/program_masked_vector", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let chunk = (iters - done).min(2048);
                let t = std::time::Instant::now();
                for v in 0..chunk {
                    round = round.wrapping_add(1);
                    let base = black_box(v * 16);
                    trapped_write(&mut m, &mut r, &mut batch, base, 0x0800_0040);
                    trapped_write(&mut m, &mut r, &mut batch, base + 4, round);
                    trapped_write(&mut m, &mut r, &mut batch, base + 8, round);
                    trapped_write(&mut m, &mut r, &mut batch, base + 12, 0);
                }
                total += t.elapsed();
                for v in 0..chunk {
                    trapped_write(&mut m, &mut r, &mut batch, v * 16 + 12, 1);
                }
                done += chunk;
            }
            total
        })
    });
    black_box(r.routes[0].data);

    let mut m = msix(2048);
    let mut r = Router::new(2048);
    let mut round = 0u32;
    c.bench_function("issue15/full_table_rewrite_2048_function_mask", |b| {
        b.iter(|| {
            round = round.wrapping_add(1);
            m.write_config(CAP + 3, &[0xc0]); // Enable + Function Mask
            if m.updates_due() {
                m.take_updates_into(&mut batch);
                r.apply(&batch);
            }
            for v in 0..2048u64 {
                let base = v * 16;
                trapped_write(&mut m, &mut r, &mut batch, base, 0x0800_0040);
                trapped_write(&mut m, &mut r, &mut batch, base + 4, 0);
                trapped_write(&mut m, &mut r, &mut batch, base + 8, v as u32 ^ round);
                trapped_write(&mut m, &mut r, &mut batch, base + 12, 0);
            }
            m.write_config(CAP + 3, &[0x80]); // clear Function Mask: one batch
            if m.updates_due() {
                m.take_updates_into(&mut batch);
                r.apply(&batch);
            }
        })
    });
    black_box(r.routes[5].data ^ round);

    let m = live(2048);
    let mut buf = [0u8; 4];
    c.bench_function("issue15/table_dword_read", |b| {
        b.iter(|| {
            m.read_table(black_box(0x408), &mut buf);
            black_box(&buf);
        })
    });
}

criterion_group!(
    benches,
    bench_dword,
    bench_full_table,
    bench_caps,
    bench_issue15
);
criterion_main!(benches);
