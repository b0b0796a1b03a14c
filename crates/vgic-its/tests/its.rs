// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Behaviour tests driven through the register frame, the way a guest driver does.
//! Section numbers refer to Arm IHI 0069H.

mod common;

use common::*;
use vgic_its::cmd::decode::{RawCommand, opcode};
use vgic_its::regs::*;
use vgic_its::{
    CommandErrorPolicy, Its, ItsConfig, ItsState, MappingEvent, StateError, TranslationError,
};
use vm_memory::{Bytes, GuestAddress};

fn cfg() -> vgic_its::ItsConfigBuilder {
    ItsConfig::builder().vcpus(4)
}

/// Linux's boot sequence (drivers/irqchip/irq-gic-v3-its.c): probe and program the
/// GITS_BASERs, CBASER, enable, MAPC + SYNC per CPU, then per device MAPD, MAPTI, INV,
/// SYNC, and interrupts arrive through GITS_TRANSLATER. Done for each ITS page size.
#[test]
fn linux_boot_flow() {
    for psz in [0u64, 1, 2] {
        let mut g = Guest::new(cfg().build().unwrap());
        let typer = g.read64(GITS_TYPER);
        assert_eq!(typer & 1, 1, "Physical");
        assert_eq!((typer >> 1) & 1, 0, "Virtual");
        assert_eq!((typer >> 19) & 1, 0, "PTA");
        let ctlr = g.read32(GITS_CTLR);
        assert_eq!(ctlr, GITS_CTLR_QUIESCENT, "reset: disabled and quiescent");
        assert_eq!(g.read32(GITS_PIDR2) >> 4 & 0xf, 3, "ArchRev GICv3");

        // Probe: Type and Entry_Size read back; a write cannot change them.
        let b0 = g.read64(GITS_BASER0);
        assert_eq!((b0 >> 56) & 7, 1, "BASER0 is the Device table");
        assert_eq!((b0 >> 48) & 0x1f, 7, "8-byte entries");
        let b1 = g.read64(GITS_BASER0 + 8);
        assert_eq!((b1 >> 56) & 7, 4, "BASER1 is the Collection table");
        for n in 2..8 {
            assert_eq!(g.read64(GITS_BASER0 + 8 * n), 0, "BASER{n} unimplemented");
        }

        // Program with inner-shareable, RaWaWb cacheability: every field sticks.
        let want = (1u64 << 63) | (7 << 59) | (1 << 10) | (psz << 8) | DEVICE_TABLE;
        let got = g.setup_baser(0, want);
        assert_eq!(got & !((0x7 << 56) | (0x1f << 48)), want);
        assert_eq!((got >> 8) & 3, psz, "Page_Size reads back");
        let want1 = (1u64 << 63) | (psz << 8) | COLLECTION_TABLE;
        assert_eq!(g.setup_baser(1, want1) & (1 << 63), 1 << 63);

        g.setup_queue(2);
        assert_eq!(g.read64(GITS_CBASER), (1 << 63) | CMD_QUEUE | 1);
        assert_eq!(g.creadr(), 0);
        g.enable();
        assert_eq!(g.read32(GITS_CTLR) & 1, 1);

        g.map_collections();
        assert_eq!(g.creadr(), g.next, "queue drained");
        let dev = 0x10;
        g.send(&[
            RawCommand::mapd(dev, 4, Guest::itt(dev), true),
            RawCommand::sync(0),
        ]);
        for ev in 0..8u32 {
            let cpu = (ev % 4) as u16;
            g.send(&[
                RawCommand::mapti(dev, ev, 8192 + ev, cpu),
                RawCommand::inv(dev, ev),
                RawCommand::sync(u64::from(cpu)),
            ]);
        }
        assert!(!g.its.is_stalled());
        assert!(g.its.last_command_error().is_none());
        assert!(g.rd.ops.contains(&common::Op::Inv(1, 8193)));

        // The device raises its MSIs: 32-bit and 16-bit GITS_TRANSLATER writes.
        for ev in 0..8u32 {
            if ev % 2 == 0 {
                g.its.mmio_write(
                    &g.mem,
                    &mut g.rd,
                    GITS_TRANSLATER,
                    &ev.to_le_bytes(),
                    Some(dev),
                );
            } else {
                g.its.mmio_write(
                    &g.mem,
                    &mut g.rd,
                    GITS_TRANSLATER,
                    &(ev as u16).to_le_bytes(),
                    Some(dev),
                );
            }
        }
        let want: std::collections::BTreeSet<_> = (0..8u32).map(|e| (e % 4, 8192 + e)).collect();
        assert_eq!(g.rd.pending, want, "page size field {psz}");
    }
}

#[test]
fn typer_reports_config() {
    let c = ItsConfig::builder()
        .device_id_bits(20)
        .event_id_bits(11)
        .itt_entry_size(12)
        .collection_id_bits(8)
        .hcc(3)
        .build()
        .unwrap();
    let g = Guest::new(c);
    let t = g.read64(GITS_TYPER);
    assert_eq!((t >> 4) & 0xf, 11, "ITT_entry_size");
    assert_eq!((t >> 8) & 0x1f, 10, "ID_bits");
    assert_eq!((t >> 13) & 0x1f, 19, "Devbits");
    assert_eq!((t >> 18) & 1, 0, "SEIS");
    assert_eq!((t >> 24) & 0xff, 3, "HCC");
    assert_eq!((t >> 32) & 0xf, 7, "CIDbits");
    assert_eq!((t >> 36) & 1, 1, "CIL");
    // 32-bit reads of the halves.
    assert_eq!(u64::from(g.read32(GITS_TYPER)), t & 0xffff_ffff);
    assert_eq!(u64::from(g.read32(GITS_TYPER + 4)), t >> 32);
    // 16 collection bits: CIL = 0.
    let g = Guest::new(ItsConfig::builder().build().unwrap());
    assert_eq!((g.read64(GITS_TYPER) >> 36) & 1, 0);
    assert_eq!(g.read32(GITS_IIDR), 0x43b);
}

/// IHI 0069H §5.2: flat and two-level Device tables; a DeviceID the table does not cover
/// (beyond a flat table, or level-1 descriptor invalid) is MAPD_DEVICE_OOR.
#[test]
fn flat_and_two_level_device_tables() {
    // Flat: one 4 KiB page of 8-byte entries = 512 DeviceIDs.
    let mut g = Guest::booted(cfg().build().unwrap());
    g.map_collections();
    assert_eq!(g.err(RawCommand::mapd(511, 0, Guest::itt(1), true)), None);
    assert_eq!(
        g.err(RawCommand::mapd(512, 0, Guest::itt(1), true))
            .as_deref(),
        Some("MAPD_DEVICE_OOR")
    );

    // Two-level: level-1 one page; only descriptor 2 valid (DeviceIDs 1024..1536).
    let mut g = Guest::new(cfg().device_id_bits(20).build().unwrap());
    let got = g.setup_baser(0, (1 << 63) | (1 << 62) | DEVICE_TABLE);
    assert!(got & (1 << 62) != 0, "Indirect supported");
    g.setup_baser(1, (1 << 63) | COLLECTION_TABLE);
    g.setup_queue(1);
    g.enable();
    g.map_collections();
    g.mem
        .write_obj((1u64 << 63) | L2_BASE, GuestAddress(DEVICE_TABLE + 2 * 8))
        .unwrap();
    assert_eq!(
        g.err(RawCommand::mapd(5, 1, Guest::itt(5), true))
            .as_deref(),
        Some("MAPD_DEVICE_OOR")
    );
    // Linux allocates level-2 pages at run time: a level-1 descriptor written while the ITS
    // is enabled is seen by the next command (invalid level-1 entries are never cached).
    g.mem
        .write_obj(
            (1u64 << 63) | (L2_BASE + 0x1000),
            GuestAddress(DEVICE_TABLE),
        )
        .unwrap();
    assert_eq!(g.err(RawCommand::mapd(5, 1, Guest::itt(5), true)), None);
    let dev = 1024 + 7;
    assert_eq!(g.err(RawCommand::mapd(dev, 1, Guest::itt(1), true)), None);
    // The DTE landed in the level-2 page.
    let dte: u64 = g.mem.read_obj(GuestAddress(L2_BASE + 7 * 8)).unwrap();
    assert_eq!(dte >> 63, 1);
    assert_eq!(g.err(RawCommand::mapti(dev, 2, 9000, 3)), None);
    let t = g.its.send_msi(&g.mem, &mut g.rd, dev, 2).unwrap();
    assert_eq!((t.intid, t.vcpu), (9000, 3));
    // Beyond the level-1 table (512 descriptors * 512 entries).
    assert_eq!(
        g.err(RawCommand::mapd(512 * 512, 1, Guest::itt(1), true))
            .as_deref(),
        Some("MAPD_DEVICE_OOR")
    );
}

