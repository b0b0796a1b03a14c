// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Target `msix_trap`: arbitrary config and BAR accesses over an arbitrary MSI-X capability
//! and BAR layout, checked against a reference model of the MSI-X rules (PCI 3.0 §6.8.2).
//!
//! Invariants (each a panic with the reason when broken):
//!
//! * **Routes.** The harness plays the interrupt router: it applies every
//!   [`UpdateBatch`] (install `address -> data` for a deliverable vector, remove it for
//!   any other). Whenever `updates_due()` is false, and after every commit, the installed
//!   routes are exactly the model's deliverable vectors with their current address and data:
//!   a masked or disabled vector never has a route, and a route never lags the table.
//! * **Batches.** Each update reports the model's current state of its vector, each vector
//!   at most once, in index order; deliveries are the model's released pending vectors.
//! * **Write-through.** Asked under every [`PolicyChoice`]: `KernelProgrammed` (any
//!   doorbell), `PerVectorIova`, `TableAddressWrite` and, since issue 19,
//!   `KernelProgrammedWindow` with any `start`/`last` (inverted, single-address, whole
//!   space). `device_program*` lists only deliverable vectors, carries the model's address,
//!   names the variant of its policy, targets the vector's real table entry, and is
//!   unchanged when every data dword of the table is rewritten (data never reaches the
//!   device). Under the two kernel-programmed policies `address_matches` equals the model's
//!   test (`address == doorbell`, or `start <= address <= last` for the window) and nothing
//!   is written through: no device address, and `apply_table_writes` writes nothing into
//!   the real table.
//! * **Isolation.** A BAR access the emulation forwards to the device never touches the
//!   real table or PBA, stays inside the real BAR, and every byte of the guest table, the
//!   guest PBA and (after a relocation) the hidden real ones lies in a trapped range.
//! * **Reads.** Table, PBA and capability reads return the model's values; snapshots
//!   restore into an identical state.

use std::collections::BTreeMap;

use msi_trap::caps::PCI_CAP_ID_MSIX;
use msi_trap::msix::cap::MsixCapability;
use msi_trap::msix::layout::{
    BarIndex, BarInfo, BarKind, GuestAccess, MsixLayout, MsixRegion, Relocation, RelocationPolicy,
};
use msi_trap::msix::{BarAccess, MsixState};
use msi_trap::update::UpdateBatch;
use msi_trap::write_through::{
    DeviceProgram, DoorbellPolicy, PhysicalMsixTable, TableAddressWrite, apply_table_writes,
};
use msi_trap::{MsiMessage, SignalOutcome};

use crate::wire::{Reader, Wire, Writer, decode_ops};

/// Most operations one input runs.
pub const MAX_OPS: usize = 256;

/// One BAR slot: kind (0 absent, 1 I/O, 2 32-bit memory, 3 64-bit memory) and log2 size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BarSpec {
    /// Kind, 0..=3.
    pub kind: u8,
    /// log2 of the size, 0..=47.
    pub log2: u8,
}

impl BarSpec {
    fn info(&self) -> BarInfo {
        let size = 1u64 << self.log2;
        match self.kind {
            1 => BarInfo::io(size),
            2 => BarInfo::memory32(size),
            3 => BarInfo::memory64(size),
            _ => BarInfo::ABSENT,
        }
    }
}

impl Wire for BarSpec {
    fn decode(r: &mut Reader<'_>) -> Self {
        BarSpec {
            kind: r.u8() % 4,
            log2: r.u8() % 48,
        }
    }
    fn encode(&self, w: &mut Writer) {
        w.u8(self.kind);
        w.u8(self.log2);
    }
}

/// Where a BAR access goes: relative to the guest table, the guest PBA, the real table, or
/// a raw BAR and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Guest table start + offset.
    GuestTable(u32),
    /// Guest PBA start + offset.
    GuestPba(u32),
    /// Real table start + offset (in the real table's BAR, at its real offset).
    RealTable(u32),
    /// BAR `bar` (0..=5), offset.
    Raw(u8, u32),
}

impl Wire for Place {
    fn decode(r: &mut Reader<'_>) -> Self {
        let tag = r.u8() % 4;
        let bar = r.u8() % 6;
        let off = r.u32();
        match tag {
            0 => Place::GuestTable(off),
            1 => Place::GuestPba(off),
            2 => Place::RealTable(off),
            _ => Place::Raw(bar, off),
        }
    }
    fn encode(&self, w: &mut Writer) {
        let (tag, bar, off) = match *self {
            Place::GuestTable(o) => (0, 0, o),
            Place::GuestPba(o) => (1, 0, o),
            Place::RealTable(o) => (2, 0, o),
            Place::Raw(b, o) => (3, b, o),
        };
        w.u8(tag);
        w.u8(bar);
        w.u32(off);
    }
}

/// Access lengths a BAR access may have: the supported DWORD/QWORD and odd ones.
const LENS: [usize; 8] = [4, 8, 4, 8, 1, 2, 3, 16];

/// How write-through is configured for a `Program` operation (and, in the `passthrough`
/// target, for the whole device).
///
/// Wire tags: 0 `Kernel`, 1 `PerVector`, 2 `TableWrite` (as before issue 19, so stored
/// inputs that used them decode unchanged), 3 `KernelWindow` (issue 19), which reads a
/// second `u64` for `last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyChoice {
    /// `KernelProgrammed` with this doorbell.
    Kernel(u64),
    /// `PerVectorIova`.
    PerVector,
    /// `TableAddressWrite`.
    TableWrite,
    /// `KernelProgrammedWindow { start, last }` (one doorbell page per CPU, the RISC-V
    /// IMSIC). Any values: an inverted window (`start > last`) holds no address.
    KernelWindow {
        /// First address of the window.
        start: u64,
        /// Last address of the window.
        last: u64,
    },
}

impl PolicyChoice {
    /// The policy this choice names.
    pub fn policy(self) -> DoorbellPolicy {
        match self {
            PolicyChoice::Kernel(doorbell_iova) => {
                DoorbellPolicy::KernelProgrammed { doorbell_iova }
            }
            PolicyChoice::PerVector => DoorbellPolicy::PerVectorIova,
            PolicyChoice::TableWrite => DoorbellPolicy::TableAddressWrite,
            PolicyChoice::KernelWindow { start, last } => {
                DoorbellPolicy::KernelProgrammedWindow { start, last }
            }
        }
    }

