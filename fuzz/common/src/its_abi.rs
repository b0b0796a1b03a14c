// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Target `its_abi`: KVM's ITS table ABI (revision 0) read from hostile guest memory by
//! `vgic_its::abi::kvm::load`, the way `KVM_DEV_ARM_ITS_RESTORE_TABLES` reads it.
//!
//! The harness lays out a Device table (flat or two-level, 1 to 4 pages of 64 KiB, level-2
//! pages in a pool), a Collection table, an ITT pool and a command queue, programs KVM's
//! registers for them, and applies the input's writes: raw words anywhere in those
//! structures, or "tame" words (valid entries with small `next` offsets, ITTs in the pool,
//! LPIs and ICIDs in a small range) that reach the deep paths. Then:
//!
//! - `load` never panics and stops within its work limit;
//! - a loaded image is well formed: DeviceIDs within Devbits, events within their ITT,
//!   every ITE's collection listed, every target a vCPU, every LPI an LPI;
//! - every refusal maps to an errno or none without panicking;
//! - the image stores back (`kvm::store`, into fresh memory) to tables that load to the
//!   same image, unless its tables alias memory (`Overlap`);
//! - imported into a model in KVM's format it translates every event as the image says,
//!   unless its tables alias memory.

use vgic_its::abi::kvm::{self, Cte, Dte, Ite, KvmItsRegs, LoadParams};
use vgic_its::abi::{AbiError, ImageError, WorkLimit};
use vgic_its::{Its, ItsConfig};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::wire::{Reader, Wire, Writer, decode_ops};

/// Most writes one input applies.
pub const MAX_WRITES: usize = 256;

const MEM_SIZE: u64 = 0x40_0000;
const DT_BASE: u64 = 0x1_0000;
const L2_POOL: u64 = 0x10_0000;
const CT_BASE: u64 = 0x20_0000;
const ITT_POOL: u64 = 0x30_0000;
const CQ_BASE: u64 = 0x38_0000;
const PAGE: u64 = 0x1_0000;

/// Where the tables are and how big.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbiSetup {
    /// Two-level Device table.
    pub indirect: bool,
    /// Device table pages, 1..=4.
    pub dt_pages: u8,
    /// Collection table pages, 1..=2.
    pub ct_pages: u8,
    /// vCPUs, 1..=4.
    pub vcpus: u8,
}

impl Wire for AbiSetup {
    fn decode(r: &mut Reader<'_>) -> Self {
        AbiSetup {
            indirect: r.bool(),
            dt_pages: r.u8() % 4 + 1,
            ct_pages: r.u8() % 2 + 1,
            vcpus: r.u8() % 4 + 1,
        }
    }

    fn encode(&self, w: &mut Writer) {
        w.bool(self.indirect);
        w.u8(self.dt_pages - 1);
        w.u8(self.ct_pages - 1);
        w.u8(self.vcpus - 1);
    }
}

/// Which structure a write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Region {
    /// The Device table (level 1 when two-level).
    Devices,
    /// The level-2 page pool.
    Level2,
    /// The ITT pool.
    Itt,
    /// The Collection table.
    Collections,
}

/// One word written into guest memory before the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbiWrite {
    /// The structure.
    pub region: Region,
    /// Entry index (reduced modulo the structure's size when applied).
    pub slot: u16,
    /// Raw word, or the seed of a tame one.
    pub word: u64,
    /// Make the word a plausible entry of its structure.
    pub tame: bool,
}

impl Wire for AbiWrite {
    fn decode(r: &mut Reader<'_>) -> Self {
        let region = match r.u8() % 4 {
            0 => Region::Devices,
            1 => Region::Level2,
            2 => Region::Itt,
            _ => Region::Collections,
        };
        AbiWrite {
            region,
            slot: r.u16(),
            word: r.u64(),
            tame: r.bool(),
        }
    }

