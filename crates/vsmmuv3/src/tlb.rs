// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A small TLB of stage-1 leaves, keyed by (StreamID, ASID, VA range), and the
//! invalidations that flush it (IHI 0070 §3.17, §4.4).
//!
//! Fixed capacity chosen by the VMM, round-robin replacement, no allocation after
//! construction. Invalidation scopes follow the commands: `TLBI_NH_ALL`/`NSNH_ALL` flush
//! everything; `TLBI_NH_ASID` flushes the ASID's non-global entries; `TLBI_NH_VA` flushes
//! entries covering the VA that are global or of that ASID; `TLBI_NH_VAA` entries covering
//! the VA for any ASID; `CFGI_STE*`/`CFGI_CD*` the streams' entries. Invalidating more than
//! asked is always allowed by the architecture; less never happens here.

use crate::walk::Leaf;

/// One cached leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlbEntry {
    /// StreamID.
    pub sid: u32,
    /// ASID of the CD the walk used.
    pub asid: u16,
    /// The leaf.
    pub leaf: Leaf,
}

/// Lookup counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TlbStats {
    /// Lookups that hit.
    pub hits: u64,
    /// Lookups that missed.
    pub misses: u64,
}

/// The TLB.
#[derive(Debug, Clone)]
pub struct Tlb {
    entries: Vec<Option<TlbEntry>>,
    next: usize,
    last_hit: usize,
    stats: TlbStats,
}

impl Tlb {
    /// A TLB of `capacity` entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        Tlb {
            entries: vec![None; capacity.max(1)],
            next: 0,
            last_hit: 0,
            stats: TlbStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> TlbStats {
        self.stats
    }

    /// Entries in use.
    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.is_some()).count()
    }

    /// Whether no entry is in use.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn matches(e: &TlbEntry, sid: u32, asid: u16, va: u64) -> bool {
        e.sid == sid && (e.asid == asid || e.leaf.global) && e.leaf.covers(va)
    }

    /// The cached leaf for (`sid`, `asid`, `va`).
    pub fn lookup(&mut self, sid: u32, asid: u16, va: u64) -> Option<Leaf> {
        if let Some(Some(e)) = self.entries.get(self.last_hit)
            && Self::matches(e, sid, asid, va)
        {
            self.stats.hits += 1;
            return Some(e.leaf);
        }
        for (i, slot) in self.entries.iter().enumerate() {
            if let Some(e) = slot
                && Self::matches(e, sid, asid, va)
            {
                self.last_hit = i;
                self.stats.hits += 1;
                return Some(e.leaf);
            }
        }
        self.stats.misses += 1;
        None
    }

    /// Caches a leaf (replacing an overlapping entry of the same stream and ASID).
    pub fn insert(&mut self, entry: TlbEntry) {
        let overlapping = self.entries.iter().position(|s| {
            s.is_some_and(|e| {
                e.sid == entry.sid
                    && e.asid == entry.asid
                    && (e.leaf.covers(entry.leaf.va_base) || entry.leaf.covers(e.leaf.va_base))
            })
        });
        let slot = overlapping.unwrap_or_else(|| {
            let s = self.next;
            self.next = (self.next + 1) % self.entries.len();
            s
        });
        self.entries[slot] = Some(entry);
    }

    fn retain(&mut self, mut keep: impl FnMut(&TlbEntry) -> bool) {
        for slot in self.entries.iter_mut() {
            if slot.is_some_and(|e| !keep(&e)) {
                *slot = None;
            }
        }
    }

    /// Flushes everything.
    pub fn flush_all(&mut self) {
        self.retain(|_| false);
    }

    /// Flushes the entries of StreamIDs `first..=last`.
    pub fn flush_streams(&mut self, first: u32, last: u32) {
        self.retain(|e| e.sid < first || e.sid > last);
    }

    /// `TLBI_NH_ASID`: the ASID's non-global entries.
    pub fn flush_asid(&mut self, asid: u16) {
        self.retain(|e| e.asid != asid || e.leaf.global);
    }

    /// `TLBI_NH_VA` (`Some(asid)`: that ASID's and global entries) or `TLBI_NH_VAA`
    /// (`None`: every ASID) covering `va`.
    pub fn flush_va(&mut self, asid: Option<u16>, va: u64) {
        self.retain(|e| {
            let asid_match = asid.is_none_or(|a| e.asid == a || e.leaf.global);
            !(asid_match && e.leaf.covers(va))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(va: u64, size_log2: u8, global: bool) -> Leaf {
        Leaf {
            va_base: va,
            oa_base: va + 0x1000_0000,
            size_log2,
            level: 3,
            writable: true,
            unprivileged: true,
            global,
        }
    }

    fn e(sid: u32, asid: u16, va: u64, global: bool) -> TlbEntry {
        TlbEntry {
            sid,
            asid,
            leaf: leaf(va, 12, global),
        }
    }

    #[test]
    fn lookup_and_replacement() {
        let mut t = Tlb::new(2);
        t.insert(e(1, 1, 0x1000, false));
        t.insert(e(1, 1, 0x2000, false));
        assert!(t.lookup(1, 1, 0x1fff).is_some());
        assert!(t.lookup(1, 2, 0x1fff).is_none(), "other ASID");
        assert!(t.lookup(2, 1, 0x1fff).is_none(), "other stream");
        t.insert(e(1, 1, 0x3000, false));
        assert_eq!(t.len(), 2, "bounded");
        assert_eq!(t.stats().hits, 1);
        // Re-inserting the same page replaces, not duplicates.
        t.insert(e(1, 1, 0x3000, false));
        assert_eq!(t.len(), 2);
    }

    /// IHI 0070 §4.4: TLBI_NH_ASID leaves global entries; TLBI_NH_VA takes global
    /// entries of the VA; TLBI_NH_VAA takes every ASID's.
    #[test]
    fn invalidation_scopes() {
        let mut t = Tlb::new(8);
        t.insert(e(1, 1, 0x1000, false));
        t.insert(e(1, 2, 0x1000, false));
        t.insert(e(2, 3, 0x1000, true));
        t.flush_asid(3);
        assert_eq!(t.len(), 3, "global survives TLBI_NH_ASID");
        t.flush_asid(1);
        assert_eq!(t.len(), 2);
        t.flush_va(Some(2), 0x2000);
        assert_eq!(t.len(), 2, "other VA");
        t.flush_va(Some(9), 0x1800);
        assert_eq!(t.len(), 1, "the global entry covering the VA went");
        t.insert(e(1, 1, 0x1000, false));
        t.flush_va(None, 0x1000);
        assert!(t.is_empty());
        let mut big = Tlb::new(4);
        big.insert(TlbEntry {
            sid: 5,
            asid: 1,
            leaf: leaf(0x20_0000, 21, false),
        });
        big.flush_va(Some(1), 0x3f_f000);
        assert!(big.is_empty(), "a VA inside a block flushes the block");
        big.insert(e(5, 1, 0, false));
        big.insert(e(6, 1, 0, false));
        big.flush_streams(6, 6);
        assert_eq!(big.len(), 1);
        big.flush_all();
        assert!(big.is_empty());
    }
}
