// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The guest physical memory map of a RISC-V VM (built and validated on any host; the KVM
//! side that uses it is `vm_riscv`, riscv64 only).
//!
//! [`RiscvLayout`] is plain data like the arm64 [`MemoryLayout`](crate::layout::MemoryLayout):
//! the doorbell planner moves the vIMSIC and [`RiscvLayout::validate`] holds the rules:
//!
//! - every region non-empty, not wrapping, and aligned: the vIMSIC to `2^(hart bits + 12)`
//!   so that its base has every hart-index bit clear (RISC-V AIA 1.0 §3.6: hart `h`'s
//!   supervisor-level interrupt file is at `base + h * 4 KiB` with one file per hart and no
//!   guest files), the APLIC to 16 KiB (`KVM_DEV_RISCV_APLIC_ALIGN` is 4 KiB; AIA 1.0 §4.5
//!   gives a domain 16 KiB plus 32 bytes per source, which 16 KiB covers up to 511 sources),
//!   RAM to 2 MiB (the RV64 Image is loaded 2 MiB from the start of RAM, Linux
//!   `Documentation/arch/riscv/boot.rst`), everything else to 4 KiB;
//! - no two regions overlap;
//! - nothing but the vIMSIC intersects the host's software MSI window (the riscv64 test
//!   kernel's `IOMMU_RESV_SW_MSI` at 0x0800_0000 + 1 MiB, `docs/uapi.md` section 4): with
//!   the kernel-window strategy the vIMSIC sits exactly there, hart `h`'s file on the IOVA
//!   where iommufd maps host hart `h`'s interrupt file;
//! - the PCIe 32-bit window ends at or below 4 GiB, the ECAM is a whole number of buses.
//!
//! The default map (one vCPU, 512 MiB):
//!
//! | region | base | size |
//! |---|---|---|
//! | 16550 UART | 0x0600_0000 | 4 KiB |
//! | vIMSIC (supervisor files) | 0x0800_0000 | 4 KiB per vCPU |
//! | APLIC (in-kernel, MSI mode) | 0x0c00_0000 | 16 KiB |
//! | PCIe 32-bit MMIO | 0x1000_0000 | 512 MiB |
//! | PCIe ECAM (bus 0) | 0x3000_0000 | 1 MiB |
//! | RAM | 0x8000_0000 | 512 MiB |

use serde::Serialize;

use crate::layout::{ECAM_BUS_SIZE, HOST_MSI_WINDOW, LayoutError, RAM_ALIGN, Region, RegionKind};

/// One IMSIC interrupt file page (AIA 1.0 §3.5).
pub const IMSIC_PAGE_SIZE: u64 = 0x1000;
/// The APLIC's region and alignment (see the module documentation).
pub const APLIC_SIZE: u64 = 0x4000;
/// The default vIMSIC base: the host's software MSI window, where the riscv64 test kernel
/// maps host hart `h`'s interrupt file at `+ h * 4 KiB`.
pub const DEFAULT_IMSIC_BASE: u64 = 0x0800_0000;
/// The default APLIC base.
pub const DEFAULT_APLIC_BASE: u64 = 0x0c00_0000;
/// The default RAM base.
pub const DEFAULT_RAM_BASE: u64 = 0x8000_0000;
/// The APLIC wired source of the 16550 (sources count from 1, AIA 1.0 §4.2).
pub const UART_SOURCE: u32 = 1;
/// The number of APLIC sources the VM has (`riscv,num-sources`; source 0 does not exist).
pub const APLIC_SOURCES: u32 = 32;
/// Identities of every vIMSIC file: 255 (AIA 1.0 §3.1: 63..=2047, N + 1 a multiple of 64).
pub const IMSIC_IDS: u32 = 255;
/// The most vCPUs the VMM creates on RISC-V (the hart index field then has 6 bits).
pub const MAX_CPUS: u32 = 64;
/// The guest physical address bits KVM gives every RISC-V VM with an Sv39x4 G-stage, the
/// smallest it uses (`KVM_CAP_VM_GPA_BITS` reports the real value).
pub const DEFAULT_GPA_BITS: u8 = 41;

