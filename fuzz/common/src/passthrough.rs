// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Target `passthrough`: a [`PassthroughDevice`] built from an arbitrary function (BARs,
//! MSI-X table and PBA placement, relocation, write-through policy, DeviceID) over fake
//! backends that record everything, driven by guest config and BAR accesses, BAR
//! placement, device interrupts and flushes, optionally with injected host failures.
//!
//! The policy is any [`PolicyChoice`], `KernelProgrammedWindow` with any `start`/`last`
//! included (issue 19). A DeviceID of `None` is the settings an IMSIC-style controller
//! gets (`PreparedDevice::from_bound_for` with a vIMSIC: routes without a DeviceID); with
//! the window policy that is the riscv64 device (seed `imsic_window`). Under the window
//! policy the fake kernel programs each enabled vector with the IMSIC page of host hart
//! `vector % 4` counted from `start`, which a short or inverted window does not hold.
//!
//! Invariants (with injected failures only write-through, the doorbell checks, isolation
//! and the absence of panics; all of them without):
//!
//! * **Routes.** After every operation, an irqfd is assigned exactly for the deliverable
//!   vectors (MSI-X enabled, no Function Mask, vector unmasked), and its GSI's route is the
//!   guest's current address and data with the configured DeviceID. Routes exist only on
//!   GSIs the device allocated and has not released; a disabled vector has none.
//! * **Write-through.** The device never receives the guest's data: the fake real table's
//!   data dwords keep the host's values, table writes carry the address of a deliverable
//!   vector only, `prepare_msi_iova` carries its address, and `set_vector` enables only
//!   deliverable vectors. Under `KernelProgrammed` and `KernelProgrammedWindow` nothing is
//!   written through at all (no table write, no MSI IOVA): every real entry keeps the
//!   fake kernel's address and data.
//! * **Doorbell checks.** At each enable under a kernel-programmed policy the device counts
//!   `address_mismatch` exactly when the kernel's address is outside the plan, and else
//!   `guest_address_not_doorbell` exactly when the guest's is (`address == doorbell`, or
//!   `start <= address <= last`); the harness keeps both counts and compares after every
//!   operation, also with injected failures.
//! * **Isolation.** Forwarded BAR accesses never touch the real table or PBA; forwarded
//!   config writes never touch the MSI-X capability.
//! * **Teardown.** Dropping the device unmaps every guest mapping and removes every route,
//!   irqfd and GSI it made.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};

use msi_trap::msix::layout::{BarIndex, MsixLayout, RelocationPolicy};
use vfio_passthrough::{
    BackendError, DeviceBackend, DirectPiece, GuestMapper, MsiRoute, MsiRouter, PassthroughConfig,
    PassthroughDevice, RouterGroup, VectorBackend, build_model, subtract_traps,
};
use vmm_sys_util::eventfd::EventFd;

use crate::msix::{BarSpec, Place, PolicyChoice};
use crate::wire::{Reader, Wire, Writer, decode_ops};

/// Most operations one input runs.
pub const MAX_OPS: usize = 128;
/// Largest table this target builds (each vector owns an eventfd).
const MAX_VECTORS: u16 = 64;
/// Host data the "kernel" programs into the real table: never the guest's.
const HOST_DATA: u32 = 0x4000;
/// The ITS doorbell the "kernel" programs into the real table (the software MSI window's
/// `GITS_TRANSLATER` page).
const HOST_DOORBELL: u64 = 0x0800_0040;

/// The address the fake kernel programs into `vector`'s real entry when it enables it:
/// [`HOST_DOORBELL`], or under `KernelWindow` the IMSIC page of host hart `vector % 4`
/// counted from the window's start (as the riscv64 kernel programs the page of the hart
/// the vector targets). A short or inverted window does not hold that page: the doorbell
/// plan did not hold, which the device counts (`address_mismatch`).
fn kernel_doorbell(policy: PolicyChoice, vector: u16) -> u64 {
    match policy {
        PolicyChoice::KernelWindow { start, .. } => start.wrapping_add(u64::from(vector % 4) << 12),
        _ => HOST_DOORBELL,
    }
}

/// Injected host failures (bits).
pub mod fail {
    /// `allocate_gsi` fails for odd calls.
    pub const GSI: u8 = 1;
    /// `set_routes` fails every third call.
    pub const ROUTES: u8 = 2;
    /// `assign_irqfd` fails for odd GSIs.
    pub const IRQFD: u8 = 4;
    /// `set_vector` fails for vector 1.
    pub const SET_VECTOR: u8 = 8;
    /// `write_table_address` and `map` fail.
    pub const TABLE_MAP: u8 = 16;
}

/// The function and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtInput {
    /// BAR slots.
    pub bars: [BarSpec; 6],
    /// Table Size field, reduced to fewer than 64 vectors.
    pub table_size: u16,
    /// Table BIR.
    pub table_bir: u8,
    /// Raw table offset.
    pub table_offset: u32,
    /// PBA BIR.
    pub pba_bir: u8,
    /// Raw PBA offset.
    pub pba_offset: u32,
    /// Relocation: 0 never, 1 if shared, 2 always.
    pub relocation: u8,
    /// Write-through policy.
    pub policy: PolicyChoice,
    /// DeviceID, if any.
    pub devid: Option<u16>,
    /// Injected failures ([`fail`]).
    pub faults: u8,
    /// Config bytes patched after the synthesized image: `(offset, value)`.
    pub patches: Vec<(u8, u8)>,
    /// The operations.
    pub ops: Vec<PtOp>,
}

