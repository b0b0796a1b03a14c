// Copyright © 2026 The passthrough-msi authors
//
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Where interrupt-file pages sit in the address space.
//!
//! AIA 1.0 §3.6 (Arrangement of the memory regions of multiple interrupt
//! files), with the spec's letters:
//!
//! - machine-level file of hart `h` in group `g`: `g*2^E + A + h*2^C`;
//! - supervisor-level file: `g*2^E + B + h*2^D`, followed by its guest files
//!   `G1, G2, ...` in the next pages, so guest file `i` is at
//!   `g*2^E + B + h*2^D + i*2^12`;
//! - `k` hart index bits, `j` group index bits, `C >= 12`,
//!   `D = 12 + guest index bits >= 12 + ceil(log2(GEILEN + 1))`,
//!   `E >= k + max(C, D)`, `A` aligned to `2^(k+C)`, `B` to `2^(k+D)`, and
//!   neither base has bits in the group field, so every address is the bitwise
//!   OR of its parts.
//!
//! The parameter names follow the device-tree binding
//! (`riscv,guest-index-bits`, `riscv,hart-index-bits`, `riscv,group-index-bits`,
//! `riscv,group-index-shift`), whose bounds (7, 15, 7, 55) this module enforces.
//!
//! The module also gives the IOMMU's view of a region (AIA 1.0 §8.4): the MSI
//! address mask and pattern that recognise its pages and the interrupt-file
//! number `extract(A >> 12, mask)` that indexes an MSI page table.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::FileKind;

/// Size of an interrupt file's page (AIA 1.0 §3.5).
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u8 = 12;
/// Largest `riscv,guest-index-bits` (device-tree binding).
pub const MAX_GUEST_INDEX_BITS: u8 = 7;
/// Largest `riscv,hart-index-bits` (device-tree binding).
pub const MAX_HART_INDEX_BITS: u8 = 15;
/// Largest `riscv,group-index-bits` (device-tree binding).
pub const MAX_GROUP_INDEX_BITS: u8 = 7;
/// Largest `riscv,group-index-shift` (device-tree binding).
pub const MAX_GROUP_INDEX_SHIFT: u8 = 55;

/// The two kinds of region of AIA 1.0 §3.6.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Level {
    /// Machine-level files (base `A`, hart stride `2^C`).
    Machine,
    /// Supervisor-level and guest files (base `B`, hart stride `2^D`).
    Supervisor,
}

/// Parameters of the IMSIC address layout (AIA 1.0 §3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GeometryConfig {
    /// `A`: base of the machine-level files of group 0, or `None` when the
    /// machine exposes no machine-level files (the usual guest view).
    pub machine_base: Option<u64>,
    /// `C`: log2 of the distance between two harts' machine-level pages, at
    /// least 12.
    pub machine_hart_shift: u8,
    /// `B`: base of the supervisor-level files of group 0.
    pub supervisor_base: u64,
    /// `D - 12`: guest index bits; each hart's supervisor page is followed by
    /// `2^bits - 1` guest pages.
    pub guest_index_bits: u8,
    /// `k`: hart index bits.
    pub hart_index_bits: u8,
    /// `j`: group index bits.
    pub group_index_bits: u8,
    /// `E`: position of the group index; ignored when `j` is 0.
    pub group_index_shift: u8,
}

impl GeometryConfig {
    /// A single-group supervisor-only layout: `harts` harts' supervisor files
    /// (plus `guest_index_bits` of guest pages each) from `supervisor_base`,
    /// with the hart index bits the smallest that hold `harts` (at least 0).
    ///
    /// This is the layout a VMM typically gives a guest's virtual IMSIC.
    pub fn supervisor_only(supervisor_base: u64, harts: u32, guest_index_bits: u8) -> Self {
        GeometryConfig {
            machine_base: None,
            machine_hart_shift: PAGE_SHIFT,
            supervisor_base,
            guest_index_bits,
            hart_index_bits: bits_for(harts),
            group_index_bits: 0,
            group_index_shift: 24,
        }
    }
}

/// `ceil(log2(n))`, the bits needed for numbers `0..n` (0 for `n <= 1`).
pub fn bits_for(n: u32) -> u8 {
    if n <= 1 {
        0
    } else {
        (32 - (n - 1).leading_zeros()) as u8
    }
}

