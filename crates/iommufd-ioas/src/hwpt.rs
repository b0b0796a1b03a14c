// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Hardware page tables, vIOMMUs and vDEVICEs: the objects a VMM needs for nested
//! translation, each destroyed on drop, each holding its parent so that the kernel's
//! reference order (vDEVICE -> vIOMMU -> nest-parent HWPT -> IOAS) can never be violated from
//! safe code.

use std::sync::Arc;

use iommufd_bindings::iommufd::{
    iommu_hwpt_alloc, iommu_hwpt_data_type_IOMMU_HWPT_DATA_ARM_SMMUV3,
    iommu_hwpt_data_type_IOMMU_HWPT_DATA_NONE,
    iommu_hwpt_invalidate_data_type_IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3, iommu_vdevice_alloc,
    iommu_viommu_alloc, iommu_viommu_type_IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
    iommufd_hwpt_alloc_flags_IOMMU_HWPT_ALLOC_DIRTY_TRACKING,
    iommufd_hwpt_alloc_flags_IOMMU_HWPT_ALLOC_NEST_PARENT,
};

use crate::error::{Error, Result};
use crate::ioas::Ioas;
use crate::iommufd::Iommufd;
use crate::object::{ObjectId, impl_destroy};
use crate::smmuv3::{SmmuV3Command, VSte};
use crate::sys;

/// The most commands one [`Viommu::invalidate`] call hands to the kernel: the kernel takes
/// any number, but its copy is a kernel allocation sized by the batch, so batches are split.
pub const MAX_INVALIDATION_BATCH: usize = 128;

/// Flags of a kernel-managed (paging) HWPT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HwptFlags {
    /// `IOMMU_HWPT_ALLOC_NEST_PARENT`: may serve as the stage-2 parent of nested HWPTs and
    /// vIOMMUs.
    pub nest_parent: bool,
    /// `IOMMU_HWPT_ALLOC_DIRTY_TRACKING`: dirty tracking is enforced on attach.
    pub dirty_tracking: bool,
}

impl HwptFlags {
    fn raw(self) -> u32 {
        let mut f = 0;
        if self.nest_parent {
            f |= iommufd_hwpt_alloc_flags_IOMMU_HWPT_ALLOC_NEST_PARENT;
        }
        if self.dirty_tracking {
            f |= iommufd_hwpt_alloc_flags_IOMMU_HWPT_ALLOC_DIRTY_TRACKING;
        }
        f
    }
}

/// What a [`Hwpt`] hangs from.
#[derive(Debug)]
enum HwptParent {
    /// A paging HWPT built from an IOAS's mappings.
    Ioas(Arc<Ioas>),
    /// A nested (user-managed stage-1) HWPT on a vIOMMU.
    Viommu(Arc<Viommu>),
}

/// A hardware page table (`IOMMU_HWPT_ALLOC`). Destroyed on drop.
#[derive(Debug)]
pub struct Hwpt {
    obj: ObjectId,
    parent: HwptParent,
    flags: u32,
}

impl_destroy!(Hwpt);

impl Hwpt {
    /// Allocates a kernel-managed paging HWPT for device `dev_id` that mirrors `ioas`.
    pub fn alloc_paging(ioas: &Arc<Ioas>, dev_id: u32, flags: HwptFlags) -> Result<Self> {
        let raw_flags = flags.raw();
        let mut arg = iommu_hwpt_alloc {
            size: sys::size_of_u32::<iommu_hwpt_alloc>(),
            flags: raw_flags,
            dev_id,
            pt_id: ioas.id(),
            data_type: iommu_hwpt_data_type_IOMMU_HWPT_DATA_NONE,
            ..Default::default()
        };
        let id =
            sys::hwpt_alloc(ioas.iommufd().raw(), &mut arg).map_err(|errno| Error::HwptAlloc {
                dev_id,
                pt_id: ioas.id(),
                flags: raw_flags,
                errno,
            })?;
        Ok(Hwpt {
            obj: ObjectId::new(ioas.iommufd().clone(), id, "HWPT"),
            parent: HwptParent::Ioas(ioas.clone()),
            flags: raw_flags,
        })
    }

    /// Allocates a nesting-parent (stage-2) HWPT for `dev_id` from `ioas`.
    pub fn alloc_nest_parent(ioas: &Arc<Ioas>, dev_id: u32) -> Result<Self> {
        Self::alloc_paging(
            ioas,
            dev_id,
            HwptFlags {
                nest_parent: true,
                dirty_tracking: false,
            },
        )
    }

