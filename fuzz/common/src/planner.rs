// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Target `planner`: the doorbell planner ([`doorbell_planner::plan`]) over arbitrary guest
//! memory maps, host reserved regions, kernel capabilities, device facts, controllers and
//! preferences.
//!
//! Invariants: every plan the planner returns passes [`check_plan`] (the crate's
//! independent restatement of DESIGN.md's rules); and, restated here once more, the
//! controller frame lies inside the guest IPA space and misses guest RAM, guest MMIO and
//! every `reserved` or unknown-kind host region, and the MSI window misses guest RAM and
//! MMIO. Rendering the plan and checking it against the IOVA ranges the host would report
//! must not panic.

use doorbell_planner::{
    ControllerGeometry, NamedRange, PlanInput, StrategyChoice, check_plan, plan,
};
use iommufd_ioas::{IovaRange, IovaRanges, ReservedKind, ReservedRegion};

use crate::wire::{Reader, Wire, Writer};

/// A region `(start page, length in pages)` in 4 KiB units, scaled at build time.
type Span = (u32, u32);

fn spans(r: &mut Reader<'_>, max: u8) -> Vec<Span> {
    let n = r.u8() % (max + 1);
    (0..n).map(|_| (r.u32(), r.u32() % 0x10_0000)).collect()
}

fn put_spans(w: &mut Writer, s: &[Span]) {
    w.u8(s.len() as u8);
    for (a, b) in s {
        w.u32(*a);
        w.u32(*b);
    }
}

/// A planner input, in small fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannerInput {
    /// 0: GICv3 ITS, else a RISC-V IMSIC.
    pub controller: u8,
    /// IMSIC harts - 1.
    pub harts: u8,
    /// IMSIC guest index bits (0..=8: 8 is invalid).
    pub guest_bits: u8,
    /// Host page size selector: 4 KiB, 16 KiB, 64 KiB, or 8 KiB (invalid).
    pub page_sel: u8,
    /// Guest IPA bits (28..=68: outside 32..=64 is invalid).
    pub ipa_bits: u8,
    /// Guest RAM.
    pub ram: Vec<Span>,
    /// Guest MMIO.
    pub mmio: Vec<Span>,
    /// Host reserved regions and their kind (0 msi, 1 reserved, 2 direct,
    /// 3 direct-relaxable, 4 unknown).
    pub reserved: Vec<(Span, u8)>,
    /// Add the SMMUv3 default `msi` window 0x8000000-0x80fffff.
    pub smmu_window: bool,
    /// Kernel capabilities: window option, per-vector IOVA, RISC-V remap.
    pub caps: u8,
    /// Device: MSI-X mappable, has MSI.
    pub device: u8,
    /// Guest vIOMMU.
    pub viommu: bool,
    /// Preferred base, in 64 KiB units (0 = none).
    pub preferred: u32,
    /// Doorbell page index.
    pub pgoff: u8,
    /// 0 auto, 1 user window, 2 kernel window.
    pub strategy: u8,
}

impl Wire for PlannerInput {
    fn decode(r: &mut Reader<'_>) -> Self {
        let controller = r.u8() % 2;
        let harts = r.u8();
        let guest_bits = r.u8() % 9;
        let page_sel = r.u8() % 4;
        let ipa_bits = 28 + r.u8() % 41;
        let ram = spans(r, 4);
        let mmio = spans(r, 4);
        let n = r.u8() % 5;
        let reserved = (0..n)
            .map(|_| ((r.u32(), r.u32() % 0x10_0000), r.u8() % 5))
            .collect();
        PlannerInput {
            controller,
            harts,
            guest_bits,
            page_sel,
            ipa_bits,
            ram,
            mmio,
            reserved,
            smmu_window: r.bool(),
            caps: r.u8() % 8,
            device: r.u8() % 4,
            viommu: r.bool(),
            preferred: r.u32(),
            pgoff: r.u8() % 40,
            strategy: r.u8() % 3,
        }
    }
    fn encode(&self, w: &mut Writer) {
        w.u8(self.controller);
        w.u8(self.harts);
        w.u8(self.guest_bits);
        w.u8(self.page_sel);
        w.u8(self.ipa_bits - 28);
        put_spans(w, &self.ram);
        put_spans(w, &self.mmio);
        w.u8(self.reserved.len() as u8);
        for ((a, b), k) in &self.reserved {
            w.u32(*a);
            w.u32(*b);
            w.u8(*k);
        }
        w.bool(self.smmu_window);
        w.u8(self.caps);
        w.u8(self.device);
        w.bool(self.viommu);
        w.u32(self.preferred);
        w.u8(self.pgoff);
        w.u8(self.strategy);
    }
}

