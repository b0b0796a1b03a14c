// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Per-vector state of the MSI-X emulation, laid out for the trapped write.
//!
//! One 32-byte record per vector holds what the guest programmed (the table entry), what the
//! last batch reported for it (address, data, mask and enable bits) and its dirty bit, so a
//! trapped table write and, when it is due, its one-vector commit touch one cache line of
//! per-vector state (issue 15: the time of a trapped write went into bookkeeping spread over
//! five arrays). The rules are those of [`crate::update`]: a vector is dirty when written;
//! while at most [`LIST_LIMIT`] vectors are dirty their indices are listed so that a commit
//! costs O(dirty); beyond, a commit scans the records once. A batch reports each dirty
//! vector whose state differs from what was reported last, in index order, then the
//! released deliveries.

use super::table::MsixEntry;
use crate::update::{Bitmap, PendingDelivery, Route, UpdateBatch};

/// Reported route is deliverable (enabled and not masked).
const LIVE: u8 = 1;
/// Reported route is masked.
const MASKED: u8 = 2;
/// Reported route is enabled.
const ENABLED: u8 = 4;
/// Nothing was reported yet (after restore): the next batch reports the vector.
const FORCED: u8 = 8;
/// Written since the last batch.
const DIRTY: u8 = 16;

/// Up to this many dirty vectors are listed; beyond, a commit scans every record.
pub(crate) const LIST_LIMIT: usize = 64;

/// [`Vectors::lone`]: nothing is dirty and nothing was released.
const LONE_NONE: u32 = u32::MAX;
/// [`Vectors::lone`]: more than one vector is dirty, or the list overflowed, or something
/// was released (also used whenever unsure: it only disables the one-vector commit).
const LONE_MANY: u32 = u32::MAX - 1;

#[derive(Clone, Copy, Debug)]
#[repr(C, align(32))]
struct Slot {
    entry: MsixEntry,
    reported_address: u64,
    reported_data: u32,
    flags: u8,
}

/// The reported-state flags of a route.
#[inline(always)]
fn route_flags(r: &Route) -> u8 {
    (if r.deliverable() { LIVE } else { 0 })
        | (if r.masked { MASKED } else { 0 })
        | (if r.enabled { ENABLED } else { 0 })
}

impl Slot {
    /// The "due" rule (see [`crate::update`]): deliverability changed, or the address or
    /// data of a deliverable vector changed, or nothing was reported yet.
    #[inline(always)]
    fn is_due(&self, cur: &Route) -> bool {
        let live = self.flags & LIVE != 0;
        self.flags & FORCED != 0
            || if cur.deliverable() {
                !live || self.reported_address != cur.address || self.reported_data != cur.data
            } else {
                live
            }
    }

    /// Whether `cur` differs from what was reported.
    #[inline(always)]
    fn differs(&self, cur: &Route) -> bool {
        self.flags & FORCED != 0
            || self.reported_address != cur.address
            || self.reported_data != cur.data
            || self.flags & (LIVE | MASKED | ENABLED) != route_flags(cur)
    }

    #[inline(always)]
    fn set_reported(&mut self, cur: &Route) {
        self.reported_address = cur.address;
        self.reported_data = cur.data;
        self.flags = route_flags(cur);
    }
}

/// The route of `entry` under the function-wide bits.
#[inline(always)]
pub(crate) fn route_of(entry: &MsixEntry, enabled: bool, function_masked: bool) -> Route {
    Route {
        address: entry.address(),
        data: entry.data,
        masked: entry.masked() || function_masked,
        enabled,
    }
}

/// What a trapped dword write did (see [`Vectors::write_commit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteOutcome {
    /// No such vector.
    OutOfRange,
    /// The entry did not change.
    Unchanged,
    /// Noted (dirty); commit if due.
    Noted,
    /// The batch (exactly this vector) was written to `out`.
    Taken,
    /// The entry changed and the vector became deliverable with its Pending bit set: the
    /// caller notes it through [`Vectors::note`] and releases the message.
    ReleasePending,
}

/// Every vector's record, the dirty list and the released deliveries.
#[derive(Debug, Clone)]
pub(crate) struct Vectors {
    slots: Vec<Slot>,
    dirty_list: Vec<u16>,
    /// More than [`LIST_LIMIT`] vectors are dirty: the list is incomplete.
    overflow: bool,
    /// Summary for the trapped-write commit, one load instead of four: [`LONE_NONE`] when
    /// nothing is dirty and nothing was released; the index `j` when `j` is the only dirty
    /// vector and nothing was released (the list is then empty: `j` is kept here alone);
    /// [`LONE_MANY`] otherwise (the list, or the overflow scan, holds every dirty vector).
    lone: u32,
    due: bool,
    released: Bitmap,
    released_count: usize,
    released_msg: Vec<(u64, u32)>,
}

