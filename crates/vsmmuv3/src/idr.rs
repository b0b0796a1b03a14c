// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The host's ID registers, decoded, and the guest's ID registers derived from them.
//!
//! The host's `SMMU_IDR0..5` come from `IOMMU_GET_HW_INFO` (`struct
//! iommu_hw_info_arm_smmuv3`). The guest may only be shown what the host can honour through
//! iommufd nesting: the guest owns stage 1 (its STE's `S1ContextPtr` and the CDs and page
//! tables behind it are walked by the host SMMU), the host owns stage 2. [`SmmuConfig`]
//! records the derivation field by field (see [`SmmuConfigBuilder::build`]):
//!
//! | field | guest value | why |
//! |---|---|---|
//! | IDR0.S1P | 1 | the guest's stage 1 is what nesting installs |
//! | IDR0.S2P | 0 | stage 2 is the host's; a guest S2 STE would be refused by the kernel |
//! | IDR0.TTF | 0b10 (AArch64) | AArch32 tables are absent |
//! | IDR0.COHACC | host | the host SMMU reads the guest's tables |
//! | IDR0.BTM | 0 | the guest's CPU TLBIs do not reach the host SMMU |
//! | IDR0.HTTU | 0 | no hardware access/dirty flag updates in the walker |
//! | IDR0.HYP, ATS, NS1ATS, PRI, ATOS, VATOS, VMW, CD2L, DORMHINT, SEV | 0 | absent (no EL2 streams, no ATS/PRI, one CD per stream, no WFE wake-up) |
//! | IDR0.ASID16 | host | the host walks with the guest's ASIDs |
//! | IDR0.MSI | configurable, default 1 | the model's own interrupts (event queue, GERROR, CMD_SYNC) |
//! | IDR0.VMID16 | 0 | no stage 2 in the guest |
//! | IDR0.TTENDIAN | 0b10 (LE) | big-endian tables are absent |
//! | IDR0.STALL_MODEL | 0b01 | stalls are absent |
//! | IDR0.TERM_MODEL | host | the host applies the guest's `CD.A` |
//! | IDR0.ST_LVL | configurable, default 0b01 | linear and 2-level stream tables |
//! | IDR1.SIDSIZE | configurable, default 16 | the guest's StreamID space (vSIDs) |
//! | IDR1.SSIDSIZE | 0 | PASIDs are absent |
//! | IDR1.CMDQS/EVENTQS | configurable, default 19 | queue size limits |
//! | IDR1.PRIQS, REL, QUEUES/TABLES_PRESET, ECMDQ, ATTR_*_OVR | 0 | absent |
//! | IDR2 | 0 | no VATOS |
//! | IDR3 | 0 | SMMUv3.0 feature set: no RIL, STT, BBML, HAD, FWB, XNX, MPAM, PBHA |
//! | IDR4 | 0 | IMPLEMENTATION DEFINED, nothing |
//! | IDR5.OAS | min(host, 48 bits) | 52-bit addresses are absent |
//! | IDR5.GRAN4K/16K/64K | host | the host walks the guest's tables |
//! | IDR5.VAX, STALL_MAX | 0 | 48-bit VAs, no stalls |
//! | AIDR | 0 (SMMUv3.0) | |
//! | IIDR | configurable, default 0 | the host's IIDR would make a guest apply host errata |

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::regs::{idr0, idr1, idr3, idr5};

/// The host SMMU's ID registers as `IOMMU_GET_HW_INFO` returns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostIdrs {
    /// `SMMU_IDR0..5`.
    pub idr: [u32; 6],
    /// `SMMU_IIDR`.
    pub iidr: u32,
    /// `SMMU_AIDR`.
    pub aidr: u32,
}

