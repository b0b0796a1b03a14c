// Copyright © 2026 The passthrough-msi authors
//
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! One IMSIC interrupt file: the `eip`/`eie` arrays, `eidelivery`,
//! `eithreshold`, `*topei`, and the interrupt signal it drives.
//!
//! AIA 1.0 §3.1 (Interrupt files and interrupt identities), §3.5 (Memory region
//! for an interrupt file), §3.8 (Indirectly accessed interrupt-file registers),
//! §3.9 (Top external interrupt CSRs) and §3.10 (Interrupt delivery and
//! handling).
//!
//! An [`InterruptFile`] is a plain value with no notion of who is told about its
//! output; [`crate::Imsic`] wraps files and reports edges of their output and
//! changes of their configuration to the VMM.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::iselect::{IndirectRegister, IselectError, Xlen};

/// Number of 64-bit words that hold the pending (or enable) bits of the largest
/// interrupt file (identities 0-2047).
pub const MAX_WORDS: usize = 32;

/// Size of a memory-resident interrupt file (MRIF) image (AIA 1.0 §8.3.1).
pub const MRIF_SIZE: usize = 512;

/// `eidelivery` value 0: delivery disabled (AIA 1.0 §3.8.1).
pub const EIDELIVERY_OFF: u32 = 0;
/// `eidelivery` value 1: delivery from the interrupt file enabled (AIA 1.0 §3.8.1).
pub const EIDELIVERY_ON: u32 = 1;
/// `eidelivery` value 0x40000000: delivery from a PLIC or APLIC (AIA 1.0 §3.8.1).
pub const EIDELIVERY_APLIC: u32 = 0x4000_0000;

/// Mask of the identity field of `*topei` (bits 26:16) and of the priority
/// field (bits 10:0); also the width kept by `eithreshold`.
const ID_FIELD_MASK: u32 = 0x7FF;
/// Shift of the identity field of `*topei` (AIA 1.0 §3.9).
pub const TOPEI_ID_SHIFT: u32 = 16;

/// Errors creating an interrupt file or restoring its state.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum FileError {
    /// AIA 1.0 §3.1: the number of identities is one less than a multiple of 64,
    /// between 63 and 2047.
    #[error("interrupt file: {0} identities is not 63..=2047 with a multiple of 64 minus one")]
    InvalidNumIds(u32),
    /// A restored `eip`/`eie` array has the wrong number of words.
    #[error(
        "interrupt file state: {array} has {len} words, expected {expected} for {num_ids} identities"
    )]
    ArrayLength {
        /// `"eip"` or `"eie"`.
        array: &'static str,
        /// Words supplied.
        len: usize,
        /// Words expected.
        expected: usize,
        /// Identities of the file.
        num_ids: u32,
    },
    /// A restored `eip`/`eie` array has bits for identity 0 or for identities
    /// above N (which are read-only zeros, AIA 1.0 §3.8.3).
    #[error(
        "interrupt file state: {array} word {word} = {value:#x} sets bits of unimplemented identities"
    )]
    UnimplementedBits {
        /// `"eip"` or `"eie"`.
        array: &'static str,
        /// Index of the offending word.
        word: usize,
        /// Its value.
        value: u64,
    },
    /// A restored `eidelivery` value is not legal for this file.
    #[error("interrupt file state: eidelivery {0:#x} is not a legal value for this file")]
    InvalidEiDelivery(u32),
    /// A restored `eithreshold` value is above 2047.
    #[error("interrupt file state: eithreshold {0} is above 2047")]
    InvalidEiThreshold(u32),
}

/// Number of interrupt identities `N` implemented by an interrupt file.
///
/// AIA 1.0 §3.1: `N` is one less than a multiple of 64, between 63 and 2047;
/// valid identities are 1..=N.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct NumIds(u16);

impl NumIds {
    /// The smallest interrupt file (63 identities).
    pub const MIN: NumIds = NumIds(63);
    /// The largest interrupt file (2047 identities).
    pub const MAX: NumIds = NumIds(2047);

    /// Validates `n` (AIA 1.0 §3.1).
    ///
    /// ```
    /// use riscv_imsic::NumIds;
    ///
    /// assert!(NumIds::new(255).is_ok());
    /// assert!(NumIds::new(256).is_err());
    /// assert!(NumIds::new(4095).is_err());
    /// ```
    pub fn new(n: u32) -> Result<Self, FileError> {
        if (63..=2047).contains(&n) && (n + 1).is_multiple_of(64) {
            Ok(NumIds(n as u16))
        } else {
            Err(FileError::InvalidNumIds(n))
        }
    }