/// IHI 0069H §5.3 MAPD: DEVICE_OOR (Devbits), ITTSIZE_OOR (Size + 1 > ID_bits + 1).
#[test]
fn mapd_errors() {
    let mut g = Guest::booted(cfg().device_id_bits(8).event_id_bits(10).build().unwrap());
    let e = g.cmd(RawCommand::mapd(256, 0, 0, true)).unwrap();
    assert_eq!(e.mnemonic(), "MAPD_DEVICE_OOR");
    assert_eq!(e.code(), 0x01_0801);
    let e = g.cmd(RawCommand::mapd(1, 10, 0, true)).unwrap();
    assert_eq!(e.mnemonic(), "MAPD_ITTSIZE_OOR");
    assert_eq!(e.code(), 0x01_0802);
    assert!(e.to_string().contains("11 EventID bits"), "{e}");
    assert_eq!(g.err(RawCommand::mapd(1, 9, Guest::itt(1), true)), None);
    // V = 0 ignores Size.
    assert_eq!(g.err(RawCommand::mapd(1, 31, 0, false)), None);
    // DeviceID check applies to V = 0 too.
    assert_eq!(
        g.err(RawCommand::mapd(300, 0, 0, false)).as_deref(),
        Some("MAPD_DEVICE_OOR")
    );
}

/// IHI 0069H §5.3 MAPC: COLLECTION_OOR, PROCNUM_OOR (PTA = 0: RDbase is a processor number).
#[test]
fn mapc_errors() {
    let mut g = Guest::booted(cfg().collection_id_bits(4).build().unwrap());
    let e = g.cmd(RawCommand::mapc(16, 0, true)).unwrap();
    assert_eq!(
        (e.mnemonic().as_str(), e.code()),
        ("MAPC_COLLECTION_OOR", 0x01_0903)
    );
    let e = g.cmd(RawCommand::mapc(1, 4, true)).unwrap();
    assert_eq!(
        (e.mnemonic().as_str(), e.code()),
        ("MAPC_PROCNUM_OOR", 0x01_0902)
    );
    // V = 0 with a bad RDbase is fine: RDbase is ignored.
    assert_eq!(g.err(RawCommand::mapc(1, 99, false)), None);
    assert_eq!(g.err(RawCommand::mapc(15, 3, true)), None);

    // A Collection table smaller than the ICID space: beyond it is COLLECTION_OOR.
    let mut g = Guest::new(cfg().build().unwrap());
    g.setup_baser(0, (1 << 63) | DEVICE_TABLE);
    g.setup_baser(1, (1 << 63) | COLLECTION_TABLE); // 512 collections
    g.setup_queue(1);
    g.enable();
    assert_eq!(g.err(RawCommand::mapc(511, 0, true)), None);
    assert_eq!(
        g.err(RawCommand::mapc(512, 0, true)).as_deref(),
        Some("MAPC_COLLECTION_OOR")
    );
    // Collection table not valid: every memory-held ICID is out of range.
    let mut g = Guest::new(cfg().build().unwrap());
    g.setup_baser(0, (1 << 63) | DEVICE_TABLE);
    g.setup_queue(1);
    g.enable();
    assert_eq!(
        g.err(RawCommand::mapc(0, 0, true)).as_deref(),
        Some("MAPC_COLLECTION_OOR")
    );
}

/// IHI 0069H §5.3 MAPTI / §5.3 MAPI: DEVICE_OOR, COLLECTION_OOR, UNMAPPED_DEVICE, ID_OOR,
/// PHYSICALID_OOR, in that order.
#[test]
fn mapti_errors() {
    let mut g = Guest::booted(
        cfg()
            .device_id_bits(8)
            .collection_id_bits(4)
            .intid_bits(14)
            .build()
            .unwrap(),
    );
    let m = |e: Option<vgic_its::CommandError>| e.map(|e| (e.mnemonic(), e.code()));
    assert_eq!(
        m(g.cmd(RawCommand::mapti(256, 0, 8192, 99))),
        Some(("MAPTI_DEVICE_OOR".into(), 0x01_0a01))
    );
    assert_eq!(
        m(g.cmd(RawCommand::mapti(1, 0, 8192, 16))),
        Some(("MAPTI_COLLECTION_OOR".into(), 0x01_0a03))
    );
    assert_eq!(
        m(g.cmd(RawCommand::mapti(1, 0, 8192, 0))),
        Some(("MAPTI_UNMAPPED_DEVICE".into(), 0x01_0a04))
    );
    g.cmd(RawCommand::mapd(1, 2, Guest::itt(1), true));
    assert_eq!(
        m(g.cmd(RawCommand::mapti(1, 8, 8192, 0))),
        Some(("MAPTI_ID_OOR".into(), 0x01_0a05))
    );
    for bad in [0, 8191, 16384, u32::MAX] {
        assert_eq!(
            m(g.cmd(RawCommand::mapti(1, 7, bad, 0))),
            Some(("MAPTI_PHYSICALID_OOR".into(), 0x01_0a06)),
            "pINTID {bad}"
        );
    }
    // Collection need not be mapped yet.
    assert_eq!(g.err(RawCommand::mapti(1, 7, 16383, 0)), None);
    // MAPI: pINTID = EventID, so a small EventID is PHYSICALID_OOR.
    assert_eq!(
        g.err(RawCommand::mapi(1, 3, 0)).as_deref(),
        Some("MAPI_PHYSICALID_OOR")
    );
    assert_eq!(
        g.err(RawCommand::mapi(2, 3, 0)).as_deref(),
        Some("MAPI_UNMAPPED_DEVICE")
    );
    g.cmd(RawCommand::mapd(2, 13, Guest::itt(2), true));
    assert_eq!(g.err(RawCommand::mapi(2, 8200, 1)), None);
    g.cmd(RawCommand::mapc(1, 2, true));
    assert_eq!(
        g.its.send_msi(&g.mem, &mut g.rd, 2, 8200).unwrap().intid,
        8200
    );
}

