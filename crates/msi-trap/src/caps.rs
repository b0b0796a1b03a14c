// Copyright 2025 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! PCI capability list parser over a config-space byte image.
//!
//! The image comes from the kernel (VFIO config region) and, behind it, from a device that may
//! be broken or hostile, so every pointer is checked:
//!
//! * PCI Local Bus 3.0 §6.7: the list exists only when Status (0x06) bit 4, Capabilities List,
//!   is set; the first pointer is at 0x34 (header types 0 and 1); the low 2 bits of every
//!   pointer are reserved and masked off; a pointer of 0 ends the list.
//! * A non-zero pointer below 0x40 points into the standard header: [`CapError::PointerIntoHeader`].
//! * A pointer reached twice is a loop: [`CapError::Loop`]. The walk is bounded anyway by
//!   [`MAX_STANDARD_CAPS`] (the 192 bytes from 0x40 to 0xff hold at most 48 dword-aligned
//!   capabilities) and [`MAX_EXTENDED_CAPS`].
//! * A capability whose known body runs past the end of its space: [`CapError::Truncated`].
//!   Bodies of known size are MSI (10 to 24 bytes by Message Control, PCI 3.0 §6.8.1),
//!   MSI-X (12 bytes, §6.8.2) and Power Management (8 bytes, PCI PM 1.2 §3.2); any other
//!   capability is taken to be its 2-byte header.
//! * Two capabilities whose bodies share a byte: [`CapError::Overlap`]. A capability this
//!   crate emulates must own its bytes alone, or a guest write would land in two places.
//! * PCIe Base 6.0 §7.6.3: when the image is 4096 bytes, the extended list starts at 0x100
//!   with a 32-bit header (ID in bits 15:0, version in bits 19:16, next in bits 31:20); an
//!   all-zero header there means no extended capability; next pointers below 0x100 are
//!   errors; the low 2 bits of next are masked.
//!
//! [`CapabilityList::parse`] is strict: the first fault is an error.
//! [`CapabilityList::parse_lenient`] is the documented tolerant mode: each list stops at its
//! first fault, keeps every capability reached before it, and reports the fault (tests
//! `lenient_keeps_caps_before_fault`, `lenient_stops_before_overlapping_cap`).

use crate::access::{le_u16, le_u32};

/// Size of the conventional PCI config space.
pub const PCI_CONFIG_SPACE_SIZE: usize = hw_defs::pci::CONFIG_SPACE_SIZE;
/// Size of the PCIe extended config space.
pub const PCIE_CONFIG_SPACE_SIZE: usize = hw_defs::pci::EXTENDED_CONFIG_SPACE_SIZE;
/// Offset of the Status register (PCI 3.0 §6.2.3).
pub const PCI_STATUS: usize = hw_defs::pci::STATUS as usize;
/// Status bit 4: Capabilities List (PCI 3.0 §6.2.3).
pub const PCI_STATUS_CAP_LIST: u16 = hw_defs::pci::STATUS_CAP_LIST;
/// Offset of the Header Type register (PCI 3.0 §6.2.1).
pub const PCI_HEADER_TYPE: usize = 0x0e;
/// Offset of the Capabilities Pointer (PCI 3.0 §6.7, header types 0 and 1).
pub const PCI_CAPABILITY_LIST: usize = hw_defs::pci::CAPABILITY_LIST as usize;
/// First offset past the standard type 0/1 header.
pub const PCI_STD_HEADER_SIZEOF: usize = 0x40;
/// First offset of the extended config space (PCIe Base 6.0 §7.6.3).
pub const PCI_EXT_CAP_START: usize = 0x100;
/// Upper bound on standard capabilities: (0x100 - 0x40) / 4.
pub const MAX_STANDARD_CAPS: usize = 48;
/// Upper bound on extended capabilities: (0x1000 - 0x100) / 4.
pub const MAX_EXTENDED_CAPS: usize = 960;

/// Capability ID of PCI Power Management (PCI 3.0 Appendix H).
pub const PCI_CAP_ID_PM: u8 = hw_defs::pci::CAP_ID_PM;
/// Capability ID of MSI (PCI 3.0 Appendix H, §6.8.1).
pub const PCI_CAP_ID_MSI: u8 = hw_defs::pci::CAP_ID_MSI;
/// Capability ID of MSI-X (PCI 3.0 Appendix H, §6.8.2).
pub const PCI_CAP_ID_MSIX: u8 = hw_defs::pci::CAP_ID_MSIX;

