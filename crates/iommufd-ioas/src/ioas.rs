// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`Ioas`]: an IO address space, and the map, unmap, copy and range calls on it.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;

use iommufd_bindings::iommufd::{
    iommu_ioas_copy, iommu_ioas_map, iommu_ioas_map_file, iommu_iova_range,
    iommufd_ioas_map_flags_IOMMU_IOAS_MAP_FIXED_IOVA,
    iommufd_ioas_map_flags_IOMMU_IOAS_MAP_READABLE,
    iommufd_ioas_map_flags_IOMMU_IOAS_MAP_WRITEABLE,
};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use crate::error::{Error, Result};
use crate::iommufd::Iommufd;
use crate::iova::{IovaRange, IovaRanges};
use crate::object::{ObjectId, impl_destroy};
use crate::option::IommuOption;
use crate::sys;

/// DMA access a mapping grants to devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Devices may read (`IOMMU_IOAS_MAP_READABLE`).
    pub read: bool,
    /// Devices may write (`IOMMU_IOAS_MAP_WRITEABLE`).
    pub write: bool,
}

impl Access {
    /// Read-only for devices.
    pub const READ: Access = Access {
        read: true,
        write: false,
    };
    /// Read and write, what guest RAM needs.
    pub const READ_WRITE: Access = Access {
        read: true,
        write: true,
    };

    fn flags(self) -> u32 {
        let mut f = 0;
        if self.read {
            f |= iommufd_ioas_map_flags_IOMMU_IOAS_MAP_READABLE;
        }
        if self.write {
            f |= iommufd_ioas_map_flags_IOMMU_IOAS_MAP_WRITEABLE;
        }
        f
    }
}

/// Where a mapping goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapTarget {
    /// At this IOVA (`IOMMU_IOAS_MAP_FIXED_IOVA`); the range must be unused and allowed.
    Fixed(u64),
    /// Wherever the kernel finds room in the allowed ranges.
    Auto,
}

impl MapTarget {
    fn iova(self) -> Option<u64> {
        match self {
            MapTarget::Fixed(iova) => Some(iova),
            MapTarget::Auto => None,
        }
    }

    fn flags(self) -> u32 {
        match self {
            MapTarget::Fixed(_) => iommufd_ioas_map_flags_IOMMU_IOAS_MAP_FIXED_IOVA,
            MapTarget::Auto => 0,
        }
    }
}

/// The most ranges accepted from `IOMMU_IOAS_IOVA_RANGES`. Real IOMMUs report a handful; the
/// cap keeps a broken reply from sizing a host allocation.
pub const MAX_IOVA_RANGES: u32 = 4096;

/// An IO address space: the IOVA-to-memory mapping that devices attached to it (directly or
/// through a [`crate::Hwpt`]) see. Destroyed on drop.
///
/// # Examples
///
/// ```no_run
/// use iommufd_ioas::{Access, Iommufd};
/// use vm_memory::{GuestAddress, GuestMemoryMmap};
///
/// let iommufd = Iommufd::open()?;
/// let ioas = iommufd.alloc_ioas()?;
/// let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x4000_0000), 0x1000_0000)])
///     .expect("guest memory");
/// // Map all of guest RAM at IOVA = GPA, as a VMM does for a passed-through device.
/// ioas.map_guest_memory(&mem, Access::READ_WRITE)?;
/// for hole in ioas.iova_ranges()?.holes() {
///     println!("reserved: {hole}");
/// }
/// # Ok::<(), iommufd_ioas::Error>(())
/// ```
#[derive(Debug)]
pub struct Ioas {
    obj: ObjectId,
}

impl_destroy!(Ioas);

impl Ioas {
    pub(crate) fn from_id(iommufd: Arc<Iommufd>, id: u32) -> Self {
        Ioas {
            obj: ObjectId::new(iommufd, id, "IOAS"),
        }
    }

    pub(crate) fn view(iommufd: Arc<Iommufd>, id: u32) -> Self {
        Ioas {
            obj: ObjectId::view(iommufd, id, "IOAS"),
        }
    }

