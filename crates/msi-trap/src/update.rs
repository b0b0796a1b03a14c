// Copyright 2025 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Vector updates, batched for an interrupt router.
//!
//! Every trapped write that touches a vector's routing-relevant state (address, data, its own
//! mask, the function mask, the enable bit) marks the vector dirty. Nothing leaves the crate
//! until the VMM calls `take_updates()` (on [`MsixState`](crate::msix::MsixState) or
//! [`MsiState`](crate::msi::MsiState)), which returns one [`UpdateBatch`]: the vectors whose
//! state differs from what the previous batch reported, each once, plus the
//! [`PendingDelivery`] events released since.
//!
//! # When a batch is due
//!
//! `updates_due()` tells the VMM, at the end of a trap, whether it must commit now. A batch is
//! due when, since the last commit,
//!
//! * a vector's deliverability changed (unmask, mask, function unmask or mask, enable or
//!   disable): the router must install or tear down a route before the guest runs again;
//! * the address or data of a *deliverable* vector changed (PCI 3.0 §6.8.2.9 leaves this
//!   undefined; this crate applies the new values at once, so the live route follows the
//!   table the guest reads back); or
//! * an unmask released a pending vector (a [`PendingDelivery`] must be injected).
//!
//! Changes to masked or disabled vectors are not due: they ride along in the next batch.
//! So a guest that rewrites the whole table under Function Mask and then clears the mask
//! causes exactly one batch (test `full_table_rewrite_under_function_mask_is_one_batch`).
//! The VMM may also commit at any other time ("explicit flush"); a batch never contains a
//! vector whose state equals what was last reported.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The routing-relevant state of one vector as the guest programmed it.
///
/// A router installs a route `address -> data` for the vector iff
/// [`is_deliverable`](Self::is_deliverable); for any other state it removes the route (and
/// the VMM keeps the host signal so that it can set the pending bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VectorUpdate {
    /// Vector index: the MSI-X table entry, or the MSI message number.
    pub index: u16,
    /// Guest message address (a GPA, or a gIOVA when the guest has a vIOMMU).
    pub address: u64,
    /// Guest message data. For MSI, the per-vector data: the base data with its low
    /// Multiple Message Enable bits replaced by `index` (PCI 3.0 §6.8.1.6).
    pub data: u32,
    /// Effective mask: the vector's own mask bit, or (MSI-X) the Function Mask.
    pub masked: bool,
    /// MSI-X Enable (or MSI Enable and `index` below the allocated count).
    pub enabled: bool,
}

impl VectorUpdate {
    /// Whether the device may deliver this vector: enabled and not masked.
    pub fn is_deliverable(&self) -> bool {
        self.enabled && !self.masked
    }
}

/// A pending vector released by an unmask: the message the function sends at that moment
/// (PCI 3.0 §6.8.2.9: "if a masked vector has its Pending bit set and the vector is
/// unmasked, the function must send the message and clear the Pending bit").
///
/// The address and data are those of the vector when it was released. The VMM injects this
/// message once (for example `KVM_SIGNAL_MSI`, or by signalling the vector's irqfd after
/// applying the batch's routes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PendingDelivery {
    /// Vector index.
    pub index: u16,
    /// Guest message address at release.
    pub address: u64,
    /// Guest message data at release.
    pub data: u32,
}

/// The coalesced output of one commit: route changes, then one-shot deliveries.
///
/// The VMM applies `updates` first (one routing table update), then injects `deliveries`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpdateBatch {
    /// Vectors whose state changed since the previous batch, in index order, each once.
    pub updates: Vec<VectorUpdate>,
    /// Pending vectors released since the previous batch, in index order, each once.
    pub deliveries: Vec<PendingDelivery>,
}

impl UpdateBatch {
    /// Whether the batch carries nothing.
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty() && self.deliveries.is_empty()
    }

    /// Empties the batch, keeping its allocations (for `take_updates_into`).
    pub fn clear(&mut self) {
        self.updates.clear();
        self.deliveries.clear();
    }
}

impl fmt::Display for UpdateBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} vector updates, {} deliveries",
            self.updates.len(),
            self.deliveries.len()
        )
    }
}

/// Routing-relevant state without the index, as stored per vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    pub address: u64,
    pub data: u32,
    pub masked: bool,
    pub enabled: bool,
}

