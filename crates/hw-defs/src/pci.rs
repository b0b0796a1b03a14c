// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! PCI configuration space (PCI Local Bus 3.0, chapter 6; PCI Express Base 6.0, 7.5-7.7).

/// Conventional configuration space.
pub const CONFIG_SPACE_SIZE: usize = 256;
/// PCI Express configuration space (extended capabilities at 0x100..).
pub const EXTENDED_CONFIG_SPACE_SIZE: usize = 4096;

/// Vendor ID (16 bits).
pub const VENDOR_ID: u16 = 0x00;
/// Device ID (16 bits).
pub const DEVICE_ID: u16 = 0x02;
/// Command register (16 bits).
pub const COMMAND: u16 = 0x04;
/// Status register (16 bits).
pub const STATUS: u16 = 0x06;
/// The first Base Address Register; six follow at 4-byte steps.
pub const BAR0: u16 = 0x10;
/// Expansion ROM base address.
pub const ROM_ADDRESS: u16 = 0x30;
/// Capabilities pointer (8 bits, low 2 bits reserved).
pub const CAPABILITY_LIST: u16 = 0x34;

/// `COMMAND`: memory space enable.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// `COMMAND`: bus master enable.
pub const COMMAND_MASTER: u16 = 1 << 2;
/// `COMMAND`: INTx disable.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// `STATUS`: the capabilities list exists.
pub const STATUS_CAP_LIST: u16 = 1 << 4;

/// Capability ID: power management.
pub const CAP_ID_PM: u8 = 0x01;
/// Capability ID: MSI.
pub const CAP_ID_MSI: u8 = 0x05;
/// Capability ID: vendor specific.
pub const CAP_ID_VENDOR: u8 = 0x09;
/// Capability ID: PCI Express.
pub const CAP_ID_EXP: u8 = 0x10;
/// Capability ID: MSI-X.
pub const CAP_ID_MSIX: u8 = 0x11;

/// The ECAM size of one bus: 32 devices x 8 functions x 4 KiB (PCIe 6.0 7.2.2).
pub const ECAM_BUS_SIZE: u64 = 1 << 20;
