// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What the VMM measures about its own isolation and bookkeeping while a hostile guest runs
//! (issue 18), and reports under `reliability`:
//!
//! - **Routes against the trap handler** ([`Monitor`], [`route_mismatches`]): a thread samples
//!   the passthrough device every few tens of milliseconds, under the device lock and then the
//!   router lock (the order every commit takes them, so a sample is never half a commit), and
//!   checks that the MSI routes the VMM last pushed to KVM (`KVM_SET_GSI_ROUTING` replaces the
//!   whole table, so the router's copy is KVM's table) are exactly what the trap handler says:
//!   every deliverable vector (MSI-X enabled, Function Mask clear, vector unmasked) has its GSI
//!   routed to its current address (or, with a guest IOMMU, the doorbell it translates to),
//!   data and DeviceID; no route sits on a GSI no vector owns; a disabled vector holds no GSI.
//!   Each sample also reads the device's real MSI-X table through the VMM's own
//!   `MSIX_MAPPABLE` mapping and keeps the data dwords it saw, to show the device never
//!   carried guest-chosen data.
//! - **Sentinels around guest RAM** ([`Sentinels`]): pages of a known pattern right below and
//!   right above guest RAM's host mapping (the pages an off-by-one in the IOAS mapping or a
//!   DMA just outside guest RAM would reach first), checked at the end; and a canary block
//!   ([`Canary`]) in the VMM's own heap.
//! - **After teardown** ([`SelfFigures`], [`IdCheck`]): open file descriptors, mappings,
//!   pinned and locked memory of the VMM process once the device, the VM and the vSMMU are
//!   gone, and whether every iommufd object ID the run used is free again (IDs are allocated
//!   lowest-free, so fresh IOASes must get IDs 1..=N).
//!
//! The checks are plain functions over plain values, unit-tested on any host; `vm.rs` feeds
//! them the real device, router and mappings.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;
use vfio_passthrough::{MsiRoute, VectorReport};

/// One MSI-X table entry of the real device, as read through the table mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RealEntry {
    /// Message Address (upper and lower dwords).
    pub address: u64,
    /// Message Data.
    pub data: u32,
    /// Vector Control.
    pub control: u32,
}

/// One sample of the device's state.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Every vector as the trap handler and the device's books have it.
    pub vectors: Vec<VectorReport>,
    /// The routing table as last pushed to KVM, by GSI.
    pub routes: BTreeMap<u32, MsiRoute>,
    /// The real table, per vector (`None` when unreadable).
    pub real: Vec<Option<RealEntry>>,
}

/// Where the routing table disagrees with the trap handler in `sample`; empty when it does
/// not. `devid` is the DeviceID routes must carry.
pub fn route_mismatches(sample: &Sample, devid: Option<u32>) -> Vec<String> {
    let mut out = Vec::new();
    let mut owned = BTreeSet::new();
    for v in &sample.vectors {
        let i = v.index;
        if let Some(gsi) = v.gsi
            && !owned.insert(gsi)
        {
            out.push(format!("vector {i}: GSI {gsi} is also another vector's"));
        }
        let deliverable = v.enabled && !v.masked;
        if !v.enabled && v.gsi.is_some() {
            out.push(format!(
                "vector {i}: MSI-X is disabled but GSI {:?} is held",
                v.gsi
            ));
        }
        if !deliverable || v.unroutable.is_some() {
            continue;
        }
        let Some(gsi) = v.gsi else {
            out.push(format!("vector {i}: deliverable but has no GSI"));
            continue;
        };
        let Some(address) = v.route_address else {
            out.push(format!(
                "vector {i}: deliverable but its route has no address"
            ));
            continue;
        };
        let want = MsiRoute {
            address,
            data: v.guest_data,
            devid,
        };
        match sample.routes.get(&gsi) {
            Some(r) if *r == want => {}
            Some(r) => out.push(format!(
                "vector {i}: GSI {gsi} routes {:#x}/{:#x}/{:?}, the trap handler says {:#x}/{:#x}/{:?}",
                r.address, r.data, r.devid, want.address, want.data, want.devid
            )),
            None => out.push(format!("vector {i}: GSI {gsi} has no route in KVM's table")),
        }
    }
    for gsi in sample.routes.keys() {
        if !owned.contains(gsi) {
            out.push(format!("GSI {gsi} is routed but no vector owns it"));
        }
    }
    out
}

