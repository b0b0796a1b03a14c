// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Pausing every vCPU thread outside `KVM_RUN` while the guest runs.
//!
//! KVM serves `KVM_DEV_ARM_VGIC_GRP_ITS_REGS` and `KVM_DEV_ARM_ITS_SAVE_TABLES` only when no
//! vCPU is inside an ioctl (`kvm_trylock_all_vcpus`, else `EBUSY`; Linux
//! `Documentation/virt/kvm/devices/arm-vgic-its.rst`). A [`VcpuGate`] gives the VMM that
//! window: each vCPU thread passes [`VcpuGate::checkpoint`] before every `KVM_RUN`;
//! [`VcpuGate::pause`] raises the gate and kicks the threads (a signal makes `KVM_RUN`
//! return `EINTR`, also from a halted or powered-off vCPU) until every one of them is
//! parked at its checkpoint or has ended, and the returned [`Paused`] lowers it again when
//! dropped. A kick that lands just before a thread enters `KVM_RUN` is lost, so the kicks
//! repeat every millisecond until the threads are parked, or the pause gives up after its
//! timeout and lowers the gate. Pauses are serialized. Tests: `tests::*` in this module.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Kicks vCPU thread `id` out of `KVM_RUN` (the VMM sends it a signal).
pub type Kick<'a> = &'a dyn Fn(u32);

/// Why a pause did not happen.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// Not every vCPU thread reached its checkpoint in time.
    #[error("pausing the vCPUs: {parked} of {vcpus} parked after {waited:?}")]
    Timeout {
        /// Parked or ended threads.
        parked: u32,
        /// vCPUs.
        vcpus: u32,
        /// How long the pause waited.
        waited: Duration,
    },
}

#[derive(Debug, Default)]
struct State {
    /// A pause holds the gate.
    paused: bool,
    /// Threads waiting at their checkpoint.
    parked: u32,
    /// Threads that ended.
    ended: u32,
    /// The threads' handles for the kick (`pthread_t`), by vCPU.
    threads: Vec<Option<libc::pthread_t>>,
}

/// The gate (see the module documentation).
#[derive(Debug)]
pub struct VcpuGate {
    vcpus: u32,
    state: Mutex<State>,
    changed: Condvar,
}

/// An open pause: every vCPU thread is parked or ended until this is dropped.
#[derive(Debug)]
pub struct Paused<'a> {
    gate: &'a VcpuGate,
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        self.gate.lock().paused = false;
        self.gate.changed.notify_all();
    }
}

