// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Command field helpers and the one decode table (IHI 0069H §5.3: each command is four
//! 64-bit little-endian doublewords DW0..DW3, command number in `DW0[7:0]`).
//!
//! Each helper is named after the spec's field and documents its bits. Encoders
//! ([`RawCommand::mapd`] and friends) build commands the way a guest driver does; tests,
//! benches and VMM tooling use them.

use super::Command;

/// Size in bytes of one ITS command.
pub const COMMAND_SIZE: u64 = 32;

/// Command numbers (`DW0[7:0]`, IHI 0069H §5.3, each command's encoding).
pub mod opcode {
    /// MOVI (§5.3).
    pub const MOVI: u8 = 0x01;
    /// INT (§5.3).
    pub const INT: u8 = 0x03;
    /// CLEAR (§5.3).
    pub const CLEAR: u8 = 0x04;
    /// SYNC (§5.3).
    pub const SYNC: u8 = 0x05;
    /// MAPD (§5.3).
    pub const MAPD: u8 = 0x08;
    /// MAPC (§5.3).
    pub const MAPC: u8 = 0x09;
    /// MAPTI (§5.3).
    pub const MAPTI: u8 = 0x0a;
    /// MAPI (§5.3).
    pub const MAPI: u8 = 0x0b;
    /// INV (§5.3).
    pub const INV: u8 = 0x0c;
    /// INVALL (§5.3).
    pub const INVALL: u8 = 0x0d;
    /// MOVALL (§5.3).
    pub const MOVALL: u8 = 0x0e;
    /// DISCARD (§5.3).
    pub const DISCARD: u8 = 0x0f;
    /// GICv4 VMOVI.
    pub const VMOVI: u8 = 0x21;
    /// GICv4 VMOVP.
    pub const VMOVP: u8 = 0x22;
    /// GICv4.1 VSGI.
    pub const VSGI: u8 = 0x23;
    /// GICv4 VSYNC.
    pub const VSYNC: u8 = 0x25;
    /// GICv4 VMAPP.
    pub const VMAPP: u8 = 0x29;
    /// GICv4 VMAPTI.
    pub const VMAPTI: u8 = 0x2a;
    /// GICv4 VMAPI.
    pub const VMAPI: u8 = 0x2b;
    /// GICv4 VINVALL.
    pub const VINVALL: u8 = 0x2d;
    /// GICv4.1 INVDB.
    pub const INVDB: u8 = 0x2e;
}

/// One raw 32-byte command as four doublewords.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawCommand(pub [u64; 4]);

const fn bits(word: u64, hi: u32, lo: u32) -> u64 {
    (word >> lo) & (u64::MAX >> (63 - (hi - lo)))
}

