// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Target `region_caps`: the `VFIO_DEVICE_GET_REGION_INFO` capability-chain parser
//! ([`parse_region_caps`]) over any buffer and first offset.
//!
//! A reference walker written from the uapi (`struct vfio_info_cap_header { u16 id; u16
//! version; u32 next; }`, offsets from the buffer start, `next == 0` ends the chain, no
//! capability inside the 32-byte `struct vfio_region_info`) computes where every
//! capability and its body lie. Invariants:
//!
//! * the parser accepts exactly the chains the walker accepts, with the same capabilities
//!   in the same order, and every capability it returns (header and body) lies inside the
//!   buffer;
//! * the number of capabilities is at most `len / 8`;
//! * round trip: the capabilities serialized into a fresh buffer parse back equal.

use vfio_cdev::{
    CapChainError, REGION_INFO_HEADER_LEN, RegionCap, SparseMmapArea, parse_region_caps,
};

use crate::wire::{Reader, Wire, Writer};

const SPARSE: u16 = 1;
const TYPE: u16 = 2;
const MSIX_MAPPABLE: u16 = 3;
const SSATGT: u16 = 4;
const LNKSPD: u16 = 5;

/// A region-info buffer and the `cap_offset` the kernel reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionCapsInput {
    /// `cap_offset`.
    pub cap_offset: u16,
    /// The buffer (at most 8 KiB).
    pub buf: Vec<u8>,
}

impl Wire for RegionCapsInput {
    fn decode(r: &mut Reader<'_>) -> Self {
        let cap_offset = r.u16();
        let n = r.remaining().min(8192);
        RegionCapsInput {
            cap_offset,
            buf: r.bytes(n),
        }
    }
    fn encode(&self, w: &mut Writer) {
        w.u16(self.cap_offset);
        w.bytes(&self.buf);
    }
}

crate::impl_arbitrary!(RegionCapsInput);

fn rd<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// The reference walker: each capability with its offset and extent, or `None` for a
/// chain the uapi does not allow.
fn walk(buf: &[u8], first: u32) -> Option<Vec<(usize, usize, RegionCap)>> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut next = first as usize;
    while next != 0 {
        let at = next;
        if at < REGION_INFO_HEADER_LEN || !at.is_multiple_of(4) || !seen.insert(at) {
            return None;
        }
        let id = u16::from_ne_bytes(rd(buf, at)?);
        let version = u16::from_ne_bytes(rd(buf, at + 2)?);
        next = u32::from_ne_bytes(rd(buf, at + 4)?) as usize;
        let body = at + 8;
        let (cap, end) = match id {
            SPARSE => {
                let n = u32::from_ne_bytes(rd(buf, body)?) as usize;
                let end = body + 8 + 16 * n;
                if end > buf.len() {
                    return None;
                }
                let mut areas = Vec::new();
                for i in 0..n {
                    let a = body + 8 + 16 * i;
                    let offset = u64::from_ne_bytes(rd(buf, a)?);
                    let size = u64::from_ne_bytes(rd(buf, a + 8)?);
                    offset.checked_add(size)?;
                    areas.push(SparseMmapArea { offset, size });
                }
                (RegionCap::SparseMmap(areas), end)
            }
            TYPE => (
                RegionCap::Type {
                    ty: u32::from_ne_bytes(rd(buf, body)?),
                    subtype: u32::from_ne_bytes(rd(buf, body + 4)?),
                },
                body + 8,
            ),
            MSIX_MAPPABLE => (RegionCap::MsixMappable, body),
            SSATGT => (
                RegionCap::Nvlink2Ssatgt {
                    tgt: u64::from_ne_bytes(rd(buf, body)?),
                },
                body + 8,
            ),
            LNKSPD => (
                RegionCap::Nvlink2Lnkspd {
                    link_speed: u32::from_ne_bytes(rd(buf, body)?),
                },
                body + 4,
            ),
            _ => (RegionCap::Unknown { id, version }, body),
        };
        out.push((at, end, cap));
    }
    Some(out)
}

