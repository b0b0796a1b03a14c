// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Target `ioas_decode`: everything `iommufd-ioas` decodes from the kernel.
//!
//! * [`IovaRanges::from_kernel`] (`IOMMU_IOAS_IOVA_RANGES`): accepted iff the alignment is
//!   a power of two and the ranges are well formed, sorted and disjoint; then the ranges
//!   and [`IovaRanges::holes`] partition `[0, last]` (every address below the last allowed
//!   one is in exactly one of them, holes are maximal), `allows` agrees with a brute-force
//!   check, and `is_aligned` with the alignment.
//! * [`parse_reserved_regions`] (sysfs `reserved_regions`): accepted regions are well
//!   formed, one per non-blank line; rendering them the way the kernel prints them
//!   (`0x%016llx 0x%016llx %s`) parses back equal.
//! * [`HwInfo::decode`] (`IOMMU_GET_HW_INFO`): a type's fields are the bytes at their uapi
//!   offsets, a blob shorter than the type needs is refused, an unknown type keeps exactly
//!   the bytes the kernel wrote.
//! * [`classify_option_probe`] / [`classify_set_irqs_probe`]: `EOPNOTSUPP` / `EINVAL` mean
//!   absent, a value means present, any other errno is passed through unchanged.
//! * [`SwMsiWindow::new`]: accepted iff 1 MiB aligned, non-empty and representable; its
//!   range is exactly the window.
//! * [`IommuOption`]: `from_id(id).id() == id`.

use std::path::Path;

use iommufd_ioas::proposed::{
    Support, SwMsiWindow, classify_option_probe, classify_set_irqs_probe,
};
use iommufd_ioas::{
    Errno, HwInfo, HwInfoData, IommuOption, IovaRange, IovaRanges, ReservedKind,
    parse_reserved_regions,
};

use crate::wire::{Reader, Wire, Writer, decode_ops};

/// Most operations one input runs.
pub const MAX_OPS: usize = 32;

/// One decoding to exercise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeOp {
    /// IOVA ranges: alignment selector (a power of two, or raw when `raw_align`), pairs,
    /// probe ranges.
    Ranges {
        /// Raw alignment instead of `1 << (align % 64)`.
        raw_align: bool,
        /// Alignment or its log2.
        align: u64,
        /// `(start, last)` pairs, at most 16; each built as `prev_last + gap`, `+ len`
        /// when `sorted`, else taken raw.
        pairs: Vec<(u64, u64)>,
        /// Build sorted, disjoint ranges from the pairs as gaps and lengths.
        sorted: bool,
        /// Ranges to test `allows` with.
        probes: Vec<(u64, u64)>,
    },
    /// A `reserved_regions` file.
    Reserved(Vec<u8>),
    /// `IOMMU_GET_HW_INFO`.
    HwInfo {
        /// `out_data_type` (small values select the known types).
        data_type: u32,
        /// `data_len` the kernel reported.
        reported_len: u32,
        /// The bytes it wrote (at most 64).
        bytes: Vec<u8>,
        /// `out_capabilities`.
        capabilities: u64,
    },
    /// A probe answer: `Ok(value)` or an errno.
    Probe {
        /// The set-IRQs probe rather than the option probe.
        set_irqs: bool,
        /// Whether the kernel answered with an error.
        failed: bool,
        /// The value or the errno.
        value: u64,
    },
    /// A software MSI window.
    Window {
        /// Start.
        start: u64,
        /// Size in MiB.
        size_mib: u64,
    },
    /// An option ID.
    Option(u32),
}

fn pairs(r: &mut Reader<'_>, max: usize) -> Vec<(u64, u64)> {
    let n = usize::from(r.u8()) % (max + 1);
    (0..n).map(|_| (r.u64(), r.u64())).collect()
}

fn put_pairs(w: &mut Writer, p: &[(u64, u64)]) {
    w.u8(p.len() as u8);
    for (a, b) in p {
        w.u64(*a);
        w.u64(*b);
    }
}

