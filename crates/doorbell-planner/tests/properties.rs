// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Property tests: every plan satisfies `check_plan`, well-formed inputs always plan,
//! proposed RAM layouts plan to the same placement, and garbage never panics.

use doorbell_planner::{
    ControllerGeometry, DoorbellPolicy, NamedRange, PlanError, PlanInput, RamRequest,
    StrategyChoice, check_plan, plan, propose_ram_layout,
};
use hw_defs::iova::IovaRange;
use hw_defs::reserved::{ReservedKind, ReservedRegion};
use proptest::prelude::*;

const MIB: u64 = 1 << 20;

/// An address on one of a few grids, mostly in the low 4 GiB so that things collide.
fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        // Near the usual vITS and window positions, so that near misses get tested.
        8 => ((0usize..4), (0u64..64)).prop_map(|(c, k)| {
            [0x7ff_0000u64, 0x800_0000, 0xf_0000, 0x10_0000][c] + k * 0x1000 - 0x2_0000
        }),
        16 => (0u64..4096).prop_map(|k| k * MIB),
        16 => (0u64..(1 << 16)).prop_map(|k| k << 16),
        8 => (0u64..(1 << 20)).prop_map(|k| k << 12),
        1 => any::<u64>(),
    ]
}

fn len() -> impl Strategy<Value = u64> {
    prop_oneof![
        16 => (1u64..64).prop_map(|k| k << 16),
        12 => (1u64..256).prop_map(|k| k * MIB),
        2 => 1u64..0x1_0000,
        1 => any::<u64>(),
    ]
}

fn range() -> impl Strategy<Value = IovaRange> {
    (addr(), len()).prop_map(|(start, len)| IovaRange {
        start,
        last: start.saturating_add(len - 1),
    })
}

/// Guest RAM: 64 KiB granular mostly, anything sometimes.
fn ram_range() -> impl Strategy<Value = IovaRange> {
    prop_oneof![
        12 => ((0u64..(1 << 16)), (1u64..4096)).prop_map(|(k, n)| IovaRange {
            start: k << 16,
            last: (k << 16) + (n << 16) - 1,
        }),
        1 => range(),
    ]
}

fn kind() -> impl Strategy<Value = ReservedKind> {
    prop_oneof![
        8 => Just(ReservedKind::Reserved),
        4 => Just(ReservedKind::DirectRelaxable),
        1 => Just(ReservedKind::Direct),
        2 => Just(ReservedKind::Other("x".into())),
        1 => Just(ReservedKind::Msi),
    ]
}

fn msi_region() -> impl Strategy<Value = ReservedRegion> {
    prop_oneof![
        3 => Just(IovaRange { start: 0x800_0000, last: 0x80f_ffff }),
        2 => ((1u64..4096), (1u64..4)).prop_map(|(k, n)| IovaRange {
            start: k * MIB,
            last: k * MIB + n * MIB - 1,
        }),
        1 => range(),
    ]
    .prop_map(|range| ReservedRegion {
        range,
        kind: ReservedKind::Msi,
    })
}

fn controller() -> impl Strategy<Value = ControllerGeometry> {
    prop_oneof![
        24 => Just(ControllerGeometry::GICV3_ITS),
        1 => (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(frame_size, translater_offset, align)| {
            ControllerGeometry::ArmGicv3Its { frame_size, translater_offset, align }
        }),
        1 => ((0u64..8), (0u64..0x4_0000), (12u32..22)).prop_map(|(f, t, a)| {
            ControllerGeometry::ArmGicv3Its {
                frame_size: f << a,
                translater_offset: t & !3,
                align: 1 << a,
            }
        }),
        6 => ((0u32..40), (0u8..9)).prop_map(|(harts, guest_index_bits)| {
            ControllerGeometry::RiscvImsic { harts, guest_index_bits }
        }),
    ]
}

fn page_size() -> impl Strategy<Value = u64> {
    prop_oneof![
        12 => Just(0x1000),
        4 => Just(0x4000),
        6 => Just(0x1_0000),
        1 => any::<u64>(),
    ]
}

fn preferred_base() -> impl Strategy<Value = Option<u64>> {
    prop_oneof![
        12 => Just(None),
        4 => (0u64..4096).prop_map(|k| Some(k * MIB + 0xf_0000)),
        4 => (0u64..(1 << 16)).prop_map(|k| Some(k << 16)),
        3 => Just(Some(0x7ff_0000)),
        1 => any::<u64>().prop_map(Some),
    ]
}

