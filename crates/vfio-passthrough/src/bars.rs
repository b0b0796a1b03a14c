// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The guest's view of the BAR registers (PCI 3.0 §6.2.5.1): addresses the guest programs,
//! sizing by writing all-ones, 64-bit pairs, and hidden BARs.
//!
//! Memory BARs are emulated from their size and type; the device's real BAR registers are
//! never written (the host owns the physical addresses). I/O BARs are hidden (read as 0,
//! writes ignored): Arm has no port I/O and the passthrough path does not forward it. The
//! expansion ROM BAR is hidden too.

use msi_trap::msix::layout::{BarInfo, BarKind};

/// Offset of BAR0 in a type 0 header.
pub const BAR0: u16 = 0x10;

/// One guest BAR slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestBar {
    /// Kind and size as the guest sees them (the size may exceed the real BAR when the
    /// MSI-X table was relocated into it).
    pub info: BarInfo,
    /// Prefetchable bit (memory BARs).
    pub prefetchable: bool,
    /// The address the guest programmed (size-aligned; garbage until the guest assigns it).
    pub address: u64,
}

impl GuestBar {
    fn mask(&self) -> u64 {
        !(self.info.size.max(16) - 1)
    }
}

/// A BAR as currently decoded by the guest: where it is, when memory decoding is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarWindow {
    /// The BAR index.
    pub bar: u8,
    /// Guest physical address.
    pub gpa: u64,
    /// Size in bytes.
    pub size: u64,
}

/// A change in where a BAR decodes, for the VMM's MMIO bus and the device's direct maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarChange {
    /// The BAR index.
    pub bar: u8,
    /// Where it decoded before (`None`: nowhere).
    pub old: Option<BarWindow>,
    /// Where it decodes now (`None`: nowhere).
    pub new: Option<BarWindow>,
}

/// The six BAR registers of the guest's view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestBars {
    bars: [GuestBar; 6],
}

impl GuestBars {
    /// Builds the guest BARs from the layout's guest BAR infos and the real BAR registers'
    /// low bits (for the prefetchable flag). I/O BARs are kept in the table but hidden.
    pub fn new(infos: &[BarInfo; 6], real_regs: &[u32; 6]) -> Self {
        let mut bars = [GuestBar {
            info: BarInfo::ABSENT,
            prefetchable: false,
            address: 0,
        }; 6];
        for (i, bar) in bars.iter_mut().enumerate() {
            bar.info = infos[i];
            bar.prefetchable = matches!(infos[i].kind, BarKind::Memory32 | BarKind::Memory64)
                && real_regs[i] & 0x8 != 0;
        }
        GuestBars { bars }
    }

    /// The guest BAR `index` (0..=5).
    pub fn get(&self, index: usize) -> Option<&GuestBar> {
        self.bars.get(index)
    }

    /// Whether `index` is the upper half of a 64-bit BAR.
    fn is_upper(&self, index: usize) -> bool {
        index > 0 && self.bars[index - 1].info.kind == BarKind::Memory64
    }

    /// The 32-bit register value of BAR slot `index` as the guest reads it.
    pub fn read_reg(&self, index: usize) -> u32 {
        if index >= 6 {
            return 0;
        }
        if self.is_upper(index) {
            let lower = &self.bars[index - 1];
            return ((lower.address & lower.mask()) >> 32) as u32;
        }
        let bar = &self.bars[index];
        let flags = u32::from(bar.prefetchable) << 3;
        match bar.info.kind {
            BarKind::Absent | BarKind::Io => 0,
            BarKind::Memory32 => ((bar.address & bar.mask()) as u32) | flags,
            BarKind::Memory64 => ((bar.address & bar.mask()) as u32) | 0b100 | flags,
        }
    }

    /// Applies a guest write of the 32-bit register of slot `index` (already merged with the
    /// bytes the guest did not write). Returns whether the decoded address changed.
    pub fn write_reg(&mut self, index: usize, value: u32) -> bool {
        if index >= 6 {
            return false;
        }
        if self.is_upper(index) {
            let lower = &mut self.bars[index - 1];
            let old = lower.address;
            lower.address = (lower.address & 0xffff_ffff) | (u64::from(value) << 32);
            lower.address &= lower.mask();
            return old != lower.address;
        }
        let bar = &mut self.bars[index];
        let old = bar.address;
        match bar.info.kind {
            BarKind::Absent | BarKind::Io => return false,
            BarKind::Memory32 => bar.address = u64::from(value & !0xf) & bar.mask() & 0xffff_ffff,
            BarKind::Memory64 => {
                bar.address = ((bar.address & !0xffff_ffff) | u64::from(value & !0xf)) & bar.mask()
            }
        }
        old != bar.address
    }

    /// Where each memory BAR decodes when memory space is enabled. A BAR whose address is
    /// still the sizing pattern (all ones in its mask) or zero is not placed.
    pub fn windows(&self) -> Vec<BarWindow> {
        let mut out = Vec::new();
        for (i, bar) in self.bars.iter().enumerate() {
            let limit = match bar.info.kind {
                BarKind::Memory32 => 0xffff_ffffu64,
                BarKind::Memory64 => u64::MAX,
                BarKind::Absent | BarKind::Io => continue,
            };
            if bar.info.size == 0 || bar.address == 0 {
                continue;
            }
            // An address whose end wraps or passes the BAR's reach is a sizing pattern left
            // behind, not a placement.
            let Some(last) = bar.address.checked_add(bar.info.size - 1) else {
                continue;
            };
            if last > limit || bar.address == bar.mask() & limit {
                continue;
            }
            out.push(BarWindow {
                bar: i as u8,
                gpa: bar.address,
                size: bar.info.size,
            });
        }
        out
    }