/// Errors validating a [`GeometryConfig`] or composing an address.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum GeometryError {
    /// A parameter is above the device-tree binding's bound.
    #[error("imsic geometry: {name} = {value} is above its maximum {max}")]
    ParameterTooLarge {
        /// Parameter name.
        name: &'static str,
        /// Value given.
        value: u8,
        /// Largest accepted value.
        max: u8,
    },
    /// `C` is below 12 (AIA 1.0 §3.6: "The smallest that C can be is 12").
    #[error("imsic geometry: machine hart shift {0} is below 12")]
    MachineHartShiftTooSmall(u8),
    /// The region of one group does not fit in 64-bit addresses.
    #[error(
        "imsic geometry: {level:?} region of 2^{bits} bytes per group does not fit in 64-bit addresses"
    )]
    RegionTooLarge {
        /// Which region.
        level: Level,
        /// log2 of its size per group.
        bits: u8,
    },
    /// A base is not aligned to its region size (AIA 1.0 §3.6: `A` aligned to
    /// `2^(k+C)`, `B` to `2^(k+D)`).
    #[error("imsic geometry: {level:?} base {base:#x} is not aligned to 2^{align_bits}")]
    MisalignedBase {
        /// Which region.
        level: Level,
        /// The base.
        base: u64,
        /// log2 of the required alignment.
        align_bits: u8,
    },
    /// `E < k + max(C, D)` while there are group bits (AIA 1.0 §3.6).
    #[error(
        "imsic geometry: group index shift {shift} is below hart index bits + hart shift = {min}"
    )]
    GroupShiftTooSmall {
        /// `E`.
        shift: u8,
        /// `k + max(C, D)`.
        min: u8,
    },
    /// A base has bits in the group index field (AIA 1.0 §3.6:
    /// `((2^j - 1) * 2^E) & A = 0`).
    #[error(
        "imsic geometry: {level:?} base {base:#x} has bits in the group index field {group_mask:#x}"
    )]
    BaseInGroupField {
        /// Which region.
        level: Level,
        /// The base.
        base: u64,
        /// `(2^j - 1) << E`.
        group_mask: u64,
    },
    /// The machine and supervisor regions overlap.
    #[error(
        "imsic geometry: machine region {machine_base:#x}+{machine_size:#x} overlaps supervisor region {supervisor_base:#x}+{supervisor_size:#x}"
    )]
    RegionsOverlap {
        /// `A`.
        machine_base: u64,
        /// `2^(k+C)`.
        machine_size: u64,
        /// `B`.
        supervisor_base: u64,
        /// `2^(k+D)`.
        supervisor_size: u64,
    },
    /// A group number does not fit in `j` bits.
    #[error("imsic geometry: group {group} does not fit in {bits} group index bits")]
    GroupOutOfRange {
        /// The group.
        group: u32,
        /// `j`.
        bits: u8,
    },
    /// A hart number does not fit in `k` bits.
    #[error("imsic geometry: hart {hart} does not fit in {bits} hart index bits")]
    HartOutOfRange {
        /// The hart.
        hart: u32,
        /// `k`.
        bits: u8,
    },
    /// A guest file number is 0 or does not fit in the guest index bits.
    #[error("imsic geometry: guest file {guest} is not in 1..2^{bits}")]
    GuestOutOfRange {
        /// The guest file number.
        guest: u8,
        /// Guest index bits.
        bits: u8,
    },
    /// The layout has no machine-level region.
    #[error("imsic geometry: no machine-level region is configured")]
    NoMachineRegion,
}

/// Errors decoding an address.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The address is in no region of any group.
    #[error("imsic address {addr:#x} is outside every interrupt-file region")]
    Outside {
        /// The address.
        addr: u64,
    },
    /// The address is inside a region but on a page no interrupt file
    /// occupies (a machine page between harts when `C > 12`). AIA 1.0 §3.6 asks
    /// for such pages to be read-only zeros.
    #[error(
        "imsic address {addr:#x} is in the {level:?} region of group {group} hart {hart} but on no interrupt-file page (page {page})"
    )]
    Unoccupied {
        /// The address.
        addr: u64,
        /// Which region.
        level: Level,
        /// Group number.
        group: u32,
        /// Hart number within the group.
        hart: u32,
        /// Page index within the hart's stride.
        page: u64,
    },
}

/// An address decoded to the interrupt file whose page holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DecodedAddress {
    /// Group number `g`.
    pub group: u32,
    /// Hart number `h` within the group.
    pub hart: u32,
    /// Which file of the hart.
    pub file: FileKind,
    /// Offset within the 4-KiB page.
    pub offset: u16,
}

/// One group's region of one level, to register on a bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Region {
    /// Which region.
    pub level: Level,
    /// Group number.
    pub group: u32,
    /// First address.
    pub base: u64,
    /// Size in bytes (`2^(k+C)` or `2^(k+D)`).
    pub size: u64,
}

