// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The ITS command interface (IHI 0069H §5.3): decoded commands and command errors.
//!
//! Command errors carry the spec's error mnemonics and their 24-bit encodings
//! `0x01_CC_RR` (CC = command number, RR = reason), the form the GIC architecture uses for
//! SEI syndromes and that Arm's GIC-600 reports in its error records:
//!
//! | reason | RR | raised by |
//! |---|---|---|
//! | `DEVICE_OOR` | 0x01 | DeviceID beyond `GITS_TYPER.Devbits` or beyond the Device table |
//! | `ITTSIZE_OOR` | 0x02 | MAPD Size + 1 beyond `GITS_TYPER.ID_bits` + 1 |
//! | `PROCNUM_OOR` | 0x02 | MAPC (and, our choice, SYNC/MOVALL) RDbase not a vCPU |
//! | `COLLECTION_OOR` | 0x03 | ICID beyond the collection ID space or the Collection table |
//! | `UNMAPPED_DEVICE` | 0x04 | DeviceID has no valid DTE |
//! | `ID_OOR` | 0x05 | EventID beyond MAPD's Size |
//! | `PHYSICALID_OOR` | 0x06 | pINTID not an LPI (< 8192 or >= 2^INTID bits) |
//! | `UNMAPPED_INTERRUPT` | 0x07 | EventID has no valid ITE |
//! | `UNMAPPED_COLLECTION` | 0x09 | collection not mapped to a redistributor |
//! | `TABLE_FAULT` | 0x40 | IMPLEMENTATION DEFINED: a table access hit unbacked memory |
//! | `UNSUPPORTED_COMMAND` | 0xff | IMPLEMENTATION DEFINED: GICv4 or undefined command number |
//!
//! SYNC and MOVALL have no architected errors; an RDbase that is not a vCPU is UNPREDICTABLE
//! there, and this ITS reports it as `PROCNUM_OOR` rather than act on a non-existent vCPU.
//!
//! Checks per command, in order (IHI 0069H 5.3, each command's pseudocode; audited against
//! it for issue 15, with KVM's `vgic-its.c` and QEMU's `arm_gicv3_its.c` for the choices it
//! leaves). Section numbers are those of the command descriptions, which IHI 0069H lists in
//! alphabetical order after the queue sections, anchored on the style guide's
//! "5.3.19 MAPTI":
//!
//! | command | checks |
//! |---|---|
//! | 5.3.10 CLEAR, 5.3.12 INT, 5.3.13 INV | DEVICE_OOR, UNMAPPED_DEVICE, ID_OOR, UNMAPPED_INTERRUPT, UNMAPPED_COLLECTION (the ITE's) |
//! | 5.3.11 DISCARD | as CLEAR (the collection is needed to clear the pending state) |
//! | 5.3.14 INVALL | COLLECTION_OOR, UNMAPPED_COLLECTION |
//! | 5.3.16 MAPC | COLLECTION_OOR, then with V = 1 PROCNUM_OOR |
//! | 5.3.17 MAPD | DEVICE_OOR, then with V = 1 ITTSIZE_OOR |
//! | 5.3.18 MAPI, 5.3.19 MAPTI | DEVICE_OOR, COLLECTION_OOR, UNMAPPED_DEVICE, ID_OOR, PHYSICALID_OOR |
//! | 5.3.20 MOVALL, 5.3.22 SYNC | PROCNUM_OOR (our choice, see above) |
//! | 5.3.21 MOVI | DEVICE_OOR, COLLECTION_OOR, UNMAPPED_DEVICE, ID_OOR, UNMAPPED_INTERRUPT, UNMAPPED_COLLECTION (current collection), UNMAPPED_COLLECTION (new collection) |

pub mod decode;
pub(crate) mod exec;

use crate::tables::TableError;