/// Serializes capabilities into a fresh buffer, each 8-byte aligned, linked in order.
pub fn serialize(caps: &[RegionCap]) -> (Vec<u8>, u32) {
    let mut buf = vec![0u8; REGION_INFO_HEADER_LEN];
    let mut first = 0u32;
    let mut link: Option<usize> = None;
    for cap in caps {
        while !buf.len().is_multiple_of(8) {
            buf.push(0);
        }
        let at = buf.len();
        match link {
            Some(p) => buf[p..p + 4].copy_from_slice(&(at as u32).to_ne_bytes()),
            None => first = at as u32,
        }
        let (id, version) = match cap {
            RegionCap::SparseMmap(_) => (SPARSE, 1),
            RegionCap::Type { .. } => (TYPE, 1),
            RegionCap::MsixMappable => (MSIX_MAPPABLE, 1),
            RegionCap::Nvlink2Ssatgt { .. } => (SSATGT, 1),
            RegionCap::Nvlink2Lnkspd { .. } => (LNKSPD, 1),
            RegionCap::Unknown { id, version } => (*id, *version),
        };
        buf.extend_from_slice(&id.to_ne_bytes());
        buf.extend_from_slice(&version.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        link = Some(at + 4);
        match cap {
            RegionCap::SparseMmap(areas) => {
                buf.extend_from_slice(&(areas.len() as u32).to_ne_bytes());
                buf.extend_from_slice(&0u32.to_ne_bytes());
                for a in areas {
                    buf.extend_from_slice(&a.offset.to_ne_bytes());
                    buf.extend_from_slice(&a.size.to_ne_bytes());
                }
            }
            RegionCap::Type { ty, subtype } => {
                buf.extend_from_slice(&ty.to_ne_bytes());
                buf.extend_from_slice(&subtype.to_ne_bytes());
            }
            RegionCap::Nvlink2Ssatgt { tgt } => buf.extend_from_slice(&tgt.to_ne_bytes()),
            RegionCap::Nvlink2Lnkspd { link_speed } => {
                buf.extend_from_slice(&link_speed.to_ne_bytes());
                buf.extend_from_slice(&0u32.to_ne_bytes());
            }
            RegionCap::MsixMappable | RegionCap::Unknown { .. } => {}
        }
    }
    (buf, first)
}

/// Replays one input, panicking on the first broken invariant.
pub fn run(input: &RegionCapsInput) {
    let buf = &input.buf;
    let first = u32::from(input.cap_offset);
    let got = parse_region_caps(buf, first);
    let want = walk(buf, first);
    match (&got, &want) {
        (Ok(caps), Some(walked)) => {
            let w: Vec<RegionCap> = walked.iter().map(|(_, _, c)| c.clone()).collect();
            assert_eq!(caps, &w, "parser and reference walker disagree");
            for (at, end, cap) in walked {
                assert!(
                    *at >= REGION_INFO_HEADER_LEN && at + 8 <= buf.len() && *end <= buf.len(),
                    "capability {cap:?} at {at} ends at {end}, buffer is {}",
                    buf.len()
                );
            }
            assert!(
                caps.len() <= buf.len() / 8,
                "{} capabilities in {} bytes",
                caps.len(),
                buf.len()
            );
            let (fresh, first) = serialize(caps);
            match parse_region_caps(&fresh, first) {
                Ok(again) => assert_eq!(&again, caps, "round trip"),
                Err(e) => panic!("serialized chain refused: {e}"),
            }
        }
        (Err(e), None) => {
            // Every refusal names an offset inside what was walked, or the chain's start.
            if let CapChainError::Loop { offset } = e {
                assert!((*offset as usize) < buf.len(), "loop at {offset}");
            }
        }
        _ => panic!("parser says {got:?}, the reference walker says {want:?}"),
    }
}

/// Seeds: the igb's BAR3 (sparse mmap, MSI-X mappable), a type cap, and broken chains.
pub fn seeds() -> Vec<(&'static str, RegionCapsInput)> {
    let ok = |caps: &[RegionCap]| {
        let (buf, first) = serialize(caps);
        RegionCapsInput {
            cap_offset: first as u16,
            buf,
        }
    };
    let igb = ok(&[
        RegionCap::SparseMmap(vec![SparseMmapArea {
            offset: 0x1000,
            size: 0x3000,
        }]),
        RegionCap::MsixMappable,
    ]);
    let mut looped = igb.clone();
    let last = looped.buf.len() - 8;
    let first = u32::from(looped.cap_offset);
    looped.buf[last + 4..last + 8].copy_from_slice(&first.to_ne_bytes());
    let mut truncated = ok(&[RegionCap::SparseMmap(vec![
        SparseMmapArea {
            offset: 0,
            size: 1
        };
        3
    ])]);
    truncated.buf.truncate(truncated.buf.len() - 4);
    vec![
        ("igb_bar3", igb),
        (
            "type_nvlink",
            ok(&[
                RegionCap::Type { ty: 1, subtype: 3 },
                RegionCap::Nvlink2Ssatgt { tgt: 0x1234 },
                RegionCap::Nvlink2Lnkspd { link_speed: 9 },
                RegionCap::Unknown { id: 77, version: 2 },
            ]),
        ),
        ("loop", looped),
        ("truncated_sparse", truncated),
        (
            "in_header",
            RegionCapsInput {
                cap_offset: 8,
                buf: vec![0; 64],
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::check_round_trip;

    #[test]
    fn wire_round_trips() {
        check_round_trip::<RegionCapsInput>(6, 200, 300);
    }

    #[test]
    fn seeds_replay_clean() {
        for (name, s) in seeds() {
            assert_eq!(RegionCapsInput::from_bytes(&s.to_bytes()), s, "seed {name}");
            run(&s);
        }
        assert!(parse_region_caps(&seeds()[2].1.buf, u32::from(seeds()[2].1.cap_offset)).is_err());
    }

    #[test]
    fn random_inputs_replay() {
        let mut rng = crate::wire::XorShift::new(17);
        for _ in 0..500 {
            let len = (rng.next_u64() % 300) as usize;
            let mut bytes = rng.bytes(len);
            // Point the chain inside the buffer now and then.
            if bytes.len() > 2 && bytes[0] & 1 == 0 {
                bytes[0] = (32 + (bytes[0] % 64)) & !3;
                bytes[1] = 0;
            }
            run(&RegionCapsInput::from_bytes(&bytes));
        }
    }
}
