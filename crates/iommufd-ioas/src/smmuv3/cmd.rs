// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! SMMUv3 commands that a vIOMMU forwards through `IOMMU_HWPT_INVALIDATE` (Arm IHI 0070 4.1
//! "Commands" and 4.4 "TLB invalidation"; Linux `struct iommu_viommu_arm_smmuv3_invalidate`).
//!
//! The guest's StreamIDs in `CFGI_CD`, `CFGI_CD_ALL` and `ATC_INV` are virtual: the kernel
//! maps them through the vIOMMU's vDEVICEs. It also substitutes its own VMID in the TLBIs and
//! turns `TLBI_NSNH_ALL` into `TLBI_NH_ALL` for that VMID. Everything else (configuration of
//! STEs, stage-2 TLBIs, `CMD_SYNC`, prefetches) is the VMM's business and the kernel answers
//! it with `EIO`; [`SmmuV3Command::from_words`] refuses those before the call.

use super::{bits, field};

/// Command opcodes (IHI 0070 4.1.1), from `hw-defs`.
pub use hw_defs::smmuv3::opcode;

/// A command that cannot be forwarded to a vIOMMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The opcode is one the kernel does not forward (it would answer `EIO`).
    #[error("SMMUv3 command {opcode:#04x} is not forwarded by IOMMU_HWPT_INVALIDATE")]
    NotForwarded {
        /// The opcode.
        opcode: u8,
    },
}

/// An invalidation command a vIOMMU forwards, with the fields the spec gives it.
///
/// ```
/// use iommufd_ioas::smmuv3::SmmuV3Command;
/// let cmd = SmmuV3Command::TlbiNhVa { asid: 1, addr: 0x1000_0000, leaf: true };
/// assert_eq!(cmd.to_words(), [0x12 | 1 << 48, 0x1000_0001]);
/// assert_eq!(SmmuV3Command::from_words(cmd.to_words()), Ok(cmd));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmmuV3Command {
    /// `CMD_TLBI_NH_ALL` (IHI 0070 4.4.2): every stage-1 entry of the VM.
    TlbiNhAll,
    /// `CMD_TLBI_NH_ASID` (4.4.2): the entries of one ASID.
    TlbiNhAsid {
        /// The ASID.
        asid: u16,
    },
    /// `CMD_TLBI_NH_VA` (4.4.2): one address in one ASID (single-page form: Num = Scale = 0,
    /// TG = TTL = 0).
    TlbiNhVa {
        /// The ASID.
        asid: u16,
        /// The address (bits below 12 are ignored).
        addr: u64,
        /// Leaf only.
        leaf: bool,
    },
    /// `CMD_TLBI_NH_VAA` (4.4.2): one address in every ASID.
    TlbiNhVaa {
        /// The address (bits below 12 are ignored).
        addr: u64,
        /// Leaf only.
        leaf: bool,
    },
    /// `CMD_TLBI_NSNH_ALL` (4.4.4); the kernel turns it into `TLBI_NH_ALL` of the VM.
    TlbiNsnhAll,
    /// `CMD_CFGI_CD` (4.3.4): one CD of a (virtual) StreamID.
    CfgiCd {
        /// The virtual StreamID.
        sid: u32,
        /// The SubstreamID (0 without PASIDs).
        ssid: u32,
        /// Leaf only.
        leaf: bool,
    },
    /// `CMD_CFGI_CD_ALL` (4.3.5): every CD of a (virtual) StreamID.
    CfgiCdAll {
        /// The virtual StreamID.
        sid: u32,
    },
    /// `CMD_ATC_INV` (4.5.1): a device's ATC.
    AtcInv {
        /// The virtual StreamID.
        sid: u32,
        /// The SubstreamID, when `ssv`.
        ssid: u32,
        /// Whether `ssid` is valid.
        ssv: bool,
        /// Global.
        global: bool,
        /// log2 of the span in 4 KiB pages.
        size: u8,
        /// The address (bits below 12 are ignored).
        addr: u64,
    },
    /// Any other forwardable command, as raw words (for example the range forms of the
    /// TLBIs, with Num/Scale/TG/TTL).
    Raw([u64; 2]),
}

const FORWARDED: [u8; 8] = hw_defs::smmuv3::FORWARDED_OPCODES;

/// Whether the kernel's vIOMMU forwards `opcode` (Linux 7.2 `arm_vsmmu_convert_user_cmd()`).
pub fn is_forwarded(opcode: u8) -> bool {
    FORWARDED.contains(&opcode)
}

