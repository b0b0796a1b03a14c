// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The guest physical memory map (IPA space) of the VM.
//!
//! [`MemoryLayout`] is plain data: every region is a public field, so a doorbell planner can
//! move the vITS (or anything else) and then call [`MemoryLayout::validate`], which holds
//! every rule the VMM relies on:
//!
//! - every region is non-empty, 64 KiB aligned in base and size, and does not wrap;
//! - no two regions overlap (`tests::overlaps_are_named`);
//! - nothing but the vITS intersects the host's MSI window (`IOMMU_RESV_SW_MSI`,
//!   0x0800_0000 + 1 MiB on Arm SMMUv3): that window is where the host kernel maps the
//!   physical doorbell, so the only guest object allowed there is the virtual doorbell the
//!   planner chose to put on it (`tests::only_the_its_may_sit_in_the_msi_window`);
//! - RAM starts 2 MiB aligned (the arm64 boot protocol places the Image at a 2 MiB aligned
//!   base, Linux `Documentation/arch/arm64/booting.rst` section 4) and ends within the IPA
//!   space;
//! - the PCIe 32-bit MMIO window ends at or below 4 GiB, and the ECAM window is a whole
//!   number of buses (1 MiB each, PCIe Base 6.0 7.2.2).
//!
//! The default map (one vCPU, 512 MiB):
//!
//! | region | base | size |
//! |---|---|---|
//! | GIC distributor | 0x0400_0000 | 64 KiB |
//! | GIC redistributors | 0x0402_0000 | 128 KiB per vCPU |
//! | 16550 UART | 0x0600_0000 | 64 KiB |
//! | vITS | 0x07ff_0000 | 128 KiB (`GITS_TRANSLATER` at 0x0800_0040) |
//! | PCIe 32-bit MMIO | 0x1000_0000 | 512 MiB |
//! | PCIe ECAM (bus 0) | 0x3000_0000 | 1 MiB |
//! | RAM | 0x4000_0000 | 512 MiB |

use std::fmt;

use serde::Serialize;

/// 64 KiB: the alignment of every region (the largest arm64 page size, so that any region
/// can be mapped or trapped on its own whatever the host's page size).
pub const REGION_ALIGN: u64 = 0x1_0000;
/// 2 MiB: the alignment of the RAM base (arm64 Image placement).
pub const RAM_ALIGN: u64 = 0x20_0000;
/// Size of one GICv3 redistributor: the RD_base and SGI_base 64 KiB frames (IHI 0069H
/// 12.10, "The GIC Redistributor register map"); no VLPI frames, this is not a GICv4.
pub const GICR_SIZE_PER_CPU: u64 = 0x2_0000;
/// Size of the ITS register space: the control frame and the translation frame (IHI 0069H
/// 12.19, "The ITS register map"), as KVM expects (`KVM_VGIC_V3_ITS_SIZE`).
pub const ITS_SIZE: u64 = hw_defs::gic::ITS_SIZE;
/// Size of the virtual SMMUv3's register frame: page 0 and page 1 (Arm IHI 0070 6.1, 64 KiB
/// pages), at a 128 KiB aligned base.
pub const SMMU_SIZE: u64 = 0x2_0000;
/// Where the virtual SMMUv3 goes with `--viommu smmuv3`: between the UART and the vITS's
/// default place, below the host MSI window and below any RAM base the VMM allows (the
/// patched-kernel runs put RAM at 0x8000000).
pub const DEFAULT_SMMU_BASE: u64 = 0x0700_0000;
/// Offset of `GITS_TRANSLATER` from the ITS base: frame 1 (ITS_base + 0x10000), register
/// 0x0040 (IHI 0069H 12.19.23).
pub const GITS_TRANSLATER_OFFSET: u64 = hw_defs::gic::GITS_TRANSLATER;
/// Size of the ECAM space of one bus: 32 devices x 8 functions x 4 KiB (PCIe Base 6.0 7.2.2).
pub const ECAM_BUS_SIZE: u64 = 0x10_0000;
/// The host's MSI window on Arm (Linux `MSI_IOVA_BASE`, `MSI_IOVA_LENGTH`), where an
/// upstream kernel maps the physical ITS doorbell for a VFIO device.
pub const HOST_MSI_WINDOW: Region = Region::new(0x0800_0000, 0x10_0000);
/// The default vITS base: `GITS_TRANSLATER` then lands on 0x0800_0040, the IOVA an
/// upstream host kernel gives the physical doorbell (`sw_msi_start` + 0x40).
pub const DEFAULT_ITS_BASE: u64 = 0x07ff_0000;
/// The default guest RAM size, 512 MiB.
pub const DEFAULT_RAM_SIZE: u64 = 512 << 20;
/// The default IPA size KVM gives a VM created with machine type 0 (40 bits).
pub const DEFAULT_IPA_BITS: u8 = 40;