/// INT (§5.3), CLEAR (§5.3), INV (§5.3), DISCARD (§5.3): DEVICE_OOR, UNMAPPED_DEVICE,
/// ID_OOR, UNMAPPED_INTERRUPT, and for INT/CLEAR/INV UNMAPPED_COLLECTION.
#[test]
fn event_command_errors() {
    type Mk = fn(u32, u32) -> RawCommand;
    let cmds: [(&str, Mk, u8); 4] = [
        ("INT", RawCommand::int, opcode::INT),
        ("CLEAR", RawCommand::clear, opcode::CLEAR),
        ("INV", RawCommand::inv, opcode::INV),
        ("DISCARD", RawCommand::discard, opcode::DISCARD),
    ];
    for (name, mk, op) in cmds {
        let mut g = Guest::booted(cfg().device_id_bits(8).build().unwrap());
        let e = g.cmd(mk(256, 0)).unwrap();
        assert_eq!(e.mnemonic(), format!("{name}_DEVICE_OOR"));
        assert_eq!(e.code(), 0x01_0001 | (u32::from(op) << 8));
        assert_eq!(e.offset, 0);
        assert_eq!(g.err(mk(3, 0)), Some(format!("{name}_UNMAPPED_DEVICE")));
        g.cmd(RawCommand::mapd(3, 1, Guest::itt(3), true));
        assert_eq!(g.err(mk(3, 4)), Some(format!("{name}_ID_OOR")));
        assert_eq!(g.err(mk(3, 3)), Some(format!("{name}_UNMAPPED_INTERRUPT")));
        g.cmd(RawCommand::mapti(3, 3, 8300, 2));
        // Every one of them, DISCARD included (IHI 0069H 5.3.11: it reads the collection
        // to clear the pending state), needs the ITE's collection mapped.
        let e = g.cmd(mk(3, 3)).unwrap();
        assert_eq!(e.mnemonic(), format!("{name}_UNMAPPED_COLLECTION"));
        assert_eq!(e.code() & 0xff, 0x09);
        g.cmd(RawCommand::mapc(2, 1, true));
        assert_eq!(g.err(mk(3, 3)), None);
    }
}

/// Issue 15 finding 3 (IHI 0069H 5.3.21): MOVI of an event whose *current* collection is
/// unmapped is MOVI_UNMAPPED_COLLECTION, before the new collection is looked at, and the
/// event stays where it was. Sibling: DISCARD through an unmapped collection fails the same
/// way and leaves the mapping (`event_command_errors`).
#[test]
fn movi_from_unmapped_collection() {
    let mut g = Guest::booted(cfg().collection_id_bits(4).build().unwrap());
    g.send(&[
        RawCommand::mapd(1, 3, Guest::itt(1), true),
        RawCommand::mapc(0, 0, true),
        RawCommand::mapc(1, 1, true),
        RawCommand::mapti(1, 5, 8500, 0),
        RawCommand::mapc(0, 0, false), // the event's collection goes away
    ]);
    assert!(g.its.last_command_error().is_none());
    let e = g.cmd(RawCommand::movi(1, 5, 1)).unwrap();
    assert_eq!(
        (e.mnemonic().as_str(), e.code(), e.kind),
        (
            "MOVI_UNMAPPED_COLLECTION",
            0x01_0109,
            vgic_its::CommandErrorKind::UnmappedCollection { icid: 0 }
        )
    );
    // Both unmapped: the current collection is reported first.
    g.send(&[RawCommand::mapc(1, 0, false)]);
    assert_eq!(
        g.cmd(RawCommand::movi(1, 5, 1)).unwrap().kind,
        vgic_its::CommandErrorKind::UnmappedCollection { icid: 0 }
    );
    // Nothing moved: remapping collection 0 brings the event back on vCPU 2.
    g.send(&[RawCommand::mapc(0, 2, true)]);
    let t = g.its.translate(&g.mem, 1, 5).unwrap();
    assert_eq!((t.icid, t.vcpu), (0, 2));
    // The new collection unmapped: reported with its own ICID.
    assert_eq!(
        g.cmd(RawCommand::movi(1, 5, 1)).unwrap().kind,
        vgic_its::CommandErrorKind::UnmappedCollection { icid: 1 }
    );
    assert!(!g.rd.ops.iter().any(|o| matches!(o, common::Op::Move(..))));
}

/// Issue 15 finding 2: a GITS_CBASER write empties the queue (CREADR = CWRITER = 0, no
/// stall), so re-enabling runs nothing the guest did not publish after it. Siblings: either
/// 32-bit half resets it; a GITS_BASER write does not touch the queue pointers; CWRITER at or
/// beyond the queue is ignored.
#[test]
fn cbaser_write_empties_the_queue() {
    let mut g = Guest::booted(cfg().build().unwrap());
    g.map_collections();
    // Publish two SYNCs and a failing INT, so the queue stalls with CWRITER ahead.
    g.send(&[
        RawCommand::sync(0),
        RawCommand::int(7, 0),
        RawCommand::sync(0),
    ]);
    assert!(g.its.is_stalled());
    assert_eq!(g.read64(GITS_CWRITER), g.next);
    g.write32(GITS_CTLR, 0);
    // Stale commands sit in the slots after the new base.
    for i in 0..4u64 {
        g.mem
            .write_slice(
                &RawCommand::mapc(0, 3, true).to_bytes(),
                GuestAddress(CMD_QUEUE + 32 * i),
            )
            .unwrap();
    }
    g.write64(GITS_CBASER, (1 << 63) | CMD_QUEUE);
    assert_eq!((g.read64(GITS_CREADR), g.read64(GITS_CWRITER)), (0, 0));
    let before = g.its.commands_processed();
    g.enable();
    assert_eq!(
        g.its.commands_processed(),
        before,
        "nothing published, nothing run"
    );
    assert!(!g.its.commands_pending());
    // Each 32-bit half does the same.
    g.write32(GITS_CTLR, 0);
    g.write64(GITS_CWRITER, 0x40);
    g.write32(GITS_CBASER + 4, 0x8000_0000);
    assert_eq!(g.read64(GITS_CWRITER), 0);
    g.write64(GITS_CWRITER, 0x40);
    g.write32(GITS_CBASER, CMD_QUEUE as u32);
    assert_eq!(g.read64(GITS_CWRITER), 0);
    // A BASER write leaves the queue pointers alone.
    g.write64(GITS_CWRITER, 0x40);
    g.setup_baser(0, (1 << 63) | DEVICE_TABLE);
    assert_eq!(g.read64(GITS_CWRITER), 0x40);
}

/// Issue 15 finding 1, the exact scenario: CWRITER beyond a smaller queue, then the queue
/// shrunk through GITS_CBASER while disabled. The state saves, restores and saves again
/// identically.
#[test]
fn shrunk_queue_state_restores() {
    let mut g = Guest::new(cfg().build().unwrap());
    g.setup_tables(0, 1);
    g.write64(GITS_CBASER, (1 << 63) | CMD_QUEUE | 3); // 16 KiB
    g.write64(GITS_CWRITER, 0x3000);
    g.write64(GITS_CBASER, (1 << 63) | CMD_QUEUE); // 4 KiB
    let state = g.its.save_state();
    assert_eq!(state.validate(), Ok(()));
    let its = Its::from_state(&state).unwrap();
    assert_eq!(its.save_state(), state);
    // And CWRITER beyond the queue is ignored rather than stored.
    g.write64(GITS_CWRITER, 0x2000);
    assert_eq!(g.read64(GITS_CWRITER), 0);
}

