// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The command decoder (IHI 0070 §4: command formats, opcodes, and when a command is
//! ILLEGAL).
//!
//! A command is 16 bytes, two little-endian 64-bit words; the opcode is bits \[7:0\] of
//! word 0. [`decode`] turns a [`RawCommand`] into a [`Command`] or says why it is illegal
//! (`CERROR_ILL`, §7.1): an unknown opcode; a command for a feature this vSMMU does not
//! advertise (§4.1 lists, per command, the ID register bit without which it is illegal:
//! `TLBI_EL2_*` need `IDR0.HYP`, `TLBI_S12_VMALL`/`TLBI_S2_IPA` need `IDR0.S2P`,
//! `ATC_INV` needs `IDR0.ATS`, `PRI_RESP` needs `IDR0.PRI`, `RESUME`/`STALL_TERM` need a
//! stall model, `TLBI_EL3_*` and `SSec == 1` are Secure-only); a SubstreamID out of range
//! (`SSIDSIZE == 0`, so only 0 without `SSV`); `CMD_SYNC.CS == 0b11` (reserved).
//!
//! RES0 fields are ignored, and so are fields of features that are not advertised (VMID
//! without stage 2; TG/NUM/SCALE/TTL without `IDR3.RIL`): [`Command::forwardable`] rebuilds
//! the command from its decoded fields, so a forwarded command carries nothing else.

use crate::regs::field;

/// Command opcodes (IHI 0070 §4.1.1, Table 4.1), shared with `iommufd-ioas` through `hw-defs`.
pub use hw_defs::smmuv3::opcode;

/// `CMD_SYNC.CS`: completion signal (IHI 0070 §4.7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncSignal {
    /// `SIG_NONE`.
    None,
    /// `SIG_IRQ`: an MSI to `MSIAddress` when MSIs are advertised and the address is not
    /// zero, else the wired "cmdq-sync" interrupt.
    Irq,
    /// `SIG_SEV`: with `IDR0.SEV == 0` (as advertised here) it behaves as `SIG_NONE`.
    Sev,
}

/// A decoded, legal command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `CMD_PREFETCH_CONFIG` StreamID: a hint, no effect here.
    PrefetchConfig {
        /// StreamID.
        sid: u32,
    },
    /// `CMD_PREFETCH_ADDR` StreamID, Addr: a hint, no effect here.
    PrefetchAddr {
        /// StreamID.
        sid: u32,
        /// Address \[63:12\].
        addr: u64,
    },
    /// `CMD_CFGI_STE` StreamID, Leaf.
    CfgiSte {
        /// StreamID.
        sid: u32,
        /// Leaf.
        leaf: bool,
    },
    /// `CMD_CFGI_STE_RANGE` StreamID, Range: StreamIDs `[sid & !m, sid | m]` with
    /// `m = 2^(Range+1) - 1` (IHI 0070 §4.3.2); Range = 31 is `CMD_CFGI_ALL`.
    CfgiSteRange {
        /// StreamID.
        sid: u32,
        /// Range, 0..=31.
        range: u8,
    },
    /// `CMD_CFGI_CD` StreamID, SubstreamID (0 here), Leaf.
    CfgiCd {
        /// StreamID.
        sid: u32,
        /// Leaf.
        leaf: bool,
    },
    /// `CMD_CFGI_CD_ALL` StreamID.
    CfgiCdAll {
        /// StreamID.
        sid: u32,
    },
    /// `CMD_TLBI_NH_ALL`: every Non-secure EL1 stage 1 entry.
    TlbiNhAll,
    /// `CMD_TLBI_NH_ASID` ASID.
    TlbiNhAsid {
        /// ASID.
        asid: u16,
    },
    /// `CMD_TLBI_NH_VA` ASID, Address, Leaf.
    TlbiNhVa {
        /// ASID.
        asid: u16,
        /// VA \[63:12\].
        addr: u64,
        /// Leaf.
        leaf: bool,
    },
    /// `CMD_TLBI_NH_VAA` Address, Leaf (any ASID).
    TlbiNhVaa {
        /// VA \[63:12\].
        addr: u64,
        /// Leaf.
        leaf: bool,
    },
    /// `CMD_TLBI_NSNH_ALL`.
    TlbiNsnhAll,
    /// `CMD_SYNC`.
    Sync {
        /// CS.
        cs: SyncSignal,
        /// MSIData.
        msi_data: u32,
        /// MSIAddress \[51:2\].
        msi_addr: u64,
    },
}

