// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Snapshot and restore of the guest-visible state: the registers (queue pointers and
//! error state included). Caches (TLB, configurations, what was installed on the host)
//! are not state: after [`VSmmu::restore_state`](crate::VSmmu::restore_state) the VMM calls
//! [`VSmmu::resync_backend`](crate::VSmmu::resync_backend), which re-reads every host
//! stream's STE and installs it.
//!
//! A snapshot is untrusted input: [`VSmmuState::validate`] refuses any value a running
//! vSMMU could not hold (reserved bits set, `GBPA.Update` in flight, IRQ configuration
//! without MSIs, an identity that differs from the restoring vSMMU's).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::idr::SmmuConfig;
use crate::regs::{
    CMDQ_CONS_ERR_SHIFT, CR1_IMPLEMENTED, CR2_IMPLEMENTED, EVTQ_CONS_OVACKFLG, EVTQ_PROD_OVFLG,
    IRQ_CFG0_ADDR_MASK, IRQ_CFG2_IMPLEMENTED, Q_BASE_IMPLEMENTED, Q_PTR_MASK,
    STRTAB_BASE_CFG_IMPLEMENTED, STRTAB_BASE_IMPLEMENTED, cr0, gbpa, gerror, irq_ctrl,
};

/// Version of [`VSmmuState`].
pub const VSMMU_STATE_VERSION: u32 = 1;

/// The writable registers, as stored (acknowledge registers mirror `cr0`/`irq_ctrl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Registers {
    /// `SMMU_CR0` (= `SMMU_CR0ACK`).
    pub cr0: u32,
    /// `SMMU_CR1`.
    pub cr1: u32,
    /// `SMMU_CR2`.
    pub cr2: u32,
    /// `SMMU_GBPA`.
    pub gbpa: u32,
    /// `SMMU_IRQ_CTRL` (= `SMMU_IRQ_CTRLACK`).
    pub irq_ctrl: u32,
    /// `SMMU_GERROR`.
    pub gerror: u32,
    /// `SMMU_GERRORN`.
    pub gerrorn: u32,
    /// `SMMU_GERROR_IRQ_CFG0`.
    pub gerror_irq_cfg0: u64,
    /// `SMMU_GERROR_IRQ_CFG1`.
    pub gerror_irq_cfg1: u32,
    /// `SMMU_GERROR_IRQ_CFG2`.
    pub gerror_irq_cfg2: u32,
    /// `SMMU_STRTAB_BASE`.
    pub strtab_base: u64,
    /// `SMMU_STRTAB_BASE_CFG`.
    pub strtab_base_cfg: u32,
    /// `SMMU_CMDQ_BASE`.
    pub cmdq_base: u64,
    /// `SMMU_CMDQ_PROD`.
    pub cmdq_prod: u32,
    /// `SMMU_CMDQ_CONS` (RD and ERR).
    pub cmdq_cons: u32,
    /// `SMMU_EVENTQ_BASE`.
    pub evtq_base: u64,
    /// `SMMU_EVENTQ_PROD` (WR and OVFLG).
    pub evtq_prod: u32,
    /// `SMMU_EVENTQ_CONS` (RD and OVACKFLG).
    pub evtq_cons: u32,
    /// `SMMU_EVENTQ_IRQ_CFG0`.
    pub evtq_irq_cfg0: u64,
    /// `SMMU_EVENTQ_IRQ_CFG1`.
    pub evtq_irq_cfg1: u32,
    /// `SMMU_EVENTQ_IRQ_CFG2`.
    pub evtq_irq_cfg2: u32,
}

impl Registers {
    /// The reset state (IHI 0070 §6.3: every enable 0, GBPA as configured, queues and
    /// tables UNKNOWN, here 0).
    pub fn reset(gbpa_abort: bool) -> Self {
        Registers {
            gbpa: gbpa::RESET | if gbpa_abort { gbpa::ABORT } else { 0 },
            ..Default::default()
        }
    }
}

/// A snapshot of a [`VSmmu`](crate::VSmmu).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VSmmuState {
    /// [`VSMMU_STATE_VERSION`].
    pub version: u32,
    /// The guest's `SMMU_IDR0..5` when saved.
    pub idr: [u32; 6],
    /// `SMMU_IIDR`.
    pub iidr: u32,
    /// `SMMU_AIDR`.
    pub aidr: u32,
    /// The registers.
    pub regs: Registers,
}