/// One operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtOp {
    /// Config write.
    ConfigWrite {
        /// Offset (0..0x1000).
        offset: u16,
        /// Length selector (1, 2, 4).
        len_sel: u8,
        /// Value.
        value: u32,
    },
    /// Config read.
    ConfigRead {
        /// Offset.
        offset: u16,
        /// Length selector.
        len_sel: u8,
    },
    /// Guest BAR write (trapped).
    BarWrite {
        /// Where.
        place: Place,
        /// Length selector (4, 8, 1, 2).
        len_sel: u8,
        /// Value.
        value: u64,
    },
    /// Guest BAR read (trapped).
    BarRead {
        /// Where.
        place: Place,
        /// Length selector.
        len_sel: u8,
    },
    /// The device signals vector (its eventfd).
    Signal(u16),
    /// Explicit flush.
    Commit,
    /// Linux-style table entry programming through the guest BAR.
    Entry {
        /// Vector.
        vector: u16,
        /// Address.
        address: u64,
        /// Data.
        data: u32,
        /// Leave masked.
        masked: bool,
    },
    /// Message Control: Enable, Function Mask.
    Control {
        /// Enable.
        enable: bool,
        /// Function Mask.
        mask: bool,
    },
    /// Place BAR `bar` at `gpa` (low dword, and high dword for a 64-bit BAR), memory
    /// decode on or off.
    PlaceBar {
        /// BAR slot.
        bar: u8,
        /// Guest address.
        gpa: u64,
        /// Command register memory space enable.
        decode: bool,
    },
}

const CFG_LENS: [usize; 3] = [1, 2, 4];
const BAR_LENS: [usize; 4] = [4, 8, 1, 2];

impl Wire for PtOp {
    fn decode(r: &mut Reader<'_>) -> Self {
        match r.u8() % 9 {
            0 => PtOp::ConfigWrite {
                offset: r.u16() % 0x1000,
                len_sel: r.u8() % 3,
                value: r.u32(),
            },
            1 => PtOp::ConfigRead {
                offset: r.u16() % 0x1000,
                len_sel: r.u8() % 3,
            },
            2 => PtOp::BarWrite {
                place: Place::decode(r),
                len_sel: r.u8() % 4,
                value: r.u64(),
            },
            3 => PtOp::BarRead {
                place: Place::decode(r),
                len_sel: r.u8() % 4,
            },
            4 => PtOp::Signal(r.u16()),
            5 => PtOp::Commit,
            6 => PtOp::Entry {
                vector: r.u16(),
                address: r.u64(),
                data: r.u32(),
                masked: r.bool(),
            },
            7 => PtOp::Control {
                enable: r.bool(),
                mask: r.bool(),
            },
            _ => PtOp::PlaceBar {
                bar: r.u8() % 6,
                gpa: r.u64(),
                decode: r.bool(),
            },
        }
    }
    fn encode(&self, w: &mut Writer) {
        match *self {
            PtOp::ConfigWrite {
                offset,
                len_sel,
                value,
            } => {
                w.u8(0);
                w.u16(offset);
                w.u8(len_sel);
                w.u32(value);
            }
            PtOp::ConfigRead { offset, len_sel } => {
                w.u8(1);
                w.u16(offset);
                w.u8(len_sel);
            }
            PtOp::BarWrite {
                place,
                len_sel,
                value,
            } => {
                w.u8(2);
                place.encode(w);
                w.u8(len_sel);
                w.u64(value);
            }
            PtOp::BarRead { place, len_sel } => {
                w.u8(3);
                place.encode(w);
                w.u8(len_sel);
            }
            PtOp::Signal(v) => {
                w.u8(4);
                w.u16(v);
            }
            PtOp::Commit => w.u8(5),
            PtOp::Entry {
                vector,
                address,
                data,
                masked,
            } => {
                w.u8(6);
                w.u16(vector);
                w.u64(address);
                w.u32(data);
                w.bool(masked);
            }
            PtOp::Control { enable, mask } => {
                w.u8(7);
                w.bool(enable);
                w.bool(mask);
            }
            PtOp::PlaceBar { bar, gpa, decode } => {
                w.u8(8);
                w.u8(bar);
                w.u64(gpa);
                w.bool(decode);
            }
        }
    }
}