impl Vectors {
    /// `n` vectors in reset state, reported as `reset` (their reset route).
    pub(crate) fn new(n: usize, reset: Route) -> Self {
        let mut slot = Slot {
            entry: MsixEntry::RESET,
            reported_address: 0,
            reported_data: 0,
            flags: 0,
        };
        slot.set_reported(&reset);
        Vectors {
            slots: vec![slot; n],
            dirty_list: Vec::with_capacity(LIST_LIMIT),
            overflow: false,
            lone: LONE_NONE,
            due: false,
            released: Bitmap::new(n),
            released_count: 0,
            released_msg: vec![(0, 0); n],
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    pub(crate) fn entry(&self, i: usize) -> Option<MsixEntry> {
        self.slots.get(i).map(|s| s.entry)
    }

    pub(crate) fn entries(&self) -> Vec<MsixEntry> {
        self.slots.iter().map(|s| s.entry).collect()
    }

    /// Replaces every entry (restore, reset); the caller notes the change.
    pub(crate) fn set_entries(&mut self, entries: impl IntoIterator<Item = MsixEntry>) {
        for (s, e) in self.slots.iter_mut().zip(entries) {
            s.entry = e;
        }
    }

    /// Replaces entry `i` (the slow write path); the caller notes the change.
    pub(crate) fn set_entry(&mut self, i: usize, e: MsixEntry) {
        if let Some(s) = self.slots.get_mut(i) {
            s.entry = e;
        }
    }

    /// Marks vector `i` dirty. A lone dirty vector is kept in `lone` alone (no list push:
    /// the common trapped-write flow never touches the list); the list takes over, with
    /// that vector first, when a second one becomes dirty.
    #[inline(always)]
    fn mark_dirty(
        slot: &mut Slot,
        i: usize,
        list: &mut Vec<u16>,
        overflow: &mut bool,
        lone: &mut u32,
    ) {
        if slot.flags & DIRTY == 0 {
            slot.flags |= DIRTY;
            match *lone {
                LONE_NONE => *lone = i as u32,
                LONE_MANY => Self::list_push(list, overflow, i),
                j => {
                    Self::list_push(list, overflow, j as usize);
                    Self::list_push(list, overflow, i);
                    *lone = LONE_MANY;
                }
            }
        }
    }

    #[inline(always)]
    fn list_push(list: &mut Vec<u16>, overflow: &mut bool, i: usize) {
        if !*overflow {
            if list.len() < LIST_LIMIT {
                list.push(i as u16);
            } else {
                *overflow = true;
            }
        }
    }

    /// A trapped dword write of `value` to dword `field` of entry `i`, with the VMM's
    /// commit when it makes a batch due and the batch is this vector alone.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn write_commit(
        &mut self,
        i: usize,
        field: usize,
        value: u32,
        enabled: bool,
        function_masked: bool,
        pba: &Bitmap,
        out: &mut UpdateBatch,
    ) -> WriteOutcome {
        let Some(slot) = self.slots.get_mut(i) else {
            return WriteOutcome::OutOfRange;
        };
        let old = slot.entry;
        let new = old.with_dword(field, value);
        if new == old {
            return WriteOutcome::Unchanged;
        }
        slot.entry = new;
        let route = route_of(&new, enabled, function_masked);
        // A vector that was deliverable before the write has no Pending bit (a deliverable
        // vector is never pending), so only one that just became deliverable is looked up.
        if route.deliverable() && (old.masked() || !enabled || function_masked) && pba.get(i) {
            return WriteOutcome::ReleasePending;
        }
        let due = slot.is_due(&route);
        let only_this = self.lone == LONE_NONE || self.lone == i as u32;
        if !due || self.due || !only_this {
            self.due |= due;
            Self::mark_dirty(
                slot,
                i,
                &mut self.dirty_list,
                &mut self.overflow,
                &mut self.lone,
            );
            return WriteOutcome::Noted;
        }
        // The batch is this vector alone, and due implies it differs from what was
        // reported.
        slot.set_reported(&route);
        self.lone = LONE_NONE;
        out.updates.clear();
        out.deliveries.clear();
        out.updates.push(route.with_index(i as u16));
        WriteOutcome::Taken
    }

    /// Records that vector `i` now has state `current`.
    #[inline]
    pub(crate) fn note(&mut self, i: usize, current: Route) {
        if let Some(slot) = self.slots.get_mut(i) {
            self.due |= slot.is_due(&current);
            Self::mark_dirty(
                slot,
                i,
                &mut self.dirty_list,
                &mut self.overflow,
                &mut self.lone,
            );
        }
    }

    /// Every vector may have changed (Enable or Function Mask toggled, reset): all are dirty
    /// and the due rule is evaluated until it is met.
    pub(crate) fn note_all(&mut self, enabled: bool, function_masked: bool) {
        let n = self.slots.len();
        for s in self.slots.iter_mut() {
            if !self.due {
                self.due = s.is_due(&route_of(&s.entry, enabled, function_masked));
            }
            s.flags |= DIRTY;
        }
        self.dirty_list.clear();
        if n <= LIST_LIMIT {
            self.dirty_list.extend((0..n).map(|i| i as u16));
        } else {
            self.overflow = true;
        }
        self.lone = LONE_MANY;
    }

    /// Forgets what was reported: the next batch reports every vector.
    pub(crate) fn force_all(&mut self) {
        for s in self.slots.iter_mut() {
            s.flags |= FORCED;
        }
        self.due = false;
        self.note_all(false, false);
        self.due = true;
    }

    #[inline]
    pub(crate) fn due(&self) -> bool {
        self.due
    }

    pub(crate) fn has_dirty(&self) -> bool {
        !self.dirty_list.is_empty()
            || self.overflow
            || self.released_count != 0
            || self.lone < LONE_MANY
    }

    /// Fills `out` with the coalesced batch.
    pub(crate) fn take_into(
        &mut self,
        out: &mut UpdateBatch,
        enabled: bool,
        function_masked: bool,
    ) {
        out.updates.clear();
        out.deliveries.clear();
        let mut visit = |i: usize, s: &mut Slot| {
            s.flags &= !DIRTY;
            let cur = route_of(&s.entry, enabled, function_masked);
            if s.differs(&cur) {
                s.set_reported(&cur);
                out.updates.push(cur.with_index(i as u16));
            }
        };
        if self.overflow {
            for (i, s) in self.slots.iter_mut().enumerate() {
                if s.flags & DIRTY != 0 {
                    visit(i, s);
                }
            }
            self.overflow = false;
        } else if self.lone < LONE_MANY {
            let j = self.lone as usize;
            if let Some(s) = self.slots.get_mut(j) {
                visit(j, s);
            }
        } else {
            if self.dirty_list.len() > 1 {
                self.dirty_list.sort_unstable();
            }
            for &i in &self.dirty_list {
                if let Some(s) = self.slots.get_mut(usize::from(i)) {
                    visit(usize::from(i), s);
                }
            }
        }
        self.dirty_list.clear();
        if self.released_count != 0 {
            self.take_releases(out);
        }
        self.lone = LONE_NONE;
        self.due = false;
    }

    #[cold]
    #[inline(never)]
    fn take_releases(&mut self, out: &mut UpdateBatch) {
        let msgs = &self.released_msg;
        self.released.drain(|i| {
            if let Some((address, data)) = msgs.get(i) {
                out.deliveries.push(PendingDelivery {
                    index: i as u16,
                    address: *address,
                    data: *data,
                });
            }
        });
        self.released_count = 0;
    }

    /// Records that pending vector `i` was released with message `(address, data)`.
    pub(crate) fn release(&mut self, i: usize, address: u64, data: u32) {
        if let Some(slot) = self.released_msg.get_mut(i) {
            *slot = (address, data);
            if !self.released.get(i) {
                self.released.set(i);
                self.released_count += 1;
            }
            if self.lone < LONE_MANY {
                // The lone dirty vector moves into the list.
                let j = self.lone as usize;
                Self::list_push(&mut self.dirty_list, &mut self.overflow, j);
            }
            self.lone = LONE_MANY;
            self.due = true;
        }
    }

    /// Drops released deliveries (on reset: the function forgets pending messages).
    pub(crate) fn drop_releases(&mut self) {
        self.released.clear_all();
        self.released_count = 0;
    }

    /// Released deliveries not yet taken, in index order.
    pub(crate) fn releases(&self) -> Vec<PendingDelivery> {
        let mut out = Vec::new();
        for (k, w) in self.released.words().iter().enumerate() {
            let mut bits = *w;
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let i = k * 64 + b;
                if let Some((address, data)) = self.released_msg.get(i) {
                    out.push(PendingDelivery {
                        index: i as u16,
                        address: *address,
                        data: *data,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFF: Route = Route {
        address: 0,
        data: 0,
        masked: true,
        enabled: false,
    };

    #[test]
    fn record_is_one_half_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 32);
    }

    #[test]
    fn list_overflows_into_a_scan_and_batches_stay_sorted() {
        for count in [1usize, 10, LIST_LIMIT, LIST_LIMIT + 1, 150, 200] {
            let mut v = Vectors::new(200, OFF);
            for k in (0..count).rev() {
                let i = k * 200 / count;
                v.set_entry(i, MsixEntry::RESET.with_dword(0, 4 * i as u32 + 4));
                let cur = route_of(&v.entry(i).unwrap(), false, false);
                v.note(i, cur);
                v.note(i, cur); // twice: listed once
            }
            assert!(v.has_dirty());
            let mut b = UpdateBatch::default();
            v.take_into(&mut b, false, false);
            let got: Vec<usize> = b.updates.iter().map(|u| usize::from(u.index)).collect();
            let want: Vec<usize> = (0..count).map(|k| k * 200 / count).collect();
            assert_eq!(got, want, "count {count}");
            assert!(!v.has_dirty());
            v.take_into(&mut b, false, false);
            assert!(b.is_empty());
        }
    }

    #[test]
    fn forced_reports_everything_once() {
        let mut v = Vectors::new(3, OFF);
        v.force_all();
        assert!(v.due());
        let mut b = UpdateBatch::default();
        v.take_into(&mut b, false, false);
        assert_eq!(b.updates.len(), 3);
        v.note_all(false, false);
        v.take_into(&mut b, false, false);
        assert!(b.is_empty());
    }
}
