// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The guest's view of the device's configuration space.
//!
//! Every byte of the type 0 header and the capability area has an owner (PCI 3.0 §6.1,
//! §6.2, §6.7):
//!
//! | bytes | guest read | guest write |
//! |---|---|---|
//! | vendor, device, revision, class, subsystem, min_gnt/max_lat | device | ignored |
//! | command (0x04) | emulated | stored; Memory Space, Bus Master, Parity, SERR#, INTx Disable forwarded |
//! | status (0x06) | device | forwarded (RW1C bits) |
//! | cache line, latency timer, interrupt line | emulated | stored |
//! | header type | device, multi-function bit cleared | ignored |
//! | BIST, CardBus CIS, expansion ROM, interrupt pin, reserved | 0 | ignored |
//! | BARs | emulated ([`GuestBars`]) | emulated |
//! | capabilities pointer, next pointers | the visible list | ignored |
//! | MSI-X capability | the `msi-trap` emulation | the `msi-trap` emulation |
//! | Power Management and PCI Express capabilities | device | forwarded (vfio-pci filters them further) |
//! | other visible capabilities | device | ignored |
//! | hidden capabilities, bytes outside any capability | 0 | ignored |
//! | extended configuration space (0x100..) | 0 (empty list) | ignored |
//!
//! Hidden: the MSI capability when the device has MSI-X (the guest uses MSI-X; one
//! interrupt mode keeps the host path simple), and the whole extended space, so a guest
//! cannot reach SR-IOV, AER or other extended capabilities of the physical function.

use msi_trap::caps::CapabilityList;

use crate::backend::DeviceBackend;
use crate::bars::{BAR0, BarChange, BarWindow, GuestBars, diff_windows};

/// The standard configuration space size; everything above is hidden.
pub const CONFIG_SIZE: usize = 0x100;

const PCI_COMMAND: u16 = 0x04;
/// Offset of Device Control in the PCI Express capability; bit 15 of it is Initiate
/// Function-Level Reset, which is never forwarded: a reset behind the passthrough model's
/// back would tear down the device's MSI-X state while the model still believes it live.
const PCIE_DEVCTL: u16 = 0x08;
/// Command bits forwarded to the device: Memory Space, Bus Master, Parity Error Response,
/// SERR# Enable, Interrupt Disable. I/O Space is never forwarded (no I/O BARs are exposed).
pub const COMMAND_FORWARD_MASK: u16 = (1 << 1) | (1 << 2) | (1 << 6) | (1 << 8) | (1 << 10);
/// Command bit 1: Memory Space.
pub const COMMAND_MEMORY: u16 = 1 << 1;

/// PCI capability IDs (PCI 3.0 Appendix H).
const CAP_PM: u8 = hw_defs::pci::CAP_ID_PM;
const CAP_MSI: u8 = hw_defs::pci::CAP_ID_MSI;
const CAP_PCIE: u8 = hw_defs::pci::CAP_ID_EXP;
const CAP_MSIX: u8 = hw_defs::pci::CAP_ID_MSIX;

/// How guest writes to a visible capability are handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CapWrites {
    /// The MSI-X emulation owns it.
    Msix,
    /// Forwarded to the device.
    Forward,
    /// Read-only for the guest.
    Ignore,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct VisibleCap {
    id: u8,
    offset: u8,
    len: u16,
    next: u8,
    writes: CapWrites,
}

/// Who owns a config byte, for reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// Read from the device; guest writes ignored.
    Device,
    /// Read from the device; guest writes forwarded.
    Forward,
    /// Emulated here.
    Emulated,
    /// Owned by the MSI-X emulation.
    Msix,
    /// A next pointer of the visible list.
    Next(u8),
    /// Reads 0, writes ignored.
    Zero,
}

/// The virtualized configuration space of one function (everything but the MSI-X
/// capability's contents, which `msi-trap` owns).
#[derive(Clone, Debug)]
pub struct VirtualConfig {
    caps: Vec<VisibleCap>,
    first_cap: u8,
    command: u16,
    cache_line: u8,
    latency: u8,
    int_line: u8,
    bars: GuestBars,
    windows: Vec<BarWindow>,
    msix_offset: Option<u8>,
    pcie_offset: Option<u8>,
}

