// Copyright © 2026 The passthrough-msi authors
//
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Indirect register numbers of an interrupt file (`*iselect` values 0x70-0xFF).
//!
//! AIA 1.0 §2.1-§2.3 reserve the `*iselect` range 0x70-0xFF for the IMSIC, and
//! §3.7 (CSRs for external interrupts via an IMSIC) assigns it:
//!
//! | `*iselect`   | register                                  |
//! |--------------|-------------------------------------------|
//! | 0x70         | `eidelivery`                              |
//! | 0x71         | reserved: reads zero, writes ignored      |
//! | 0x72         | `eithreshold`                             |
//! | 0x73-0x7F    | reserved: reads zero, writes ignored      |
//! | 0x80-0xBF    | `eip0`-`eip63`                            |
//! | 0xC0-0xFF    | `eie0`-`eie63`                            |
//!
//! §3.8.3/§3.8.4: when the current XLEN is 64 the odd-numbered `eipk`/`eiek`
//! do not exist and an access raises an illegal-instruction exception (a
//! virtual-instruction exception when done from VS-mode); see
//! [`IselectError::OddRegisterOnRv64`] and [`IselectError::trap`].

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// `*iselect` value of `eidelivery` (AIA 1.0 §3.7).
pub const ISELECT_EIDELIVERY: u64 = 0x70;
/// `*iselect` value of `eithreshold` (AIA 1.0 §3.7).
pub const ISELECT_EITHRESHOLD: u64 = 0x72;
/// `*iselect` value of `eip0`; `eipk` is `ISELECT_EIP0 + k` (AIA 1.0 §3.7).
pub const ISELECT_EIP0: u64 = 0x80;
/// `*iselect` value of `eip63` (AIA 1.0 §3.7).
pub const ISELECT_EIP63: u64 = 0xBF;
/// `*iselect` value of `eie0`; `eiek` is `ISELECT_EIE0 + k` (AIA 1.0 §3.7).
pub const ISELECT_EIE0: u64 = 0xC0;
/// `*iselect` value of `eie63` (AIA 1.0 §3.7).
pub const ISELECT_EIE63: u64 = 0xFF;
/// First `*iselect` value of the external-interrupt (IMSIC) range (AIA 1.0 §2.1).
pub const ISELECT_IMSIC_FIRST: u64 = 0x70;
/// Last `*iselect` value of the external-interrupt (IMSIC) range (AIA 1.0 §2.1).
pub const ISELECT_IMSIC_LAST: u64 = 0xFF;

/// The current XLEN of the code accessing `*ireg`.
///
/// AIA 1.0 §3.8: "The width of these indirect accesses is always the current
/// XLEN". It is a property of the access (a 64-bit hart may run RV32 code at VS
/// level), not of the interrupt file, so every indirect access takes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Xlen {
    /// 32-bit accesses: `eipk`/`eiek` hold identities `k*32..=k*32+31`.
    Rv32,
    /// 64-bit accesses: only even `k` exist, holding identities `k*32..=k*32+63`.
    Rv64,
}

impl Xlen {
    /// Mask of the bits an access of this width carries.
    pub fn mask(self) -> u64 {
        match self {
            Xlen::Rv32 => u64::from(u32::MAX),
            Xlen::Rv64 => u64::MAX,
        }
    }
}

/// The exception a hart raises for a failed `*ireg` access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Trap {
    /// Illegal-instruction exception (cause 2).
    IllegalInstruction,
    /// Virtual-instruction exception (cause 22), raised instead of an illegal
    /// instruction for some accesses from VS-mode.
    VirtualInstruction,
}

