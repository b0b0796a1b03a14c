// Copyright 2025 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Where the guest sees the MSI-X table and PBA, and where the real ones are.
//!
//! The VMM maps a passed-through BAR straight into the guest except the host pages that hold
//! the MSI-X table and PBA: those must trap, so that the guest never writes the device's real
//! table (the data dword is host-owned). When other device registers share those pages they
//! trap too and are forwarded, which is slow; [`MsixLayout::compute`] can instead move the
//! guest's view of the table and PBA to pages of their own.
//!
//! # The computation
//!
//! Inputs: the real BARs ([`BarInfo`]), the real table and PBA location from the capability
//! ([`RealMsix`]), the host page size, and a [`RelocationPolicy`].
//!
//! * With no relocation the guest layout is the real one.
//! * A relocation puts the guest table at offset 0 of a region of its own and the guest PBA
//!   at the next page boundary after the table, so each occupies whole pages that hold
//!   nothing else. The region is, in order of preference:
//!   1. a free BAR slot ([`Relocation::NewBar`]): 64-bit when two consecutive slots are free,
//!      else 32-bit; its size is the footprint rounded up to a power of two;
//!   2. the upper part of the table's BAR, grown ([`Relocation::GrowBar`]): the region
//!      starts at the old size rounded up to a page, and the BAR's new size is the next power
//!      of two that holds it (PCI 3.0 §6.2.5.1: BAR sizes are powers of two).
//! * The real table and PBA stay where they are in the real BARs, and the guest's identical
//!   offsets become [`GuestAccess::Hidden`]: they read as zero and ignore writes, so the
//!   guest cannot reach the real table through its old location.
//!
//! [`RelocationPolicy::IfShared`] relocates when a page holding the table or the PBA also
//! holds bytes that are neither (they may be device registers: this crate cannot tell).
//!
//! # Translation
//!
//! [`MsixLayout::classify`] sorts a guest BAR access; [`MsixLayout::guest_to_real`] and
//! [`MsixLayout::real_to_guest`] translate single addresses both ways;
//! [`MsixLayout::trap_ranges`] lists the guest BAR ranges the VMM must trap (never map).

use serde::{Deserialize, Serialize};

use crate::msix::cap::MSIX_ENTRY_SIZE;

/// A BAR slot index, 0..=5 (PCI 3.0 §6.2.5.1; the BIR field of the MSI-X capability).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct BarIndex(u8);

impl BarIndex {
    /// Number of BAR slots of a type 0 header.
    pub const COUNT: usize = 6;

    /// `Some` for 0..=5; BIR values 6 and 7 are reserved (PCI 3.0 §6.8.2.4).
    pub const fn new(index: u8) -> Option<Self> {
        if (index as usize) < Self::COUNT {
            Some(BarIndex(index))
        } else {
            None
        }
    }

    /// The slot number.
    pub const fn get(self) -> u8 {
        self.0
    }

    /// The slot number as an index into a `[_; 6]` array, always in range.
    pub const fn as_usize(self) -> usize {
        self.0 as usize
    }
}

impl TryFrom<u8> for BarIndex {
    type Error = LayoutError;

    fn try_from(value: u8) -> Result<Self, Self::Error> {
        BarIndex::new(value).ok_or(LayoutError::InvalidBarIndex(value))
    }
}

impl From<BarIndex> for u8 {
    fn from(bar: BarIndex) -> u8 {
        bar.0
    }
}

/// What a BAR slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BarKind {
    /// Unimplemented slot (or the upper half of a 64-bit BAR: describe that slot as `Absent`).
    Absent,
    /// I/O space BAR.
    Io,
    /// 32-bit memory BAR.
    Memory32,
    /// 64-bit memory BAR; the next slot is its upper half and must be `Absent`.
    Memory64,
}

/// One BAR slot: its kind and size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BarInfo {
    /// What the slot holds.
    pub kind: BarKind,
    /// Size in bytes (a power of two; ignored for `Absent`).
    pub size: u64,
}

impl BarInfo {
    /// An unimplemented slot.
    pub const ABSENT: BarInfo = BarInfo {
        kind: BarKind::Absent,
        size: 0,
    };

    /// A 32-bit memory BAR of `size` bytes.
    pub const fn memory32(size: u64) -> Self {
        BarInfo {
            kind: BarKind::Memory32,
            size,
        }
    }

    /// A 64-bit memory BAR of `size` bytes.
    pub const fn memory64(size: u64) -> Self {
        BarInfo {
            kind: BarKind::Memory64,
            size,
        }
    }

    /// An I/O BAR of `size` bytes.
    pub const fn io(size: u64) -> Self {
        BarInfo {
            kind: BarKind::Io,
            size,
        }
    }

    fn is_memory(&self) -> bool {
        matches!(self.kind, BarKind::Memory32 | BarKind::Memory64)
    }

    fn present_size(&self) -> u64 {
        if self.kind == BarKind::Absent {
            0
        } else {
            self.size
        }
    }
}

/// A location in BAR space: BAR and byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MsixRegion {
    /// The BAR.
    pub bar: BarIndex,
    /// Byte offset inside the BAR.
    pub offset: u64,
}

/// The real (device) MSI-X table and PBA, as the device's capability describes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RealMsix {
    /// Number of table entries, 1..=2048.
    pub vectors: u16,
    /// Table location (Table Offset/BIR).
    pub table: MsixRegion,
    /// PBA location (PBA Offset/BIR).
    pub pba: MsixRegion,
}

