// Copyright 2025 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! MSI capability emulation (PCI Local Bus 3.0 §6.8.1, PCIe Base 6.0 §7.7.1).
//!
//! ```text
//!            32-bit            64-bit
//! 0x00  ID 0x05 | Next | Message Control
//! 0x04  Message Address    Message Address
//! 0x08  Message Data       Message Upper Address
//! 0x0c  Mask Bits*         Message Data
//! 0x10  Pending Bits*      Mask Bits*
//! 0x14                     Pending Bits*
//!       (* only with Per-vector Masking Capable, Message Control bit 8)
//! ```
//!
//! Message Control: Enable (bit 0) RW; Multiple Message Capable (bits 3:1) RO; Multiple
//! Message Enable (bits 6:4) RW; 64-bit Address Capable (bit 7) RO; Per-vector Masking
//! Capable (bit 8) RO. The guest sees Extended Message Data Capable (bit 9) as 0 and
//! Extended Message Data Enable (bit 10) as read-only 0: this crate exposes 16-bit message
//! data only (the ext-data register, when the device has one,
//! reads as 0 and ignores writes). Message Address bits 1:0 read as 0.
//!
//! Rules this module holds:
//!
//! * Multiple Message Enable above Multiple Message Capable (including the reserved
//!   encodings 110b and 111b) is **clamped** to Multiple Message Capable, and the rest of
//!   the write (the Enable bit in the same byte) still applies. The spec says software
//!   must not do this; clamping keeps the function within the vectors it has, grants the
//!   closest legal request, and is what a guest that reads the field back will see (test
//!   `mme_above_mmc_is_clamped`).
//! * With Multiple Message Enable = k, vector i (i < 2^k) sends the base Message Data with
//!   its low k bits replaced by i (PCI 3.0 §6.8.1.6; test `multi_message_data_per_vector`).
//! * Mask Bits are implemented for the 2^MMC vectors; the others are reserved and read 0.
//!   Pending Bits are read-only. Masking, pending and release follow the MSI-X rules of
//!   [`crate::msix`]: a masked vector's signal sets its Pending bit, and becoming
//!   deliverable releases it once.

use serde::{Deserialize, Serialize};

use crate::access::{Coverage, le_u16, le_u32, put_u16, put_u32, read_overlay, write_overlay};
use crate::caps::{PCI_CAP_ID_MSI, PCI_CONFIG_SPACE_SIZE, PCI_STD_HEADER_SIZEOF};
use crate::update::{PendingDelivery, Route, Tracker, UpdateBatch, VectorUpdate};
use crate::write_through::{DeviceProgram, DoorbellPolicy, WriteThroughError, program_address};
use crate::{MsiMessage, SignalOutcome};

/// Message Control: MSI Enable.
pub const MSI_CTRL_ENABLE: u16 = 1 << 0;
/// Message Control: Multiple Message Capable, bits 3:1.
pub const MSI_CTRL_MMC: u16 = 0x7 << 1;
/// Message Control: Multiple Message Enable, bits 6:4.
pub const MSI_CTRL_MME: u16 = 0x7 << 4;
/// Message Control: 64-bit Address Capable.
pub const MSI_CTRL_64BIT: u16 = 1 << 7;
/// Message Control: Per-vector Masking Capable.
pub const MSI_CTRL_PVM: u16 = 1 << 8;
/// Message Control: Extended Message Data Capable (PCIe Base 6.0 §7.7.1.2).
pub const MSI_CTRL_EXT_DATA: u16 = 1 << 9;

/// Largest MSI structure (64-bit with per-vector masking).
const MSI_CAP_MAX: usize = 24;

/// Length of an MSI structure with this Message Control (PCI 3.0 §6.8.1, Figure 6-9).
pub fn msi_cap_len(control: u16) -> usize {
    let is_64 = control & MSI_CTRL_64BIT != 0;
    if control & MSI_CTRL_PVM != 0 {
        if is_64 { 24 } else { 20 }
    } else {
        let base = if is_64 { 14 } else { 10 };
        if control & MSI_CTRL_EXT_DATA != 0 {
            base + 2
        } else {
            base
        }
    }
}