/// Issue 15 finding 4: a DTE the guest writes itself with a Size beyond GITS_TYPER.ID_bits
/// is not honoured (the device reads as unmapped: MAPTI_UNMAPPED_DEVICE, MSIs dropped).
/// Siblings: reserved bits in a DTE, ITE or CTE; a CTE whose target has high bits set (it
/// used to truncate to a valid-looking vCPU); an ITE's INTID or ICID out of range.
#[test]
fn guest_written_tables_are_not_trusted() {
    let mut g = Guest::booted(cfg().event_id_bits(5).intid_bits(16).build().unwrap());
    g.map_collections();
    // DTE of device 3 written by the guest: Valid, ITT, Size = 9 (10 EventID bits > 5).
    let dte = (1u64 << 63) | Guest::itt(3) | 9;
    g.mem
        .write_obj(dte, GuestAddress(DEVICE_TABLE + 3 * 8))
        .unwrap();
    assert_eq!(
        g.err(RawCommand::mapti(3, 100, 8200, 0)).as_deref(),
        Some("MAPTI_UNMAPPED_DEVICE")
    );
    assert_eq!(
        g.err(RawCommand::mapti(3, 1, 8200, 0)).as_deref(),
        Some("MAPTI_UNMAPPED_DEVICE")
    );
    assert_eq!(
        g.its.translate(&g.mem, 3, 1),
        Err(TranslationError::DeviceUnmapped { device_id: 3 })
    );
    // The same DTE with Size = 4 (5 bits) is a word MAPD could have written: honoured.
    g.mem
        .write_obj(
            (1u64 << 63) | Guest::itt(3) | 4,
            GuestAddress(DEVICE_TABLE + 3 * 8),
        )
        .unwrap();
    g.its.invalidate_cache();
    assert_eq!(g.err(RawCommand::mapti(3, 31, 8200, 0)), None);
    assert_eq!(
        g.err(RawCommand::mapti(3, 32, 8200, 0)).as_deref(),
        Some("MAPTI_ID_OOR")
    );
    // Reserved DTE bits: invalid.
    g.mem
        .write_obj(
            (1u64 << 63) | (1 << 60) | Guest::itt(3) | 4,
            GuestAddress(DEVICE_TABLE + 3 * 8),
        )
        .unwrap();
    g.its.invalidate_cache();
    assert!(matches!(
        g.its.translate(&g.mem, 3, 31),
        Err(TranslationError::DeviceUnmapped { .. })
    ));
    // CTE of ICID 1 with target bits above 31 set: 0x1_0000_0001 is not vCPU 1.
    g.send(&[
        RawCommand::mapd(2, 3, Guest::itt(2), true),
        RawCommand::mapti(2, 0, 8300, 1),
    ]);
    assert_eq!(g.its.translate(&g.mem, 2, 0).unwrap().vcpu, 1);
    g.mem
        .write_obj(
            (1u64 << 63) | (1 << 32) | 1,
            GuestAddress(COLLECTION_TABLE + 8),
        )
        .unwrap();
    g.its.invalidate_cache();
    assert_eq!(
        g.its.translate(&g.mem, 2, 0),
        Err(TranslationError::CollectionUnmapped { icid: 1 })
    );
    // ITE with reserved bits: unmapped interrupt.
    g.send(&[RawCommand::mapti(2, 1, 8301, 0)]);
    let ite: u64 = g.mem.read_obj(GuestAddress(Guest::itt(2) + 8)).unwrap();
    g.mem
        .write_obj(ite | (1 << 50), GuestAddress(Guest::itt(2) + 8))
        .unwrap();
    g.its.invalidate_cache();
    assert_eq!(
        g.err(RawCommand::int(2, 1)).as_deref(),
        Some("INT_UNMAPPED_INTERRUPT")
    );
}

/// Issue 15 finding 5: one MMIO exit runs at most `commands_per_call` commands; the rest stay
/// queued (CREADR behind CWRITER, as an asynchronous ITS shows them) until the VMM calls
/// `process_commands` again; the outcome is the same as running them at once.
#[test]
fn bounded_work_per_exit() {
    let mut g = Guest::new(cfg().commands_per_call(10).build().unwrap());
    g.setup_tables(0, 1);
    g.setup_queue(1);
    g.enable();
    g.send(&[RawCommand::sync(1); 25]);
    assert_eq!(g.its.commands_processed(), 10);
    assert_eq!(g.creadr(), 10 * 32);
    assert!(g.its.commands_pending());
    assert_eq!(g.its.process_commands(&g.mem, &mut g.rd), 10);
    assert_eq!(g.its.process_commands(&g.mem, &mut g.rd), 5);
    assert!(!g.its.commands_pending());
    assert_eq!(g.its.process_commands(&g.mem, &mut g.rd), 0);
    assert_eq!(g.creadr(), 25 * 32);
    assert_eq!(g.rd.ops.len(), 25);
    // Pending work survives a snapshot: the restored ITS continues it.
    g.send(&[RawCommand::sync(0); 15]);
    let mut its = Its::from_state(&g.its.save_state()).unwrap();
    assert!(its.commands_pending());
    assert_eq!(its.process_commands(&g.mem, &mut g.rd), 5);
    assert!(!its.commands_pending());
    // Disabled or stalled: nothing is pending.
    g.write32(GITS_CTLR, 0);
    assert!(!g.its.commands_pending());
}

/// IHI 0069H §5.3 MOVI errors and effect: pending state follows the event.
#[test]
fn movi_moves_pending_state() {
    let mut g = Guest::booted(
        cfg()
            .device_id_bits(8)
            .collection_id_bits(4)
            .build()
            .unwrap(),
    );
    assert_eq!(
        g.err(RawCommand::movi(256, 0, 0)).as_deref(),
        Some("MOVI_DEVICE_OOR")
    );
    assert_eq!(
        g.err(RawCommand::movi(1, 0, 16)).as_deref(),
        Some("MOVI_COLLECTION_OOR")
    );
    assert_eq!(
        g.err(RawCommand::movi(1, 0, 1)).as_deref(),
        Some("MOVI_UNMAPPED_DEVICE")
    );
    g.send(&[
        RawCommand::mapd(1, 3, Guest::itt(1), true),
        RawCommand::mapc(0, 0, true),
        RawCommand::mapti(1, 5, 8500, 0),
    ]);
    assert_eq!(
        g.err(RawCommand::movi(1, 16, 1)).as_deref(),
        Some("MOVI_ID_OOR")
    );
    assert_eq!(
        g.err(RawCommand::movi(1, 6, 1)).as_deref(),
        Some("MOVI_UNMAPPED_INTERRUPT")
    );
    let e = g.cmd(RawCommand::movi(1, 5, 1)).unwrap();
    assert_eq!(
        (e.mnemonic().as_str(), e.code()),
        ("MOVI_UNMAPPED_COLLECTION", 0x01_0109)
    );

    g.its.send_msi(&g.mem, &mut g.rd, 1, 5).unwrap();
    assert!(g.rd.pending.contains(&(0, 8500)));
    g.send(&[RawCommand::mapc(1, 3, true), RawCommand::movi(1, 5, 1)]);
    assert!(g.its.last_command_error().is_none());
    assert!(g.rd.pending.contains(&(3, 8500)) && !g.rd.pending.contains(&(0, 8500)));
    assert!(g.rd.ops.contains(&common::Op::Move(0, 3, 8500)));
    // New MSIs go to the new target (the cache followed the move).
    g.rd.pending.clear();
    g.its.send_msi(&g.mem, &mut g.rd, 1, 5).unwrap();
    assert_eq!(g.rd.pending.iter().next(), Some(&(3, 8500)));
    assert!(g.rd.events.contains(&MappingEvent::EventMoved {
        device_id: 1,
        event_id: 5,
        intid: 8500,
        from_icid: 0,
        to_icid: 1,
        from_vcpu: Some(0),
        to_vcpu: 3
    }));
    // Same target: no move call.
    let n = g.rd.ops.len();
    g.send(&[RawCommand::mapc(2, 3, true), RawCommand::movi(1, 5, 2)]);
    assert!(
        !g.rd.ops[n..]
            .iter()
            .any(|o| matches!(o, common::Op::Move(..)))
    );
}