/// The capability layout decided at setup: which are visible, and their virtual next
/// pointers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapPlan {
    /// Visible capabilities: (id, offset, virtual next).
    pub visible: Vec<(u8, u8, u8)>,
    /// The virtual capabilities pointer.
    pub first: u8,
    /// The MSI-X capability's offset, when there is one.
    pub msix: Option<u8>,
}

/// Decides which standard capabilities the guest sees, from the device's config image.
/// Capability list errors (loops, bad pointers) hide the whole list: a device with a broken
/// list gets none, rather than a guess.
pub fn plan_caps(config: &[u8]) -> CapPlan {
    let list = match CapabilityList::parse(config) {
        Ok(l) => l,
        Err(e) => {
            log::warn!("capability list rejected, exposing no capabilities: {e}");
            return CapPlan {
                visible: Vec::new(),
                first: 0,
                msix: None,
            };
        }
    };
    let has_msix = list.msix().is_some();
    let kept: Vec<(u8, u8)> = list
        .standard()
        .iter()
        .filter(|c| !(has_msix && c.id == CAP_MSI))
        .map(|c| (c.id, c.offset))
        .collect();
    let visible = kept
        .iter()
        .enumerate()
        .map(|(i, &(id, off))| (id, off, kept.get(i + 1).map_or(0, |n| n.1)))
        .collect();
    CapPlan {
        visible,
        first: kept.first().map_or(0, |c| c.1),
        msix: list.msix().map(|c| c.offset),
    }
}

impl VirtualConfig {
    /// Builds the view from the device's config image (read once at setup), the capability
    /// plan and the guest BARs. The guest's command register starts at 0 (decoding off), as
    /// after reset.
    pub fn new(config: &[u8], plan: &CapPlan, bars: GuestBars) -> Self {
        // Each visible capability extends to the next capability in address order (any
        // capability, visible or not) or to the end of the standard space.
        let mut all: Vec<u8> = plan.visible.iter().map(|c| c.1).collect();
        all.sort_unstable();
        let caps = plan
            .visible
            .iter()
            .map(|&(id, offset, next)| {
                let end = all
                    .iter()
                    .find(|&&o| o > offset)
                    .map_or(CONFIG_SIZE as u16, |&o| u16::from(o));
                let known = match id {
                    CAP_PM => 8,
                    CAP_MSIX => 12,
                    CAP_PCIE => 0x3c,
                    _ => u16::MAX,
                };
                let len = (end - u16::from(offset)).min(known);
                let writes = match id {
                    CAP_MSIX => CapWrites::Msix,
                    CAP_PM | CAP_PCIE => CapWrites::Forward,
                    _ => CapWrites::Ignore,
                };
                VisibleCap {
                    id,
                    offset,
                    len,
                    next,
                    writes,
                }
            })
            .collect();
        VirtualConfig {
            caps,
            first_cap: plan.first,
            command: 0,
            cache_line: config.get(0x0c).copied().unwrap_or(0),
            latency: 0,
            int_line: 0,
            bars,
            windows: Vec::new(),
            msix_offset: plan.msix,
            pcie_offset: plan.visible.iter().find(|c| c.0 == CAP_PCIE).map(|c| c.1),
        }
    }

    /// The guest's command register.
    pub fn command(&self) -> u16 {
        self.command
    }

    /// The guest BARs.
    pub fn bars(&self) -> &GuestBars {
        &self.bars
    }

    /// Where the BARs decode now (empty while Memory Space is off).
    pub fn windows(&self) -> &[BarWindow] {
        &self.windows
    }

    fn owner(&self, o: u16) -> Owner {
        match o {
            0x00..=0x03 | 0x08..=0x0b | 0x2c..=0x2f | 0x3e..=0x3f => Owner::Device,
            0x04..=0x05 | 0x0c..=0x0d | 0x10..=0x27 | 0x3c => Owner::Emulated,
            0x06..=0x07 => Owner::Forward,
            0x0e => Owner::Emulated,
            0x0f | 0x28..=0x2b | 0x30..=0x33 | 0x35..=0x3b | 0x3d => Owner::Zero,
            0x34 => Owner::Emulated,
            0x40..=0xff => {
                let Some(cap) = self
                    .caps
                    .iter()
                    .find(|c| o >= u16::from(c.offset) && o < u16::from(c.offset) + c.len)
                else {
                    return Owner::Zero;
                };
                let rel = o - u16::from(cap.offset);
                match (cap.writes, rel) {
                    (CapWrites::Msix, _) => Owner::Msix,
                    (_, 1) => Owner::Next(cap.next),
                    (_, 0) => Owner::Device,
                    (CapWrites::Forward, _) => Owner::Forward,
                    (CapWrites::Ignore, _) => Owner::Device,
                }
            }
            _ => Owner::Zero,
        }
    }

