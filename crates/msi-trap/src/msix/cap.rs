// Copyright 2025 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The MSI-X capability structure (PCI 3.0 §6.8.2, PCIe Base 6.0 §7.7.2).
//!
//! ```text
//! 0x00  Capability ID (0x11) | Next Pointer | Message Control
//! 0x04  Table Offset [31:3] | Table BIR [2:0]
//! 0x08  PBA Offset [31:3]   | PBA BIR [2:0]
//! ```
//!
//! Message Control: Table Size in bits 10:0 (N - 1, read-only), bits 13:11 reserved,
//! Function Mask in bit 14 (RW), MSI-X Enable in bit 15 (RW). Every other byte of the
//! structure is read-only to the guest; the offsets and BIRs it reads are those of the guest
//! layout (after relocation).

use super::MsixError;
use super::layout::{BarIndex, MsixRegion, RealMsix};
use crate::access::{le_u16, le_u32, put_u16, put_u32};
use crate::caps::PCI_CAP_ID_MSIX;

/// Bytes of the MSI-X capability structure.
pub const MSIX_CAP_LEN: usize = 12;
/// Bytes of one MSI-X table entry (PCI 3.0 §6.8.2.6).
pub const MSIX_ENTRY_SIZE: u64 = hw_defs::msix::ENTRY_SIZE;
/// Largest table: Table Size is 11 bits of N - 1.
pub const MSIX_MAX_VECTORS: u16 = 2048;

/// Message Control: Table Size, N - 1 (bits 10:0).
pub const MSIX_CTRL_TABLE_SIZE: u16 = 0x07ff;
/// Message Control: Function Mask (bit 14).
pub const MSIX_CTRL_FUNCTION_MASK: u16 = 1 << 14;
/// Message Control: MSI-X Enable (bit 15).
pub const MSIX_CTRL_ENABLE: u16 = 1 << 15;

/// Offset of Message Control inside the capability.
const CTRL: usize = 2;
/// Offset of Table Offset/BIR.
const TABLE: usize = 4;
/// Offset of PBA Offset/BIR.
const PBA: usize = 8;

/// Guest write mask of the capability image: only Function Mask and Enable.
pub(crate) const WRITE_MASK: [u8; MSIX_CAP_LEN] = [0, 0, 0x00, 0xc0, 0, 0, 0, 0, 0, 0, 0, 0];

/// The device's MSI-X capability as read from its config space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsixCapability {
    /// Offset of the capability in config space.
    pub offset: u8,
    /// Next Pointer the guest reads (the VMM may rewrite it to hide capabilities).
    pub next: u8,
    /// Number of table entries, N = Table Size + 1, 1..=2048.
    pub vectors: u16,
    /// Real table location.
    pub table: MsixRegion,
    /// Real PBA location.
    pub pba: MsixRegion,
}

fn decode_bir(what: &'static str, value: u32) -> Result<MsixRegion, MsixError> {
    let bir = (value & 7) as u8;
    let bar = BarIndex::new(bir).ok_or(MsixError::ReservedBir { what, bir })?;
    Ok(MsixRegion {
        bar,
        offset: u64::from(value & !7),
    })
}

impl MsixCapability {
    /// Decodes the capability from its registers. BIR values 6 and 7 are reserved
    /// (PCI 3.0 §6.8.2.4, §6.8.2.5): [`MsixError::ReservedBir`].
    pub fn from_registers(
        offset: u8,
        next: u8,
        message_control: u16,
        table_offset_bir: u32,
        pba_offset_bir: u32,
    ) -> Result<Self, MsixError> {
        Ok(MsixCapability {
            offset,
            next,
            vectors: (message_control & MSIX_CTRL_TABLE_SIZE) + 1,
            table: decode_bir("table", table_offset_bir)?,
            pba: decode_bir("PBA", pba_offset_bir)?,
        })
    }

