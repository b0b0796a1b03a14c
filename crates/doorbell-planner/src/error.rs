// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Errors of planning and of the run-time checks of a plan.

use hw_defs::iova::IovaRange;

/// Why no plan could be made, or why a plan turned out wrong at run time.
///
/// Every message starts with the operation (`plan doorbell` or `check plan`) and names the
/// objects and values involved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The configuration needs a reserved memory range (IORT RMR) in the guest's firmware
    /// tables, which this design exists to avoid.
    #[error("plan doorbell: this configuration needs an RMR in the guest firmware tables: {why}")]
    NeedsRmr {
        /// What would need identity mapping, and why nothing else works.
        why: String,
    },

    /// Two ranges that must be disjoint overlap.
    #[error("plan doorbell: {what} {range} overlaps {other} {other_range}")]
    Overlap {
        /// The first object (for example `guest RAM 0`).
        what: String,
        /// Its range.
        range: IovaRange,
        /// The second object (for example `host reserved region (msi)`).
        other: String,
        /// Its range.
        other_range: IovaRange,
    },

    /// The host page size is not one the strategy supports.
    #[error(
        "plan doorbell: host page size {page_size:#x} is not supported for {controller} (allowed: {allowed})"
    )]
    InvalidPageSize {
        /// The page size given.
        page_size: u64,
        /// The interrupt controller.
        controller: &'static str,
        /// The page sizes allowed.
        allowed: &'static str,
    },

    /// The interrupt controller geometry is inconsistent.
    #[error("plan doorbell: invalid {controller} geometry: {reason}")]
    InvalidGeometry {
        /// The interrupt controller.
        controller: &'static str,
        /// What is wrong.
        reason: String,
    },

    /// Some other input is malformed.
    #[error("plan doorbell: invalid input: {what}")]
    InvalidInput {
        /// What is wrong, with the value.
        what: String,
    },

    /// An input list is longer than the planner accepts.
    #[error("plan doorbell: {what} has {count} entries, more than the {max} accepted")]
    TooManyRanges {
        /// Which list.
        what: &'static str,
        /// Its length.
        count: usize,
        /// The bound.
        max: usize,
    },

    /// A guest range lies above the guest's IPA size.
    #[error(
        "plan doorbell: {what} {range} is above the {ipa_bits}-bit guest physical address space"
    )]
    OutsideIpa {
        /// The object.
        what: String,
        /// Its range.
        range: IovaRange,
        /// The guest IPA size in bits.
        ipa_bits: u8,
    },

    /// A guest RAM range is not aligned to the host page size, so it cannot be DMA-mapped.
    #[error(
        "plan doorbell: guest RAM {index} {range} is not aligned to the host page size {page_size:#x}"
    )]
    MisalignedRam {
        /// Index in the RAM list.
        index: usize,
        /// The range.
        range: IovaRange,
        /// The host page size.
        page_size: u64,
    },

    /// The preferred controller base is not aligned as the controller requires.
    #[error("plan doorbell: preferred {controller} base {base:#x} is not aligned to {align:#x}")]
    MisalignedPreferredBase {
        /// The interrupt controller.
        controller: &'static str,
        /// The preferred base.
        base: u64,
        /// The alignment it needs.
        align: u64,
    },

    /// The preferred vITS base cannot be reached by a 1 MiB-aligned software MSI window.
    #[error(
        "plan doorbell: preferred vITS base {base:#x} cannot be served by a user MSI window: {reason}"
    )]
    PreferredBaseUnreachable {
        /// The preferred base.
        base: u64,
        /// Why.
        reason: String,
    },

    /// Under the kernel window the vITS position is fixed by the kernel; the preferred base
    /// differs.
    #[error(
        "plan doorbell: preferred vITS base {preferred:#x} conflicts with the kernel MSI window, which needs the vITS at {required:#x}"
    )]
    PreferredBaseConflict {
        /// The preferred base.
        preferred: u64,
        /// The base the kernel window dictates.
        required: u64,
    },

    /// The user window strategy was requested but the kernel does not offer
    /// `IOMMU_OPTION_SW_MSI_START`.
    #[error(
        "plan doorbell: the user MSI window strategy was requested but the kernel has no IOMMU_OPTION_SW_MSI_START/SIZE (proposed UAPI, not in upstream Linux)"
    )]
    UserWindowUnavailable,

    /// The user window would overlap another reserved region of the device: the kernel would
    /// refuse it with `EADDRINUSE`.
    #[error(
        "plan doorbell: MSI window {window} overlaps host reserved region ({kind}) {region}: IOMMU_OPTION_SW_MSI_START would fail with EADDRINUSE"
    )]
    WindowOverlapsReserved {
        /// The window.
        window: IovaRange,
        /// The reserved region.
        region: IovaRange,
        /// Its kind.
        kind: String,
    },

    /// The host reports no MSI window; on Arm the kernel then has nowhere to map the doorbell.
    #[error(
        "plan doorbell: the host reports no msi reserved region for the device; {strategy} needs the IOMMU driver's software MSI window"
    )]
    NoMsiRegion {
        /// The strategy that needed it.
        strategy: &'static str,
    },

    /// The host reports several MSI regions.
    #[error(
        "plan doorbell: the host reports {count} msi reserved regions ({regions}); iommufd attaches a device only with exactly one software MSI window and no hardware MSI region"
    )]
    MultipleMsiRegions {
        /// How many.
        count: usize,
        /// The regions, printed.
        regions: String,
    },

    /// The assumed doorbell page index is beyond what iommufd can allocate.
    #[error(
        "plan doorbell: doorbell page index (pgoff) {pgoff} is not below {max}, the number of software MSI pages one iommufd can map"
    )]
    PgoffTooLarge {
        /// The assumed pgoff.
        pgoff: u32,
        /// The bound.
        max: u32,
    },

    /// The doorbell page at the assumed pgoff does not lie inside the MSI window.
    #[error(
        "plan doorbell: doorbell page {pgoff} of size {page_size:#x} does not fit in the MSI window {window}"
    )]
    DoorbellOutsideWindow {
        /// The assumed pgoff.
        pgoff: u32,
        /// The host page size.
        page_size: u64,
        /// The window.
        window: IovaRange,
    },

    /// The kernel's doorbell address cannot be matched by an aligned controller frame.
    #[error(
        "plan doorbell: the kernel maps the doorbell at {doorbell:#x}; a vITS with GITS_TRANSLATER there would start at {base}, which is not {align:#x} aligned"
    )]
    DoorbellUnplaceable {
        /// The doorbell IOVA the kernel uses.
        doorbell: u64,
        /// The base the vITS would need (printed, may be negative).
        base: String,
        /// The alignment the vITS needs.
        align: u64,
    },

    /// No free guest physical space was found for an object.
    #[error(
        "plan doorbell: no free {size:#x}-byte space for the {what} below 2^{ipa_bits} that avoids guest RAM, guest MMIO and host reserved regions"
    )]
    NoFreeSpace {
        /// The object.
        what: &'static str,
        /// Its footprint in bytes.
        size: u64,
        /// The guest IPA size in bits.
        ipa_bits: u8,
    },

    /// RISC-V: the vIMSIC was placed, but no kernel path delivers a device MSI to it.
    #[error(
        "plan doorbell: the vIMSIC fits at {region}, but no kernel strategy applies for RISC-V: the host reports no single software MSI window (the riscv64 test kernel's patches 0003-0004 add one) and no MSI page table path (KernelCaps::riscv_msi_remap, an out-of-tree RFC)"
    )]
    NoRiscvKernelStrategy {
        /// Where the vIMSIC would have been placed.
        region: IovaRange,
    },

    /// RISC-V kernel window: the vIMSIC must start the host's software MSI window, but the
    /// window's start is not aligned as a vIMSIC base must be.
    #[error(
        "plan doorbell: the host's software MSI window {window} is not {align:#x} aligned, so no vIMSIC can start there (AIA 1.0 3.6: the hart and guest index bits of the base are zero)"
    )]
    ImsicWindowMisaligned {
        /// The host's software MSI window.
        window: IovaRange,
        /// The alignment the vIMSIC region needs.
        align: u64,
    },

    /// The guest's address cannot reach the device and no firmware workaround applies.
    #[error("plan doorbell: the guest's MSI address cannot reach the device: {why}")]
    NoWriteThrough {
        /// Why.
        why: String,
    },

    /// Run-time check: the device holds another doorbell address than the plan expected.
    #[error(
        "check plan: the device's MSI address is {observed:#x}, the plan expected {expected:#x}: {detail}"
    )]
    DoorbellMismatch {
        /// The address the plan expected.
        expected: u64,
        /// The address found in the device.
        observed: u64,
        /// What it implies.
        detail: String,
    },

    /// Run-time check: the IOAS does not show the MSI window as a hole.
    #[error(
        "check plan: IOMMU_IOAS_IOVA_RANGES allows {allowed} inside the MSI window {window}; the kernel is not using the planned window"
    )]
    WindowNotReserved {
        /// The planned window.
        window: IovaRange,
        /// The allowed range found inside it.
        allowed: IovaRange,
    },

    /// Run-time check that does not apply to this plan.
    #[error("check plan: {check} does not apply: {why}")]
    CheckNotApplicable {
        /// The check.
        check: &'static str,
        /// Why.
        why: &'static str,
    },
}