impl Wire for DecodeOp {
    fn decode(r: &mut Reader<'_>) -> Self {
        match r.u8() % 6 {
            0 => DecodeOp::Ranges {
                raw_align: r.bool(),
                align: r.u64(),
                sorted: r.bool(),
                pairs: pairs(r, 16),
                probes: pairs(r, 8),
            },
            1 => {
                let n = usize::from(r.u16() % 2048);
                DecodeOp::Reserved(r.bytes(n))
            }
            2 => {
                let data_type = r.u32();
                let reported_len = r.u32();
                let capabilities = r.u64();
                let n = usize::from(r.u8() % 65);
                DecodeOp::HwInfo {
                    data_type,
                    reported_len,
                    bytes: r.bytes(n),
                    capabilities,
                }
            }
            3 => DecodeOp::Probe {
                set_irqs: r.bool(),
                failed: r.bool(),
                value: r.u64(),
            },
            4 => DecodeOp::Window {
                start: r.u64(),
                size_mib: r.u64(),
            },
            _ => DecodeOp::Option(r.u32()),
        }
    }
    fn encode(&self, w: &mut Writer) {
        match self {
            DecodeOp::Ranges {
                raw_align,
                align,
                pairs,
                sorted,
                probes,
            } => {
                w.u8(0);
                w.bool(*raw_align);
                w.u64(*align);
                w.bool(*sorted);
                put_pairs(w, pairs);
                put_pairs(w, probes);
            }
            DecodeOp::Reserved(b) => {
                w.u8(1);
                w.u16(b.len() as u16);
                w.bytes(b);
            }
            DecodeOp::HwInfo {
                data_type,
                reported_len,
                bytes,
                capabilities,
            } => {
                w.u8(2);
                w.u32(*data_type);
                w.u32(*reported_len);
                w.u64(*capabilities);
                w.u8(bytes.len() as u8);
                w.bytes(bytes);
            }
            DecodeOp::Probe {
                set_irqs,
                failed,
                value,
            } => {
                w.u8(3);
                w.bool(*set_irqs);
                w.bool(*failed);
                w.u64(*value);
            }
            DecodeOp::Window { start, size_mib } => {
                w.u8(4);
                w.u64(*start);
                w.u64(*size_mib);
            }
            DecodeOp::Option(id) => {
                w.u8(5);
                w.u32(*id);
            }
        }
    }
}

/// A list of decodings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoasDecodeInput {
    /// The decodings.
    pub ops: Vec<DecodeOp>,
}

impl Wire for IoasDecodeInput {
    fn decode(r: &mut Reader<'_>) -> Self {
        IoasDecodeInput {
            ops: decode_ops(r, MAX_OPS),
        }
    }
    fn encode(&self, w: &mut Writer) {
        for op in &self.ops {
            op.encode(w);
        }
    }
}

crate::impl_arbitrary!(IoasDecodeInput);

/// Turns (gap, length) pairs into sorted, disjoint ranges, stopping at overflow; small
/// values are scaled by 4 KiB now and then so the ranges look like a kernel's.
fn build_sorted(pairs: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut next = 0u64;
    for (k, (gap, len)) in pairs.iter().enumerate() {
        let scale = |v: u64| if k % 2 == 0 { v % (1 << 40) } else { v };
        let Some(start) = next.checked_add(scale(*gap)) else {
            break;
        };
        let Some(last) = start.checked_add(scale(*len) % (1 << 44)) else {
            break;
        };
        out.push((start, last));
        match last.checked_add(2) {
            Some(n) => next = n,
            None => break,
        }
    }
    out
}

