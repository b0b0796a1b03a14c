// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The CD decoder (IHI 0070 §5.4 and its `CdIllegal()` pseudocode), for an EL1 stream
//! world, AArch64 little-endian tables, no stall, no hardware table updates.
//!
//! Checks, in the pseudocode's order (each is `C_BAD_CD`): `V == 0`; `A == 0` with
//! `TERM_MODEL == 1`; `S == 1` (stall not supported); `ENDI == 1` with an enabled region;
//! `AA64 == 0`; `HA`/`HD` (no HTTU); `ASID[15:8] != 0` without `ASID16`; for each region
//! not disabled by `EPDx`: `TxSZ` outside 16..=39 (the SMMUv3.0 CONSTRAINED UNPREDICTABLE
//! choice made here is "ILLEGAL", as SMMUv3.1 requires), `TGx` not an advertised granule,
//! `TTBx` outside the effective IPS (or 48 bits).
//!
//! The effective IPS is `min(IPS, OAS)`, with the reserved encodings 0b110/0b111 behaving
//! as 0b101 (48 bits, SMMUv3.0). `TBIx`, `MAIR`, `ASET` are decoded; `HADx` is RES0
//! (`IDR3.HAD == 0`), so hierarchical permissions always apply.

use crate::fault::CdError;
use crate::regs::{field, mask};

/// One of the two VA ranges of a CD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtRegion {
    /// `TTBx`: base of the starting-level table.
    pub ttb: u64,
    /// `TxSZ`: the range covers `2^(64 - TxSZ)` bytes.
    pub tsz: u8,
    /// log2 of the granule: 12, 14 or 16.
    pub granule_log2: u8,
}

/// A decoded, legal CD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cd {
    /// `ASID` (bits \[15:8\] zero without `ASID16`).
    pub asid: u16,
    /// Effective IPS in bits.
    pub ips_bits: u8,
    /// `TBI0`, `TBI1`.
    pub tbi: [bool; 2],
    /// Region 0 (`TTB0`) and 1 (`TTB1`); `None` when disabled by `EPDx`.
    pub regions: [Option<TtRegion>; 2],
    /// `ASET`: shared ASID set.
    pub aset: bool,
    /// `MAIR`.
    pub mair: u64,
}

/// What the CD checks depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CdContext {
    /// Advertised OAS in bits.
    pub oas_bits: u8,
    /// `IDR0.ASID16`.
    pub asid16: bool,
    /// `IDR0.TERM_MODEL`.
    pub term_model: bool,
    /// Advertised granules: 4K, 16K, 64K.
    pub granules: [bool; 3],
}

impl CdContext {
    fn granule_ok(&self, log2: u8) -> bool {
        match log2 {
            12 => self.granules[0],
            14 => self.granules[1],
            16 => self.granules[2],
            _ => false,
        }
    }
}

/// The granule of `TG0` (0b00 4K, 0b01 64K, 0b10 16K) or `TG1` (0b01 16K, 0b10 4K,
/// 0b11 64K); `None` for the reserved encoding.
pub fn granule_log2(region: u8, tg: u8) -> Option<u8> {
    match (region, tg) {
        (0, 0b00) | (1, 0b10) => Some(12),
        (0, 0b10) | (1, 0b01) => Some(14),
        (0, 0b01) | (1, 0b11) => Some(16),
        _ => None,
    }
}

/// The address size `IPS` selects on an SMMUv3.0.
pub fn ips_bits(ips: u8) -> u8 {
    crate::idr::oas_encoding_bits(u32::from(ips.min(5))).unwrap_or(48)
}

