// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The planner: from a [`PlanInput`] to a [`Plan`].

use std::fmt;

use hw_defs::iova::{IovaRange, IovaRanges};
use hw_defs::msi_window::SwMsiWindow;
use hw_defs::reserved::{ReservedKind, ReservedRegion};
use msi_trap::write_through::DoorbellPolicy;

use crate::error::PlanError;
use crate::input::{
    ControllerGeometry, Geometry, IMSIC_PAGE_SIZE, MAX_GUEST_RANGES, MAX_HOST_REGIONS,
    MAX_SW_MSI_PAGES, PlanInput, SW_MSI_ALIGN, StrategyChoice,
};
use crate::report::{Report, ReportRange, ReportWindow};
use crate::space;

/// How the physical doorbell ends up at the controller's doorbell GPA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Strategy 1: the kernel has the proposed `IOMMU_OPTION_SW_MSI_START`/`SIZE`; the VMM
    /// sets the device's software MSI window before attach so that the physical doorbell
    /// lands exactly at the vITS's `GITS_TRANSLATER`. The driver's default window is then
    /// not reserved for this device.
    UserWindow {
        /// The window to set.
        window: SwMsiWindow,
    },
    /// Strategy 2 (upstream kernels): the vITS is placed so that its `GITS_TRANSLATER` sits
    /// where iommufd maps the physical doorbell, in the driver's software MSI window.
    KernelWindow {
        /// The host's software MSI window (the `msi` reserved region).
        window: IovaRange,
    },
    /// RISC-V, on a kernel the caller declared to remap device MSIs through the RISC-V IOMMU
    /// MSI page table (out-of-tree RFC): the device writes the guest's vIMSIC address and the
    /// IOMMU redirects it to the hart's guest interrupt file (AIA 1.0 8.4).
    ImsicMsiPageTable {
        /// The vIMSIC region in guest physical space.
        region: IovaRange,
    },
    /// RISC-V on a kernel whose IOMMU reports a software MSI window and maps every hart's
    /// IMSIC page into it, host hart `h`'s at `window + h * 4 KiB` (the riscv64 test
    /// kernel's patches 0002-0004, `docs/uapi.md` section 4): the vIMSIC goes at the window's
    /// start, so guest hart `h`'s interrupt file has the IOVA of host hart `h`'s. The device
    /// keeps the host's page and data (MSIs reach the guest through VFIO's eventfd, an irqfd
    /// and a KVM MSI route to the guest's page); nothing is written through.
    ImsicKernelWindow {
        /// The host's software MSI window (the `msi` reserved region).
        window: IovaRange,
    },
}

impl Strategy {
    /// The short name used in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::UserWindow { .. } => "user-window",
            Strategy::KernelWindow { .. } => "kernel-window",
            Strategy::ImsicMsiPageTable { .. } => "imsic-msi-page-table",
            Strategy::ImsicKernelWindow { .. } => "imsic-kernel-window",
        }
    }

    /// The software MSI window the device will use (Arm strategies).
    pub fn msi_window(&self) -> Option<IovaRange> {
        match self {
            Strategy::UserWindow { window } => Some(window.range()),
            Strategy::KernelWindow { window } => Some(*window),
            Strategy::ImsicKernelWindow { window } => Some(*window),
            Strategy::ImsicMsiPageTable { .. } => None,
        }
    }
}

/// Something the VMM must do or verify at run time for the plan to hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeCheck {
    /// KVM must accept the controller at `base` (`KVM_VGIC_ITS_ADDR_TYPE` for the vITS, the
    /// per-hart IMSIC addresses for the vIMSIC).
    ControllerAddress {
        /// The frame base.
        base: u64,
    },
    /// Before attach: set `IOMMU_OPTION_SW_MSI_START` then `SW_MSI_SIZE` on the device and
    /// read both back.
    SetWindowBeforeAttach {
        /// The window.
        window: SwMsiWindow,
    },
    /// After attach: `IOMMU_IOAS_IOVA_RANGES` must not allow any IOVA of the window
    /// ([`Plan::check_iova_ranges`]).
    WindowReservedAfterAttach {
        /// The window.
        window: IovaRange,
    },
    /// After attach under the user window: the guest map uses the driver's default window,
    /// so `IOMMU_IOAS_MAP` there must succeed (it fails with `EINVAL` if the kernel still
    /// reserves it).
    DefaultWindowReleased {
        /// The driver's default window.
        window: IovaRange,
    },
    /// After VFIO enables the first vector and before any address rewrite, the device's own
    /// MSI-X table entry (read through the `MSIX_MAPPABLE` mapping) must hold `expected`;
    /// another value means the kernel used another doorbell page and the plan is wrong
    /// ([`Plan::check_device_address`]).
    DeviceTableAddress {
        /// The address the plan expects.
        expected: u64,
    },
    /// Like [`RuntimeCheck::DeviceTableAddress`] for a controller with one doorbell page per
    /// host CPU (RISC-V IMSIC, [`Strategy::ImsicKernelWindow`]): the entry must hold a page
    /// of `window`, the page of the host hart the vector targets.
    DeviceTablePageInWindow {
        /// The software MSI window.
        window: IovaRange,
    },
    /// Before enabling each vector, hand the guest's address to VFIO with
    /// `VFIO_IRQ_SET_DATA_MSI_IOVA | VFIO_IRQ_SET_ACTION_PREPARE`.
    SetIovaBeforeEnable,
    /// After every VFIO enable, re-enable or device reset, write the guest's address words
    /// into the real MSI-X table through the `MSIX_MAPPABLE` mapping and read them back.
    RewriteAfterEnable,
}

