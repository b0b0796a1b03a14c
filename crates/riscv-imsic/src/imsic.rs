// Copyright © 2026 The passthrough-msi authors
//
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The interrupt files of all harts, addressed through an [`ImsicGeometry`].
//!
//! [`Imsic`] routes MSI writes and MMIO accesses by address (AIA 1.0 §3.5,
//! §3.6), serves the `*iselect`/`*ireg` and `*topei` accesses of each hart's
//! files (§3.8, §3.9), and tells the VMM, through an [`ExternalInterruptSink`],
//! about every edge of each file's interrupt signal (§3.10) and every change of
//! a file's enables, `eidelivery` and `eithreshold` ([`ImsicEvent`]).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::file::{
    BitChange, EiDelivery, FileError, IndirectEffect, InterruptFile, MRIF_SIZE, NumIds,
};
use crate::geometry::{DecodeError, GeometryConfig, GeometryError, ImsicGeometry, PAGE_SIZE};
use crate::iselect::{IselectError, Xlen};
use crate::mmio::{PageAccess, page_access, seteipnum_value};
use crate::{FileKind, FileTarget};

/// The interrupt files of one hart's IMSIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HartConfig {
    /// Group number `g` (AIA 1.0 §3.6).
    pub group: u32,
    /// Hart number `h` within the group (AIA 1.0 §3.6).
    pub hart: u32,
    /// Identities of the machine-level file, or `None` for no machine file.
    /// Must be `None` when the geometry has no machine region.
    pub machine_ids: Option<NumIds>,
    /// Identities of the supervisor-level file.
    pub supervisor_ids: NumIds,
    /// Identities of each guest file (AIA 1.0 §3.1: all guest files of a hart
    /// have the same size).
    pub guest_ids: NumIds,
    /// GEILEN, the number of guest files (0..=63, and at most
    /// `2^guest_index_bits - 1`).
    pub geilen: u8,
}

/// Configuration of an [`Imsic`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImsicConfig {
    /// Address layout.
    pub geometry: GeometryConfig,
    /// One entry per hart; a hart's index in this list is its index in
    /// [`FileTarget::hart`].
    pub harts: Vec<HartConfig>,
    /// Whether machine- and supervisor-level `eidelivery` support 0x40000000
    /// (delivery from an APLIC, AIA 1.0 §3.8.1). Guest files never do.
    pub aplic_delivery: bool,
}

impl ImsicConfig {
    /// `num_harts` harts with files of `ids` identities and `geilen` guest files
    /// each, hart `i` at group `i >> k` and hart number `i & (2^k - 1)`, with a
    /// machine file when the geometry has a machine region.
    pub fn uniform(geometry: GeometryConfig, num_harts: u32, ids: NumIds, geilen: u8) -> Self {
        let k = u32::from(geometry.hart_index_bits);
        let harts = (0..num_harts)
            .map(|i| HartConfig {
                group: i.checked_shr(k).unwrap_or(0),
                hart: i & ((1u32 << k.min(31)) - 1),
                machine_ids: geometry.machine_base.map(|_| ids),
                supervisor_ids: ids,
                guest_ids: ids,
                geilen,
            })
            .collect();
        ImsicConfig {
            geometry,
            harts,
            aplic_delivery: false,
        }
    }
}

/// Errors building an [`Imsic`].
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The geometry is invalid.
    #[error("imsic config: invalid geometry")]
    Geometry(#[source] GeometryError),
    /// A hart's location does not fit the geometry.
    #[error("imsic config: hart {index} at group {group} hart {hart} does not fit the geometry")]
    HartLocation {
        /// Index of the hart in the list.
        index: usize,
        /// Group number.
        group: u32,
        /// Hart number.
        hart: u32,
        /// Why.
        #[source]
        source: GeometryError,
    },
    /// Two harts share a location.
    #[error("imsic config: harts {first} and {second} are both at group {group} hart {hart}")]
    DuplicateHart {
        /// First index.
        first: usize,
        /// Second index.
        second: usize,
        /// Group number.
        group: u32,
        /// Hart number.
        hart: u32,
    },
    /// A hart has a machine file but the geometry has no machine region.
    #[error(
        "imsic config: hart {index} has a machine-level file but the geometry has no machine region"
    )]
    MachineFileWithoutRegion {
        /// Index of the hart.
        index: usize,
    },
    /// GEILEN is above what the geometry can address (or above 63).
    #[error("imsic config: hart {index} has GEILEN {geilen}, above the maximum {max}")]
    TooManyGuestFiles {
        /// Index of the hart.
        index: usize,
        /// GEILEN given.
        geilen: u8,
        /// Largest GEILEN the geometry holds.
        max: u8,
    },
}