/// IHI 0069H §5.3 MOVALL: every pending LPI of RDbase1 moves to RDbase2; RDbase out of
/// range is PROCNUM_OOR (our choice for an UNPREDICTABLE case).
#[test]
fn movall_and_sync() {
    let mut g = Guest::booted(cfg().build().unwrap());
    g.map_collections();
    g.send(&[RawCommand::mapd(0, 3, Guest::itt(0), true)]);
    for ev in 0..4 {
        g.send(&[
            RawCommand::mapti(0, ev, 8192 + ev, 1),
            RawCommand::int(0, ev),
        ]);
    }
    assert_eq!(g.rd.pending.len(), 4);
    g.send(&[RawCommand::movall(1, 2), RawCommand::sync(2)]);
    assert!(g.rd.pending.iter().all(|(v, _)| *v == 2));
    assert_eq!(g.rd.ops.last(), Some(&common::Op::Sync(2)));
    let e = g.cmd(RawCommand::movall(0, 4)).unwrap();
    assert_eq!(
        (e.mnemonic().as_str(), e.code()),
        ("MOVALL_PROCNUM_OOR", 0x01_0e02)
    );
    assert_eq!(
        g.err(RawCommand::movall(9, 0)).as_deref(),
        Some("MOVALL_PROCNUM_OOR")
    );
    assert_eq!(
        g.err(RawCommand::sync(4)).as_deref(),
        Some("SYNC_PROCNUM_OOR")
    );
    let n = g.rd.ops.len();
    assert_eq!(g.err(RawCommand::movall(2, 2)), None);
    assert_eq!(g.rd.ops.len(), n, "MOVALL to itself does nothing");
}

/// IHI 0069H §5.3 INVALL: COLLECTION_OOR, UNMAPPED_COLLECTION.
#[test]
fn invall_errors() {
    let mut g = Guest::booted(cfg().collection_id_bits(2).build().unwrap());
    assert_eq!(
        g.err(RawCommand::invall(4)).as_deref(),
        Some("INVALL_COLLECTION_OOR")
    );
    let e = g.cmd(RawCommand::invall(3)).unwrap();
    assert_eq!(
        (e.mnemonic().as_str(), e.code()),
        ("INVALL_UNMAPPED_COLLECTION", 0x01_0d09)
    );
    g.cmd(RawCommand::mapc(3, 2, true));
    assert_eq!(g.err(RawCommand::invall(3)), None);
    assert_eq!(g.rd.ops.last(), Some(&common::Op::InvAll(2)));
}

/// GICv4 virtual commands and undefined numbers are rejected (`GITS_TYPER.Virtual == 0`).
#[test]
fn unsupported_commands() {
    let mut g = Guest::booted(cfg().build().unwrap());
    for op in [
        opcode::VMAPP,
        opcode::VMAPTI,
        opcode::VMAPI,
        opcode::VMOVI,
        opcode::VMOVP,
        opcode::VSYNC,
        opcode::VINVALL,
        opcode::INVDB,
        opcode::VSGI,
    ] {
        let e = g.cmd(RawCommand([u64::from(op), 0, 0, 0])).unwrap();
        assert!(e.mnemonic().ends_with("_UNSUPPORTED_COMMAND"), "{e}");
        assert!(!e.mnemonic().starts_with("UNKNOWN"), "{e}");
    }
    for op in [0x00u8, 0x02, 0x06, 0x07, 0x10, 0x20, 0xff] {
        let e = g.cmd(RawCommand([u64::from(op), 0, 0, 0])).unwrap();
        assert_eq!(e.mnemonic(), "UNKNOWN_UNSUPPORTED_COMMAND");
        assert_eq!(e.code(), 0x01_00ff | (u32::from(op) << 8));
    }
}

/// Tables that point outside guest memory: a defined error, never a panic.
#[test]
fn table_faults() {
    let mut g = Guest::booted(cfg().build().unwrap());
    g.map_collections();
    // ITT outside RAM.
    g.cmd(RawCommand::mapd(1, 3, 0x4000_0000, true));
    let e = g.cmd(RawCommand::mapti(1, 0, 8192, 0)).unwrap();
    assert_eq!(e.mnemonic(), "MAPTI_TABLE_FAULT");
    assert!(e.to_string().contains("0x40000000"), "{e}");
    assert!(std::error::Error::source(&e).is_some());
    assert!(matches!(
        g.its.translate(&g.mem, 1, 0),
        Err(TranslationError::Table(_))
    ));
    // Command queue outside RAM: the first command read faults and stalls.
    let mut g = Guest::new(cfg().build().unwrap());
    g.setup_tables(0, 1);
    g.write64(GITS_CBASER, (1 << 63) | 0x7000_0000);
    g.enable();
    g.write64(GITS_CWRITER, 32);
    assert!(g.its.is_stalled());
    assert!(
        g.its
            .last_command_error()
            .unwrap()
            .to_string()
            .contains("command queue")
    );
}

/// IHI 0069H §5.3: with the Stall policy CREADR stays at the failing command with
/// Stalled = 1; later commands wait; GITS_CWRITER.Retry retries it.
#[test]
fn stall_and_retry() {
    let mut g = Guest::booted(cfg().build().unwrap());
    g.send(&[
        RawCommand::mapc(0, 0, true),
        RawCommand::int(7, 0), // unmapped device
        RawCommand::mapc(1, 1, true),
    ]);
    assert!(g.its.is_stalled());
    assert_eq!(g.creadr(), 32 | GITS_CREADR_STALLED);
    assert_eq!(g.its.last_command_error().unwrap().offset, 32);
    assert_eq!(g.its.commands_processed(), 2);
    // More CWRITER writes without Retry do nothing.
    g.write64(GITS_CWRITER, g.next);
    assert_eq!(g.creadr(), 32 | 1);
    // Retry without fixing the cause: stalls again at the same place.
    g.write64(GITS_CWRITER, g.next | GITS_CWRITER_RETRY);
    assert_eq!(g.creadr(), 32 | 1);
    // Fix the device, then retry: the rest of the queue runs.
    g.mem
        .write_slice(
            &RawCommand::sync(0).to_bytes(),
            GuestAddress(CMD_QUEUE + 32),
        )
        .unwrap();
    g.write64(GITS_CWRITER, g.next | GITS_CWRITER_RETRY);
    assert!(!g.its.is_stalled());
    assert_eq!(g.creadr(), 96);
    assert_eq!(g.read64(GITS_CWRITER), 96, "Retry reads as 0");
    // Rewriting CBASER (while disabled) also clears the stall and CREADR.
    g.send(&[RawCommand::int(7, 0)]);
    assert!(g.its.is_stalled());
    g.write32(GITS_CTLR, 0);
    g.setup_queue(1);
    assert_eq!(g.creadr(), 0);
}

/// The Skip policy goes on past a failing command.
#[test]
fn skip_policy_continues() {
    let mut g = Guest::booted(
        cfg()
            .error_policy(CommandErrorPolicy::Skip)
            .build()
            .unwrap(),
    );
    g.send(&[
        RawCommand::int(7, 0),
        RawCommand::mapc(0, 2, true),
        RawCommand::invall(0),
    ]);
    assert!(!g.its.is_stalled());
    assert_eq!(g.creadr(), 96);
    assert_eq!(
        g.its.last_command_error().unwrap().mnemonic(),
        "INT_UNMAPPED_DEVICE"
    );
    assert_eq!(g.rd.ops.last(), Some(&common::Op::InvAll(2)));
}

/// IHI 0069H §5.3 DISCARD clears the pending state and removes the mapping.
#[test]
fn discard_clears_and_unmaps() {
    let mut g = Guest::booted(cfg().build().unwrap());
    g.map_collections();
    g.send(&[
        RawCommand::mapd(4, 4, Guest::itt(4), true),
        RawCommand::mapti(4, 9, 9999, 2),
        RawCommand::int(4, 9),
    ]);
    assert!(g.rd.pending.contains(&(2, 9999)));
    assert!(g.its.translate(&g.mem, 4, 9).is_ok());
    g.send(&[RawCommand::discard(4, 9)]);
    assert!(g.rd.pending.is_empty());
    assert_eq!(
        g.its.translate(&g.mem, 4, 9),
        Err(TranslationError::EventUnmapped {
            device_id: 4,
            event_id: 9
        })
    );
    assert_eq!(
        g.err(RawCommand::discard(4, 9)).as_deref(),
        Some("DISCARD_UNMAPPED_INTERRUPT")
    );
    assert_eq!(
        g.rd.events.last(),
        Some(&MappingEvent::EventUnmapped {
            device_id: 4,
            event_id: 9,
            intid: 9999,
            icid: 2
        })
    );
    // CLEAR drops the pending state but keeps the mapping.
    g.send(&[
        RawCommand::mapti(4, 9, 9999, 2),
        RawCommand::int(4, 9),
        RawCommand::clear(4, 9),
    ]);
    assert!(g.rd.pending.is_empty());
    assert!(g.its.translate(&g.mem, 4, 9).is_ok());
}