impl VcpuGate {
    /// A gate for `vcpus` threads.
    pub fn new(vcpus: u32) -> Self {
        VcpuGate {
            vcpus,
            state: Mutex::new(State {
                threads: vec![None; vcpus as usize],
                ..State::default()
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain counters: consistent whatever a panicking holder did.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called by vCPU thread `id` when it starts: records the handle the kick signals.
    pub fn register(&self, id: u32) {
        // SAFETY: pthread_self has no preconditions; it returns the calling thread's handle.
        let me = unsafe { libc::pthread_self() };
        if let Some(slot) = self.lock().threads.get_mut(id as usize) {
            *slot = Some(me);
        }
    }

    /// Called by a vCPU thread before each `KVM_RUN`: waits while a pause holds the gate.
    pub fn checkpoint(&self) {
        let mut s = self.lock();
        if !s.paused {
            return;
        }
        s.parked += 1;
        self.changed.notify_all();
        while s.paused {
            s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s.parked -= 1;
    }

    /// Called by vCPU thread `id` when it ends (it never runs again).
    pub fn ended(&self, id: u32) {
        let mut s = self.lock();
        s.ended += 1;
        if let Some(slot) = s.threads.get_mut(id as usize) {
            *slot = None;
        }
        drop(s);
        self.changed.notify_all();
    }

    /// Pause every vCPU thread, kicking them with [`VcpuGate::kick_signal`]; see
    /// [`VcpuGate::pause_with`].
    pub fn pause(&self, timeout: Duration) -> Result<Paused<'_>, GateError> {
        self.pause_with(timeout, &|id| self.kick_signal(id))
    }

    /// Pause every vCPU thread: raise the gate and `kick` every thread not yet parked,
    /// every millisecond, until all are parked or ended, for at most `timeout`.
    pub fn pause_with(&self, timeout: Duration, kick: Kick<'_>) -> Result<Paused<'_>, GateError> {
        let start = Instant::now();
        let mut s = self.lock();
        while s.paused {
            s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        s.paused = true;
        loop {
            let stopped = s.parked + s.ended;
            if stopped >= self.vcpus {
                return Ok(Paused { gate: self });
            }
            if start.elapsed() >= timeout {
                s.paused = false;
                drop(s);
                self.changed.notify_all();
                return Err(GateError::Timeout {
                    parked: stopped,
                    vcpus: self.vcpus,
                    waited: start.elapsed(),
                });
            }
            let live: Vec<u32> = s
                .threads
                .iter()
                .enumerate()
                .filter_map(|(i, t)| t.map(|_| i as u32))
                .collect();
            drop(s);
            for id in live {
                kick(id);
            }
            s = self.lock();
            s = self
                .changed
                .wait_timeout(s, Duration::from_millis(1))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Send the vCPU kick signal (`SIGRTMIN`, whose handler the VMM installed) to thread
    /// `id`, if it is registered and has not ended.
    pub fn kick_signal(&self, id: u32) {
        let s = self.lock();
        if let Some(Some(t)) = s.threads.get(id as usize) {
            // SAFETY: `t` is the handle of a joinable vCPU thread that registered itself
            // and has not reported its end (it clears its slot under this lock before it
            // returns); such a thread is only joined after the VM stops, so the handle is
            // valid. The signal's handler is installed before any vCPU thread starts.
            unsafe {
                libc::pthread_kill(*t, libc::SIGRTMIN());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    /// Stand-in vCPU threads: "run" is a short sleep unless kicked, and they count how many
    /// runs happen while a pause is open.
    fn spawn(
        gate: &Arc<VcpuGate>,
        stop: &Arc<AtomicBool>,
        in_pause: &Arc<AtomicU32>,
        paused: &Arc<AtomicBool>,
    ) -> Vec<std::thread::JoinHandle<()>> {
        (0..gate.vcpus)
            .map(|id| {
                let (gate, stop, in_pause, paused) =
                    (gate.clone(), stop.clone(), in_pause.clone(), paused.clone());
                std::thread::spawn(move || {
                    gate.register(id);
                    while !stop.load(Ordering::SeqCst) {
                        gate.checkpoint();
                        if paused.load(Ordering::SeqCst) {
                            in_pause.fetch_add(1, Ordering::SeqCst);
                        }
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    gate.ended(id);
                })
            })
            .collect()
    }

    #[test]
    fn a_pause_parks_every_thread_until_dropped() {
        let gate = Arc::new(VcpuGate::new(3));
        let stop = Arc::new(AtomicBool::new(false));
        let in_pause = Arc::new(AtomicU32::new(0));
        let paused = Arc::new(AtomicBool::new(false));
        let threads = spawn(&gate, &stop, &in_pause, &paused);
        for _ in 0..20 {
            let p = gate.pause_with(Duration::from_secs(5), &|_| {}).unwrap();
            paused.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
            paused.store(false, Ordering::SeqCst);
            drop(p);
        }
        assert_eq!(
            in_pause.load(Ordering::SeqCst),
            0,
            "a thread ran while paused"
        );
        stop.store(true, Ordering::SeqCst);
        for t in threads {
            t.join().unwrap();
        }
        // Ended threads count as stopped.
        assert!(gate.pause_with(Duration::from_millis(10), &|_| {}).is_ok());
    }

    #[test]
    fn a_thread_that_never_checks_in_times_out_and_releases_the_gate() {
        let gate = VcpuGate::new(2);
        gate.register(0);
        let kicks = AtomicU32::new(0);
        let e = gate
            .pause_with(Duration::from_millis(20), &|id| {
                assert_eq!(id, 0);
                kicks.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap_err();
        assert!(
            matches!(
                e,
                GateError::Timeout {
                    parked: 0,
                    vcpus: 2,
                    ..
                }
            ),
            "{e}"
        );
        assert!(kicks.load(Ordering::SeqCst) >= 2, "kicks repeat");
        // The gate is open again: a checkpoint does not block.
        gate.checkpoint();
    }
}