    /// The model of `DeviceProgram::KernelProgrammed::address_matches`: whether the guest's
    /// `address` is the kernel's doorbell (`Kernel`) or lies in `[start, last]`
    /// (`KernelWindow`); `None` for the policies that write the address through.
    pub fn address_matches(self, address: u64) -> Option<bool> {
        match self {
            PolicyChoice::Kernel(db) => Some(address == db),
            PolicyChoice::KernelWindow { start, last } => Some(start <= address && address <= last),
            PolicyChoice::PerVector | PolicyChoice::TableWrite => None,
        }
    }

    /// Whether the kernel keeps its own address and data in the device (nothing is ever
    /// written through).
    pub fn kernel_programmed(self) -> bool {
        matches!(
            self,
            PolicyChoice::Kernel(_) | PolicyChoice::KernelWindow { .. }
        )
    }

    /// Checks what every target's device program must hold under this choice for a vector
    /// whose guest address is `addr`: a kernel-programmed entry names `addr`, answers
    /// `address_matches` as [`PolicyChoice::address_matches`] does and writes nothing
    /// through; `SetIova` comes only under `PerVector`, with `addr`. A table write is
    /// returned for the caller's own checks (MSI has no table, MSI-X checks where it goes).
    pub(crate) fn check_program(self, p: &DeviceProgram, addr: u64) -> Option<TableAddressWrite> {
        match *p {
            DeviceProgram::KernelProgrammed {
                guest_address,
                address_matches,
                ..
            } => {
                assert_eq!(guest_address, addr);
                let Some(want) = self.address_matches(addr) else {
                    panic!("KernelProgrammed under {self:?}");
                };
                assert_eq!(
                    address_matches, want,
                    "address_matches of {addr:#x} under {self:?}"
                );
                // Nothing is written through: the device keeps the kernel's address.
                assert_eq!(p.device_address(), None);
                None
            }
            DeviceProgram::SetIova { iova, .. } => {
                assert_eq!(self, PolicyChoice::PerVector, "SetIova: {p:?}");
                assert_eq!(iova, addr);
                None
            }
            DeviceProgram::WriteTableAddress(w) => Some(w),
        }
    }
}

impl Wire for PolicyChoice {
    fn decode(r: &mut Reader<'_>) -> Self {
        let tag = r.u8() % 4;
        let db = r.u64();
        match tag {
            0 => PolicyChoice::Kernel(db),
            1 => PolicyChoice::PerVector,
            2 => PolicyChoice::TableWrite,
            _ => PolicyChoice::KernelWindow {
                start: db,
                last: r.u64(),
            },
        }
    }
    fn encode(&self, w: &mut Writer) {
        let (tag, db) = match *self {
            PolicyChoice::Kernel(d) => (0, d),
            PolicyChoice::PerVector => (1, 0),
            PolicyChoice::TableWrite => (2, 0),
            PolicyChoice::KernelWindow { start, .. } => (3, start),
        };
        w.u8(tag);
        w.u64(db);
        if let PolicyChoice::KernelWindow { last, .. } = *self {
            w.u64(last);
        }
    }
}

/// One guest or host action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MsixOp {
    /// Config write at `cap offset - 4 + rel` of `len` (1..=8) bytes of `value`.
    ConfigWrite {
        /// Offset relative to 4 bytes before the capability, 0..20.
        rel: u8,
        /// Length, 1..=8.
        len: u8,
        /// Little-endian value (low `len` bytes used).
        value: u64,
    },
    /// Config read, as `ConfigWrite`.
    ConfigRead {
        /// Offset relative to 4 bytes before the capability.
        rel: u8,
        /// Length, 1..=8.
        len: u8,
    },
    /// BAR write.
    BarWrite {
        /// Where.
        place: Place,
        /// Index into the length table.
        len_sel: u8,
        /// Value (little-endian, repeated for 16-byte accesses).
        value: u64,
    },
    /// BAR read.
    BarRead {
        /// Where.
        place: Place,
        /// Index into the length table.
        len_sel: u8,
    },
    /// The host reports the device signalled `vector` (may be out of range).
    Signal(u16),
    /// Take the batch and apply it to the router.
    Commit,
    /// Function reset.
    Reset,
    /// Snapshot, restore into a fresh state, compare; `adopt` continues with the restored one.
    Snapshot {
        /// Continue with the restored state.
        adopt: bool,
    },
    /// Check what write-through sends to the device under a policy.
    Program(PolicyChoice),
    /// Linux-style entry programming: address, data, then vector control, through the table.
    Entry {
        /// Vector (reduced modulo the table size).
        vector: u16,
        /// Message address.
        address: u64,
        /// Message data.
        data: u32,
        /// Mask bit to leave.
        masked: bool,
    },
    /// Message Control high byte: Enable (bit 7), Function Mask (bit 6).
    Control {
        /// MSI-X Enable.
        enable: bool,
        /// Function Mask.
        mask: bool,
    },
}

impl Wire for MsixOp {
    fn decode(r: &mut Reader<'_>) -> Self {
        match r.u8() % 11 {
            0 => MsixOp::ConfigWrite {
                rel: r.u8() % 20,
                len: r.u8() % 8 + 1,
                value: r.u64(),
            },
            1 => MsixOp::ConfigRead {
                rel: r.u8() % 20,
                len: r.u8() % 8 + 1,
            },
            2 => MsixOp::BarWrite {
                place: Place::decode(r),
                len_sel: r.u8() % LENS.len() as u8,
                value: r.u64(),
            },
            3 => MsixOp::BarRead {
                place: Place::decode(r),
                len_sel: r.u8() % LENS.len() as u8,
            },
            4 => MsixOp::Signal(r.u16()),
            5 => MsixOp::Commit,
            6 => MsixOp::Reset,
            7 => MsixOp::Snapshot { adopt: r.bool() },
            8 => MsixOp::Program(PolicyChoice::decode(r)),
            9 => MsixOp::Entry {
                vector: r.u16(),
                address: r.u64(),
                data: r.u32(),
                masked: r.bool(),
            },
            _ => MsixOp::Control {
                enable: r.bool(),
                mask: r.bool(),
            },
        }
    }

