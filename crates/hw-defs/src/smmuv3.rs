// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Arm SMMUv3 (IHI 0070) values both sides of iommufd nesting use: the command opcodes, the
//! event numbers, and the Stream Table Entry fields Linux lets a guest control in a nested
//! HWPT (`STRTAB_STE_0_NESTING_ALLOWED`, `STRTAB_STE_1_NESTING_ALLOWED` in Linux 7.2).

/// Command opcodes (IHI 0070 4.1.1, `CMD[7:0]`).
pub mod opcode {
    /// `CMD_PREFETCH_CONFIG`.
    pub const PREFETCH_CONFIG: u8 = 0x01;
    /// `CMD_PREFETCH_ADDR`.
    pub const PREFETCH_ADDR: u8 = 0x02;
    /// `CMD_CFGI_STE`.
    pub const CFGI_STE: u8 = 0x03;
    /// `CMD_CFGI_STE_RANGE` (and `CMD_CFGI_ALL`, its Range = 31 form).
    pub const CFGI_STE_RANGE: u8 = 0x04;
    /// `CMD_CFGI_CD`.
    pub const CFGI_CD: u8 = 0x05;
    /// `CMD_CFGI_CD_ALL`.
    pub const CFGI_CD_ALL: u8 = 0x06;
    /// `CMD_CFGI_VMS_PIDM`.
    pub const CFGI_VMS_PIDM: u8 = 0x07;
    /// `CMD_TLBI_NH_ALL`.
    pub const TLBI_NH_ALL: u8 = 0x10;
    /// `CMD_TLBI_NH_ASID`.
    pub const TLBI_NH_ASID: u8 = 0x11;
    /// `CMD_TLBI_NH_VA`.
    pub const TLBI_NH_VA: u8 = 0x12;
    /// `CMD_TLBI_NH_VAA`.
    pub const TLBI_NH_VAA: u8 = 0x13;
    /// `CMD_TLBI_EL3_ALL`.
    pub const TLBI_EL3_ALL: u8 = 0x18;
    /// `CMD_TLBI_EL3_VA`.
    pub const TLBI_EL3_VA: u8 = 0x1a;
    /// `CMD_TLBI_EL2_ALL`.
    pub const TLBI_EL2_ALL: u8 = 0x20;
    /// `CMD_TLBI_EL2_ASID`.
    pub const TLBI_EL2_ASID: u8 = 0x21;
    /// `CMD_TLBI_EL2_VA`.
    pub const TLBI_EL2_VA: u8 = 0x22;
    /// `CMD_TLBI_EL2_VAA`.
    pub const TLBI_EL2_VAA: u8 = 0x23;
    /// `CMD_TLBI_S12_VMALL`.
    pub const TLBI_S12_VMALL: u8 = 0x28;
    /// `CMD_TLBI_S2_IPA`.
    pub const TLBI_S2_IPA: u8 = 0x2a;
    /// `CMD_TLBI_NSNH_ALL`.
    pub const TLBI_NSNH_ALL: u8 = 0x30;
    /// `CMD_ATC_INV`.
    pub const ATC_INV: u8 = 0x40;
    /// `CMD_PRI_RESP`.
    pub const PRI_RESP: u8 = 0x41;
    /// `CMD_RESUME`.
    pub const RESUME: u8 = 0x44;
    /// `CMD_STALL_TERM`.
    pub const STALL_TERM: u8 = 0x45;
    /// `CMD_SYNC`.
    pub const SYNC: u8 = 0x46;
}

/// The opcodes Linux 7.2 forwards from a vIOMMU (`arm_vsmmu_convert_user_cmd()`); it answers
/// `EIO` to any other.
pub const FORWARDED_OPCODES: [u8; 8] = [
    opcode::TLBI_NH_ALL,
    opcode::TLBI_NH_ASID,
    opcode::TLBI_NH_VA,
    opcode::TLBI_NH_VAA,
    opcode::TLBI_NSNH_ALL,
    opcode::CFGI_CD,
    opcode::CFGI_CD_ALL,
    opcode::ATC_INV,
];