/// A MAPTI over a live mapping replaces it, and the cache follows.
#[test]
fn mapti_replaces_mapping() {
    let mut g = Guest::booted(cfg().build().unwrap());
    g.map_collections();
    g.send(&[
        RawCommand::mapd(1, 4, Guest::itt(1), true),
        RawCommand::mapti(1, 0, 8192, 0),
    ]);
    assert_eq!(g.its.translate(&g.mem, 1, 0).unwrap().intid, 8192);
    g.rd.events.clear();
    g.send(&[RawCommand::mapti(1, 0, 8193, 1)]);
    let t = g.its.translate(&g.mem, 1, 0).unwrap();
    assert_eq!((t.intid, t.vcpu), (8193, 1));
    assert_eq!(
        g.rd.events,
        vec![
            MappingEvent::EventUnmapped {
                device_id: 1,
                event_id: 0,
                intid: 8192,
                icid: 0
            },
            MappingEvent::EventMapped {
                device_id: 1,
                event_id: 0,
                intid: 8193,
                icid: 1,
                vcpu: Some(1)
            }
        ]
    );
}

/// The translation cache is invalidated by MAPD, MAPC and disable/enable.
#[test]
fn cache_follows_remaps() {
    let mut g = Guest::booted(cfg().build().unwrap());
    g.map_collections();
    g.send(&[
        RawCommand::mapd(1, 4, Guest::itt(1), true),
        RawCommand::mapti(1, 0, 8192, 0),
    ]);
    assert_eq!(g.its.translate(&g.mem, 1, 0).unwrap().vcpu, 0);
    assert_eq!(g.its.translate(&g.mem, 1, 0).unwrap().vcpu, 0);
    assert!(g.its.cache_stats().hits >= 1);
    // MAPC remaps the collection.
    g.send(&[RawCommand::mapc(0, 3, true)]);
    assert_eq!(g.its.translate(&g.mem, 1, 0).unwrap().vcpu, 3);
    // MAPD to a fresh (zeroed) ITT: the event is gone.
    g.send(&[RawCommand::mapd(1, 4, Guest::itt(2), true)]);
    assert!(g.its.translate(&g.mem, 1, 0).is_err());
    // Back to the old ITT: its mapping is there again (tables live in memory).
    g.send(&[RawCommand::mapd(1, 4, Guest::itt(1), true)]);
    assert_eq!(g.its.translate(&g.mem, 1, 0).unwrap().intid, 8192);
    // MAPD V=0.
    g.send(&[RawCommand::mapd(1, 0, 0, false)]);
    assert_eq!(
        g.its.translate(&g.mem, 1, 0),
        Err(TranslationError::DeviceUnmapped { device_id: 1 })
    );
    // Unmapped collection.
    g.send(&[
        RawCommand::mapd(1, 4, Guest::itt(1), true),
        RawCommand::mapc(0, 0, false),
    ]);
    assert_eq!(
        g.its.translate(&g.mem, 1, 0),
        Err(TranslationError::CollectionUnmapped { icid: 0 })
    );
}

/// IHI 0069H ch. 12: writes to GITS_TRANSLATER are ignored while disabled, without a
/// DeviceID (CPU store), or when the DeviceID/EventID does not translate.
#[test]
fn translation_dropped_cases() {
    let mut g = Guest::booted(cfg().device_id_bits(8).build().unwrap());
    g.map_collections();
    g.send(&[
        RawCommand::mapd(1, 0, Guest::itt(1), true),
        RawCommand::mapti(1, 0, 8192, 0),
    ]);
    g.its.mmio_write(
        &g.mem,
        &mut g.rd,
        GITS_TRANSLATER,
        &0u32.to_le_bytes(),
        None,
    );
    assert!(g.rd.pending.is_empty(), "CPU store has no DeviceID");
    g.its
        .mmio_write(&g.mem, &mut g.rd, GITS_TRANSLATER, &[0u8], Some(1));
    assert!(g.rd.pending.is_empty(), "8-bit write ignored");
    assert_eq!(
        g.its.send_msi(&g.mem, &mut g.rd, 300, 0),
        Err(TranslationError::DeviceOutOfRange { device_id: 300 })
    );
    assert!(matches!(
        g.its.send_msi(&g.mem, &mut g.rd, 1, 2),
        Err(TranslationError::EventOutOfRange { bits: 1, .. })
    ));
    assert!(matches!(
        g.its.send_msi(&g.mem, &mut g.rd, 1, 1),
        Err(TranslationError::EventUnmapped { .. })
    ));
    g.write32(GITS_CTLR, 0);
    assert!(matches!(
        g.its.send_msi(&g.mem, &mut g.rd, 1, 0),
        Err(TranslationError::Disabled { .. })
    ));
    assert!(g.rd.pending.is_empty());
    g.write32(GITS_CTLR, 1);
    g.its.mmio_write(
        &g.mem,
        &mut g.rd,
        GITS_TRANSLATER,
        &0u32.to_le_bytes(),
        Some(1),
    );
    assert_eq!(g.rd.pending.len(), 1);
}