/// The MSI address mask and pattern an IOMMU device context uses to recognise
/// the pages of a VM's interrupt files (AIA 1.0 §8.4).
///
/// Both are guest physical page numbers (addresses shifted right by 12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MsiAddressPattern {
    /// Bits of the page number that vary between interrupt files.
    pub mask: u64,
    /// The page number of the region with the varying bits zero.
    pub pattern: u64,
}

impl MsiAddressPattern {
    /// AIA 1.0 §8.4: `A` is an access to a virtual interrupt file iff
    /// `((A >> 12) & !mask) == (pattern & !mask)`.
    pub fn matches(&self, addr: u64) -> bool {
        ((addr >> PAGE_SHIFT) & !self.mask) == (self.pattern & !self.mask)
    }

    /// The interrupt-file number `extract(A >> 12, mask)` that indexes the MSI
    /// page table (AIA 1.0 §8.4), or `None` if `addr` does not match.
    pub fn interrupt_file_number(&self, addr: u64) -> Option<u64> {
        self.matches(addr)
            .then(|| extract_bits(addr >> PAGE_SHIFT, self.mask))
    }

    /// Number of entries of the MSI page table: `2^(ones in mask)` (AIA 1.0
    /// §8.5).
    pub fn table_entries(&self) -> u128 {
        1u128 << self.mask.count_ones()
    }
}

/// AIA 1.0 §8.4 `extract(x, y)`: keeps the bits of `x` where `y` has ones and
/// packs them, in order, at the least-significant end.
///
/// ```
/// use riscv_imsic::extract_bits;
///
/// // The spec's example: x = abcdefgh, y = 10100110 gives 0000acfg.
/// assert_eq!(extract_bits(0b1010_0110, 0b1010_0110), 0b1111);
/// assert_eq!(extract_bits(0b0010_0100, 0b1010_0110), 0b0110);
/// ```
pub fn extract_bits(x: u64, mask: u64) -> u64 {
    let mut out = 0u64;
    let mut pos = 0u32;
    let mut m = mask;
    // One iteration per set bit of the mask: at most 64.
    while m != 0 {
        let bit = m.trailing_zeros();
        out |= ((x >> bit) & 1) << pos;
        pos += 1;
        m &= m - 1;
    }
    out
}

/// A validated IMSIC address layout.
///
/// ```
/// use riscv_imsic::{FileKind, GeometryConfig, ImsicGeometry};
///
/// // Two groups of up to four harts, three guest files each (guest index bits 2).
/// let geo = ImsicGeometry::new(GeometryConfig {
///     machine_base: Some(0x2400_0000),
///     machine_hart_shift: 12,
///     supervisor_base: 0x2800_0000,
///     guest_index_bits: 2,
///     hart_index_bits: 2,
///     group_index_bits: 1,
///     group_index_shift: 24,
/// })
/// .unwrap();
/// let addr = geo.file_address(1, 3, FileKind::Guest(2)).unwrap();
/// assert_eq!(addr, 0x2800_0000 | (1 << 24) | (3 << 14) | (2 << 12));
/// let d = geo.decode(addr + 4).unwrap();
/// assert_eq!((d.group, d.hart, d.file, d.offset), (1, 3, FileKind::Guest(2), 4));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "GeometryConfig", into = "GeometryConfig")]
pub struct ImsicGeometry {
    cfg: GeometryConfig,
}

impl TryFrom<GeometryConfig> for ImsicGeometry {
    type Error = GeometryError;

    fn try_from(cfg: GeometryConfig) -> Result<Self, GeometryError> {
        ImsicGeometry::new(cfg)
    }
}

impl From<ImsicGeometry> for GeometryConfig {
    fn from(g: ImsicGeometry) -> GeometryConfig {
        g.cfg
    }
}

fn low_mask(bits: u8) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

