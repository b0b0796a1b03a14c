// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A model of an iommufd IOAS and a seeded generator of IOAS operations, for a stateful
//! fuzz of the real kernel (`tests/stateful.rs`, run inside the QEMU test host).
//!
//! The model predicts the kernel's answer to every operation from the uapi's documented
//! rules (`include/uapi/linux/iommufd.h`) and the IOAS semantics of
//! `drivers/iommu/iommufd/io_pagetable.c`:
//!
//! * `IOMMU_IOAS_MAP` / `MAP_FILE` / `COPY` with `IOMMU_IOAS_MAP_FIXED_IOVA`: `EINVAL` when
//!   the IOVA is not aligned to the IOAS's `out_iova_alignment` or the range meets a
//!   reserved region (an attached device's software MSI window, or outside its aperture),
//!   `EEXIST` when it meets an existing mapping; each success is one *area*.
//! * `IOMMU_IOAS_COPY` of a source range with no mapping: `ENOENT`.
//! * `IOMMU_IOAS_UNMAP` of a range: areas are removed in IOVA order; an area only partly
//!   inside the range stops the call with `ENOENT` (those before it are already gone); a
//!   range with no area at all is `ENOENT`; otherwise the unmapped byte count. "Unmap all"
//!   (`0`, `u64::MAX`) always succeeds with every mapped byte.
//! * `IOMMU_IOAS_ALLOW_IOVAS`: `EADDRINUSE` when a range meets a reserved region.
//!
//! [`Rng`] is the fixed-seed PRNG (SplitMix64) that makes a run reproducible from its seed.
//!
//! # Example
//!
//! ```
//! use kernel_fuzz::{Answer, IoasModel, IovaRange, SW_MSI};
//!
//! let mut m = IoasModel::new();
//! // An SMMUv3 device attached: its software MSI window is reserved, 4 KiB alignment.
//! m.attach(vec![SW_MSI], 0x1000);
//! assert_eq!(m.predict_map(0x800_0000, 0x1000), Answer::Err(libc::EINVAL));
//! assert_eq!(m.predict_map(0x4000_0000, 0x2000), Answer::Ok);
//! m.map(0x4000_0000, 0x2000);
//! assert_eq!(m.predict_map(0x4000_1000, 0x1000), Answer::Err(libc::EEXIST));
//! assert_eq!(m.unmap(0x4000_0000, 0x1000), Answer::Err(libc::ENOENT)); // would split
//! assert_eq!(m.unmap(0x3000_0000, 0x2000_0000), Answer::Bytes(0x2000));
//! assert_eq!(m.unmap_all(), 0);
//! ```

use std::collections::BTreeMap;

pub use iommufd_ioas::IovaRange;

pub mod nesting;

/// The SMMUv3 software MSI window (`MSI_IOVA_BASE`, 1 MiB) the test host reserves.
pub const SW_MSI: IovaRange = IovaRange {
    start: 0x800_0000,
    last: 0x80f_ffff,
};

/// Default seed when `KERNEL_FUZZ_SEED` is unset.
pub const DEFAULT_SEED: u64 = 0x5eed_f00d_cafe;

/// SplitMix64: a small, fixed, well-mixed PRNG; the sequence depends on the seed only.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What the kernel is expected to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Success.
    Ok,
    /// Success, with this many bytes (unmap).
    Bytes(u64),
    /// Failure with this errno.
    Err(i32),
}

/// One IOAS as the kernel holds it: its areas, its reserved regions and its alignment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoasModel {
    /// Areas by start IOVA: length.
    areas: BTreeMap<u64, u64>,
    reserved: Vec<IovaRange>,
    alignment: u64,
}

fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    a < b.saturating_add(blen) && b < a.saturating_add(alen)
}

impl IoasModel {
    /// A fresh IOAS: nothing mapped, nothing reserved, byte alignment.
    pub fn new() -> Self {
        IoasModel {
            areas: BTreeMap::new(),
            reserved: Vec::new(),
            alignment: 1,
        }
    }

