// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A test bench: guest memory, a vSMMU, the recording backend and sink, and register and
//! memory helpers named after what a driver does.

#![allow(dead_code)]

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vsmmuv3::cmd::RawCommand;
use vsmmuv3::regs::*;
use vsmmuv3::walk::desc;
use vsmmuv3::{Progress, QEMU_HOST_IDRS, RecordingBackend, RecordingSink, SmmuConfig, VSmmu};

/// Guest RAM size.
pub const MEM_SIZE: usize = 0x400_0000;

pub struct Bench {
    pub mem: GuestMemoryMmap<()>,
    pub smmu: VSmmu,
    pub host: RecordingBackend,
    pub irq: RecordingSink,
}

impl Bench {
    pub fn new() -> Self {
        Self::with_config(SmmuConfig::builder(&QEMU_HOST_IDRS).build().unwrap())
    }

    pub fn with_config(config: SmmuConfig) -> Self {
        Bench {
            mem: GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap(),
            smmu: VSmmu::new(config),
            host: RecordingBackend::new(),
            irq: RecordingSink::default(),
        }
    }

    pub fn r32(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.smmu.mmio_read(off, &mut b);
        u32::from_le_bytes(b)
    }

    pub fn r64(&self, off: u64) -> u64 {
        let mut b = [0u8; 8];
        self.smmu.mmio_read(off, &mut b);
        u64::from_le_bytes(b)
    }

    pub fn w32(&mut self, off: u64, v: u32) -> Progress {
        self.smmu.mmio_write(
            &self.mem,
            &mut self.host,
            &mut self.irq,
            off,
            &v.to_le_bytes(),
        )
    }

    pub fn w64(&mut self, off: u64, v: u64) -> Progress {
        self.smmu.mmio_write(
            &self.mem,
            &mut self.host,
            &mut self.irq,
            off,
            &v.to_le_bytes(),
        )
    }

    pub fn put(&self, addr: u64, words: &[u64]) {
        for (i, w) in words.iter().enumerate() {
            self.mem
                .write_obj(*w, GuestAddress(addr + 8 * i as u64))
                .unwrap();
        }
    }

    pub fn get(&self, addr: u64) -> u64 {
        self.mem.read_obj(GuestAddress(addr)).unwrap()
    }

    pub fn get32(&self, addr: u64) -> u32 {
        self.mem.read_obj(GuestAddress(addr)).unwrap()
    }

    pub fn add_host_stream(&mut self, sid: u32) {
        self.smmu
            .add_host_stream(&self.mem, &mut self.host, &mut self.irq, sid)
            .unwrap();
    }

    pub fn process(&mut self) -> Progress {
        self.smmu
            .process_pending(&self.mem, &mut self.host, &mut self.irq)
    }

    /// A command queue of 2^log2 entries at `base`, enabled.
    pub fn cmdq(&mut self, base: u64, log2: u32) -> CmdQueue {
        self.w64(CMDQ_BASE, base | u64::from(log2));
        self.w32(CMDQ_PROD, 0);
        self.w32(CMDQ_CONS, 0);
        let cr0 = self.r32(CR0);
        self.w32(CR0, cr0 | cr0::CMDQEN);
        CmdQueue {
            base,
            log2,
            prod: 0,
        }
    }

    /// Writes `cmds` at the queue's PROD and publishes them with one CMDQ_PROD write.
    pub fn submit(&mut self, q: &mut CmdQueue, cmds: &[RawCommand]) -> Progress {
        for c in cmds {
            let idx = q.prod & ((1 << q.log2) - 1);
            self.put(q.base + 16 * u64::from(idx), &c.0);
            q.prod = (q.prod + 1) & ((2 << q.log2) - 1);
        }
        self.w32(CMDQ_PROD, q.prod)
    }

    /// 4 KiB-granule, 48-bit VA tables at `root` mapping `va` to the page `pa`, taking
    /// table pages from `pool` (three pages).
    pub fn map_4k(&self, root: u64, pool: u64, va: u64, pa: u64, extra: u64) {
        let idx = |l: u32| (va >> (12 + 9 * (3 - l))) & 0x1ff;
        let mut table = root;
        for l in 0..3 {
            let slot = table + idx(l) * 8;
            let cur = self.get(slot);
            let next = if cur & 3 == 3 {
                cur & 0x0000_ffff_ffff_f000
            } else {
                let n = pool + 0x1000 * u64::from(l);
                self.put(slot, &[desc::table(n)]);
                n
            };
            table = next;
        }
        self.put(table + idx(3) * 8, &[desc::page(pa) | extra]);
    }
}

pub struct CmdQueue {
    pub base: u64,
    pub log2: u32,
    pub prod: u32,
}
