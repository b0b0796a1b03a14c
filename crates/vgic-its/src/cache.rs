// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Bounded caches: translations (DeviceID, EventID) -> (INTID, ICID, vCPU), and decoded
//! Device and Collection table entries.
//!
//! IHI 0069H §5.2: the ITS may cache table contents, and software must not change the tables
//! in memory behind the ITS's back, so a cached translation stays right until a command or
//! register write changes what it was built from. The owner invalidates:
//! - one slot on MAPTI/MAPI/MOVI/DISCARD,
//! - every slot of a DeviceID on MAPD, every slot of an ICID on MAPC,
//! - everything on a `GITS_CTLR.Enabled` change, a `GITS_BASER<n>` write and a restore.
//!
//! The entry caches hold decoded DTEs (by DeviceID) and memory-held CTEs (by ICID); MAPD and
//! MAPC invalidate the entry they write, and they are cleared with the translation cache.
//!
//! The cache is direct-mapped with a fixed capacity set by the VMM
//! ([`ItsConfigBuilder::cache_entries`](crate::ItsConfigBuilder::cache_entries)); it is
//! allocated once and never grows, so the guest cannot make it allocate.
//!
//! Every operation is O(1), whatever the capacity (issue 15, finding 5: a queue of MAPDs
//! used to scan the whole cache per command). Invalidation is by generation counters: each
//! slot records the cache epoch and the generations of its DeviceID's and its ICID's bucket
//! when it was filled, and is valid only while all three are current. MAPD bumps the
//! DeviceID's bucket, MAPC the ICID's, a flush bumps the epoch. Buckets are a fixed
//! [`GENERATION_BUCKETS`] counters per kind, indexed by a hash of the ID, so two IDs may
//! share one: a bump then also drops the other ID's translations, which costs a table walk
//! and is never wrong. A counter that would wrap resets everything once (after 2^32 bumps
//! of it), so a stale slot can never become current again. Test:
//! `generations_invalidate`, `generation_wrap_resets` (and the benchmark
//! `command_queue/mapd_full_queue_*`).

/// Generation counters per kind (DeviceID buckets, ICID buckets).
pub(crate) const GENERATION_BUCKETS: usize = 1024;

/// A cached translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cached {
    pub intid: u32,
    pub vcpu: u32,
    pub icid: u16,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    device_id: u32,
    event_id: u32,
    value: Cached,
    /// Cache epoch when filled; 0 never matches (the epoch starts at 1).
    epoch: u32,
    device_gen: u32,
    collection_gen: u32,
}

const EMPTY: Slot = Slot {
    device_id: 0,
    event_id: 0,
    value: Cached {
        intid: 0,
        vcpu: 0,
        icid: 0,
    },
    epoch: 0,
    device_gen: 0,
    collection_gen: 0,
};

/// Hit/miss counters of the translation cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that walked the tables.
    pub misses: u64,
}

#[derive(Debug)]
pub(crate) struct TranslationCache {
    slots: Box<[Slot]>,
    mask: usize,
    epoch: u32,
    device_gens: Box<[u32; GENERATION_BUCKETS]>,
    collection_gens: Box<[u32; GENERATION_BUCKETS]>,
    stats: CacheStats,
}

#[inline]
fn device_bucket(device_id: u32) -> usize {
    // Multiplicative hashing: the top bits of the product index the buckets.
    (device_id.wrapping_mul(0x9e37_79b9) >> (32 - GENERATION_BUCKETS.trailing_zeros())) as usize
}

#[inline]
fn collection_bucket(icid: u16) -> usize {
    usize::from(icid) % GENERATION_BUCKETS
}