    /// A device was attached: these ranges are now reserved and IOVAs must be aligned to
    /// `alignment` (both as the kernel reports them after the attach).
    pub fn attach(&mut self, reserved: Vec<IovaRange>, alignment: u64) {
        self.reserved = reserved;
        self.alignment = alignment.max(1);
    }

    /// The reserved ranges.
    pub fn reserved(&self) -> &[IovaRange] {
        &self.reserved
    }

    /// The required IOVA alignment.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// The areas, `(start, length)` in IOVA order.
    pub fn areas(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.areas.iter().map(|(s, l)| (*s, *l))
    }

    /// Bytes mapped.
    pub fn mapped_bytes(&self) -> u64 {
        self.areas.values().sum()
    }

    fn meets_reserved(&self, iova: u64, len: u64) -> bool {
        self.reserved.iter().any(|r| {
            let rlen = (r.last - r.start).saturating_add(1);
            overlaps(iova, len, r.start, rlen)
        })
    }

    fn meets_area(&self, iova: u64, len: u64) -> bool {
        let end = iova.saturating_add(len);
        // The last area starting below the end is the only candidate before it.
        self.areas
            .range(..end)
            .next_back()
            .is_some_and(|(s, l)| overlaps(iova, len, *s, *l))
    }

    /// The answer to a fixed-IOVA map of `len` bytes at `iova` (`len > 0`, no overflow).
    pub fn predict_map(&self, iova: u64, len: u64) -> Answer {
        if iova & (self.alignment - 1) != 0 || self.meets_reserved(iova, len) {
            Answer::Err(libc::EINVAL)
        } else if self.meets_area(iova, len) {
            Answer::Err(libc::EEXIST)
        } else {
            Answer::Ok
        }
    }

    /// Records a successful map.
    pub fn map(&mut self, iova: u64, len: u64) {
        self.areas.insert(iova, len);
    }

    /// Whether `[iova, iova + len)` is exactly one area (what a copy source must be here).
    pub fn is_area(&self, iova: u64, len: u64) -> bool {
        self.areas.get(&iova) == Some(&len)
    }

    /// Whether no area meets `[iova, iova + len)`.
    pub fn is_unmapped(&self, iova: u64, len: u64) -> bool {
        !self.meets_area(iova, len)
    }

    /// Applies an unmap of `[iova, iova + len)` and returns the kernel's answer (see the
    /// crate docs for the rules, including the areas removed before a failure).
    pub fn unmap(&mut self, iova: u64, len: u64) -> Answer {
        let last = iova.saturating_add(len - 1);
        let hit: Vec<(u64, u64)> = self
            .areas
            .range(..=last)
            .filter(|(s, l)| overlaps(iova, len, **s, **l))
            .map(|(s, l)| (*s, *l))
            .collect();
        let mut bytes = 0;
        for (s, l) in hit {
            if s < iova || s + (l - 1) > last {
                return Answer::Err(libc::ENOENT);
            }
            self.areas.remove(&s);
            bytes += l;
        }
        if bytes == 0 {
            Answer::Err(libc::ENOENT)
        } else {
            Answer::Bytes(bytes)
        }
    }

    /// Applies "unmap all" and returns the bytes it unmaps.
    pub fn unmap_all(&mut self) -> u64 {
        let bytes = self.mapped_bytes();
        self.areas.clear();
        bytes
    }

    /// The answer to `IOMMU_IOAS_ALLOW_IOVAS` of disjoint, sorted `ranges`.
    pub fn predict_allow(&self, ranges: &[IovaRange]) -> Answer {
        let clash = ranges.iter().any(|r| {
            let len = (r.last - r.start).saturating_add(1);
            self.meets_reserved(r.start, len)
        });
        if clash {
            Answer::Err(libc::EADDRINUSE)
        } else {
            Answer::Ok
        }
    }
}

/// Which of the run's IOASes an operation targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// The IOAS the device is attached to.
    Attached,
    /// An IOAS with no device.
    Bare,
}

