// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The host side: a trait the VMM implements over the kernel's iommufd nesting API, and
//! a recording fake.
//!
//! Mapping onto iommufd (Linux 7.2), one call each:
//!
//! | trait method | iommufd |
//! |---|---|
//! | [`SmmuBackend::install_ste`] | `IOMMU_HWPT_ALLOC` of a nested HWPT on the vIOMMU with `IOMMU_HWPT_DATA_ARM_SMMUV3` and the [`VSte`] words (`struct iommu_hwpt_arm_smmuv3 { __le64 ste[2]; }`), then attach/replace of the device (vDEVICE with virt_id = the vSID) to it; the previous nested HWPT is freed |
//! | [`SmmuBackend::invalidate`] | one `IOMMU_HWPT_INVALIDATE` on the vIOMMU with `IOMMU_VIOMMU_INVALIDATE_DATA_ARM_SMMUV3` and the commands as the array (16 bytes each); on failure the kernel writes back `entry_num` = the number it handled, which is `InvalidateError::consumed` |
//! | events | the VMM reads the vEVENTQ fd (`IOMMU_VEVENTQ_ALLOC`, type ARM_SMMUV3) and passes each `struct iommu_vevent_arm_smmuv3` (32 bytes, vSID in place) to [`VSmmu::inject_host_event`](crate::VSmmu::inject_host_event); a record with `IOMMU_VEVENTQ_FLAG_LOST_EVENTS` becomes [`VSmmu::inject_host_overflow`](crate::VSmmu::inject_host_overflow) |
//!
//! The model only calls the backend for streams the VMM declared as host streams
//! ([`VSmmu::add_host_stream`](crate::VSmmu::add_host_stream)), so a `CFGI_CD` for a vSID
//! without a vDEVICE (which the kernel refuses with `EIO`) is never forwarded.

use crate::cmd::RawCommand;
use crate::ste::{STE0_CONFIG, STE0_S1CDMAX, STE0_S1CONTEXTPTR, STE0_S1FMT, STE0_V};
use crate::ste::{STE1_EATS, STE1_S1_WALK_ATTRS, STE1_S1DSS, STE1_S1STALLD};

/// The two STE words the kernel takes for a nested HWPT (`struct
/// iommu_hwpt_arm_smmuv3`), little-endian in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VSte(pub [u64; 2]);

impl VSte {
    /// Word 0 bits Linux lets userspace set (`STRTAB_STE_0_NESTING_ALLOWED`: V, CFG,
    /// S1FMT, S1CTXPTR, S1CDMAX).
    pub const WORD0_ALLOWED: u64 =
        STE0_V | STE0_CONFIG | STE0_S1FMT | STE0_S1CONTEXTPTR | STE0_S1CDMAX;
    /// Word 1 bits Linux lets userspace set (`STRTAB_STE_1_NESTING_ALLOWED`: S1DSS,
    /// S1CIR, S1COR, S1CSH, S1STALLD, EATS).
    pub const WORD1_ALLOWED: u64 = STE1_S1DSS | STE1_S1_WALK_ATTRS | STE1_S1STALLD | STE1_EATS;

    /// An abort vSTE (V = 1, Config = 0b000).
    pub const ABORT: VSte = VSte([STE0_V, 0]);
    /// A bypass vSTE (V = 1, Config = 0b100).
    pub const BYPASS: VSte = VSte([STE0_V | (0b100 << 1), 0]);

    /// Whether only allowed bits are set (what `arm_smmu_validate_vste` checks before
    /// anything else; violating it is `EIO`).
    pub fn is_allowed(&self) -> bool {
        self.0[0] & !Self::WORD0_ALLOWED == 0 && self.0[1] & !Self::WORD1_ALLOWED == 0
    }

    /// The 16 bytes of `struct iommu_hwpt_arm_smmuv3`.
    pub fn to_bytes(&self) -> [u8; 16] {
        RawCommand(self.0).to_bytes()
    }
}

/// What a host stream is to do, as the guest configured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GuestSte {
    /// Abort every transaction (STE abort, an ILLEGAL or unreachable STE, or the SMMU
    /// disabled with `GBPA.ABORT`).
    Abort,
    /// Bypass: stage 2 only (STE bypass, or the SMMU disabled without `GBPA.ABORT`).
    Bypass,
    /// The guest's stage 1 over the host's stage 2.
    Stage1(VSte),
}

impl GuestSte {
    /// The vSTE to allocate the nested HWPT with, for each case.
    pub fn vste(&self) -> VSte {
        match self {
            GuestSte::Abort => VSte::ABORT,
            GuestSte::Bypass => VSte::BYPASS,
            GuestSte::Stage1(v) => *v,
        }
    }
}

/// A failed backend call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BackendError {
    /// The errno the kernel returned, if any.
    pub errno: Option<i32>,
    /// What failed.
    pub message: String,
}

/// A batch invalidation that stopped early.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalidation failed after {consumed} commands: {error}")]
pub struct InvalidateError {
    /// Commands the host handled before the failing one (`entry_num` written back by
    /// `IOMMU_HWPT_INVALIDATE`).
    pub consumed: usize,
    /// Why.
    pub error: BackendError,
}