/// A guest physical range `[base, base + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Region {
    /// First address.
    pub base: u64,
    /// Length in bytes.
    pub size: u64,
}

impl Region {
    /// A region of `size` bytes at `base`.
    pub const fn new(base: u64, size: u64) -> Self {
        Region { base, size }
    }

    /// One past the last address, or `None` when the region wraps the address space.
    pub const fn end(&self) -> Option<u64> {
        self.base.checked_add(self.size)
    }

    /// Whether `addr` lies in the region.
    pub const fn contains(&self, addr: u64) -> bool {
        addr >= self.base && addr - self.base < self.size
    }

    /// Whether the two regions share at least one address (empty regions share none).
    /// Works for regions that reach the top of the address space.
    pub const fn overlaps(&self, other: &Region) -> bool {
        if self.size == 0 || other.size == 0 {
            return false;
        }
        if self.base <= other.base {
            other.base - self.base < self.size
        } else {
            self.base - other.base < other.size
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.end() {
            Some(end) => write!(f, "{:#x}..{:#x}", self.base, end),
            None => write!(f, "{:#x}+{:#x} (wraps)", self.base, self.size),
        }
    }
}

/// What a region of the memory map holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegionKind {
    /// GICv3 distributor (`GICD_*`).
    GicDistributor,
    /// GICv3 redistributors, one per vCPU.
    GicRedistributors,
    /// The in-kernel vITS register frames.
    Its,
    /// 16550 UART.
    Uart,
    /// PCIe ECAM configuration space.
    PciEcam,
    /// PCIe 32-bit memory window (BARs).
    PciMmio32,
    /// Guest RAM.
    Ram,
    /// The virtual SMMUv3's register frame (page 0 and page 1).
    Smmu,
    /// RISC-V: the vIMSIC, one supervisor-level interrupt file per vCPU (`layout_riscv`).
    Imsic,
    /// RISC-V: KVM's in-kernel APLIC (`layout_riscv`).
    Aplic,
}

impl fmt::Display for RegionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegionKind::GicDistributor => "GIC distributor",
            RegionKind::GicRedistributors => "GIC redistributors",
            RegionKind::Its => "vITS",
            RegionKind::Uart => "UART",
            RegionKind::PciEcam => "PCIe ECAM",
            RegionKind::PciMmio32 => "PCIe MMIO32 window",
            RegionKind::Ram => "RAM",
            RegionKind::Smmu => "vSMMUv3",
            RegionKind::Imsic => "vIMSIC",
            RegionKind::Aplic => "APLIC",
        })
    }
}