impl Wire for PtInput {
    fn decode(r: &mut Reader<'_>) -> Self {
        let mut bars = [BarSpec::default(); 6];
        for b in bars.iter_mut() {
            *b = BarSpec::decode(r);
            // BARs of at most 1 MiB: the fake maps them from host memory.
            b.log2 %= 21;
        }
        let table_size = r.u16() % MAX_VECTORS;
        let table_bir = r.u8() % 8;
        let table_offset = r.u32();
        let pba_bir = r.u8() % 8;
        let pba_offset = r.u32();
        let relocation = r.u8() % 3;
        let policy = PolicyChoice::decode(r);
        let devid = r.bool().then(|| r.u16());
        let faults = r.u8() & 31;
        let n = usize::from(r.u8() % 8);
        let patches = (0..n).map(|_| (r.u8(), r.u8())).collect();
        PtInput {
            bars,
            table_size,
            table_bir,
            table_offset,
            pba_bir,
            pba_offset,
            relocation,
            policy,
            devid,
            faults,
            patches,
            ops: decode_ops(r, MAX_OPS),
        }
    }
    fn encode(&self, w: &mut Writer) {
        for b in &self.bars {
            b.encode(w);
        }
        w.u16(self.table_size);
        w.u8(self.table_bir);
        w.u32(self.table_offset);
        w.u8(self.pba_bir);
        w.u32(self.pba_offset);
        w.u8(self.relocation);
        self.policy.encode(w);
        match self.devid {
            Some(d) => {
                w.bool(true);
                w.u16(d);
            }
            None => w.bool(false),
        }
        w.u8(self.faults);
        w.u8(self.patches.len() as u8);
        for (o, v) in &self.patches {
            w.u8(*o);
            w.u8(*v);
        }
        for op in &self.ops {
            op.encode(w);
        }
    }
}

crate::impl_arbitrary!(PtInput);

/// MSI-X capability offset in the synthesized config space.
const MSIX_CAP: usize = 0x70;

impl PtInput {
    fn msix_input(&self) -> crate::msix::MsixInput {
        crate::msix::MsixInput {
            bars: self.bars,
            table_size: self.table_size,
            table_bir: self.table_bir,
            table_offset: self.table_offset,
            pba_bir: self.pba_bir,
            pba_offset: self.pba_offset,
            cap_sel: ((MSIX_CAP - 0x40) / 4) as u8,
            page_shift: 12,
            relocation: self.relocation,
            ops: Vec::new(),
        }
    }

    /// The function's config space: PM at 0x40, MSI-X at 0x70, PCIe at 0xa0, BAR registers.
    pub fn config(&self) -> Vec<u8> {
        let (t, p) = self.msix_input().registers();
        let mut c = vec![0u8; 256];
        c[0..4].copy_from_slice(&[0x86, 0x80, 0xc9, 0x10]);
        c[0x06] = 0x10;
        c[0x34] = 0x40;
        c[0x40..0x42].copy_from_slice(&[0x01, MSIX_CAP as u8]);
        c[MSIX_CAP..MSIX_CAP + 4].copy_from_slice(&[0x11, 0xa0, 0, 0]);
        c[MSIX_CAP + 2..MSIX_CAP + 4].copy_from_slice(&self.table_size.to_le_bytes());
        c[MSIX_CAP + 4..MSIX_CAP + 8].copy_from_slice(&t.to_le_bytes());
        c[MSIX_CAP + 8..MSIX_CAP + 12].copy_from_slice(&p.to_le_bytes());
        c[0xa0..0xa2].copy_from_slice(&[0x10, 0x00]);
        for (i, r) in self.bar_regs().iter().enumerate() {
            c[0x10 + 4 * i..0x14 + 4 * i].copy_from_slice(&r.to_le_bytes());
        }
        for (o, v) in &self.patches {
            c[usize::from(*o)] = *v;
        }
        c
    }

    fn bar_regs(&self) -> [u32; 6] {
        let mut regs = [0u32; 6];
        for (r, b) in regs.iter_mut().zip(&self.bars) {
            *r = match b.kind {
                1 => 1,
                3 => 0b100,
                _ => 0,
            };
        }
        regs
    }

    fn reloc(&self) -> RelocationPolicy {
        match self.relocation {
            0 => RelocationPolicy::Never,
            1 => RelocationPolicy::IfShared,
            _ => RelocationPolicy::Always,
        }
    }
}

/// Everything the fakes saw, shared with the harness.
#[derive(Debug, Default)]
struct World {
    faults: u8,
    /// The device's write-through policy (what the fake kernel programs depends on it).
    policy: Option<PolicyChoice>,
    /// Real table: (address, data) per vector.
    table: Vec<(u64, u32)>,
    /// Real table and PBA, for the isolation checks: (bar, offset, len).
    real_structs: Vec<(u8, u64, u64)>,
    /// Device programming since the last check: (vector, address written, or `None` for
    /// an enable), checked against the state after the trap that caused it.
    programmed: Vec<(u16, Option<u64>)>,
    enabled: BTreeSet<u16>,
    routes: BTreeMap<u32, MsiRoute>,
    irqfds: BTreeMap<u32, i32>,
    gsis: BTreeSet<u32>,
    next_gsi: u32,
    calls: u32,
    mapped: BTreeSet<u32>,
    next_map: u32,
    injected: u32,
    violations: Vec<String>,
}