/// Errors found while walking a capability list. Each names the offending offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    /// The image is neither 256 nor 4096 bytes long.
    #[error("parse capability list: config space image is {0} bytes, expected 256 or 4096")]
    ConfigSpaceSize(usize),
    /// The header type has no capability pointer at 0x34 (CardBus bridge or reserved type).
    #[error("parse capability list: header type {0:#04x} is not 0 or 1")]
    UnsupportedHeaderType(u8),
    /// A non-zero pointer into the standard header (below 0x40) or, for the extended list,
    /// below 0x100.
    #[error("parse capability list: pointer {pointer:#x} at {from:#x} points into the header")]
    PointerIntoHeader {
        /// Offset of the pointer register.
        from: usize,
        /// Masked pointer value.
        pointer: usize,
    },
    /// A pointer beyond the end of its space.
    #[error("parse capability list: pointer {pointer:#x} at {from:#x} is out of range")]
    PointerOutOfRange {
        /// Offset of the pointer register.
        from: usize,
        /// Masked pointer value.
        pointer: usize,
    },
    /// A capability reached a second time.
    #[error("parse capability list: loop back to capability at {offset:#x} from {from:#x}")]
    Loop {
        /// Offset of the pointer register that closes the loop.
        from: usize,
        /// Offset reached twice.
        offset: usize,
    },
    /// More capabilities than fit in the space (cannot happen without a loop, kept as a bound).
    #[error("parse capability list: more than {0} capabilities")]
    TooMany(usize),
    /// A capability's body runs past the end of its space.
    #[error(
        "parse capability list: capability {id:#x} at {offset:#x} needs {len} bytes, only {available} left"
    )]
    Truncated {
        /// Capability ID.
        id: u16,
        /// Offset of the capability.
        offset: usize,
        /// Bytes its body needs.
        len: usize,
        /// Bytes left before the end of its space.
        available: usize,
    },
    /// Two capabilities share bytes.
    #[error(
        "parse capability list: capability {id:#x} at {offset:#x} overlaps capability {other_id:#x} at {other_offset:#x}"
    )]
    Overlap {
        /// ID of the capability found later in the walk.
        id: u16,
        /// Its offset.
        offset: usize,
        /// ID of the earlier capability it overlaps.
        other_id: u16,
        /// Offset of the earlier capability.
        other_offset: usize,
    },
}

/// A standard capability: its ID and where its header is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Capability {
    /// Capability ID (PCI 3.0 Appendix H).
    pub id: u8,
    /// Offset of the capability header in config space (0x40..=0xfc, dword aligned).
    pub offset: u8,
    /// Length of the body this parser knows for `id` (see the module docs), at least 2.
    pub len: u8,
}

/// An extended (PCIe) capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExtendedCapability {
    /// Extended capability ID (PCIe Base 6.0 §7.6.3, bits 15:0 of the header).
    pub id: u16,
    /// Capability version (bits 19:16).
    pub version: u8,
    /// Offset of the header (0x100..=0xffc, dword aligned).
    pub offset: u16,
}

/// The capabilities found in a config-space image, in list order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapabilityList {
    standard: Vec<Capability>,
    extended: Vec<ExtendedCapability>,
}

/// Result of [`CapabilityList::parse_lenient`]: what was found, and why each walk stopped
/// early, if it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LenientParse {
    /// Every capability reached before the first fault of its list.
    pub list: CapabilityList,
    /// The fault that stopped the standard walk, if any.
    pub standard_error: Option<CapError>,
    /// The fault that stopped the extended walk, if any.
    pub extended_error: Option<CapError>,
}

/// Length of the body of a standard capability whose layout this parser knows, read from
/// the image; 2 (the header) for the others.
fn standard_cap_len(config: &[u8], id: u8, offset: usize) -> usize {
    match id {
        PCI_CAP_ID_MSI => {
            let control = le_u16(config, offset + 2);
            crate::msi::msi_cap_len(control)
        }
        PCI_CAP_ID_MSIX => crate::msix::cap::MSIX_CAP_LEN,
        PCI_CAP_ID_PM => 8,
        _ => 2,
    }
}

