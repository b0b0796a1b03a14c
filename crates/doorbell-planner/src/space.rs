// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Address-space arithmetic: alignment, merging obstacles, finding gaps. Every function is
//! bounded by the length of its input and uses checked arithmetic.

use hw_defs::iova::IovaRange;

/// `x` rounded up to a multiple of `align` (a power of two); `None` on overflow.
pub(crate) fn align_up(x: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    x.checked_add(align - 1).map(|v| v & !(align - 1))
}

/// Sorts `ranges` and merges those that overlap or touch, giving disjoint, non-adjacent
/// ranges in ascending order.
pub(crate) fn merged(mut ranges: Vec<IovaRange>) -> Vec<IovaRange> {
    ranges.sort_unstable();
    let mut out: Vec<IovaRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(prev) if prev.last.checked_add(1).is_none_or(|next| r.start <= next) => {
                prev.last = prev.last.max(r.last);
            }
            _ => out.push(r),
        }
    }
    out
}

/// The gaps of `[0, max]` not covered by `obstacles` (as returned by [`merged`]), ascending.
pub(crate) fn gaps(obstacles: &[IovaRange], max: u64) -> Vec<IovaRange> {
    let mut out = Vec::with_capacity(obstacles.len() + 1);
    let mut cursor = 0u64;
    for o in obstacles {
        if cursor > max {
            return out;
        }
        if o.start > cursor {
            out.push(IovaRange {
                start: cursor,
                last: (o.start - 1).min(max),
            });
        }
        match o.last.checked_add(1) {
            Some(next) => cursor = cursor.max(next),
            None => return out,
        }
    }
    if cursor <= max {
        out.push(IovaRange {
            start: cursor,
            last: max,
        });
    }
    out
}

/// The lowest `p`, a multiple of `step` (a power of two), such that the footprint
/// `[p - lead, p - lead + span)` lies inside `[0, max]` and misses every obstacle.
///
/// `obstacles` must come from [`merged`]. Gaps are visited in ascending order and the lowest
/// fitting `p` of the first gap that fits is returned, so the answer is the lowest overall.
pub(crate) fn lowest_fit(
    obstacles: &[IovaRange],
    max: u64,
    step: u64,
    lead: u64,
    span: u64,
) -> Option<u64> {
    if span == 0 {
        return None;
    }
    for gap in gaps(obstacles, max) {
        let Some(p) = gap.start.checked_add(lead).and_then(|v| align_up(v, step)) else {
            // Every later gap starts higher: nothing fits anywhere.
            return None;
        };
        let start = p - lead;
        let last = start.checked_add(span - 1)?;
        if last <= gap.last {
            return Some(p);
        }
    }
    None
}

