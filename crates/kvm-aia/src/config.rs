// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The AIA device's configuration and the guest's vIMSIC layout, validated the way KVM
//! validates them (Linux `arch/riscv/kvm/aia_device.c`: `aia_config`, `aia_imsic_addr`,
//! `aia_init`, `kvm_riscv_aia_inject_msi`), so that a VMM learns of a mistake with a reason
//! before KVM answers `EINVAL`, or, worse, before an MSI is dropped silently.
//!
//! The layout comes from a [`riscv_imsic::ImsicConfig`], the same description the userspace
//! model takes: a VMM describes its guest's IMSIC once and gets both the model and KVM's
//! device from it (`AiaSetup::from_imsic`).

use riscv_imsic::{FileKind, ImsicConfig, ImsicGeometry, NumIds, PAGE_SHIFT, SETEIPNUM_BE};

use crate::Error;
use crate::uapi::*;

/// How KVM provides each vCPU's IMSIC (`KVM_DEV_RISCV_AIA_CONFIG_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AiaMode {
    /// Trap and emulate: KVM keeps each vIMSIC in memory (its "SW-file").
    Emulation,
    /// Each vCPU's vIMSIC is a hardware guest interrupt file of the host's IMSIC
    /// (AIA 1.0 §3.1, guest files; the vCPU fails to enter when none is free).
    HwAccel,
    /// A hardware guest file when one is free, else emulation.
    Auto,
}

impl AiaMode {
    /// The UAPI value.
    pub fn raw(self) -> u32 {
        match self {
            AiaMode::Emulation => KVM_DEV_RISCV_AIA_MODE_EMUL,
            AiaMode::HwAccel => KVM_DEV_RISCV_AIA_MODE_HWACCEL,
            AiaMode::Auto => KVM_DEV_RISCV_AIA_MODE_AUTO,
        }
    }

    /// The mode of a UAPI value, if it is one.
    pub fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            KVM_DEV_RISCV_AIA_MODE_EMUL => Some(AiaMode::Emulation),
            KVM_DEV_RISCV_AIA_MODE_HWACCEL => Some(AiaMode::HwAccel),
            KVM_DEV_RISCV_AIA_MODE_AUTO => Some(AiaMode::Auto),
            _ => None,
        }
    }
}

/// The `KVM_DEV_RISCV_AIA_GRP_CONFIG` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AiaConfig {
    /// `CONFIG_MODE`.
    pub mode: AiaMode,
    /// `CONFIG_IDS`: N, the largest identity of every vIMSIC file (AIA 1.0 §3.1: 63..=2047,
    /// N + 1 a multiple of 64; KVM also needs N below the host's guest-file size).
    pub ids: NumIds,
    /// `CONFIG_SRCS`: APLIC wired sources (0: no APLIC).
    pub sources: u32,
    /// `CONFIG_GROUP_BITS`: `j` of AIA 1.0 §3.6.
    pub group_bits: u8,
    /// `CONFIG_GROUP_SHIFT`: `E` of AIA 1.0 §3.6.
    pub group_shift: u8,
    /// `CONFIG_HART_BITS`: `k` of AIA 1.0 §3.6.
    pub hart_bits: u8,
    /// `CONFIG_GUEST_BITS`: `D - 12` of AIA 1.0 §3.6 (the guest's own guest-file pages;
    /// KVM delivers only to guest index 0, the vCPU's supervisor-level file).
    pub guest_bits: u8,
}