fn check_ranges(align: u64, pairs: &[(u64, u64)], probes: &[(u64, u64)]) {
    let valid = align.is_power_of_two()
        && pairs.iter().all(|(s, l)| s <= l)
        && pairs.windows(2).all(|w| w[0].1 < w[1].0);
    let r = match IovaRanges::from_kernel(pairs, align) {
        Ok(r) => r,
        Err(e) => {
            assert!(!valid, "valid reply refused: {e}");
            return;
        }
    };
    assert!(valid, "invalid reply {pairs:x?} / {align:#x} accepted");
    assert_eq!(r.alignment(), align);
    let ranges = r.ranges();
    assert_eq!(ranges.len(), pairs.len());
    let holes = r.holes();
    // Partition of [0, last]: walk ranges and holes merged in order.
    let mut all: Vec<(IovaRange, bool)> = ranges
        .iter()
        .map(|x| (*x, true))
        .chain(holes.iter().map(|x| (*x, false)))
        .collect();
    all.sort_by_key(|(x, _)| x.start);
    let mut next = Some(0u64);
    let mut prev_kind = None;
    for (x, allowed) in &all {
        assert_eq!(Some(x.start), next, "gap or overlap at {x}: {all:x?}");
        assert!(x.start <= x.last);
        if !allowed {
            assert_ne!(prev_kind, Some(false), "two holes in a row: not maximal");
        }
        prev_kind = Some(*allowed);
        next = x.last.checked_add(1);
    }
    if let Some(last) = ranges.last() {
        assert_eq!(
            all.last().map(|(x, _)| x.last),
            Some(last.last),
            "holes beyond the last range"
        );
        assert!(
            holes
                .iter()
                .all(|h| h.last < last.start || h.start > last.last)
        );
    } else {
        assert!(holes.is_empty());
    }
    for h in &holes {
        assert!(!r.allows(h), "hole {h} allowed");
    }
    for x in ranges {
        assert!(r.allows(x), "range {x} not allowed");
    }
    for (a, b) in probes {
        let Some(p) = IovaRange::new((*a).min(*b), (*a).max(*b)) else {
            continue;
        };
        let brute = ranges.iter().any(|x| x.covers(&p));
        assert_eq!(r.allows(&p), brute, "allows({p})");
        let mask = align - 1;
        assert_eq!(r.is_aligned(*a, *b), a & mask == 0 && b & mask == 0);
    }
}

fn check_reserved(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let path = Path::new("/sys/kernel/iommu_groups/0/reserved_regions");
    let Ok(regions) = parse_reserved_regions(&text, path) else {
        return;
    };
    let lines = text.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(regions.len(), lines, "one region per non-blank line");
    let mut rendered = String::new();
    for r in &regions {
        assert!(r.range.start <= r.range.last);
        let kind = match &r.kind {
            ReservedKind::Direct => "direct",
            ReservedKind::DirectRelaxable => "direct-relaxable",
            ReservedKind::Reserved => "reserved",
            ReservedKind::Msi => "msi",
            ReservedKind::Other(s) => s.as_str(),
        };
        // The parser splits on ASCII whitespace only, so a kind may hold other control
        // characters (U+000B is Unicode whitespace but not ASCII whitespace in Rust).
        assert!(
            !kind.is_empty() && !kind.contains(|c: char| c.is_ascii_whitespace()),
            "kind {kind:?}"
        );
        rendered.push_str(&format!(
            "0x{:016x} 0x{:016x} {kind}\n",
            r.range.start, r.range.last
        ));
    }
    match parse_reserved_regions(&rendered, path) {
        Ok(again) => assert_eq!(again, regions, "round trip"),
        Err(e) => panic!("rendered regions refused: {e}"),
    }
}

fn check_hw_info(data_type: u32, reported_len: u32, bytes: &[u8], caps: u64) {
    let ty = if data_type < 8 {
        data_type % 5
    } else {
        data_type
    };
    let len = (reported_len as usize).min(bytes.len());
    let u32_at =
        |o: usize| u32::from_ne_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    let u64_at = |o: usize| u64::from(u32_at(o)) | u64::from(u32_at(o + 4)) << 32;
    let need = match ty {
        0 => 0,
        1 => 24, // Intel VT-d
        2 => 40, // Arm SMMUv3
        3 => 0,  // Tegra241 CMDQV: undecoded, kept raw
        4 => 16, // AMD
        _ => 0,
    };
    let got = HwInfo::decode(ty, reported_len, bytes, caps, 0);
    let info = match got {
        Ok(i) => i,
        Err(e) => {
            assert!(len < need, "type {ty} with {len} bytes refused: {e}");
            return;
        }
    };
    assert!(len >= need, "type {ty} with {len} of {need} bytes accepted");
    assert_eq!(info.capabilities, caps);
    assert_eq!(info.dirty_tracking(), caps & 1 != 0);
    match info.data {
        HwInfoData::None => assert_eq!(ty, 0),
        HwInfoData::IntelVtd {
            flags,
            cap_reg,
            ecap_reg,
        } => {
            assert_eq!(ty, 1);
            assert_eq!(
                (flags, cap_reg, ecap_reg),
                (u32_at(0), u64_at(8), u64_at(16))
            );
        }
        HwInfoData::ArmSmmuV3 {
            flags,
            idr,
            iidr,
            aidr,
        } => {
            assert_eq!(ty, 2);
            assert_eq!((flags, iidr, aidr), (u32_at(0), u32_at(32), u32_at(36)));
            for (i, v) in idr.iter().enumerate() {
                assert_eq!(*v, u32_at(8 + 4 * i), "IDR{i}");
            }
        }
        HwInfoData::Amd { efr, efr2 } => {
            assert_eq!(ty, 4);
            assert_eq!((efr, efr2), (u64_at(0), u64_at(8)));
        }
        HwInfoData::Raw {
            data_type,
            bytes: raw,
        } => {
            assert_eq!(data_type, ty);
            assert!(ty == 3 || ty > 4, "type {ty} left raw");
            assert_eq!(raw, &bytes[..len], "raw bytes");
        }
    }
}

