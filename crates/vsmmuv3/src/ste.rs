// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The STE decoder (IHI 0070 §5.2, and its `SteIllegal()` pseudocode) for the features
//! this vSMMU advertises (stage 1 only, no substreams, no stall, no ATS, no `HYP`).
//!
//! | field | rule applied |
//! |---|---|
//! | V | 0: ILLEGAL, `C_BAD_STE` |
//! | Config | 0b000 and the reserved 0b001..0b011: abort, no event; 0b100 bypass; 0b101 stage 1; 0b11x ILLEGAL (`IDR0.S2P == 0`) |
//! | S1ContextPtr | beyond the OAS: ILLEGAL |
//! | S1STALLD | 1 with `STALL_MODEL != 0b00`: ILLEGAL |
//! | S1Fmt, S1CDMax | IGNORED (`SSIDSIZE == 0`): cleared in the vSTE |
//! | S1DSS | meaningful only with substreams; passed through (the kernel allows it) |
//! | S1CIR, S1COR, S1CSH | table walk attributes; passed through |
//! | EATS | IGNORED without `IDR0.ATS`: cleared in the vSTE, so the host never enables ATS |
//! | STRW | RES0 without `IDR0.HYP`: ignored |
//! | S2* | IGNORED: stage 2 is not enabled by any legal Config |
//! | everything else in words 1-7 (attribute overrides, MPAM, ...) | the host's business; not forwarded |

use crate::backend::VSte;
use crate::fault::SteError;
use crate::regs::{field, mask};

/// STE word 0: V.
pub const STE0_V: u64 = 1;
/// STE word 0: Config \[3:1\].
pub const STE0_CONFIG: u64 = mask(3, 1);
/// STE word 0: S1Fmt \[5:4\].
pub const STE0_S1FMT: u64 = mask(5, 4);
/// STE word 0: S1ContextPtr \[51:6\] (the field is \[55:6\]; bits above 51 are beyond any
/// OAS and make the STE ILLEGAL).
pub const STE0_S1CONTEXTPTR: u64 = mask(51, 6);
/// STE word 0: S1CDMax \[63:59\].
pub const STE0_S1CDMAX: u64 = mask(63, 59);
/// STE word 1: S1DSS \[1:0\].
pub const STE1_S1DSS: u64 = mask(1, 0);
/// STE word 1: S1CIR \[3:2\], S1COR \[5:4\], S1CSH \[7:6\].
pub const STE1_S1_WALK_ATTRS: u64 = mask(7, 2);
/// STE word 1: S1STALLD \[27\].
pub const STE1_S1STALLD: u64 = 1 << 27;
/// STE word 1: EATS \[29:28\].
pub const STE1_EATS: u64 = mask(29, 28);

/// `STE.Config` values.
pub mod config {
    /// Abort.
    pub const ABORT: u8 = 0b000;
    /// Bypass both stages.
    pub const BYPASS: u8 = 0b100;
    /// Stage 1 translate, stage 2 bypass.
    pub const S1_TRANS: u8 = 0b101;
}

/// A decoded, legal STE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ste {
    /// Transactions abort, no event.
    Abort,
    /// Transactions bypass, untranslated.
    Bypass,
    /// Stage 1 translation through the CD at `context_ptr`.
    Stage1 {
        /// `S1ContextPtr`: the guest physical address of the one CD.
        context_ptr: u64,
        /// The vSTE for the host (Linux's allowed fields only; see [`VSte`]).
        vste: VSte,
    },
}