/// A memory map that breaks one of the rules of [`MemoryLayout::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A region of size zero.
    #[error("memory layout: {kind} at {base:#x} is empty")]
    Empty {
        /// The region.
        kind: RegionKind,
        /// Its base.
        base: u64,
    },
    /// A region whose end does not fit in 64 bits.
    #[error("memory layout: {kind} at {base:#x} with size {size:#x} wraps the address space")]
    Wraps {
        /// The region.
        kind: RegionKind,
        /// Its base.
        base: u64,
        /// Its size.
        size: u64,
    },
    /// A base or size off its required alignment.
    #[error("memory layout: {kind} {region} is not {align:#x} aligned")]
    Misaligned {
        /// The region.
        kind: RegionKind,
        /// Where it is.
        region: Region,
        /// The alignment it needs.
        align: u64,
    },
    /// Two regions overlap.
    #[error("memory layout: {a} {region_a} overlaps {b} {region_b}")]
    Overlap {
        /// The first region.
        a: RegionKind,
        /// Where it is.
        region_a: Region,
        /// The second region.
        b: RegionKind,
        /// Where it is.
        region_b: Region,
    },
    /// A region other than the vITS in the host's MSI window.
    #[error("memory layout: {kind} {region} intersects the host MSI window {window}")]
    InMsiWindow {
        /// The region.
        kind: RegionKind,
        /// Where it is.
        region: Region,
        /// The window.
        window: Region,
    },
    /// A region beyond a limit (IPA size, 4 GiB for the 32-bit window).
    #[error("memory layout: {kind} {region} ends above {limit:#x}")]
    AboveLimit {
        /// The region.
        kind: RegionKind,
        /// Where it is.
        region: Region,
        /// The limit.
        limit: u64,
    },
    /// No vCPU, or more than fit the redistributor space that the map can describe.
    #[error("memory layout: {cpus} vCPUs (1..={max} are supported)")]
    Cpus {
        /// The count asked for.
        cpus: u32,
        /// The most accepted.
        max: u32,
    },
    /// An IPA size KVM cannot give.
    #[error("memory layout: IPA size of {bits} bits (32..=52 are possible)")]
    IpaBits {
        /// The size asked for.
        bits: u8,
    },
}

/// The most vCPUs the VMM creates. KVM/arm64 allows more, but each one needs a
/// redistributor and a thread; 64 keeps the default map's redistributors (8 MiB) far below
/// the UART.
pub const MAX_CPUS: u32 = 64;

/// The guest's physical memory map.
///
/// # Example
///
/// ```
/// use passthrough_vmm::layout::{MemoryLayout, HOST_MSI_WINDOW};
///
/// let mut layout = MemoryLayout::new(2, 256 << 20);
/// layout.validate()?;
/// assert_eq!(layout.its_doorbell(), 0x0800_0040);
/// assert!(HOST_MSI_WINDOW.contains(layout.its_doorbell()));
///
/// // A planner that wants the doorbell on the second page of the window moves the vITS.
/// layout.its.base = 0x0800_0000;
/// layout.validate()?;
/// assert_eq!(layout.its_doorbell(), 0x0801_0040);
///
/// // RAM may not take the window.
/// layout.ram.base = 0x0800_0000;
/// assert!(layout.validate().is_err());
/// # Ok::<(), passthrough_vmm::layout::LayoutError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryLayout {
    /// Number of vCPUs; sizes the redistributor region.
    pub cpus: u32,
    /// GICv3 distributor.
    pub gicd: Region,
    /// Base of the redistributor region; its size is `cpus` x [`GICR_SIZE_PER_CPU`].
    pub gicr_base: u64,
    /// The vITS register frames (base chosen by the doorbell planner; size [`ITS_SIZE`]).
    pub its: Region,
    /// The 16550 UART.
    pub uart: Region,
    /// PCIe ECAM; a whole number of buses starting at bus 0.
    pub ecam: Region,
    /// The PCIe 32-bit memory window BARs are placed in.
    pub pci_mmio32: Region,
    /// Guest RAM.
    pub ram: Region,
    /// The virtual SMMUv3 (`--viommu smmuv3`), when the guest has one.
    pub smmu: Option<Region>,
    /// The host's MSI window that only the vITS may intersect, if any.
    pub host_msi_window: Option<Region>,
    /// IPA size of the VM in bits.
    pub ipa_bits: u8,
}