    fn encode(&self, w: &mut Writer) {
        match *self {
            MsixOp::ConfigWrite { rel, len, value } => {
                w.u8(0);
                w.u8(rel);
                w.u8(len - 1);
                w.u64(value);
            }
            MsixOp::ConfigRead { rel, len } => {
                w.u8(1);
                w.u8(rel);
                w.u8(len - 1);
            }
            MsixOp::BarWrite {
                place,
                len_sel,
                value,
            } => {
                w.u8(2);
                place.encode(w);
                w.u8(len_sel);
                w.u64(value);
            }
            MsixOp::BarRead { place, len_sel } => {
                w.u8(3);
                place.encode(w);
                w.u8(len_sel);
            }
            MsixOp::Signal(v) => {
                w.u8(4);
                w.u16(v);
            }
            MsixOp::Commit => w.u8(5),
            MsixOp::Reset => w.u8(6),
            MsixOp::Snapshot { adopt } => {
                w.u8(7);
                w.bool(adopt);
            }
            MsixOp::Program(p) => {
                w.u8(8);
                p.encode(w);
            }
            MsixOp::Entry {
                vector,
                address,
                data,
                masked,
            } => {
                w.u8(9);
                w.u16(vector);
                w.u64(address);
                w.u32(data);
                w.bool(masked);
            }
            MsixOp::Control { enable, mask } => {
                w.u8(10);
                w.bool(enable);
                w.bool(mask);
            }
        }
    }
}

/// A device (capability, BARs, host page size, relocation policy) and a sequence of
/// accesses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsixInput {
    /// The six BAR slots.
    pub bars: [BarSpec; 6],
    /// Table Size field (N - 1), 0..=0x7ff.
    pub table_size: u16,
    /// Table BIR (6 and 7 are reserved: the capability is refused).
    pub table_bir: u8,
    /// Raw table offset, reduced modulo the BAR size and QWORD aligned at build time.
    pub table_offset: u32,
    /// PBA BIR.
    pub pba_bir: u8,
    /// Raw PBA offset, as the table's.
    pub pba_offset: u32,
    /// Capability offset selector: `0x40 + 4 * (sel % 45)`.
    pub cap_sel: u8,
    /// Host page shift, 12..=16.
    pub page_shift: u8,
    /// Relocation policy: 0 never, 1 if shared, 2 always.
    pub relocation: u8,
    /// The accesses.
    pub ops: Vec<MsixOp>,
}

impl Wire for MsixInput {
    fn decode(r: &mut Reader<'_>) -> Self {
        let mut bars = [BarSpec::default(); 6];
        for b in bars.iter_mut() {
            *b = BarSpec::decode(r);
        }
        MsixInput {
            bars,
            table_size: r.u16() & 0x7ff,
            table_bir: r.u8() % 8,
            table_offset: r.u32(),
            pba_bir: r.u8() % 8,
            pba_offset: r.u32(),
            cap_sel: r.u8() % 45,
            page_shift: 12 + r.u8() % 5,
            relocation: r.u8() % 3,
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
        w.u8(self.cap_sel);
        w.u8(self.page_shift - 12);
        w.u8(self.relocation);
        for op in &self.ops {
            op.encode(w);
        }
    }
}

crate::impl_arbitrary!(MsixInput);

/// Derives a QWORD-aligned offset inside the BAR `bir` names (raw when the slot is absent).
fn place_in_bar(bars: &[BarInfo; 6], bir: u8, raw: u32) -> u32 {
    let size = bars
        .get(usize::from(bir))
        .filter(|b| b.kind != BarKind::Absent)
        .map_or(0, |b| b.size);
    let off = if size == 0 {
        u64::from(raw)
    } else {
        u64::from(raw) % size
    };
    (off as u32) & !7
}

impl MsixInput {
    /// The BAR slots as `msi-trap` sees them.
    pub fn bar_infos(&self) -> [BarInfo; 6] {
        let mut out = [BarInfo::ABSENT; 6];
        for (o, b) in out.iter_mut().zip(&self.bars) {
            *o = b.info();
        }
        out
    }

    /// Offset of the capability in config space.
    pub fn cap_offset(&self) -> u8 {
        0x40 + 4 * self.cap_sel
    }

    /// The Table Offset/BIR and PBA Offset/BIR registers the device reports.
    pub fn registers(&self) -> (u32, u32) {
        let bars = self.bar_infos();
        let t = place_in_bar(&bars, self.table_bir, self.table_offset) | u32::from(self.table_bir);
        let p = place_in_bar(&bars, self.pba_bir, self.pba_offset) | u32::from(self.pba_bir);
        (t, p)
    }

    fn policy(&self) -> RelocationPolicy {
        match self.relocation {
            0 => RelocationPolicy::Never,
            1 => RelocationPolicy::IfShared,
            _ => RelocationPolicy::Always,
        }
    }

    /// Builds the emulation; `None` when the device description is refused (a defined
    /// outcome: the capability or the layout is invalid).
    pub fn build(&self) -> Option<(MsixCapability, MsixLayout)> {
        let (t, p) = self.registers();
        let cap =
            MsixCapability::from_registers(self.cap_offset(), 0, self.table_size, t, p).ok()?;
        let layout = MsixLayout::compute(
            &self.bar_infos(),
            cap.real(),
            1u64 << self.page_shift,
            self.policy(),
        )
        .ok()?;
        Some((cap, layout))
    }
}

/// A real MSI-X table that records the writes `apply_table_writes` makes.
#[derive(Debug, Default)]
struct RecordingTable(Vec<(u8, u64, u32, u32)>);

impl PhysicalMsixTable for RecordingTable {
    type Error = std::convert::Infallible;
    fn write_address(
        &mut self,
        bar: BarIndex,
        offset: u64,
        lo: u32,
        hi: u32,
    ) -> Result<(), Self::Error> {
        self.0.push((bar.get(), offset, lo, hi));
        Ok(())
    }
}

/// One table entry of the model: address low, address high, data, vector control.
type Entry = [u32; 4];

const RESET_ENTRY: Entry = [0, 0, 0, 1];

/// The reference model: the guest-visible MSI-X state, from the spec's rules alone.
#[derive(Debug, Clone)]
struct Model {
    cap_offset: u16,
    vectors: u16,
    enabled: bool,
    fmask: bool,
    entries: Vec<Entry>,
    pending: Vec<bool>,
    /// Released pending vectors not yet taken: vector -> message at release.
    released: BTreeMap<u16, (u64, u32)>,
}

fn address(e: &Entry) -> u64 {
    u64::from(e[1]) << 32 | u64::from(e[0])
}

impl Model {
    fn new(cap_offset: u16, vectors: u16) -> Self {
        Model {
            cap_offset,
            vectors,
            enabled: false,
            fmask: false,
            entries: vec![RESET_ENTRY; usize::from(vectors)],
            pending: vec![false; usize::from(vectors)],
            released: BTreeMap::new(),
        }
    }

