// Copyright © 2026 The passthrough-msi authors
//
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Accesses to an interrupt file's 4-KiB page.
//!
//! AIA 1.0 §3.5 (Memory region for an interrupt file):
//!
//! | offset | size | register       |
//! |--------|------|----------------|
//! | 0x000  | 4    | `seteipnum_le` |
//! | 0x004  | 4    | `seteipnum_be` |
//!
//! "All other bytes ... are reserved and must be implemented as read-only
//! zeros." "Only naturally aligned 32-bit simple reads and writes are supported
//! ... For other forms of accesses (other sizes, misaligned accesses, or AMOs),
//! an IMSIC implementation should preferably report an access fault or bus error
//! but must otherwise ignore the access." "A read of `seteipnum_le` or
//! `seteipnum_be` returns zero in all cases."
//!
//! This model supports `seteipnum_be` (the spec lets little-endian-only systems
//! ignore it): a write of bytes `b0 b1 b2 b3` there sets identity
//! `u32::from_be_bytes([b0, b1, b2, b3])`.

use serde::{Deserialize, Serialize};

use crate::geometry::PAGE_SIZE;

/// Offset of `seteipnum_le` in an interrupt file's page.
pub const SETEIPNUM_LE: u64 = 0x000;
/// Offset of `seteipnum_be` in an interrupt file's page.
pub const SETEIPNUM_BE: u64 = 0x004;

/// What an access at a page offset reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PageAccess {
    /// A 32-bit aligned access to `seteipnum_le`.
    SetEipNumLe,
    /// A 32-bit aligned access to `seteipnum_be`.
    SetEipNumBe,
    /// A 32-bit aligned access to a reserved word: reads zero, writes ignored.
    ReadOnlyZero,
    /// Any other size, a misaligned access, or one that leaves the page: the
    /// access is ignored (reads return zero) and the VMM should preferably
    /// report an access fault.
    Unsupported,
}

/// Classifies an access of `len` bytes at `offset` within a page.
///
/// ```
/// use riscv_imsic::{PageAccess, page_access};
///
/// assert_eq!(page_access(0x0, 4), PageAccess::SetEipNumLe);
/// assert_eq!(page_access(0x4, 4), PageAccess::SetEipNumBe);
/// assert_eq!(page_access(0x8, 4), PageAccess::ReadOnlyZero);
/// assert_eq!(page_access(0x0, 8), PageAccess::Unsupported);
/// assert_eq!(page_access(0x2, 4), PageAccess::Unsupported);
/// ```
pub fn page_access(offset: u64, len: usize) -> PageAccess {
    if len != 4 || !offset.is_multiple_of(4) || offset >= PAGE_SIZE {
        return PageAccess::Unsupported;
    }
    match offset {
        SETEIPNUM_LE => PageAccess::SetEipNumLe,
        SETEIPNUM_BE => PageAccess::SetEipNumBe,
        _ => PageAccess::ReadOnlyZero,
    }
}

/// The identity a 4-byte write carries for `access`, or `None` when the access
/// does not write a `seteipnum` register.
pub fn seteipnum_value(access: PageAccess, data: &[u8]) -> Option<u32> {
    let bytes: [u8; 4] = data.try_into().ok()?;
    match access {
        PageAccess::SetEipNumLe => Some(u32::from_le_bytes(bytes)),
        PageAccess::SetEipNumBe => Some(u32::from_be_bytes(bytes)),
        PageAccess::ReadOnlyZero | PageAccess::Unsupported => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_offset_and_size() {
        for offset in (0..PAGE_SIZE + 8).chain([u64::MAX - 3, u64::MAX]) {
            for len in [0usize, 1, 2, 3, 4, 5, 8, 16] {
                let a = page_access(offset, len);
                let aligned_word = len == 4 && offset % 4 == 0 && offset < PAGE_SIZE;
                match a {
                    PageAccess::SetEipNumLe => assert!(aligned_word && offset == 0),
                    PageAccess::SetEipNumBe => assert!(aligned_word && offset == 4),
                    PageAccess::ReadOnlyZero => assert!(aligned_word && offset >= 8),
                    PageAccess::Unsupported => assert!(!aligned_word),
                }
            }
        }
    }

    #[test]
    fn byte_orders() {
        let d = 0x0000_0102u32;
        assert_eq!(
            seteipnum_value(PageAccess::SetEipNumLe, &d.to_le_bytes()),
            Some(0x102)
        );
        assert_eq!(
            seteipnum_value(PageAccess::SetEipNumBe, &d.to_be_bytes()),
            Some(0x102)
        );
        assert_eq!(
            seteipnum_value(PageAccess::SetEipNumBe, &d.to_le_bytes()),
            Some(0x0201_0000)
        );
        assert_eq!(
            seteipnum_value(PageAccess::ReadOnlyZero, &d.to_le_bytes()),
            None
        );
        assert_eq!(seteipnum_value(PageAccess::SetEipNumLe, &[1, 2]), None);
    }
}
