// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Test harness: a guest that drives the ITS through its registers the way Linux's ITS
//! driver does, and a recording redistributor.

#![allow(dead_code)]

use std::collections::BTreeSet;

use vgic_its::cmd::decode::RawCommand;
use vgic_its::regs::{GITS_BASER0, GITS_CBASER, GITS_CREADR, GITS_CTLR, GITS_CWRITER};
use vgic_its::{Its, ItsConfig, MappingEvent, Redistributors};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// One call the ITS made on the redistributors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Set(u32, u32),
    Clear(u32, u32),
    Move(u32, u32, u32),
    MoveAll(u32, u32),
    Inv(u32, u32),
    InvAll(u32),
    Sync(u32),
}

/// Redistributors that keep pending state as a set and log every call.
#[derive(Default, Debug)]
pub struct MockRd {
    pub pending: BTreeSet<(u32, u32)>,
    pub ops: Vec<Op>,
    pub events: Vec<MappingEvent>,
}

impl Redistributors for MockRd {
    fn set_lpi_pending(&mut self, vcpu: u32, intid: u32) {
        self.pending.insert((vcpu, intid));
        self.ops.push(Op::Set(vcpu, intid));
    }
    fn clear_lpi_pending(&mut self, vcpu: u32, intid: u32) {
        self.pending.remove(&(vcpu, intid));
        self.ops.push(Op::Clear(vcpu, intid));
    }
    fn move_lpi(&mut self, from: u32, to: u32, intid: u32) {
        if self.pending.remove(&(from, intid)) {
            self.pending.insert((to, intid));
        }
        self.ops.push(Op::Move(from, to, intid));
    }
    fn move_all_lpis(&mut self, from: u32, to: u32) {
        let moved: Vec<_> = self
            .pending
            .iter()
            .filter(|(v, _)| *v == from)
            .copied()
            .collect();
        for (v, i) in moved {
            self.pending.remove(&(v, i));
            self.pending.insert((to, i));
        }
        self.ops.push(Op::MoveAll(from, to));
    }
    fn invalidate_lpi(&mut self, vcpu: u32, intid: u32) {
        self.ops.push(Op::Inv(vcpu, intid));
    }
    fn invalidate_all(&mut self, vcpu: u32) {
        self.ops.push(Op::InvAll(vcpu));
    }
    fn sync(&mut self, vcpu: u32) {
        self.ops.push(Op::Sync(vcpu));
    }
    fn mapping_changed(&mut self, event: &MappingEvent) {
        self.events.push(*event);
    }
}

/// Guest memory map used by the tests (16 MiB of RAM at 0).
pub const RAM_SIZE: usize = 0x100_0000;
pub const DEVICE_TABLE: u64 = 0x10_0000;
pub const COLLECTION_TABLE: u64 = 0x20_0000;
pub const CMD_QUEUE: u64 = 0x30_0000;
pub const ITT_BASE: u64 = 0x40_0000;
pub const L2_BASE: u64 = 0x80_0000;

pub struct Guest {
    pub mem: GuestMemoryMmap<()>,
    pub its: Its,
    pub rd: MockRd,
    /// Byte offset of the next command slot (the guest's copy of CWRITER).
    pub next: u64,
    pub queue_bytes: u64,
}

