// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Benchmarks of the per-exit work of the VMM: MMIO dispatch to the UART and to ECAM
//! (every guest console byte and config access is one `KVM_EXIT_MMIO`), the console
//! framing, and building the device tree.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use passthrough_vmm::console::ConsoleFramer;
use passthrough_vmm::fdt::{FdtConfig, build_fdt};
use passthrough_vmm::layout::MemoryLayout;
use passthrough_vmm::mmio::MmioBus;
use passthrough_vmm::pci::PciBus;
use passthrough_vmm::uart::Uart;

fn bus() -> (MemoryLayout, Arc<MmioBus>) {
    let layout = MemoryLayout::new(2, 512 << 20);
    let bus = Arc::new(MmioBus::new());
    bus.insert(layout.uart, Arc::new(Uart::new(None))).unwrap();
    let pci = Arc::new(PciBus::new(&bus, layout.pci_mmio32, layout.ecam_buses()));
    bus.insert(layout.ecam, pci).unwrap();
    (layout, bus)
}

fn mmio(c: &mut Criterion) {
    let (layout, bus) = bus();
    let thr = layout.uart.base;
    let lsr = layout.uart.base + 5;
    c.bench_function("mmio_uart_thr_write", |b| {
        b.iter(|| bus.write(black_box(thr), b"x"))
    });
    c.bench_function("mmio_uart_lsr_read", |b| {
        let mut d = [0u8; 1];
        b.iter(|| bus.read(black_box(lsr), &mut d))
    });
    let empty_slot = layout.ecam.base + (7 << 15);
    c.bench_function("mmio_ecam_empty_slot_read", |b| {
        let mut d = [0u8; 4];
        b.iter(|| bus.read(black_box(empty_slot), &mut d))
    });
    c.bench_function("mmio_unmapped_read", |b| {
        let mut d = [0u8; 4];
        b.iter(|| bus.read(black_box(0x0500_0000), &mut d))
    });
}

fn console(c: &mut Criterion) {
    let line = b"[    0.123456] a typical kernel log line of some length\r\n";
    c.bench_function("console_framer_line", |b| {
        let mut f = ConsoleFramer::new();
        b.iter(|| f.push_bytes(black_box(line)))
    });
}

fn fdt(c: &mut Criterion) {
    let layout = MemoryLayout::new(4, 512 << 20);
    c.bench_function("build_fdt_4cpu", |b| {
        b.iter(|| {
            build_fdt(&FdtConfig {
                layout: black_box(&layout),
                cmdline: "console=ttyS0 earlycon panic=-1",
                initrd: None,
            })
            .unwrap()
        })
    });
}

criterion_group!(benches, mmio, console, fdt);
criterion_main!(benches);
