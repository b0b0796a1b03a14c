// Copyright 2025 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! MSI-X emulation: the capability, the table, the PBA, masking and pending delivery.
//!
//! [`MsixState`] is what a VMM's config-space and BAR trap handlers call. Its rules:
//!
//! * Reset (PCI 3.0 §6.8.2.9): MSI-X Enable and Function Mask clear, every entry masked with
//!   address and data 0, PBA clear ([`MsixState::reset`]).
//! * A vector is deliverable iff MSI-X Enable = 1, Function Mask = 0 and its Mask bit = 0
//!   ([`MsixState::is_deliverable`]).
//! * [`MsixState::signal`] is the host reporting that the device signalled a vector: a
//!   deliverable vector is delivered; a masked one (its own Mask or Function Mask) gets its
//!   Pending bit set; with MSI-X disabled the signal is dropped (the function does not use
//!   MSI-X then, PCIe Base 6.0 §7.7.2.2).
//! * When a vector becomes deliverable with its Pending bit set (per-vector unmask,
//!   Function Mask clear, or Enable set), the bit is cleared and a
//!   [`PendingDelivery`] is queued for the next batch
//!   (PCI 3.0 §6.8.2.9). Hence the invariant: a deliverable vector is never pending (test
//!   `pending_implies_not_deliverable`).
//! * Address or data writes to an unmasked entry (undefined in PCI 3.0 §6.8.2.9) take effect
//!   at once and make the batch due (see [`crate::update`]).

pub mod cap;
pub mod layout;
pub mod pba;
pub mod table;
mod vectors;

use serde::{Deserialize, Serialize};

use crate::access::{Coverage, read_overlay, write_overlay};
use crate::update::{Bitmap, PendingDelivery, Route, UpdateBatch, VectorUpdate};
use crate::write_through::{DeviceProgram, DoorbellPolicy, program_address};
use crate::{MsiMessage, SignalOutcome};

use cap::{MSIX_CAP_LEN, MSIX_CTRL_ENABLE, MSIX_CTRL_FUNCTION_MASK, MsixCapability};
use layout::{BarIndex, GuestAccess, LayoutError, MsixLayout, MsixRegion};
use table::{MsixEntry, supported_shape};
use vectors::{Vectors, WriteOutcome, route_of};

/// Errors of the MSI-X emulation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsixError {
    /// The capability does not fit in the standard config space image.
    #[error("read MSI-X capability at {offset:#x}: out of the config space image")]
    CapabilityOutOfRange {
        /// Offset given.
        offset: u8,
    },
    /// The ID at the offset is not 0x11.
    #[error("read MSI-X capability at {offset:#x}: capability ID is {id:#x}, not 0x11")]
    NotMsix {
        /// Offset given.
        offset: u8,
        /// ID found.
        id: u8,
    },
    /// A BIR of 6 or 7 (reserved, PCI 3.0 §6.8.2.4).
    #[error("read MSI-X capability: {what} BIR {bir} is reserved")]
    ReservedBir {
        /// "table" or "PBA".
        what: &'static str,
        /// The BIR.
        bir: u8,
    },
    /// The layout could not be computed.
    #[error("compute MSI-X layout: {0}")]
    Layout(#[from] LayoutError),
    /// The layout was computed for another capability.
    #[error(
        "create MSI-X state: layout was computed for another table ({layout} vectors) than the capability's ({cap} vectors)"
    )]
    LayoutMismatch {
        /// Vectors of the capability.
        cap: u16,
        /// Vectors of the layout.
        layout: u16,
    },
    /// A vector index beyond the table.
    #[error("signal MSI-X vector {vector}: table has {vectors} vectors")]
    VectorOutOfRange {
        /// The index.
        vector: u16,
        /// Table size.
        vectors: u16,
    },
    /// A snapshot that does not fit this device.
    #[error("restore MSI-X state: {what} is {found}, expected {expected}")]
    SnapshotMismatch {
        /// The field.
        what: &'static str,
        /// Value in the snapshot.
        found: u64,
        /// Value of this device.
        expected: u64,
    },
    /// A snapshot with reserved bits set or an impossible state.
    #[error("restore MSI-X state: {what} of vector {vector} is invalid")]
    SnapshotInvalid {
        /// The field.
        what: &'static str,
        /// The vector.
        vector: u16,
    },
}