/// The guest's physical memory map on RISC-V.
///
/// # Example
///
/// ```
/// use passthrough_vmm::layout_riscv::RiscvLayout;
///
/// let mut layout = RiscvLayout::new(2, 256 << 20);
/// layout.validate()?;
/// assert_eq!(layout.imsic_page(1), Some(0x0800_1000));
/// // The vIMSIC base must leave the hart-index bits clear.
/// layout.imsic.base = 0x0800_1000;
/// assert!(layout.validate().is_err());
/// # Ok::<(), passthrough_vmm::layout::LayoutError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RiscvLayout {
    /// Number of vCPUs (harts); sizes the vIMSIC region.
    pub cpus: u32,
    /// The vIMSIC: hart `h`'s supervisor-level interrupt file at `base + h * 4 KiB`.
    pub imsic: Region,
    /// KVM's in-kernel APLIC (MSI mode), which turns the UART's wire into an MSI.
    pub aplic: Region,
    /// The 16550 UART.
    pub uart: Region,
    /// PCIe ECAM; a whole number of buses starting at bus 0.
    pub ecam: Region,
    /// The PCIe 32-bit memory window.
    pub pci_mmio32: Region,
    /// Guest RAM.
    pub ram: Region,
    /// The host's MSI window that only the vIMSIC may intersect, if any.
    pub host_msi_window: Option<Region>,
    /// Guest physical address bits of the VM.
    pub gpa_bits: u8,
}

impl RiscvLayout {
    /// The default map for `cpus` vCPUs and `ram_size` bytes of RAM (not yet validated).
    pub fn new(cpus: u32, ram_size: u64) -> Self {
        RiscvLayout {
            cpus,
            imsic: Region::new(
                DEFAULT_IMSIC_BASE,
                u64::from(cpus).saturating_mul(IMSIC_PAGE_SIZE),
            ),
            aplic: Region::new(DEFAULT_APLIC_BASE, APLIC_SIZE),
            uart: Region::new(0x0600_0000, 0x1000),
            ecam: Region::new(0x3000_0000, ECAM_BUS_SIZE),
            pci_mmio32: Region::new(0x1000_0000, 0x2000_0000),
            ram: Region::new(DEFAULT_RAM_BASE, ram_size),
            host_msi_window: Some(HOST_MSI_WINDOW),
            gpa_bits: DEFAULT_GPA_BITS,
        }
    }

    /// `k` of AIA 1.0 §3.6: the fewest hart-index bits that number `cpus` harts (0 for
    /// one), as `riscv_imsic::bits_for`; the device tree's `riscv,hart-index-bits` and
    /// KVM's `CONFIG_HART_BITS` both carry it.
    pub fn hart_index_bits(&self) -> u8 {
        match self.cpus {
            0 | 1 => 0,
            n => (32 - (n - 1).leading_zeros()) as u8,
        }
    }

    /// Hart `hart`'s supervisor-level interrupt file, if the hart exists.
    pub fn imsic_page(&self, hart: u32) -> Option<u64> {
        if hart >= self.cpus {
            return None;
        }
        self.imsic
            .base
            .checked_add(u64::from(hart) * IMSIC_PAGE_SIZE)
    }

    /// Number of PCI buses the ECAM window decodes (at most 256).
    pub fn ecam_buses(&self) -> u32 {
        (self.ecam.size / ECAM_BUS_SIZE).min(256) as u32
    }

    /// Every region with what it holds, in address order.
    pub fn regions(&self) -> Vec<(RegionKind, Region)> {
        let mut all = vec![
            (RegionKind::Imsic, self.imsic),
            (RegionKind::Aplic, self.aplic),
            (RegionKind::Uart, self.uart),
            (RegionKind::PciEcam, self.ecam),
            (RegionKind::PciMmio32, self.pci_mmio32),
            (RegionKind::Ram, self.ram),
        ];
        all.sort_by_key(|(_, r)| r.base);
        all
    }