/// Register access sizes: 64-bit registers by 64-bit or 32-bit halves; 32-bit registers by
/// 32-bit; everything else RAZ/WI. RO registers ignore writes.
#[test]
fn register_access_sizes() {
    let mut g = Guest::new(cfg().build().unwrap());
    // BASER0 written as two 32-bit halves.
    g.write32(GITS_BASER0, (DEVICE_TABLE as u32) | 0x2);
    g.write32(GITS_BASER0 + 4, 0x8000_0000);
    let b = g.read64(GITS_BASER0);
    assert_eq!(b, (1 << 63) | (1 << 56) | (7 << 48) | DEVICE_TABLE | 2);
    assert_eq!(u64::from(g.read32(GITS_BASER0 + 4)), b >> 32);
    assert_eq!(u64::from(g.read32(GITS_BASER0)), b & 0xffff_ffff);
    // CBASER halves.
    g.write32(GITS_CBASER, CMD_QUEUE as u32);
    g.write32(GITS_CBASER + 4, 0x8000_0000);
    assert_eq!(g.read64(GITS_CBASER), (1 << 63) | CMD_QUEUE);
    // Reserved CBASER bits are RES0.
    g.write64(GITS_CBASER, u64::MAX);
    assert_eq!(g.read64(GITS_CBASER), GITS_CBASER_RW_MASK);
    g.write64(GITS_CBASER, (1 << 63) | CMD_QUEUE);
    // RO: TYPER, CREADR, IIDR, PIDR2.
    let typer = g.read64(GITS_TYPER);
    g.write64(GITS_TYPER, !typer);
    g.write32(GITS_TYPER + 4, 0xffff_ffff);
    assert_eq!(g.read64(GITS_TYPER), typer);
    g.write64(GITS_CWRITER, 0x40);
    g.write64(GITS_CREADR, 0x20);
    assert_eq!(g.creadr(), 0);
    g.write32(GITS_IIDR, 0);
    assert_eq!(g.read32(GITS_IIDR), 0x43b);
    g.write32(GITS_PIDR2, 0);
    assert_eq!(g.read32(GITS_PIDR2), 0x3b);
    assert_eq!(g.read32(GITS_CIDR0), 0x0d);
    assert_eq!(g.read32(GITS_CIDR0 + 12), 0xb1);
    // CWRITER: 32-bit write of the low half; bits [4:1] are RES0.
    g.write32(GITS_CWRITER, 0x7f);
    assert_eq!(g.read64(GITS_CWRITER), 0x60);
    // Unsupported sizes and misaligned accesses: RAZ/WI.
    let mut b1 = [0xffu8; 1];
    g.its.mmio_read(GITS_CTLR, &mut b1);
    assert_eq!(b1, [0]);
    let mut b2 = [0xffu8; 2];
    g.its.mmio_read(GITS_TYPER, &mut b2);
    assert_eq!(b2, [0, 0]);
    let mut b4 = [0xffu8; 4];
    g.its.mmio_read(GITS_TYPER + 2, &mut b4);
    assert_eq!(b4, [0; 4]);
    let mut b8 = [0xffu8; 8];
    g.its.mmio_read(GITS_CBASER + 4, &mut b8);
    assert_eq!(b8, [0; 8]);
    let mut b16 = [0xffu8; 16];
    g.its.mmio_read(GITS_CBASER, &mut b16);
    assert_eq!(b16, [0; 16]);
    g.its.mmio_write(&g.mem, &mut g.rd, GITS_CTLR, &[1u8], None);
    assert_eq!(g.read32(GITS_CTLR) & 1, 0, "byte write to CTLR ignored");
    g.its
        .mmio_write(&g.mem, &mut g.rd, GITS_CTLR, &1u64.to_le_bytes(), None);
    assert_eq!(g.read32(GITS_CTLR) & 1, 0, "64-bit write to CTLR ignored");
    // Unknown offsets: RAZ/WI, including the translation frame and beyond the frame.
    for off in [
        0x10u64, 0x40, 0x98, 0x200, 0xc000, 0xffd0, 0x1_0000, 0x1_0044, 0x2_0000,
    ] {
        g.write64(off & !7, u64::MAX);
        g.write32(off, u32::MAX);
        assert_eq!(g.read32(off), 0, "offset {off:#x}");
        assert_eq!(g.read64(off & !7), 0, "offset {off:#x}");
    }
    // GITS_TRANSLATER is write-only.
    assert_eq!(g.read32(GITS_TRANSLATER), 0);
    // Unimplemented BASERs are RES0 (WI).
    g.write64(GITS_BASER0 + 16, u64::MAX);
    assert_eq!(g.read64(GITS_BASER0 + 16), 0);
    // CTLR: only Enabled is writable; Quiescent follows Enabled.
    g.write32(GITS_CTLR, 0xffff_ffff);
    assert_eq!(g.read32(GITS_CTLR), GITS_CTLR_ENABLED);
    g.write32(GITS_CTLR, 0);
    assert_eq!(g.read32(GITS_CTLR), GITS_CTLR_QUIESCENT);
}

/// GITS_CBASER and GITS_BASER<n> writes while enabled are ignored (UNPREDICTABLE in the
/// spec).
#[test]
fn baser_and_cbaser_locked_while_enabled() {
    let mut g = Guest::booted(cfg().build().unwrap());
    let b0 = g.read64(GITS_BASER0);
    let cb = g.read64(GITS_CBASER);
    g.write64(GITS_BASER0, 0);
    g.write32(GITS_BASER0 + 4, 0);
    g.write64(GITS_CBASER, 0);
    assert_eq!(g.read64(GITS_BASER0), b0);
    assert_eq!(g.read64(GITS_CBASER), cb);
    g.write32(GITS_CTLR, 0);
    g.write64(GITS_BASER0, 0);
    assert_eq!(g.read64(GITS_BASER0), (1 << 56) | (7 << 48));
}

/// A CWRITER offset at or beyond the queue size is ignored (UNPREDICTABLE in the spec).
#[test]
fn cwriter_beyond_queue_ignored() {
    let mut g = Guest::booted(cfg().build().unwrap());
    g.write64(GITS_CWRITER, 0x1000);
    assert_eq!(g.read64(GITS_CWRITER), 0);
    g.write64(GITS_CWRITER, 0xf_ffe0);
    assert_eq!(g.read64(GITS_CWRITER), 0);
    assert_eq!(g.its.commands_processed(), 0);
}

/// Commands wrap from the end of the queue to its start.
#[test]
fn queue_wraps_around() {
    let mut g = Guest::booted(cfg().build().unwrap());
    // 128 slots in one page; send 200 SYNCs in chunks.
    for _ in 0..20 {
        g.send(&[RawCommand::sync(0); 10]);
    }
    assert_eq!(g.its.commands_processed(), 200);
    assert_eq!(g.creadr(), (200 * 32) % 0x1000);
    assert_eq!(g.rd.ops.len(), 200);
}

/// Commands queued while disabled run when the ITS is enabled.
#[test]
fn commands_wait_for_enable() {
    let mut g = Guest::new(cfg().build().unwrap());
    g.setup_tables(0, 1);
    g.setup_queue(1);
    g.send(&[RawCommand::mapc(0, 1, true), RawCommand::sync(1)]);
    assert_eq!(g.creadr(), 0);
    g.enable();
    assert_eq!(g.creadr(), 64);
    assert_eq!(g.rd.ops, vec![common::Op::Sync(1)]);
}

/// GITS_TYPER.HCC: collections held on chip need no Collection table.
#[test]
fn on_chip_collections() {
    let c = cfg()
        .collection_id_bits(3)
        .all_collections_on_chip()
        .build()
        .unwrap();
    let mut g = Guest::new(c);
    assert_eq!(g.read64(GITS_BASER0 + 8), 0, "no Collection table");
    assert_eq!((g.read64(GITS_TYPER) >> 24) & 0xff, 8);
    g.setup_tables(0, 1);
    g.setup_queue(1);
    g.enable();
    g.send(&[
        RawCommand::mapc(7, 3, true),
        RawCommand::mapd(0, 0, Guest::itt(0), true),
        RawCommand::mapti(0, 1, 8192, 7),
    ]);
    assert!(g.its.last_command_error().is_none());
    assert_eq!(g.its.translate(&g.mem, 0, 1).unwrap().vcpu, 3);
    assert_eq!(
        g.err(RawCommand::mapc(8, 0, true)).as_deref(),
        Some("MAPC_COLLECTION_OOR")
    );
    // Mixed: ICIDs 0..2 on chip, the rest in memory.
    let mut g = Guest::booted(cfg().collection_id_bits(4).hcc(2).build().unwrap());
    g.send(&[RawCommand::mapc(1, 1, true), RawCommand::mapc(5, 2, true)]);
    assert!(g.its.last_command_error().is_none());
    let cte: u64 = g
        .mem
        .read_obj(GuestAddress(COLLECTION_TABLE + 5 * 8))
        .unwrap();
    assert_eq!(cte, (1 << 63) | 2);
    let cte1: u64 = g.mem.read_obj(GuestAddress(COLLECTION_TABLE + 8)).unwrap();
    assert_eq!(cte1, 0, "on-chip collection not written to memory");
}

fn booted_with_state() -> Guest {
    let mut g = Guest::booted(cfg().collection_id_bits(4).hcc(2).build().unwrap());
    g.map_collections();
    g.send(&[
        RawCommand::mapd(3, 4, Guest::itt(3), true),
        RawCommand::mapti(3, 1, 8192, 1),
        RawCommand::mapti(3, 2, 8193, 3),
        RawCommand::int(4, 0), // stalls: device 4 unmapped
    ]);
    assert!(g.its.is_stalled());
    g
}