/// Errors of the MSI emulation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsiError {
    /// The capability does not fit in the standard config space image.
    #[error("read MSI capability at {offset:#x}: out of the config space image")]
    CapabilityOutOfRange {
        /// Offset given.
        offset: u8,
    },
    /// The ID at the offset is not 0x05.
    #[error("read MSI capability at {offset:#x}: capability ID is {id:#x}, not 0x05")]
    NotMsi {
        /// Offset given.
        offset: u8,
        /// ID found.
        id: u8,
    },
    /// Multiple Message Capable is a reserved encoding (110b or 111b).
    #[error("read MSI capability: Multiple Message Capable {0:#05b} is reserved")]
    ReservedMultipleMessageCapable(u8),
    /// A vector index beyond Multiple Message Capable.
    #[error("signal MSI vector {vector}: function is capable of {vectors} vectors")]
    VectorOutOfRange {
        /// The index.
        vector: u16,
        /// 2^MMC.
        vectors: u16,
    },
    /// A snapshot that does not fit this function.
    #[error("restore MSI state: {what} is {found:#x}, expected {expected:#x}")]
    SnapshotMismatch {
        /// The field.
        what: &'static str,
        /// Value in the snapshot.
        found: u64,
        /// Value of this function.
        expected: u64,
    },
    /// A snapshot with reserved bits set or an impossible state.
    #[error("restore MSI state: {what} is invalid ({value:#x})")]
    SnapshotInvalid {
        /// The field.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// The doorbell policy cannot serve MSI.
    #[error(transparent)]
    WriteThrough(#[from] WriteThroughError),
}

/// The device's MSI capability as read from its config space (its read-only fields).
///
/// Built only by [`from_registers`](Self::from_registers) or [`parse`](Self::parse), so its
/// Multiple Message Capable is always a legal encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsiCapability {
    offset: u8,
    next: u8,
    is_64bit: bool,
    per_vector_mask: bool,
    multiple_message_capable: u8,
    extended_data: bool,
}

impl MsiCapability {
    /// Decodes the read-only fields of Message Control.
    pub fn from_registers(offset: u8, next: u8, message_control: u16) -> Result<Self, MsiError> {
        let mmc = ((message_control & MSI_CTRL_MMC) >> 1) as u8;
        if mmc > 5 {
            return Err(MsiError::ReservedMultipleMessageCapable(mmc));
        }
        Ok(MsiCapability {
            offset,
            next,
            is_64bit: message_control & MSI_CTRL_64BIT != 0,
            per_vector_mask: message_control & MSI_CTRL_PVM != 0,
            multiple_message_capable: mmc,
            extended_data: message_control & MSI_CTRL_EXT_DATA != 0,
        })
    }

    /// Reads the capability at `offset` of a config-space image.
    pub fn parse(config: &[u8], offset: u8) -> Result<Self, MsiError> {
        let at = usize::from(offset);
        let out_of_range = MsiError::CapabilityOutOfRange { offset };
        if at < PCI_STD_HEADER_SIZEOF || config.len() < at + 4 {
            return Err(out_of_range);
        }
        let id = config.get(at).copied().unwrap_or(0);
        if id != PCI_CAP_ID_MSI {
            return Err(MsiError::NotMsi { offset, id });
        }
        let control = le_u16(config, at + 2);
        let end = at + msi_cap_len(control);
        if end > config.len() || end > PCI_CONFIG_SPACE_SIZE {
            return Err(out_of_range);
        }
        Self::from_registers(offset, config.get(at + 1).copied().unwrap_or(0), control)
    }

    /// Offset of the capability in config space.
    pub fn offset(&self) -> u8 {
        self.offset
    }

    /// Next Pointer the guest reads.
    pub fn next(&self) -> u8 {
        self.next
    }

    /// The same capability with another Next Pointer (to hide capabilities from the guest).
    pub fn with_next(self, next: u8) -> Self {
        MsiCapability { next, ..self }
    }

    /// 64-bit Address Capable.
    pub fn is_64bit(&self) -> bool {
        self.is_64bit
    }

    /// Per-vector Masking Capable.
    pub fn per_vector_mask(&self) -> bool {
        self.per_vector_mask
    }

    /// Multiple Message Capable: log2 of the vector count, 0..=5.
    pub fn multiple_message_capable(&self) -> u8 {
        self.multiple_message_capable
    }

    /// Extended Message Data Capable on the device (hidden from the guest).
    pub fn extended_data(&self) -> bool {
        self.extended_data
    }

    /// Vectors the function can use: 2^MMC (1..=32).
    pub fn vectors(&self) -> u16 {
        1 << self.multiple_message_capable
    }

    /// Length of the structure in config space.
    pub fn len(&self) -> usize {
        msi_cap_len(self.control_ro() | self.ext_bit())
    }