impl RawCommand {
    /// Decode 32 little-endian bytes.
    pub fn from_bytes(b: &[u8; 32]) -> Self {
        let mut dw = [0u64; 4];
        for (i, d) in dw.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i * 8..i * 8 + 8]);
            *d = u64::from_le_bytes(w);
        }
        RawCommand(dw)
    }

    /// Encode as 32 little-endian bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        for (i, d) in self.0.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&d.to_le_bytes());
        }
        b
    }

    /// Command number, `DW0[7:0]`.
    pub fn cmd_type(&self) -> u8 {
        bits(self.0[0], 7, 0) as u8
    }

    /// DeviceID, `DW0[63:32]`.
    pub fn device_id(&self) -> u32 {
        bits(self.0[0], 63, 32) as u32
    }

    /// EventID, `DW1[31:0]`.
    pub fn event_id(&self) -> u32 {
        bits(self.0[1], 31, 0) as u32
    }

    /// pINTID, `DW1[63:32]` (MAPTI).
    pub fn p_intid(&self) -> u32 {
        bits(self.0[1], 63, 32) as u32
    }

    /// Size, `DW1[4:0]` (MAPD): EventID bits minus one.
    pub fn size(&self) -> u8 {
        bits(self.0[1], 4, 0) as u8
    }

    /// ITT_addr, `DW2[51:8]` (MAPD), returned as a byte address (bits \[7:0\] zero).
    pub fn itt_addr(&self) -> u64 {
        bits(self.0[2], 51, 8) << 8
    }

    /// V, `DW2[63]` (MAPD, MAPC).
    pub fn valid(&self) -> bool {
        bits(self.0[2], 63, 63) != 0
    }

    /// ICID, `DW2[15:0]` (MAPC, MAPTI, MAPI, MOVI, INVALL).
    pub fn icid(&self) -> u16 {
        bits(self.0[2], 15, 0) as u16
    }

    /// RDbase, `DW2[51:16]` (MAPC, SYNC, MOVALL's RDbase1). With `GITS_TYPER.PTA == 0` it is
    /// the target processor number.
    pub fn rdbase(&self) -> u64 {
        bits(self.0[2], 51, 16)
    }

    /// RDbase2, `DW3[51:16]` (MOVALL).
    pub fn rdbase2(&self) -> u64 {
        bits(self.0[3], 51, 16)
    }

    fn with_dev(op: u8, device_id: u32) -> [u64; 4] {
        [u64::from(op) | (u64::from(device_id) << 32), 0, 0, 0]
    }

    fn dev_event(op: u8, device_id: u32, event_id: u32) -> Self {
        let mut dw = Self::with_dev(op, device_id);
        dw[1] = u64::from(event_id);
        RawCommand(dw)
    }

    /// MAPD DeviceID, Size (EventID bits - 1), ITT_addr, V.
    pub fn mapd(device_id: u32, size: u8, itt_addr: u64, valid: bool) -> Self {
        let mut dw = Self::with_dev(opcode::MAPD, device_id);
        dw[1] = u64::from(size & 0x1f);
        dw[2] = (itt_addr & (((1u64 << 44) - 1) << 8)) | (u64::from(valid) << 63);
        RawCommand(dw)
    }

    /// MAPC ICID, RDbase (processor number), V.
    pub fn mapc(icid: u16, rdbase: u64, valid: bool) -> Self {
        let dw2 =
            u64::from(icid) | ((rdbase & ((1u64 << 36) - 1)) << 16) | (u64::from(valid) << 63);
        RawCommand([u64::from(opcode::MAPC), 0, dw2, 0])
    }

    /// MAPTI DeviceID, EventID, pINTID, ICID.
    pub fn mapti(device_id: u32, event_id: u32, p_intid: u32, icid: u16) -> Self {
        let mut dw = Self::with_dev(opcode::MAPTI, device_id);
        dw[1] = u64::from(event_id) | (u64::from(p_intid) << 32);
        dw[2] = u64::from(icid);
        RawCommand(dw)
    }

    /// MAPI DeviceID, EventID, ICID.
    pub fn mapi(device_id: u32, event_id: u32, icid: u16) -> Self {
        let mut c = Self::dev_event(opcode::MAPI, device_id, event_id);
        c.0[2] = u64::from(icid);
        c
    }

    /// MOVI DeviceID, EventID, ICID.
    pub fn movi(device_id: u32, event_id: u32, icid: u16) -> Self {
        let mut c = Self::dev_event(opcode::MOVI, device_id, event_id);
        c.0[2] = u64::from(icid);
        c
    }

    /// INT DeviceID, EventID.
    pub fn int(device_id: u32, event_id: u32) -> Self {
        Self::dev_event(opcode::INT, device_id, event_id)
    }

    /// CLEAR DeviceID, EventID.
    pub fn clear(device_id: u32, event_id: u32) -> Self {
        Self::dev_event(opcode::CLEAR, device_id, event_id)
    }

    /// DISCARD DeviceID, EventID.
    pub fn discard(device_id: u32, event_id: u32) -> Self {
        Self::dev_event(opcode::DISCARD, device_id, event_id)
    }

    /// INV DeviceID, EventID.
    pub fn inv(device_id: u32, event_id: u32) -> Self {
        Self::dev_event(opcode::INV, device_id, event_id)
    }

    /// INVALL ICID.
    pub fn invall(icid: u16) -> Self {
        RawCommand([u64::from(opcode::INVALL), 0, u64::from(icid), 0])
    }

    /// SYNC RDbase.
    pub fn sync(rdbase: u64) -> Self {
        RawCommand([
            u64::from(opcode::SYNC),
            0,
            (rdbase & ((1u64 << 36) - 1)) << 16,
            0,
        ])
    }

    /// MOVALL RDbase1, RDbase2.
    pub fn movall(rdbase1: u64, rdbase2: u64) -> Self {
        RawCommand([
            u64::from(opcode::MOVALL),
            0,
            (rdbase1 & ((1u64 << 36) - 1)) << 16,
            (rdbase2 & ((1u64 << 36) - 1)) << 16,
        ])
    }
}