    /// Whether this process owns the IOAS (allocated it here) rather than viewing one the
    /// VMM owns ([`Iommufd::ioas_view`]).
    pub fn is_owned(&self) -> bool {
        self.obj.owned()
    }

    /// The IOAS ID, as attach calls take it.
    pub fn id(&self) -> u32 {
        self.obj.id()
    }

    /// The iommufd it belongs to.
    pub fn iommufd(&self) -> &Arc<Iommufd> {
        self.obj.iommufd()
    }

    fn check_len(op: &'static str, iova: Option<u64>, length: u64) -> Result<()> {
        if length == 0 {
            return Err(Error::InvalidArgument {
                op,
                reason: "length is 0".to_string(),
            });
        }
        if let Some(iova) = iova
            && IovaRange::from_len(iova, length).is_none()
        {
            return Err(Error::InvalidArgument {
                op,
                reason: format!("{iova:#x}+{length:#x} overflows the IOVA space"),
            });
        }
        Ok(())
    }

    /// Maps `length` bytes of this process's memory at `user_va` (`IOMMU_IOAS_MAP`); returns
    /// the IOVA.
    ///
    /// # Safety
    ///
    /// The kernel pins the pages and lets devices read (and, with [`Access::write`], write)
    /// them by DMA at any time until they are unmapped. So for as long as the mapping exists,
    /// no Rust reference (`&`/`&mut`) to any byte of `user_va..user_va + length` may be live
    /// or created: the memory may only be accessed through raw pointers with volatile or
    /// atomic operations, shared with a guest or another process, or passed to system calls.
    /// Memory that is not yet mapped in the process makes the kernel fail the call; it is not
    /// undefined behaviour.
    pub unsafe fn map_user(
        &self,
        user_va: *mut u8,
        length: u64,
        target: MapTarget,
        access: Access,
    ) -> Result<u64> {
        const OP: &str = "IOMMU_IOAS_MAP";
        Self::check_len(OP, target.iova(), length)?;
        let mut arg = iommu_ioas_map {
            size: sys::size_of_u32::<iommu_ioas_map>(),
            flags: target.flags() | access.flags(),
            ioas_id: self.id(),
            __reserved: 0,
            user_va: user_va as u64,
            length,
            iova: target.iova().unwrap_or(0),
        };
        // SAFETY: the caller upholds the contract stated above, which is exactly what
        // `sys::ioas_map` requires of `user_va..user_va + length`.
        unsafe { sys::ioas_map(self.iommufd().raw(), &mut arg) }.map_err(|errno| Error::IoasMap {
            ioas: self.id(),
            iova: target.iova(),
            length,
            errno,
        })
    }