impl fmt::Display for RuntimeCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeCheck::ControllerAddress { base } => write!(
                f,
                "KVM must accept the controller frame at {base:#x} (vITS: KVM_VGIC_ITS_ADDR_TYPE; vIMSIC: KVM_DEV_RISCV_AIA_ADDR_IMSIC of each vCPU)"
            ),
            RuntimeCheck::SetWindowBeforeAttach { window } => write!(
                f,
                "before attach: set IOMMU_OPTION_SW_MSI_START = {:#x} then IOMMU_OPTION_SW_MSI_SIZE = {} on the device and read both back (EADDRINUSE: a reserved region the planner was not told about; EBUSY: already attached)",
                window.start, window.size_mib
            ),
            RuntimeCheck::WindowReservedAfterAttach { window } => write!(
                f,
                "after attach: IOMMU_IOAS_IOVA_RANGES must leave {window} as a hole; if it allows any of it the kernel is not using this window: error"
            ),
            RuntimeCheck::DefaultWindowReleased { window } => write!(
                f,
                "after attach: guest RAM in the driver's default window {window} must map (IOMMU_IOAS_MAP); EINVAL means the window option was not applied: error"
            ),
            RuntimeCheck::DeviceTableAddress { expected } => write!(
                f,
                "after VFIO enables the first vector, the device's MSI-X table (MSIX_MAPPABLE mapping) must hold address {expected:#x}; if the kernel used another doorbell page the plan is wrong: error"
            ),
            RuntimeCheck::DeviceTablePageInWindow { window } => write!(
                f,
                "after VFIO enables the first vector, the device's MSI-X table (MSIX_MAPPABLE mapping) must hold a page of {window} (the target host hart's IMSIC page); any other address means the kernel does not map the harts' pages there: error"
            ),
            RuntimeCheck::SetIovaBeforeEnable => write!(
                f,
                "before enabling each vector: VFIO_DEVICE_SET_IRQS with VFIO_IRQ_SET_DATA_MSI_IOVA | VFIO_IRQ_SET_ACTION_PREPARE carrying the guest's address"
            ),
            RuntimeCheck::RewriteAfterEnable => write!(
                f,
                "after every VFIO enable, re-enable or device reset: write the guest's address words into the real MSI-X table (MSIX_MAPPABLE mapping) and read them back"
            ),
        }
    }
}

/// The planner's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// How the physical doorbell reaches the controller's doorbell GPA.
    pub strategy: Strategy,
    /// The controller frame base: the vITS base (`KVM_VGIC_ITS_ADDR_TYPE`) on Arm, the
    /// vIMSIC region base (hart 0's supervisor file) on RISC-V.
    pub controller_base: u64,
    /// The whole controller frame (128 KiB for the vITS; the vIMSIC region).
    pub controller_frame: IovaRange,
    /// The doorbell the guest programs without a vIOMMU (and maps its gIOVA to with one):
    /// `controller_base + 0x10040` for the vITS, hart 0's file for the vIMSIC.
    pub doorbell_gpa: u64,
    /// How the guest's address reaches the device (for `msi-trap`'s write-through).
    pub policy: DoorbellPolicy,
    /// The doorbell page index the plan assumes (Arm), see [`PlanInput::pgoff`].
    pub pgoff: Option<u32>,
    /// The host page size.
    pub page_size: u64,
    /// What the VMM must do and verify at run time, in order.
    pub checks: Vec<RuntimeCheck>,
    /// The report.
    pub report: Report,
}

impl Plan {
    /// The window to set with `iommufd_ioas::Iommufd::set_sw_msi_window` before attach
    /// (strategy 1 only).
    pub fn window_to_set(&self) -> Option<SwMsiWindow> {
        match self.strategy {
            Strategy::UserWindow { window } => Some(window),
            _ => None,
        }
    }

    /// The software MSI window the device uses (Arm strategies).
    pub fn msi_window(&self) -> Option<IovaRange> {
        self.strategy.msi_window()
    }

    /// The run-time check of [`RuntimeCheck::DeviceTableAddress`] and
    /// [`RuntimeCheck::DeviceTablePageInWindow`]: `observed` is the address
    /// the device's first enabled MSI-X entry holds after VFIO enabled it (before any
    /// write-through rewrite). Says which doorbell page the kernel used when it is not the
    /// assumed one.
    pub fn check_device_address(&self, observed: u64) -> Result<(), PlanError> {
        let Some(window) = self.msi_window() else {
            return Err(PlanError::CheckNotApplicable {
                check: "device table address",
                why: "the plan has no software MSI window (RISC-V)",
            });
        };
        let expected = self.doorbell_gpa;
        if let Strategy::ImsicKernelWindow { .. } = self.strategy {
            // One page per host hart: the kernel programs the target hart's page.
            if window.contains(observed) && observed.is_multiple_of(self.page_size.max(1)) {
                return Ok(());
            }
            return Err(PlanError::DoorbellMismatch {
                expected,
                observed,
                detail: format!(
                    "not a page of the window {window}: the kernel does not map the harts' IMSIC pages there (patches 0003-0004 missing?)"
                ),
            });
        }
        if observed == expected {
            return Ok(());
        }
        let page = self.page_size;
        // `doorbell_gpa` lies in the window by construction; its offset in the host page is
        // the physical doorbell's.
        let in_page = expected.saturating_sub(window.start) % page.max(1);
        let detail = if window.contains(observed) {
            let off = observed - window.start;
            if off % page == in_page {
                format!(
                    "the kernel mapped the doorbell at page {} of the window {window}, not at the assumed pgoff {}: plan again with pgoff {}",
                    off / page,
                    self.pgoff.unwrap_or(0),
                    off / page
                )
            } else {
                format!(
                    "the address is inside the window {window} but not at the doorbell's page offset {in_page:#x}: another doorbell or a different physical ITS"
                )
            }
        } else {
            format!(
                "the address is outside the window {window}: the kernel did not use the planned window (option not applied, or a hardware MSI region)"
            )
        };
        Err(PlanError::DoorbellMismatch {
            expected,
            observed,
            detail,
        })
    }