/// How many distinct values per vector the monitor keeps.
const VALUES_KEPT: usize = 16;
/// How many mismatch descriptions the monitor keeps.
const MISMATCHES_KEPT: usize = 8;

/// What the monitor saw over the run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MonitorReport {
    /// Samples taken.
    pub samples: u64,
    /// Samples in which the routes disagreed with the trap handler.
    pub mismatch_samples: u64,
    /// The first disagreements, described.
    pub mismatches: Vec<String>,
    /// The most vectors deliverable at once.
    pub max_deliverable: usize,
    /// The most routes in KVM's table at once.
    pub max_routes: usize,
    /// Samples in which at least one vector was deliverable and every one matched.
    pub samples_with_live_routes: u64,
    /// Per vector, the distinct data dwords the real table held while the vector was
    /// enabled on the device (at most 16 kept).
    pub real_data: BTreeMap<u16, BTreeSet<u32>>,
    /// Per vector, distinct data values the guest had programmed at the samples (at most 16
    /// kept; the guest may write many more between samples).
    pub guest_data: BTreeMap<u16, BTreeSet<u32>>,
    /// Samples in which an enabled vector's real data dword equalled the guest's data while
    /// that value was never one the device held before the guest programmed it: a
    /// guest-chosen value on the device.
    pub guest_data_on_device: u64,
    /// Samples where the real table could not be read.
    pub unreadable: u64,
}

impl MonitorReport {
    /// Folds one sample in.
    pub fn add(&mut self, sample: &Sample, devid: Option<u32>) {
        self.samples += 1;
        let mismatches = route_mismatches(sample, devid);
        let deliverable = sample
            .vectors
            .iter()
            .filter(|v| v.enabled && !v.masked)
            .count();
        self.max_deliverable = self.max_deliverable.max(deliverable);
        self.max_routes = self.max_routes.max(sample.routes.len());
        if mismatches.is_empty() {
            if deliverable > 0 {
                self.samples_with_live_routes += 1;
            }
        } else {
            self.mismatch_samples += 1;
            for m in mismatches {
                if self.mismatches.len() < MISMATCHES_KEPT {
                    self.mismatches.push(m);
                }
            }
        }
        let mut guest_on_device = false;
        for v in &sample.vectors {
            let keep = |set: &mut BTreeSet<u32>, x: u32| {
                if set.len() < VALUES_KEPT {
                    set.insert(x);
                }
            };
            if v.enabled || v.host_enabled {
                keep(self.guest_data.entry(v.index).or_default(), v.guest_data);
            }
            if !v.host_enabled {
                continue;
            }
            match sample.real.get(usize::from(v.index)).copied().flatten() {
                Some(real) => {
                    let seen = self.real_data.entry(v.index).or_default();
                    // The device's data is the kernel's, fixed when the vector is enabled.
                    // A guest value that shows up as a *new* real value is guest-chosen
                    // data reaching the device.
                    if real.data == v.guest_data && !seen.contains(&real.data) && !seen.is_empty() {
                        guest_on_device = true;
                    }
                    keep(seen, real.data);
                }
                None => self.unreadable += 1,
            }
        }
        if guest_on_device {
            self.guest_data_on_device += 1;
        }
    }
}

/// A sampling thread over a device (see the module docs).
pub struct Monitor {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<MonitorReport>>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").finish_non_exhaustive()
    }
}