    /// Maps one guest memory region at IOVA = its guest physical address, as a VMM does for
    /// a device assigned to a guest without a vIOMMU. Returns the IOVA range mapped.
    ///
    /// This is safe: guest memory is only ever accessed through volatile accessors
    /// (`vm-memory`'s contract), so device DMA into it is no different from the guest writing
    /// it; and the kernel pins the pages, so even if the region is dropped while mapped, DMA
    /// lands in the pinned pages, never in whatever reuses the addresses.
    pub fn map_guest_region<R: GuestMemoryRegion>(
        &self,
        region: &R,
        access: Access,
    ) -> Result<IovaRange> {
        let gpa = region.start_addr().raw_value();
        let length = region.len();
        let host = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|source| Error::HostAddress {
                gpa,
                length,
                source,
            })?;
        // SAFETY: `host..host + length` is the mapping of a guest memory region, which
        // `vm-memory` only accesses through volatile operations and never through Rust
        // references to its bytes; device DMA into it therefore cannot alias a live
        // reference. The kernel pins the pages, so the mapping outliving `region` cannot
        // redirect DMA into other memory of this process.
        unsafe { self.map_user(host, length, MapTarget::Fixed(gpa), access) }?;
        // `map_user` checked that `gpa + length` does not overflow.
        IovaRange::from_len(gpa, length).ok_or_else(|| Error::InvalidArgument {
            op: "IOMMU_IOAS_MAP",
            reason: format!("{gpa:#x}+{length:#x} overflows the IOVA space"),
        })
    }

    /// Maps every region of `mem` at IOVA = GPA. On failure, the regions mapped so far are
    /// unmapped again before the error is returned, so the IOAS is left as it was.
    pub fn map_guest_memory<M: GuestMemoryBackend>(
        &self,
        mem: &M,
        access: Access,
    ) -> Result<Vec<IovaRange>> {
        let mut done: Vec<IovaRange> = Vec::new();
        for region in mem.iter() {
            match self.map_guest_region(region, access) {
                Ok(r) => done.push(r),
                Err(e) => {
                    for r in done.iter().rev() {
                        let len = r.last - r.start + 1;
                        if let Err(undo) = self.unmap(r.start, len) {
                            log::error!("rollback after failed map: {undo}");
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    /// Maps `length` bytes of `file` starting at `file_offset` (`IOMMU_IOAS_MAP_FILE`, Linux
    /// 6.13+), typically a memfd backing guest RAM; returns the IOVA. No memory of this
    /// process is involved, so this is safe.
    pub fn map_file(
        &self,
        file: BorrowedFd<'_>,
        file_offset: u64,
        length: u64,
        target: MapTarget,
        access: Access,
    ) -> Result<u64> {
        const OP: &str = "IOMMU_IOAS_MAP_FILE";
        Self::check_len(OP, target.iova(), length)?;
        let fd = file.as_raw_fd();
        let mut arg = iommu_ioas_map_file {
            size: sys::size_of_u32::<iommu_ioas_map_file>(),
            flags: target.flags() | access.flags(),
            ioas_id: self.id(),
            fd,
            start: file_offset,
            length,
            iova: target.iova().unwrap_or(0),
        };
        sys::ioas_map_file(self.iommufd().raw(), &mut arg).map_err(|errno| Error::IoasMapFile {
            ioas: self.id(),
            fd,
            offset: file_offset,
            iova: target.iova(),
            length,
            errno,
        })
    }

    /// Unmaps `iova..iova + length` (`IOMMU_IOAS_UNMAP`); returns the bytes unmapped. The
    /// range must cover whole earlier mappings (the kernel refuses to split one, `ENOENT`
    /// when nothing is mapped there).
    pub fn unmap(&self, iova: u64, length: u64) -> Result<u64> {
        Self::check_len("IOMMU_IOAS_UNMAP", Some(iova), length)?;
        sys::ioas_unmap(self.iommufd().raw(), self.id(), iova, length).map_err(|errno| {
            Error::IoasUnmap {
                ioas: self.id(),
                iova,
                length,
                errno,
            }
        })
    }

    /// Unmaps everything (`IOMMU_IOAS_UNMAP` of 0 and `u64::MAX`, the uapi's "all");
    /// returns the bytes unmapped.
    pub fn unmap_all(&self) -> Result<u64> {
        sys::ioas_unmap(self.iommufd().raw(), self.id(), 0, u64::MAX).map_err(|errno| {
            Error::IoasUnmap {
                ioas: self.id(),
                iova: 0,
                length: u64::MAX,
                errno,
            }
        })
    }

    /// Copies the mapping `src_iova..src_iova + length` of `src` into this IOAS
    /// (`IOMMU_IOAS_COPY`) without pinning the pages again; returns the destination IOVA. The
    /// source range must be fully mapped in `src` (the uapi header says it must match one
    /// map exactly; Linux 7.2 also accepts a part of one, as the kernel tests show).
    pub fn copy_from(
        &self,
        src: &Ioas,
        src_iova: u64,
        length: u64,
        target: MapTarget,
        access: Access,
    ) -> Result<u64> {
        const OP: &str = "IOMMU_IOAS_COPY";
        Self::check_len(OP, Some(src_iova), length)?;
        Self::check_len(OP, target.iova(), length)?;
        let mut arg = iommu_ioas_copy {
            size: sys::size_of_u32::<iommu_ioas_copy>(),
            flags: target.flags() | access.flags(),
            dst_ioas_id: self.id(),
            src_ioas_id: src.id(),
            length,
            dst_iova: target.iova().unwrap_or(0),
            src_iova,
        };
        sys::ioas_copy(self.iommufd().raw(), &mut arg).map_err(|errno| Error::IoasCopy {
            src_ioas: src.id(),
            dst_ioas: self.id(),
            src_iova,
            dst_iova: target.iova(),
            length,
            errno,
        })
    }

    /// The IOVA ranges mappings may use now (`IOMMU_IOAS_IOVA_RANGES`). Query again after
    /// every attach and detach: attached devices narrow them.
    pub fn iova_ranges(&self) -> Result<IovaRanges> {
        const OP: &str = "IOMMU_IOAS_IOVA_RANGES";
        let mut capacity: u32 = 8;
        // The list can change between calls if a device is attached concurrently; a few
        // rounds settle it, and more is a broken kernel.
        for _ in 0..4 {
            let mut buf = vec![iommu_iova_range::default(); capacity as usize];
            match sys::ioas_iova_ranges(self.iommufd().raw(), self.id(), &mut buf) {
                Ok((n, alignment)) => {
                    let Some(filled) = buf.get(..n as usize) else {
                        return Err(Error::KernelReply {
                            op: OP,
                            reason: format!(
                                "reported {n} ranges into room for {capacity} without EMSGSIZE"
                            ),
                        });
                    };
                    let pairs: Vec<(u64, u64)> = filled.iter().map(|r| (r.start, r.last)).collect();
                    return crate::iova::from_kernel(&pairs, alignment);
                }
                Err((errno, needed)) if errno.raw() == libc::EMSGSIZE => {
                    if needed > MAX_IOVA_RANGES {
                        return Err(Error::KernelReply {
                            op: OP,
                            reason: format!(
                                "{needed} ranges exceed the limit of {MAX_IOVA_RANGES}"
                            ),
                        });
                    }
                    if needed <= capacity {
                        return Err(Error::KernelReply {
                            op: OP,
                            reason: format!(
                                "EMSGSIZE asking for {needed} ranges with room for {capacity}"
                            ),
                        });
                    }
                    capacity = needed;
                }
                Err((errno, _)) => {
                    return Err(Error::IovaRanges {
                        ioas: self.id(),
                        errno,
                    });
                }
            }
        }
        Err(Error::KernelReply {
            op: OP,
            reason: "the range count kept changing".to_string(),
        })
    }

    /// Replaces the list of IOVA ranges that must stay available (`IOMMU_IOAS_ALLOW_IOVAS`):
    /// attaching a device that would reserve any of them then fails. Fails itself when the
    /// current ranges are already narrower. An empty list clears the requirement.
    pub fn allow_iovas(&self, ranges: &[IovaRange]) -> Result<()> {
        let raw: Vec<iommu_iova_range> = ranges
            .iter()
            .map(|r| iommu_iova_range {
                start: r.start,
                last: r.last,
            })
            .collect();
        sys::ioas_allow_iovas(self.iommufd().raw(), self.id(), &raw).map_err(|errno| {
            Error::AllowIovas {
                ioas: self.id(),
                count: ranges.len(),
                errno,
            }
        })
    }

    /// Whether contiguous pages may be combined into large IOMMU mappings
    /// (`IOMMU_OPTION_HUGE_PAGES` of this IOAS).
    pub fn huge_pages(&self) -> Result<bool> {
        Ok(self
            .iommufd()
            .get_option(IommuOption::HugePages, self.id())?
            != 0)
    }

    /// Sets `IOMMU_OPTION_HUGE_PAGES` of this IOAS; only allowed while nothing is mapped.
    pub fn set_huge_pages(&self, enable: bool) -> Result<()> {
        self.iommufd()
            .set_option(IommuOption::HugePages, self.id(), u64::from(enable))
    }
}
