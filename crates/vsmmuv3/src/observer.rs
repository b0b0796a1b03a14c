// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Telling the VMM which streams' translations may have changed, so that it can recompute
//! the MSI routes it derived with [`VSmmu::translate`](crate::VSmmu::translate).
//!
//! Every stream the VMM translated is *watched* (up to a VMM-chosen capacity), with the
//! ASID its CD had and whether a global leaf was used. A guest action that can change what
//! `translate` returns for a watched stream marks it changed: `CFGI_STE*`, `CFGI_CD*`
//! (the stream), `TLBI_NH_ASID`/`TLBI_NH_VA` (streams with that ASID, or that used a global
//! leaf), `TLBI_NH_VAA`, `TLBI_NH_ALL`, `TLBI_NSNH_ALL`, `SMMU_CR0.SMMUEN` and
//! `SMMU_GBPA.ABORT` changes, a restore (every watched stream). The marks follow exactly
//! the model's own cache flushes, so: *while no change is reported for a stream, `translate`
//! keeps answering from the same cached state* (the guest may still change tables without
//! invalidating, which the architecture leaves UNPREDICTABLE).
//!
//! When more streams are translated than the capacity, the excess is not tracked one by
//! one and every later invalidation reports [`StreamChanges::All`].

use std::collections::{BTreeMap, BTreeSet};

/// What changed since the last [`VSmmu::take_changed_streams`](crate::VSmmu::take_changed_streams).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamChanges {
    /// Nothing.
    None,
    /// These streams (sorted, unique).
    Streams(Vec<u32>),
    /// Any stream may have changed.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Watch {
    asid: Option<u16>,
    global: bool,
}

/// The watched set and the pending changes.
#[derive(Debug, Clone)]
pub struct ChangeTracker {
    capacity: usize,
    watched: BTreeMap<u32, Watch>,
    overflowed: bool,
    changed: BTreeSet<u32>,
    all: bool,
    generation: u64,
}

impl ChangeTracker {
    /// Tracks up to `capacity` streams individually.
    pub fn new(capacity: usize) -> Self {
        ChangeTracker {
            capacity: capacity.max(1),
            watched: BTreeMap::new(),
            overflowed: false,
            changed: BTreeSet::new(),
            all: false,
            generation: 0,
        }
    }

    /// Incremented on every change report: a cheap "anything new?" check.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Records that `sid` was translated, with its CD's ASID (stage 1) and whether the
    /// leaf was global.
    pub fn watch(&mut self, sid: u32, asid: Option<u16>, global: bool) {
        if let Some(w) = self.watched.get_mut(&sid) {
            if w.asid != asid {
                *w = Watch { asid, global };
            } else {
                w.global |= global;
            }
            return;
        }
        if self.watched.len() >= self.capacity {
            self.overflowed = true;
            return;
        }
        self.watched.insert(sid, Watch { asid, global });
    }

    fn bump(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    fn mark_where(&mut self, pred: impl Fn(u32, &Watch) -> bool) {
        let mut any = false;
        for (&sid, w) in &self.watched {
            if pred(sid, w) {
                self.changed.insert(sid);
                any = true;
            }
        }
        if self.overflowed {
            self.all = true;
            any = true;
        }
        if any {
            self.bump();
        }
    }

    /// Streams `first..=last` (CFGI_STE, CFGI_STE_RANGE, CFGI_CD, CFGI_CD_ALL).
    pub fn streams(&mut self, first: u32, last: u32) {
        self.mark_where(|sid, _| (first..=last).contains(&sid));
    }

    /// Every stage-1 stream with `asid`, or that used a global leaf if `with_global`.
    pub fn asid(&mut self, asid: u16, with_global: bool) {
        self.mark_where(|_, w| {
            w.asid == Some(asid) || (with_global && w.global && w.asid.is_some())
        });
    }

    /// Every stage-1 stream (TLBI_NH_VAA, TLBI_NH_ALL, TLBI_NSNH_ALL).
    pub fn stage1(&mut self) {
        self.mark_where(|_, w| w.asid.is_some());
    }

    /// Every watched stream (enable/bypass changes, CFGI_ALL, restore).
    pub fn all(&mut self) {
        self.mark_where(|_, _| true);
    }

    /// Takes the pending changes.
    pub fn take(&mut self) -> StreamChanges {
        let out = if self.all {
            StreamChanges::All
        } else if self.changed.is_empty() {
            StreamChanges::None
        } else {
            StreamChanges::Streams(self.changed.iter().copied().collect())
        };
        self.all = false;
        self.changed.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_follow_scopes() {
        let mut t = ChangeTracker::new(4);
        t.watch(1, Some(7), false);
        t.watch(2, Some(8), true);
        t.watch(3, None, false);
        assert_eq!(t.take(), StreamChanges::None);
        t.asid(7, false);
        assert_eq!(t.take(), StreamChanges::Streams(vec![1]));
        t.asid(9, true);
        assert_eq!(t.take(), StreamChanges::Streams(vec![2]));
        t.stage1();
        assert_eq!(t.take(), StreamChanges::Streams(vec![1, 2]));
        let g = t.generation();
        t.streams(3, 3);
        assert_eq!(t.take(), StreamChanges::Streams(vec![3]));
        assert_eq!(t.generation(), g + 1);
        t.streams(10, 20);
        assert_eq!(t.take(), StreamChanges::None);
        assert_eq!(t.generation(), g + 1, "no watched stream, no bump");
        t.all();
        assert_eq!(t.take(), StreamChanges::Streams(vec![1, 2, 3]));
    }

    #[test]
    fn overflow_reports_all() {
        let mut t = ChangeTracker::new(1);
        t.watch(1, Some(1), false);
        t.watch(2, Some(1), false);
        t.streams(99, 99);
        assert_eq!(t.take(), StreamChanges::All);
    }
}