/// A decoded command (IHI 0069H §5.3). MAPI decodes as [`Command::Mapti`] with
/// `intid == event_id` (IHI 0069H §5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// MOVI (IHI 0069H 5.3.21): move an event to another collection.
    Movi {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
        /// New collection.
        icid: u16,
    },
    /// INT (IHI 0069H 5.3.12): make the event's LPI pending.
    Int {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
    },
    /// CLEAR (IHI 0069H 5.3.10): clear the event's LPI pending state.
    Clear {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
    },
    /// SYNC (IHI 0069H 5.3.22): wait for the redistributor to see all earlier effects.
    Sync {
        /// Target processor number (PTA = 0).
        rdbase: u64,
    },
    /// MAPD (IHI 0069H 5.3.17): map or unmap a device's ITT.
    Mapd {
        /// DeviceID.
        device_id: u32,
        /// EventID bits minus one.
        size: u8,
        /// ITT guest physical address.
        itt_addr: u64,
        /// V.
        valid: bool,
    },
    /// MAPC (IHI 0069H 5.3.16): map or unmap a collection to a redistributor.
    Mapc {
        /// ICID.
        icid: u16,
        /// Target processor number (PTA = 0).
        rdbase: u64,
        /// V.
        valid: bool,
    },
    /// MAPTI and MAPI (IHI 0069H 5.3.19, 5.3.18): map an event to an LPI and collection.
    Mapti {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
        /// pINTID.
        intid: u32,
        /// ICID.
        icid: u16,
    },
    /// INV (IHI 0069H 5.3.13): reload the LPI's configuration.
    Inv {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
    },
    /// INVALL (IHI 0069H 5.3.14): reload the configuration of every LPI of a collection's redistributor.
    Invall {
        /// ICID.
        icid: u16,
    },
    /// MOVALL (IHI 0069H 5.3.20): move all pending LPIs from one redistributor to another.
    Movall {
        /// Source processor number.
        rdbase1: u64,
        /// Destination processor number.
        rdbase2: u64,
    },
    /// DISCARD (IHI 0069H 5.3.11): clear pending state and remove the event's mapping.
    Discard {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
    },
}

/// Why a command failed; each variant is one of the spec's error reasons (see the module
/// table) and names the offending value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandErrorKind {
    /// `DEVICE_OOR`.
    #[error("DeviceID {device_id:#x} is out of range")]
    DeviceOor {
        /// DeviceID.
        device_id: u32,
    },
    /// `ITTSIZE_OOR`.
    #[error("ITT size of {bits} EventID bits exceeds the {max} bits supported")]
    IttSizeOor {
        /// Requested EventID bits (Size + 1).
        bits: u8,
        /// Supported EventID bits.
        max: u8,
    },
    /// `PROCNUM_OOR`.
    #[error("RDbase {rdbase:#x} is not a processor number below {vcpus}")]
    ProcnumOor {
        /// RDbase as given.
        rdbase: u64,
        /// Number of vCPUs.
        vcpus: u32,
    },
    /// `COLLECTION_OOR`.
    #[error("ICID {icid:#x} is out of range")]
    CollectionOor {
        /// ICID.
        icid: u16,
    },
    /// `UNMAPPED_DEVICE`.
    #[error("DeviceID {device_id:#x} is not mapped")]
    UnmappedDevice {
        /// DeviceID.
        device_id: u32,
    },
    /// `ID_OOR`.
    #[error("EventID {event_id:#x} is beyond the {bits} EventID bits of DeviceID {device_id:#x}")]
    IdOor {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
        /// EventID bits of the device's ITT.
        bits: u8,
    },
    /// `PHYSICALID_OOR`.
    #[error("pINTID {intid:#x} is not an LPI below 2^{intid_bits}")]
    PhysicalIdOor {
        /// pINTID.
        intid: u32,
        /// INTID bits.
        intid_bits: u8,
    },
    /// `UNMAPPED_INTERRUPT`.
    #[error("EventID {event_id:#x} of DeviceID {device_id:#x} is not mapped")]
    UnmappedInterrupt {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
    },
    /// `UNMAPPED_COLLECTION`.
    #[error("ICID {icid:#x} is not mapped")]
    UnmappedCollection {
        /// ICID.
        icid: u16,
    },
    /// IMPLEMENTATION DEFINED `TABLE_FAULT`: guest memory behind a table is not backed.
    #[error("{0}")]
    TableFault(#[from] TableError),
    /// IMPLEMENTATION DEFINED `UNSUPPORTED_COMMAND`: GICv4 command or undefined number.
    #[error("command is not supported (GITS_TYPER.Virtual == 0 or undefined number)")]
    Unsupported,
}

