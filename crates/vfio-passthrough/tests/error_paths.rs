// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Every backend call of a passthrough device's life, failed on purpose in turn.
//!
//! The fakes behind [`DeviceBackend`], [`MsiRouter`] and [`GuestMapper`] keep what a kernel
//! would hold (vectors enabled on the device, allocated GSIs, routes, assigned irqfds, guest
//! mappings) and fail exactly the N-th fallible call with an errno. The scenario is the whole
//! life of an igb under Linux and a VMM: BARs placed (direct maps), MSI-X set up under
//! Function Mask, a vector masked, fired, drained through the PBA and unmasked (injection),
//! a live vector's message changed, a device reset, Function Mask toggled, MSI-X disabled
//! and enabled again, Memory Space turned off and on, and the device dropped (teardown).
//!
//! For every N, with that one call failing (issue 18):
//!
//! - the failure is reported, naming the operation, the object (vector, GSI, BAR, slot, the
//!   routing table's GSIs) and the errno: a log record at warn or error level, or, for
//!   `VFIO_DEVICE_RESET`, the returned error;
//! - once the device is dropped nothing is left behind: no GSI allocated, no route, no
//!   irqfd, no guest mapping, no vector enabled on the device;
//! - a route is never left on a released GSI (the `MsiRouter::release_gsi` contract).
//!
//! `errno` is EINVAL for most calls and EINTR for a few, so that a retry of a transient
//! failure is exercised as well.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use msi_trap::msix::layout::{BarInfo, RelocationPolicy};
use msi_trap::write_through::DoorbellPolicy;
use vfio_passthrough::{
    BackendError, DeviceBackend, DirectPiece, GuestMapper, MsiRoute, MsiRouter, PassthroughConfig,
    PassthroughDevice, RouterGroup, VectorBackend, build_model,
};
use vmm_sys_util::eventfd::EventFd;

const DOORBELL: u64 = 0x0800_0040;
const DEVID: u32 = 0x8;
const MSIX_CAP: u16 = 0x70;
const GUEST_DATA: u32 = 0xdead_0000;
const FIRST_GSI: u32 = 32;

