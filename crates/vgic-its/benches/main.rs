// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Criterion benchmarks: MSI translation (cached and table walk) and command-queue
//! throughput. Figures are recorded in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vgic_its::cmd::decode::RawCommand;
use vgic_its::regs::{GITS_BASER0, GITS_CBASER, GITS_CTLR, GITS_CWRITER};
use vgic_its::{Its, ItsConfig, Redistributors};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Redistributors that only count, so the ITS is what is measured.
#[derive(Default)]
struct Count(u64);

impl Redistributors for Count {
    fn set_lpi_pending(&mut self, vcpu: u32, intid: u32) {
        self.0 = self.0.wrapping_add(u64::from(vcpu ^ intid));
    }
    fn clear_lpi_pending(&mut self, _: u32, _: u32) {}
    fn move_lpi(&mut self, _: u32, _: u32, _: u32) {}
    fn move_all_lpis(&mut self, _: u32, _: u32) {}
    fn invalidate_lpi(&mut self, _: u32, _: u32) {}
    fn invalidate_all(&mut self, _: u32) {}
    fn sync(&mut self, vcpu: u32) {
        self.0 = self.0.wrapping_add(u64::from(vcpu));
    }
}

const DEVICE_TABLE: u64 = 0x10_0000;
const COLLECTION_TABLE: u64 = 0x20_0000;
const QUEUE: u64 = 0x30_0000;
const ITT: u64 = 0x40_0000;
const QUEUE_PAGES: u64 = 24; // 3072 commands

struct Setup {
    mem: GuestMemoryMmap<()>,
    its: Its,
    rd: Count,
}

impl Setup {
    fn new(cache_entries: usize) -> Self {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap();
        let config = ItsConfig::builder()
            .vcpus(2)
            .cache_entries(cache_entries)
            .build()
            .unwrap();
        let mut s = Setup {
            mem,
            its: Its::new(config),
            rd: Count::default(),
        };
        s.w64(GITS_BASER0, (1 << 63) | DEVICE_TABLE);
        s.w64(GITS_BASER0 + 8, (1 << 63) | COLLECTION_TABLE);
        s.w64(GITS_CBASER, (1 << 63) | QUEUE | (QUEUE_PAGES - 1));
        s.its
            .mmio_write(&s.mem, &mut s.rd, GITS_CTLR, &1u32.to_le_bytes(), None);
        s
    }

    fn w64(&mut self, off: u64, v: u64) {
        self.its
            .mmio_write(&self.mem, &mut self.rd, off, &v.to_le_bytes(), None);
    }

    /// Write `cmds` at the start of the queue and run them (CREADR must be 0).
    fn run(&mut self, cmds: &[RawCommand]) {
        for (i, c) in cmds.iter().enumerate() {
            self.mem
                .write_slice(&c.to_bytes(), GuestAddress(QUEUE + 32 * i as u64))
                .unwrap();
        }
        self.w64(GITS_CWRITER, 32 * cmds.len() as u64);
    }

    /// Disable, rewrite CBASER (CREADR = 0), CWRITER = 0, enable.
    fn rewind(&mut self) {
        self.its.mmio_write(
            &self.mem,
            &mut self.rd,
            GITS_CTLR,
            &0u32.to_le_bytes(),
            None,
        );
        self.w64(GITS_CBASER, (1 << 63) | QUEUE | (QUEUE_PAGES - 1));
        self.w64(GITS_CWRITER, 0);
        self.its.mmio_write(
            &self.mem,
            &mut self.rd,
            GITS_CTLR,
            &1u32.to_le_bytes(),
            None,
        );
    }

    /// MAPC 0/1, MAPD device 1 with 8 EventID bits, MAPTI 256 events.
    fn mapped(cache_entries: usize) -> Self {
        let mut s = Setup::new(cache_entries);
        let mut cmds = vec![
            RawCommand::mapc(0, 0, true),
            RawCommand::mapc(1, 1, true),
            RawCommand::mapd(1, 7, ITT, true),
        ];
        cmds.extend((0..256u32).map(|e| RawCommand::mapti(1, e, 8192 + e, (e % 2) as u16)));
        s.run(&cmds);
        assert!(s.its.last_command_error().is_none());
        s
    }
}

fn translation(c: &mut Criterion) {
    let mut g = c.benchmark_group("translate");
    g.throughput(Throughput::Elements(1));

    let mut s = Setup::mapped(1024);
    let mut ev = 0u32;
    g.bench_function("cached_send_msi", |b| {
        b.iter(|| {
            ev = (ev + 1) & 63;
            black_box(s.its.send_msi(&s.mem, &mut s.rd, 1, black_box(ev)).ok());
        })
    });
    g.bench_function("cached_translate", |b| {
        b.iter(|| {
            ev = (ev + 1) & 63;
            black_box(s.its.translate(&s.mem, 1, black_box(ev)).ok());
        })
    });

    // One-entry cache and alternating events: every lookup walks DTE, ITE and CTE.
    let mut s = Setup::mapped(1);
    g.bench_function("table_walk_translate", |b| {
        b.iter(|| {
            ev = (ev + 1) & 255;
            black_box(s.its.translate(&s.mem, 1, black_box(ev)).ok());
        })
    });
    g.finish();
}

fn command_queue(c: &mut Criterion) {
    let slots = (QUEUE_PAGES * 4096 / 32) as usize;
    let mut g = c.benchmark_group("command_queue");
    g.throughput(Throughput::Elements(slots as u64));

    // A queue full of MAPTI / INT / SYNC triplets, processed whole each iteration (CWRITER
    // to the middle, then to 0 = wrapped to the start).
    let mut s = Setup::mapped(1024);
    let cmds: Vec<RawCommand> = (0..slots)
        .map(|i| {
            let e = ((i / 3) % 256) as u32;
            match i % 3 {
                0 => RawCommand::mapti(1, e, 8192 + e, (e % 2) as u16),
                1 => RawCommand::int(1, e),
                _ => RawCommand::sync(u64::from(e % 2)),
            }
        })
        .collect();
    s.rewind();
    for (i, c) in cmds.iter().enumerate() {
        s.mem
            .write_slice(&c.to_bytes(), GuestAddress(QUEUE + 32 * i as u64))
            .unwrap();
    }
    let half = (slots as u64 / 2) * 32;
    g.bench_function("mapti_int_sync", |b| {
        b.iter(|| {
            s.w64(GITS_CWRITER, half);
            s.w64(GITS_CWRITER, 0);
        })
    });
    assert!(s.its.last_command_error().is_none());

    // INT only (cache hits).
    let ints: Vec<RawCommand> = (0..slots)
        .map(|i| RawCommand::int(1, (i % 256) as u32))
        .collect();
    for (i, c) in ints.iter().enumerate() {
        s.mem
            .write_slice(&c.to_bytes(), GuestAddress(QUEUE + 32 * i as u64))
            .unwrap();
    }
    g.bench_function("int", |b| {
        b.iter(|| {
            s.w64(GITS_CWRITER, half);
            s.w64(GITS_CWRITER, 0);
        })
    });
    assert!(s.its.last_command_error().is_none());
    g.finish();
}

criterion_group!(benches, translation, command_queue);
criterion_main!(benches);