/// How a command number is handled.
#[derive(Clone, Copy, Debug)]
pub struct CommandSpec {
    /// Command number.
    pub opcode: u8,
    /// Spec name, e.g. `"MAPTI"`.
    pub name: &'static str,
    /// Field decoder; `None` for commands this ITS recognises but does not implement (the
    /// GICv4 virtual-LPI commands: `GITS_TYPER.Virtual == 0`).
    pub decode: Option<fn(&RawCommand) -> Command>,
}

/// The one dispatch table: every command number this ITS knows, with its decoder.
pub static COMMANDS: [CommandSpec; 21] = [
    CommandSpec {
        opcode: opcode::MOVI,
        name: "MOVI",
        decode: Some(|c| Command::Movi {
            device_id: c.device_id(),
            event_id: c.event_id(),
            icid: c.icid(),
        }),
    },
    CommandSpec {
        opcode: opcode::INT,
        name: "INT",
        decode: Some(|c| Command::Int {
            device_id: c.device_id(),
            event_id: c.event_id(),
        }),
    },
    CommandSpec {
        opcode: opcode::CLEAR,
        name: "CLEAR",
        decode: Some(|c| Command::Clear {
            device_id: c.device_id(),
            event_id: c.event_id(),
        }),
    },
    CommandSpec {
        opcode: opcode::SYNC,
        name: "SYNC",
        decode: Some(|c| Command::Sync { rdbase: c.rdbase() }),
    },
    CommandSpec {
        opcode: opcode::MAPD,
        name: "MAPD",
        decode: Some(|c| Command::Mapd {
            device_id: c.device_id(),
            size: c.size(),
            itt_addr: c.itt_addr(),
            valid: c.valid(),
        }),
    },
    CommandSpec {
        opcode: opcode::MAPC,
        name: "MAPC",
        decode: Some(|c| Command::Mapc {
            icid: c.icid(),
            rdbase: c.rdbase(),
            valid: c.valid(),
        }),
    },
    CommandSpec {
        opcode: opcode::MAPTI,
        name: "MAPTI",
        decode: Some(|c| Command::Mapti {
            device_id: c.device_id(),
            event_id: c.event_id(),
            intid: c.p_intid(),
            icid: c.icid(),
        }),
    },
    CommandSpec {
        opcode: opcode::MAPI,
        name: "MAPI",
        decode: Some(|c| Command::Mapti {
            device_id: c.device_id(),
            event_id: c.event_id(),
            // IHI 0069H §5.3: MAPI is MAPTI with pINTID = EventID.
            intid: c.event_id(),
            icid: c.icid(),
        }),
    },
    CommandSpec {
        opcode: opcode::INV,
        name: "INV",
        decode: Some(|c| Command::Inv {
            device_id: c.device_id(),
            event_id: c.event_id(),
        }),
    },
    CommandSpec {
        opcode: opcode::INVALL,
        name: "INVALL",
        decode: Some(|c| Command::Invall { icid: c.icid() }),
    },
    CommandSpec {
        opcode: opcode::MOVALL,
        name: "MOVALL",
        decode: Some(|c| Command::Movall {
            rdbase1: c.rdbase(),
            rdbase2: c.rdbase2(),
        }),
    },
    CommandSpec {
        opcode: opcode::DISCARD,
        name: "DISCARD",
        decode: Some(|c| Command::Discard {
            device_id: c.device_id(),
            event_id: c.event_id(),
        }),
    },
    CommandSpec {
        opcode: opcode::VMOVI,
        name: "VMOVI",
        decode: None,
    },
    CommandSpec {
        opcode: opcode::VMOVP,
        name: "VMOVP",
        decode: None,
    },
    CommandSpec {
        opcode: opcode::VSGI,
        name: "VSGI",
        decode: None,
    },
    CommandSpec {
        opcode: opcode::VSYNC,
        name: "VSYNC",
        decode: None,
    },
    CommandSpec {
        opcode: opcode::VMAPP,
        name: "VMAPP",
        decode: None,
    },
    CommandSpec {
        opcode: opcode::VMAPTI,
        name: "VMAPTI",
        decode: None,
    },
    CommandSpec {
        opcode: opcode::VMAPI,
        name: "VMAPI",
        decode: None,
    },
    CommandSpec {
        opcode: opcode::VINVALL,
        name: "VINVALL",
        decode: None,
    },
    CommandSpec {
        opcode: opcode::INVDB,
        name: "INVDB",
        decode: None,
    },
];

