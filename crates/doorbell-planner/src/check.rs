// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! An independent check of a plan against its input, for tests and the fuzz target.
//!
//! It restates the rules from docs/design.md directly instead of calling the planner's code, so
//! that a planner bug is not hidden by the same bug here.

use hw_defs::iova::IovaRange;
use hw_defs::reserved::ReservedKind;
use msi_trap::write_through::DoorbellPolicy;

use crate::input::{MAX_SW_MSI_PAGES, PlanInput, SW_MSI_ALIGN, StrategyChoice};
use crate::plan::{Plan, Strategy};

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

/// Checks that `plan` is a correct answer to `input`:
///
/// - the controller frame has the geometry's size and alignment, lies below `2^ipa_bits`,
///   is at the preferred base when one was given, and `doorbell_gpa` is its doorbell
///   (`controller_base + 0x10040` for the vITS);
/// - the frame and the MSI window miss guest RAM and guest MMIO; the frame (which holds the
///   doorbell page) and a user window also miss every host reserved region except
///   `direct-relaxable` ones and the `msi` region the strategy uses or replaces (the kernel
///   window is a host region itself, which other host regions may overlap);
/// - guest RAM misses every host reserved region except `direct-relaxable` ones and, under
///   the user window, the default window it replaces;
/// - no `direct` region exists (it would need an RMR);
/// - the doorbell is where iommufd maps it: window start + pgoff * page + the doorbell's page
///   offset, inside the window; the user window is 1 MiB aligned and only used when the
///   kernel has the option; the kernel window is the host's only `msi` region;
/// - the write-through policy is `KernelProgrammed { doorbell_gpa }` on Arm without a
///   vIOMMU, else `PerVectorIova` when the kernel has it, else `TableAddressWrite` with an
///   `MSIX_MAPPABLE` table;
/// - the report agrees with the plan.
///
/// Returns the first violated rule.
pub fn check_plan(input: &PlanInput, plan: &Plan) -> Result<(), String> {
    let geom = input.controller.validate().map_err(|e| e.to_string())?;
    let max_gpa = input.guest.max_gpa().map_err(|e| e.to_string())?;
    let page = input.host.page_size;
    let base = plan.controller_base;
    let frame = plan.controller_frame;

    ensure!(
        plan.page_size == page,
        "plan page size {:#x} != host page size {page:#x}",
        plan.page_size
    );
    ensure!(
        frame.start == base && frame.len() == Some(geom.frame_size),
        "controller frame {frame} is not {:#x} bytes at base {base:#x}",
        geom.frame_size
    );
    ensure!(
        base.is_multiple_of(geom.align),
        "controller base {base:#x} is not {:#x} aligned",
        geom.align
    );
    ensure!(
        base.checked_add(geom.doorbell_offset) == Some(plan.doorbell_gpa),
        "doorbell {:#x} != controller base {base:#x} + {:#x}",
        plan.doorbell_gpa,
        geom.doorbell_offset
    );
    ensure!(
        frame.last <= max_gpa,
        "controller frame {frame} is above the guest IPA limit {max_gpa:#x}"
    );
    if let Some(preferred) = input.preferred_base {
        ensure!(
            preferred == base,
            "preferred base {preferred:#x} was not honoured (base {base:#x})"
        );
    }
    if let Some(direct) = input
        .host
        .reserved
        .iter()
        .find(|r| r.kind == ReservedKind::Direct)
    {
        return Err(format!(
            "a plan exists although direct region {} needs an RMR",
            direct.range
        ));
    }

    let msi_regions: Vec<IovaRange> = input
        .host
        .reserved
        .iter()
        .filter(|r| r.kind == ReservedKind::Msi)
        .map(|r| r.range)
        .collect();
    // (window in use, msi region the placement may overlap, msi region RAM may overlap)
    let (window, placement_exempt, ram_exempt) = match plan.strategy {
        Strategy::KernelWindow { window } => {
            ensure!(geom.arm, "kernel window for a non-Arm controller");
            ensure!(
                input.strategy != StrategyChoice::UserWindow,
                "kernel window although the user window was requested"
            );
            ensure!(
                input.strategy == StrategyChoice::KernelWindow
                    || !input.kernel.sw_msi_window_option,
                "kernel window chosen automatically although the kernel has the window option"
            );
            ensure!(
                msi_regions == [window],
                "kernel window {window} is not the host's only msi region ({msi_regions:?})"
            );
            (Some(window), Some(window), None)
        }
        Strategy::UserWindow { window } => {
            ensure!(geom.arm, "user window for a non-Arm controller");
            ensure!(
                input.kernel.sw_msi_window_option,
                "user window without the kernel option"
            );
            ensure!(
                input.strategy != StrategyChoice::KernelWindow,
                "user window although the kernel window was requested"
            );
            ensure!(
                window.start.is_multiple_of(SW_MSI_ALIGN) && window.size_mib > 0,
                "user window {:#x}+{} MiB is not 1 MiB aligned and non-empty",
                window.start,
                window.size_mib
            );
            let [default] = msi_regions.as_slice() else {
                return Err(format!(
                    "user window replaces no single default msi region ({msi_regions:?})"
                ));
            };
            let range = window.range();
            ensure!(
                range.last <= max_gpa,
                "user window {range} is above the guest IPA limit"
            );
            (Some(range), Some(*default), Some(*default))
        }
        Strategy::ImsicMsiPageTable { region } => {
            ensure!(!geom.arm, "IMSIC strategy for an Arm controller");
            ensure!(
                input.kernel.riscv_msi_remap,
                "IMSIC strategy without the declared kernel path"
            );
            ensure!(
                region == frame,
                "IMSIC region {region} != controller frame {frame}"
            );
            (None, None, None)
        }
        Strategy::ImsicKernelWindow { window } => {
            ensure!(!geom.arm, "IMSIC kernel window for an Arm controller");
            ensure!(
                !input.kernel.riscv_msi_remap,
                "IMSIC kernel window although the MSI page table path was declared"
            );
            ensure!(
                msi_regions == [window],
                "IMSIC kernel window {window} is not the host's only msi region ({msi_regions:?})"
            );
            ensure!(
                frame.start == window.start && frame.last <= window.last,
                "vIMSIC region {frame} does not start the window {window} or leaves it"
            );
            ensure!(
                plan.pgoff.is_none(),
                "pgoff reported for the per-hart IMSIC window"
            );
            // Like the Arm windows: the device's MSI writes land anywhere in it, so no
            // guest RAM or MMIO may share it.
            for (name, g) in input
                .guest
                .ram
                .iter()
                .map(|r| ("RAM", *r))
                .chain(input.guest.mmio.iter().map(|m| (m.name.as_str(), m.range)))
            {
                ensure!(
                    !window.overlaps(&g),
                    "MSI window {window} overlaps guest {name:?} {g}"
                );
            }
            // The frame may sit in the window (it is the window's own region); the pgoff
            // arithmetic of the ITS does not apply.
            (None, Some(window), None)
        }
    };

    if let Some(window) = window {
        ensure!(
            input.pgoff < MAX_SW_MSI_PAGES,
            "pgoff {} is not below {MAX_SW_MSI_PAGES}",
            input.pgoff
        );
        ensure!(
            plan.pgoff == Some(input.pgoff),
            "plan pgoff {:?} != input pgoff {}",
            plan.pgoff,
            input.pgoff
        );
        let page_iova = u64::from(input.pgoff)
            .checked_mul(page)
            .and_then(|off| window.start.checked_add(off))
            .ok_or("doorbell page IOVA overflows")?;
        let page_last = page_iova
            .checked_add(page - 1)
            .ok_or("doorbell page overflows")?;
        ensure!(
            page_last <= window.last,
            "doorbell page {page_iova:#x} is outside the window {window}"
        );
        let expected = page_iova + geom.doorbell_offset % page;
        ensure!(
            plan.doorbell_gpa == expected,
            "doorbell {:#x} != where iommufd maps it, {expected:#x}",
            plan.doorbell_gpa
        );
    } else {
        ensure!(plan.pgoff.is_none(), "pgoff reported without a window");
    }

    let guest = || {
        input
            .guest
            .ram
            .iter()
            .map(|r| ("RAM", *r))
            .chain(input.guest.mmio.iter().map(|m| (m.name.as_str(), m.range)))
    };
    // The kernel window is the host's own region: other host regions may overlap it (the
    // host reserves both), but the frame, which holds the doorbell page, must miss them.
    // A user window must miss them (the kernel would answer EADDRINUSE).
    let window_vs_host = matches!(plan.strategy, Strategy::UserWindow { .. });
    let placed: Vec<(&str, IovaRange, bool)> = std::iter::once(("controller frame", frame, true))
        .chain(window.map(|w| ("MSI window", w, window_vs_host)))
        .collect();
    for (what, r, vs_host) in &placed {
        for (name, g) in guest() {
            ensure!(!r.overlaps(&g), "{what} {r} overlaps guest {name:?} {g}");
        }
        if !vs_host {
            continue;
        }
        for region in &input.host.reserved {
            if region.kind == ReservedKind::DirectRelaxable
                || (region.kind == ReservedKind::Msi && Some(region.range) == placement_exempt)
            {
                continue;
            }
            ensure!(
                !r.overlaps(&region.range),
                "{what} {r} overlaps host reserved region {} ({:?})",
                region.range,
                region.kind
            );
        }
    }
    for ram in &input.guest.ram {
        for region in &input.host.reserved {
            if region.kind == ReservedKind::DirectRelaxable
                || (region.kind == ReservedKind::Msi && Some(region.range) == ram_exempt)
            {
                continue;
            }
            ensure!(
                !ram.overlaps(&region.range),
                "guest RAM {ram} overlaps host reserved region {} ({:?})",
                region.range,
                region.kind
            );
        }
    }

    let expected_policy = if let Strategy::ImsicKernelWindow { window } = plan.strategy {
        DoorbellPolicy::KernelProgrammedWindow {
            start: window.start,
            last: window.last,
        }
    } else if geom.arm && !input.guest_viommu {
        DoorbellPolicy::KernelProgrammed {
            doorbell_iova: plan.doorbell_gpa,
        }
    } else if input.kernel.per_vector_msi_iova {
        DoorbellPolicy::PerVectorIova
    } else if input.device.msix_mappable {
        DoorbellPolicy::TableAddressWrite
    } else {
        return Err(
            "a plan exists although the guest's address cannot reach the device".to_string(),
        );
    };
    ensure!(
        plan.policy == expected_policy,
        "policy {:?} != expected {expected_policy:?}",
        plan.policy
    );

    let r = &plan.report;
    ensure!(
        r.doorbell_gpa == plan.doorbell_gpa
            && r.controller_frame.start == frame.start
            && r.controller_frame.last == frame.last
            && r.strategy == plan.strategy.name()
            && r.write_through == plan.policy.name()
            && r.pgoff == plan.pgoff
            && r.msi_window.map(|w| (w.start, w.last))
                == plan.strategy.msi_window().map(|w| (w.start, w.last))
            && r.verify.len() == plan.checks.len(),
        "report disagrees with the plan"
    );
    Ok(())
}
