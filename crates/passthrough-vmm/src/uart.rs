// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A 16550A UART, enough for Linux's 8250 driver and earlycon in polled mode.
//!
//! Register map (TI PC16550D datasheet, "Register Summary"; byte registers, `reg-shift` 0):
//!
//! | offset | DLAB = 0 read / write | DLAB = 1 |
//! |---|---|---|
//! | 0 | RBR / THR | DLL |
//! | 1 | IER | DLM |
//! | 2 | IIR / FCR | IIR / FCR |
//! | 3 | LCR | LCR |
//! | 4 | MCR | MCR |
//! | 5 | LSR (writes ignored) | LSR |
//! | 6 | MSR (writes ignored) | MSR |
//! | 7 | SCR | SCR |
//!
//! The transmitter is always empty: a byte written to THR goes to the console at once, so
//! LSR always has THRE and TEMT. IIR is computed per the datasheet's priority table: with
//! ETBEI set, IIR reports "THR empty" after every THR write until IIR is read
//! (`tests::thre_interrupt_follows_the_datasheet`). The interrupt output is level-sensitive
//! (pending while IIR bit 0 is clear) and drives the callback given to
//! [`Uart::set_irq_line`] on every change (`tests::irq_line_follows_iir`); the VMM wires it
//! to SPI [`UART_SPI`] with `KVM_IRQ_LINE`. Without an interrupt Linux polls the port on a
//! timer, which drains userspace output so slowly that a guest powering off right after
//! printing loses the end of it: the interrupt is what makes the console framing reliable.
//! Loopback (MCR bit 4) sends THR to RBR and the modem outputs to the modem inputs, as the
//! 8250 driver's probe expects.
//!
//! Accesses wider than one byte use the low byte (reads return the register in byte 0 and
//! zeros above); offsets 8 and up read 0 and ignore writes. Host input is not wired: RBR
//! only receives what [`Uart::queue_input`] or loopback puts there.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::console::{Collected, ConsoleFramer};
use crate::mmio::MmioDevice;

/// Receiver FIFO depth of a 16550A.
pub const RX_FIFO_SIZE: usize = 16;
/// The input clock the device tree announces (`clock-frequency`): the classic 1.8432 MHz,
/// so divisor 1 is 115200 baud.
pub const UART_CLOCK_HZ: u32 = 1_843_200;
/// The shared peripheral interrupt (SPI) number of the UART (INTID 32 + 1), level-high.
pub const UART_SPI: u32 = 1;

/// Drives the interrupt line: called with the new level whenever it changes.
pub type IrqLine = Box<dyn FnMut(bool) + Send>;

// Register offsets.
const RBR_THR_DLL: u64 = 0;
const IER_DLM: u64 = 1;
const IIR_FCR: u64 = 2;
const LCR: u64 = 3;
const MCR: u64 = 4;
const LSR: u64 = 5;
const MSR: u64 = 6;
const SCR: u64 = 7;

// IER bits.
const IER_ERBFI: u8 = 0x01;
const IER_ETBEI: u8 = 0x02;
const IER_ELSI: u8 = 0x04;
const IER_EDSSI: u8 = 0x08;
// IIR values (bit 0 clear = interrupt pending), FIFO-enabled bits.
const IIR_NONE: u8 = 0x01;
const IIR_MSI: u8 = 0x00;
const IIR_THRI: u8 = 0x02;
const IIR_RDI: u8 = 0x04;
const IIR_RLSI: u8 = 0x06;
const IIR_FIFO_ENABLED: u8 = 0xc0;
// FCR bits.
const FCR_ENABLE: u8 = 0x01;
const FCR_CLEAR_RX: u8 = 0x02;
// LCR bits.
const LCR_DLAB: u8 = 0x80;
// MCR bits.
const MCR_DTR: u8 = 0x01;
const MCR_RTS: u8 = 0x02;
const MCR_OUT1: u8 = 0x04;
const MCR_OUT2: u8 = 0x08;
const MCR_LOOP: u8 = 0x10;
// LSR bits.
const LSR_DR: u8 = 0x01;
const LSR_OE: u8 = 0x02;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;
// MSR bits.
const MSR_DCTS: u8 = 0x01;
const MSR_DDSR: u8 = 0x02;
const MSR_TERI: u8 = 0x04;
const MSR_DDCD: u8 = 0x08;
const MSR_CTS: u8 = 0x10;
const MSR_DSR: u8 = 0x20;
const MSR_RI: u8 = 0x40;
const MSR_DCD: u8 = 0x80;