/// Why a command is illegal (`CERROR_ILL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Illegal {
    /// No such opcode.
    UnknownOpcode(u8),
    /// The command needs a feature this vSMMU does not advertise.
    NotAdvertised {
        /// The opcode.
        opcode: u8,
        /// The ID register field it needs.
        needs: &'static str,
    },
    /// `SSec == 1` on the Non-secure command queue.
    SecureStream(u8),
    /// A SubstreamID (or `SSV == 1`) with `SSIDSIZE == 0`.
    SubstreamId(u8),
    /// `CMD_SYNC.CS == 0b11`.
    ReservedSyncSignal,
}

impl std::fmt::Display for Illegal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Illegal::UnknownOpcode(op) => write!(f, "unknown opcode {op:#04x}"),
            Illegal::NotAdvertised { opcode, needs } => {
                write!(f, "opcode {opcode:#04x} needs {needs}, not advertised")
            }
            Illegal::SecureStream(op) => write!(f, "opcode {op:#04x} with SSec = 1"),
            Illegal::SubstreamId(op) => {
                write!(f, "opcode {op:#04x} names a SubstreamID, SSIDSIZE = 0")
            }
            Illegal::ReservedSyncSignal => write!(f, "CMD_SYNC with CS = 0b11"),
        }
    }
}

/// A command as it sits in the queue: two little-endian 64-bit words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
pub struct RawCommand(pub [u64; 2]);

impl RawCommand {
    /// From the 16 bytes in guest memory.
    pub fn from_bytes(b: &[u8; 16]) -> Self {
        let mut w0 = [0u8; 8];
        let mut w1 = [0u8; 8];
        w0.copy_from_slice(&b[..8]);
        w1.copy_from_slice(&b[8..]);
        RawCommand([u64::from_le_bytes(w0), u64::from_le_bytes(w1)])
    }