fn check_size(config: &[u8]) -> Result<(), CapError> {
    match config.len() {
        PCI_CONFIG_SPACE_SIZE | PCIE_CONFIG_SPACE_SIZE => Ok(()),
        n => Err(CapError::ConfigSpaceSize(n)),
    }
}

/// Walks the standard list, pushing what it finds, stopping at the first fault.
fn walk_standard(config: &[u8], out: &mut Vec<Capability>) -> Result<(), CapError> {
    let status = le_u16(config, PCI_STATUS);
    if status & PCI_STATUS_CAP_LIST == 0 {
        return Ok(());
    }
    let header_type = config.get(PCI_HEADER_TYPE).copied().unwrap_or(0) & 0x7f;
    if header_type > 1 {
        return Err(CapError::UnsupportedHeaderType(header_type));
    }
    // One bit per dword of the 256-byte space.
    let mut seen = [false; PCI_CONFIG_SPACE_SIZE / 4];
    let mut from = PCI_CAPABILITY_LIST;
    let mut pointer = usize::from(config.get(from).copied().unwrap_or(0) & !3);
    for _ in 0..=MAX_STANDARD_CAPS {
        if pointer == 0 {
            return Ok(());
        }
        if pointer < PCI_STD_HEADER_SIZEOF {
            return Err(CapError::PointerIntoHeader { from, pointer });
        }
        // A masked u8 is at most 0xfc: the 2-byte header always fits in 256 bytes.
        let slot = seen
            .get_mut(pointer / 4)
            .ok_or(CapError::PointerOutOfRange { from, pointer })?;
        if *slot {
            return Err(CapError::Loop {
                from,
                offset: pointer,
            });
        }
        *slot = true;
        if out.len() >= MAX_STANDARD_CAPS {
            return Err(CapError::TooMany(MAX_STANDARD_CAPS));
        }
        let id = config.get(pointer).copied().unwrap_or(0);
        let len = standard_cap_len(config, id, pointer);
        let available = PCI_CONFIG_SPACE_SIZE - pointer;
        if len > available {
            return Err(CapError::Truncated {
                id: id.into(),
                offset: pointer,
                len,
                available,
            });
        }
        let end = pointer + len;
        if let Some(other) = out.iter().find(|c| {
            let start = usize::from(c.offset);
            start < end && pointer < start + usize::from(c.len)
        }) {
            return Err(CapError::Overlap {
                id: id.into(),
                offset: pointer,
                other_id: other.id.into(),
                other_offset: other.offset.into(),
            });
        }
        // pointer <= 0xfc and len <= available <= 0xc0: both fit in u8.
        out.push(Capability {
            id,
            offset: pointer as u8,
            len: len as u8,
        });
        from = pointer + 1;
        pointer = usize::from(config.get(from).copied().unwrap_or(0) & !3);
    }
    Err(CapError::TooMany(MAX_STANDARD_CAPS))
}

/// Walks the extended list, pushing what it finds, stopping at the first fault.
fn walk_extended(config: &[u8], out: &mut Vec<ExtendedCapability>) -> Result<(), CapError> {
    if config.len() != PCIE_CONFIG_SPACE_SIZE {
        return Ok(());
    }
    let mut seen = [false; (PCIE_CONFIG_SPACE_SIZE - PCI_EXT_CAP_START) / 4];
    let mut from = PCI_EXT_CAP_START;
    let mut pointer = PCI_EXT_CAP_START;
    for _ in 0..=MAX_EXTENDED_CAPS {
        let header = le_u32(config, pointer);
        if pointer == PCI_EXT_CAP_START && header == 0 {
            // PCIe Base 6.0 §7.6.3: an all-zero header at 0x100 means no extended capability.
            return Ok(());
        }
        let slot = pointer
            .checked_sub(PCI_EXT_CAP_START)
            .and_then(|rel| seen.get_mut(rel / 4))
            .ok_or(CapError::PointerOutOfRange { from, pointer })?;
        if *slot {
            return Err(CapError::Loop {
                from,
                offset: pointer,
            });
        }
        *slot = true;
        if out.len() >= MAX_EXTENDED_CAPS {
            return Err(CapError::TooMany(MAX_EXTENDED_CAPS));
        }
        out.push(ExtendedCapability {
            id: (header & 0xffff) as u16,
            version: ((header >> 16) & 0xf) as u8,
            offset: pointer as u16,
        });
        let next = ((header >> 20) & 0xffc) as usize;
        if next == 0 {
            return Ok(());
        }
        if next < PCI_EXT_CAP_START {
            return Err(CapError::PointerIntoHeader {
                from: pointer,
                pointer: next,
            });
        }
        from = pointer;
        pointer = next;
    }
    Err(CapError::TooMany(MAX_EXTENDED_CAPS))
}