fn strategy_choice() -> impl Strategy<Value = StrategyChoice> {
    prop_oneof![
        4 => Just(StrategyChoice::Auto),
        1 => Just(StrategyChoice::UserWindow),
        1 => Just(StrategyChoice::KernelWindow),
    ]
}

prop_compose! {
    /// Arbitrary inputs: plausible often, garbage sometimes.
    fn arb_input()(
        controller in controller(),
        page in page_size(),
        ram in proptest::collection::vec(ram_range(), 0..4),
        mmio in proptest::collection::vec(range(), 0..5),
        msis in prop_oneof![1 => Just(vec![]), 16 => msi_region().prop_map(|m| vec![m]), 1 => proptest::collection::vec(msi_region(), 2..3)],
        others in proptest::collection::vec((range(), kind()), 0..3),
        caps in any::<(bool, bool, bool)>(),
        device in any::<(bool, bool)>(),
        viommu in any::<bool>(),
        preferred in preferred_base(),
        pgoff in prop_oneof![16 => Just(0u32), 4 => 0u32..20, 1 => any::<u32>()],
        ipa_bits in prop_oneof![24 => Just(40u8), 1 => 28u8..70],
        strategy in strategy_choice(),
    ) -> PlanInput {
        let mut input = PlanInput::new(controller, page);
        input.guest.ram = ram;
        input.guest.mmio = mmio
            .into_iter()
            .enumerate()
            .map(|(i, r)| NamedRange::new(format!("mmio{i}"), r))
            .collect();
        input.guest.ipa_bits = ipa_bits;
        input.host.reserved = msis;
        input
            .host
            .reserved
            .extend(others.into_iter().map(|(range, kind)| ReservedRegion { range, kind }));
        (input.kernel.sw_msi_window_option, input.kernel.per_vector_msi_iova, input.kernel.riscv_msi_remap) = caps;
        (input.device.msix_mappable, input.device.has_msi) = device;
        input.guest_viommu = viommu;
        input.preferred_base = preferred;
        input.pgoff = pgoff;
        input.strategy = strategy;
        input
    }
}

prop_compose! {
    /// Inputs for which a plan must exist: a GICv3 ITS, a supported page size, one
    /// 1 MiB-aligned msi window in [16 MiB, 256 MiB), MMIO in its own 16 MiB slots in
    /// [512 MiB, 1 GiB), RAM chunks from 1 GiB up, and a write-through path.
    fn plannable_input()(
        page in prop_oneof![Just(0x1000u64), Just(0x4000), Just(0x1_0000)],
        msi_start in (16u64..256).prop_map(|k| k * MIB),
        msi_mib in 1u64..4,
        mmio in proptest::collection::vec((0u64..32, 1u64..(16 * MIB)), 0..8),
        ram in proptest::collection::vec((0u64..64, 1u64..256), 1..4),
        window_option in any::<bool>(),
        viommu in any::<bool>(),
        per_vector in any::<bool>(),
        has_msi in any::<bool>(),
        pgoff_pages in 0u64..2,
    ) -> PlanInput {
        let mut input = PlanInput::new(ControllerGeometry::GICV3_ITS, page);
        input.host.reserved.push(ReservedRegion {
            range: IovaRange::from_len(msi_start, msi_mib * MIB).unwrap(),
            kind: ReservedKind::Msi,
        });
        let mut slots: Vec<(u64, u64)> = mmio;
        slots.sort_unstable();
        slots.dedup_by_key(|s| s.0);
        input.guest.mmio = slots
            .into_iter()
            .map(|(slot, len)| {
                NamedRange::from_len(format!("slot{slot}"), 0x2000_0000 + slot * 16 * MIB, len)
                    .unwrap()
            })
            .collect();
        let mut next = 0x4000_0000u64;
        for (gap, mib) in ram {
            let start = next + gap * MIB;
            input.guest.ram.push(IovaRange::from_len(start, mib * MIB).unwrap());
            next = start + mib * MIB;
        }
        input.kernel.sw_msi_window_option = window_option;
        input.kernel.per_vector_msi_iova = per_vector;
        input.guest_viommu = viommu;
        input.device.msix_mappable = true;
        input.device.has_msi = has_msi;
        // A pgoff whose doorbell keeps the vITS 64 KiB aligned and inside a 1 MiB window.
        input.pgoff = (pgoff_pages * (0x1_0000 / page)) as u32;
        input
    }
}

