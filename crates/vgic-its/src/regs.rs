// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The ITS register frame as the guest sees it (IHI 0069H ch. 12).
//!
//! Two 64 KiB frames: the control frame at offset 0 and the translation frame at 0x1_0000
//! (holding `GITS_TRANSLATER` at 0x1_0040). Access rules implemented here:
//!
//! - 64-bit registers (`GITS_TYPER`, `GITS_CBASER`, `GITS_CWRITER`, `GITS_CREADR`,
//!   `GITS_BASER<n>`) take 64-bit accesses and 32-bit accesses to either half (IHI 0069H
//!   ch. 12: "bits \[63:32\] and bits \[31:0\] are accessible independently").
//! - 32-bit registers take 32-bit accesses; `GITS_TRANSLATER` also takes 16-bit writes,
//!   which write bits \[31:16\] as zero.
//! - Any other size or alignment, any unknown or unimplemented offset, and reads of
//!   write-only registers: RAZ/WI. Writes to read-only registers and RO fields: ignored.
//! - A `GITS_CBASER` write (either half, while disabled) sets `GITS_CREADR` to 0 (IHI 0069H
//!   ch. 12) and also `GITS_CWRITER` to 0 and clears `Stalled`: the new queue is empty, as
//!   KVM and Linux's driver (which writes `GITS_CWRITER = 0` right after) treat it; a stale
//!   `GITS_CWRITER` would make the next enable run slots the guest never published, and
//!   could lie beyond a smaller new queue (a state no restore would accept). Tests:
//!   `cbaser_write_empties_the_queue`, `state_round_trips_whatever_the_guest_does`.
//! - A `GITS_BASER<n>` write (while disabled) moves or resizes a table: every cached
//!   translation and table entry is dropped (O(1)); on-chip collections and the queue
//!   pointers are not part of a `GITS_BASER<n>` and stay.
//! - `GITS_CBASER` and `GITS_BASER<n>` writes while `GITS_CTLR.Enabled == 1` are
//!   UNPREDICTABLE in the spec; this ITS ignores them (the safe choice: a running ITS never
//!   sees its tables move). Test: `baser_and_cbaser_locked_while_enabled`.
//! - `GITS_CWRITER` writes with an Offset at or beyond the queue size are UNPREDICTABLE;
//!   this ITS ignores them. Test: `cwriter_beyond_queue_ignored`.
//! - `GITS_CWRITER.Retry` is write-only (reads 0): writing 1 while stalled clears
//!   `GITS_CREADR.Stalled` and retries the command at `GITS_CREADR`.
//! - `GITS_CTLR.Quiescent` reads 1 whenever `Enabled == 0` (commands and translations are
//!   synchronous, nothing is ever in flight), and 0 while enabled (UNKNOWN in the spec).

use vm_memory::GuestMemory;

use crate::abi::TableFormat;
use crate::config::ItsConfig;
use crate::its::{BASER_COUNT, COLLECTION_BASER, Its};
use crate::redist::Redistributors;
use crate::tables::baser::{BASER_INDIRECT, BASER_PAGE_SIZE_SHIFT, baser_write};
use crate::tables::genmask;

/// `GITS_CTLR` offset.
pub const GITS_CTLR: u64 = 0x0000;
/// `GITS_IIDR` offset.
pub const GITS_IIDR: u64 = 0x0004;
/// `GITS_TYPER` offset (64-bit).
pub const GITS_TYPER: u64 = 0x0008;
/// `GITS_CBASER` offset (64-bit).
pub const GITS_CBASER: u64 = 0x0080;
/// `GITS_CWRITER` offset (64-bit).
pub const GITS_CWRITER: u64 = 0x0088;
/// `GITS_CREADR` offset (64-bit).
pub const GITS_CREADR: u64 = 0x0090;
/// `GITS_BASER0` offset; `GITS_BASER<n>` is at `GITS_BASER0 + 8 * n`, n = 0..8.
pub const GITS_BASER0: u64 = 0x0100;
/// `GITS_PIDR2` offset (ArchRev in bits \[7:4\]).
pub const GITS_PIDR2: u64 = 0xffe8;
/// `GITS_CIDR0` offset; CIDR0..3 follow at 4-byte steps.
pub const GITS_CIDR0: u64 = 0xfff0;
/// `GITS_TRANSLATER` offset from the start of the ITS frame (translation frame + 0x40).
pub const GITS_TRANSLATER: u64 = hw_defs::gic::GITS_TRANSLATER;
/// Size of the whole ITS register frame (control + translation frames).
pub const ITS_FRAME_SIZE: u64 = 0x2_0000;

