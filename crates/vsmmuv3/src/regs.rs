// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The SMMUv3 register frame (IHI 0070 chapter 6): offsets, field positions and the
//! access-size rules.
//!
//! The frame is two 64 KiB pages ([`FRAME_SIZE`]). Page 0 holds every register this model
//! implements except `SMMU_EVENTQ_PROD`/`SMMU_EVENTQ_CONS`, which the spec places in page 1
//! only (IHI 0070 §6.2, "Register map": page 1 offsets 0xA8/0xAC). Page 0 offsets 0xA8/0xAC
//! are therefore **not** aliases here: they are reserved and RAZ/WI. (Linux knows a
//! "page 0 only" layout as an erratum option of one implementation; the architecture has
//! none.) `SMMU_CMDQ_PROD`/`SMMU_CMDQ_CONS` are in page 0 only, at 0x98/0x9C.
//!
//! Access sizes (IHI 0070 §6.2): 32-bit registers take aligned 32-bit accesses; 64-bit
//! registers take aligned 64-bit accesses and aligned 32-bit accesses to either half. Every
//! other access (8- or 16-bit, unaligned, 64-bit to a 32-bit register, or to a reserved or
//! unimplemented offset) is CONSTRAINED UNPREDICTABLE in the spec and RAZ/WI here.

/// Size of the register frame: page 0 and page 1.
pub const FRAME_SIZE: u64 = 0x2_0000;
/// Offset of page 1.
pub const PAGE1: u64 = 0x1_0000;

/// `SMMU_IDR0`.
pub const IDR0: u64 = 0x00;
/// `SMMU_IDR1`.
pub const IDR1: u64 = 0x04;
/// `SMMU_IDR2`.
pub const IDR2: u64 = 0x08;
/// `SMMU_IDR3`.
pub const IDR3: u64 = 0x0c;
/// `SMMU_IDR4`.
pub const IDR4: u64 = 0x10;
/// `SMMU_IDR5`.
pub const IDR5: u64 = 0x14;
/// `SMMU_IIDR`.
pub const IIDR: u64 = 0x18;
/// `SMMU_AIDR`.
pub const AIDR: u64 = 0x1c;
/// `SMMU_CR0`.
pub const CR0: u64 = 0x20;
/// `SMMU_CR0ACK`.
pub const CR0ACK: u64 = 0x24;
/// `SMMU_CR1`.
pub const CR1: u64 = 0x28;
/// `SMMU_CR2`.
pub const CR2: u64 = 0x2c;
/// `SMMU_STATUSR` (RAZ: no dormant hint).
pub const STATUSR: u64 = 0x40;
/// `SMMU_GBPA`.
pub const GBPA: u64 = 0x44;
/// `SMMU_AGBPA` (RAZ/WI: no IMPLEMENTATION DEFINED attributes).
pub const AGBPA: u64 = 0x48;
/// `SMMU_IRQ_CTRL`.
pub const IRQ_CTRL: u64 = 0x50;
/// `SMMU_IRQ_CTRLACK`.
pub const IRQ_CTRLACK: u64 = 0x54;
/// `SMMU_GERROR`.
pub const GERROR: u64 = 0x60;
/// `SMMU_GERRORN`.
pub const GERRORN: u64 = 0x64;
/// `SMMU_GERROR_IRQ_CFG0` (64-bit).
pub const GERROR_IRQ_CFG0: u64 = 0x68;
/// `SMMU_GERROR_IRQ_CFG1`.
pub const GERROR_IRQ_CFG1: u64 = 0x70;
/// `SMMU_GERROR_IRQ_CFG2`.
pub const GERROR_IRQ_CFG2: u64 = 0x74;
/// `SMMU_STRTAB_BASE` (64-bit).
pub const STRTAB_BASE: u64 = 0x80;
/// `SMMU_STRTAB_BASE_CFG`.
pub const STRTAB_BASE_CFG: u64 = 0x88;
/// `SMMU_CMDQ_BASE` (64-bit).
pub const CMDQ_BASE: u64 = 0x90;
/// `SMMU_CMDQ_PROD`.
pub const CMDQ_PROD: u64 = 0x98;
/// `SMMU_CMDQ_CONS`.
pub const CMDQ_CONS: u64 = 0x9c;
/// `SMMU_EVENTQ_BASE` (64-bit).
pub const EVTQ_BASE: u64 = 0xa0;
/// `SMMU_EVENTQ_IRQ_CFG0` (64-bit).
pub const EVTQ_IRQ_CFG0: u64 = 0xb0;
/// `SMMU_EVENTQ_IRQ_CFG1`.
pub const EVTQ_IRQ_CFG1: u64 = 0xb8;
/// `SMMU_EVENTQ_IRQ_CFG2`.
pub const EVTQ_IRQ_CFG2: u64 = 0xbc;
/// `SMMU_EVENTQ_PROD` (page 1).
pub const EVTQ_PROD: u64 = PAGE1 + 0xa8;
/// `SMMU_EVENTQ_CONS` (page 1).
pub const EVTQ_CONS: u64 = PAGE1 + 0xac;

