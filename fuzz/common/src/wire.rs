// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The byte format every fuzz input is decoded from, and its encoder.
//!
//! Every byte string is a valid input: reads past the end yield zeros, and the operation
//! list ends when the bytes do. Each field is decoded into its normalized form (a tag
//! reduced modulo the number of variants, a length clamped), so that for any `bytes`,
//! `decode(encode(decode(bytes))) == decode(bytes)` (test `wire_round_trips` in each
//! module). That is what lets the seed generator turn the unit-test scenarios into corpus
//! files, and what makes a crash file a plain test input.
//!
//! Why not `#[derive(Arbitrary)]`: its byte format is not invertible (lengths are taken from
//! the end of the buffer, enum tags are scaled), so scenarios could not be written as seeds.
//! The input structures still implement [`arbitrary::Arbitrary`] (through
//! [`impl_arbitrary!`](crate::impl_arbitrary)), which is all `libfuzzer-sys` needs.

/// Reads fixed-width little-endian fields; past the end every read yields zeros.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    /// Whether every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// Bytes left.
    pub fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for b in out.iter_mut() {
            *b = self.data.get(self.pos).copied().unwrap_or(0);
            self.pos = self.pos.saturating_add(1);
        }
        out
    }

    /// One byte.
    pub fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }

    /// A `u16`, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }

    /// A `u32`, little-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }

    /// A `u64`, little-endian.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }

    /// A boolean: bit 0 of one byte.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }

    /// `n` bytes (zero-padded past the end).
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u8()).collect()
    }
}

/// Writes the fields [`Reader`] reads, in the same order and widths.
#[derive(Debug, Clone, Default)]
pub struct Writer {
    out: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Writer::default()
    }

    /// The bytes written.
    pub fn finish(self) -> Vec<u8> {
        self.out
    }

    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.out.push(v);
    }

    /// A `u16`, little-endian.
    pub fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    /// A `u32`, little-endian.
    pub fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    /// A `u64`, little-endian.
    pub fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    /// A boolean as one byte.
    pub fn bool(&mut self, v: bool) {
        self.out.push(u8::from(v));
    }

    /// Raw bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        self.out.extend_from_slice(v);
    }
}

/// A type with a byte format: decoding never fails, encoding inverts it.
pub trait Wire: Sized {
    /// Decodes from `r` (zeros past the end).
    fn decode(r: &mut Reader<'_>) -> Self;
    /// Encodes so that `decode` gives back `self` (for normalized values).
    fn encode(&self, w: &mut Writer);

    /// Decodes a whole byte string.
    fn from_bytes(bytes: &[u8]) -> Self {
        Self::decode(&mut Reader::new(bytes))
    }

    /// Encodes into a fresh byte string.
    fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.finish()
    }
}

/// Decodes operations until the bytes run out, at most `max` of them: a bound on the work
/// one input can ask for, whatever its length.
pub fn decode_ops<T: Wire>(r: &mut Reader<'_>, max: usize) -> Vec<T> {
    let mut ops = Vec::new();
    while !r.is_empty() && ops.len() < max {
        ops.push(T::decode(r));
    }
    ops
}

/// Implements [`arbitrary::Arbitrary`] for a [`Wire`] type by decoding all remaining bytes.
#[macro_export]
macro_rules! impl_arbitrary {
    ($t:ty) => {
        impl<'a> arbitrary::Arbitrary<'a> for $t {
            fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
                let n = u.len();
                let bytes = u.bytes(n)?;
                Ok(<$t as $crate::wire::Wire>::from_bytes(bytes))
            }

            fn arbitrary_take_rest(u: arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
                Ok(<$t as $crate::wire::Wire>::from_bytes(u.take_rest()))
            }
        }
    };
}

/// A small deterministic PRNG (xorshift64*) for the unit tests' random byte strings.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from `seed` (0 is replaced by a fixed odd constant).
    pub fn new(seed: u64) -> Self {
        XorShift(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// Checks, for `cases` random byte strings of up to `max_len` bytes, that decoding is a
/// fixed point of encode-then-decode. Used by every module's `wire_round_trips` test.
pub fn check_round_trip<T: Wire + PartialEq + std::fmt::Debug>(
    seed: u64,
    cases: usize,
    max_len: usize,
) {
    let mut rng = XorShift::new(seed);
    for case in 0..cases {
        let len = (rng.next_u64() as usize) % (max_len + 1);
        let bytes = rng.bytes(len);
        let once = T::from_bytes(&bytes);
        let twice = T::from_bytes(&once.to_bytes());
        assert_eq!(once, twice, "case {case}: bytes {bytes:02x?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_zero() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16(), 0x0201);
        assert!(!r.is_empty());
        assert_eq!(r.u32(), 3);
        assert!(r.is_empty());
        assert_eq!(r.u64(), 0);
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn writer_matches_reader() {
        let mut w = Writer::new();
        w.u8(7);
        w.u16(0x1234);
        w.u32(0xdead_beef);
        w.u64(u64::MAX - 1);
        w.bool(true);
        w.bytes(&[9, 8]);
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8(), 7);
        assert_eq!(r.u16(), 0x1234);
        assert_eq!(r.u32(), 0xdead_beef);
        assert_eq!(r.u64(), u64::MAX - 1);
        assert!(r.bool());
        assert_eq!(r.bytes(2), vec![9, 8]);
        assert!(r.is_empty());
    }

    #[test]
    fn ops_are_bounded() {
        #[derive(Debug, PartialEq)]
        struct B(u8);
        impl Wire for B {
            fn decode(r: &mut Reader<'_>) -> Self {
                B(r.u8())
            }
            fn encode(&self, w: &mut Writer) {
                w.u8(self.0);
            }
        }
        let bytes = vec![1u8; 100];
        let ops: Vec<B> = decode_ops(&mut Reader::new(&bytes), 10);
        assert_eq!(ops.len(), 10);
    }
}
