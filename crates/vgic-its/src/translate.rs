// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! MSI translation: (DeviceID, EventID) -> (LPI INTID, target vCPU) (IHI 0069H §5.2,
//! ch. 12 GITS_TRANSLATER).

use vm_memory::GuestMemory;

use crate::cmd::CommandErrorKind;
use crate::its::Its;
use crate::redist::Redistributors;
use crate::tables::TableError;

/// Where an MSI goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// LPI INTID.
    pub intid: u32,
    /// Target processor number.
    pub vcpu: u32,
    /// Collection the event belongs to.
    pub icid: u16,
}

/// Why a translation request was dropped.
///
/// IHI 0069H ch. 12: a write to `GITS_TRANSLATER` is ignored when the ITS is disabled, the
/// DeviceID is out of range or unmapped, or the EventID is out of range or unmapped; this ITS
/// also drops it when the collection is unmapped. Nothing is made pending in any of these
/// cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TranslationError {
    /// `GITS_CTLR.Enabled == 0`.
    #[error("MSI from DeviceID {device_id:#x} EventID {event_id:#x} dropped: ITS disabled")]
    Disabled {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
    },
    /// DeviceID beyond `GITS_TYPER.Devbits` or not covered by the Device table.
    #[error("MSI dropped: DeviceID {device_id:#x} is out of range")]
    DeviceOutOfRange {
        /// DeviceID.
        device_id: u32,
    },
    /// No valid DTE.
    #[error("MSI dropped: DeviceID {device_id:#x} is not mapped")]
    DeviceUnmapped {
        /// DeviceID.
        device_id: u32,
    },
    /// EventID beyond the device's ITT size.
    #[error(
        "MSI dropped: EventID {event_id:#x} is beyond the {bits} EventID bits of DeviceID {device_id:#x}"
    )]
    EventOutOfRange {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
        /// EventID bits of the ITT.
        bits: u8,
    },
    /// No valid ITE.
    #[error("MSI dropped: EventID {event_id:#x} of DeviceID {device_id:#x} is not mapped")]
    EventUnmapped {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
    },
    /// The event's collection is not mapped to a vCPU.
    #[error("MSI dropped: collection {icid:#x} is not mapped")]
    CollectionUnmapped {
        /// ICID.
        icid: u16,
    },
    /// A table read hit guest memory that is not backed.
    #[error("MSI dropped: {0}")]
    Table(#[from] TableError),
}

impl TranslationError {
    fn from_kind(kind: CommandErrorKind, device_id: u32, event_id: u32) -> Self {
        match kind {
            CommandErrorKind::DeviceOor { device_id } => {
                TranslationError::DeviceOutOfRange { device_id }
            }
            CommandErrorKind::UnmappedDevice { device_id } => {
                TranslationError::DeviceUnmapped { device_id }
            }
            CommandErrorKind::IdOor {
                device_id,
                event_id,
                bits,
            } => TranslationError::EventOutOfRange {
                device_id,
                event_id,
                bits,
            },
            CommandErrorKind::UnmappedCollection { icid } => {
                TranslationError::CollectionUnmapped { icid }
            }
            CommandErrorKind::TableFault(e) => TranslationError::Table(e),
            // The lookup raises no other kind; report the event as unmapped.
            _ => TranslationError::EventUnmapped {
                device_id,
                event_id,
            },
        }
    }
}

impl Its {
    /// Translate (DeviceID, EventID) without delivering: the oracle answering which LPI on
    /// which vCPU this MSI reaches right now. Uses and fills the translation cache.
    pub fn translate<M: GuestMemory + ?Sized>(
        &mut self,
        mem: &M,
        device_id: u32,
        event_id: u32,
    ) -> Result<Translation, TranslationError> {
        if !self.enabled {
            return Err(TranslationError::Disabled {
                device_id,
                event_id,
            });
        }
        self.lookup(mem, device_id, event_id)
            .map(|c| Translation {
                intid: c.intid,
                vcpu: c.vcpu,
                icid: c.icid,
            })
            .map_err(|k| TranslationError::from_kind(k, device_id, event_id))
    }

    /// An MSI write of `event_id` to `GITS_TRANSLATER` by `device_id`: translate it and make
    /// the LPI pending through [`Redistributors::set_lpi_pending`]. On error nothing is
    /// delivered (the spec's "write is ignored").
    pub fn send_msi<M: GuestMemory + ?Sized, R: Redistributors + ?Sized>(
        &mut self,
        mem: &M,
        rd: &mut R,
        device_id: u32,
        event_id: u32,
    ) -> Result<Translation, TranslationError> {
        let t = self.translate(mem, device_id, event_id)?;
        rd.set_lpi_pending(t.vcpu, t.intid);
        Ok(t)
    }
}