#[derive(Clone)]
struct Shared(Arc<Mutex<World>>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct FakeDevice(Shared);

impl VectorBackend for FakeDevice {
    fn set_vector(&self, vector: u16, eventfd: Option<&EventFd>) -> Result<(), BackendError> {
        let mut w = self.0.lock();
        if w.faults & fail::SET_VECTOR != 0 && vector == 1 {
            return Err("injected set_vector failure".into());
        }
        if eventfd.is_some() {
            w.programmed.push((vector, None));
            w.enabled.insert(vector);
            let doorbell = w
                .policy
                .map_or(HOST_DOORBELL, |p| kernel_doorbell(p, vector));
            if let Some(e) = w.table.get_mut(usize::from(vector)) {
                *e = (doorbell, HOST_DATA + u32::from(vector));
            }
        } else {
            w.enabled.remove(&vector);
        }
        Ok(())
    }
    fn disable_vectors(&self) -> Result<(), BackendError> {
        self.0.lock().enabled.clear();
        Ok(())
    }
    fn prepare_msi_iova(&self, vector: u16, iova: u64) -> Result<(), BackendError> {
        self.0.lock().programmed.push((vector, Some(iova)));
        Ok(())
    }
    fn read_table_address(&self, vector: u16) -> Result<Option<u64>, BackendError> {
        Ok(self.0.lock().table.get(usize::from(vector)).map(|e| e.0))
    }
    fn write_table_address(&self, vector: u16, lo: u32, hi: u32) -> Result<(), BackendError> {
        let mut w = self.0.lock();
        if w.faults & fail::TABLE_MAP != 0 {
            return Err("injected table write failure".into());
        }
        let addr = u64::from(hi) << 32 | u64::from(lo);
        w.programmed.push((vector, Some(addr)));
        if let Some(e) = w.table.get_mut(usize::from(vector)) {
            e.0 = addr;
        }
        Ok(())
    }
}

impl DeviceBackend for FakeDevice {
    fn read_config(&self, offset: u16, buf: &mut [u8]) -> Result<(), BackendError> {
        // Reads of the raw device: a fixed pattern (the model's own bytes come first).
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (usize::from(offset) + i) as u8;
        }
        Ok(())
    }
    fn write_config(&self, offset: u16, buf: &[u8]) -> Result<(), BackendError> {
        let o = usize::from(offset);
        if o < MSIX_CAP + 12 && MSIX_CAP < o + buf.len() {
            self.0.lock().violations.push(format!(
                "config write of {} bytes at {offset:#x} reached the MSI-X capability",
                buf.len()
            ));
        }
        Ok(())
    }
    fn read_bar(&self, bar: u8, offset: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        self.check_bar("read", bar, offset, buf.len());
        buf.fill(0x5a);
        Ok(())
    }
    fn write_bar(&self, bar: u8, offset: u64, buf: &[u8]) -> Result<(), BackendError> {
        self.check_bar("write", bar, offset, buf.len());
        Ok(())
    }
}

impl FakeDevice {
    fn check_bar(&self, what: &str, bar: u8, offset: u64, len: usize) {
        let mut w = self.0.lock();
        let len = (len as u64).max(1);
        let hit = w.real_structs.iter().any(|&(b, o, l)| {
            b == bar && offset < o.saturating_add(l) && o < offset.saturating_add(len)
        });
        if hit {
            w.violations.push(format!(
                "BAR{bar} {what} of {len} bytes at {offset:#x} reached the real table or PBA"
            ));
        }
    }
}

struct FakeRouter(Shared);

impl MsiRouter for FakeRouter {
    fn allocate_gsi(&mut self) -> Result<u32, BackendError> {
        let mut w = self.0.lock();
        w.calls += 1;
        if w.faults & fail::GSI != 0 && w.calls % 2 == 1 {
            return Err("injected GSI exhaustion".into());
        }
        w.next_gsi += 1;
        let g = 32 + w.next_gsi;
        w.gsis.insert(g);
        Ok(g)
    }
    fn release_gsi(&mut self, gsi: u32) {
        let mut w = self.0.lock();
        // Never, failures or not: a GSI whose route removal or irqfd deassign failed stays
        // with the device until the call succeeds (issue 18's error-path fix).
        if w.routes.contains_key(&gsi) || w.irqfds.contains_key(&gsi) {
            w.violations
                .push(format!("GSI {gsi} released with a route or irqfd"));
        }
        if !w.gsis.remove(&gsi) {
            w.violations
                .push(format!("GSI {gsi} released twice or never allocated"));
        }
    }
    fn set_routes(&mut self, changes: &[(u32, Option<MsiRoute>)]) -> Result<(), BackendError> {
        let mut w = self.0.lock();
        w.calls += 1;
        if w.faults & fail::ROUTES != 0 && w.calls.is_multiple_of(3) {
            return Err("injected routing failure".into());
        }
        for (gsi, route) in changes {
            if !w.gsis.contains(gsi) {
                w.violations
                    .push(format!("route change on unallocated GSI {gsi}"));
            }
            match route {
                Some(r) => w.routes.insert(*gsi, *r),
                None => w.routes.remove(gsi),
            };
        }
        Ok(())
    }
    fn assign_irqfd(&mut self, eventfd: &EventFd, gsi: u32) -> Result<(), BackendError> {
        let mut w = self.0.lock();
        if w.faults & fail::IRQFD != 0 && gsi % 2 == 1 {
            return Err("injected irqfd failure".into());
        }
        if w.irqfds.insert(gsi, eventfd.as_raw_fd()).is_some() {
            w.violations
                .push(format!("irqfd assigned twice to GSI {gsi}"));
        }
        Ok(())
    }
    fn deassign_irqfd(&mut self, eventfd: &EventFd, gsi: u32) -> Result<(), BackendError> {
        let mut w = self.0.lock();
        if w.irqfds.remove(&gsi) != Some(eventfd.as_raw_fd()) {
            w.violations
                .push(format!("irqfd of GSI {gsi} deassigned but not assigned"));
        }
        Ok(())
    }
    fn inject(&mut self, _route: MsiRoute) -> Result<(), BackendError> {
        self.0.lock().injected += 1;
        Ok(())
    }
}

