// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Target `cap_list`: the config-space capability-list parser
//! ([`CapabilityList::parse`] and [`CapabilityList::parse_lenient`]) over any image.
//!
//! Invariants:
//!
//! * strict and lenient parses agree: an `Ok` parse is a lenient parse with no fault and
//!   the same lists; an error is the first fault the lenient parse reports;
//! * every standard capability is dword aligned at or above 0x40, its body (of the length
//!   the parser reports) fits in 256 bytes, no two overlap, its ID is the image's byte,
//!   and the list follows the image's pointers from 0x34 (PCI 3.0 §6.7);
//! * every extended capability is dword aligned in 0x100..0x1000, appears once, and
//!   carries the header the image holds there (PCIe Base 6.0 §7.6.3);
//! * `find`, `msi` and `msix` return the first capability with the ID;
//! * round trip: an image rebuilt from the parsed lists alone parses to the same lists;
//! * the MSI and MSI-X capability decoders accept or refuse what was found without panic.

use msi_trap::caps::{CapabilityList, PCI_CAP_ID_MSI, PCI_CAP_ID_MSIX};
use msi_trap::msi::MsiCapability;
use msi_trap::msix::cap::MsixCapability;

use crate::wire::{Reader, Wire, Writer};

/// A config-space image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapInput {
    /// 0: 256 bytes, 1: 4096 bytes, 2: exactly the bytes given (usually a wrong size).
    pub size_sel: u8,
    /// The image's first bytes (at most 4096); the rest is zero.
    pub image: Vec<u8>,
}

impl Wire for CapInput {
    fn decode(r: &mut Reader<'_>) -> Self {
        let size_sel = r.u8() % 3;
        let n = r.remaining().min(4096);
        CapInput {
            size_sel,
            image: r.bytes(n),
        }
    }
    fn encode(&self, w: &mut Writer) {
        w.u8(self.size_sel);
        w.bytes(&self.image);
    }
}

crate::impl_arbitrary!(CapInput);

impl CapInput {
    /// The image at its chosen size.
    pub fn config(&self) -> Vec<u8> {
        let size = match self.size_sel {
            0 => 256,
            1 => 4096,
            _ => self.image.len(),
        };
        let mut c = self.image.clone();
        c.resize(size, 0);
        c
    }
}

fn le32(c: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([c[at], c[at + 1], c[at + 2], c[at + 3]])
}

/// Replays one input, panicking on the first broken invariant.
pub fn run(input: &CapInput) {
    let config = input.config();
    let strict = CapabilityList::parse(&config);
    let lenient = CapabilityList::parse_lenient(&config);
    let (list, lenient) = match (strict, lenient) {
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "strict and lenient refuse the image differently");
            assert!(
                config.len() != 256 && config.len() != 4096,
                "refused a {}-byte image",
                config.len()
            );
            return;
        }
        (Ok(list), Ok(l)) => {
            assert!(
                l.standard_error.is_none() && l.extended_error.is_none(),
                "{l:?}"
            );
            assert_eq!(l.list, list, "lenient list differs");
            (list, l)
        }
        (Err(e), Ok(l)) => {
            let first = l.standard_error.clone().or(l.extended_error.clone());
            assert_eq!(
                first,
                Some(e),
                "strict error is not the first lenient fault"
            );
            (l.list.clone(), l)
        }
        (Ok(list), Err(e)) => panic!("strict parse of {list:?} but lenient refuses: {e}"),
    };
    let std_ok = lenient.standard_error.is_none();
    let ext_ok = lenient.extended_error.is_none();

    // Standard list (PCI 3.0 §6.7).
    let caps = list.standard();
    let mut pointer = usize::from(config[0x34] & !3);
    for (i, c) in caps.iter().enumerate() {
        let (off, len) = (usize::from(c.offset), usize::from(c.len));
        assert!(
            config[0x06] & 0x10 != 0,
            "capabilities without Status.CapList"
        );
        assert_eq!(off, pointer, "capability {i} is not where the list points");
        assert!(off >= 0x40 && off % 4 == 0, "capability at {off:#x}");
        assert!(
            len >= 2 && off + len <= 256,
            "capability at {off:#x} of {len} bytes"
        );
        assert_eq!(c.id, config[off], "ID of capability at {off:#x}");
        for other in &caps[..i] {
            let (o, l) = (usize::from(other.offset), usize::from(other.len));
            assert!(
                off + len <= o || o + l <= off,
                "capabilities at {off:#x} and {o:#x} overlap"
            );
        }
        if c.id == PCI_CAP_ID_MSI {
            let _ = MsiCapability::parse(&config, c.offset);
        }
        if c.id == PCI_CAP_ID_MSIX {
            let _ = MsixCapability::parse(&config, c.offset);
        }
        pointer = usize::from(config[off + 1] & !3);
    }
    if std_ok && config[0x06] & 0x10 != 0 {
        assert_eq!(pointer, 0, "standard list ends before its last pointer");
    }
    for id in [PCI_CAP_ID_MSI, PCI_CAP_ID_MSIX, 0x01, 0x10] {
        assert_eq!(list.find(id), caps.iter().copied().find(|c| c.id == id));
    }
    assert_eq!(list.msi(), list.find(PCI_CAP_ID_MSI));
    assert_eq!(list.msix(), list.find(PCI_CAP_ID_MSIX));

    // Extended list (PCIe Base 6.0 §7.6.3).
    let ext = list.extended();
    if config.len() != 4096 {
        assert!(ext.is_empty(), "extended capabilities in a 256-byte image");
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut expect = 0x100usize;
    for c in ext {
        let off = usize::from(c.offset);
        assert_eq!(off, expect, "extended capability not where the list points");
        assert!(
            (0x100..0x1000).contains(&off) && off % 4 == 0,
            "extended at {off:#x}"
        );
        assert!(seen.insert(off), "extended capability at {off:#x} twice");
        let h = le32(&config, off);
        assert_eq!(
            (u32::from(c.id), u32::from(c.version)),
            (h & 0xffff, (h >> 16) & 0xf)
        );
        expect = ((h >> 20) & 0xffc) as usize;
        assert_eq!(list.find_extended(c.id).map(|x| x.id), Some(c.id));
    }
    if ext_ok && !ext.is_empty() {
        assert_eq!(expect, 0, "extended list ends before its last pointer");
    }

    // Round trip: rebuild an image from what was parsed, parse it again.
    if std_ok && ext_ok && config.len() == 4096 || std_ok && config.len() == 256 {
        let mut rebuilt = vec![0u8; config.len()];
        if !caps.is_empty() {
            rebuilt[0x06] = 0x10;
            rebuilt[0x34] = caps[0].offset;
        }
        for (i, c) in caps.iter().enumerate() {
            let off = usize::from(c.offset);
            rebuilt[off] = c.id;
            rebuilt[off + 1] = caps.get(i + 1).map_or(0, |n| n.offset);
            if c.id == PCI_CAP_ID_MSI {
                // The parser sizes MSI from Message Control: keep it.
                rebuilt[off + 2] = config[off + 2];
                rebuilt[off + 3] = config[off + 3];
            }
        }
        for (i, c) in ext.iter().enumerate() {
            let off = usize::from(c.offset);
            let next = ext.get(i + 1).map_or(0, |n| u32::from(n.offset));
            // Keep the original's reserved next-pointer bits 21:20 (the parser masks them,
            // PCIe 6.0 §7.6.3): they make an all-zero ID/version/next header non-zero.
            let reserved = le32(&config, off) & (3 << 20);
            let h = u32::from(c.id) | u32::from(c.version) << 16 | next << 20 | reserved;
            rebuilt[off..off + 4].copy_from_slice(&h.to_le_bytes());
        }
        match CapabilityList::parse(&rebuilt) {
            Ok(again) => assert_eq!(again, list, "round trip"),
            Err(e) => panic!("rebuilt image refused: {e}"),
        }
    }
}

