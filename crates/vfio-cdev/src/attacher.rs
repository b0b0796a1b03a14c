// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`Attacher`]: moving a bound device between page tables from another part of the VMM.
//!
//! A VMM with a virtual IOMMU changes a device's page table whenever the guest changes the
//! device's Stream Table Entry: the vIOMMU emulation allocates a nested HWPT from the new STE
//! and replaces the device's attachment with it. That code does not own the [`VfioDevice`]
//! (the passthrough device model does, and holds it behind its own lock), so it gets an
//! `Attacher`: a second descriptor of the same open file (`dup`), which shares the file's
//! iommufd binding, and can attach (replace) and detach through `&self`.

use std::fs::File;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex, PoisonError};

use iommufd_ioas::{Hwpt, Ioas, Iommufd};

use crate::error::{Error, Result};
use crate::sys;

/// What an [`Attacher`] attached the device to last, kept alive while attached.
#[derive(Debug, Clone)]
pub enum AttachedTo {
    /// An IOAS (the kernel chose or made the HWPT).
    Ioas(Arc<Ioas>),
    /// An explicit HWPT (paging, nest parent, or nested).
    Hwpt(Arc<Hwpt>),
}

impl AttachedTo {
    /// The IOAS or HWPT ID.
    pub fn id(&self) -> u32 {
        match self {
            AttachedTo::Ioas(i) => i.id(),
            AttachedTo::Hwpt(h) => h.id(),
        }
    }
}

/// Attaches a bound device to page tables through its own descriptor of the device's file.
///
/// The kernel binds an open *file* to an iommufd, so a duplicated descriptor is the same
/// bound device. Replacing the attachment is one `VFIO_DEVICE_ATTACH_IOMMUFD_PT`; the
/// attacher keeps the page table it attached last alive until it is replaced or detached. On
/// drop, an attacher that attached something detaches the device first, so that the page
/// table it holds can then be destroyed (the kernel refuses to destroy an attached HWPT).
#[derive(Debug)]
pub struct Attacher {
    file: File,
    name: String,
    iommufd: Arc<Iommufd>,
    current: Mutex<Option<AttachedTo>>,
}

impl Attacher {
    pub(crate) fn new(file: File, name: String, iommufd: Arc<Iommufd>) -> Self {
        Attacher {
            file,
            name,
            iommufd,
            current: Mutex::new(None),
        }
    }

    fn attach(&self, to: AttachedTo, owner: &Arc<Iommufd>) -> Result<u32> {
        const OP: &str = "VFIO_DEVICE_ATTACH_IOMMUFD_PT";
        let pt_id = to.id();
        if !Arc::ptr_eq(&self.iommufd, owner) {
            return Err(Error::ForeignIommufd {
                op: OP,
                device: self.name.clone(),
                pt_id,
            });
        }
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let attached = sys::attach_pt(self.file.as_fd(), pt_id).map_err(|errno| Error::Attach {
            device: self.name.clone(),
            pt_id,
            errno,
        })?;
        // The kernel replaced the old page table; the old one may go now.
        *current = Some(to);
        Ok(attached)
    }

    /// Attaches (or, when attached, replaces the attachment with) `hwpt`, which must belong
    /// to the device's iommufd. Returns the ID the kernel attached.
    pub fn attach_hwpt(&self, hwpt: &Arc<Hwpt>) -> Result<u32> {
        self.attach(AttachedTo::Hwpt(hwpt.clone()), hwpt.iommufd())
    }

    /// Attaches (or replaces the attachment with) `ioas`.
    pub fn attach_ioas(&self, ioas: &Arc<Ioas>) -> Result<u32> {
        self.attach(AttachedTo::Ioas(ioas.clone()), ioas.iommufd())
    }

    /// The ID of what this attacher attached last (`None` before its first attach or after
    /// a detach).
    pub fn attached_to(&self) -> Option<u32> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(AttachedTo::id)
    }

    /// Detaches the device (`VFIO_DEVICE_DETACH_IOMMUFD_PT`) and releases what it held.
    pub fn detach(&self) -> Result<()> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        sys::detach_pt(self.file.as_fd()).map_err(|errno| Error::Detach {
            device: self.name.clone(),
            errno,
        })?;
        *current = None;
        Ok(())
    }
}

impl Drop for Attacher {
    fn drop(&mut self) {
        let current = self
            .current
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if current.is_some() {
            if let Err(errno) = sys::detach_pt(self.file.as_fd()) {
                log::error!(
                    "VFIO_DEVICE_DETACH_IOMMUFD_PT of {} at teardown failed: {errno}",
                    self.name
                );
            }
            *current = None;
        }
    }
}