impl AiaConfig {
    /// Checks every value against the UAPI's bounds, as `aia_config()` and `aia_init()` do.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |reason: String| Error::Invalid {
            what: "configuration",
            reason,
        };
        let ids = self.ids.get();
        // NumIds guarantees AIA 1.0 §3.1's form; KVM's own test is the same.
        debug_assert!((KVM_DEV_RISCV_AIA_IDS_MIN..KVM_DEV_RISCV_AIA_IDS_MAX).contains(&ids));
        if self.sources >= KVM_DEV_RISCV_AIA_SRCS_MAX {
            return Err(bad(format!(
                "{} APLIC sources, at most {}",
                self.sources,
                KVM_DEV_RISCV_AIA_SRCS_MAX - 1
            )));
        }
        if self.sources > ids {
            return Err(bad(format!(
                "{} APLIC sources but only {ids} identities",
                self.sources
            )));
        }
        for (name, value, max) in [
            (
                "group bits",
                self.group_bits,
                KVM_DEV_RISCV_AIA_GROUP_BITS_MAX,
            ),
            ("hart bits", self.hart_bits, KVM_DEV_RISCV_AIA_HART_BITS_MAX),
            (
                "guest bits",
                self.guest_bits,
                KVM_DEV_RISCV_AIA_GUEST_BITS_MAX,
            ),
        ] {
            if u32::from(value) >= max {
                return Err(bad(format!("{name} {value}, at most {}", max - 1)));
            }
        }
        let shift = u32::from(self.group_shift);
        if !(KVM_DEV_RISCV_AIA_GROUP_SHIFT_MIN..KVM_DEV_RISCV_AIA_GROUP_SHIFT_MAX).contains(&shift)
        {
            return Err(bad(format!(
                "group shift {shift}, not in {KVM_DEV_RISCV_AIA_GROUP_SHIFT_MIN}..{KVM_DEV_RISCV_AIA_GROUP_SHIFT_MAX}"
            )));
        }
        if self.group_bits > 0 {
            let low =
                u32::from(self.hart_bits) + u32::from(self.guest_bits) + u32::from(PAGE_SHIFT);
            if shift < low {
                return Err(bad(format!(
                    "group field at bit {shift} overlaps the hart and guest fields below bit {low}"
                )));
            }
        }
        Ok(())
    }
}

/// Which vCPU's vIMSIC an MSI address reaches, the way `kvm_riscv_aia_inject_msi()` finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsiTarget {
    /// The vCPU (creation index).
    pub vcpu_index: usize,
    /// The guest index in the address (KVM delivers only to 0).
    pub guest_index: u32,
    /// Offset in the page (0: `seteipnum_le`, 4: `seteipnum_be`).
    pub offset: u32,
}

/// The whole setup of KVM's AIA device for one VM: configuration, APLIC address and each
/// vCPU's vIMSIC page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AiaSetup {
    /// The configuration.
    pub config: AiaConfig,
    /// The APLIC's base, needed when [`AiaConfig::sources`] is not 0.
    pub aplic: Option<u64>,
    /// The vIMSIC page (its supervisor-level file, AIA 1.0 §3.5) of each vCPU, by creation
    /// index.
    pub imsics: Vec<u64>,
}