/// What the "kernel" holds, and the failure plan.
#[derive(Default)]
struct World {
    /// Fallible calls so far.
    calls: u64,
    /// The call that fails, and its errno.
    fail_at: Option<(u64, i32)>,
    /// The name of every fallible call, in order.
    trace: Vec<&'static str>,
    /// What failed: (call number, operation).
    failed: Option<(u64, &'static str)>,
    // The device.
    config: Vec<u8>,
    vectors_on: BTreeSet<u16>,
    table: [u64; 10],
    // The VM's router.
    gsis: BTreeSet<u32>,
    routes: BTreeMap<u32, MsiRoute>,
    irqfds: BTreeSet<u32>,
    /// A route installed on a GSI that was then released (never allowed).
    route_on_released_gsi: Vec<u32>,
    // The VM's memory slots.
    maps: BTreeMap<u32, (u64, u64)>,
    next_handle: u32,
}

type Shared = Arc<Mutex<World>>;

fn lock(w: &Shared) -> MutexGuard<'_, World> {
    w.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counts a fallible call `op`; fails it when it is the planned one.
fn enter<'a>(w: &'a Shared, op: &'static str) -> Result<MutexGuard<'a, World>, BackendError> {
    let mut g = lock(w);
    g.calls += 1;
    g.trace.push(op);
    if let Some((n, errno)) = g.fail_at
        && n == g.calls
    {
        g.failed = Some((n, op));
        return Err(Box::new(std::io::Error::from_raw_os_error(errno)));
    }
    Ok(g)
}

struct Dev(Shared);
struct Router(Shared);
struct Mapper(Shared);

impl VectorBackend for Dev {
    fn set_vector(&self, vector: u16, eventfd: Option<&EventFd>) -> Result<(), BackendError> {
        let mut g = enter(&self.0, "set vector")?;
        if eventfd.is_some() {
            g.vectors_on.insert(vector);
            g.table[usize::from(vector)] = DOORBELL;
        } else {
            g.vectors_on.remove(&vector);
        }
        Ok(())
    }
    fn disable_vectors(&self) -> Result<(), BackendError> {
        let mut g = enter(&self.0, "disable vectors")?;
        g.vectors_on.clear();
        Ok(())
    }
    fn prepare_msi_iova(&self, _: u16, _: u64) -> Result<(), BackendError> {
        drop(enter(&self.0, "prepare MSI IOVA")?);
        Ok(())
    }
    fn read_table_address(&self, vector: u16) -> Result<Option<u64>, BackendError> {
        let g = enter(&self.0, "table read")?;
        Ok(g.table.get(usize::from(vector)).copied())
    }
    fn write_table_address(&self, vector: u16, lo: u32, hi: u32) -> Result<(), BackendError> {
        let mut g = enter(&self.0, "table write")?;
        g.table[usize::from(vector)] = (u64::from(hi) << 32) | u64::from(lo);
        Ok(())
    }
}

impl DeviceBackend for Dev {
    fn read_config(&self, offset: u16, buf: &mut [u8]) -> Result<(), BackendError> {
        let g = enter(&self.0, "config read")?;
        let o = usize::from(offset);
        buf.copy_from_slice(g.config.get(o..o + buf.len()).ok_or("range")?);
        Ok(())
    }
    fn write_config(&self, offset: u16, buf: &[u8]) -> Result<(), BackendError> {
        let mut g = enter(&self.0, "config write")?;
        let o = usize::from(offset);
        g.config
            .get_mut(o..o + buf.len())
            .ok_or("range")?
            .copy_from_slice(buf);
        Ok(())
    }
    fn read_bar(&self, _: u8, _: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        drop(enter(&self.0, "BAR read")?);
        buf.fill(0x5a);
        Ok(())
    }
    fn write_bar(&self, _: u8, _: u64, _: &[u8]) -> Result<(), BackendError> {
        drop(enter(&self.0, "BAR write")?);
        Ok(())
    }
    fn reset(&self) -> Result<(), BackendError> {
        let mut g = enter(&self.0, "reset")?;
        for a in g.table.iter_mut() {
            if *a != 0 {
                *a = DOORBELL;
            }
        }
        Ok(())
    }
}

impl MsiRouter for Router {
    fn allocate_gsi(&mut self) -> Result<u32, BackendError> {
        let mut g = enter(&self.0, "allocate GSI")?;
        let gsi = (FIRST_GSI..).find(|x| !g.gsis.contains(x)).ok_or("none")?;
        g.gsis.insert(gsi);
        Ok(gsi)
    }
    fn release_gsi(&mut self, gsi: u32) {
        let mut g = lock(&self.0);
        g.gsis.remove(&gsi);
        if g.routes.contains_key(&gsi) {
            g.route_on_released_gsi.push(gsi);
        }
    }
    fn set_routes(&mut self, changes: &[(u32, Option<MsiRoute>)]) -> Result<(), BackendError> {
        let mut g = enter(&self.0, "set routes")?;
        // KVM_SET_GSI_ROUTING replaces the table whole: all or nothing.
        for (gsi, r) in changes {
            match r {
                Some(r) => {
                    g.routes.insert(*gsi, *r);
                }
                None => {
                    g.routes.remove(gsi);
                }
            }
        }
        Ok(())
    }
    fn assign_irqfd(&mut self, _: &EventFd, gsi: u32) -> Result<(), BackendError> {
        let mut g = enter(&self.0, "assign irqfd")?;
        g.irqfds.insert(gsi);
        Ok(())
    }
    fn deassign_irqfd(&mut self, _: &EventFd, gsi: u32) -> Result<(), BackendError> {
        let mut g = enter(&self.0, "deassign irqfd")?;
        if !g.irqfds.remove(&gsi) {
            return Err(Box::new(std::io::Error::from_raw_os_error(libc::ENOENT)));
        }
        Ok(())
    }
    fn inject(&mut self, _: MsiRoute) -> Result<(), BackendError> {
        drop(enter(&self.0, "inject")?);
        Ok(())
    }
}

impl GuestMapper for Mapper {
    unsafe fn map(&mut self, gpa: u64, len: u64, _: *mut u8) -> Result<u32, BackendError> {
        let mut g = enter(&self.0, "map")?;
        g.next_handle += 1;
        let h = g.next_handle;
        g.maps.insert(h, (gpa, len));
        Ok(h)
    }
    fn unmap(&mut self, handle: u32) -> Result<(), BackendError> {
        let mut g = enter(&self.0, "unmap")?;
        g.maps.remove(&handle).ok_or("no such handle")?;
        Ok(())
    }
}

/// The 82576 of `tests/model.rs`: PM -> MSI -> MSI-X (10 vectors, BAR3 table 0, PBA
/// 0x2000) -> PCIe.
fn igb_config() -> Vec<u8> {
    let mut c = vec![0u8; 256];
    c[0..4].copy_from_slice(&[0x86, 0x80, 0xc9, 0x10]);
    c[0x06] = 0x10;
    c[0x34] = 0x40;
    c[0x40..0x42].copy_from_slice(&[0x01, 0x50]);
    c[0x50..0x53].copy_from_slice(&[0x05, 0x70, 0x80]);
    c[0x70..0x74].copy_from_slice(&[0x11, 0xa0, 0x09, 0x00]);
    c[0x74..0x78].copy_from_slice(&3u32.to_le_bytes());
    c[0x78..0x7c].copy_from_slice(&0x2003u32.to_le_bytes());
    c[0xa0..0xa2].copy_from_slice(&[0x10, 0x00]);
    c
}

const BARS: [BarInfo; 6] = [
    BarInfo::memory32(0x2_0000),
    BarInfo::memory32(0x2_0000),
    BarInfo::io(0x20),
    BarInfo::memory32(0x4000),
    BarInfo::ABSENT,
    BarInfo::ABSENT,
];

type Device = PassthroughDevice<Dev, RouterGroup<Router>, Mapper>;

/// Host memory the direct pieces point at (never touched by the fakes); one page-aligned
/// buffer per test process, alive for its whole life.
fn bar_memory() -> *mut u8 {
    static MEM: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MEM.get_or_init(|| Box::leak(vec![0u8; 0x3_0000].into_boxed_slice()).as_mut_ptr() as usize)
        as *mut u8
}

fn device(world: &Shared, policy: DoorbellPolicy) -> Device {
    let cfg = igb_config();
    lock(world).config = cfg.clone();
    let parts = build_model(
        "fake",
        &cfg,
        &BARS,
        &[0, 0, 1, 0, 0, 0],
        RelocationPolicy::Never,
        0x1000,
    )
    .unwrap();
    let host = bar_memory();
    let piece = |bar, offset, len| DirectPiece {
        bar,
        offset,
        len,
        host,
    };
    PassthroughDevice::new(
        Dev(world.clone()),
        RouterGroup::new(
            Router(world.clone()),
            parts.msix.as_ref().map_or(0, |m| m.vectors()),
        )
        .unwrap(),
        Mapper(world.clone()),
        parts.config,
        parts.msix,
        vec![
            piece(0, 0, 0x2_0000),
            piece(3, 0x1000, 0x1000),
            piece(3, 0x3000, 0x1000),
        ],
        PassthroughConfig {
            devid: Some(DEVID),
            policy,
        },
    )
    .unwrap()
}

fn w32(dev: &mut Device, reg: u16, v: u32) {
    dev.write_config(reg, &v.to_le_bytes());
}

fn table_write(dev: &mut Device, vector: u64, dword: u64, v: u32) {
    dev.write_bar(3, vector * 16 + dword * 4, &v.to_le_bytes());
}

/// Linux's MSI-X setup of `vectors` vectors: enable under Function Mask, program, unmask
/// the entries, clear Function Mask.
fn msix_setup(dev: &mut Device, vectors: u64, data_base: u32) {
    dev.write_config(MSIX_CAP + 2, &0xc009u16.to_le_bytes());
    for v in 0..vectors {
        table_write(dev, v, 0, DOORBELL as u32);
        table_write(dev, v, 1, 0);
        table_write(dev, v, 2, data_base + v as u32);
        table_write(dev, v, 3, 0);
    }
    dev.write_config(MSIX_CAP + 2, &0x8009u16.to_le_bytes());
}

/// The whole life of the device, as an igb driver under Linux and a VMM drive it.
fn scenario(dev: &mut Device) {
    // BARs placed, Memory Space and Bus Master on: direct maps.
    for reg in [0x10, 0x14, 0x18, 0x1c] {
        w32(dev, reg, 0xffff_ffff);
    }
    w32(dev, 0x10, 0x1000_0000);
    w32(dev, 0x14, 0x1002_0000);
    w32(dev, 0x1c, 0x1004_0000);
    dev.write_config(0x04, &[0x06, 0x00]);
    let mut id = [0u8; 4];
    dev.read_config(0, &mut id);
    // A register outside the MSI-X pages that traps (BAR1 is not mapped directly here).
    let mut reg = [0u8; 4];
    dev.read_bar(1, 0x10, &mut reg);
    dev.write_bar(1, 0x10, &reg);
    // MSI-X: three vectors.
    msix_setup(dev, 3, GUEST_DATA);
    // Vector 1 masked, fired by the device while masked, drained by a PBA read, unmasked.
    table_write(dev, 1, 3, 1);
    if let Some(e) = dev.vector_eventfd(1) {
        e.write(1).unwrap();
    }
    let mut pba = [0u8; 8];
    dev.read_bar(3, 0x2000, &mut pba);
    table_write(dev, 1, 3, 0);
    // Vector 2's message changed while masked (a new route), then unmasked.
    table_write(dev, 2, 3, 1);
    table_write(dev, 2, 2, GUEST_DATA + 0x20);
    table_write(dev, 2, 3, 0);
    // The VMM resets the device (a function reset the guest asked for).
    let _ = dev.reset_device();
    // Function Mask toggled.
    dev.write_config(MSIX_CAP + 2, &0xc009u16.to_le_bytes());
    dev.write_config(MSIX_CAP + 2, &0x8009u16.to_le_bytes());
    // MSI-X disabled (the driver is unbound), then set up again with two vectors.
    dev.write_config(MSIX_CAP + 2, &0x0009u16.to_le_bytes());
    msix_setup(dev, 2, GUEST_DATA + 0x100);
    // Memory Space off and on: the direct maps go and come back.
    dev.write_config(0x04, &[0x04, 0x00]);
    dev.write_config(0x04, &[0x06, 0x00]);
}

thread_local! {
    /// Log records (warn and above) of the current test thread.
    static RECORDS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            RECORDS.with(|v| v.borrow_mut().push(format!("{}: {}", r.level(), r.args())));
        }
    }
    fn flush(&self) {}
}