fn check_probe(set_irqs: bool, failed: bool, value: u64) {
    let errno = Errno((value % 140) as i32 + 1);
    if set_irqs {
        let answer = if failed { Err(errno) } else { Ok(()) };
        match (classify_set_irqs_probe(answer), failed) {
            (Ok(Support::Available(())), false) => {}
            (Ok(Support::Absent { errno: e }), true) => {
                assert_eq!((e, e.raw()), (errno, libc::EINVAL))
            }
            (Err(e), true) => {
                assert_eq!(e, errno);
                assert_ne!(e.raw(), libc::EINVAL);
            }
            (got, _) => panic!("set-IRQs probe {answer:?} classified as {got:?}"),
        }
    } else {
        let answer = if failed { Err(errno) } else { Ok(value) };
        match (classify_option_probe(answer), failed) {
            (Ok(Support::Available(v)), false) => assert_eq!(v, value),
            (Ok(Support::Absent { errno: e }), true) => {
                assert_eq!((e, e.raw()), (errno, libc::EOPNOTSUPP))
            }
            (Err(e), true) => {
                assert_eq!(e, errno);
                assert_ne!(e.raw(), libc::EOPNOTSUPP);
            }
            (got, _) => panic!("option probe {answer:?} classified as {got:?}"),
        }
    }
    let _ = errno.name();
}

fn check_window(start: u64, size_mib: u64) {
    const MIB: u64 = 1 << 20;
    let end = size_mib
        .checked_mul(MIB)
        .and_then(|len| len.checked_sub(1))
        .and_then(|l| start.checked_add(l));
    let valid = start.is_multiple_of(MIB) && size_mib != 0 && end.is_some();
    match SwMsiWindow::new(start, size_mib) {
        Ok(w) => {
            assert!(valid, "window {start:#x}+{size_mib} MiB accepted");
            let r = w.range();
            assert_eq!((r.start, Some(r.last)), (start, end));
            assert_eq!(r.len(), size_mib.checked_mul(MIB));
        }
        Err(_) => assert!(!valid, "window {start:#x}+{size_mib} MiB refused"),
    }
}

/// Replays one input, panicking on the first broken invariant.
pub fn run(input: &IoasDecodeInput) {
    for op in &input.ops {
        match op {
            DecodeOp::Ranges {
                raw_align,
                align,
                pairs,
                sorted,
                probes,
            } => {
                let align = if *raw_align {
                    *align
                } else {
                    1u64 << (align % 64)
                };
                let pairs = if *sorted {
                    build_sorted(pairs)
                } else {
                    pairs.clone()
                };
                check_ranges(align, &pairs, probes);
            }
            DecodeOp::Reserved(b) => check_reserved(b),
            DecodeOp::HwInfo {
                data_type,
                reported_len,
                bytes,
                capabilities,
            } => check_hw_info(*data_type, *reported_len, bytes, *capabilities),
            DecodeOp::Probe {
                set_irqs,
                failed,
                value,
            } => check_probe(*set_irqs, *failed, *value),
            DecodeOp::Window { start, size_mib } => check_window(*start, *size_mib),
            DecodeOp::Option(id) => {
                let o = IommuOption::from_id(*id);
                assert_eq!(o.id(), *id, "option {id} round trip");
                let _ = o.to_string();
            }
        }
    }
}