    /// Always false: the structure is at least 10 bytes.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn ext_bit(&self) -> u16 {
        if self.extended_data {
            MSI_CTRL_EXT_DATA
        } else {
            0
        }
    }

    /// Guest-visible read-only Message Control bits (Extended Message Data Capable hidden).
    fn control_ro(&self) -> u16 {
        let mut c = u16::from(self.multiple_message_capable) << 1;
        if self.is_64bit {
            c |= MSI_CTRL_64BIT;
        }
        if self.per_vector_mask {
            c |= MSI_CTRL_PVM;
        }
        c
    }

    fn data_offset(&self) -> usize {
        if self.is_64bit { 0x0c } else { 0x08 }
    }

    fn mask_offset(&self) -> usize {
        self.data_offset() + 4
    }

    fn pending_offset(&self) -> usize {
        self.data_offset() + 8
    }

    /// Mask of the implemented Mask/Pending bits: one per capable vector.
    fn implemented(&self) -> u32 {
        if !self.per_vector_mask {
            0
        } else if self.multiple_message_capable >= 5 {
            u32::MAX
        } else {
            (1u32 << self.vectors()) - 1
        }
    }

    fn write_mask(&self) -> [u8; MSI_CAP_MAX] {
        let mut m = [0u8; MSI_CAP_MAX];
        put_u16(&mut m, 2, MSI_CTRL_ENABLE | MSI_CTRL_MME);
        put_u32(&mut m, 4, !3);
        if self.is_64bit {
            put_u32(&mut m, 8, u32::MAX);
        }
        put_u16(&mut m, self.data_offset(), u16::MAX);
        if self.per_vector_mask {
            put_u32(&mut m, self.mask_offset(), self.implemented());
        }
        m
    }
}

/// Serializable MSI state, for migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsiSnapshot {
    /// Guest-visible Message Control (read-only bits are checked against the destination).
    pub control: u16,
    /// Message Address.
    pub address_lo: u32,
    /// Message Upper Address (0 for a 32-bit capability).
    pub address_hi: u32,
    /// Message Data.
    pub data: u16,
    /// Mask Bits.
    pub mask: u32,
    /// Pending Bits.
    pub pending: u32,
    /// Released deliveries not yet taken by the VMM.
    pub deliveries: Vec<PendingDelivery>,
}

/// MSI emulation of one function. See the module docs for the rules.
#[derive(Debug, Clone)]
pub struct MsiState {
    cap: MsiCapability,
    write_mask: [u8; MSI_CAP_MAX],
    enabled: bool,
    mme: u8,
    address_lo: u32,
    address_hi: u32,
    data: u16,
    mask: u32,
    pending: u32,
    tracker: Tracker,
}

const RESET_ROUTE: Route = Route {
    address: 0,
    data: 0,
    masked: false,
    enabled: false,
};

impl MsiState {
    /// Creates the emulation in reset state (PCI 3.0 §6.8.1: Enable 0, MME 0, Mask Bits 0).
    ///
    /// # Example
    ///
    /// ```
    /// use msi_trap::msi::{MsiCapability, MsiState};
    ///
    /// // 64-bit, per-vector masking, 4 vectors capable.
    /// let cap = MsiCapability::from_registers(0x50, 0, 0x0184).unwrap();
    /// let mut msi = MsiState::new(cap);
    /// msi.write_config(0x54, &0x0800_0040u32.to_le_bytes()); // address
    /// msi.write_config(0x5c, &0x20u16.to_le_bytes()); // data
    /// msi.write_config(0x52, &[0x21]); // MME = 2 (4 vectors), Enable
    /// let batch = msi.take_updates();
    /// let data: Vec<u32> = batch.updates.iter().map(|u| u.data).collect();
    /// assert_eq!(data, [0x20, 0x21, 0x22, 0x23]);
    /// ```
    pub fn new(cap: MsiCapability) -> Self {
        let n = usize::from(cap.vectors());
        MsiState {
            write_mask: cap.write_mask(),
            cap,
            enabled: false,
            mme: 0,
            address_lo: 0,
            address_hi: 0,
            data: 0,
            mask: 0,
            pending: 0,
            tracker: Tracker::new(n, RESET_ROUTE),
        }
    }

    /// The device's capability.
    pub fn capability(&self) -> &MsiCapability {
        &self.cap
    }

    /// MSI Enable.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Vectors allocated by the guest: 2^MME.
    pub fn allocated_vectors(&self) -> u16 {
        1 << self.mme
    }

    /// The 64-bit message address (upper half 0 for a 32-bit capability).
    pub fn address(&self) -> u64 {
        u64::from(self.address_hi) << 32 | u64::from(self.address_lo)
    }

    /// Message Data as the guest wrote it.
    pub fn data(&self) -> u16 {
        self.data
    }

    /// Whether vector `vector`'s Pending bit is set.
    pub fn is_pending(&self, vector: u16) -> bool {
        vector < 32 && self.pending & (1 << vector) != 0
    }

    /// Whether vector `vector` is deliverable: Enable, allocated, not masked.
    pub fn is_deliverable(&self, vector: u16) -> bool {
        vector < self.cap.vectors() && self.route(vector).deliverable()
    }

    /// Current routing state of `vector`.
    pub fn vector(&self, vector: u16) -> Option<VectorUpdate> {
        (vector < self.cap.vectors()).then(|| self.route(vector).with_index(vector))
    }

    /// Released deliveries not yet taken.
    pub fn queued_deliveries(&self) -> Vec<PendingDelivery> {
        self.tracker.releases()
    }