    fn masked(&self, v: usize) -> bool {
        self.fmask || self.entries.get(v).is_none_or(|e| e[3] & 1 != 0)
    }

    fn deliverable(&self, v: usize) -> bool {
        self.enabled && !self.masked(v)
    }

    fn message(&self, v: usize) -> (u64, u32) {
        self.entries.get(v).map_or((0, 0), |e| (address(e), e[2]))
    }

    /// PCI 3.0 §6.8.2.9: a deliverable vector with its Pending bit set sends its message
    /// and clears the bit.
    fn release(&mut self) {
        if !self.pending.contains(&true) {
            return;
        }
        for v in 0..self.entries.len() {
            if self.pending[v] && self.deliverable(v) {
                self.pending[v] = false;
                let msg = self.message(v);
                self.released.insert(v as u16, msg);
            }
        }
    }

    fn control(&self) -> u16 {
        (self.vectors - 1) | u16::from(self.fmask) << 14 | u16::from(self.enabled) << 15
    }

    /// A config write: only Message Control bits 15:14 (byte `cap + 3`) are writable.
    fn config_write(&mut self, offset: u64, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            if offset + i as u64 == u64::from(self.cap_offset) + 3 {
                self.enabled = b & 0x80 != 0;
                self.fmask = b & 0x40 != 0;
            }
        }
        self.release();
    }

    /// A table write at `o` from the table start: aligned DWORD or QWORD inside the table.
    fn table_write(&mut self, o: u64, bytes: &[u8]) {
        let len = bytes.len() as u64;
        let shape = (len == 4 && o.is_multiple_of(4)) || (len == 8 && o.is_multiple_of(8));
        if !shape || o + len > u64::from(self.vectors) * 16 {
            return;
        }
        let v = (o / 16) as usize;
        for (k, chunk) in bytes.chunks_exact(4).enumerate() {
            let field = ((o % 16) / 4) as usize + k;
            let val = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let e = &mut self.entries[v];
            match field {
                0 => e[0] = val & !3,
                1 => e[1] = val,
                2 => e[2] = val,
                _ => e[3] = val & 1,
            }
        }
        self.release();
    }

    fn table_read(&self, o: u64, len: usize) -> Option<Vec<u8>> {
        let shape = (len == 4 && o.is_multiple_of(4)) || (len == 8 && o.is_multiple_of(8));
        if !shape || o + len as u64 > u64::from(self.vectors) * 16 {
            return None;
        }
        let e = &self.entries[(o / 16) as usize];
        let first = ((o % 16) / 4) as usize;
        Some(
            e[first..first + len / 4]
                .iter()
                .flat_map(|d| d.to_le_bytes())
                .collect(),
        )
    }

    fn pba_read(&self, o: u64, len: usize) -> Option<Vec<u8>> {
        let shape = (len == 4 && o.is_multiple_of(4)) || (len == 8 && o.is_multiple_of(8));
        let pba_len = u64::from(self.vectors).div_ceil(64) * 8;
        if !shape || o + len as u64 > pba_len {
            return None;
        }
        let mut out = vec![0u8; len];
        for (i, byte) in out.iter_mut().enumerate() {
            for bit in 0..8 {
                let v = (o as usize + i) * 8 + bit;
                if self.pending.get(v).copied().unwrap_or(false) {
                    *byte |= 1 << bit;
                }
            }
        }
        Some(out)
    }

    fn reset(&mut self) {
        self.enabled = false;
        self.fmask = false;
        self.entries.fill(RESET_ENTRY);
        self.pending.fill(false);
        self.released.clear();
    }

    fn signal(&mut self, v: u16) -> Option<SignalOutcome> {
        let i = usize::from(v);
        if v >= self.vectors {
            return None;
        }
        Some(if !self.enabled {
            SignalOutcome::Dropped
        } else if self.masked(i) {
            self.pending[i] = true;
            SignalOutcome::Pending
        } else {
            let (address, data) = self.message(i);
            SignalOutcome::Deliver(MsiMessage { address, data })
        })
    }
}

/// Fills a buffer of `len` bytes with `value` repeated.
fn fill(value: u64, len: usize) -> Vec<u8> {
    value
        .to_le_bytes()
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    alen != 0 && blen != 0 && a < b.saturating_add(blen) && b < a.saturating_add(alen)
}