/// What the host SMMU supports, decoded from [`HostIdrs`] (IHI 0070 §6.3.1-§6.3.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFeatures {
    /// IDR0.S1P.
    pub stage1: bool,
    /// IDR0.S2P.
    pub stage2: bool,
    /// IDR0.TTF includes AArch64.
    pub aarch64_tables: bool,
    /// IDR0.COHACC.
    pub coherent: bool,
    /// IDR0.ASID16.
    pub asid16: bool,
    /// IDR0.VMID16.
    pub vmid16: bool,
    /// IDR0.MSI.
    pub msi: bool,
    /// IDR0.ATS.
    pub ats: bool,
    /// IDR0.PRI.
    pub pri: bool,
    /// IDR0.HYP.
    pub hyp: bool,
    /// IDR0.TTENDIAN allows little-endian tables (0b00 mixed or 0b10).
    pub little_endian: bool,
    /// IDR0.STALL_MODEL.
    pub stall_model: u8,
    /// IDR0.TERM_MODEL.
    pub term_model: bool,
    /// IDR0.ST_LVL == 0b01.
    pub two_level_strtab: bool,
    /// IDR1.SIDSIZE.
    pub sid_bits: u8,
    /// IDR1.SSIDSIZE.
    pub ssid_bits: u8,
    /// IDR3.FWB.
    pub s2fwb: bool,
    /// IDR3.RIL.
    pub range_invalidation: bool,
    /// IDR5.OAS, as a number of bits (`None` for the reserved encoding 0b111).
    pub oas_bits: Option<u8>,
    /// IDR5.GRAN4K.
    pub gran4k: bool,
    /// IDR5.GRAN16K.
    pub gran16k: bool,
    /// IDR5.GRAN64K.
    pub gran64k: bool,
}

/// The address size an `OAS`/`IPS` encoding stands for (IHI 0070 §6.3.6), `None` for the
/// reserved encoding.
pub fn oas_encoding_bits(enc: u32) -> Option<u8> {
    match enc {
        0 => Some(32),
        1 => Some(36),
        2 => Some(40),
        3 => Some(42),
        4 => Some(44),
        5 => Some(48),
        6 => Some(52),
        _ => None,
    }
}

/// The encoding of an address size of `bits` (one of the sizes [`oas_encoding_bits`]
/// knows), rounded down to the largest one not above it.
pub fn oas_bits_encoding(bits: u8) -> u32 {
    match bits {
        0..=35 => 0,
        36..=39 => 1,
        40..=41 => 2,
        42..=43 => 3,
        44..=47 => 4,
        48..=51 => 5,
        _ => 6,
    }
}

impl HostIdrs {
    /// Decodes the fields this crate cares about.
    pub fn features(&self) -> HostFeatures {
        let i0 = self.idr[0];
        let i1 = self.idr[1];
        let i3 = self.idr[3];
        let i5 = self.idr[5];
        let ttf = (i0 >> idr0::TTF_SHIFT) & 0b11;
        let endian = (i0 >> idr0::TTENDIAN_SHIFT) & 0b11;
        HostFeatures {
            stage1: i0 & idr0::S1P != 0,
            stage2: i0 & idr0::S2P != 0,
            aarch64_tables: ttf & 0b10 != 0,
            coherent: i0 & idr0::COHACC != 0,
            asid16: i0 & idr0::ASID16 != 0,
            vmid16: i0 & idr0::VMID16 != 0,
            msi: i0 & idr0::MSI != 0,
            ats: i0 & idr0::ATS != 0,
            pri: i0 & idr0::PRI != 0,
            hyp: i0 & idr0::HYP != 0,
            little_endian: endian == 0b00 || endian == 0b10,
            stall_model: ((i0 >> idr0::STALL_MODEL_SHIFT) & 0b11) as u8,
            term_model: i0 & idr0::TERM_MODEL != 0,
            two_level_strtab: (i0 >> idr0::ST_LVL_SHIFT) & 0b11 == 0b01,
            sid_bits: (i1 & 0x3f) as u8,
            ssid_bits: ((i1 >> idr1::SSIDSIZE_SHIFT) & 0x1f) as u8,
            s2fwb: i3 & idr3::FWB != 0,
            range_invalidation: i3 & idr3::RIL != 0,
            oas_bits: oas_encoding_bits(i5 & idr5::OAS_MASK),
            gran4k: i5 & idr5::GRAN4K != 0,
            gran16k: i5 & idr5::GRAN16K != 0,
            gran64k: i5 & idr5::GRAN64K != 0,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The host SMMU lacks a stage nesting needs.
    #[error(
        "the host SMMU cannot nest: it has no {missing} (IDR0.S1P and IDR0.S2P are both required)"
    )]
    HostCannotNest {
        /// `"stage 1 (IDR0.S1P)"` or `"stage 2 (IDR0.S2P)"`.
        missing: &'static str,
    },
    /// The host walks no AArch64 tables.
    #[error("the host SMMU has no AArch64 translation tables (IDR0.TTF)")]
    NoAarch64Tables,
    /// The host walks big-endian tables only.
    #[error("the host SMMU walks big-endian tables only (IDR0.TTENDIAN = 0b11)")]
    BigEndianOnly,
    /// The host supports no translation granule.
    #[error("the host SMMU advertises no translation granule (IDR5.GRAN*)")]
    NoGranule,
    /// The host's IDR5.OAS is the reserved encoding.
    #[error("the host SMMU's IDR5.OAS is reserved ({0:#x})")]
    BadOas(u32),
    /// A configuration value is out of its range.
    #[error("{what} = {value} is out of range {min}..={max}")]
    OutOfRange {
        /// The setting.
        what: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
}

/// Largest queue size (log2 entries) the ID registers can advertise (IHI 0070 §6.3.2).
pub const MAX_QUEUE_LOG2: u8 = 19;
/// Smallest command queue Linux accepts: more entries than its 64-command batch.
pub const MIN_CMDQ_LOG2: u8 = 7;
/// Default bound on commands processed per MMIO write or `process_pending` call.
pub const DEFAULT_MAX_COMMANDS_PER_CALL: u32 = 256;
/// Default number of TLB entries.
pub const DEFAULT_TLB_ENTRIES: usize = 64;
/// Default number of cached stream configurations.
pub const DEFAULT_CONFIG_CACHE_ENTRIES: usize = 32;
/// Default number of forwarded invalidations per backend batch.
pub const DEFAULT_BATCH: usize = 64;
/// Default number of streams the invalidation observer tracks individually.
pub const DEFAULT_WATCH_CAPACITY: usize = 256;

/// The guest-visible identity of the vSMMU and the model's resource bounds; built by
/// [`SmmuConfig::builder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmmuConfig {
    /// Guest `SMMU_IDR0..5`.
    pub idr: [u32; 6],
    /// Guest `SMMU_IIDR`.
    pub iidr: u32,
    /// Guest `SMMU_AIDR`.
    pub aidr: u32,
    /// Commands processed per MMIO write / `process_pending` call.
    pub max_commands_per_call: u32,
    /// TLB entries.
    pub tlb_entries: usize,
    /// Cached stream configurations.
    pub config_cache_entries: usize,
    /// Forwarded commands per backend call.
    pub batch: usize,
    /// Streams the invalidation observer tracks individually.
    pub watch_capacity: usize,
    /// `SMMU_GBPA.ABORT` at reset (IMPLEMENTATION DEFINED, IHI 0070 §6.3.14).
    pub gbpa_abort_at_reset: bool,
}