/// Result of a table or PBA access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MmioOutcome {
    /// The access was performed.
    Done,
    /// The access was not an aligned DWORD/QWORD inside the structure: a read returned
    /// all-ones, a write was ignored.
    Unsupported,
}

/// Result of a BAR access through [`MsixState::read_bar`] / [`MsixState::write_bar`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BarAccess {
    /// Handled here (table, PBA, hidden or unbacked space).
    Handled,
    /// Device registers: the VMM performs the access on the real device at this location.
    Forward(MsixRegion),
}

/// Serializable MSI-X state, for migration (see [`MsixState::snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsixSnapshot {
    /// Table size.
    pub vectors: u16,
    /// Guest-visible Table Offset/BIR, checked against the destination's layout.
    pub table_offset_bir: u32,
    /// Guest-visible PBA Offset/BIR, checked against the destination's layout.
    pub pba_offset_bir: u32,
    /// MSI-X Enable.
    pub enabled: bool,
    /// Function Mask.
    pub function_masked: bool,
    /// Table entries.
    pub entries: Vec<MsixEntry>,
    /// PBA QWORDs.
    pub pba: Vec<u64>,
    /// Released deliveries not yet taken by the VMM.
    pub deliveries: Vec<PendingDelivery>,
}

/// MSI-X emulation of one function. See the module docs for the rules.
#[derive(Debug, Clone)]
pub struct MsixState {
    cap: MsixCapability,
    layout: MsixLayout,
    enabled: bool,
    function_masked: bool,
    /// Entries, what was reported for them, dirty tracking, released deliveries.
    vectors: Vectors,
    pba: Bitmap,
}

const RESET_ROUTE: Route = Route {
    address: 0,
    data: 0,
    masked: true,
    enabled: false,
};

impl MsixState {
    /// Creates the emulation in reset state for a capability and a layout computed from it.
    pub fn new(cap: MsixCapability, layout: MsixLayout) -> Result<Self, MsixError> {
        if layout.real() != cap.real() {
            return Err(MsixError::LayoutMismatch {
                cap: cap.vectors,
                layout: layout.vectors(),
            });
        }
        let n = usize::from(cap.vectors);
        Ok(MsixState {
            cap,
            layout,
            enabled: false,
            function_masked: false,
            vectors: Vectors::new(n, RESET_ROUTE),
            pba: Bitmap::new(n),
        })
    }

    /// The device's capability.
    pub fn capability(&self) -> &MsixCapability {
        &self.cap
    }

    /// The layout.
    pub fn layout(&self) -> &MsixLayout {
        &self.layout
    }

    /// Table size.
    pub fn vectors(&self) -> u16 {
        self.cap.vectors
    }

    /// MSI-X Enable.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Function Mask.
    pub fn function_masked(&self) -> bool {
        self.function_masked
    }

    /// Entry `vector`, as the guest programmed it.
    pub fn entry(&self, vector: u16) -> Option<MsixEntry> {
        self.vectors.entry(usize::from(vector))
    }

    /// Whether vector `vector`'s Pending bit is set.
    pub fn is_pending(&self, vector: u16) -> bool {
        self.pba.get(usize::from(vector))
    }

    /// Whether vector `vector` is deliverable: Enable, no Function Mask, no vector Mask.
    pub fn is_deliverable(&self, vector: u16) -> bool {
        self.route(usize::from(vector)).deliverable()
    }

    /// Current routing state of `vector` (what the next batch would report for it).
    pub fn vector(&self, vector: u16) -> Option<VectorUpdate> {
        (vector < self.cap.vectors).then(|| self.route(usize::from(vector)).with_index(vector))
    }