/// The register state, without the output side.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Regs {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    dll: u8,
    dlm: u8,
    fifo_enabled: bool,
    /// MSR status bits (7:4) and latched deltas (3:0).
    msr: u8,
    overrun: bool,
    thre_pending: bool,
    rx: VecDeque<u8>,
}

impl Default for Regs {
    fn default() -> Self {
        Regs {
            ier: 0,
            lcr: 0x03, // 8N1, as firmware would leave it
            mcr: MCR_OUT2,
            scr: 0,
            dll: 1,
            dlm: 0,
            fifo_enabled: false,
            // Not in loopback: carrier, data set ready and clear to send are asserted.
            msr: MSR_DCD | MSR_DSR | MSR_CTS,
            overrun: false,
            thre_pending: false,
            rx: VecDeque::with_capacity(RX_FIFO_SIZE),
        }
    }
}

impl Regs {
    fn dlab(&self) -> bool {
        self.lcr & LCR_DLAB != 0
    }

    fn lsr(&self) -> u8 {
        let mut lsr = LSR_THRE | LSR_TEMT;
        if !self.rx.is_empty() {
            lsr |= LSR_DR;
        }
        if self.overrun {
            lsr |= LSR_OE;
        }
        lsr
    }

    /// The interrupt identification, highest priority first (PC16550D Table IV).
    fn iir(&self) -> u8 {
        let id = if self.ier & IER_ELSI != 0 && self.overrun {
            IIR_RLSI
        } else if self.ier & IER_ERBFI != 0 && !self.rx.is_empty() {
            IIR_RDI
        } else if self.ier & IER_ETBEI != 0 && self.thre_pending {
            IIR_THRI
        } else if self.ier & IER_EDSSI != 0 && self.msr & 0x0f != 0 {
            IIR_MSI
        } else {
            IIR_NONE
        };
        if self.fifo_enabled {
            id | IIR_FIFO_ENABLED
        } else {
            id
        }
    }

    fn receive(&mut self, byte: u8) {
        if self.rx.len() >= RX_FIFO_SIZE {
            self.overrun = true;
        } else {
            self.rx.push_back(byte);
        }
    }

    /// Recomputes the modem status inputs and latches their deltas (PC16550D MSR).
    fn update_msr(&mut self) {
        let status = if self.mcr & MCR_LOOP != 0 {
            let mut s = 0;
            if self.mcr & MCR_RTS != 0 {
                s |= MSR_CTS;
            }
            if self.mcr & MCR_DTR != 0 {
                s |= MSR_DSR;
            }
            if self.mcr & MCR_OUT1 != 0 {
                s |= MSR_RI;
            }
            if self.mcr & MCR_OUT2 != 0 {
                s |= MSR_DCD;
            }
            s
        } else {
            MSR_DCD | MSR_DSR | MSR_CTS
        };
        let old = self.msr & 0xf0;
        let changed = old ^ status;
        let mut delta = self.msr & 0x0f;
        if changed & MSR_CTS != 0 {
            delta |= MSR_DCTS;
        }
        if changed & MSR_DSR != 0 {
            delta |= MSR_DDSR;
        }
        if changed & MSR_DCD != 0 {
            delta |= MSR_DDCD;
        }
        // TERI: RI went from asserted to deasserted.
        if old & MSR_RI != 0 && status & MSR_RI == 0 {
            delta |= MSR_TERI;
        }
        self.msr = status | delta;
    }
}

