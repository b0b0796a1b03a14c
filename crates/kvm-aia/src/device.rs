// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! KVM's AIA device (`KVM_DEV_TYPE_RISCV_AIA`) through its device attributes.
//!
//! The attribute groups (Linux `arch/riscv/include/uapi/asm/kvm.h`, "Device Control API:
//! RISC-V AIA"; semantics in `arch/riscv/kvm/aia_device.c` and `aia_imsic.c`):
//!
//! | group | attribute | value | when |
//! |---|---|---|---|
//! | `GRP_CONFIG` (0) | `MODE`, `IDS`, `SRCS`, `GROUP_BITS`, `GROUP_SHIFT`, `HART_BITS`, `GUEST_BITS` | `u32` | written before `CTRL_INIT` (`EBUSY` after) |
//! | `GRP_ADDR` (1) | 0: APLIC; `1 + i`: the IMSIC of the vCPU with creation index `i` | `u64` | likewise; the vCPU must exist |
//! | `GRP_CTRL` (2) | `CTRL_INIT` | none | once, after every vCPU is created |
//! | `GRP_IMSIC` (4) | `vcpu_id << 12 \| iselect` (0x70-0xFF, AIA 1.0 §3.7) | `unsigned long` | after `CTRL_INIT` |
//!
//! The IMSIC group reads and writes a vCPU's interrupt-file registers: KVM's in-memory
//! SW-file while the vCPU has no hardware guest file, else the hardware guest file itself
//! (through `vsiselect`/`vsireg` on the CPU that holds it). Odd `eip`/`eie` numbers and
//! numbers past the file's size are `EINVAL` on a 64-bit host (AIA 1.0 §3.8.3).
//!
//! The ioctls go through the [`AttrIo`] trait, implemented for kvm-ioctls' `DeviceFd`, so
//! that everything above them is tested without a kernel.

use std::fmt;

use kvm_bindings::{kvm_create_device, kvm_device_attr};
use kvm_ioctls::{DeviceFd, VmFd};
use vmm_sys_util::errno::Error as Errno;

use crate::config::{AiaConfig, AiaMode, AiaSetup};
use crate::uapi::*;
use crate::{Error, NumIds};

/// A configuration attribute (`KVM_DEV_RISCV_AIA_GRP_CONFIG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigAttr {
    /// `CONFIG_MODE`.
    Mode,
    /// `CONFIG_IDS`.
    Ids,
    /// `CONFIG_SRCS`.
    Sources,
    /// `CONFIG_GROUP_BITS`.
    GroupBits,
    /// `CONFIG_GROUP_SHIFT`.
    GroupShift,
    /// `CONFIG_HART_BITS`.
    HartBits,
    /// `CONFIG_GUEST_BITS`.
    GuestBits,
}

impl ConfigAttr {
    /// Every configuration attribute, in the order [`AiaDevice::configure`] writes them.
    pub const ALL: [ConfigAttr; 7] = [
        ConfigAttr::Mode,
        ConfigAttr::Ids,
        ConfigAttr::Sources,
        ConfigAttr::GroupBits,
        ConfigAttr::GroupShift,
        ConfigAttr::HartBits,
        ConfigAttr::GuestBits,
    ];

    fn raw(self) -> u64 {
        match self {
            ConfigAttr::Mode => KVM_DEV_RISCV_AIA_CONFIG_MODE,
            ConfigAttr::Ids => KVM_DEV_RISCV_AIA_CONFIG_IDS,
            ConfigAttr::Sources => KVM_DEV_RISCV_AIA_CONFIG_SRCS,
            ConfigAttr::GroupBits => KVM_DEV_RISCV_AIA_CONFIG_GROUP_BITS,
            ConfigAttr::GroupShift => KVM_DEV_RISCV_AIA_CONFIG_GROUP_SHIFT,
            ConfigAttr::HartBits => KVM_DEV_RISCV_AIA_CONFIG_HART_BITS,
            ConfigAttr::GuestBits => KVM_DEV_RISCV_AIA_CONFIG_GUEST_BITS,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ConfigAttr::Mode => "CONFIG_MODE",
            ConfigAttr::Ids => "CONFIG_IDS",
            ConfigAttr::Sources => "CONFIG_SRCS",
            ConfigAttr::GroupBits => "CONFIG_GROUP_BITS",
            ConfigAttr::GroupShift => "CONFIG_GROUP_SHIFT",
            ConfigAttr::HartBits => "CONFIG_HART_BITS",
            ConfigAttr::GuestBits => "CONFIG_GUEST_BITS",
        }
    }