    /// The 16 bytes as they go into a queue (and into `IOMMU_HWPT_INVALIDATE`'s array).
    pub fn to_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.0[0].to_le_bytes());
        b[8..].copy_from_slice(&self.0[1].to_le_bytes());
        b
    }

    /// The opcode.
    pub fn opcode(&self) -> u8 {
        self.0[0] as u8
    }

    /// StreamID, word 0 \[63:32\].
    pub fn sid(&self) -> u32 {
        (self.0[0] >> 32) as u32
    }

    fn sid_cmd(op: u8, sid: u32) -> u64 {
        u64::from(op) | (u64::from(sid) << 32)
    }

    /// `CMD_PREFETCH_CONFIG`.
    pub fn prefetch_config(sid: u32) -> Self {
        RawCommand([Self::sid_cmd(opcode::PREFETCH_CONFIG, sid), 0])
    }

    /// `CMD_PREFETCH_ADDR` (Size 0).
    pub fn prefetch_addr(sid: u32, addr: u64) -> Self {
        RawCommand([Self::sid_cmd(opcode::PREFETCH_ADDR, sid), addr & !0xfff])
    }

    /// `CMD_CFGI_STE`.
    pub fn cfgi_ste(sid: u32, leaf: bool) -> Self {
        RawCommand([Self::sid_cmd(opcode::CFGI_STE, sid), u64::from(leaf)])
    }

    /// `CMD_CFGI_STE_RANGE`.
    pub fn cfgi_ste_range(sid: u32, range: u8) -> Self {
        RawCommand([
            Self::sid_cmd(opcode::CFGI_STE_RANGE, sid),
            u64::from(range & 0x1f),
        ])
    }

    /// `CMD_CFGI_ALL` (= `CFGI_STE_RANGE` with Range 31).
    pub fn cfgi_all() -> Self {
        Self::cfgi_ste_range(0, 31)
    }

    /// `CMD_CFGI_CD` for SubstreamID 0.
    pub fn cfgi_cd(sid: u32, leaf: bool) -> Self {
        RawCommand([Self::sid_cmd(opcode::CFGI_CD, sid), u64::from(leaf)])
    }

    /// `CMD_CFGI_CD_ALL`.
    pub fn cfgi_cd_all(sid: u32) -> Self {
        RawCommand([Self::sid_cmd(opcode::CFGI_CD_ALL, sid), 0])
    }

    /// `CMD_TLBI_NH_ALL` (VMID 0: no stage 2).
    pub fn tlbi_nh_all() -> Self {
        RawCommand([u64::from(opcode::TLBI_NH_ALL), 0])
    }

    /// `CMD_TLBI_NH_ASID`.
    pub fn tlbi_nh_asid(asid: u16) -> Self {
        RawCommand([u64::from(opcode::TLBI_NH_ASID) | (u64::from(asid) << 48), 0])
    }

    /// `CMD_TLBI_NH_VA`.
    pub fn tlbi_nh_va(asid: u16, va: u64, leaf: bool) -> Self {
        RawCommand([
            u64::from(opcode::TLBI_NH_VA) | (u64::from(asid) << 48),
            (va & !0xfff) | u64::from(leaf),
        ])
    }

    /// `CMD_TLBI_NH_VAA`.
    pub fn tlbi_nh_vaa(va: u64, leaf: bool) -> Self {
        RawCommand([
            u64::from(opcode::TLBI_NH_VAA),
            (va & !0xfff) | u64::from(leaf),
        ])
    }

    /// `CMD_TLBI_NSNH_ALL`.
    pub fn tlbi_nsnh_all() -> Self {
        RawCommand([u64::from(opcode::TLBI_NSNH_ALL), 0])
    }

    /// `CMD_SYNC` with CS = `cs` (0 none, 1 IRQ, 2 SEV), MSIData and MSIAddress.
    pub fn sync(cs: u8, msi_addr: u64, msi_data: u32) -> Self {
        RawCommand([
            u64::from(opcode::SYNC) | (u64::from(cs & 3) << 12) | (u64::from(msi_data) << 32),
            msi_addr & crate::regs::mask(51, 2),
        ])
    }
}

/// What the decoder needs to know about the advertised features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeContext {
    /// `IDR0.ASID16`: without it, ASID\[15:8\] are ignored.
    pub asid16: bool,
}

fn not_advertised(opcode: u8, needs: &'static str) -> Illegal {
    Illegal::NotAdvertised { opcode, needs }
}

