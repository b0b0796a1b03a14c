// Copyright © 2026 The passthrough-msi authors
//
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Save and restore of an [`Imsic`] (serde).
//!
//! The state holds the configuration it was taken from, so a restore into an
//! IMSIC of another shape is refused instead of misapplied, and every file's
//! `eidelivery`, `eithreshold`, `eip` and `eie`. A state blob is untrusted
//! input: [`Imsic::restore`] validates all of it before changing anything
//! (test `state::tests::hostile_states_change_nothing`).

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::file::{FileError, InterruptFile};
use crate::imsic::{
    ExternalInterruptSink, HartFiles, Imsic, ImsicConfig, report_file_diff, sync_line,
};
use crate::{FileKind, FileTarget};

/// The saved state of one interrupt file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    /// `eidelivery` (0, 1 or 0x40000000).
    pub eidelivery: u32,
    /// `eithreshold`.
    pub eithreshold: u32,
    /// The `eip` array as `(N + 1) / 64` words; bit `i % 64` of word `i / 64`
    /// is identity `i`.
    pub eip: Vec<u64>,
    /// The `eie` array, same layout.
    pub eie: Vec<u64>,
}

impl FileState {
    /// The state of `file`.
    pub fn of(file: &InterruptFile) -> Self {
        FileState {
            eidelivery: file.eidelivery().value(),
            eithreshold: file.eithreshold(),
            eip: file.eip_words().to_vec(),
            eie: file.eie_words().to_vec(),
        }
    }
}

/// The saved state of one hart's files.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HartState {
    /// Machine-level file, if the hart has one.
    pub machine: Option<FileState>,
    /// Supervisor-level file.
    pub supervisor: FileState,
    /// Guest files 1..=GEILEN.
    pub guests: Vec<FileState>,
}

/// The saved state of an [`Imsic`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImsicState {
    /// The configuration the state was taken from.
    pub config: ImsicConfig,
    /// One entry per hart, in configuration order.
    pub harts: Vec<HartState>,
}