    fn encode(&self, w: &mut Writer) {
        w.u8(self.region as u8);
        w.u16(self.slot);
        w.u64(self.word);
        w.bool(self.tame);
    }
}

/// One input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbiInput {
    /// The layout.
    pub setup: AbiSetup,
    /// The writes.
    pub writes: Vec<AbiWrite>,
}

impl Wire for AbiInput {
    fn decode(r: &mut Reader<'_>) -> Self {
        AbiInput {
            setup: AbiSetup::decode(r),
            writes: decode_ops(r, MAX_WRITES),
        }
    }

    fn encode(&self, w: &mut Writer) {
        self.setup.encode(w);
        for x in &self.writes {
            x.encode(w);
        }
    }
}

crate::impl_arbitrary!(AbiInput);

fn regs(s: &AbiSetup) -> KvmItsRegs {
    let mut r = KvmItsRegs {
        ctlr: 1,
        iidr: kvm::KVM_IIDR_REV0,
        typer: kvm::KVM_TYPER,
        cbaser: (1 << 63) | CQ_BASE,
        ..KvmItsRegs::default()
    };
    let indirect = if s.indirect { 1 << 62 } else { 0 };
    r.baser[0] = (1 << 63)
        | indirect
        | (1 << 56)
        | (7 << 48)
        | (2 << 8)
        | DT_BASE
        | u64::from(s.dt_pages - 1);
    r.baser[1] = (1 << 63) | (4 << 56) | (7 << 48) | (2 << 8) | CT_BASE | u64::from(s.ct_pages - 1);
    r
}

fn fresh() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).expect("memory")
}

/// Where a write lands and the word it writes.
fn place(s: &AbiSetup, w: &AbiWrite) -> (u64, u64) {
    let slot = u64::from(w.slot);
    match w.region {
        Region::Devices => {
            let at = DT_BASE + (slot % (u64::from(s.dt_pages) * PAGE / 8)) * 8;
            let word = match (w.tame, s.indirect) {
                (false, _) => w.word,
                (true, true) => kvm::L1_VALID | (L2_POOL + (w.word & 3) * PAGE),
                (true, false) => tame_dte(w.word),
            };
            (at, word)
        }
        Region::Level2 => {
            let at = L2_POOL + (slot % (4 * PAGE / 8)) * 8;
            (at, if w.tame { tame_dte(w.word) } else { w.word })
        }
        Region::Itt => {
            let at = ITT_POOL + (slot % (0x8_0000 / 8)) * 8;
            let word = if w.tame {
                let pintid = if w.word & 0xf == 0 {
                    0
                } else {
                    8192 + ((w.word >> 8) & 0xff) as u32
                };
                Ite {
                    next: (w.word & 7) as u32,
                    pintid,
                    icid: ((w.word >> 16) & 3) as u16,
                }
                .encode()
                .unwrap_or(0)
            } else {
                w.word
            };
            (at, word)
        }
        Region::Collections => {
            let at = CT_BASE + (slot % (u64::from(s.ct_pages) * PAGE / 8)) * 8;
            let word = if w.tame {
                let target = if w.word & 0x80 != 0 {
                    u64::from(kvm::COLLECTION_NOT_MAPPED)
                } else {
                    w.word & 3
                };
                Cte {
                    valid: true,
                    rdbase: target,
                    icid: ((w.word >> 8) & 7) as u16,
                }
                .encode()
                .unwrap_or(0)
            } else {
                w.word
            };
            (at, word)
        }
    }
}

fn tame_dte(seed: u64) -> u64 {
    Dte {
        valid: true,
        next: (seed & 0x3f) as u32,
        itt_addr: ITT_POOL + ((seed >> 8) & 0x7f) * 0x1000,
        size: ((seed >> 16) & 7) as u8,
    }
    .encode()
    .unwrap_or(0)
}