impl TranslationCache {
    /// `capacity` must be a power of two (checked by the config builder).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1).next_power_of_two();
        TranslationCache {
            slots: vec![EMPTY; capacity].into_boxed_slice(),
            mask: capacity - 1,
            epoch: 1,
            device_gens: Box::new([0; GENERATION_BUCKETS]),
            collection_gens: Box::new([0; GENERATION_BUCKETS]),
            stats: CacheStats::default(),
        }
    }

    #[inline]
    fn index(&self, device_id: u32, event_id: u32) -> usize {
        let key = (u64::from(device_id) << 32) | u64::from(event_id);
        // Fibonacci hashing: the high bits of the product are well mixed.
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as usize & self.mask
    }

    #[inline]
    fn current(&self, s: &Slot) -> bool {
        s.epoch == self.epoch
            && self.device_gens.get(device_bucket(s.device_id)) == Some(&s.device_gen)
            && self.collection_gens.get(collection_bucket(s.value.icid)) == Some(&s.collection_gen)
    }

    #[inline]
    pub fn get(&mut self, device_id: u32, event_id: u32) -> Option<Cached> {
        let i = self.index(device_id, event_id);
        match self.slots.get(i) {
            Some(s) if s.device_id == device_id && s.event_id == event_id && self.current(s) => {
                self.stats.hits = self.stats.hits.wrapping_add(1);
                Some(s.value)
            }
            _ => {
                self.stats.misses = self.stats.misses.wrapping_add(1);
                None
            }
        }
    }

    #[inline]
    pub fn insert(&mut self, device_id: u32, event_id: u32, value: Cached) {
        let i = self.index(device_id, event_id);
        let slot = Slot {
            device_id,
            event_id,
            value,
            epoch: self.epoch,
            device_gen: self
                .device_gens
                .get(device_bucket(device_id))
                .copied()
                .unwrap_or(0),
            collection_gen: self
                .collection_gens
                .get(collection_bucket(value.icid))
                .copied()
                .unwrap_or(0),
        };
        if let Some(s) = self.slots.get_mut(i) {
            *s = slot;
        }
    }

    #[inline]
    pub fn invalidate(&mut self, device_id: u32, event_id: u32) {
        let i = self.index(device_id, event_id);
        if let Some(s) = self.slots.get_mut(i)
            && s.device_id == device_id
            && s.event_id == event_id
        {
            s.epoch = 0;
        }
    }

    /// Drops every translation of `device_id` (MAPD): O(1).
    pub fn invalidate_device(&mut self, device_id: u32) {
        let b = device_bucket(device_id);
        if self.device_gens.get(b).is_some_and(|g| *g == u32::MAX) {
            self.reset();
        } else if let Some(g) = self.device_gens.get_mut(b) {
            *g += 1;
        }
    }

    /// Drops every translation through `icid` (MAPC): O(1).
    pub fn invalidate_collection(&mut self, icid: u16) {
        let b = collection_bucket(icid);
        if self.collection_gens.get(b).is_some_and(|g| *g == u32::MAX) {
            self.reset();
        } else if let Some(g) = self.collection_gens.get_mut(b) {
            *g += 1;
        }
    }

    /// Drops every translation: O(1).
    pub fn clear(&mut self) {
        if self.epoch == u32::MAX {
            self.reset();
        } else {
            self.epoch += 1;
        }
    }

    /// Physically empties the cache and restarts every counter (once per 2^32 bumps of one
    /// counter: amortized O(1)).
    fn reset(&mut self) {
        self.slots.fill(EMPTY);
        self.device_gens.fill(0);
        self.collection_gens.fill(0);
        self.epoch = 1;
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| self.current(s)).count()
    }
}

/// A small direct-mapped cache of table entries keyed by a table index (DeviceID or ICID),
/// holding what the table entry decoded to (including "invalid"). Fixed size, allocated once.
#[derive(Debug)]
pub(crate) struct EntryCache<V: Copy> {
    slots: Box<[Option<(u32, V)>]>,
    mask: usize,
}

