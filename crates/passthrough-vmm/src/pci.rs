// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! PCIe configuration space through ECAM, and the slot a passthrough function plugs into.
//!
//! The VMM presents a generic ECAM host bridge (`pci-host-ecam-generic`) with bus 0 only.
//! [`PciBus`] is the MMIO device behind the ECAM window: it decodes each access into
//! (bus, device, function, register) ([`EcamAddress`], PCIe Base 6.0 7.2.2 Table 7-1) and
//! hands it to the [`PciFunction`] in that slot. A function reports BAR moves as
//! [`BarChange`]s; the bus then moves the BAR's MMIO trap ([`BarTrap`]) on the
//! [`MmioBus`], so guest accesses to the BAR reach [`PciFunction::read_bar`] and
//! [`PciFunction::write_bar`].
//!
//! Guest-defined outcomes (`tests::empty_slots_and_bad_accesses`):
//! - a slot with no function, a bus other than those the window decodes, an access not
//!   naturally aligned or not 1, 2 or 4 bytes: reads are all-ones (what a root complex
//!   returns for an Unsupported Request on a configuration read, PCIe Base 6.0 7.2.2.1),
//!   writes are ignored;
//! - a BAR the guest places outside the PCIe MMIO window, or over another trap, gets no
//!   trap: its accesses land wherever the address leads (usually nowhere: all-ones) and the
//!   refusal is logged and counted (`tests::bars_outside_the_window_are_not_trapped`).
//!
//! DeviceID of a function for MSIs: its requester ID, `bus << 8 | device << 3 | function`
//! (PCIe Base 6.0 2.2.6.2), which the device tree's `msi-map = <0 &its 0 0x10000>` passes to
//! the ITS unchanged ([`PciSlot::requester_id`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use serde::Serialize;

use crate::layout::Region;
use crate::mmio::{MmioBus, MmioDevice};

/// Bytes of configuration space per function (PCIe extended configuration space).
pub const CONFIG_SPACE_SIZE: u16 = hw_defs::pci::EXTENDED_CONFIG_SPACE_SIZE as u16;
/// Devices per bus.
pub const DEVICES_PER_BUS: u8 = 32;
/// Functions per device.
pub const FUNCTIONS_PER_DEVICE: u8 = 8;
/// BARs of a type 0 header.
pub const MAX_BARS: u8 = 6;

/// A configuration access decoded from an ECAM offset (PCIe Base 6.0 7.2.2, Table 7-1:
/// `A[27:20]` bus, `A[19:15]` device, `A[14:12]` function, `A[11:0]` register).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct EcamAddress {
    /// Bus number.
    pub bus: u8,
    /// Device number (0..32).
    pub device: u8,
    /// Function number (0..8).
    pub function: u8,
    /// Byte offset in the function's configuration space (0..4096).
    pub register: u16,
}

impl EcamAddress {
    /// Decodes an offset from the ECAM base; `None` beyond the 256 buses ECAM can address.
    pub fn decode(offset: u64) -> Option<Self> {
        if offset >= 1 << 28 {
            return None;
        }
        Some(EcamAddress {
            bus: ((offset >> 20) & 0xff) as u8,
            device: ((offset >> 15) & 0x1f) as u8,
            function: ((offset >> 12) & 0x7) as u8,
            register: (offset & 0xfff) as u16,
        })
    }

    /// The ECAM offset of this address (fields are masked to their widths).
    pub fn offset(&self) -> u64 {
        (u64::from(self.bus) << 20)
            | (u64::from(self.device & 0x1f) << 15)
            | (u64::from(self.function & 0x7) << 12)
            | u64::from(self.register & 0xfff)
    }

    /// The slot on the bus.
    pub fn slot(&self) -> PciSlot {
        PciSlot {
            device: self.device & 0x1f,
            function: self.function & 0x7,
        }
    }
}

/// A device/function position on bus 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PciSlot {
    /// Device number (0..32).
    pub device: u8,
    /// Function number (0..8).
    pub function: u8,
}

impl PciSlot {
    /// A slot, if `device < 32` and `function < 8`.
    pub fn new(device: u8, function: u8) -> Option<Self> {
        (device < DEVICES_PER_BUS && function < FUNCTIONS_PER_DEVICE)
            .then_some(PciSlot { device, function })
    }

    /// `device << 3 | function`.
    pub fn devfn(&self) -> u8 {
        (self.device << 3) | self.function
    }