    /// `N`, the largest implemented identity.
    pub fn get(self) -> u32 {
        u32::from(self.0)
    }

    /// Number of 64-bit words holding the pending (or enable) bits, `(N + 1) / 64`.
    pub fn words(self) -> usize {
        (usize::from(self.0) + 1) / 64
    }
}

impl TryFrom<u32> for NumIds {
    type Error = FileError;

    fn try_from(n: u32) -> Result<Self, FileError> {
        NumIds::new(n)
    }
}

impl From<NumIds> for u32 {
    fn from(n: NumIds) -> u32 {
        n.get()
    }
}

/// The value of an `eidelivery` register (AIA 1.0 §3.8.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EiDelivery {
    /// 0: the interrupt signal is held de-asserted.
    Off,
    /// 1: the interrupt signal follows the file's pending-and-enabled state.
    On,
    /// 0x40000000: a PLIC/APLIC supplies external interrupts at this level and
    /// the file behaves as with `Off`. Optional, never for guest files.
    Aplic,
}

impl EiDelivery {
    /// The register value.
    pub fn value(self) -> u32 {
        match self {
            EiDelivery::Off => EIDELIVERY_OFF,
            EiDelivery::On => EIDELIVERY_ON,
            EiDelivery::Aplic => EIDELIVERY_APLIC,
        }
    }
}

/// What an `eip` or `eie` write changed: the identities whose bit went from 0
/// to 1 (`set`) and from 1 to 0 (`cleared`), as a word index into the 64-bit
/// arrays and masks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BitChange {
    /// Index of the 64-bit word (identities `word*64..word*64+63`).
    pub word: usize,
    /// Bits that became one.
    pub set: u64,
    /// Bits that became zero.
    pub cleared: u64,
}

impl BitChange {
    /// True if nothing changed.
    pub fn is_empty(&self) -> bool {
        self.set == 0 && self.cleared == 0
    }
}

/// The effect of an indirect register access, for the caller to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndirectEffect {
    /// Nothing changed.
    None,
    /// `eidelivery` changed from the first value to the second.
    Delivery(EiDelivery, EiDelivery),
    /// `eithreshold` changed from the first value to the second.
    Threshold(u32, u32),
    /// Pending bits changed.
    Pending(BitChange),
    /// Enable bits changed.
    Enable(BitChange),
}

/// One interrupt file of an IMSIC.
///
/// The `eip` and `eie` arrays are fixed 2048-bit arrays; bits of identity 0
/// and of identities above `N` are kept zero (AIA 1.0 §3.8.3: read-only zeros),
/// so a file never allocates and no guest value sizes anything.
///
/// ```
/// use riscv_imsic::{InterruptFile, NumIds, Xlen};
///
/// let mut f = InterruptFile::new(NumIds::new(63).unwrap(), false);
/// f.write_indirect(0x70, 1, Xlen::Rv64).unwrap(); // eidelivery = 1
/// f.write_indirect(0xC0, 1 << 5, Xlen::Rv64).unwrap(); // enable identity 5
/// assert!(f.seteipnum(5)); // an MSI arrives
/// assert!(f.output());
/// assert_eq!(f.claim_topei(), (5 << 16) | 5);
/// assert!(!f.output());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterruptFile {
    num_ids: NumIds,
    aplic_capable: bool,
    eidelivery: EiDelivery,
    eithreshold: u32,
    eip: [u64; MAX_WORDS],
    eie: [u64; MAX_WORDS],
    /// Bit `w` is set iff `eip[w] & eie[w] != 0`, so `*topei` needs no scan.
    active: u32,
}

impl InterruptFile {
    /// A file with `num_ids` identities in its reset state.
    ///
    /// `aplic_capable` says whether `eidelivery` supports 0x40000000; it must be
    /// false for guest files (AIA 1.0 §3.8.1: "Guest interrupt files do not
    /// support value 0x40000000"). Reset state (§3.4, §3.8.1): `eidelivery` is
    /// 0x40000000 when supported, else 0 (the spec leaves 0 or 1 to the
    /// implementation); `eithreshold`, `eip` and `eie` are zero.
    pub fn new(num_ids: NumIds, aplic_capable: bool) -> Self {
        InterruptFile {
            num_ids,
            aplic_capable,
            eidelivery: Self::reset_delivery(aplic_capable),
            eithreshold: 0,
            eip: [0; MAX_WORDS],
            eie: [0; MAX_WORDS],
            active: 0,
        }
    }

    fn reset_delivery(aplic_capable: bool) -> EiDelivery {
        if aplic_capable {
            EiDelivery::Aplic
        } else {
            EiDelivery::Off
        }
    }