/// Seeds: the igb's list (PM, MSI, MSI-X, PCIe, then AER and SR-IOV) and faulty lists.
pub fn seeds() -> Vec<(&'static str, CapInput)> {
    let mut igb = vec![0u8; 4096];
    igb[0..4].copy_from_slice(&[0x86, 0x80, 0xc9, 0x10]);
    igb[0x06] = 0x10;
    igb[0x34] = 0x40;
    igb[0x40..0x42].copy_from_slice(&[0x01, 0x50]);
    igb[0x50..0x54].copy_from_slice(&[0x05, 0x70, 0x80, 0x01]);
    igb[0x70..0x74].copy_from_slice(&[0x11, 0xa0, 0x09, 0x00]);
    igb[0x74..0x78].copy_from_slice(&3u32.to_le_bytes());
    igb[0x78..0x7c].copy_from_slice(&0x2003u32.to_le_bytes());
    igb[0xa0..0xa2].copy_from_slice(&[0x10, 0x00]);
    igb[0x100..0x104].copy_from_slice(&(0x0001u32 | 2 << 16 | 0x140 << 20).to_le_bytes());
    igb[0x140..0x144].copy_from_slice(&(0x0003u32 | 1 << 16 | 0x160 << 20).to_le_bytes());
    igb[0x160..0x164].copy_from_slice(&(0x0010u32 | 1 << 16).to_le_bytes());
    let mut looped = igb.clone();
    looped[0xa1] = 0x50;
    let mut overlap = igb[..256].to_vec();
    overlap[0x51] = 0x54;
    overlap[0x54] = 0x09;
    let mut ext_loop = igb.clone();
    ext_loop[0x162..0x164].copy_from_slice(&((0x100u16 << 4) | 1).to_le_bytes());
    vec![
        (
            "igb_pcie",
            CapInput {
                size_sel: 1,
                image: igb.clone(),
            },
        ),
        (
            "igb_conventional",
            CapInput {
                size_sel: 0,
                image: igb[..256].to_vec(),
            },
        ),
        (
            "standard_loop",
            CapInput {
                size_sel: 1,
                image: looped,
            },
        ),
        (
            "overlap",
            CapInput {
                size_sel: 0,
                image: overlap,
            },
        ),
        (
            "extended_loop",
            CapInput {
                size_sel: 1,
                image: ext_loop,
            },
        ),
        (
            "wrong_size",
            CapInput {
                size_sel: 2,
                image: vec![0; 300],
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
        check_round_trip::<CapInput>(5, 200, 300);
    }

    #[test]
    fn seeds_replay_clean() {
        for (name, s) in seeds() {
            assert_eq!(CapInput::from_bytes(&s.to_bytes()), s, "seed {name}");
            run(&s);
        }
        let igb = seeds().remove(0).1.config();
        let list = CapabilityList::parse(&igb).unwrap();
        assert_eq!(list.standard().len(), 4);
        assert_eq!(list.extended().len(), 3);
    }

    #[test]
    fn random_inputs_replay() {
        let mut rng = crate::wire::XorShift::new(13);
        for _ in 0..500 {
            let len = (rng.next_u64() % 600) as usize;
            run(&CapInput::from_bytes(&rng.bytes(len)));
        }
    }
}
