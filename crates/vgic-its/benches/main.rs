// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Criterion benchmarks: MSI translation (cached and table walk), command-queue throughput
//! and the hostile worst case of issue 15 (a full 1 MiB queue of MAPDs at the default and
//! the largest translation cache). Figures are recorded in BENCHMARKS.md and
//! docs/benchmarks.md.
//!
//! Every CWRITER write is followed by `drain`, the VMM's continuation
//! (`process_commands` until it returns 0), so the figures count every command whether one
//! MMIO exit runs them all or a bounded number.

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

    /// A CWRITER write, then the VMM's continuation until the queue is drained.
    fn cwriter(&mut self, v: u64) {
        self.w64(GITS_CWRITER, v);
        self.drain();
    }

    fn drain(&mut self) {
        while self.its.process_commands(&self.mem, &mut self.rd) > 0 {}
    }

    /// Write `cmds` at the start of the queue and run them (CREADR must be 0).
    fn run(&mut self, cmds: &[RawCommand]) {
        for (i, c) in cmds.iter().enumerate() {
            self.mem
                .write_slice(&c.to_bytes(), GuestAddress(QUEUE + 32 * i as u64))
                .unwrap();
        }
        self.cwriter(32 * cmds.len() as u64);
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
            s.cwriter(half);
            s.cwriter(0);
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
            s.cwriter(half);
            s.cwriter(0);
        })
    });
    assert!(s.its.last_command_error().is_none());
    g.finish();
}

/// Issue 15 finding 5: a full 1 MiB queue (32768 slots) of MAPDs of distinct devices, at
/// the default (1024) and the largest (65536) translation cache.
/// - `full_queue_mapd/cache_N`: all 32768 MAPDs (CWRITER to the middle, then to 0), with
///   the continuation calls;
/// - `one_exit_mapd/cache_N`: the single CWRITER write of 32767 MAPDs, timed alone (what one
///   MMIO exit costs); the continuation runs untimed.
fn worst_case(c: &mut Criterion) {
    const BIG_QUEUE_PAGES: u64 = 256;
    let slots = BIG_QUEUE_PAGES * 4096 / 32;
    let mut g = c.benchmark_group("its_worst_case");
    g.sample_size(10);
    for cache in [1024usize, 65536] {
        let mut s = Setup::new(cache);
        // A Device table for 32768 DeviceIDs (64 pages).
        s.its
            .mmio_write(&s.mem, &mut s.rd, GITS_CTLR, &0u32.to_le_bytes(), None);
        s.w64(GITS_BASER0, (1 << 63) | DEVICE_TABLE | 63);
        let cbaser = (1 << 63) | QUEUE | (BIG_QUEUE_PAGES - 1);
        s.w64(GITS_CBASER, cbaser);
        s.w64(GITS_CWRITER, 0);
        s.its
            .mmio_write(&s.mem, &mut s.rd, GITS_CTLR, &1u32.to_le_bytes(), None);
        for i in 0..slots {
            let cmd = RawCommand::mapd(i as u32, 7, ITT + (i % 16) * 0x1000, true);
            s.mem
                .write_slice(&cmd.to_bytes(), GuestAddress(QUEUE + 32 * i))
                .unwrap();
        }
        g.throughput(Throughput::Elements(slots));
        g.bench_function(format!("full_queue_mapd/cache_{cache}"), |b| {
            b.iter(|| {
                s.cwriter(slots / 2 * 32);
                s.cwriter(0);
            })
        });
        assert!(s.its.last_command_error().is_none());
        g.throughput(Throughput::Elements(slots - 1));
        g.bench_function(format!("one_exit_mapd/cache_{cache}"), |b| {
            b.iter_custom(|iters| {
                let mut total = std::time::Duration::ZERO;
                for _ in 0..iters {
                    // Rewind (untimed): the queue starts at CREADR = 0 again.
                    s.its
                        .mmio_write(&s.mem, &mut s.rd, GITS_CTLR, &0u32.to_le_bytes(), None);
                    s.w64(GITS_CBASER, cbaser);
                    s.w64(GITS_CWRITER, 0);
                    s.its
                        .mmio_write(&s.mem, &mut s.rd, GITS_CTLR, &1u32.to_le_bytes(), None);
                    let t = std::time::Instant::now();
                    s.w64(GITS_CWRITER, (slots - 1) * 32);
                    total += t.elapsed();
                    s.drain();
                }
                total
            })
        });
        assert!(s.its.last_command_error().is_none());
    }
    g.finish();
}

/// Issue 17: KVM's table ABI. A Linux-like state (2 vCPUs, one device with 5 events) and a
/// large one (256 devices of 32 events, 8192 events): `kvm::load` (what the VMM does with
/// the vCPUs paused), `kvm::store`, `export_image` and `import_image` (the scratch copy the
/// VMM translates with).
fn kvm_abi(c: &mut Criterion) {
    use std::collections::BTreeMap;
    use vgic_its::abi::kvm::{self, LoadParams};
    use vgic_its::abi::{DeviceImage, EventImage, ItsImage, WorkLimit};

    let mut g = c.benchmark_group("kvm_abi");
    for (name, devices, events) in [("linux_1x5", 1u32, 5u32), ("large_256x32", 256, 32)] {
        let image = ItsImage {
            enabled: true,
            cbaser: (1 << 63) | QUEUE,
            device_baser: (1 << 63) | (1 << 56) | (7 << 48) | (2 << 8) | DEVICE_TABLE,
            collection_baser: (1 << 63) | (4 << 56) | (7 << 48) | (2 << 8) | COLLECTION_TABLE,
            devices: (0..devices)
                .map(|d| {
                    let events = (0..events)
                        .map(|e| {
                            (
                                e,
                                EventImage {
                                    intid: 8192 + d * events + e,
                                    icid: (e % 2) as u16,
                                },
                            )
                        })
                        .collect();
                    (
                        8 + d,
                        DeviceImage {
                            itt_addr: ITT + u64::from(d) * 0x100,
                            event_id_bits: 5,
                            events,
                        },
                    )
                })
                .collect(),
            collections: BTreeMap::from([(0, Some(0)), (1, Some(1))]),
            ..ItsImage::default()
        };
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap();
        let p = LoadParams::kvm(2);
        let regs = kvm::store(&image, &mem, p).unwrap();
        g.throughput(Throughput::Elements(u64::from(devices * events)));
        g.bench_function(format!("load/{name}"), |b| {
            b.iter(|| black_box(kvm::load(&regs, &mem, p).unwrap()))
        });
        g.bench_function(format!("store/{name}"), |b| {
            b.iter(|| black_box(kvm::store(&image, &mem, p).unwrap()))
        });
        let config = ItsConfig::builder().vcpus(2).kvm_abi().build().unwrap();
        g.bench_function(format!("import/{name}"), |b| {
            b.iter(|| {
                black_box(
                    Its::import_image(config.clone(), &image, &mem, WorkLimit::default()).unwrap(),
                )
            })
        });
        let its = Its::import_image(config.clone(), &image, &mem, WorkLimit::default()).unwrap();
        g.bench_function(format!("export/{name}"), |b| {
            b.iter(|| black_box(its.export_image(&mem, WorkLimit::default()).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, translation, command_queue, worst_case, kvm_abi);
criterion_main!(benches);