/// Decodes one command (IHI 0070 §4.1-§4.7), or says why it is illegal.
pub fn decode(raw: &RawCommand, ctx: &DecodeContext) -> Result<Command, Illegal> {
    let [w0, w1] = raw.0;
    let op = raw.opcode();
    let sid = raw.sid();
    let ssec = w0 & (1 << 10) != 0;
    let ssv = w0 & (1 << 11) != 0;
    let ssid = field(w0, 31, 12) as u32;
    let leaf = w1 & 1 != 0;
    let asid = {
        let a = field(w0, 63, 48) as u16;
        if ctx.asid16 { a } else { a & 0xff }
    };
    let va = w1 & !0xfff;
    // §4.2/§4.3: SSec is RES0 on the Non-secure queue and ILLEGAL when set.
    let check_ssec = || {
        if ssec {
            Err(Illegal::SecureStream(op))
        } else {
            Ok(())
        }
    };
    match op {
        opcode::PREFETCH_CONFIG | opcode::PREFETCH_ADDR => {
            check_ssec()?;
            if ssv || ssid != 0 {
                return Err(Illegal::SubstreamId(op));
            }
            Ok(if op == opcode::PREFETCH_CONFIG {
                Command::PrefetchConfig { sid }
            } else {
                Command::PrefetchAddr { sid, addr: va }
            })
        }
        opcode::CFGI_STE => {
            check_ssec()?;
            Ok(Command::CfgiSte { sid, leaf })
        }
        opcode::CFGI_STE_RANGE => {
            check_ssec()?;
            Ok(Command::CfgiSteRange {
                sid,
                range: (w1 & 0x1f) as u8,
            })
        }
        opcode::CFGI_CD => {
            check_ssec()?;
            // §4.3.3: a SubstreamID outside SSIDSIZE is ILLEGAL; SSIDSIZE == 0 leaves 0.
            if ssid != 0 {
                return Err(Illegal::SubstreamId(op));
            }
            Ok(Command::CfgiCd { sid, leaf })
        }
        opcode::CFGI_CD_ALL => {
            check_ssec()?;
            Ok(Command::CfgiCdAll { sid })
        }
        opcode::CFGI_VMS_PIDM => Err(not_advertised(op, "IDR0.VMW")),
        opcode::TLBI_NH_ALL => Ok(Command::TlbiNhAll),
        opcode::TLBI_NH_ASID => Ok(Command::TlbiNhAsid { asid }),
        opcode::TLBI_NH_VA => Ok(Command::TlbiNhVa {
            asid,
            addr: va,
            leaf,
        }),
        opcode::TLBI_NH_VAA => Ok(Command::TlbiNhVaa { addr: va, leaf }),
        opcode::TLBI_EL3_ALL | opcode::TLBI_EL3_VA => Err(Illegal::SecureStream(op)),
        opcode::TLBI_EL2_ALL
        | opcode::TLBI_EL2_ASID
        | opcode::TLBI_EL2_VA
        | opcode::TLBI_EL2_VAA => Err(not_advertised(op, "IDR0.HYP")),
        opcode::TLBI_S12_VMALL | opcode::TLBI_S2_IPA => Err(not_advertised(op, "IDR0.S2P")),
        opcode::TLBI_NSNH_ALL => Ok(Command::TlbiNsnhAll),
        opcode::ATC_INV => Err(not_advertised(op, "IDR0.ATS")),
        opcode::PRI_RESP => Err(not_advertised(op, "IDR0.PRI")),
        opcode::RESUME | opcode::STALL_TERM => Err(not_advertised(op, "IDR0.STALL_MODEL != 0b01")),
        opcode::SYNC => {
            let cs = match field(w0, 13, 12) {
                0 => SyncSignal::None,
                1 => SyncSignal::Irq,
                2 => SyncSignal::Sev,
                _ => return Err(Illegal::ReservedSyncSignal),
            };
            Ok(Command::Sync {
                cs,
                msi_data: (w0 >> 32) as u32,
                msi_addr: w1 & crate::regs::mask(51, 2),
            })
        }
        _ => Err(Illegal::UnknownOpcode(op)),
    }
}