impl SmmuConfig {
    /// A builder deriving the guest's ID registers from the host's.
    pub fn builder(host: &HostIdrs) -> SmmuConfigBuilder {
        SmmuConfigBuilder {
            host: *host,
            sid_bits: 16,
            cmdq_log2: MAX_QUEUE_LOG2,
            evtq_log2: MAX_QUEUE_LOG2,
            msi: true,
            two_level: true,
            iidr: 0,
            max_commands_per_call: DEFAULT_MAX_COMMANDS_PER_CALL,
            tlb_entries: DEFAULT_TLB_ENTRIES,
            config_cache_entries: DEFAULT_CONFIG_CACHE_ENTRIES,
            batch: DEFAULT_BATCH,
            watch_capacity: DEFAULT_WATCH_CAPACITY,
            gbpa_abort_at_reset: false,
        }
    }

    /// StreamID bits (IDR1.SIDSIZE).
    pub fn sid_bits(&self) -> u8 {
        (self.idr[1] & 0x3f) as u8
    }

    /// log2 of the largest command queue (IDR1.CMDQS).
    pub fn cmdq_log2(&self) -> u8 {
        ((self.idr[1] >> idr1::CMDQS_SHIFT) & 0x1f) as u8
    }

    /// log2 of the largest event queue (IDR1.EVENTQS).
    pub fn evtq_log2(&self) -> u8 {
        ((self.idr[1] >> idr1::EVENTQS_SHIFT) & 0x1f) as u8
    }

    /// IDR0.MSI.
    pub fn msi(&self) -> bool {
        self.idr[0] & idr0::MSI != 0
    }

    /// IDR0.ST_LVL == 0b01.
    pub fn two_level(&self) -> bool {
        (self.idr[0] >> idr0::ST_LVL_SHIFT) & 0b11 == 0b01
    }

    /// IDR0.ASID16.
    pub fn asid16(&self) -> bool {
        self.idr[0] & idr0::ASID16 != 0
    }

    /// IDR0.TERM_MODEL.
    pub fn term_model(&self) -> bool {
        self.idr[0] & idr0::TERM_MODEL != 0
    }