    /// The attribute's value in `config`.
    pub fn value_in(self, config: &AiaConfig) -> u32 {
        match self {
            ConfigAttr::Mode => config.mode.raw(),
            ConfigAttr::Ids => config.ids.get(),
            ConfigAttr::Sources => config.sources,
            ConfigAttr::GroupBits => u32::from(config.group_bits),
            ConfigAttr::GroupShift => u32::from(config.group_shift),
            ConfigAttr::HartBits => u32::from(config.hart_bits),
            ConfigAttr::GuestBits => u32::from(config.guest_bits),
        }
    }
}

/// One attribute of the AIA device, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Attr {
    /// A configuration value.
    Config(ConfigAttr),
    /// The APLIC's address.
    AplicAddr,
    /// The vIMSIC address of the vCPU with this creation index.
    ImsicAddr {
        /// Creation index of the vCPU.
        vcpu_index: u32,
    },
    /// `CTRL_INIT`.
    Init,
    /// An interrupt-file register of a vCPU's vIMSIC.
    Imsic {
        /// The vCPU's id (`KVM_CREATE_VCPU` argument).
        vcpu_id: u32,
        /// The `*iselect` number (AIA 1.0 §3.7).
        iselect: u32,
    },
}

impl Attr {
    /// The attribute group.
    pub fn group(self) -> u32 {
        match self {
            Attr::Config(_) => KVM_DEV_RISCV_AIA_GRP_CONFIG,
            Attr::AplicAddr | Attr::ImsicAddr { .. } => KVM_DEV_RISCV_AIA_GRP_ADDR,
            Attr::Init => KVM_DEV_RISCV_AIA_GRP_CTRL,
            Attr::Imsic { .. } => KVM_DEV_RISCV_AIA_GRP_IMSIC,
        }
    }

    /// The attribute number within the group. For [`Attr::Imsic`] the `iselect` must fit the
    /// 12-bit field ([`Attr::imsic`] checks it); extra bits are masked off here as the
    /// kernel would.
    pub fn attr(self) -> u64 {
        match self {
            Attr::Config(c) => c.raw(),
            Attr::AplicAddr => KVM_DEV_RISCV_AIA_ADDR_APLIC,
            Attr::ImsicAddr { vcpu_index } => kvm_dev_riscv_aia_addr_imsic(u64::from(vcpu_index)),
            Attr::Init => KVM_DEV_RISCV_AIA_CTRL_INIT,
            Attr::Imsic { vcpu_id, iselect } => {
                (u64::from(vcpu_id) << KVM_DEV_RISCV_AIA_IMSIC_ISEL_BITS)
                    | u64::from(iselect & KVM_DEV_RISCV_AIA_IMSIC_ISEL_MASK)
            }
        }
    }

