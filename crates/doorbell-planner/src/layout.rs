// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Proposing a guest RAM layout that leaves room for the doorbell.

use hw_defs::iova::IovaRange;

use crate::error::PlanError;
use crate::input::PlanInput;
use crate::plan::Ctx;
use crate::space;

/// How much guest RAM to lay out, from where, at what granule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RamRequest {
    /// Total bytes of RAM (a non-zero multiple of `align`).
    pub size: u64,
    /// The lowest address RAM may use (for example 0x4000_0000, the usual arm64 RAM base;
    /// 0 lets RAM use the low 1 GiB as well).
    pub base: u64,
    /// The granule of every chunk's start and length: a power of two, at least the host
    /// page size (2 MiB lets the host back RAM with huge pages).
    pub align: u64,
}

/// Lays out `request.size` bytes of guest RAM from `request.base` upward, split around
/// everything RAM must avoid, so that [`plan`](crate::plan) then succeeds with the same
/// placement. `input.guest.ram` is ignored; everything else in `input` is used.
///
/// What RAM avoids:
///
/// - guest MMIO and every host reserved region but `direct-relaxable` ones;
/// - the kernel window (strategy 2): the `msi` window and the vITS frame at the kernel's
///   position (`0x7ff0000-0x800ffff` on the test host), so RAM from 0 is split there;
/// - the user window (strategy 1): the vITS frame and the window the planner chooses
///   (at the preferred base, or the lowest free place), but *not* the driver's default
///   window, which the moved window replaces: RAM may cover 0x8000000
///   (test `user_window_frees_default_window_for_ram`);
/// - RISC-V: the vIMSIC region.
///
/// The placement is computed without RAM; RAM then avoids it, so planning again with this
/// RAM finds the same placement (the search takes the lowest fit and RAM only removes space
/// elsewhere), which test `proposed_layout_plans_to_same_placement` holds. Errors are the
/// planner's (a `direct` region, overlapping MMIO, ...) or [`PlanError::NoFreeSpace`].
pub fn propose_ram_layout(
    input: &PlanInput,
    request: &RamRequest,
) -> Result<Vec<IovaRange>, PlanError> {
    let mut probe = input.clone();
    probe.guest.ram.clear();
    let ctx = Ctx::new(&probe)?;
    let align = request.align;
    if !align.is_power_of_two() || align < ctx.page {
        return Err(PlanError::InvalidInput {
            what: format!(
                "RAM granule {align:#x} is not a power of two of at least the host page size {:#x}",
                ctx.page
            ),
        });
    }
    if request.size == 0 || !request.size.is_multiple_of(align) {
        return Err(PlanError::InvalidInput {
            what: format!(
                "RAM size {:#x} is not a non-zero multiple of the granule {align:#x}",
                request.size
            ),
        });
    }
    let (exempt, footprint) = if ctx.geom.arm {
        let placement = ctx.place_arm()?;
        let mut footprint = vec![placement.frame];
        footprint.extend(placement.strategy.msi_window());
        (placement.replaced, footprint)
    } else {
        let (region, _) = ctx.place_imsic()?;
        (None, vec![region])
    };
    let mut obstacles = ctx.obstacles(exempt, false);
    obstacles.extend(footprint);
    let obstacles = space::merged(obstacles);
    space::fill(&obstacles, ctx.max_gpa, request.base, request.size, align).ok_or(
        PlanError::NoFreeSpace {
            what: "guest RAM",
            size: request.size,
            ipa_bits: input.guest.ipa_bits,
        },
    )
}
