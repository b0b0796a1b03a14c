// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The GICv3 ITS doorbell (Arm IHI 0069H 12.19, "The ITS register map").

/// The ITS register space: the control frame and the translation frame (`KVM_VGIC_V3_ITS_SIZE`).
pub const ITS_SIZE: u64 = 0x2_0000;
/// `GITS_TRANSLATER`, the MSI doorbell, from the ITS base (the translation frame at +0x10000,
/// the register at +0x40 in it).
pub const GITS_TRANSLATER: u64 = 0x1_0040;
/// `GITS_TRANSLATER`'s offset within its 4 KiB page.
pub const GITS_TRANSLATER_PAGE_OFFSET: u64 = GITS_TRANSLATER & 0xfff;
