// Copyright 2025 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! MSI-X table entries (PCI 3.0 §6.8.2.6 - §6.8.2.9, PCIe Base 6.0 §7.7.2.6 - §7.7.2.9).
//!
//! ```text
//! entry + 0x0  Message Address      bits 1:0 read as 0 (DWORD alignment)
//! entry + 0x4  Message Upper Address
//! entry + 0x8  Message Data
//! entry + 0xc  Vector Control       bit 0 Mask (RW); bits 31:1 reserved, read as 0
//! ```
//!
//! Access shapes (PCI 3.0 §6.8.2: "software must use aligned full DWORD or aligned full
//! QWORD transactions"): a 4-byte access at a multiple of 4 or an 8-byte access at a multiple
//! of 8, wholly inside the structure. Any other shape is unsupported: reads return all-ones
//! (what a failed PCIe read completes with), writes are ignored (test
//! `odd_table_accesses_are_defined`).

use serde::{Deserialize, Serialize};

/// Vector Control bit 0: Mask Bit.
pub const MSIX_VECTOR_CTRL_MASK: u32 = 1;

/// One MSI-X table entry as the guest programmed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MsixEntry {
    /// Message Address, bits 31:2 (bits 1:0 are always 0).
    pub address_lo: u32,
    /// Message Upper Address.
    pub address_hi: u32,
    /// Message Data.
    pub data: u32,
    /// Vector Control: only bit 0 (Mask) is ever set.
    pub vector_control: u32,
}

impl MsixEntry {
    /// Reset state (PCI 3.0 §6.8.2.9): masked, address and data 0.
    pub const RESET: MsixEntry = MsixEntry {
        address_lo: 0,
        address_hi: 0,
        data: 0,
        vector_control: MSIX_VECTOR_CTRL_MASK,
    };

    /// The 64-bit message address.
    pub fn address(&self) -> u64 {
        u64::from(self.address_hi) << 32 | u64::from(self.address_lo)
    }

    /// Whether the vector's own Mask bit is set.
    pub fn masked(&self) -> bool {
        self.vector_control & MSIX_VECTOR_CTRL_MASK != 0
    }

    /// Whether every reserved bit is 0 (address bits 1:0, Vector Control bits 31:1).
    pub fn is_canonical(&self) -> bool {
        self.address_lo & 3 == 0 && self.vector_control & !MSIX_VECTOR_CTRL_MASK == 0
    }

    /// Dword `field & 3` of the entry (selects, no branch and no indexed stack array: an
    /// array indexed by the field made the CPU mispredict memory ordering when successive
    /// accesses hit different fields).
    #[inline(always)]
    pub(crate) fn dword(&self, field: usize) -> u32 {
        let odd = field & 1 != 0;
        let low = if odd {
            self.address_hi
        } else {
            self.address_lo
        };
        let high = if odd { self.vector_control } else { self.data };
        if field & 2 != 0 { high } else { low }
    }

    /// Dword `field` (0..=3) of the entry.
    pub(crate) fn read_dword(&self, field: usize) -> u32 {
        match field {
            0 => self.address_lo,
            1 => self.address_hi,
            2 => self.data,
            _ => self.vector_control,
        }
    }

    /// The entry with dword `field & 3` replaced by `value`, read-only bits dropped
    /// (selects: the trapped write's hot path, see [`dword`](Self::dword)).
    #[inline(always)]
    pub(crate) fn with_dword(self, field: usize, value: u32) -> Self {
        let f = field & 3;
        MsixEntry {
            address_lo: if f == 0 { value & !3 } else { self.address_lo },
            address_hi: if f == 1 { value } else { self.address_hi },
            data: if f == 2 { value } else { self.data },
            vector_control: if f == 3 {
                value & MSIX_VECTOR_CTRL_MASK
            } else {
                self.vector_control
            },
        }
    }

    /// Writes dword `field` (0..=3), dropping read-only bits.
    #[inline(always)]
    pub(crate) fn write_dword(&mut self, field: usize, value: u32) {
        match field {
            0 => self.address_lo = value & !3,
            1 => self.address_hi = value,
            2 => self.data = value,
            _ => self.vector_control = value & MSIX_VECTOR_CTRL_MASK,
        }
    }
}

impl Default for MsixEntry {
    fn default() -> Self {
        MsixEntry::RESET
    }
}

/// Whether an access of `len` bytes at `offset` of a structure of `size` bytes is an aligned
/// DWORD or QWORD wholly inside it.
pub(crate) fn supported_shape(offset: u64, len: usize, size: u64) -> bool {
    let aligned = match len {
        4 => offset.is_multiple_of(4),
        8 => offset.is_multiple_of(8),
        _ => false,
    };
    aligned
        && offset
            .checked_add(len as u64)
            .is_some_and(|end| end <= size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_bits() {
        let mut e = MsixEntry::RESET;
        e.write_dword(0, 0xffff_ffff);
        e.write_dword(3, 0xffff_fffe);
        assert_eq!(e.address_lo, 0xffff_fffc);
        assert_eq!(e.vector_control, 0);
        assert!(!e.masked());
        assert!(e.is_canonical());
        // with_dword drops the same read-only bits as write_dword.
        for field in 0..4 {
            let mut a = MsixEntry::RESET;
            a.write_dword(field, 0xffff_ffff);
            assert_eq!(MsixEntry::RESET.with_dword(field, 0xffff_ffff), a);
        }
    }

    #[test]
    fn shapes() {
        assert!(supported_shape(0, 4, 16));
        assert!(supported_shape(8, 8, 16));
        assert!(!supported_shape(4, 8, 16));
        assert!(!supported_shape(2, 4, 16));
        assert!(!supported_shape(0, 2, 16));
        assert!(!supported_shape(0, 1, 16));
        assert!(!supported_shape(16, 4, 16));
        assert!(!supported_shape(u64::MAX - 3, 4, u64::MAX));
    }
}