/// When to relocate the guest's view of the table and PBA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RelocationPolicy {
    /// Keep the real layout.
    #[default]
    Never,
    /// Relocate when a page holding the table or PBA also holds other bytes.
    IfShared,
    /// Always relocate.
    Always,
}

/// The relocation chosen by [`MsixLayout::compute`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Relocation {
    /// The guest sees the real layout.
    None,
    /// The table's BAR is larger in the guest; the table and PBA live past the real size.
    GrowBar {
        /// The BAR.
        bar: BarIndex,
        /// Its real size.
        real_size: u64,
        /// Its guest-visible size.
        guest_size: u64,
    },
    /// A BAR slot the device does not implement holds the table and PBA.
    NewBar {
        /// The slot (and, when `is_64bit`, the next one as its upper half).
        bar: BarIndex,
        /// Its size.
        size: u64,
        /// Whether it is a 64-bit memory BAR.
        is_64bit: bool,
    },
}

/// What a guest BAR access lands on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestAccess {
    /// Inside the emulated MSI-X table, at this offset from its start.
    Table(u64),
    /// Inside the emulated PBA, at this offset from its start.
    Pba(u64),
    /// Touches the table or PBA without starting inside it: an unsupported access.
    Unsupported,
    /// Touches the real table or PBA at their old place after a relocation: read as zero,
    /// writes ignored.
    Hidden,
    /// Guest BAR space with nothing behind it (relocation padding, beyond the BAR, or an
    /// absent BAR): read as zero, writes ignored.
    Unbacked,
    /// Device registers: forward the access to the real device at this location.
    Device(MsixRegion),
}

/// A guest BAR range the VMM must trap rather than map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrapRange {
    /// The guest BAR.
    pub bar: BarIndex,
    /// First byte (page aligned).
    pub start: u64,
    /// One past the last byte (page aligned, or the BAR's end when the BAR is smaller).
    pub end: u64,
}

/// Errors from [`MsixLayout::compute`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A BAR index above 5.
    #[error("MSI-X layout: BAR index {0} is not 0..=5")]
    InvalidBarIndex(u8),
    /// The page size is not a power of two of at least 4 KiB.
    #[error("MSI-X layout: page size {0:#x} is not a power of two >= 0x1000")]
    InvalidPageSize(u64),
    /// The vector count is not 1..=2048.
    #[error("MSI-X layout: {0} vectors is not 1..=2048")]
    InvalidVectorCount(u16),
    /// A BAR's size is not a power of two of at least the minimum for its kind.
    #[error("MSI-X layout: BAR {bar} size {size:#x} is not a valid BAR size")]
    InvalidBarSize {
        /// The BAR.
        bar: u8,
        /// Its size.
        size: u64,
    },
    /// A 64-bit BAR in slot 5, or whose upper slot is not `Absent`.
    #[error("MSI-X layout: 64-bit BAR {0} has no free upper slot")]
    Bad64BitBar(u8),
    /// The table or PBA BIR names a slot that is not a memory BAR.
    #[error("MSI-X layout: {what} BIR {bar} is not a memory BAR")]
    NotMemoryBar {
        /// "table" or "PBA".
        what: &'static str,
        /// The BIR.
        bar: u8,
    },
    /// The table or PBA offset is not QWORD aligned.
    #[error("MSI-X layout: {what} offset {offset:#x} is not 8-byte aligned")]
    Misaligned {
        /// "table" or "PBA".
        what: &'static str,
        /// The offset.
        offset: u64,
    },
    /// The table or PBA runs past the end of its BAR.
    #[error(
        "MSI-X layout: {what} at BAR {bar} offset {offset:#x} ({len:#x} bytes) exceeds BAR size {size:#x}"
    )]
    OutsideBar {
        /// "table" or "PBA".
        what: &'static str,
        /// The BAR.
        bar: u8,
        /// The offset.
        offset: u64,
        /// The structure's length.
        len: u64,
        /// The BAR's size.
        size: u64,
    },
    /// The table and PBA overlap (PCIe Base 6.0 §7.7.2: they must not).
    #[error("MSI-X layout: table and PBA overlap in BAR {0}")]
    TablePbaOverlap(u8),
    /// No free slot, and growing the table's BAR would exceed its kind's limit or push the
    /// table offset beyond what the 32-bit Table Offset field can express.
    #[error("MSI-X layout: no room to relocate into BAR {bar} of size {size:#x}")]
    NoRoom {
        /// The table's BAR.
        bar: u8,
        /// Its real size.
        size: u64,
    },
}

/// The guest-visible and real MSI-X layout. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MsixLayout {
    page_size: u64,
    real: RealMsix,
    guest_table: MsixRegion,
    guest_pba: MsixRegion,
    relocation: Relocation,
    real_bars: [BarInfo; 6],
    guest_bars: [BarInfo; 6],
}

/// Bytes of a table of `vectors` entries.
pub const fn table_len(vectors: u16) -> u64 {
    vectors as u64 * MSIX_ENTRY_SIZE
}