impl Monitor {
    /// Starts sampling every `period` with `sample` (which takes the locks it needs).
    pub fn start(
        period: Duration,
        devid: Option<u32>,
        mut sample: Box<dyn FnMut() -> Sample + Send>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("route-monitor".to_owned())
            .spawn(move || {
                let mut report = MonitorReport::default();
                while !thread_stop.load(Ordering::Acquire) {
                    report.add(&sample(), devid);
                    std::thread::sleep(period);
                }
                // One last look, after the guest stopped.
                report.add(&sample(), devid);
                report
            })?;
        Ok(Monitor {
            stop,
            handle: Some(handle),
        })
    }

    /// Stops the thread and returns what it saw.
    pub fn finish(mut self) -> MonitorReport {
        self.stop.store(true, Ordering::Release);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => MonitorReport {
                mismatches: vec!["the monitor thread panicked".to_owned()],
                mismatch_samples: 1,
                ..Default::default()
            },
            None => MonitorReport::default(),
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Bytes of sentinel pattern on each side of guest RAM's host mapping: 64 KiB, the largest
/// arm64 page, so that an off-by-one page at any granule lands in it.
pub const SENTINEL_BYTES: usize = 0x1_0000;

/// The word at byte `offset` of a sentinel area whose pattern is `seed`.
fn pattern_word(seed: u64, offset: usize) -> u64 {
    (seed ^ 0x5e47_1ae1_0000_0000) ^ (offset as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The state of the sentinel pages and the canary at the end of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IsolationReport {
    /// Bytes of sentinel pattern below guest RAM's host mapping (0: could not be placed).
    pub sentinel_below: usize,
    /// Bytes of sentinel pattern above it.
    pub sentinel_above: usize,
    /// Offsets (relative to the start of each area, `below:`/`above:`) of words that
    /// changed, at most 8.
    pub sentinel_changed: Vec<String>,
    /// Bytes of the VMM's own canary block.
    pub canary_bytes: usize,
    /// Words of the canary that changed.
    pub canary_changed: usize,
}

impl IsolationReport {
    /// Whether every pattern is intact and both sentinel areas exist.
    pub fn intact(&self) -> bool {
        self.sentinel_below > 0
            && self.sentinel_above > 0
            && self.sentinel_changed.is_empty()
            && self.canary_changed == 0
    }
}

/// Pages of a known pattern right below and right above a host mapping (guest RAM).
#[derive(Debug)]
pub struct Sentinels {
    /// `(address, length)` of the area below and the area above; length 0 when absent.
    areas: [(usize, usize); 2],
    seed: u64,
}

/// A reservation of address space made before guest RAM is mapped, so that RAM lands
/// between two sentinel areas (see [`Sentinels::reserve`]).
#[derive(Debug)]
pub struct Reservation {
    base: usize,
    len: usize,
    guard: usize,
}

impl Reservation {
    /// The address of the hole guest RAM is expected to land in.
    pub fn hole(&self) -> usize {
        self.base + self.guard
    }
}

impl Sentinels {
    /// Reserves `guard + len + guard` bytes of address space and frees the middle `len`
    /// bytes again, so that the next anonymous mapping of `len` bytes (guest RAM, made right
    /// after by the caller, with no other thread mapping memory in between) lands in that
    /// hole, between the two guard areas. [`Sentinels::place`] then turns the guards into
    /// sentinels if RAM did land there.
    pub fn reserve(len: usize, guard: usize) -> std::io::Result<Reservation> {
        let total = len
            .checked_add(guard.saturating_mul(2))
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EOVERFLOW))?;
        // SAFETY: a fresh anonymous PROT_NONE mapping at an address the kernel picks; no
        // existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let base = p as usize;
        // SAFETY: the middle `len` bytes are part of the mapping just made and hold nothing.
        if unsafe { libc::munmap((base + guard) as *mut libc::c_void, len) } != 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: the reservation made above, unused.
            unsafe { libc::munmap(p, total) };
            return Err(e);
        }
        Ok(Reservation { base, len, guard })
    }

    /// Places the sentinels for guest RAM at `host..host + len`: where RAM landed in the
    /// reservation's hole, its guard areas become read-write pattern pages; otherwise the
    /// reservation is released and each side is mapped only where it is free
    /// (`MAP_FIXED_NOREPLACE`); a side that is taken stays without sentinel.
    pub fn place(reservation: Reservation, host: usize, seed: u64) -> Self {
        let Reservation { base, len, guard } = reservation;
        let mut areas = [(0usize, 0usize); 2];
        if host == base + guard {
            for (k, at) in [base, base + guard + len].into_iter().enumerate() {
                // SAFETY: `at..at + guard` is one of the reservation's PROT_NONE guard areas,
                // owned by this value and holding nothing.
                let ok = unsafe {
                    libc::mprotect(
                        at as *mut libc::c_void,
                        guard,
                        libc::PROT_READ | libc::PROT_WRITE,
                    )
                } == 0;
                if ok {
                    areas[k] = (at, guard);
                } else {
                    // SAFETY: as above; released unused.
                    unsafe { libc::munmap(at as *mut libc::c_void, guard) };
                }
            }
        } else {
            for at in [base, base + guard + len] {
                // SAFETY: the reservation's guard areas, owned here and unused.
                unsafe { libc::munmap(at as *mut libc::c_void, guard) };
            }
            for (k, at) in [host.checked_sub(guard), host.checked_add(len)]
                .into_iter()
                .enumerate()
            {
                let Some(at) = at else { continue };
                // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping: it fails
                // (EEXIST) when anything is mapped in the range.
                let p = unsafe {
                    libc::mmap(
                        at as *mut libc::c_void,
                        guard,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                        -1,
                        0,
                    )
                };
                if p == libc::MAP_FAILED {
                    continue;
                }
                if p as usize != at {
                    // An old kernel without MAP_FIXED_NOREPLACE took it as a hint.
                    // SAFETY: the mapping just made, unused.
                    unsafe { libc::munmap(p, guard) };
                    continue;
                }
                areas[k] = (at, guard);
            }
        }
        let s = Sentinels { areas, seed };
        for &(at, n) in &s.areas {
            for off in (0..n).step_by(8) {
                // SAFETY: `at..at + n` is a read-write mapping owned by `s`; `off + 8 <= n`
                // and `at` is page aligned, so the write is aligned and inside it.
                unsafe { ((at + off) as *mut u64).write_volatile(pattern_word(seed, off)) };
            }
        }
        s
    }

    /// No sentinels (the reservation could not be made).
    pub fn none() -> Self {
        Sentinels {
            areas: [(0, 0); 2],
            seed: 0,
        }
    }

    /// Bytes of sentinel below and above.
    pub fn sizes(&self) -> (usize, usize) {
        (self.areas[0].1, self.areas[1].1)
    }

    /// The words that no longer hold the pattern, as `below:0x..`/`above:0x..`, at most 8.
    pub fn changed(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, &(at, n)) in ["below", "above"].iter().zip(&self.areas) {
            for off in (0..n).step_by(8) {
                // SAFETY: as in `place`: aligned, inside the live mapping owned by `self`.
                let w = unsafe { ((at + off) as *const u64).read_volatile() };
                if w != pattern_word(self.seed, off) && out.len() < 8 {
                    out.push(format!("{name}:{off:#x}"));
                }
            }
        }
        out
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for &(at, n) in &self.areas {
            if n > 0 {
                // SAFETY: a mapping owned by this value, unused after drop.
                unsafe { libc::munmap(at as *mut libc::c_void, n) };
            }
        }
    }
}