struct FakeMapper(Shared);

// The trait's `map` is `unsafe` because a real mapper hands `host` to the hypervisor; this
// fake never dereferences or keeps the pointer, so implementing it needs no contract.
#[allow(unsafe_code)]
impl GuestMapper for FakeMapper {
    unsafe fn map(&mut self, _gpa: u64, _len: u64, _host: *mut u8) -> Result<u32, BackendError> {
        let mut w = self.0.lock();
        if w.faults & fail::TABLE_MAP != 0 {
            return Err("injected map failure".into());
        }
        w.next_map += 1;
        let h = w.next_map;
        w.mapped.insert(h);
        Ok(h)
    }
    fn unmap(&mut self, handle: u32) -> Result<(), BackendError> {
        let mut w = self.0.lock();
        if !w.mapped.remove(&handle) {
            w.violations
                .push(format!("unmap of unknown handle {handle}"));
        }
        Ok(())
    }
}

type Dev = PassthroughDevice<FakeDevice, RouterGroup<FakeRouter>, FakeMapper>;

struct Run {
    dev: Dev,
    world: Shared,
    layout: MsixLayout,
    devid: Option<u32>,
    policy: PolicyChoice,
    /// The model of the device's `address_mismatch` and `guest_address_not_doorbell`
    /// counters under the kernel-programmed policies.
    mismatches: u64,
    not_doorbell: u64,
    faulty: bool,
    _host: Vec<u8>,
}

impl Run {
    fn resolve(&self, place: Place) -> (u8, u64) {
        let (gt, gp, rt) = (
            self.layout.guest_table(),
            self.layout.guest_pba(),
            self.layout.real().table,
        );
        match place {
            Place::GuestTable(o) => (gt.bar.get(), gt.offset + u64::from(o)),
            Place::GuestPba(o) => (gp.bar.get(), gp.offset + u64::from(o)),
            Place::RealTable(o) => (rt.bar.get(), rt.offset + u64::from(o)),
            Place::Raw(b, o) => (b, u64::from(o)),
        }
    }

    fn check(&mut self, when: &str) {
        // What reached the device during the trap belongs to a vector deliverable after
        // it, and carries the guest's address (never data: the calls have no data).
        let reports = self.dev.vectors();
        let programmed = std::mem::take(&mut self.world.lock().programmed);
        for (v, addr) in programmed {
            let r = reports.iter().find(|r| r.index == v);
            let Some(r) = r.filter(|r| r.enabled && !r.masked) else {
                panic!("{when}: vector {v} programmed on the device while not deliverable");
            };
            match (addr, self.policy.address_matches(r.guest_address)) {
                (Some(a), None) => {
                    assert_eq!(a, r.guest_address, "{when}: vector {v} written through")
                }
                // The kernel-programmed policies write nothing through (no MSI IOVA, no
                // table write): the device keeps the host kernel's address and data.
                (Some(a), Some(_)) => panic!(
                    "{when}: vector {v}: {a:#x} written through under {:?}",
                    self.policy
                ),
                // An enable: the device reads back the kernel's doorbell and compares it,
                // then the guest's address, with the plan (`address_matches`' range test).
                (None, Some(guest_matches)) => {
                    let kernel = kernel_doorbell(self.policy, v);
                    if self.policy.address_matches(kernel) != Some(true) {
                        self.mismatches += 1;
                    } else if !guest_matches {
                        self.not_doorbell += 1;
                    }
                }
                (None, None) => {}
            }
        }
        let faults = self.dev.faults();
        assert_eq!(
            (faults.address_mismatch, faults.guest_address_not_doorbell),
            (self.mismatches, self.not_doorbell),
            "{when}: doorbell checks at enable under {:?}",
            self.policy
        );
        let w = self.world.lock();
        assert!(w.violations.is_empty(), "{when}: {:?}", w.violations);
        for (v, (address, data)) in w.table.iter().enumerate() {
            assert!(
                *data == 0 || *data == HOST_DATA + v as u32,
                "vector {v}: real table data {data:#x} is not the host's"
            );
            if self.policy.kernel_programmed() {
                let kernel = kernel_doorbell(self.policy, v as u16);
                assert!(
                    *address == 0 || *address == kernel,
                    "vector {v}: real table address {address:#x} is not the kernel's \
                     {kernel:#x} under {:?}",
                    self.policy
                );
            }
        }
        if self.faulty {
            return;
        }
        assert_eq!(
            faults.router + faults.device + faults.mapping,
            0,
            "{when}: {faults:?}"
        );
        let mut live = BTreeSet::new();
        for r in &reports {
            let fd = match self.dev.vector_eventfd(r.index) {
                Some(e) => e.as_raw_fd(),
                None => panic!("vector {} has no eventfd", r.index),
            };
            let assigned: Vec<u32> = w
                .irqfds
                .iter()
                .filter(|(_, f)| **f == fd)
                .map(|(g, _)| *g)
                .collect();
            let deliverable = r.enabled && !r.masked;
            if deliverable {
                assert_eq!(
                    assigned.len(),
                    1,
                    "{when}: vector {} deliverable, irqfds {assigned:?}",
                    r.index
                );
                let gsi = assigned[0];
                assert_eq!(r.gsi, Some(gsi), "{when}: vector {} GSI", r.index);
                let want = MsiRoute {
                    address: r.guest_address,
                    data: r.guest_data,
                    devid: self.devid,
                };
                assert_eq!(
                    w.routes.get(&gsi),
                    Some(&want),
                    "{when}: route of vector {}",
                    r.index
                );
                assert!(
                    w.enabled.contains(&r.index),
                    "{when}: vector {} not enabled on the device",
                    r.index
                );
            } else {
                assert!(
                    assigned.is_empty(),
                    "{when}: vector {} not deliverable but has irqfd {assigned:?}",
                    r.index
                );
            }
            if !r.enabled {
                assert_eq!(
                    r.gsi, None,
                    "{when}: disabled vector {} keeps a GSI",
                    r.index
                );
            }
            if let Some(g) = r.gsi {
                live.insert(g);
            }
        }
        for gsi in w.routes.keys() {
            assert!(
                live.contains(gsi),
                "{when}: route on GSI {gsi} no vector owns"
            );
        }
    }