/// Checks the layout's isolation properties: structures inside their BARs, every byte the
/// guest could reach the real or emulated table/PBA through is trapped.
pub fn check_layout(layout: &MsixLayout) {
    let ranges = layout.trap_ranges();
    let page = layout.page_size();
    for pair in ranges.windows(2) {
        let sorted = pair[0].bar < pair[1].bar
            || (pair[0].bar == pair[1].bar && pair[0].end < pair[1].start);
        assert!(
            sorted,
            "trap ranges overlap, touch or are unsorted: {ranges:?}"
        );
    }
    for r in &ranges {
        assert!(r.start < r.end, "empty trap range {r:?}");
        assert_eq!(
            r.start % page,
            0,
            "trap range start not page aligned: {r:?}"
        );
        let size = layout.guest_bars()[r.bar.as_usize()].size;
        assert!(
            r.end <= size,
            "trap range {r:?} beyond guest BAR size {size:#x}"
        );
    }
    let trapped = |bar: BarIndex, start: u64, len: u64| {
        // Every byte of [start, start + len) lies in one of the (merged) ranges.
        let end = start + len;
        let mut at = start;
        for r in ranges.iter().filter(|r| r.bar == bar) {
            if r.start <= at && at < r.end {
                at = r.end;
            }
        }
        at >= end
    };
    let (tlen, plen) = (layout.table_len(), layout.pba_len());
    let (gt, gp) = (layout.guest_table(), layout.guest_pba());
    for (what, region, len) in [("guest table", gt, tlen), ("guest PBA", gp, plen)] {
        let size = layout.guest_bars()[region.bar.as_usize()].size;
        assert!(
            region.offset + len <= size,
            "{what} at {region:?} ({len:#x} bytes) beyond guest BAR size {size:#x}"
        );
        assert!(
            trapped(region.bar, region.offset, len),
            "{what} at {region:?} is not trapped: {ranges:?}"
        );
    }
    let real = layout.real();
    if layout.relocation() != Relocation::None {
        for (what, region, len) in [
            ("real table", real.table, tlen),
            ("real PBA", real.pba, plen),
        ] {
            assert!(
                trapped(region.bar, region.offset, len),
                "hidden {what} at {region:?} is not trapped: {ranges:?}"
            );
            assert_eq!(
                layout.classify(region.bar, region.offset, 4),
                GuestAccess::Hidden,
                "{what} still reachable at its old place"
            );
        }
    }
    for v in [0u64, u64::from(layout.vectors()) - 1] {
        let g = MsixRegion {
            bar: gt.bar,
            offset: gt.offset + 16 * v,
        };
        let r = MsixRegion {
            bar: real.table.bar,
            offset: real.table.offset + 16 * v,
        };
        assert_eq!(
            layout.guest_to_real(g.bar, g.offset),
            Some(r),
            "guest_to_real of vector {v}"
        );
        assert_eq!(
            layout.real_to_guest(r.bar, r.offset),
            Some(g),
            "real_to_guest of vector {v}"
        );
    }
}

/// The run of one input: the emulation, the model and the router the harness plays.
struct Run {
    cap: MsixCapability,
    layout: MsixLayout,
    msix: MsixState,
    model: Model,
    /// The router the harness plays: the route installed per vector.
    routes: Vec<Option<(u64, u32)>>,
    last_batch: UpdateBatch,
}

impl Run {
    fn resolve(&self, place: Place) -> (BarIndex, u64) {
        let (gt, gp, rt) = (
            self.layout.guest_table(),
            self.layout.guest_pba(),
            self.layout.real().table,
        );
        match place {
            Place::GuestTable(o) => (gt.bar, gt.offset + u64::from(o)),
            Place::GuestPba(o) => (gp.bar, gp.offset + u64::from(o)),
            Place::RealTable(o) => (rt.bar, rt.offset + u64::from(o)),
            Place::Raw(b, o) => (BarIndex::new(b).unwrap_or(gt.bar), u64::from(o)),
        }
    }

    /// Where an access in the guest BAR lands, by the spec's rules: in the table (offset),
    /// touching the table or PBA without starting inside, or elsewhere.
    fn model_target(&self, bar: BarIndex, off: u64, len: usize) -> ModelTarget {
        let len1 = (len as u64).max(1);
        let gt = self.layout.guest_table();
        let gp = self.layout.guest_pba();
        if gt.bar == bar && overlaps(off, len1, gt.offset, self.layout.table_len()) {
            return if off >= gt.offset {
                ModelTarget::Table(off - gt.offset)
            } else {
                ModelTarget::Refused
            };
        }
        if gp.bar == bar && overlaps(off, len1, gp.offset, self.layout.pba_len()) {
            return if off >= gp.offset {
                ModelTarget::Pba(off - gp.offset)
            } else {
                ModelTarget::Refused
            };
        }
        ModelTarget::Other
    }

    /// A forwarded access must stay inside the real BAR and never touch the real table or
    /// PBA (the data dword is host-owned; PCI 3.0 §6.8.2 structures are emulated).
    fn check_forward(&self, at: MsixRegion, len: usize) {
        let real = self.layout.real();
        let len1 = (len as u64).max(1);
        for (what, r, rlen) in [
            ("table", real.table, self.layout.table_len()),
            ("PBA", real.pba, self.layout.pba_len()),
        ] {
            assert!(
                !(r.bar == at.bar && overlaps(at.offset, len1, r.offset, rlen)),
                "access of {len} bytes forwarded to {at:?} touches the real {what} at {r:?}"
            );
        }
        let size = self.layout.real_bars()[at.bar.as_usize()].size;
        assert!(
            at.offset.checked_add(len1).is_some_and(|e| e <= size),
            "access of {len} bytes forwarded to {at:?} beyond the real BAR ({size:#x})"
        );
    }

    fn check_routes(&self, when: &str) {
        for (v, route) in self.routes.iter().enumerate() {
            let want = self.model.deliverable(v).then(|| self.model.message(v));
            assert_eq!(*route, want, "{when}: route of vector {v}");
        }
    }

    fn commit(&mut self) {
        let batch = self.msix.take_updates();
        let mut last = None;
        for u in &batch.updates {
            assert!(
                last < Some(u.index),
                "batch not sorted or repeats vector {}",
                u.index
            );
            last = Some(u.index);
            let v = usize::from(u.index);
            assert!(
                u.index < self.model.vectors,
                "update for vector {} beyond the table",
                u.index
            );
            assert_eq!(
                u.is_deliverable(),
                self.model.deliverable(v),
                "deliverability of {v}"
            );
            assert_eq!(u.enabled, self.model.enabled, "enable of vector {v}");
            assert_eq!(u.masked, self.model.masked(v), "mask of vector {v}");
            assert_eq!(
                (u.address, u.data),
                self.model.message(v),
                "message of vector {v}"
            );
            self.routes[v] = u.is_deliverable().then_some((u.address, u.data));
        }
        let got: BTreeMap<u16, (u64, u32)> = batch
            .deliveries
            .iter()
            .map(|d| (d.index, (d.address, d.data)))
            .collect();
        assert_eq!(got.len(), batch.deliveries.len(), "a delivery repeats");
        assert_eq!(got, self.model.released, "deliveries");
        self.model.released.clear();
        self.check_routes("after a commit");
        self.last_batch = batch;
    }

