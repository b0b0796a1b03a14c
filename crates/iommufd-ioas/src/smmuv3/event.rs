// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! SMMUv3 event records as a vEVENTQ delivers them (Arm IHI 0070 7.3 "Event records"; Linux
//! `struct iommu_vevent_arm_smmuv3`): 32 bytes, little-endian, with the StreamID replaced by
//! the device's virtual ID (its vDEVICE's `virt_id`).

use super::bits;

/// Event numbers (IHI 0070 7.3) and their names, from `hw-defs`.
pub use hw_defs::smmuv3::event_id;

/// One SMMUv3 event record, with accessors for the fields the translation and configuration
/// faults share (IHI 0070 7.3.1-7.3.20).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmmuV3Event {
    words: [u64; 4],
}

impl SmmuV3Event {
    /// Wraps the four 64-bit words of a record.
    pub const fn from_words(words: [u64; 4]) -> Self {
        SmmuV3Event { words }
    }

    /// Decodes the 32 little-endian bytes of a record.
    pub fn from_le_bytes(b: &[u8; 32]) -> Self {
        let mut words = [0u64; 4];
        for (i, w) in words.iter_mut().enumerate() {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[8 * i..8 * i + 8]);
            *w = u64::from_le_bytes(x);
        }
        SmmuV3Event { words }
    }

    /// The raw words.
    pub const fn words(&self) -> [u64; 4] {
        self.words
    }

    /// `EventID` (see [`event_id`]).
    pub fn id(&self) -> u8 {
        self.words[0] as u8
    }

    /// The spec's name of the event, when it has one.
    pub fn name(&self) -> Option<&'static str> {
        event_id::name(self.id())
    }

    /// `StreamID` (virtual, from a vEVENTQ).
    pub fn stream_id(&self) -> u32 {
        bits(self.words[0], 63, 32) as u32
    }

    /// `SubstreamID`, when `SSV` is set.
    pub fn substream_id(&self) -> Option<u32> {
        (bits(self.words[0], 11, 11) == 1).then(|| bits(self.words[0], 31, 12) as u32)
    }

    /// `RnW`: the faulting access was a read.
    pub fn read(&self) -> bool {
        bits(self.words[1], 35, 35) == 1
    }

    /// `S2`: the fault was in stage 2.
    pub fn stage2(&self) -> bool {
        bits(self.words[1], 39, 39) == 1
    }

    /// `CLASS` (`0b00` CD fetch, `0b01` translation-table fetch, `0b10` input address).
    pub fn class(&self) -> u8 {
        bits(self.words[1], 41, 40) as u8
    }

    /// `InputAddr`: the address the device used (a gIOVA under a guest stage 1).
    pub fn input_addr(&self) -> u64 {
        self.words[2]
    }

    /// `IPA` (bits 51:12) of a stage-2 fault, as translation faults report it.
    pub fn ipa(&self) -> u64 {
        self.words[3] & 0x000f_ffff_ffff_f000
    }

    /// Whether the record is one of the translation faults (`F_TRANSLATION`, `F_ADDR_SIZE`,
    /// `F_ACCESS`, `F_PERMISSION`).
    pub fn is_translation_fault(&self) -> bool {
        matches!(
            self.id(),
            event_id::F_TRANSLATION
                | event_id::F_ADDR_SIZE
                | event_id::F_ACCESS
                | event_id::F_PERMISSION
        )
    }
}

impl std::fmt::Display for SmmuV3Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}")?,
            None => write!(f, "event {:#04x}", self.id())?,
        }
        write!(
            f,
            " StreamID {:#x} addr {:#x}{}",
            self.stream_id(),
            self.input_addr(),
            if self.stage2() { " (stage 2)" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_translation_fault() {
        let mut b = [0u8; 32];
        // F_TRANSLATION, StreamID 0x20, a write (RnW 0), stage 1, class IN, at 0x10400000.
        b[..8].copy_from_slice(&(0x10u64 | 0x20 << 32).to_le_bytes());
        b[8..16].copy_from_slice(&(2u64 << 40).to_le_bytes());
        b[16..24].copy_from_slice(&0x1040_0000u64.to_le_bytes());
        b[24..].copy_from_slice(&0x4040_0abcu64.to_le_bytes());
        let e = SmmuV3Event::from_le_bytes(&b);
        assert_eq!(e.id(), event_id::F_TRANSLATION);
        assert_eq!(e.name(), Some("F_TRANSLATION"));
        assert_eq!(e.stream_id(), 0x20);
        assert_eq!(e.substream_id(), None);
        assert!(!e.read());
        assert!(!e.stage2());
        assert_eq!(e.class(), 2);
        assert_eq!(e.input_addr(), 0x1040_0000);
        assert_eq!(e.ipa(), 0x4040_0000);
        assert!(e.is_translation_fault());
        assert_eq!(e.to_string(), "F_TRANSLATION StreamID 0x20 addr 0x10400000");
        let s = SmmuV3Event::from_words([0x0a | 1 << 11 | 5 << 12, 1 << 39 | 1 << 35, 0, 0]);
        assert_eq!(s.substream_id(), Some(5));
        assert!(s.stage2() && s.read());
        assert!(!s.is_translation_fault());
        assert_eq!(SmmuV3Event::from_words([0xee, 0, 0, 0]).name(), None);
    }
}
