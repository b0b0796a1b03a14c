// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A vCPU's IMSIC state between KVM and the [`riscv_imsic`] model.
//!
//! KVM exposes each vCPU's interrupt file register by register through the AIA device's
//! IMSIC attribute group, indexed by `*iselect` number (AIA 1.0 §3.7): `eidelivery` (0x70),
//! `eithreshold` (0x72), and, on a 64-bit host, the even `eip`/`eie` registers 0x80 + 2k and
//! 0xC0 + 2k, each holding identities 64k..64k+63 (§3.8.3, §3.8.4). That is exactly what a
//! [`riscv_imsic::FileState`] holds, word for word, so a VMM can read the in-kernel state
//! into the model ([`read_state`] then `Imsic::restore`), compare it, migrate it, and hand
//! a state back ([`write_state`]).
//!
//! Values read from KVM are not trusted: a register wider than the file's `eidelivery`
//! field or a pending/enable bit past the file's last identity is refused by the model's
//! `restore` (it validates the whole state before changing anything).

use riscv_imsic::iselect::{ISELECT_EIDELIVERY, ISELECT_EIE0, ISELECT_EIP0, ISELECT_EITHRESHOLD};
use riscv_imsic::{FileKind, FileState, HartState, ImsicConfig, ImsicState, NumIds};

use crate::Error;
use crate::device::{AiaDevice, Attr, AttrIo};

fn iselect(v: u64) -> u32 {
    // The riscv-imsic constants are 0x70..=0xFF.
    v as u32
}

/// The `iselect` numbers KVM holds for a file of `ids` identities on a 64-bit host, in the
/// order [`read_file`] reads them.
pub fn file_registers(ids: NumIds) -> Vec<u32> {
    let words = ids.words() as u64;
    let mut v = vec![iselect(ISELECT_EIDELIVERY), iselect(ISELECT_EITHRESHOLD)];
    v.extend((0..words).map(|k| iselect(ISELECT_EIP0 + 2 * k)));
    v.extend((0..words).map(|k| iselect(ISELECT_EIE0 + 2 * k)));
    v
}

fn reg32<D: AttrIo>(dev: &AiaDevice<D>, vcpu_id: u32, isel: u64) -> Result<u32, Error> {
    let value = dev.imsic_read(vcpu_id, iselect(isel))?;
    u32::try_from(value).map_err(|_| Error::KernelReply {
        attr: Attr::Imsic {
            vcpu_id,
            iselect: iselect(isel),
        },
        value,
        reason: "wider than the 32-bit register (AIA 1.0 §3.8)",
    })
}

