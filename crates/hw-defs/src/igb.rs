// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The test NIC: Intel 82576 (igb), as QEMU's `igb` device models it. The tests drive it
//! directly through BAR 0 to make it DMA and raise MSI-X vectors (Intel 82576 datasheet,
//! section 8).

/// Intel.
pub const VENDOR_ID: u16 = 0x8086;
/// 82576.
pub const DEVICE_ID: u16 = 0x10c9;

/// Transmit Control.
pub const TCTL: u64 = 0x0400;
/// `TCTL`: transmit enable.
pub const TCTL_EN: u32 = 1 << 1;
/// General Purpose Interrupt Enable.
pub const GPIE: u64 = 0x1514;
/// `GPIE`: non-selective interrupt clear on read, MSI-X mode, extended auto-mask, PBA support.
pub const GPIE_MSIX: u32 = 1 | (1 << 4) | (1 << 30) | (1 << 31);
/// Extended Interrupt Cause Set.
pub const EICS: u64 = 0x1520;
/// Extended Interrupt Mask Set.
pub const EIMS: u64 = 0x1524;
/// Extended Interrupt Mask Clear.
pub const EIMC: u64 = 0x1528;
/// Extended Interrupt Cause Read.
pub const EICR: u64 = 0x1580;
/// TX queue 0: descriptor base low, high, ring length, head, tail.
pub const TDBAL0: u64 = 0xe000;
/// See [`TDBAL0`].
pub const TDBAH0: u64 = 0xe004;
/// See [`TDBAL0`].
pub const TDLEN0: u64 = 0xe008;
/// See [`TDBAL0`].
pub const TDH0: u64 = 0xe010;
/// See [`TDBAL0`].
pub const TDT0: u64 = 0xe018;

/// The second word of an advanced TX data descriptor for one `len`-byte packet: DTYP data,
/// DCMD EOP | IFCS | RS | DEXT, and PAYLEN = `len`; the descriptor-done bit comes back in
/// bit 0 of the descriptor's byte 12.
pub const fn tx_data_descriptor(len: u16) -> u64 {
    let cmd = 0x2000_0000u64 | 0x0030_0000 | 0x0100_0000 | 0x0200_0000 | 0x0800_0000;
    cmd | len as u64 | (((len as u64) << 14) << 32)
}