static LOGGER: Capture = Capture;

fn take_records() -> Vec<String> {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Warn);
    RECORDS.with(|v| std::mem::take(&mut *v.borrow_mut()))
}

/// The words a report of a failed `op` must contain besides the errno: the operation and
/// the object it was about (any one of the alternatives).
fn expected_words(op: &str) -> &'static [&'static [&'static str]] {
    match op {
        "config read" => &[&["config read", "at 0x"], &["command register read"]],
        "config write" => &[&["config write", "at 0x"], &["command register write"]],
        "BAR read" => &[&["BAR1 read", "at 0x10"]],
        "BAR write" => &[&["BAR1 write", "at 0x10"]],
        "set vector" => &[&["MSI-X vector", "enable on the device"]],
        "disable vectors" => &[&["MSI-X disable on the device"]],
        "prepare MSI IOVA" => &[&["MSI-X vector", "MSI IOVA"]],
        "table read" => &[&["MSI-X vector", "real table"]],
        "table write" => &[&["MSI-X vector", "table address write"]],
        "reset" => &[&["VFIO_DEVICE_RESET"]],
        "allocate GSI" => &[&["MSI-X vector", "GSI"]],
        "set routes" => &[&["routing update", "GSI"]],
        "assign irqfd" => &[&["MSI-X vector", "irqfd assign", "GSI"]],
        "deassign irqfd" => &[&["MSI-X vector", "irqfd deassign", "GSI"]],
        "inject" => &[&["MSI-X vector", "delivery"]],
        "map" => &[&["direct map of BAR", "at 0x"]],
        "unmap" => &[&["unmap of BAR", "handle"]],
        other => panic!("no expectation for {other}"),
    }
}