/// One generated IOAS operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoasOp {
    /// Map `len` bytes of the memfd at `file_offset` to `iova`.
    Map {
        /// Target IOAS.
        ioas: Which,
        /// IOVA.
        iova: u64,
        /// Length.
        len: u64,
        /// Offset in the backing memfd.
        file_offset: u64,
    },
    /// Unmap a range.
    Unmap {
        /// Target IOAS.
        ioas: Which,
        /// IOVA.
        iova: u64,
        /// Length.
        len: u64,
    },
    /// Copy a source range into the other IOAS.
    Copy {
        /// Source IOAS (the destination is the other one).
        src: Which,
        /// Source IOVA.
        src_iova: u64,
        /// Length.
        len: u64,
        /// Destination IOVA.
        dst_iova: u64,
    },
    /// Set the allowed IOVA ranges (empty clears them).
    Allow {
        /// Target IOAS.
        ioas: Which,
        /// The ranges.
        ranges: Vec<IovaRange>,
    },
    /// Query the IOVA ranges.
    Ranges(Which),
}

/// Page size of the generated ranges.
pub const PAGE: u64 = 0x1000;
/// Size of the memfd backing every mapping.
pub const MEMFD_SIZE: u64 = 16 << 20;
/// Generated IOVAs fall in `[0, IOVA_SPAN)`, around the software MSI window.
pub const IOVA_SPAN: u64 = 0x1000_0000;