/// A block of the VMM's own heap filled with a known pattern.
#[derive(Debug)]
pub struct Canary {
    words: Vec<u64>,
    seed: u64,
}

impl Canary {
    /// `bytes` (rounded down to 8) of pattern.
    pub fn new(bytes: usize, seed: u64) -> Self {
        let words = (0..bytes / 8).map(|i| pattern_word(seed, i * 8)).collect();
        Canary { words, seed }
    }

    /// Its size in bytes.
    pub fn bytes(&self) -> usize {
        self.words.len() * 8
    }

    /// How many words changed.
    pub fn changed(&self) -> usize {
        self.words
            .iter()
            .enumerate()
            .filter(|(i, w)| {
                // A volatile read: nothing in this process writes the block.
                // SAFETY: `w` is a valid reference into `self.words`.
                let v = unsafe { std::ptr::read_volatile(*w) };
                v != pattern_word(self.seed, i * 8)
            })
            .count()
    }
}

/// The VMM process's own figures (Linux procfs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SelfFigures {
    /// Open file descriptors.
    pub fds: usize,
    /// Lines of `/proc/self/maps`.
    pub maps: usize,
    /// `VmPin` (pinned pages, kB).
    pub vm_pin_kb: u64,
    /// `VmLck` (locked pages, kB).
    pub vm_lck_kb: u64,
    /// Threads.
    pub threads: u64,
}