    /// The requester ID on bus 0 (PCIe Base 6.0 2.2.6.2), which is also the ITS DeviceID
    /// under this VMM's `msi-map` (identity over 0..0x10000).
    pub fn requester_id(&self) -> u16 {
        u16::from(self.devfn())
    }
}

impl fmt::Display for PciSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0000:00:{:02x}.{}", self.device, self.function)
    }
}

/// A change in what a BAR decodes, reported by [`PciFunction::write_config`].
///
/// A BAR that moves is reported as `Unmapped` at the old place, then `Mapped` at the new.
/// A memory BAR decodes only while its address is programmed and the function's Memory
/// Space Enable bit (Command register bit 1, PCIe Base 6.0 7.5.1.1.3) is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "kebab-case")]
pub enum BarChange {
    /// BAR `bar` now decodes `region`.
    Mapped {
        /// BAR index (0..6; a 64-bit BAR is named by its lower index).
        bar: u8,
        /// The guest physical range.
        region: Region,
    },
    /// BAR `bar` no longer decodes `region`.
    Unmapped {
        /// BAR index.
        bar: u8,
        /// The range it decoded.
        region: Region,
    },
}

/// One PCI function on the VMM's bus: an emulated device, or the lead's VFIO passthrough
/// function.
///
/// The function owns its whole configuration space, BAR registers included: it answers
/// BAR sizing, keeps the BAR addresses, and reports with [`BarChange`] whenever what a BAR
/// decodes changes, so the VMM moves its MMIO trap (and a passthrough function its direct
/// mapping). Arguments are guest-controlled: `reg` is below 4096 and naturally aligned to
/// `data.len()` (1, 2 or 4) when called by [`PciBus`], and `offset + data.len()` lies
/// within the BAR when called by [`BarTrap`]; implementations must still not panic on
/// anything else.
pub trait PciFunction: Send {
    /// Reads configuration space at `reg`, little-endian.
    fn read_config(&mut self, reg: u16, data: &mut [u8]);
    /// Writes configuration space at `reg`, little-endian; returns what BARs changed.
    fn write_config(&mut self, reg: u16, data: &[u8]) -> Vec<BarChange>;
    /// Reads `data.len()` bytes at `offset` into BAR `bar`.
    fn read_bar(&mut self, bar: u8, offset: u64, data: &mut [u8]);
    /// Writes `data` at `offset` into BAR `bar`.
    fn write_bar(&mut self, bar: u8, offset: u64, data: &[u8]);
}

/// A function as the bus shares it with its BAR traps.
pub type SharedFunction = Arc<Mutex<Box<dyn PciFunction>>>;

fn lock_function(f: &SharedFunction) -> MutexGuard<'_, Box<dyn PciFunction>> {
    f.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The MMIO trap of one BAR: forwards accesses to [`PciFunction::read_bar`] and
/// [`PciFunction::write_bar`] with the offset into the BAR.
pub struct BarTrap {
    function: SharedFunction,
    bar: u8,
}

impl fmt::Debug for BarTrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BarTrap").field("bar", &self.bar).finish()
    }
}

impl MmioDevice for BarTrap {
    fn mmio_read(&self, offset: u64, data: &mut [u8]) {
        lock_function(&self.function).read_bar(self.bar, offset, data);
    }

    fn mmio_write(&self, offset: u64, data: &[u8]) {
        lock_function(&self.function).write_bar(self.bar, offset, data);
    }
}

/// Why a function cannot be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PciError {
    /// The slot already holds a function.
    #[error("PCI bus: slot {0} is taken")]
    SlotTaken(PciSlot),
}

/// What became of a [`BarChange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BarOutcome {
    /// The trap was added or removed.
    Applied,
    /// `Mapped` outside the PCIe MMIO window: no trap.
    OutsideWindow,
    /// `Mapped` over another range on the MMIO bus: no trap.
    Overlap,
    /// `Unmapped` for a region the BAR had no trap at: nothing to do.
    NotMapped,
    /// The bus has no MMIO bus to trap on (it was dropped).
    NoMmioBus,
}

/// Called for every BAR change after the bus dealt with its trap; a passthrough device
/// uses it to add or remove a direct mapping of the BAR. It runs with the bus lock held
/// (config writes stay ordered), so it must not call back into the [`PciBus`].
pub type BarHook = Box<dyn FnMut(PciSlot, &BarChange, BarOutcome) + Send>;