/// Builds a mask of bits `hi..=lo`.
pub const fn mask(hi: u32, lo: u32) -> u64 {
    ((u64::MAX) >> (63 - hi)) & !((1u64 << lo) - 1)
}

/// Extracts bits `hi..=lo` of `v`.
pub const fn field(v: u64, hi: u32, lo: u32) -> u64 {
    (v & mask(hi, lo)) >> lo
}

/// `SMMU_IDR0` fields (IHI 0070 §6.3.1).
pub mod idr0 {
    /// Stage 2 translation supported.
    pub const S2P: u32 = 1 << 0;
    /// Stage 1 translation supported.
    pub const S1P: u32 = 1 << 1;
    /// Translation table formats, bits \[3:2\] (0b10: AArch64, 0b11: both).
    pub const TTF_SHIFT: u32 = 2;
    /// Coherent access to tables and queues.
    pub const COHACC: u32 = 1 << 4;
    /// Broadcast TLB maintenance.
    pub const BTM: u32 = 1 << 5;
    /// Hardware translation table updates, bits \[7:6\].
    pub const HTTU_SHIFT: u32 = 6;
    /// EL2 (hypervisor) stage 1 and `TLBI_EL2_*`.
    pub const HYP: u32 = 1 << 9;
    /// PCIe ATS.
    pub const ATS: u32 = 1 << 10;
    /// 16-bit ASIDs.
    pub const ASID16: u32 = 1 << 12;
    /// Message-signalled interrupts.
    pub const MSI: u32 = 1 << 13;
    /// Send Event (WFE wake-up).
    pub const SEV: u32 = 1 << 14;
    /// PRI.
    pub const PRI: u32 = 1 << 16;
    /// 16-bit VMIDs.
    pub const VMID16: u32 = 1 << 18;
    /// Two-level context descriptor tables.
    pub const CD2L: u32 = 1 << 19;
    /// Translation table endianness, bits \[22:21\] (0b00 mixed, 0b10 LE, 0b11 BE).
    pub const TTENDIAN_SHIFT: u32 = 21;
    /// Stall model, bits \[25:24\] (0b01: stall not supported).
    pub const STALL_MODEL_SHIFT: u32 = 24;
    /// Terminate model: 1 = a terminated transaction always aborts (`CD.A` must be 1).
    pub const TERM_MODEL: u32 = 1 << 26;
    /// Stream table levels, bits \[28:27\] (0b01: 2-level supported).
    pub const ST_LVL_SHIFT: u32 = 27;
}

