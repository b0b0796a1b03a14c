// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Snapshot and restore (serde).
//!
//! The state holds the registers and what the ITS keeps on chip (HCC collections). The
//! Device table, ITTs, Collection table and command queue live in guest memory and migrate
//! with it. The translation cache is not saved: it is rebuilt on demand. Commands are
//! processed synchronously, so a saved ITS has no command in flight; a stalled queue stays
//! stalled after restore.
//!
//! A state may come from an untrusted source: [`Its::restore_state`] checks every field and
//! rejects what this ITS could never have produced. Test: `snapshot_round_trip` and
//! `restore_rejects_garbage`.

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, ItsConfig};
use crate::its::{BASER_COUNT, Its};
use crate::regs::{GITS_CBASER_RW_MASK, GITS_CQUEUE_OFFSET_MASK, cbaser_queue_bytes};
use crate::tables::baser::baser_write;

/// Version of [`ItsState`] written by this crate.
pub const ITS_STATE_VERSION: u32 = 1;

/// Serializable ITS state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItsState {
    /// [`ITS_STATE_VERSION`] when written.
    pub version: u32,
    /// Configuration of the saved ITS; a restore target must have the same.
    pub config: ItsConfig,
    /// `GITS_CTLR.Enabled`.
    pub enabled: bool,
    /// `GITS_CBASER`.
    pub cbaser: u64,
    /// `GITS_CWRITER.Offset` in bytes.
    pub cwriter: u64,
    /// `GITS_CREADR.Offset` in bytes.
    pub creadr: u64,
    /// `GITS_CREADR.Stalled`.
    pub stalled: bool,
    /// `GITS_BASER0..7`.
    pub baser: Vec<u64>,
    /// On-chip collections `0..HCC`: target processor number when mapped.
    pub collections: Vec<Option<u32>>,
}

/// Why a state could not be restored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Unknown state version.
    #[error("ITS restore: state version {0} is not supported (expected {ITS_STATE_VERSION})")]
    Version(u32),
    /// The state's configuration is invalid.
    #[error("ITS restore: invalid configuration in state: {0}")]
    Config(#[from] ConfigError),
    /// The state was saved from an ITS configured differently.
    #[error("ITS restore: state configuration differs from this ITS's configuration")]
    ConfigMismatch,
    /// `GITS_CBASER` has bits set that this ITS never stores.
    #[error("ITS restore: GITS_CBASER value {0:#x} has reserved bits set")]
    Cbaser(u64),
    /// A queue offset is misaligned or beyond the queue.
    #[error("ITS restore: {register} offset {value:#x} is not a command slot of the queue")]
    QueueOffset {
        /// `"GITS_CREADR"` or `"GITS_CWRITER"`.
        register: &'static str,
        /// Offset.
        value: u64,
    },
    /// A `GITS_BASER<n>` value this ITS could not hold.
    #[error("ITS restore: GITS_BASER{index} value {value:#x} is not valid for this ITS")]
    Baser {
        /// n.
        index: usize,
        /// Value.
        value: u64,
    },
    /// Wrong number of on-chip collections.
    #[error("ITS restore: {found} on-chip collections, expected {expected}")]
    CollectionCount {
        /// In the state.
        found: usize,
        /// HCC of this ITS.
        expected: usize,
    },
    /// An on-chip collection targets a vCPU that does not exist.
    #[error("ITS restore: collection {icid} targets vCPU {vcpu}, beyond {vcpus} vCPUs")]
    CollectionTarget {
        /// ICID.
        icid: usize,
        /// Target.
        vcpu: u32,
        /// vCPU count.
        vcpus: u32,
    },
}

impl Its {
    /// Capture the state for a snapshot.
    pub fn save_state(&self) -> ItsState {
        ItsState {
            version: ITS_STATE_VERSION,
            config: self.config.clone(),
            enabled: self.enabled,
            cbaser: self.cbaser,
            cwriter: self.cwriter,
            creadr: self.creadr,
            stalled: self.stalled,
            baser: self.baser.to_vec(),
            collections: self.collections.clone(),
        }
    }

    /// Build an ITS from a snapshot, with the snapshot's configuration.
    pub fn from_state(state: &ItsState) -> Result<Its, StateError> {
        state.config.validate()?;
        let mut its = Its::new(state.config.clone());
        its.restore_state(state)?;
        Ok(its)
    }

    /// Load a snapshot into this ITS. On error nothing changes.
    pub fn restore_state(&mut self, state: &ItsState) -> Result<(), StateError> {
        if state.version != ITS_STATE_VERSION {
            return Err(StateError::Version(state.version));
        }
        if state.config != self.config {
            return Err(StateError::ConfigMismatch);
        }
        if state.cbaser & !GITS_CBASER_RW_MASK != 0 {
            return Err(StateError::Cbaser(state.cbaser));
        }
        let queue = cbaser_queue_bytes(state.cbaser);
        for (register, value) in [
            ("GITS_CREADR", state.creadr),
            ("GITS_CWRITER", state.cwriter),
        ] {
            if value & !GITS_CQUEUE_OFFSET_MASK != 0 || value >= queue {
                return Err(StateError::QueueOffset { register, value });
            }
        }
        let fresh = Its::new(self.config.clone());
        let mut baser = [0u64; BASER_COUNT];
        if state.baser.len() != BASER_COUNT {
            return Err(StateError::Baser {
                index: state.baser.len(),
                value: 0,
            });
        }
        for (index, (&value, &reset)) in state.baser.iter().zip(fresh.baser.iter()).enumerate() {
            let ok = if reset == 0 {
                value == 0
            } else {
                baser_write(reset, value) == value
            };
            if !ok {
                return Err(StateError::Baser { index, value });
            }
            baser[index] = value;
        }
        if state.collections.len() != fresh.collections.len() {
            return Err(StateError::CollectionCount {
                found: state.collections.len(),
                expected: fresh.collections.len(),
            });
        }
        for (icid, target) in state.collections.iter().enumerate() {
            if let Some(vcpu) = *target
                && vcpu >= self.config.vcpus
            {
                return Err(StateError::CollectionTarget {
                    icid,
                    vcpu,
                    vcpus: self.config.vcpus,
                });
            }
        }
        self.enabled = state.enabled;
        self.cbaser = state.cbaser;
        self.cwriter = state.cwriter;
        self.creadr = state.creadr;
        self.stalled = state.stalled;
        self.baser = baser;
        self.collections = state.collections.clone();
        self.flush_caches();
        self.last_error = None;
        Ok(())
    }
}