struct Inner {
    functions: BTreeMap<PciSlot, SharedFunction>,
    traps: BTreeMap<(PciSlot, u8), Region>,
    refused: u64,
    hook: Option<BarHook>,
}

/// Bus 0 behind the ECAM window, as an [`MmioDevice`].
///
/// # Example
///
/// ```
/// use std::sync::Arc;
/// use passthrough_vmm::layout::Region;
/// use passthrough_vmm::mmio::{MmioBus, MmioDevice};
/// use passthrough_vmm::pci::{EcamAddress, PciBus};
///
/// let mmio = Arc::new(MmioBus::new());
/// let pci = PciBus::new(&mmio, Region::new(0x1000_0000, 0x2000_0000), 1);
/// // An empty slot reads all-ones: no device, as enumeration expects.
/// let vendor = EcamAddress { bus: 0, device: 3, function: 0, register: 0 };
/// let mut id = [0u8; 4];
/// pci.mmio_read(vendor.offset(), &mut id);
/// assert_eq!(id, [0xff; 4]);
/// ```
pub struct PciBus {
    mmio: Weak<MmioBus>,
    window: Region,
    buses: u32,
    inner: Mutex<Inner>,
}

impl fmt::Debug for PciBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PciBus")
            .field("window", &self.window)
            .field("buses", &self.buses)
            .field("functions", &self.functions())
            .finish_non_exhaustive()
    }
}

