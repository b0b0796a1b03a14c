// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Region information and BAR mappings.

use std::ptr::NonNull;

use vfio_bindings::bindings::vfio::{
    VFIO_REGION_INFO_FLAG_CAPS, VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ,
    VFIO_REGION_INFO_FLAG_WRITE,
};

use crate::region_caps::{RegionCap, SparseMmapArea};
use crate::sys;

/// `struct vfio_region_info` with its capability chain, decoded and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionInfo {
    /// The region index (BAR 0-5, ROM 6, config 7, VGA 8, then device-specific).
    pub index: u32,
    /// Raw `VFIO_REGION_INFO_FLAG_*`.
    pub flags: u32,
    /// Region size in bytes.
    pub size: u64,
    /// Offset of the region within the device file (for `pread`/`pwrite`/`mmap`).
    pub offset: u64,
    /// The capabilities, in chain order.
    pub caps: Vec<RegionCap>,
}

impl RegionInfo {
    /// Readable through the device file.
    pub fn readable(&self) -> bool {
        self.flags & VFIO_REGION_INFO_FLAG_READ != 0
    }
    /// Writable through the device file.
    pub fn writable(&self) -> bool {
        self.flags & VFIO_REGION_INFO_FLAG_WRITE != 0
    }
    /// May be mmap'ed (subject to [`RegionInfo::sparse_areas`]).
    pub fn mappable(&self) -> bool {
        self.flags & VFIO_REGION_INFO_FLAG_MMAP != 0
    }
    /// The kernel announced a capability chain.
    pub fn has_caps(&self) -> bool {
        self.flags & VFIO_REGION_INFO_FLAG_CAPS != 0
    }
    /// `VFIO_REGION_INFO_CAP_MSIX_MAPPABLE` is present: the MSI-X table page may be mapped.
    pub fn msix_mappable(&self) -> bool {
        self.caps
            .iter()
            .any(|c| matches!(c, RegionCap::MsixMappable))
    }
    /// The sparse mmap areas, when the region carries that capability.
    pub fn sparse_areas(&self) -> Option<&[SparseMmapArea]> {
        self.caps.iter().find_map(|c| match c {
            RegionCap::SparseMmap(a) => Some(a.as_slice()),
            _ => None,
        })
    }

    /// Checks an access of `len` bytes at `offset` against the region's size.
    pub(crate) fn check_range(&self, offset: u64, len: u64) -> Result<(), String> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(format!("outside the region's {:#x} bytes", self.size)),
        }
    }

    /// Whether `offset..offset + len` may be mmap'ed: the region is mappable, and, with a
    /// sparse capability, the range lies inside one area.
    pub(crate) fn check_mappable(&self, offset: u64, len: u64) -> Result<(), String> {
        if !self.mappable() {
            return Err("the region is not mmap-able (VFIO_REGION_INFO_FLAG_MMAP clear)".into());
        }
        self.check_range(offset, len)?;
        if let Some(areas) = self.sparse_areas() {
            let end = offset + len;
            let inside = areas.iter().any(|a| {
                a.offset <= offset && a.offset.checked_add(a.size).is_some_and(|e| end <= e)
            });
            if !inside {
                return Err("not inside any sparse mmap area".into());
            }
        }
        Ok(())
    }

    /// Validates what the kernel sent: sparse areas must lie inside the region.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.offset.checked_add(self.size).is_none() {
            return Err(format!(
                "region {:#x}+{:#x} overflows the file offset space",
                self.offset, self.size
            ));
        }
        if let Some(areas) = self.sparse_areas() {
            for (i, a) in areas.iter().enumerate() {
                if a.offset.checked_add(a.size).is_none_or(|e| e > self.size) {
                    return Err(format!(
                        "sparse area {i} ({:#x}+{:#x}) is outside the region's {:#x} bytes",
                        a.offset, a.size, self.size
                    ));
                }
            }
        }
        Ok(())
    }
}

/// An mmap'ed part of a device region (typically a BAR), unmapped on drop.
///
/// Device MMIO must never be accessed through Rust references; this type offers only
/// bounds- and alignment-checked volatile accesses, plus the raw pointer for handing the
/// mapping to a hypervisor (a KVM memory slot) under that consumer's own `unsafe` contract.
#[derive(Debug)]
pub struct RegionMapping {
    ptr: NonNull<u8>,
    len: usize,
    index: u32,
    offset: u64,
}

// SAFETY: the mapping is plain shared memory (device MMIO) owned by this value; every access
// through it is a single volatile load or store, which is as safe from several threads as the
// device's registers allow. Nothing in it is tied to the creating thread.
unsafe impl Send for RegionMapping {}
// SAFETY: `&RegionMapping` only permits volatile loads and stores (see `Send`).
unsafe impl Sync for RegionMapping {}