    /// Allocates a nested (user-managed stage-1) HWPT on `viommu` for `dev_id`, described by
    /// the driver-specific `data` of type `data_type` (for SMMUv3,
    /// `IOMMU_HWPT_DATA_ARM_SMMUV3` and a `struct iommu_hwpt_arm_smmuv3` holding the guest's
    /// STE).
    pub fn alloc_nested(
        viommu: &Arc<Viommu>,
        dev_id: u32,
        data_type: u32,
        data: &[u8],
    ) -> Result<Self> {
        let data_len = u32::try_from(data.len()).map_err(|_| Error::InvalidArgument {
            op: "IOMMU_HWPT_ALLOC",
            reason: format!("{} bytes of HWPT data", data.len()),
        })?;
        let mut arg = iommu_hwpt_alloc {
            size: sys::size_of_u32::<iommu_hwpt_alloc>(),
            flags: 0,
            dev_id,
            pt_id: viommu.id(),
            data_type,
            data_len,
            data_uptr: data.as_ptr() as u64,
            ..Default::default()
        };
        // The kernel only reads `data_len` bytes at `data_uptr`: `data`, alive for the call.
        let id = sys::hwpt_alloc(viommu.obj.iommufd().raw(), &mut arg).map_err(|errno| {
            Error::HwptAlloc {
                dev_id,
                pt_id: viommu.id(),
                flags: 0,
                errno,
            }
        })?;
        Ok(Hwpt {
            obj: ObjectId::new(viommu.obj.iommufd().clone(), id, "HWPT"),
            parent: HwptParent::Viommu(viommu.clone()),
            flags: 0,
        })
    }

    /// Allocates a nested HWPT on an SMMUv3 `viommu` for `dev_id` from the guest's STE
    /// (`IOMMU_HWPT_DATA_ARM_SMMUV3`). The STE was checked against the kernel's rules when it
    /// was built ([`VSte::from_words`]), so the kernel's `EIO` for a bad STE cannot happen
    /// from a typed one.
    pub fn alloc_nested_smmuv3(viommu: &Arc<Viommu>, dev_id: u32, ste: &VSte) -> Result<Self> {
        Self::alloc_nested(
            viommu,
            dev_id,
            iommu_hwpt_data_type_IOMMU_HWPT_DATA_ARM_SMMUV3,
            &ste.to_le_bytes(),
        )
    }

    /// The HWPT ID, as attach calls take it.
    pub fn id(&self) -> u32 {
        self.obj.id()
    }

    /// The iommufd it lives in.
    pub fn iommufd(&self) -> &Arc<Iommufd> {
        self.obj.iommufd()
    }

    /// Invalidates the caches of a nested (user-managed) HWPT: `IOMMU_HWPT_INVALIDATE` with
    /// `entries` (whole entries of `entry_len` bytes each) of the driver-specific
    /// `data_type` (for example `IOMMU_HWPT_INVALIDATE_DATA_VTD_S1`). SMMUv3 forwards its
    /// invalidations through the vIOMMU instead ([`Viommu::invalidate`]). On failure the
    /// error's `consumed` is the number of entries the kernel handled.
    pub fn invalidate_raw(&self, data_type: u32, entry_len: u32, entries: &[u8]) -> Result<()> {
        const OP: &str = "IOMMU_HWPT_INVALIDATE";
        if entry_len == 0 || !entries.len().is_multiple_of(entry_len as usize) {
            return Err(Error::InvalidArgument {
                op: OP,
                reason: format!(
                    "{} bytes are not whole entries of {entry_len} bytes",
                    entries.len()
                ),
            });
        }
        let count = entries.len() / entry_len as usize;
        if count == 0 {
            return Ok(());
        }
        match sys::hwpt_invalidate(
            self.iommufd().raw(),
            self.id(),
            data_type,
            entry_len,
            entries,
        ) {
            Ok(n) if n as usize == count => Ok(()),
            Ok(n) => Err(Error::KernelReply {
                op: OP,
                reason: format!("handled {n} of {count} entries yet reported success"),
            }),
            Err((errno, consumed)) => Err(Error::HwptInvalidate {
                kind: "HWPT",
                id: self.id(),
                data_type,
                entries: count,
                consumed: consumed as usize,
                errno,
            }),
        }
    }