impl Command {
    /// The command to hand to the host kernel (`IOMMU_HWPT_INVALIDATE` on the vIOMMU), if
    /// it is one the kernel takes: `TLBI_NH_ALL/ASID/VA/VAA`, `TLBI_NSNH_ALL`, `CFGI_CD`,
    /// `CFGI_CD_ALL` (Linux 7.2 `arm_vsmmu_convert_user_cmd`; it refuses `CFGI_STE`,
    /// `CFGI_ALL`, stage 2 TLBIs and `CMD_SYNC`). Rebuilt from the decoded fields: RES0
    /// and unadvertised fields (VMID, TG/NUM/SCALE/TTL) are zero. StreamIDs are the guest's
    /// (vSIDs), as the kernel expects.
    pub fn forwardable(&self) -> Option<RawCommand> {
        match *self {
            Command::TlbiNhAll => Some(RawCommand::tlbi_nh_all()),
            Command::TlbiNhAsid { asid } => Some(RawCommand::tlbi_nh_asid(asid)),
            Command::TlbiNhVa { asid, addr, leaf } => {
                Some(RawCommand::tlbi_nh_va(asid, addr, leaf))
            }
            Command::TlbiNhVaa { addr, leaf } => Some(RawCommand::tlbi_nh_vaa(addr, leaf)),
            Command::TlbiNsnhAll => Some(RawCommand::tlbi_nsnh_all()),
            Command::CfgiCd { sid, leaf } => Some(RawCommand::cfgi_cd(sid, leaf)),
            Command::CfgiCdAll { sid } => Some(RawCommand::cfgi_cd_all(sid)),
            _ => None,
        }
    }