/// Bytes of the PBA for `vectors` entries: one bit per vector in QWORDs, `div_ceil(n, 64)`
/// QWORDs (PCI 3.0 §6.8.2.10). Test `pba_size_is_div_ceil`.
pub const fn pba_len(vectors: u16) -> u64 {
    (vectors as u64).div_ceil(64) * 8
}

fn align_down(x: u64, page: u64) -> u64 {
    x & !(page - 1)
}

fn align_up(x: u64, page: u64) -> Option<u64> {
    Some(x.checked_add(page - 1)? & !(page - 1))
}

/// Whether `[a, a + alen)` and `[b, b + blen)` intersect (no overflow: saturating ends).
fn intersects(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    alen != 0 && blen != 0 && a < b.saturating_add(blen) && b < a.saturating_add(alen)
}

/// Whether `[a, a + alen)` lies inside `[b, b + blen)`.
fn contains(b: u64, blen: u64, a: u64, alen: u64) -> bool {
    a >= b
        && a.checked_add(alen)
            .is_some_and(|end| b.checked_add(blen).is_some_and(|bend| end <= bend))
}

/// Bytes of `[start, end)` covered by `[o, o + len)`.
fn covered(start: u64, end: u64, o: u64, len: u64) -> u64 {
    let s = start.max(o);
    let e = end.min(o.saturating_add(len));
    e.saturating_sub(s)
}

fn validate_bars(bars: &[BarInfo; 6]) -> Result<(), LayoutError> {
    for (i, bar) in bars.iter().enumerate() {
        let min = match bar.kind {
            BarKind::Absent => continue,
            BarKind::Io => 4,
            BarKind::Memory32 | BarKind::Memory64 => 16,
        };
        if !bar.size.is_power_of_two() || bar.size < min {
            return Err(LayoutError::InvalidBarSize {
                bar: i as u8,
                size: bar.size,
            });
        }
        if bar.kind == BarKind::Memory32 && bar.size > 1 << 31 {
            return Err(LayoutError::InvalidBarSize {
                bar: i as u8,
                size: bar.size,
            });
        }
        if bar.kind == BarKind::Memory64
            && bars.get(i + 1).is_none_or(|b| b.kind != BarKind::Absent)
        {
            return Err(LayoutError::Bad64BitBar(i as u8));
        }
    }
    Ok(())
}

fn slot_free(bars: &[BarInfo; 6], i: usize) -> bool {
    bars.get(i).is_some_and(|b| b.kind == BarKind::Absent)
        && (i == 0 || bars.get(i - 1).is_none_or(|b| b.kind != BarKind::Memory64))
}

impl MsixLayout {
    /// Computes the layout (see the module docs).
    ///
    /// # Example
    ///
    /// ```
    /// use msi_trap::msix::layout::*;
    ///
    /// let bars = [
    ///     BarInfo::memory64(0x2_0000), BarInfo::ABSENT, // BAR0/1: registers
    ///     BarInfo::ABSENT, BarInfo::memory64(0x4000), BarInfo::ABSENT, BarInfo::ABSENT,
    /// ];
    /// let bar3 = BarIndex::new(3).unwrap();
    /// let real = RealMsix {
    ///     vectors: 10,
    ///     table: MsixRegion { bar: bar3, offset: 0 },
    ///     pba: MsixRegion { bar: bar3, offset: 0x2000 },
    /// };
    /// let layout = MsixLayout::compute(&bars, real, 0x1000, RelocationPolicy::IfShared).unwrap();
    /// // The 160-byte table shares its page with unknown bytes: moved to a free slot.
    /// // BAR0 and BAR3 are 64-bit (slots 0-1, 3-4): slot 2 becomes a 32-bit BAR.
    /// assert!(matches!(layout.relocation(), Relocation::NewBar { is_64bit: false, .. }));
    /// assert_eq!(layout.guest_table().bar.get(), 2);
    /// assert_eq!(layout.classify(bar3, 0x10, 4), GuestAccess::Hidden);
    /// ```
    pub fn compute(
        bars: &[BarInfo; 6],
        real: RealMsix,
        page_size: u64,
        policy: RelocationPolicy,
    ) -> Result<Self, LayoutError> {
        if !page_size.is_power_of_two() || page_size < 0x1000 {
            return Err(LayoutError::InvalidPageSize(page_size));
        }
        if !(1..=crate::msix::cap::MSIX_MAX_VECTORS).contains(&real.vectors) {
            return Err(LayoutError::InvalidVectorCount(real.vectors));
        }
        validate_bars(bars)?;
        let tlen = table_len(real.vectors);
        let plen = pba_len(real.vectors);
        for (what, region, len) in [("table", real.table, tlen), ("PBA", real.pba, plen)] {
            let bar = bars[region.bar.as_usize()];
            if !bar.is_memory() {
                return Err(LayoutError::NotMemoryBar {
                    what,
                    bar: region.bar.get(),
                });
            }
            if region.offset % 8 != 0 {
                return Err(LayoutError::Misaligned {
                    what,
                    offset: region.offset,
                });
            }
            if !contains(0, bar.size, region.offset, len) {
                return Err(LayoutError::OutsideBar {
                    what,
                    bar: region.bar.get(),
                    offset: region.offset,
                    len,
                    size: bar.size,
                });
            }
        }
        if real.table.bar == real.pba.bar
            && intersects(real.table.offset, tlen, real.pba.offset, plen)
        {
            return Err(LayoutError::TablePbaOverlap(real.table.bar.get()));
        }

        let mut layout = MsixLayout {
            page_size,
            real,
            guest_table: real.table,
            guest_pba: real.pba,
            relocation: Relocation::None,
            real_bars: *bars,
            guest_bars: *bars,
        };
        let relocate = match policy {
            RelocationPolicy::Never => false,
            RelocationPolicy::Always => true,
            RelocationPolicy::IfShared => layout.shares_pages(),
        };
        if relocate {
            layout.relocate()?;
        }
        Ok(layout)
    }