/// `GITS_CTLR.Enabled`.
pub const GITS_CTLR_ENABLED: u32 = 1;
/// `GITS_CTLR.Quiescent`.
pub const GITS_CTLR_QUIESCENT: u32 = 1 << 31;
/// `GITS_PIDR2` value: ArchRev = 0x3 (GICv3) in bits \[7:4\], JEP106 ID bits \[3:0\] = 0xb.
pub const GITS_PIDR2_VALUE: u32 = 0x3b;
/// `GITS_CREADR.Stalled`.
pub const GITS_CREADR_STALLED: u64 = 1;
/// `GITS_CWRITER.Retry`.
pub const GITS_CWRITER_RETRY: u64 = 1;
/// Offset field (bits \[19:5\]) of `GITS_CWRITER` / `GITS_CREADR`.
pub const GITS_CQUEUE_OFFSET_MASK: u64 = genmask(19, 5);
/// `GITS_CBASER.Valid`.
pub const GITS_CBASER_VALID: u64 = 1 << 63;
/// Software-writable bits of `GITS_CBASER`: Valid, InnerCache, OuterCache,
/// Physical_Address\[51:12\], Shareability, Size.
pub const GITS_CBASER_RW_MASK: u64 = GITS_CBASER_VALID
    | genmask(61, 59)
    | genmask(55, 53)
    | genmask(51, 12)
    | genmask(11, 10)
    | 0xff;

const CIDR: [u32; 4] = [0x0d, 0xf0, 0x05, 0xb1];

/// Software-writable bits of `GITS_CBASER` on an ITS with `config`: [`GITS_CBASER_RW_MASK`],
/// and with KVM's table format without Physical_Address bits \[15:12\] (KVM keeps the
/// command queue 64 KiB aligned, `vgic_sanitise_its_cbaser`).
pub fn cbaser_rw_mask(config: &ItsConfig) -> u64 {
    match config.table_format() {
        TableFormat::Native => GITS_CBASER_RW_MASK,
        TableFormat::KvmRev0 => GITS_CBASER_RW_MASK & !genmask(15, 12),
    }
}

/// `GITS_BASER<index>` after software writes `value` over `old` on an ITS with `config`:
/// [`baser_write`]'s rules, and with KVM's table format Page_Size 64 KiB whatever is written
/// and Indirect RES0 in the Collection table's register (`vgic_mmio_write_its_baser`).
/// `ItsState::validate` accepts exactly the values this can produce from reset.
pub fn baser_after_write(config: &ItsConfig, index: usize, old: u64, value: u64) -> u64 {
    let new = baser_write(old, value);
    match config.table_format() {
        TableFormat::Native => new,
        TableFormat::KvmRev0 => {
            let new = (new & !(3 << BASER_PAGE_SIZE_SHIFT)) | (2 << BASER_PAGE_SIZE_SHIFT);
            if index == COLLECTION_BASER {
                new & !BASER_INDIRECT
            } else {
                new
            }
        }
    }
}

/// Whether `GITS_CBASER.Valid` is set.
pub fn cbaser_valid(cbaser: u64) -> bool {
    cbaser & GITS_CBASER_VALID != 0
}

/// Command queue base address from `GITS_CBASER.Physical_Address` (bits \[51:12\]).
pub fn cbaser_base(cbaser: u64) -> u64 {
    cbaser & genmask(51, 12)
}

/// Command queue size in bytes: `(Size + 1) * 4 KiB`, at most 1 MiB.
pub fn cbaser_queue_bytes(cbaser: u64) -> u64 {
    ((cbaser & 0xff) + 1) * 0x1000
}