impl CapabilityList {
    /// Parses the standard list and, for a 4096-byte image, the extended list; the first
    /// fault of either is an error (see the module docs for the rules).
    ///
    /// # Example
    ///
    /// ```
    /// use msi_trap::caps::{CapabilityList, PCI_CAP_ID_MSIX};
    ///
    /// let mut config = [0u8; 256];
    /// config[0x06] = 0x10; // Status: Capabilities List
    /// config[0x34] = 0x40;
    /// config[0x40] = PCI_CAP_ID_MSIX; // next = 0
    /// let caps = CapabilityList::parse(&config).unwrap();
    /// assert_eq!(caps.msix().map(|c| c.offset), Some(0x40));
    /// assert!(caps.msi().is_none());
    /// ```
    pub fn parse(config: &[u8]) -> Result<Self, CapError> {
        check_size(config)?;
        let mut list = CapabilityList::default();
        walk_standard(config, &mut list.standard)?;
        walk_extended(config, &mut list.extended)?;
        Ok(list)
    }

    /// Tolerant parse: each list stops at its first fault and keeps the capabilities reached
    /// before it; the faults are reported beside the list. An image of the wrong size is
    /// still an error, since nothing in it can be located.
    pub fn parse_lenient(config: &[u8]) -> Result<LenientParse, CapError> {
        check_size(config)?;
        let mut list = CapabilityList::default();
        let standard_error = walk_standard(config, &mut list.standard).err();
        let extended_error = walk_extended(config, &mut list.extended).err();
        Ok(LenientParse {
            list,
            standard_error,
            extended_error,
        })
    }

    /// Standard capabilities in list order.
    pub fn standard(&self) -> &[Capability] {
        &self.standard
    }

    /// Extended capabilities in list order (empty for a 256-byte image).
    pub fn extended(&self) -> &[ExtendedCapability] {
        &self.extended
    }

    /// First standard capability with `id`, in list order (as Linux `pci_find_capability`).
    pub fn find(&self, id: u8) -> Option<Capability> {
        self.standard.iter().copied().find(|c| c.id == id)
    }

    /// First extended capability with `id`, in list order.
    pub fn find_extended(&self, id: u16) -> Option<ExtendedCapability> {
        self.extended.iter().copied().find(|c| c.id == id)
    }

    /// The MSI capability (ID 0x05), if any.
    pub fn msi(&self) -> Option<Capability> {
        self.find(PCI_CAP_ID_MSI)
    }