/// Where transmitted bytes go besides the framer: a line-buffered writer (stdout in the
/// VMM), or nowhere.
struct Output {
    echo: Option<Box<dyn Write + Send>>,
    pending: Vec<u8>,
    framer: ConsoleFramer,
    first_byte: Option<Instant>,
}

impl Output {
    fn put(&mut self, byte: u8) {
        if self.first_byte.is_none() {
            self.first_byte = Some(Instant::now());
        }
        self.framer.push(byte);
        if self.echo.is_some() {
            self.pending.push(byte);
            if byte == b'\n' || self.pending.len() >= 4096 {
                self.flush_echo();
            }
        }
    }

    fn flush_echo(&mut self) {
        if let Some(w) = self.echo.as_mut() {
            // A console that cannot be written (closed stdout) must not stop the guest.
            let _ = w.write_all(&self.pending);
            let _ = w.flush();
        }
        self.pending.clear();
    }
}

struct State {
    regs: Regs,
    out: Output,
    irq: Option<IrqLine>,
    irq_level: bool,
}

impl State {
    /// Drives the interrupt line to what IIR says, if it changed.
    fn update_irq(&mut self) {
        let level = self.regs.iir() & IIR_NONE == 0;
        if level != self.irq_level {
            self.irq_level = level;
            if let Some(line) = self.irq.as_mut() {
                line(level);
            }
        }
    }
}

/// The 16550A UART as an MMIO device.
///
/// # Example
///
/// ```
/// use passthrough_vmm::mmio::MmioDevice;
/// use passthrough_vmm::uart::Uart;
///
/// let uart = Uart::new(None);
/// let mut lsr = [0u8];
/// uart.mmio_read(5, &mut lsr);
/// assert_eq!(lsr[0] & 0x60, 0x60); // THRE | TEMT: ready to send
/// for b in b"@@VMM status 0\n" {
///     uart.mmio_write(0, &[*b]);
/// }
/// assert_eq!(uart.collected().status, Some(0));
/// ```
pub struct Uart {
    state: Mutex<State>,
}

impl std::fmt::Debug for Uart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uart")
            .field("regs", &self.lock().regs)
            .finish_non_exhaustive()
    }
}

impl Uart {
    /// A UART in its reset state whose output is framed (see [`crate::console`]) and, if
    /// `echo` is given, also written there a line at a time.
    pub fn new(echo: Option<Box<dyn Write + Send>>) -> Self {
        Uart {
            state: Mutex::new(State {
                regs: Regs::default(),
                out: Output {
                    echo,
                    pending: Vec::new(),
                    framer: ConsoleFramer::new(),
                    first_byte: None,
                },
                irq: None,
                irq_level: false,
            }),
        }
    }

