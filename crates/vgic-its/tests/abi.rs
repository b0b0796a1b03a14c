// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! KVM's ITS table ABI (revision 0) and whole-ITS images: the model in KVM's format writes
//! KVM's words; images round-trip through the model and through KVM's tables; hostile KVM
//! tables give defined errors carrying the errno KVM's restore returns.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use vgic_its::abi::kvm::{self, Cte, Dte, Ite};
use vgic_its::abi::{
    AbiError, DeviceImage, EventImage, ImageError, ItsImage, KvmItsRegs, LoadParams, WorkLimit,
};
use vgic_its::cmd::decode::RawCommand;
use vgic_its::regs::{GITS_BASER0, GITS_IIDR, GITS_TYPER};
use vgic_its::{Its, ItsConfig};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const VCPUS: u32 = 2;

fn kvm_config() -> ItsConfig {
    ItsConfig::builder().vcpus(VCPUS).kvm_abi().build().unwrap()
}

fn word(mem: &GuestMemoryMmap<()>, addr: u64) -> u64 {
    u64::from_le(mem.read_obj::<u64>(GuestAddress(addr)).unwrap())
}

fn put(mem: &GuestMemoryMmap<()>, addr: u64, w: u64) {
    mem.write_obj(w.to_le(), GuestAddress(addr)).unwrap();
}

fn fresh() -> GuestMemoryMmap<()> {
    GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM_SIZE)]).unwrap()
}

/// A KVM-format model booted the way Linux boots it (flat 64 KiB tables).
fn kvm_guest() -> Guest {
    Guest::booted(kvm_config())
}

/// The model in KVM's format keeps its Device table and ITTs in KVM's words, holds its
/// collections, and presents KVM's GITS_IIDR, GITS_TYPER and 64 KiB-only GITS_BASER<n>.
#[test]
fn kvm_format_model_writes_kvm_words() {
    let mut g = kvm_guest();
    assert_eq!(g.read32(GITS_IIDR), 0x4b00_043b);
    assert_eq!(g.read64(GITS_TYPER), kvm::KVM_TYPER);
    // Linux asked for 4 KiB pages; KVM's rule makes them 64 KiB.
    assert_eq!((g.read64(GITS_BASER0) >> 8) & 3, 2);
    assert_eq!((g.read64(GITS_BASER0 + 8) >> 8) & 3, 2);
    // The Collection table's Indirect is RES0, as in KVM.
    g.write32(vgic_its::regs::GITS_CTLR, 0);
    let b1 = g.setup_baser(1, (1 << 63) | (1 << 62) | COLLECTION_TABLE);
    assert_eq!(b1 & (1 << 62), 0);
    g.enable();
    let itt = ITT_BASE;
    g.send(&[
        RawCommand::mapc(0, 0, true),
        RawCommand::mapc(1, 1, true),
        RawCommand::mapd(8, 4, itt, true),
        RawCommand::mapti(8, 3, 8195, 1),
        RawCommand::sync(0),
    ]);
    assert_eq!(g.its.last_command_error(), None);
    assert_eq!(
        word(&g.mem, DEVICE_TABLE + 8 * 8),
        (1 << 63) | ((itt >> 8) << 5) | 4,
        "DTE: V, next 0 until a save, ITT_addr[51:8] at [48:5], Size"
    );
    assert_eq!(
        word(&g.mem, itt + 3 * 8),
        (8195 << 16) | 1,
        "ITE: pINTID, ICID"
    );
    assert_eq!(word(&g.mem, COLLECTION_TABLE), 0, "collections are held");
    let t = g.its.translate(&g.mem, 8, 3).unwrap();
    assert_eq!((t.intid, t.vcpu), (8195, 1));
    // A guest-written KVM ITE with pINTID 0 is an invalid entry, whatever else it holds.
    put(&g.mem, itt + 4 * 8, 0xffff_0000_0000_0001);
    assert!(g.its.translate(&g.mem, 8, 4).is_err());
    // An ICID beyond the Collection table (one 64 KiB page: 8192 entries) is
    // COLLECTION_OOR, as KVM's check_id makes it.
    assert_eq!(
        g.err(RawCommand::mapc(9000, 0, true)).as_deref(),
        Some("MAPC_COLLECTION_OOR")
    );
    // Changing GITS_BASER1 drops the held collections (KVM frees its list).
    g.write32(vgic_its::regs::GITS_CTLR, 0);
    g.setup_baser(1, (1 << 63) | (1 << 8) | (COLLECTION_TABLE + 0x1_0000));
    g.enable();
    assert!(g.its.translate(&g.mem, 8, 3).is_err());
    // The state survives a snapshot with its held collections.
    g.send(&[RawCommand::mapc(1, 0, true)]);
    let s = g.its.save_state();
    assert_eq!(s.held_collections, BTreeMap::from([(1, 0)]));
    let mut r = Its::from_state(&s).unwrap();
    assert_eq!(r.translate(&g.mem, 8, 3).unwrap().vcpu, 0);
    let mut bad = s.clone();
    bad.held_collections.insert(2, VCPUS);
    assert!(Its::from_state(&bad).is_err());
}