/// Snapshot round trip through serde_json: registers, on-chip collections and the stall
/// survive; translations (from guest memory) work after restore.
#[test]
fn snapshot_round_trip() {
    let g = booted_with_state();
    let state = g.its.save_state();
    let json = serde_json::to_string(&state).unwrap();
    let back: ItsState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, state);
    let mut its = Its::from_state(&back).unwrap();
    assert_eq!(its.save_state(), state);
    for off in [
        GITS_CTLR,
        GITS_TYPER,
        GITS_CBASER,
        GITS_CWRITER,
        GITS_CREADR,
        GITS_BASER0,
        GITS_BASER0 + 8,
    ] {
        let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
        g.its.mmio_read(off, &mut a);
        its.mmio_read(off, &mut b);
        assert_eq!(a, b, "offset {off:#x}");
    }
    assert!(its.is_stalled());
    let t = its.translate(&g.mem, 3, 1).unwrap();
    assert_eq!((t.intid, t.vcpu), (8192, 1));
    assert_eq!(its.translate(&g.mem, 3, 2).unwrap().vcpu, 3);
    // Restoring into an existing ITS of the same configuration.
    let mut other = Its::new(g.its.config().clone());
    other.restore_state(&state).unwrap();
    assert_eq!(other.save_state(), state);
}

/// A hostile or mismatched snapshot is rejected and leaves the ITS untouched.
#[test]
fn restore_rejects_garbage() {
    let g = booted_with_state();
    let good = g.its.save_state();
    let mut its = Its::new(g.its.config().clone());
    let before = its.save_state();
    let mut bad = good.clone();
    bad.version = 99;
    assert_eq!(its.restore_state(&bad), Err(StateError::Version(99)));
    let mut bad = good.clone();
    bad.config = cfg().build().unwrap();
    assert_eq!(its.restore_state(&bad), Err(StateError::ConfigMismatch));
    let mut bad = good.clone();
    bad.cbaser |= 1 << 62;
    assert!(matches!(
        its.restore_state(&bad),
        Err(StateError::Cbaser(_))
    ));
    let mut bad = good.clone();
    bad.creadr = 0x1000;
    assert!(matches!(
        its.restore_state(&bad),
        Err(StateError::QueueOffset { .. })
    ));
    let mut bad = good.clone();
    bad.cwriter = 0x21;
    assert!(matches!(
        its.restore_state(&bad),
        Err(StateError::QueueOffset { .. })
    ));
    let mut bad = good.clone();
    bad.baser[0] ^= 1 << 56;
    assert!(matches!(
        its.restore_state(&bad),
        Err(StateError::Baser { index: 0, .. })
    ));
    let mut bad = good.clone();
    bad.baser[5] = 1;
    assert!(matches!(
        its.restore_state(&bad),
        Err(StateError::Baser { index: 5, .. })
    ));
    let mut bad = good.clone();
    bad.baser.pop();
    assert!(its.restore_state(&bad).is_err());
    let mut bad = good.clone();
    bad.collections.push(None);
    assert!(matches!(
        its.restore_state(&bad),
        Err(StateError::CollectionCount { .. })
    ));
    let mut bad = good.clone();
    bad.collections[0] = Some(4);
    assert!(matches!(
        its.restore_state(&bad),
        Err(StateError::CollectionTarget { .. })
    ));
    let mut v = serde_json::to_value(&good).unwrap();
    v["config"]["device_id_bits"] = 40.into();
    let bad: ItsState = serde_json::from_value(v).unwrap();
    assert!(matches!(Its::from_state(&bad), Err(StateError::Config(_))));
    assert_eq!(its.save_state(), before);
    assert!(its.restore_state(&good).is_ok());
}

/// Mapping events for the VMM.
#[test]
fn mapping_events() {
    let mut g = Guest::booted(cfg().build().unwrap());
    g.send(&[
        RawCommand::mapc(0, 1, true),
        RawCommand::mapc(0, 2, true),
        RawCommand::mapd(6, 2, Guest::itt(6), true),
        RawCommand::mapti(6, 3, 8200, 0),
        RawCommand::mapd(6, 0, 0, false),
        RawCommand::mapc(0, 0, false),
    ]);
    assert_eq!(
        g.rd.events,
        vec![
            MappingEvent::CollectionMapped {
                icid: 0,
                vcpu: 1,
                previous: None
            },
            MappingEvent::CollectionMapped {
                icid: 0,
                vcpu: 2,
                previous: Some(1)
            },
            MappingEvent::DeviceMapped {
                device_id: 6,
                itt_addr: Guest::itt(6),
                event_id_bits: 3
            },
            MappingEvent::EventMapped {
                device_id: 6,
                event_id: 3,
                intid: 8200,
                icid: 0,
                vcpu: Some(2)
            },
            MappingEvent::DeviceUnmapped { device_id: 6 },
            MappingEvent::CollectionUnmapped {
                icid: 0,
                previous: Some(2)
            },
        ]
    );
}

/// Garbage the guest writes into the tables itself reads as defined values.
#[test]
fn hostile_table_contents() {
    let mut g = Guest::booted(cfg().intid_bits(16).build().unwrap());
    g.map_collections();
    g.send(&[RawCommand::mapd(2, 3, Guest::itt(2), true)]);
    // ITE with a non-LPI INTID and an ICID out of range: read as unmapped.
    let bad_ite = (1u64 << 63) | 5;
    g.mem
        .write_obj(bad_ite, GuestAddress(Guest::itt(2)))
        .unwrap();
    assert!(g.its.translate(&g.mem, 2, 0).is_err());
    let bad_ite = (1u64 << 63) | (0xffffu64 << 32) | 9000;
    g.mem
        .write_obj(bad_ite, GuestAddress(Guest::itt(2) + 8))
        .unwrap();
    assert!(g.its.translate(&g.mem, 2, 1).is_err());
    // A DTE full of ones: 32 EventID bits and an ITT at the top of the address space.
    g.mem
        .write_obj(u64::MAX, GuestAddress(DEVICE_TABLE + 9 * 8))
        .unwrap();
    assert!(g.its.translate(&g.mem, 9, u32::MAX).is_err());
    assert!(g.cmd(RawCommand::int(9, u32::MAX)).is_some());
    // A CTE targeting a vCPU that does not exist reads as unmapped.
    g.mem
        .write_obj((1u64 << 63) | 77, GuestAddress(COLLECTION_TABLE + 8))
        .unwrap();
    g.invalidate_all();
    g.send(&[RawCommand::mapti(2, 2, 9001, 1)]);
    assert_eq!(
        g.its.translate(&g.mem, 2, 2),
        Err(TranslationError::CollectionUnmapped { icid: 1 })
    );
}

impl Guest {
    fn invalidate_all(&mut self) {
        self.its.invalidate_cache();
    }
}

/// A queue whose second page is not guest RAM: the read-ahead falls back to single commands
/// and the first unreadable command stalls with a TABLE_FAULT at its own offset.
#[test]
fn queue_partly_outside_memory() {
    let mut g = Guest::new(cfg().build().unwrap());
    g.setup_tables(0, 1);
    let base = RAM_SIZE as u64 - 0x1000;
    g.write64(GITS_CBASER, (1 << 63) | base | 1); // two pages, the second unbacked
    g.enable();
    for i in 0..128u64 {
        g.mem
            .write_slice(&RawCommand::sync(1).to_bytes(), GuestAddress(base + 32 * i))
            .unwrap();
    }
    g.write64(GITS_CWRITER, 0x1000 + 64);
    assert_eq!(g.rd.ops.len(), 128);
    assert!(g.its.is_stalled());
    let e = g.its.last_command_error().unwrap();
    assert_eq!(e.offset, 0x1000);
    assert_eq!(e.kind.mnemonic(), "TABLE_FAULT");
    assert_eq!(g.creadr(), 0x1000 | 1);
}
