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
//! allocated once and never grows, so the guest cannot make it allocate. A lookup or insert
//! is O(1); a per-device or per-collection invalidation scans the fixed capacity.

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
    valid: bool,
}

const EMPTY: Slot = Slot {
    device_id: 0,
    event_id: 0,
    value: Cached {
        intid: 0,
        vcpu: 0,
        icid: 0,
    },
    valid: false,
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
    stats: CacheStats,
}

impl TranslationCache {
    /// `capacity` must be a power of two (checked by the config builder).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1).next_power_of_two();
        TranslationCache {
            slots: vec![EMPTY; capacity].into_boxed_slice(),
            mask: capacity - 1,
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
    pub fn get(&mut self, device_id: u32, event_id: u32) -> Option<Cached> {
        let i = self.index(device_id, event_id);
        match self.slots.get(i) {
            Some(s) if s.valid && s.device_id == device_id && s.event_id == event_id => {
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
        if let Some(s) = self.slots.get_mut(i) {
            *s = Slot {
                device_id,
                event_id,
                value,
                valid: true,
            };
        }
    }

    #[inline]
    pub fn invalidate(&mut self, device_id: u32, event_id: u32) {
        let i = self.index(device_id, event_id);
        if let Some(s) = self.slots.get_mut(i)
            && s.device_id == device_id
            && s.event_id == event_id
        {
            s.valid = false;
        }
    }

    pub fn invalidate_device(&mut self, device_id: u32) {
        for s in self.slots.iter_mut() {
            if s.device_id == device_id {
                s.valid = false;
            }
        }
    }

    pub fn invalidate_collection(&mut self, icid: u16) {
        for s in self.slots.iter_mut() {
            if s.value.icid == icid {
                s.valid = false;
            }
        }
    }

    pub fn clear(&mut self) {
        for s in self.slots.iter_mut() {
            s.valid = false;
        }
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.valid).count()
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
}