    fn emulated_byte(&self, o: u16, device: u8) -> u8 {
        match o {
            0x04 => self.command as u8,
            0x05 => (self.command >> 8) as u8,
            0x0c => self.cache_line,
            0x0d => self.latency,
            0x0e => device & 0x7f,
            0x10..=0x27 => {
                let reg = self.bars.read_reg(usize::from((o - BAR0) / 4));
                (reg >> (8 * (o % 4))) as u8
            }
            0x34 => self.first_cap,
            0x3c => self.int_line,
            _ => 0,
        }
    }

    /// A guest config read of `data.len()` bytes at `offset`. Device-owned bytes come from
    /// `dev` (a failed device read gives all-ones, as a vanished device does); MSI-X
    /// capability bytes are left as read from the device, for the caller to overlay with
    /// the MSI-X emulation.
    pub fn read(&self, dev: &dyn DeviceBackend, offset: u16, data: &mut [u8]) {
        let start = usize::from(offset);
        // Device bytes only exist in the standard space; nothing above it is shown.
        let live_len = CONFIG_SIZE.saturating_sub(start).min(data.len());
        if live_len > 0
            && let Err(e) = dev.read_config(offset, &mut data[..live_len])
        {
            log::warn!(
                "config read of {live_len} bytes at {offset:#x} from the device failed: {e}"
            );
            data[..live_len].fill(0xff);
        }
        for (i, b) in data.iter_mut().enumerate() {
            let Some(o) = start.checked_add(i).and_then(|o| u16::try_from(o).ok()) else {
                *b = 0;
                continue;
            };
            *b = match self.owner(o) {
                Owner::Device | Owner::Forward | Owner::Msix => *b,
                Owner::Emulated => self.emulated_byte(o, *b),
                Owner::Next(n) => n,
                Owner::Zero => 0,
            };
        }
    }

    /// A guest config write of `data` at `offset`. Forwarded bytes go to `dev` exactly as
    /// written (so RW1C bits behave); emulated registers are updated (partial writes merge
    /// with the current value); MSI-X capability bytes are left to the caller. Returns the
    /// BAR decode changes the write caused.
    pub fn write(&mut self, dev: &dyn DeviceBackend, offset: u16, data: &[u8]) -> Vec<BarChange> {
        let start = usize::from(offset);
        let mut run: Option<(u16, Vec<u8>)> = None;
        let flush = |run: &mut Option<(u16, Vec<u8>)>| {
            if let Some((at, bytes)) = run.take()
                && let Err(e) = dev.write_config(at, &bytes)
            {
                log::warn!(
                    "config write of {} bytes at {at:#x} to the device failed: {e}",
                    bytes.len()
                );
            }
        };
        let old_command = self.command;
        let mut bar_regs: [Option<u32>; 6] = [None; 6];
        for (i, &b) in data.iter().enumerate() {
            let Some(o) = start.checked_add(i).and_then(|o| u16::try_from(o).ok()) else {
                break;
            };
            let owner = self.owner(o);
            if owner == Owner::Forward {
                let b = match self.pcie_offset {
                    Some(p) if o == u16::from(p) + PCIE_DEVCTL + 1 => b & 0x7f,
                    _ => b,
                };
                match &mut run {
                    Some((at, bytes)) if usize::from(*at) + bytes.len() == usize::from(o) => {
                        bytes.push(b)
                    }
                    _ => {
                        flush(&mut run);
                        run = Some((o, vec![b]));
                    }
                }
                continue;
            }
            flush(&mut run);
            if owner != Owner::Emulated {
                continue;
            }
            match o {
                0x04 => self.command = (self.command & 0xff00) | u16::from(b),
                0x05 => self.command = (self.command & 0x00ff) | (u16::from(b) << 8),
                0x0c => self.cache_line = b,
                0x0d => self.latency = b,
                0x3c => self.int_line = b,
                0x10..=0x27 => {
                    let idx = usize::from((o - BAR0) / 4);
                    let shift = 8 * u32::from(o % 4);
                    let cur = bar_regs[idx].unwrap_or_else(|| self.bars.read_reg(idx));
                    bar_regs[idx] = Some((cur & !(0xff << shift)) | (u32::from(b) << shift));
                }
                _ => {}
            }
        }
        flush(&mut run);
        for (idx, reg) in bar_regs.iter().enumerate() {
            if let Some(v) = reg {
                self.bars.write_reg(idx, *v);
            }
        }
        if (self.command ^ old_command) & COMMAND_FORWARD_MASK != 0 {
            self.forward_command(dev);
        }
        self.refresh_windows()
    }