    /// Whether a page holding the real table or PBA holds other bytes of its BAR.
    fn shares_pages(&self) -> bool {
        let tlen = table_len(self.real.vectors);
        let plen = pba_len(self.real.vectors);
        [(self.real.table, tlen), (self.real.pba, plen)]
            .into_iter()
            .any(|(region, len)| {
                let bar_size = self.real_bars[region.bar.as_usize()].size;
                let start = align_down(region.offset, self.page_size);
                let end = align_up(region.offset.saturating_add(len), self.page_size)
                    .unwrap_or(u64::MAX)
                    .min(bar_size);
                let mut mine = covered(start, end, self.real.table.offset, tlen)
                    * u64::from(self.real.table.bar == region.bar);
                mine += covered(start, end, self.real.pba.offset, plen)
                    * u64::from(self.real.pba.bar == region.bar);
                mine < end.saturating_sub(start)
            })
    }

    /// Bytes the relocated table and PBA need: each rounded up to whole pages.
    fn footprint(&self) -> Option<(u64, u64)> {
        let t = align_up(table_len(self.real.vectors), self.page_size)?;
        let p = align_up(pba_len(self.real.vectors), self.page_size)?;
        Some((t, t.checked_add(p)?))
    }

    fn relocate(&mut self) -> Result<(), LayoutError> {
        let table_bar = self.real.table.bar;
        let no_room = LayoutError::NoRoom {
            bar: table_bar.get(),
            size: self.real_bars[table_bar.as_usize()].size,
        };
        let (pba_at, total) = self.footprint().ok_or(no_room.clone())?;
        let size = total.checked_next_power_of_two().ok_or(no_room.clone())?;
        let free64 = (0..BarIndex::COUNT - 1)
            .find(|&i| slot_free(&self.real_bars, i) && slot_free(&self.real_bars, i + 1));
        let free32 = (0..BarIndex::COUNT).find(|&i| slot_free(&self.real_bars, i));
        let pick = free64.map(|i| (i, true)).or(free32.map(|i| (i, false)));
        if let Some((i, is_64bit)) = pick
            && let Some(bar) = BarIndex::new(i as u8)
            && (is_64bit || size <= 1 << 31)
        {
            self.guest_bars[i] = if is_64bit {
                BarInfo::memory64(size)
            } else {
                BarInfo::memory32(size)
            };
            self.guest_table = MsixRegion { bar, offset: 0 };
            self.guest_pba = MsixRegion {
                bar,
                offset: pba_at,
            };
            self.relocation = Relocation::NewBar {
                bar,
                size,
                is_64bit,
            };
            return Ok(());
        }
        let real_bar = self.real_bars[table_bar.as_usize()];
        let base = align_up(real_bar.size, self.page_size).ok_or(no_room.clone())?;
        let end = base.checked_add(total).ok_or(no_room.clone())?;
        let guest_size = end.checked_next_power_of_two().ok_or(no_room.clone())?;
        let limit = match real_bar.kind {
            BarKind::Memory32 => 1 << 31,
            _ => 1 << 63,
        };
        let pba_offset = base.checked_add(pba_at).ok_or(no_room.clone())?;
        // The Table Offset and PBA Offset fields are 32-bit QWORD-aligned offsets.
        if guest_size > limit || pba_offset > u64::from(!7u32) {
            return Err(no_room);
        }
        self.guest_bars[table_bar.as_usize()].size = guest_size;
        self.guest_table = MsixRegion {
            bar: table_bar,
            offset: base,
        };
        self.guest_pba = MsixRegion {
            bar: table_bar,
            offset: pba_offset,
        };
        self.relocation = Relocation::GrowBar {
            bar: table_bar,
            real_size: real_bar.size,
            guest_size,
        };
        Ok(())
    }

    /// Host page size the layout was computed for.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Number of vectors.
    pub fn vectors(&self) -> u16 {
        self.real.vectors
    }

    /// The real table and PBA.
    pub fn real(&self) -> RealMsix {
        self.real
    }

    /// Where the guest sees the table.
    pub fn guest_table(&self) -> MsixRegion {
        self.guest_table
    }

    /// Where the guest sees the PBA.
    pub fn guest_pba(&self) -> MsixRegion {
        self.guest_pba
    }

    /// The relocation chosen.
    pub fn relocation(&self) -> Relocation {
        self.relocation
    }

    /// The real BARs.
    pub fn real_bars(&self) -> &[BarInfo; 6] {
        &self.real_bars
    }

    /// The guest-visible BARs (a grown or new BAR differs from the real one).
    pub fn guest_bars(&self) -> &[BarInfo; 6] {
        &self.guest_bars
    }

    /// Bytes of the table.
    pub fn table_len(&self) -> u64 {
        table_len(self.real.vectors)
    }

