// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! IOVA ranges: the allowed-range list of an IOAS and the holes between its entries.
//!
//! `IOMMU_IOAS_IOVA_RANGES` reports the IOVAs a mapping may use; everything between two
//! allowed ranges is reserved by some attached device (on an SMMUv3 the 1 MiB software MSI
//! window at `0x8000000` shows up this way). The kernel's reply is validated here, as hostile
//! input: ranges must be well formed, sorted and disjoint, and the alignment a power of two.

/// A kernel reply of `IOMMU_IOAS_IOVA_RANGES` that breaks the UAPI contract.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IovaRangesError(pub String);

/// An inclusive range of IO virtual addresses, as the uapi `struct iommu_iova_range`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IovaRange {
    /// The first IOVA.
    pub start: u64,
    /// The last IOVA (inclusive).
    pub last: u64,
}

impl IovaRange {
    /// The range `start..=last`; `None` when `start > last`.
    pub fn new(start: u64, last: u64) -> Option<Self> {
        (start <= last).then_some(IovaRange { start, last })
    }

    /// The range `start..start + length`; `None` when `length` is 0 or the end overflows.
    pub fn from_len(start: u64, length: u64) -> Option<Self> {
        let last = start.checked_add(length.checked_sub(1)?)?;
        Some(IovaRange { start, last })
    }

    /// The number of addresses in the range; `None` for the full 64-bit space.
    pub fn len(&self) -> Option<u64> {
        (self.last - self.start).checked_add(1)
    }

    /// Always false: a range holds at least one address. Present for API symmetry.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `iova` is inside the range.
    pub fn contains(&self, iova: u64) -> bool {
        self.start <= iova && iova <= self.last
    }

    /// Whether `other` lies entirely inside this range.
    pub fn covers(&self, other: &IovaRange) -> bool {
        self.start <= other.start && other.last <= self.last
    }

    /// Whether the two ranges share at least one address.
    pub fn overlaps(&self, other: &IovaRange) -> bool {
        self.start <= other.last && other.start <= self.last
    }
}

impl std::fmt::Display for IovaRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}-{:#x}", self.start, self.last)
    }
}

/// The validated answer of `IOMMU_IOAS_IOVA_RANGES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IovaRanges {
    ranges: Vec<IovaRange>,
    alignment: u64,
}