    /// The run-time check of [`RuntimeCheck::WindowReservedAfterAttach`]: the IOAS's allowed
    /// ranges after attach must not include any IOVA of the window.
    pub fn check_iova_ranges(&self, ranges: &IovaRanges) -> Result<(), PlanError> {
        let Some(window) = self.msi_window() else {
            return Err(PlanError::CheckNotApplicable {
                check: "IOVA ranges",
                why: "the plan has no software MSI window (RISC-V)",
            });
        };
        match ranges.ranges().iter().find(|r| r.overlaps(&window)) {
            Some(allowed) => Err(PlanError::WindowNotReserved {
                window,
                allowed: *allowed,
            }),
            None => Ok(()),
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.report.fmt(f)
    }
}

/// Plans the doorbell: see the crate documentation for the strategies.
///
/// Every error says which input prevents a plan. A returned plan satisfies
/// [`check_plan`](crate::check_plan) (property test `plans_satisfy_invariants`).
pub fn plan(input: &PlanInput) -> Result<Plan, PlanError> {
    let ctx = Ctx::new(input)?;
    if ctx.geom.arm {
        ctx.plan_arm()
    } else {
        ctx.plan_riscv()
    }
}

pub(crate) fn kind_name(kind: &ReservedKind) -> String {
    match kind {
        ReservedKind::Direct => "direct".to_string(),
        ReservedKind::DirectRelaxable => "direct-relaxable".to_string(),
        ReservedKind::Reserved => "reserved".to_string(),
        ReservedKind::Msi => "msi".to_string(),
        ReservedKind::Other(s) => s.clone(),
    }
}

/// Whether a reserved region constrains the guest: every kind but `direct-relaxable`,
/// which iommufd does not reserve (`iopt_table_enforce_dev_resv_regions` skips it).
pub(crate) fn is_hole(region: &ReservedRegion) -> bool {
    region.kind != ReservedKind::DirectRelaxable
}

/// The resolved Arm strategy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ArmStrategy {
    User,
    Kernel,
}

/// The validated input and the facts derived from it.
pub(crate) struct Ctx<'a> {
    pub input: &'a PlanInput,
    pub geom: Geometry,
    pub max_gpa: u64,
    pub page: u64,
    pub notes: Vec<String>,
}

/// Where the vITS and the window go, before the write-through policy is chosen.
pub(crate) struct ArmPlacement {
    pub strategy: Strategy,
    pub base: u64,
    pub frame: IovaRange,
    pub doorbell: u64,
    pub why: Vec<String>,
    /// The driver's default window, when the user window replaces it.
    pub replaced: Option<IovaRange>,
}