    /// Bytes of the PBA.
    pub fn pba_len(&self) -> u64 {
        pba_len(self.real.vectors)
    }

    /// The guest-visible Table Offset/BIR register (PCI 3.0 §6.8.2.4): offset in bits 31:3,
    /// BIR in bits 2:0. [`compute`](Self::compute) guarantees the offset fits.
    pub fn table_offset_bir(&self) -> u32 {
        (self.guest_table.offset as u32 & !7) | u32::from(self.guest_table.bar.get())
    }

    /// The guest-visible PBA Offset/BIR register (PCI 3.0 §6.8.2.5).
    pub fn pba_offset_bir(&self) -> u32 {
        (self.guest_pba.offset as u32 & !7) | u32::from(self.guest_pba.bar.get())
    }

    /// Whether a relocation hides the real structures at their old guest offsets.
    fn relocated(&self) -> bool {
        self.relocation != Relocation::None
    }

    /// Sorts a guest access of `len` bytes at `offset` in guest BAR `bar`, in this order:
    /// table, PBA, hidden real structures, unbacked space, device registers.
    #[inline]
    pub fn classify(&self, bar: BarIndex, offset: u64, len: usize) -> GuestAccess {
        // The hot case first: an access wholly inside the guest table.
        if bar == self.guest_table.bar
            && let Some(o) = offset.checked_sub(self.guest_table.offset)
            && o.checked_add(len as u64)
                .is_some_and(|end| end <= self.table_len())
            && len != 0
        {
            return GuestAccess::Table(o);
        }
        self.classify_other(bar, offset, len)
    }

    #[inline(never)]
    fn classify_other(&self, bar: BarIndex, offset: u64, len: usize) -> GuestAccess {
        let len = len as u64;
        for (region, rlen, inside) in [
            (
                self.guest_table,
                self.table_len(),
                GuestAccess::Table as fn(u64) -> _,
            ),
            (
                self.guest_pba,
                self.pba_len(),
                GuestAccess::Pba as fn(u64) -> _,
            ),
        ] {
            if region.bar == bar && intersects(offset, len.max(1), region.offset, rlen) {
                return match offset.checked_sub(region.offset) {
                    Some(o) => inside(o),
                    None => GuestAccess::Unsupported,
                };
            }
        }
        if self.relocated() {
            for (region, rlen) in [
                (self.real.table, self.table_len()),
                (self.real.pba, self.pba_len()),
            ] {
                if region.bar == bar && intersects(offset, len.max(1), region.offset, rlen) {
                    return GuestAccess::Hidden;
                }
            }
        }
        let real_size = self.real_bars[bar.as_usize()].present_size();
        if !contains(0, real_size, offset, len.max(1)) {
            return GuestAccess::Unbacked;
        }
        GuestAccess::Device(MsixRegion { bar, offset })
    }

    /// Translates a guest BAR address to the real device address behind it: table and PBA
    /// bytes to the real structures, device registers to themselves. `None` for hidden or
    /// unbacked addresses.
    pub fn guest_to_real(&self, bar: BarIndex, offset: u64) -> Option<MsixRegion> {
        match self.classify(bar, offset, 1) {
            GuestAccess::Table(o) => Some(MsixRegion {
                bar: self.real.table.bar,
                offset: self.real.table.offset.checked_add(o)?,
            }),
            GuestAccess::Pba(o) => Some(MsixRegion {
                bar: self.real.pba.bar,
                offset: self.real.pba.offset.checked_add(o)?,
            }),
            GuestAccess::Device(r) => Some(r),
            GuestAccess::Unsupported | GuestAccess::Hidden | GuestAccess::Unbacked => None,
        }
    }

    /// Translates a real device address to where the guest sees it: the real table and PBA
    /// to the guest table and PBA, other registers to themselves. `None` beyond the real BAR.
    pub fn real_to_guest(&self, bar: BarIndex, offset: u64) -> Option<MsixRegion> {
        for (real, guest, len) in [
            (self.real.table, self.guest_table, self.table_len()),
            (self.real.pba, self.guest_pba, self.pba_len()),
        ] {
            if real.bar == bar && contains(real.offset, len, offset, 1) {
                return Some(MsixRegion {
                    bar: guest.bar,
                    offset: guest.offset.checked_add(offset - real.offset)?,
                });
            }
        }
        let real_size = self.real_bars[bar.as_usize()].present_size();
        (offset < real_size).then_some(MsixRegion { bar, offset })
    }