fn errno_text(errno: i32) -> String {
    format!("(os error {errno})")
}

/// Runs the scenario with call `n` failing with `errno`; returns the operation that failed
/// and what the reports said.
fn run_failing(policy: DoorbellPolicy, n: u64, errno: i32) -> Outcome {
    take_records();
    let world: Shared = Arc::default();
    let mut dev = device(&world, policy);
    lock(&world).fail_at = Some((n, errno));
    scenario(&mut dev);
    let reset_error = {
        // The reset's failure is returned, not logged: check it names what failed.
        let w = lock(&world);
        w.failed.filter(|(_, op)| *op == "reset")
    };
    let mut reset_report = None;
    if reset_error.is_some() {
        // The scenario ignores the result; reproduce the call on a fresh world to read the
        // error (the same call fails the same way).
        let world2: Shared = Arc::default();
        let dev2 = device(&world2, policy);
        lock(&world2).fail_at = Some((1, errno));
        let mut dev2 = dev2;
        reset_report = dev2.reset_device().err().map(|e| e.to_string());
        drop(dev2);
    }
    let faults = dev.faults();
    drop(dev);
    let w = lock(&world);
    let (at, op) = w
        .failed
        .unwrap_or_else(|| panic!("call {n} never happened ({} calls)", w.calls));
    assert_eq!(at, n);
    let op: &'static str = op;
    let mut records = take_records();
    if let Some(r) = reset_report {
        records.push(r);
    }
    // Nothing left behind.
    let mut problems = Vec::new();
    if !w.gsis.is_empty() {
        problems.push(format!("GSIs left {:?}", w.gsis));
    }
    if !w.routes.is_empty() {
        problems.push(format!("routes left {:?}", w.routes));
    }
    if !w.irqfds.is_empty() {
        problems.push(format!("irqfds left {:?}", w.irqfds));
    }
    if !w.maps.is_empty() {
        problems.push(format!("mappings left {:?}", w.maps));
    }
    if !w.vectors_on.is_empty() {
        problems.push(format!("vectors left enabled {:?}", w.vectors_on));
    }
    if !w.route_on_released_gsi.is_empty() {
        problems.push(format!(
            "a route stayed on a released GSI {:?}",
            w.route_on_released_gsi
        ));
    }
    // Reported: operation, object and errno in one record.
    let errno_text = errno_text(errno);
    let named = records.iter().any(|r| {
        r.contains(&errno_text)
            && expected_words(op)
                .iter()
                .any(|alt| alt.iter().all(|word| r.contains(word)))
    });
    if !named {
        problems.push(format!(
            "no report naming one of {:?} with {errno_text}",
            expected_words(op)
        ));
    }
    Outcome {
        op,
        problems,
        context: format!(
            "call {n} ({op}) failed with errno {errno}; faults {faults:?}; records {records:#?}"
        ),
    }
}

