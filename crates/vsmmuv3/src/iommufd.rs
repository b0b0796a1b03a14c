// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The accelerated backend (feature `iommufd`): [`SmmuBackend`] over Linux's iommufd nesting
//! API through the `iommufd-ioas` crate.
//!
//! | model call | kernel |
//! |---|---|
//! | [`SmmuBackend::install_ste`] | `IOMMU_HWPT_ALLOC` of a nested HWPT on the vIOMMU from the vSTE ([`iommufd_ioas::Hwpt::alloc_nested_smmuv3`]), then the stream's device is attached to it (a replace when attached), then the stream's previous nested HWPT is destroyed |
//! | [`SmmuBackend::invalidate`] | `IOMMU_HWPT_INVALIDATE` on the vIOMMU ([`iommufd_ioas::Viommu::invalidate`]); the kernel issues its own `CMD_SYNC`, so a guest `CMD_SYNC` completes once it returned |
//!
//! Attaching a device is the VMM's VFIO business, so each host stream comes with an
//! [`AttachFn`] (for example a closure over `vfio_cdev::Attacher::attach_hwpt`); the backend
//! holds the nested HWPT the stream is attached to until the next install replaces it.
//! Nested HWPTs are cached per stream by vSTE, so the abort and bypass HWPTs a guest toggles
//! between at bring-up are allocated once.

use std::collections::BTreeMap;
use std::sync::Arc;

use iommufd_ioas::smmuv3::SmmuV3Command;
use iommufd_ioas::{Hwpt, Viommu};

use crate::backend::{BackendError, GuestSte, InvalidateError, SmmuBackend, VSte};
use crate::cmd::RawCommand;

/// Attaches a stream's device to a nested HWPT (replacing its current page table).
pub type AttachFn = Box<dyn FnMut(&Arc<Hwpt>) -> Result<(), String> + Send>;

/// Nested HWPTs a stream keeps, by vSTE (the guest usually has one stage-1 STE per device,
/// plus abort and bypass at bring-up and teardown).
const MAX_CACHED_PER_STREAM: usize = 4;

struct HostStream {
    dev_id: u32,
    attach: AttachFn,
    /// The vSTE and HWPT the device is attached to now.
    current: Option<(VSte, Arc<Hwpt>)>,
    /// Recently used nested HWPTs, most recent last.
    cache: Vec<(VSte, Arc<Hwpt>)>,
}

/// Counters of what the backend did, for a VMM's report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct IommufdStats {
    /// Nested HWPTs allocated.
    pub hwpts_allocated: u64,
    /// Installs that reused a cached nested HWPT.
    pub hwpts_reused: u64,
    /// Attaches (replaces) of a device.
    pub attaches: u64,
    /// `IOMMU_HWPT_INVALIDATE` calls that succeeded.
    pub invalidation_calls: u64,
    /// Commands forwarded.
    pub commands: u64,
    /// Failed kernel calls.
    pub failures: u64,
}

/// [`SmmuBackend`] on an iommufd vIOMMU.
pub struct IommufdBackend {
    viommu: Arc<Viommu>,
    streams: BTreeMap<u32, HostStream>,
    stats: IommufdStats,
}

impl std::fmt::Debug for IommufdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IommufdBackend")
            .field("viommu", &self.viommu.id())
            .field("streams", &self.streams.keys().collect::<Vec<_>>())
            .field("stats", &self.stats)
            .finish()
    }
}

fn kernel_error(what: String, e: &iommufd_ioas::Error) -> BackendError {
    BackendError {
        errno: e.errno().map(|e| e.raw()),
        message: format!("{what}: {e}"),
    }
}

impl IommufdBackend {
    /// A backend on `viommu` with no streams yet.
    pub fn new(viommu: Arc<Viommu>) -> Self {
        IommufdBackend {
            viommu,
            streams: BTreeMap::new(),
            stats: IommufdStats::default(),
        }
    }

    /// Declares stream `vsid` (the virt_id of the device's vDEVICE on this vIOMMU): its
    /// iommufd device ID and how to attach it. Declare the same stream to the model with
    /// [`VSmmu::add_host_stream`](crate::VSmmu::add_host_stream), which installs its first
    /// STE.
    pub fn add_stream(&mut self, vsid: u32, dev_id: u32, attach: AttachFn) {
        self.streams.insert(
            vsid,
            HostStream {
                dev_id,
                attach,
                current: None,
                cache: Vec::new(),
            },
        );
    }