    /// Message data of allocated vector `vector`: the base data with its low MME bits
    /// replaced by the vector number (PCI 3.0 §6.8.1.6).
    pub fn vector_data(&self, vector: u16) -> u32 {
        let low = (1u32 << self.mme) - 1;
        (u32::from(self.data) & !low) | (u32::from(vector) & low)
    }

    fn route(&self, vector: u16) -> Route {
        let masked = self.mask & (1u32.checked_shl(u32::from(vector)).unwrap_or(0)) != 0;
        if vector >= self.allocated_vectors() {
            return Route {
                masked,
                ..RESET_ROUTE
            };
        }
        Route {
            address: self.address(),
            data: self.vector_data(vector),
            masked,
            enabled: self.enabled,
        }
    }

    fn after_change_all(&mut self) {
        for v in 0..self.cap.vectors() {
            let route = self.route(v);
            self.tracker.note(usize::from(v), route);
            if route.deliverable() && self.is_pending(v) {
                self.pending &= !(1u32 << v);
                self.tracker
                    .release(usize::from(v), route.address, route.data);
            }
        }
    }

    fn control(&self) -> u16 {
        let mut c = self.cap.control_ro() | (u16::from(self.mme) << 4);
        if self.enabled {
            c |= MSI_CTRL_ENABLE;
        }
        c
    }

    fn image(&self) -> [u8; MSI_CAP_MAX] {
        let mut image = [0u8; MSI_CAP_MAX];
        image[0] = PCI_CAP_ID_MSI;
        image[1] = self.cap.next;
        put_u16(&mut image, 2, self.control());
        put_u32(&mut image, 4, self.address_lo);
        if self.cap.is_64bit {
            put_u32(&mut image, 8, self.address_hi);
        }
        put_u16(&mut image, self.cap.data_offset(), self.data);
        if self.cap.per_vector_mask {
            put_u32(&mut image, self.cap.mask_offset(), self.mask);
            put_u32(&mut image, self.cap.pending_offset(), self.pending);
        }
        image
    }

    /// Guest config-space read at `offset` (absolute): overwrites the bytes of `data` inside
    /// the capability.
    pub fn read_config(&self, offset: u16, data: &mut [u8]) -> Coverage {
        let image = self.image();
        let len = self.cap.len().min(MSI_CAP_MAX);
        read_overlay(
            image.get(..len).unwrap_or(&image),
            u64::from(self.cap.offset),
            u64::from(offset),
            data,
        )
    }

    /// Guest config-space write at `offset` (absolute): applies the writable bytes inside
    /// the capability (Enable, MME clamped to MMC, address, data, implemented Mask Bits).
    pub fn write_config(&mut self, offset: u16, data: &[u8]) -> Coverage {
        let mut image = self.image();
        let len = self.cap.len().min(MSI_CAP_MAX);
        let (Some(window), Some(mask)) = (image.get_mut(..len), self.write_mask.get(..len)) else {
            return Coverage::Outside;
        };
        let coverage = write_overlay(
            window,
            mask,
            u64::from(self.cap.offset),
            u64::from(offset),
            data,
        );
        if coverage == Coverage::Outside {
            return coverage;
        }
        let control = le_u16(&image, 2);
        let requested = ((control & MSI_CTRL_MME) >> 4) as u8;
        let mme = requested.min(self.cap.multiple_message_capable);
        if mme != requested {
            log::debug!(
                "MSI at {:#x}: Multiple Message Enable {requested} above capable {}, clamped",
                self.cap.offset,
                self.cap.multiple_message_capable
            );
        }
        let before = (self.enabled, self.mme, self.address(), self.data, self.mask);
        self.enabled = control & MSI_CTRL_ENABLE != 0;
        self.mme = mme;
        self.address_lo = le_u32(&image, 4) & !3;
        if self.cap.is_64bit {
            self.address_hi = le_u32(&image, 8);
        }
        self.data = le_u16(&image, self.cap.data_offset());
        if self.cap.per_vector_mask {
            self.mask = le_u32(&image, self.cap.mask_offset()) & self.cap.implemented();
        }
        if before != (self.enabled, self.mme, self.address(), self.data, self.mask) {
            self.after_change_all();
        }
        coverage
    }

    /// The host reports that the device signalled `vector`.
    pub fn signal(&mut self, vector: u16) -> Result<SignalOutcome, MsiError> {
        if vector >= self.cap.vectors() {
            return Err(MsiError::VectorOutOfRange {
                vector,
                vectors: self.cap.vectors(),
            });
        }
        let route = self.route(vector);
        Ok(if !route.enabled {
            SignalOutcome::Dropped
        } else if route.masked {
            self.pending |= 1 << vector;
            SignalOutcome::Pending
        } else {
            SignalOutcome::Deliver(MsiMessage {
                address: route.address,
                data: route.data,
            })
        })
    }