impl Guest {
    pub fn new(config: ItsConfig) -> Self {
        Guest {
            mem: GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM_SIZE)]).unwrap(),
            its: Its::new(config),
            rd: MockRd::default(),
            next: 0,
            queue_bytes: 0x1000,
        }
    }

    pub fn read64(&self, off: u64) -> u64 {
        let mut b = [0u8; 8];
        self.its.mmio_read(off, &mut b);
        u64::from_le_bytes(b)
    }

    pub fn read32(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.its.mmio_read(off, &mut b);
        u32::from_le_bytes(b)
    }

    pub fn write64(&mut self, off: u64, v: u64) {
        self.its
            .mmio_write(&self.mem, &mut self.rd, off, &v.to_le_bytes(), None);
    }

    pub fn write32(&mut self, off: u64, v: u32) {
        self.its
            .mmio_write(&self.mem, &mut self.rd, off, &v.to_le_bytes(), None);
    }

    /// Linux `its_setup_baser`: write the full value, read back, return what stuck.
    pub fn setup_baser(&mut self, n: u64, value: u64) -> u64 {
        let off = GITS_BASER0 + 8 * n;
        let cur = self.read64(off);
        // Keep Type and Entry_Size as read (Linux writes them back as it read them).
        let v = value | (cur & (0x7 << 56)) | (cur & (0x1f << 48));
        self.write64(off, v);
        self.read64(off)
    }

    /// Flat Device table and Collection table of `pages` pages of `page_size_field` size.
    pub fn setup_tables(&mut self, page_size_field: u64, pages: u64) {
        let v = (1 << 63) | (page_size_field << 8) | (pages - 1);
        self.setup_baser(0, v | DEVICE_TABLE);
        if self.its.config().collections_in_memory() {
            self.setup_baser(1, v | COLLECTION_TABLE);
        }
    }

    /// CBASER with a queue of `pages` 4 KiB pages, CWRITER = 0.
    pub fn setup_queue(&mut self, pages: u64) {
        self.write64(GITS_CBASER, (1 << 63) | CMD_QUEUE | (pages - 1));
        self.write64(GITS_CWRITER, 0);
        self.next = 0;
        self.queue_bytes = pages * 0x1000;
    }

    pub fn enable(&mut self) {
        self.write32(GITS_CTLR, 1);
    }

    /// Default bring-up: flat 4 KiB tables, one-page queue, enabled.
    pub fn booted(config: ItsConfig) -> Self {
        let mut g = Guest::new(config);
        g.setup_tables(0, 1);
        g.setup_queue(1);
        g.enable();
        g
    }

    /// Queue commands and write CWRITER once (the ITS processes them synchronously).
    pub fn send(&mut self, cmds: &[RawCommand]) {
        for c in cmds {
            self.mem
                .write_slice(&c.to_bytes(), GuestAddress(CMD_QUEUE + self.next))
                .unwrap();
            self.next = (self.next + 32) % self.queue_bytes;
        }
        self.write64(GITS_CWRITER, self.next);
    }

    /// Send one command and return its error, if any.
    pub fn cmd(&mut self, c: RawCommand) -> Option<vgic_its::CommandError> {
        self.its.take_last_command_error();
        self.send(&[c]);
        let e = self.its.take_last_command_error();
        if self.its.is_stalled() {
            // Step past the failing command the way a recovering driver would: rewrite the
            // slot with a harmless SYNC and retry.
            let slot = self.read64(GITS_CREADR) & !1;
            self.mem
                .write_slice(
                    &RawCommand::sync(0).to_bytes(),
                    GuestAddress(CMD_QUEUE + slot),
                )
                .unwrap();
            self.write64(GITS_CWRITER, self.next | 1);
        }
        e
    }

    /// Send a command and return the spec mnemonic of its error, if any.
    pub fn err(&mut self, c: RawCommand) -> Option<String> {
        self.cmd(c).map(|e| e.mnemonic())
    }

    pub fn creadr(&self) -> u64 {
        self.read64(GITS_CREADR)
    }

    pub fn itt(dev: u32) -> u64 {
        ITT_BASE + u64::from(dev) * 0x1000
    }

    /// MAPC every vCPU to ICID = vCPU, then SYNC, as Linux does per CPU at boot.
    pub fn map_collections(&mut self) {
        for cpu in 0..self.its.config().vcpus() {
            self.send(&[
                RawCommand::mapc(cpu as u16, u64::from(cpu), true),
                RawCommand::sync(u64::from(cpu)),
            ]);
        }
    }
}