/// Decodes an STE's 8 words (IHI 0070 §5.2). `oas_bits` is the advertised OAS.
pub fn decode_ste(words: &[u64; 8], oas_bits: u8) -> Result<Ste, SteError> {
    let w0 = words[0];
    let w1 = words[1];
    if w0 & STE0_V == 0 {
        return Err(SteError::Invalid);
    }
    let cfg = field(w0, 3, 1) as u8;
    match cfg {
        0b000..=0b011 => Ok(Ste::Abort),
        config::BYPASS => Ok(Ste::Bypass),
        config::S1_TRANS => {
            if w1 & STE1_S1STALLD != 0 {
                return Err(SteError::StallDisableWithoutStall);
            }
            let ptr_field = w0 & mask(55, 6);
            if ptr_field >> oas_bits != 0 {
                return Err(SteError::ContextPtrOutOfRange(ptr_field));
            }
            let vste = VSte([
                STE0_V | (u64::from(config::S1_TRANS) << 1) | ptr_field,
                w1 & (STE1_S1DSS | STE1_S1_WALK_ATTRS),
            ]);
            Ok(Ste::Stage1 {
                context_ptr: ptr_field,
                vste,
            })
        }
        _ => Err(SteError::Stage2NotSupported(cfg)),
    }
}

/// Builds STE words for tests, VMMs and the fuzz harness: a valid stage-1 STE pointing at
/// `cd`.
pub fn stage1_ste_words(cd: u64) -> [u64; 8] {
    let mut w = [0u64; 8];
    w[0] = STE0_V | (u64::from(config::S1_TRANS) << 1) | (cd & STE0_S1CONTEXTPTR);
    w
}

/// STE words with `V = 1` and the given `Config`.
pub fn config_ste_words(config: u8) -> [u64; 8] {
    let mut w = [0u64; 8];
    w[0] = STE0_V | (u64::from(config & 7) << 1);
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    const OAS: u8 = 44;

    #[test]
    fn configs() {
        assert_eq!(decode_ste(&[0; 8], OAS), Err(SteError::Invalid));
        for c in 0..=3 {
            assert_eq!(decode_ste(&config_ste_words(c), OAS), Ok(Ste::Abort), "{c}");
        }
        assert_eq!(decode_ste(&config_ste_words(4), OAS), Ok(Ste::Bypass));
        assert_eq!(
            decode_ste(&config_ste_words(6), OAS),
            Err(SteError::Stage2NotSupported(6))
        );
        assert_eq!(
            decode_ste(&config_ste_words(7), OAS),
            Err(SteError::Stage2NotSupported(7))
        );
        let s = decode_ste(&stage1_ste_words(0x1234_5640), OAS).unwrap();
        assert_eq!(
            s,
            Ste::Stage1 {
                context_ptr: 0x1234_5640,
                vste: VSte([0x1234_5640 | 0b1011, 0]),
            }
        );
    }

    /// IHI 0070 §5.2 SteIllegal(): S1STALLD with STALL_MODEL != 0b00 and an
    /// S1ContextPtr beyond the OAS are ILLEGAL.
    #[test]
    fn stage1_checks() {
        let mut w = stage1_ste_words(0x1000);
        w[1] = STE1_S1STALLD;
        assert_eq!(decode_ste(&w, OAS), Err(SteError::StallDisableWithoutStall));
        let w = stage1_ste_words(1 << 44);
        assert_eq!(
            decode_ste(&w, OAS),
            Err(SteError::ContextPtrOutOfRange(1 << 44))
        );
        let mut w = stage1_ste_words(0x1000);
        w[0] |= 1 << 53;
        assert!(matches!(
            decode_ste(&w, 48),
            Err(SteError::ContextPtrOutOfRange(_))
        ));
        assert!(decode_ste(&stage1_ste_words((1 << 44) - 64), OAS).is_ok());
    }

    /// The vSTE keeps only what Linux's STRTAB_STE_{0,1}_NESTING_ALLOWED lets through,
    /// and drops what is IGNORED here (S1Fmt, S1CDMax, EATS).
    #[test]
    fn vste_fields() {
        let mut w = stage1_ste_words(0x8000);
        w[0] |= STE0_S1FMT | STE0_S1CDMAX;
        w[1] = !STE1_S1STALLD;
        w[2] = u64::MAX;
        let Ok(Ste::Stage1 { vste, .. }) = decode_ste(&w, OAS) else {
            panic!("not stage 1");
        };
        assert_eq!(vste.0[0], 0x8000 | 0b1011);
        assert_eq!(vste.0[1], 0xff);
        assert!(vste.is_allowed());
    }
}