    /// Checks every rule of the module documentation.
    pub fn validate(&self) -> Result<(), LayoutError> {
        if self.cpus == 0 || self.cpus > MAX_CPUS {
            return Err(LayoutError::Cpus {
                cpus: self.cpus,
                max: MAX_CPUS,
            });
        }
        if !(32..=56).contains(&self.gpa_bits) {
            return Err(LayoutError::IpaBits {
                bits: self.gpa_bits,
            });
        }
        let imsic_align = 1u64 << (12 + u32::from(self.hart_index_bits()));
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
                RegionKind::Imsic => imsic_align,
                RegionKind::Aplic => APLIC_SIZE,
                _ => IMSIC_PAGE_SIZE,
            };
            if !region.base.is_multiple_of(align) || !region.size.is_multiple_of(IMSIC_PAGE_SIZE) {
                return Err(LayoutError::Misaligned {
                    kind,
                    region,
                    align,
                });
            }
        }
        if self.imsic.size != u64::from(self.cpus) * IMSIC_PAGE_SIZE {
            return Err(LayoutError::Misaligned {
                kind: RegionKind::Imsic,
                region: self.imsic,
                align: IMSIC_PAGE_SIZE,
            });
        }
        if !self.ecam.size.is_multiple_of(ECAM_BUS_SIZE) || self.ecam.size > 256 * ECAM_BUS_SIZE {
            return Err(LayoutError::Misaligned {
                kind: RegionKind::PciEcam,
                region: self.ecam,
                align: ECAM_BUS_SIZE,
            });
        }
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
                if kind != RegionKind::Imsic && region.overlaps(&window) {
                    return Err(LayoutError::InMsiWindow {
                        kind,
                        region,
                        window,
                    });
                }
            }
        }
        let four_gib = 1u64 << 32;
        if self.pci_mmio32.end().unwrap_or(u64::MAX) > four_gib {
            return Err(LayoutError::AboveLimit {
                kind: RegionKind::PciMmio32,
                region: self.pci_mmio32,
                limit: four_gib,
            });
        }
        let limit = 1u64 << self.gpa_bits;
        for &(kind, region) in &regions {
            if region.end().unwrap_or(u64::MAX) > limit {
                return Err(LayoutError::AboveLimit {
                    kind,
                    region,
                    limit,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_map_is_valid_and_as_documented() {
        let l = RiscvLayout::new(1, 512 << 20);
        l.validate().unwrap();
        assert_eq!(l.imsic, Region::new(0x0800_0000, 0x1000));
        assert_eq!(l.aplic, Region::new(0x0c00_0000, 0x4000));
        assert_eq!(l.ram, Region::new(0x8000_0000, 512 << 20));
        assert_eq!(l.imsic_page(0), Some(0x0800_0000));
        assert_eq!(l.imsic_page(1), None);
        let bases: Vec<u64> = l.regions().iter().map(|(_, r)| r.base).collect();
        assert!(bases.windows(2).all(|w| w[0] < w[1]));
        let l = RiscvLayout::new(MAX_CPUS, 512 << 20);
        l.validate().unwrap();
        assert_eq!(l.hart_index_bits(), 6);
        assert_eq!(l.imsic_page(63), Some(0x0803_f000));
    }

    #[test]
    fn hart_bits_cover_every_hart() {
        for (cpus, bits) in [(1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (64, 6)] {
            assert_eq!(
                RiscvLayout::new(cpus, 1 << 30).hart_index_bits(),
                bits,
                "{cpus}"
            );
        }
    }

    #[test]
    fn broken_maps_are_refused_with_the_culprit() {
        let base = || RiscvLayout::new(2, 512 << 20);
        // The vIMSIC base must clear the hart-index bits (2 harts: 8 KiB).
        let mut l = base();
        l.imsic.base = 0x0800_1000;
        assert!(matches!(
            l.validate(),
            Err(LayoutError::Misaligned {
                kind: RegionKind::Imsic,
                ..
            })
        ));
        // One page per hart, no more, no less.
        let mut l = base();
        l.imsic.size = 0x1000;
        assert!(l.validate().is_err());
        // Only the vIMSIC may sit in the host MSI window.
        let mut l = base();
        l.uart.base = 0x0808_0000;
        assert!(matches!(
            l.validate(),
            Err(LayoutError::InMsiWindow {
                kind: RegionKind::Uart,
                ..
            })
        ));
        l.host_msi_window = None;
        l.validate().unwrap();
        // Overlap names both.
        let mut l = base();
        l.aplic.base = 0x0600_0000;
        match l.validate() {
            Err(LayoutError::Overlap { a, b, .. }) => {
                assert!([a, b].contains(&RegionKind::Aplic));
                assert!([a, b].contains(&RegionKind::Uart));
            }
            other => panic!("{other:?}"),
        }
        let mut l = base();
        l.ram.base = 0x8010_0000;
        assert!(l.validate().is_err());
        let mut l = base();
        l.ram.size = u64::MAX - 0xfff;
        assert!(l.validate().is_err());
        let mut l = base();
        l.ram.size = 1 << 41;
        assert!(matches!(l.validate(), Err(LayoutError::AboveLimit { .. })));
        for cpus in [0, MAX_CPUS + 1, u32::MAX] {
            assert!(matches!(
                RiscvLayout::new(cpus, 1 << 29).validate(),
                Err(LayoutError::Cpus { .. })
            ));
        }
    }
}