impl IovaRanges {
    /// Validates a reply of the kernel: `ranges` as `(start, last)` pairs and the reported
    /// minimum alignment.
    ///
    /// The UAPI promises sorted, disjoint ranges with `start <= last` and an alignment that is
    /// a power of two no larger than the page size (`out_iova_alignment`); anything else is an
    /// [`IovaRangesError`]. An IOAS with no device attached reports the full range; an empty
    /// list is legal (nothing may be mapped).
    pub fn from_kernel(ranges: &[(u64, u64)], alignment: u64) -> Result<Self, IovaRangesError> {
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(IovaRangesError(format!(
                "alignment {alignment:#x} is not a power of two"
            )));
        }
        let mut out: Vec<IovaRange> = Vec::with_capacity(ranges.len());
        for (i, &(start, last)) in ranges.iter().enumerate() {
            let range = IovaRange::new(start, last).ok_or_else(|| {
                IovaRangesError(format!(
                    "range {i} starts at {start:#x} after its end {last:#x}"
                ))
            })?;
            if let Some(prev) = out.last()
                && prev.last >= range.start
            {
                return Err(IovaRangesError(format!(
                    "range {i} ({range}) is not after range {} ({prev})",
                    i - 1
                )));
            }
            out.push(range);
        }
        Ok(IovaRanges {
            ranges: out,
            alignment,
        })
    }

    /// The allowed ranges, sorted.
    pub fn ranges(&self) -> &[IovaRange] {
        &self.ranges
    }

    /// The minimum IOVA alignment for map and copy (`out_iova_alignment`).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Whether the whole of `range` may be mapped: inside one allowed range.
    pub fn allows(&self, range: &IovaRange) -> bool {
        // Ranges are sorted and disjoint, so at most one can cover `range`.
        let idx = self.ranges.partition_point(|r| r.last < range.start);
        self.ranges.get(idx).is_some_and(|r| r.covers(range))
    }

    /// The reserved holes: every gap below the last allowed IOVA that no allowed range
    /// covers, sorted. On an SMMUv3 with an attached device this includes the software MSI
    /// window, `0x8000000-0x80fffff`. Space above the last allowed range is outside the
    /// IOMMU's input address size, not reserved, and is not reported.
    pub fn holes(&self) -> Vec<IovaRange> {
        let mut holes = Vec::new();
        let mut next = 0u64;
        for r in &self.ranges {
            if r.start > next {
                holes.push(IovaRange {
                    start: next,
                    last: r.start - 1,
                });
            }
            match r.last.checked_add(1) {
                Some(n) => next = n,
                None => break,
            }
        }
        holes
    }

    /// Whether `[iova, iova + length)` meets the reported alignment at both ends.
    pub fn is_aligned(&self, iova: u64, length: u64) -> bool {
        let mask = self.alignment - 1;
        iova & mask == 0 && length & mask == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What the SMMUv3 test host reports after attaching the igb (measured in the QEMU test host).
    fn smmu_ranges() -> IovaRanges {
        IovaRanges::from_kernel(&[(0, 0x7ff_ffff), (0x810_0000, 0xffff_ffff_ffff)], 0x1000).unwrap()
    }

    #[test]
    fn smmu_msi_window_is_a_hole() {
        let r = smmu_ranges();
        assert_eq!(
            r.holes(),
            vec![IovaRange {
                start: 0x800_0000,
                last: 0x80f_ffff
            }]
        );
        assert!(!r.allows(&IovaRange::from_len(0x800_0000, 0x1000).unwrap()));
        assert!(r.allows(&IovaRange::from_len(0x4000_0000, 0x1000_0000).unwrap()));
        // Straddling the hole is refused even though both ends are allowed.
        assert!(!r.allows(&IovaRange::new(0x7ff_f000, 0x810_0fff).unwrap()));
    }

    #[test]
    fn full_range_has_no_holes() {
        let r = IovaRanges::from_kernel(&[(0, u64::MAX)], 1).unwrap();
        assert!(r.holes().is_empty());
        assert_eq!(r.ranges()[0].len(), None);
    }

    #[test]
    fn leading_hole_is_reported() {
        let r = IovaRanges::from_kernel(&[(0x1000, 0xffff)], 0x1000).unwrap();
        assert_eq!(
            r.holes(),
            vec![IovaRange {
                start: 0,
                last: 0xfff
            }]
        );
    }

    #[test]
    fn hostile_replies_are_errors() {
        // start after last
        assert!(IovaRanges::from_kernel(&[(0x2000, 0x1000)], 0x1000).is_err());
        // overlapping
        assert!(IovaRanges::from_kernel(&[(0, 0x2000), (0x2000, 0x3000)], 0x1000).is_err());
        // unsorted
        assert!(IovaRanges::from_kernel(&[(0x5000, 0x6000), (0, 0x1000)], 0x1000).is_err());
        // bad alignment
        assert!(IovaRanges::from_kernel(&[(0, 0x1000)], 0).is_err());
        assert!(IovaRanges::from_kernel(&[(0, 0x1000)], 0x1800).is_err());
    }

    #[test]
    fn empty_list_is_legal_and_allows_nothing() {
        let r = IovaRanges::from_kernel(&[], 0x1000).unwrap();
        assert!(!r.allows(&IovaRange::from_len(0, 0x1000).unwrap()));
        assert!(r.holes().is_empty());
    }

    #[test]
    fn from_len_rejects_zero_and_overflow() {
        assert_eq!(IovaRange::from_len(0x1000, 0), None);
        assert_eq!(IovaRange::from_len(u64::MAX, 2), None);
        assert_eq!(
            IovaRange::from_len(u64::MAX, 1),
            Some(IovaRange {
                start: u64::MAX,
                last: u64::MAX
            })
        );
    }

    #[test]
    fn alignment_check() {
        let r = smmu_ranges();
        assert!(r.is_aligned(0x4000_0000, 0x2000));
        assert!(!r.is_aligned(0x4000_0800, 0x2000));
        assert!(!r.is_aligned(0x4000_0000, 0x2800));
    }

    proptest! {
        /// For any valid reply, allowed ranges and holes partition [0, last allowed IOVA]:
        /// no IOVA is in both, and every IOVA up to the end is in one of them.
        #[test]
        fn holes_and_ranges_partition(mut cuts in proptest::collection::vec(any::<u64>(), 0..16)) {
            cuts.sort_unstable();
            cuts.dedup();
            // Build disjoint ranges from consecutive cut pairs, leaving gaps between pairs.
            let pairs: Vec<(u64, u64)> = cuts.chunks_exact(2).map(|c| (c[0], c[1])).collect();
            let r = IovaRanges::from_kernel(&pairs, 0x1000).unwrap();
            let holes = r.holes();
            for h in &holes {
                for a in r.ranges() {
                    prop_assert!(!h.overlaps(a));
                }
            }
            // Coverage: walk the union in order.
            let mut all: Vec<IovaRange> = holes.iter().chain(r.ranges()).copied().collect();
            all.sort();
            let mut next = 0u64;
            for x in &all {
                prop_assert_eq!(x.start, next);
                match x.last.checked_add(1) { Some(n) => next = n, None => break }
            }
        }

        /// `allows` agrees with a linear scan.
        #[test]
        fn allows_matches_linear_scan(
            mut cuts in proptest::collection::vec(0u64..1 << 20, 0..12),
            start in 0u64..1 << 20, len in 1u64..1 << 12,
        ) {
            cuts.sort_unstable();
            cuts.dedup();
            let pairs: Vec<(u64, u64)> = cuts.chunks_exact(2).map(|c| (c[0], c[1])).collect();
            let r = IovaRanges::from_kernel(&pairs, 1).unwrap();
            let q = IovaRange::from_len(start, len).unwrap();
            let linear = r.ranges().iter().any(|a| a.covers(&q));
            prop_assert_eq!(r.allows(&q), linear);
        }
    }
}