    /// Reads the capability at `offset` of a config-space image (normally found with
    /// [`CapabilityList::msix`](crate::caps::CapabilityList::msix)).
    pub fn parse(config: &[u8], offset: u8) -> Result<Self, MsixError> {
        let at = usize::from(offset);
        if at < crate::caps::PCI_STD_HEADER_SIZEOF
            || config.len() < at + MSIX_CAP_LEN
            || at + MSIX_CAP_LEN > crate::caps::PCI_CONFIG_SPACE_SIZE
        {
            return Err(MsixError::CapabilityOutOfRange { offset });
        }
        let id = config.get(at).copied().unwrap_or(0);
        if id != PCI_CAP_ID_MSIX {
            return Err(MsixError::NotMsix { offset, id });
        }
        Self::from_registers(
            offset,
            config.get(at + 1).copied().unwrap_or(0),
            le_u16(config, at + CTRL),
            le_u32(config, at + TABLE),
            le_u32(config, at + PBA),
        )
    }

    /// The real table and PBA, input to [`MsixLayout::compute`](super::layout::MsixLayout::compute).
    pub fn real(&self) -> RealMsix {
        RealMsix {
            vectors: self.vectors,
            table: self.table,
            pba: self.pba,
        }
    }
}

/// The guest-visible capability image.
pub(crate) fn render(
    cap: &MsixCapability,
    control: u16,
    table_offset_bir: u32,
    pba_offset_bir: u32,
) -> [u8; MSIX_CAP_LEN] {
    let mut image = [0u8; MSIX_CAP_LEN];
    image[0] = PCI_CAP_ID_MSIX;
    image[1] = cap.next;
    let ctrl = (cap.vectors - 1) & MSIX_CTRL_TABLE_SIZE
        | (control & (MSIX_CTRL_FUNCTION_MASK | MSIX_CTRL_ENABLE));
    put_u16(&mut image, CTRL, ctrl);
    put_u32(&mut image, TABLE, table_offset_bir);
    put_u32(&mut image, PBA, pba_offset_bir);
    image
}

/// Message Control of a (merged) image, keeping only the writable bits.
pub(crate) fn control_of(image: &[u8; MSIX_CAP_LEN]) -> u16 {
    le_u16(image, CTRL) & (MSIX_CTRL_FUNCTION_MASK | MSIX_CTRL_ENABLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_table_size_and_birs() {
        let c = MsixCapability::from_registers(0x70, 0, 0x07ff, 0x2003, 0x3004).unwrap();
        assert_eq!(c.vectors, 2048);
        assert_eq!(c.table.bar.get(), 3);
        assert_eq!(c.table.offset, 0x2000);
        assert_eq!(c.pba.bar.get(), 4);
        assert_eq!(c.pba.offset, 0x3000);
        let c = MsixCapability::from_registers(0x70, 0, 0xf800, 0, 0).unwrap();
        assert_eq!(c.vectors, 1, "bits 15:11 are not part of Table Size");
    }

    #[test]
    fn reserved_birs_are_errors() {
        assert_eq!(
            MsixCapability::from_registers(0x70, 0, 0, 6, 0),
            Err(MsixError::ReservedBir {
                what: "table",
                bir: 6
            })
        );
        assert_eq!(
            MsixCapability::from_registers(0x70, 0, 0, 0, 0x1007),
            Err(MsixError::ReservedBir {
                what: "PBA",
                bir: 7
            })
        );
    }

    #[test]
    fn parse_checks_id_and_range() {
        let mut config = [0u8; 256];
        config[0x70] = 0x05;
        assert_eq!(
            MsixCapability::parse(&config, 0x70),
            Err(MsixError::NotMsix {
                offset: 0x70,
                id: 5
            })
        );
        assert_eq!(
            MsixCapability::parse(&config, 0xf8),
            Err(MsixError::CapabilityOutOfRange { offset: 0xf8 })
        );
        assert_eq!(
            MsixCapability::parse(&config, 0x10),
            Err(MsixError::CapabilityOutOfRange { offset: 0x10 })
        );
        assert_eq!(
            MsixCapability::parse(&config[..0x74], 0x70),
            Err(MsixError::CapabilityOutOfRange { offset: 0x70 })
        );
        config[0x70] = 0x11;
        config[0x71] = 0x80;
        config[0x72] = 9; // 10 vectors
        config[0x74] = 3;
        config[0x78..0x7c].copy_from_slice(&0x2003u32.to_le_bytes());
        let c = MsixCapability::parse(&config, 0x70).unwrap();
        assert_eq!((c.next, c.vectors), (0x80, 10));
        assert_eq!(c.pba.offset, 0x2000);
    }
}