/// Why a snapshot was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StateError {
    /// Unknown version.
    #[error("snapshot version {0}, expected {VSMMU_STATE_VERSION}")]
    Version(u32),
    /// The snapshot's ID registers differ from this vSMMU's (the guest probed those).
    #[error("snapshot identity (IDR/IIDR/AIDR) differs from this vSMMU's")]
    Identity,
    /// A register holds a value no running vSMMU can hold.
    #[error("register {name} = {value:#x} is not a value this vSMMU can hold")]
    Register {
        /// The register.
        name: &'static str,
        /// The value.
        value: u64,
    },
}

fn check(name: &'static str, value: u64, allowed: u64) -> Result<(), StateError> {
    if value & !allowed != 0 {
        return Err(StateError::Register { name, value });
    }
    Ok(())
}

impl VSmmuState {
    /// Checks the snapshot against the vSMMU configuration it is to be restored into.
    pub fn validate(&self, config: &SmmuConfig) -> Result<(), StateError> {
        if self.version != VSMMU_STATE_VERSION {
            return Err(StateError::Version(self.version));
        }
        if self.idr != config.idr || self.iidr != config.iidr || self.aidr != config.aidr {
            return Err(StateError::Identity);
        }
        let r = &self.regs;
        let msi_mask = |m: u64| if config.msi() { m } else { 0 };
        let cfg_mask = if config.two_level() {
            STRTAB_BASE_CFG_IMPLEMENTED
        } else {
            0x3f
        };
        check("CR0", r.cr0.into(), cr0::IMPLEMENTED.into())?;
        check("CR1", r.cr1.into(), CR1_IMPLEMENTED.into())?;
        check("CR2", r.cr2.into(), CR2_IMPLEMENTED.into())?;
        check("GBPA", r.gbpa.into(), (gbpa::ABORT | gbpa::ATTRS).into())?;
        check("IRQ_CTRL", r.irq_ctrl.into(), irq_ctrl::IMPLEMENTED.into())?;
        check("GERROR", r.gerror.into(), gerror::IMPLEMENTED.into())?;
        check("GERRORN", r.gerrorn.into(), gerror::IMPLEMENTED.into())?;
        check(
            "GERROR_IRQ_CFG0",
            r.gerror_irq_cfg0,
            msi_mask(IRQ_CFG0_ADDR_MASK),
        )?;
        check(
            "GERROR_IRQ_CFG1",
            r.gerror_irq_cfg1.into(),
            msi_mask(u32::MAX.into()),
        )?;
        check(
            "GERROR_IRQ_CFG2",
            r.gerror_irq_cfg2.into(),
            msi_mask(IRQ_CFG2_IMPLEMENTED.into()),
        )?;
        check("STRTAB_BASE", r.strtab_base, STRTAB_BASE_IMPLEMENTED)?;
        check("STRTAB_BASE_CFG", r.strtab_base_cfg.into(), cfg_mask.into())?;
        check("CMDQ_BASE", r.cmdq_base, Q_BASE_IMPLEMENTED)?;
        check("CMDQ_PROD", r.cmdq_prod.into(), Q_PTR_MASK.into())?;
        check(
            "CMDQ_CONS",
            r.cmdq_cons.into(),
            u64::from(Q_PTR_MASK) | (0x7f << CMDQ_CONS_ERR_SHIFT),
        )?;
        check("EVTQ_BASE", r.evtq_base, Q_BASE_IMPLEMENTED)?;
        check(
            "EVTQ_PROD",
            r.evtq_prod.into(),
            u64::from(Q_PTR_MASK | EVTQ_PROD_OVFLG),
        )?;
        check(
            "EVTQ_CONS",
            r.evtq_cons.into(),
            u64::from(Q_PTR_MASK | EVTQ_CONS_OVACKFLG),
        )?;
        check(
            "EVTQ_IRQ_CFG0",
            r.evtq_irq_cfg0,
            msi_mask(IRQ_CFG0_ADDR_MASK),
        )?;
        check(
            "EVTQ_IRQ_CFG1",
            r.evtq_irq_cfg1.into(),
            msi_mask(u32::MAX.into()),
        )?;
        check(
            "EVTQ_IRQ_CFG2",
            r.evtq_irq_cfg2.into(),
            msi_mask(IRQ_CFG2_IMPLEMENTED.into()),
        )?;
        Ok(())
    }
}