impl ImsicGeometry {
    /// Validates a layout against AIA 1.0 §3.6 and the device-tree bounds.
    ///
    /// Tests: `geometry::tests::validation_rules`,
    /// `geometry::tests::overlap_is_checked_per_group`.
    pub fn new(cfg: GeometryConfig) -> Result<Self, GeometryError> {
        for (name, value, max) in [
            (
                "guest index bits",
                cfg.guest_index_bits,
                MAX_GUEST_INDEX_BITS,
            ),
            ("hart index bits", cfg.hart_index_bits, MAX_HART_INDEX_BITS),
            (
                "group index bits",
                cfg.group_index_bits,
                MAX_GROUP_INDEX_BITS,
            ),
            (
                "group index shift",
                cfg.group_index_shift,
                MAX_GROUP_INDEX_SHIFT,
            ),
        ] {
            if value > max {
                return Err(GeometryError::ParameterTooLarge { name, value, max });
            }
        }
        if cfg.machine_hart_shift < PAGE_SHIFT {
            return Err(GeometryError::MachineHartShiftTooSmall(
                cfg.machine_hart_shift,
            ));
        }
        let k = cfg.hart_index_bits;
        let d = PAGE_SHIFT + cfg.guest_index_bits;
        let c = cfg.machine_hart_shift;
        // Region bits k + C and k + D must leave room in 64-bit addresses.
        let s_bits = k + d;
        if s_bits >= 64 {
            return Err(GeometryError::RegionTooLarge {
                level: Level::Supervisor,
                bits: s_bits,
            });
        }
        let m_bits = k.checked_add(c).filter(|b| *b < 64);
        let m_bits = match (cfg.machine_base, m_bits) {
            (Some(_), None) => {
                return Err(GeometryError::RegionTooLarge {
                    level: Level::Machine,
                    bits: k.saturating_add(c),
                });
            }
            (_, b) => b.unwrap_or(0),
        };
        let group_mask = low_mask(cfg.group_index_bits) << cfg.group_index_shift;
        if cfg.group_index_bits > 0 {
            let min = if cfg.machine_base.is_some() {
                k + c.max(d)
            } else {
                k + d
            };
            if cfg.group_index_shift < min {
                return Err(GeometryError::GroupShiftTooSmall {
                    shift: cfg.group_index_shift,
                    min,
                });
            }
        }
        let mut bases = vec![(Level::Supervisor, cfg.supervisor_base, s_bits)];
        if let Some(a) = cfg.machine_base {
            bases.push((Level::Machine, a, m_bits));
        }
        for (level, base, bits) in bases {
            if base & low_mask(bits) != 0 {
                return Err(GeometryError::MisalignedBase {
                    level,
                    base,
                    align_bits: bits,
                });
            }
            if cfg.group_index_bits > 0 && base & group_mask != 0 {
                return Err(GeometryError::BaseInGroupField {
                    level,
                    base,
                    group_mask,
                });
            }
        }
        if let Some(a) = cfg.machine_base {
            // With both bases clear of the group field and each region smaller
            // than 2^E, an address is in a region iff it is once its group bits
            // are cleared, so the regions of all groups overlap iff those of
            // group 0 do.
            let m_size = 1u64 << m_bits;
            let s_size = 1u64 << s_bits;
            let b = cfg.supervisor_base;
            // Bases are aligned to their sizes and the sizes are below 2^64, so
            // base + size - 1 does not overflow.
            let m_last = a | (m_size - 1);
            let s_last = b | (s_size - 1);
            if a <= s_last && b <= m_last {
                return Err(GeometryError::RegionsOverlap {
                    machine_base: a,
                    machine_size: m_size,
                    supervisor_base: b,
                    supervisor_size: s_size,
                });
            }
        }
        Ok(ImsicGeometry { cfg })
    }

    /// The validated parameters.
    pub fn config(&self) -> &GeometryConfig {
        &self.cfg
    }

    /// `D = 12 + guest index bits`, log2 of a hart's supervisor stride.
    pub fn supervisor_hart_shift(&self) -> u8 {
        PAGE_SHIFT + self.cfg.guest_index_bits
    }

    /// Largest number of guest files a hart can have here, `2^bits - 1` capped
    /// at 63 (AIA 1.0 §3.6 and the Privileged spec's GEILEN <= 63).
    pub fn max_guest_files(&self) -> u8 {
        (low_mask(self.cfg.guest_index_bits) as u8).min(63)
    }

    /// Number of groups, `2^j`.
    pub fn groups(&self) -> u32 {
        1u32 << self.cfg.group_index_bits
    }

    /// Number of hart slots per group, `2^k`.
    pub fn harts_per_group(&self) -> u32 {
        1u32 << self.cfg.hart_index_bits
    }

    fn level_params(&self, level: Level) -> Option<(u64, u8)> {
        match level {
            Level::Machine => self
                .cfg
                .machine_base
                .map(|a| (a, self.cfg.machine_hart_shift)),
            Level::Supervisor => Some((self.cfg.supervisor_base, self.supervisor_hart_shift())),
        }
    }

    fn group_offset(&self, group: u32) -> Result<u64, GeometryError> {
        if u64::from(group) > low_mask(self.cfg.group_index_bits) {
            return Err(GeometryError::GroupOutOfRange {
                group,
                bits: self.cfg.group_index_bits,
            });
        }
        if self.cfg.group_index_bits == 0 {
            Ok(0)
        } else {
            Ok(u64::from(group) << self.cfg.group_index_shift)
        }
    }

