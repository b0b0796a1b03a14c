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
//! rejects what this ITS could never have produced. The check is one function
//! ([`ItsState::validate`], shared with [`Its::check_state`]), and the register paths keep
//! every state they reach inside it: a debug assertion checks it after each MMIO write, and
//! the property test `state_round_trips_whatever_the_guest_does` drives random register and
//! command sequences and asserts that save -> restore -> save is the identity and that
//! restore never rejects a saved state (issue 15, finding 1: a `GITS_CWRITER` beyond a queue
//! later shrunk through `GITS_CBASER` used to be saved and then refused).
//! Tests: `snapshot_round_trip`, `restore_rejects_garbage`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, ItsConfig};
use crate::its::{BASER_COUNT, Its};
use crate::regs::{GITS_CQUEUE_OFFSET_MASK, baser_after_write, cbaser_queue_bytes, cbaser_rw_mask};

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
    /// Collections the ITS holds itself (KVM's table format,
    /// [`ItsConfig::collections_held`]): ICID -> target processor number.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub held_collections: BTreeMap<u16, u32>,
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
    /// A held collection in a state whose format has an indexed Collection table, or an
    /// ICID beyond the collection ID space.
    #[error("ITS restore: held collection {icid} is not valid for this ITS")]
    HeldCollection {
        /// ICID.
        icid: u16,
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

impl ItsState {
    /// Whether this is a state an ITS with `self.config` can be in: the one definition used
    /// by [`Its::restore_state`] and [`Its::check_state`]. Does not check the version or
    /// the configuration itself (see [`Its::from_state`]).
    pub fn validate(&self) -> Result<(), StateError> {
        validate_parts(
            &self.config,
            self.cbaser,
            self.creadr,
            self.cwriter,
            &self.baser,
            &self.collections,
            &self.held_collections,
        )
    }
}

/// The checks of [`ItsState::validate`] on borrowed parts (no allocation, so that
/// [`Its::check_state`] can run after every MMIO write in debug builds).
fn validate_parts(
    config: &ItsConfig,
    cbaser: u64,
    creadr: u64,
    cwriter: u64,
    baser: &[u64],
    collections: &[Option<u32>],
    held: &BTreeMap<u16, u32>,
) -> Result<(), StateError> {
    if cbaser & !cbaser_rw_mask(config) != 0 {
        return Err(StateError::Cbaser(cbaser));
    }
    let queue = cbaser_queue_bytes(cbaser);
    for (register, value) in [("GITS_CREADR", creadr), ("GITS_CWRITER", cwriter)] {
        if value & !GITS_CQUEUE_OFFSET_MASK != 0 || value >= queue {
            return Err(StateError::QueueOffset { register, value });
        }
    }
    if baser.len() != BASER_COUNT {
        return Err(StateError::Baser {
            index: baser.len(),
            value: 0,
        });
    }
    let resets = crate::its::reset_basers(config);
    for (index, (&value, &reset)) in baser.iter().zip(resets.iter()).enumerate() {
        let ok = if reset == 0 {
            value == 0
        } else {
            baser_after_write(config, index, reset, value) == value
        };
        if !ok {
            return Err(StateError::Baser { index, value });
        }
    }
    let on_chip = config.on_chip_collections() as usize;
    if collections.len() != on_chip {
        return Err(StateError::CollectionCount {
            found: collections.len(),
            expected: on_chip,
        });
    }
    for (icid, target) in collections.iter().enumerate() {
        if let Some(vcpu) = *target
            && vcpu >= config.vcpus
        {
            return Err(StateError::CollectionTarget {
                icid,
                vcpu,
                vcpus: config.vcpus,
            });
        }
    }
    for (&icid, &vcpu) in held {
        if !config.collections_held() || u32::from(icid) >= config.collection_count() {
            return Err(StateError::HeldCollection { icid });
        }
        if vcpu >= config.vcpus {
            return Err(StateError::CollectionTarget {
                icid: usize::from(icid),
                vcpu,
                vcpus: config.vcpus,
            });
        }
    }
    Ok(())
}

impl Its {
    /// Check this ITS's own state with the rules a restore applies ([`ItsState::validate`]).
    /// Always `Ok` unless the crate has a bug: it is asserted after every MMIO write in
    /// debug builds.
    pub fn check_state(&self) -> Result<(), StateError> {
        validate_parts(
            &self.config,
            self.cbaser,
            self.creadr,
            self.cwriter,
            &self.baser,
            &self.collections,
            &self.held_collections,
        )
    }

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
            held_collections: self.held_collections.clone(),
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
        state.validate()?;
        let mut baser = [0u64; BASER_COUNT];
        for (dst, src) in baser.iter_mut().zip(&state.baser) {
            *dst = *src;
        }
        self.enabled = state.enabled;
        self.cbaser = state.cbaser;
        self.cwriter = state.cwriter;
        self.creadr = state.creadr;
        self.stalled = state.stalled;
        self.baser = baser;
        self.collections = state.collections.clone();
        self.held_collections = state.held_collections.clone();
        self.flush_caches();
        self.last_error = None;
        Ok(())
    }
}
