// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The planner on the test host's facts and on the cases docs/design.md names.

use doorbell_planner::{
    ControllerGeometry, DoorbellPolicy, NamedRange, Plan, PlanError, PlanInput, RamRequest, Report,
    RuntimeCheck, Strategy, StrategyChoice, check_plan, plan, propose_ram_layout,
};
use hw_defs::iova::{IovaRange, IovaRanges};
use hw_defs::msi_window::SwMsiWindow;
use hw_defs::reserved::{ReservedKind, ReservedRegion};

const MIB: u64 = 1 << 20;

fn range(start: u64, last: u64) -> IovaRange {
    IovaRange::new(start, last).unwrap()
}

fn region(start: u64, last: u64, kind: ReservedKind) -> ReservedRegion {
    ReservedRegion {
        range: range(start, last),
        kind,
    }
}

/// The SMMUv3 software MSI window of the test host (measured: `0x8000000-0x80fffff msi`).
fn smmu_msi() -> ReservedRegion {
    region(0x800_0000, 0x80f_ffff, ReservedKind::Msi)
}

/// The passthrough-vmm default guest map: GICD, GICR (2 vCPUs), UART, PCIe MMIO window,
/// ECAM, and 512 MiB of RAM at 1 GiB.
fn vmm_map(input: &mut PlanInput) {
    let mmio = &mut input.guest.mmio;
    mmio.push(NamedRange::from_len("gicd", 0x400_0000, 0x1_0000).unwrap());
    mmio.push(NamedRange::from_len("gicr", 0x402_0000, 2 * 0x2_0000).unwrap());
    mmio.push(NamedRange::from_len("uart", 0x600_0000, 0x1000).unwrap());
    mmio.push(NamedRange::new(
        "pcie-mmio",
        range(0x1000_0000, 0x2fff_ffff),
    ));
    mmio.push(NamedRange::from_len("pcie-ecam", 0x3000_0000, MIB).unwrap());
    input
        .guest
        .ram
        .push(IovaRange::from_len(0x4000_0000, 512 * MIB).unwrap());
}

/// Upstream Linux 7.2 on the test host, igb with an MSIX_MAPPABLE table, no vIOMMU.
fn test_host() -> PlanInput {
    let mut input = PlanInput::new(ControllerGeometry::GICV3_ITS, 0x1000);
    vmm_map(&mut input);
    input.host.reserved.push(smmu_msi());
    input.device.msix_mappable = true;
    input
}

/// A kernel with the proposed window option.
fn patched() -> PlanInput {
    let mut input = test_host();
    input.kernel.sw_msi_window_option = true;
    input
}

fn plan_ok(input: &PlanInput) -> Plan {
    let p = plan(input).unwrap_or_else(|e| panic!("{e}"));
    check_plan(input, &p).unwrap_or_else(|e| panic!("check_plan: {e}\n{p}"));
    p
}

#[test]
fn test_host_upstream_kernel_window() {
    let input = test_host();
    let p = plan_ok(&input);
    assert_eq!(
        p.strategy,
        Strategy::KernelWindow {
            window: range(0x800_0000, 0x80f_ffff)
        }
    );
    assert_eq!(p.controller_base, 0x7ff_0000);
    assert_eq!(p.controller_frame, range(0x7ff_0000, 0x800_ffff));
    assert_eq!(p.doorbell_gpa, 0x800_0040);
    assert_eq!(
        p.policy,
        DoorbellPolicy::KernelProgrammed {
            doorbell_iova: 0x800_0040
        }
    );
    assert_eq!(p.pgoff, Some(0));
    assert_eq!(p.window_to_set(), None);
    assert_eq!(
        p.checks,
        vec![
            RuntimeCheck::ControllerAddress { base: 0x7ff_0000 },
            RuntimeCheck::WindowReservedAfterAttach {
                window: range(0x800_0000, 0x80f_ffff)
            },
            RuntimeCheck::DeviceTableAddress {
                expected: 0x800_0040
            },
        ]
    );
}

#[test]
fn report_lists_placement_reason_and_checks() {
    let p = plan_ok(&test_host());
    let text = p.to_string();
    for needle in [
        "kernel-window",
        "0x7ff0000-0x800ffff",
        "0x8000040",
        "KernelProgrammed",
        "why:",
        "verify at run time:",
        "must hold address 0x8000040",
        "no RMR",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
    }
    let json = serde_json::to_string(&p.report).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p.report);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["doorbell_gpa"], 0x800_0040);
    assert_eq!(value["strategy"], "kernel-window");
    assert_eq!(value["msi_window"]["start"], 0x800_0000);
}