    /// Returns the file to its reset state (see [`InterruptFile::new`]).
    pub fn reset(&mut self) {
        *self = InterruptFile::new(self.num_ids, self.aplic_capable);
    }

    /// Number of identities `N`.
    pub fn num_ids(&self) -> NumIds {
        self.num_ids
    }

    /// Whether `eidelivery` supports 0x40000000.
    pub fn aplic_capable(&self) -> bool {
        self.aplic_capable
    }

    /// The current `eidelivery`.
    pub fn eidelivery(&self) -> EiDelivery {
        self.eidelivery
    }

    /// The current `eithreshold`.
    pub fn eithreshold(&self) -> u32 {
        self.eithreshold
    }

    /// Mask of the implemented identities in 64-bit word `word`.
    fn implemented_mask(&self, word: usize) -> u64 {
        if word >= self.num_ids.words() {
            0
        } else if word == 0 {
            !1u64
        } else {
            u64::MAX
        }
    }

    /// True if `id` is implemented (1..=N).
    pub fn is_implemented(&self, id: u32) -> bool {
        id != 0 && id <= self.num_ids.get()
    }

    /// The pending bit of `id` (false for unimplemented identities).
    pub fn is_pending(&self, id: u32) -> bool {
        self.bit(&self.eip, id)
    }

    /// The enable bit of `id` (false for unimplemented identities).
    pub fn is_enabled(&self, id: u32) -> bool {
        self.bit(&self.eie, id)
    }

    fn bit(&self, array: &[u64; MAX_WORDS], id: u32) -> bool {
        if !self.is_implemented(id) {
            return false;
        }
        let word = (id / 64) as usize;
        array
            .get(word)
            .is_some_and(|w| w & (1u64 << (id % 64)) != 0)
    }

    /// The pending array as 64-bit words, `(N + 1) / 64` of them.
    pub fn eip_words(&self) -> &[u64] {
        self.eip.get(..self.num_ids.words()).unwrap_or(&[])
    }

    /// The enable array as 64-bit words, `(N + 1) / 64` of them.
    pub fn eie_words(&self) -> &[u64] {
        self.eie.get(..self.num_ids.words()).unwrap_or(&[])
    }

    /// Sets the pending bit of `id` as a write of `id` to `seteipnum_le` does.
    ///
    /// AIA 1.0 §3.5: values that are not implemented identities (0, above N) are
    /// ignored. Returns true if `id` is implemented (whether or not it was
    /// already pending).
    pub fn seteipnum(&mut self, id: u32) -> bool {
        if !self.is_implemented(id) {
            return false;
        }
        let word = (id / 64) as usize;
        if let Some(w) = self.eip.get_mut(word) {
            *w |= 1u64 << (id % 64);
        }
        self.refresh(word);
        true
    }

    /// The identity `*topei` reports, or 0.
    ///
    /// AIA 1.0 §3.9: the lowest pending-and-enabled identity, and when
    /// `eithreshold` is nonzero only identities below it count. `eidelivery`
    /// does not matter (§3.10 clarification of 20250312: it only gates the
    /// signal).
    pub fn top_id(&self) -> u32 {
        if self.active == 0 {
            return 0;
        }
        let word = self.active.trailing_zeros() as usize;
        let hits =
            self.eip.get(word).copied().unwrap_or(0) & self.eie.get(word).copied().unwrap_or(0);
        if hits == 0 {
            return 0;
        }
        let id = (word as u32) * 64 + hits.trailing_zeros();
        if self.eithreshold == 0 || id < self.eithreshold {
            id
        } else {
            0
        }
    }

    /// Recomputes the summary bit of `word`.
    fn refresh(&mut self, word: usize) {
        let (Some(p), Some(e)) = (self.eip.get(word), self.eie.get(word)) else {
            return;
        };
        let bit = 1u32 << (word % MAX_WORDS);
        if p & e != 0 {
            self.active |= bit;
        } else {
            self.active &= !bit;
        }
    }

    /// Recomputes every summary bit.
    fn refresh_all(&mut self) {
        for word in 0..MAX_WORDS {
            self.refresh(word);
        }
    }

    /// The value a read of `*topei` returns: `(id << 16) | id`, or 0
    /// (AIA 1.0 §3.9: identity in bits 26:16, priority = identity in bits 10:0).
    pub fn topei(&self) -> u32 {
        let id = self.top_id();
        (id << TOPEI_ID_SHIFT) | id
    }

    /// A write to `*topei`: claims the identity currently reported by clearing its
    /// pending bit; the value written does not matter (AIA 1.0 §3.9). Returns the
    /// claimed identity, or 0 if `*topei` was zero and nothing changed.
    pub fn write_topei(&mut self) -> u32 {
        let id = self.top_id();
        if id != 0 {
            let word = (id / 64) as usize;
            if let Some(w) = self.eip.get_mut(word) {
                *w &= !(1u64 << (id % 64));
            }
            self.refresh(word);
        }
        id
    }