fn status_field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

impl SelfFigures {
    /// Reads them now.
    pub fn now() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        SelfFigures {
            fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()),
            maps: std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count()),
            vm_pin_kb: status_field(&status, "VmPin"),
            vm_lck_kb: status_field(&status, "VmLck"),
            threads: status_field(&status, "Threads"),
        }
    }
}

/// Whether the iommufd object IDs of a finished run are free again: `ids` are those of
/// fresh IOASes allocated after teardown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IdCheck {
    /// The IDs the fresh IOASes got, in allocation order.
    pub ids: Vec<u32>,
    /// The highest object ID seen during the run.
    pub highest_used: u32,
    /// Whether `ids` is exactly 1..=n with n above `highest_used`: nothing of the run holds
    /// an ID any more.
    pub all_free: bool,
    /// Why the check could not run, if it could not.
    pub error: Option<String>,
}

impl IdCheck {
    /// Judges `ids` (fresh IOASes after teardown) against the highest ID the run used.
    pub fn judge(ids: Vec<u32>, highest_used: u32) -> Self {
        let n = ids.len() as u32;
        let all_free = n > highest_used && ids.iter().copied().eq(1..=n);
        IdCheck {
            ids,
            highest_used,
            all_free,
            error: None,
        }
    }
}

/// The `reliability` section of the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReliabilityReport {
    /// Routes against the trap handler, and the real table's data, over the run.
    pub monitor: Option<MonitorReport>,
    /// Sentinels and canary.
    pub isolation: IsolationReport,
    /// The process at VMM start.
    pub at_start: SelfFigures,
    /// The process after the device, vSMMU and VM were torn down.
    pub after_teardown: Option<SelfFigures>,
    /// The iommufd IDs after teardown.
    pub iommufd_ids: Option<IdCheck>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(index: u16, gsi: Option<u32>, enabled: bool, masked: bool) -> VectorReport {
        VectorReport {
            index,
            guest_address: 0x800_0040,
            guest_data: u32::from(index),
            masked,
            enabled,
            gsi,
            host_enabled: gsi.is_some(),
            device_address: Some(0x800_0040),
            route_address: gsi.map(|_| 0x800_0040),
            unroutable: None,
        }
    }

    fn route(data: u32) -> MsiRoute {
        MsiRoute {
            address: 0x800_0040,
            data,
            devid: Some(8),
        }
    }

    #[test]
    fn matching_routes_pass_and_each_kind_of_mismatch_is_named() {
        let mut s = Sample {
            vectors: vec![
                vector(0, Some(32), true, false),
                vector(1, Some(33), true, true),
                vector(2, None, true, true),
            ],
            routes: [(32, route(0)), (33, route(1))].into_iter().collect(),
            real: Vec::new(),
        };
        assert!(route_mismatches(&s, Some(8)).is_empty());
        // A stale route of a masked vector is allowed (committed at unmask).
        s.routes.insert(33, route(7));
        assert!(route_mismatches(&s, Some(8)).is_empty());
        // Wrong data on a deliverable vector.
        s.routes.insert(32, route(5));
        let m = route_mismatches(&s, Some(8));
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].contains("vector 0: GSI 32 routes"), "{m:?}");
        // Missing route, orphan route, wrong DeviceID.
        s.routes.remove(&32);
        s.routes.insert(40, route(0));
        let m = route_mismatches(&s, Some(8));
        assert!(m.iter().any(|x| x.contains("no route")), "{m:?}");
        assert!(m.iter().any(|x| x.contains("GSI 40")), "{m:?}");
        s.routes.remove(&40);
        s.routes.insert(32, route(0));
        assert_eq!(route_mismatches(&s, Some(9)).len(), 1);
        // A disabled vector holding a GSI; a deliverable vector without one.
        s.vectors[1].enabled = false;
        s.vectors[2].masked = false;
        let m = route_mismatches(&s, Some(8));
        assert!(m.iter().any(|x| x.contains("vector 1: MSI-X is disabled")));
        assert!(
            m.iter()
                .any(|x| x.contains("vector 2: deliverable but has no GSI"))
        );
    }

    #[test]
    fn the_monitor_report_counts_and_flags_guest_data_on_the_device() {
        let mut r = MonitorReport::default();
        let mut s = Sample {
            vectors: vec![vector(0, Some(32), true, false)],
            routes: [(32, route(0))].into_iter().collect(),
            real: vec![Some(RealEntry {
                address: 0x800_0040,
                data: 0,
                control: 0,
            })],
        };
        r.add(&s, Some(8));
        assert_eq!(
            (r.samples, r.mismatch_samples, r.samples_with_live_routes),
            (1, 0, 1)
        );
        // The guest programs 0x5a5a0001; the device keeps 0: fine.
        s.vectors[0].guest_data = 0x5a5a_0001;
        s.routes.insert(32, route(0x5a5a_0001));
        r.add(&s, Some(8));
        assert_eq!(r.guest_data_on_device, 0);
        // The device now holds the guest's value: flagged.
        s.real[0] = Some(RealEntry {
            address: 0x800_0040,
            data: 0x5a5a_0001,
            control: 0,
        });
        r.add(&s, Some(8));
        assert_eq!(r.guest_data_on_device, 1);
        assert_eq!(
            r.real_data[&0],
            [0, 0x5a5a_0001].into_iter().collect::<BTreeSet<_>>()
        );
        s.real[0] = None;
        r.add(&s, Some(8));
        assert_eq!(r.unreadable, 1);
    }

    #[test]
    fn sentinels_and_canary_detect_a_changed_word() {
        let len = 0x4_0000;
        let guard = 0x4000;
        let res = Sentinels::reserve(len, guard).unwrap();
        // The "guest RAM", placed in the hole explicitly (other test threads may map memory
        // meanwhile; the VMM maps RAM right after reserving, on its only thread).
        // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping; the hole is free.
        let ram = unsafe {
            libc::mmap(
                res.hole() as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE
                    | libc::MAP_ANONYMOUS
                    | libc::MAP_NORESERVE
                    | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        assert_ne!(ram, libc::MAP_FAILED);
        let s = Sentinels::place(res, ram as usize, 7);
        assert_eq!(s.sizes(), (guard, guard), "RAM did not land in the hole");
        assert!(s.changed().is_empty());
        // One byte just past the end of "guest RAM".
        // SAFETY: the area above is a live read-write mapping owned by `s`.
        unsafe { ((ram as usize + len) as *mut u8).write_volatile(0xff) };
        assert_eq!(s.changed(), vec!["above:0x0".to_owned()]);
        drop(s);
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(ram, len) };

        let c = Canary::new(4096, 3);
        assert_eq!((c.bytes(), c.changed()), (4096, 0));
    }

    #[test]
    fn id_check_wants_every_id_from_one() {
        assert!(IdCheck::judge(vec![1, 2, 3, 4], 3).all_free);
        assert!(!IdCheck::judge(vec![1, 3, 4, 5], 3).all_free);
        assert!(!IdCheck::judge(vec![1, 2, 3], 3).all_free);
    }

    #[test]
    fn self_figures_read_procfs() {
        let f = SelfFigures::now();
        if cfg!(target_os = "linux") {
            assert!(f.fds >= 3 && f.maps > 0 && f.threads >= 1, "{f:?}");
        }
    }
}