    /// The ID of what it was allocated from: the IOAS of a paging HWPT, the vIOMMU of a
    /// nested one.
    pub fn parent_id(&self) -> u32 {
        match &self.parent {
            HwptParent::Ioas(ioas) => ioas.id(),
            HwptParent::Viommu(viommu) => viommu.id(),
        }
    }

    /// Whether it was allocated as a nesting parent.
    pub fn is_nest_parent(&self) -> bool {
        self.flags & iommufd_hwpt_alloc_flags_IOMMU_HWPT_ALLOC_NEST_PARENT != 0
    }
}

/// The type of a vIOMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViommuType {
    /// `IOMMU_VIOMMU_TYPE_ARM_SMMUV3`.
    ArmSmmuV3,
    /// Another type number, passed through.
    Other(u32),
}

impl ViommuType {
    fn raw(self) -> u32 {
        match self {
            ViommuType::ArmSmmuV3 => iommu_viommu_type_IOMMU_VIOMMU_TYPE_ARM_SMMUV3,
            ViommuType::Other(t) => t,
        }
    }
}

/// A vIOMMU (`IOMMU_VIOMMU_ALLOC`) on a nesting-parent HWPT. Destroyed on drop.
#[derive(Debug)]
pub struct Viommu {
    obj: ObjectId,
    _parent: Arc<Hwpt>,
}

impl_destroy!(Viommu);

impl Viommu {
    /// Allocates a vIOMMU of `viommu_type` for `dev_id` on the nesting parent `parent`.
    pub fn alloc(parent: &Arc<Hwpt>, dev_id: u32, viommu_type: ViommuType) -> Result<Self> {
        if !parent.is_nest_parent() {
            return Err(Error::InvalidArgument {
                op: "IOMMU_VIOMMU_ALLOC",
                reason: format!("HWPT {} is not a nesting parent", parent.id()),
            });
        }
        let mut arg = iommu_viommu_alloc {
            size: sys::size_of_u32::<iommu_viommu_alloc>(),
            type_: viommu_type.raw(),
            dev_id,
            hwpt_id: parent.id(),
            ..Default::default()
        };
        let id = sys::viommu_alloc(parent.obj.iommufd().raw(), &mut arg).map_err(|errno| {
            Error::ViommuAlloc {
                dev_id,
                hwpt_id: parent.id(),
                viommu_type: viommu_type.raw(),
                errno,
            }
        })?;
        Ok(Viommu {
            obj: ObjectId::new(parent.obj.iommufd().clone(), id, "vIOMMU"),
            _parent: parent.clone(),
        })
    }

    /// The vIOMMU ID.
    pub fn id(&self) -> u32 {
        self.obj.id()
    }

    /// The iommufd it lives in.
    pub fn iommufd(&self) -> &Arc<Iommufd> {
        self.obj.iommufd()
    }

    /// Forwards the guest's invalidation commands to the SMMU through this vIOMMU
    /// (`IOMMU_HWPT_INVALIDATE` with `IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3`), in batches
    /// of at most [`MAX_INVALIDATION_BATCH`], in order. Returns when every command was
    /// handled; the kernel issues its own `CMD_SYNC` after each batch, so a guest's
    /// `CMD_SYNC` can complete once this returns. An empty `cmds` issues nothing (Linux 7.2's
    /// SMMUv3 driver answers `EINVAL` to an empty array, although the UAPI describes it as a
    /// support check).
    ///
    /// A command the kernel does not forward is refused before any call
    /// ([`Error::InvalidArgument`] naming its index). A kernel failure is
    /// [`Error::HwptInvalidate`] whose `consumed` counts the commands of `cmds` handled
    /// before the failing one (for example `EIO` for a `CFGI_CD` naming a virtual StreamID
    /// that has no vDEVICE).
    pub fn invalidate(&self, cmds: &[SmmuV3Command]) -> Result<()> {
        const OP: &str = "IOMMU_HWPT_INVALIDATE";
        if let Some((i, c)) = cmds
            .iter()
            .enumerate()
            .find(|(_, c)| !crate::smmuv3::is_forwarded(c.opcode()))
        {
            return Err(Error::InvalidArgument {
                op: OP,
                reason: format!(
                    "command {i} (opcode {:#04x}) is not one a vIOMMU forwards",
                    c.opcode()
                ),
            });
        }
        if cmds.is_empty() {
            return Ok(());
        }
        let data_type = iommu_hwpt_invalidate_data_type_IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3;
        let mut buf = Vec::with_capacity(16 * cmds.len().min(MAX_INVALIDATION_BATCH));
        for (batch_no, batch) in cmds.chunks(MAX_INVALIDATION_BATCH).enumerate() {
            buf.clear();
            for c in batch {
                buf.extend_from_slice(&c.to_le_bytes());
            }
            let done_before = batch_no * MAX_INVALIDATION_BATCH;
            match sys::hwpt_invalidate(self.iommufd().raw(), self.id(), data_type, 16, &buf) {
                Ok(n) if n as usize == batch.len() => {}
                Ok(n) => {
                    return Err(Error::KernelReply {
                        op: OP,
                        reason: format!(
                            "handled {n} of {} commands yet reported success",
                            batch.len()
                        ),
                    });
                }
                Err((errno, consumed)) => {
                    return Err(Error::HwptInvalidate {
                        kind: "vIOMMU",
                        id: self.id(),
                        data_type,
                        entries: cmds.len(),
                        consumed: done_before + consumed as usize,
                        errno,
                    });
                }
            }
        }
        Ok(())
    }
}