/// Generates the next IOAS operation from the models' state.
pub fn generate(rng: &mut Rng, attached: &IoasModel, bare: &IoasModel) -> IoasOp {
    let which = if rng.chance(60) {
        Which::Attached
    } else {
        Which::Bare
    };
    let model = match which {
        Which::Attached => attached,
        Which::Bare => bare,
    };
    let pages = 1 + rng.below(16);
    let len = pages * PAGE;
    let random_iova = |rng: &mut Rng| {
        match rng.below(10) {
            // Near or across the software MSI window.
            0 | 1 => SW_MSI.start - 0x4000 + rng.below(0x10_8000 / PAGE) * PAGE,
            // Unaligned (EINVAL where a device set 4 KiB alignment).
            2 => rng.below(IOVA_SPAN) | 0x200,
            _ => rng.below(IOVA_SPAN / PAGE) * PAGE,
        }
    };
    let existing = |rng: &mut Rng, m: &IoasModel| {
        let n = m.areas.len() as u64;
        (n > 0).then(|| {
            let k = rng.below(n) as usize;
            m.areas().nth(k).unwrap_or((0, PAGE))
        })
    };
    match rng.below(20) {
        0..=7 => {
            let iova = match existing(rng, model) {
                // Over an existing area (EEXIST), sometimes shifted into it.
                Some((s, l)) if rng.chance(25) => s + rng.below(l / PAGE) * PAGE,
                _ => random_iova(rng),
            };
            IoasOp::Map {
                ioas: which,
                iova,
                len,
                file_offset: rng.below((MEMFD_SIZE - len) / PAGE + 1) * PAGE,
            }
        }
        8..=13 => {
            let (iova, len) = match (existing(rng, model), rng.below(4)) {
                (Some(area), 0 | 1) => area,
                // Covering an area and more, or cutting into it.
                (Some((s, l)), 2) => (
                    s.saturating_sub(PAGE * rng.below(3)),
                    l + PAGE * rng.below(4),
                ),
                _ => (random_iova(rng), len),
            };
            IoasOp::Unmap {
                ioas: which,
                iova,
                len,
            }
        }
        14..=16 => {
            let (src_iova, len) = match existing(rng, model) {
                Some(area) if rng.chance(80) => area,
                _ => (random_iova(rng) & !(PAGE - 1), len),
            };
            IoasOp::Copy {
                src: which,
                src_iova,
                len,
                dst_iova: random_iova(rng) & !(PAGE - 1),
            }
        }
        17 => {
            let ranges = if rng.chance(30) {
                Vec::new()
            } else if rng.chance(40) {
                // Across the software MSI window (EADDRINUSE where a device reserves it).
                let start = SW_MSI.start - rng.below(0x100) * PAGE;
                vec![IovaRange {
                    start,
                    last: SW_MSI.start + rng.below(0x200) * PAGE,
                }]
            } else {
                let start = rng.below(IOVA_SPAN / PAGE) * PAGE;
                let len = (1 + rng.below(0x1000)) * PAGE;
                vec![IovaRange {
                    start,
                    last: start + len - 1,
                }]
            };
            IoasOp::Allow {
                ioas: which,
                ranges,
            }
        }
        _ => IoasOp::Ranges(which),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_reproducible() {
        let a: Vec<u64> = (0..5)
            .scan(Rng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..5)
            .scan(Rng::new(7), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(
            a,
            (0..5)
                .scan(Rng::new(8), |r, _| Some(r.next_u64()))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn map_rules() {
        let mut m = IoasModel::new();
        assert_eq!(
            m.predict_map(0x801, 0x10),
            Answer::Ok,
            "byte alignment before attach"
        );
        m.attach(vec![SW_MSI], PAGE);
        assert_eq!(m.predict_map(0x801, 0x1000), Answer::Err(libc::EINVAL));
        assert_eq!(m.predict_map(SW_MSI.last, PAGE), Answer::Err(libc::EINVAL));
        assert_eq!(
            m.predict_map(SW_MSI.start - PAGE, 2 * PAGE),
            Answer::Err(libc::EINVAL)
        );
        assert_eq!(m.predict_map(SW_MSI.last + 1, PAGE), Answer::Ok);
        m.map(0x10_0000, 4 * PAGE);
        assert_eq!(
            m.predict_map(0x10_0000 - PAGE, 2 * PAGE),
            Answer::Err(libc::EEXIST)
        );
        assert_eq!(m.predict_map(0x10_3000, PAGE), Answer::Err(libc::EEXIST));
        assert_eq!(m.predict_map(0x10_4000, PAGE), Answer::Ok);
        assert!(m.is_area(0x10_0000, 4 * PAGE));
        assert!(!m.is_area(0x10_0000, PAGE));
    }

    #[test]
    fn unmap_rules() {
        let mut m = IoasModel::new();
        m.map(0x1000, 0x1000);
        m.map(0x3000, 0x2000);
        m.map(0x8000, 0x1000);
        assert_eq!(
            m.unmap(0x6000, 0x1000),
            Answer::Err(libc::ENOENT),
            "nothing there"
        );
        // Covers the first area, cuts the second: the first goes, then ENOENT.
        assert_eq!(m.unmap(0x1000, 0x3000), Answer::Err(libc::ENOENT));
        assert!(!m.is_area(0x1000, 0x1000));
        assert!(m.is_area(0x3000, 0x2000));
        assert_eq!(m.unmap(0, 0x9000), Answer::Bytes(0x3000));
        assert_eq!(m.mapped_bytes(), 0);
        m.map(0x1000, 0x1000);
        assert_eq!(m.unmap_all(), 0x1000);
        assert_eq!(m.unmap_all(), 0);
    }

    #[test]
    fn allow_rules() {
        let mut m = IoasModel::new();
        let r = IovaRange::new(0x700_0000, 0x8ff_ffff).unwrap();
        assert_eq!(m.predict_allow(&[r]), Answer::Ok);
        m.attach(vec![SW_MSI], PAGE);
        assert_eq!(m.predict_allow(&[r]), Answer::Err(libc::EADDRINUSE));
        assert_eq!(m.predict_allow(&[]), Answer::Ok);
    }

    #[test]
    fn generator_covers_every_operation() {
        let mut rng = Rng::new(DEFAULT_SEED);
        let mut a = IoasModel::new();
        a.attach(vec![SW_MSI], PAGE);
        let b = IoasModel::new();
        let mut seen = [false; 5];
        for _ in 0..2000 {
            let op = generate(&mut rng, &a, &b);
            let k = match &op {
                IoasOp::Map { iova, len, .. } => {
                    if a.predict_map(*iova, *len) == Answer::Ok {
                        a.map(*iova, *len);
                    }
                    0
                }
                IoasOp::Unmap { .. } => 1,
                IoasOp::Copy { .. } => 2,
                IoasOp::Allow { .. } => 3,
                IoasOp::Ranges(_) => 4,
            };
            seen[k] = true;
        }
        assert_eq!(seen, [true; 5]);
    }
}