impl SmmuV3Command {
    /// The opcode.
    pub fn opcode(&self) -> u8 {
        match self {
            SmmuV3Command::TlbiNhAll => opcode::TLBI_NH_ALL,
            SmmuV3Command::TlbiNhAsid { .. } => opcode::TLBI_NH_ASID,
            SmmuV3Command::TlbiNhVa { .. } => opcode::TLBI_NH_VA,
            SmmuV3Command::TlbiNhVaa { .. } => opcode::TLBI_NH_VAA,
            SmmuV3Command::TlbiNsnhAll => opcode::TLBI_NSNH_ALL,
            SmmuV3Command::CfgiCd { .. } => opcode::CFGI_CD,
            SmmuV3Command::CfgiCdAll { .. } => opcode::CFGI_CD_ALL,
            SmmuV3Command::AtcInv { .. } => opcode::ATC_INV,
            SmmuV3Command::Raw(w) => w[0] as u8,
        }
    }

    /// The two command words (IHI 0070 4.1: little-endian in memory; the values here).
    pub fn to_words(&self) -> [u64; 2] {
        let op = u64::from(self.opcode());
        match *self {
            SmmuV3Command::TlbiNhAll | SmmuV3Command::TlbiNsnhAll => [op, 0],
            SmmuV3Command::TlbiNhAsid { asid } => [op | field(u64::from(asid), 63, 48), 0],
            SmmuV3Command::TlbiNhVa { asid, addr, leaf } => [
                op | field(u64::from(asid), 63, 48),
                (addr & field(!0, 63, 12)) | u64::from(leaf),
            ],
            SmmuV3Command::TlbiNhVaa { addr, leaf } => {
                [op, (addr & field(!0, 63, 12)) | u64::from(leaf)]
            }
            SmmuV3Command::CfgiCd { sid, ssid, leaf } => [
                op | field(u64::from(ssid), 31, 12) | field(u64::from(sid), 63, 32),
                u64::from(leaf),
            ],
            SmmuV3Command::CfgiCdAll { sid } => [op | field(u64::from(sid), 63, 32), 0],
            SmmuV3Command::AtcInv {
                sid,
                ssid,
                ssv,
                global,
                size,
                addr,
            } => [
                op | (u64::from(global) << 9)
                    | (u64::from(ssv) << 11)
                    | field(u64::from(ssid), 31, 12)
                    | field(u64::from(sid), 63, 32),
                field(u64::from(size), 5, 0) | (addr & field(!0, 63, 12)),
            ],
            SmmuV3Command::Raw(w) => w,
        }
    }

