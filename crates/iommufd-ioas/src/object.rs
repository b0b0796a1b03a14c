// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The RAII core shared by every iommufd object: an ID that is destroyed exactly once.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::iommufd::Iommufd;
use crate::sys;

/// An iommufd object ID owned by this process. Dropping it issues `IOMMU_DESTROY`; a failure
/// there is logged, because `Drop` cannot return it. Callers that want the error use
/// [`ObjectId::destroy`].
#[derive(Debug)]
pub(crate) struct ObjectId {
    iommufd: Arc<Iommufd>,
    id: u32,
    kind: &'static str,
    live: bool,
    /// Owned objects are destroyed by this process; views of objects someone else owns
    /// are not.
    owned: bool,
}

impl ObjectId {
    pub(crate) fn new(iommufd: Arc<Iommufd>, id: u32, kind: &'static str) -> Self {
        ObjectId {
            iommufd,
            id,
            kind,
            live: true,
            owned: true,
        }
    }

    /// An object owned elsewhere: never destroyed from here.
    pub(crate) fn view(iommufd: Arc<Iommufd>, id: u32, kind: &'static str) -> Self {
        ObjectId {
            iommufd,
            id,
            kind,
            live: false,
            owned: false,
        }
    }

    pub(crate) fn owned(&self) -> bool {
        self.owned
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    pub(crate) fn iommufd(&self) -> &Arc<Iommufd> {
        &self.iommufd
    }

    /// Destroys the object now. On failure the object stays alive (and owned), so it can be
    /// retried once whatever holds it (`EBUSY`) is gone.
    pub(crate) fn destroy(&mut self) -> Result<()> {
        if !self.owned {
            return Err(Error::InvalidArgument {
                op: "IOMMU_DESTROY",
                reason: format!(
                    "{} {} is a view of an object owned elsewhere",
                    self.kind, self.id
                ),
            });
        }
        if !self.live {
            return Ok(());
        }
        sys::destroy(self.iommufd.raw(), self.id).map_err(|errno| Error::Destroy {
            kind: self.kind,
            id: self.id,
            errno,
        })?;
        self.live = false;
        Ok(())
    }
}

impl Drop for ObjectId {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        if let Err(e) = self.destroy() {
            log::error!("{e}");
        }
    }
}

/// Generates the explicit `destroy` of an object type: it consumes the object, and hands it
/// back inside the error when the kernel refuses (for example `EBUSY` while a device is still
/// attached), so nothing leaks and the caller can retry.
macro_rules! impl_destroy {
    ($ty:ident) => {
        impl $ty {
            /// Destroys the kernel object now (`IOMMU_DESTROY`), reporting failure; dropping
            /// does the same but can only log. On failure the object is returned with the
            /// error, still alive.
            pub fn destroy(mut self) -> std::result::Result<(), crate::DestroyError<$ty>> {
                match self.obj.destroy() {
                    Ok(()) => Ok(()),
                    Err(error) => Err(crate::DestroyError {
                        object: self,
                        error,
                    }),
                }
            }
        }
    };
}
pub(crate) use impl_destroy;

/// A refused `destroy`: the error and the object, still alive.
#[derive(Debug)]
pub struct DestroyError<T> {
    /// The object that could not be destroyed.
    pub object: T,
    /// Why.
    pub error: Error,
}

impl<T: std::fmt::Debug> std::fmt::Display for DestroyError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl<T: std::fmt::Debug> std::error::Error for DestroyError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