    /// Whether a batch is due (see [`crate::update`]).
    pub fn updates_due(&self) -> bool {
        self.tracker.due()
    }

    /// Whether a batch may be non-empty.
    pub fn has_updates(&self) -> bool {
        self.tracker.has_dirty()
    }

    /// Commits: returns the coalesced batch since the previous one.
    pub fn take_updates(&mut self) -> UpdateBatch {
        let mut batch = UpdateBatch::default();
        self.take_updates_into(&mut batch);
        batch
    }

    /// As [`take_updates`](Self::take_updates), reusing `batch`'s allocations.
    pub fn take_updates_into(&mut self, batch: &mut UpdateBatch) {
        let this = self.clone_routes();
        self.tracker
            .take_into(batch, |i| this.get(i).copied().unwrap_or(RESET_ROUTE));
    }

    fn clone_routes(&self) -> Vec<Route> {
        (0..self.cap.vectors()).map(|v| self.route(v)).collect()
    }

    fn check_policy(policy: DoorbellPolicy) -> Result<(), MsiError> {
        if policy == DoorbellPolicy::TableAddressWrite {
            return Err(WriteThroughError::Unsupported {
                policy: policy.name(),
                kind: "MSI",
                vector: 0,
            }
            .into());
        }
        Ok(())
    }

    /// What must reach the device for every deliverable vector under `policy`.
    /// [`DoorbellPolicy::TableAddressWrite`] is an error: the MSI address lives in config
    /// space, which VFIO virtualizes.
    pub fn device_program(&self, policy: DoorbellPolicy) -> Result<Vec<DeviceProgram>, MsiError> {
        Self::check_policy(policy)?;
        let mut out = Vec::new();
        for v in 0..self.cap.vectors() {
            let route = self.route(v);
            if route.deliverable() {
                out.push(program_address(policy, v, route.address, None)?);
            }
        }
        Ok(out)
    }

    /// What must reach the device for the deliverable vectors of `batch`.
    pub fn device_program_for(
        &self,
        policy: DoorbellPolicy,
        batch: &UpdateBatch,
    ) -> Result<Vec<DeviceProgram>, MsiError> {
        Self::check_policy(policy)?;
        let mut out = Vec::new();
        for u in batch.updates.iter().filter(|u| u.is_deliverable()) {
            if self.is_deliverable(u.index) {
                out.push(program_address(policy, u.index, self.address(), None)?);
            }
        }
        Ok(out)
    }

    /// Function reset: every register to its reset value, queued deliveries dropped.
    pub fn reset(&mut self) {
        self.enabled = false;
        self.mme = 0;
        self.address_lo = 0;
        self.address_hi = 0;
        self.data = 0;
        self.mask = 0;
        self.pending = 0;
        self.tracker.drop_releases();
        self.after_change_all();
    }

    /// Serializable state.
    pub fn snapshot(&self) -> MsiSnapshot {
        MsiSnapshot {
            control: self.control(),
            address_lo: self.address_lo,
            address_hi: self.address_hi,
            data: self.data,
            mask: self.mask,
            pending: self.pending,
            deliveries: self.tracker.releases(),
        }
    }