#[test]
fn guest_ram_over_the_window_is_refused() {
    let mut input = test_host();
    input.guest.ram = vec![IovaRange::from_len(0, 0x1000_0000).unwrap()];
    input.guest.mmio.retain(|m| m.range.start >= 0x1000_0000);
    let e = plan(&input).unwrap_err();
    assert_eq!(
        e,
        PlanError::Overlap {
            what: "guest RAM 0".into(),
            range: range(0, 0xfff_ffff),
            other: "host reserved region (msi)".into(),
            other_range: range(0x800_0000, 0x80f_ffff),
        }
    );
    assert!(
        e.to_string()
            .contains("0x0-0xfffffff overlaps host reserved region (msi) 0x8000000-0x80fffff")
    );
}

#[test]
fn guest_ram_over_the_vits_frame_is_refused() {
    let mut input = test_host();
    input
        .guest
        .ram
        .push(IovaRange::from_len(0x7f0_0000, 0x10_0000).unwrap());
    assert!(matches!(
        plan(&input),
        Err(PlanError::Overlap { ref what, ref other, .. }) if what == "vITS frame" && other == "guest RAM 1"
    ));
}

#[test]
fn guest_mmio_in_the_kernel_window_is_refused() {
    // QEMU virt's distributor sits at 0x8000000: fine for QEMU, not with a kernel window.
    let mut input = test_host();
    input.guest.mmio[0] = NamedRange::from_len("gicd", 0x808_0000, 0x1_0000).unwrap();
    let e = plan(&input).unwrap_err();
    assert!(
        matches!(e, PlanError::Overlap { ref what, ref other, .. } if what == "software MSI window" && other == "guest MMIO \"gicd\""),
        "{e}"
    );
    // The user window moves the doorbell away, so the same map plans.
    input.kernel.sw_msi_window_option = true;
    let p = plan_ok(&input);
    assert!(matches!(p.strategy, Strategy::UserWindow { .. }));
}

#[test]
fn direct_region_needs_an_rmr() {
    let mut input = test_host();
    input
        .host
        .reserved
        .push(region(0xf000_0000, 0xf00f_ffff, ReservedKind::Direct));
    let e = plan(&input).unwrap_err();
    assert!(matches!(e, PlanError::NeedsRmr { .. }));
    let msg = e.to_string();
    assert!(msg.contains("needs an RMR"), "{msg}");
    assert!(msg.contains("0xf0000000-0xf00fffff"), "{msg}");
}

#[test]
fn direct_relaxable_is_ignored_and_reported() {
    let mut input = test_host();
    // Inside guest RAM: iommufd does not reserve it, so RAM may cover it.
    input.host.reserved.push(region(
        0x4010_0000,
        0x4010_ffff,
        ReservedKind::DirectRelaxable,
    ));
    let p = plan_ok(&input);
    assert!(
        p.report
            .notes
            .iter()
            .any(|n| n.contains("0x40100000-0x4010ffff") && n.contains("ignored")),
        "{p}"
    );
}

#[test]
fn reserved_region_in_ram_is_refused_and_unknown_kinds_count_as_reserved() {
    for kind in [ReservedKind::Reserved, ReservedKind::Other("weird".into())] {
        let mut input = test_host();
        input
            .host
            .reserved
            .push(region(0x4800_0000, 0x4800_ffff, kind.clone()));
        assert!(
            matches!(plan(&input), Err(PlanError::Overlap { ref what, .. }) if what == "guest RAM 0"),
            "{kind:?}"
        );
    }
}

#[test]
fn patched_kernel_with_preferred_base() {
    let mut input = patched();
    // Away from 0x8000000, and guest RAM over the default window, which is released.
    input.preferred_base = Some(0x0c0f_0000);
    input.guest.ram.push(range(0x800_0000, 0xbff_ffff));
    let p = plan_ok(&input);
    let window = SwMsiWindow::new(0x0c10_0000, 1).unwrap();
    assert_eq!(p.strategy, Strategy::UserWindow { window });
    assert_eq!(p.window_to_set(), Some(window));
    assert_eq!(p.controller_base, 0x0c0f_0000);
    assert_eq!(p.doorbell_gpa, 0x0c10_0040);
    assert_eq!(
        p.policy,
        DoorbellPolicy::KernelProgrammed {
            doorbell_iova: 0x0c10_0040
        }
    );
    assert!(
        p.checks
            .contains(&RuntimeCheck::SetWindowBeforeAttach { window })
    );
    assert!(p.checks.contains(&RuntimeCheck::DefaultWindowReleased {
        window: range(0x800_0000, 0x80f_ffff)
    }));
    assert_eq!(
        p.report.set_window.map(|w| (w.start, w.size_mib)),
        Some((0x0c10_0000, 1))
    );
}