    /// The BAR and offset a guest physical address falls in, among `windows`.
    pub fn locate(windows: &[BarWindow], gpa: u64) -> Option<(u8, u64)> {
        windows
            .iter()
            .find(|w| gpa >= w.gpa && gpa - w.gpa < w.size)
            .map(|w| (w.bar, gpa - w.gpa))
    }
}

/// The changes between two sets of windows, per BAR.
pub fn diff_windows(old: &[BarWindow], new: &[BarWindow]) -> Vec<BarChange> {
    let mut out = Vec::new();
    for bar in 0..6u8 {
        let o = old.iter().find(|w| w.bar == bar).copied();
        let n = new.iter().find(|w| w.bar == bar).copied();
        if o != n {
            out.push(BarChange {
                bar,
                old: o,
                new: n,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The igb: BAR0 32-bit 128 KiB, BAR2 I/O 32 bytes, BAR3 32-bit 16 KiB (MSI-X).
    fn igb() -> GuestBars {
        let infos = [
            BarInfo::memory32(0x2_0000),
            BarInfo::ABSENT,
            BarInfo::io(0x20),
            BarInfo::memory32(0x4000),
            BarInfo::ABSENT,
            BarInfo::ABSENT,
        ];
        GuestBars::new(&infos, &[0, 0, 1, 0, 0, 0])
    }

    #[test]
    fn sizing_returns_the_size_mask() {
        let mut b = igb();
        b.write_reg(0, 0xffff_ffff);
        assert_eq!(b.read_reg(0), 0xfffe_0000);
        b.write_reg(3, 0xffff_ffff);
        assert_eq!(b.read_reg(3), 0xffff_c000);
        // Sizing leaves no placement behind.
        assert!(b.windows().is_empty());
    }

    #[test]
    fn io_and_absent_bars_read_zero_and_ignore_writes() {
        let mut b = igb();
        assert!(!b.write_reg(2, 0xffff_ffff));
        assert_eq!(b.read_reg(2), 0);
        assert_eq!(b.read_reg(1), 0);
        assert_eq!(b.read_reg(5), 0);
        assert_eq!(b.read_reg(6), 0);
        assert!(!b.write_reg(9, 1));
    }

    #[test]
    fn placement_and_windows() {
        let mut b = igb();
        assert!(b.write_reg(0, 0x1000_0000));
        assert!(b.write_reg(3, 0x1002_0000));
        assert_eq!(b.read_reg(0), 0x1000_0000);
        assert_eq!(
            b.windows(),
            vec![
                BarWindow {
                    bar: 0,
                    gpa: 0x1000_0000,
                    size: 0x2_0000
                },
                BarWindow {
                    bar: 3,
                    gpa: 0x1002_0000,
                    size: 0x4000
                }
            ]
        );
        // Unaligned addresses are truncated to the BAR's alignment.
        b.write_reg(3, 0x1002_1234);
        assert_eq!(b.read_reg(3), 0x1002_0000);
        assert_eq!(
            GuestBars::locate(&b.windows(), 0x1002_0010),
            Some((3, 0x10))
        );
        assert_eq!(GuestBars::locate(&b.windows(), 0x1002_4000), None);
    }

    #[test]
    fn sixty_four_bit_pairs() {
        let infos = [
            BarInfo::memory64(0x10_0000),
            BarInfo::ABSENT,
            BarInfo::ABSENT,
            BarInfo::ABSENT,
            BarInfo::ABSENT,
            BarInfo::ABSENT,
        ];
        let mut b = GuestBars::new(&infos, &[0xc, 0, 0, 0, 0, 0]);
        assert_eq!(b.read_reg(0), 0b1100);
        b.write_reg(0, 0xffff_ffff);
        b.write_reg(1, 0xffff_ffff);
        assert_eq!(b.read_reg(0), 0xfff0_000c);
        assert_eq!(b.read_reg(1), 0xffff_ffff);
        b.write_reg(0, 0x0020_0000);
        b.write_reg(1, 0x80);
        assert_eq!(b.read_reg(1), 0x80);
        assert_eq!(
            b.windows(),
            vec![BarWindow {
                bar: 0,
                gpa: 0x80_0020_0000,
                size: 0x10_0000
            }]
        );
    }

    #[test]
    fn diff_reports_moves_enables_and_disables() {
        let a = [BarWindow {
            bar: 0,
            gpa: 0x1000_0000,
            size: 0x1000,
        }];
        let b = [BarWindow {
            bar: 0,
            gpa: 0x2000_0000,
            size: 0x1000,
        }];
        assert_eq!(diff_windows(&a, &a), vec![]);
        assert_eq!(
            diff_windows(&a, &b),
            vec![BarChange {
                bar: 0,
                old: Some(a[0]),
                new: Some(b[0])
            }]
        );
        assert_eq!(
            diff_windows(&[], &a),
            vec![BarChange {
                bar: 0,
                old: None,
                new: Some(a[0])
            }]
        );
        assert_eq!(
            diff_windows(&a, &[]),
            vec![BarChange {
                bar: 0,
                old: Some(a[0]),
                new: None
            }]
        );
    }
}