impl CommandErrorKind {
    /// Reason byte `RR` of the error encoding.
    pub fn reason(&self) -> u8 {
        match self {
            CommandErrorKind::DeviceOor { .. } => 0x01,
            CommandErrorKind::IttSizeOor { .. } | CommandErrorKind::ProcnumOor { .. } => 0x02,
            CommandErrorKind::CollectionOor { .. } => 0x03,
            CommandErrorKind::UnmappedDevice { .. } => 0x04,
            CommandErrorKind::IdOor { .. } => 0x05,
            CommandErrorKind::PhysicalIdOor { .. } => 0x06,
            CommandErrorKind::UnmappedInterrupt { .. } => 0x07,
            CommandErrorKind::UnmappedCollection { .. } => 0x09,
            CommandErrorKind::TableFault(_) => 0x40,
            CommandErrorKind::Unsupported => 0xff,
        }
    }

    /// The reason part of the spec mnemonic, e.g. `"DEVICE_OOR"`.
    pub fn mnemonic(&self) -> &'static str {
        match self {
            CommandErrorKind::DeviceOor { .. } => "DEVICE_OOR",
            CommandErrorKind::IttSizeOor { .. } => "ITTSIZE_OOR",
            CommandErrorKind::ProcnumOor { .. } => "PROCNUM_OOR",
            CommandErrorKind::CollectionOor { .. } => "COLLECTION_OOR",
            CommandErrorKind::UnmappedDevice { .. } => "UNMAPPED_DEVICE",
            CommandErrorKind::IdOor { .. } => "ID_OOR",
            CommandErrorKind::PhysicalIdOor { .. } => "PHYSICALID_OOR",
            CommandErrorKind::UnmappedInterrupt { .. } => "UNMAPPED_INTERRUPT",
            CommandErrorKind::UnmappedCollection { .. } => "UNMAPPED_COLLECTION",
            CommandErrorKind::TableFault(_) => "TABLE_FAULT",
            CommandErrorKind::Unsupported => "UNSUPPORTED_COMMAND",
        }
    }
}

/// A command that failed, where it was in the queue and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandError {
    /// Command number (`DW0[7:0]`).
    pub opcode: u8,
    /// Queue offset of the command (the `GITS_CREADR.Offset` it was read at).
    pub offset: u64,
    /// Reason.
    pub kind: CommandErrorKind,
}

impl CommandError {
    /// 24-bit error encoding `0x01_CC_RR` (see the module documentation).
    pub fn code(&self) -> u32 {
        0x01_0000 | (u32::from(self.opcode) << 8) | u32::from(self.kind.reason())
    }

    /// Spec mnemonic, e.g. `"MAPTI_UNMAPPED_DEVICE"`.
    pub fn mnemonic(&self) -> String {
        format!("{}_{}", decode::name(self.opcode), self.kind.mnemonic())
    }
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ITS command {} at queue offset {:#x} failed with {} ({:#08x}): {}",
            decode::name(self.opcode),
            self.offset,
            self.mnemonic(),
            self.code(),
            self.kind
        )
    }
}

impl std::error::Error for CommandError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            CommandErrorKind::TableFault(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_and_messages() {
        let e = CommandError {
            opcode: decode::opcode::MAPD,
            offset: 0x40,
            kind: CommandErrorKind::DeviceOor {
                device_id: 0x1_0000,
            },
        };
        assert_eq!(e.code(), 0x01_0801);
        assert_eq!(e.mnemonic(), "MAPD_DEVICE_OOR");
        let msg = e.to_string();
        assert!(
            msg.contains("MAPD_DEVICE_OOR") && msg.contains("0x10000"),
            "{msg}"
        );
        let e = CommandError {
            opcode: decode::opcode::MOVI,
            offset: 0,
            kind: CommandErrorKind::UnmappedCollection { icid: 3 },
        };
        assert_eq!(e.code(), 0x01_0109);
        let e = CommandError {
            opcode: 0x42,
            offset: 0,
            kind: CommandErrorKind::Unsupported,
        };
        assert_eq!(e.mnemonic(), "UNKNOWN_UNSUPPORTED_COMMAND");
        assert_eq!(e.code(), 0x01_42ff);
    }
}
