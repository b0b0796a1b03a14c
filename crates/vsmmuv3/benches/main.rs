// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Criterion benchmarks: command-queue throughput and gIOVA translation (TLB hit and a
//! full 4-level walk). Figures are recorded in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vsmmuv3::backend::{BackendError, GuestSte, InvalidateError, SmmuBackend};
use vsmmuv3::cd::cd_words;
use vsmmuv3::cmd::RawCommand;
use vsmmuv3::regs::*;
use vsmmuv3::ste::stage1_ste_words;
use vsmmuv3::walk::desc;
use vsmmuv3::{Access, QEMU_HOST_IDRS, RecordingSink, SmmuConfig, VSmmu};

/// A backend that only counts, so the model is what is measured.
#[derive(Default)]
struct Count(u64);

impl SmmuBackend for Count {
    fn install_ste(&mut self, _: u32, _: &GuestSte) -> Result<(), BackendError> {
        self.0 += 1;
        Ok(())
    }
    fn invalidate(&mut self, commands: &[RawCommand]) -> Result<(), InvalidateError> {
        self.0 += commands.len() as u64;
        Ok(())
    }
}

const STRTAB: u64 = 0x10_0000;
const CMDQ: u64 = 0x20_0000;
const CD: u64 = 0x30_0000;
const PGD: u64 = 0x40_0000;
const QUEUE_LOG2: u32 = 12; // 4096 commands
const SID: u32 = 8;

struct Setup {
    mem: GuestMemoryMmap<()>,
    smmu: VSmmu,
    host: Count,
    irq: RecordingSink,
}

impl Setup {
    fn new(tlb: usize) -> Self {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap();
        let config = SmmuConfig::builder(&QEMU_HOST_IDRS)
            .max_commands_per_call(1 << QUEUE_LOG2)
            .tlb_entries(tlb)
            .build()
            .unwrap();
        let mut s = Setup {
            mem,
            smmu: VSmmu::new(config),
            host: Count::default(),
            irq: RecordingSink::default(),
        };
        s.smmu
            .add_host_stream(&s.mem, &mut s.host, &mut s.irq, SID)
            .unwrap();
        // Linear Stream table, STE 8 stage 1 through one CD (4K, 48-bit VA, ASID 1).
        s.put(STRTAB + 64 * u64::from(SID), &stage1_ste_words(CD));
        s.put(CD, &cd_words(PGD, 16, 0, 5, 1));
        s.w64(STRTAB_BASE, STRTAB);
        s.w32(STRTAB_BASE_CFG, 8);
        s.w64(CMDQ_BASE, CMDQ | u64::from(QUEUE_LOG2));
        s.w32(CR0, cr0::CMDQEN | cr0::SMMUEN);
        s
    }

    fn put(&self, addr: u64, words: &[u64]) {
        for (i, w) in words.iter().enumerate() {
            self.mem
                .write_obj(*w, GuestAddress(addr + 8 * i as u64))
                .unwrap();
        }
    }

    fn w32(&mut self, off: u64, v: u32) {
        self.smmu.mmio_write(
            &self.mem,
            &mut self.host,
            &mut self.irq,
            off,
            &v.to_le_bytes(),
        );
    }

    fn w64(&mut self, off: u64, v: u64) {
        self.smmu.mmio_write(
            &self.mem,
            &mut self.host,
            &mut self.irq,
            off,
            &v.to_le_bytes(),
        );
    }

    /// Maps `pages` consecutive 4 KiB pages from `va` with a 4-level walk each.
    fn map(&self, va: u64, pages: u64) {
        let idx = |va: u64, l: u32| (va >> (12 + 9 * (3 - l))) & 0x1ff;
        // One table per level (the VAs share the upper levels).
        let l1 = PGD + 0x1000;
        let l2 = PGD + 0x2000;
        let l3 = PGD + 0x3000;
        self.put(PGD + 8 * idx(va, 0), &[desc::table(l1)]);
        self.put(l1 + 8 * idx(va, 1), &[desc::table(l2)]);
        self.put(l2 + 8 * idx(va, 2), &[desc::table(l3)]);
        for p in 0..pages {
            let v = va + 0x1000 * p;
            self.put(l3 + 8 * idx(v, 3), &[desc::page(0x0800_0000 + 0x1000 * p)]);
        }
    }
}

/// A full queue (4096 slots) of TLBI_NH_VA with a CMD_SYNC every 64 commands (Linux's
/// batch), consumed by one CMDQ_PROD write: forwarding to the (counting) backend included.
fn command_queue(c: &mut Criterion) {
    let mut g = c.benchmark_group("command_queue");
    let n = 1u32 << QUEUE_LOG2;
    g.throughput(Throughput::Elements(n.into()));
    let mut s = Setup::new(64);
    for i in 0..u64::from(n) {
        let cmd = if i % 64 == 63 {
            RawCommand::sync(0, 0, 0)
        } else {
            RawCommand::tlbi_nh_va(1, 0x1000 * i, true)
        };
        s.put(CMDQ + 16 * i, &cmd.0);
    }
    let mut prod = 0u32;
    g.bench_function("tlbi_nh_va_sync_full_queue", |b| {
        b.iter(|| {
            // Publishing a whole queue: the index comes back, the wrap bit flips.
            prod ^= n;
            s.w32(CMDQ_PROD, prod);
            black_box(s.host.0)
        })
    });
    let cmds = s.smmu.stats().commands;
    assert!(cmds > 0);
    g.finish();
}

/// `translate` of an MSI gIOVA: a TLB hit, and a miss that walks four levels (a 1-entry
/// TLB and two alternating pages).
fn translate(c: &mut Criterion) {
    let mut g = c.benchmark_group("translate");
    g.throughput(Throughput::Elements(1));
    let va = 0x0000_7fff_fee0_0000u64;
    let mut hit = Setup::new(64);
    hit.map(va, 2);
    g.bench_function("cached_4k", |b| {
        b.iter(|| {
            black_box(
                hit.smmu
                    .translate(&hit.mem, SID, black_box(va + 0x40), Access::WRITE)
                    .unwrap(),
            )
        })
    });
    let mut miss = Setup::new(1);
    miss.map(va, 2);
    let mut flip = 0u64;
    g.bench_function("uncached_4k_4_levels", |b| {
        b.iter(|| {
            flip ^= 0x1000;
            black_box(
                miss.smmu
                    .translate(&miss.mem, SID, black_box(va + flip), Access::WRITE)
                    .unwrap(),
            )
        })
    });
    assert!(miss.smmu.tlb_stats().misses > miss.smmu.tlb_stats().hits);
    g.finish();
}

criterion_group!(benches, command_queue, translate);
criterion_main!(benches);