    /// Released deliveries not yet taken by [`take_updates`](Self::take_updates).
    pub fn queued_deliveries(&self) -> Vec<PendingDelivery> {
        self.vectors.releases()
    }

    #[inline]
    fn route(&self, i: usize) -> Route {
        match self.vectors.entry(i) {
            Some(e) => route_of(&e, self.enabled, self.function_masked),
            None => RESET_ROUTE,
        }
    }

    /// Notes vector `i`'s new state `e` and releases its pending message if it is
    /// deliverable (the trapped write's hot path).
    #[inline(always)]
    fn after_change_entry(&mut self, i: usize, e: MsixEntry) {
        let route = route_of(&e, self.enabled, self.function_masked);
        self.vectors.note(i, route);
        if route.deliverable() && self.pba.get(i) {
            self.release(i, route);
        }
    }

    #[cold]
    #[inline(never)]
    fn release(&mut self, i: usize, route: Route) {
        self.pba.clear(i);
        self.vectors.release(i, route.address, route.data);
    }

    /// Every vector may have changed (Enable, Function Mask, reset): one pass marks them
    /// dirty and evaluates the "due" rule until it is met, then only the pending vectors are
    /// visited for release (a deliverable vector is never pending).
    fn after_change_all(&mut self) {
        self.vectors.note_all(self.enabled, self.function_masked);
        let mut pending = Vec::new();
        for (k, w) in self.pba.words().iter().enumerate() {
            let mut bits = *w;
            while bits != 0 {
                pending.push(k * 64 + bits.trailing_zeros() as usize);
                bits &= bits - 1;
            }
        }
        for i in pending {
            let route = self.route(i);
            if route.deliverable() {
                self.release(i, route);
            }
        }
    }

    fn control(&self) -> u16 {
        let mut c = 0;
        if self.enabled {
            c |= MSIX_CTRL_ENABLE;
        }
        if self.function_masked {
            c |= MSIX_CTRL_FUNCTION_MASK;
        }
        c
    }

    fn cap_image(&self) -> [u8; MSIX_CAP_LEN] {
        cap::render(
            &self.cap,
            self.control(),
            self.layout.table_offset_bir(),
            self.layout.pba_offset_bir(),
        )
    }

    /// Guest config-space read at `offset` (absolute): overwrites the bytes of `data` that
    /// fall inside the capability. Table Offset/BIR and PBA Offset/BIR are the guest layout's.
    pub fn read_config(&self, offset: u16, data: &mut [u8]) -> Coverage {
        read_overlay(
            &self.cap_image(),
            u64::from(self.cap.offset),
            u64::from(offset),
            data,
        )
    }

    /// Guest config-space write at `offset` (absolute): applies the bytes inside the
    /// capability; only Function Mask and MSI-X Enable are writable (PCI 3.0 §6.8.2.3).
    pub fn write_config(&mut self, offset: u16, data: &[u8]) -> Coverage {
        let mut image = self.cap_image();
        let coverage = write_overlay(
            &mut image,
            &cap::WRITE_MASK,
            u64::from(self.cap.offset),
            u64::from(offset),
            data,
        );
        let control = cap::control_of(&image);
        if control != self.control() {
            self.enabled = control & MSIX_CTRL_ENABLE != 0;
            self.function_masked = control & MSIX_CTRL_FUNCTION_MASK != 0;
            self.after_change_all();
        }
        coverage
    }

    /// Guest read of the table at `offset` from the guest table's start (see
    /// [`table`] for the supported shapes).
    #[inline]
    pub fn read_table(&self, offset: u64, data: &mut [u8]) -> MmioOutcome {
        // The hot path: an aligned dword of an existing entry.
        if offset.is_multiple_of(4)
            && let Ok(out) = <&mut [u8; 4]>::try_from(&mut *data)
            && let Some(e) = self.vectors.entry((offset / 16) as usize)
        {
            *out = e.dword((offset / 4) as usize).to_le_bytes();
            return MmioOutcome::Done;
        }
        self.read_table_other(offset, data)
    }