    /// Forgets stream `vsid` and releases its nested HWPTs (the VMM detaches or closes the
    /// device first: the kernel refuses to destroy an attached HWPT).
    pub fn remove_stream(&mut self, vsid: u32) {
        self.streams.remove(&vsid);
    }

    /// The nested HWPT stream `vsid` is attached to.
    pub fn current_hwpt(&self, vsid: u32) -> Option<u32> {
        self.streams
            .get(&vsid)
            .and_then(|s| s.current.as_ref())
            .map(|(_, h)| h.id())
    }

    /// What the backend did so far.
    pub fn stats(&self) -> IommufdStats {
        self.stats
    }

    /// The vIOMMU.
    pub fn viommu(&self) -> &Arc<Viommu> {
        &self.viommu
    }
}

impl SmmuBackend for IommufdBackend {
    fn install_ste(&mut self, stream_id: u32, ste: &GuestSte) -> Result<(), BackendError> {
        let vste = ste.vste();
        let Some(stream) = self.streams.get_mut(&stream_id) else {
            self.stats.failures += 1;
            return Err(BackendError {
                errno: None,
                message: format!("stream {stream_id:#x} has no device on this vIOMMU"),
            });
        };
        if stream.current.as_ref().is_some_and(|(v, _)| *v == vste) {
            return Ok(());
        }
        let hwpt = match stream.cache.iter().position(|(v, _)| *v == vste) {
            Some(i) => {
                self.stats.hwpts_reused += 1;
                stream.cache.remove(i).1
            }
            None => {
                let typed = iommufd_ioas::smmuv3::VSte::from_words(vste.0).map_err(|e| {
                    self.stats.failures += 1;
                    BackendError {
                        errno: None,
                        message: format!("vSTE {:#x?} of stream {stream_id:#x}: {e}", vste.0),
                    }
                })?;
                let hwpt = Hwpt::alloc_nested_smmuv3(&self.viommu, stream.dev_id, &typed).map_err(
                    |e| {
                        self.stats.failures += 1;
                        kernel_error(format!("nested HWPT for stream {stream_id:#x}"), &e)
                    },
                )?;
                self.stats.hwpts_allocated += 1;
                Arc::new(hwpt)
            }
        };
        if let Err(message) = (stream.attach)(&hwpt) {
            self.stats.failures += 1;
            // Keep the HWPT for a retry; the device stays where it was.
            stream.cache.push((vste, hwpt));
            return Err(BackendError {
                errno: None,
                message: format!("attach of stream {stream_id:#x}: {message}"),
            });
        }
        self.stats.attaches += 1;
        if let Some(old) = stream.current.replace((vste, hwpt)) {
            stream.cache.push(old);
        }
        while stream.cache.len() > MAX_CACHED_PER_STREAM {
            // The oldest goes: nothing is attached to it any more.
            stream.cache.remove(0);
        }
        Ok(())
    }

    fn invalidate(&mut self, commands: &[RawCommand]) -> Result<(), InvalidateError> {
        let mut typed = Vec::with_capacity(commands.len());
        for (i, c) in commands.iter().enumerate() {
            match SmmuV3Command::from_words(c.0) {
                Ok(t) => typed.push(t),
                Err(e) => {
                    self.stats.failures += 1;
                    return Err(InvalidateError {
                        consumed: i,
                        error: BackendError {
                            errno: None,
                            message: e.to_string(),
                        },
                    });
                }
            }
        }
        match self.viommu.invalidate(&typed) {
            Ok(()) => {
                self.stats.invalidation_calls += 1;
                self.stats.commands += commands.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.stats.failures += 1;
                let consumed = match &e {
                    iommufd_ioas::Error::HwptInvalidate { consumed, .. } => *consumed,
                    _ => 0,
                };
                Err(InvalidateError {
                    consumed,
                    error: kernel_error("IOMMU_HWPT_INVALIDATE".to_owned(), &e),
                })
            }
        }
    }
}