    /// The IMSIC register `iselect` of vCPU `vcpu_id`, if `iselect` is an interrupt-file
    /// register number (0x70-0xFF, AIA 1.0 §3.7).
    pub fn imsic(vcpu_id: u32, iselect: u32) -> Result<Self, Error> {
        if !(0x70..=0xFF).contains(&iselect) {
            return Err(Error::Invalid {
                what: "IMSIC register",
                reason: format!("iselect {iselect:#x} is not in 0x70..=0xff (AIA 1.0 §3.7)"),
            });
        }
        Ok(Attr::Imsic { vcpu_id, iselect })
    }
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attr::Config(c) => write!(f, "{}", c.name()),
            Attr::AplicAddr => f.write_str("ADDR_APLIC"),
            Attr::ImsicAddr { vcpu_index } => write!(f, "ADDR_IMSIC of vCPU index {vcpu_index}"),
            Attr::Init => f.write_str("CTRL_INIT"),
            Attr::Imsic { vcpu_id, iselect } => {
                let name = match *iselect {
                    0x70 => "eidelivery".to_owned(),
                    0x72 => "eithreshold".to_owned(),
                    i @ 0x80..=0xBF => format!("eip{}", i - 0x80),
                    i @ 0xC0..=0xFF => format!("eie{}", i - 0xC0),
                    i => format!("iselect {i:#x}"),
                };
                write!(f, "IMSIC {name} of vCPU {vcpu_id}")
            }
        }
    }
}

/// The device-attribute ioctls, by value width. Implemented for kvm-ioctls' [`DeviceFd`];
/// tests implement it with fakes.
pub trait AttrIo {
    /// `KVM_SET_DEVICE_ATTR` with a pointer to `value`.
    fn set_u32(&self, group: u32, attr: u64, value: u32) -> Result<(), Errno>;
    /// `KVM_GET_DEVICE_ATTR` into a `u32`.
    fn get_u32(&self, group: u32, attr: u64) -> Result<u32, Errno>;
    /// `KVM_SET_DEVICE_ATTR` with a pointer to `value`.
    fn set_u64(&self, group: u32, attr: u64, value: u64) -> Result<(), Errno>;
    /// `KVM_GET_DEVICE_ATTR` into a `u64`.
    fn get_u64(&self, group: u32, attr: u64) -> Result<u64, Errno>;
    /// `KVM_SET_DEVICE_ATTR` without a value (control attributes).
    fn control(&self, group: u32, attr: u64) -> Result<(), Errno>;
    /// `KVM_HAS_DEVICE_ATTR`.
    fn has(&self, group: u32, attr: u64) -> Result<(), Errno>;
}

impl AttrIo for DeviceFd {
    fn set_u32(&self, group: u32, attr: u64, value: u32) -> Result<(), Errno> {
        let a = kvm_device_attr {
            flags: 0,
            group,
            attr,
            addr: &value as *const u32 as u64,
        };
        self.set_device_attr(&a)
    }

    fn get_u32(&self, group: u32, attr: u64) -> Result<u32, Errno> {
        let mut value = 0u32;
        let mut a = kvm_device_attr {
            flags: 0,
            group,
            attr,
            addr: &mut value as *mut u32 as u64,
        };
        // SAFETY: `addr` points to `value`, a live, writable u32, and every u32 attribute
        // of this device (config and APLIC groups) is copied out as exactly 4 bytes.
        unsafe { self.get_device_attr(&mut a) }?;
        Ok(value)
    }

    fn set_u64(&self, group: u32, attr: u64, value: u64) -> Result<(), Errno> {
        let a = kvm_device_attr {
            flags: 0,
            group,
            attr,
            addr: &value as *const u64 as u64,
        };
        self.set_device_attr(&a)
    }

    fn get_u64(&self, group: u32, attr: u64) -> Result<u64, Errno> {
        let mut value = 0u64;
        let mut a = kvm_device_attr {
            flags: 0,
            group,
            attr,
            addr: &mut value as *mut u64 as u64,
        };
        // SAFETY: `addr` points to `value`, a live, writable u64; the address group copies
        // out a u64 and the IMSIC group an `unsigned long`, which is 8 bytes on the 64-bit
        // hosts this crate builds for (checked at compile time in lib.rs).
        unsafe { self.get_device_attr(&mut a) }?;
        Ok(value)
    }