impl PciBus {
    /// A bus with no functions whose BAR traps go on `mmio` when they fall inside
    /// `window`; `buses` is how many buses the ECAM window decodes (only bus 0 holds
    /// functions).
    pub fn new(mmio: &Arc<MmioBus>, window: Region, buses: u32) -> Self {
        PciBus {
            mmio: Arc::downgrade(mmio),
            window,
            buses,
            inner: Mutex::new(Inner {
                functions: BTreeMap::new(),
                traps: BTreeMap::new(),
                refused: 0,
                hook: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts `function` in `slot`.
    pub fn add(&self, slot: PciSlot, function: Box<dyn PciFunction>) -> Result<(), PciError> {
        let mut inner = self.lock();
        if inner.functions.contains_key(&slot) {
            return Err(PciError::SlotTaken(slot));
        }
        inner.functions.insert(slot, Arc::new(Mutex::new(function)));
        Ok(())
    }

    /// Sets the hook called after each BAR change.
    pub fn set_bar_hook(&self, hook: BarHook) {
        self.lock().hook = Some(hook);
    }

    /// The occupied slots.
    pub fn functions(&self) -> Vec<PciSlot> {
        self.lock().functions.keys().copied().collect()
    }

    /// The BAR traps in place: (slot, BAR, region).
    pub fn bar_traps(&self) -> Vec<(PciSlot, u8, Region)> {
        self.lock()
            .traps
            .iter()
            .map(|(&(slot, bar), &r)| (slot, bar, r))
            .collect()
    }

    /// How many `Mapped` changes got no trap.
    pub fn refused_bars(&self) -> u64 {
        self.lock().refused
    }

    /// The function a configuration access of `len` bytes at `offset` reaches, if any.
    fn target(
        &self,
        inner: &Inner,
        offset: u64,
        len: usize,
    ) -> Option<(SharedFunction, PciSlot, u16)> {
        let a = EcamAddress::decode(offset)?;
        if u32::from(a.bus) >= self.buses.min(1) {
            return None; // only bus 0 has functions
        }
        if !matches!(len, 1 | 2 | 4) || usize::from(a.register) % len != 0 {
            return None;
        }
        let slot = a.slot();
        inner
            .functions
            .get(&slot)
            .map(|f| (Arc::clone(f), slot, a.register))
    }

    fn apply(&self, inner: &mut Inner, slot: PciSlot, change: &BarChange) -> BarOutcome {
        let Some(mmio) = self.mmio.upgrade() else {
            return BarOutcome::NoMmioBus;
        };
        match *change {
            BarChange::Mapped { bar, region } => {
                // A BAR mapped again without an Unmapped first: drop the old trap.
                if let Some(old) = inner.traps.remove(&(slot, bar)) {
                    mmio.remove(old.base);
                }
                let inside = region.size > 0
                    && region.base >= self.window.base
                    && region.end().is_some_and(|end| {
                        self.window
                            .end()
                            .is_some_and(|window_end| end <= window_end)
                    });
                if !inside {
                    log::warn!(
                        "PCI {slot} BAR{bar} at {region} is outside the MMIO window {}: not trapped",
                        self.window
                    );
                    inner.refused = inner.refused.saturating_add(1);
                    return BarOutcome::OutsideWindow;
                }
                let function = match inner.functions.get(&slot) {
                    Some(f) => Arc::clone(f),
                    None => return BarOutcome::NotMapped,
                };
                match mmio.insert(region, Arc::new(BarTrap { function, bar })) {
                    Ok(()) => {
                        inner.traps.insert((slot, bar), region);
                        BarOutcome::Applied
                    }
                    Err(e) => {
                        log::warn!("PCI {slot} BAR{bar}: {e}: not trapped");
                        inner.refused = inner.refused.saturating_add(1);
                        BarOutcome::Overlap
                    }
                }
            }
            BarChange::Unmapped { bar, region } => {
                if inner.traps.get(&(slot, bar)) == Some(&region) {
                    inner.traps.remove(&(slot, bar));
                    mmio.remove(region.base);
                    BarOutcome::Applied
                } else {
                    BarOutcome::NotMapped
                }
            }
        }
    }
}

impl MmioDevice for PciBus {
    fn mmio_read(&self, offset: u64, data: &mut [u8]) {
        let target = {
            let inner = self.lock();
            self.target(&inner, offset, data.len())
        };
        match target {
            Some((function, _, reg)) => lock_function(&function).read_config(reg, data),
            None => data.fill(0xff),
        }
    }

    fn mmio_write(&self, offset: u64, data: &[u8]) {
        // Config writes are serialised by the bus lock, so BAR changes are applied in the
        // order the guest made them.
        let mut inner = self.lock();
        let Some((function, slot, reg)) = self.target(&inner, offset, data.len()) else {
            return;
        };
        let changes = lock_function(&function).write_config(reg, data);
        // A function may report any number of changes; at most two per BAR make sense, so
        // more than that is a function bug and the excess is dropped.
        for change in changes.iter().take(usize::from(MAX_BARS) * 2) {
            let outcome = self.apply(&mut inner, slot, change);
            log::debug!("PCI {slot}: {change:?}: {outcome:?}");
            if let Some(hook) = inner.hook.as_mut() {
                hook(slot, change, outcome);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mmio::Dispatch;

    const WINDOW: Region = Region::new(0x1000_0000, 0x2000_0000);

    /// A function with a type 0 header and one 4 KiB 32-bit memory BAR at BAR0: enough to
    /// drive BAR sizing and Memory Space Enable as an OS does (PCI Local Bus 3.0 6.2.5.1).
    struct TestFunction {
        config: [u8; 64],
        bar_size: u32,
        mem: Vec<u8>,
    }

    impl TestFunction {
        fn new() -> Self {
            let mut config = [0u8; 64];
            config[0..4].copy_from_slice(&0x1234_abcdu32.to_le_bytes());
            config[0x0e] = 0; // header type 0
            TestFunction {
                config,
                bar_size: 0x1000,
                mem: vec![0; 0x1000],
            }
        }
        fn dword(&self, reg: usize) -> u32 {
            u32::from_le_bytes(self.config[reg..reg + 4].try_into().unwrap())
        }
        fn decoded(&self) -> Option<Region> {
            let base = u64::from(self.dword(0x10) & !0xf);
            (self.config[4] & 0x2 != 0 && base != 0)
                .then(|| Region::new(base, u64::from(self.bar_size)))
        }
    }

    impl PciFunction for TestFunction {
        fn read_config(&mut self, reg: u16, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = self.config.get(usize::from(reg) + i).copied().unwrap_or(0);
            }
        }
        fn write_config(&mut self, reg: u16, data: &[u8]) -> Vec<BarChange> {
            let before = self.decoded();
            let reg = usize::from(reg);
            match reg {
                0x04 => self.config[4] = data[0],
                0x10 if data.len() == 4 => {
                    let v = u32::from_le_bytes(data.try_into().unwrap()) & !(self.bar_size - 1);
                    self.config[0x10..0x14].copy_from_slice(&v.to_le_bytes());
                }
                _ => {}
            }
            let after = self.decoded();
            let mut changes = Vec::new();
            if before != after {
                if let Some(region) = before {
                    changes.push(BarChange::Unmapped { bar: 0, region });
                }
                if let Some(region) = after {
                    changes.push(BarChange::Mapped { bar: 0, region });
                }
            }
            changes
        }
        fn read_bar(&mut self, _bar: u8, offset: u64, data: &mut [u8]) {
            let o = offset as usize;
            data.copy_from_slice(&self.mem[o..o + data.len()]);
        }
        fn write_bar(&mut self, _bar: u8, offset: u64, data: &[u8]) {
            let o = offset as usize;
            self.mem[o..o + data.len()].copy_from_slice(data);
        }
    }

    fn setup() -> (Arc<MmioBus>, Arc<PciBus>) {
        let mmio = Arc::new(MmioBus::new());
        let pci = Arc::new(PciBus::new(&mmio, WINDOW, 1));
        mmio.insert(Region::new(0x3000_0000, 0x10_0000), pci.clone())
            .unwrap();
        pci.add(PciSlot::new(1, 0).unwrap(), Box::new(TestFunction::new()))
            .unwrap();
        (mmio, pci)
    }

    fn cfg(device: u8, register: u16) -> u64 {
        0x3000_0000
            + EcamAddress {
                bus: 0,
                device,
                function: 0,
                register,
            }
            .offset()
    }

    #[test]
    fn ecam_decode_follows_table_7_1() {
        let a = EcamAddress::decode(0x0fff_fffc).unwrap();
        assert_eq!(
            (a.bus, a.device, a.function, a.register),
            (0xff, 31, 7, 0xffc)
        );
        let a = EcamAddress::decode((3 << 20) | (5 << 15) | (2 << 12) | 0x104).unwrap();
        assert_eq!((a.bus, a.device, a.function, a.register), (3, 5, 2, 0x104));
        assert_eq!(a.offset(), (3 << 20) | (5 << 15) | (2 << 12) | 0x104);
        assert_eq!(EcamAddress::decode(1 << 28), None);
        assert_eq!(EcamAddress::decode(u64::MAX), None);
        for off in [0u64, 0x8000, 0x1000, 0xfff, 0x0fff_ffff, 0x0123_4567] {
            assert_eq!(EcamAddress::decode(off).unwrap().offset(), off);
        }
        let slot = PciSlot::new(3, 1).unwrap();
        assert_eq!(slot.devfn(), 0x19);
        assert_eq!(slot.requester_id(), 0x19);
        assert_eq!(slot.to_string(), "0000:00:03.1");
        assert_eq!(PciSlot::new(32, 0), None);
        assert_eq!(PciSlot::new(0, 8), None);
    }

    #[test]
    fn config_reads_reach_the_function() {
        let (mmio, _pci) = setup();
        let mut d = [0u8; 4];
        assert_eq!(mmio.read(cfg(1, 0), &mut d), Dispatch::Handled);
        assert_eq!(u32::from_le_bytes(d), 0x1234_abcd);
        let mut w = [0u8; 2];
        mmio.read(cfg(1, 2), &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x1234);
    }

    #[test]
    fn empty_slots_and_bad_accesses() {
        let (mmio, pci) = setup();
        let mut d = [0u8; 4];
        // Empty slot, other function of the same device, another bus.
        for addr in [cfg(2, 0), cfg(1, 0) + 0x1000, 0x3000_0000 + (1 << 20)] {
            mmio.read(addr, &mut d);
            assert_eq!(d, [0xff; 4], "{addr:#x}");
        }
        // Unaligned and 8-byte accesses to a real function.
        let mut d = [0u8; 4];
        pci.mmio_read(cfg(1, 2) - 0x3000_0000, &mut d);
        assert_eq!(d, [0xff; 4]);
        let mut q = [0u8; 8];
        pci.mmio_read(cfg(1, 0) - 0x3000_0000, &mut q);
        assert_eq!(q, [0xff; 8]);
        // Beyond the ECAM address space.
        pci.mmio_read(1 << 28, &mut d);
        assert_eq!(d, [0xff; 4]);
        // Writes to an empty slot and odd writes do nothing.
        pci.mmio_write(cfg(2, 0x10) - 0x3000_0000, &[0; 4]);
        pci.mmio_write(cfg(1, 0x11) - 0x3000_0000, &[0; 2]);
        pci.mmio_write(u64::MAX, &[0; 4]);
        assert!(pci.bar_traps().is_empty());
        assert!(matches!(
            pci.add(PciSlot::new(1, 0).unwrap(), Box::new(TestFunction::new())),
            Err(PciError::SlotTaken(_))
        ));
    }

    #[test]
    fn bar_programming_moves_the_trap() {
        let (mmio, pci) = setup();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        pci.set_bar_hook(Box::new(move |slot, change, outcome| {
            log.lock().unwrap().push((slot, *change, outcome));
        }));
        // Size BAR0 as Linux does, then place it and enable memory decoding.
        mmio.write(cfg(1, 0x10), &0xffff_ffffu32.to_le_bytes());
        let mut d = [0u8; 4];
        mmio.read(cfg(1, 0x10), &mut d);
        assert_eq!(u32::from_le_bytes(d), 0xffff_f000);
        mmio.write(cfg(1, 0x10), &0x1000_2000u32.to_le_bytes());
        assert!(pci.bar_traps().is_empty(), "memory decode is still off");
        mmio.write(cfg(1, 0x04), &[0x02]);
        let slot = PciSlot::new(1, 0).unwrap();
        let at = Region::new(0x1000_2000, 0x1000);
        assert_eq!(pci.bar_traps(), [(slot, 0, at)]);
        assert_eq!(mmio.write(0x1000_2008, &[1, 2, 3, 4]), Dispatch::Handled);
        let mut d = [0u8; 4];
        mmio.read(0x1000_2008, &mut d);
        assert_eq!(d, [1, 2, 3, 4]);
        // Move it.
        mmio.write(cfg(1, 0x10), &0x1000_5000u32.to_le_bytes());
        let moved = Region::new(0x1000_5000, 0x1000);
        assert_eq!(pci.bar_traps(), [(slot, 0, moved)]);
        assert_eq!(mmio.read(0x1000_2008, &mut d), Dispatch::Unmapped);
        mmio.read(0x1000_5008, &mut d);
        assert_eq!(d, [1, 2, 3, 4]);
        // Disable decoding.
        mmio.write(cfg(1, 0x04), &[0x00]);
        assert!(pci.bar_traps().is_empty());
        assert_eq!(mmio.read(0x1000_5008, &mut d), Dispatch::Unmapped);
        let seen = seen.lock().unwrap();
        assert_eq!(
            *seen,
            [
                (
                    slot,
                    BarChange::Mapped { bar: 0, region: at },
                    BarOutcome::Applied
                ),
                (
                    slot,
                    BarChange::Unmapped { bar: 0, region: at },
                    BarOutcome::Applied
                ),
                (
                    slot,
                    BarChange::Mapped {
                        bar: 0,
                        region: moved
                    },
                    BarOutcome::Applied
                ),
                (
                    slot,
                    BarChange::Unmapped {
                        bar: 0,
                        region: moved
                    },
                    BarOutcome::Applied
                ),
            ]
        );
    }

    #[test]
    fn bars_outside_the_window_are_not_trapped() {
        let (mmio, pci) = setup();
        mmio.write(cfg(1, 0x04), &[0x02]);
        // Over the ECAM window itself, then over RAM: both outside the MMIO window.
        for base in [0x3000_0000u32, 0x4000_0000, 0x0fff_f000] {
            mmio.write(cfg(1, 0x10), &base.to_le_bytes());
            assert!(pci.bar_traps().is_empty(), "{base:#x}");
        }
        assert_eq!(pci.refused_bars(), 3);
        // The ECAM window still works.
        let mut d = [0u8; 4];
        mmio.read(cfg(1, 0), &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x1234_abcd);
        // Overlapping another trap inside the window is refused too.
        let other = Arc::new(crate::uart::Uart::new(None));
        mmio.insert(Region::new(0x1000_0000, 0x1000), other)
            .unwrap();
        mmio.write(cfg(1, 0x10), &0x1000_0000u32.to_le_bytes());
        assert!(pci.bar_traps().is_empty());
        assert_eq!(pci.refused_bars(), 4);
    }

    #[test]
    fn traps_need_a_live_mmio_bus() {
        let mmio = Arc::new(MmioBus::new());
        let pci = PciBus::new(&mmio, WINDOW, 1);
        pci.add(PciSlot::new(0, 0).unwrap(), Box::new(TestFunction::new()))
            .unwrap();
        drop(mmio);
        pci.mmio_write(0x10, &0x1000_0000u32.to_le_bytes());
        pci.mmio_write(0x04, &[0x02]);
        assert!(pci.bar_traps().is_empty());
    }
}