    /// The StreamIDs a `CFGI_STE`/`CFGI_STE_RANGE` names, as an inclusive range.
    pub fn ste_range(&self) -> Option<(u32, u32)> {
        match *self {
            Command::CfgiSte { sid, .. } => Some((sid, sid)),
            Command::CfgiSteRange { sid, range } => {
                let m = ((1u64 << (u32::from(range) + 1)) - 1) as u32;
                Some((sid & !m, sid | m))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: DecodeContext = DecodeContext { asid16: true };

    #[test]
    fn builders_decode_to_their_commands() {
        let cases = [
            (
                RawCommand::cfgi_ste(7, true),
                Command::CfgiSte { sid: 7, leaf: true },
            ),
            (
                RawCommand::cfgi_ste_range(0x1234, 3),
                Command::CfgiSteRange {
                    sid: 0x1234,
                    range: 3,
                },
            ),
            (
                RawCommand::cfgi_cd(9, true),
                Command::CfgiCd { sid: 9, leaf: true },
            ),
            (RawCommand::cfgi_cd_all(9), Command::CfgiCdAll { sid: 9 }),
            (RawCommand::tlbi_nh_all(), Command::TlbiNhAll),
            (
                RawCommand::tlbi_nh_asid(0xbeef),
                Command::TlbiNhAsid { asid: 0xbeef },
            ),
            (
                RawCommand::tlbi_nh_va(3, 0x1234_5678, true),
                Command::TlbiNhVa {
                    asid: 3,
                    addr: 0x1234_5000,
                    leaf: true,
                },
            ),
            (
                RawCommand::tlbi_nh_vaa(0xffff_0000_1000, false),
                Command::TlbiNhVaa {
                    addr: 0xffff_0000_1000,
                    leaf: false,
                },
            ),
            (RawCommand::tlbi_nsnh_all(), Command::TlbiNsnhAll),
            (
                RawCommand::sync(1, 0x8000_0040, 7),
                Command::Sync {
                    cs: SyncSignal::Irq,
                    msi_data: 7,
                    msi_addr: 0x8000_0040,
                },
            ),
            (
                RawCommand::prefetch_config(5),
                Command::PrefetchConfig { sid: 5 },
            ),
        ];
        for (raw, cmd) in cases {
            assert_eq!(decode(&raw, &CTX), Ok(cmd), "{raw:x?}");
            assert_eq!(RawCommand::from_bytes(&raw.to_bytes()), raw);
        }
    }

    /// IHI 0070 §4.1: commands for features not advertised are ILLEGAL.
    #[test]
    fn unadvertised_commands_are_illegal() {
        for op in [
            opcode::TLBI_EL2_ALL,
            opcode::TLBI_EL2_ASID,
            opcode::TLBI_EL2_VA,
            opcode::TLBI_EL2_VAA,
            opcode::TLBI_S12_VMALL,
            opcode::TLBI_S2_IPA,
            opcode::ATC_INV,
            opcode::PRI_RESP,
            opcode::RESUME,
            opcode::STALL_TERM,
            opcode::CFGI_VMS_PIDM,
        ] {
            assert!(
                matches!(
                    decode(&RawCommand([u64::from(op), 0]), &CTX),
                    Err(Illegal::NotAdvertised { .. })
                ),
                "{op:#x}"
            );
        }
        for op in [opcode::TLBI_EL3_ALL, opcode::TLBI_EL3_VA] {
            assert_eq!(
                decode(&RawCommand([u64::from(op), 0]), &CTX),
                Err(Illegal::SecureStream(op))
            );
        }
        for op in [0u8, 0x08, 0x0f, 0x14, 0x31, 0x47, 0xff] {
            assert_eq!(
                decode(&RawCommand([u64::from(op), 0]), &CTX),
                Err(Illegal::UnknownOpcode(op))
            );
        }
    }

    #[test]
    fn field_checks() {
        let ssec = RawCommand([RawCommand::cfgi_ste(1, false).0[0] | (1 << 10), 0]);
        assert_eq!(
            decode(&ssec, &CTX),
            Err(Illegal::SecureStream(opcode::CFGI_STE))
        );
        let ssid = RawCommand([RawCommand::cfgi_cd(1, false).0[0] | (5 << 12), 0]);
        assert_eq!(
            decode(&ssid, &CTX),
            Err(Illegal::SubstreamId(opcode::CFGI_CD))
        );
        let ssv = RawCommand([RawCommand::prefetch_config(1).0[0] | (1 << 11), 0]);
        assert_eq!(
            decode(&ssv, &CTX),
            Err(Illegal::SubstreamId(opcode::PREFETCH_CONFIG))
        );
        let cs3 = RawCommand::sync(3, 0, 0);
        assert_eq!(decode(&cs3, &CTX), Err(Illegal::ReservedSyncSignal));
        // ASID[15:8] are ignored without ASID16.
        let c = decode(
            &RawCommand::tlbi_nh_asid(0x1234),
            &DecodeContext { asid16: false },
        );
        assert_eq!(c, Ok(Command::TlbiNhAsid { asid: 0x34 }));
    }

    #[test]
    fn forwarded_commands_drop_unadvertised_fields() {
        // VMID 5, NUM/SCALE, TG/TTL set: the forwarded command has none of them.
        let raw = RawCommand([
            u64::from(opcode::TLBI_NH_VA) | (5 << 32) | (3 << 48) | (0x1f << 12) | (7 << 20),
            0x4000 | (3 << 8) | (1 << 10) | 1,
        ]);
        let fwd = decode(&raw, &CTX).unwrap().forwardable().unwrap();
        assert_eq!(fwd, RawCommand::tlbi_nh_va(3, 0x4000, true));
        assert!(
            decode(&RawCommand::cfgi_ste(1, true), &CTX)
                .unwrap()
                .forwardable()
                .is_none()
        );
        assert!(
            decode(&RawCommand::sync(0, 0, 0), &CTX)
                .unwrap()
                .forwardable()
                .is_none()
        );
    }

    /// IHI 0070 §4.3.2: CFGI_STE_RANGE covers 2^(Range+1) aligned StreamIDs; 31 is all.
    #[test]
    fn ste_ranges() {
        let r = |sid, range| Command::CfgiSteRange { sid, range }.ste_range().unwrap();
        assert_eq!(r(0x13, 0), (0x12, 0x13));
        assert_eq!(r(0x13, 3), (0x10, 0x1f));
        assert_eq!(r(0x1234, 31), (0, u32::MAX));
        assert_eq!(r(u32::MAX, 30), (0x8000_0000, u32::MAX));
        assert_eq!(
            Command::CfgiSte {
                sid: 4,
                leaf: false
            }
            .ste_range(),
            Some((4, 4))
        );
    }
}