/// Errors decoding an `*iselect` value for an interrupt file.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum IselectError {
    /// The value is outside 0x70-0xFF: not a register of an interrupt file.
    ///
    /// AIA 1.0 §2.1/§2.2: 0x30-0x3F are the hart's major interrupt priorities
    /// (not IMSIC state), other values are reserved or custom; an access to a
    /// reserved value "will typically raise an illegal instruction exception".
    #[error(
        "indirect register access: iselect {iselect:#x} is not an IMSIC interrupt-file register (0x70-0xff)"
    )]
    NotImsicRegister {
        /// The `*iselect` value.
        iselect: u64,
    },
    /// An odd-numbered `eipk`/`eiek` accessed with XLEN = 64.
    ///
    /// AIA 1.0 §3.8.3/§3.8.4: these registers do not exist for RV64; the access
    /// raises an illegal-instruction exception, or a virtual-instruction
    /// exception when done in VS-mode.
    #[error(
        "indirect register access: iselect {iselect:#x} is an odd eip/eie register, which does not exist when XLEN is 64"
    )]
    OddRegisterOnRv64 {
        /// The `*iselect` value.
        iselect: u64,
    },
}

impl IselectError {
    /// The `*iselect` value that failed to decode.
    pub fn iselect(&self) -> u64 {
        match *self {
            IselectError::NotImsicRegister { iselect } => iselect,
            IselectError::OddRegisterOnRv64 { iselect } => iselect,
        }
    }

    /// The exception the hart raises for this error.
    ///
    /// `from_vs_mode` is true when the access was made from VS-mode (a guest's
    /// `sireg`, which is really `vsireg`). AIA 1.0 §3.8.3/§3.8.4: odd RV64
    /// registers raise a virtual-instruction exception from VS-mode; §2.3 (RC5
    /// change): reserved `vsiselect` values preferably raise an illegal
    /// instruction even from VS-mode. Test: `iselect::tests::trap_kinds`.
    pub fn trap(&self, from_vs_mode: bool) -> Trap {
        match self {
            IselectError::OddRegisterOnRv64 { .. } if from_vs_mode => Trap::VirtualInstruction,
            _ => Trap::IllegalInstruction,
        }
    }
}

/// A decoded interrupt-file register selected through `*iselect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IndirectRegister {
    /// `eidelivery` (0x70), AIA 1.0 §3.8.1.
    EiDelivery,
    /// `eithreshold` (0x72), AIA 1.0 §3.8.2.
    EiThreshold,
    /// `eipk` (0x80 + k), AIA 1.0 §3.8.3.
    Eip(u8),
    /// `eiek` (0xC0 + k), AIA 1.0 §3.8.4.
    Eie(u8),
    /// 0x71 or 0x73-0x7F: reserved, reads return zero and writes are ignored
    /// (AIA 1.0 §3.7).
    Reserved(u8),
}

impl IndirectRegister {
    /// Decodes an `*iselect` value for an access of width `xlen`.
    ///
    /// Values outside 0x70-0xFF and odd `eip`/`eie` numbers with
    /// [`Xlen::Rv64`] are errors; 0x71 and 0x73-0x7F decode to
    /// [`IndirectRegister::Reserved`].
    ///
    /// # Example
    ///
    /// ```
    /// use riscv_imsic::{IndirectRegister, Xlen};
    ///
    /// assert_eq!(
    ///     IndirectRegister::decode(0xC2, Xlen::Rv64),
    ///     Ok(IndirectRegister::Eie(2))
    /// );
    /// assert!(IndirectRegister::decode(0xC3, Xlen::Rv64).is_err());
    /// assert_eq!(
    ///     IndirectRegister::decode(0xC3, Xlen::Rv32),
    ///     Ok(IndirectRegister::Eie(3))
    /// );
    /// ```
    pub fn decode(iselect: u64, xlen: Xlen) -> Result<Self, IselectError> {
        let reg = match iselect {
            ISELECT_EIDELIVERY => IndirectRegister::EiDelivery,
            ISELECT_EITHRESHOLD => IndirectRegister::EiThreshold,
            0x71 | 0x73..=0x7F => IndirectRegister::Reserved(iselect as u8),
            ISELECT_EIP0..=ISELECT_EIP63 => IndirectRegister::Eip((iselect - ISELECT_EIP0) as u8),
            ISELECT_EIE0..=ISELECT_EIE63 => IndirectRegister::Eie((iselect - ISELECT_EIE0) as u8),
            _ => return Err(IselectError::NotImsicRegister { iselect }),
        };
        if let IndirectRegister::Eip(k) | IndirectRegister::Eie(k) = reg
            && xlen == Xlen::Rv64
            && k % 2 == 1
        {
            return Err(IselectError::OddRegisterOnRv64 { iselect });
        }
        Ok(reg)
    }