impl<'a> Ctx<'a> {
    /// Validates everything that does not depend on the strategy.
    pub(crate) fn new(input: &'a PlanInput) -> Result<Self, PlanError> {
        for (what, count, max) in [
            ("guest RAM list", input.guest.ram.len(), MAX_GUEST_RANGES),
            ("guest MMIO list", input.guest.mmio.len(), MAX_GUEST_RANGES),
            (
                "host reserved region list",
                input.host.reserved.len(),
                MAX_HOST_REGIONS,
            ),
        ] {
            if count > max {
                return Err(PlanError::TooManyRanges { what, count, max });
            }
        }
        let geom = input.controller.validate()?;
        let page = input.host.page_size;
        let controller = input.controller.name();
        if geom.arm {
            if !matches!(page, 0x1000 | 0x4000 | 0x1_0000) || page > geom.align {
                return Err(PlanError::InvalidPageSize {
                    page_size: page,
                    controller,
                    allowed: "4 KiB, 16 KiB or 64 KiB, and at most the ITS frame alignment",
                });
            }
        } else if page != 0x1000 {
            return Err(PlanError::InvalidPageSize {
                page_size: page,
                controller,
                allowed: "4 KiB (IMSIC interrupt files are 4 KiB pages)",
            });
        }
        let max_gpa = input.guest.max_gpa()?;
        let ipa_bits = input.guest.ipa_bits;

        for (index, r) in input.guest.ram.iter().enumerate() {
            let aligned = r.start.is_multiple_of(page)
                && r.last.checked_add(1).is_none_or(|e| e.is_multiple_of(page));
            if !aligned {
                return Err(PlanError::MisalignedRam {
                    index,
                    range: *r,
                    page_size: page,
                });
            }
            if r.last > max_gpa {
                return Err(PlanError::OutsideIpa {
                    what: format!("guest RAM {index}"),
                    range: *r,
                    ipa_bits,
                });
            }
        }
        for m in &input.guest.mmio {
            if m.range.last > max_gpa {
                return Err(PlanError::OutsideIpa {
                    what: format!("guest MMIO {:?}", m.name),
                    range: m.range,
                    ipa_bits,
                });
            }
        }
        // Guest RAM and MMIO must be pairwise disjoint: sorted by start, each range must
        // begin after the previous one ends (so the previous one also ends highest).
        let mut guest: Vec<(GuestObj<'_>, IovaRange)> = guest_objects(input).collect();
        guest.sort_by_key(|(_, r)| r.start);
        let mut prev: Option<(GuestObj<'_>, IovaRange)> = None;
        for (obj, r) in guest {
            if let Some((p, pr)) = prev
                && pr.last >= r.start
            {
                return Err(PlanError::Overlap {
                    what: p.label(),
                    range: pr,
                    other: obj.label(),
                    other_range: r,
                });
            }
            prev = Some((obj, r));
        }

        let mut notes = Vec::new();
        for region in &input.host.reserved {
            match &region.kind {
                ReservedKind::Direct => {
                    return Err(PlanError::NeedsRmr {
                        why: format!(
                            "host reserved region {} is `direct` (an IORT RMR or RMRR): the device needs it identity-mapped (IOVA = PA) at all times, which in a guest means reserving it in guest physical space and describing it to the guest's firmware tables as an RMR",
                            region.range
                        ),
                    });
                }
                ReservedKind::DirectRelaxable => notes.push(format!(
                    "host reserved region {} (direct-relaxable) ignored: iommufd does not reserve relaxable direct regions for an assigned device",
                    region.range
                )),
                ReservedKind::Other(kind) => notes.push(format!(
                    "host reserved region {} has unknown type {kind:?}: treated as `reserved`",
                    region.range
                )),
                ReservedKind::Reserved | ReservedKind::Msi => {}
            }
        }
        Ok(Ctx {
            input,
            geom,
            max_gpa,
            page,
            notes,
        })
    }

    /// The single `msi` region of an Arm host, if any.
    pub(crate) fn msi_region(&self) -> Result<Option<IovaRange>, PlanError> {
        let msis: Vec<&ReservedRegion> = self
            .input
            .host
            .reserved
            .iter()
            .filter(|r| r.kind == ReservedKind::Msi)
            .collect();
        match msis.as_slice() {
            [] => Ok(None),
            [one] => {
                if !one.range.start.is_multiple_of(self.page) {
                    return Err(PlanError::InvalidInput {
                        what: format!(
                            "host msi region {} does not start on a {:#x}-byte page, so iommufd cannot map doorbell pages in it",
                            one.range, self.page
                        ),
                    });
                }
                Ok(Some(one.range))
            }
            many => Err(PlanError::MultipleMsiRegions {
                count: many.len(),
                // At most a few are printed: the list comes from the host and may be long.
                regions: many
                    .iter()
                    .take(4)
                    .map(|r| r.range.to_string())
                    .chain((many.len() > 4).then(|| "...".to_string()))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    pub(crate) fn arm_strategy(&self) -> Result<ArmStrategy, PlanError> {
        let has = self.input.kernel.sw_msi_window_option;
        match (self.input.strategy, has) {
            (StrategyChoice::Auto | StrategyChoice::UserWindow, true) => Ok(ArmStrategy::User),
            (StrategyChoice::UserWindow, false) => Err(PlanError::UserWindowUnavailable),
            (StrategyChoice::Auto | StrategyChoice::KernelWindow, _) => Ok(ArmStrategy::Kernel),
        }
    }

    /// Checks that guest RAM misses every reserved region that is a hole, except `exempt`.
    fn check_ram_vs_reserved(&self, exempt: Option<IovaRange>) -> Result<(), PlanError> {
        for (index, ram) in self.input.guest.ram.iter().enumerate() {
            for region in self.holes(exempt) {
                if ram.overlaps(&region.range) {
                    return Err(PlanError::Overlap {
                        what: format!("guest RAM {index}"),
                        range: *ram,
                        other: format!("host reserved region ({})", kind_name(&region.kind)),
                        other_range: region.range,
                    });
                }
            }
        }
        Ok(())
    }

    /// Reserved regions that are holes, except the one equal to `exempt`.
    pub(crate) fn holes(
        &self,
        exempt: Option<IovaRange>,
    ) -> impl Iterator<Item = &'a ReservedRegion> + 'a {
        self.input.host.reserved.iter().filter(move |r| {
            is_hole(r) && !(r.kind == ReservedKind::Msi && Some(r.range) == exempt)
        })
    }

    /// Checks that `range` (named `what`) misses guest RAM and MMIO.
    fn check_vs_guest(&self, what: &str, range: IovaRange) -> Result<(), PlanError> {
        match guest_objects(self.input).find(|(_, r)| range.overlaps(r)) {
            Some((obj, r)) => Err(PlanError::Overlap {
                what: what.to_string(),
                range,
                other: obj.label(),
                other_range: r,
            }),
            None => Ok(()),
        }
    }

    /// Checks that `range` (named `what`) misses every hole but `exempt`.
    fn check_vs_reserved(
        &self,
        what: &str,
        range: IovaRange,
        exempt: Option<IovaRange>,
    ) -> Result<(), PlanError> {
        if let Some(region) = self.holes(exempt).find(|r| r.range.overlaps(&range)) {
            return Err(PlanError::Overlap {
                what: what.to_string(),
                range,
                other: format!("host reserved region ({})", kind_name(&region.kind)),
                other_range: region.range,
            });
        }
        Ok(())
    }

    fn frame_at(&self, base: u64, what: &str) -> Result<IovaRange, PlanError> {
        match IovaRange::from_len(base, self.geom.frame_size) {
            Some(frame) if frame.last <= self.max_gpa => Ok(frame),
            _ => Err(PlanError::OutsideIpa {
                what: what.to_string(),
                range: IovaRange {
                    start: base,
                    last: base.saturating_add(self.geom.frame_size - 1),
                },
                ipa_bits: self.input.guest.ipa_bits,
            }),
        }
    }

    /// Sorted, merged obstacles for a free-space search: guest RAM, MMIO, and every hole
    /// but `exempt`.
    pub(crate) fn obstacles(&self, exempt: Option<IovaRange>, ram: bool) -> Vec<IovaRange> {
        let mut all: Vec<IovaRange> = self.input.guest.mmio.iter().map(|m| m.range).collect();
        if ram {
            all.extend(self.input.guest.ram.iter().copied());
        }
        all.extend(self.holes(exempt).map(|r| r.range));
        space::merged(all)
    }

    /// Doorbell page offset within the window (`pgoff * page`) and the doorbell's offset in
    /// its page (`translater % page`; the physical ITS frame is 64 KiB aligned and the page
    /// is at most that, so the physical doorbell's page offset is the translater's).
    fn doorbell_offsets(&self) -> Result<(u64, u64), PlanError> {
        let pgoff = self.input.pgoff;
        if pgoff >= MAX_SW_MSI_PAGES {
            return Err(PlanError::PgoffTooLarge {
                pgoff,
                max: MAX_SW_MSI_PAGES,
            });
        }
        // pgoff < 64 and page <= 64 KiB: no overflow.
        Ok((
            u64::from(pgoff) * self.page,
            self.geom.doorbell_offset % self.page,
        ))
    }

    /// Strategy 2: the vITS goes where the kernel maps the doorbell.
    pub(crate) fn place_kernel_window(&self, window: IovaRange) -> Result<ArmPlacement, PlanError> {
        let (page_off, in_page) = self.doorbell_offsets()?;
        let translater = self.geom.doorbell_offset;
        let align = self.geom.align;
        let page_iova = window.start.checked_add(page_off);
        let fits = page_iova
            .and_then(|p| p.checked_add(self.page - 1))
            .is_some_and(|last| last <= window.last);
        let (Some(page_iova), true) = (page_iova, fits) else {
            return Err(PlanError::DoorbellOutsideWindow {
                pgoff: self.input.pgoff,
                page_size: self.page,
                window,
            });
        };
        let doorbell = page_iova + in_page;
        let base = match doorbell.checked_sub(translater) {
            Some(b) if b.is_multiple_of(align) => b,
            Some(b) => {
                return Err(PlanError::DoorbellUnplaceable {
                    doorbell,
                    base: format!("{b:#x}"),
                    align,
                });
            }
            None => {
                return Err(PlanError::DoorbellUnplaceable {
                    doorbell,
                    base: format!("-{:#x}", translater - doorbell),
                    align,
                });
            }
        };
        if let Some(preferred) = self.input.preferred_base
            && preferred != base
        {
            if !preferred.is_multiple_of(align) {
                return Err(PlanError::MisalignedPreferredBase {
                    controller: self.input.controller.name(),
                    base: preferred,
                    align,
                });
            }
            return Err(PlanError::PreferredBaseConflict {
                preferred,
                required: base,
            });
        }
        let frame = self.frame_at(base, "vITS frame")?;
        self.check_ram_vs_reserved(None)?;
        self.check_vs_guest("software MSI window", window)?;
        self.check_vs_guest("vITS frame", frame)?;
        self.check_vs_reserved("vITS frame", frame, Some(window))?;
        let why = vec![
            if self.input.kernel.sw_msi_window_option {
                "kernel window chosen by the caller although the kernel could move the window"
                    .to_string()
            } else {
                "the kernel has no IOMMU_OPTION_SW_MSI_START (upstream): iommufd maps the physical doorbell page in the driver's software MSI window".to_string()
            },
            format!(
                "iommufd maps the doorbell page at window start {:#x} + pgoff {} * page {:#x} = {page_iova:#x}; the doorbell keeps its page offset {in_page:#x}, so the device is programmed with {doorbell:#x}",
                window.start, self.input.pgoff, self.page
            ),
            format!(
                "the vITS is placed at {base:#x} so that its GITS_TRANSLATER (+{translater:#x}) is {doorbell:#x}; guest RAM and MMIO stay out of the window {window} and the frame {frame}"
            ),
        ];
        Ok(ArmPlacement {
            strategy: Strategy::KernelWindow { window },
            base,
            frame,
            doorbell,
            why,
            replaced: None,
        })
    }

    /// The user window's geometry: its size in MiB and the frame base's offset from the
    /// window start (may be negative).
    fn user_window_shape(&self) -> Result<(u64, i128), PlanError> {
        let (page_off, in_page) = self.doorbell_offsets()?;
        // (pgoff + 1) pages, at most 64 * 64 KiB: no overflow.
        let size_mib = (page_off + self.page).div_ceil(SW_MSI_ALIGN).max(1);
        let frame_off = i128::from(page_off + in_page) - i128::from(self.geom.doorbell_offset);
        if frame_off.rem_euclid(i128::from(self.geom.align)) != 0 {
            return Err(PlanError::InvalidInput {
                what: format!(
                    "doorbell page index (pgoff) {} with {:#x}-byte pages puts GITS_TRANSLATER at offset {:#x} of a 1 MiB-aligned window, which no {:#x}-aligned vITS can match",
                    self.input.pgoff,
                    self.page,
                    page_off + in_page,
                    self.geom.align
                ),
            });
        }
        Ok((size_mib, frame_off))
    }

    /// Strategy 1: the window goes where the vITS's doorbell is.
    pub(crate) fn place_user_window(&self, default: IovaRange) -> Result<ArmPlacement, PlanError> {
        let (size_mib, frame_off) = self.user_window_shape()?;
        let align = self.geom.align;
        self.check_ram_vs_reserved(Some(default))?;
        let mut why = vec![format!(
            "the kernel has IOMMU_OPTION_SW_MSI_START/SIZE: the device's software MSI window is moved to the vITS's doorbell, and the driver's default window {default} is not reserved for it"
        )];
        let (start, base) = match self.input.preferred_base {
            Some(base) => {
                if !base.is_multiple_of(align) {
                    return Err(PlanError::MisalignedPreferredBase {
                        controller: self.input.controller.name(),
                        base,
                        align,
                    });
                }
                let start = i128::from(base) - frame_off;
                let start = u64::try_from(start)
                    .ok()
                    .filter(|s| s.is_multiple_of(SW_MSI_ALIGN))
                    .ok_or_else(|| PlanError::PreferredBaseUnreachable {
                        base,
                        reason: format!(
                            "its GITS_TRANSLATER would need a window starting at {start:#x}, which is not a 1 MiB-aligned address (with pgoff {} and {:#x}-byte pages the vITS base must be {:#x} modulo 1 MiB)",
                            self.input.pgoff,
                            self.page,
                            frame_off.rem_euclid(i128::from(SW_MSI_ALIGN))
                        ),
                    })?;
                why.push(format!("the vITS is at the preferred base {base:#x}"));
                (start, base)
            }
            None => {
                let lo = frame_off.min(0);
                let win_len = i128::from(size_mib) * i128::from(SW_MSI_ALIGN);
                let hi = win_len.max(frame_off + i128::from(self.geom.frame_size));
                // Both fit in u64: |lo| < 2^17 and hi < 2^32.
                let lead = (-lo) as u64;
                let span = (hi - lo) as u64;
                let obstacles = self.obstacles(Some(default), true);
                let start = space::lowest_fit(&obstacles, self.max_gpa, SW_MSI_ALIGN, lead, span)
                    .ok_or(PlanError::NoFreeSpace {
                    what: "vITS frame and software MSI window",
                    size: span,
                    ipa_bits: self.input.guest.ipa_bits,
                })?;
                let base = (i128::from(start) + frame_off) as u64;
                why.push(format!(
                    "no preferred base: the lowest 1 MiB-aligned window whose vITS frame and window miss guest RAM, guest MMIO and host reserved regions starts at {start:#x}"
                ));
                (start, base)
            }
        };
        let window = SwMsiWindow::new(start, size_mib)
            .map_err(|reason| PlanError::PreferredBaseUnreachable { base, reason })?;
        let frame = self.frame_at(base, "vITS frame")?;
        let range = window.range();
        if range.last > self.max_gpa {
            return Err(PlanError::OutsideIpa {
                what: "software MSI window".to_string(),
                range,
                ipa_bits: self.input.guest.ipa_bits,
            });
        }
        if let Some(region) = self.holes(Some(default)).find(|r| r.range.overlaps(&range)) {
            return Err(PlanError::WindowOverlapsReserved {
                window: range,
                region: region.range,
                kind: kind_name(&region.kind),
            });
        }
        self.check_vs_reserved("vITS frame", frame, Some(default))?;
        self.check_vs_guest("software MSI window", range)?;
        self.check_vs_guest("vITS frame", frame)?;
        let (page_off, in_page) = self.doorbell_offsets()?;
        let doorbell = start + page_off + in_page;
        why.push(format!(
            "window {range} ({size_mib} MiB): iommufd maps the doorbell page at {:#x} and the device is programmed with {doorbell:#x}, the vITS's GITS_TRANSLATER",
            start + page_off
        ));
        Ok(ArmPlacement {
            strategy: Strategy::UserWindow { window },
            base,
            frame,
            doorbell,
            why,
            replaced: Some(default),
        })
    }

    pub(crate) fn place_arm(&self) -> Result<ArmPlacement, PlanError> {
        let msi = self.msi_region()?;
        let strategy = self.arm_strategy()?;
        let name = match strategy {
            ArmStrategy::User => "the user window",
            ArmStrategy::Kernel => "the kernel window",
        };
        // The proposed option only replaces a software MSI region the driver reports
        // (iopt_table_enforce_dev_resv_regions): without one there is nothing to move.
        let window = msi.ok_or(PlanError::NoMsiRegion { strategy: name })?;
        match strategy {
            ArmStrategy::User => self.place_user_window(window),
            ArmStrategy::Kernel => self.place_kernel_window(window),
        }
    }

    fn plan_arm(mut self) -> Result<Plan, PlanError> {
        let placement = self.place_arm()?;
        let device = self.input.device;
        let (policy, policy_why) = self.policy(placement.doorbell)?;
        let mut checks = vec![RuntimeCheck::ControllerAddress {
            base: placement.base,
        }];
        let window = placement.strategy.msi_window();
        if let Strategy::UserWindow { window } = placement.strategy {
            checks.push(RuntimeCheck::SetWindowBeforeAttach { window });
        }
        if let Some(window) = window {
            checks.push(RuntimeCheck::WindowReservedAfterAttach { window });
        }
        if let Some(default) = placement.replaced
            && self.input.guest.ram.iter().any(|r| r.overlaps(&default))
        {
            checks.push(RuntimeCheck::DefaultWindowReleased { window: default });
        }
        match policy {
            DoorbellPolicy::KernelProgrammed { .. }
            | DoorbellPolicy::KernelProgrammedWindow { .. }
            | DoorbellPolicy::TableAddressWrite => {
                if device.msix_mappable {
                    checks.push(RuntimeCheck::DeviceTableAddress {
                        expected: placement.doorbell,
                    });
                } else {
                    self.notes.push(
                        "the MSI-X table is not MSIX_MAPPABLE: the address the kernel programs cannot be read back, so the pgoff assumption is not verified at run time".to_string(),
                    );
                }
                if policy == DoorbellPolicy::TableAddressWrite {
                    checks.push(RuntimeCheck::RewriteAfterEnable);
                }
            }
            DoorbellPolicy::PerVectorIova => {
                checks.push(RuntimeCheck::SetIovaBeforeEnable);
                self.notes.push(
                    "with per-vector IOVAs the device never holds the kernel's doorbell address, so the pgoff assumption cannot be observed; it holds with one physical ITS per iommufd".to_string(),
                );
            }
        }
        if device.has_msi && !matches!(policy, DoorbellPolicy::KernelProgrammed { .. }) {
            self.notes.push(
                "the device's MSI capability cannot carry the guest's address (VFIO virtualizes it): hide MSI from the guest and use MSI-X".to_string(),
            );
        }
        let mut why = placement.why;
        why.push(policy_why);
        let pgoff = self.input.pgoff;
        Ok(self.finish(
            placement.strategy,
            placement.base,
            placement.frame,
            placement.doorbell,
            policy,
            Some(pgoff),
            checks,
            why,
        ))
    }

    /// RISC-V: where the vIMSIC goes, before the kernel capability is consulted.
    pub(crate) fn place_imsic(&self) -> Result<(IovaRange, &'static str), PlanError> {
        self.check_ram_vs_reserved(None)?;
        let size = self.geom.frame_size;
        match self.input.preferred_base {
            Some(base) => {
                if !base.is_multiple_of(self.geom.align) {
                    return Err(PlanError::MisalignedPreferredBase {
                        controller: self.input.controller.name(),
                        base,
                        align: self.geom.align,
                    });
                }
                let region = self.frame_at(base, "vIMSIC region")?;
                self.check_vs_guest("vIMSIC region", region)?;
                self.check_vs_reserved("vIMSIC region", region, None)?;
                Ok((region, "the vIMSIC is at the preferred base"))
            }
            None => {
                let obstacles = self.obstacles(None, true);
                let base = space::lowest_fit(&obstacles, self.max_gpa, self.geom.align, 0, size)
                    .ok_or(PlanError::NoFreeSpace {
                        what: "vIMSIC region",
                        size,
                        ipa_bits: self.input.guest.ipa_bits,
                    })?;
                let region = self.frame_at(base, "vIMSIC region")?;
                Ok((
                    region,
                    "no preferred base: the lowest size-aligned place that misses guest RAM, guest MMIO and host reserved regions",
                ))
            }
        }
    }

    fn plan_riscv(mut self) -> Result<Plan, PlanError> {
        if self.input.strategy != StrategyChoice::Auto {
            return Err(PlanError::InvalidInput {
                what: format!(
                    "strategy {:?} is an Arm software MSI window strategy; RISC-V has none",
                    self.input.strategy
                ),
            });
        }
        if !self.input.kernel.riscv_msi_remap {
            return self.plan_riscv_kernel_window();
        }
        let (region, placed_why) = self.place_imsic()?;
        let doorbell = region.start;
        let (policy, policy_why) = self.policy(doorbell)?;
        let mut checks = vec![RuntimeCheck::ControllerAddress { base: region.start }];
        checks.push(match policy {
            DoorbellPolicy::PerVectorIova => RuntimeCheck::SetIovaBeforeEnable,
            _ => RuntimeCheck::RewriteAfterEnable,
        });
        self.notes.push(
            "RISC-V kernel path declared by the caller (KernelCaps::riscv_msi_remap): the planner cannot probe it".to_string(),
        );
        let hart_stride = match self.input.controller {
            crate::ControllerGeometry::RiscvImsic {
                guest_index_bits, ..
            } => 1u64 << (12 + u32::from(guest_index_bits)),
            crate::ControllerGeometry::ArmGicv3Its { .. } => 0,
        };
        let why = vec![
            format!("vIMSIC region {region}: {placed_why}"),
            format!(
                "hart h's supervisor interrupt file is at {:#x} + h * {hart_stride:#x} (AIA 1.0 3.6); the guest programs the file of the target hart, so the address varies per vector",
                region.start
            ),
            "the IOMMU's MSI page table redirects writes to those guest addresses to the harts' guest interrupt files (AIA 1.0 8.4), so the guest's address itself must reach the device".to_string(),
            policy_why,
        ];
        Ok(self.finish(
            Strategy::ImsicMsiPageTable { region },
            region.start,
            region,
            doorbell,
            policy,
            None,
            checks,
            why,
        ))
    }

    /// RISC-V without the MSI page table: the kernel's software MSI window, if the host has
    /// exactly one `msi` region (else [`PlanError::NoRiscvKernelStrategy`]).
    fn plan_riscv_kernel_window(mut self) -> Result<Plan, PlanError> {
        let windows: Vec<IovaRange> = self
            .input
            .host
            .reserved
            .iter()
            .filter(|r| r.kind == ReservedKind::Msi)
            .map(|r| r.range)
            .collect();
        let [window] = windows.as_slice() else {
            let (region, _) = self.place_imsic()?;
            return Err(PlanError::NoRiscvKernelStrategy { region });
        };
        let window = *window;
        if self.input.guest_viommu {
            return Err(PlanError::InvalidInput {
                what: "a guest vIOMMU with the RISC-V kernel window: the guest's gIOVA cannot reach the device (the host's page must stay in its table)".to_string(),
            });
        }
        if let Some(base) = self.input.preferred_base
            && base != window.start
        {
            return Err(PlanError::InvalidInput {
                what: format!(
                    "preferred vIMSIC base {base:#x}: with the kernel window the vIMSIC must start at the window {window}"
                ),
            });
        }
        self.check_ram_vs_reserved(None)?;
        if !window.start.is_multiple_of(self.geom.align) {
            return Err(PlanError::ImsicWindowMisaligned {
                window,
                align: self.geom.align,
            });
        }
        self.check_vs_guest("software MSI window", window)?;
        let region = self.frame_at(window.start, "vIMSIC region")?;
        if region.last > window.last {
            return Err(PlanError::InvalidInput {
                what: format!(
                    "vIMSIC region {region} is larger than the host's MSI window {window}"
                ),
            });
        }
        self.check_vs_guest("vIMSIC region", region)?;
        self.check_vs_reserved("vIMSIC region", region, Some(window))?;
        let policy = DoorbellPolicy::KernelProgrammedWindow {
            start: window.start,
            last: window.last,
        };
        let mut checks = vec![
            RuntimeCheck::ControllerAddress { base: region.start },
            RuntimeCheck::WindowReservedAfterAttach { window },
        ];
        if self.input.device.msix_mappable {
            checks.push(RuntimeCheck::DeviceTablePageInWindow { window });
        }
        self.notes.push(
            "the kernel maps host hart h's IMSIC page at window + h * 4 KiB (riscv64 test kernel, patches 0003-0004); the planner cannot probe that, the device table check verifies it".to_string(),
        );
        let stride = match self.input.controller {
            ControllerGeometry::RiscvImsic {
                guest_index_bits, ..
            } => IMSIC_PAGE_SIZE << guest_index_bits,
            ControllerGeometry::ArmGicv3Its { .. } => IMSIC_PAGE_SIZE,
        };
        let why = vec![
            if stride == IMSIC_PAGE_SIZE {
                format!(
                    "vIMSIC region {region}: at the start of the host's software MSI window {window}, so guest hart h's interrupt file has the IOVA of host hart h's (AIA 1.0 3.6: one 4 KiB page per hart)"
                )
            } else {
                format!(
                    "vIMSIC region {region}: at the start of the host's software MSI window {window}, in its IOVA hole; with guest interrupt files a hart's supervisor file is every {stride:#x} bytes (AIA 1.0 3.6), so guest hart h's page is not host hart h's"
                )
            },
            "the device keeps the address and data the host kernel programs (the target host hart's page, a host identity); the guest's vectors reach it through VFIO eventfds, irqfds and KVM MSI routes to its vIMSIC pages".to_string(),
        ];
        Ok(self.finish(
            Strategy::ImsicKernelWindow { window },
            region.start,
            region,
            region.start,
            policy,
            None,
            checks,
            why,
        ))
    }

    /// The write-through policy (docs/design.md, layer 3 for a vIOMMU).
    fn policy(&self, doorbell: u64) -> Result<(DoorbellPolicy, String), PlanError> {
        let caps = self.input.kernel;
        let device = self.input.device;
        if self.geom.arm && !self.input.guest_viommu {
            return Ok((
                DoorbellPolicy::KernelProgrammed {
                    doorbell_iova: doorbell,
                },
                format!(
                    "no guest vIOMMU: the guest programs {doorbell:#x}, exactly what the kernel programs into the device, so write-through is exact and no RMR exists anywhere"
                ),
            ));
        }
        let reason = if self.geom.arm {
            "the guest has a vIOMMU: it programs a gIOVA that its stage 1 maps to the doorbell GPA, and the device must be given that gIOVA"
        } else {
            "the guest programs the vIMSIC address of the target hart, which differs per vector"
        };
        if caps.per_vector_msi_iova {
            return Ok((
                DoorbellPolicy::PerVectorIova,
                format!(
                    "{reason}: the kernel takes one IOVA per vector (VFIO_IRQ_SET_DATA_MSI_IOVA)"
                ),
            ));
        }
        if device.msix_mappable {
            return Ok((
                DoorbellPolicy::TableAddressWrite,
                format!(
                    "{reason}: the kernel lacks VFIO_IRQ_SET_DATA_MSI_IOVA, so the VMM writes the address words into the MSIX_MAPPABLE table after VFIO enables each vector"
                ),
            ));
        }
        let why = format!(
            "{reason}, but the kernel lacks VFIO_IRQ_SET_DATA_MSI_IOVA and the device's MSI-X table is not MSIX_MAPPABLE"
        );
        if self.geom.arm {
            Err(PlanError::NeedsRmr {
                why: format!(
                    "{why}; the kernel would program {doorbell:#x}, which only works if the guest identity-maps the doorbell window in its stage 1"
                ),
            })
        } else {
            Err(PlanError::NoWriteThrough { why })
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        self,
        strategy: Strategy,
        controller_base: u64,
        controller_frame: IovaRange,
        doorbell_gpa: u64,
        policy: DoorbellPolicy,
        pgoff: Option<u32>,
        checks: Vec<RuntimeCheck>,
        why: Vec<String>,
    ) -> Plan {
        let report = Report {
            controller: self.input.controller.name().to_string(),
            strategy: strategy.name().to_string(),
            controller_frame: ReportRange::from(controller_frame),
            doorbell_gpa,
            msi_window: strategy.msi_window().map(ReportRange::from),
            set_window: match strategy {
                Strategy::UserWindow { window } => Some(ReportWindow {
                    start: window.start,
                    size_mib: window.size_mib,
                }),
                _ => None,
            },
            write_through: policy.name().to_string(),
            kernel_doorbell_iova: match policy {
                DoorbellPolicy::KernelProgrammed { doorbell_iova } => Some(doorbell_iova),
                _ => None,
            },
            pgoff,
            page_size: self.page,
            why,
            verify: checks.iter().map(ToString::to_string).collect(),
            notes: self.notes,
        };
        Plan {
            strategy,
            controller_base,
            controller_frame,
            doorbell_gpa,
            policy,
            pgoff,
            page_size: self.page,
            checks,
            report,
        }
    }
}

/// A guest RAM or MMIO range, named only when an error needs it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum GuestObj<'a> {
    Ram(usize),
    Mmio(&'a str),
}

impl GuestObj<'_> {
    pub(crate) fn label(&self) -> String {
        match self {
            GuestObj::Ram(i) => format!("guest RAM {i}"),
            GuestObj::Mmio(name) => format!("guest MMIO {name:?}"),
        }
    }
}

/// Guest RAM then guest MMIO, in input order.
pub(crate) fn guest_objects(
    input: &PlanInput,
) -> impl Iterator<Item = (GuestObj<'_>, IovaRange)> + '_ {
    input
        .guest
        .ram
        .iter()
        .enumerate()
        .map(|(i, r)| (GuestObj::Ram(i), *r))
        .chain(
            input
                .guest
                .mmio
                .iter()
                .map(|m| (GuestObj::Mmio(m.name.as_str()), m.range)),
        )
}