    #[inline(never)]
    fn read_table_other(&self, offset: u64, data: &mut [u8]) -> MmioOutcome {
        if !supported_shape(offset, data.len(), self.layout.table_len()) {
            log::debug!(
                "MSI-X table read of {} bytes at {offset:#x}: unsupported, reads all-ones",
                data.len()
            );
            data.fill(0xff);
            return MmioOutcome::Unsupported;
        }
        let i = (offset / 16) as usize;
        let field = ((offset % 16) / 4) as usize;
        let Some(entry) = self.vectors.entry(i) else {
            data.fill(0xff);
            return MmioOutcome::Unsupported;
        };
        for (k, chunk) in data.chunks_exact_mut(4).enumerate() {
            chunk.copy_from_slice(&entry.read_dword(field + k).to_le_bytes());
        }
        MmioOutcome::Done
    }

    /// Guest write of the table at `offset` from the guest table's start. Read-only bits are
    /// dropped: address bits 1:0 and Vector Control bits 31:1.
    ///
    /// A write that leaves the entry as it was changes nothing (its route is what was noted
    /// last, and a deliverable vector is never pending), so it is not even noted.
    #[inline]
    pub fn write_table(&mut self, offset: u64, data: &[u8]) -> MmioOutcome {
        // The hot path: an aligned dword inside the table (the table is `vectors * 16`
        // bytes, so an existing entry is inside it).
        if let Ok(bytes) = <[u8; 4]>::try_from(data)
            && offset.is_multiple_of(4)
            && let Some(old) = self.vectors.entry((offset / 16) as usize)
        {
            let new = old.with_dword((offset / 4) as usize, u32::from_le_bytes(bytes));
            if new != old {
                let i = (offset / 16) as usize;
                self.vectors.set_entry(i, new);
                self.after_change_entry(i, new);
            }
            return MmioOutcome::Done;
        }
        self.write_table_other(offset, data)
    }

    /// A trapped table write followed by the VMM's commit when it makes a batch due, in one
    /// call: returns whether `batch` was filled (then exactly as
    /// [`take_updates_into`](Self::take_updates_into) would have filled it after
    /// [`write_table`](Self::write_table), and the batch is no longer due). When the write
    /// changes one vector and nothing else is waiting, the batch is built from that vector
    /// alone without the dirty bookkeeping: the trapped-write commit of issue 15.
    /// Test: `write_and_commit_matches_write_then_take`.
    #[inline(always)]
    pub fn write_table_commit(
        &mut self,
        offset: u64,
        data: &[u8],
        batch: &mut UpdateBatch,
    ) -> (MmioOutcome, bool) {
        if let Ok(bytes) = <[u8; 4]>::try_from(data)
            && offset.is_multiple_of(4)
        {
            let i = (offset / 16) as usize;
            match self.vectors.write_commit(
                i,
                (offset / 4) as usize,
                u32::from_le_bytes(bytes),
                self.enabled,
                self.function_masked,
                &self.pba,
                batch,
            ) {
                WriteOutcome::Taken => return (MmioOutcome::Done, true),
                WriteOutcome::Noted | WriteOutcome::Unchanged => {
                    return (MmioOutcome::Done, self.commit_if_due(batch));
                }
                WriteOutcome::ReleasePending => {
                    return (MmioOutcome::Done, self.write_commit_rest(i, batch));
                }
                WriteOutcome::OutOfRange => {}
            }
        }
        self.write_table_commit_other(offset, data, batch)
    }

    /// The rest of [`write_table_commit`](Self::write_table_commit) when the write made a
    /// pending vector deliverable: note it, release its message, commit.
    #[cold]
    #[inline(never)]
    fn write_commit_rest(&mut self, i: usize, batch: &mut UpdateBatch) -> bool {
        if let Some(e) = self.vectors.entry(i) {
            self.after_change_entry(i, e);
        }
        self.commit_if_due(batch)
    }