/// Decodes a CD's first four words (IHI 0070 §5.4).
pub fn decode_cd(words: &[u64; 8], ctx: &CdContext) -> Result<Cd, CdError> {
    let w0 = words[0];
    let bit = |n: u32| w0 & (1 << n) != 0;
    if !bit(31) {
        return Err(CdError::Invalid);
    }
    if ctx.term_model && !bit(46) {
        return Err(CdError::TerminateModel);
    }
    if bit(44) {
        return Err(CdError::Stall);
    }
    let epd = [bit(14), bit(30)];
    if bit(15) && !(epd[0] && epd[1]) {
        return Err(CdError::BigEndian);
    }
    if !bit(41) {
        return Err(CdError::Aarch32);
    }
    if bit(42) || bit(43) {
        return Err(CdError::HardwareUpdate);
    }
    let asid_field = field(w0, 63, 48) as u16;
    if !ctx.asid16 && asid_field > 0xff {
        return Err(CdError::Asid(asid_field));
    }
    let ips = ips_bits(field(w0, 34, 32) as u8).min(ctx.oas_bits);
    let tsz = [field(w0, 5, 0) as u8, field(w0, 21, 16) as u8];
    let tg = [field(w0, 7, 6) as u8, field(w0, 23, 22) as u8];
    for (r, &t) in tsz.iter().enumerate() {
        if !epd[r] && !(16..=39).contains(&t) {
            return Err(CdError::TxSz {
                region: r as u8,
                tsz: t,
            });
        }
    }
    let mut regions = [None, None];
    for r in 0..2u8 {
        let i = usize::from(r);
        if epd[i] {
            continue;
        }
        let g = granule_log2(r, tg[i])
            .filter(|&g| ctx.granule_ok(g))
            .ok_or(CdError::Granule {
                region: r,
                tg: tg[i],
            })?;
        let ttb = words[1 + i] & mask(55, 4);
        if ttb >> ips.min(48) != 0 {
            return Err(CdError::TtbOutOfRange { region: r, ttb });
        }
        regions[i] = Some(TtRegion {
            ttb,
            tsz: tsz[i],
            granule_log2: g,
        });
    }
    Ok(Cd {
        asid: asid_field,
        ips_bits: ips,
        tbi: [bit(38), bit(39)],
        regions,
        aset: bit(47),
        mair: words[3],
    })
}

