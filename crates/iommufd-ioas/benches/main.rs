//! Benchmarks of the pure parts of the IOAS layer: validating an `IOMMU_IOAS_IOVA_RANGES`
//! reply and the checks a VMM runs against it before each map (`allows`, `holes`).

use criterion::{Criterion, criterion_group, criterion_main};
use iommufd_ioas::{IovaRange, IovaRanges};
use std::hint::black_box;

fn benches(c: &mut Criterion) {
    let smmu = [(0u64, 0x7ff_ffffu64), (0x810_0000, 0xffff_ffff_ffff)];
    c.bench_function("iova_ranges/validate_smmu_reply", |b| {
        b.iter(|| IovaRanges::from_kernel(black_box(&smmu), 0x1000))
    });
    let many: Vec<(u64, u64)> = (0..4096u64)
        .map(|i| (i * 0x20000, i * 0x20000 + 0xffff))
        .collect();
    c.bench_function("iova_ranges/validate_4096", |b| {
        b.iter(|| IovaRanges::from_kernel(black_box(&many), 0x1000))
    });
    let r = IovaRanges::from_kernel(&many, 0x1000).unwrap();
    let q = IovaRange::from_len(2000 * 0x20000 + 0x1000, 0x1000).unwrap();
    c.bench_function("iova_ranges/allows_4096", |b| {
        b.iter(|| r.allows(black_box(&q)))
    });
    c.bench_function("iova_ranges/holes_4096", |b| {
        b.iter(|| black_box(&r).holes())
    });
}

criterion_group!(all, benches);
criterion_main!(all);