crate::impl_arbitrary!(PlannerInput);

fn range(span: Span, page: u64) -> Option<IovaRange> {
    // Start in 4 KiB pages scaled up to the host page, length at least one page.
    let start = u64::from(span.0).checked_mul(page)?;
    let len = u64::from(span.1).max(1).checked_mul(page)?;
    IovaRange::from_len(start, len)
}

impl PlannerInput {
    /// The planner's input.
    pub fn build(&self) -> PlanInput {
        let page = [0x1000u64, 0x4000, 0x1_0000, 0x2000][usize::from(self.page_sel) % 4];
        let controller = if self.controller == 0 {
            ControllerGeometry::GICV3_ITS
        } else {
            ControllerGeometry::RiscvImsic {
                harts: u32::from(self.harts) + 1,
                guest_index_bits: self.guest_bits,
            }
        };
        let mut input = PlanInput::new(controller, page);
        input.guest.ipa_bits = self.ipa_bits;
        input.guest.ram = self.ram.iter().filter_map(|s| range(*s, page)).collect();
        input.guest.mmio = self
            .mmio
            .iter()
            .enumerate()
            .filter_map(|(i, s)| range(*s, 0x1000).map(|r| NamedRange::new(format!("mmio{i}"), r)))
            .collect();
        for (s, k) in &self.reserved {
            if let Some(r) = range(*s, 0x1000) {
                let kind = match k {
                    0 => ReservedKind::Msi,
                    1 => ReservedKind::Reserved,
                    2 => ReservedKind::Direct,
                    3 => ReservedKind::DirectRelaxable,
                    _ => ReservedKind::Other("fuzz".to_string()),
                };
                input.host.reserved.push(ReservedRegion { range: r, kind });
            }
        }
        if self.smmu_window {
            input.host.reserved.push(ReservedRegion {
                range: IovaRange {
                    start: 0x800_0000,
                    last: 0x80f_ffff,
                },
                kind: ReservedKind::Msi,
            });
        }
        input.kernel.sw_msi_window_option = self.caps & 1 != 0;
        input.kernel.per_vector_msi_iova = self.caps & 2 != 0;
        input.kernel.riscv_msi_remap = self.caps & 4 != 0;
        input.device.msix_mappable = self.device & 1 != 0;
        input.device.has_msi = self.device & 2 != 0;
        input.guest_viommu = self.viommu;
        input.preferred_base = (self.preferred != 0).then(|| u64::from(self.preferred) << 16);
        input.pgoff = u32::from(self.pgoff);
        input.strategy = match self.strategy {
            0 => StrategyChoice::Auto,
            1 => StrategyChoice::UserWindow,
            _ => StrategyChoice::KernelWindow,
        };
        input
    }
}

fn meets(a: &IovaRange, b: &IovaRange) -> bool {
    a.overlaps(b)
}