    /// The page address of a hart's file (AIA 1.0 §3.6 formulas), i.e. the
    /// address of its `seteipnum_le`, the MSI address a device is programmed
    /// with.
    pub fn file_address(
        &self,
        group: u32,
        hart: u32,
        file: FileKind,
    ) -> Result<u64, GeometryError> {
        let goff = self.group_offset(group)?;
        if u64::from(hart) > low_mask(self.cfg.hart_index_bits) {
            return Err(GeometryError::HartOutOfRange {
                hart,
                bits: self.cfg.hart_index_bits,
            });
        }
        let (level, page) = match file {
            FileKind::Machine => (Level::Machine, 0u64),
            FileKind::Supervisor => (Level::Supervisor, 0),
            FileKind::Guest(i) => {
                if i == 0 || u64::from(i) > low_mask(self.cfg.guest_index_bits) {
                    return Err(GeometryError::GuestOutOfRange {
                        guest: i,
                        bits: self.cfg.guest_index_bits,
                    });
                }
                (Level::Supervisor, u64::from(i))
            }
        };
        let (base, shift) = self
            .level_params(level)
            .ok_or(GeometryError::NoMachineRegion)?;
        // All parts occupy disjoint bit ranges (validated in new()), so OR is
        // the spec's sum without any chance of overflow.
        Ok(base | goff | (u64::from(hart) << shift) | (page << PAGE_SHIFT))
    }

    /// Decodes `addr` to the file whose page holds it (the inverse of
    /// [`ImsicGeometry::file_address`] plus the page offset).
    ///
    /// Guest pages are decoded up to `2^bits - 1`; whether the hart has that
    /// many guest files (its GEILEN) is the IMSIC's business.
    pub fn decode(&self, addr: u64) -> Result<DecodedAddress, DecodeError> {
        let (group, rest) = if self.cfg.group_index_bits == 0 {
            (0u32, addr)
        } else {
            let gmask = low_mask(self.cfg.group_index_bits);
            let g = (addr >> self.cfg.group_index_shift) & gmask;
            (g as u32, addr & !(gmask << self.cfg.group_index_shift))
        };
        for level in [Level::Supervisor, Level::Machine] {
            let Some((base, shift)) = self.level_params(level) else {
                continue;
            };
            let region_bits = self.cfg.hart_index_bits + shift;
            let Some(off) = rest.checked_sub(base) else {
                continue;
            };
            if off > low_mask(region_bits) {
                continue;
            }
            let hart = (off >> shift) as u32;
            let within = off & low_mask(shift);
            let page = within >> PAGE_SHIFT;
            let offset = (within & (PAGE_SIZE - 1)) as u16;
            let file = match (level, page) {
                (Level::Machine, 0) => FileKind::Machine,
                (Level::Supervisor, 0) => FileKind::Supervisor,
                // page < 2^guest_index_bits <= 128, so it fits in u8.
                (Level::Supervisor, p) => FileKind::Guest(p as u8),
                (Level::Machine, _) => {
                    return Err(DecodeError::Unoccupied {
                        addr,
                        level,
                        group,
                        hart,
                        page,
                    });
                }
            };
            return Ok(DecodedAddress {
                group,
                hart,
                file,
                offset,
            });
        }
        Err(DecodeError::Outside { addr })
    }

