// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What the planner is told: the guest memory map, the host's reserved regions, the
//! kernel's capabilities, the device, and the interrupt controller's geometry.

use hw_defs::iova::IovaRange;
use hw_defs::reserved::ReservedRegion;

use crate::error::PlanError;

/// `GITS_TRANSLATER` offset in a GICv3 ITS register frame: the second 64 KiB frame
/// (translation register page) plus 0x40 (IHI 0069H 12.19.1 "GITS_TRANSLATER").
pub const GITS_TRANSLATER_OFFSET: u64 = hw_defs::gic::GITS_TRANSLATER;
/// Size of a GICv3 ITS register frame: the 64 KiB control frame and the 64 KiB translation
/// register frame (IHI 0069H 12.1 "The ITS register map").
pub const ITS_FRAME_SIZE: u64 = 0x2_0000;
/// Alignment of a GICv3 ITS frame, which KVM also requires of the in-kernel vITS base
/// (`KVM_VGIC_ITS_ADDR_TYPE` refuses an address that is not 64 KiB aligned).
pub const ITS_ALIGN: u64 = 0x1_0000;
/// Size of one IMSIC interrupt file page (RISC-V AIA 1.0 3.5).
pub const IMSIC_PAGE_SIZE: u64 = 0x1000;
/// Largest guest index bits of an IMSIC layout (AIA device-tree binding
/// `riscv,guest-index-bits`).
pub const IMSIC_MAX_GUEST_INDEX_BITS: u8 = 7;
/// Largest hart index bits of an IMSIC layout (`riscv,hart-index-bits`): at most 2^15 harts.
pub const IMSIC_MAX_HART_INDEX_BITS: u8 = 15;
/// The alignment and granule of a software MSI window set through the proposed
/// `IOMMU_OPTION_SW_MSI_START`/`SIZE` (1 MiB).
pub const SW_MSI_ALIGN: u64 = hw_defs::msi_window::SW_MSI_ALIGN;
/// iommufd tracks the software MSI pages of one iommufd in a 64-bit bitmap and refuses a
/// 65th doorbell page with `EOVERFLOW`, so a doorbell page index (pgoff) is below this.
pub const MAX_SW_MSI_PAGES: u32 = 64;
/// Most guest RAM ranges, and most guest MMIO ranges, the planner accepts.
pub const MAX_GUEST_RANGES: usize = 256;
/// Most host reserved regions the planner accepts (the bound the sysfs parser applies).
pub const MAX_HOST_REGIONS: usize = hw_defs::reserved::MAX_RESERVED_REGIONS;
/// KVM/arm64's default guest IPA size when the VM type does not ask for another.
pub const DEFAULT_IPA_BITS: u8 = 40;

/// A named guest MMIO range (GIC distributor, redistributors, UART, PCIe ECAM, PCIe
/// windows, ...). The name only appears in errors and in the report.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NamedRange {
    /// What it is.
    pub name: String,
    /// Where it is.
    pub range: IovaRange,
}

impl NamedRange {
    /// A named range.
    pub fn new(name: impl Into<String>, range: IovaRange) -> Self {
        NamedRange {
            name: name.into(),
            range,
        }
    }

    /// A named range `start..start + len`; `None` when `len` is 0 or the end overflows.
    pub fn from_len(name: impl Into<String>, start: u64, len: u64) -> Option<Self> {
        Some(Self::new(name, IovaRange::from_len(start, len)?))
    }
}

/// The guest physical memory map the VMM intends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestMap {
    /// Guest RAM. All of it is DMA-mapped for the device at IOVA = GPA, so it must be host
    /// page aligned and stay out of every host reserved region and of the MSI window.
    pub ram: Vec<IovaRange>,
    /// Other fixed guest MMIO the VMM uses. The controller frame and the MSI window must
    /// avoid it.
    pub mmio: Vec<NamedRange>,
    /// Guest IPA size in bits (32..=64); nothing is placed at or above `2^ipa_bits`.
    pub ipa_bits: u8,
}

impl Default for GuestMap {
    fn default() -> Self {
        GuestMap {
            ram: Vec::new(),
            mmio: Vec::new(),
            ipa_bits: DEFAULT_IPA_BITS,
        }
    }
}