#[test]
fn patched_kernel_without_preferred_base_searches_lowest_free_window() {
    let p = plan_ok(&patched());
    // The lowest 1 MiB-aligned window whose vITS (64 KiB below it) fits: 0x100000.
    assert_eq!(
        p.strategy,
        Strategy::UserWindow {
            window: SwMsiWindow::new(0x10_0000, 1).unwrap()
        }
    );
    assert_eq!(p.controller_base, 0xf_0000);
    assert_eq!(p.doorbell_gpa, 0x10_0040);

    // With flash over the low 64 MiB, the search moves past the GIC.
    let mut input = patched();
    input
        .guest
        .mmio
        .push(NamedRange::from_len("flash", 0, 0x400_0000).unwrap());
    let p = plan_ok(&input);
    assert_eq!(p.controller_base, 0x40f_0000);
    assert_eq!(p.window_to_set().unwrap().start, 0x410_0000);
}

#[test]
fn search_is_deterministic() {
    let input = patched();
    assert_eq!(plan(&input).unwrap(), plan(&input).unwrap());
}

#[test]
fn user_window_requested_on_upstream_is_refused() {
    let mut input = test_host();
    input.strategy = StrategyChoice::UserWindow;
    assert_eq!(plan(&input), Err(PlanError::UserWindowUnavailable));
}

#[test]
fn kernel_window_can_be_forced_on_a_patched_kernel() {
    let mut input = patched();
    input.strategy = StrategyChoice::KernelWindow;
    let p = plan_ok(&input);
    assert_eq!(p.controller_base, 0x7ff_0000);
    assert!(p.report.why[0].contains("chosen by the caller"));
}

