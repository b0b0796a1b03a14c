// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! MMIO dispatch: a bus of non-overlapping guest physical ranges, each served by a device.
//!
//! The vCPU threads call [`MmioBus::read`] and [`MmioBus::write`] for every `KVM_EXIT_MMIO`.
//! The bus can change while the guest runs (a PCI BAR moves, so its trap moves): it sits
//! behind a read-write lock, and a dispatch only holds that lock long enough to find the
//! device; the device is called with no bus lock held, so a device may itself add or remove
//! ranges (the ECAM device does, for BAR traps) without deadlock
//! (`tests::a_device_may_change_the_bus_from_its_handler`).
//!
//! Guest accesses are hostile and every one has a defined outcome, never a panic:
//!
//! | access | read | write |
//! |---|---|---|
//! | inside one range, 1/2/4/8 bytes | the device's | the device's |
//! | no range at the address | all-ones | ignored |
//! | crossing the end of its range | all-ones | ignored |
//! | length 0, 3, 5..7 or more than 8 | all-ones | ignored |
//!
//! Each outcome is counted ([`MmioStats`]) for the VMM report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use serde::Serialize;

use crate::layout::Region;

/// A device that serves MMIO accesses at offsets from the base of its range.
///
/// Devices take `&self` so that one device can be reached from several vCPU threads and
/// from the bus that routes to it; a device with state keeps it behind its own lock.
/// `data.len()` is 1, 2, 4 or 8 and `offset + data.len()` lies within the range the device
/// was registered with; beyond that the device must still not panic.
pub trait MmioDevice: Send + Sync {
    /// Fills `data` with what the guest reads at `offset`.
    fn mmio_read(&self, offset: u64, data: &mut [u8]);
    /// Takes what the guest writes at `offset`.
    fn mmio_write(&self, offset: u64, data: &[u8]);
}

/// Why a range cannot join the bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MmioError {
    /// A zero-sized or wrapping range.
    #[error("MMIO bus: invalid range {0}")]
    InvalidRange(Region),
    /// A range overlapping one already on the bus.
    #[error("MMIO bus: range {new} overlaps {existing}")]
    Overlap {
        /// The range being added.
        new: Region,
        /// The range already there.
        existing: Region,
    },
}

/// Counts of dispatched accesses by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MmioStats {
    /// Reads a device served.
    pub reads: u64,
    /// Writes a device served.
    pub writes: u64,
    /// Accesses at an address no range holds.
    pub unmapped: u64,
    /// Accesses of a bad length or crossing the end of a range.
    pub malformed: u64,
}

/// What became of one access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// A device served it.
    Handled,
    /// No range holds the address.
    Unmapped,
    /// Bad length, or the access crosses the end of its range.
    Malformed,
}

struct Entry {
    region: Region,
    device: Arc<dyn MmioDevice>,
}

/// The MMIO bus.
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use passthrough_vmm::layout::Region;
/// use passthrough_vmm::mmio::{Dispatch, MmioBus};
/// use passthrough_vmm::uart::Uart;
///
/// let bus = MmioBus::new();
/// bus.insert(Region::new(0x0600_0000, 0x1_0000), Arc::new(Uart::new(None)))?;
/// let mut lsr = [0u8; 1];
/// assert_eq!(bus.read(0x0600_0005, &mut lsr), Dispatch::Handled);
/// assert_eq!(lsr[0] & 0x20, 0x20);
/// let mut nothing = [0u8; 4];
/// assert_eq!(bus.read(0x0700_0000, &mut nothing), Dispatch::Unmapped);
/// assert_eq!(nothing, [0xff; 4]);
/// # Ok::<(), passthrough_vmm::mmio::MmioError>(())
/// ```
#[derive(Default)]
pub struct MmioBus {
    /// Keyed by range base.
    ranges: RwLock<BTreeMap<u64, Entry>>,
    reads: AtomicU64,
    writes: AtomicU64,
    unmapped: AtomicU64,
    malformed: AtomicU64,
}

impl std::fmt::Debug for MmioBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioBus")
            .field("ranges", &self.ranges())
            .field("stats", &self.stats())
            .finish()
    }
}

fn valid_len(len: usize) -> bool {
    matches!(len, 1 | 2 | 4 | 8)
}