    fn step(&mut self, op: &PtOp) {
        match *op {
            PtOp::ConfigWrite {
                offset,
                len_sel,
                value,
            } => {
                let len = CFG_LENS[usize::from(len_sel) % 3];
                self.dev.write_config(offset, &value.to_le_bytes()[..len]);
            }
            PtOp::ConfigRead { offset, len_sel } => {
                let mut b = vec![0u8; CFG_LENS[usize::from(len_sel) % 3]];
                self.dev.read_config(offset, &mut b);
            }
            PtOp::BarWrite {
                place,
                len_sel,
                value,
            } => {
                let (bar, off) = self.resolve(place);
                let len = BAR_LENS[usize::from(len_sel) % 4];
                self.dev.write_bar(bar, off, &value.to_le_bytes()[..len]);
            }
            PtOp::BarRead { place, len_sel } => {
                let (bar, off) = self.resolve(place);
                let mut b = vec![0u8; BAR_LENS[usize::from(len_sel) % 4]];
                self.dev.read_bar(bar, off, &mut b);
            }
            PtOp::Signal(v) => {
                if let Some(e) = self.dev.vector_eventfd(v % MAX_VECTORS) {
                    let _ = e.write(1);
                }
            }
            PtOp::Commit => self.dev.commit(),
            PtOp::Entry {
                vector,
                address,
                data,
                masked,
            } => {
                let n = u64::from(self.layout.vectors());
                let gt = self.layout.guest_table();
                let base = gt.offset + (u64::from(vector) % n) * 16;
                let bar = gt.bar.get();
                for (o, v) in [
                    (base, address as u32),
                    (base + 4, (address >> 32) as u32),
                    (base + 8, data),
                    (base + 12, u32::from(masked)),
                ] {
                    self.dev.write_bar(bar, o, &v.to_le_bytes());
                    self.check("after a table write");
                }
            }
            PtOp::Control { enable, mask } => {
                let b = u8::from(enable) << 7 | u8::from(mask) << 6;
                self.dev.write_config(MSIX_CAP as u16 + 3, &[b]);
            }
            PtOp::PlaceBar { bar, gpa, decode } => {
                let reg = 0x10 + 4 * u16::from(bar);
                self.dev.write_config(reg, &(gpa as u32).to_le_bytes());
                if bar < 5 {
                    self.dev
                        .write_config(reg + 4, &((gpa >> 32) as u32).to_le_bytes());
                }
                self.dev
                    .write_config(0x04, &[if decode { 0x06 } else { 0x04 }]);
            }
        }
        self.check("after an operation");
    }
}

/// Replays one input, panicking on the first broken invariant.
pub fn run(input: &PtInput) {
    replay(input);
}

/// [`run`], returning the device's doorbell-check counters at the end
/// (`address_mismatch`, `guest_address_not_doorbell`), equal to the harness's model of
/// them; `None` when the function description is refused.
fn replay(input: &PtInput) -> Option<(u64, u64)> {
    let mut run = start(input)?;
    let world = run.world.clone();
    for op in &input.ops {
        run.step(op);
    }
    let counters = Some((run.mismatches, run.not_doorbell));
    let Run { dev, _host, .. } = run;
    drop(dev);
    let w = world.lock();
    assert!(w.violations.is_empty(), "at teardown: {:?}", w.violations);
    if input.faults != 0 {
        // Injected failures leave what the device could not undo; it logged them.
        return counters;
    }
    assert!(
        w.mapped.is_empty(),
        "mappings left after drop: {:?}",
        w.mapped
    );
    assert!(
        w.routes.is_empty(),
        "routes left after drop: {:?}",
        w.routes
    );
    assert!(
        w.irqfds.is_empty(),
        "irqfds left after drop: {:?}",
        w.irqfds
    );
    assert!(w.gsis.is_empty(), "GSIs left after drop: {:?}", w.gsis);
    counters
}