    fn control(&self, group: u32, attr: u64) -> Result<(), Errno> {
        let a = kvm_device_attr {
            flags: 0,
            group,
            attr,
            addr: 0,
        };
        self.set_device_attr(&a)
    }

    fn has(&self, group: u32, attr: u64) -> Result<(), Errno> {
        let a = kvm_device_attr {
            flags: 0,
            group,
            attr,
            addr: 0,
        };
        self.has_device_attr(&a)
    }
}

/// KVM's AIA device of one VM.
#[derive(Debug)]
pub struct AiaDevice<D: AttrIo = DeviceFd> {
    fd: D,
}

impl AiaDevice<DeviceFd> {
    /// `KVM_CREATE_DEVICE` of type `KVM_DEV_TYPE_RISCV_AIA` on `vm` (before any vCPU runs).
    pub fn create(vm: &VmFd) -> Result<Self, Error> {
        let mut dev = kvm_create_device {
            type_: KVM_DEV_TYPE_RISCV_AIA,
            fd: 0,
            flags: 0,
        };
        let fd = vm.create_device(&mut dev).map_err(Error::Create)?;
        Ok(AiaDevice { fd })
    }

    /// The VMM's whole sequence on `vm`, whose vCPUs (one per entry of
    /// [`AiaSetup::imsics`], created in that order) must exist: create the device,
    /// [`Self::configure`], [`Self::set_addresses`], [`Self::init`].
    pub fn create_and_init(vm: &VmFd, setup: &AiaSetup) -> Result<Self, Error> {
        setup.validate()?;
        let dev = Self::create(vm)?;
        dev.configure(&setup.config)?;
        dev.set_addresses(setup)?;
        dev.init()?;
        Ok(dev)
    }
}

impl<D: AttrIo> AiaDevice<D> {
    /// Wraps a device (or a fake of one).
    pub fn from_attr_io(fd: D) -> Self {
        AiaDevice { fd }
    }

    /// The underlying device.
    pub fn attr_io(&self) -> &D {
        &self.fd
    }

    fn set_u32(&self, attr: Attr, value: u32) -> Result<(), Error> {
        self.fd
            .set_u32(attr.group(), attr.attr(), value)
            .map_err(|errno| Error::SetAttr {
                attr,
                value: u64::from(value),
                errno,
            })
    }

    fn get_u32(&self, attr: Attr) -> Result<u32, Error> {
        self.fd
            .get_u32(attr.group(), attr.attr())
            .map_err(|errno| Error::GetAttr { attr, errno })
    }

    fn set_u64(&self, attr: Attr, value: u64) -> Result<(), Error> {
        self.fd
            .set_u64(attr.group(), attr.attr(), value)
            .map_err(|errno| Error::SetAttr { attr, value, errno })
    }

    fn get_u64(&self, attr: Attr) -> Result<u64, Error> {
        self.fd
            .get_u64(attr.group(), attr.attr())
            .map_err(|errno| Error::GetAttr { attr, errno })
    }

    /// Writes every configuration value (validated first), the mode first: KVM refuses
    /// `HWACCEL` and `AUTO` with `EINVAL` when the host IMSIC has no guest files.
    pub fn configure(&self, config: &AiaConfig) -> Result<(), Error> {
        config.validate()?;
        for c in ConfigAttr::ALL {
            self.set_u32(Attr::Config(c), c.value_in(config))?;
        }
        Ok(())
    }