impl Its {
    /// Value of `GITS_TYPER` (IHI 0069H ch. 12): Physical = 1, Virtual = 0, CCT = 0,
    /// ITT_entry_size, ID_bits, Devbits, SEIS = 0, PTA = 0 (RDbase is a processor number),
    /// HCC, CIDbits/CIL per the configuration; everything else 0.
    pub fn typer(&self) -> u64 {
        let c = &self.config;
        let mut v = 1u64; // Physical
        v |= u64::from(c.itt_entry_size - 1) << 4;
        v |= u64::from(c.event_id_bits - 1) << 8;
        v |= u64::from(c.device_id_bits - 1) << 13;
        v |= u64::from(c.hcc) << 24;
        if c.collection_id_bits < 16 {
            v |= u64::from(c.collection_id_bits - 1) << 32;
            v |= 1 << 36; // CIL
        }
        v
    }

    fn ctlr(&self) -> u32 {
        if self.enabled {
            GITS_CTLR_ENABLED
        } else {
            GITS_CTLR_QUIESCENT
        }
    }

    fn creadr_value(&self) -> u64 {
        self.creadr | if self.stalled { GITS_CREADR_STALLED } else { 0 }
    }

    /// Value of a 64-bit register at 8-byte aligned `offset`, `None` if there is none.
    fn read64(&self, offset: u64) -> Option<u64> {
        match offset {
            GITS_TYPER => Some(self.typer()),
            GITS_CBASER => Some(self.cbaser),
            GITS_CWRITER => Some(self.cwriter),
            GITS_CREADR => Some(self.creadr_value()),
            o if (GITS_BASER0..GITS_BASER0 + 8 * BASER_COUNT as u64).contains(&o) => {
                self.baser.get(((o - GITS_BASER0) / 8) as usize).copied()
            }
            _ => None,
        }
    }

    /// Value of a 32-bit register at 4-byte aligned `offset`, `None` if there is none.
    fn read32(&self, offset: u64) -> Option<u32> {
        match offset {
            GITS_CTLR => Some(self.ctlr()),
            GITS_IIDR => Some(self.config.iidr),
            GITS_PIDR2 => Some(GITS_PIDR2_VALUE),
            o if (GITS_CIDR0..GITS_CIDR0 + 16).contains(&o) => {
                CIDR.get(((o - GITS_CIDR0) / 4) as usize).copied()
            }
            _ => None,
        }
    }

