// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The RISC-V KVM AIA device's UAPI values this crate uses, from Linux
//! `arch/riscv/include/uapi/asm/kvm.h` ("Device Control API: RISC-V AIA") and
//! `include/uapi/linux/kvm.h` (`enum kvm_device_type`).
//!
//! kvm-bindings generates them only in its riscv64 module. They are repeated here so that
//! the crate's logic builds, and is unit-tested against fakes, on any host (the project's
//! build machines are x86_64); on riscv64 every value is checked at compile time against
//! kvm-bindings' generated one, so they cannot drift apart where it matters.

/// `KVM_DEV_TYPE_RISCV_AIA` (`enum kvm_device_type`).
pub const KVM_DEV_TYPE_RISCV_AIA: u32 = 11;

/// Attribute group: configuration (`u32` values).
pub const KVM_DEV_RISCV_AIA_GRP_CONFIG: u32 = 0;
/// Configuration: the mode (emulation, hardware acceleration, automatic).
pub const KVM_DEV_RISCV_AIA_CONFIG_MODE: u64 = 0;
/// Configuration: the largest interrupt identity of every vIMSIC file (N).
pub const KVM_DEV_RISCV_AIA_CONFIG_IDS: u64 = 1;
/// Configuration: the number of APLIC wired sources.
pub const KVM_DEV_RISCV_AIA_CONFIG_SRCS: u64 = 2;
/// Configuration: group index bits of the vIMSIC layout.
pub const KVM_DEV_RISCV_AIA_CONFIG_GROUP_BITS: u64 = 3;
/// Configuration: group index shift of the vIMSIC layout.
pub const KVM_DEV_RISCV_AIA_CONFIG_GROUP_SHIFT: u64 = 4;
/// Configuration: hart index bits of the vIMSIC layout.
pub const KVM_DEV_RISCV_AIA_CONFIG_HART_BITS: u64 = 5;
/// Configuration: guest index bits of the vIMSIC layout.
pub const KVM_DEV_RISCV_AIA_CONFIG_GUEST_BITS: u64 = 6;

/// Mode: KVM emulates each vIMSIC in software (trap and emulate).
pub const KVM_DEV_RISCV_AIA_MODE_EMUL: u32 = 0;
/// Mode: each vIMSIC is a hardware guest interrupt file of the host's IMSIC.
pub const KVM_DEV_RISCV_AIA_MODE_HWACCEL: u32 = 1;
/// Mode: a hardware guest file when one is free, else emulation.
pub const KVM_DEV_RISCV_AIA_MODE_AUTO: u32 = 2;

/// Smallest `IDS` value.
pub const KVM_DEV_RISCV_AIA_IDS_MIN: u32 = 63;
/// `IDS` must be below this.
pub const KVM_DEV_RISCV_AIA_IDS_MAX: u32 = 2048;
/// `SRCS` must be below this.
pub const KVM_DEV_RISCV_AIA_SRCS_MAX: u32 = 1024;
/// `GROUP_BITS` must be below this.
pub const KVM_DEV_RISCV_AIA_GROUP_BITS_MAX: u32 = 8;
/// Smallest `GROUP_SHIFT`.
pub const KVM_DEV_RISCV_AIA_GROUP_SHIFT_MIN: u32 = 24;
/// `GROUP_SHIFT` must be below this.
pub const KVM_DEV_RISCV_AIA_GROUP_SHIFT_MAX: u32 = 56;
/// `HART_BITS` must be below this.
pub const KVM_DEV_RISCV_AIA_HART_BITS_MAX: u32 = 16;
/// `GUEST_BITS` must be below this.
pub const KVM_DEV_RISCV_AIA_GUEST_BITS_MAX: u32 = 8;

/// Attribute group: addresses (`u64` values).
pub const KVM_DEV_RISCV_AIA_GRP_ADDR: u32 = 1;
/// Address attribute of the APLIC.
pub const KVM_DEV_RISCV_AIA_ADDR_APLIC: u64 = 0;
/// Address attributes beyond the last vCPU's IMSIC (`1 + KVM_DEV_RISCV_APLIC_MAX_HARTS`).
pub const KVM_DEV_RISCV_AIA_ADDR_MAX: u64 = 16385;