/// The image of a booted ITS, as a VMM builds one by hand.
fn sample_image() -> ItsImage {
    let dev = |itt, bits, events: &[(u32, u32, u16)]| DeviceImage {
        itt_addr: itt,
        event_id_bits: bits,
        events: events
            .iter()
            .map(|&(e, intid, icid)| (e, EventImage { intid, icid }))
            .collect(),
    };
    ItsImage {
        enabled: true,
        cbaser: (1 << 63) | CMD_QUEUE,
        cwriter: 0x60,
        creadr: 0x60,
        stalled: false,
        // Flat, 2 pages of 64 KiB: 16384 DTEs.
        device_baser: (1 << 63) | (1 << 56) | (7 << 48) | (2 << 8) | DEVICE_TABLE | 1,
        collection_baser: (1 << 63) | (4 << 56) | (7 << 48) | (2 << 8) | COLLECTION_TABLE,
        devices: BTreeMap::from([
            (
                8,
                dev(
                    ITT_BASE,
                    5,
                    &[(0, 8192, 0), (1, 8193, 1), (2, 8194, 5), (20, 8200, 0)],
                ),
            ),
            (9000, dev(ITT_BASE + 0x1000, 1, &[])),
        ]),
        collections: BTreeMap::from([(0, Some(0)), (1, Some(1)), (5, None)]),
        ..ItsImage::default()
    }
}