    /// Connects the interrupt output; `line` is called at once with the current level, then
    /// on every change.
    pub fn set_irq_line(&self, mut line: IrqLine) {
        let mut s = self.lock();
        let level = s.regs.iir() & IIR_NONE == 0;
        line(level);
        s.irq_level = level;
        s.irq = Some(line);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic in another holder (every update is a
        // plain field store), so a poisoned lock is taken over rather than propagated.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts bytes in the receiver FIFO (at most [`RX_FIFO_SIZE`]; the rest set overrun).
    pub fn queue_input(&self, bytes: &[u8]) {
        let mut s = self.lock();
        for &b in bytes {
            s.regs.receive(b);
        }
        s.update_irq();
    }

    /// Whether the device would raise its interrupt line (IIR bit 0 clear).
    pub fn interrupt_pending(&self) -> bool {
        self.lock().regs.iir() & IIR_NONE == 0
    }

    /// Reads register `offset` (0..=7) as a byte.
    pub fn read_reg(&self, offset: u64) -> u8 {
        let mut s = self.lock();
        let value = Self::read_locked(&mut s.regs, offset);
        s.update_irq();
        value
    }

    fn read_locked(r: &mut Regs, offset: u64) -> u8 {
        match offset {
            RBR_THR_DLL if r.dlab() => r.dll,
            RBR_THR_DLL => r.rx.pop_front().unwrap_or(0),
            IER_DLM if r.dlab() => r.dlm,
            IER_DLM => r.ier,
            IIR_FCR => {
                let iir = r.iir();
                // Reading IIR while it reports THR empty clears that source.
                if iir & 0x0f == IIR_THRI {
                    r.thre_pending = false;
                }
                iir
            }
            LCR => r.lcr,
            MCR => r.mcr,
            LSR => {
                let lsr = r.lsr();
                r.overrun = false; // error bits clear on read
                lsr
            }
            MSR => {
                let msr = r.msr;
                r.msr &= 0xf0; // deltas clear on read
                msr
            }
            SCR => r.scr,
            _ => 0,
        }
    }

    /// Writes register `offset` (0..=7) with a byte.
    pub fn write_reg(&self, offset: u64, value: u8) {
        let mut s = self.lock();
        {
            let State { regs, out, .. } = &mut *s;
            Self::write_locked(regs, out, offset, value);
        }
        s.update_irq();
    }

    fn write_locked(r: &mut Regs, out: &mut Output, offset: u64, value: u8) {
        match offset {
            RBR_THR_DLL if r.dlab() => r.dll = value,
            RBR_THR_DLL => {
                if r.mcr & MCR_LOOP != 0 {
                    r.receive(value);
                } else {
                    out.put(value);
                }
                // The byte left THR at once: THR is empty again.
                r.thre_pending = true;
            }
            IER_DLM if r.dlab() => r.dlm = value,
            IER_DLM => {
                let was = r.ier;
                r.ier = value & 0x0f;
                // Enabling ETBEI with THR empty raises the THRE interrupt.
                if was & IER_ETBEI == 0 && r.ier & IER_ETBEI != 0 {
                    r.thre_pending = true;
                }
            }
            IIR_FCR => {
                r.fifo_enabled = value & FCR_ENABLE != 0;
                if value & FCR_CLEAR_RX != 0 || !r.fifo_enabled {
                    r.rx.clear();
                }
            }
            LCR => r.lcr = value,
            MCR => {
                r.mcr = value & 0x1f;
                r.update_msr();
            }
            SCR => r.scr = value,
            _ => {} // LSR, MSR: read-only here; beyond 7: nothing
        }
    }

    /// What the console framing collected (see [`crate::console`]).
    pub fn collected(&self) -> Collected {
        self.lock().out.framer.collected().clone()
    }

    /// Ends a partial last line and flushes the echo; call when the guest has stopped.
    pub fn finish(&self) -> Collected {
        let mut s = self.lock();
        s.out.framer.flush();
        s.out.flush_echo();
        s.out.framer.collected().clone()
    }

    /// The most recent raw output, lossily decoded (see [`ConsoleFramer::capture`]).
    pub fn capture(&self) -> String {
        self.lock().out.framer.capture()
    }

    /// When the guest wrote its first byte, if it did.
    pub fn first_output(&self) -> Option<Instant> {
        self.lock().out.first_byte
    }
}

impl MmioDevice for Uart {
    fn mmio_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(first) = data.first_mut()
            && offset < 8
        {
            *first = self.read_reg(offset);
        }
    }

    fn mmio_write(&self, offset: u64, data: &[u8]) {
        if let Some(&first) = data.first()
            && offset < 8
        {
            self.write_reg(offset, first);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A writer the test can look into.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn reset_state_is_ready_to_send() {
        let u = Uart::new(None);
        assert_eq!(u.read_reg(LSR), LSR_THRE | LSR_TEMT);
        assert_eq!(u.read_reg(IIR_FCR), IIR_NONE);
        assert_eq!(u.read_reg(MSR), MSR_DCD | MSR_DSR | MSR_CTS);
        assert_eq!(u.read_reg(RBR_THR_DLL), 0);
        assert!(!u.interrupt_pending());
    }

    #[test]
    fn thr_goes_to_echo_a_line_at_a_time_and_to_the_framer() {
        let sink = Sink::default();
        let u = Uart::new(Some(Box::new(sink.clone())));
        for b in b"hello" {
            u.write_reg(RBR_THR_DLL, *b);
        }
        assert!(sink.0.lock().unwrap().is_empty(), "echo is line buffered");
        u.write_reg(RBR_THR_DLL, b'\n');
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\n");
        for b in b"@@VMM status 4" {
            u.write_reg(RBR_THR_DLL, *b);
        }
        assert_eq!(u.finish().status, Some(4));
        assert_eq!(&*sink.0.lock().unwrap(), b"hello\n@@VMM status 4");
        assert!(u.first_output().is_some());
        assert_eq!(u.capture(), "hello\n@@VMM status 4");
    }

    #[test]
    fn divisor_latch_shadows_rbr_and_ier() {
        let u = Uart::new(None);
        u.write_reg(IER_DLM, 0x05);
        u.write_reg(LCR, 0x83);
        assert_eq!(u.read_reg(RBR_THR_DLL), 1, "DLL reset value");
        u.write_reg(RBR_THR_DLL, 0x0c);
        u.write_reg(IER_DLM, 0x00);
        assert_eq!(u.read_reg(RBR_THR_DLL), 0x0c);
        assert_eq!(u.read_reg(IER_DLM), 0x00);
        // THR writes under DLAB do not transmit.
        assert_eq!(u.collected().bytes, 0);
        u.write_reg(LCR, 0x03);
        assert_eq!(u.read_reg(IER_DLM), 0x05);
        assert_eq!(u.read_reg(LCR), 0x03);
        u.write_reg(SCR, 0x5a);
        assert_eq!(u.read_reg(SCR), 0x5a);
    }

    #[test]
    fn thre_interrupt_follows_the_datasheet() {
        let u = Uart::new(None);
        u.write_reg(IER_DLM, IER_ETBEI);
        assert_eq!(
            u.read_reg(IIR_FCR),
            IIR_THRI,
            "enabling ETBEI with THR empty"
        );
        assert_eq!(u.read_reg(IIR_FCR), IIR_NONE, "cleared by the IIR read");
        u.write_reg(RBR_THR_DLL, b'x');
        assert!(u.interrupt_pending());
        u.write_reg(IIR_FCR, FCR_ENABLE);
        assert_eq!(u.read_reg(IIR_FCR), IIR_THRI | IIR_FIFO_ENABLED);
        assert_eq!(u.read_reg(IIR_FCR), IIR_NONE | IIR_FIFO_ENABLED);
        // Masked: never reported.
        u.write_reg(IER_DLM, 0);
        u.write_reg(RBR_THR_DLL, b'y');
        assert_eq!(u.read_reg(IIR_FCR) & 0x0f, IIR_NONE);
    }

    #[test]
    fn receive_priority_overrun_and_fifo_clear() {
        let u = Uart::new(None);
        u.write_reg(IER_DLM, IER_ERBFI | IER_ETBEI | IER_ELSI);
        u.queue_input(b"ab");
        assert_eq!(u.read_reg(IIR_FCR), IIR_RDI, "data outranks THRE");
        assert_eq!(u.read_reg(LSR) & LSR_DR, LSR_DR);
        assert_eq!(u.read_reg(RBR_THR_DLL), b'a');
        assert_eq!(u.read_reg(RBR_THR_DLL), b'b');
        assert_eq!(u.read_reg(LSR) & LSR_DR, 0);
        assert_eq!(
            u.read_reg(IIR_FCR),
            IIR_THRI,
            "THRE still pending underneath"
        );
        u.queue_input(&[0u8; RX_FIFO_SIZE + 1]);
        assert_eq!(u.read_reg(IIR_FCR), IIR_RLSI);
        assert_eq!(u.read_reg(LSR) & LSR_OE, LSR_OE);
        assert_eq!(u.read_reg(LSR) & LSR_OE, 0, "OE clears on read");
        u.write_reg(IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX);
        assert_eq!(u.read_reg(LSR) & LSR_DR, 0);
    }

    #[test]
    fn loopback_as_the_8250_probe_uses_it() {
        let u = Uart::new(None);
        u.write_reg(MCR, MCR_LOOP | 0x0a); // loop, RTS, OUT2
        let msr = u.read_reg(MSR);
        assert_eq!(msr & 0xf0, MSR_CTS | MSR_DCD);
        assert_eq!(msr & 0x0f, MSR_DDSR, "DSR dropped on entering loopback");
        assert_eq!(u.read_reg(MSR) & 0x0f, 0, "deltas clear on read");
        u.write_reg(MCR, MCR_LOOP | MCR_OUT1);
        u.write_reg(MCR, MCR_LOOP);
        assert_eq!(u.read_reg(MSR) & MSR_TERI, MSR_TERI, "trailing edge of RI");
        u.write_reg(RBR_THR_DLL, 0x55);
        assert_eq!(u.read_reg(RBR_THR_DLL), 0x55);
        assert_eq!(u.collected().bytes, 0, "loopback does not transmit");
        u.write_reg(MCR, MCR_OUT2);
        assert_eq!(u.read_reg(MSR) & 0xf0, MSR_DCD | MSR_DSR | MSR_CTS);
    }

    #[test]
    fn irq_line_follows_iir() {
        let u = Uart::new(None);
        let levels = Arc::new(Mutex::new(Vec::new()));
        let l = levels.clone();
        u.set_irq_line(Box::new(move |level| l.lock().unwrap().push(level)));
        u.write_reg(IER_DLM, IER_ETBEI); // THRE pending: raise
        u.read_reg(IIR_FCR); // source cleared: lower
        u.write_reg(RBR_THR_DLL, b'a'); // raise
        u.write_reg(RBR_THR_DLL, b'b'); // still high: no call
        u.write_reg(IER_DLM, 0); // masked: lower
        u.write_reg(IER_DLM, IER_ERBFI);
        u.queue_input(b"x"); // data ready: raise
        u.read_reg(RBR_THR_DLL); // drained: lower
        assert_eq!(
            *levels.lock().unwrap(),
            [false, true, false, true, false, true, false]
        );
    }

    #[test]
    fn wide_and_out_of_range_accesses_are_defined() {
        let u = Uart::new(None);
        let mut d = [0xffu8; 8];
        u.mmio_read(LSR, &mut d);
        assert_eq!(d, [LSR_THRE | LSR_TEMT, 0, 0, 0, 0, 0, 0, 0]);
        let mut d = [0xffu8; 4];
        u.mmio_read(0x100, &mut d);
        assert_eq!(d, [0; 4]);
        u.mmio_read(u64::MAX, &mut d);
        assert_eq!(d, [0; 4]);
        u.mmio_write(SCR, &[0x11, 0x22, 0x33, 0x44]);
        assert_eq!(u.read_reg(SCR), 0x11);
        u.mmio_write(0x10, &[1]);
        u.mmio_write(SCR, &[]);
        u.mmio_read(SCR, &mut []);
        assert_eq!(u.read_reg(SCR), 0x11);
        // LSR and MSR writes are ignored.
        u.mmio_write(LSR, &[0]);
        u.mmio_write(MSR, &[0]);
        assert_eq!(u.read_reg(LSR), LSR_THRE | LSR_TEMT);
        assert_eq!(u.read_reg(MSR), MSR_DCD | MSR_DSR | MSR_CTS);
    }
}