/// Builds CD words: valid, AArch64, region 0 enabled with `ttb`, `t0sz` and the `TG0`
/// encoding `tg0`, walks inner/outer write-back (`IR0`/`OR0` = 1) and inner shareable
/// (`SH0` = 3), region 1 disabled (`EPD1`), `IPS` encoding `ips`, faults recorded and
/// aborted (`R` = 1, `A` = 1), `ASET` = 1, `asid`. What Linux's `arm_smmu_make_s1_cd`
/// produces (without stall), for tests and the fuzz harness. Without `R` a real SMMU
/// records no event for a fault in this context (IHI 0070 5.4, `CD.R`), which the
/// in-guest test of the accelerated backend relies on.
pub fn cd_words(ttb: u64, t0sz: u8, tg0: u8, ips: u8, asid: u16) -> [u64; 8] {
    let mut w = [0u64; 8];
    w[0] = u64::from(t0sz & 0x3f)
        | (u64::from(tg0 & 3) << 6)
        | (1 << 8)
        | (1 << 10)
        | (3 << 12)
        | (1 << 30)
        | (1 << 31)
        | (u64::from(ips & 7) << 32)
        | (1 << 41)
        | (1 << 45)
        | (1 << 46)
        | (1 << 47)
        | (u64::from(asid) << 48);
    w[1] = ttb & mask(55, 4);
    w[3] = 0x0004_0cff_ff04_0400;
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: CdContext = CdContext {
        oas_bits: 44,
        asid16: true,
        term_model: true,
        granules: [true, true, true],
    };

    #[test]
    fn linux_cd_decodes() {
        let cd = decode_cd(&cd_words(0x8_0000, 16, 0, 5, 7), &CTX).unwrap();
        assert_eq!(cd.asid, 7);
        assert_eq!(cd.ips_bits, 44, "IPS 48 bits is capped at the OAS");
        assert_eq!(
            cd.regions[0],
            Some(TtRegion {
                ttb: 0x8_0000,
                tsz: 16,
                granule_log2: 12
            })
        );
        assert_eq!(cd.regions[1], None);
        assert_eq!(cd.mair, 0x0004_0cff_ff04_0400);
    }

    /// IHI 0070 §5.4 CdIllegal(), one rule at a time.
    #[test]
    fn illegal_cds() {
        let base = cd_words(0x8_0000, 25, 0, 2, 7);
        let with = |f: &dyn Fn(&mut [u64; 8])| {
            let mut w = base;
            f(&mut w);
            decode_cd(&w, &CTX)
        };
        assert!(with(&|_| {}).is_ok());
        assert_eq!(with(&|w| w[0] &= !(1 << 31)), Err(CdError::Invalid));
        assert_eq!(with(&|w| w[0] &= !(1 << 46)), Err(CdError::TerminateModel));
        assert!(
            decode_cd(
                &{
                    let mut w = base;
                    w[0] &= !(1 << 46);
                    w
                },
                &CdContext {
                    term_model: false,
                    ..CTX
                }
            )
            .is_ok()
        );
        assert_eq!(with(&|w| w[0] |= 1 << 44), Err(CdError::Stall));
        assert_eq!(with(&|w| w[0] |= 1 << 15), Err(CdError::BigEndian));
        assert_eq!(with(&|w| w[0] &= !(1 << 41)), Err(CdError::Aarch32));
        assert_eq!(with(&|w| w[0] |= 1 << 43), Err(CdError::HardwareUpdate));
        assert_eq!(with(&|w| w[0] |= 1 << 42), Err(CdError::HardwareUpdate));
        assert!(
            decode_cd(
                &cd_words(0x8_0000, 25, 0, 2, 0x100),
                &CdContext {
                    asid16: false,
                    ..CTX
                }
            )
            .is_err()
        );
        assert_eq!(
            decode_cd(&cd_words(0x8_0000, 15, 0, 2, 1), &CTX),
            Err(CdError::TxSz { region: 0, tsz: 15 })
        );
        assert_eq!(
            decode_cd(&cd_words(0x8_0000, 40, 0, 2, 1), &CTX),
            Err(CdError::TxSz { region: 0, tsz: 40 })
        );
        assert_eq!(
            decode_cd(&cd_words(0x8_0000, 25, 3, 2, 1), &CTX),
            Err(CdError::Granule { region: 0, tg: 3 })
        );
        assert_eq!(
            decode_cd(
                &cd_words(0x8_0000, 25, 2, 2, 1),
                &CdContext {
                    granules: [true, false, true],
                    ..CTX
                }
            ),
            Err(CdError::Granule { region: 0, tg: 2 })
        );
        // IPS 40 bits: a TTB at 2^40 is out of range.
        assert_eq!(
            decode_cd(&cd_words(1 << 40, 25, 0, 2, 1), &CTX),
            Err(CdError::TtbOutOfRange {
                region: 0,
                ttb: 1 << 40
            })
        );
        // With region 0 disabled its fields are IGNORED.
        let mut w = cd_words(1 << 50, 0, 3, 2, 1);
        w[0] |= 1 << 14;
        let cd = decode_cd(&w, &CTX).unwrap();
        assert_eq!(cd.regions, [None, None]);
        // Region 1 enabled: TG1 encoding differs (0b10 is 4K).
        let mut w = base;
        w[0] &= !(1 << 30);
        w[0] |= (30 << 16) | (0b10 << 22);
        w[2] = 0x9_0000;
        let cd = decode_cd(&w, &CTX).unwrap();
        assert_eq!(
            cd.regions[1],
            Some(TtRegion {
                ttb: 0x9_0000,
                tsz: 30,
                granule_log2: 12
            })
        );
    }

    #[test]
    fn ips_encodings() {
        assert_eq!(ips_bits(0), 32);
        assert_eq!(ips_bits(5), 48);
        assert_eq!(ips_bits(6), 48, "reserved on SMMUv3.0, behaves as 0b101");
        assert_eq!(ips_bits(7), 48);
    }
}