    /// Reads the configuration back; values outside the UAPI's ranges are
    /// [`Error::KernelReply`].
    pub fn config(&self) -> Result<AiaConfig, Error> {
        let mut raw = [0u32; 7];
        for (slot, c) in raw.iter_mut().zip(ConfigAttr::ALL) {
            *slot = self.get_u32(Attr::Config(c))?;
        }
        let reply = |c: ConfigAttr, value: u32, reason| Error::KernelReply {
            attr: Attr::Config(c),
            value: u64::from(value),
            reason,
        };
        let byte = |c: ConfigAttr, value: u32| {
            u8::try_from(value).map_err(|_| reply(c, value, "wider than the UAPI allows"))
        };
        let config = AiaConfig {
            mode: AiaMode::from_raw(raw[0])
                .ok_or_else(|| reply(ConfigAttr::Mode, raw[0], "not a mode"))?,
            ids: NumIds::new(raw[1])
                .map_err(|_| reply(ConfigAttr::Ids, raw[1], "not an IMSIC size"))?,
            sources: raw[2],
            group_bits: byte(ConfigAttr::GroupBits, raw[3])?,
            group_shift: byte(ConfigAttr::GroupShift, raw[4])?,
            hart_bits: byte(ConfigAttr::HartBits, raw[5])?,
            guest_bits: byte(ConfigAttr::GuestBits, raw[6])?,
        };
        config.validate().map_err(|_| Error::KernelReply {
            attr: Attr::Config(ConfigAttr::Mode),
            value: 0,
            reason: "the configuration read back is outside the UAPI's bounds",
        })?;
        Ok(config)
    }

    /// Sets the APLIC's address.
    pub fn set_aplic_addr(&self, addr: u64) -> Result<(), Error> {
        self.set_u64(Attr::AplicAddr, addr)
    }

    /// Sets the vIMSIC page of the vCPU with creation index `vcpu_index`.
    pub fn set_imsic_addr(&self, vcpu_index: u32, addr: u64) -> Result<(), Error> {
        self.set_u64(Attr::ImsicAddr { vcpu_index }, addr)
    }

    /// The vIMSIC page of the vCPU with creation index `vcpu_index`.
    pub fn imsic_addr(&self, vcpu_index: u32) -> Result<u64, Error> {
        self.get_u64(Attr::ImsicAddr { vcpu_index })
    }

    /// The APLIC's address (`u64::MAX`, KVM's "undefined", when none was set).
    pub fn aplic_addr(&self) -> Result<u64, Error> {
        self.get_u64(Attr::AplicAddr)
    }

    /// Sets the APLIC address (when there is one) and every vCPU's vIMSIC page.
    pub fn set_addresses(&self, setup: &AiaSetup) -> Result<(), Error> {
        if let Some(aplic) = setup.aplic {
            self.set_aplic_addr(aplic)?;
        }
        for (i, &addr) in setup.imsics.iter().enumerate() {
            let index = u32::try_from(i).map_err(|_| Error::Invalid {
                what: "vIMSIC layout",
                reason: format!("vCPU index {i} does not fit the UAPI"),
            })?;
            self.set_imsic_addr(index, addr)?;
        }
        Ok(())
    }

    /// `CTRL_INIT`: KVM checks the layout, allocates each vCPU's IMSIC state, and from then
    /// on refuses configuration and address writes (`EBUSY`).
    pub fn init(&self) -> Result<(), Error> {
        let attr = Attr::Init;
        self.fd
            .control(attr.group(), attr.attr())
            .map_err(|errno| Error::SetAttr {
                attr,
                value: 0,
                errno,
            })
    }

    /// Whether KVM has the IMSIC register `iselect` of vCPU `vcpu_id`
    /// (`KVM_HAS_DEVICE_ATTR`; `EINVAL` for odd or out-of-range `eip`/`eie`, `ENOENT` for
    /// other numbers, `ENODEV` before `CTRL_INIT` or for an unknown vCPU).
    pub fn has_imsic_register(&self, vcpu_id: u32, iselect: u32) -> Result<(), Error> {
        let attr = Attr::imsic(vcpu_id, iselect)?;
        self.fd
            .has(attr.group(), attr.attr())
            .map_err(|errno| Error::HasAttr { attr, errno })
    }

