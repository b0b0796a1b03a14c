// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Event records (IHI 0070 §7.3): 32 bytes, type in bits \[7:0\], StreamID in \[63:32\] of
//! the first word. The kernel's vEVENTQ hands the VMM the same 32 bytes with the vSID
//! already in place (`struct iommu_vevent_arm_smmuv3`).

/// Event type numbers (IHI 0070 §7.3), shared with `iommufd-ioas` through `hw-defs`.
pub use hw_defs::smmuv3::event_id as id;

/// One event record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EventRecord(pub [u64; 4]);

impl EventRecord {
    /// A record of type `id` for `sid` (no SubstreamID), other fields zero.
    pub fn new(id: u8, sid: u32) -> Self {
        EventRecord([u64::from(id) | (u64::from(sid) << 32), 0, 0, 0])
    }

    /// `F_STE_FETCH`/`F_CD_FETCH`: FetchAddr\[51:3\] in word 3.
    pub fn with_fetch_addr(mut self, addr: u64) -> Self {
        self.0[3] = addr & crate::regs::mask(51, 3);
        self
    }

    /// The event type.
    pub fn id(&self) -> u8 {
        self.0[0] as u8
    }

    /// The StreamID.
    pub fn stream_id(&self) -> u32 {
        (self.0[0] >> 32) as u32
    }

    /// From the 32 bytes of a queue entry or vEVENTQ record.
    pub fn from_bytes(b: &[u8; 32]) -> Self {
        let mut w = [0u64; 4];
        for (i, word) in w.iter_mut().enumerate() {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i * 8..i * 8 + 8]);
            *word = u64::from_le_bytes(x);
        }
        EventRecord(w)
    }

    /// The 32 bytes as written to the event queue.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        for (i, word) in self.0.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
        }
        b
    }
}

/// What happened to an event the model tried to record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOutcome {
    /// Written to the guest's event queue.
    Recorded,
    /// Dropped: `SMMU_CR0.SMMUEN` or `EVENTQEN` is 0 (IHI 0070 §7.2: events are not
    /// recorded while the queue is disabled).
    QueueDisabled,
    /// Dropped: the queue was full; `SMMU_EVENTQ_PROD.OVFLG` now signals the overflow
    /// (IHI 0070 §7.4).
    Overflow,
    /// Dropped: the write to the queue aborted; `SMMU_GERROR.EVENTQ_ABT_ERR` is active.
    WriteAbort,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_layout() {
        let r = EventRecord::new(id::F_STE_FETCH, 0x1234).with_fetch_addr(0xdead_beef_f00f);
        assert_eq!(r.id(), 3);
        assert_eq!(r.stream_id(), 0x1234);
        assert_eq!(r.0[3], 0xdead_beef_f008);
        assert_eq!(EventRecord::from_bytes(&r.to_bytes()), r);
        assert_eq!(r.to_bytes()[4..8], 0x1234u32.to_le_bytes());
    }
}