impl Default for MemoryLayout {
    fn default() -> Self {
        MemoryLayout::new(1, DEFAULT_RAM_SIZE)
    }
}

impl MemoryLayout {
    /// The default map for `cpus` vCPUs and `ram_size` bytes of RAM (not yet validated).
    pub fn new(cpus: u32, ram_size: u64) -> Self {
        MemoryLayout {
            cpus,
            gicd: Region::new(0x0400_0000, 0x1_0000),
            gicr_base: 0x0402_0000,
            its: Region::new(DEFAULT_ITS_BASE, ITS_SIZE),
            uart: Region::new(0x0600_0000, 0x1_0000),
            ecam: Region::new(0x3000_0000, ECAM_BUS_SIZE),
            pci_mmio32: Region::new(0x1000_0000, 0x2000_0000),
            ram: Region::new(0x4000_0000, ram_size),
            smmu: None,
            host_msi_window: Some(HOST_MSI_WINDOW),
            ipa_bits: DEFAULT_IPA_BITS,
        }
    }

    /// The redistributor region: `cpus` x 128 KiB at `gicr_base` (saturating, so an absurd
    /// count gives a region that fails validation instead of wrapping).
    pub fn gicr(&self) -> Region {
        Region::new(
            self.gicr_base,
            u64::from(self.cpus).saturating_mul(GICR_SIZE_PER_CPU),
        )
    }

    /// The guest physical address of `GITS_TRANSLATER`, the MSI doorbell the guest programs
    /// into devices and the address of KVM MSI routes.
    pub fn its_doorbell(&self) -> u64 {
        self.its.base.wrapping_add(GITS_TRANSLATER_OFFSET)
    }

    /// Number of PCI buses the ECAM window decodes (at most 256).
    pub fn ecam_buses(&self) -> u32 {
        (self.ecam.size / ECAM_BUS_SIZE).min(256) as u32
    }

    /// Every region with what it holds, in address order.
    pub fn regions(&self) -> Vec<(RegionKind, Region)> {
        let mut all = vec![
            (RegionKind::GicDistributor, self.gicd),
            (RegionKind::GicRedistributors, self.gicr()),
            (RegionKind::Its, self.its),
            (RegionKind::Uart, self.uart),
            (RegionKind::PciEcam, self.ecam),
            (RegionKind::PciMmio32, self.pci_mmio32),
            (RegionKind::Ram, self.ram),
        ];
        if let Some(smmu) = self.smmu {
            all.push((RegionKind::Smmu, smmu));
        }
        all.sort_by_key(|(_, r)| r.base);
        all
    }