    /// The 16 little-endian bytes of `struct iommu_viommu_arm_smmuv3_invalidate`.
    pub fn to_le_bytes(&self) -> [u8; 16] {
        let w = self.to_words();
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&w[0].to_le_bytes());
        b[8..].copy_from_slice(&w[1].to_le_bytes());
        b
    }

    /// Decodes a guest command the kernel forwards. The single-address TLBIs (Num, Scale, TG
    /// and TTL all 0) and the other forwarded commands become their typed variants; range
    /// TLBIs and commands with other fields set stay [`SmmuV3Command::Raw`] so nothing the
    /// guest wrote is lost. Opcodes the kernel does not forward are refused.
    pub fn from_words(w: [u64; 2]) -> Result<Self, CommandError> {
        let op = w[0] as u8;
        if !is_forwarded(op) {
            return Err(CommandError::NotForwarded { opcode: op });
        }
        let typed = match op {
            opcode::TLBI_NH_ALL => SmmuV3Command::TlbiNhAll,
            opcode::TLBI_NSNH_ALL => SmmuV3Command::TlbiNsnhAll,
            opcode::TLBI_NH_ASID => SmmuV3Command::TlbiNhAsid {
                asid: bits(w[0], 63, 48) as u16,
            },
            opcode::TLBI_NH_VA => SmmuV3Command::TlbiNhVa {
                asid: bits(w[0], 63, 48) as u16,
                addr: w[1] & field(!0, 63, 12),
                leaf: w[1] & 1 == 1,
            },
            opcode::TLBI_NH_VAA => SmmuV3Command::TlbiNhVaa {
                addr: w[1] & field(!0, 63, 12),
                leaf: w[1] & 1 == 1,
            },
            opcode::CFGI_CD => SmmuV3Command::CfgiCd {
                sid: bits(w[0], 63, 32) as u32,
                ssid: bits(w[0], 31, 12) as u32,
                leaf: w[1] & 1 == 1,
            },
            opcode::CFGI_CD_ALL => SmmuV3Command::CfgiCdAll {
                sid: bits(w[0], 63, 32) as u32,
            },
            _ => SmmuV3Command::AtcInv {
                sid: bits(w[0], 63, 32) as u32,
                ssid: bits(w[0], 31, 12) as u32,
                ssv: bits(w[0], 11, 11) == 1,
                global: bits(w[0], 9, 9) == 1,
                size: bits(w[1], 5, 0) as u8,
                addr: w[1] & field(!0, 63, 12),
            },
        };
        // Keep the raw form whenever the typed one would not say exactly the same thing.
        Ok(if typed.to_words() == w {
            typed
        } else {
            SmmuV3Command::Raw(w)
        })
    }

    /// The virtual StreamID the command names, for the commands that name one.
    pub fn stream_id(&self) -> Option<u32> {
        match *self {
            SmmuV3Command::CfgiCd { sid, .. }
            | SmmuV3Command::CfgiCdAll { sid }
            | SmmuV3Command::AtcInv { sid, .. } => Some(sid),
            SmmuV3Command::Raw(w)
                if matches!(
                    w[0] as u8,
                    opcode::CFGI_CD | opcode::CFGI_CD_ALL | opcode::ATC_INV
                ) =>
            {
                Some(bits(w[0], 63, 32) as u32)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The words the nesting probe sent, which the kernel accepted.
    #[test]
    fn encodings_match_what_the_kernel_took() {
        assert_eq!(
            SmmuV3Command::CfgiCd {
                sid: 0x20,
                ssid: 0,
                leaf: true
            }
            .to_words(),
            [0x05 | 0x20 << 32, 1]
        );
        assert_eq!(
            SmmuV3Command::TlbiNhAsid { asid: 1 }.to_words(),
            [0x11 | 1 << 48, 0]
        );
        assert_eq!(
            SmmuV3Command::TlbiNhVa {
                asid: 1,
                addr: 0x1000_0000,
                leaf: true
            }
            .to_words(),
            [0x12 | 1 << 48, 0x1000_0001]
        );
        assert_eq!(SmmuV3Command::TlbiNhAll.to_words(), [0x10, 0]);
        assert_eq!(
            SmmuV3Command::TlbiNhVaa {
                addr: 0x1000_0fff,
                leaf: true
            }
            .to_words(),
            [0x13, 0x1000_0001]
        );
        assert_eq!(SmmuV3Command::TlbiNsnhAll.to_words(), [0x30, 0]);
        assert_eq!(
            SmmuV3Command::CfgiCdAll { sid: 0x20 }.to_words(),
            [0x06 | 0x20 << 32, 0]
        );
        let b = SmmuV3Command::CfgiCd {
            sid: 0x20,
            ssid: 0,
            leaf: true,
        }
        .to_le_bytes();
        assert_eq!(b[0], 0x05);
        assert_eq!(b[4], 0x20);
        assert_eq!(b[8], 1);
    }

    /// What the kernel refuses with EIO, refused here with the opcode.
    #[test]
    fn not_forwarded_commands_are_refused() {
        for op in [
            opcode::CFGI_STE,
            opcode::CFGI_STE_RANGE,
            opcode::PREFETCH_CONFIG,
            opcode::TLBI_S2_IPA,
            opcode::TLBI_S12_VMALL,
            opcode::SYNC,
            opcode::TLBI_EL2_ALL,
            0xff,
        ] {
            assert_eq!(
                SmmuV3Command::from_words([u64::from(op), 0]),
                Err(CommandError::NotForwarded { opcode: op })
            );
        }
    }

    #[test]
    fn range_tlbis_stay_raw_and_name_their_stream() {
        // TLBI_NH_VA with Num = 3, Scale = 1, TG = 4K, TTL = 3.
        let w = [
            0x12 | 3 << 12 | 1 << 20 | 5 << 48,
            0x1000_0000 | 1 << 10 | 3 << 8,
        ];
        assert_eq!(SmmuV3Command::from_words(w), Ok(SmmuV3Command::Raw(w)));
        let raw_cfgi = [0x05 | 7 << 32 | 1 << 11, 0];
        let c = SmmuV3Command::from_words(raw_cfgi).unwrap();
        assert_eq!(c, SmmuV3Command::Raw(raw_cfgi));
        assert_eq!(c.stream_id(), Some(7));
        assert_eq!(SmmuV3Command::TlbiNhAll.stream_id(), None);
    }

    proptest! {
        /// Decoding never loses a bit: whatever is accepted encodes back to the same words.
        #[test]
        fn decode_encode_is_identity(w0: u64, w1: u64, op in prop::sample::select(FORWARDED.to_vec())) {
            let w = [(w0 & !0xff) | u64::from(op), w1];
            let c = SmmuV3Command::from_words(w).unwrap();
            prop_assert_eq!(c.to_words(), w);
            prop_assert_eq!(c.opcode(), op);
        }
    }
}