/// A change of a file's configuration the VMM may mirror.
///
/// Every change of an enable bit, of `eidelivery` and of `eithreshold` is
/// reported, whatever caused it (a `*ireg` write, [`Imsic::reset`],
/// [`Imsic::restore`], [`Imsic::merge_mrif`]), so a mirror built from the
/// events always equals the files (test `imsic_model::events_mirror_enables`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ImsicEvent {
    /// Identity `id` of `target` became enabled.
    IdentityEnabled {
        /// The file.
        target: FileTarget,
        /// The identity.
        id: u32,
    },
    /// Identity `id` of `target` became disabled.
    IdentityDisabled {
        /// The file.
        target: FileTarget,
        /// The identity.
        id: u32,
    },
    /// `eidelivery` of `target` changed.
    DeliveryChanged {
        /// The file.
        target: FileTarget,
        /// Previous value.
        from: EiDelivery,
        /// New value.
        to: EiDelivery,
    },
    /// `eithreshold` of `target` changed.
    ThresholdChanged {
        /// The file.
        target: FileTarget,
        /// Previous value.
        from: u32,
        /// New value.
        to: u32,
    },
}

/// Where the VMM receives the external-interrupt signals of the files and
/// their configuration events.
///
/// `raise` and `lower` are called only on edges: after `raise(t)` the next call
/// for `t` is `lower(t)` and vice versa, starting from lowered. A
/// machine-level file drives `mip.MEIP`, a supervisor-level file `mip.SEIP`,
/// guest file `i` bit `i` of `hgeip` (AIA 1.0 §3.10).
pub trait ExternalInterruptSink {
    /// The signal of `target` became asserted.
    fn raise(&mut self, target: FileTarget);
    /// The signal of `target` became de-asserted.
    fn lower(&mut self, target: FileTarget);
    /// A configuration change; the default ignores it.
    fn event(&mut self, event: ImsicEvent) {
        let _ = event;
    }
}

impl<T: ExternalInterruptSink + ?Sized> ExternalInterruptSink for &mut T {
    fn raise(&mut self, target: FileTarget) {
        (**self).raise(target)
    }
    fn lower(&mut self, target: FileTarget) {
        (**self).lower(target)
    }
    fn event(&mut self, event: ImsicEvent) {
        (**self).event(event)
    }
}

impl<T: ExternalInterruptSink + ?Sized> ExternalInterruptSink for Box<T> {
    fn raise(&mut self, target: FileTarget) {
        (**self).raise(target)
    }
    fn lower(&mut self, target: FileTarget) {
        (**self).lower(target)
    }
    fn event(&mut self, event: ImsicEvent) {
        (**self).event(event)
    }
}

/// Errors of [`Imsic`] operations.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ImsicError {
    /// The address is outside every region.
    #[error("imsic: cannot route address")]
    Decode(#[from] DecodeError),
    /// The address is on a page no configured file occupies (a missing hart,
    /// machine file, or guest file above GEILEN).
    #[error(
        "imsic: address {addr:#x} decodes to group {group} hart {hart} {file:?}, which has no interrupt file"
    )]
    NoFileAt {
        /// The address.
        addr: u64,
        /// Group number.
        group: u32,
        /// Hart number.
        hart: u32,
        /// The file it would be.
        file: FileKind,
    },
    /// The target names no file.
    #[error("imsic: {target:?} names no interrupt file")]
    NoSuchFile {
        /// The target.
        target: FileTarget,
    },
    /// An access other than a naturally aligned 32-bit one (AIA 1.0 §3.5); the
    /// access was ignored and reads returned zero. The VMM should preferably
    /// report an access fault.
    #[error("imsic: unsupported {len}-byte access at {addr:#x}")]
    UnsupportedAccess {
        /// The address.
        addr: u64,
        /// The access size.
        len: usize,
    },
    /// An indirect register access failed; see [`IselectError::trap`].
    #[error("imsic: indirect access to {target:?}")]
    Indirect {
        /// The file.
        target: FileTarget,
        /// Why.
        #[source]
        source: IselectError,
    },
    /// The file rejected state.
    #[error("imsic: {target:?} rejected state")]
    File {
        /// The file.
        target: FileTarget,
        /// Why.
        #[source]
        source: FileError,
    },
    /// The target's file has no address in the geometry.
    #[error("imsic: {target:?} has no address")]
    Geometry {
        /// The file.
        target: FileTarget,
        /// Why.
        #[source]
        source: GeometryError,
    },
}

/// Why a write to an interrupt-file page changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IgnoredWrite {
    /// The value is not an implemented identity (0 or above N; AIA 1.0 §3.5).
    InvalidIdentity {
        /// The file.
        target: FileTarget,
        /// The identity value the write carried.
        value: u32,
    },
    /// A reserved (read-only zero) word of the page.
    ReadOnlyZero {
        /// The file.
        target: FileTarget,
        /// Offset within the page.
        offset: u16,
    },
    /// A page of a region that no configured file occupies; AIA 1.0 §3.6 fills
    /// such pages with read-only zeros.
    Unoccupied {
        /// The address.
        addr: u64,
    },
}

/// The effect of a write to an interrupt-file page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WriteOutcome {
    /// The identity's pending bit is now set.
    Pending {
        /// The file.
        target: FileTarget,
        /// The identity.
        id: u32,
        /// Whether it was pending already (MSIs coalesce).
        was_pending: bool,
    },
    /// The write was ignored.
    Ignored(IgnoredWrite),
}

