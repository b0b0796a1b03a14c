// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The MSI-X capability, table and PBA (PCI Local Bus 3.0 6.8.2).

/// Message Control, 16 bits at capability + 2.
pub const MESSAGE_CONTROL: u16 = 0x02;
/// Table Offset/Table BIR, 32 bits at capability + 4.
pub const TABLE_OFFSET: u16 = 0x04;
/// PBA Offset/PBA BIR, 32 bits at capability + 8.
pub const PBA_OFFSET: u16 = 0x08;
/// The capability's size.
pub const CAP_SIZE: u16 = 12;

/// Message Control: MSI-X Enable.
pub const CONTROL_ENABLE: u16 = 1 << 15;
/// Message Control: Function Mask.
pub const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// Message Control: Table Size (N - 1).
pub const CONTROL_TABLE_SIZE: u16 = 0x07ff;
/// The most vectors a function can have.
pub const MAX_VECTORS: u16 = 2048;

/// Table/PBA Offset register: the BAR indicator bits.
pub const BIR_MASK: u32 = 0x7;

/// One table entry: Message Address, Message Upper Address, Message Data, Vector Control.
pub const ENTRY_SIZE: u64 = 16;
/// Entry offset of Message Address (bits 1:0 are 0).
pub const ENTRY_ADDR_LO: u64 = 0;
/// Entry offset of Message Upper Address.
pub const ENTRY_ADDR_HI: u64 = 4;
/// Entry offset of Message Data.
pub const ENTRY_DATA: u64 = 8;
/// Entry offset of Vector Control.
pub const ENTRY_VECTOR_CONTROL: u64 = 12;
/// Vector Control: Mask Bit.
pub const VECTOR_CONTROL_MASK: u32 = 1;

/// The size in bytes of the PBA of `vectors` vectors: one bit each, in whole QWORDs.
pub const fn pba_size(vectors: u16) -> u64 {
    (vectors as u64).div_ceil(64) * 8
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sizes cloud-hypervisor gets wrong at multiples of 64.
    #[test]
    fn pba_is_whole_qwords() {
        assert_eq!(pba_size(1), 8);
        assert_eq!(pba_size(64), 8);
        assert_eq!(pba_size(65), 16);
        assert_eq!(pba_size(128), 16);
        assert_eq!(pba_size(MAX_VECTORS), 256);
    }
}