impl Route {
    pub(crate) fn deliverable(&self) -> bool {
        self.enabled && !self.masked
    }

    pub(crate) fn with_index(self, index: u16) -> VectorUpdate {
        VectorUpdate {
            index,
            address: self.address,
            data: self.data,
            masked: self.masked,
            enabled: self.enabled,
        }
    }
}

/// A fixed-size bitmap; all indices are bounds-checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bitmap {
    words: Vec<u64>,
    bits: usize,
}

impl Bitmap {
    pub(crate) fn new(bits: usize) -> Self {
        Bitmap {
            words: vec![0; bits.div_ceil(64)],
            bits,
        }
    }

    pub(crate) fn words(&self) -> &[u64] {
        &self.words
    }

    #[inline]
    pub(crate) fn get(&self, i: usize) -> bool {
        self.words
            .get(i / 64)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    pub(crate) fn set(&mut self, i: usize) {
        if i < self.bits
            && let Some(w) = self.words.get_mut(i / 64)
        {
            *w |= 1u64 << (i % 64);
        }
    }

    /// Sets bit `i` and returns whether it was set before (`true` also when out of range,
    /// so that callers never record an out-of-range index).
    #[inline]
    pub(crate) fn test_and_set(&mut self, i: usize) -> bool {
        match self.words.get_mut(i / 64) {
            Some(w) if i < self.bits => {
                let bit = 1u64 << (i % 64);
                let was = *w & bit != 0;
                *w |= bit;
                was
            }
            _ => true,
        }
    }

    #[inline]
    pub(crate) fn clear(&mut self, i: usize) {
        if let Some(w) = self.words.get_mut(i / 64) {
            *w &= !(1u64 << (i % 64));
        }
    }

    pub(crate) fn set_all(&mut self) {
        for (k, w) in self.words.iter_mut().enumerate() {
            let lo = k * 64;
            let n = self.bits.saturating_sub(lo).min(64);
            *w = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
        }
    }

    pub(crate) fn clear_all(&mut self) {
        self.words.fill(0);
    }

    #[cfg(test)]
    pub(crate) fn any(&self) -> bool {
        self.words.iter().any(|w| *w != 0)
    }

    /// Replaces the words with `words`, dropping bits at or beyond `bits` (compare
    /// [`words`](Self::words) with the input to detect them).
    pub(crate) fn load(&mut self, words: &[u64]) {
        for (k, (dst, src)) in self.words.iter_mut().zip(words).enumerate() {
            let n = self.bits.saturating_sub(k * 64).min(64);
            let valid = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
            *dst = *src & valid;
        }
    }

    /// Calls `f` for every set bit in index order, clearing the map.
    pub(crate) fn drain(&mut self, mut f: impl FnMut(usize)) {
        for (k, w) in self.words.iter_mut().enumerate() {
            let mut bits = std::mem::take(w);
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                f(k * 64 + b);
            }
        }
    }
}

/// Dirty tracking and coalescing shared by MSI and MSI-X.
///
/// This is the per-access commit bookkeeping of a trapped write, so it is kept to a few
/// instructions (issue 15): `note` computes the "due" rule and sets one bit; while at most
/// [`LIST_LIMIT`] vectors are dirty their indices are also listed, so a commit of one vector
/// touches that vector alone; beyond, the list is abandoned and the commit scans the bitmap
/// (a full-table rewrite costs one pass). Releases are rare and kept off the hot path.
#[derive(Debug, Clone)]
pub(crate) struct Tracker {
    /// What the last batch reported per vector; `None` forces a report (after restore; the
    /// batch is then due until the next take, which replaces every `None`).
    committed: Vec<Option<Route>>,
    /// Bit `i`: `committed[i]` is a deliverable route. A small, cache-resident copy of the
    /// part of the "due" rule a write to a masked vector needs.
    committed_live: Bitmap,
    /// Dirty vectors (authoritative).
    dirty: Bitmap,
    /// The dirty vectors while there are at most [`LIST_LIMIT`] of them (else `overflow`);
    /// never holds an index twice.
    dirty_list: Vec<u16>,
    /// More than [`LIST_LIMIT`] vectors are dirty: the list is incomplete, scan the bitmap.
    overflow: bool,
    due: bool,
    released: Bitmap,
    released_count: usize,
    released_msg: Vec<(u64, u32)>,
}