const NONE: u8 = u8::MAX;

const fn build_index() -> [u8; 256] {
    let mut index = [NONE; 256];
    let mut i = 0;
    while i < COMMANDS.len() {
        index[COMMANDS[i].opcode as usize] = i as u8;
        i += 1;
    }
    index
}

static INDEX: [u8; 256] = build_index();

/// Look a command number up in [`COMMANDS`]; `None` for numbers the spec does not define.
pub fn lookup(op: u8) -> Option<&'static CommandSpec> {
    COMMANDS.get(usize::from(INDEX[usize::from(op)]))
}

/// Name of a command number for messages (`"UNKNOWN"` when not defined).
pub fn name(op: u8) -> &'static str {
    lookup(op).map_or("UNKNOWN", |s| s.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_helpers_follow_the_spec_layout() {
        let c = RawCommand([
            0xdead_beef_0000_000a,
            0x1234_5678_9abc_def0,
            0x8007_ffff_ffff_ff42,
            0x000f_ffff_ffff_0000,
        ]);
        assert_eq!(c.cmd_type(), 0x0a);
        assert_eq!(c.device_id(), 0xdead_beef);
        assert_eq!(c.event_id(), 0x9abc_def0);
        assert_eq!(c.p_intid(), 0x1234_5678);
        assert_eq!(c.size(), 0x10);
        assert_eq!(c.itt_addr(), 0x0007_ffff_ffff_ff00);
        assert!(c.valid());
        assert_eq!(c.icid(), 0xff42);
        assert_eq!(c.rdbase(), 0x7_ffff_ffff);
        assert_eq!(c.rdbase2(), 0xf_ffff_ffff);
        assert_eq!(RawCommand::from_bytes(&c.to_bytes()), c);
    }

    #[test]
    fn encoders_round_trip_through_helpers() {
        let c = RawCommand::mapd(7, 4, 0x1_2345_6700, true);
        assert_eq!(
            (
                c.cmd_type(),
                c.device_id(),
                c.size(),
                c.itt_addr(),
                c.valid()
            ),
            (opcode::MAPD, 7, 4, 0x1_2345_6700, true)
        );
        let c = RawCommand::mapc(9, 3, true);
        assert_eq!((c.icid(), c.rdbase(), c.valid()), (9, 3, true));
        let c = RawCommand::mapti(1, 2, 8200, 5);
        assert_eq!(
            (c.device_id(), c.event_id(), c.p_intid(), c.icid()),
            (1, 2, 8200, 5)
        );
        let c = RawCommand::movall(1, 2);
        assert_eq!((c.rdbase(), c.rdbase2()), (1, 2));
        assert_eq!(RawCommand::sync(3).rdbase(), 3);
    }

    #[test]
    fn table_is_consistent() {
        for (i, spec) in COMMANDS.iter().enumerate() {
            assert_eq!(INDEX[usize::from(spec.opcode)] as usize, i);
            assert_eq!(lookup(spec.opcode).unwrap().name, spec.name);
        }
        assert!(lookup(0x00).is_none());
        assert!(lookup(0xff).is_none());
        assert_eq!(name(0x02), "UNKNOWN");
        assert_eq!(name(opcode::VMAPP), "VMAPP");
        assert!(lookup(opcode::VMAPP).unwrap().decode.is_none());
        // MAPI decodes as MAPTI with pINTID = EventID.
        let d = (lookup(opcode::MAPI).unwrap().decode.unwrap())(&RawCommand::mapi(1, 8300, 2));
        assert_eq!(
            d,
            Command::Mapti {
                device_id: 1,
                event_id: 8300,
                intid: 8300,
                icid: 2
            }
        );
    }
}
