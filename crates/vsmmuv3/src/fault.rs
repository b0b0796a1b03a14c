// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Why an address did not translate: the configuration errors and translation faults of
//! IHI 0070 §7.3, each with the event it would record.

use thiserror::Error;

use crate::event::id;

/// Why an STE is ILLEGAL (`C_BAD_STE`, IHI 0070 §5.2 `SteIllegal()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SteError {
    /// `STE.V == 0`.
    #[error("STE.V == 0")]
    Invalid,
    /// `STE.Config == 0b11x` with `IDR0.S2P == 0`.
    #[error("STE.Config {0:#05b} enables stage 2, which is not advertised")]
    Stage2NotSupported(u8),
    /// `STE.S1STALLD == 1` with `IDR0.STALL_MODEL != 0b00`.
    #[error("STE.S1STALLD == 1 without a configurable stall model")]
    StallDisableWithoutStall,
    /// `STE.S1ContextPtr` outside the OAS.
    #[error("STE.S1ContextPtr {0:#x} is outside the output address size")]
    ContextPtrOutOfRange(u64),
}

/// Why a CD is ILLEGAL (`C_BAD_CD`, IHI 0070 §5.4 `CdIllegal()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CdError {
    /// `CD.V == 0`.
    #[error("CD.V == 0")]
    Invalid,
    /// `CD.A == 0` with `IDR0.TERM_MODEL == 1`.
    #[error("CD.A == 0 with IDR0.TERM_MODEL == 1")]
    TerminateModel,
    /// `CD.S == 1` with stalls not supported.
    #[error("CD.S == 1 without stall support")]
    Stall,
    /// `CD.ENDI == 1` with little-endian tables only.
    #[error("CD.ENDI == 1 (big-endian tables are not supported)")]
    BigEndian,
    /// `CD.AA64 == 0` with AArch64 tables only.
    #[error("CD.AA64 == 0 (VMSAv8-32 tables are not supported)")]
    Aarch32,
    /// `CD.HA`/`CD.HD` with `IDR0.HTTU == 0b00`.
    #[error("CD.HA/HD set without hardware table updates")]
    HardwareUpdate,
    /// `CD.ASID[15:8] != 0` with `IDR0.ASID16 == 0`.
    #[error("CD.ASID {0:#x} is wider than 8 bits")]
    Asid(u16),
    /// `CD.TxSZ` outside 16..=39 for an enabled region.
    #[error("CD.T{region}SZ = {tsz} is outside 16..=39")]
    TxSz {
        /// 0 or 1.
        region: u8,
        /// The value.
        tsz: u8,
    },
    /// `CD.TGx` selects a reserved or unsupported granule for an enabled region.
    #[error("CD.TG{region} = {tg:#04b} selects no supported granule")]
    Granule {
        /// 0 or 1.
        region: u8,
        /// The encoding.
        tg: u8,
    },
    /// `CD.TTBx` outside the effective IPS for an enabled region.
    #[error("CD.TTB{region} = {ttb:#x} is outside the effective IPS")]
    TtbOutOfRange {
        /// 0 or 1.
        region: u8,
        /// The address.
        ttb: u64,
    },
}

/// Why [`VSmmu::translate`](crate::VSmmu::translate) gave no output address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TranslateFault {
    /// `SMMU_CR0.SMMUEN == 0` and `SMMU_GBPA.ABORT == 1`: every transaction aborts.
    #[error("SMMU disabled with GBPA.ABORT = 1")]
    GlobalAbort,
    /// `STE.Config == 0b000`: the stream aborts, no event (IHI 0070 §5.2).
    #[error("STE.Config = abort")]
    StreamAbort,
    /// `C_BAD_STREAMID`: the StreamID is beyond the Stream table or a level-2 span.
    #[error("C_BAD_STREAMID")]
    BadStreamId,
    /// `F_STE_FETCH`: reading the STE (or L1STD) aborted.
    #[error("F_STE_FETCH at {addr:#x}")]
    SteFetch {
        /// The address read.
        addr: u64,
    },
    /// `C_BAD_STE`.
    #[error("C_BAD_STE: {0}")]
    BadSte(SteError),
    /// `F_CD_FETCH`: reading the CD aborted.
    #[error("F_CD_FETCH at {addr:#x}")]
    CdFetch {
        /// The address read.
        addr: u64,
    },
    /// `C_BAD_CD`.
    #[error("C_BAD_CD: {0}")]
    BadCd(CdError),
    /// `F_TRANSLATION` at a walk level (also: address outside both VA ranges, or a
    /// region disabled by `EPDx`, reported at level 0).
    #[error("F_TRANSLATION at level {level}")]
    Translation {
        /// Level 0..=3.
        level: u8,
    },
    /// `F_ADDR_SIZE`: an output or table address above the effective IPS.
    #[error("F_ADDR_SIZE at level {level}")]
    AddressSize {
        /// Level 0..=3.
        level: u8,
    },
    /// `F_ACCESS`: the leaf has `AF == 0` (no hardware Access flag updates).
    #[error("F_ACCESS at level {level}")]
    AccessFlag {
        /// Level 0..=3.
        level: u8,
    },
    /// `F_PERMISSION`: the leaf (with the table `APTable` bits) forbids the access.
    #[error("F_PERMISSION at level {level}")]
    Permission {
        /// Level 0..=3.
        level: u8,
    },
    /// `F_WALK_EABT`: reading a descriptor aborted.
    #[error("F_WALK_EABT at level {level}, descriptor address {addr:#x}")]
    WalkAbort {
        /// Level 0..=3.
        level: u8,
        /// The descriptor address.
        addr: u64,
    },
}

impl TranslateFault {
    /// The event type a real SMMU would record for it (IHI 0070 §7.3), `None` for aborts
    /// that record nothing.
    pub fn event_id(&self) -> Option<u8> {
        Some(match self {
            TranslateFault::GlobalAbort | TranslateFault::StreamAbort => return None,
            TranslateFault::BadStreamId => id::C_BAD_STREAMID,
            TranslateFault::SteFetch { .. } => id::F_STE_FETCH,
            TranslateFault::BadSte(_) => id::C_BAD_STE,
            TranslateFault::CdFetch { .. } => id::F_CD_FETCH,
            TranslateFault::BadCd(_) => id::C_BAD_CD,
            TranslateFault::Translation { .. } => id::F_TRANSLATION,
            TranslateFault::AddressSize { .. } => id::F_ADDR_SIZE,
            TranslateFault::AccessFlag { .. } => id::F_ACCESS,
            TranslateFault::Permission { .. } => id::F_PERMISSION,
            TranslateFault::WalkAbort { .. } => id::F_WALK_EABT,
        })
    }

    /// Whether it is a configuration error or fetch abort (the STE or CD level), as
    /// opposed to a page-table walk fault.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            TranslateFault::BadStreamId
                | TranslateFault::SteFetch { .. }
                | TranslateFault::BadSte(_)
                | TranslateFault::CdFetch { .. }
                | TranslateFault::BadCd(_)
        )
    }
}