impl MmioBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `device` at `region`, which must be non-empty, must not wrap, and must not
    /// overlap a range already on the bus.
    pub fn insert(&self, region: Region, device: Arc<dyn MmioDevice>) -> Result<(), MmioError> {
        if region.size == 0 || region.end().is_none() {
            return Err(MmioError::InvalidRange(region));
        }
        let mut ranges = self.ranges.write().unwrap_or_else(PoisonError::into_inner);
        // Only the nearest range below and the nearest at or above can overlap.
        let below = ranges.range(..region.base).next_back();
        let above = ranges.range(region.base..).next();
        for (_, e) in below.into_iter().chain(above) {
            if e.region.overlaps(&region) {
                return Err(MmioError::Overlap {
                    new: region,
                    existing: e.region,
                });
            }
        }
        ranges.insert(region.base, Entry { region, device });
        Ok(())
    }

    /// Removes the range that starts at `base`, returning its device.
    pub fn remove(&self, base: u64) -> Option<Arc<dyn MmioDevice>> {
        self.ranges
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&base)
            .map(|e| e.device)
    }

    /// The ranges on the bus, in address order.
    pub fn ranges(&self) -> Vec<Region> {
        self.ranges
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|e| e.region)
            .collect()
    }

    /// The counts so far.
    pub fn stats(&self) -> MmioStats {
        MmioStats {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            unmapped: self.unmapped.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
        }
    }

    /// Finds the device for an access of `len` bytes at `addr`, and its offset.
    fn route(&self, addr: u64, len: usize) -> Result<(Arc<dyn MmioDevice>, u64), Dispatch> {
        let ranges = self.ranges.read().unwrap_or_else(PoisonError::into_inner);
        let (_, entry) = ranges
            .range(..=addr)
            .next_back()
            .filter(|(_, e)| e.region.contains(addr))
            .ok_or(Dispatch::Unmapped)?;
        if !valid_len(len) {
            return Err(Dispatch::Malformed);
        }
        let offset = addr - entry.region.base;
        // len <= 8, so this cannot overflow; `contains` gave offset < size.
        if entry.region.size - offset < len as u64 {
            return Err(Dispatch::Malformed);
        }
        Ok((Arc::clone(&entry.device), offset))
    }

    fn count(&self, outcome: Dispatch, write: bool) -> Dispatch {
        let counter = match (outcome, write) {
            (Dispatch::Handled, false) => &self.reads,
            (Dispatch::Handled, true) => &self.writes,
            (Dispatch::Unmapped, _) => &self.unmapped,
            (Dispatch::Malformed, _) => &self.malformed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        outcome
    }

    /// A guest read of `data.len()` bytes at `addr`; `data` is all-ones unless a device
    /// served the read.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> Dispatch {
        match self.route(addr, data.len()) {
            Ok((device, offset)) => {
                device.mmio_read(offset, data);
                self.count(Dispatch::Handled, false)
            }
            Err(outcome) => {
                data.fill(0xff);
                self.count(outcome, false)
            }
        }
    }

    /// A guest write of `data` at `addr`; ignored unless a device serves it.
    pub fn write(&self, addr: u64, data: &[u8]) -> Dispatch {
        match self.route(addr, data.len()) {
            Ok((device, offset)) => {
                device.mmio_write(offset, data);
                self.count(Dispatch::Handled, true)
            }
            Err(outcome) => self.count(outcome, true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Remembers accesses; reads return the low byte of the offset in every byte.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(bool, u64, Vec<u8>)>>);

    impl MmioDevice for Recorder {
        fn mmio_read(&self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
            self.0.lock().unwrap().push((false, offset, data.to_vec()));
        }
        fn mmio_write(&self, offset: u64, data: &[u8]) {
            self.0.lock().unwrap().push((true, offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_range_with_offsets() {
        let bus = MmioBus::new();
        let a = Arc::new(Recorder::default());
        let b = Arc::new(Recorder::default());
        bus.insert(Region::new(0x1000, 0x100), a.clone()).unwrap();
        bus.insert(Region::new(0x1100, 0x100), b.clone()).unwrap();
        let mut d = [0u8; 4];
        assert_eq!(bus.read(0x10fc, &mut d), Dispatch::Handled);
        assert_eq!(d, [0xfc; 4]);
        assert_eq!(bus.write(0x1100, &[1, 2]), Dispatch::Handled);
        assert_eq!(a.0.lock().unwrap()[0], (false, 0xfc, vec![0xfc; 4]));
        assert_eq!(b.0.lock().unwrap()[0], (true, 0, vec![1, 2]));
        assert_eq!(
            bus.stats(),
            MmioStats {
                reads: 1,
                writes: 1,
                unmapped: 0,
                malformed: 0
            }
        );
    }

    #[test]
    fn hostile_accesses_have_defined_outcomes() {
        let bus = MmioBus::new();
        let dev = Arc::new(Recorder::default());
        bus.insert(Region::new(0x1000, 0x100), dev.clone()).unwrap();
        let mut d = [0u8; 8];
        // Crosses the end of the range.
        assert_eq!(bus.read(0x10fc, &mut d), Dispatch::Malformed);
        assert_eq!(d, [0xff; 8]);
        assert_eq!(bus.write(0x10ff, &[0; 2]), Dispatch::Malformed);
        // Odd and absurd lengths.
        for len in [0usize, 3, 5, 6, 7, 9, 16, 4096] {
            let mut buf = vec![0u8; len];
            assert_eq!(bus.read(0x1000, &mut buf), Dispatch::Malformed, "{len}");
            assert!(buf.iter().all(|&b| b == 0xff));
            assert_eq!(bus.write(0x1000, &buf), Dispatch::Malformed);
        }
        // Outside every range, including the very top of the address space.
        for addr in [0, 0xfff, 0x1100, u64::MAX, u64::MAX - 7] {
            let mut buf = [0u8; 8];
            assert_eq!(bus.read(addr, &mut buf), Dispatch::Unmapped);
            assert_eq!(buf, [0xff; 8]);
            assert_eq!(bus.write(addr, &buf), Dispatch::Unmapped);
        }
        assert!(
            dev.0.lock().unwrap().is_empty(),
            "the device saw none of it"
        );
        let s = bus.stats();
        assert_eq!((s.reads, s.writes), (0, 0));
        assert_eq!(s.malformed, 2 + 16);
        assert_eq!(s.unmapped, 10);
    }

    #[test]
    fn overlapping_and_invalid_ranges_are_refused() {
        let bus = MmioBus::new();
        let dev: Arc<dyn MmioDevice> = Arc::new(Recorder::default());
        bus.insert(Region::new(0x2000, 0x1000), dev.clone())
            .unwrap();
        for r in [
            Region::new(0x2000, 0x1000),
            Region::new(0x1fff, 2),
            Region::new(0x2fff, 1),
            Region::new(0x1000, 0x10000),
        ] {
            assert!(
                matches!(bus.insert(r, dev.clone()), Err(MmioError::Overlap { .. })),
                "{r}"
            );
        }
        assert_eq!(
            bus.insert(Region::new(0x5000, 0), dev.clone()),
            Err(MmioError::InvalidRange(Region::new(0x5000, 0)))
        );
        assert!(bus.insert(Region::new(u64::MAX, 2), dev.clone()).is_err());
        bus.insert(Region::new(0x3000, 0x1000), dev.clone())
            .unwrap();
        bus.insert(Region::new(0x1000, 0x1000), dev.clone())
            .unwrap();
        // A range ending at the top of the address space is valid.
        bus.insert(Region::new(u64::MAX - 0xfff, 0xfff), dev.clone())
            .unwrap();
        let mut d = [0u8];
        assert_eq!(bus.read(u64::MAX - 1, &mut d), Dispatch::Handled);
        assert_eq!(bus.read(u64::MAX, &mut d), Dispatch::Unmapped);
        assert_eq!(bus.ranges().len(), 4);
        assert!(bus.remove(0x2000).is_some());
        assert!(bus.remove(0x2000).is_none());
        assert_eq!(bus.read(0x2000, &mut d), Dispatch::Unmapped);
    }

    /// Moves itself on every write: a device that edits the bus from its handler.
    struct Mover {
        bus: Arc<MmioBus>,
        me: Mutex<Option<Arc<dyn MmioDevice>>>,
    }

    impl MmioDevice for Mover {
        fn mmio_read(&self, _offset: u64, data: &mut [u8]) {
            data.fill(0x42);
        }
        fn mmio_write(&self, _offset: u64, data: &[u8]) {
            let me = self.me.lock().unwrap().clone().unwrap();
            let from = self.bus.ranges()[0];
            self.bus.remove(from.base).unwrap();
            let to = Region::new(u64::from(data[0]) << 12, 0x1000);
            self.bus.insert(to, me).unwrap();
        }
    }

    #[test]
    fn a_device_may_change_the_bus_from_its_handler() {
        let bus = Arc::new(MmioBus::new());
        let mover = Arc::new(Mover {
            bus: bus.clone(),
            me: Mutex::new(None),
        });
        *mover.me.lock().unwrap() = Some(mover.clone());
        bus.insert(Region::new(0x1000, 0x1000), mover.clone())
            .unwrap();
        assert_eq!(bus.write(0x1000, &[5]), Dispatch::Handled);
        assert_eq!(bus.ranges(), [Region::new(0x5000, 0x1000)]);
        let mut d = [0u8; 2];
        assert_eq!(bus.read(0x5ffe, &mut d), Dispatch::Handled);
        assert_eq!(d, [0x42; 2]);
        // Break the cycle so the test does not leak.
        mover.me.lock().unwrap().take();
    }
}
