// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Planning costs: the test-host case (kernel window), a user-window search through a
//! crowded memory map, the RAM layout proposal, and the invariant check.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};

use doorbell_planner::{
    ControllerGeometry, MAX_GUEST_RANGES, NamedRange, PlanInput, RamRequest, check_plan, plan,
    propose_ram_layout,
};
use hw_defs::iova::IovaRange;
use hw_defs::reserved::{ReservedKind, ReservedRegion};

const MIB: u64 = 1 << 20;

/// The test host: upstream kernel, the passthrough-vmm default map.
fn test_host() -> PlanInput {
    let mut input = PlanInput::new(ControllerGeometry::GICV3_ITS, 0x1000);
    for (name, start, len) in [
        ("gicd", 0x400_0000, 0x1_0000),
        ("gicr", 0x402_0000, 0x4_0000),
        ("uart", 0x600_0000, 0x1000),
        ("pcie-mmio", 0x1000_0000, 0x2000_0000),
        ("pcie-ecam", 0x3000_0000, MIB),
    ] {
        input
            .guest
            .mmio
            .push(NamedRange::from_len(name, start, len).unwrap());
    }
    input
        .guest
        .ram
        .push(IovaRange::from_len(0x4000_0000, 512 * MIB).unwrap());
    input.host.reserved.push(ReservedRegion {
        range: IovaRange::new(0x800_0000, 0x80f_ffff).unwrap(),
        kind: ReservedKind::Msi,
    });
    input.device.msix_mappable = true;
    input
}

/// A patched kernel and a map crowded below 4 GiB with the maximum number of MMIO ranges,
/// each 1 MiB wide at every other 1 MiB boundary except the last slots, so the search walks
/// all of them before it finds room.
fn crowded() -> PlanInput {
    let mut input = test_host();
    input.kernel.sw_msi_window_option = true;
    input.guest.mmio = (0..MAX_GUEST_RANGES as u64)
        .map(|i| NamedRange::from_len(format!("dev{i}"), i * 2 * MIB + 0x8_0000, MIB).unwrap())
        .collect();
    input.guest.ram = (0..64u64)
        .map(|i| IovaRange::from_len(0x1_0000_0000 + i * 64 * MIB, 32 * MIB).unwrap())
        .collect();
    input
}

fn bench_plan(c: &mut Criterion) {
    let host = test_host();
    c.bench_function("plan_test_host_kernel_window", |b| {
        b.iter(|| plan(black_box(&host)).unwrap())
    });
    let crowded = crowded();
    c.bench_function("plan_user_window_search_crowded", |b| {
        b.iter(|| plan(black_box(&crowded)).unwrap())
    });
    let p = plan(&host).unwrap();
    c.bench_function("check_plan_test_host", |b| {
        b.iter(|| check_plan(black_box(&host), black_box(&p)).unwrap())
    });
    let mut no_ram = test_host();
    no_ram.guest.ram.clear();
    let request = RamRequest {
        size: 4 << 30,
        base: 0,
        align: 2 * MIB,
    };
    c.bench_function("propose_ram_layout_4g_from_0", |b| {
        b.iter(|| propose_ram_layout(black_box(&no_ram), black_box(&request)).unwrap())
    });
}

criterion_group!(benches, bench_plan);
criterion_main!(benches);
