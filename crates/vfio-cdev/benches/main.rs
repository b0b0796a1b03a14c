//! Benchmarks of the pure parts of the VFIO layer: the region capability-chain parser (run
//! once per region at device setup) and the SET_IRQS argument builder (run on every vector
//! (un)assignment, i.e. on guest MSI-X unmask/mask).

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use vfio_cdev::{IrqSet, parse_region_caps};

/// A BAR with a sparse-mmap capability of `areas` areas followed by MSIX_MAPPABLE.
fn blob(areas: u32) -> (Vec<u8>, u32) {
    let mut b = vec![0u8; 32];
    let first = b.len() as u32;
    let sparse_len = 16 + 16 * areas as usize;
    let next = first + sparse_len as u32;
    b.extend_from_slice(&1u16.to_ne_bytes());
    b.extend_from_slice(&1u16.to_ne_bytes());
    b.extend_from_slice(&next.to_ne_bytes());
    b.extend_from_slice(&areas.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    for i in 0..u64::from(areas) {
        b.extend_from_slice(&(i * 0x2000).to_ne_bytes());
        b.extend_from_slice(&0x1000u64.to_ne_bytes());
    }
    b.extend_from_slice(&3u16.to_ne_bytes());
    b.extend_from_slice(&1u16.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    (b, first)
}

fn benches(c: &mut Criterion) {
    let (small, first) = blob(2);
    c.bench_function("parse_region_caps/igb_bar3", |b| {
        b.iter(|| parse_region_caps(black_box(&small), black_box(first)))
    });
    let (big, first) = blob(256);
    c.bench_function("parse_region_caps/256_areas", |b| {
        b.iter(|| parse_region_caps(black_box(&big), black_box(first)))
    });
    let one = IrqSet::Eventfds(vec![Some(17)]);
    c.bench_function("irq_set/one_vector_eventfd", |b| {
        b.iter(|| black_box(&one).to_bytes(2, black_box(5)))
    });
}

criterion_group!(all, benches);
criterion_main!(all);