impl GuestMap {
    /// The last guest physical address (`2^ipa_bits - 1`), or an error for an IPA size
    /// outside 32..=64 (KVM/arm64 accepts 32 to 52 bits; RISC-V G-stage modes give 41, 50
    /// or 59).
    pub fn max_gpa(&self) -> Result<u64, PlanError> {
        match self.ipa_bits {
            64 => Ok(u64::MAX),
            32..=63 => Ok((1u64 << self.ipa_bits) - 1),
            bits => Err(PlanError::InvalidInput {
                what: format!("guest IPA size {bits} bits is outside 32..=64"),
            }),
        }
    }
}

/// What the host says about the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    /// The reserved regions of the device's IOMMU group
    /// (`iommufd_ioas::IommuGroup::reserved_regions`, readable before attach).
    ///
    /// - `msi`: on Arm SMMUv3 the driver's software MSI window (`0x8000000-0x80fffff`).
    ///   Exactly one is required on Arm: iommufd refuses to attach a device with more than
    ///   one software MSI window or with both software and hardware MSI regions.
    /// - `direct`: an IORT RMR / RMRR. The device needs it identity-mapped, which the guest
    ///   could only honour through an RMR: planning fails with [`PlanError::NeedsRmr`].
    /// - `direct-relaxable`: ignored, as iommufd ignores it (it does not reserve IOVA).
    /// - `reserved` and unknown kinds: holes that guest RAM, the controller and the MSI
    ///   window must avoid.
    pub reserved: Vec<ReservedRegion>,
    /// The host page size (the IOMMU mapping granule of iommufd's software MSI pages).
    pub page_size: u64,
}

/// What the running kernel offers, from the probes of `iommufd-ioas` and `vfio-cdev`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KernelCaps {
    /// `IOMMU_OPTION_SW_MSI_START`/`SIZE` (proposed, not upstream):
    /// `iommufd_ioas::Iommufd::probe_sw_msi_window` answered `Available`.
    pub sw_msi_window_option: bool,
    /// `VFIO_IRQ_SET_DATA_MSI_IOVA` (proposed RFC, not upstream): the per-vector IOVA probe
    /// answered `Available`.
    pub per_vector_msi_iova: bool,
    /// RISC-V only: the kernel remaps device MSIs through the RISC-V IOMMU's MSI page table
    /// to guest interrupt files (out-of-tree RFC). The planner cannot probe this; set it only
    /// on a kernel known to carry that series.
    pub riscv_msi_remap: bool,
}

impl KernelCaps {
    /// What upstream Linux 7.2 offers: none of the proposed UAPI.
    pub const UPSTREAM: KernelCaps = KernelCaps {
        sw_msi_window_option: false,
        per_vector_msi_iova: false,
        riscv_msi_remap: false,
    };
}

/// What the device offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DeviceFacts {
    /// The MSI-X table's BAR region carries `VFIO_REGION_INFO_CAP_MSIX_MAPPABLE`: the VMM
    /// may mmap the page holding the table, read the address the kernel programmed and
    /// write address words.
    pub msix_mappable: bool,
    /// The device has an MSI (not MSI-X) capability the guest may use. VFIO virtualizes it
    /// in config space, so its address can be neither read back nor written through.
    pub has_msi: bool,
}

/// The VMM's virtual interrupt controller: where its doorbell sits inside its frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControllerGeometry {
    /// A GICv3 ITS (KVM's in-kernel vITS). Use [`ControllerGeometry::GICV3_ITS`].
    ArmGicv3Its {
        /// Size of the register frame (0x20000).
        frame_size: u64,
        /// Offset of `GITS_TRANSLATER`, the doorbell (0x10040).
        translater_offset: u64,
        /// Alignment of the frame base (0x10000).
        align: u64,
    },
    /// A RISC-V IMSIC as the guest sees it: one supervisor-level interrupt file per hart,
    /// each followed by `2^guest_index_bits - 1` guest files, in one group (AIA 1.0 3.6 with
    /// no group index bits). The region is `2^(k + 12 + guest_index_bits)` bytes,
    /// `k = ceil(log2(harts))`, aligned to its size; hart `h`'s supervisor file is at
    /// `base + h * 2^(12 + guest_index_bits)`.
    RiscvImsic {
        /// Number of harts (1..=2^15).
        harts: u32,
        /// Guest index bits (0 for a guest without nested virtualization; at most 7).
        guest_index_bits: u8,
    },
}