/// Adds vector `i` with state `cur` to `out` unless it equals what was reported last.
#[inline(always)]
fn report(
    committed: &mut [Option<Route>],
    live: &mut Bitmap,
    out: &mut UpdateBatch,
    i: usize,
    cur: Route,
) {
    if let Some(slot) = committed.get_mut(i)
        && *slot != Some(cur)
    {
        *slot = Some(cur);
        if cur.deliverable() {
            live.set(i);
        } else {
            live.clear(i);
        }
        out.updates.push(cur.with_index(i as u16));
    }
}

/// Up to this many dirty vectors are listed (a commit sorts the list); beyond, a commit scans
/// the bitmap.
const LIST_LIMIT: usize = 64;

impl Tracker {
    /// A tracker whose committed state is `initial` for every vector.
    pub(crate) fn new(vectors: usize, initial: Route) -> Self {
        Tracker {
            committed: vec![Some(initial); vectors],
            committed_live: {
                let mut b = Bitmap::new(vectors);
                if initial.deliverable() {
                    b.set_all();
                }
                b
            },
            dirty: Bitmap::new(vectors),
            dirty_list: Vec::with_capacity(LIST_LIMIT),
            overflow: false,
            due: false,
            released: Bitmap::new(vectors),
            released_count: 0,
            released_msg: vec![(0, 0); vectors],
        }
    }

    /// Records that vector `i` now has state `current`.
    #[inline(always)]
    pub(crate) fn note(&mut self, i: usize, current: Route) {
        if i >= self.committed.len() {
            return;
        }
        if !self.due {
            self.due = self.is_due(i, &current);
        }
        self.mark_dirty(i);
    }

    /// The "due" rule for vector `i` (see the module docs). A `None` committed route exists
    /// only while the batch is due already, so it is never looked at.
    #[inline(always)]
    fn is_due(&self, i: usize, current: &Route) -> bool {
        if !current.deliverable() {
            return self.committed_live.get(i);
        }
        match self.committed.get(i) {
            Some(Some(c)) => {
                !c.deliverable() || c.address != current.address || c.data != current.data
            }
            _ => true,
        }
    }

    /// Marks vector `i` dirty (listed while the list is short).
    #[inline(always)]
    fn mark_dirty(&mut self, i: usize) {
        if !self.dirty.test_and_set(i) && !self.overflow {
            if self.dirty_list.len() < LIST_LIMIT {
                self.dirty_list.push(i as u16);
            } else {
                self.overflow = true;
            }
        }
    }

    /// Records that pending vector `i` was released with message `(address, data)`.
    pub(crate) fn release(&mut self, i: usize, address: u64, data: u32) {
        if let Some(slot) = self.released_msg.get_mut(i) {
            *slot = (address, data);
            if !self.released.get(i) {
                self.released.set(i);
                self.released_count += 1;
            }
            self.due = true;
        }
    }

    /// Forgets what was reported: the next batch reports every vector.
    pub(crate) fn force_all(&mut self) {
        self.committed.fill(None);
        self.committed_live.clear_all();
        self.dirty.set_all();
        self.dirty_list.clear();
        if self.committed.len() <= LIST_LIMIT {
            self.dirty_list
                .extend((0..self.committed.len()).map(|i| i as u16));
        } else {
            self.overflow = true;
        }
        self.due = true;
    }

    /// Drops released deliveries (on reset: the function forgets pending messages).
    pub(crate) fn drop_releases(&mut self) {
        self.released.clear_all();
        self.released_count = 0;
    }

    #[inline]
    pub(crate) fn due(&self) -> bool {
        self.due
    }