/// The device of `input` over fresh fakes, before any operation; `None` when the
/// function description is refused.
fn start(input: &PtInput) -> Option<Run> {
    let msix_in = input.msix_input();
    let (_, layout) = msix_in.build()?;
    let config = input.config();
    let bars = msix_in.bar_infos();
    let Ok(parts) = build_model(
        "fuzz",
        &config,
        &bars,
        &input.bar_regs(),
        input.reloc(),
        0x1000,
    ) else {
        return None;
    };
    // A patch may have removed the capability: a function without MSI-X.
    let msix = parts.msix?;
    let layout_used = msix.layout().clone();
    if input.patches.is_empty() {
        assert_eq!(layout_used, layout, "the device computed another layout");
    }
    let vectors = usize::from(msix.vectors());
    let real = layout_used.real();
    let world = Shared(Arc::new(Mutex::new(World {
        faults: input.faults,
        policy: Some(input.policy),
        table: vec![(0, 0); vectors],
        real_structs: vec![
            (
                real.table.bar.get(),
                real.table.offset,
                layout_used.table_len(),
            ),
            (real.pba.bar.get(), real.pba.offset, layout_used.pba_len()),
        ],
        ..World::default()
    })));
    // Host memory standing in for the BAR mmaps: 2 MiB, pieces cut around the traps.
    let mut host = vec![0u8; 0x20_0000];
    let traps = layout_used.trap_ranges();
    let mut pieces = Vec::new();
    for (i, b) in bars.iter().enumerate() {
        if b.kind != msi_trap::msix::layout::BarKind::Memory32
            && b.kind != msi_trap::msix::layout::BarKind::Memory64
        {
            continue;
        }
        for (s, e) in subtract_traps(i as u8, &[(0, b.size)], &traps, 0x1000) {
            let Some(host_ptr) = host.get_mut(s as usize..e as usize).map(|h| h.as_mut_ptr())
            else {
                continue;
            };
            pieces.push(DirectPiece {
                bar: i as u8,
                offset: s,
                len: e - s,
                host: host_ptr,
            });
        }
    }
    let devid = input.devid.map(u32::from);
    let settings = PassthroughConfig {
        devid,
        policy: input.policy.policy(),
    };
    let dev = match PassthroughDevice::new(
        FakeDevice(world.clone()),
        match RouterGroup::new(FakeRouter(world.clone()), msix.vectors()) {
            Ok(g) => g,
            Err(e) => panic!("eventfd creation failed: {e}"),
        },
        FakeMapper(world.clone()),
        parts.config,
        Some(msix),
        pieces,
        settings,
    ) {
        Ok(d) => d,
        Err(e) => panic!("device creation failed: {e}"),
    };
    let _ = BarIndex::new(0);
    Some(Run {
        dev,
        world,
        layout: layout_used,
        devid,
        policy: input.policy,
        mismatches: 0,
        not_doorbell: 0,
        faulty: input.faults != 0,
        _host: host,
    })
}