/// Reads the interrupt file of vCPU `vcpu_id`, a file of `ids` identities, from KVM: 2 +
/// 2 x (N + 1) / 64 attribute reads.
pub fn read_file<D: AttrIo>(
    dev: &AiaDevice<D>,
    vcpu_id: u32,
    ids: NumIds,
) -> Result<FileState, Error> {
    let words = ids.words() as u64;
    let eidelivery = reg32(dev, vcpu_id, ISELECT_EIDELIVERY)?;
    let eithreshold = reg32(dev, vcpu_id, ISELECT_EITHRESHOLD)?;
    let eip = (0..words)
        .map(|k| dev.imsic_read(vcpu_id, iselect(ISELECT_EIP0 + 2 * k)))
        .collect::<Result<Vec<_>, _>>()?;
    let eie = (0..words)
        .map(|k| dev.imsic_read(vcpu_id, iselect(ISELECT_EIE0 + 2 * k)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(FileState {
        eidelivery,
        eithreshold,
        eip,
        eie,
    })
}

/// Writes `state` into the interrupt file of vCPU `vcpu_id` (a file of `ids` identities),
/// the way a restore must: delivery off first, then the threshold, the enables and the
/// pending bits, and `eidelivery` last, so that no interrupt is signalled from a
/// half-written file.
pub fn write_file<D: AttrIo>(
    dev: &AiaDevice<D>,
    vcpu_id: u32,
    ids: NumIds,
    state: &FileState,
) -> Result<(), Error> {
    let words = ids.words();
    if state.eip.len() != words || state.eie.len() != words {
        return Err(Error::Invalid {
            what: "IMSIC state",
            reason: format!(
                "vCPU {vcpu_id}: {} eip and {} eie words for a file of {} identities ({words} words)",
                state.eip.len(),
                state.eie.len(),
                ids.get()
            ),
        });
    }
    dev.imsic_write(vcpu_id, iselect(ISELECT_EIDELIVERY), 0)?;
    dev.imsic_write(
        vcpu_id,
        iselect(ISELECT_EITHRESHOLD),
        u64::from(state.eithreshold),
    )?;
    for (k, word) in state.eie.iter().enumerate() {
        dev.imsic_write(vcpu_id, iselect(ISELECT_EIE0 + 2 * k as u64), *word)?;
    }
    for (k, word) in state.eip.iter().enumerate() {
        dev.imsic_write(vcpu_id, iselect(ISELECT_EIP0 + 2 * k as u64), *word)?;
    }
    dev.imsic_write(
        vcpu_id,
        iselect(ISELECT_EIDELIVERY),
        u64::from(state.eidelivery),
    )
}

/// Checks that `config` is a vIMSIC KVM can hold (supervisor files only, see
/// [`crate::AiaSetup::from_imsic`]) for `vcpu_ids` (one id per hart, in hart order).
fn check_shape(config: &ImsicConfig, vcpu_ids: &[u32]) -> Result<(), Error> {
    if config.harts.len() != vcpu_ids.len() {
        return Err(Error::Invalid {
            what: "IMSIC state",
            reason: format!(
                "{} harts but {} vCPU ids",
                config.harts.len(),
                vcpu_ids.len()
            ),
        });
    }
    if let Some(i) = config
        .harts
        .iter()
        .position(|h| h.machine_ids.is_some() || h.geilen != 0)
    {
        return Err(Error::Invalid {
            what: "IMSIC state",
            reason: format!(
                "hart {i} has a machine-level file or guest files; KVM's vIMSIC has neither"
            ),
        });
    }
    Ok(())
}

/// Reads every vCPU's interrupt file from KVM into an [`ImsicState`] of `config`: hart `i`
/// of the configuration is vCPU `vcpu_ids[i]`. Load it with `Imsic::restore` (which checks
/// every value KVM returned).
pub fn read_state<D: AttrIo>(
    dev: &AiaDevice<D>,
    config: &ImsicConfig,
    vcpu_ids: &[u32],
) -> Result<ImsicState, Error> {
    check_shape(config, vcpu_ids)?;
    let harts = config
        .harts
        .iter()
        .zip(vcpu_ids)
        .map(|(h, &id)| {
            Ok(HartState {
                machine: None,
                supervisor: read_file(dev, id, h.supervisor_ids)?,
                guests: Vec::new(),
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(ImsicState {
        config: config.clone(),
        harts,
    })
}

/// Reads KVM's state and loads it into `model` (whose configuration must be the vIMSIC's),
/// which reports the differences to its sink like any restore.
pub fn load_into<S: riscv_imsic::ExternalInterruptSink, D: AttrIo>(
    dev: &AiaDevice<D>,
    model: &mut riscv_imsic::Imsic<S>,
    vcpu_ids: &[u32],
) -> Result<(), Error> {
    let state = read_state(dev, &model.config(), vcpu_ids)?;
    model.restore(&state).map_err(Error::Model)
}

/// Writes `state` (every hart's supervisor-level file) into KVM: hart `i` is vCPU
/// `vcpu_ids[i]`. The state is checked first (shape and every file's values, the way
/// `Imsic::restore` checks them), so nothing is written for a state that is wrong anywhere.
pub fn write_state<D: AttrIo>(
    dev: &AiaDevice<D>,
    state: &ImsicState,
    vcpu_ids: &[u32],
) -> Result<(), Error> {
    check_shape(&state.config, vcpu_ids)?;
    // Validate through the model: a scratch IMSIC of the same shape takes the state or
    // says why not.
    let mut scratch =
        riscv_imsic::Imsic::new(state.config.clone(), NoSink).map_err(|e| Error::Invalid {
            what: "IMSIC state",
            reason: format!("its configuration: {e}"),
        })?;
    scratch.restore(state).map_err(Error::Model)?;
    for ((h, hs), &id) in state.config.harts.iter().zip(&state.harts).zip(vcpu_ids) {
        write_file(dev, id, h.supervisor_ids, &hs.supervisor)?;
    }
    Ok(())
}

/// The model's supervisor-level file of hart `hart`, the file KVM holds for its vCPU.
pub fn supervisor(hart: usize) -> riscv_imsic::FileTarget {
    riscv_imsic::FileTarget::new(hart, FileKind::Supervisor)
}

struct NoSink;

impl riscv_imsic::ExternalInterruptSink for NoSink {
    fn raise(&mut self, _: riscv_imsic::FileTarget) {}
    fn lower(&mut self, _: riscv_imsic::FileTarget) {}
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use riscv_imsic::{GeometryConfig, Imsic, Xlen};
    use vmm_sys_util::errno::Error as Errno;

    use super::*;

    /// A vIMSIC register file keyed by (vCPU id, iselect), refusing what KVM refuses on a
    /// 64-bit host (`imsic_mrif_isel_check`): odd and out-of-range eip/eie, other numbers.
    struct Regs {
        words: u64,
        regs: RefCell<BTreeMap<(u64, u64), u64>>,
        writes: RefCell<Vec<(u64, u64, u64)>>,
    }

    impl Regs {
        fn new(ids: u32) -> Self {
            Regs {
                words: u64::from(ids + 1) / 64,
                regs: RefCell::default(),
                writes: RefCell::default(),
            }
        }
        fn key(&self, group: u32, attr: u64) -> Result<(u64, u64), Errno> {
            assert_eq!(group, 4, "only the IMSIC group is used here");
            let (vcpu, isel) = (attr >> 12, attr & 0xfff);
            let num = match isel {
                0x70 | 0x72 => 0,
                0x80..=0xBF => isel - 0x80,
                0xC0..=0xFF => isel - 0xC0,
                _ => return Err(Errno::new(libc::ENOENT)),
            };
            if num % 2 == 1 || num / 2 >= self.words {
                return Err(Errno::new(libc::EINVAL));
            }
            Ok((vcpu, isel))
        }
    }

    impl AttrIo for Regs {
        fn set_u32(&self, _: u32, _: u64, _: u32) -> Result<(), Errno> {
            unreachable!()
        }
        fn get_u32(&self, _: u32, _: u64) -> Result<u32, Errno> {
            unreachable!()
        }
        fn set_u64(&self, group: u32, attr: u64, value: u64) -> Result<(), Errno> {
            let key = self.key(group, attr)?;
            self.writes.borrow_mut().push((key.0, key.1, value));
            self.regs.borrow_mut().insert(key, value);
            Ok(())
        }
        fn get_u64(&self, group: u32, attr: u64) -> Result<u64, Errno> {
            let key = self.key(group, attr)?;
            Ok(self.regs.borrow().get(&key).copied().unwrap_or(0))
        }
        fn control(&self, _: u32, _: u64) -> Result<(), Errno> {
            unreachable!()
        }
        fn has(&self, group: u32, attr: u64) -> Result<(), Errno> {
            self.key(group, attr).map(|_| ())
        }
    }

    struct Lines;
    impl riscv_imsic::ExternalInterruptSink for Lines {
        fn raise(&mut self, _: riscv_imsic::FileTarget) {}
        fn lower(&mut self, _: riscv_imsic::FileTarget) {}
    }

    fn model() -> Imsic<Lines> {
        let geometry = GeometryConfig::supervisor_only(0x2800_0000, 2, 0);
        let cfg = ImsicConfig::uniform(geometry, 2, NumIds::new(127).unwrap(), 0);
        Imsic::new(cfg, Lines).unwrap()
    }

    #[test]
    fn registers_are_the_even_eix_of_a_64_bit_host() {
        assert_eq!(
            file_registers(NumIds::new(127).unwrap()),
            [0x70, 0x72, 0x80, 0x82, 0xC0, 0xC2]
        );
        assert_eq!(file_registers(NumIds::new(2047).unwrap()).len(), 2 + 64);
    }

    #[test]
    fn model_state_round_trips_through_kvm_registers() {
        let dev = AiaDevice::from_attr_io(Regs::new(127));
        let mut a = model();
        let s1 = supervisor(1);
        a.write_indirect(s1, 0x70, 1, Xlen::Rv64).unwrap();
        a.write_indirect(s1, 0x72, 100, Xlen::Rv64).unwrap();
        a.rmw_indirect(s1, 0xC2, !0, (1 << 3) | (1 << 63), Xlen::Rv64)
            .unwrap();
        a.set_pending(s1, 67).unwrap();
        a.set_pending(s1, 5).unwrap();
        write_state(&dev, &a.save(), &[0, 1]).unwrap();
        // vCPU 1's eip1 (identities 64..127) holds 67 at bit 3; eie1 bits 3 and 63.
        let regs = dev.attr_io().regs.borrow().clone();
        assert_eq!(regs.get(&(1, 0x82)), Some(&(1 << 3)));
        assert_eq!(regs.get(&(1, 0xC2)), Some(&((1 << 3) | (1 << 63))));
        assert_eq!(regs.get(&(1, 0x80)), Some(&(1 << 5)));
        assert_eq!(regs.get(&(1, 0x72)), Some(&100));
        // Delivery off first, on last.
        let writes = dev.attr_io().writes.borrow().clone();
        let v1: Vec<_> = writes.iter().filter(|w| w.0 == 1).collect();
        assert_eq!((v1[0].1, v1[0].2), (0x70, 0));
        assert_eq!((v1.last().unwrap().1, v1.last().unwrap().2), (0x70, 1));

        let mut b = model();
        load_into(&dev, &mut b, &[0, 1]).unwrap();
        assert_eq!(b.save(), a.save());
        assert_eq!(b.topei(s1), a.topei(s1));
        assert_eq!(b.topei(s1).unwrap() >> 16, 67);
    }

    #[test]
    fn hostile_kernel_values_are_refused() {
        let dev = AiaDevice::from_attr_io(Regs::new(127));
        // A pending bit of identity 0 (read-only zero, AIA 1.0 §3.8.3).
        dev.attr_io().regs.borrow_mut().insert((0, 0x80), 1);
        let mut m = model();
        let before = m.save();
        let err = load_into(&dev, &mut m, &[0, 1]).unwrap_err();
        assert!(matches!(err, Error::Model(_)), "{err}");
        assert_eq!(m.save(), before, "nothing changed");
        dev.attr_io().regs.borrow_mut().insert((0, 0x80), 0);
        // An eidelivery wider than 32 bits.
        dev.attr_io().regs.borrow_mut().insert((1, 0x70), 1 << 40);
        let err = load_into(&dev, &mut m, &[0, 1]).unwrap_err();
        assert!(
            err.to_string().contains("IMSIC eidelivery of vCPU 1"),
            "{err}"
        );
        assert!(err.to_string().contains("wider"), "{err}");
        // eidelivery 0x40000000 (APLIC delivery) is not for a guest's file.
        dev.attr_io()
            .regs
            .borrow_mut()
            .insert((1, 0x70), 0x4000_0000);
        assert!(matches!(
            load_into(&dev, &mut m, &[0, 1]),
            Err(Error::Model(_))
        ));
        assert_eq!(m.save(), before);
    }

    #[test]
    fn wrong_shapes_write_nothing() {
        let dev = AiaDevice::from_attr_io(Regs::new(127));
        let good = model().save();
        let mut short = good.clone();
        short.harts[1].supervisor.eip.pop();
        assert!(write_state(&dev, &short, &[0, 1]).is_err());
        let mut beyond = good.clone();
        beyond.harts[0].supervisor.eie[0] = 1; // identity 0
        assert!(write_state(&dev, &beyond, &[0, 1]).is_err());
        assert!(write_state(&dev, &good, &[0]).is_err());
        let mut machine = good.clone();
        machine.config.harts[0].geilen = 1;
        assert!(write_state(&dev, &machine, &[0, 1]).is_err());
        assert!(dev.attr_io().writes.borrow().is_empty());
        // And a file state of the wrong size, directly.
        let err = write_file(
            &dev,
            0,
            NumIds::new(255).unwrap(),
            &good.harts[0].supervisor,
        )
        .unwrap_err();
        assert!(err.to_string().contains("255 identities"), "{err}");
    }
}
