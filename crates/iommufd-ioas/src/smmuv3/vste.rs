// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The guest Stream Table Entry that a nested HWPT is allocated from (Arm IHI 0070 5.2
//! "Stream Table Entry"; Linux `struct iommu_hwpt_arm_smmuv3`).
//!
//! The kernel builds the real STE itself: stage 2 and everything security-relevant come from
//! the nest-parent HWPT, and only the stage-1 fields below come from the guest. Linux 7.2
//! (`arm_smmu_validate_vste()`) refuses with `EIO` any other bit, a `Config` other than
//! abort, bypass or stage-1-only, and an `EATS` other than 0 or 1; an STE whose `V` is 0 is
//! taken as an all-zero (aborting) STE. [`VSte::from_words`] applies the same rules before the
//! ioctl, so a bad STE is an error that says which field, not a bare `EIO`.

use super::{bits, field};

/// `STE.Config` values (IHI 0070 5.2, STE word 0 bits [3:1]).
const CFG_ABORT: u64 = 0b000;
const CFG_BYPASS: u64 = 0b100;
const CFG_S1: u64 = 0b101;

/// Word 0 fields a guest may set: V [0], Config [3:1], S1Fmt [5:4], S1ContextPtr [51:6],
/// S1CDMax [63:59].
pub const WORD0_ALLOWED: u64 = hw_defs::smmuv3::STE0_NESTING_ALLOWED;
/// Word 1 fields a guest may set: S1DSS [1:0], S1CIR [3:2], S1COR [5:4], S1CSH [7:6],
/// S1STALLD [27], EATS [29:28].
pub const WORD1_ALLOWED: u64 = hw_defs::smmuv3::STE1_NESTING_ALLOWED;

/// A guest STE that breaks the kernel's rules for a nested HWPT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VSteError {
    /// Bits outside the fields a guest may control.
    #[error("STE word {word} sets bits {bits:#x} that a guest may not control")]
    ForbiddenBits {
        /// 0 or 1.
        word: u8,
        /// The offending bits.
        bits: u64,
    },
    /// A `Config` the kernel does not nest (stage 2, nested, or reserved encodings).
    #[error("STE.Config {0:#05b} is not abort, bypass or stage 1")]
    Config(u8),
    /// An `EATS` other than 0 (abort) or 1 (full ATS).
    #[error("STE.EATS {0} is neither 0 nor 1")]
    Eats(u8),
    /// A context-descriptor pointer that does not fit `S1ContextPtr` (52-bit, 64-byte
    /// aligned).
    #[error("context descriptor address {0:#x} is not a 64-byte aligned 52-bit address")]
    CdPointer(u64),
}

/// What a guest STE asks for, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamConfig {
    /// `V` = 0: the stream is invalid; the kernel installs an aborting STE.
    Invalid,
    /// `Config` = abort: transactions are terminated.
    Abort,
    /// `Config` = bypass: no guest translation (the host stage 2 still applies).
    Bypass,
    /// `Config` = stage 1 only: the guest's context descriptors at `cd_ptr` (an IPA).
    Stage1 {
        /// `S1ContextPtr`: the IPA of the CD (or CD table).
        cd_ptr: u64,
        /// `S1Fmt`.
        s1fmt: u8,
        /// `S1CDMax`.
        s1cdmax: u8,
        /// `S1DSS`.
        s1dss: u8,
        /// `S1CIR`, `S1COR`, `S1CSH`: the attributes of CD fetches.
        cache: (u8, u8, u8),
        /// `S1STALLD`.
        s1stalld: bool,
        /// `EATS`.
        eats: u8,
    },
}