    fn check_programs(&self, choice: PolicyChoice) {
        let policy = choice.policy();
        let all = self.msix.device_program(policy);
        let for_batch = self.msix.device_program_for(policy, &self.last_batch);
        let real = self.layout.real().table;
        for p in all.iter().chain(&for_batch) {
            let v = usize::from(p.vector());
            assert!(
                self.model.deliverable(v),
                "program for undeliverable vector {v}: {p:?}"
            );
            let (addr, _) = self.model.message(v);
            if let Some(w) = choice.check_program(p, addr) {
                assert_eq!(choice, PolicyChoice::TableWrite, "table write: {p:?}");
                assert_eq!(w.at.bar, real.bar, "table write to another BAR");
                assert_eq!(
                    w.at.offset,
                    real.offset + 16 * v as u64,
                    "table write offset"
                );
                assert_eq!(p.device_address(), Some(addr));
            }
        }
        let deliverable = (0..self.model.entries.len())
            .filter(|&v| self.model.deliverable(v))
            .count();
        assert_eq!(
            all.len(),
            deliverable,
            "device_program misses deliverable vectors"
        );
        // What reaches the real table: the address of each vector under `TableWrite`, and
        // nothing at all (neither address nor data) under the kernel-programmed policies.
        let mut table = RecordingTable::default();
        let written = apply_table_writes(&all, &mut table).unwrap_or_default();
        assert_eq!(written, table.0.len(), "apply_table_writes count");
        if choice.kernel_programmed() {
            assert!(
                table.0.is_empty(),
                "{choice:?} wrote the real table: {:?}",
                table.0
            );
        } else if choice == PolicyChoice::TableWrite {
            assert_eq!(written, deliverable, "table writes under {choice:?}");
        }
        // Data independence: rewrite every data dword, nothing device-bound may change.
        let mut other = self.msix.clone();
        for v in 0..u64::from(self.model.vectors) {
            let flipped = !self.model.entries[v as usize][2];
            other.write_table(v * 16 + 8, &flipped.to_le_bytes());
        }
        assert_eq!(
            other.device_program(policy),
            all,
            "device program depends on the guest's data"
        );
    }

    fn step(&mut self, op: &MsixOp) {
        match *op {
            MsixOp::ConfigWrite { rel, len, value } => {
                let off = self.model.cap_offset + u16::from(rel) - 4;
                let bytes = fill(value, usize::from(len));
                self.msix.write_config(off, &bytes);
                self.model.config_write(u64::from(off), &bytes);
            }
            MsixOp::ConfigRead { rel, len } => {
                let off = self.model.cap_offset + u16::from(rel) - 4;
                let mut buf = vec![0xa5u8; usize::from(len)];
                self.msix.read_config(off, &mut buf);
                let mut image = [0u8; 12];
                image[0] = PCI_CAP_ID_MSIX;
                image[2..4].copy_from_slice(&self.model.control().to_le_bytes());
                image[4..8].copy_from_slice(&self.layout.table_offset_bir().to_le_bytes());
                image[8..12].copy_from_slice(&self.layout.pba_offset_bir().to_le_bytes());
                for (i, b) in buf.iter().enumerate() {
                    let a = usize::from(off) + i;
                    let cap = usize::from(self.model.cap_offset);
                    let want = if (cap..cap + 12).contains(&a) {
                        image[a - cap]
                    } else {
                        0xa5
                    };
                    assert_eq!(*b, want, "config byte {a:#x}");
                }
            }
            MsixOp::BarWrite {
                place,
                len_sel,
                value,
            } => {
                let (bar, off) = self.resolve(place);
                let len = LENS[usize::from(len_sel) % LENS.len()];
                let bytes = fill(value, len);
                let target = self.model_target(bar, off, len);
                match self.msix.write_bar(bar, off, &bytes) {
                    BarAccess::Forward(at) => {
                        assert_eq!(target, ModelTarget::Other, "forwarded a table/PBA access");
                        assert_eq!(
                            at,
                            MsixRegion { bar, offset: off },
                            "forward moved the access"
                        );
                        self.check_forward(at, len);
                    }
                    BarAccess::Handled => {
                        if let ModelTarget::Table(o) = target {
                            self.model.table_write(o, &bytes);
                        }
                    }
                }
            }
            MsixOp::BarRead { place, len_sel } => {
                let (bar, off) = self.resolve(place);
                let len = LENS[usize::from(len_sel) % LENS.len()];
                let mut buf = vec![0x5au8; len];
                let target = self.model_target(bar, off, len);
                match self.msix.read_bar(bar, off, &mut buf) {
                    BarAccess::Forward(at) => {
                        assert_eq!(target, ModelTarget::Other, "forwarded a table/PBA read");
                        self.check_forward(at, len);
                    }
                    BarAccess::Handled => {
                        let want = match target {
                            ModelTarget::Table(o) => self.model.table_read(o, len),
                            ModelTarget::Pba(o) => self.model.pba_read(o, len),
                            ModelTarget::Refused => Some(vec![0xff; len]),
                            ModelTarget::Other => None,
                        };
                        match want {
                            Some(w) => assert_eq!(buf, w, "read of {len} at {bar:?}+{off:#x}"),
                            None if target != ModelTarget::Other => {
                                assert_eq!(buf, vec![0xff; len], "unsupported read")
                            }
                            None => assert_eq!(buf, vec![0; len], "hidden/unbacked read"),
                        }
                    }
                }
            }
            MsixOp::Signal(v) => {
                let vector = v % (self.model.vectors + 2);
                let got = self.msix.signal(vector).ok();
                let want = self.model.signal(vector);
                assert_eq!(got, want, "signal of vector {vector}");
            }
            MsixOp::Commit => self.commit(),
            MsixOp::Reset => {
                self.msix.reset();
                self.model.reset();
            }
            MsixOp::Snapshot { adopt } => {
                let snap = self.msix.snapshot();
                let mut fresh = match MsixState::new(self.cap, self.layout.clone()) {
                    Ok(s) => s,
                    Err(e) => panic!("rebuilding the state failed: {e}"),
                };
                if let Err(e) = fresh.restore(&snap) {
                    panic!("restore of a live snapshot failed: {e}");
                }
                assert_eq!(fresh.snapshot(), snap, "snapshot round trip");
                if adopt {
                    self.msix = fresh;
                    // The restored state reports every vector at the next commit.
                    assert!(self.msix.updates_due());
                }
            }
            MsixOp::Program(choice) => self.check_programs(choice),
            MsixOp::Entry {
                vector,
                address,
                data,
                masked,
            } => {
                let base = u64::from(vector % self.model.vectors) * 16;
                let writes = [
                    (base, address as u32),
                    (base + 4, (address >> 32) as u32),
                    (base + 8, data),
                    (base + 12, u32::from(masked)),
                ];
                for (o, val) in writes {
                    self.msix.write_table(o, &val.to_le_bytes());
                    self.model.table_write(o, &val.to_le_bytes());
                }
            }
            MsixOp::Control { enable, mask } => {
                let b = u8::from(enable) << 7 | u8::from(mask) << 6;
                let off = self.model.cap_offset + 3;
                self.msix.write_config(off, &[b]);
                self.model.config_write(u64::from(off), &[b]);
            }
        }
        // Model and emulation agree on every vector's state.
        assert_eq!(self.msix.enabled(), self.model.enabled, "MSI-X Enable");
        assert_eq!(
            self.msix.function_masked(),
            self.model.fmask,
            "Function Mask"
        );
        if !self.msix.updates_due() {
            self.check_routes("no batch due");
        }
    }