    /// IDR5.OAS as a number of bits.
    pub fn oas_bits(&self) -> u8 {
        oas_encoding_bits(self.idr[5] & idr5::OAS_MASK).unwrap_or(48)
    }

    /// Whether granule `log2` (12, 14 or 16) is advertised.
    pub fn granule_supported(&self, log2: u32) -> bool {
        let bit = match log2 {
            12 => idr5::GRAN4K,
            14 => idr5::GRAN16K,
            16 => idr5::GRAN64K,
            _ => return false,
        };
        self.idr[5] & bit != 0
    }
}

/// Builds an [`SmmuConfig`]; see the module documentation for what each field becomes.
#[derive(Debug, Clone)]
pub struct SmmuConfigBuilder {
    host: HostIdrs,
    sid_bits: u8,
    cmdq_log2: u8,
    evtq_log2: u8,
    msi: bool,
    two_level: bool,
    iidr: u32,
    max_commands_per_call: u32,
    tlb_entries: usize,
    config_cache_entries: usize,
    batch: usize,
    watch_capacity: usize,
    gbpa_abort_at_reset: bool,
}

impl SmmuConfigBuilder {
    /// `SMMU_GBPA.ABORT` at reset: abort (default deny) or bypass (the default, so that
    /// firmware DMA works before the OS probes the SMMU).
    pub fn gbpa_abort_at_reset(mut self, abort: bool) -> Self {
        self.gbpa_abort_at_reset = abort;
        self
    }

    /// StreamID bits the guest sees (IDR1.SIDSIZE), 1..=32; default 16 (PCI requester IDs).
    pub fn sid_bits(mut self, bits: u8) -> Self {
        self.sid_bits = bits;
        self
    }

    /// log2 of the largest command queue, 7..=19 (Linux needs more than 64 entries).
    pub fn cmdq_log2(mut self, log2: u8) -> Self {
        self.cmdq_log2 = log2;
        self
    }

    /// log2 of the largest event queue, 0..=19.
    pub fn evtq_log2(mut self, log2: u8) -> Self {
        self.evtq_log2 = log2;
        self
    }

    /// Advertise MSIs (IDR0.MSI); default on.
    pub fn msi(mut self, on: bool) -> Self {
        self.msi = on;
        self
    }

    /// Advertise 2-level stream tables (IDR0.ST_LVL); default on.
    pub fn two_level_stream_table(mut self, on: bool) -> Self {
        self.two_level = on;
        self
    }

    /// Guest `SMMU_IIDR`.
    pub fn iidr(mut self, iidr: u32) -> Self {
        self.iidr = iidr;
        self
    }

    /// Commands processed per MMIO write / `process_pending` call, 1..=65536.
    pub fn max_commands_per_call(mut self, n: u32) -> Self {
        self.max_commands_per_call = n;
        self
    }

    /// TLB entries, 1..=4096.
    pub fn tlb_entries(mut self, n: usize) -> Self {
        self.tlb_entries = n;
        self
    }

    /// Cached stream configurations, 1..=4096.
    pub fn config_cache_entries(mut self, n: usize) -> Self {
        self.config_cache_entries = n;
        self
    }