/// Replay one input (panics on a broken invariant).
pub fn run(input: &AbiInput) {
    let s = input.setup;
    let vcpus = u32::from(s.vcpus);
    let mem = fresh();
    for w in &input.writes {
        let (at, word) = place(&s, w);
        mem.write_obj(word.to_le(), GuestAddress(at))
            .expect("write inside memory");
    }
    let regs = regs(&s);
    let params = LoadParams {
        limit: WorkLimit { entries: 300_000 },
        ..LoadParams::kvm(vcpus)
    };
    let image = match kvm::load(&regs, &mem, params) {
        Ok(i) => i,
        Err(e) => {
            let _ = (e.kvm_errno(), e.to_string());
            return;
        }
    };
    for (&d, dev) in &image.devices {
        assert!(d >> kvm::KVM_DEVICE_ID_BITS == 0, "DeviceID {d:#x}");
        assert!((1..=kvm::KVM_EVENT_ID_BITS).contains(&dev.event_id_bits));
        for (&e, ev) in &dev.events {
            assert!(u64::from(e) >> dev.event_id_bits == 0);
            assert!((8192..1 << 16).contains(&ev.intid));
            assert!(
                image.collections.contains_key(&ev.icid),
                "ITE names a missing collection"
            );
        }
    }
    for t in image.collections.values().flatten() {
        assert!(*t < vcpus);
    }
    let m2 = fresh();
    match kvm::store(&image, &m2, LoadParams::kvm(vcpus)) {
        Ok(r) => {
            let back = kvm::load(&r, &m2, LoadParams::kvm(vcpus)).expect("stored tables load");
            assert_eq!(back, image, "store then load");
        }
        Err(AbiError::Overlap { .. }) => {}
        Err(e) => panic!("a loaded image does not store: {e}"),
    }
    let config = ItsConfig::builder()
        .vcpus(vcpus)
        .kvm_abi()
        .build()
        .expect("config");
    let m3 = fresh();
    match Its::import_image(config, &image, &m3, WorkLimit { entries: 1 << 22 }) {
        Ok(mut its) => {
            for (&d, dev) in &image.devices {
                for &e in dev.events.keys() {
                    let got = its.translate(&m3, d, e).ok().map(|t| (t.intid, t.vcpu));
                    assert_eq!(got, image.translate(d, e), "DeviceID {d} EventID {e}");
                }
            }
        }
        Err(ImageError::Overlap { .. }) => {}
        Err(e) => panic!("a loaded image does not import: {e}"),
    }
}