/// Errors restoring an [`ImsicState`].
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum StateError {
    /// The state was taken from a differently configured IMSIC.
    #[error("imsic restore: the state's configuration differs from this imsic's")]
    ConfigMismatch,
    /// The state lists a different number of harts than its configuration.
    #[error("imsic restore: state has {found} harts, configuration has {expected}")]
    HartCount {
        /// Harts in the configuration.
        expected: usize,
        /// Harts in the state.
        found: usize,
    },
    /// A hart's file list does not match its configuration.
    #[error("imsic restore: hart {hart} has {what} that its configuration does not match")]
    FileLayout {
        /// Index of the hart.
        hart: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// A file's state is invalid.
    #[error("imsic restore: invalid state for {target:?}")]
    File {
        /// The file.
        target: FileTarget,
        /// Why.
        #[source]
        source: FileError,
    },
}

impl<S: ExternalInterruptSink> Imsic<S> {
    /// Captures the state of every file.
    pub fn save(&self) -> ImsicState {
        ImsicState {
            config: self.config(),
            harts: self
                .harts
                .iter()
                .map(|h| HartState {
                    machine: h.machine.as_ref().map(|s| FileState::of(&s.file)),
                    supervisor: FileState::of(&h.supervisor.file),
                    guests: h.guests.iter().map(|s| FileState::of(&s.file)).collect(),
                })
                .collect(),
        }
    }

    /// Replaces every file's state with `state`.
    ///
    /// Nothing changes unless all of `state` is valid for this IMSIC. After the
    /// change, the sink sees the configuration events (as for
    /// [`Imsic::reset`]) and the signal edges between the old and the restored
    /// state, so a VMM's mirror of enables and lines stays exact.
    pub fn restore(&mut self, state: &ImsicState) -> Result<(), StateError> {
        if state.config != self.config() {
            return Err(StateError::ConfigMismatch);
        }
        if state.harts.len() != self.harts.len() {
            return Err(StateError::HartCount {
                expected: self.harts.len(),
                found: state.harts.len(),
            });
        }
        // Build every new file first.
        let mut staged: Vec<HartFiles> = self.harts.clone();
        for (index, (hart, hs)) in staged.iter_mut().zip(&state.harts).enumerate() {
            if hart.machine.is_some() != hs.machine.is_some() {
                return Err(StateError::FileLayout {
                    hart: index,
                    what: "a machine-level file",
                });
            }
            if hart.guests.len() != hs.guests.len() {
                return Err(StateError::FileLayout {
                    hart: index,
                    what: "a guest file count",
                });
            }
            let machine = hs.machine.iter().map(|fs| (FileKind::Machine, fs));
            let supervisor = std::iter::once((FileKind::Supervisor, &hs.supervisor));
            let guests = (1..=u8::MAX).map(FileKind::Guest).zip(hs.guests.iter());
            for (kind, fs) in machine.chain(supervisor).chain(guests) {
                let target = FileTarget::new(index, kind);
                let slot = hart.slot_mut(kind).ok_or(StateError::FileLayout {
                    hart: index,
                    what: "a file",
                })?;
                slot.file
                    .load(fs.eidelivery, fs.eithreshold, &fs.eip, &fs.eie)
                    .map_err(|source| StateError::File { target, source })?;
            }
        }
        // Commit, reporting differences.
        let old = std::mem::replace(&mut self.harts, staged);
        for (index, (new_hart, old_hart)) in self.harts.iter_mut().zip(&old).enumerate() {
            for kind in new_hart.kinds() {
                let target = FileTarget::new(index, kind);
                let (Some(slot), Some(old_slot)) = (new_hart.slot_mut(kind), old_hart.slot(kind))
                else {
                    continue;
                };
                report_file_diff(&mut self.sink, target, &old_slot.file, &slot.file);
                sync_line(slot, target, &mut self.sink);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::NumIds;
    use crate::geometry::GeometryConfig;
    use crate::imsic::ImsicEvent;
    use crate::iselect::Xlen;

    #[derive(Default, Debug)]
    struct Rec {
        lines: Vec<(FileTarget, bool)>,
        events: Vec<ImsicEvent>,
    }

    impl ExternalInterruptSink for Rec {
        fn raise(&mut self, t: FileTarget) {
            self.lines.push((t, true));
        }
        fn lower(&mut self, t: FileTarget) {
            self.lines.push((t, false));
        }
        fn event(&mut self, e: ImsicEvent) {
            self.events.push(e);
        }
    }

    fn new_imsic() -> Imsic<Rec> {
        let geo = GeometryConfig {
            machine_base: Some(0x2400_0000),
            machine_hart_shift: 12,
            supervisor_base: 0x2800_0000,
            guest_index_bits: 1,
            hart_index_bits: 1,
            group_index_bits: 0,
            group_index_shift: 24,
        };
        let cfg = ImsicConfig::uniform(geo, 2, NumIds::new(127).unwrap(), 1);
        Imsic::new(cfg, Rec::default()).unwrap()
    }

    fn busy(im: &mut Imsic<Rec>) {
        let s1 = FileTarget::new(1, FileKind::Supervisor);
        let g0 = FileTarget::new(0, FileKind::Guest(1));
        im.write_indirect(s1, 0x70, 1, Xlen::Rv64).unwrap();
        im.write_indirect(s1, 0xC2, 1 << 3, Xlen::Rv64).unwrap();
        im.set_pending(s1, 67).unwrap();
        im.write_indirect(g0, 0x72, 5, Xlen::Rv64).unwrap();
        im.set_pending(g0, 9).unwrap();
    }

    #[test]
    fn round_trip_through_json() {
        let mut a = new_imsic();
        busy(&mut a);
        let json = serde_json::to_string(&a.save()).unwrap();
        let state: ImsicState = serde_json::from_str(&json).unwrap();
        let mut b = new_imsic();
        b.restore(&state).unwrap();
        assert_eq!(b.save(), a.save());
        let s1 = FileTarget::new(1, FileKind::Supervisor);
        assert_eq!(b.sink().lines, vec![(s1, true)]);
        assert!(
            b.sink()
                .events
                .contains(&ImsicEvent::IdentityEnabled { target: s1, id: 67 })
        );
        assert_eq!(b.topei(s1), Ok((67 << 16) | 67));
        // Restoring a fresh state lowers the line and disables again.
        b.restore(&new_imsic().save()).unwrap();
        assert_eq!(b.sink().lines, vec![(s1, true), (s1, false)]);
        assert!(
            b.sink()
                .events
                .contains(&ImsicEvent::IdentityDisabled { target: s1, id: 67 })
        );
    }

    #[test]
    fn hostile_states_change_nothing() {
        let mut im = new_imsic();
        busy(&mut im);
        let good = im.save();
        let before = im.save();
        let mut cases: Vec<(ImsicState, StateError)> = Vec::new();

        let mut s = good.clone();
        s.config.aplic_delivery = true;
        cases.push((s, StateError::ConfigMismatch));

        let mut s = good.clone();
        s.harts.pop();
        cases.push((
            s,
            StateError::HartCount {
                expected: 2,
                found: 1,
            },
        ));

        let mut s = good.clone();
        s.harts[0].machine = None;
        cases.push((
            s,
            StateError::FileLayout {
                hart: 0,
                what: "a machine-level file",
            },
        ));

        let mut s = good.clone();
        let extra = s.harts[1].supervisor.clone();
        s.harts[1].guests.push(extra);
        cases.push((
            s,
            StateError::FileLayout {
                hart: 1,
                what: "a guest file count",
            },
        ));

        // A bad file late in the list must not leave earlier files restored.
        let mut s = new_imsic().save();
        s.harts[1].guests[0].eip = vec![0; 1000];
        cases.push((
            s,
            StateError::File {
                target: FileTarget::new(1, FileKind::Guest(1)),
                source: FileError::ArrayLength {
                    array: "eip",
                    len: 1000,
                    expected: 2,
                    num_ids: 127,
                },
            },
        ));

        let mut s = good.clone();
        s.harts[0].supervisor.eie[0] = 1;
        cases.push((
            s,
            StateError::File {
                target: FileTarget::new(0, FileKind::Supervisor),
                source: FileError::UnimplementedBits {
                    array: "eie",
                    word: 0,
                    value: 1,
                },
            },
        ));

        let mut s = good.clone();
        s.harts[0].guests[0].eidelivery = 0x4000_0000;
        cases.push((
            s,
            StateError::File {
                target: FileTarget::new(0, FileKind::Guest(1)),
                source: FileError::InvalidEiDelivery(0x4000_0000),
            },
        ));

        let mut s = good.clone();
        s.harts[0].machine.as_mut().unwrap().eithreshold = u32::MAX;
        cases.push((
            s,
            StateError::File {
                target: FileTarget::new(0, FileKind::Machine),
                source: FileError::InvalidEiThreshold(u32::MAX),
            },
        ));

        let lines = im.sink().lines.len();
        let events = im.sink().events.len();
        for (state, err) in cases {
            assert_eq!(im.restore(&state), Err(err));
            assert_eq!(im.save(), before);
            assert_eq!(im.sink().lines.len(), lines);
            assert_eq!(im.sink().events.len(), events);
        }
    }

    #[test]
    fn invalid_num_ids_in_json_is_rejected() {
        let im = new_imsic();
        let mut v = serde_json::to_value(im.save()).unwrap();
        v["config"]["harts"][0]["supervisor_ids"] = serde_json::json!(100);
        assert!(serde_json::from_value::<ImsicState>(v).is_err());
        let mut v = serde_json::to_value(im.save()).unwrap();
        v["config"]["geometry"]["machine_hart_shift"] = serde_json::json!(3);
        // GeometryConfig itself is plain data; the mismatch is caught on restore.
        let state: ImsicState = serde_json::from_value(v).unwrap();
        let mut im = new_imsic();
        assert_eq!(im.restore(&state), Err(StateError::ConfigMismatch));
    }
}