/// The address attribute of the IMSIC of the vCPU with creation index `vcpu_index`
/// (`KVM_DEV_RISCV_AIA_ADDR_IMSIC(__vcpu)`, `1 + __vcpu`).
pub const fn kvm_dev_riscv_aia_addr_imsic(vcpu_index: u64) -> u64 {
    1 + vcpu_index
}

/// Attribute group: control.
pub const KVM_DEV_RISCV_AIA_GRP_CTRL: u32 = 2;
/// Control: initialize the AIA (after the configuration and every address).
pub const KVM_DEV_RISCV_AIA_CTRL_INIT: u64 = 0;

/// Attribute group: APLIC registers.
pub const KVM_DEV_RISCV_AIA_GRP_APLIC: u32 = 3;

/// Attribute group: IMSIC registers (`unsigned long` values); the attribute is
/// `vcpu_id << KVM_DEV_RISCV_AIA_IMSIC_ISEL_BITS | iselect`.
pub const KVM_DEV_RISCV_AIA_GRP_IMSIC: u32 = 4;
/// Width of the `iselect` field of an IMSIC register attribute.
pub const KVM_DEV_RISCV_AIA_IMSIC_ISEL_BITS: u32 = 12;
/// Mask of the `iselect` field.
pub const KVM_DEV_RISCV_AIA_IMSIC_ISEL_MASK: u32 = (1 << KVM_DEV_RISCV_AIA_IMSIC_ISEL_BITS) - 1;

/// Alignment of a vIMSIC page.
pub const KVM_DEV_RISCV_IMSIC_ALIGN: u64 = 0x1000;
/// Size of a vIMSIC page.
pub const KVM_DEV_RISCV_IMSIC_SIZE: u64 = 0x1000;
/// Alignment of the APLIC.
pub const KVM_DEV_RISCV_APLIC_ALIGN: u64 = 0x1000;
/// Size of the APLIC.
pub const KVM_DEV_RISCV_APLIC_SIZE: u64 = 0x4000;

/// `kvm_run.fail_entry.hardware_entry_failure_reason` when KVM found no free hardware guest
/// file for a vCPU in `HWACCEL` mode (kvm-bindings 0.14 does not generate it).
pub const KVM_EXIT_FAIL_ENTRY_NO_VSFILE: u64 = 1;

#[cfg(target_arch = "riscv64")]
mod checked {
    use super::*;
    use kvm_bindings as kb;