/// Seeds: a well-formed state stored by `kvm::store` (flat and two-level), and the hostile
/// cases of `vgic-its`'s tests written over it.
pub fn seeds() -> Vec<(&'static str, AbiInput)> {
    use std::collections::BTreeMap;
    use vgic_its::abi::{DeviceImage, EventImage, ItsImage};
    let stored = |indirect: bool| -> AbiInput {
        let setup = AbiSetup {
            indirect,
            dt_pages: 1,
            ct_pages: 1,
            vcpus: 2,
        };
        let r = regs(&setup);
        let ev = |list: &[(u32, u32, u16)]| -> BTreeMap<u32, EventImage> {
            list.iter()
                .map(|&(e, intid, icid)| (e, EventImage { intid, icid }))
                .collect()
        };
        let img = ItsImage {
            enabled: true,
            cbaser: r.cbaser,
            device_baser: r.baser[0],
            collection_baser: r.baser[1],
            device_l2_pages: if indirect {
                BTreeMap::from([(0, L2_POOL)])
            } else {
                BTreeMap::new()
            },
            devices: BTreeMap::from([
                (
                    8,
                    DeviceImage {
                        itt_addr: ITT_POOL,
                        event_id_bits: 3,
                        events: ev(&[(0, 8192, 0), (1, 8193, 1), (5, 8197, 2)]),
                    },
                ),
                (
                    40,
                    DeviceImage {
                        itt_addr: ITT_POOL + 0x1000,
                        event_id_bits: 1,
                        events: ev(&[(1, 8300, 0)]),
                    },
                ),
            ]),
            collections: BTreeMap::from([(0, Some(0)), (1, Some(1)), (2, None)]),
            ..ItsImage::default()
        };
        let mem = fresh();
        kvm::store(&img, &mem, LoadParams::kvm(2)).expect("seed image stores");
        let mut writes = Vec::new();
        let mut grab = |region: Region, base: u64, entries: u64| {
            for i in 0..entries {
                let w = u64::from_le(
                    mem.read_obj::<u64>(GuestAddress(base + i * 8))
                        .expect("read"),
                );
                if w != 0 {
                    writes.push(AbiWrite {
                        region,
                        slot: i as u16,
                        word: w,
                        tame: false,
                    });
                }
            }
        };
        grab(Region::Devices, DT_BASE, 64);
        grab(Region::Level2, L2_POOL, 64);
        grab(Region::Itt, ITT_POOL, 0x1000 / 8 + 2);
        grab(Region::Collections, CT_BASE, 8);
        AbiInput { setup, writes }
    };
    let flat = stored(false);
    let with = |mut base: AbiInput, extra: &[AbiWrite]| {
        base.writes.extend_from_slice(extra);
        base
    };
    let w = |region, slot, word, tame| AbiWrite {
        region,
        slot,
        word,
        tame,
    };
    vec![
        ("flat", flat.clone()),
        ("two_level", stored(true)),
        (
            "dte_size_16",
            with(
                flat.clone(),
                &[w(
                    Region::Devices,
                    8,
                    (1 << 63) | (32 << 49) | ((ITT_POOL >> 8) << 5) | 16,
                    false,
                )],
            ),
        ),
        (
            "ite_low_lpi",
            with(
                flat.clone(),
                &[w(Region::Itt, 1, (4 << 48) | (100 << 16) | 1, false)],
            ),
        ),
        (
            "ite_next_out",
            with(
                flat.clone(),
                &[w(Region::Itt, 1, (40 << 48) | (8193 << 16) | 1, false)],
            ),
        ),
        (
            "cte_duplicate",
            with(flat.clone(), &[w(Region::Collections, 1, 1 << 63, false)]),
        ),
        (
            "tame_soup",
            with(
                flat,
                &[
                    w(Region::Devices, 3, 0x0102_0304, true),
                    w(Region::Itt, 0x200, 0x0001_0203, true),
                    w(Region::Itt, 0x201, 0x0002_0505, true),
                    w(Region::Collections, 3, 0x0301, true),
                ],
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::check_round_trip;

    #[test]
    fn wire_round_trips() {
        check_round_trip::<AbiInput>(17, 300, 400);
    }

    #[test]
    fn seeds_replay_clean() {
        for (name, s) in seeds() {
            assert_eq!(AbiInput::from_bytes(&s.to_bytes()), s, "seed {name}");
            run(&s);
        }
        // The flat seed is the stored image: it loads, with its devices.
        let (_, flat) = &seeds()[0];
        let mem = fresh();
        for x in &flat.writes {
            let (at, word) = place(&flat.setup, x);
            mem.write_obj(word.to_le(), GuestAddress(at)).unwrap();
        }
        let img = kvm::load(&regs(&flat.setup), &mem, LoadParams::kvm(2)).unwrap();
        assert_eq!(img.devices.len(), 2);
        assert_eq!(img.translate(8, 5), None, "collection 2 is not mapped");
        assert_eq!(img.translate(8, 1), Some((8193, 1)));
    }

    #[test]
    fn random_inputs_replay() {
        let mut rng = crate::wire::XorShift::new(23);
        for _ in 0..300 {
            let len = (rng.next_u64() % 1200) as usize;
            run(&AbiInput::from_bytes(&rng.bytes(len)));
        }
    }
}