struct Outcome {
    op: &'static str,
    problems: Vec<String>,
    context: String,
}

fn clean_run(policy: DoorbellPolicy) -> Vec<&'static str> {
    take_records();
    let world: Shared = Arc::default();
    let mut dev = device(&world, policy);
    scenario(&mut dev);
    drop(dev);
    let w = lock(&world);
    assert!(
        w.gsis.is_empty()
            && w.routes.is_empty()
            && w.irqfds.is_empty()
            && w.maps.is_empty()
            && w.vectors_on.is_empty(),
        "a clean run left something behind"
    );
    let records = take_records();
    assert!(records.is_empty(), "a clean run reported {records:#?}");
    w.trace.clone()
}

fn every_call_fails_in_turn(policy: DoorbellPolicy) {
    let trace = clean_run(policy);
    let mut by_op: BTreeMap<&str, u64> = BTreeMap::new();
    let mut failures = Vec::new();
    for n in 1..=trace.len() as u64 {
        // Transient errors for some calls: a retry must then clean up.
        let errno = if n % 5 == 0 {
            libc::EINTR
        } else {
            libc::EINVAL
        };
        let out = run_failing(policy, n, errno);
        *by_op.entry(out.op).or_default() += 1;
        if !out.problems.is_empty() {
            failures.push(format!("{:?}\n  {}", out.problems, out.context));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed calls broke a rule ({policy:?}):\n{}",
        failures.len(),
        trace.len(),
        failures.join("\n")
    );
    // The scenario reaches every operation of the three traits it can reach with this
    // policy, so every one of them was failed at least once.
    let mut expected: BTreeSet<&str> = [
        "config read",
        "config write",
        "BAR read",
        "BAR write",
        "set vector",
        "disable vectors",
        "table read",
        "reset",
        "allocate GSI",
        "set routes",
        "assign irqfd",
        "deassign irqfd",
        "inject",
        "map",
        "unmap",
    ]
    .into_iter()
    .collect();
    match policy {
        DoorbellPolicy::TableAddressWrite => {
            expected.insert("table write");
        }
        DoorbellPolicy::PerVectorIova => {
            expected.insert("prepare MSI IOVA");
        }
        _ => {}
    }
    let seen: BTreeSet<&str> = by_op.keys().copied().collect();
    assert_eq!(seen, expected, "operations failed: {by_op:?}");
    // Straight to stdout: the figure for docs/reliability.md.
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stdout(),
        "error paths ({policy:?}): {} calls, each failed once in turn: {by_op:?}",
        trace.len()
    );
}