    /// A combined read and write of `*topei` (`csrrw rd, stopei, x0`): returns
    /// the value read and claims that identity (AIA 1.0 §3.9, §3.10).
    pub fn claim_topei(&mut self) -> u32 {
        let id = self.write_topei();
        (id << TOPEI_ID_SHIFT) | id
    }

    /// The interrupt signal of the file (AIA 1.0 §3.10): asserted iff
    /// `eidelivery` is 1 and some pending-and-enabled identity is below
    /// `eithreshold` (when nonzero).
    pub fn output(&self) -> bool {
        self.eidelivery == EiDelivery::On && self.top_id() != 0
    }

    /// Whether setting `id` pending would assert the signal by itself, without
    /// scanning the arrays: `id` is enabled, below the threshold and delivery is
    /// on. Used on the MSI fast path.
    pub(crate) fn id_signals(&self, id: u32) -> bool {
        self.eidelivery == EiDelivery::On
            && self.is_enabled(id)
            && (self.eithreshold == 0 || id < self.eithreshold)
    }

    /// Reads the register selected by `iselect` through `*ireg` of width `xlen`.
    ///
    /// Reserved numbers 0x71 and 0x73-0x7F read zero (AIA 1.0 §3.7); bits of
    /// unimplemented identities read zero (§3.8.3, §3.8.4).
    pub fn read_indirect(&self, iselect: u64, xlen: Xlen) -> Result<u64, IselectError> {
        let reg = IndirectRegister::decode(iselect, xlen)?;
        Ok(self.read_register(reg, xlen))
    }

    /// Writes `value` to the register selected by `iselect`.
    pub fn write_indirect(
        &mut self,
        iselect: u64,
        value: u64,
        xlen: Xlen,
    ) -> Result<IndirectEffect, IselectError> {
        self.rmw_indirect(iselect, value, u64::MAX, xlen)
            .map(|(_, effect)| effect)
    }

    /// Read-modify-write of the register selected by `iselect`, as the CSR
    /// instructions do on `*ireg`: returns the old value and writes
    /// `(old & !mask) | (new & mask)`. `csrrw` is `mask = !0`, `csrrs` is
    /// `new = !0, mask = rs1`, `csrrc` is `new = 0, mask = rs1`. A zero mask
    /// writes nothing (`csrrs rd, sireg, x0`).
    pub fn rmw_indirect(
        &mut self,
        iselect: u64,
        new: u64,
        mask: u64,
        xlen: Xlen,
    ) -> Result<(u64, IndirectEffect), IselectError> {
        let reg = IndirectRegister::decode(iselect, xlen)?;
        let old = self.read_register(reg, xlen);
        let mask = mask & xlen.mask();
        if mask == 0 {
            return Ok((old, IndirectEffect::None));
        }
        let value = (old & !mask) | (new & mask);
        let effect = self.write_register(reg, value, xlen);
        Ok((old, effect))
    }

    /// Reads a decoded register.
    pub fn read_register(&self, reg: IndirectRegister, xlen: Xlen) -> u64 {
        match reg {
            IndirectRegister::EiDelivery => u64::from(self.eidelivery.value()),
            IndirectRegister::EiThreshold => u64::from(self.eithreshold),
            IndirectRegister::Reserved(_) => 0,
            IndirectRegister::Eip(k) => Self::read_eix(&self.eip, k, xlen),
            IndirectRegister::Eie(k) => Self::read_eix(&self.eie, k, xlen),
        }
    }

    fn read_eix(array: &[u64; MAX_WORDS], k: u8, xlen: Xlen) -> u64 {
        let word = usize::from(k / 2);
        let w = array.get(word).copied().unwrap_or(0);
        match xlen {
            // RV64 callers have already rejected odd k; an even k reads the word.
            Xlen::Rv64 => w,
            Xlen::Rv32 => {
                if k.is_multiple_of(2) {
                    w & 0xFFFF_FFFF
                } else {
                    w >> 32
                }
            }
        }
    }