/// A controller geometry checked for consistency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub frame_size: u64,
    pub doorbell_offset: u64,
    pub align: u64,
    pub arm: bool,
}

impl ControllerGeometry {
    /// The GICv3 ITS: a 128 KiB frame, 64 KiB aligned, `GITS_TRANSLATER` at 0x10040.
    pub const GICV3_ITS: ControllerGeometry = ControllerGeometry::ArmGicv3Its {
        frame_size: ITS_FRAME_SIZE,
        translater_offset: GITS_TRANSLATER_OFFSET,
        align: ITS_ALIGN,
    };

    /// A single-group supervisor-only vIMSIC for `harts` harts.
    pub const fn riscv_imsic(harts: u32) -> ControllerGeometry {
        ControllerGeometry::RiscvImsic {
            harts,
            guest_index_bits: 0,
        }
    }

    /// A short name for errors and reports.
    pub fn name(&self) -> &'static str {
        match self {
            ControllerGeometry::ArmGicv3Its { .. } => "GICv3 ITS",
            ControllerGeometry::RiscvImsic { .. } => "RISC-V IMSIC",
        }
    }

    /// Checks the geometry and returns its frame size, doorbell offset and alignment.
    pub(crate) fn validate(&self) -> Result<Geometry, PlanError> {
        let controller = self.name();
        let bad = |reason: String| PlanError::InvalidGeometry { controller, reason };
        match *self {
            ControllerGeometry::ArmGicv3Its {
                frame_size,
                translater_offset,
                align,
            } => {
                // The window start is 1 MiB aligned, so a frame alignment above that could
                // not be combined with it; the architecture's is 64 KiB.
                if !align.is_power_of_two() || !(IMSIC_PAGE_SIZE..=SW_MSI_ALIGN).contains(&align) {
                    return Err(bad(format!(
                        "alignment {align:#x} is not a power of two in 0x1000..=0x100000"
                    )));
                }
                if frame_size == 0 || !frame_size.is_multiple_of(align) {
                    return Err(bad(format!(
                        "frame size {frame_size:#x} is not a non-zero multiple of the alignment {align:#x}"
                    )));
                }
                // GITS_TRANSLATER is a 32-bit register inside the frame.
                if !translater_offset.is_multiple_of(4)
                    || translater_offset
                        .checked_add(4)
                        .is_none_or(|end| end > frame_size)
                {
                    return Err(bad(format!(
                        "doorbell offset {translater_offset:#x} is not a 4-byte aligned register inside the {frame_size:#x}-byte frame"
                    )));
                }
                Ok(Geometry {
                    frame_size,
                    doorbell_offset: translater_offset,
                    align,
                    arm: true,
                })
            }
            ControllerGeometry::RiscvImsic {
                harts,
                guest_index_bits,
            } => {
                if harts == 0 || harts > 1 << IMSIC_MAX_HART_INDEX_BITS {
                    return Err(bad(format!(
                        "{harts} harts is outside 1..={}",
                        1u32 << IMSIC_MAX_HART_INDEX_BITS
                    )));
                }
                if guest_index_bits > IMSIC_MAX_GUEST_INDEX_BITS {
                    return Err(bad(format!(
                        "guest index bits {guest_index_bits} is above {IMSIC_MAX_GUEST_INDEX_BITS}"
                    )));
                }
                // k + 12 + guest bits <= 15 + 12 + 7 = 34: no overflow.
                let hart_bits = 32 - (harts - 1).leading_zeros();
                let size = 1u64 << (hart_bits + 12 + u32::from(guest_index_bits));
                Ok(Geometry {
                    frame_size: size,
                    doorbell_offset: 0,
                    align: size,
                    arm: false,
                })
            }
        }
    }
}

/// Which Arm strategy to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum StrategyChoice {
    /// The user window when the kernel has it, else the kernel window.
    #[default]
    Auto,
    /// The user window (strategy 1); an error when the kernel lacks it.
    UserWindow,
    /// The kernel window (strategy 2), even when the kernel could move the window.
    KernelWindow,
}