    /// Forwarded commands per backend call, 1..=4096.
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n;
        self
    }

    /// Streams the invalidation observer tracks individually, 1..=65536.
    pub fn watch_capacity(mut self, n: usize) -> Self {
        self.watch_capacity = n;
        self
    }

    /// Checks the host can nest and derives the guest's ID registers.
    pub fn build(self) -> Result<SmmuConfig, ConfigError> {
        let h = self.host.features();
        if !h.stage1 {
            return Err(ConfigError::HostCannotNest {
                missing: "stage 1 (IDR0.S1P)",
            });
        }
        if !h.stage2 {
            return Err(ConfigError::HostCannotNest {
                missing: "stage 2 (IDR0.S2P)",
            });
        }
        if !h.aarch64_tables {
            return Err(ConfigError::NoAarch64Tables);
        }
        if !h.little_endian {
            return Err(ConfigError::BigEndianOnly);
        }
        if !(h.gran4k || h.gran16k || h.gran64k) {
            return Err(ConfigError::NoGranule);
        }
        let Some(host_oas) = h.oas_bits else {
            return Err(ConfigError::BadOas(self.host.idr[5] & idr5::OAS_MASK));
        };
        range("sid_bits", self.sid_bits.into(), 1, 32)?;
        range(
            "cmdq_log2",
            self.cmdq_log2.into(),
            MIN_CMDQ_LOG2.into(),
            MAX_QUEUE_LOG2.into(),
        )?;
        range("evtq_log2", self.evtq_log2.into(), 0, MAX_QUEUE_LOG2.into())?;
        range(
            "max_commands_per_call",
            self.max_commands_per_call.into(),
            1,
            65536,
        )?;
        range("tlb_entries", self.tlb_entries as u64, 1, 4096)?;
        range(
            "config_cache_entries",
            self.config_cache_entries as u64,
            1,
            4096,
        )?;
        range("batch", self.batch as u64, 1, 4096)?;
        range("watch_capacity", self.watch_capacity as u64, 1, 65536)?;

        let mut i0 = idr0::S1P | (0b10 << idr0::TTF_SHIFT) | (0b10 << idr0::TTENDIAN_SHIFT);
        i0 |= 0b01 << idr0::STALL_MODEL_SHIFT;
        if h.coherent {
            i0 |= idr0::COHACC;
        }
        if h.asid16 {
            i0 |= idr0::ASID16;
        }
        if self.msi {
            i0 |= idr0::MSI;
        }
        if h.term_model {
            i0 |= idr0::TERM_MODEL;
        }
        if self.two_level {
            i0 |= 0b01 << idr0::ST_LVL_SHIFT;
        }
        let i1 = (u32::from(self.sid_bits) << idr1::SIDSIZE_SHIFT)
            | (u32::from(self.evtq_log2) << idr1::EVENTQS_SHIFT)
            | (u32::from(self.cmdq_log2) << idr1::CMDQS_SHIFT);
        let mut i5 = oas_bits_encoding(host_oas.min(48));
        if h.gran4k {
            i5 |= idr5::GRAN4K;
        }
        if h.gran16k {
            i5 |= idr5::GRAN16K;
        }
        if h.gran64k {
            i5 |= idr5::GRAN64K;
        }
        Ok(SmmuConfig {
            idr: [i0, i1, 0, 0, 0, i5],
            iidr: self.iidr,
            aidr: 0,
            max_commands_per_call: self.max_commands_per_call,
            tlb_entries: self.tlb_entries,
            config_cache_entries: self.config_cache_entries,
            batch: self.batch,
            watch_capacity: self.watch_capacity,
            gbpa_abort_at_reset: self.gbpa_abort_at_reset,
        })
    }
}

fn range(what: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::OutOfRange {
            what,
            value,
            min,
            max,
        });
    }
    Ok(())
}