    /// Writes a decoded register and returns what changed.
    ///
    /// WARL/WLRL choices (AIA 1.0 §3.8.1, §3.8.2), test
    /// `file::tests::warl_eidelivery_and_threshold`:
    /// - `eidelivery`: if the file is APLIC-capable and bit 30 is set, the value
    ///   becomes 0x40000000; otherwise bit 0 selects 1 or 0.
    /// - `eithreshold`: keeps bits 10:0, so every value 0..=2047 is held; values
    ///   above N act like 0 (no implemented identity reaches them).
    pub fn write_register(
        &mut self,
        reg: IndirectRegister,
        value: u64,
        xlen: Xlen,
    ) -> IndirectEffect {
        match reg {
            IndirectRegister::EiDelivery => {
                let new = if self.aplic_capable && value & u64::from(EIDELIVERY_APLIC) != 0 {
                    EiDelivery::Aplic
                } else if value & 1 != 0 {
                    EiDelivery::On
                } else {
                    EiDelivery::Off
                };
                let old = self.eidelivery;
                self.eidelivery = new;
                if old == new {
                    IndirectEffect::None
                } else {
                    IndirectEffect::Delivery(old, new)
                }
            }
            IndirectRegister::EiThreshold => {
                let new = (value as u32) & ID_FIELD_MASK;
                let old = self.eithreshold;
                self.eithreshold = new;
                if old == new {
                    IndirectEffect::None
                } else {
                    IndirectEffect::Threshold(old, new)
                }
            }
            IndirectRegister::Reserved(_) => IndirectEffect::None,
            IndirectRegister::Eip(k) => {
                let change = self.write_eix(true, k, value, xlen);
                if change.is_empty() {
                    IndirectEffect::None
                } else {
                    IndirectEffect::Pending(change)
                }
            }
            IndirectRegister::Eie(k) => {
                let change = self.write_eix(false, k, value, xlen);
                if change.is_empty() {
                    IndirectEffect::None
                } else {
                    IndirectEffect::Enable(change)
                }
            }
        }
    }

    fn write_eix(&mut self, pending: bool, k: u8, value: u64, xlen: Xlen) -> BitChange {
        let word = usize::from(k / 2);
        let (field, shift) = match xlen {
            Xlen::Rv64 => (u64::MAX, 0),
            Xlen::Rv32 => (0xFFFF_FFFFu64, if k.is_multiple_of(2) { 0 } else { 32 }),
        };
        let writable = (field << shift) & self.implemented_mask(word);
        let array = if pending {
            &mut self.eip
        } else {
            &mut self.eie
        };
        let Some(w) = array.get_mut(word) else {
            return BitChange::default();
        };
        let old = *w;
        let new = (old & !writable) | ((value << shift) & writable);
        *w = new;
        self.refresh(word);
        BitChange {
            word,
            set: new & !old,
            cleared: old & !new,
        }
    }

    /// Replaces the file's state, as a restore or an MRIF move-back does.
    ///
    /// Validates everything before changing anything.
    pub fn load(
        &mut self,
        eidelivery: u32,
        eithreshold: u32,
        eip: &[u64],
        eie: &[u64],
    ) -> Result<(), FileError> {
        let delivery = match eidelivery {
            EIDELIVERY_OFF => EiDelivery::Off,
            EIDELIVERY_ON => EiDelivery::On,
            EIDELIVERY_APLIC if self.aplic_capable => EiDelivery::Aplic,
            v => return Err(FileError::InvalidEiDelivery(v)),
        };
        if eithreshold > ID_FIELD_MASK {
            return Err(FileError::InvalidEiThreshold(eithreshold));
        }
        for (name, array) in [("eip", eip), ("eie", eie)] {
            if array.len() != self.num_ids.words() {
                return Err(FileError::ArrayLength {
                    array: name,
                    len: array.len(),
                    expected: self.num_ids.words(),
                    num_ids: self.num_ids.get(),
                });
            }
            for (word, value) in array.iter().enumerate() {
                if value & !self.implemented_mask(word) != 0 {
                    return Err(FileError::UnimplementedBits {
                        array: name,
                        word,
                        value: *value,
                    });
                }
            }
        }
        self.eidelivery = delivery;
        self.eithreshold = eithreshold;
        self.eip = [0; MAX_WORDS];
        self.eie = [0; MAX_WORDS];
        for (dst, src) in self.eip.iter_mut().zip(eip) {
            *dst = *src;
        }
        for (dst, src) in self.eie.iter_mut().zip(eie) {
            *dst = *src;
        }
        self.refresh_all();
        Ok(())
    }

    /// The file's `eip` and `eie` arrays as a memory-resident interrupt file
    /// (MRIF) image.
    ///
    /// AIA 1.0 §8.3.1: 32 pairs of little-endian doublewords, pending bits of
    /// identities `k*64..k*64+63` at offset `k*16` and their enable bits at
    /// `k*16+8`, for all of 0-2047 whatever N is.
    pub fn to_mrif(&self) -> [u8; MRIF_SIZE] {
        let mut out = [0u8; MRIF_SIZE];
        for (k, chunk) in out.chunks_exact_mut(16).enumerate() {
            let p = self.eip.get(k).copied().unwrap_or(0);
            let e = self.eie.get(k).copied().unwrap_or(0);
            let (lo, hi) = chunk.split_at_mut(8);
            lo.copy_from_slice(&p.to_le_bytes());
            hi.copy_from_slice(&e.to_le_bytes());
        }
        out
    }