    fn forward_command(&self, dev: &dyn DeviceBackend) {
        let mut cur = [0u8; 2];
        if let Err(e) = dev.read_config(PCI_COMMAND, &mut cur) {
            log::warn!("command register read failed: {e}");
            return;
        }
        let device = u16::from_le_bytes(cur);
        let value = (device & !COMMAND_FORWARD_MASK) | (self.command & COMMAND_FORWARD_MASK);
        if let Err(e) = dev.write_config(PCI_COMMAND, &value.to_le_bytes()) {
            log::warn!("command register write of {value:#06x} failed: {e}");
        }
    }

    fn refresh_windows(&mut self) -> Vec<BarChange> {
        let new = if self.command & COMMAND_MEMORY != 0 {
            self.bars.windows()
        } else {
            Vec::new()
        };
        let changes = diff_windows(&self.windows, &new);
        self.windows = new;
        changes
    }

    /// Whether `offset..offset + len` touches the MSI-X capability.
    pub fn touches_msix(&self, offset: u16, len: usize) -> bool {
        let Some(cap) = self.msix_offset else {
            return false;
        };
        let (a, b) = (usize::from(offset), usize::from(cap));
        a < b + 12 && b < a.saturating_add(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{BackendError, VectorBackend};
    use msi_trap::msix::layout::BarInfo;
    use std::sync::Mutex;
    use vmm_sys_util::eventfd::EventFd;

    /// A device whose config space is a byte array; records every write.
    pub(crate) struct FakeConfig {
        pub cfg: Mutex<Vec<u8>>,
        pub writes: Mutex<Vec<(u16, Vec<u8>)>>,
    }

    impl VectorBackend for FakeConfig {
        fn set_vector(&self, _: u16, _: Option<&EventFd>) -> Result<(), BackendError> {
            Ok(())
        }
        fn disable_vectors(&self) -> Result<(), BackendError> {
            Ok(())
        }
        fn prepare_msi_iova(&self, _: u16, _: u64) -> Result<(), BackendError> {
            Ok(())
        }
        fn read_table_address(&self, _: u16) -> Result<Option<u64>, BackendError> {
            Ok(None)
        }
        fn write_table_address(&self, _: u16, _: u32, _: u32) -> Result<(), BackendError> {
            Ok(())
        }
    }

    impl DeviceBackend for FakeConfig {
        fn read_config(&self, offset: u16, buf: &mut [u8]) -> Result<(), BackendError> {
            let cfg = self.cfg.lock().unwrap();
            let o = usize::from(offset);
            buf.copy_from_slice(cfg.get(o..o + buf.len()).ok_or("out of range")?);
            Ok(())
        }
        fn write_config(&self, offset: u16, buf: &[u8]) -> Result<(), BackendError> {
            self.writes.lock().unwrap().push((offset, buf.to_vec()));
            let mut cfg = self.cfg.lock().unwrap();
            let o = usize::from(offset);
            cfg[o..o + buf.len()].copy_from_slice(buf);
            Ok(())
        }
        fn read_bar(&self, _: u8, _: u64, _: &mut [u8]) -> Result<(), BackendError> {
            Ok(())
        }
        fn write_bar(&self, _: u8, _: u64, _: &[u8]) -> Result<(), BackendError> {
            Ok(())
        }
    }

    /// An igb-like config space: PM at 0x40 -> MSI at 0x50 -> MSI-X at 0x70 -> PCIe at 0xa0.
    pub(crate) fn igb_config() -> Vec<u8> {
        let mut c = vec![0u8; 256];
        c[0..4].copy_from_slice(&[0x86, 0x80, 0xc9, 0x10]);
        c[0x06] = 0x10; // capabilities list
        c[0x0e] = 0x80; // multi-function
        c[0x34] = 0x40;
        c[0x40..0x42].copy_from_slice(&[CAP_PM, 0x50]);
        c[0x50..0x52].copy_from_slice(&[CAP_MSI, 0x70]);
        c[0x52] = 0x80; // 64-bit MSI
        c[0x70..0x74].copy_from_slice(&[CAP_MSIX, 0xa0, 0x09, 0x00]); // 10 vectors
        c[0x74..0x78].copy_from_slice(&3u32.to_le_bytes()); // table BAR3 + 0
        c[0x78..0x7c].copy_from_slice(&0x2003u32.to_le_bytes()); // PBA BAR3 + 0x2000
        c[0xa0..0xa2].copy_from_slice(&[CAP_PCIE, 0x00]);
        c[0x3d] = 1; // INTA
        c
    }

    fn fake(cfg: Vec<u8>) -> FakeConfig {
        FakeConfig {
            cfg: Mutex::new(cfg),
            writes: Mutex::new(Vec::new()),
        }
    }

    fn igb_view() -> (VirtualConfig, FakeConfig) {
        let cfg = igb_config();
        let plan = plan_caps(&cfg);
        let infos = [
            BarInfo::memory32(0x2_0000),
            BarInfo::ABSENT,
            BarInfo::io(0x20),
            BarInfo::memory32(0x4000),
            BarInfo::ABSENT,
            BarInfo::ABSENT,
        ];
        let bars = GuestBars::new(&infos, &[0; 6]);
        (VirtualConfig::new(&cfg, &plan, bars), fake(cfg))
    }

    fn read(v: &VirtualConfig, d: &FakeConfig, off: u16, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        v.read(d, off, &mut b);
        b
    }

    #[test]
    fn msi_is_unlinked_when_msix_exists() {
        let plan = plan_caps(&igb_config());
        assert_eq!(plan.first, 0x40);
        assert_eq!(
            plan.visible,
            vec![
                (CAP_PM, 0x40, 0x70),
                (CAP_MSIX, 0x70, 0xa0),
                (CAP_PCIE, 0xa0, 0)
            ]
        );
        let (v, d) = igb_view();
        assert_eq!(read(&v, &d, 0x41, 1), vec![0x70]);
        // The hidden MSI capability reads as zeros.
        assert_eq!(read(&v, &d, 0x50, 4), vec![0, 0, 0, 0]);
    }

    #[test]
    fn identity_passes_through_and_hidden_fields_read_zero() {
        let (v, d) = igb_view();
        assert_eq!(read(&v, &d, 0, 4), vec![0x86, 0x80, 0xc9, 0x10]);
        assert_eq!(
            read(&v, &d, 0x0e, 1),
            vec![0x00],
            "multi-function bit hidden"
        );
        assert_eq!(read(&v, &d, 0x3d, 1), vec![0], "no INTx pin");
        assert_eq!(read(&v, &d, 0x30, 4), vec![0; 4], "no ROM");
        assert_eq!(
            read(&v, &d, 0x100, 4),
            vec![0; 4],
            "no extended capabilities"
        );
        assert_eq!(read(&v, &d, 0xffe, 4), vec![0; 4], "past the end");
    }

    #[test]
    fn command_is_emulated_and_forwarded_masked() {
        let (mut v, d) = igb_view();
        // I/O + Memory + Bus Master.
        v.write(&d, 0x04, &[0x07, 0x00]);
        assert_eq!(v.command(), 0x07);
        assert_eq!(read(&v, &d, 0x04, 2), vec![0x07, 0x00]);
        let cmd = u16::from_le_bytes(d.cfg.lock().unwrap()[4..6].try_into().unwrap());
        assert_eq!(cmd, 0x06, "I/O Space is not forwarded");
    }

    #[test]
    fn status_writes_are_forwarded_byte_exact() {
        let (mut v, d) = igb_view();
        // A dword write at 0x04 carries command (emulated) and status (RW1C, forwarded).
        v.write(&d, 0x04, &[0x02, 0x00, 0x00, 0xf9]);
        let writes = d.writes.lock().unwrap().clone();
        assert!(writes.contains(&(0x06, vec![0x00, 0xf9])), "{writes:?}");
    }

    #[test]
    fn bar_sizing_and_placement_report_windows_only_with_memory_space() {
        let (mut v, d) = igb_view();
        v.write(&d, 0x10, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(read(&v, &d, 0x10, 4), 0xfffe_0000u32.to_le_bytes().to_vec());
        // I/O BAR hidden.
        v.write(&d, 0x18, &0xffff_ffffu32.to_le_bytes());
        assert_eq!(read(&v, &d, 0x18, 4), vec![0; 4]);
        assert!(v.write(&d, 0x10, &0x1000_0000u32.to_le_bytes()).is_empty());
        v.write(&d, 0x1c, &0x1002_0000u32.to_le_bytes());
        let changes = v.write(&d, 0x04, &[0x02, 0x00]);
        assert_eq!(changes.len(), 2);
        assert_eq!(
            changes[0].new,
            Some(BarWindow {
                bar: 0,
                gpa: 0x1000_0000,
                size: 0x2_0000
            })
        );
        // Moving a BAR while decoding: one change.
        let changes = v.write(&d, 0x1c, &0x1004_0000u32.to_le_bytes());
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].old.unwrap().gpa, 0x1002_0000);
        assert_eq!(changes[0].new.unwrap().gpa, 0x1004_0000);
        // Byte-wise BAR write merges.
        v.write(&d, 0x13, &[0x20]);
        assert_eq!(read(&v, &d, 0x10, 4), 0x2000_0000u32.to_le_bytes().to_vec());
        // Memory Space off: all windows go away.
        let changes = v.write(&d, 0x04, &[0x00, 0x00]);
        assert!(changes.iter().all(|c| c.new.is_none()));
        assert!(v.windows().is_empty());
    }

    #[test]
    fn capability_writes_follow_their_owner() {
        let (mut v, d) = igb_view();
        d.writes.lock().unwrap().clear();
        // PM control (0x44) is forwarded; its next pointer byte is not.
        v.write(&d, 0x44, &[0x03, 0x00]);
        v.write(&d, 0x41, &[0x00]);
        // The hidden MSI capability is not reachable.
        v.write(&d, 0x52, &[0x01]);
        // The vendor/device ID is read-only.
        v.write(&d, 0x00, &[0, 0, 0, 0]);
        // PCIe Device Control is forwarded without Initiate FLR.
        v.write(&d, 0xa8, &[0x10, 0x80]);
        let writes = d.writes.lock().unwrap().clone();
        assert_eq!(
            writes,
            vec![(0x44, vec![0x03, 0x00]), (0xa8, vec![0x10, 0x00])]
        );
        assert!(v.touches_msix(0x72, 2));
        assert!(!v.touches_msix(0x7c, 4));
    }

    #[test]
    fn broken_capability_lists_expose_nothing() {
        let mut cfg = igb_config();
        cfg[0x41] = 0x40; // loop
        let plan = plan_caps(&cfg);
        assert_eq!(plan.first, 0);
        assert!(plan.visible.is_empty());
        assert_eq!(plan.msix, None);
    }

    #[test]
    fn failed_device_reads_are_all_ones() {
        let (v, _) = igb_view();
        let empty = fake(vec![0u8; 4]);
        assert_eq!(read(&v, &empty, 0x08, 4), vec![0xff; 4]);
    }

    #[test]
    fn arbitrary_accesses_never_panic() {
        let (mut v, d) = igb_view();
        for off in (0..0x1000u16).step_by(3) {
            for len in [0usize, 1, 2, 3, 4, 8, 64] {
                let mut b = vec![0u8; len];
                v.read(&d, off, &mut b);
                v.write(&d, off, &b);
            }
        }
        v.read(&d, u16::MAX, &mut [0u8; 8]);
        v.write(&d, u16::MAX, &[0xffu8; 8]);
    }
}