proptest! {
    // Cheap cases; more of them so that enough inputs reach a plan (about one in six).
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Any plan the planner returns passes the independent invariant check: nothing
    /// overlaps guest RAM, guest MMIO or a reserved region (but the msi window in use), the
    /// vITS base is 64 KiB aligned and `doorbell_gpa == vits_base + 0x10040`.
    #[test]
    fn plans_satisfy_invariants(input in arb_input()) {
        match plan(&input) {
            Ok(p) => {
                if let Err(e) = check_plan(&input, &p) {
                    return Err(TestCaseError::fail(format!("{e}\ninput: {input:?}\n{p}")));
                }
                if input.controller == ControllerGeometry::GICV3_ITS {
                    prop_assert_eq!(p.controller_base % 0x1_0000, 0);
                    prop_assert_eq!(p.doorbell_gpa, p.controller_base + 0x1_0040);
                }
                if let ControllerGeometry::ArmGicv3Its { .. } = input.controller {
                    prop_assert_eq!(p.check_device_address(p.doorbell_gpa), Ok(()));
                }
                prop_assert!(!p.to_string().is_empty());
            }
            Err(e) => prop_assert!(e.to_string().starts_with("plan doorbell: ")),
        }
    }
}

proptest! {
    /// Well-formed inputs always give a plan.
    #[test]
    fn well_formed_inputs_always_plan(input in plannable_input()) {
        let p = plan(&input).map_err(|e| TestCaseError::fail(format!("{e}\n{input:?}")))?;
        prop_assert_eq!(check_plan(&input, &p), Ok(()));
        if !input.guest_viommu {
            prop_assert_eq!(p.policy, DoorbellPolicy::KernelProgrammed { doorbell_iova: p.doorbell_gpa });
        }
    }

    /// A proposed RAM layout has the requested size, in granule-aligned chunks from the
    /// base up, and planning with it succeeds at the placement found without RAM.
    #[test]
    fn proposed_layouts_plan(
        mut input in plannable_input(),
        size_units in 1u64..1024,
        base_mib in 0u64..2048,
        align_shift in 12u32..22,
    ) {
        input.guest.ram.clear();
        let align = 1u64 << align_shift;
        let request = RamRequest { size: size_units * align, base: base_mib * MIB, align };
        let without_ram = plan(&input);
        match propose_ram_layout(&input, &request) {
            Ok(ram) => {
                let mut total = 0u64;
                for r in &ram {
                    prop_assert!(r.start >= request.base);
                    prop_assert_eq!(r.start % align, 0);
                    prop_assert_eq!(r.len().unwrap() % align, 0);
                    total += r.len().unwrap();
                }
                prop_assert_eq!(total, request.size);
                input.guest.ram = ram;
                let p = plan(&input).map_err(|e| TestCaseError::fail(format!("{e}\n{input:?}")))?;
                prop_assert_eq!(check_plan(&input, &p), Ok(()));
                let q = without_ram.unwrap();
                prop_assert_eq!(p.controller_base, q.controller_base);
                prop_assert_eq!(p.strategy, q.strategy);
            }
            Err(PlanError::InvalidInput { .. }) => prop_assert!(align < input.host.page_size),
            Err(PlanError::NoFreeSpace { .. }) => {}
            Err(e) => return Err(TestCaseError::fail(format!("unexpected {e}"))),
        }
    }

    /// Garbage everywhere: errors, never panics; any plan still passes the check.
    #[test]
    fn hostile_inputs_never_panic(
        mut input in arb_input(),
        raw_ram in proptest::collection::vec(any::<(u64, u64)>(), 0..4),
        raw_reserved in proptest::collection::vec(any::<(u64, u64)>(), 0..4),
        request in any::<(u64, u64, u64)>(),
    ) {
        let norm = |(a, b): (u64, u64)| IovaRange { start: a.min(b), last: a.max(b) };
        input.guest.ram.extend(raw_ram.into_iter().map(norm));
        input.host.reserved.extend(raw_reserved.into_iter().map(|r| ReservedRegion {
            range: norm(r),
            kind: ReservedKind::Reserved,
        }));
        if let Ok(p) = plan(&input) {
            prop_assert_eq!(check_plan(&input, &p), Ok(()));
            let _ = p.check_device_address(request.0);
        }
        let (size, base, align) = request;
        let _ = propose_ram_layout(&input, &RamRequest { size, base, align });
    }
}
