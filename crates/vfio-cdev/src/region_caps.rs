// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The capability chain of `VFIO_DEVICE_GET_REGION_INFO`, parsed from bytes.
//!
//! The kernel appends capabilities after `struct vfio_region_info` (32 bytes) and links them
//! by byte offsets from the start of the buffer: each starts with
//! `struct vfio_info_cap_header { u16 id; u16 version; u32 next; }`, `next == 0` ends the
//! chain. This parser treats the blob as hostile: every offset is checked against the buffer
//! and the header, every body against the buffer, loops and over-long chains are errors, and
//! nothing is read through a pointer cast.

use vfio_bindings::bindings::vfio::{
    VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, VFIO_REGION_INFO_CAP_NVLINK2_LNKSPD,
    VFIO_REGION_INFO_CAP_NVLINK2_SSATGT, VFIO_REGION_INFO_CAP_SPARSE_MMAP,
    VFIO_REGION_INFO_CAP_TYPE,
};

/// Size of `struct vfio_region_info`, before which no capability may start.
pub const REGION_INFO_HEADER_LEN: usize = 32;
/// Size of `struct vfio_info_cap_header`.
const CAP_HEADER_LEN: usize = 8;

/// One mmap-able area of a region (`struct vfio_region_sparse_mmap_area`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SparseMmapArea {
    /// Offset of the area within the region.
    pub offset: u64,
    /// Size of the area.
    pub size: u64,
}

/// A region capability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionCap {
    /// `VFIO_REGION_INFO_CAP_SPARSE_MMAP`: only these areas of the region may be mmap'ed.
    SparseMmap(Vec<SparseMmapArea>),
    /// `VFIO_REGION_INFO_CAP_TYPE`: a device-specific region's type and subtype.
    Type {
        /// `type`.
        ty: u32,
        /// `subtype`.
        subtype: u32,
    },
    /// `VFIO_REGION_INFO_CAP_MSIX_MAPPABLE`: the page holding the MSI-X table may be
    /// mmap'ed (the kernel no longer protects it).
    MsixMappable,
    /// `VFIO_REGION_INFO_CAP_NVLINK2_SSATGT`.
    Nvlink2Ssatgt {
        /// `tgt`.
        tgt: u64,
    },
    /// `VFIO_REGION_INFO_CAP_NVLINK2_LNKSPD`.
    Nvlink2Lnkspd {
        /// `link_speed`.
        link_speed: u32,
    },
    /// A capability this crate does not know; skipped over, kept for the record.
    Unknown {
        /// `id`.
        id: u16,
        /// `version`.
        version: u16,
    },
}

/// Why a capability chain was rejected. Offsets are byte offsets into the info buffer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CapChainError {
    /// A capability starts inside `struct vfio_region_info`.
    #[error("capability at offset {offset} starts inside the 32-byte region info header")]
    InHeader {
        /// The offending offset.
        offset: u32,
    },
    /// A capability offset is not 4-byte aligned.
    #[error("capability at offset {offset} is not 4-byte aligned")]
    Misaligned {
        /// The offending offset.
        offset: u32,
    },
    /// A capability header or body runs past the end of the buffer.
    #[error("capability id {id} at offset {offset} needs {need} bytes, buffer is {len}")]
    Truncated {
        /// The capability ID (0 when even the header did not fit).
        id: u16,
        /// Its offset.
        offset: u32,
        /// Bytes it needs from its offset.
        need: u64,
        /// Buffer length.
        len: usize,
    },
    /// The chain comes back to an offset it already visited.
    #[error("capability chain loops back to offset {offset}")]
    Loop {
        /// The offset visited twice.
        offset: u32,
    },
    /// A sparse mmap area's end overflows.
    #[error("sparse mmap area {index} at {offset:#x}+{size:#x} overflows")]
    AreaOverflow {
        /// Area index.
        index: u32,
        /// Area offset.
        offset: u64,
        /// Area size.
        size: u64,
    },
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}