/// `SMMU_IDR1` field positions (IHI 0070 §6.3.2).
pub mod idr1 {
    /// StreamID bits, \[5:0\].
    pub const SIDSIZE_SHIFT: u32 = 0;
    /// SubstreamID bits, \[10:6\].
    pub const SSIDSIZE_SHIFT: u32 = 6;
    /// log2 of the PRI queue size, \[15:11\].
    pub const PRIQS_SHIFT: u32 = 11;
    /// log2 of the event queue size, \[20:16\].
    pub const EVENTQS_SHIFT: u32 = 16;
    /// log2 of the command queue size, \[25:21\].
    pub const CMDQS_SHIFT: u32 = 21;
}

/// `SMMU_IDR3` fields (IHI 0070 §6.3.4).
pub mod idr3 {
    /// Stage 2 forced write-back (`S2FWB`).
    pub const FWB: u32 = 1 << 8;
    /// Range invalidation.
    pub const RIL: u32 = 1 << 10;
}

/// `SMMU_IDR5` fields (IHI 0070 §6.3.6).
pub mod idr5 {
    /// Output address size mask, \[2:0\].
    pub const OAS_MASK: u32 = 0b111;
    /// 4 KiB granule.
    pub const GRAN4K: u32 = 1 << 4;
    /// 16 KiB granule.
    pub const GRAN16K: u32 = 1 << 5;
    /// 64 KiB granule.
    pub const GRAN64K: u32 = 1 << 6;
}

/// `SMMU_CR0` fields (IHI 0070 §6.3.9).
pub mod cr0 {
    /// SMMU enable.
    pub const SMMUEN: u32 = 1 << 0;
    /// PRI queue enable (RES0 here: no PRI).
    pub const PRIQEN: u32 = 1 << 1;
    /// Event queue enable.
    pub const EVENTQEN: u32 = 1 << 2;
    /// Command queue enable.
    pub const CMDQEN: u32 = 1 << 3;
    /// Bits this model implements (ATSCHK and VMW are RES0: no ATS, no stage 2).
    pub const IMPLEMENTED: u32 = SMMUEN | EVENTQEN | CMDQEN;
}

/// `SMMU_CR1` implemented bits: QUEUE_IC/OC/SH \[5:0\] and TABLE_IC/OC/SH \[11:6\]
/// (IHI 0070 §6.3.11); stored and read back, no effect on an emulated memory system.
pub const CR1_IMPLEMENTED: u32 = 0xfff;
/// `SMMU_CR2` implemented bits: E2H \[0\] is RES0 (no `HYP`), RECINVSID \[1\], PTM \[2\]
/// (IHI 0070 §6.3.12).
pub const CR2_IMPLEMENTED: u32 = 0b110;

/// `SMMU_GBPA` fields (IHI 0070 §6.3.14).
pub mod gbpa {
    /// Update in progress / request.
    pub const UPDATE: u32 = 1 << 31;
    /// Abort all incoming transactions while `SMMUEN == 0`.
    pub const ABORT: u32 = 1 << 20;
    /// Writable attribute fields: INSTCFG \[19:18\], PRIVCFG \[17:16\], SHCFG \[13:12\],
    /// ALLOCCFG \[11:8\], MTCFG \[4\], MemAttr \[3:0\].
    pub const ATTRS: u32 = 0x000f_3f1f;
    /// Reset value: SHCFG = 0b01 (use incoming), everything else 0 (bypass).
    pub const RESET: u32 = 0x0000_1000;
}

/// `SMMU_IRQ_CTRL` fields (IHI 0070 §6.3.16).
pub mod irq_ctrl {
    /// Global error interrupt enable.
    pub const GERROR_IRQEN: u32 = 1 << 0;
    /// PRI queue interrupt enable (RES0 here).
    pub const PRIQ_IRQEN: u32 = 1 << 1;
    /// Event queue interrupt enable.
    pub const EVENTQ_IRQEN: u32 = 1 << 2;
    /// Implemented bits.
    pub const IMPLEMENTED: u32 = GERROR_IRQEN | EVENTQ_IRQEN;
}