/// Where an address leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResolvedAddress {
    /// The file.
    pub target: FileTarget,
    /// Offset within its page.
    pub offset: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) file: InterruptFile,
    /// The level last reported to the sink; equal to `file.output()` between
    /// operations.
    pub(crate) line: bool,
}

impl Slot {
    fn new(ids: NumIds, aplic: bool) -> Self {
        Slot {
            file: InterruptFile::new(ids, aplic),
            line: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HartFiles {
    pub(crate) config: HartConfig,
    pub(crate) machine: Option<Slot>,
    pub(crate) supervisor: Slot,
    pub(crate) guests: Vec<Slot>,
}

impl HartFiles {
    pub(crate) fn slot(&self, file: FileKind) -> Option<&Slot> {
        match file {
            FileKind::Machine => self.machine.as_ref(),
            FileKind::Supervisor => Some(&self.supervisor),
            FileKind::Guest(i) => usize::from(i)
                .checked_sub(1)
                .and_then(|i| self.guests.get(i)),
        }
    }

    pub(crate) fn slot_mut(&mut self, file: FileKind) -> Option<&mut Slot> {
        match file {
            FileKind::Machine => self.machine.as_mut(),
            FileKind::Supervisor => Some(&mut self.supervisor),
            FileKind::Guest(i) => usize::from(i)
                .checked_sub(1)
                .and_then(|i| self.guests.get_mut(i)),
        }
    }

    /// Every file of the hart with its kind.
    pub(crate) fn kinds(&self) -> impl Iterator<Item = FileKind> + use<> {
        let machine = self.machine.is_some().then_some(FileKind::Machine);
        let guests = 1..=self.config.geilen;
        machine
            .into_iter()
            .chain(std::iter::once(FileKind::Supervisor))
            .chain(guests.map(FileKind::Guest))
    }
}

/// The IMSICs of a machine: one set of interrupt files per hart, reached by
/// address through the geometry.
///
/// Operations take `&mut self`; a VMM shares an `Imsic` between vCPU threads
/// behind a lock. The sink is called while the operation runs.
///
/// ```
/// use riscv_imsic::{
///     ExternalInterruptSink, FileKind, FileTarget, GeometryConfig, Imsic, ImsicConfig, NumIds,
///     Xlen,
/// };
///
/// #[derive(Default)]
/// struct Lines(Vec<(FileTarget, bool)>);
/// impl ExternalInterruptSink for Lines {
///     fn raise(&mut self, t: FileTarget) {
///         self.0.push((t, true));
///     }
///     fn lower(&mut self, t: FileTarget) {
///         self.0.push((t, false));
///     }
/// }
///
/// let geometry = GeometryConfig::supervisor_only(0x2800_0000, 2, 0);
/// let config = ImsicConfig::uniform(geometry, 2, NumIds::new(255).unwrap(), 0);
/// let mut imsic = Imsic::new(config, Lines::default()).unwrap();
/// let s1 = FileTarget::new(1, FileKind::Supervisor);
/// imsic.write_indirect(s1, 0x70, 1, Xlen::Rv64).unwrap(); // eidelivery = 1
/// imsic.write_indirect(s1, 0xC0, 1 << 42, Xlen::Rv64).unwrap(); // enable 42
/// imsic.write_msi(0x2800_1000, 42).unwrap();
/// assert_eq!(imsic.sink().0, vec![(s1, true)]);
/// assert_eq!(imsic.claim_topei(s1).unwrap(), (42 << 16) | 42);
/// assert_eq!(imsic.sink().0, vec![(s1, true), (s1, false)]);
/// ```
#[derive(Debug)]
pub struct Imsic<S> {
    pub(crate) geometry: ImsicGeometry,
    pub(crate) aplic_delivery: bool,
    pub(crate) harts: Vec<HartFiles>,
    /// `(group << 32 | hart, index)` sorted by key.
    lookup: Vec<(u64, usize)>,
    pub(crate) sink: S,
}

fn location_key(group: u32, hart: u32) -> u64 {
    (u64::from(group) << 32) | u64::from(hart)
}

impl<S: ExternalInterruptSink> Imsic<S> {
    /// Builds the files of every hart in their reset state.
    pub fn new(config: ImsicConfig, sink: S) -> Result<Self, ConfigError> {
        let geometry = ImsicGeometry::new(config.geometry).map_err(ConfigError::Geometry)?;
        let mut lookup = Vec::with_capacity(config.harts.len());
        let mut harts = Vec::with_capacity(config.harts.len());
        for (index, hc) in config.harts.iter().enumerate() {
            geometry
                .file_address(hc.group, hc.hart, FileKind::Supervisor)
                .map_err(|source| ConfigError::HartLocation {
                    index,
                    group: hc.group,
                    hart: hc.hart,
                    source,
                })?;
            if hc.machine_ids.is_some() && geometry.config().machine_base.is_none() {
                return Err(ConfigError::MachineFileWithoutRegion { index });
            }
            let max = geometry.max_guest_files();
            if hc.geilen > max {
                return Err(ConfigError::TooManyGuestFiles {
                    index,
                    geilen: hc.geilen,
                    max,
                });
            }
            lookup.push((location_key(hc.group, hc.hart), index));
            harts.push(HartFiles {
                config: *hc,
                machine: hc.machine_ids.map(|n| Slot::new(n, config.aplic_delivery)),
                supervisor: Slot::new(hc.supervisor_ids, config.aplic_delivery),
                guests: (0..hc.geilen)
                    .map(|_| Slot::new(hc.guest_ids, false))
                    .collect(),
            });
        }
        lookup.sort_unstable();
        for pair in lookup.windows(2) {
            if let [(ka, ia), (kb, ib)] = pair
                && ka == kb
            {
                return Err(ConfigError::DuplicateHart {
                    first: (*ia).min(*ib),
                    second: (*ia).max(*ib),
                    group: (ka >> 32) as u32,
                    hart: *ka as u32,
                });
            }
        }
        Ok(Imsic {
            geometry,
            aplic_delivery: config.aplic_delivery,
            harts,
            lookup,
            sink,
        })
    }

    /// The address layout.
    pub fn geometry(&self) -> &ImsicGeometry {
        &self.geometry
    }

    /// The configuration the IMSIC was built from.
    pub fn config(&self) -> ImsicConfig {
        ImsicConfig {
            geometry: *self.geometry.config(),
            harts: self.harts.iter().map(|h| h.config).collect(),
            aplic_delivery: self.aplic_delivery,
        }
    }

    /// Number of harts.
    pub fn num_harts(&self) -> usize {
        self.harts.len()
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// The sink, mutably.
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.sink
    }

    /// Consumes the IMSIC, returning its sink.
    pub fn into_sink(self) -> S {
        self.sink
    }

    /// Index of the hart at `group`/`hart`, if configured.
    pub fn hart_index(&self, group: u32, hart: u32) -> Option<usize> {
        let key = location_key(group, hart);
        self.lookup
            .binary_search_by_key(&key, |(k, _)| *k)
            .ok()
            .and_then(|i| self.lookup.get(i))
            .map(|(_, idx)| *idx)
    }

    /// A file, for inspection.
    pub fn file(&self, target: FileTarget) -> Option<&InterruptFile> {
        self.harts
            .get(target.hart)
            .and_then(|h| h.slot(target.file))
            .map(|s| &s.file)
    }

    /// Every file target, hart by hart (machine, supervisor, guests).
    pub fn targets(&self) -> impl Iterator<Item = FileTarget> + '_ {
        self.harts
            .iter()
            .enumerate()
            .flat_map(|(i, h)| h.kinds().map(move |k| FileTarget::new(i, k)))
    }

    /// The level of `target`'s interrupt signal as last reported to the sink.
    pub fn line(&self, target: FileTarget) -> Result<bool, ImsicError> {
        self.harts
            .get(target.hart)
            .and_then(|h| h.slot(target.file))
            .map(|s| s.line)
            .ok_or(ImsicError::NoSuchFile { target })
    }

    /// The page address of `target` (the MSI address of its `seteipnum_le`).
    pub fn file_address(&self, target: FileTarget) -> Result<u64, ImsicError> {
        let hart = self
            .harts
            .get(target.hart)
            .filter(|h| h.slot(target.file).is_some())
            .ok_or(ImsicError::NoSuchFile { target })?;
        self.geometry
            .file_address(hart.config.group, hart.config.hart, target.file)
            .map_err(|source| ImsicError::Geometry { target, source })
    }

    /// The file and page offset `addr` leads to.
    pub fn resolve(&self, addr: u64) -> Result<ResolvedAddress, ImsicError> {
        let d = self.geometry.decode(addr)?;
        let no_file = ImsicError::NoFileAt {
            addr,
            group: d.group,
            hart: d.hart,
            file: d.file,
        };
        let Some(index) = self.hart_index(d.group, d.hart) else {
            return Err(no_file);
        };
        let exists = self
            .harts
            .get(index)
            .is_some_and(|h| h.slot(d.file).is_some());
        if !exists {
            return Err(no_file);
        }
        Ok(ResolvedAddress {
            target: FileTarget::new(index, d.file),
            offset: d.offset,
        })
    }

    /// A read of `data.len()` bytes at `addr` (AIA 1.0 §3.5, §3.6).
    ///
    /// `data` is always filled with zeros: the `seteipnum` registers, reserved
    /// words and unoccupied pages all read zero. Returns
    /// [`ImsicError::UnsupportedAccess`] for accesses other than aligned 32-bit
    /// ones inside the regions, and a decode error outside them.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) -> Result<(), ImsicError> {
        data.fill(0);
        self.classify(addr, data.len()).map(|_| ())
    }

    /// Decodes an access: Ok(None) for an unoccupied page.
    fn classify(
        &self,
        addr: u64,
        len: usize,
    ) -> Result<Option<(ResolvedAddress, PageAccess)>, ImsicError> {
        let resolved = match self.resolve(addr) {
            Ok(r) => Some(r),
            Err(
                ImsicError::NoFileAt { .. } | ImsicError::Decode(DecodeError::Unoccupied { .. }),
            ) => None,
            Err(e) => return Err(e),
        };
        let access = page_access(addr % PAGE_SIZE, len);
        if access == PageAccess::Unsupported {
            return Err(ImsicError::UnsupportedAccess { addr, len });
        }
        Ok(resolved.map(|r| (r, access)))
    }

    /// A write of `data` at `addr` (AIA 1.0 §3.5, §3.6): a naturally aligned
    /// 32-bit write to `seteipnum_le` (little-endian) or `seteipnum_be`
    /// (big-endian) of an implemented identity sets its pending bit; everything
    /// else inside the regions is ignored.
    pub fn mmio_write(&mut self, addr: u64, data: &[u8]) -> Result<WriteOutcome, ImsicError> {
        let Some((resolved, access)) = self.classify(addr, data.len())? else {
            log::trace!("imsic: write to unoccupied page at {addr:#x} ignored");
            return Ok(WriteOutcome::Ignored(IgnoredWrite::Unoccupied { addr }));
        };
        let target = resolved.target;
        let Some(value) = seteipnum_value(access, data) else {
            return Ok(WriteOutcome::Ignored(IgnoredWrite::ReadOnlyZero {
                target,
                offset: resolved.offset,
            }));
        };
        self.set_pending(target, value)
    }

    /// An MSI: a 32-bit little-endian write of `data` to `addr`, as a PCI device
    /// sends it (AIA 1.0 §3.2).
    pub fn write_msi(&mut self, addr: u64, data: u32) -> Result<WriteOutcome, ImsicError> {
        self.mmio_write(addr, &data.to_le_bytes())
    }

    /// Sets identity `id` pending in `target`, as a `seteipnum_le` write of `id`
    /// does (AIA 1.0 §3.5); values that are not implemented identities are
    /// ignored.
    pub fn set_pending(&mut self, target: FileTarget, id: u32) -> Result<WriteOutcome, ImsicError> {
        let slot = slot_mut(&mut self.harts, target)?;
        let was_pending = slot.file.is_pending(id);
        if !slot.file.seteipnum(id) {
            log::trace!("imsic: {target:?} ignored identity {id}");
            return Ok(WriteOutcome::Ignored(IgnoredWrite::InvalidIdentity {
                target,
                value: id,
            }));
        }
        // Setting a pending bit can only assert the signal, and only through
        // this identity (see InterruptFile::id_signals).
        if !slot.line && slot.file.id_signals(id) {
            slot.line = true;
            self.sink.raise(target);
        }
        Ok(WriteOutcome::Pending {
            target,
            id,
            was_pending,
        })
    }

    /// Reads `*ireg` with `*iselect = iselect` for `target`.
    pub fn read_indirect(
        &mut self,
        target: FileTarget,
        iselect: u64,
        xlen: Xlen,
    ) -> Result<u64, ImsicError> {
        self.rmw_indirect(target, iselect, 0, 0, xlen)
    }

    /// Writes `*ireg` with `*iselect = iselect` for `target`.
    pub fn write_indirect(
        &mut self,
        target: FileTarget,
        iselect: u64,
        value: u64,
        xlen: Xlen,
    ) -> Result<(), ImsicError> {
        self.rmw_indirect(target, iselect, value, u64::MAX, xlen)
            .map(|_| ())
    }

    /// Read-modify-write of `*ireg` (see [`InterruptFile::rmw_indirect`]):
    /// returns the old value, reports events and signal edges.
    pub fn rmw_indirect(
        &mut self,
        target: FileTarget,
        iselect: u64,
        new: u64,
        mask: u64,
        xlen: Xlen,
    ) -> Result<u64, ImsicError> {
        let slot = slot_mut(&mut self.harts, target)?;
        let (old, effect) = slot
            .file
            .rmw_indirect(iselect, new, mask, xlen)
            .map_err(|source| ImsicError::Indirect { target, source })?;
        report_effect(&mut self.sink, target, effect);
        sync_line(slot, target, &mut self.sink);
        Ok(old)
    }

    /// Reads `*topei` of `target` (AIA 1.0 §3.9).
    pub fn topei(&self, target: FileTarget) -> Result<u32, ImsicError> {
        self.file(target)
            .map(InterruptFile::topei)
            .ok_or(ImsicError::NoSuchFile { target })
    }

    /// Writes `*topei` of `target`: claims the identity it reports (AIA 1.0
    /// §3.9). Returns the claimed identity or 0.
    pub fn write_topei(&mut self, target: FileTarget) -> Result<u32, ImsicError> {
        let slot = slot_mut(&mut self.harts, target)?;
        let id = slot.file.write_topei();
        sync_line(slot, target, &mut self.sink);
        Ok(id)
    }

    /// `csrrw rd, *topei, x0`: returns the value read and claims it (AIA 1.0
    /// §3.9, §3.10).
    pub fn claim_topei(&mut self, target: FileTarget) -> Result<u32, ImsicError> {
        let slot = slot_mut(&mut self.harts, target)?;
        let value = slot.file.claim_topei();
        sync_line(slot, target, &mut self.sink);
        Ok(value)
    }

    /// The MRIF image of `target` (AIA 1.0 §8.3.1).
    pub fn mrif(&self, target: FileTarget) -> Result<[u8; MRIF_SIZE], ImsicError> {
        self.file(target)
            .map(InterruptFile::to_mrif)
            .ok_or(ImsicError::NoSuchFile { target })
    }

    /// Folds an MRIF image into `target` (AIA 1.0 §8.3.3, see
    /// [`InterruptFile::merge_mrif`]), reporting enable changes and edges.
    pub fn merge_mrif(
        &mut self,
        target: FileTarget,
        mrif: &[u8; MRIF_SIZE],
    ) -> Result<(), ImsicError> {
        let slot = slot_mut(&mut self.harts, target)?;
        for (_, enables) in slot.file.merge_mrif(mrif) {
            report_enables(&mut self.sink, target, enables);
        }
        sync_line(slot, target, &mut self.sink);
        Ok(())
    }

    /// Resets every file (AIA 1.0 §3.4; see [`InterruptFile::new`] for the
    /// values), reporting the resulting events and edges.
    pub fn reset(&mut self) {
        for (index, hart) in self.harts.iter_mut().enumerate() {
            for kind in hart.kinds() {
                let target = FileTarget::new(index, kind);
                if let Some(slot) = hart.slot_mut(kind) {
                    let old = slot.file.clone();
                    slot.file.reset();
                    report_file_diff(&mut self.sink, target, &old, &slot.file);
                    sync_line(slot, target, &mut self.sink);
                }
            }
        }
    }
}

pub(crate) fn slot_mut(
    harts: &mut [HartFiles],
    target: FileTarget,
) -> Result<&mut Slot, ImsicError> {
    harts
        .get_mut(target.hart)
        .and_then(|h| h.slot_mut(target.file))
        .ok_or(ImsicError::NoSuchFile { target })
}

/// Brings the reported level in line with the file's output, calling the sink
/// only on an edge.
pub(crate) fn sync_line<S: ExternalInterruptSink>(
    slot: &mut Slot,
    target: FileTarget,
    sink: &mut S,
) {
    let out = slot.file.output();
    if out != slot.line {
        slot.line = out;
        if out {
            sink.raise(target);
        } else {
            sink.lower(target);
        }
    }
}

fn report_effect<S: ExternalInterruptSink>(
    sink: &mut S,
    target: FileTarget,
    effect: IndirectEffect,
) {
    match effect {
        IndirectEffect::None | IndirectEffect::Pending(_) => {}
        IndirectEffect::Delivery(from, to) => {
            log::debug!("imsic: {target:?} eidelivery {from:?} -> {to:?}");
            sink.event(ImsicEvent::DeliveryChanged { target, from, to });
        }
        IndirectEffect::Threshold(from, to) => {
            sink.event(ImsicEvent::ThresholdChanged { target, from, to });
        }
        IndirectEffect::Enable(change) => report_enables(sink, target, change),
    }
}

/// Reports each identity in `change` (at most 64 of each kind).
fn report_enables<S: ExternalInterruptSink>(sink: &mut S, target: FileTarget, change: BitChange) {
    let base = (change.word as u32).saturating_mul(64);
    let mut set = change.set;
    while set != 0 {
        let id = base + set.trailing_zeros();
        sink.event(ImsicEvent::IdentityEnabled { target, id });
        set &= set - 1;
    }
    let mut cleared = change.cleared;
    while cleared != 0 {
        let id = base + cleared.trailing_zeros();
        sink.event(ImsicEvent::IdentityDisabled { target, id });
        cleared &= cleared - 1;
    }
}

/// Reports every configuration difference between two states of one file.
pub(crate) fn report_file_diff<S: ExternalInterruptSink>(
    sink: &mut S,
    target: FileTarget,
    old: &InterruptFile,
    new: &InterruptFile,
) {
    if old.eidelivery() != new.eidelivery() {
        report_effect(
            sink,
            target,
            IndirectEffect::Delivery(old.eidelivery(), new.eidelivery()),
        );
    }
    if old.eithreshold() != new.eithreshold() {
        report_effect(
            sink,
            target,
            IndirectEffect::Threshold(old.eithreshold(), new.eithreshold()),
        );
    }
    for (word, (o, n)) in old.eie_words().iter().zip(new.eie_words()).enumerate() {
        report_enables(
            sink,
            target,
            BitChange {
                word,
                set: n & !o,
                cleared: o & !n,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::GeometryConfig;

    #[derive(Default, Debug)]
    struct Rec {
        lines: Vec<(FileTarget, bool)>,
        events: Vec<ImsicEvent>,
    }

    impl ExternalInterruptSink for Rec {
        fn raise(&mut self, t: FileTarget) {
            self.lines.push((t, true));
        }
        fn lower(&mut self, t: FileTarget) {
            self.lines.push((t, false));
        }
        fn event(&mut self, e: ImsicEvent) {
            self.events.push(e);
        }
    }

    fn geometry() -> GeometryConfig {
        GeometryConfig {
            machine_base: Some(0x2400_0000),
            machine_hart_shift: 12,
            supervisor_base: 0x2800_0000,
            guest_index_bits: 2,
            hart_index_bits: 2,
            group_index_bits: 1,
            group_index_shift: 24,
        }
    }

    fn imsic() -> Imsic<Rec> {
        let cfg = ImsicConfig::uniform(geometry(), 6, NumIds::new(127).unwrap(), 2);
        Imsic::new(cfg, Rec::default()).unwrap()
    }

    #[test]
    fn uniform_places_harts_by_group() {
        let im = imsic();
        assert_eq!(im.num_harts(), 6);
        assert_eq!(im.hart_index(0, 3), Some(3));
        assert_eq!(im.hart_index(1, 0), Some(4));
        assert_eq!(im.hart_index(1, 1), Some(5));
        assert_eq!(im.hart_index(1, 2), None);
        assert_eq!(im.targets().count(), 6 * 4);
        assert_eq!(
            im.file_address(FileTarget::new(5, FileKind::Guest(2))),
            Ok(0x2900_0000 + (1 << 14) + 0x2000)
        );
        assert_eq!(
            im.file_address(FileTarget::new(5, FileKind::Guest(3))),
            Err(ImsicError::NoSuchFile {
                target: FileTarget::new(5, FileKind::Guest(3))
            })
        );
        assert_eq!(im.config().harts.len(), 6);
    }

    #[test]
    fn config_errors() {
        let ids = NumIds::MIN;
        let mut cfg = ImsicConfig::uniform(geometry(), 2, ids, 0);
        cfg.harts[1] = cfg.harts[0];
        assert_eq!(
            Imsic::new(cfg, Rec::default()).unwrap_err(),
            ConfigError::DuplicateHart {
                first: 0,
                second: 1,
                group: 0,
                hart: 0
            }
        );
        let mut cfg = ImsicConfig::uniform(geometry(), 1, ids, 0);
        cfg.harts[0].hart = 4;
        assert!(matches!(
            Imsic::new(cfg, Rec::default()).unwrap_err(),
            ConfigError::HartLocation { index: 0, .. }
        ));
        let cfg = ImsicConfig::uniform(geometry(), 1, ids, 4);
        assert_eq!(
            Imsic::new(cfg, Rec::default()).unwrap_err(),
            ConfigError::TooManyGuestFiles {
                index: 0,
                geilen: 4,
                max: 3
            }
        );
        let mut cfg = ImsicConfig::uniform(
            GeometryConfig::supervisor_only(0x2800_0000, 1, 0),
            1,
            ids,
            0,
        );
        cfg.harts[0].machine_ids = Some(ids);
        assert_eq!(
            Imsic::new(cfg, Rec::default()).unwrap_err(),
            ConfigError::MachineFileWithoutRegion { index: 0 }
        );
        let mut cfg = ImsicConfig::uniform(geometry(), 1, ids, 0);
        cfg.geometry.supervisor_base = 1;
        assert!(matches!(
            Imsic::new(cfg, Rec::default()).unwrap_err(),
            ConfigError::Geometry(GeometryError::MisalignedBase { .. })
        ));
    }

    #[test]
    fn msi_routes_to_the_right_file() {
        let mut im = imsic();
        for target in im.targets().collect::<Vec<_>>() {
            let addr = im.file_address(target).unwrap();
            assert_eq!(
                im.resolve(addr + 0x10).unwrap(),
                ResolvedAddress {
                    target,
                    offset: 0x10
                }
            );
            let id = 1 + target.hart as u32;
            assert_eq!(
                im.write_msi(addr, id),
                Ok(WriteOutcome::Pending {
                    target,
                    id,
                    was_pending: false
                })
            );
            assert_eq!(
                im.write_msi(addr, id),
                Ok(WriteOutcome::Pending {
                    target,
                    id,
                    was_pending: true
                })
            );
        }
        for target in im.targets().collect::<Vec<_>>() {
            let f = im.file(target).unwrap();
            let want = 1u64 << (1 + target.hart);
            assert_eq!(f.eip_words(), &[want, 0]);
        }
        // Nothing enabled: no line activity.
        assert!(im.sink().lines.is_empty());
    }

    #[test]
    fn unoccupied_and_outside() {
        let mut im = imsic();
        // Group 1 hart 3 is not configured: its page is infill.
        let addr = 0x2900_0000 + (3 << 14);
        assert_eq!(
            im.resolve(addr),
            Err(ImsicError::NoFileAt {
                addr,
                group: 1,
                hart: 3,
                file: FileKind::Supervisor
            })
        );
        assert_eq!(
            im.write_msi(addr, 1),
            Ok(WriteOutcome::Ignored(IgnoredWrite::Unoccupied { addr }))
        );
        // Guest 3 above GEILEN 2.
        let addr = 0x2800_3000;
        assert_eq!(
            im.write_msi(addr, 1),
            Ok(WriteOutcome::Ignored(IgnoredWrite::Unoccupied { addr }))
        );
        let mut buf = [0xAAu8; 4];
        assert_eq!(im.mmio_read(addr, &mut buf), Ok(()));
        assert_eq!(buf, [0; 4]);
        assert_eq!(
            im.write_msi(0x3000_0000, 1),
            Err(ImsicError::Decode(DecodeError::Outside {
                addr: 0x3000_0000
            }))
        );
        let mut buf = [0xAAu8; 8];
        assert_eq!(
            im.mmio_read(0x3000_0000, &mut buf),
            Err(ImsicError::Decode(DecodeError::Outside {
                addr: 0x3000_0000
            }))
        );
        assert_eq!(buf, [0; 8]);
    }

    #[test]
    fn no_such_file_errors() {
        let mut im = imsic();
        let bad = FileTarget::new(99, FileKind::Supervisor);
        assert_eq!(im.topei(bad), Err(ImsicError::NoSuchFile { target: bad }));
        assert_eq!(
            im.claim_topei(bad),
            Err(ImsicError::NoSuchFile { target: bad })
        );
        assert_eq!(
            im.write_topei(bad),
            Err(ImsicError::NoSuchFile { target: bad })
        );
        assert_eq!(
            im.set_pending(bad, 1),
            Err(ImsicError::NoSuchFile { target: bad })
        );
        assert_eq!(im.line(bad), Err(ImsicError::NoSuchFile { target: bad }));
        let g0 = FileTarget::new(0, FileKind::Guest(0));
        assert_eq!(
            im.read_indirect(g0, 0x70, Xlen::Rv64),
            Err(ImsicError::NoSuchFile { target: g0 })
        );
        assert!(im.mrif(g0).is_err());
        assert!(im.merge_mrif(g0, &[0; MRIF_SIZE]).is_err());
        let s0 = FileTarget::new(0, FileKind::Supervisor);
        assert_eq!(
            im.read_indirect(s0, 0x81, Xlen::Rv64),
            Err(ImsicError::Indirect {
                target: s0,
                source: IselectError::OddRegisterOnRv64 { iselect: 0x81 }
            })
        );
    }

    #[test]
    fn reset_reports_everything() {
        let mut im = imsic();
        let t = FileTarget::new(2, FileKind::Guest(1));
        im.write_indirect(t, 0x70, 1, Xlen::Rv64).unwrap();
        im.write_indirect(t, 0x72, 9, Xlen::Rv64).unwrap();
        im.write_indirect(t, 0xC0, 0b110, Xlen::Rv64).unwrap();
        im.set_pending(t, 2).unwrap();
        assert_eq!(im.sink().lines, vec![(t, true)]);
        im.sink_mut().events.clear();
        im.reset();
        assert_eq!(im.sink().lines, vec![(t, true), (t, false)]);
        assert_eq!(
            im.sink().events,
            vec![
                ImsicEvent::DeliveryChanged {
                    target: t,
                    from: EiDelivery::On,
                    to: EiDelivery::Off
                },
                ImsicEvent::ThresholdChanged {
                    target: t,
                    from: 9,
                    to: 0
                },
                ImsicEvent::IdentityDisabled { target: t, id: 1 },
                ImsicEvent::IdentityDisabled { target: t, id: 2 },
            ]
        );
        assert_eq!(im.topei(t), Ok(0));
    }

    #[test]
    fn aplic_delivery_only_for_m_and_s() {
        let mut cfg = ImsicConfig::uniform(geometry(), 1, NumIds::MIN, 1);
        cfg.aplic_delivery = true;
        let mut im = Imsic::new(cfg, Rec::default()).unwrap();
        let m = FileTarget::new(0, FileKind::Machine);
        let s = FileTarget::new(0, FileKind::Supervisor);
        let g = FileTarget::new(0, FileKind::Guest(1));
        assert_eq!(im.read_indirect(m, 0x70, Xlen::Rv64), Ok(0x4000_0000));
        assert_eq!(im.read_indirect(s, 0x70, Xlen::Rv64), Ok(0x4000_0000));
        assert_eq!(im.read_indirect(g, 0x70, Xlen::Rv64), Ok(0));
        im.write_indirect(g, 0x70, 0x4000_0000, Xlen::Rv64).unwrap();
        assert_eq!(im.read_indirect(g, 0x70, Xlen::Rv64), Ok(0));
    }

    #[test]
    fn sink_through_reference_and_box() {
        let mut rec = Rec::default();
        {
            let cfg = ImsicConfig::uniform(geometry(), 1, NumIds::MIN, 0);
            let mut im = Imsic::new(cfg, &mut rec).unwrap();
            let s = FileTarget::new(0, FileKind::Supervisor);
            im.write_indirect(s, 0x70, 1, Xlen::Rv64).unwrap();
            im.write_indirect(s, 0xC0, 2, Xlen::Rv64).unwrap();
            im.set_pending(s, 1).unwrap();
        }
        assert_eq!(rec.lines.len(), 1);
        let cfg = ImsicConfig::uniform(geometry(), 1, NumIds::MIN, 0);
        let boxed: Box<dyn ExternalInterruptSink> = Box::new(Rec::default());
        let mut im = Imsic::new(cfg, boxed).unwrap();
        let s = FileTarget::new(0, FileKind::Supervisor);
        im.write_indirect(s, 0x70, 1, Xlen::Rv64).unwrap();
        assert_eq!(im.line(s), Ok(false));
    }
}