    /// The MSI-X capability (ID 0x11), if any.
    pub fn msix(&self) -> Option<Capability> {
        self.find(PCI_CAP_ID_MSIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> [u8; 256] {
        let mut c = [0u8; 256];
        c[PCI_STATUS] = PCI_STATUS_CAP_LIST as u8;
        c
    }

    fn link(c: &mut [u8], at: usize, id: u8, next: u8) {
        c[at] = id;
        c[at + 1] = next;
    }

    #[test]
    fn no_cap_list_bit_means_no_caps() {
        let mut c = image();
        c[PCI_STATUS] = 0;
        c[0x34] = 0x40;
        link(&mut c, 0x40, PCI_CAP_ID_MSIX, 0);
        assert_eq!(CapabilityList::parse(&c).unwrap().standard(), &[]);
    }

    #[test]
    fn walks_list_in_order_and_masks_low_bits() {
        let mut c = image();
        c[0x34] = 0x43; // low 2 bits reserved
        link(&mut c, 0x40, PCI_CAP_ID_PM, 0x52);
        link(&mut c, 0x50, PCI_CAP_ID_MSI, 0x71);
        c[0x52] = 0x80; // MSI control: 64-bit
        link(&mut c, 0x70, PCI_CAP_ID_MSIX, 0);
        let caps = CapabilityList::parse(&c).unwrap();
        let got: Vec<_> = caps
            .standard()
            .iter()
            .map(|c| (c.id, c.offset, c.len))
            .collect();
        assert_eq!(got, vec![(1, 0x40, 8), (5, 0x50, 14), (0x11, 0x70, 12)]);
        assert_eq!(caps.msi().unwrap().offset, 0x50);
        assert_eq!(caps.msix().unwrap().offset, 0x70);
    }

    #[test]
    fn backwards_pointer_is_allowed() {
        let mut c = image();
        c[0x34] = 0x80;
        link(&mut c, 0x80, 0x09, 0x40);
        link(&mut c, 0x40, PCI_CAP_ID_MSIX, 0);
        let caps = CapabilityList::parse(&c).unwrap();
        assert_eq!(caps.standard().len(), 2);
    }

    #[test]
    fn self_loop_and_long_loop_are_errors() {
        let mut c = image();
        c[0x34] = 0x40;
        link(&mut c, 0x40, 0x09, 0x40);
        assert_eq!(
            CapabilityList::parse(&c),
            Err(CapError::Loop {
                from: 0x41,
                offset: 0x40
            })
        );
        let mut c = image();
        c[0x34] = 0x40;
        link(&mut c, 0x40, 0x09, 0x50);
        link(&mut c, 0x50, 0x09, 0x60);
        link(&mut c, 0x60, 0x09, 0x40);
        assert!(matches!(
            CapabilityList::parse(&c),
            Err(CapError::Loop { offset: 0x40, .. })
        ));
    }

    #[test]
    fn pointer_into_header_is_error() {
        let mut c = image();
        c[0x34] = 0x3c;
        assert_eq!(
            CapabilityList::parse(&c),
            Err(CapError::PointerIntoHeader {
                from: 0x34,
                pointer: 0x3c
            })
        );
        let mut c = image();
        c[0x34] = 0x40;
        link(&mut c, 0x40, 0x09, 0x04);
        assert!(matches!(
            CapabilityList::parse(&c),
            Err(CapError::PointerIntoHeader { pointer: 4, .. })
        ));
    }

    #[test]
    fn truncated_bodies_are_errors() {
        // MSI-X needs 12 bytes: 0xf8 + 12 > 0x100.
        let mut c = image();
        c[0x34] = 0xf8;
        link(&mut c, 0xf8, PCI_CAP_ID_MSIX, 0);
        assert_eq!(
            CapabilityList::parse(&c),
            Err(CapError::Truncated {
                id: 0x11,
                offset: 0xf8,
                len: 12,
                available: 8
            })
        );
        // MSI 64-bit with masking needs 24 bytes.
        let mut c = image();
        c[0x34] = 0xf0;
        link(&mut c, 0xf0, PCI_CAP_ID_MSI, 0);
        c[0xf2] = 0x80;
        c[0xf3] = 0x01;
        assert!(matches!(
            CapabilityList::parse(&c),
            Err(CapError::Truncated { len: 24, .. })
        ));
        // An unknown cap at 0xfc is just a header: fine.
        let mut c = image();
        c[0x34] = 0xfc;
        link(&mut c, 0xfc, 0x09, 0);
        assert_eq!(CapabilityList::parse(&c).unwrap().standard().len(), 1);
    }

    #[test]
    fn overlapping_caps_are_errors() {
        let mut c = image();
        c[0x34] = 0x40;
        link(&mut c, 0x40, PCI_CAP_ID_MSIX, 0x48); // body 0x40..0x4c
        link(&mut c, 0x48, 0x09, 0);
        assert_eq!(
            CapabilityList::parse(&c),
            Err(CapError::Overlap {
                id: 0x09,
                offset: 0x48,
                other_id: 0x11,
                other_offset: 0x40
            })
        );
        // The later cap's body covers the earlier one's header.
        let mut c = image();
        c[0x34] = 0x48;
        link(&mut c, 0x48, 0x09, 0x40);
        link(&mut c, 0x40, PCI_CAP_ID_MSIX, 0);
        assert!(matches!(
            CapabilityList::parse(&c),
            Err(CapError::Overlap { id: 0x11, .. })
        ));
    }

    #[test]
    fn longest_legal_list_is_accepted() {
        let mut c = image();
        c[0x34] = 0x40;
        for at in (0x40..0x100).step_by(4) {
            let next = if at == 0xfc { 0 } else { at + 4 };
            link(&mut c, at, 0x09, next as u8);
        }
        assert_eq!(
            CapabilityList::parse(&c).unwrap().standard().len(),
            MAX_STANDARD_CAPS
        );
    }

    #[test]
    fn wrong_sizes_and_header_types() {
        assert_eq!(
            CapabilityList::parse(&[0u8; 64]),
            Err(CapError::ConfigSpaceSize(64))
        );
        assert_eq!(
            CapabilityList::parse(&[]),
            Err(CapError::ConfigSpaceSize(0))
        );
        let mut c = image();
        c[PCI_HEADER_TYPE] = 0x82; // multi-function CardBus
        c[0x34] = 0x40;
        assert_eq!(
            CapabilityList::parse(&c),
            Err(CapError::UnsupportedHeaderType(2))
        );
        c[PCI_HEADER_TYPE] = 0x81; // multi-function bridge: fine
        assert!(CapabilityList::parse(&c).is_ok());
    }

    #[test]
    fn lenient_keeps_caps_before_fault() {
        let mut c = image();
        c[0x34] = 0x40;
        link(&mut c, 0x40, PCI_CAP_ID_MSI, 0x50);
        link(&mut c, 0x50, PCI_CAP_ID_MSIX, 0x40);
        let p = CapabilityList::parse_lenient(&c).unwrap();
        assert_eq!(p.list.standard().len(), 2);
        assert!(matches!(
            p.standard_error,
            Some(CapError::Loop { offset: 0x40, .. })
        ));
        assert_eq!(p.extended_error, None);
        assert!(p.list.msix().is_some());
    }

    #[test]
    fn lenient_stops_before_overlapping_cap() {
        let mut c = image();
        c[0x34] = 0x40;
        link(&mut c, 0x40, PCI_CAP_ID_MSIX, 0x44);
        link(&mut c, 0x44, PCI_CAP_ID_MSI, 0);
        let p = CapabilityList::parse_lenient(&c).unwrap();
        assert_eq!(p.list.standard().len(), 1);
        assert!(p.list.msi().is_none());
        assert!(matches!(p.standard_error, Some(CapError::Overlap { .. })));
    }

    fn pcie_image() -> Vec<u8> {
        let mut c = vec![0u8; PCIE_CONFIG_SPACE_SIZE];
        c[PCI_STATUS] = PCI_STATUS_CAP_LIST as u8;
        c
    }

    fn ext(c: &mut [u8], at: usize, id: u16, version: u32, next: u32) {
        let header = u32::from(id) | (version << 16) | (next << 20);
        c[at..at + 4].copy_from_slice(&header.to_le_bytes());
    }

    #[test]
    fn extended_list_walks_and_checks() {
        let mut c = pcie_image();
        ext(&mut c, 0x100, 0x0001, 2, 0x150);
        ext(&mut c, 0x150, 0x000b, 1, 0x203); // low bits masked
        ext(&mut c, 0x200, 0x0010, 1, 0);
        let caps = CapabilityList::parse(&c).unwrap();
        let got: Vec<_> = caps
            .extended()
            .iter()
            .map(|e| (e.id, e.version, e.offset))
            .collect();
        assert_eq!(got, vec![(1, 2, 0x100), (0xb, 1, 0x150), (0x10, 1, 0x200)]);
        assert_eq!(caps.find_extended(0x10).unwrap().offset, 0x200);

        let mut c = pcie_image();
        assert!(CapabilityList::parse(&c).unwrap().extended().is_empty());
        ext(&mut c, 0x100, 1, 1, 0x100);
        assert!(matches!(
            CapabilityList::parse(&c),
            Err(CapError::Loop { offset: 0x100, .. })
        ));
        ext(&mut c, 0x100, 1, 1, 0x0fc);
        assert!(matches!(
            CapabilityList::parse(&c),
            Err(CapError::PointerIntoHeader { pointer: 0xfc, .. })
        ));
        // All-ones header: next 0xffc, then a loop there.
        c[0x100..0x104].fill(0xff);
        c[0xffc..0x1000].fill(0xff);
        assert!(matches!(
            CapabilityList::parse(&c),
            Err(CapError::Loop { offset: 0xffc, .. })
        ));
    }
}