/// `kvm::store` writes exactly the words of the ABI document (each checked field by field
/// against hand-computed values) and `kvm::load` reads the image back.
#[test]
fn stored_images_load_back() {
    let mem = fresh();
    // Stale garbage a restore would otherwise pick up.
    put(&mem, DEVICE_TABLE + 3 * 8, u64::MAX);
    put(&mem, ITT_BASE + 5 * 8, u64::MAX);
    let img = sample_image();
    let regs = kvm::store(&img, &mem, LoadParams::kvm(VCPUS)).unwrap();
    assert_eq!(regs.iidr, 0x4b00_043b);
    assert_eq!(regs.typer, kvm::KVM_TYPER);
    assert_eq!(regs.ctlr, 1);
    assert_eq!(
        (regs.baser[0], regs.baser[1]),
        (img.device_baser, img.collection_baser)
    );
    let d8 = Dte::decode(word(&mem, DEVICE_TABLE + 8 * 8));
    assert_eq!(
        d8,
        Dte {
            valid: true,
            next: 8992,
            itt_addr: ITT_BASE,
            size: 4
        }
    );
    assert_eq!(
        word(&mem, DEVICE_TABLE + 8 * 8),
        (1 << 63) | (8992 << 49) | ((ITT_BASE >> 8) << 5) | 4
    );
    let d9000 = Dte::decode(word(&mem, DEVICE_TABLE + 9000 * 8));
    assert_eq!((d9000.valid, d9000.next, d9000.size), (true, 0, 0));
    assert_eq!(word(&mem, DEVICE_TABLE + 3 * 8), 0, "stale entry cleared");
    assert_eq!(word(&mem, ITT_BASE), (1 << 48) | (8192 << 16));
    assert_eq!(word(&mem, ITT_BASE + 8), (1 << 48) | (8193 << 16) | 1);
    assert_eq!(word(&mem, ITT_BASE + 16), (18 << 48) | (8194 << 16) | 5);
    assert_eq!(word(&mem, ITT_BASE + 20 * 8), 8200 << 16);
    assert_eq!(word(&mem, ITT_BASE + 5 * 8), 0, "stale ITE cleared");
    assert_eq!(word(&mem, COLLECTION_TABLE), 1 << 63);
    assert_eq!(word(&mem, COLLECTION_TABLE + 8), (1 << 63) | (1 << 16) | 1);
    assert_eq!(
        Cte::decode(word(&mem, COLLECTION_TABLE + 16)),
        Cte {
            valid: true,
            rdbase: 0xffff_ffff,
            icid: 5
        }
    );
    assert_eq!(word(&mem, COLLECTION_TABLE + 24), 0, "list terminator");
    let back = kvm::load(&regs, &mem, LoadParams::kvm(VCPUS)).unwrap();
    assert_eq!(back, img);
    assert_eq!(back.translate(8, 1), Some((8193, 1)));
    assert_eq!(back.translate(8, 2), None);
    // The restore order of the documentation: CBASER first, IIDR before the tables.
    let order: Vec<u64> = regs.restore_order().iter().map(|r| r.0).collect();
    assert_eq!(order, [0x80, 0x4, 0x100, 0x108, 0x88, 0x90]);
}

/// The image of a two-level Device table keeps its level-1 descriptors and restores with
/// KVM's walk: a DTE's next into another level-2 page ends that page's scan.
#[test]
fn two_level_device_tables_round_trip() {
    let mem = fresh();
    let mut img = sample_image();
    img.device_baser = (1 << 63) | (1 << 62) | (1 << 56) | (7 << 48) | (2 << 8) | DEVICE_TABLE;
    img.device_l2_pages = BTreeMap::from([
        (0, L2_BASE),
        (1, L2_BASE + 0x1_0000),
        (3, L2_BASE + 0x3_0000),
    ]);
    let regs = kvm::store(&img, &mem, LoadParams::kvm(VCPUS)).unwrap();
    assert_eq!(
        word(&mem, DEVICE_TABLE + 8),
        (1 << 63) | (L2_BASE + 0x1_0000)
    );
    assert_eq!(word(&mem, DEVICE_TABLE + 16), 0);
    // DeviceID 9000 is entry 808 of the page of level-1 entry 1.
    assert!(Dte::decode(word(&mem, L2_BASE + 0x1_0000 + 808 * 8)).valid);
    assert_eq!(kvm::load(&regs, &mem, LoadParams::kvm(VCPUS)).unwrap(), img);
    // A device in a page the image has no descriptor for cannot be stored.
    img.devices.insert(20000, img.devices[&9000].clone());
    img.devices.get_mut(&20000).unwrap().itt_addr = ITT_BASE + 0x2000;
    assert_eq!(
        kvm::store(&img, &fresh(), LoadParams::kvm(VCPUS)),
        Err(AbiError::DeviceOutOfRange { device_id: 20000 })
    );
}

fn regs_for(img: &ItsImage) -> KvmItsRegs {
    let mut r = KvmItsRegs {
        ctlr: u32::from(img.enabled),
        iidr: kvm::KVM_IIDR_REV0,
        typer: kvm::KVM_TYPER,
        cbaser: img.cbaser,
        cwriter: img.cwriter,
        creadr: img.creadr,
        ..KvmItsRegs::default()
    };
    r.baser[0] = img.device_baser;
    r.baser[1] = img.collection_baser;
    r
}