    /// The regions of every group, machine level first, to register on a bus.
    /// At most `2 * 2^7` items.
    pub fn regions(&self) -> impl Iterator<Item = Region> + '_ {
        let levels = [Level::Machine, Level::Supervisor];
        levels.into_iter().flat_map(move |level| {
            let params = self.level_params(level);
            (0..self.groups()).filter_map(move |group| {
                let (base, shift) = params?;
                let goff = self.group_offset(group).ok()?;
                Some(Region {
                    level,
                    group,
                    base: base | goff,
                    size: 1u64 << (self.cfg.hart_index_bits + shift),
                })
            })
        })
    }

    /// The region of `level` and `group`, if it exists.
    pub fn region(&self, level: Level, group: u32) -> Option<Region> {
        self.regions()
            .find(|r| r.level == level && r.group == group)
    }

    /// The MSI address mask and pattern for the pages of `level` (AIA 1.0 §8.4),
    /// or `None` for a missing machine region.
    ///
    /// The mask covers the guest-index, hart-index and group-index bits of the
    /// page number, so the interrupt-file number of a supervisor page is
    /// `guest | hart << gbits | group << (gbits + k)`: one MSI page table entry
    /// per page of the region (see [`ImsicGeometry::interrupt_file_number`]).
    /// For a machine region with `C > 12` the mask also covers the infill
    /// pages between harts; their table entries are simply left invalid.
    pub fn msi_address_pattern(&self, level: Level) -> Option<MsiAddressPattern> {
        let (base, shift) = self.level_params(level)?;
        let page_bits = shift - PAGE_SHIFT;
        let hart_mask = low_mask(self.cfg.hart_index_bits + page_bits);
        let group_mask = if self.cfg.group_index_bits == 0 {
            0
        } else {
            low_mask(self.cfg.group_index_bits)
                << self.cfg.group_index_shift.saturating_sub(PAGE_SHIFT)
        };
        Some(MsiAddressPattern {
            mask: hart_mask | group_mask,
            pattern: base >> PAGE_SHIFT,
        })
    }

    /// The IOMMU interrupt-file number of a file's page (AIA 1.0 §8.4) under
    /// [`ImsicGeometry::msi_address_pattern`] of its level.
    pub fn interrupt_file_number(
        &self,
        group: u32,
        hart: u32,
        file: FileKind,
    ) -> Result<u64, GeometryError> {
        let addr = self.file_address(group, hart, file)?;
        let level = match file {
            FileKind::Machine => Level::Machine,
            _ => Level::Supervisor,
        };
        let pattern = self
            .msi_address_pattern(level)
            .ok_or(GeometryError::NoMachineRegion)?;
        Ok(extract_bits(addr >> PAGE_SHIFT, pattern.mask))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_level() -> GeometryConfig {
        GeometryConfig {
            machine_base: Some(0x2400_0000),
            machine_hart_shift: 12,
            supervisor_base: 0x2800_0000,
            guest_index_bits: 0,
            hart_index_bits: 3,
            group_index_bits: 0,
            group_index_shift: 24,
        }
    }

    #[test]
    fn bits_for_values() {
        assert_eq!(bits_for(0), 0);
        assert_eq!(bits_for(1), 0);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(3), 2);
        assert_eq!(bits_for(4), 2);
        assert_eq!(bits_for(5), 3);
        assert_eq!(bits_for(u32::MAX), 32);
    }

    #[test]
    fn spec_formulas_single_group() {
        // §3.6: machine file of hart h at A + h*2^C, supervisor at B + h*2^D.
        let geo = ImsicGeometry::new(two_level()).unwrap();
        for h in 0..8 {
            assert_eq!(
                geo.file_address(0, h, FileKind::Machine),
                Ok(0x2400_0000 + u64::from(h) * 0x1000)
            );
            assert_eq!(
                geo.file_address(0, h, FileKind::Supervisor),
                Ok(0x2800_0000 + u64::from(h) * 0x1000)
            );
        }
        assert_eq!(
            geo.file_address(0, 8, FileKind::Machine),
            Err(GeometryError::HartOutOfRange { hart: 8, bits: 3 })
        );
        assert_eq!(
            geo.file_address(1, 0, FileKind::Machine),
            Err(GeometryError::GroupOutOfRange { group: 1, bits: 0 })
        );
        assert_eq!(
            geo.file_address(0, 0, FileKind::Guest(1)),
            Err(GeometryError::GuestOutOfRange { guest: 1, bits: 0 })
        );
        assert_eq!(
            geo.decode(0x2400_8000),
            Err(DecodeError::Outside { addr: 0x2400_8000 })
        );
        assert_eq!(
            geo.decode(0x23FF_FFFF),
            Err(DecodeError::Outside { addr: 0x23FF_FFFF })
        );
        assert_eq!(
            geo.decode(0x2800_7FFC),
            Ok(DecodedAddress {
                group: 0,
                hart: 7,
                file: FileKind::Supervisor,
                offset: 0xFFC
            })
        );
    }

    #[test]
    fn spec_formulas_groups_and_guests() {
        // §3.6 with groups: g*2^E + B + h*2^D, guest pages S, G1, G2, ... after S.
        let cfg = GeometryConfig {
            machine_base: Some(0x1000_0000),
            machine_hart_shift: 13,
            supervisor_base: 0x2000_0000,
            guest_index_bits: 3,
            hart_index_bits: 4,
            group_index_bits: 2,
            group_index_shift: 32,
        };
        let geo = ImsicGeometry::new(cfg).unwrap();
        assert_eq!(geo.supervisor_hart_shift(), 15);
        assert_eq!(geo.max_guest_files(), 7);
        for g in 0..4u32 {
            for h in [0u32, 1, 9, 15] {
                let m = geo.file_address(g, h, FileKind::Machine).unwrap();
                assert_eq!(m, (u64::from(g) << 32) + 0x1000_0000 + (u64::from(h) << 13));
                let d = geo.decode(m + 0x10).unwrap();
                assert_eq!(
                    (d.group, d.hart, d.file, d.offset),
                    (g, h, FileKind::Machine, 0x10)
                );
                for i in 1..=7u8 {
                    let a = geo.file_address(g, h, FileKind::Guest(i)).unwrap();
                    let s = geo.file_address(g, h, FileKind::Supervisor).unwrap();
                    assert_eq!(a, s + u64::from(i) * 0x1000);
                    assert_eq!(s, (u64::from(g) << 32) + 0x2000_0000 + (u64::from(h) << 15));
                    assert_eq!(geo.decode(a).unwrap().file, FileKind::Guest(i));
                }
                // C = 13: the second page of a machine stride is infill.
                assert_eq!(
                    geo.decode(m + 0x1000),
                    Err(DecodeError::Unoccupied {
                        addr: m + 0x1000,
                        level: Level::Machine,
                        group: g,
                        hart: h,
                        page: 1
                    })
                );
            }
        }
        let regions: Vec<Region> = geo.regions().collect();
        assert_eq!(regions.len(), 8);
        assert_eq!(
            regions[5],
            Region {
                level: Level::Supervisor,
                group: 1,
                base: 0x1_2000_0000,
                size: 1 << 19
            }
        );
        assert_eq!(geo.region(Level::Machine, 3).unwrap().base, 0x3_1000_0000);
        // Between groups: outside.
        assert!(matches!(
            geo.decode(0x1_3000_0000),
            Err(DecodeError::Outside { .. })
        ));
    }

    #[test]
    fn dt_binding_example_two_groups() {
        // riscv,imsics.yaml example 2: supervisor files at 0x28000000 (group 0)
        // and 0x29000000 (group 1), group-index-bits 1, group-index-shift 24.
        let geo = ImsicGeometry::new(GeometryConfig {
            machine_base: None,
            machine_hart_shift: 12,
            supervisor_base: 0x2800_0000,
            guest_index_bits: 0,
            hart_index_bits: 1,
            group_index_bits: 1,
            group_index_shift: 24,
        })
        .unwrap();
        let addrs: Vec<u64> = [(0, 0), (0, 1), (1, 0), (1, 1)]
            .iter()
            .map(|(g, h)| geo.file_address(*g, *h, FileKind::Supervisor).unwrap())
            .collect();
        assert_eq!(
            addrs,
            vec![0x2800_0000, 0x2800_1000, 0x2900_0000, 0x2900_1000]
        );
        assert_eq!(
            geo.file_address(0, 0, FileKind::Machine),
            Err(GeometryError::NoMachineRegion)
        );
        let regions: Vec<Region> = geo.regions().collect();
        assert_eq!(regions.len(), 2);
        assert_eq!((regions[1].base, regions[1].size), (0x2900_0000, 0x2000));
    }

    #[test]
    fn validation_rules() {
        let ok = two_level();
        assert!(ImsicGeometry::new(ok).is_ok());
        let bad = |f: &dyn Fn(&mut GeometryConfig)| {
            let mut c = ok;
            f(&mut c);
            ImsicGeometry::new(c).unwrap_err()
        };
        assert_eq!(
            bad(&|c| c.guest_index_bits = 8),
            GeometryError::ParameterTooLarge {
                name: "guest index bits",
                value: 8,
                max: 7
            }
        );
        assert!(matches!(
            bad(&|c| c.hart_index_bits = 16),
            GeometryError::ParameterTooLarge { .. }
        ));
        assert!(matches!(
            bad(&|c| c.group_index_bits = 8),
            GeometryError::ParameterTooLarge { .. }
        ));
        assert!(matches!(
            bad(&|c| c.group_index_shift = 56),
            GeometryError::ParameterTooLarge { .. }
        ));
        assert_eq!(
            bad(&|c| c.machine_hart_shift = 11),
            GeometryError::MachineHartShiftTooSmall(11)
        );
        assert_eq!(
            bad(&|c| c.machine_hart_shift = 61),
            GeometryError::RegionTooLarge {
                level: Level::Machine,
                bits: 64
            }
        );
        assert_eq!(
            bad(&|c| c.supervisor_base = 0x2800_1000),
            GeometryError::MisalignedBase {
                level: Level::Supervisor,
                base: 0x2800_1000,
                align_bits: 15
            }
        );
        assert_eq!(
            bad(&|c| c.machine_base = Some(0x2400_4000)),
            GeometryError::MisalignedBase {
                level: Level::Machine,
                base: 0x2400_4000,
                align_bits: 15
            }
        );
        assert_eq!(
            bad(&|c| {
                c.group_index_bits = 1;
                c.group_index_shift = 14;
            }),
            GeometryError::GroupShiftTooSmall { shift: 14, min: 15 }
        );
        // Bit 26 of 0x24000000 is inside a 3-bit group field at 24.
        assert_eq!(
            bad(&|c| c.group_index_bits = 3),
            GeometryError::BaseInGroupField {
                level: Level::Machine,
                base: 0x2400_0000,
                group_mask: 0x700_0000
            }
        );
        assert_eq!(
            bad(&|c| c.supervisor_base = 0x2400_0000),
            GeometryError::RegionsOverlap {
                machine_base: 0x2400_0000,
                machine_size: 0x8000,
                supervisor_base: 0x2400_0000,
                supervisor_size: 0x8000
            }
        );
        // Adjacent regions are fine.
        let mut c = ok;
        c.supervisor_base = 0x2400_8000;
        assert!(ImsicGeometry::new(c).is_ok());
        // Only a supervisor region can have a top address right at 2^64 - 1.
        let top = GeometryConfig {
            machine_base: None,
            machine_hart_shift: 12,
            supervisor_base: u64::MAX - 0xFFFF,
            guest_index_bits: 2,
            hart_index_bits: 2,
            group_index_bits: 0,
            group_index_shift: 0,
        };
        let geo = ImsicGeometry::new(top).unwrap();
        assert_eq!(
            geo.file_address(0, 3, FileKind::Guest(3)),
            Ok(u64::MAX - 0xFFF)
        );
        assert_eq!(geo.decode(u64::MAX).unwrap().offset, 0xFFF);
    }

    #[test]
    fn overlap_is_checked_per_group() {
        // A machine region of group 1 cannot land on the supervisor region of
        // group 0 because both bases must be clear of the group field.
        let c = GeometryConfig {
            machine_base: Some(0),
            machine_hart_shift: 12,
            supervisor_base: 1 << 24,
            guest_index_bits: 0,
            hart_index_bits: 2,
            group_index_bits: 1,
            group_index_shift: 24,
        };
        assert!(matches!(
            ImsicGeometry::new(c),
            Err(GeometryError::BaseInGroupField {
                level: Level::Supervisor,
                ..
            })
        ));
    }

    #[test]
    fn iommu_msi_pattern() {
        let geo = ImsicGeometry::new(GeometryConfig {
            machine_base: None,
            machine_hart_shift: 12,
            supervisor_base: 0x2800_0000,
            guest_index_bits: 1,
            hart_index_bits: 2,
            group_index_bits: 1,
            group_index_shift: 24,
        })
        .unwrap();
        let p = geo.msi_address_pattern(Level::Supervisor).unwrap();
        assert_eq!(p.pattern, 0x28000);
        assert_eq!(p.mask, 0b111 | (1 << 12));
        assert_eq!(p.table_entries(), 16);
        let mut seen = std::collections::BTreeSet::new();
        for g in 0..2 {
            for h in 0..4 {
                for f in [FileKind::Supervisor, FileKind::Guest(1)] {
                    let a = geo.file_address(g, h, f).unwrap();
                    assert!(p.matches(a));
                    let n = geo.interrupt_file_number(g, h, f).unwrap();
                    assert_eq!(p.interrupt_file_number(a + 0x44), Some(n));
                    assert!(seen.insert(n));
                }
            }
        }
        assert_eq!(seen.len(), 16);
        assert_eq!(*seen.iter().max().unwrap(), 15);
        assert!(!p.matches(0x3800_0000));
        assert_eq!(p.interrupt_file_number(0x2000_0000), None);
        assert_eq!(geo.msi_address_pattern(Level::Machine), None);
    }

    #[test]
    fn extract_spec_example() {
        // AIA 1.0 §8.4: x = abcdefgh, y = 10100110 -> 0000acfg.
        for x in 0u64..256 {
            let bit = |n: u32| (x >> n) & 1;
            let (a, c, f, g) = (bit(7), bit(5), bit(2), bit(1));
            assert_eq!(
                extract_bits(x, 0b1010_0110),
                (a << 3) | (c << 2) | (f << 1) | g
            );
        }
        assert_eq!(extract_bits(u64::MAX, u64::MAX), u64::MAX);
        assert_eq!(extract_bits(u64::MAX, 0), 0);
        assert_eq!(extract_bits(1 << 63, 1 << 63), 1);
    }
}