    /// The `*iselect` value of this register.
    pub fn iselect(self) -> u64 {
        match self {
            IndirectRegister::EiDelivery => ISELECT_EIDELIVERY,
            IndirectRegister::EiThreshold => ISELECT_EITHRESHOLD,
            IndirectRegister::Eip(k) => ISELECT_EIP0 + u64::from(k & 63),
            IndirectRegister::Eie(k) => ISELECT_EIE0 + u64::from(k & 63),
            IndirectRegister::Reserved(v) => u64::from(v),
        }
    }

    /// The `eip`/`eie` register number `k` that holds identity `id`'s bit for an
    /// access of width `xlen` (AIA 1.0 §3.8.3: `k = id / 32`, rounded down to
    /// even for RV64), and the bit position within it.
    ///
    /// Returns `None` for `id > 2047`.
    pub fn eix_index(id: u32, xlen: Xlen) -> Option<(u8, u32)> {
        if id > 2047 {
            return None;
        }
        match xlen {
            Xlen::Rv32 => Some(((id / 32) as u8, id % 32)),
            Xlen::Rv64 => Some((((id / 64) * 2) as u8, id % 64)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_whole_range() {
        for v in 0..0x200u64 {
            let r32 = IndirectRegister::decode(v, Xlen::Rv32);
            let r64 = IndirectRegister::decode(v, Xlen::Rv64);
            if !(0x70..=0xFF).contains(&v) {
                assert_eq!(r32, Err(IselectError::NotImsicRegister { iselect: v }));
                assert_eq!(r64, Err(IselectError::NotImsicRegister { iselect: v }));
                continue;
            }
            let reg = r32.unwrap();
            assert_eq!(reg.iselect(), v);
            match reg {
                IndirectRegister::Eip(k) | IndirectRegister::Eie(k) if k % 2 == 1 => {
                    assert_eq!(r64, Err(IselectError::OddRegisterOnRv64 { iselect: v }));
                }
                _ => assert_eq!(r64, Ok(reg)),
            }
        }
        assert_eq!(
            IndirectRegister::decode(0x71, Xlen::Rv64),
            Ok(IndirectRegister::Reserved(0x71))
        );
        assert_eq!(
            IndirectRegister::decode(0x7F, Xlen::Rv64),
            Ok(IndirectRegister::Reserved(0x7F))
        );
        assert_eq!(
            IndirectRegister::decode(u64::MAX, Xlen::Rv64),
            Err(IselectError::NotImsicRegister { iselect: u64::MAX })
        );
    }

    #[test]
    fn trap_kinds() {
        let odd = IselectError::OddRegisterOnRv64 { iselect: 0x81 };
        assert_eq!(odd.trap(false), Trap::IllegalInstruction);
        assert_eq!(odd.trap(true), Trap::VirtualInstruction);
        let reserved = IselectError::NotImsicRegister { iselect: 0x40 };
        assert_eq!(reserved.trap(false), Trap::IllegalInstruction);
        assert_eq!(reserved.trap(true), Trap::IllegalInstruction);
        assert_eq!(odd.iselect(), 0x81);
        assert_eq!(reserved.iselect(), 0x40);
    }

    #[test]
    fn eix_index_matches_spec() {
        // §3.8.3: RV32 eipk holds k*32..k*32+31; RV64 even k holds k*32..k*32+63.
        assert_eq!(IndirectRegister::eix_index(0, Xlen::Rv32), Some((0, 0)));
        assert_eq!(IndirectRegister::eix_index(33, Xlen::Rv32), Some((1, 1)));
        assert_eq!(IndirectRegister::eix_index(33, Xlen::Rv64), Some((0, 33)));
        assert_eq!(IndirectRegister::eix_index(64, Xlen::Rv64), Some((2, 0)));
        assert_eq!(
            IndirectRegister::eix_index(2047, Xlen::Rv64),
            Some((62, 63))
        );
        assert_eq!(
            IndirectRegister::eix_index(2047, Xlen::Rv32),
            Some((63, 31))
        );
        assert_eq!(IndirectRegister::eix_index(2048, Xlen::Rv64), None);
    }
}