    /// Reads the IMSIC register `iselect` of vCPU `vcpu_id`.
    pub fn imsic_read(&self, vcpu_id: u32, iselect: u32) -> Result<u64, Error> {
        self.get_u64(Attr::imsic(vcpu_id, iselect)?)
    }

    /// Writes the IMSIC register `iselect` of vCPU `vcpu_id` (the whole register: KVM
    /// writes every writable bit).
    pub fn imsic_write(&self, vcpu_id: u32, iselect: u32, value: u64) -> Result<(), Error> {
        self.set_u64(Attr::imsic(vcpu_id, iselect)?, value)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use super::*;

    /// Records every call; answers gets from a map; fails where told to.
    #[derive(Default)]
    pub(crate) struct Fake {
        pub calls: RefCell<Vec<String>>,
        pub values: RefCell<BTreeMap<(u32, u64), u64>>,
        pub fail: RefCell<Option<((u32, u64), i32)>>,
    }

    impl Fake {
        fn check(&self, group: u32, attr: u64) -> Result<(), Errno> {
            match *self.fail.borrow() {
                Some((key, errno)) if key == (group, attr) => Err(Errno::new(errno)),
                _ => Ok(()),
            }
        }
    }

    impl AttrIo for Fake {
        fn set_u32(&self, group: u32, attr: u64, value: u32) -> Result<(), Errno> {
            self.calls
                .borrow_mut()
                .push(format!("set32 {group}/{attr:#x}={value:#x}"));
            self.check(group, attr)?;
            self.values
                .borrow_mut()
                .insert((group, attr), u64::from(value));
            Ok(())
        }
        fn get_u32(&self, group: u32, attr: u64) -> Result<u32, Errno> {
            self.calls
                .borrow_mut()
                .push(format!("get32 {group}/{attr:#x}"));
            self.check(group, attr)?;
            Ok(self
                .values
                .borrow()
                .get(&(group, attr))
                .copied()
                .unwrap_or(0) as u32)
        }
        fn set_u64(&self, group: u32, attr: u64, value: u64) -> Result<(), Errno> {
            self.calls
                .borrow_mut()
                .push(format!("set64 {group}/{attr:#x}={value:#x}"));
            self.check(group, attr)?;
            self.values.borrow_mut().insert((group, attr), value);
            Ok(())
        }
        fn get_u64(&self, group: u32, attr: u64) -> Result<u64, Errno> {
            self.calls
                .borrow_mut()
                .push(format!("get64 {group}/{attr:#x}"));
            self.check(group, attr)?;
            Ok(self
                .values
                .borrow()
                .get(&(group, attr))
                .copied()
                .unwrap_or(0))
        }
        fn control(&self, group: u32, attr: u64) -> Result<(), Errno> {
            self.calls
                .borrow_mut()
                .push(format!("ctrl {group}/{attr:#x}"));
            self.check(group, attr)
        }
        fn has(&self, group: u32, attr: u64) -> Result<(), Errno> {
            self.calls
                .borrow_mut()
                .push(format!("has {group}/{attr:#x}"));
            self.check(group, attr)
        }
    }

    fn setup() -> AiaSetup {
        let geometry = riscv_imsic::GeometryConfig::supervisor_only(0x2800_0000, 2, 0);
        let imsic = riscv_imsic::ImsicConfig::uniform(geometry, 2, NumIds::new(255).unwrap(), 0);
        AiaSetup::from_imsic(AiaMode::HwAccel, &imsic, 0, None).unwrap()
    }

    #[test]
    fn attribute_numbers_follow_the_uapi() {
        assert_eq!(Attr::imsic(3, 0xC2).unwrap().attr(), (3 << 12) | 0xC2);
        assert_eq!(Attr::imsic(0, 0x70).unwrap().group(), 4);
        assert!(Attr::imsic(0, 0x6F).is_err());
        assert!(Attr::imsic(0, 0x100).is_err());
        assert_eq!(Attr::ImsicAddr { vcpu_index: 0 }.attr(), 1);
        assert_eq!(Attr::ImsicAddr { vcpu_index: 7 }.attr(), 8);
        assert_eq!(Attr::AplicAddr.attr(), 0);
        assert_eq!((Attr::Init.group(), Attr::Init.attr()), (2, 0));
        assert_eq!(Attr::Config(ConfigAttr::GuestBits).attr(), 6);
        // The largest vCPU id the attribute carries without losing bits.
        assert_eq!(
            Attr::imsic(u32::MAX, 0xFF).unwrap().attr(),
            (u64::from(u32::MAX) << 12) | 0xFF
        );
        assert_eq!(
            Attr::imsic(1, 0xC4).unwrap().to_string(),
            "IMSIC eie4 of vCPU 1"
        );
        assert_eq!(
            Attr::imsic(1, 0x70).unwrap().to_string(),
            "IMSIC eidelivery of vCPU 1"
        );
    }

    #[test]
    fn the_vmm_sequence() {
        let dev = AiaDevice::from_attr_io(Fake::default());
        let s = setup();
        dev.configure(&s.config).unwrap();
        dev.set_addresses(&s).unwrap();
        dev.init().unwrap();
        assert_eq!(
            *dev.attr_io().calls.borrow(),
            [
                "set32 0/0x0=0x1",
                "set32 0/0x1=0xff",
                "set32 0/0x2=0x0",
                "set32 0/0x3=0x0",
                "set32 0/0x4=0x18",
                "set32 0/0x5=0x1",
                "set32 0/0x6=0x0",
                "set64 1/0x1=0x28000000",
                "set64 1/0x2=0x28001000",
                "ctrl 2/0x0",
            ]
        );
        assert_eq!(dev.config().unwrap(), s.config);
        assert_eq!(dev.imsic_addr(1).unwrap(), 0x2800_1000);
    }

    #[test]
    fn errors_name_the_attribute_and_errno() {
        let dev = AiaDevice::from_attr_io(Fake::default());
        *dev.attr_io().fail.borrow_mut() = Some(((0, 0), libc::EINVAL));
        let err = dev.configure(&setup().config).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("KVM_SET_DEVICE_ATTR"), "{text}");
        assert!(text.contains("CONFIG_MODE"), "{text}");
        assert!(text.contains("0x1"), "{text}");
        assert!(
            matches!(&err, Error::SetAttr { errno, .. } if errno.errno() == libc::EINVAL),
            "{err:?}"
        );
        *dev.attr_io().fail.borrow_mut() = Some(((4, (1 << 12) | 0x80), libc::ENODEV));
        let err = dev.imsic_read(1, 0x80).unwrap_err();
        assert!(err.to_string().contains("IMSIC eip0 of vCPU 1"), "{err}");
        let err = dev.has_imsic_register(1, 0x80).unwrap_err();
        assert!(err.to_string().contains("KVM_HAS_DEVICE_ATTR"), "{err}");
    }

    #[test]
    fn hostile_config_replies_are_refused() {
        let dev = AiaDevice::from_attr_io(Fake::default());
        dev.configure(&setup().config).unwrap();
        for (attr, value, needle) in [
            (KVM_DEV_RISCV_AIA_CONFIG_MODE, 9, "not a mode"),
            (KVM_DEV_RISCV_AIA_CONFIG_IDS, 100, "not an IMSIC size"),
            (KVM_DEV_RISCV_AIA_CONFIG_HART_BITS, 0x1_00, "wider"),
            (KVM_DEV_RISCV_AIA_CONFIG_GUEST_BITS, 9, "bounds"),
        ] {
            let good = *dev.attr_io().values.borrow().get(&(0, attr)).unwrap();
            dev.attr_io().values.borrow_mut().insert((0, attr), value);
            let err = dev.config().unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
            dev.attr_io().values.borrow_mut().insert((0, attr), good);
        }
        dev.config().unwrap();
    }
}