    pub(crate) fn has_dirty(&self) -> bool {
        !self.dirty_list.is_empty() || self.overflow || self.released_count != 0
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

    /// Fills `out` with the coalesced batch; `current(i)` gives the state of vector `i`.
    #[inline(always)]
    pub(crate) fn take_into(&mut self, out: &mut UpdateBatch, current: impl Fn(usize) -> Route) {
        out.updates.clear();
        out.deliveries.clear();
        if !self.overflow && self.dirty_list.len() == 1 {
            // One vector (a trapped write's commit): no sort, no loop.
            if let Some(&i) = self.dirty_list.first() {
                let i = usize::from(i);
                self.dirty.clear(i);
                report(
                    &mut self.committed,
                    &mut self.committed_live,
                    out,
                    i,
                    current(i),
                );
            }
        } else {
            let committed = &mut self.committed;
            let live = &mut self.committed_live;
            let mut visit = |i: usize| report(committed, live, out, i, current(i));
            if self.overflow {
                self.dirty.drain(visit);
                self.overflow = false;
            } else {
                self.dirty_list.sort_unstable();
                for &i in &self.dirty_list {
                    self.dirty.clear(usize::from(i));
                    visit(usize::from(i));
                }
            }
        }
        self.dirty_list.clear();
        if self.released_count != 0 {
            self.take_releases(out);
        }
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
    fn bitmap_edges() {
        for bits in [1usize, 63, 64, 65, 128, 2048] {
            let mut b = Bitmap::new(bits);
            assert_eq!(b.words().len(), bits.div_ceil(64));
            b.set_all();
            let mut seen = Vec::new();
            b.drain(|i| seen.push(i));
            assert_eq!(seen, (0..bits).collect::<Vec<_>>());
            assert!(!b.any());
            b.set(bits); // out of range: ignored
            assert!(!b.any());
            assert!(!b.get(bits + 64));
        }
    }

    #[test]
    fn unchanged_state_is_not_reported() {
        let mut t = Tracker::new(4, OFF);
        t.note(1, OFF);
        assert!(!t.due());
        let mut b = UpdateBatch::default();
        t.take_into(&mut b, |_| OFF);
        assert!(b.is_empty());
    }

    #[test]
    fn due_rules() {
        let live = Route {
            address: 0x1000,
            data: 7,
            masked: false,
            enabled: true,
        };
        let mut t = Tracker::new(2, OFF);
        // Address change of a masked vector: not due.
        t.note(0, Route { address: 4, ..OFF });
        assert!(!t.due());
        // Becoming deliverable: due.
        t.note(0, live);
        assert!(t.due());
        let mut b = UpdateBatch::default();
        t.take_into(&mut b, |i| if i == 0 { live } else { OFF });
        assert_eq!(b.updates, vec![live.with_index(0)]);
        assert!(!t.due());
        // Data change of a deliverable vector: due.
        t.note(0, Route { data: 8, ..live });
        assert!(t.due());
        t.take_into(&mut b, |_| Route { data: 8, ..live });
        assert_eq!(b.updates.len(), 1);
        // Release: due, delivered once.
        t.release(1, 0x2000, 3);
        assert!(t.due());
        t.take_into(&mut b, |_| OFF);
        assert_eq!(
            b.deliveries,
            vec![PendingDelivery {
                index: 1,
                address: 0x2000,
                data: 3
            }]
        );
        t.take_into(&mut b, |_| OFF);
        assert!(b.is_empty());
    }

    #[test]
    fn batches_are_sorted_whether_few_or_many_are_dirty() {
        let live = |i: usize| Route {
            address: i as u64,
            data: 1,
            masked: false,
            enabled: true,
        };
        for count in [1usize, 10, LIST_LIMIT, LIST_LIMIT + 1, 150, 200] {
            let mut t = Tracker::new(200, OFF);
            for i in (0..count).rev() {
                t.note(i * 200 / count, live(i * 200 / count));
                t.note(i * 200 / count, live(i * 200 / count)); // twice: listed once
            }
            assert!(t.has_dirty());
            let mut b = UpdateBatch::default();
            t.take_into(&mut b, live);
            let got: Vec<usize> = b.updates.iter().map(|u| usize::from(u.index)).collect();
            let want: Vec<usize> = (0..count).map(|i| i * 200 / count).collect();
            assert_eq!(got, want, "count {count}");
            assert!(!t.has_dirty());
            t.take_into(&mut b, live);
            assert!(b.is_empty());
        }
    }

    #[test]
    fn force_all_reports_everything() {
        let mut t = Tracker::new(3, OFF);
        t.force_all();
        assert!(t.due());
        let mut b = UpdateBatch::default();
        t.take_into(&mut b, |_| OFF);
        assert_eq!(b.updates.len(), 3);
    }
}