/// Seeds: what the SMMUv3 test host reports (DESIGN.md) and malformed replies.
pub fn seeds() -> Vec<(&'static str, IoasDecodeInput)> {
    let smmu = DecodeOp::Ranges {
        raw_align: false,
        align: 12,
        pairs: vec![(0, 0x7ff_ffff), (0x810_0000, 0xffff_ffff_ffff)],
        sorted: false,
        probes: vec![(0x800_0000, 0x800_0fff), (0x4000_0000, 0x5000_0000)],
    };
    let sysfs = DecodeOp::Reserved(
        b"0x0000000008000000 0x00000000080fffff msi\n0x00000000fee00000 0x00000000feefffff reserved\n"
            .to_vec(),
    );
    let mut smmu_info = vec![0u8; 40];
    smmu_info[8..12].copy_from_slice(&0x0dfe_f3bfu32.to_ne_bytes());
    vec![
        (
            "test_host",
            IoasDecodeInput {
                ops: vec![
                    smmu,
                    sysfs,
                    DecodeOp::HwInfo {
                        data_type: 2,
                        reported_len: 40,
                        bytes: smmu_info,
                        capabilities: 1,
                    },
                    DecodeOp::Probe {
                        set_irqs: false,
                        failed: true,
                        value: (libc::EOPNOTSUPP - 1) as u64,
                    },
                    DecodeOp::Probe {
                        set_irqs: true,
                        failed: true,
                        value: (libc::EINVAL - 1) as u64,
                    },
                    DecodeOp::Window {
                        start: 0x800_0000,
                        size_mib: 1,
                    },
                    DecodeOp::Option(2),
                ],
            },
        ),
        (
            "malformed",
            IoasDecodeInput {
                ops: vec![
                    DecodeOp::Ranges {
                        raw_align: true,
                        align: 0x3000,
                        pairs: vec![(5, 4)],
                        sorted: false,
                        probes: vec![],
                    },
                    DecodeOp::Ranges {
                        raw_align: false,
                        align: 16,
                        pairs: vec![(0, 0xfff), (0x1000, 0x2fff), (1 << 20, 1 << 30)],
                        sorted: true,
                        probes: vec![(0, u64::MAX)],
                    },
                    DecodeOp::Reserved(b"0x1 0x0 msi\n".to_vec()),
                    DecodeOp::Reserved(
                        b"\n  \n0x00000000 0xffffffffffffffff direct extra\n".to_vec(),
                    ),
                    DecodeOp::HwInfo {
                        data_type: 4,
                        reported_len: 100,
                        bytes: vec![1; 12],
                        capabilities: 0,
                    },
                    DecodeOp::HwInfo {
                        data_type: 0x1234,
                        reported_len: 5,
                        bytes: vec![9; 30],
                        capabilities: 2,
                    },
                    DecodeOp::Window {
                        start: 0xfff0_0000_0000_0000,
                        size_mib: u64::MAX,
                    },
                ],
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
        check_round_trip::<IoasDecodeInput>(7, 300, 400);
    }

    #[test]
    fn seeds_replay_clean() {
        for (name, s) in seeds() {
            assert_eq!(IoasDecodeInput::from_bytes(&s.to_bytes()), s, "seed {name}");
            run(&s);
        }
    }

    #[test]
    fn random_inputs_replay() {
        let mut rng = crate::wire::XorShift::new(19);
        for _ in 0..500 {
            let len = (rng.next_u64() % 400) as usize;
            run(&IoasDecodeInput::from_bytes(&rng.bytes(len)));
        }
    }

    #[test]
    fn build_sorted_is_sorted() {
        let r = build_sorted(&[(0, 10), (u64::MAX, 1), (3, 3)]);
        assert!(r.windows(2).all(|w| w[0].1 < w[1].0));
        assert!(!r.is_empty());
    }
}