impl AiaSetup {
    /// The setup that gives the guest exactly the IMSIC described by `imsic` (the layout the
    /// [`riscv_imsic::Imsic`] model takes): hart `i` of the configuration is the vCPU with
    /// creation index `i`, its vIMSIC page the hart's supervisor-level file.
    ///
    /// KVM's vIMSIC has what a guest of a hypervisor sees (AIA 1.0 §3.1): one
    /// supervisor-level file per vCPU, all of the same size. A configuration with
    /// machine-level files, guest files (GEILEN > 0) or files of different sizes has no KVM
    /// counterpart and is refused.
    pub fn from_imsic(
        mode: AiaMode,
        imsic: &ImsicConfig,
        sources: u32,
        aplic: Option<u64>,
    ) -> Result<Self, Error> {
        let bad = |reason: String| Error::Invalid {
            what: "vIMSIC layout",
            reason,
        };
        let g = &imsic.geometry;
        if g.machine_base.is_some() {
            return Err(bad(
                "KVM's vIMSIC has no machine-level files (the geometry has a machine region)"
                    .to_owned(),
            ));
        }
        let Some(first) = imsic.harts.first() else {
            return Err(bad("no harts".to_owned()));
        };
        let ids = first.supervisor_ids;
        for (i, h) in imsic.harts.iter().enumerate() {
            if h.machine_ids.is_some() || h.geilen != 0 {
                return Err(bad(format!(
                    "hart {i} has a machine-level file or guest files; KVM's vIMSIC has neither"
                )));
            }
            if h.supervisor_ids != ids {
                return Err(bad(format!(
                    "hart {i} has {} identities, hart 0 {}; KVM has one size for all",
                    h.supervisor_ids.get(),
                    ids.get()
                )));
            }
        }
        let geometry = ImsicGeometry::new(*g).map_err(|e| bad(format!("geometry: {e}")))?;
        let imsics = imsic
            .harts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                geometry
                    .file_address(h.group, h.hart, FileKind::Supervisor)
                    .map_err(|e| {
                        bad(format!(
                            "hart {i} (group {}, hart {}): {e}",
                            h.group, h.hart
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let setup = AiaSetup {
            config: AiaConfig {
                mode,
                ids,
                sources,
                group_bits: g.group_index_bits,
                // KVM checks the shift even without a group field; 24 is its default.
                group_shift: if g.group_index_bits == 0 {
                    KVM_DEV_RISCV_AIA_GROUP_SHIFT_MIN as u8
                } else {
                    g.group_index_shift
                },
                hart_bits: g.hart_index_bits,
                guest_bits: g.guest_index_bits,
            },
            aplic,
            imsics,
        };
        setup.validate()?;
        Ok(setup)
    }

    /// The mask of the address bits that KVM takes as group, hart and guest index and page
    /// offset (`aia_imsic_ppn()`): an IMSIC address with them cleared is the layout's base.
    fn index_mask(&self) -> u64 {
        let c = &self.config;
        let low = u32::from(c.hart_bits) + u32::from(c.guest_bits) + u32::from(PAGE_SHIFT);
        let mut mask = low_bits(low);
        if c.group_bits > 0 {
            mask |= low_bits(u32::from(c.group_bits)) << c.group_shift;
        }
        mask
    }

    /// KVM's hart index of a vIMSIC address (`aia_imsic_hart_index()`): the group number
    /// above the hart number.
    pub fn hart_index(&self, addr: u64) -> u32 {
        let c = &self.config;
        let hart = (addr >> (u32::from(c.guest_bits) + u32::from(PAGE_SHIFT)))
            & low_bits(u32::from(c.hart_bits));
        let group = if c.group_bits > 0 {
            (addr >> c.group_shift) & low_bits(u32::from(c.group_bits))
        } else {
            0
        };
        ((group << c.hart_bits) | hart) as u32
    }

    /// Checks what `aia_init()` checks, and what it does not but a working VM needs: every
    /// vIMSIC page aligned, all of them in one layout (same base once the index fields are
    /// cleared), no two vCPUs with the same hart index (KVM would deliver both vCPUs' MSIs
    /// to the first), the APLIC aligned, present when there are sources, and clear of the
    /// vIMSIC pages.
    pub fn validate(&self) -> Result<(), Error> {
        self.config.validate()?;
        let bad = |reason: String| Error::Invalid {
            what: "vIMSIC layout",
            reason,
        };
        if self.imsics.is_empty() {
            return Err(bad("no vCPU".to_owned()));
        }
        if self.imsics.len() as u64 > KVM_DEV_RISCV_AIA_ADDR_MAX - 1 {
            return Err(bad(format!(
                "{} vCPUs, KVM addresses at most {}",
                self.imsics.len(),
                KVM_DEV_RISCV_AIA_ADDR_MAX - 1
            )));
        }
        let mask = self.index_mask();
        let base = self.imsics[0] & !mask;
        let mut seen: Vec<(u32, usize)> = Vec::with_capacity(self.imsics.len());
        for (i, &addr) in self.imsics.iter().enumerate() {
            if addr % KVM_DEV_RISCV_IMSIC_ALIGN != 0 {
                return Err(bad(format!(
                    "vCPU {i}'s vIMSIC at {addr:#x} is not {KVM_DEV_RISCV_IMSIC_ALIGN:#x}-aligned"
                )));
            }
            if addr & !mask != base {
                return Err(bad(format!(
                    "vCPU {i}'s vIMSIC at {addr:#x} is outside the layout of vCPU 0's ({:#x})",
                    self.imsics[0]
                )));
            }
            let guest = (addr >> PAGE_SHIFT) & low_bits(u32::from(self.config.guest_bits));
            if guest != 0 {
                return Err(bad(format!(
                    "vCPU {i}'s vIMSIC at {addr:#x} has guest index {guest}; KVM's is 0"
                )));
            }
            let hart = self.hart_index(addr);
            if let Some((_, j)) = seen.iter().find(|(h, _)| *h == hart) {
                return Err(bad(format!(
                    "vCPUs {j} and {i} both have hart index {hart} ({:#x}, {addr:#x})",
                    self.imsics[*j]
                )));
            }
            seen.push((hart, i));
        }
        match (self.config.sources, self.aplic) {
            (0, _) => {}
            (n, None) => {
                return Err(bad(format!("{n} APLIC sources but no APLIC address")));
            }
            (_, Some(_)) => {}
        }
        if let Some(aplic) = self.aplic {
            if aplic % KVM_DEV_RISCV_APLIC_ALIGN != 0 {
                return Err(bad(format!(
                    "APLIC at {aplic:#x} is not {KVM_DEV_RISCV_APLIC_ALIGN:#x}-aligned"
                )));
            }
            let end = aplic.checked_add(KVM_DEV_RISCV_APLIC_SIZE).ok_or_else(|| {
                bad(format!(
                    "APLIC at {aplic:#x} wraps around the address space"
                ))
            })?;
            if let Some(i) = self
                .imsics
                .iter()
                .position(|&a| a < end && aplic < a + KVM_DEV_RISCV_IMSIC_SIZE)
            {
                return Err(bad(format!(
                    "APLIC {aplic:#x}..{end:#x} overlaps vCPU {i}'s vIMSIC at {:#x}",
                    self.imsics[i]
                )));
            }
        }
        Ok(())
    }

    /// The vCPU whose vIMSIC an MSI written to `address` reaches, as
    /// `kvm_riscv_aia_inject_msi()` decides it (the page number with the guest index
    /// cleared equals the vCPU's page number), or `None`: KVM then drops the MSI and reports
    /// success.
    pub fn msi_target(&self, address: u64) -> Option<MsiTarget> {
        let guest_mask = low_bits(u32::from(self.config.guest_bits));
        let page = address >> PAGE_SHIFT;
        let guest_index = (page & guest_mask) as u32;
        let page = page & !guest_mask;
        let vcpu_index = self.imsics.iter().position(|&a| a >> PAGE_SHIFT == page)?;
        Some(MsiTarget {
            vcpu_index,
            guest_index,
            offset: (address & low_bits(u32::from(PAGE_SHIFT))) as u32,
        })
    }

    /// Checks that an MSI (`address`, `data`) reaches a vCPU and is one KVM delivers
    /// (`kvm_riscv_vcpu_aia_imsic_inject()`: guest index 0, a `seteipnum_le`/`_be` offset,
    /// an identity 1..=N once byte-swapped for `_be`), and returns the target and identity.
    pub fn check_msi(&self, address: u64, data: u32) -> Result<(MsiTarget, u32), Error> {
        let bad = |reason: String| Error::Invalid {
            what: "MSI",
            reason,
        };
        let target = self.msi_target(address).ok_or_else(|| {
            bad(format!(
                "address {address:#x} is no vCPU's vIMSIC page: KVM would drop the MSI"
            ))
        })?;
        if target.guest_index != 0 {
            return Err(bad(format!(
                "address {address:#x} has guest index {}: KVM delivers only to 0",
                target.guest_index
            )));
        }
        let id = match target.offset {
            0 => data,
            o if u64::from(o) == SETEIPNUM_BE => data.swap_bytes(),
            o => {
                return Err(bad(format!(
                    "address {address:#x} is at offset {o:#x} of its page, not seteipnum_le (0) or seteipnum_be (4)"
                )));
            }
        };
        if id == 0 || id > self.config.ids.get() {
            return Err(bad(format!(
                "identity {id} (data {data:#x}) is not in 1..={}",
                self.config.ids.get()
            )));
        }
        Ok((target, id))
    }
}

/// The low `n` bits set (`n` up to 64).
fn low_bits(n: u32) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

#[cfg(test)]
mod tests {
    use riscv_imsic::{GeometryConfig, HartConfig};

    use super::*;

    fn ids(n: u32) -> NumIds {
        NumIds::new(n).unwrap()
    }

    fn two_vcpus() -> AiaSetup {
        let geometry = GeometryConfig::supervisor_only(0x2800_0000, 2, 0);
        let imsic = ImsicConfig::uniform(geometry, 2, ids(255), 0);
        AiaSetup::from_imsic(AiaMode::HwAccel, &imsic, 0, None).unwrap()
    }

    #[test]
    fn from_imsic_matches_the_model_layout() {
        let s = two_vcpus();
        assert_eq!(s.imsics, [0x2800_0000, 0x2800_1000]);
        assert_eq!(
            s.config,
            AiaConfig {
                mode: AiaMode::HwAccel,
                ids: ids(255),
                sources: 0,
                group_bits: 0,
                group_shift: 24,
                hart_bits: 1,
                guest_bits: 0,
            }
        );
        assert_eq!(s.hart_index(0x2800_1000), 1);
        // Groups: hart index = group << k | hart.
        let geometry = GeometryConfig {
            machine_base: None,
            machine_hart_shift: 12,
            supervisor_base: 0x2800_0000,
            guest_index_bits: 1,
            hart_index_bits: 1,
            group_index_bits: 1,
            group_index_shift: 24,
        };
        let mut imsic = ImsicConfig::uniform(geometry, 4, ids(63), 0);
        imsic.harts[3] = HartConfig {
            group: 1,
            hart: 1,
            ..imsic.harts[3]
        };
        let s = AiaSetup::from_imsic(AiaMode::Emulation, &imsic, 0, None).unwrap();
        assert_eq!(
            s.imsics,
            [0x2800_0000, 0x2800_2000, 0x2900_0000, 0x2900_2000]
        );
        let harts: Vec<_> = s.imsics.iter().map(|&a| s.hart_index(a)).collect();
        assert_eq!(harts, [0, 1, 2, 3]);
        assert_eq!((s.config.group_bits, s.config.guest_bits), (1, 1));
    }

    #[test]
    fn configurations_kvm_has_no_counterpart_for_are_refused() {
        let geometry = GeometryConfig::supervisor_only(0x2800_0000, 2, 0);
        let mut with_guests = ImsicConfig::uniform(geometry, 2, ids(255), 0);
        with_guests.harts[1].geilen = 1;
        let mut with_machine = ImsicConfig::uniform(geometry, 2, ids(255), 0);
        with_machine.geometry.machine_base = Some(0x2400_0000);
        let mut mixed = ImsicConfig::uniform(geometry, 2, ids(255), 0);
        mixed.harts[1].supervisor_ids = ids(127);
        let empty = ImsicConfig::uniform(geometry, 0, ids(255), 0);
        for (c, needle) in [
            (with_guests, "guest files"),
            (with_machine, "machine-level"),
            (mixed, "127 identities"),
            (empty, "no harts"),
        ] {
            let err = AiaSetup::from_imsic(AiaMode::Auto, &c, 0, None).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn kvm_bounds_are_enforced() {
        let good = two_vcpus();
        let mut cases: Vec<(AiaSetup, &str)> = Vec::new();
        let mut s = good.clone();
        s.config.sources = 1024;
        cases.push((s, "1024 APLIC sources"));
        let mut s = good.clone();
        s.config.sources = 256;
        cases.push((s, "only 255 identities"));
        let mut s = good.clone();
        s.config.hart_bits = 16;
        cases.push((s, "hart bits 16"));
        let mut s = good.clone();
        s.config.guest_bits = 8;
        cases.push((s, "guest bits 8"));
        let mut s = good.clone();
        s.config.group_bits = 8;
        cases.push((s, "group bits 8"));
        let mut s = good.clone();
        s.config.group_shift = 23;
        cases.push((s, "group shift 23"));
        let mut s = good.clone();
        s.config.group_shift = 56;
        cases.push((s, "group shift 56"));
        let mut s = good.clone();
        s.config.sources = 4;
        cases.push((s, "no APLIC address"));
        let mut s = good.clone();
        s.config.sources = 4;
        s.aplic = Some(0x0c00_0800);
        cases.push((s, "not 0x1000-aligned"));
        let mut s = good.clone();
        s.aplic = Some(0x27ff_e000);
        cases.push((s, "overlaps vCPU 0"));
        let mut s = good.clone();
        s.imsics[1] = 0x2800_1800;
        cases.push((s, "not 0x1000-aligned"));
        let mut s = good.clone();
        s.imsics[1] = 0x3800_1000;
        cases.push((s, "outside the layout"));
        let mut s = good.clone();
        s.imsics[1] = s.imsics[0];
        cases.push((s, "both have hart index 0"));
        let mut s = good.clone();
        s.imsics.clear();
        cases.push((s, "no vCPU"));
        for (s, needle) in cases {
            let err = s.validate().unwrap_err();
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
        good.validate().unwrap();
    }

    #[test]
    fn msi_targets_follow_kvm() {
        let geometry = GeometryConfig::supervisor_only(0x2800_0000, 2, 2);
        let imsic = ImsicConfig::uniform(geometry, 2, ids(255), 0);
        let s = AiaSetup::from_imsic(AiaMode::HwAccel, &imsic, 0, None).unwrap();
        assert_eq!(s.imsics, [0x2800_0000, 0x2800_4000]);
        assert_eq!(
            s.check_msi(0x2800_4000, 9).unwrap(),
            (
                MsiTarget {
                    vcpu_index: 1,
                    guest_index: 0,
                    offset: 0
                },
                9
            )
        );
        // seteipnum_be takes the identity byte-swapped.
        assert_eq!(s.check_msi(0x2800_0004, 9u32.swap_bytes()).unwrap().1, 9);
        // Guest page 1 of vCPU 1 is "found" by KVM, which then refuses guest index 1.
        assert_eq!(s.msi_target(0x2800_5000).unwrap().guest_index, 1);
        for (addr, data, needle) in [
            (0x2800_5000, 9, "guest index 1"),
            (0x2800_8000, 9, "no vCPU's vIMSIC page"),
            (0x2800_4008, 9, "offset 0x8"),
            (0x2800_4000, 0, "identity 0"),
            (0x2800_4000, 256, "identity 256"),
            (u64::MAX, 1, "no vCPU"),
        ] {
            let err = s.check_msi(addr, data).unwrap_err();
            assert!(err.to_string().contains(needle), "{addr:#x}: {err}");
        }
    }

    #[test]
    fn modes_round_trip() {
        for m in [AiaMode::Emulation, AiaMode::HwAccel, AiaMode::Auto] {
            assert_eq!(AiaMode::from_raw(m.raw()), Some(m));
        }
        assert_eq!(AiaMode::from_raw(3), None);
    }
}