    // Each value equals kvm-bindings' generated one (compile-time).
    const _: () = {
        assert!(KVM_DEV_TYPE_RISCV_AIA == kb::kvm_device_type_KVM_DEV_TYPE_RISCV_AIA);
        assert!(KVM_DEV_RISCV_AIA_GRP_CONFIG == kb::KVM_DEV_RISCV_AIA_GRP_CONFIG);
        assert!(KVM_DEV_RISCV_AIA_CONFIG_MODE == kb::KVM_DEV_RISCV_AIA_CONFIG_MODE as u64);
        assert!(KVM_DEV_RISCV_AIA_CONFIG_IDS == kb::KVM_DEV_RISCV_AIA_CONFIG_IDS as u64);
        assert!(KVM_DEV_RISCV_AIA_CONFIG_SRCS == kb::KVM_DEV_RISCV_AIA_CONFIG_SRCS as u64);
        assert!(
            KVM_DEV_RISCV_AIA_CONFIG_GROUP_BITS == kb::KVM_DEV_RISCV_AIA_CONFIG_GROUP_BITS as u64
        );
        assert!(
            KVM_DEV_RISCV_AIA_CONFIG_GROUP_SHIFT == kb::KVM_DEV_RISCV_AIA_CONFIG_GROUP_SHIFT as u64
        );
        assert!(
            KVM_DEV_RISCV_AIA_CONFIG_HART_BITS == kb::KVM_DEV_RISCV_AIA_CONFIG_HART_BITS as u64
        );
        assert!(
            KVM_DEV_RISCV_AIA_CONFIG_GUEST_BITS == kb::KVM_DEV_RISCV_AIA_CONFIG_GUEST_BITS as u64
        );
        assert!(KVM_DEV_RISCV_AIA_MODE_EMUL == kb::KVM_DEV_RISCV_AIA_MODE_EMUL);
        assert!(KVM_DEV_RISCV_AIA_MODE_HWACCEL == kb::KVM_DEV_RISCV_AIA_MODE_HWACCEL);
        assert!(KVM_DEV_RISCV_AIA_MODE_AUTO == kb::KVM_DEV_RISCV_AIA_MODE_AUTO);
        assert!(KVM_DEV_RISCV_AIA_IDS_MIN == kb::KVM_DEV_RISCV_AIA_IDS_MIN);
        assert!(KVM_DEV_RISCV_AIA_IDS_MAX == kb::KVM_DEV_RISCV_AIA_IDS_MAX);
        assert!(KVM_DEV_RISCV_AIA_SRCS_MAX == kb::KVM_DEV_RISCV_AIA_SRCS_MAX);
        assert!(KVM_DEV_RISCV_AIA_GROUP_BITS_MAX == kb::KVM_DEV_RISCV_AIA_GROUP_BITS_MAX);
        assert!(KVM_DEV_RISCV_AIA_GROUP_SHIFT_MIN == kb::KVM_DEV_RISCV_AIA_GROUP_SHIFT_MIN);
        assert!(KVM_DEV_RISCV_AIA_GROUP_SHIFT_MAX == kb::KVM_DEV_RISCV_AIA_GROUP_SHIFT_MAX);
        assert!(KVM_DEV_RISCV_AIA_HART_BITS_MAX == kb::KVM_DEV_RISCV_AIA_HART_BITS_MAX);
        assert!(KVM_DEV_RISCV_AIA_GUEST_BITS_MAX == kb::KVM_DEV_RISCV_AIA_GUEST_BITS_MAX);
        assert!(KVM_DEV_RISCV_AIA_GRP_ADDR == kb::KVM_DEV_RISCV_AIA_GRP_ADDR);
        assert!(KVM_DEV_RISCV_AIA_ADDR_APLIC == kb::KVM_DEV_RISCV_AIA_ADDR_APLIC as u64);
        assert!(KVM_DEV_RISCV_AIA_ADDR_MAX == kb::KVM_DEV_RISCV_AIA_ADDR_MAX as u64);
        assert!(KVM_DEV_RISCV_AIA_GRP_CTRL == kb::KVM_DEV_RISCV_AIA_GRP_CTRL);
        assert!(KVM_DEV_RISCV_AIA_CTRL_INIT == kb::KVM_DEV_RISCV_AIA_CTRL_INIT as u64);
        assert!(KVM_DEV_RISCV_AIA_GRP_APLIC == kb::KVM_DEV_RISCV_AIA_GRP_APLIC);
        assert!(KVM_DEV_RISCV_AIA_GRP_IMSIC == kb::KVM_DEV_RISCV_AIA_GRP_IMSIC);
        assert!(KVM_DEV_RISCV_AIA_IMSIC_ISEL_BITS == kb::KVM_DEV_RISCV_AIA_IMSIC_ISEL_BITS);
        assert!(KVM_DEV_RISCV_AIA_IMSIC_ISEL_MASK == kb::KVM_DEV_RISCV_AIA_IMSIC_ISEL_MASK);
        assert!(KVM_DEV_RISCV_IMSIC_ALIGN == kb::KVM_DEV_RISCV_IMSIC_ALIGN as u64);
        assert!(KVM_DEV_RISCV_IMSIC_SIZE == kb::KVM_DEV_RISCV_IMSIC_SIZE as u64);
        assert!(KVM_DEV_RISCV_APLIC_ALIGN == kb::KVM_DEV_RISCV_APLIC_ALIGN as u64);
        assert!(KVM_DEV_RISCV_APLIC_SIZE == kb::KVM_DEV_RISCV_APLIC_SIZE as u64);
    };
}