impl RegionMapping {
    /// # Safety
    ///
    /// `ptr..ptr + len` must be a live mapping made by `sys::mmap`, owned by the new value.
    pub(crate) unsafe fn new(ptr: NonNull<u8>, len: usize, index: u32, offset: u64) -> Self {
        RegionMapping {
            ptr,
            len,
            index,
            offset,
        }
    }

    /// The host address of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a mapping is at least one page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The region it maps.
    pub fn region_index(&self) -> u32 {
        self.index
    }

    /// The offset within the region where it starts.
    pub fn region_offset(&self) -> u64 {
        self.offset
    }

    fn slot<T>(&self, at: usize) -> Option<*mut T> {
        let size = std::mem::size_of::<T>();
        if !at.is_multiple_of(size) || at.checked_add(size)? > self.len {
            return None;
        }
        // `at + size <= len`, so the result stays inside the mapping.
        Some(self.ptr.as_ptr().wrapping_add(at).cast())
    }

    /// Volatile 32-bit load at byte offset `at`; `None` when out of bounds or misaligned.
    pub fn read_u32(&self, at: usize) -> Option<u32> {
        let p = self.slot::<u32>(at)?;
        // SAFETY: `p` is 4-byte aligned and inside the live mapping (checked by `slot`);
        // a volatile load of device memory creates no reference.
        Some(unsafe { p.read_volatile() })
    }

    /// Volatile 32-bit store at byte offset `at`; false when out of bounds or misaligned.
    pub fn write_u32(&self, at: usize, value: u32) -> bool {
        let Some(p) = self.slot::<u32>(at) else {
            return false;
        };
        // SAFETY: as for `read_u32`.
        unsafe { p.write_volatile(value) };
        true
    }

    /// Volatile 64-bit load at byte offset `at`; `None` when out of bounds or misaligned.
    pub fn read_u64(&self, at: usize) -> Option<u64> {
        let p = self.slot::<u64>(at)?;
        // SAFETY: `p` is 8-byte aligned and inside the live mapping (checked by `slot`).
        Some(unsafe { p.read_volatile() })
    }

    /// Volatile 64-bit store at byte offset `at`; false when out of bounds or misaligned.
    pub fn write_u64(&self, at: usize, value: u64) -> bool {
        let Some(p) = self.slot::<u64>(at) else {
            return false;
        };
        // SAFETY: as for `read_u64`.
        unsafe { p.write_volatile(value) };
        true
    }
}

impl Drop for RegionMapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` is the mapping this value owns (constructor contract), and
        // nothing can use it after drop.
        unsafe { sys::munmap(self.ptr.as_ptr(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(size: u64, flags: u32, caps: Vec<RegionCap>) -> RegionInfo {
        RegionInfo {
            index: 3,
            flags,
            size,
            offset: 0x3_0000_0000_0000,
            caps,
        }
    }

    #[test]
    fn mappable_checks_flags_bounds_and_sparse_areas() {
        let rw_mmap =
            VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE | VFIO_REGION_INFO_FLAG_MMAP;
        let plain = info(0x4000, VFIO_REGION_INFO_FLAG_READ, vec![]);
        assert!(plain.check_mappable(0, 0x1000).is_err());
        let whole = info(0x4000, rw_mmap, vec![]);
        assert!(whole.check_mappable(0, 0x4000).is_ok());
        assert!(whole.check_mappable(0x3000, 0x2000).is_err());
        assert!(whole.check_mappable(u64::MAX, 2).is_err());
        let sparse = info(
            0x4000,
            rw_mmap | VFIO_REGION_INFO_FLAG_CAPS,
            vec![RegionCap::SparseMmap(vec![SparseMmapArea {
                offset: 0x1000,
                size: 0x3000,
            }])],
        );
        assert!(sparse.check_mappable(0x1000, 0x3000).is_ok());
        assert!(sparse.check_mappable(0, 0x1000).is_err());
        assert!(!sparse.msix_mappable());
    }

    #[test]
    fn validate_rejects_areas_outside_the_region() {
        let r = info(
            0x4000,
            VFIO_REGION_INFO_FLAG_MMAP,
            vec![RegionCap::SparseMmap(vec![SparseMmapArea {
                offset: 0x3000,
                size: 0x2000,
            }])],
        );
        assert!(r.validate().is_err());
        let mut ok = r.clone();
        ok.caps = vec![RegionCap::MsixMappable];
        assert!(ok.validate().is_ok());
        assert!(ok.msix_mappable());
        let mut overflow = ok.clone();
        overflow.offset = u64::MAX;
        assert!(overflow.validate().is_err());
    }
}
