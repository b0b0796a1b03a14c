// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Plans where a VMM puts its virtual interrupt controller's MSI doorbell, and how the
//! guest's MSI address reaches a passed-through device, so that the guest needs no RMR.
//!
//! A device behind an SMMUv3 signals an MSI by writing to the GIC ITS doorbell,
//! `GITS_TRANSLATER` (IHI 0069H 12.19.1, ITS frame + 0x10040). iommufd maps each physical
//! doorbell page the device uses at IOVA `sw_msi_start + pgoff * PAGE_SIZE` in the driver's
//! software MSI window (`0x8000000-0x80fffff` on SMMUv3, a `msi` reserved region and a hole
//! in `IOMMU_IOAS_IOVA_RANGES`), and VFIO programs the device with that IOVA plus the
//! doorbell's offset in its page (0x40): `0x8000040` on the test host. This crate chooses,
//! from what the VMM knows, where the VMM's vITS goes so that the guest's doorbell is that
//! address, and reports what the VMM must verify. It is pure logic: no kernel calls.
//!
//! | strategy | when | placement |
//! |---|---|---|
//! | [`Strategy::UserWindow`] (1) | the kernel has the proposed `IOMMU_OPTION_SW_MSI_START`/`SIZE` | the VMM chooses the vITS base (or the planner finds one); the window is set, before attach, 1 MiB aligned, so that `window + pgoff*page + 0x40 == vits_base + 0x10040`; the default 0x8000000 window is then free for guest RAM or MMIO |
//! | [`Strategy::KernelWindow`] (2) | upstream kernels | `vits_base = msi.start + pgoff*page + 0x40 - 0x10040` (`0x7ff0000` on the test host); guest RAM and MMIO stay out of the window and the vITS frame |
//! | [`Strategy::ImsicMsiPageTable`] | RISC-V, only if the caller declares the out-of-tree IOMMU MSI remapping | the vIMSIC region, size-aligned (AIA 1.0 3.6) |
//!
//! How the guest's address reaches the device ([`DoorbellPolicy`], consumed by `msi-trap`):
//! without a vIOMMU on Arm, `KernelProgrammed { doorbell_iova }` (the guest's address *is*
//! what the kernel programs: write-through is exact). With a vIOMMU (strategy 3 of the
//! design: the guest programs a gIOVA), `PerVectorIova` when the kernel has
//! `VFIO_IRQ_SET_DATA_MSI_IOVA`, else `TableAddressWrite` when the MSI-X table is
//! `MSIX_MAPPABLE`, else [`PlanError::NeedsRmr`]. A `direct` host reserved region (an IORT
//! RMR) is also [`PlanError::NeedsRmr`].
//!
//! The inputs come from the other crates: reserved regions from
//! `iommufd_ioas::IommuGroup::reserved_regions` (readable before attach), the window option
//! from `iommufd_ioas::Iommufd::probe_sw_msi_window`, `MSIX_MAPPABLE` and the per-vector
//! IOVA probe from `vfio-cdev`.
//!
//! # Example
//!
//! The test host: upstream Linux 7.2, one ITS, 4 KiB pages, SMMUv3's window at 0x8000000.
//!
//! ```
//! use doorbell_planner::{
//!     ControllerGeometry, NamedRange, PlanInput, Strategy, check_plan, plan,
//! };
//! use hw_defs::iova::IovaRange;
//! use hw_defs::reserved::{ReservedKind, ReservedRegion};
//! use msi_trap::write_through::DoorbellPolicy;
//!
//! let mut input = PlanInput::new(ControllerGeometry::GICV3_ITS, 0x1000);
//! input.host.reserved.push(ReservedRegion {
//!     range: IovaRange::new(0x800_0000, 0x80f_ffff).unwrap(),
//!     kind: ReservedKind::Msi,
//! });
//! input.guest.ram.push(IovaRange::from_len(0x4000_0000, 512 << 20).unwrap());
//! input.guest.mmio.push(NamedRange::from_len("gicd", 0x400_0000, 0x1_0000).unwrap());
//! input.guest.mmio.push(NamedRange::from_len("uart", 0x600_0000, 0x1000).unwrap());
//!
//! let p = plan(&input)?;
//! assert!(matches!(p.strategy, Strategy::KernelWindow { .. }));
//! assert_eq!(p.controller_base, 0x7ff_0000);
//! assert_eq!(p.doorbell_gpa, 0x800_0040);
//! assert_eq!(p.policy, DoorbellPolicy::KernelProgrammed { doorbell_iova: 0x800_0040 });
//! check_plan(&input, &p).unwrap();
//!
//! // After VFIO enabled the first vector, the device must hold the planned doorbell.
//! p.check_device_address(0x800_0040)?;
//! assert!(p.check_device_address(0x800_1040).is_err()); // the kernel used pgoff 1
//! println!("{p}");
//! # Ok::<(), doorbell_planner::PlanError>(())
//! ```
//!
//! # Judgment calls
//!
//! * **The preferred base is honoured exactly or refused.** Silently moving the vITS would
//!   break a VMM that already put its address in the FDT.
//! * **Guest MMIO stays out of the window**, not only RAM (docs/design.md, layer 2). Without a
//!   vIOMMU IOVA = GPA, and the window is an IOVA hole whose pages belong to doorbells, so
//!   nothing else the guest could hand the device as a DMA address may live there. Guest
//!   MMIO may overlap other host reserved regions (they only constrain DMA), but the
//!   controller frame, which holds the doorbell page, may not.
//! * **Host pages up to 64 KiB.** The physical ITS frame is 64 KiB aligned, so with pages no
//!   larger than that the doorbell's offset in its page is `0x10040 % page = 0x40`; with
//!   4 KiB (16 KiB) pages only a pgoff that is a multiple of 16 (4) keeps the vITS 64 KiB
//!   aligned, and other pgoffs are refused.
//! * **Exactly one `msi` region on Arm.** iommufd refuses a device with more than one
//!   software MSI window or with software and hardware MSI regions together, and sysfs prints
//!   both kinds as `msi`: several are an error, and the run-time check
//!   ([`Plan::check_device_address`]) catches a single hardware region taken for the window.
//! * **`direct-relaxable` regions are ignored**, as iommufd ignores them; unknown kinds are
//!   treated as `reserved`.
//! * **RISC-V is placement only unless declared.** The RISC-V IOMMU's MSI remapping for
//!   guests is an out-of-tree RFC: without [`KernelCaps::riscv_msi_remap`] planning places
//!   the vIMSIC and fails with [`PlanError::NoRiscvKernelStrategy`].

#![deny(missing_docs)]

mod check;
mod error;
mod input;
mod layout;
mod plan;
mod report;
mod space;

pub use check::check_plan;
pub use error::PlanError;
pub use input::{
    ControllerGeometry, DEFAULT_IPA_BITS, DeviceFacts, GITS_TRANSLATER_OFFSET, GuestMap, HostFacts,
    IMSIC_MAX_GUEST_INDEX_BITS, IMSIC_MAX_HART_INDEX_BITS, IMSIC_PAGE_SIZE, ITS_ALIGN,
    ITS_FRAME_SIZE, KernelCaps, MAX_GUEST_RANGES, MAX_HOST_REGIONS, MAX_SW_MSI_PAGES, NamedRange,
    PlanInput, SW_MSI_ALIGN, StrategyChoice,
};
pub use layout::{RamRequest, propose_ram_layout};
pub use plan::{Plan, RuntimeCheck, Strategy, plan};
pub use report::{Report, ReportRange, ReportWindow};

/// Re-exported so that a caller needs no direct dependency to name the policy.
pub use msi_trap::write_through::DoorbellPolicy;