impl<V: Copy> EntryCache<V> {
    /// `capacity` is rounded up to a power of two.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1).next_power_of_two();
        EntryCache {
            slots: vec![None; capacity].into_boxed_slice(),
            mask: capacity - 1,
        }
    }

    #[inline]
    pub fn get(&self, key: u32) -> Option<V> {
        match self.slots.get(key as usize & self.mask) {
            Some(Some((k, v))) if *k == key => Some(*v),
            _ => None,
        }
    }

    #[inline]
    pub fn insert(&mut self, key: u32, value: V) {
        if let Some(s) = self.slots.get_mut(key as usize & self.mask) {
            *s = Some((key, value));
        }
    }

    #[inline]
    pub fn invalidate(&mut self, key: u32) {
        if let Some(s) = self.slots.get_mut(key as usize & self.mask)
            && matches!(s, Some((k, _)) if *k == key)
        {
            *s = None;
        }
    }

    pub fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(intid: u32, icid: u16) -> Cached {
        Cached {
            intid,
            vcpu: 0,
            icid,
        }
    }

    #[test]
    fn bounded_and_invalidated() {
        let mut c = TranslationCache::new(16);
        for e in 0..1000 {
            c.insert(1, e, v(8192 + e, 0));
        }
        assert!(c.len() <= 16);
        c.clear();
        assert_eq!(c.len(), 0);

        c.insert(1, 2, v(9000, 3));
        c.insert(2, 2, v(9001, 4));
        assert_eq!(c.get(1, 2), Some(v(9000, 3)));
        assert_eq!(c.get(1, 3), None);
        c.invalidate_collection(3);
        assert_eq!(c.get(1, 2), None);
        assert_eq!(c.get(2, 2).map(|x| x.intid), Some(9001));
        c.invalidate_device(2);
        assert_eq!(c.get(2, 2), None);
        c.insert(5, 6, v(9002, 0));
        c.invalidate(5, 7);
        assert!(c.get(5, 6).is_some());
        c.invalidate(5, 6);
        assert!(c.get(5, 6).is_none());
        let s = c.stats();
        assert_eq!((s.hits, s.misses), (3, 4));
    }

    #[test]
    fn entry_cache_is_direct_mapped() {
        let mut c = EntryCache::<Option<u32>>::new(4);
        c.insert(1, Some(7));
        c.insert(2, None);
        assert_eq!(c.get(1), Some(Some(7)));
        assert_eq!(c.get(2), Some(None));
        assert_eq!(c.get(5), None);
        c.insert(5, Some(9));
        assert_eq!(c.get(1), None, "5 evicted 1");
        c.invalidate(1);
        assert_eq!(
            c.get(5),
            Some(Some(9)),
            "invalidating another key keeps the slot"
        );
        c.invalidate(5);
        assert_eq!(c.get(5), None);
        c.clear();
        assert_eq!(c.get(2), None);
    }

    #[test]
    fn single_slot_cache_works() {
        let mut c = TranslationCache::new(1);
        c.insert(1, 1, v(8192, 0));
        c.insert(2, 2, v(8193, 0));
        assert_eq!(c.get(1, 1), None);
        assert_eq!(c.get(2, 2).map(|x| x.intid), Some(8193));
    }

    #[test]
    fn generations_invalidate() {
        let mut c = TranslationCache::new(1 << 16);
        for d in 0..64u32 {
            for e in 0..16u32 {
                c.insert(d, e, v(8192 + e, (d % 8) as u16));
            }
        }
        assert_eq!(c.len(), 64 * 16);
        // MAPD of device 5: only its translations (and those of devices sharing its bucket,
        // none here) go.
        c.invalidate_device(5);
        assert!((0..16).all(|e| c.get(5, e).is_none()));
        assert!(c.get(6, 0).is_some());
        assert_eq!(c.len(), 63 * 16);
        // Refilling after the bump is current again.
        c.insert(5, 1, v(9000, 5));
        assert_eq!(c.get(5, 1).map(|x| x.intid), Some(9000));
        // MAPC of ICID 3: devices 3, 11, 19, ... lose everything.
        c.invalidate_collection(3);
        assert!(c.get(3, 0).is_none() && c.get(11, 7).is_none());
        assert!(c.get(4, 0).is_some());
        // A flush drops everything at once.
        c.clear();
        assert_eq!(c.len(), 0);
        // Two DeviceIDs that share a bucket: a bump drops both, never keeps a stale one.
        let a = 7u32;
        let b = (0..u32::MAX)
            .find(|x| *x != a && device_bucket(*x) == device_bucket(a))
            .unwrap();
        c.insert(a, 0, v(8192, 0));
        c.insert(b, 0, v(8193, 0));
        c.invalidate_device(a);
        assert!(c.get(a, 0).is_none() && c.get(b, 0).is_none());
    }

    #[test]
    fn generation_wrap_resets() {
        let mut c = TranslationCache::new(16);
        c.insert(1, 1, v(8192, 2));
        let b = device_bucket(1);
        c.device_gens[b] = u32::MAX - 1;
        c.insert(1, 2, v(8193, 2)); // filled at generation MAX - 1
        c.invalidate_device(1); // -> MAX
        assert!(c.get(1, 2).is_none());
        c.insert(1, 3, v(8194, 2)); // filled at MAX
        c.invalidate_device(1); // would wrap: full reset instead
        assert!(c.get(1, 3).is_none() && c.get(1, 2).is_none() && c.get(1, 1).is_none());
        assert_eq!(c.device_gens[b], 0);
        // The same for the collection counters and the epoch.
        c.insert(1, 1, v(8192, 2));
        c.collection_gens[collection_bucket(2)] = u32::MAX;
        c.invalidate_collection(2);
        assert!(c.get(1, 1).is_none());
        c.insert(1, 1, v(8192, 2));
        c.epoch = u32::MAX;
        c.insert(2, 2, v(8192, 2));
        c.clear();
        assert_eq!((c.len(), c.epoch), (0, 1));
    }
}