/// Parses the chain starting at `cap_offset` in `buf` (the whole info buffer, header
/// included). `cap_offset == 0` means no capabilities.
///
/// Every capability occupies at least its 8-byte header, so a chain can have at most
/// `buf.len() / 8` entries; visiting an offset twice is a loop. Both bound the walk.
pub fn parse_region_caps(buf: &[u8], cap_offset: u32) -> Result<Vec<RegionCap>, CapChainError> {
    let len = buf.len();
    let truncated = |id: u16, offset: u32, need: u64| CapChainError::Truncated {
        id,
        offset,
        need,
        len,
    };
    let mut caps = Vec::new();
    // One bit per 4-byte slot: offsets are 4-aligned, so this detects every revisit.
    let mut visited = vec![0u64; len / 4 / 64 + 1];
    let mut next = cap_offset;
    while next != 0 {
        let offset = next;
        let at = offset as usize;
        if at < REGION_INFO_HEADER_LEN {
            return Err(CapChainError::InHeader { offset });
        }
        if !at.is_multiple_of(4) {
            return Err(CapChainError::Misaligned { offset });
        }
        if at.checked_add(CAP_HEADER_LEN).is_none_or(|end| end > len) {
            return Err(truncated(0, offset, CAP_HEADER_LEN as u64));
        }
        let slot = at / 4;
        let (word, bit) = (slot / 64, 1u64 << (slot % 64));
        // `at + 8 <= len`, so `slot < len / 4` and `word` is in range.
        if visited[word] & bit != 0 {
            return Err(CapChainError::Loop { offset });
        }
        visited[word] |= bit;

        // The header fits (checked above), so these reads succeed.
        let id = u16_at(buf, at).unwrap_or(0);
        let version = u16_at(buf, at + 2).unwrap_or(0);
        next = u32_at(buf, at + 4).unwrap_or(0);
        let body = at + CAP_HEADER_LEN;

        let cap = match u32::from(id) {
            VFIO_REGION_INFO_CAP_SPARSE_MMAP => {
                let nr_areas = u32_at(buf, body).ok_or(truncated(id, offset, 16))?;
                // header + nr_areas + reserved + nr_areas * 16
                let need = 16u64 + u64::from(nr_areas) * 16;
                if (at as u64)
                    .checked_add(need)
                    .is_none_or(|end| end > len as u64)
                {
                    return Err(truncated(id, offset, need));
                }
                let mut areas = Vec::with_capacity(nr_areas as usize);
                for i in 0..nr_areas {
                    let a = body + 8 + 16 * i as usize;
                    let area_offset = u64_at(buf, a).ok_or(truncated(id, offset, need))?;
                    let size = u64_at(buf, a + 8).ok_or(truncated(id, offset, need))?;
                    if area_offset.checked_add(size).is_none() {
                        return Err(CapChainError::AreaOverflow {
                            index: i,
                            offset: area_offset,
                            size,
                        });
                    }
                    areas.push(SparseMmapArea {
                        offset: area_offset,
                        size,
                    });
                }
                RegionCap::SparseMmap(areas)
            }
            VFIO_REGION_INFO_CAP_TYPE => {
                let ty = u32_at(buf, body).ok_or(truncated(id, offset, 16))?;
                let subtype = u32_at(buf, body + 4).ok_or(truncated(id, offset, 16))?;
                RegionCap::Type { ty, subtype }
            }
            VFIO_REGION_INFO_CAP_MSIX_MAPPABLE => RegionCap::MsixMappable,
            VFIO_REGION_INFO_CAP_NVLINK2_SSATGT => RegionCap::Nvlink2Ssatgt {
                tgt: u64_at(buf, body).ok_or(truncated(id, offset, 16))?,
            },
            VFIO_REGION_INFO_CAP_NVLINK2_LNKSPD => RegionCap::Nvlink2Lnkspd {
                link_speed: u32_at(buf, body).ok_or(truncated(id, offset, 16))?,
            },
            _ => RegionCap::Unknown { id, version },
        };
        caps.push(cap);
    }
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds an info buffer: a 32-byte header, then the given capabilities laid out in
    /// order, each `(id, version, body)` linked to the next.
    fn blob(caps: &[(u16, u16, Vec<u8>)]) -> (Vec<u8>, u32) {
        let mut buf = vec![0u8; REGION_INFO_HEADER_LEN];
        let mut first = 0u32;
        let mut prev_next_at: Option<usize> = None;
        for (id, version, body) in caps {
            while !buf.len().is_multiple_of(8) {
                buf.push(0);
            }
            let at = buf.len();
            if let Some(p) = prev_next_at {
                buf[p..p + 4].copy_from_slice(&(at as u32).to_ne_bytes());
            } else {
                first = at as u32;
            }
            buf.extend_from_slice(&id.to_ne_bytes());
            buf.extend_from_slice(&version.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            prev_next_at = Some(at + 4);
            buf.extend_from_slice(body);
        }
        (buf, first)
    }

    fn sparse_body(areas: &[(u64, u64)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(areas.len() as u32).to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        for (o, s) in areas {
            b.extend_from_slice(&o.to_ne_bytes());
            b.extend_from_slice(&s.to_ne_bytes());
        }
        b
    }

    #[test]
    fn no_caps() {
        assert_eq!(parse_region_caps(&[0; 32], 0), Ok(vec![]));
    }

    /// What vfio-pci reports for the igb's BAR3 (MSI-X table BAR) on the test host.
    #[test]
    fn msix_mappable_and_sparse() {
        let (buf, first) = blob(&[
            (1, 1, sparse_body(&[(0, 0x3000), (0x4000, 0xc000)])),
            (3, 1, vec![]),
        ]);
        assert_eq!(
            parse_region_caps(&buf, first),
            Ok(vec![
                RegionCap::SparseMmap(vec![
                    SparseMmapArea {
                        offset: 0,
                        size: 0x3000
                    },
                    SparseMmapArea {
                        offset: 0x4000,
                        size: 0xc000
                    }
                ]),
                RegionCap::MsixMappable
            ])
        );
    }

    #[test]
    fn type_and_unknown_caps() {
        let mut ty = Vec::new();
        ty.extend_from_slice(&0x8086_0000u32.to_ne_bytes());
        ty.extend_from_slice(&3u32.to_ne_bytes());
        let (buf, first) = blob(&[(2, 1, ty), (99, 7, vec![1, 2, 3, 4])]);
        assert_eq!(
            parse_region_caps(&buf, first),
            Ok(vec![
                RegionCap::Type {
                    ty: 0x8086_0000,
                    subtype: 3
                },
                RegionCap::Unknown { id: 99, version: 7 }
            ])
        );
    }

    #[test]
    fn offset_in_header_is_rejected() {
        let buf = vec![0u8; 64];
        assert_eq!(
            parse_region_caps(&buf, 16),
            Err(CapChainError::InHeader { offset: 16 })
        );
    }

    #[test]
    fn misaligned_offset_is_rejected() {
        let buf = vec![0u8; 64];
        assert_eq!(
            parse_region_caps(&buf, 34),
            Err(CapChainError::Misaligned { offset: 34 })
        );
    }

    #[test]
    fn out_of_bounds_offset_is_rejected() {
        let buf = vec![0u8; 64];
        assert!(matches!(
            parse_region_caps(&buf, 60),
            Err(CapChainError::Truncated { offset: 60, .. })
        ));
        assert!(matches!(
            parse_region_caps(&buf, !3u32),
            Err(CapChainError::Truncated { .. })
        ));
    }

    #[test]
    fn self_loop_and_cycle_are_rejected() {
        let (mut buf, first) = blob(&[(3, 1, vec![])]);
        let at = first as usize;
        buf[at + 4..at + 8].copy_from_slice(&first.to_ne_bytes());
        assert_eq!(
            parse_region_caps(&buf, first),
            Err(CapChainError::Loop { offset: first })
        );

        let (mut buf, first) = blob(&[(3, 1, vec![]), (3, 1, vec![]), (3, 1, vec![])]);
        // last -> first
        let last = buf.len() - 8;
        buf[last + 4..last + 8].copy_from_slice(&first.to_ne_bytes());
        assert_eq!(
            parse_region_caps(&buf, first),
            Err(CapChainError::Loop { offset: first })
        );
    }

    #[test]
    fn truncated_sparse_body_is_rejected() {
        // Claims 1000 areas but carries one.
        let mut body = sparse_body(&[(0, 0x1000)]);
        body[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        let (buf, first) = blob(&[(1, 1, body)]);
        assert!(matches!(
            parse_region_caps(&buf, first),
            Err(CapChainError::Truncated {
                id: 1,
                need: 16016,
                ..
            })
        ));
        // nr_areas = u32::MAX must not allocate or overflow.
        let mut body = sparse_body(&[]);
        body[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        let (buf, first) = blob(&[(1, 1, body)]);
        assert!(matches!(
            parse_region_caps(&buf, first),
            Err(CapChainError::Truncated { id: 1, .. })
        ));
    }

    #[test]
    fn truncated_type_body_is_rejected() {
        let (buf, first) = blob(&[(2, 1, vec![0, 0, 0, 0])]);
        assert!(matches!(
            parse_region_caps(&buf, first),
            Err(CapChainError::Truncated { id: 2, .. })
        ));
    }

    #[test]
    fn area_overflow_is_rejected() {
        let (buf, first) = blob(&[(1, 1, sparse_body(&[(u64::MAX, 2)]))]);
        assert!(matches!(
            parse_region_caps(&buf, first),
            Err(CapChainError::AreaOverflow { index: 0, .. })
        ));
    }

    proptest! {
        /// Arbitrary bytes and start offsets never panic, and a successful parse yields at most
        /// one capability per 8 bytes of buffer.
        #[test]
        fn arbitrary_blobs_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..512),
                                       start in any::<u32>()) {
            if let Ok(caps) = parse_region_caps(&buf, start) {
                prop_assert!(caps.len() <= buf.len() / 8);
            }
        }

        /// Well-formed chains of known capabilities round-trip.
        #[test]
        fn well_formed_chains_round_trip(kinds in proptest::collection::vec(0u8..3, 0..8)) {
            let caps: Vec<(u16, u16, Vec<u8>)> = kinds.iter().map(|k| match k {
                0 => (3, 1, vec![]),
                1 => (1, 1, sparse_body(&[(0x1000, 0x2000)])),
                _ => (2, 1, vec![1, 0, 0, 0, 2, 0, 0, 0]),
            }).collect();
            let (buf, first) = blob(&caps);
            let parsed = parse_region_caps(&buf, first).unwrap();
            prop_assert_eq!(parsed.len(), kinds.len());
        }
    }
}