/// Everything the planner needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanInput {
    /// The guest memory map.
    pub guest: GuestMap,
    /// The host's reserved regions and page size.
    pub host: HostFacts,
    /// The kernel's capabilities.
    pub kernel: KernelCaps,
    /// The device's facts.
    pub device: DeviceFacts,
    /// Whether the guest has a vIOMMU (it then programs a gIOVA, not the doorbell GPA).
    pub guest_viommu: bool,
    /// The virtual interrupt controller.
    pub controller: ControllerGeometry,
    /// Where the VMM would like the controller frame (vITS base, vIMSIC region base).
    /// Honoured exactly or refused with an error; never silently moved.
    pub preferred_base: Option<u64>,
    /// The doorbell page index iommufd will use: the number of distinct physical doorbell
    /// pages this iommufd mapped in the same window before this device's. 0 with one
    /// physical ITS (the test host, and most machines). Ignored for RISC-V.
    pub pgoff: u32,
    /// Which Arm strategy to use.
    pub strategy: StrategyChoice,
}

impl PlanInput {
    /// An input with an empty guest map (IPA size [`DEFAULT_IPA_BITS`]), no reserved
    /// regions, upstream kernel capabilities, a device without `MSIX_MAPPABLE` or MSI, no
    /// vIOMMU, no preferred base, pgoff 0 and [`StrategyChoice::Auto`].
    pub fn new(controller: ControllerGeometry, page_size: u64) -> Self {
        PlanInput {
            guest: GuestMap::default(),
            host: HostFacts {
                reserved: Vec::new(),
                page_size,
            },
            kernel: KernelCaps::UPSTREAM,
            device: DeviceFacts::default(),
            guest_viommu: false,
            controller,
            preferred_base: None,
            pgoff: 0,
            strategy: StrategyChoice::Auto,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gicv3_geometry_is_valid() {
        let g = ControllerGeometry::GICV3_ITS.validate().unwrap();
        assert_eq!(
            (g.frame_size, g.doorbell_offset, g.align),
            (0x20000, 0x10040, 0x10000)
        );
    }

    #[test]
    fn bad_its_geometries_are_refused() {
        for (frame_size, translater_offset, align) in [
            (0x20000, 0x10040, 0),
            (0x20000, 0x10040, 0x18000),
            (0x20000, 0x10040, 0x20_0000),
            (0, 0x10040, 0x10000),
            (0x18000, 0x10040, 0x10000),
            (0x20000, 0x20000, 0x10000),
            (0x20000, 0x1fffe, 0x10000),
            (0x20000, u64::MAX, 0x10000),
        ] {
            let g = ControllerGeometry::ArmGicv3Its {
                frame_size,
                translater_offset,
                align,
            };
            assert!(
                matches!(g.validate(), Err(PlanError::InvalidGeometry { .. })),
                "{g:?}"
            );
        }
    }

    #[test]
    fn imsic_region_follows_aia_3_6() {
        let size = |harts, gib| {
            ControllerGeometry::RiscvImsic {
                harts,
                guest_index_bits: gib,
            }
            .validate()
            .map(|g| (g.frame_size, g.align))
        };
        assert_eq!(size(1, 0), Ok((0x1000, 0x1000)));
        assert_eq!(size(4, 0), Ok((0x4000, 0x4000)));
        assert_eq!(size(5, 0), Ok((0x8000, 0x8000)));
        assert_eq!(size(4, 2), Ok((0x10000, 0x10000)));
        assert_eq!(size(1 << 15, 7), Ok((1 << 34, 1 << 34)));
        assert!(size(0, 0).is_err());
        assert!(size((1 << 15) + 1, 0).is_err());
        assert!(size(1, 8).is_err());
    }

    #[test]
    fn ipa_bits_are_bounded() {
        let mut g = GuestMap::default();
        assert_eq!(g.max_gpa(), Ok((1 << 40) - 1));
        g.ipa_bits = 64;
        assert_eq!(g.max_gpa(), Ok(u64::MAX));
        g.ipa_bits = 31;
        assert!(g.max_gpa().is_err());
        g.ipa_bits = 65;
        assert!(g.max_gpa().is_err());
    }
}