    /// The guest BAR ranges the VMM must trap instead of mapping, merged and sorted: the
    /// pages of the guest table and PBA, the pages of the hidden real structures, and the
    /// whole relocation region. Ends are clipped to the guest BAR size.
    pub fn trap_ranges(&self) -> Vec<TrapRange> {
        let mut ranges = Vec::with_capacity(5);
        let mut push = |bar: BarIndex, start: u64, len: u64| {
            let bar_size = self.guest_bars[bar.as_usize()].present_size();
            let s = align_down(start, self.page_size);
            let e = align_up(start.saturating_add(len), self.page_size)
                .unwrap_or(u64::MAX)
                .min(bar_size);
            if s < e {
                ranges.push(TrapRange {
                    bar,
                    start: s,
                    end: e,
                });
            }
        };
        push(
            self.guest_table.bar,
            self.guest_table.offset,
            self.table_len(),
        );
        push(self.guest_pba.bar, self.guest_pba.offset, self.pba_len());
        match self.relocation {
            Relocation::None => {}
            Relocation::GrowBar {
                bar,
                real_size,
                guest_size,
            } => {
                push(bar, real_size, guest_size - real_size);
            }
            Relocation::NewBar { bar, size, .. } => push(bar, 0, size),
        }
        if self.relocated() {
            push(
                self.real.table.bar,
                self.real.table.offset,
                self.table_len(),
            );
            push(self.real.pba.bar, self.real.pba.offset, self.pba_len());
        }
        ranges.sort_by_key(|r| (r.bar, r.start));
        let mut merged: Vec<TrapRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last) if last.bar == r.bar && r.start <= last.end => {
                    last.end = last.end.max(r.end);
                }
                _ => merged.push(r),
            }
        }
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(i: u8) -> BarIndex {
        BarIndex::new(i).unwrap()
    }

    fn real(vectors: u16, tb: u8, toff: u64, pb: u8, poff: u64) -> RealMsix {
        RealMsix {
            vectors,
            table: MsixRegion {
                bar: bar(tb),
                offset: toff,
            },
            pba: MsixRegion {
                bar: bar(pb),
                offset: poff,
            },
        }
    }

    /// igb-like: registers in BAR0 (64-bit), MSI-X in BAR3 (64-bit, 16 KiB).
    fn igb_bars() -> [BarInfo; 6] {
        [
            BarInfo::memory64(0x2_0000),
            BarInfo::ABSENT,
            BarInfo::ABSENT,
            BarInfo::memory64(0x4000),
            BarInfo::ABSENT,
            BarInfo::ABSENT,
        ]
    }

    /// All six slots used: BAR0/1 64-bit registers, BAR2/3 64-bit MSI-X, BAR4 32-bit, BAR5 io.
    fn full_bars() -> [BarInfo; 6] {
        [
            BarInfo::memory64(0x2_0000),
            BarInfo::ABSENT,
            BarInfo::memory64(0x4000),
            BarInfo::ABSENT,
            BarInfo::memory32(0x1000),
            BarInfo::io(0x20),
        ]
    }

    #[test]
    fn bar_index_rejects_reserved_bir() {
        assert!(BarIndex::new(5).is_some());
        assert!(BarIndex::new(6).is_none());
        assert!(BarIndex::new(7).is_none());
        assert_eq!(BarIndex::try_from(6), Err(LayoutError::InvalidBarIndex(6)));
    }

    #[test]
    fn pba_size_is_div_ceil() {
        for (n, qwords) in [
            (1u16, 1u64),
            (63, 1),
            (64, 1),
            (65, 2),
            (128, 2),
            (129, 3),
            (2048, 32),
        ] {
            assert_eq!(pba_len(n), qwords * 8, "n = {n}");
        }
    }

    #[test]
    fn never_keeps_real_layout() {
        let l = MsixLayout::compute(
            &igb_bars(),
            real(10, 3, 0, 3, 0x2000),
            0x1000,
            RelocationPolicy::Never,
        )
        .unwrap();
        assert_eq!(l.relocation(), Relocation::None);
        assert_eq!(l.table_offset_bir(), 3);
        assert_eq!(l.pba_offset_bir(), 0x2003);
        assert_eq!(l.classify(bar(3), 0x10, 4), GuestAccess::Table(0x10));
        assert_eq!(l.classify(bar(3), 0x2000, 8), GuestAccess::Pba(0));
        // Other bytes of the table page are device registers, forwarded.
        assert_eq!(
            l.classify(bar(3), 0x200, 4),
            GuestAccess::Device(MsixRegion {
                bar: bar(3),
                offset: 0x200
            })
        );
        assert_eq!(l.classify(bar(3), 0x4000, 4), GuestAccess::Unbacked);
        assert_eq!(l.classify(bar(2), 0, 4), GuestAccess::Unbacked);
        assert_eq!(
            l.trap_ranges(),
            vec![
                TrapRange {
                    bar: bar(3),
                    start: 0,
                    end: 0x1000
                },
                TrapRange {
                    bar: bar(3),
                    start: 0x2000,
                    end: 0x3000
                }
            ]
        );
    }

    #[test]
    fn straddling_the_table_start_is_unsupported() {
        let l = MsixLayout::compute(
            &igb_bars(),
            real(4, 3, 0x100, 3, 0x2000),
            0x1000,
            RelocationPolicy::Never,
        )
        .unwrap();
        assert_eq!(l.classify(bar(3), 0xfc, 8), GuestAccess::Unsupported);
        assert_eq!(l.classify(bar(3), 0x13c, 8), GuestAccess::Table(0x3c));
        assert!(matches!(
            l.classify(bar(3), 0xf8, 8),
            GuestAccess::Device(_)
        ));
        assert!(matches!(
            l.classify(bar(3), 0x140, 4),
            GuestAccess::Device(_)
        ));
    }

    #[test]
    fn if_shared_moves_to_free_slot() {
        let l = MsixLayout::compute(
            &igb_bars(),
            real(10, 3, 0, 3, 0x2000),
            0x1000,
            RelocationPolicy::IfShared,
        )
        .unwrap();
        assert_eq!(
            l.relocation(),
            Relocation::NewBar {
                bar: bar(2),
                size: 0x2000,
                is_64bit: false
            }
        );
        // BAR0 (slots 0-1) and BAR3 (slots 3-4) are 64-bit: slots 2 and 5 are free, no two
        // consecutive ones, so the new BAR is 32-bit in slot 2.
        assert_eq!(l.guest_bars()[2], BarInfo::memory32(0x2000));
        assert_eq!(l.table_offset_bir(), 2);
        assert_eq!(l.pba_offset_bir(), 0x1002);
        // Table and PBA each start a page of their own.
        assert_eq!(l.guest_table().offset % 0x1000, 0);
        assert_eq!(l.guest_pba().offset % 0x1000, 0);
        assert_eq!(l.classify(bar(2), 0x0, 4), GuestAccess::Table(0));
        assert_eq!(l.classify(bar(2), 0x1000, 4), GuestAccess::Pba(0));
        assert_eq!(l.classify(bar(2), 0x200, 4), GuestAccess::Unbacked);
        // The old place of the real table is hidden, the rest of its page forwarded.
        assert_eq!(l.classify(bar(3), 0x0, 4), GuestAccess::Hidden);
        assert_eq!(l.classify(bar(3), 0x2000, 8), GuestAccess::Hidden);
        assert!(matches!(
            l.classify(bar(3), 0x200, 4),
            GuestAccess::Device(_)
        ));
        // Both ways.
        assert_eq!(
            l.guest_to_real(bar(2), 0x24),
            Some(MsixRegion {
                bar: bar(3),
                offset: 0x24
            })
        );
        assert_eq!(
            l.real_to_guest(bar(3), 0x24),
            Some(MsixRegion {
                bar: bar(2),
                offset: 0x24
            })
        );
        assert_eq!(
            l.real_to_guest(bar(3), 0x2004),
            Some(MsixRegion {
                bar: bar(2),
                offset: 0x1004
            })
        );
        assert_eq!(l.guest_to_real(bar(3), 0x10), None);
        assert_eq!(l.guest_to_real(bar(2), 0x800), None);
        assert_eq!(
            l.real_to_guest(bar(0), 0x100),
            Some(MsixRegion {
                bar: bar(0),
                offset: 0x100
            })
        );
        assert_eq!(l.real_to_guest(bar(3), 0x4000), None);
        let traps = l.trap_ranges();
        assert!(traps.contains(&TrapRange {
            bar: bar(2),
            start: 0,
            end: 0x2000
        }));
        assert!(traps.contains(&TrapRange {
            bar: bar(3),
            start: 0,
            end: 0x1000
        }));
    }

    #[test]
    fn exclusive_pages_are_not_relocated() {
        // 256 vectors: the table is exactly BAR0's one page; the 32-byte PBA fills the
        // 32-byte BAR2 (the rest of its page is beyond the BAR: nothing of the device).
        let bars = [
            BarInfo::memory32(0x1000),
            BarInfo::memory32(0x1000),
            BarInfo::memory32(0x20),
            BarInfo::ABSENT,
            BarInfo::ABSENT,
            BarInfo::ABSENT,
        ];
        let l = MsixLayout::compute(
            &bars,
            real(256, 0, 0, 2, 0),
            0x1000,
            RelocationPolicy::IfShared,
        )
        .unwrap();
        assert_eq!(l.relocation(), Relocation::None);
        // One more vector and the PBA needs 40 bytes: no longer fits; with 255 vectors the
        // table leaves 16 bytes of its page: shared, moved to free slot 3 (64-bit: 3 and 4).
        let l = MsixLayout::compute(
            &bars,
            real(255, 0, 0, 2, 0),
            0x1000,
            RelocationPolicy::IfShared,
        )
        .unwrap();
        assert_eq!(
            l.relocation(),
            Relocation::NewBar {
                bar: bar(3),
                size: 0x2000,
                is_64bit: true
            }
        );
    }

    #[test]
    fn grows_bar_when_no_slot_is_free() {
        let l = MsixLayout::compute(
            &full_bars(),
            real(64, 2, 0x3000, 2, 0x3800),
            0x1000,
            RelocationPolicy::Always,
        )
        .unwrap();
        assert_eq!(
            l.relocation(),
            Relocation::GrowBar {
                bar: bar(2),
                real_size: 0x4000,
                guest_size: 0x8000
            }
        );
        assert_eq!(l.guest_table().offset, 0x4000);
        assert_eq!(l.guest_pba().offset, 0x5000);
        assert_eq!(l.guest_bars()[2].size, 0x8000);
        assert_eq!(l.classify(bar(2), 0x4000, 4), GuestAccess::Table(0));
        assert_eq!(l.classify(bar(2), 0x5000, 8), GuestAccess::Pba(0));
        assert_eq!(l.classify(bar(2), 0x6000, 4), GuestAccess::Unbacked);
        assert_eq!(l.classify(bar(2), 0x3000, 4), GuestAccess::Hidden);
        assert!(matches!(
            l.classify(bar(2), 0x2ffc, 4),
            GuestAccess::Device(_)
        ));
        // An access crossing from device registers into the table is unsupported.
        assert_eq!(l.classify(bar(2), 0x3ffc, 8), GuestAccess::Unsupported);
        assert_eq!(
            l.trap_ranges(),
            vec![TrapRange {
                bar: bar(2),
                start: 0x3000,
                end: 0x8000
            }]
        );
    }

    #[test]
    fn large_pages_round_bars() {
        // 64 KiB pages: a 16 KiB BAR grows to 128 KiB (base 64 KiB + 2 pages).
        let l = MsixLayout::compute(
            &full_bars(),
            real(10, 2, 0, 2, 0x2000),
            0x1_0000,
            RelocationPolicy::Always,
        )
        .unwrap();
        assert_eq!(
            l.relocation(),
            Relocation::GrowBar {
                bar: bar(2),
                real_size: 0x4000,
                guest_size: 0x4_0000
            }
        );
        assert_eq!(l.guest_table().offset, 0x1_0000);
        assert_eq!(l.guest_pba().offset, 0x2_0000);
    }

    #[test]
    fn falls_back_to_32bit_slot() {
        let mut bars = full_bars();
        bars[4] = BarInfo::ABSENT;
        bars[5] = BarInfo::io(0x20);
        let l = MsixLayout::compute(
            &bars,
            real(2048, 2, 0, 2, 0x3f00),
            0x1000,
            RelocationPolicy::Always,
        );
        // 2048 * 16 = 32 KiB table does not fit BAR2 (16 KiB): rejected first.
        assert!(matches!(
            l,
            Err(LayoutError::OutsideBar { what: "table", .. })
        ));
        bars[2] = BarInfo::memory64(0x1_0000);
        let l = MsixLayout::compute(
            &bars,
            real(2048, 2, 0, 2, 0x8000),
            0x1000,
            RelocationPolicy::Always,
        )
        .unwrap();
        assert_eq!(
            l.relocation(),
            Relocation::NewBar {
                bar: bar(4),
                size: 0x1_0000,
                is_64bit: false
            }
        );
        assert_eq!(l.guest_pba().offset, 0x8000);
    }

    #[test]
    fn rejects_bad_inputs() {
        let r = real(10, 3, 0, 3, 0x2000);
        assert_eq!(
            MsixLayout::compute(&igb_bars(), r, 0x800, RelocationPolicy::Never),
            Err(LayoutError::InvalidPageSize(0x800))
        );
        assert_eq!(
            MsixLayout::compute(&igb_bars(), r, 0x3000, RelocationPolicy::Never),
            Err(LayoutError::InvalidPageSize(0x3000))
        );
        assert_eq!(
            MsixLayout::compute(
                &igb_bars(),
                real(0, 3, 0, 3, 0x2000),
                0x1000,
                RelocationPolicy::Never
            ),
            Err(LayoutError::InvalidVectorCount(0))
        );
        assert_eq!(
            MsixLayout::compute(
                &igb_bars(),
                real(2049, 3, 0, 3, 0x2000),
                0x1000,
                RelocationPolicy::Never
            ),
            Err(LayoutError::InvalidVectorCount(2049))
        );
        assert!(matches!(
            MsixLayout::compute(
                &igb_bars(),
                real(10, 4, 0, 3, 0x2000),
                0x1000,
                RelocationPolicy::Never
            ),
            Err(LayoutError::NotMemoryBar {
                what: "table",
                bar: 4
            })
        ));
        assert!(matches!(
            MsixLayout::compute(
                &igb_bars(),
                real(10, 3, 0x3f80, 3, 0x2000),
                0x1000,
                RelocationPolicy::Never
            ),
            Err(LayoutError::OutsideBar { what: "table", .. })
        ));
        assert_eq!(
            MsixLayout::compute(
                &igb_bars(),
                real(10, 3, 0, 3, 0x90),
                0x1000,
                RelocationPolicy::Never
            ),
            Err(LayoutError::TablePbaOverlap(3))
        );
        assert!(matches!(
            MsixLayout::compute(
                &igb_bars(),
                real(10, 3, 4, 3, 0x2000),
                0x1000,
                RelocationPolicy::Never
            ),
            Err(LayoutError::Misaligned { .. })
        ));
        let mut bars = igb_bars();
        bars[5] = BarInfo::memory64(0x1000);
        assert_eq!(
            MsixLayout::compute(&bars, r, 0x1000, RelocationPolicy::Never),
            Err(LayoutError::Bad64BitBar(5))
        );
        let mut bars = igb_bars();
        bars[0].size = 0x3000;
        assert!(matches!(
            MsixLayout::compute(&bars, r, 0x1000, RelocationPolicy::Never),
            Err(LayoutError::InvalidBarSize { bar: 0, .. })
        ));
        let mut bars = igb_bars();
        bars[5] = BarInfo::io(0x20);
        bars[3] = BarInfo::io(0x4000);
        assert!(matches!(
            MsixLayout::compute(&bars, r, 0x1000, RelocationPolicy::Never),
            Err(LayoutError::NotMemoryBar { .. })
        ));
    }

    #[test]
    fn no_room_in_full_32bit_bar() {
        let bars = [
            BarInfo::memory32(1 << 31),
            BarInfo::memory64(0x1000),
            BarInfo::ABSENT,
            BarInfo::memory64(0x1000),
            BarInfo::ABSENT,
            BarInfo::io(0x20),
        ];
        assert_eq!(
            MsixLayout::compute(
                &bars,
                real(1, 0, 0, 0, 0x800),
                0x1000,
                RelocationPolicy::Always
            ),
            Err(LayoutError::NoRoom {
                bar: 0,
                size: 1 << 31
            })
        );
    }
}