    /// [`write_table_commit`](Self::write_table_commit) for QWORDs and unsupported shapes.
    #[inline(never)]
    fn write_table_commit_other(
        &mut self,
        offset: u64,
        data: &[u8],
        batch: &mut UpdateBatch,
    ) -> (MmioOutcome, bool) {
        let outcome = self.write_table_other(offset, data);
        (outcome, self.commit_if_due(batch))
    }

    #[inline(always)]
    fn commit_if_due(&mut self, batch: &mut UpdateBatch) -> bool {
        if self.vectors.due() {
            self.take_updates_slow(batch);
            true
        } else {
            false
        }
    }

    /// The general commit, kept out of the trapped-write fast path.
    #[inline(never)]
    fn take_updates_slow(&mut self, batch: &mut UpdateBatch) {
        self.take_updates_into(batch);
    }

    /// [`write_table`](Self::write_table) for QWORDs and unsupported shapes.
    #[inline(never)]
    fn write_table_other(&mut self, offset: u64, data: &[u8]) -> MmioOutcome {
        if !supported_shape(offset, data.len(), self.layout.table_len()) {
            log::debug!(
                "MSI-X table write of {} bytes at {offset:#x} is unsupported, ignored",
                data.len()
            );
            return MmioOutcome::Unsupported;
        }
        let i = (offset / 16) as usize;
        let field = ((offset % 16) / 4) as usize;
        let Some(old) = self.vectors.entry(i) else {
            return MmioOutcome::Unsupported;
        };
        let mut new = old;
        match *data {
            [a, b, c, d] => new.write_dword(field, u32::from_le_bytes([a, b, c, d])),
            [a, b, c, d, e, f, g, h] => {
                new.write_dword(field, u32::from_le_bytes([a, b, c, d]));
                new.write_dword(field + 1, u32::from_le_bytes([e, f, g, h]));
            }
            _ => {}
        }
        if new != old {
            self.vectors.set_entry(i, new);
            self.after_change_entry(i, new);
        }
        MmioOutcome::Done
    }

    /// Guest read of the PBA at `offset` from the guest PBA's start.
    pub fn read_pba(&self, offset: u64, data: &mut [u8]) -> MmioOutcome {
        if !supported_shape(offset, data.len(), self.layout.pba_len()) {
            data.fill(0xff);
            return MmioOutcome::Unsupported;
        }
        pba::read(&self.pba, offset, data);
        MmioOutcome::Done
    }

    /// Guest write of the PBA: always ignored (read-only, PCI 3.0 §6.8.2.10). Returns
    /// `Done` for a supported shape, so the VMM can tell a well-formed write from garbage.
    pub fn write_pba(&mut self, offset: u64, data: &[u8]) -> MmioOutcome {
        if supported_shape(offset, data.len(), self.layout.pba_len()) {
            MmioOutcome::Done
        } else {
            MmioOutcome::Unsupported
        }
    }

    /// Guest read of guest BAR `bar` at `offset`, dispatched by the layout
    /// ([`MsixLayout::classify`]): table and PBA are emulated, hidden and unbacked space
    /// read as zero, unsupported accesses as all-ones; device registers are forwarded.
    pub fn read_bar(&self, bar: BarIndex, offset: u64, data: &mut [u8]) -> BarAccess {
        match self.layout.classify(bar, offset, data.len()) {
            GuestAccess::Table(o) => {
                self.read_table(o, data);
            }
            GuestAccess::Pba(o) => {
                self.read_pba(o, data);
            }
            GuestAccess::Unsupported => data.fill(0xff),
            GuestAccess::Hidden | GuestAccess::Unbacked => data.fill(0),
            GuestAccess::Device(at) => return BarAccess::Forward(at),
        }
        BarAccess::Handled
    }