/// Fills `size` bytes from `base` upward into the gaps of `obstacles` below `max`, in chunks
/// whose start and length are multiples of `align` (a power of two; `size` a multiple of
/// it). Returns the chunks, or `None` when they do not fit.
pub(crate) fn fill(
    obstacles: &[IovaRange],
    max: u64,
    base: u64,
    size: u64,
    align: u64,
) -> Option<Vec<IovaRange>> {
    let mut remaining = size;
    let mut out = Vec::new();
    if remaining == 0 {
        return Some(out);
    }
    for gap in gaps(obstacles, max) {
        if gap.last < base {
            continue;
        }
        let start = align_up(gap.start.max(base), align)?;
        if start > gap.last {
            continue;
        }
        // Bytes from `start` to the end of the gap, rounded down to the alignment; the whole
        // 64-bit space (2^64 bytes) does not fit in a u64 and is clamped.
        let avail = (gap.last - start).saturating_add(1) & !(align - 1);
        if avail == 0 {
            continue;
        }
        let take = avail.min(remaining);
        out.push(IovaRange::from_len(start, take)?);
        remaining -= take;
        if remaining == 0 {
            return Some(out);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, last: u64) -> IovaRange {
        IovaRange::new(start, last).unwrap()
    }

    #[test]
    fn merge_sorts_and_coalesces() {
        let m = merged(vec![r(0x30, 0x3f), r(0, 0xf), r(0x10, 0x1f), r(0x35, 0x50)]);
        assert_eq!(m, vec![r(0, 0x1f), r(0x30, 0x50)]);
        assert_eq!(merged(vec![r(0, u64::MAX), r(5, 6)]), vec![r(0, u64::MAX)]);
    }

    #[test]
    fn gaps_cover_the_rest() {
        let m = merged(vec![r(0x10, 0x1f), r(0x40, 0x4f)]);
        assert_eq!(
            gaps(&m, 0xff),
            vec![r(0, 0xf), r(0x20, 0x3f), r(0x50, 0xff)]
        );
        assert_eq!(gaps(&m, 0x30), vec![r(0, 0xf), r(0x20, 0x30)]);
        assert_eq!(gaps(&[r(0, u64::MAX)], u64::MAX), vec![]);
        assert_eq!(gaps(&[], u64::MAX), vec![r(0, u64::MAX)]);
    }

    #[test]
    fn lowest_fit_respects_lead_step_and_obstacles() {
        // A footprint that starts 0x10 before p, 0x40 long, p a multiple of 0x100.
        let m = merged(vec![r(0, 0x1ff), r(0x2f0, 0x2ff)]);
        // p = 0x200 would need 0x1f0 (taken); p = 0x300 needs 0x2f0 (taken); p = 0x400 fits.
        assert_eq!(lowest_fit(&m, 0xfff, 0x100, 0x10, 0x40), Some(0x400));
        assert_eq!(lowest_fit(&m, 0x42f, 0x100, 0x10, 0x40), Some(0x400));
        assert_eq!(lowest_fit(&m, 0x42e, 0x100, 0x10, 0x40), None);
        assert_eq!(lowest_fit(&[], u64::MAX, 1 << 20, 0, 0), None);
        assert_eq!(
            lowest_fit(&[r(0, u64::MAX - 5)], u64::MAX, 1 << 20, 0, 1),
            None
        );
    }

    #[test]
    fn fill_splits_around_obstacles() {
        let m = merged(vec![r(0x8000, 0x8fff)]);
        assert_eq!(
            fill(&m, 0xffff_ffff, 0x4000, 0x8000, 0x1000),
            Some(vec![r(0x4000, 0x7fff), r(0x9000, 0xcfff)])
        );
        assert_eq!(fill(&m, 0xbfff, 0x4000, 0x8000, 0x1000), None);
        assert_eq!(
            fill(&[], u64::MAX, u64::MAX - 0x1fff, 0x2000, 0x1000),
            Some(vec![r(u64::MAX - 0x1fff, u64::MAX)])
        );
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn small_ranges() -> impl Strategy<Value = Vec<IovaRange>> {
        proptest::collection::vec((0u64..512, 1u64..64), 0..8).prop_map(|v| {
            v.into_iter()
                .map(|(s, l)| IovaRange::from_len(s, l).unwrap())
                .collect()
        })
    }

    fn free(obstacles: &[IovaRange], r: &IovaRange) -> bool {
        !obstacles.iter().any(|o| o.overlaps(r))
    }

    proptest! {
        /// `lowest_fit` agrees with a brute-force scan of every candidate.
        #[test]
        fn lowest_fit_is_the_lowest_free_candidate(
            obstacles in small_ranges(),
            max in 0u64..640,
            step_shift in 0u32..6,
            lead in 0u64..40,
            span in 1u64..80,
        ) {
            let step = 1u64 << step_shift;
            let m = merged(obstacles.clone());
            let brute = (0..=max + lead).filter(|p| p % step == 0 && *p >= lead).find(|p| {
                let start = p - lead;
                let r = IovaRange::from_len(start, span).unwrap();
                r.last <= max && free(&obstacles, &r)
            });
            prop_assert_eq!(lowest_fit(&m, max, step, lead, span), brute);
        }

        /// `fill` returns aligned chunks above `base`, inside the space, off the obstacles,
        /// of the requested total; it fails only when the aligned free space is too small.
        #[test]
        fn fill_is_sound_and_complete(
            obstacles in small_ranges(),
            max in 0u64..640,
            base in 0u64..600,
            align_shift in 0u32..5,
            units in 1u64..40,
        ) {
            let align = 1u64 << align_shift;
            let size = units * align;
            let m = merged(obstacles.clone());
            // Free aligned blocks above base.
            let capacity = (0..=max / align)
                .map(|k| k * align)
                .filter(|s| *s >= base)
                .filter(|s| {
                    IovaRange::from_len(*s, align)
                        .is_some_and(|r| r.last <= max && free(&obstacles, &r))
                })
                .count() as u64
                * align;
            match fill(&m, max, base, size, align) {
                Some(chunks) => {
                    let mut total = 0;
                    for c in &chunks {
                        prop_assert!(c.start >= base && c.last <= max);
                        prop_assert_eq!(c.start % align, 0);
                        prop_assert_eq!(c.len().unwrap() % align, 0);
                        prop_assert!(free(&obstacles, c));
                        total += c.len().unwrap();
                    }
                    prop_assert_eq!(total, size);
                }
                None => prop_assert!(capacity < size, "capacity {} >= size {}", capacity, size),
            }
        }
    }
}