    /// Folds an MRIF image back into the file.
    ///
    /// AIA 1.0 §8.3.3 (moving an interrupt file from an MRIF back to an IMSIC):
    /// the MRIF's pending bits are ORed into `eip` and its enable bits are
    /// copied to `eie`. Bits for identity 0 (the faux bit an IOMMU sets for an
    /// MSI with data 0) and for identities above N are dropped, as software is
    /// told to ignore them. Returns the pending and enable changes per word.
    pub fn merge_mrif(&mut self, mrif: &[u8; MRIF_SIZE]) -> Vec<(BitChange, BitChange)> {
        let mut changes = Vec::new();
        for (k, chunk) in mrif.chunks_exact(16).enumerate() {
            let mask = self.implemented_mask(k);
            if mask == 0 {
                continue;
            }
            let mut p = [0u8; 8];
            let mut e = [0u8; 8];
            p.copy_from_slice(chunk.get(..8).unwrap_or(&[0; 8]));
            e.copy_from_slice(chunk.get(8..16).unwrap_or(&[0; 8]));
            let p = u64::from_le_bytes(p) & mask;
            let e = u64::from_le_bytes(e) & mask;
            let (Some(wp), Some(we)) = (self.eip.get_mut(k), self.eie.get_mut(k)) else {
                continue;
            };
            let old_p = *wp;
            let old_e = *we;
            *wp = old_p | p;
            *we = e;
            let pc = BitChange {
                word: k,
                set: *wp & !old_p,
                cleared: 0,
            };
            let ec = BitChange {
                word: k,
                set: e & !old_e,
                cleared: old_e & !e,
            };
            if !pc.is_empty() || !ec.is_empty() {
                changes.push((pc, ec));
            }
        }
        self.refresh_all();
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iselect::{ISELECT_EIDELIVERY, ISELECT_EIE0, ISELECT_EIP0, ISELECT_EITHRESHOLD};

    fn file(n: u32) -> InterruptFile {
        InterruptFile::new(NumIds::new(n).unwrap(), false)
    }

    #[test]
    fn num_ids_rule() {
        let valid: Vec<u32> = (0..5000).filter(|n| NumIds::new(*n).is_ok()).collect();
        assert_eq!(valid.len(), 32);
        assert_eq!(valid.first(), Some(&63));
        assert_eq!(valid.last(), Some(&2047));
        assert!(valid.iter().all(|n| (n + 1) % 64 == 0));
        assert_eq!(NumIds::new(64), Err(FileError::InvalidNumIds(64)));
        assert_eq!(NumIds::new(0), Err(FileError::InvalidNumIds(0)));
        assert_eq!(
            NumIds::new(u32::MAX),
            Err(FileError::InvalidNumIds(u32::MAX))
        );
        assert_eq!(NumIds::MAX.words(), 32);
        assert_eq!(NumIds::MIN.words(), 1);
    }

    #[test]
    fn seteipnum_ignores_invalid_identities() {
        let mut f = file(127);
        assert!(!f.seteipnum(0));
        assert!(!f.seteipnum(128));
        assert!(!f.seteipnum(u32::MAX));
        assert_eq!(f.eip_words(), &[0, 0]);
        assert!(f.seteipnum(127));
        assert!(f.seteipnum(1));
        assert_eq!(f.eip_words(), &[0b10, 1 << 63]);
    }

    #[test]
    fn topei_threshold_and_priority() {
        let mut f = file(255);
        f.write_indirect(ISELECT_EIE0, u64::MAX, Xlen::Rv64)
            .unwrap();
        f.write_indirect(ISELECT_EIE0 + 2, u64::MAX, Xlen::Rv64)
            .unwrap();
        f.seteipnum(70);
        f.seteipnum(9);
        assert_eq!(f.topei(), (9 << 16) | 9);
        // Threshold 9: identities 9 and above do not count.
        f.write_indirect(ISELECT_EITHRESHOLD, 9, Xlen::Rv64)
            .unwrap();
        assert_eq!(f.topei(), 0);
        f.write_indirect(ISELECT_EITHRESHOLD, 10, Xlen::Rv64)
            .unwrap();
        assert_eq!(f.top_id(), 9);
        f.write_indirect(ISELECT_EITHRESHOLD, 0, Xlen::Rv64)
            .unwrap();
        assert_eq!(f.claim_topei(), (9 << 16) | 9);
        assert_eq!(f.claim_topei(), (70 << 16) | 70);
        assert_eq!(f.claim_topei(), 0);
        assert_eq!(f.write_topei(), 0);
        // Enabled but not pending, pending but not enabled: nothing.
        f.seteipnum(200);
        assert_eq!(f.topei(), 0);
    }

    #[test]
    fn output_needs_delivery_on() {
        let mut f = InterruptFile::new(NumIds::MIN, true);
        assert_eq!(f.eidelivery(), EiDelivery::Aplic);
        f.write_indirect(ISELECT_EIE0, 1 << 3, Xlen::Rv64).unwrap();
        f.seteipnum(3);
        assert!(!f.output());
        assert_eq!(f.top_id(), 3, "topei ignores eidelivery");
        f.write_indirect(ISELECT_EIDELIVERY, 1, Xlen::Rv64).unwrap();
        assert!(f.output());
        f.write_indirect(ISELECT_EIDELIVERY, 0, Xlen::Rv64).unwrap();
        assert!(!f.output());
    }

    #[test]
    fn warl_eidelivery_and_threshold() {
        let mut f = file(63);
        let mut aplic = InterruptFile::new(NumIds::MIN, true);
        for (v, plain, capable) in [
            (0u64, 0u64, 0u64),
            (1, 1, 1),
            (0x4000_0000, 0, 0x4000_0000),
            (0x4000_0001, 1, 0x4000_0000),
            (2, 0, 0),
            (0xFFFF_FFFF_FFFF_FFFF, 1, 0x4000_0000),
        ] {
            f.write_indirect(ISELECT_EIDELIVERY, v, Xlen::Rv64).unwrap();
            aplic
                .write_indirect(ISELECT_EIDELIVERY, v, Xlen::Rv64)
                .unwrap();
            assert_eq!(
                f.read_indirect(ISELECT_EIDELIVERY, Xlen::Rv64),
                Ok(plain),
                "{v:#x}"
            );
            assert_eq!(
                aplic.read_indirect(ISELECT_EIDELIVERY, Xlen::Rv64),
                Ok(capable),
                "{v:#x}"
            );
        }
        for (v, kept) in [
            (0u64, 0u64),
            (63, 63),
            (2047, 2047),
            (2048, 0),
            (0xFFFF_FFFF, 2047),
        ] {
            f.write_indirect(ISELECT_EITHRESHOLD, v, Xlen::Rv64)
                .unwrap();
            assert_eq!(f.read_indirect(ISELECT_EITHRESHOLD, Xlen::Rv64), Ok(kept));
        }
    }

    #[test]
    fn eip_eie_rv32_and_rv64_views() {
        let mut f = file(127);
        // RV32: eie1 holds identities 32..63, eie2 64..95.
        f.write_indirect(ISELECT_EIE0 + 1, 1, Xlen::Rv32).unwrap();
        f.write_indirect(ISELECT_EIE0 + 2, 1 << 31, Xlen::Rv32)
            .unwrap();
        assert!(f.is_enabled(32));
        assert!(f.is_enabled(95));
        assert_eq!(f.read_indirect(ISELECT_EIE0, Xlen::Rv64), Ok(1 << 32));
        assert_eq!(f.read_indirect(ISELECT_EIE0 + 2, Xlen::Rv64), Ok(1 << 31));
        // RV32 write of the high half does not touch the low half.
        f.write_indirect(ISELECT_EIE0 + 1, 0, Xlen::Rv32).unwrap();
        assert!(!f.is_enabled(32));
        assert!(f.is_enabled(95));
        // Identity 0 is read-only zero; registers past N are read-only zero.
        f.write_indirect(ISELECT_EIP0, u64::MAX, Xlen::Rv64)
            .unwrap();
        assert_eq!(f.read_indirect(ISELECT_EIP0, Xlen::Rv64), Ok(!1));
        f.write_indirect(ISELECT_EIP0 + 4, u64::MAX, Xlen::Rv64)
            .unwrap();
        assert_eq!(f.read_indirect(ISELECT_EIP0 + 4, Xlen::Rv64), Ok(0));
        f.write_indirect(ISELECT_EIP0 + 63, u32::MAX.into(), Xlen::Rv32)
            .unwrap();
        assert_eq!(f.read_indirect(ISELECT_EIP0 + 63, Xlen::Rv32), Ok(0));
        // RV32 accesses see only 32 bits.
        assert_eq!(f.read_indirect(ISELECT_EIP0, Xlen::Rv32), Ok(0xFFFF_FFFE));
        assert_eq!(
            f.read_indirect(ISELECT_EIP0 + 1, Xlen::Rv64),
            Err(IselectError::OddRegisterOnRv64 { iselect: 0x81 })
        );
        assert_eq!(f.read_indirect(0x71, Xlen::Rv64), Ok(0));
        assert_eq!(
            f.write_indirect(0x7F, u64::MAX, Xlen::Rv64),
            Ok(IndirectEffect::None)
        );
    }

    #[test]
    fn rmw_reports_changes() {
        let mut f = file(63);
        // csrrs eie0, 0b110
        let (old, eff) = f
            .rmw_indirect(ISELECT_EIE0, u64::MAX, 0b110, Xlen::Rv64)
            .unwrap();
        assert_eq!(old, 0);
        assert_eq!(
            eff,
            IndirectEffect::Enable(BitChange {
                word: 0,
                set: 0b110,
                cleared: 0
            })
        );
        // csrrc eie0, 0b010
        let (old, eff) = f.rmw_indirect(ISELECT_EIE0, 0, 0b010, Xlen::Rv64).unwrap();
        assert_eq!(old, 0b110);
        assert_eq!(
            eff,
            IndirectEffect::Enable(BitChange {
                word: 0,
                set: 0,
                cleared: 0b010
            })
        );
        // csrrs with x0: read only.
        let (old, eff) = f
            .rmw_indirect(ISELECT_EIE0, u64::MAX, 0, Xlen::Rv64)
            .unwrap();
        assert_eq!((old, eff), (0b100, IndirectEffect::None));
        let (_, eff) = f
            .rmw_indirect(ISELECT_EIDELIVERY, 1, u64::MAX, Xlen::Rv64)
            .unwrap();
        assert_eq!(
            eff,
            IndirectEffect::Delivery(EiDelivery::Off, EiDelivery::On)
        );
        let (_, eff) = f
            .rmw_indirect(ISELECT_EITHRESHOLD, 5, u64::MAX, Xlen::Rv64)
            .unwrap();
        assert_eq!(eff, IndirectEffect::Threshold(0, 5));
    }

    #[test]
    fn load_validates_everything_first() {
        let mut f = file(127);
        f.seteipnum(3);
        let before = f.clone();
        assert_eq!(
            f.load(0, 0, &[0], &[0, 0]),
            Err(FileError::ArrayLength {
                array: "eip",
                len: 1,
                expected: 2,
                num_ids: 127
            })
        );
        assert_eq!(
            f.load(0, 0, &[1, 0], &[0, 0]),
            Err(FileError::UnimplementedBits {
                array: "eip",
                word: 0,
                value: 1
            })
        );
        assert_eq!(
            f.load(7, 0, &[0, 0], &[0, 0]),
            Err(FileError::InvalidEiDelivery(7))
        );
        assert_eq!(
            f.load(EIDELIVERY_APLIC, 0, &[0, 0], &[0, 0]),
            Err(FileError::InvalidEiDelivery(EIDELIVERY_APLIC))
        );
        assert_eq!(
            f.load(0, 2048, &[0, 0], &[0, 0]),
            Err(FileError::InvalidEiThreshold(2048))
        );
        assert_eq!(f, before);
        f.load(1, 4, &[2, 1], &[6, 0]).unwrap();
        assert_eq!(f.eidelivery(), EiDelivery::On);
        assert_eq!(f.eithreshold(), 4);
        assert_eq!(f.eip_words(), &[2, 1]);
        assert_eq!(f.top_id(), 1);
    }

    #[test]
    fn mrif_round_trip_and_merge() {
        let mut f = file(127);
        f.write_indirect(ISELECT_EIE0, 0b1010, Xlen::Rv64).unwrap();
        f.seteipnum(3);
        f.seteipnum(100);
        let image = f.to_mrif();
        assert_eq!(&image[0..8], &(1u64 << 3).to_le_bytes());
        assert_eq!(&image[8..16], &0b1010u64.to_le_bytes());
        assert_eq!(&image[16..24], &(1u64 << 36).to_le_bytes());
        assert!(image[32..].iter().all(|b| *b == 0));

        let mut g = file(127);
        g.seteipnum(5);
        let mut incoming = image;
        // Faux bit for identity 0 and a bit above N are dropped.
        incoming[0] |= 1;
        incoming[32] = 0xFF;
        let changes = g.merge_mrif(&incoming);
        assert_eq!(g.eip_words(), &[(1 << 3) | (1 << 5), 1 << 36]);
        assert_eq!(g.eie_words(), &[0b1010, 0]);
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].0.set, 1 << 3);
        assert_eq!(changes[0].1.set, 0b1010);
    }
}
