// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The ITS tables in guest memory and their IMPLEMENTATION DEFINED entry formats.
//!
//! IHI 0069H §5.2 (ITS tables): the Device table and the Collection table are described by
//! `GITS_BASER<n>`, each ITT by the address a MAPD command gives. Their entry formats are
//! IMPLEMENTATION DEFINED; this crate uses the little-endian 64-bit formats documented in
//! [`device`], [`itt`] and [`collection`]. Every entry read back from guest memory is treated
//! as hostile: a field out of range makes the entry read as invalid, never a panic.

pub mod baser;
pub mod collection;
pub mod device;
pub mod itt;

use vm_memory::{Bytes, GuestAddress, GuestMemory};

/// Which structure in guest memory an access was for (used in error messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    /// The command queue at `GITS_CBASER`.
    CommandQueue,
    /// A level-1 table of an indirect (two-level) `GITS_BASER<n>` table.
    Level1,
    /// The Device table (`GITS_BASER<n>.Type == Devices`).
    Devices,
    /// The Collection table (`GITS_BASER<n>.Type == Collections`).
    Collections,
    /// An Interrupt Translation Table given by MAPD.
    Itt,
}

impl std::fmt::Display for TableKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            TableKind::CommandQueue => "command queue",
            TableKind::Level1 => "level-1 table",
            TableKind::Devices => "device table",
            TableKind::Collections => "collection table",
            TableKind::Itt => "interrupt translation table",
        };
        f.write_str(s)
    }
}

/// A guest-memory access the ITS needed failed (the address is not backed by guest RAM).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// Reading `len` bytes at `addr` failed.
    #[error("read of {len} bytes of the {kind} at guest address {addr:#x} failed")]
    Read {
        /// Structure being read.
        kind: TableKind,
        /// Guest physical address.
        addr: u64,
        /// Access length in bytes.
        len: usize,
    },
    /// Writing `len` bytes at `addr` failed.
    #[error("write of {len} bytes of the {kind} at guest address {addr:#x} failed")]
    Write {
        /// Structure being written.
        kind: TableKind,
        /// Guest physical address.
        addr: u64,
        /// Access length in bytes.
        len: usize,
    },
}

/// Read one little-endian 64-bit table word.
pub(crate) fn read_u64<M: GuestMemory + ?Sized>(
    mem: &M,
    addr: u64,
    kind: TableKind,
) -> Result<u64, TableError> {
    mem.read_obj::<u64>(GuestAddress(addr))
        .map(u64::from_le)
        .map_err(|_| TableError::Read { kind, addr, len: 8 })
}

/// Write one little-endian 64-bit table word.
pub(crate) fn write_u64<M: GuestMemory + ?Sized>(
    mem: &M,
    addr: u64,
    value: u64,
    kind: TableKind,
) -> Result<(), TableError> {
    mem.write_obj::<u64>(value.to_le(), GuestAddress(addr))
        .map_err(|_| TableError::Write { kind, addr, len: 8 })
}

/// Whether the 8-byte table entry at `addr` is in guest memory (KVM's
/// `__is_visible_gfn_locked` for an ITS table entry).
pub(crate) fn backed<M: GuestMemory + ?Sized>(mem: &M, addr: u64) -> bool {
    mem.read_obj::<u64>(GuestAddress(addr)).is_ok()
}

/// Mask of bits `hi..=lo` of a 64-bit value.
pub(crate) const fn genmask(hi: u32, lo: u32) -> u64 {
    (u64::MAX >> (63 - hi)) & (u64::MAX << lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn genmask_bounds() {
        assert_eq!(genmask(63, 0), u64::MAX);
        assert_eq!(genmask(7, 0), 0xff);
        assert_eq!(genmask(51, 12), 0x000f_ffff_ffff_f000);
        assert_eq!(genmask(63, 63), 1 << 63);
    }

    #[test]
    fn words_are_little_endian_and_faults_are_reported() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x1000), 0x1000)]).unwrap();
        write_u64(&mem, 0x1008, 0x0102_0304_0506_0708, TableKind::Devices).unwrap();
        let mut b = [0u8; 8];
        mem.read_slice(&mut b, GuestAddress(0x1008)).unwrap();
        assert_eq!(b, [8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(
            read_u64(&mem, 0x1008, TableKind::Devices).unwrap(),
            0x0102_0304_0506_0708
        );
        assert_eq!(
            read_u64(&mem, 0x3000, TableKind::Itt),
            Err(TableError::Read {
                kind: TableKind::Itt,
                addr: 0x3000,
                len: 8
            })
        );
        assert!(matches!(
            write_u64(&mem, 0x1ffc, 0, TableKind::Collections),
            Err(TableError::Write { .. })
        ));
    }
}