/// Event numbers (IHI 0070 7.3, `EVENT[7:0]`).
pub mod event_id {
    /// `F_UUT`: unsupported upstream transaction.
    pub const F_UUT: u8 = 0x01;
    /// `C_BAD_STREAMID`.
    pub const C_BAD_STREAMID: u8 = 0x02;
    /// `F_STE_FETCH`.
    pub const F_STE_FETCH: u8 = 0x03;
    /// `C_BAD_STE`.
    pub const C_BAD_STE: u8 = 0x04;
    /// `F_BAD_ATS_TREQ`.
    pub const F_BAD_ATS_TREQ: u8 = 0x05;
    /// `F_STREAM_DISABLED`.
    pub const F_STREAM_DISABLED: u8 = 0x06;
    /// `F_TRANSL_FORBIDDEN`.
    pub const F_TRANSL_FORBIDDEN: u8 = 0x07;
    /// `C_BAD_SUBSTREAMID`.
    pub const C_BAD_SUBSTREAMID: u8 = 0x08;
    /// `F_CD_FETCH`.
    pub const F_CD_FETCH: u8 = 0x09;
    /// `C_BAD_CD`.
    pub const C_BAD_CD: u8 = 0x0a;
    /// `F_WALK_EABT`.
    pub const F_WALK_EABT: u8 = 0x0b;
    /// `F_TRANSLATION`.
    pub const F_TRANSLATION: u8 = 0x10;
    /// `F_ADDR_SIZE`.
    pub const F_ADDR_SIZE: u8 = 0x11;
    /// `F_ACCESS`.
    pub const F_ACCESS: u8 = 0x12;
    /// `F_PERMISSION`.
    pub const F_PERMISSION: u8 = 0x13;
    /// `F_TLB_CONFLICT`.
    pub const F_TLB_CONFLICT: u8 = 0x20;
    /// `F_CFG_CONFLICT`.
    pub const F_CFG_CONFLICT: u8 = 0x21;
    /// `E_PAGE_REQUEST`.
    pub const E_PAGE_REQUEST: u8 = 0x24;
    /// `F_VMS_FETCH`.
    pub const F_VMS_FETCH: u8 = 0x25;

    /// The spec's name of an event number, when it has one.
    pub fn name(id: u8) -> Option<&'static str> {
        Some(match id {
            F_UUT => "F_UUT",
            C_BAD_STREAMID => "C_BAD_STREAMID",
            F_STE_FETCH => "F_STE_FETCH",
            C_BAD_STE => "C_BAD_STE",
            F_BAD_ATS_TREQ => "F_BAD_ATS_TREQ",
            F_STREAM_DISABLED => "F_STREAM_DISABLED",
            F_TRANSL_FORBIDDEN => "F_TRANSL_FORBIDDEN",
            C_BAD_SUBSTREAMID => "C_BAD_SUBSTREAMID",
            F_CD_FETCH => "F_CD_FETCH",
            C_BAD_CD => "C_BAD_CD",
            F_WALK_EABT => "F_WALK_EABT",
            F_TRANSLATION => "F_TRANSLATION",
            F_ADDR_SIZE => "F_ADDR_SIZE",
            F_ACCESS => "F_ACCESS",
            F_PERMISSION => "F_PERMISSION",
            F_TLB_CONFLICT => "F_TLB_CONFLICT",
            F_CFG_CONFLICT => "F_CFG_CONFLICT",
            E_PAGE_REQUEST => "E_PAGE_REQUEST",
            F_VMS_FETCH => "F_VMS_FETCH",
            _ => return None,
        })
    }
}

/// STE word 0 bits a guest may set in a nested HWPT: V \[0\], Config \[3:1\], S1Fmt \[5:4\],
/// S1ContextPtr \[51:6\], S1CDMax \[63:59\].
pub const STE0_NESTING_ALLOWED: u64 = 0xf80f_ffff_ffff_ffff;
/// STE word 1 bits a guest may set in a nested HWPT: S1DSS \[1:0\], S1CIR \[3:2\], S1COR
/// \[5:4\], S1CSH \[7:6\], S1STALLD \[27\], EATS \[29:28\].
pub const STE1_NESTING_ALLOWED: u64 = 0x3800_00ff;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_masks_are_the_named_fields() {
        let f = |hi: u32, lo: u32| (u64::MAX >> (63 - (hi - lo))) << lo;
        assert_eq!(
            STE0_NESTING_ALLOWED,
            1 | f(3, 1) | f(5, 4) | f(51, 6) | f(63, 59)
        );
        assert_eq!(
            STE1_NESTING_ALLOWED,
            f(1, 0) | f(3, 2) | f(5, 4) | f(7, 6) | (1 << 27) | f(29, 28)
        );
        assert_eq!(event_id::name(0x10), Some("F_TRANSLATION"));
        assert_eq!(event_id::name(0xee), None);
    }
}