/// Hostile KVM tables and registers: each gives its defined error, with the errno KVM's
/// `RESTORE_TABLES` returns for the same bytes (or none when only the model refuses).
#[test]
fn hostile_kvm_tables_give_defined_errors() {
    let img = sample_image();
    let p = LoadParams::kvm(VCPUS);
    // Stored tables, then one word changed.
    let case = |addr: u64, w: u64| {
        let mem = fresh();
        let regs = kvm::store(&img, &mem, p).unwrap();
        put(&mem, addr, w);
        kvm::load(&regs, &mem, p)
    };
    let dte8 = DEVICE_TABLE + 8 * 8;
    let valid_dte = |size: u64, next: u64| (1 << 63) | (next << 49) | ((ITT_BASE >> 8) << 5) | size;
    let e = case(dte8, valid_dte(16, 8992)).unwrap_err();
    assert_eq!(
        e,
        AbiError::DteSize {
            device_id: 8,
            bits: 17,
            max: 16
        }
    );
    assert_eq!(e.kvm_errno(), Some(kvm::EINVAL));
    let e = case(ITT_BASE + 8, (19 << 48) | (100 << 16) | 1).unwrap_err();
    assert!(matches!(e, AbiError::IteLpi { intid: 100, .. }));
    assert_eq!(e.kvm_errno(), Some(kvm::EINVAL));
    let e = case(ITT_BASE + 8, (19 << 48) | (70000 << 16) | 1).unwrap_err();
    assert!(matches!(e, AbiError::IteLpi { intid: 70000, .. }));
    assert_eq!(
        e.kvm_errno(),
        None,
        "KVM takes LPIs its property table reaches"
    );
    let e = case(ITT_BASE + 8, (40 << 48) | (8193 << 16) | 1).unwrap_err();
    assert_eq!(
        e,
        AbiError::IteNext {
            device_id: 8,
            event_id: 1,
            next: 40,
            bits: 5
        }
    );
    assert_eq!(e.kvm_errno(), Some(kvm::EINVAL));
    let e = case(ITT_BASE + 8, (19 << 48) | (8193 << 16) | 7).unwrap_err();
    assert_eq!(
        e,
        AbiError::IteCollection {
            device_id: 8,
            event_id: 1,
            icid: 7
        }
    );
    assert_eq!(e.kvm_errno(), Some(kvm::EINVAL));
    let e = case(COLLECTION_TABLE + 8, (1 << 63) | (5 << 16) | 1).unwrap_err();
    assert_eq!(
        e,
        AbiError::CteTarget {
            icid: 1,
            target: 5,
            vcpus: VCPUS
        }
    );
    assert_eq!(e.kvm_errno(), Some(kvm::EINVAL));
    let e = case(COLLECTION_TABLE + 8, 1 << 63).unwrap_err();
    assert_eq!(e, AbiError::CteDuplicate { icid: 0 });
    assert_eq!(e.kvm_errno(), Some(kvm::EEXIST));
    let e = case(COLLECTION_TABLE + 24, (1 << 63) | 8192).unwrap_err();
    assert_eq!(e, AbiError::CteOutOfRange { icid: 8192 });
    assert_eq!(e.kvm_errno(), Some(kvm::EINVAL));
    // RDBase bits [35:32] are dropped, as KVM does, and RES0 is ignored.
    let back = case(
        COLLECTION_TABLE + 8,
        (1 << 63) | (0x3ff << 52) | (0xf_0000_0001 << 16) | 1,
    )
    .unwrap();
    assert_eq!(back.collections[&1], Some(1));
    // An ITT outside guest memory.
    let e = case(
        dte8,
        (1 << 63) | (8992 << 49) | ((0x4000_0000u64 >> 8) << 5) | 4,
    )
    .unwrap_err();
    assert!(matches!(e, AbiError::Memory { op: "load", .. }), "{e}");
    assert_eq!(e.kvm_errno(), Some(kvm::EFAULT));
    // A next that jumps past the end ends the table: the device at 9000 is not restored.
    let back = case(dte8, valid_dte(4, 16000)).unwrap();
    assert_eq!(back.devices.keys().copied().collect::<Vec<_>>(), [8]);
    // A valid entry a jump skips over is not part of the state (KVM never reads it).
    let back = case(DEVICE_TABLE + 100 * 8, valid_dte(0, 0)).unwrap();
    assert!(!back.devices.contains_key(&100));
    // ... but one before the first device is, however stale.
    let back = case(DEVICE_TABLE + 2 * 8, valid_dte(4, 6)).unwrap();
    assert!(back.devices.contains_key(&2));

    // Registers KVM would not hold.
    let r = regs_for(&img);
    let reg_err = |r: KvmItsRegs| kvm::load(&r, &fresh(), p).unwrap_err();
    let e = reg_err(KvmItsRegs {
        iidr: 0x4b00_143b,
        ..r
    });
    assert!(
        matches!(
            e,
            AbiError::Register {
                register: "GITS_IIDR",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.kvm_errno(), None);
    let mut b = r;
    b.baser[0] &= !(3 << 8);
    assert!(matches!(
        reg_err(b),
        AbiError::Register {
            register: "GITS_BASER0",
            ..
        }
    ));
    let mut b = r;
    b.baser[1] |= 1 << 62;
    assert!(matches!(
        reg_err(b),
        AbiError::Register {
            register: "GITS_BASER1",
            ..
        }
    ));
    let mut b = r;
    b.baser[1] = (b.baser[1] & !(7 << 56)) | (1 << 56);
    assert!(matches!(
        reg_err(b),
        AbiError::Register {
            register: "GITS_BASER1",
            ..
        }
    ));
    assert!(matches!(
        reg_err(KvmItsRegs {
            cbaser: r.cbaser | 0x1000,
            ..r
        }),
        AbiError::Register {
            register: "GITS_CBASER",
            ..
        }
    ));
    assert!(matches!(
        reg_err(KvmItsRegs {
            cwriter: 0x1_0000,
            ..r
        }),
        AbiError::Register {
            register: "GITS_CWRITER",
            ..
        }
    ));
    assert!(matches!(
        reg_err(KvmItsRegs {
            typer: kvm::KVM_TYPER | (0xf << 4),
            ..r
        }),
        AbiError::Register {
            register: "GITS_TYPER",
            ..
        }
    ));
    let mut b = r;
    b.baser[3] = 1;
    assert!(matches!(
        reg_err(b),
        AbiError::Register {
            register: "GITS_BASER3",
            ..
        }
    ));
}

/// A table of nothing but invalid entries makes the walk long, never unbounded: the work
/// limit ends it with a defined error; two level-1 descriptors naming one page restore
/// (as in KVM) but cannot be stored back.
#[test]
fn long_and_aliased_tables_are_bounded() {
    let mem = fresh();
    let mut img = sample_image();
    img.devices.clear();
    img.collections.clear();
    // 8 pages of invalid DTEs: a restore reads all 65536.
    img.device_baser = (img.device_baser & !0xff) | 7;
    let regs = kvm::store(&img, &mem, LoadParams::kvm(VCPUS)).unwrap();
    let small = LoadParams {
        limit: WorkLimit { entries: 1000 },
        ..LoadParams::kvm(VCPUS)
    };
    let e = kvm::load(&regs, &mem, small).unwrap_err();
    assert_eq!(
        e,
        AbiError::Budget {
            op: "load",
            limit: 1000
        }
    );
    assert_eq!(e.kvm_errno(), None);
    assert!(kvm::load(&regs, &mem, LoadParams::kvm(VCPUS)).is_ok());
    // Aliased level-2 pages.
    let mut img = sample_image();
    img.device_baser = (1 << 63) | (1 << 62) | (1 << 56) | (7 << 48) | (2 << 8) | DEVICE_TABLE;
    img.devices.remove(&9000);
    img.device_l2_pages = BTreeMap::from([(0, L2_BASE)]);
    let regs = kvm::store(&img, &mem, LoadParams::kvm(VCPUS)).unwrap();
    put(&mem, DEVICE_TABLE + 8, (1 << 63) | L2_BASE);
    // The DTE of DeviceID 8 ends the walk (next 0) in page 0: page 1 is never reached.
    let back = kvm::load(&regs, &mem, LoadParams::kvm(VCPUS)).unwrap();
    assert_eq!(back.devices.len(), 1);
    assert_eq!(
        back.device_l2_pages.len(),
        2,
        "the aliased descriptor is recorded"
    );
    assert!(matches!(
        kvm::store(&back, &fresh(), LoadParams::kvm(VCPUS)),
        Err(AbiError::Overlap { .. })
    ));
}

/// Import writes a live model whose translations are the image's; overlapping or
/// out-of-range images are refused.
#[test]
fn image_translation_is_the_models() {
    let img = sample_image();
    let mem = fresh();
    let mut its = Its::import_image(kvm_config(), &img, &mem, WorkLimit::default()).unwrap();
    for (d, e) in [
        (8, 0),
        (8, 1),
        (8, 2),
        (8, 20),
        (9000, 0),
        (9000, 1),
        (7, 0),
    ] {
        assert_eq!(
            its.translate(&mem, d, e).ok().map(|t| (t.intid, t.vcpu)),
            img.translate(d, e),
            "{d} {e}"
        );
    }
    assert_eq!(its.export_image(&mem, WorkLimit::default()).unwrap(), img);
    // The same image in the native format, with 64 KiB pages.
    let native = ItsConfig::builder()
        .vcpus(VCPUS)
        .device_id_bits(16)
        .event_id_bits(16)
        .collection_id_bits(16)
        .build()
        .unwrap();
    let mem2 = fresh();
    let mut n = Its::import_image(native, &img, &mem2, WorkLimit::default()).unwrap();
    assert_eq!(n.translate(&mem2, 8, 20).unwrap().intid, 8200);
    // Native keeps collections in its table: the unmapped one is gone from memory, and comes
    // back as "named by an ITE" on export.
    assert_eq!(n.export_image(&mem2, WorkLimit::default()).unwrap(), img);
    let mut bad = img.clone();
    bad.devices.get_mut(&9000).unwrap().itt_addr = ITT_BASE + 0x1080;
    assert!(matches!(
        Its::import_image(kvm_config(), &bad, &fresh(), WorkLimit::default()),
        Err(ImageError::Device {
            device_id: 9000,
            ..
        })
    ));
    bad.devices.get_mut(&9000).unwrap().itt_addr = ITT_BASE + 0x80;
    assert!(matches!(
        Its::import_image(kvm_config(), &bad, &fresh(), WorkLimit::default()),
        Err(ImageError::Overlap { .. })
    ));
    let mut bad = img.clone();
    bad.collections.insert(1, Some(VCPUS));
    assert!(matches!(
        Its::import_image(kvm_config(), &bad, &fresh(), WorkLimit::default()),
        Err(ImageError::Registers(_))
    ));
    let mut bad = img.clone();
    bad.device_baser &= !(3 << 8);
    assert!(matches!(
        Its::import_image(kvm_config(), &bad, &fresh(), WorkLimit::default()),
        Err(ImageError::Registers(_))
    ));
    assert!(matches!(
        Its::import_image(kvm_config(), &img, &fresh(), WorkLimit { entries: 100 }),
        Err(ImageError::Budget { op: "import", .. })
    ));
}

#[derive(Clone, Debug)]
enum Op {
    Mapd(u32, u8, bool),
    Mapc(u16, u64, bool),
    Mapti(u32, u32, u32, u16),
    Movi(u32, u32, u16),
    Discard(u32, u32),
}

impl Op {
    fn raw(&self) -> RawCommand {
        match *self {
            Op::Mapd(d, s, v) => RawCommand::mapd(d, s, ITT_BASE + u64::from(d) * 0x1000, v),
            Op::Mapc(i, r, v) => RawCommand::mapc(i, r, v),
            Op::Mapti(d, e, p, i) => RawCommand::mapti(d, e, p, i),
            Op::Movi(d, e, i) => RawCommand::movi(d, e, i),
            Op::Discard(d, e) => RawCommand::discard(d, e),
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u32..12, 0u8..5, prop::bool::weighted(0.85)).prop_map(|(d, s, v)| Op::Mapd(d, s, v)),
        2 => (0u16..6, 0u64..3, prop::bool::weighted(0.8)).prop_map(|(i, r, v)| Op::Mapc(i, r, v)),
        5 => (0u32..12, 0u32..20, 8192u32..8300, 0u16..6).prop_map(|(d, e, p, i)| Op::Mapti(d, e, p, i)),
        2 => (0u32..12, 0u32..20, 0u16..6).prop_map(|(d, e, i)| Op::Movi(d, e, i)),
        1 => (0u32..12, 0u32..20).prop_map(|(d, e)| Op::Discard(d, e)),
    ]
}

fn all_translations(its: &mut Its, mem: &GuestMemoryMmap<()>) -> Vec<Option<(u32, u32)>> {
    let mut v = Vec::new();
    for d in 0..12 {
        for e in 0..20 {
            v.push(its.translate(mem, d, e).ok().map(|t| (t.intid, t.vcpu)));
        }
    }
    v
}

proptest! {
    /// Whatever commands built it, a model's image: translates as the model does, imports
    /// into a model that translates the same and exports the same image, and (64 KiB
    /// pages, KVM geometry) stores as KVM tables that load back to the same image. In the
    /// KVM format, storing in place leaves the live model translating as before, and the
    /// memory it runs on is then a KVM image of it.
    #[test]
    fn images_round_trip(
        ops in prop::collection::vec(op(), 1..60),
        kvm_format in any::<bool>(),
        indirect in any::<bool>(),
    ) {
        let config = if kvm_format {
            kvm_config()
        } else {
            ItsConfig::builder().vcpus(VCPUS).device_id_bits(16).event_id_bits(16)
                .collection_id_bits(16).error_policy(vgic_its::CommandErrorPolicy::Skip)
                .build().unwrap()
        };
        let mut g = Guest::new(config.clone());
        let dev = (1u64 << 63) | (2 << 8) | if indirect { (1 << 62) | DEVICE_TABLE } else { DEVICE_TABLE };
        g.setup_baser(0, dev);
        g.setup_baser(1, (1 << 63) | (2 << 8) | COLLECTION_TABLE);
        if indirect {
            put(&g.mem, DEVICE_TABLE, (1 << 63) | L2_BASE);
        }
        g.setup_queue(1);
        g.enable();
        for o in &ops {
            g.send(&[o.raw()]);
        }
        let want = all_translations(&mut g.its, &g.mem);
        let img = g.its.export_image(&g.mem, WorkLimit::default()).unwrap();
        let mut k = 0;
        for d in 0..12 {
            for e in 0..20 {
                prop_assert_eq!(img.translate(d, e), want[k], "image {} {}", d, e);
                k += 1;
            }
        }
        let mem = fresh();
        let mut imported = Its::import_image(config.clone(), &img, &mem, WorkLimit::default()).unwrap();
        prop_assert_eq!(all_translations(&mut imported, &mem), want.clone());
        prop_assert_eq!(imported.export_image(&mem, WorkLimit::default()).unwrap(), img.clone());
        let kmem = fresh();
        let regs = kvm::store(&img, &kmem, LoadParams::kvm(VCPUS)).unwrap();
        let back = kvm::load(&regs, &kmem, LoadParams::kvm(VCPUS)).unwrap();
        prop_assert_eq!(&back, &img);
        if kvm_format {
            let regs = kvm::store(&img, &g.mem, LoadParams::kvm(VCPUS)).unwrap();
            g.its.invalidate_cache();
            prop_assert_eq!(all_translations(&mut g.its, &g.mem), want);
            prop_assert_eq!(kvm::load(&regs, &g.mem, LoadParams::kvm(VCPUS)).unwrap(), img);
        }
    }

    /// Random words in KVM's tables: `load` never panics, and whatever it accepts stores
    /// back (unless the tables alias memory) to tables that load to the same image.
    #[test]
    fn hostile_kvm_tables_never_panic(
        dtes in prop::collection::vec((0u64..64, any::<u64>(), any::<bool>()), 0..24),
        ites in prop::collection::vec((0u64..256, any::<u64>(), any::<bool>()), 0..48),
        ctes in prop::collection::vec(any::<u64>(), 0..8),
        indirect in any::<bool>(),
    ) {
        let mem = fresh();
        let mut img = sample_image();
        img.devices.clear();
        img.collections.clear();
        if indirect {
            img.device_baser |= 1 << 62;
            put(&mem, DEVICE_TABLE, (1 << 63) | L2_BASE);
        }
        let regs = regs_for(&img);
        let dt = if indirect { L2_BASE } else { DEVICE_TABLE };
        for (slot, w, tame) in &dtes {
            // Tame words point their ITT into a small window so that the ITEs below matter.
            let w = if *tame {
                (w & !(kvm::DTE_ITT_MASK | kvm::DTE_NEXT_MASK | 0x1f))
                    | ((ITT_BASE >> 8) << 5) | ((w >> 49) & 0x3f) << 49 | (w & 3)
            } else {
                *w
            };
            put(&mem, dt + slot * 8, w);
        }
        for (slot, w, tame) in &ites {
            let w = if *tame {
                let i = Ite::decode(*w);
                Ite { next: i.next & 0x7, pintid: 8192 + (i.pintid & 0xff), icid: i.icid & 3 }.encode().unwrap()
            } else {
                *w
            };
            put(&mem, ITT_BASE + slot * 8, w);
        }
        for (i, w) in ctes.iter().enumerate() {
            let w = if w & 1 == 0 { (1 << 63) | ((w >> 1) & 1) << 16 | (w >> 8) & 3 } else { *w };
            put(&mem, COLLECTION_TABLE + 8 * i as u64, w);
        }
        let p = LoadParams { limit: WorkLimit { entries: 200_000 }, ..LoadParams::kvm(VCPUS) };
        if let Ok(img) = kvm::load(&regs, &mem, p) {
            let m2 = fresh();
            match kvm::store(&img, &m2, LoadParams::kvm(VCPUS)) {
                Ok(r) => prop_assert_eq!(kvm::load(&r, &m2, LoadParams::kvm(VCPUS)).unwrap(), img),
                Err(e) => prop_assert!(matches!(e, AbiError::Overlap { .. }), "{}", e),
            }
        }
    }
}

/// Found by the `its_abi` fuzz target: a level-1 descriptor after the page of the last DTE
/// is never walked by KVM's restore, so it may point at unbacked memory; the image records
/// it, and storing or importing the image must not touch that page.
#[test]
fn trailing_level2_pages_may_be_unbacked() {
    let mem = fresh();
    let mut img = sample_image();
    img.device_baser = (1 << 63) | (1 << 62) | (1 << 56) | (7 << 48) | (2 << 8) | DEVICE_TABLE;
    img.devices.remove(&9000);
    img.device_l2_pages = BTreeMap::from([(0, L2_BASE), (3, 0x3000_0000)]);
    let regs = kvm::store(&img, &mem, LoadParams::kvm(VCPUS)).unwrap();
    let back = kvm::load(&regs, &mem, LoadParams::kvm(VCPUS)).unwrap();
    assert_eq!(back, img);
    let m2 = fresh();
    let r2 = kvm::store(&back, &m2, LoadParams::kvm(VCPUS)).unwrap();
    assert_eq!(kvm::load(&r2, &m2, LoadParams::kvm(VCPUS)).unwrap(), img);
    let m3 = fresh();
    let mut its = Its::import_image(kvm_config(), &back, &m3, WorkLimit::default()).unwrap();
    assert_eq!(its.translate(&m3, 8, 1).unwrap().intid, 8193);
    // A DeviceID in the unbacked page is simply not there.
    assert!(its.translate(&m3, 3 * 8192, 0).is_err());
    // Without a device before it, the page is walked: it must be backed.
    img.devices.clear();
    img.collections.retain(|_, t| t.is_some());
    assert!(matches!(
        kvm::store(&img, &fresh(), LoadParams::kvm(VCPUS)),
        Err(AbiError::Memory { op: "store", .. })
    ));
}