    /// Guest write of guest BAR `bar` at `offset`, dispatched as [`read_bar`](Self::read_bar).
    pub fn write_bar(&mut self, bar: BarIndex, offset: u64, data: &[u8]) -> BarAccess {
        match self.layout.classify(bar, offset, data.len()) {
            GuestAccess::Table(o) => {
                self.write_table(o, data);
            }
            GuestAccess::Pba(o) => {
                self.write_pba(o, data);
            }
            GuestAccess::Unsupported | GuestAccess::Hidden | GuestAccess::Unbacked => {}
            GuestAccess::Device(at) => return BarAccess::Forward(at),
        }
        BarAccess::Handled
    }

    /// [`write_bar`](Self::write_bar) followed by the commit when due, as
    /// [`write_table_commit`](Self::write_table_commit): returns the access and whether
    /// `batch` was filled.
    #[inline]
    pub fn write_bar_commit(
        &mut self,
        bar: BarIndex,
        offset: u64,
        data: &[u8],
        batch: &mut UpdateBatch,
    ) -> (BarAccess, bool) {
        match self.layout.classify(bar, offset, data.len()) {
            GuestAccess::Table(o) => {
                let (_, taken) = self.write_table_commit(o, data, batch);
                (BarAccess::Handled, taken)
            }
            GuestAccess::Pba(o) => {
                self.write_pba(o, data);
                (BarAccess::Handled, self.commit_if_due(batch))
            }
            GuestAccess::Unsupported | GuestAccess::Hidden | GuestAccess::Unbacked => {
                (BarAccess::Handled, self.commit_if_due(batch))
            }
            GuestAccess::Device(at) => (BarAccess::Forward(at), self.commit_if_due(batch)),
        }
    }

    /// The host reports that the device signalled `vector` (for example the VFIO eventfd
    /// fired while the vector's irqfd was detached because it was masked).
    pub fn signal(&mut self, vector: u16) -> Result<SignalOutcome, MsixError> {
        let i = usize::from(vector);
        if vector >= self.cap.vectors {
            return Err(MsixError::VectorOutOfRange {
                vector,
                vectors: self.cap.vectors,
            });
        }
        let route = self.route(i);
        Ok(if !route.enabled {
            SignalOutcome::Dropped
        } else if route.masked {
            self.pba.set(i);
            SignalOutcome::Pending
        } else {
            SignalOutcome::Deliver(MsiMessage {
                address: route.address,
                data: route.data,
            })
        })
    }

    /// Whether a batch is due (see [`crate::update`] for the rules).
    #[inline]
    pub fn updates_due(&self) -> bool {
        self.vectors.due()
    }

    /// Whether any vector is dirty or any delivery queued (a batch may be non-empty).
    pub fn has_updates(&self) -> bool {
        self.vectors.has_dirty()
    }

    /// Commits: returns the coalesced batch since the previous one.
    pub fn take_updates(&mut self) -> UpdateBatch {
        let mut batch = UpdateBatch::default();
        self.take_updates_into(&mut batch);
        batch
    }

    /// As [`take_updates`](Self::take_updates), reusing `batch`'s allocations.
    #[inline]
    pub fn take_updates_into(&mut self, batch: &mut UpdateBatch) {
        self.vectors
            .take_into(batch, self.enabled, self.function_masked);
    }

    fn program(&self, policy: DoorbellPolicy, vector: u16) -> Option<DeviceProgram> {
        let route = self.route(usize::from(vector));
        if !route.deliverable() {
            return None;
        }
        // A validated layout keeps every entry offset in range: the error cannot occur.
        program_address(
            policy,
            vector,
            route.address,
            Some(self.layout.real().table),
        )
        .ok()
    }

    /// What must reach the device for every deliverable vector under `policy` (see
    /// [`crate::write_through`]). Used after VFIO (re-)enables vectors or after a reset.
    /// Masked vectors are left out: the device keeps the last address it was given, so
    /// their interrupts still reach the host and set the Pending bit.
    pub fn device_program(&self, policy: DoorbellPolicy) -> Vec<DeviceProgram> {
        (0..self.cap.vectors)
            .filter_map(|v| self.program(policy, v))
            .collect()
    }