/// A guest STE in the form `IOMMU_HWPT_ALLOC` takes for a nested HWPT on an SMMUv3 vIOMMU,
/// checked against the kernel's rules.
///
/// ```
/// use iommufd_ioas::smmuv3::{StreamConfig, VSte};
/// let ste = VSte::stage1(0x4000_0000).unwrap();
/// assert!(matches!(ste.config(), StreamConfig::Stage1 { cd_ptr: 0x4000_0000, .. }));
/// assert!(VSte::from_words([ste.words()[0] | 1 << 58, 0]).is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VSte {
    words: [u64; 2],
}

impl VSte {
    /// An invalid STE (`V` = 0): the kernel aborts the stream's transactions.
    pub const fn invalid() -> Self {
        VSte { words: [0, 0] }
    }

    /// A valid STE with `Config` = abort.
    pub const fn abort() -> Self {
        VSte {
            words: [1 | field(CFG_ABORT, 3, 1), 0],
        }
    }

    /// A valid STE with `Config` = bypass.
    pub const fn bypass() -> Self {
        VSte {
            words: [1 | field(CFG_BYPASS, 3, 1), 0],
        }
    }

    /// A stage-1 STE pointing at a single (linear, `S1CDMax` 0) context descriptor at IPA
    /// `cd_ptr`, with CD fetches inner/outer write-back read-allocate and inner shareable, as
    /// Linux's driver makes them.
    pub fn stage1(cd_ptr: u64) -> Result<Self, VSteError> {
        if cd_ptr & !field(!0, 51, 6) != 0 {
            return Err(VSteError::CdPointer(cd_ptr));
        }
        Ok(VSte {
            words: [
                1 | field(CFG_S1, 3, 1) | cd_ptr,
                field(1, 3, 2) | field(1, 5, 4) | field(3, 7, 6),
            ],
        })
    }

    /// Checks raw STE words (the first two 64-bit words of a guest STE, little-endian values
    /// as the guest wrote them) against the kernel's rules. An STE with `V` = 0 is accepted
    /// whatever its other bits and becomes [`VSte::invalid`], as the kernel does.
    pub fn from_words(words: [u64; 2]) -> Result<Self, VSteError> {
        if words[0] & 1 == 0 {
            return Ok(VSte::invalid());
        }
        let extra0 = words[0] & !WORD0_ALLOWED;
        if extra0 != 0 {
            return Err(VSteError::ForbiddenBits {
                word: 0,
                bits: extra0,
            });
        }
        let extra1 = words[1] & !WORD1_ALLOWED;
        if extra1 != 0 {
            return Err(VSteError::ForbiddenBits {
                word: 1,
                bits: extra1,
            });
        }
        let cfg = bits(words[0], 3, 1);
        if cfg != CFG_ABORT && cfg != CFG_BYPASS && cfg != CFG_S1 {
            return Err(VSteError::Config(cfg as u8));
        }
        let eats = bits(words[1], 29, 28);
        if eats > 1 {
            return Err(VSteError::Eats(eats as u8));
        }
        Ok(VSte { words })
    }

    /// The two words, as `struct iommu_hwpt_arm_smmuv3.ste` carries them (the caller
    /// converts to little-endian bytes).
    pub const fn words(&self) -> [u64; 2] {
        self.words
    }

