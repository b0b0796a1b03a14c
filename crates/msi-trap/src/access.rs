// Copyright 2025 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Byte-window helpers shared by the config-space and BAR handlers.
//!
//! A trapped access is `(offset, &[u8])` of any length; a register block is a byte image at a
//! base offset. These helpers compute the overlap of the two with checked arithmetic, so an
//! access near `u64::MAX` or of a huge length cannot overflow.

/// How much of a config-space access fell on a capability this crate emulates.
///
/// Config reads and writes are overlays: the VMM fills a read buffer from its own view of
/// config space (the device's, through VFIO), then calls the capability's `read_config`,
/// which overwrites only the bytes it owns. Writes apply only the bytes the capability owns;
/// the rest are the VMM's business.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Coverage {
    /// No byte of the access falls inside the capability: "not mine". Nothing was read or
    /// written.
    Outside,
    /// Some bytes fall inside the capability and some outside; the inside bytes were handled,
    /// the VMM must handle the others.
    Partial,
    /// Every byte of the access falls inside the capability and was handled.
    Inside,
}

/// Overlap of an access `[offset, offset + len)` with a block `[base, base + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Overlap {
    /// Index of the first overlapping byte inside the access buffer.
    pub access_start: usize,
    /// Index of the first overlapping byte inside the block.
    pub block_start: usize,
    /// Number of overlapping bytes.
    pub len: usize,
    /// Whether the whole access lies inside the block.
    pub whole: bool,
}

/// Computes the overlap of an access with a block; `None` when they are disjoint or the
/// access is empty.
pub(crate) fn overlap(base: u64, size: usize, offset: u64, len: usize) -> Option<Overlap> {
    if len == 0 || size == 0 {
        return None;
    }
    let block_end = base.checked_add(size as u64)?;
    // An access whose end overflows u64 is clipped at u64::MAX: it still overlaps correctly.
    let access_end = offset.saturating_add(len as u64);
    let start = offset.max(base);
    let end = access_end.min(block_end);
    if start >= end {
        return None;
    }
    let count = end - start;
    Some(Overlap {
        access_start: (start - offset) as usize,
        block_start: (start - base) as usize,
        len: count as usize,
        whole: start == offset && end == access_end && access_end - offset == len as u64,
    })
}

/// Reads the bytes of `image` (placed at `base`) that overlap `data` (placed at `offset`).
pub(crate) fn read_overlay(image: &[u8], base: u64, offset: u64, data: &mut [u8]) -> Coverage {
    match overlap(base, image.len(), offset, data.len()) {
        None => Coverage::Outside,
        Some(o) => {
            if let (Some(dst), Some(src)) = (
                data.get_mut(o.access_start..o.access_start + o.len),
                image.get(o.block_start..o.block_start + o.len),
            ) {
                dst.copy_from_slice(src);
            }
            if o.whole {
                Coverage::Inside
            } else {
                Coverage::Partial
            }
        }
    }
}

/// Merges the bytes of `data` (placed at `offset`) that overlap `image` (placed at `base`)
/// into `image`, keeping only the bits set in `write_mask` (same length as `image`).
pub(crate) fn write_overlay(
    image: &mut [u8],
    write_mask: &[u8],
    base: u64,
    offset: u64,
    data: &[u8],
) -> Coverage {
    match overlap(base, image.len(), offset, data.len()) {
        None => Coverage::Outside,
        Some(o) => {
            for k in 0..o.len {
                let i = o.block_start + k;
                let (Some(byte), Some(mask), Some(new)) = (
                    image.get_mut(i),
                    write_mask.get(i),
                    data.get(o.access_start + k),
                ) else {
                    break;
                };
                *byte = (*byte & !mask) | (new & mask);
            }
            if o.whole {
                Coverage::Inside
            } else {
                Coverage::Partial
            }
        }
    }
}

/// Little-endian `u32` from `bytes[at..at + 4]`, zero when out of range.
pub(crate) fn le_u32(bytes: &[u8], at: usize) -> u32 {
    match bytes.get(at..at.saturating_add(4)) {
        Some([a, b, c, d]) => u32::from_le_bytes([*a, *b, *c, *d]),
        _ => 0,
    }
}

/// Little-endian `u16` from `bytes[at..at + 2]`, zero when out of range.
pub(crate) fn le_u16(bytes: &[u8], at: usize) -> u16 {
    match bytes.get(at..at.saturating_add(2)) {
        Some([a, b]) => u16::from_le_bytes([*a, *b]),
        _ => 0,
    }
}

/// Stores `value` little-endian at `bytes[at..at + 4]`; does nothing when out of range.
pub(crate) fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
    if let Some(dst) = bytes.get_mut(at..at.saturating_add(4)) {
        dst.copy_from_slice(&value.to_le_bytes());
    }
}

/// Stores `value` little-endian at `bytes[at..at + 2]`; does nothing when out of range.
pub(crate) fn put_u16(bytes: &mut [u8], at: usize, value: u16) {
    if let Some(dst) = bytes.get_mut(at..at.saturating_add(2)) {
        dst.copy_from_slice(&value.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_cases() {
        assert_eq!(overlap(0x40, 12, 0x30, 4), None);
        assert_eq!(overlap(0x40, 12, 0x4c, 4), None);
        assert_eq!(overlap(0x40, 12, 0x40, 0), None);
        let o = overlap(0x40, 12, 0x3e, 4).unwrap();
        assert_eq!(
            (o.access_start, o.block_start, o.len, o.whole),
            (2, 0, 2, false)
        );
        let o = overlap(0x40, 12, 0x4a, 4).unwrap();
        assert_eq!(
            (o.access_start, o.block_start, o.len, o.whole),
            (0, 10, 2, false)
        );
        let o = overlap(0x40, 12, 0x44, 4).unwrap();
        assert_eq!(
            (o.access_start, o.block_start, o.len, o.whole),
            (0, 4, 4, true)
        );
    }

    #[test]
    fn overlap_never_overflows() {
        assert_eq!(overlap(0x40, 12, u64::MAX, 8), None);
        assert!(overlap(u64::MAX - 4, 4, u64::MAX - 2, 8).is_some_and(|o| !o.whole));
        assert_eq!(overlap(u64::MAX - 2, 8, 0, 4), None);
    }

    #[test]
    fn write_overlay_respects_mask() {
        let mut image = [0u8; 4];
        let mask = [0x00, 0xff, 0x0f, 0x00];
        assert_eq!(
            write_overlay(&mut image, &mask, 0x10, 0x10, &[0xff; 4]),
            Coverage::Inside
        );
        assert_eq!(image, [0x00, 0xff, 0x0f, 0x00]);
        assert_eq!(
            write_overlay(&mut image, &mask, 0x10, 0x0e, &[0; 4]),
            Coverage::Partial
        );
        assert_eq!(image, [0x00, 0x00, 0x0f, 0x00]);
    }
}