    /// What must reach the device for the deliverable vectors of `batch` (just taken).
    pub fn device_program_for(
        &self,
        policy: DoorbellPolicy,
        batch: &UpdateBatch,
    ) -> Vec<DeviceProgram> {
        batch
            .updates
            .iter()
            .filter(|u| u.is_deliverable())
            .filter_map(|u| self.program(policy, u.index))
            .collect()
    }

    /// Function reset (PCI 3.0 §6.8.2.9): Enable and Function Mask clear, entries masked
    /// with address and data 0, PBA clear, queued deliveries dropped. Routes that change
    /// are reported by the next batch.
    pub fn reset(&mut self) {
        self.enabled = false;
        self.function_masked = false;
        let n = self.vectors.len();
        self.vectors
            .set_entries(std::iter::repeat_n(MsixEntry::RESET, n));
        self.pba.clear_all();
        self.vectors.drop_releases();
        self.after_change_all();
    }

    /// Serializable state.
    pub fn snapshot(&self) -> MsixSnapshot {
        MsixSnapshot {
            vectors: self.cap.vectors,
            table_offset_bir: self.layout.table_offset_bir(),
            pba_offset_bir: self.layout.pba_offset_bir(),
            enabled: self.enabled,
            function_masked: self.function_masked,
            entries: self.vectors.entries(),
            pba: self.pba.words().to_vec(),
            deliveries: self.vectors.releases(),
        }
    }

    /// Restores a snapshot taken on a device with the same capability and guest layout.
    /// Every field is checked first; on error nothing changes. The next batch reports every
    /// vector, so the destination's router builds all routes.
    pub fn restore(&mut self, snap: &MsixSnapshot) -> Result<(), MsixError> {
        let n = self.cap.vectors;
        let expect = |what, found: u64, expected: u64| {
            if found == expected {
                Ok(())
            } else {
                Err(MsixError::SnapshotMismatch {
                    what,
                    found,
                    expected,
                })
            }
        };
        expect("vectors", snap.vectors.into(), n.into())?;
        expect(
            "Table Offset/BIR",
            snap.table_offset_bir.into(),
            self.layout.table_offset_bir().into(),
        )?;
        expect(
            "PBA Offset/BIR",
            snap.pba_offset_bir.into(),
            self.layout.pba_offset_bir().into(),
        )?;
        expect("entry count", snap.entries.len() as u64, n.into())?;
        expect(
            "PBA length",
            snap.pba.len() as u64,
            usize::from(n).div_ceil(64) as u64,
        )?;
        let mut pba = Bitmap::new(usize::from(n));
        pba.load(&snap.pba);
        if pba.words() != snap.pba.as_slice() {
            return Err(MsixError::SnapshotInvalid {
                what: "PBA bit beyond the table",
                vector: n,
            });
        }
        for (i, e) in snap.entries.iter().enumerate() {
            let vector = i as u16;
            if !e.is_canonical() {
                return Err(MsixError::SnapshotInvalid {
                    what: "reserved bits",
                    vector,
                });
            }
            let deliverable = snap.enabled && !snap.function_masked && !e.masked();
            if deliverable && pba.get(i) {
                return Err(MsixError::SnapshotInvalid {
                    what: "pending bit of a deliverable vector",
                    vector,
                });
            }
        }
        let mut seen = Bitmap::new(usize::from(n));
        for d in &snap.deliveries {
            if d.index >= n || seen.get(usize::from(d.index)) {
                return Err(MsixError::SnapshotInvalid {
                    what: "queued delivery",
                    vector: d.index,
                });
            }
            seen.set(usize::from(d.index));
        }
        self.enabled = snap.enabled;
        self.function_masked = snap.function_masked;
        self.vectors.set_entries(snap.entries.iter().copied());
        self.pba = pba;
        self.vectors.drop_releases();
        for d in &snap.deliveries {
            self.vectors
                .release(usize::from(d.index), d.address, d.data);
        }
        self.vectors.force_all();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
