// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What the KVM sides of both architectures share (`vm` on aarch64, `vm_riscv` on riscv64):
//! the error type, the RAM slot, and stopping the vCPU threads.

use std::io;
use std::path::PathBuf;
use std::sync::Once;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use crate::boot::BootError;
use crate::fdt::FdtError;
use crate::layout::{LayoutError, Region};
use crate::mmio::MmioError;

/// The memory slot guest RAM takes.
pub const RAM_SLOT: u32 = 0;
/// How long `Vm::run` keeps kicking the other vCPUs out of `KVM_RUN` once the guest has
/// stopped, before it leaves them behind.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// A failure of the KVM side.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// A KVM ioctl failed.
    #[error("{op}: {source}")]
    Kvm {
        /// The ioctl and its object, e.g. "KVM_CREATE_VCPU 1".
        op: String,
        /// The errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The memory map is invalid for this host.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Guest RAM could not be mapped.
    #[error("mapping {size:#x} bytes of guest RAM at {base:#x}: {reason}")]
    Ram {
        /// Guest base.
        base: u64,
        /// Size.
        size: u64,
        /// What vm-memory said.
        reason: String,
    },
    /// A file could not be read.
    #[error("{op} {path}: {source}", path = path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The boot images do not fit.
    #[error(transparent)]
    Boot(#[from] BootError),
    /// The kernel loader refused the Image.
    #[cfg(target_arch = "aarch64")]
    #[error("loading kernel {path}: {source}", path = path.display())]
    Loader {
        /// The kernel.
        path: PathBuf,
        /// linux-loader's error.
        #[source]
        source: linux_loader::loader::Error,
    },
    /// Writing into guest RAM failed.
    #[error("writing {what} to guest RAM at {addr:#x}: {reason}")]
    GuestWrite {
        /// What.
        what: &'static str,
        /// Where.
        addr: u64,
        /// What vm-memory said.
        reason: String,
    },
    /// The device tree could not be built.
    #[error(transparent)]
    Fdt(#[from] FdtError),
    /// An MMIO range could not be added.
    #[error(transparent)]
    Mmio(#[from] MmioError),
    /// A memory slot that overlaps RAM or another slot, or is not page aligned.
    #[error("memory slot at {region}: {reason}")]
    Slot {
        /// The guest range asked for.
        region: Region,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A vCPU thread could not be started.
    #[error("starting vCPU thread {id}: {source}")]
    Thread {
        /// vCPU index.
        id: u32,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// KVM's RISC-V AIA device could not be set up, or the vCPUs cannot have one.
    #[error("{op}: {reason}")]
    Aia {
        /// What was being done.
        op: String,
        /// Why it failed (kvm-aia's error, with the errno when KVM refused).
        reason: String,
    },
    /// The signal that kicks vCPUs out of `KVM_RUN` could not be installed.
    #[error("installing the vCPU kick signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
}

pub(crate) fn kvm_err(op: impl Into<String>) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    let op = op.into();
    move |source| VmError::Kvm { op, source }
}

/// Kicks the vCPU threads until they end (at most [`STOP_TIMEOUT`]) and joins them. If one
/// does not end, guest RAM is leaked instead of unmapped, so a vCPU still in `KVM_RUN`
/// never has its memory slot's mapping pulled from under it.
pub(crate) fn stop_vcpus(handles: &[JoinHandle<()>], memory: GuestMemoryMmap) {
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        let running: Vec<&JoinHandle<()>> = handles.iter().filter(|h| !h.is_finished()).collect();
        if running.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            log::warn!(
                "{} vCPU thread(s) still in KVM_RUN after {STOP_TIMEOUT:?}; leaving them",
                running.len()
            );
            std::mem::forget(memory);
            return;
        }
        for h in running {
            // A thread that ended between the check and the kick makes this fail; fine.
            let _ = h.kill(SIGRTMIN());
        }
        thread::sleep(Duration::from_millis(5));
    }
    drop(memory);
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: the signal only makes KVM_RUN return EINTR.
}

pub(crate) fn install_kick_handler() -> Result<(), VmError> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_signal_handler(SIGRTMIN(), kick_handler).map_err(VmError::Signal);
    });
    result
}