    /// Checks every rule listed in the module documentation.
    pub fn validate(&self) -> Result<(), LayoutError> {
        if self.cpus == 0 || self.cpus > MAX_CPUS {
            return Err(LayoutError::Cpus {
                cpus: self.cpus,
                max: MAX_CPUS,
            });
        }
        if !(32..=52).contains(&self.ipa_bits) {
            return Err(LayoutError::IpaBits {
                bits: self.ipa_bits,
            });
        }
        let regions = self.regions();
        for &(kind, region) in &regions {
            if region.size == 0 {
                return Err(LayoutError::Empty {
                    kind,
                    base: region.base,
                });
            }
            if region.end().is_none() {
                return Err(LayoutError::Wraps {
                    kind,
                    base: region.base,
                    size: region.size,
                });
            }
            let align = match kind {
                RegionKind::Ram => RAM_ALIGN,
                RegionKind::PciEcam => ECAM_BUS_SIZE,
                _ => REGION_ALIGN,
            };
            if region.base % align != 0 || region.size % REGION_ALIGN != 0 {
                return Err(LayoutError::Misaligned {
                    kind,
                    region,
                    align,
                });
            }
        }
        if let Some(smmu) = self.smmu
            && (smmu.size != SMMU_SIZE || smmu.base % SMMU_SIZE != 0)
        {
            return Err(LayoutError::Misaligned {
                kind: RegionKind::Smmu,
                region: smmu,
                align: SMMU_SIZE,
            });
        }
        if self.its.size != ITS_SIZE {
            return Err(LayoutError::Misaligned {
                kind: RegionKind::Its,
                region: self.its,
                align: ITS_SIZE,
            });
        }
        if !self.ecam.size.is_multiple_of(ECAM_BUS_SIZE) || self.ecam.size > 256 * ECAM_BUS_SIZE {
            return Err(LayoutError::Misaligned {
                kind: RegionKind::PciEcam,
                region: self.ecam,
                align: ECAM_BUS_SIZE,
            });
        }
        // Sorted by base: each region need only be checked against the later ones; the
        // count is 7, so the pairwise check is cheap and names both culprits.
        for (i, &(a, ra)) in regions.iter().enumerate() {
            for &(b, rb) in regions.iter().skip(i + 1) {
                if ra.overlaps(&rb) {
                    return Err(LayoutError::Overlap {
                        a,
                        region_a: ra,
                        b,
                        region_b: rb,
                    });
                }
            }
        }
        if let Some(window) = self.host_msi_window {
            for &(kind, region) in &regions {
                if kind != RegionKind::Its && region.overlaps(&window) {
                    return Err(LayoutError::InMsiWindow {
                        kind,
                        region,
                        window,
                    });
                }
            }
        }
        let four_gib = 1u64 << 32;
        // end() is Some: checked above.
        if self.pci_mmio32.end().unwrap_or(u64::MAX) > four_gib {
            return Err(LayoutError::AboveLimit {
                kind: RegionKind::PciMmio32,
                region: self.pci_mmio32,
                limit: four_gib,
            });
        }
        let ipa_limit = 1u64 << self.ipa_bits;
        for &(kind, region) in &regions {
            if region.end().unwrap_or(u64::MAX) > ipa_limit {
                return Err(LayoutError::AboveLimit {
                    kind,
                    region,
                    limit: ipa_limit,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default map (not through `Default`, so tests can edit it field by field).
    fn base() -> MemoryLayout {
        MemoryLayout::new(1, DEFAULT_RAM_SIZE)
    }

    #[test]
    fn default_map_is_valid_and_as_documented() {
        let l = base();
        l.validate().unwrap();
        assert_eq!(l.gicd, Region::new(0x0400_0000, 0x1_0000));
        assert_eq!(l.gicr(), Region::new(0x0402_0000, 0x2_0000));
        assert_eq!(l.uart.base, 0x0600_0000);
        assert_eq!(l.its, Region::new(0x07ff_0000, 0x2_0000));
        assert_eq!(l.its_doorbell(), 0x0800_0040);
        assert_eq!(l.ecam, Region::new(0x3000_0000, 0x10_0000));
        assert_eq!(l.ecam_buses(), 1);
        assert_eq!(l.pci_mmio32.end(), Some(0x3000_0000));
        assert_eq!(l.ram, Region::new(0x4000_0000, 512 << 20));
        // Address order, no duplicates.
        let bases: Vec<u64> = l.regions().iter().map(|(_, r)| r.base).collect();
        assert!(bases.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn region_arithmetic_at_the_edges() {
        let top = Region::new(u64::MAX - 0x1000, 0x1000);
        assert_eq!(top.end(), Some(u64::MAX));
        assert!(top.contains(u64::MAX - 1));
        assert!(!top.contains(u64::MAX));
        // The last byte of the address space has no exclusive end: such a region wraps.
        let wraps = Region::new(u64::MAX - 0xfff, 0x1000);
        assert_eq!(wraps.end(), None);
        assert!(wraps.overlaps(&top));
        assert!(!Region::new(0, 0x1000).overlaps(&Region::new(0x1000, 0x1000)));
        assert!(Region::new(0, 0x1001).overlaps(&Region::new(0x1000, 0x1000)));
        assert!(!Region::new(0x1000, 0).overlaps(&Region::new(0, 0x10000)));
        assert_eq!(Region::new(0x10, 0x10).to_string(), "0x10..0x20");
    }

    #[test]
    fn overlaps_are_named() {
        let mut l = base();
        l.uart.base = 0x0400_0000;
        match l.validate() {
            Err(LayoutError::Overlap { a, b, .. }) => {
                let pair = [a, b];
                assert!(pair.contains(&RegionKind::Uart));
                assert!(pair.contains(&RegionKind::GicDistributor));
            }
            other => panic!("{other:?}"),
        }
        // Too many redistributors run into the UART.
        let mut l = MemoryLayout::new(MAX_CPUS, DEFAULT_RAM_SIZE);
        l.gicr_base = 0x05f0_0000;
        assert!(matches!(l.validate(), Err(LayoutError::Overlap { .. })));
    }

    #[test]
    fn only_the_its_may_sit_in_the_msi_window() {
        let mut l = base();
        // The vITS straddles the window start by design.
        assert!(l.its.overlaps(&HOST_MSI_WINDOW));
        l.validate().unwrap();
        l.its.base = 0x080f_0000;
        l.validate().unwrap();
        l.its.base = DEFAULT_ITS_BASE;
        l.uart.base = 0x0808_0000;
        assert_eq!(
            l.validate(),
            Err(LayoutError::InMsiWindow {
                kind: RegionKind::Uart,
                region: Region::new(0x0808_0000, 0x1_0000),
                window: HOST_MSI_WINDOW,
            })
        );
        // Without a window, the same place is fine.
        l.host_msi_window = None;
        l.validate().unwrap();
    }

    #[test]
    fn alignment_and_limits() {
        let mut l = base();
        l.its.base = 0x07ff_8000;
        assert!(matches!(
            l.validate(),
            Err(LayoutError::Misaligned {
                kind: RegionKind::Its,
                ..
            })
        ));
        let mut l = base();
        l.ram.base = 0x4001_0000; // 64 KiB but not 2 MiB aligned
        assert!(matches!(
            l.validate(),
            Err(LayoutError::Misaligned {
                kind: RegionKind::Ram,
                ..
            })
        ));
        let mut l = base();
        l.ram.size = 0;
        assert!(matches!(l.validate(), Err(LayoutError::Empty { .. })));
        let mut l = base();
        l.ram.size = !0xffff;
        assert!(matches!(l.validate(), Err(LayoutError::Wraps { .. })));
        let mut l = base();
        l.ram.size = 1 << 40;
        assert!(matches!(
            l.validate(),
            Err(LayoutError::AboveLimit {
                kind: RegionKind::Ram,
                ..
            })
        ));
        let mut l = base();
        l.pci_mmio32 = Region::new(0xf000_0000, 0x2000_0000);
        assert!(matches!(
            l.validate(),
            Err(LayoutError::AboveLimit {
                kind: RegionKind::PciMmio32,
                ..
            })
        ));
        let mut l = base();
        l.ecam.size = 0x18_0000;
        assert!(matches!(
            l.validate(),
            Err(LayoutError::Misaligned {
                kind: RegionKind::PciEcam,
                ..
            })
        ));
        for cpus in [0, MAX_CPUS + 1, u32::MAX] {
            let l = MemoryLayout::new(cpus, DEFAULT_RAM_SIZE);
            assert!(matches!(l.validate(), Err(LayoutError::Cpus { .. })));
        }
        let mut l = base();
        l.ipa_bits = 64;
        assert_eq!(l.validate(), Err(LayoutError::IpaBits { bits: 64 }));
    }

    #[test]
    fn most_cpus_fit_the_default_map() {
        MemoryLayout::new(MAX_CPUS, DEFAULT_RAM_SIZE)
            .validate()
            .unwrap();
    }
}