#[test]
fn every_call_fails_in_turn_kernel_window() {
    every_call_fails_in_turn(DoorbellPolicy::KernelProgrammed {
        doorbell_iova: DOORBELL,
    });
}

#[test]
fn every_call_fails_in_turn_table_write_through() {
    every_call_fails_in_turn(DoorbellPolicy::TableAddressWrite);
}

#[test]
fn every_call_fails_in_turn_per_vector_iova() {
    every_call_fails_in_turn(DoorbellPolicy::PerVectorIova);
}

/// The fakes themselves: a planned failure fails exactly that call, with its errno.
#[test]
fn the_fakes_fail_exactly_the_planned_call() {
    let world: Shared = Arc::default();
    lock(&world).fail_at = Some((2, libc::EBUSY));
    let mut r = Router(world.clone());
    assert_eq!(r.allocate_gsi().unwrap(), FIRST_GSI);
    let e = r.allocate_gsi().unwrap_err();
    assert!(e.to_string().contains(&errno_text(libc::EBUSY)), "{e}");
    assert_eq!(r.allocate_gsi().unwrap(), FIRST_GSI + 1);
    assert_eq!(lock(&world).failed, Some((2, "allocate GSI")));
}

/// A hostile guest that enables vectors with addresses that are no doorbell, over and over
/// (MSI-X Enable toggled 200 times): its own error, counted, never a host fault, and never
/// one log record per toggle (the VMM's log is not the guest's to flood).
#[test]
fn a_guest_address_off_the_doorbell_is_the_guests_error_and_floods_no_log() {
    take_records();
    let world: Shared = Arc::default();
    let mut dev = device(
        &world,
        DoorbellPolicy::KernelProgrammed {
            doorbell_iova: DOORBELL,
        },
    );
    for reg in [0x10, 0x14, 0x18, 0x1c] {
        w32(&mut dev, reg, 0xffff_ffff);
    }
    w32(&mut dev, 0x1c, 0x1004_0000);
    dev.write_config(0x04, &[0x06, 0x00]);
    for round in 0..200u32 {
        dev.write_config(MSIX_CAP + 2, &0xc009u16.to_le_bytes());
        table_write(&mut dev, 0, 0, 0xfee0_0000 + 4 * (round % 16));
        table_write(&mut dev, 0, 1, 0);
        table_write(&mut dev, 0, 2, GUEST_DATA);
        table_write(&mut dev, 0, 3, 0);
        dev.write_config(MSIX_CAP + 2, &0x8009u16.to_le_bytes());
        dev.write_config(MSIX_CAP + 2, &0x0009u16.to_le_bytes());
    }
    let f = dev.faults();
    assert_eq!(f.address_mismatch, 0, "{f:?}");
    assert_eq!(f.guest_address_not_doorbell, 200, "{f:?}");
    drop(dev);
    let records = take_records();
    assert!(records.is_empty(), "{records:#?}");
    let w = lock(&world);
    assert!(w.gsis.is_empty() && w.routes.is_empty() && w.vectors_on.is_empty());
}

/// The plan failing is still a host fault: the kernel put another doorbell in the device.
#[test]
fn a_kernel_doorbell_off_the_plan_is_a_host_fault() {
    take_records();
    let world: Shared = Arc::default();
    let mut dev = device(
        &world,
        DoorbellPolicy::KernelProgrammed {
            doorbell_iova: DOORBELL + 0x10_0000,
        },
    );
    dev.write_config(0x04, &[0x06, 0x00]);
    msix_setup(&mut dev, 1, GUEST_DATA);
    assert_eq!(dev.faults().address_mismatch, 1);
    let records = take_records();
    assert!(
        records.iter().any(|r| r.contains("did not hold")),
        "{records:#?}"
    );
}