/// The host kernel, as the VMM plugs it in. The model never calls the kernel itself.
pub trait SmmuBackend {
    /// Make `stream_id` (a vSID with a vDEVICE) use `ste`.
    fn install_ste(&mut self, stream_id: u32, ste: &GuestSte) -> Result<(), BackendError>;

    /// Forward invalidation commands, in order, as one batch. Only `TLBI_NH_ALL/ASID/VA/
    /// VAA`, `TLBI_NSNH_ALL`, `CFGI_CD` and `CFGI_CD_ALL` are ever passed, rebuilt from
    /// their decoded fields, StreamIDs being vSIDs. Returns when the host has completed
    /// them (the guest's `CMD_SYNC` completes only after this returned).
    fn invalidate(&mut self, commands: &[RawCommand]) -> Result<(), InvalidateError>;
}

impl<B: SmmuBackend + ?Sized> SmmuBackend for &mut B {
    fn install_ste(&mut self, stream_id: u32, ste: &GuestSte) -> Result<(), BackendError> {
        (**self).install_ste(stream_id, ste)
    }
    fn invalidate(&mut self, commands: &[RawCommand]) -> Result<(), InvalidateError> {
        (**self).invalidate(commands)
    }
}

/// One call the [`RecordingBackend`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendCall {
    /// `install_ste(stream_id, ste)`.
    Install {
        /// The vSID.
        stream_id: u32,
        /// The configuration.
        ste: GuestSte,
    },
    /// `invalidate(commands)`.
    Invalidate(Vec<RawCommand>),
}

/// A backend that records every call and can be told to fail, for tests (this crate's
/// and the VMM's).
#[derive(Debug, Clone, Default)]
pub struct RecordingBackend {
    /// Every call, in order (failed ones included).
    pub calls: Vec<BackendCall>,
    /// Fail `install_ste` for these streams.
    pub fail_install: Vec<u32>,
    /// Fail `invalidate` after this many commands of the next batch (then clear).
    pub fail_invalidate_after: Option<usize>,
}

impl RecordingBackend {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the recorded calls.
    pub fn take(&mut self) -> Vec<BackendCall> {
        std::mem::take(&mut self.calls)
    }

    /// Every command forwarded so far, flattened.
    pub fn forwarded(&self) -> Vec<RawCommand> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                BackendCall::Invalidate(v) => Some(v.clone()),
                BackendCall::Install { .. } => None,
            })
            .flatten()
            .collect()
    }

    /// Every install so far.
    pub fn installs(&self) -> Vec<(u32, GuestSte)> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                BackendCall::Install { stream_id, ste } => Some((*stream_id, *ste)),
                BackendCall::Invalidate(_) => None,
            })
            .collect()
    }
}

impl SmmuBackend for RecordingBackend {
    fn install_ste(&mut self, stream_id: u32, ste: &GuestSte) -> Result<(), BackendError> {
        self.calls.push(BackendCall::Install {
            stream_id,
            ste: *ste,
        });
        if self.fail_install.contains(&stream_id) {
            return Err(BackendError {
                errno: Some(5),
                message: format!("injected install failure for stream {stream_id}"),
            });
        }
        Ok(())
    }

    fn invalidate(&mut self, commands: &[RawCommand]) -> Result<(), InvalidateError> {
        self.calls.push(BackendCall::Invalidate(commands.to_vec()));
        match self.fail_invalidate_after.take() {
            Some(n) if n < commands.len() => Err(InvalidateError {
                consumed: n,
                error: BackendError {
                    errno: Some(5),
                    message: "injected invalidation failure".into(),
                },
            }),
            other => {
                self.fail_invalidate_after = other;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_masks_match_linux() {
        // STRTAB_STE_0_NESTING_ALLOWED = V | CFG[3:1] | S1FMT[5:4] | S1CTXPTR[51:6] |
        // S1CDMAX[63:59]
        assert_eq!(VSte::WORD0_ALLOWED, 0xf80f_ffff_ffff_ffff);
        // STRTAB_STE_1_NESTING_ALLOWED = S1DSS[1:0] | S1CIR | S1COR | S1CSH [7:2] |
        // S1STALLD[27] | EATS[29:28]
        assert_eq!(VSte::WORD1_ALLOWED, 0x3800_00ff);
        assert!(VSte::ABORT.is_allowed() && VSte::BYPASS.is_allowed());
        assert!(!VSte([1 << 52, 0]).is_allowed());
        assert!(!VSte([1, 1 << 8]).is_allowed());
        assert_eq!(GuestSte::Bypass.vste().to_bytes()[0], 0b1001);
    }

    #[test]
    fn recorder_fails_on_request() {
        let mut b = RecordingBackend::new();
        b.fail_install.push(3);
        assert!(b.install_ste(1, &GuestSte::Abort).is_ok());
        assert!(b.install_ste(3, &GuestSte::Abort).is_err());
        b.fail_invalidate_after = Some(1);
        let cmds = [RawCommand::tlbi_nh_all(), RawCommand::tlbi_nsnh_all()];
        assert_eq!(b.invalidate(&cmds).unwrap_err().consumed, 1);
        assert!(b.invalidate(&cmds).is_ok());
        assert_eq!(b.forwarded().len(), 4);
        assert_eq!(b.installs().len(), 2);
    }
}
