// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The vSMMU's own interrupts, delivered to the VMM (IHI 0070 §3.18).
//!
//! Three sources: the event queue (`SMMU_IRQ_CTRL.EVENTQ_IRQEN`), global errors
//! (`GERROR_IRQEN`) and `CMD_SYNC` completion (`CS = SIG_IRQ`). With `IDR0.MSI` advertised
//! and the source's `*_IRQ_CFG0.ADDR` (or `CMD_SYNC.MSIAddress`) not zero, the interrupt is
//! an MSI: a 32-bit write of the data to the address. The model performs that write itself
//! when guest RAM backs the address (Linux's `CMD_SYNC` completion polling reads it from
//! RAM); otherwise the VMM's [`InterruptSink::msi`] receives it (for example the guest's
//! vITS doorbell). Without an MSI address the wired line is raised with
//! [`InterruptSink::raise`] (edge, one call per interrupt).

/// A wired interrupt line of the SMMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IrqLine {
    /// "eventq".
    EventQueue,
    /// "gerror".
    Gerror,
    /// "cmdq-sync".
    CmdSync,
}

/// An MSI the VMM must deliver (not to RAM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiMessage {
    /// Guest physical address (`ADDR[51:2]`).
    pub address: u64,
    /// 32-bit payload.
    pub data: u32,
    /// Which source sent it.
    pub source: IrqLine,
}

/// Where the vSMMU's interrupts go; the VMM implements it.
pub trait InterruptSink {
    /// An edge on a wired line.
    fn raise(&mut self, line: IrqLine);
    /// An MSI to an address guest RAM does not back.
    fn msi(&mut self, msg: MsiMessage);
}

impl<S: InterruptSink + ?Sized> InterruptSink for &mut S {
    fn raise(&mut self, line: IrqLine) {
        (**self).raise(line)
    }
    fn msi(&mut self, msg: MsiMessage) {
        (**self).msi(msg)
    }
}

/// A sink that records, for tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordingSink {
    /// Wired edges, in order.
    pub wired: Vec<IrqLine>,
    /// MSIs, in order.
    pub msis: Vec<MsiMessage>,
}

impl InterruptSink for RecordingSink {
    fn raise(&mut self, line: IrqLine) {
        self.wired.push(line);
    }
    fn msi(&mut self, msg: MsiMessage) {
        self.msis.push(msg);
    }
}