    /// The STE as the 16 little-endian bytes of `struct iommu_hwpt_arm_smmuv3`.
    pub fn to_le_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.words[0].to_le_bytes());
        b[8..].copy_from_slice(&self.words[1].to_le_bytes());
        b
    }

    /// What the STE asks for.
    pub fn config(&self) -> StreamConfig {
        let [w0, w1] = self.words;
        if w0 & 1 == 0 {
            return StreamConfig::Invalid;
        }
        match bits(w0, 3, 1) {
            CFG_BYPASS => StreamConfig::Bypass,
            CFG_S1 => StreamConfig::Stage1 {
                cd_ptr: w0 & field(!0, 51, 6),
                s1fmt: bits(w0, 5, 4) as u8,
                s1cdmax: bits(w0, 63, 59) as u8,
                s1dss: bits(w1, 1, 0) as u8,
                cache: (
                    bits(w1, 3, 2) as u8,
                    bits(w1, 5, 4) as u8,
                    bits(w1, 7, 6) as u8,
                ),
                s1stalld: bits(w1, 27, 27) == 1,
                eats: bits(w1, 29, 28) as u8,
            },
            // `from_words` admits nothing else.
            _ => StreamConfig::Abort,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The masks, against Linux 7.2's `STRTAB_STE_0_NESTING_ALLOWED` and
    /// `STRTAB_STE_1_NESTING_ALLOWED` written out as bit ranges.
    #[test]
    fn allowed_masks_match_the_kernel() {
        assert_eq!(WORD0_ALLOWED, 0xf80f_ffff_ffff_ffff);
        assert_eq!(WORD1_ALLOWED, 0x3800_00ff);
    }

    #[test]
    fn constructors_encode_the_spec_fields() {
        assert_eq!(VSte::abort().words(), [1, 0]);
        assert_eq!(VSte::bypass().words(), [0b1001, 0]);
        let s1 = VSte::stage1(0x4000_0000).unwrap();
        // As the probe measured: ste0 = 1 | 5 << 1 | CD, ste1 = S1CIR/S1COR WBRA, S1CSH IS.
        assert_eq!(s1.words(), [0x4000_000b, 0xd4]);
        assert_eq!(VSte::from_words(s1.words()), Ok(s1));
        assert_eq!(
            VSte::stage1(0x4000_0020),
            Err(VSteError::CdPointer(0x4000_0020))
        );
        assert_eq!(VSte::stage1(1 << 52), Err(VSteError::CdPointer(1 << 52)));
        assert_eq!(s1.to_le_bytes()[0], 0x0b);
        assert_eq!(s1.to_le_bytes()[8], 0xd4);
    }

    #[test]
    fn the_kernels_refusals() {
        // The probe's "forbidden bit" STE: bit 58 of word 0 and bit 40 of word 1.
        let s1 = VSte::stage1(0x4000_0000).unwrap().words();
        assert_eq!(
            VSte::from_words([s1[0] | 1 << 58, s1[1]]),
            Err(VSteError::ForbiddenBits {
                word: 0,
                bits: 1 << 58
            })
        );
        assert_eq!(
            VSte::from_words([s1[0], s1[1] | 1 << 40]),
            Err(VSteError::ForbiddenBits {
                word: 1,
                bits: 1 << 40
            })
        );
        for cfg in [1u64, 2, 3, 6, 7] {
            assert_eq!(
                VSte::from_words([1 | cfg << 1, 0]),
                Err(VSteError::Config(cfg as u8))
            );
        }
        assert_eq!(VSte::from_words([0b1011, 2 << 28]), Err(VSteError::Eats(2)));
        assert!(VSte::from_words([0b1011, 1 << 28]).is_ok());
        // V = 0: anything goes, and it is the invalid STE.
        assert_eq!(
            VSte::from_words([u64::MAX - 1, u64::MAX]),
            Ok(VSte::invalid())
        );
    }

    proptest! {
        /// Whatever the words, `from_words` either refuses or yields an STE the kernel's
        /// rules accept, and decoding it never panics.
        #[test]
        fn accepted_stes_follow_the_kernel_rules(w0: u64, w1: u64) {
            if let Ok(ste) = VSte::from_words([w0, w1]) {
                let [a, b] = ste.words();
                if a & 1 == 1 {
                    prop_assert_eq!(a & !WORD0_ALLOWED, 0);
                    prop_assert_eq!(b & !WORD1_ALLOWED, 0);
                    prop_assert!(matches!(bits(a, 3, 1), CFG_ABORT | CFG_BYPASS | CFG_S1));
                    prop_assert!(bits(b, 29, 28) <= 1);
                } else {
                    prop_assert_eq!([a, b], [0, 0]);
                }
                let _ = ste.config();
            }
        }
    }
}