    fn check_state(&self) {
        for v in 0..self.model.vectors {
            let i = usize::from(v);
            let e = self.model.entries[i];
            let got = self
                .msix
                .entry(v)
                .map(|g| [g.address_lo, g.address_hi, g.data, g.vector_control]);
            assert_eq!(got, Some(e), "entry {v}");
            assert_eq!(
                self.msix.is_pending(v),
                self.model.pending[i],
                "Pending bit {v}"
            );
            assert_eq!(
                self.msix.is_deliverable(v),
                self.model.deliverable(i),
                "vector {v}"
            );
            assert!(
                !(self.msix.is_pending(v) && self.msix.is_deliverable(v)),
                "vector {v} deliverable and pending"
            );
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelTarget {
    Table(u64),
    Pba(u64),
    Refused,
    Other,
}

/// Replays one input, panicking on the first broken invariant.
pub fn run(input: &MsixInput) {
    let Some((cap, layout)) = input.build() else {
        return;
    };
    check_layout(&layout);
    let msix = match MsixState::new(cap, layout.clone()) {
        Ok(m) => m,
        Err(e) => panic!("a layout computed from the capability was refused: {e}"),
    };
    let mut run = Run {
        cap,
        layout,
        msix,
        model: Model::new(u16::from(cap.offset), cap.vectors),
        routes: vec![None; usize::from(cap.vectors)],
        last_batch: UpdateBatch::default(),
    };
    for op in &input.ops {
        run.step(op);
    }
    run.check_state();
    run.commit();
    run.check_state();
}

/// Seed inputs: the igb layout (BAR3, 10 vectors) driven the way Linux brings MSI-X up,
/// plus relocation and masking scenarios from the crate's unit tests.
pub fn seeds() -> Vec<(&'static str, MsixInput)> {
    let igb_bars = [
        BarSpec { kind: 3, log2: 17 },
        BarSpec::default(),
        BarSpec::default(),
        BarSpec { kind: 3, log2: 14 },
        BarSpec::default(),
        BarSpec::default(),
    ];
    let linux_bringup = |vectors: u16| {
        let mut ops = vec![MsixOp::Control {
            enable: true,
            mask: true,
        }];
        for v in 0..vectors {
            ops.push(MsixOp::Entry {
                vector: v,
                address: 0x0800_0040,
                data: u32::from(v),
                masked: false,
            });
        }
        ops.push(MsixOp::Control {
            enable: true,
            mask: false,
        });
        ops.push(MsixOp::Commit);
        ops
    };
    let base = MsixInput {
        bars: igb_bars,
        table_size: 9,
        table_bir: 3,
        table_offset: 0,
        pba_bir: 3,
        pba_offset: 0x2000,
        cap_sel: (0x70 - 0x40) / 4,
        page_shift: 12,
        relocation: 0,
        ops: linux_bringup(10),
    };
    let mut masking = base.clone();
    masking.ops.extend([
        MsixOp::BarWrite {
            place: Place::GuestTable(16 * 2 + 12),
            len_sel: 0,
            value: 1,
        },
        MsixOp::Signal(2),
        MsixOp::BarRead {
            place: Place::GuestPba(0),
            len_sel: 1,
        },
        MsixOp::BarWrite {
            place: Place::GuestTable(16 * 2 + 12),
            len_sel: 0,
            value: 0,
        },
        MsixOp::Commit,
        MsixOp::Program(PolicyChoice::TableWrite),
        MsixOp::Snapshot { adopt: true },
        MsixOp::Commit,
    ]);
    let mut relocated = base.clone();
    relocated.relocation = 2;
    relocated.ops.extend([
        MsixOp::BarRead {
            place: Place::RealTable(0),
            len_sel: 0,
        },
        MsixOp::BarWrite {
            place: Place::RealTable(8),
            len_sel: 0,
            value: 0xdead,
        },
        MsixOp::Program(PolicyChoice::Kernel(0x0800_0040)),
    ]);
    let mut shared = base.clone();
    // Table and PBA share BAR0 with registers: relocation if shared.
    shared.bars = [
        BarSpec { kind: 2, log2: 14 },
        BarSpec { kind: 2, log2: 12 },
        BarSpec::default(),
        BarSpec::default(),
        BarSpec::default(),
        BarSpec::default(),
    ];
    shared.table_bir = 0;
    shared.table_offset = 0x3000;
    shared.pba_bir = 0;
    shared.pba_offset = 0x3800;
    shared.relocation = 1;
    shared.ops.extend([
        MsixOp::BarWrite {
            place: Place::Raw(0, 0x100),
            len_sel: 0,
            value: 7,
        },
        MsixOp::ConfigWrite {
            rel: 6,
            len: 2,
            value: 0x4000,
        },
        MsixOp::Reset,
        MsixOp::Commit,
    ]);
    // RISC-V (issue 19): the guest programs its vCPUs' vIMSIC pages in the host's software
    // MSI window, vector 9 an address outside it; write-through asked under windows that
    // hold them, none of them (inverted), one address, and every address.
    let window = |start, last| MsixOp::Program(PolicyChoice::KernelWindow { start, last });
    let mut imsic = base.clone();
    for op in imsic.ops.iter_mut() {
        if let MsixOp::Entry {
            vector, address, ..
        } = op
        {
            *address = if *vector == 9 {
                0x0800_0040
            } else {
                0x2800_0000 + (u64::from(*vector % 4) << 12)
            };
        }
    }
    imsic.ops.extend([
        window(0x2800_0000, 0x2800_3fff),
        window(0x2800_3fff, 0x2800_0000),
        window(0x2800_1000, 0x2800_1000),
        window(0, u64::MAX),
        window(u64::MAX, 0),
        MsixOp::BarWrite {
            place: Place::GuestTable(16 * 2 + 12),
            len_sel: 0,
            value: 1,
        },
        MsixOp::Commit,
        window(0x2800_0000, 0x2800_3fff),
        MsixOp::Entry {
            vector: 2,
            address: 0x2800_2000,
            data: 2,
            masked: false,
        },
        MsixOp::Commit,
        window(0x2800_2000, 0x2800_2fff),
    ]);
    let mut big = base.clone();
    big.table_size = 0x7ff;
    big.bars[3] = BarSpec { kind: 3, log2: 16 };
    big.pba_offset = 0x8000;
    big.ops = linux_bringup(70);
    vec![
        ("igb_linux_bringup", base),
        ("igb_mask_pending_unmask", masking),
        ("igb_relocated", relocated),
        ("shared_page_reloc", shared),
        ("table_2048", big),
        ("imsic_window", imsic),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::check_round_trip;

    #[test]
    fn wire_round_trips() {
        check_round_trip::<MsixInput>(1, 300, 600);
    }

    #[test]
    fn seeds_replay_clean() {
        for (name, s) in seeds() {
            assert!(s.build().is_some(), "seed {name} builds");
            assert_eq!(
                MsixInput::from_bytes(&s.to_bytes()),
                s,
                "seed {name} encodes"
            );
            run(&s);
        }
    }

    #[test]
    fn random_inputs_replay() {
        let mut rng = crate::wire::XorShift::new(7);
        for _ in 0..300 {
            let len = (rng.next_u64() % 400) as usize;
            run(&MsixInput::from_bytes(&rng.bytes(len)));
        }
    }

    #[test]
    fn policy_tags_before_issue_19_decode_unchanged() {
        // Tags 0..=2 read one u64 as before; tag 3 (new) reads start and last.
        let mut bytes = vec![0u8];
        bytes.extend_from_slice(&0x0800_0040u64.to_le_bytes());
        assert_eq!(
            PolicyChoice::from_bytes(&bytes),
            PolicyChoice::Kernel(0x0800_0040)
        );
        bytes[0] = 1;
        assert_eq!(PolicyChoice::from_bytes(&bytes), PolicyChoice::PerVector);
        bytes[0] = 2;
        assert_eq!(PolicyChoice::from_bytes(&bytes), PolicyChoice::TableWrite);
        bytes[0] = 3;
        bytes.extend_from_slice(&7u64.to_le_bytes());
        let w = PolicyChoice::KernelWindow {
            start: 0x0800_0040,
            last: 7,
        };
        assert_eq!(PolicyChoice::from_bytes(&bytes), w);
        assert_eq!(w.to_bytes(), bytes);
    }

    #[test]
    fn window_model_is_the_closed_range() {
        let w = |start, last| PolicyChoice::KernelWindow { start, last };
        assert_eq!(w(10, 20).address_matches(10), Some(true));
        assert_eq!(w(10, 20).address_matches(20), Some(true));
        assert_eq!(w(10, 20).address_matches(21), Some(false));
        assert_eq!(w(10, 20).address_matches(9), Some(false));
        assert_eq!(w(5, 5).address_matches(5), Some(true));
        assert_eq!(w(20, 10).address_matches(15), Some(false));
        assert_eq!(w(0, u64::MAX).address_matches(u64::MAX), Some(true));
        assert_eq!(PolicyChoice::PerVector.address_matches(0), None);
    }

    #[test]
    fn imsic_seed_reaches_both_window_answers() {
        // The seed's state holds vIMSIC pages in the window and one address outside it,
        // so its `Program(KernelWindow)` checks see both `address_matches` answers.
        let (_, s) = seeds()
            .into_iter()
            .find(|(n, _)| *n == "imsic_window")
            .unwrap();
        let (cap, layout) = s.build().unwrap();
        let mut m = MsixState::new(cap, layout).unwrap();
        for op in &s.ops {
            if let MsixOp::Entry {
                vector,
                address,
                data,
                masked,
            } = *op
            {
                let base = u64::from(vector) * 16;
                m.write_table(base, &(address as u32).to_le_bytes());
                m.write_table(base + 4, &((address >> 32) as u32).to_le_bytes());
                m.write_table(base + 8, &data.to_le_bytes());
                m.write_table(base + 12, &u32::from(masked).to_le_bytes());
            } else if let MsixOp::Control { enable, mask } = *op {
                m.write_config(
                    u16::from(cap.offset) + 3,
                    &[u8::from(enable) << 7 | u8::from(mask) << 6],
                );
            }
        }
        let matches: Vec<bool> = m
            .device_program(DoorbellPolicy::KernelProgrammedWindow {
                start: 0x2800_0000,
                last: 0x2800_3fff,
            })
            .into_iter()
            .map(|p| match p {
                DeviceProgram::KernelProgrammed {
                    address_matches, ..
                } => address_matches,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(matches.len(), 10);
        assert_eq!(matches.iter().filter(|m| !**m).count(), 1);
    }

    #[test]
    fn model_catches_a_lost_unmask() {
        // The checks are live: a router that never saw the unmask disagrees.
        let (_, s) = seeds().remove(0);
        let (cap, layout) = s.build().unwrap();
        let mut run = Run {
            cap,
            layout: layout.clone(),
            msix: MsixState::new(cap, layout).unwrap(),
            model: Model::new(u16::from(cap.offset), cap.vectors),
            routes: vec![None; usize::from(cap.vectors)],
            last_batch: UpdateBatch::default(),
        };
        for op in &s.ops {
            run.step(op);
        }
        run.routes[3] = None;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run.check_routes("test")));
        assert!(r.is_err());
    }
}
