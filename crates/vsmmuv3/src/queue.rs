// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Circular queue arithmetic shared by the command and event queues (IHI 0070 §3.5).
//!
//! A queue of `2^log2` entries has PROD/CONS pointers made of an index (`log2` bits) and a
//! wrap bit just above it. The queue is empty when index and wrap are equal, full when the
//! indices are equal and the wraps differ. Pointer bits above the wrap bit are ignored.

use crate::regs::Q_BASE_ADDR_MASK;

/// Where a queue is and how big it is, from its `*_BASE` register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueGeometry {
    /// Effective base address: `ADDR` aligned down to the queue size (at least 32 bytes).
    pub base: u64,
    /// Effective log2 of the number of entries: `min(LOG2SIZE, max_log2)`.
    pub log2: u8,
    /// log2 of the entry size in bytes (4 for commands, 5 for events).
    pub entry_log2: u8,
}

impl QueueGeometry {
    /// Decodes a `SMMU_CMDQ_BASE`/`SMMU_EVENTQ_BASE` value. A `LOG2SIZE` above the
    /// advertised maximum (`SMMU_IDR1.CMDQS`/`EVENTQS`) behaves as that maximum, and the
    /// bits of `ADDR` below the queue size are treated as zero (IHI 0070 §6.3.25, §6.3.28).
    pub fn from_base(reg: u64, max_log2: u8, entry_log2: u8) -> Self {
        let log2 = ((reg & 0x1f) as u8).min(max_log2);
        let bytes_log2 = u32::from(log2) + u32::from(entry_log2);
        let align = (1u64 << bytes_log2.max(5)) - 1;
        QueueGeometry {
            base: reg & Q_BASE_ADDR_MASK & !align,
            log2,
            entry_log2,
        }
    }

    /// Number of entries.
    pub fn entries(&self) -> u32 {
        1 << self.log2
    }

    /// Mask of the index-and-wrap bits of a pointer.
    pub fn ptr_mask(&self) -> u32 {
        (2u32 << self.log2) - 1
    }

    /// The index part of `ptr`.
    pub fn index(&self, ptr: u32) -> u32 {
        ptr & (self.entries() - 1)
    }

    /// The wrap bit of `ptr`.
    pub fn wrap(&self, ptr: u32) -> bool {
        ptr & self.entries() != 0
    }

    /// `ptr` advanced by one entry (index and wrap), other bits dropped.
    pub fn next(&self, ptr: u32) -> u32 {
        (ptr & self.ptr_mask()).wrapping_add(1) & self.ptr_mask()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self, prod: u32, cons: u32) -> bool {
        prod & self.ptr_mask() == cons & self.ptr_mask()
    }

    /// Whether the queue is full.
    pub fn is_full(&self, prod: u32, cons: u32) -> bool {
        self.index(prod) == self.index(cons) && self.wrap(prod) != self.wrap(cons)
    }

    /// Guest address of entry `index`.
    pub fn slot(&self, index: u32) -> u64 {
        self.base + (u64::from(index) << self.entry_log2)
    }

    /// Entries from `cons` up to `prod` (mod twice the size): what a consumer would read.
    /// More than [`entries`](Self::entries) when the producer overran the queue.
    pub fn pending(&self, prod: u32, cons: u32) -> u32 {
        (prod & self.ptr_mask()).wrapping_sub(cons & self.ptr_mask()) & self.ptr_mask()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_full_wrap() {
        let q = QueueGeometry::from_base(0x1_0000 | 2, 19, 4);
        assert_eq!(q.entries(), 4);
        assert!(q.is_empty(0, 0));
        assert!(q.is_full(4, 0));
        assert!(!q.is_full(3, 0));
        assert_eq!(q.next(3), 4);
        assert_eq!(q.next(7), 0);
        assert_eq!(q.pending(1, 7), 2);
        assert!(q.is_empty(0x100, 0), "bits above the wrap bit are ignored");
        assert_eq!(q.slot(3), 0x1_0030);
    }

    /// IHI 0070 §6.3.25: LOG2SIZE above CMDQS behaves as CMDQS; the base is aligned to
    /// the queue size.
    #[test]
    fn geometry_clamps_and_aligns() {
        let q = QueueGeometry::from_base(0x1_2345_6780 | 31, 8, 4);
        assert_eq!(q.log2, 8);
        assert_eq!(q.base, 0x1_2345_6000);
        let q = QueueGeometry::from_base(0x47 | (1 << 62) | (0xfff << 52), 19, 5);
        assert_eq!(q.log2, 7);
        assert_eq!(q.base, 0);
        let q = QueueGeometry::from_base(0x60, 19, 4);
        assert_eq!((q.log2, q.base), (0, 0x60));
    }
}
