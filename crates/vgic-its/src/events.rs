// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Mapping events reported to the VMM through
//! [`Redistributors::mapping_changed`](crate::Redistributors::mapping_changed).
//!
//! They describe what the guest mapped, as it happens, so that a VMM can mirror the
//! translations elsewhere (an in-kernel ITS, a GICv4 direct-injection path, a trace).
//! Events are emitted only after the command's table writes succeeded.

use serde::{Deserialize, Serialize};

/// One change to the ITS mappings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MappingEvent {
    /// MAPD V=1: the device now uses the ITT at `itt_addr`. Any event mapping the device had
    /// before is gone (the ITT is new).
    DeviceMapped {
        /// DeviceID.
        device_id: u32,
        /// ITT guest physical address.
        itt_addr: u64,
        /// EventID bits of the ITT.
        event_id_bits: u8,
    },
    /// MAPD V=0: the device and every event mapping it had are gone.
    DeviceUnmapped {
        /// DeviceID.
        device_id: u32,
    },
    /// MAPC V=1: the collection targets `vcpu` (it targeted `previous` before).
    CollectionMapped {
        /// ICID.
        icid: u16,
        /// New target processor number.
        vcpu: u32,
        /// Previous target, if the collection was mapped.
        previous: Option<u32>,
    },
    /// MAPC V=0: the collection is unmapped.
    CollectionUnmapped {
        /// ICID.
        icid: u16,
        /// Previous target, if the collection was mapped.
        previous: Option<u32>,
    },
    /// MAPTI/MAPI: the event now translates to `intid` in collection `icid`.
    EventMapped {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
        /// LPI INTID.
        intid: u32,
        /// ICID.
        icid: u16,
        /// Current target of the collection, if mapped.
        vcpu: Option<u32>,
    },
    /// DISCARD, or a MAPTI/MAPI over a valid mapping (reported before the new
    /// [`MappingEvent::EventMapped`]): the old mapping is gone.
    EventUnmapped {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
        /// LPI INTID of the removed mapping.
        intid: u32,
        /// ICID of the removed mapping.
        icid: u16,
    },
    /// MOVI: the event moved to another collection.
    EventMoved {
        /// DeviceID.
        device_id: u32,
        /// EventID.
        event_id: u32,
        /// LPI INTID.
        intid: u32,
        /// Old ICID.
        from_icid: u16,
        /// New ICID.
        to_icid: u16,
        /// Old target, if the old collection was mapped.
        from_vcpu: Option<u32>,
        /// New target.
        to_vcpu: u32,
    },
}