/// The ID registers of QEMU 10's emulated SMMUv3 (`-M virt,iommu=smmuv3`, stage 1 + 2) as
/// measured through `IOMMU_GET_HW_INFO` in the project's test host (docs: DESIGN "Nested
/// translation"): S1P, S2P, AArch64, coherent, 16-bit ASID/VMID, no stall, terminate model,
/// 2-level stream tables; IDR1 SIDSIZE 16, SSIDSIZE 0; IDR3 0x1414; 44-bit OAS, 4K/16K/64K.
pub const QEMU_HOST_IDRS: HostIdrs = HostIdrs {
    idr: [0x0d44_101b, 0x0273_0010, 0, 0x1414, 0, 0x74],
    iidr: 0,
    aidr: 1,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_qemu_host() {
        let f = QEMU_HOST_IDRS.features();
        assert!(f.stage1 && f.stage2 && f.aarch64_tables && f.coherent);
        assert!(f.asid16 && f.vmid16 && f.little_endian && f.term_model);
        assert!(f.two_level_strtab);
        assert_eq!(f.stall_model, 1);
        assert!(!f.msi && !f.ats && !f.pri && !f.hyp);
        assert_eq!(f.ssid_bits, 0);
        assert!(f.range_invalidation && !f.s2fwb);
        assert_eq!(f.oas_bits, Some(44));
        assert!(f.gran4k && f.gran16k && f.gran64k);
    }

    /// The guest gets stage 1 only, no PASIDs, no stall, no ATS/PRI, the host's OAS and
    /// granules, AArch64 little-endian tables.
    #[test]
    fn guest_idrs_from_qemu_host() {
        let c = SmmuConfig::builder(&QEMU_HOST_IDRS).build().unwrap();
        let g = HostIdrs {
            idr: c.idr,
            iidr: c.iidr,
            aidr: c.aidr,
        }
        .features();
        assert!(g.stage1 && !g.stage2);
        assert!(g.aarch64_tables && g.little_endian);
        assert_eq!((c.idr[0] >> idr0::TTF_SHIFT) & 3, 0b10);
        assert_eq!((c.idr[0] >> idr0::TTENDIAN_SHIFT) & 3, 0b10);
        assert_eq!(g.stall_model, 1);
        assert!(!g.ats && !g.pri && !g.hyp && !g.vmid16);
        assert!(g.msi && g.asid16 && g.coherent && g.term_model);
        assert_eq!(g.ssid_bits, 0);
        assert_eq!(g.sid_bits, 16);
        assert_eq!(g.oas_bits, Some(44));
        assert!(g.gran4k && g.gran16k && g.gran64k);
        assert!(!g.range_invalidation);
        assert_eq!(c.idr[2], 0);
        assert_eq!(c.idr[3], 0);
        assert_eq!(c.idr[4], 0);
        assert_eq!(c.cmdq_log2(), 19);
        assert_eq!(c.evtq_log2(), 19);
        assert_eq!(c.idr[0] & idr0::CD2L, 0);
        assert_eq!(c.idr[0], 0x0d40_301a, "the value the README quotes");
    }

    #[test]
    fn refuses_hosts_that_cannot_nest() {
        let mut h = QEMU_HOST_IDRS;
        h.idr[0] &= !idr0::S2P;
        assert!(matches!(
            SmmuConfig::builder(&h).build(),
            Err(ConfigError::HostCannotNest { missing }) if missing.contains("S2P")
        ));
        let mut h = QEMU_HOST_IDRS;
        h.idr[0] &= !idr0::S1P;
        let e = SmmuConfig::builder(&h).build().unwrap_err();
        assert!(e.to_string().contains("S1P"), "{e}");
        let mut h = QEMU_HOST_IDRS;
        h.idr[0] &= !(0b11 << idr0::TTF_SHIFT);
        h.idr[0] |= 0b01 << idr0::TTF_SHIFT;
        assert_eq!(
            SmmuConfig::builder(&h).build(),
            Err(ConfigError::NoAarch64Tables)
        );
        let mut h = QEMU_HOST_IDRS;
        h.idr[0] |= 0b11 << idr0::TTENDIAN_SHIFT;
        assert_eq!(
            SmmuConfig::builder(&h).build(),
            Err(ConfigError::BigEndianOnly)
        );
        let mut h = QEMU_HOST_IDRS;
        h.idr[5] &= !0x70;
        assert_eq!(SmmuConfig::builder(&h).build(), Err(ConfigError::NoGranule));
        let mut h = QEMU_HOST_IDRS;
        h.idr[5] |= 7;
        assert_eq!(SmmuConfig::builder(&h).build(), Err(ConfigError::BadOas(7)));
    }

    #[test]
    fn oas_is_capped_at_48_bits_and_granules_follow_the_host() {
        let mut h = QEMU_HOST_IDRS;
        h.idr[5] = 6 | idr5::GRAN64K;
        let c = SmmuConfig::builder(&h).build().unwrap();
        assert_eq!(c.oas_bits(), 48);
        assert!(c.granule_supported(16));
        assert!(!c.granule_supported(12) && !c.granule_supported(14));
    }

    #[test]
    fn ranges_are_checked() {
        let b = || SmmuConfig::builder(&QEMU_HOST_IDRS);
        assert!(b().sid_bits(0).build().is_err());
        assert!(b().sid_bits(33).build().is_err());
        assert!(b().cmdq_log2(6).build().is_err());
        assert!(b().cmdq_log2(20).build().is_err());
        assert!(b().evtq_log2(20).build().is_err());
        assert!(b().tlb_entries(0).build().is_err());
        assert!(b().batch(0).build().is_err());
        assert!(b().max_commands_per_call(0).build().is_err());
        let c = b()
            .sid_bits(8)
            .cmdq_log2(8)
            .evtq_log2(4)
            .msi(false)
            .two_level_stream_table(false)
            .build()
            .unwrap();
        assert_eq!(c.sid_bits(), 8);
        assert_eq!(c.cmdq_log2(), 8);
        assert_eq!(c.evtq_log2(), 4);
        assert!(!c.msi() && !c.two_level());
    }

    #[test]
    fn oas_encodings_round_trip() {
        for enc in 0..7 {
            let bits = oas_encoding_bits(enc).unwrap();
            assert_eq!(oas_bits_encoding(bits), enc);
        }
        assert_eq!(oas_encoding_bits(7), None);
    }
}