/// A vDEVICE (`IOMMU_VDEVICE_ALLOC`): a device's guest-visible ID on a vIOMMU (for SMMUv3,
/// the virtual StreamID). Destroyed on drop.
#[derive(Debug)]
pub struct Vdevice {
    obj: ObjectId,
    _viommu: Arc<Viommu>,
    virt_id: u64,
}

impl_destroy!(Vdevice);

impl Vdevice {
    /// Allocates a vDEVICE for `dev_id` with guest-visible ID `virt_id` on `viommu`.
    pub fn alloc(viommu: &Arc<Viommu>, dev_id: u32, virt_id: u64) -> Result<Self> {
        let mut arg = iommu_vdevice_alloc {
            size: sys::size_of_u32::<iommu_vdevice_alloc>(),
            viommu_id: viommu.id(),
            dev_id,
            virt_id,
            ..Default::default()
        };
        let id = sys::vdevice_alloc(viommu.obj.iommufd().raw(), &mut arg).map_err(|errno| {
            Error::VdeviceAlloc {
                viommu_id: viommu.id(),
                dev_id,
                virt_id,
                errno,
            }
        })?;
        Ok(Vdevice {
            obj: ObjectId::new(viommu.obj.iommufd().clone(), id, "vDEVICE"),
            _viommu: viommu.clone(),
            virt_id,
        })
    }

    /// The vDEVICE object ID.
    pub fn id(&self) -> u32 {
        self.obj.id()
    }

    /// The guest-visible ID.
    pub fn virt_id(&self) -> u64 {
        self.virt_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A view of an IOAS owned elsewhere is never destroyed from here: an explicit destroy
    /// is refused before any ioctl, and dropping it issues none (the descriptor here is not
    /// even an iommufd, so any ioctl would fail loudly).
    #[test]
    fn views_destroy_nothing() {
        let not_iommufd = std::fs::File::open("/dev/null").unwrap();
        let fd = Iommufd::from_file(not_iommufd);
        let view = fd.ioas_view(7);
        assert!(!view.is_owned());
        assert_eq!(view.id(), 7);
        let e = view.destroy().unwrap_err();
        assert!(
            matches!(e.error, Error::InvalidArgument { .. }),
            "{}",
            e.error
        );
        assert!(e.error.to_string().contains("owned elsewhere"));
        drop(e.object);
        let shared = fd.shared_iommufd_ioctls();
        let adopted = Iommufd::from_iommufd_ioctls(shared.clone());
        assert!(Arc::ptr_eq(&shared, &adopted.shared_iommufd_ioctls()));
    }

    #[test]
    fn flag_bits_match_uapi() {
        assert_eq!(HwptFlags::default().raw(), 0);
        assert_eq!(
            HwptFlags {
                nest_parent: true,
                dirty_tracking: false
            }
            .raw(),
            1
        );
        assert_eq!(
            HwptFlags {
                nest_parent: true,
                dirty_tracking: true
            }
            .raw(),
            3
        );
        assert_eq!(ViommuType::ArmSmmuV3.raw(), 1);
    }
}