    /// Guest read of `data.len()` bytes at `offset` in the ITS frame (little endian).
    ///
    /// Reads have no side effects. Unsupported sizes, misaligned accesses, unknown offsets
    /// and the write-only `GITS_TRANSLATER` read as zero. Test: `register_access_sizes`.
    pub fn mmio_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let value: u64 = match data.len() {
            8 if offset.is_multiple_of(8) => self.read64(offset).unwrap_or(0),
            4 if offset.is_multiple_of(4) => match self.read32(offset) {
                Some(v) => u64::from(v),
                None => self.read64(offset & !7).map_or(0, |v| {
                    if offset & 4 != 0 {
                        v >> 32
                    } else {
                        v & 0xffff_ffff
                    }
                }),
            },
            _ => {
                log::debug!(
                    "ITS: {}-byte read at offset {offset:#x} is not supported, RAZ",
                    data.len()
                );
                0
            }
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(8);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    /// Guest write of `data` at `offset` in the ITS frame (little endian).
    ///
    /// `device_id` is the DeviceID presented with the write: the requester ID for a device's
    /// MSI, `None` for a CPU store. `GITS_TRANSLATER` writes translate and deliver through
    /// `rd` when a DeviceID is present and are ignored otherwise (a CPU has no DeviceID).
    /// `GITS_CWRITER` and `GITS_CTLR` writes may process commands, reading guest memory and
    /// calling `rd`. Test: `register_access_sizes`.
    pub fn mmio_write<M: GuestMemory + ?Sized, R: Redistributors + ?Sized>(
        &mut self,
        mem: &M,
        rd: &mut R,
        offset: u64,
        data: &[u8],
        device_id: Option<u32>,
    ) {
        let mut bytes = [0u8; 8];
        let n = data.len().min(8);
        bytes[..n].copy_from_slice(&data[..n]);
        let value = u64::from_le_bytes(bytes);

        if offset == GITS_TRANSLATER {
            if data.len() != 2 && data.len() != 4 {
                log::debug!("ITS: {}-byte GITS_TRANSLATER write ignored", data.len());
                return;
            }
            match device_id {
                Some(dev) => {
                    if let Err(e) = self.send_msi(mem, rd, dev, value as u32) {
                        log::debug!("ITS: GITS_TRANSLATER write dropped: {e}");
                    }
                }
                None => log::debug!("ITS: GITS_TRANSLATER write without DeviceID ignored"),
            }
            return;
        }

        self.mmio_write_inner(mem, rd, offset, data.len(), value);
        // The state every write leaves is one a restore accepts (issue 15, finding 1).
        debug_assert_eq!(self.check_state(), Ok(()));
    }

    fn mmio_write_inner<M: GuestMemory + ?Sized, R: Redistributors + ?Sized>(
        &mut self,
        mem: &M,
        rd: &mut R,
        offset: u64,
        len: usize,
        value: u64,
    ) {
        match len {
            8 if offset.is_multiple_of(8) => self.write64(mem, rd, offset, value),
            4 if offset.is_multiple_of(4) => {
                if offset == GITS_CTLR {
                    self.write_ctlr(mem, rd, value as u32);
                } else if let Some(old) = self.read64(offset & !7) {
                    let merged = if offset & 4 != 0 {
                        (old & 0xffff_ffff) | (value << 32)
                    } else {
                        (old & !0xffff_ffff) | value
                    };
                    self.write64(mem, rd, offset & !7, merged);
                }
            }
            _ => log::debug!("ITS: {len}-byte write at offset {offset:#x} is not supported, WI"),
        }
    }

    fn write_ctlr<M: GuestMemory + ?Sized, R: Redistributors + ?Sized>(
        &mut self,
        mem: &M,
        rd: &mut R,
        value: u32,
    ) {
        let enable = value & GITS_CTLR_ENABLED != 0;
        if enable != self.enabled {
            self.enabled = enable;
            self.flush_caches();
            if enable {
                self.process_commands(mem, rd);
            }
        }
    }

    fn write64<M: GuestMemory + ?Sized, R: Redistributors + ?Sized>(
        &mut self,
        mem: &M,
        rd: &mut R,
        offset: u64,
        value: u64,
    ) {
        match offset {
            GITS_CBASER => {
                if self.enabled {
                    log::debug!("ITS: GITS_CBASER write while enabled ignored");
                    return;
                }
                self.cbaser = value & cbaser_rw_mask(&self.config);
                // IHI 0069H ch. 12: writing GITS_CBASER sets GITS_CREADR to 0. CWRITER
                // follows (the new queue is empty, as in KVM), see the module docs.
                self.creadr = 0;
                self.cwriter = 0;
                self.stalled = false;
            }
            GITS_CWRITER => {
                let offset = value & GITS_CQUEUE_OFFSET_MASK;
                if offset >= cbaser_queue_bytes(self.cbaser) {
                    log::debug!("ITS: GITS_CWRITER offset {offset:#x} beyond the queue ignored");
                    return;
                }
                self.cwriter = offset;
                if value & GITS_CWRITER_RETRY != 0 {
                    self.stalled = false;
                }
                self.process_commands(mem, rd);
            }
            o if (GITS_BASER0..GITS_BASER0 + 8 * BASER_COUNT as u64).contains(&o) => {
                let i = ((o - GITS_BASER0) / 8) as usize;
                if self.enabled {
                    log::debug!("ITS: GITS_BASER{i} write while enabled ignored");
                    return;
                }
                let config = &self.config;
                if let Some(reg) = self.baser.get_mut(i)
                    && *reg != 0
                {
                    // Implemented registers have a non-zero Type; the others are RES0.
                    let new = baser_after_write(config, i, *reg, value);
                    if i == COLLECTION_BASER && new != *reg {
                        // Held collections live as long as their table (KVM frees its
                        // collection list when GITS_BASER1 changes).
                        self.held_collections.clear();
                    }
                    *reg = new;
                    self.flush_caches();
                }
            }
            _ => {}
        }
    }

    /// Whether `intid` is in the LPI range this ITS accepts (8192 ..
    /// 2^[`ItsConfig::intid_bits`](crate::ItsConfig::intid_bits)).
    pub fn is_valid_lpi(&self, intid: u32) -> bool {
        self.intid_is_lpi(intid)
    }
}