/// Seeds: the igb bring-up of the crate's model test, masking, disable, BAR moves.
pub fn seeds() -> Vec<(&'static str, PtInput)> {
    let bars = [
        BarSpec { kind: 2, log2: 17 },
        BarSpec { kind: 2, log2: 17 },
        BarSpec { kind: 1, log2: 5 },
        BarSpec { kind: 2, log2: 14 },
        BarSpec::default(),
        BarSpec::default(),
    ];
    let mut ops = vec![
        PtOp::PlaceBar {
            bar: 0,
            gpa: 0x1000_0000,
            decode: true,
        },
        PtOp::PlaceBar {
            bar: 3,
            gpa: 0x1004_0000,
            decode: true,
        },
        PtOp::Control {
            enable: true,
            mask: true,
        },
    ];
    for v in 0..10 {
        ops.push(PtOp::Entry {
            vector: v,
            address: 0x0800_0040,
            data: 0xdead_0000 + u32::from(v),
            masked: false,
        });
    }
    ops.push(PtOp::Control {
        enable: true,
        mask: false,
    });
    let base = PtInput {
        bars,
        table_size: 9,
        table_bir: 3,
        table_offset: 0,
        pba_bir: 3,
        pba_offset: 0x2000,
        relocation: 0,
        policy: PolicyChoice::Kernel(0x0800_0040),
        devid: Some(8),
        faults: 0,
        patches: vec![],
        ops,
    };
    let mut masking = base.clone();
    masking.policy = PolicyChoice::TableWrite;
    masking.ops.extend([
        PtOp::BarWrite {
            place: Place::GuestTable(16 * 2 + 12),
            len_sel: 0,
            value: 1,
        },
        PtOp::Signal(2),
        PtOp::BarRead {
            place: Place::GuestPba(0),
            len_sel: 1,
        },
        PtOp::BarWrite {
            place: Place::GuestTable(16 * 2 + 12),
            len_sel: 0,
            value: 0,
        },
        PtOp::Entry {
            vector: 4,
            address: 0x0900_0040,
            data: 7,
            masked: false,
        },
        PtOp::Control {
            enable: false,
            mask: false,
        },
        PtOp::PlaceBar {
            bar: 3,
            gpa: 0x2000_0000,
            decode: true,
        },
    ]);
    let mut per_vector = base.clone();
    per_vector.policy = PolicyChoice::PerVector;
    per_vector.relocation = 2;
    per_vector.ops.extend([
        PtOp::BarWrite {
            place: Place::RealTable(8),
            len_sel: 0,
            value: 0xbad,
        },
        PtOp::BarWrite {
            place: Place::Raw(0, 0x1520),
            len_sel: 0,
            value: 3,
        },
        PtOp::ConfigWrite {
            offset: MSIX_CAP as u16 + 2,
            len_sel: 1,
            value: 0xffff,
        },
        PtOp::Commit,
    ]);
    let mut faulty = masking.clone();
    faulty.faults = 31;
    // RISC-V (issue 19): a vIMSIC behind the host's software MSI window, as
    // `PreparedDevice::from_bound_for(.., ControllerGeometry::riscv_imsic(..))` sets the
    // device up: no DeviceID, `KernelProgrammedWindow`. The guest programs its vCPUs'
    // vIMSIC pages in the window, and vector 9 an address outside it (a guest error the
    // device counts); then it disables and re-enables MSI-X (every vector enabled again).
    let mut imsic = base.clone();
    imsic.policy = PolicyChoice::KernelWindow {
        start: 0x2800_0000,
        last: 0x2800_3fff,
    };
    imsic.devid = None;
    for op in imsic.ops.iter_mut() {
        if let PtOp::Entry {
            vector, address, ..
        } = op
        {
            *address = if *vector == 9 {
                HOST_DOORBELL
            } else {
                0x2800_0000 + (u64::from(*vector % 4) << 12)
            };
        }
    }
    imsic.ops.extend([
        PtOp::BarWrite {
            place: Place::GuestTable(16 * 2 + 12),
            len_sel: 0,
            value: 1,
        },
        PtOp::Signal(2),
        PtOp::BarWrite {
            place: Place::GuestTable(16 * 2 + 12),
            len_sel: 0,
            value: 0,
        },
        PtOp::Control {
            enable: false,
            mask: false,
        },
        PtOp::Control {
            enable: true,
            mask: false,
        },
    ]);
    // The same with an inverted window (`start > last`): it holds no address, so the
    // kernel's page is outside the plan at every enable.
    let mut inverted = imsic.clone();
    inverted.policy = PolicyChoice::KernelWindow {
        start: 0x2800_3fff,
        last: 0x2800_0000,
    };
    vec![
        ("igb_bringup", base),
        ("igb_mask_pending_disable", masking),
        ("relocated_per_vector", per_vector),
        ("injected_failures", faulty),
        ("imsic_window", imsic),
        ("imsic_window_inverted", inverted),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::check_round_trip;

    #[test]
    fn wire_round_trips() {
        check_round_trip::<PtInput>(8, 300, 500);
    }

    #[test]
    fn seeds_replay_clean() {
        for (name, s) in seeds() {
            assert!(s.msix_input().build().is_some(), "seed {name}");
            assert_eq!(PtInput::from_bytes(&s.to_bytes()), s, "seed {name}");
            run(&s);
        }
    }

    #[test]
    fn imsic_seeds_reach_both_doorbell_checks() {
        // 20 enables (10, then 10 after the re-enable). In the window: vector 9's address
        // is outside it each time. Inverted: the kernel's page is never in the plan.
        let seeds = seeds();
        let find = |name: &str| {
            seeds
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| s.clone())
                .unwrap()
        };
        assert_eq!(replay(&find("imsic_window")), Some((0, 2)));
        assert_eq!(replay(&find("imsic_window_inverted")), Some((20, 0)));
        // The ITS seed: the kernel's doorbell and the guest's address are the plan's.
        assert_eq!(replay(&find("igb_bringup")), Some((0, 0)));
    }

    #[test]
    fn the_checks_catch_a_write_through_under_a_kernel_window() {
        // The checks are live: after the IMSIC seed, the guest's address written through
        // to vector 0 (as an engine treating the window like `TableAddressWrite` would),
        // or found in its real entry, or a lost count, each breaks an invariant.
        let (_, s) = seeds()
            .into_iter()
            .find(|(n, _)| *n == "imsic_window")
            .unwrap();
        type Mutation = fn(&mut Run);
        let mutations: [Mutation; 3] = [
            |run| {
                let a = run.dev.vectors()[0].guest_address;
                let fake = FakeDevice(run.world.clone());
                fake.write_table_address(0, a as u32, (a >> 32) as u32)
                    .unwrap();
            },
            |run| run.world.lock().table[0].0 = 0x2800_0000 + 0x40,
            |run| run.not_doorbell += 1,
        ];
        for (i, mutate) in mutations.into_iter().enumerate() {
            let mut run = start(&s).unwrap();
            for op in &s.ops {
                run.step(op);
            }
            run.check("clean");
            mutate(&mut run);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run.check("test")));
            assert!(r.is_err(), "mutation {i} not caught");
        }
    }

    #[test]
    fn random_inputs_replay() {
        let mut rng = crate::wire::XorShift::new(23);
        for _ in 0..200 {
            let len = (rng.next_u64() % 400) as usize;
            run(&PtInput::from_bytes(&rng.bytes(len)));
        }
    }
}