    /// Restores a snapshot taken on a function with the same capability. Every field is
    /// checked first; on error nothing changes. The next batch reports every vector.
    pub fn restore(&mut self, snap: &MsiSnapshot) -> Result<(), MsiError> {
        let ro = !(MSI_CTRL_ENABLE | MSI_CTRL_MME);
        if snap.control & ro != self.cap.control_ro() {
            return Err(MsiError::SnapshotMismatch {
                what: "read-only Message Control bits",
                found: u64::from(snap.control & ro),
                expected: u64::from(self.cap.control_ro()),
            });
        }
        let invalid = |what, value: u64| Err(MsiError::SnapshotInvalid { what, value });
        let mme = ((snap.control & MSI_CTRL_MME) >> 4) as u8;
        if mme > self.cap.multiple_message_capable {
            return invalid("Multiple Message Enable", mme.into());
        }
        if snap.address_lo & 3 != 0 {
            return invalid("Message Address", snap.address_lo.into());
        }
        if !self.cap.is_64bit && snap.address_hi != 0 {
            return invalid("Message Upper Address", snap.address_hi.into());
        }
        let implemented = self.cap.implemented();
        if snap.mask & !implemented != 0 {
            return invalid("Mask Bits", snap.mask.into());
        }
        if snap.pending & !implemented != 0 {
            return invalid("Pending Bits", snap.pending.into());
        }
        let mut restored = self.clone();
        restored.enabled = snap.control & MSI_CTRL_ENABLE != 0;
        restored.mme = mme;
        restored.address_lo = snap.address_lo;
        restored.address_hi = snap.address_hi;
        restored.data = snap.data;
        restored.mask = snap.mask;
        restored.pending = snap.pending;
        for v in 0..self.cap.vectors() {
            if restored.is_pending(v) && restored.route(v).deliverable() {
                return invalid("Pending bit of a deliverable vector", v.into());
            }
        }
        let mut seen = 0u32;
        restored.tracker.drop_releases();
        for d in &snap.deliveries {
            if d.index >= self.cap.vectors() || seen & (1 << d.index) != 0 {
                return invalid("queued delivery", d.index.into());
            }
            seen |= 1 << d.index;
            restored
                .tracker
                .release(usize::from(d.index), d.address, d.data);
        }
        restored.tracker.force_all();
        *self = restored;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: u16 = 0x50;

    fn msi(control: u16) -> MsiState {
        MsiState::new(MsiCapability::from_registers(AT as u8, 0x70, control).unwrap())
    }

    fn read(m: &MsiState, off: u16, len: usize) -> Vec<u8> {
        let mut buf = vec![0xee; len];
        m.read_config(AT + off, &mut buf);
        buf
    }

    fn rd32(m: &MsiState, off: u16) -> u32 {
        u32::from_le_bytes(read(m, off, 4).try_into().unwrap())
    }

    #[test]
    fn cap_lengths() {
        assert_eq!(msi_cap_len(0), 10);
        assert_eq!(msi_cap_len(MSI_CTRL_64BIT), 14);
        assert_eq!(msi_cap_len(MSI_CTRL_PVM), 20);
        assert_eq!(msi_cap_len(MSI_CTRL_64BIT | MSI_CTRL_PVM), 24);
        assert_eq!(msi_cap_len(MSI_CTRL_EXT_DATA), 12);
        assert_eq!(msi_cap_len(MSI_CTRL_64BIT | MSI_CTRL_EXT_DATA), 16);
    }

    #[test]
    fn reserved_mmc_is_error() {
        assert_eq!(
            MsiCapability::from_registers(0x50, 0, 6 << 1),
            Err(MsiError::ReservedMultipleMessageCapable(6))
        );
        assert_eq!(
            MsiCapability::from_registers(0x50, 0, 5 << 1)
                .unwrap()
                .vectors(),
            32
        );
    }

    #[test]
    fn parse_checks_id_and_range() {
        let mut c = [0u8; 256];
        c[0x50] = 0x11;
        assert_eq!(
            MsiCapability::parse(&c, 0x50),
            Err(MsiError::NotMsi {
                offset: 0x50,
                id: 0x11
            })
        );
        c[0xf0] = 0x05;
        c[0xf2] = 0x80;
        c[0xf3] = 0x01; // 24 bytes from 0xf0 runs past 0x100
        assert_eq!(
            MsiCapability::parse(&c, 0xf0),
            Err(MsiError::CapabilityOutOfRange { offset: 0xf0 })
        );
        assert_eq!(
            MsiCapability::parse(&c, 0x20),
            Err(MsiError::CapabilityOutOfRange { offset: 0x20 })
        );
        c[0x50] = 0x05;
        c[0x51] = 0x60;
        c[0x52] = 0x86; // 64-bit, MMC 3
        let cap = MsiCapability::parse(&c, 0x50).unwrap();
        assert!(cap.is_64bit() && !cap.per_vector_mask());
        assert_eq!((cap.next(), cap.vectors(), cap.len()), (0x60, 8, 14));
        assert_eq!(cap.with_next(0).next(), 0);
    }

    #[test]
    fn read_only_fields_stay_read_only() {
        let mut m = msi(MSI_CTRL_64BIT | MSI_CTRL_PVM | MSI_CTRL_EXT_DATA | (2 << 1));
        m.write_config(AT, &[0xff; 4]);
        // ID, next unchanged; control: enable + MME clamped to 2; RO bits as capable;
        // Extended Message Data Capable hidden.
        assert_eq!(read(&m, 0, 4), vec![0x05, 0x70, 0xa5, 0x01]);
        m.write_config(AT + 4, &[0xff; 4]);
        assert_eq!(rd32(&m, 4), 0xffff_fffc, "address bits 1:0 read 0");
        m.write_config(AT + 0xc, &[0xff; 4]);
        assert_eq!(rd32(&m, 0xc), 0xffff, "ext data reads 0");
        m.write_config(AT + 0x10, &[0xff; 4]);
        assert_eq!(rd32(&m, 0x10), 0xf, "mask bits of 4 vectors");
        m.write_config(AT + 0x14, &[0xff; 4]);
        assert_eq!(rd32(&m, 0x14), 0, "pending bits are read-only");
        // Beyond the 24-byte structure: not mine.
        let mut buf = [0xee; 4];
        assert_eq!(m.read_config(AT + 0x18, &mut buf), Coverage::Outside);
        assert_eq!(buf, [0xee; 4]);
        assert_eq!(m.write_config(AT + 0x18, &[0; 4]), Coverage::Outside);
    }

    #[test]
    fn thirty_two_bit_layout() {
        let mut m = msi(MSI_CTRL_PVM | (5 << 1));
        m.write_config(AT + 4, &0x1234_5678u32.to_le_bytes());
        m.write_config(AT + 8, &0xabcd_u16.to_le_bytes());
        m.write_config(AT + 0xc, &u32::MAX.to_le_bytes());
        assert_eq!(m.address(), 0x1234_5678);
        assert_eq!(rd32(&m, 8), 0xabcd);
        assert_eq!(rd32(&m, 0xc), u32::MAX, "32 vectors: all mask bits");
        assert_eq!(m.capability().len(), 20);
        // Odd sizes and straddling accesses.
        let mut buf = [0u8; 3];
        assert_eq!(m.read_config(AT + 5, &mut buf), Coverage::Inside);
        assert_eq!(buf, [0x56, 0x34, 0x12]);
        let mut buf = [0xee; 4];
        assert_eq!(m.read_config(AT + 0x12, &mut buf), Coverage::Partial);
        assert_eq!(buf, [0, 0, 0xee, 0xee]);
        // Straddling the start: only ID and Next (read-only) are inside.
        assert_eq!(
            m.write_config(AT - 2, &[1, 2, 0xff, 0xff]),
            Coverage::Partial
        );
        assert_eq!(read(&m, 0, 2), vec![0x05, 0x70]);
        // Straddling the end: Pending Bits (read-only) then outside.
        assert_eq!(m.write_config(AT + 0x12, &[0xff; 4]), Coverage::Partial);
        assert_eq!(rd32(&m, 0x10), 0);
        assert_eq!(m.write_config(AT + 2, &[0x01]), Coverage::Inside);
        assert!(m.enabled());
    }

    #[test]
    fn mme_above_mmc_is_clamped() {
        let mut m = msi(MSI_CTRL_64BIT | (1 << 1)); // 2 vectors capable
        m.write_config(AT + 2, &[0x71]); // MME = 7 (reserved), Enable
        assert!(m.enabled(), "the rest of the write applies");
        assert_eq!(m.allocated_vectors(), 2);
        // Enable, MMC = 1, MME = 1, 64-bit.
        assert_eq!(read(&m, 2, 1), vec![0x93]);
        m.write_config(AT + 2, &[0x31]); // MME = 3 > MMC = 1
        assert_eq!(m.allocated_vectors(), 2);
        m.write_config(AT + 2, &[0x01]);
        assert_eq!(m.allocated_vectors(), 1);
    }

    #[test]
    fn multi_message_data_per_vector() {
        let mut m = msi(MSI_CTRL_64BIT | (3 << 1)); // 8 capable
        m.write_config(AT + 4, &0x0800_0040u32.to_le_bytes());
        m.write_config(AT + 0xc, &0x4567u16.to_le_bytes());
        m.write_config(AT + 2, &[0x21]); // MME = 2: 4 vectors, Enable
        let b = m.take_updates();
        let got: Vec<_> = b
            .updates
            .iter()
            .filter(|u| u.enabled)
            .map(|u| (u.index, u.data))
            .collect();
        // Base 0x4567: low 2 bits replaced by the vector number.
        assert_eq!(
            got,
            vec![(0, 0x4564), (1, 0x4565), (2, 0x4566), (3, 0x4567)]
        );
        assert!(b.updates.iter().all(|u| u.address == 0x0800_0040));
        assert!(!m.is_deliverable(4), "vector 4 is not allocated");
        assert_eq!(m.signal(4), Ok(SignalOutcome::Dropped));
        assert_eq!(
            m.signal(2),
            Ok(SignalOutcome::Deliver(MsiMessage {
                address: 0x0800_0040,
                data: 0x4566
            }))
        );
        assert_eq!(
            m.signal(8),
            Err(MsiError::VectorOutOfRange {
                vector: 8,
                vectors: 8
            })
        );
        // MME = 0: the data is used as is.
        m.write_config(AT + 2, &[0x01]);
        assert_eq!(m.vector_data(0), 0x4567);
    }

    #[test]
    fn per_vector_mask_and_pending() {
        let mut m = msi(MSI_CTRL_64BIT | MSI_CTRL_PVM | (1 << 1));
        m.write_config(AT + 4, &0x1000u32.to_le_bytes());
        m.write_config(AT + 0xc, &0x10u16.to_le_bytes());
        m.write_config(AT + 0x10, &2u32.to_le_bytes()); // mask vector 1
        m.write_config(AT + 2, &[0x11]);
        m.take_updates();
        assert!(m.is_deliverable(0) && !m.is_deliverable(1));
        assert_eq!(m.signal(1), Ok(SignalOutcome::Pending));
        assert_eq!(rd32(&m, 0x14), 2, "pending bit visible");
        assert!(!m.updates_due());
        m.write_config(AT + 0x10, &0u32.to_le_bytes()); // unmask
        assert_eq!(rd32(&m, 0x14), 0);
        assert!(m.updates_due());
        let b = m.take_updates();
        assert_eq!(
            b.deliveries,
            vec![PendingDelivery {
                index: 1,
                address: 0x1000,
                data: 0x11
            }]
        );
        assert_eq!(b.updates.len(), 1);
        assert!(b.updates[0].is_deliverable());
    }

    #[test]
    fn disabled_signal_is_dropped() {
        let mut m = msi(MSI_CTRL_PVM);
        assert_eq!(m.signal(0), Ok(SignalOutcome::Dropped));
        assert!(!m.is_pending(0));
    }

    #[test]
    fn table_address_write_is_refused() {
        let m = msi(MSI_CTRL_64BIT);
        assert!(matches!(
            m.device_program(DoorbellPolicy::TableAddressWrite),
            Err(MsiError::WriteThrough(
                WriteThroughError::Unsupported { .. }
            ))
        ));
    }

    #[test]
    fn device_program_has_guest_address_only() {
        let mut m = msi(MSI_CTRL_64BIT | (1 << 1));
        m.write_config(AT + 4, &0x0800_0040u32.to_le_bytes());
        m.write_config(AT + 8, &1u32.to_le_bytes());
        m.write_config(AT + 0xc, &0xbeefu16.to_le_bytes());
        m.write_config(AT + 2, &[0x11]);
        let p = m.device_program(DoorbellPolicy::PerVectorIova).unwrap();
        assert_eq!(
            p,
            vec![
                DeviceProgram::SetIova {
                    vector: 0,
                    iova: 0x1_0800_0040
                },
                DeviceProgram::SetIova {
                    vector: 1,
                    iova: 0x1_0800_0040
                }
            ]
        );
        let b = m.take_updates();
        assert_eq!(
            m.device_program_for(DoorbellPolicy::PerVectorIova, &b)
                .unwrap(),
            p
        );
        let k = m
            .device_program(DoorbellPolicy::KernelProgrammed {
                doorbell_iova: 0x800_0040,
            })
            .unwrap();
        assert!(k.iter().all(|p| matches!(
            p,
            DeviceProgram::KernelProgrammed {
                address_matches: false,
                ..
            }
        )));
    }

    #[test]
    fn snapshot_round_trip_and_validation() {
        let mut m = msi(MSI_CTRL_64BIT | MSI_CTRL_PVM | (2 << 1));
        m.write_config(AT + 4, &0x2000u32.to_le_bytes());
        m.write_config(AT + 0x10, &1u32.to_le_bytes());
        m.write_config(AT + 2, &[0x21]);
        m.signal(0).unwrap();
        let snap = m.snapshot();
        let json = serde_json::to_string(&snap).unwrap();
        let back: MsiSnapshot = serde_json::from_str(&json).unwrap();
        let mut n = msi(MSI_CTRL_64BIT | MSI_CTRL_PVM | (2 << 1));
        n.restore(&back).unwrap();
        assert_eq!(n.snapshot(), snap);
        assert!(n.is_pending(0));
        assert_eq!(n.take_updates().updates.len(), 4, "all vectors reported");

        let mut other = msi(MSI_CTRL_PVM | (2 << 1));
        assert!(matches!(
            other.restore(&snap),
            Err(MsiError::SnapshotMismatch { .. })
        ));
        let mut bad = snap.clone();
        bad.mask = 1 << 4;
        assert!(matches!(
            n.restore(&bad),
            Err(MsiError::SnapshotInvalid {
                what: "Mask Bits",
                ..
            })
        ));
        let mut bad = snap.clone();
        bad.mask = 0; // vector 0 pending while deliverable
        assert!(matches!(
            n.restore(&bad),
            Err(MsiError::SnapshotInvalid { .. })
        ));
        let mut bad = snap.clone();
        bad.control |= 0x60; // MME 6 > MMC 2
        assert!(matches!(
            n.restore(&bad),
            Err(MsiError::SnapshotInvalid { .. })
        ));
        assert_eq!(n.snapshot(), snap, "failed restores change nothing");
    }

    #[test]
    fn reset_clears_everything() {
        let mut m = msi(MSI_CTRL_64BIT | MSI_CTRL_PVM);
        m.write_config(AT + 4, &0x2000u32.to_le_bytes());
        m.write_config(AT + 2, &[0x01]);
        m.take_updates();
        m.reset();
        assert!(!m.enabled());
        assert_eq!(m.address(), 0);
        assert!(m.updates_due(), "the live route must be torn down");
        let b = m.take_updates();
        assert_eq!(b.updates.len(), 1);
        assert!(!b.updates[0].is_deliverable());
    }
}