/// `SMMU_GERROR` bits (IHI 0070 §6.3.18).
pub mod gerror {
    /// Command queue error.
    pub const CMDQ_ERR: u32 = 1 << 0;
    /// Event queue write abort.
    pub const EVTQ_ABT_ERR: u32 = 1 << 2;
    /// MSI write abort of a CMD_SYNC.
    pub const MSI_CMDQ_ABT_ERR: u32 = 1 << 4;
    /// MSI write abort of the event queue interrupt.
    pub const MSI_EVTQ_ABT_ERR: u32 = 1 << 5;
    /// MSI write abort of the GERROR interrupt.
    pub const MSI_GERROR_ABT_ERR: u32 = 1 << 7;
    /// Service failure mode.
    pub const SFM_ERR: u32 = 1 << 8;
    /// Bits this model can activate.
    pub const IMPLEMENTED: u32 = CMDQ_ERR | EVTQ_ABT_ERR;
    /// Bits `SMMU_GERRORN` holds (every architected GERROR bit of an SMMU without PRI).
    pub const ACKABLE: u32 = CMDQ_ERR
        | EVTQ_ABT_ERR
        | MSI_CMDQ_ABT_ERR
        | MSI_EVTQ_ABT_ERR
        | MSI_GERROR_ABT_ERR
        | SFM_ERR;
}

/// `*_IRQ_CFG0.ADDR` bits \[51:2\].
pub const IRQ_CFG0_ADDR_MASK: u64 = mask(51, 2);
/// `*_IRQ_CFG2` implemented bits: MemAttr \[3:0\], SH \[5:4\].
pub const IRQ_CFG2_IMPLEMENTED: u32 = 0x3f;

/// `SMMU_STRTAB_BASE`: RA \[62\], ADDR \[51:6\] (IHI 0070 §6.3.23).
pub const STRTAB_BASE_IMPLEMENTED: u64 = (1 << 62) | mask(51, 6);
/// `SMMU_STRTAB_BASE.ADDR`.
pub const STRTAB_BASE_ADDR_MASK: u64 = mask(51, 6);
/// `SMMU_STRTAB_BASE_CFG`: FMT \[17:16\], SPLIT \[10:6\], LOG2SIZE \[5:0\] (§6.3.24).
pub const STRTAB_BASE_CFG_IMPLEMENTED: u32 = 0x0003_07ff;

/// `SMMU_CMDQ_BASE`/`SMMU_EVENTQ_BASE`: RA/WA \[62\], ADDR \[51:5\], LOG2SIZE \[4:0\]
/// (IHI 0070 §6.3.25, §6.3.28).
pub const Q_BASE_IMPLEMENTED: u64 = (1 << 62) | mask(51, 5) | 0x1f;
/// Queue base `ADDR` field.
pub const Q_BASE_ADDR_MASK: u64 = mask(51, 5);
/// `*_PROD.WR`/`*_CONS.RD`: index and wrap bit, at most bits \[19:0\].
pub const Q_PTR_MASK: u32 = 0x000f_ffff;
/// `SMMU_CMDQ_CONS.ERR` \[30:24\].
pub const CMDQ_CONS_ERR_SHIFT: u32 = 24;
/// `SMMU_EVENTQ_PROD.OVFLG` \[31\].
pub const EVTQ_PROD_OVFLG: u32 = 1 << 31;
/// `SMMU_EVENTQ_CONS.OVACKFLG` \[31\].
pub const EVTQ_CONS_OVACKFLG: u32 = 1 << 31;

/// How a register may be accessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegWidth {
    /// A 32-bit register.
    W32,
    /// A 64-bit register (64-bit or 32-bit half accesses).
    W64,
}