/// Replays one input, panicking on the first broken invariant.
pub fn run(input: &PlannerInput) {
    let pi = input.build();
    let Ok(p) = plan(&pi) else {
        return;
    };
    if let Err(why) = check_plan(&pi, &p) {
        panic!("plan {p:?} for {pi:?} breaks a rule: {why}");
    }
    let frame = p.controller_frame;
    let ipa_last = 1u64
        .checked_shl(u32::from(pi.guest.ipa_bits))
        .map_or(u64::MAX, |v| v - 1);
    assert!(frame.last <= ipa_last, "frame {frame} above the IPA space");
    for ram in &pi.guest.ram {
        assert!(
            !meets(&frame, ram),
            "frame {frame} overlaps guest RAM {ram}"
        );
        if let Some(w) = p.msi_window() {
            assert!(!meets(&w, ram), "MSI window {w} overlaps guest RAM {ram}");
        }
    }
    for m in &pi.guest.mmio {
        assert!(
            !meets(&frame, &m.range),
            "frame {frame} overlaps guest MMIO {m:?}"
        );
        if let Some(w) = p.msi_window() {
            assert!(
                !meets(&w, &m.range),
                "MSI window {w} overlaps guest MMIO {m:?}"
            );
        }
    }
    for r in &pi.host.reserved {
        if matches!(r.kind, ReservedKind::Reserved | ReservedKind::Other(_)) {
            assert!(
                !meets(&frame, &r.range),
                "frame {frame} overlaps host region {r:?}"
            );
        }
    }
    let _ = p.to_string();
    // The IOVA ranges a host with exactly these reserved regions would report.
    let mut holes: Vec<IovaRange> = pi
        .host
        .reserved
        .iter()
        .filter(|r| r.kind != ReservedKind::DirectRelaxable)
        .map(|r| r.range)
        .collect();
    holes.sort();
    let mut pairs = Vec::new();
    let mut next = Some(0u64);
    for h in holes {
        let Some(n) = next else { break };
        if h.start > n {
            pairs.push((n, h.start - 1));
        }
        next = h.last.checked_add(1).map(|e| e.max(n));
    }
    if let Some(n) = next {
        pairs.push((n, u64::MAX));
    }
    if let Ok(r) = IovaRanges::from_kernel(&pairs, pi.host.page_size) {
        let _ = p.check_iova_ranges(&r);
    }
}

/// Seeds: the test host (upstream kernel, SMMUv3 window), the patched kernel's user window,
/// a vIOMMU guest, and a RISC-V IMSIC.
pub fn seeds() -> Vec<(&'static str, PlannerInput)> {
    let host = PlannerInput {
        controller: 0,
        harts: 1,
        guest_bits: 0,
        page_sel: 0,
        ipa_bits: 40,
        ram: vec![(0x4_0000, 0x2_0000)],
        mmio: vec![(0x4000, 0x10), (0x6000, 1)],
        reserved: vec![],
        smmu_window: true,
        caps: 0,
        device: 1,
        viommu: false,
        preferred: 0,
        pgoff: 0,
        strategy: 0,
    };
    let user = PlannerInput {
        caps: 1,
        preferred: 0x900,
        ..host.clone()
    };
    let viommu = PlannerInput {
        viommu: true,
        caps: 2,
        reserved: vec![((0xfee00, 0x100), 1), ((0x10_0000, 4), 3)],
        ..host.clone()
    };
    let riscv = PlannerInput {
        controller: 1,
        harts: 3,
        guest_bits: 1,
        caps: 4,
        smmu_window: false,
        ..host.clone()
    };
    vec![
        ("test_host_kernel_window", host),
        ("patched_user_window", user),
        ("viommu_per_vector", viommu),
        ("riscv_imsic", riscv),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::check_round_trip;

    #[test]
    fn wire_round_trips() {
        check_round_trip::<PlannerInput>(10, 300, 200);
    }

    #[test]
    fn seeds_replay_clean() {
        for (name, s) in seeds() {
            assert_eq!(PlannerInput::from_bytes(&s.to_bytes()), s, "seed {name}");
            run(&s);
        }
        // The test host seed plans (the checks above ran on a real plan).
        assert!(plan(&seeds()[0].1.build()).is_ok());
    }

    #[test]
    fn random_inputs_replay() {
        let mut rng = crate::wire::XorShift::new(29);
        for _ in 0..500 {
            let len = (rng.next_u64() % 200) as usize;
            run(&PlannerInput::from_bytes(&rng.bytes(len)));
        }
    }
}