#[test]
fn user_window_preferred_base_errors() {
    let mut input = patched();
    input.preferred_base = Some(0x0c0f_1000);
    assert!(matches!(
        plan(&input),
        Err(PlanError::MisalignedPreferredBase {
            base: 0x0c0f_1000,
            align: 0x1_0000,
            ..
        })
    ));
    // 64 KiB aligned, but GITS_TRANSLATER would need a window at 0x0c010000.
    input.preferred_base = Some(0x0c00_0000);
    let e = plan(&input).unwrap_err();
    assert!(
        matches!(
            e,
            PlanError::PreferredBaseUnreachable {
                base: 0x0c00_0000,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("0xf0000 modulo 1 MiB"), "{e}");
    // Below the first window: GITS_TRANSLATER at 0x10040 needs a window at 0x10000.
    input.preferred_base = Some(0);
    assert!(matches!(
        plan(&input),
        Err(PlanError::PreferredBaseUnreachable { base: 0, .. })
    ));
}

#[test]
fn user_window_over_another_reserved_region_is_eaddrinuse() {
    let mut input = patched();
    input
        .host
        .reserved
        .push(region(0x0c18_0000, 0x0c18_ffff, ReservedKind::Reserved));
    input.preferred_base = Some(0x0c0f_0000);
    let e = plan(&input).unwrap_err();
    assert_eq!(
        e,
        PlanError::WindowOverlapsReserved {
            window: range(0x0c10_0000, 0x0c1f_ffff),
            region: range(0x0c18_0000, 0x0c18_ffff),
            kind: "reserved".into(),
        }
    );
    assert!(e.to_string().contains("EADDRINUSE"));
    // Without a preferred base the search steps over it.
    input.preferred_base = None;
    input
        .guest
        .mmio
        .push(NamedRange::new("low", range(0, 0x0c0e_ffff)));
    input
        .guest
        .mmio
        .retain(|m| m.name == "low" || m.range.start >= 0x1000_0000);
    let p = plan_ok(&input);
    assert_eq!(p.window_to_set().unwrap().start, 0x0c20_0000);
}

#[test]
fn kernel_window_preferred_base_must_match() {
    let mut input = test_host();
    input.preferred_base = Some(0x7ff_0000);
    plan_ok(&input);
    input.preferred_base = Some(0x0c0f_0000);
    assert_eq!(
        plan(&input),
        Err(PlanError::PreferredBaseConflict {
            preferred: 0x0c0f_0000,
            required: 0x7ff_0000
        })
    );
    input.preferred_base = Some(0x0c0f_0800);
    assert!(matches!(
        plan(&input),
        Err(PlanError::MisalignedPreferredBase { .. })
    ));
}

#[test]
fn msi_region_count() {
    let mut input = test_host();
    input.host.reserved.clear();
    assert_eq!(
        plan(&input),
        Err(PlanError::NoMsiRegion {
            strategy: "the kernel window"
        })
    );
    input.kernel.sw_msi_window_option = true;
    assert_eq!(
        plan(&input),
        Err(PlanError::NoMsiRegion {
            strategy: "the user window"
        })
    );
    input.host.reserved = vec![
        smmu_msi(),
        region(0xfee0_0000, 0xfeef_ffff, ReservedKind::Msi),
    ];
    assert!(matches!(
        plan(&input),
        Err(PlanError::MultipleMsiRegions { count: 2, .. })
    ));
    input.host.reserved = vec![region(0x800_0800, 0x80f_ffff, ReservedKind::Msi)];
    assert!(matches!(plan(&input), Err(PlanError::InvalidInput { .. })));
}

#[test]
fn viommu_with_per_vector_iova() {
    let mut input = test_host();
    input.guest_viommu = true;
    input.kernel.per_vector_msi_iova = true;
    let p = plan_ok(&input);
    assert_eq!(p.policy, DoorbellPolicy::PerVectorIova);
    assert_eq!(p.controller_base, 0x7ff_0000);
    assert!(p.checks.contains(&RuntimeCheck::SetIovaBeforeEnable));
    assert!(
        !p.checks
            .iter()
            .any(|c| matches!(c, RuntimeCheck::DeviceTableAddress { .. }))
    );
}

#[test]
fn viommu_with_msix_mappable_table() {
    let mut input = test_host();
    input.guest_viommu = true;
    input.device.has_msi = true;
    let p = plan_ok(&input);
    assert_eq!(p.policy, DoorbellPolicy::TableAddressWrite);
    assert!(p.checks.contains(&RuntimeCheck::DeviceTableAddress {
        expected: 0x800_0040
    }));
    assert_eq!(p.checks.last(), Some(&RuntimeCheck::RewriteAfterEnable));
    assert!(p.report.notes.iter().any(|n| n.contains("hide MSI")), "{p}");
}

#[test]
fn viommu_without_a_path_needs_an_rmr() {
    let mut input = test_host();
    input.guest_viommu = true;
    input.device.msix_mappable = false;
    let e = plan(&input).unwrap_err();
    assert!(matches!(e, PlanError::NeedsRmr { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("VFIO_IRQ_SET_DATA_MSI_IOVA"), "{msg}");
    assert!(msg.contains("MSIX_MAPPABLE"), "{msg}");
}

#[test]
fn no_viommu_ignores_the_proposed_vfio_path() {
    // Without a vIOMMU the kernel's own address is exact: no per-vector IOVA needed.
    let mut input = test_host();
    input.kernel.per_vector_msi_iova = true;
    input.device.msix_mappable = false;
    let p = plan_ok(&input);
    assert!(matches!(p.policy, DoorbellPolicy::KernelProgrammed { .. }));
    assert!(
        p.report
            .notes
            .iter()
            .any(|n| n.contains("not MSIX_MAPPABLE"))
    );
}

#[test]
fn host_pages_of_64k() {
    let mut input = test_host();
    input.host.page_size = 0x1_0000;
    let p = plan_ok(&input);
    assert_eq!(
        (p.controller_base, p.doorbell_gpa),
        (0x7ff_0000, 0x800_0040)
    );

    // A second physical ITS page: the doorbell is one 64 KiB page up, the vITS at the window.
    input.pgoff = 1;
    let p = plan_ok(&input);
    assert_eq!(
        (p.controller_base, p.doorbell_gpa),
        (0x800_0000, 0x801_0040)
    );

    // Page 16 of a 1 MiB window does not exist.
    input.pgoff = 16;
    assert!(matches!(
        plan(&input),
        Err(PlanError::DoorbellOutsideWindow { pgoff: 16, .. })
    ));

    // The user window grows to hold page 16.
    input.kernel.sw_msi_window_option = true;
    let p = plan_ok(&input);
    assert_eq!(p.window_to_set().unwrap().size_mib, 2);
    assert_eq!(p.doorbell_gpa, p.window_to_set().unwrap().start + 0x10_0040);
}

#[test]
fn pgoff_rules_with_4k_pages() {
    let mut input = test_host();
    input.pgoff = 1;
    let e = plan(&input).unwrap_err();
    assert!(
        matches!(
            e,
            PlanError::DoorbellUnplaceable {
                doorbell: 0x800_1040,
                ..
            }
        ),
        "{e}"
    );
    input.pgoff = 16;
    let p = plan_ok(&input);
    assert_eq!(
        (p.controller_base, p.doorbell_gpa),
        (0x800_0000, 0x801_0040)
    );
    input.pgoff = 64;
    assert_eq!(
        plan(&input),
        Err(PlanError::PgoffTooLarge { pgoff: 64, max: 64 })
    );
    input.pgoff = 1;
    input.kernel.sw_msi_window_option = true;
    assert!(matches!(plan(&input), Err(PlanError::InvalidInput { .. })));
}

#[test]
fn host_pages_of_16k() {
    let mut input = test_host();
    input.host.page_size = 0x4000;
    let p = plan_ok(&input);
    assert_eq!(p.doorbell_gpa, 0x800_0040);
    input.pgoff = 4;
    let p = plan_ok(&input);
    assert_eq!(p.doorbell_gpa, 0x801_0040);
}

#[test]
fn unsupported_page_sizes() {
    for page in [0, 0x800, 0x2000, 0x2_0000, 0x20_0000, u64::MAX] {
        let mut input = test_host();
        input.host.page_size = page;
        assert!(
            matches!(plan(&input), Err(PlanError::InvalidPageSize { .. })),
            "{page:#x}"
        );
    }
}

#[test]
fn device_address_check_names_the_pgoff_used() {
    let p = plan_ok(&test_host());
    assert_eq!(p.check_device_address(0x800_0040), Ok(()));
    let e = p.check_device_address(0x801_0040).unwrap_err();
    assert!(e.to_string().contains("page 16"), "{e}");
    let e = p.check_device_address(0x800_0080).unwrap_err();
    assert!(e.to_string().contains("page offset 0x40"), "{e}");
    let e = p.check_device_address(0x0810_0040).unwrap_err();
    assert!(e.to_string().contains("outside the window"), "{e}");
}

#[test]
fn iova_ranges_check() {
    let p = plan_ok(&test_host());
    // Measured on the test host after attach.
    let measured =
        IovaRanges::from_kernel(&[(0, 0x7ff_ffff), (0x810_0000, 0xffff_ffff_ffff)], 0x1000)
            .unwrap();
    assert_eq!(p.check_iova_ranges(&measured), Ok(()));
    let unattached = IovaRanges::from_kernel(&[(0, u64::MAX)], 0x1000).unwrap();
    assert_eq!(
        p.check_iova_ranges(&unattached),
        Err(PlanError::WindowNotReserved {
            window: range(0x800_0000, 0x80f_ffff),
            allowed: range(0, u64::MAX)
        })
    );
}

#[test]
fn guest_map_validation() {
    let mut input = test_host();
    input.guest.ram.push(range(0x1_0000_0800, 0x1_0000_ffff));
    assert!(matches!(
        plan(&input),
        Err(PlanError::MisalignedRam { index: 1, .. })
    ));

    let mut input = test_host();
    input
        .guest
        .mmio
        .push(NamedRange::from_len("dup-uart", 0x600_0800, 0x100).unwrap());
    let e = plan(&input).unwrap_err();
    assert!(e.to_string().contains("guest MMIO \"uart\""), "{e}");
    assert!(e.to_string().contains("guest MMIO \"dup-uart\""), "{e}");

    let mut input = test_host();
    input.guest.ram.push(range(0x4000_0000, 0x4000_ffff));
    assert!(matches!(plan(&input), Err(PlanError::Overlap { .. })));

    let mut input = test_host();
    input.guest.ipa_bits = 32;
    input.guest.ram[0] = IovaRange::from_len(0xf000_0000, 0x2000_0000).unwrap();
    assert!(matches!(plan(&input), Err(PlanError::OutsideIpa { .. })));

    let mut input = test_host();
    input.guest.ipa_bits = 80;
    assert!(matches!(plan(&input), Err(PlanError::InvalidInput { .. })));

    let mut input = test_host();
    input.guest.mmio = (0..300u64)
        .map(|i| NamedRange::from_len(format!("m{i}"), 0x1_0000_0000 + i * 0x1000, 0x1000).unwrap())
        .collect();
    assert!(matches!(
        plan(&input),
        Err(PlanError::TooManyRanges { count: 300, .. })
    ));
}

#[test]
fn ram_layout_avoids_the_kernel_window() {
    let input = test_host();
    // From 1 GiB, as usual: one chunk, untouched.
    let ram = propose_ram_layout(
        &input,
        &RamRequest {
            size: 512 * MIB,
            base: 0x4000_0000,
            align: 2 * MIB,
        },
    )
    .unwrap();
    assert_eq!(
        ram,
        vec![IovaRange::from_len(0x4000_0000, 512 * MIB).unwrap()]
    );

    // From 0 with no low MMIO: split around the vITS frame and the window.
    let mut input = test_host();
    input.guest.mmio.clear();
    let ram = propose_ram_layout(
        &input,
        &RamRequest {
            size: 256 * MIB,
            base: 0,
            align: 0x1_0000,
        },
    )
    .unwrap();
    assert_eq!(
        ram,
        vec![range(0, 0x7fe_ffff), range(0x810_0000, 0x1010_ffff)]
    );
    let mut with_ram = input.clone();
    with_ram.guest.ram = ram;
    let p = plan_ok(&with_ram);
    assert_eq!(p.controller_base, 0x7ff_0000);
}

#[test]
fn user_window_frees_default_window_for_ram() {
    let mut input = patched();
    input.guest.mmio.clear();
    input
        .guest
        .mmio
        .push(NamedRange::from_len("gicd", 0x10_0000, 0x1_0000).unwrap());
    input.preferred_base = Some(0x0c0f_0000);
    let request = RamRequest {
        size: 256 * MIB,
        base: 0x400_0000,
        align: 2 * MIB,
    };
    let ram = propose_ram_layout(&input, &request).unwrap();
    // RAM runs through 0x8000000 and stops short of the vITS (0xc0f0000).
    assert_eq!(ram[0], range(0x400_0000, 0xbff_ffff));
    assert!(ram[0].contains(0x800_0000));
    input.guest.ram = ram;
    let p = plan_ok(&input);
    assert_eq!(p.controller_base, 0x0c0f_0000);
    assert!(
        p.checks
            .iter()
            .any(|c| matches!(c, RuntimeCheck::DefaultWindowReleased { .. }))
    );
}

#[test]
fn proposed_layout_plans_to_same_placement() {
    for kernel_option in [false, true] {
        let mut input = test_host();
        input.kernel.sw_msi_window_option = kernel_option;
        input.guest.ram.clear();
        let placement = plan(&input).unwrap();
        let request = RamRequest {
            size: 1 << 30,
            base: 0,
            align: 2 * MIB,
        };
        input.guest.ram = propose_ram_layout(&input, &request).unwrap();
        let total: u64 = input.guest.ram.iter().map(|r| r.len().unwrap()).sum();
        assert_eq!(total, 1 << 30);
        let p = plan_ok(&input);
        assert_eq!(p.controller_base, placement.controller_base);
        assert_eq!(p.strategy, placement.strategy);
    }
}

#[test]
fn ram_layout_request_validation() {
    let input = test_host();
    for (size, align) in [
        (0, 0x1000),
        (0x1800, 0x1000),
        (0x10_0000, 0x800),
        (0x10_0000, 0x3000),
    ] {
        assert!(
            matches!(
                propose_ram_layout(
                    &input,
                    &RamRequest {
                        size,
                        base: 0,
                        align
                    }
                ),
                Err(PlanError::InvalidInput { .. })
            ),
            "{size:#x} {align:#x}"
        );
    }
    let mut small = test_host();
    small.guest.ipa_bits = 32;
    assert!(matches!(
        propose_ram_layout(
            &small,
            &RamRequest {
                size: 4 << 30,
                base: 0,
                align: 0x1000
            }
        ),
        Err(PlanError::NoFreeSpace { .. })
    ));
}

fn riscv(harts: u32) -> PlanInput {
    let mut input = PlanInput::new(ControllerGeometry::riscv_imsic(harts), 0x1000);
    input
        .guest
        .mmio
        .push(NamedRange::from_len("uart", 0x1000_0000, 0x1000).unwrap());
    input
        .guest
        .mmio
        .push(NamedRange::from_len("aplic", 0x0c00_0000, 0x400_0000).unwrap());
    input
        .guest
        .ram
        .push(IovaRange::from_len(0x8000_0000, 512 * MIB).unwrap());
    input.device.msix_mappable = true;
    input
}

#[test]
fn riscv_without_a_kernel_path_is_an_error_with_the_placement() {
    let mut input = riscv(4);
    input.preferred_base = Some(0x2800_0000);
    assert_eq!(
        plan(&input),
        Err(PlanError::NoRiscvKernelStrategy {
            region: range(0x2800_0000, 0x2800_3fff)
        })
    );
    // Without a preferred base: the lowest 16 KiB-aligned free place.
    input.preferred_base = None;
    assert_eq!(
        plan(&input),
        Err(PlanError::NoRiscvKernelStrategy {
            region: range(0, 0x3fff)
        })
    );
}

#[test]
fn riscv_with_declared_kernel_path() {
    let mut input = riscv(5);
    input.kernel.riscv_msi_remap = true;
    input.preferred_base = Some(0x2800_0000);
    let p = plan_ok(&input);
    assert_eq!(
        p.strategy,
        Strategy::ImsicMsiPageTable {
            region: range(0x2800_0000, 0x2800_7fff)
        }
    );
    assert_eq!(p.doorbell_gpa, 0x2800_0000);
    assert_eq!(p.policy, DoorbellPolicy::TableAddressWrite);
    assert_eq!(p.pgoff, None);
    assert!(p.check_device_address(0x2800_0000).is_err());
    input.kernel.per_vector_msi_iova = true;
    assert_eq!(plan_ok(&input).policy, DoorbellPolicy::PerVectorIova);
    input.kernel.per_vector_msi_iova = false;
    input.device.msix_mappable = false;
    assert!(matches!(
        plan(&input),
        Err(PlanError::NoWriteThrough { .. })
    ));
}

#[test]
fn riscv_input_errors() {
    let mut input = riscv(4);
    input.preferred_base = Some(0x2800_1000);
    assert!(matches!(
        plan(&input),
        Err(PlanError::MisalignedPreferredBase { align: 0x4000, .. })
    ));
    input.preferred_base = Some(0x1000_0000);
    assert!(matches!(plan(&input), Err(PlanError::Overlap { .. })));
    let mut input = riscv(4);
    input.host.page_size = 0x1_0000;
    assert!(matches!(
        plan(&input),
        Err(PlanError::InvalidPageSize { .. })
    ));
    let mut input = riscv(4);
    input.strategy = StrategyChoice::UserWindow;
    assert!(matches!(plan(&input), Err(PlanError::InvalidInput { .. })));
    let mut input = riscv(0);
    input.kernel.riscv_msi_remap = true;
    assert!(matches!(
        plan(&input),
        Err(PlanError::InvalidGeometry { .. })
    ));
    let mut input = riscv(4);
    input
        .host
        .reserved
        .push(region(0, 0xfff, ReservedKind::Direct));
    assert!(matches!(plan(&input), Err(PlanError::NeedsRmr { .. })));
}

#[test]
fn check_plan_catches_a_tampered_plan() {
    let input = test_host();
    let good = plan_ok(&input);
    let mut bad = good.clone();
    bad.controller_base += 0x1_0000;
    assert!(check_plan(&input, &bad).is_err());
    let mut bad = good.clone();
    bad.doorbell_gpa += 4;
    assert!(check_plan(&input, &bad).is_err());
    let mut bad = good.clone();
    bad.policy = DoorbellPolicy::PerVectorIova;
    assert!(check_plan(&input, &bad).is_err());
    // A plan for another input: RAM over the vITS.
    let mut other = input.clone();
    other.guest.ram.push(range(0x7f0_0000, 0x7ff_ffff));
    assert!(check_plan(&other, &good).is_err());
}

#[test]
fn reserved_region_inside_the_kernel_window() {
    // Away from the doorbell page: the host reserves both, the plan stands.
    let mut input = test_host();
    input
        .host
        .reserved
        .push(region(0x808_0000, 0x808_ffff, ReservedKind::Reserved));
    plan_ok(&input);
    // Over the doorbell page: a write there may never reach the IOMMU.
    input.host.reserved[1] = region(0x800_0000, 0x800_0fff, ReservedKind::Reserved);
    let e = plan(&input).unwrap_err();
    assert!(
        matches!(e, PlanError::Overlap { ref what, .. } if what == "vITS frame"),
        "{e}"
    );
}

/// The riscv64 test kernel (patches 0002-0004): one software MSI window holding every host
/// hart's IMSIC page, and no MSI page table.
#[test]
fn riscv_kernel_window() {
    let mut input = riscv(2);
    input.host.reserved.push(smmu_msi());
    let p = plan_ok(&input);
    assert_eq!(
        p.strategy,
        Strategy::ImsicKernelWindow {
            window: range(0x800_0000, 0x80f_ffff)
        }
    );
    assert_eq!(p.strategy.name(), "imsic-kernel-window");
    assert_eq!(p.controller_frame, range(0x800_0000, 0x800_1fff));
    assert_eq!(p.doorbell_gpa, 0x800_0000);
    assert_eq!(
        p.policy,
        DoorbellPolicy::KernelProgrammedWindow {
            start: 0x800_0000,
            last: 0x80f_ffff
        }
    );
    assert_eq!(p.pgoff, None);
    assert!(p.checks.contains(&RuntimeCheck::DeviceTablePageInWindow {
        window: range(0x800_0000, 0x80f_ffff)
    }));
    // Any host hart's page of the window; nothing else.
    for ok in [0x800_0000, 0x800_1000, 0x80f_f000] {
        assert!(p.check_device_address(ok).is_ok(), "{ok:#x}");
    }
    for bad in [0x800_0040, 0x810_0000, 0x2800_0000, 0] {
        assert!(
            matches!(
                p.check_device_address(bad),
                Err(PlanError::DoorbellMismatch { .. })
            ),
            "{bad:#x}"
        );
    }
    let text = p.report.to_string();
    assert!(
        text.contains("kernel programs the target host hart's page of the window"),
        "{text}"
    );
    assert!(!text.contains("must hold address 0x8000000"), "{text}");

    // A guest vIOMMU cannot use it, nor a vIMSIC placed elsewhere.
    let mut viommu = input.clone();
    viommu.guest_viommu = true;
    assert!(matches!(plan(&viommu), Err(PlanError::InvalidInput { .. })));
    let mut elsewhere = input.clone();
    elsewhere.preferred_base = Some(0x2800_0000);
    assert!(matches!(
        plan(&elsewhere),
        Err(PlanError::InvalidInput { .. })
    ));
    elsewhere.preferred_base = Some(0x800_0000);
    plan_ok(&elsewhere);
    // Guest RAM over the window is refused.
    let mut ram = input.clone();
    ram.guest.ram.push(range(0x7f0_0000, 0x80f_ffff));
    assert!(plan(&ram).is_err());
    // Two MSI regions: no single window to follow.
    let mut two = input.clone();
    two.host
        .reserved
        .push(region(0x900_0000, 0x90f_ffff, ReservedKind::Msi));
    assert!(matches!(
        plan(&two),
        Err(PlanError::NoRiscvKernelStrategy { .. })
    ));
    // More harts than the 1 MiB window has pages.
    let mut big = riscv(512);
    big.host.reserved.push(smmu_msi());
    assert!(plan(&big).is_err());
}

/// Found by the `planner` fuzz target: a software MSI window whose start is not aligned as
/// a vIMSIC base must be (AIA 1.0 3.6: no hart or guest index bits in the base) cannot hold
/// the vIMSIC.
#[test]
fn riscv_kernel_window_needs_an_aligned_window() {
    let mut input = PlanInput::new(
        ControllerGeometry::RiscvImsic {
            harts: 4,
            guest_index_bits: 1,
        },
        0x1000,
    );
    input
        .host
        .reserved
        .push(region(0x9_7000_1000, 0x9_7010_6fff, ReservedKind::Msi));
    assert_eq!(
        plan(&input),
        Err(PlanError::ImsicWindowMisaligned {
            window: range(0x9_7000_1000, 0x9_7010_6fff),
            align: 0x8000,
        })
    );
    // The same geometry at an aligned window: planned, and the reasons say that guest
    // files make hart h's page differ from host hart h's.
    input.host.reserved[0] = region(0x9_7000_0000, 0x9_700f_ffff, ReservedKind::Msi);
    let p = plan_ok(&input);
    assert_eq!(p.controller_frame, range(0x9_7000_0000, 0x9_7000_7fff));
    assert!(
        p.report
            .why
            .iter()
            .any(|w| w.contains("every 0x2000 bytes")),
        "{:?}",
        p.report.why
    );
}

/// Found by the `planner` fuzz target: guest MMIO inside the host's software MSI window
/// (device writes there would be MSIs) is refused, as on Arm, and `check_plan` says so.
#[test]
fn riscv_kernel_window_refuses_guest_mmio_in_the_window() {
    let mut input = riscv(2);
    input.host.reserved.push(smmu_msi());
    let good = plan_ok(&input);
    input
        .guest
        .mmio
        .push(NamedRange::new("bar", range(0x80f_0000, 0x80f_ffff)));
    let e = plan(&input).unwrap_err();
    assert!(
        matches!(e, PlanError::Overlap { ref what, .. } if what == "software MSI window"),
        "{e}"
    );
    assert!(check_plan(&input, &good).is_err());
}