/// The width of the implemented register at `offset` (its base offset), or `None` for a
/// reserved or unimplemented offset.
pub fn register_width(offset: u64) -> Option<RegWidth> {
    match offset {
        IDR0 | IDR1 | IDR2 | IDR3 | IDR4 | IDR5 | IIDR | AIDR | CR0 | CR0ACK | CR1 | CR2
        | STATUSR | GBPA | AGBPA | IRQ_CTRL | IRQ_CTRLACK | GERROR | GERRORN | GERROR_IRQ_CFG1
        | GERROR_IRQ_CFG2 | STRTAB_BASE_CFG | CMDQ_PROD | CMDQ_CONS | EVTQ_IRQ_CFG1
        | EVTQ_IRQ_CFG2 | EVTQ_PROD | EVTQ_CONS => Some(RegWidth::W32),
        GERROR_IRQ_CFG0 | STRTAB_BASE | CMDQ_BASE | EVTQ_BASE | EVTQ_IRQ_CFG0 => {
            Some(RegWidth::W64)
        }
        _ => None,
    }
}

/// A decoded MMIO access: which register, and which part of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A whole 32-bit register at this offset.
    Reg32(u64),
    /// A whole 64-bit register at this offset.
    Reg64(u64),
    /// The low (`false`) or high (`true`) half of the 64-bit register at this offset.
    Half64(u64, bool),
}

/// Classifies an access of `len` bytes at `offset` by the rules in the module
/// documentation; `None` means RAZ/WI.
pub fn classify(offset: u64, len: usize) -> Option<Access> {
    if offset >= FRAME_SIZE {
        return None;
    }
    match len {
        4 if offset.is_multiple_of(4) => match register_width(offset) {
            Some(RegWidth::W32) => Some(Access::Reg32(offset)),
            Some(RegWidth::W64) => Some(Access::Half64(offset, false)),
            None => match offset.checked_sub(4).and_then(register_width) {
                Some(RegWidth::W64) if offset % 8 == 4 => {
                    Some(Access::Half64(offset.saturating_sub(4), true))
                }
                _ => None,
            },
        },
        8 if offset.is_multiple_of(8) => match register_width(offset) {
            Some(RegWidth::W64) => Some(Access::Reg64(offset)),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(mask(3, 0), 0xf);
        assert_eq!(mask(63, 0), u64::MAX);
        assert_eq!(mask(63, 63), 1 << 63);
        assert_eq!(field(0xabcd, 15, 8), 0xab);
    }

    /// IHI 0070 §6.2: 64-bit registers take 32-bit halves; 32-bit registers only 32-bit.
    #[test]
    fn access_classification() {
        assert_eq!(classify(CMDQ_BASE, 8), Some(Access::Reg64(CMDQ_BASE)));
        assert_eq!(
            classify(CMDQ_BASE, 4),
            Some(Access::Half64(CMDQ_BASE, false))
        );
        assert_eq!(
            classify(CMDQ_BASE + 4, 4),
            Some(Access::Half64(CMDQ_BASE, true))
        );
        assert_eq!(classify(CMDQ_PROD, 4), Some(Access::Reg32(CMDQ_PROD)));
        // 64-bit access to a pair of 32-bit registers, byte and halfword accesses,
        // unaligned accesses: RAZ/WI.
        assert_eq!(classify(CMDQ_PROD, 8), None);
        assert_eq!(classify(CR0, 1), None);
        assert_eq!(classify(CR0, 2), None);
        assert_eq!(classify(CR0 + 1, 4), None);
        assert_eq!(classify(CMDQ_BASE + 4, 8), None);
        // Page 0 has no event queue pointers; page 1 does.
        assert_eq!(classify(0xa8, 4), None);
        assert_eq!(classify(0xac, 4), None);
        assert_eq!(classify(EVTQ_PROD, 4), Some(Access::Reg32(EVTQ_PROD)));
        // The 32-bit register after a 64-bit one is not its high half.
        assert_eq!(
            classify(GERROR_IRQ_CFG1, 4),
            Some(Access::Reg32(GERROR_IRQ_CFG1))
        );
        assert_eq!(classify(FRAME_SIZE, 4), None);
        assert_eq!(classify(u64::MAX - 3, 4), None);
    }
}
