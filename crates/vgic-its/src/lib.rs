// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A userspace model of the Arm GICv3 Interrupt Translation Service (Arm IHI 0069H,
//! chapter 5 and the `GITS_*` registers of chapter 12).
//!
//! A VMM that owns the ITS its guest sees puts an [`Its`] behind the guest's ITS frame
//! ([`regs::ITS_FRAME_SIZE`] bytes: control frame + translation frame), forwards MMIO to
//! [`Its::mmio_read`] / [`Its::mmio_write`], and implements [`Redistributors`] to receive the
//! effects (LPIs made pending, moved, cleared, invalidated) and the [`MappingEvent`]s. MSIs
//! from devices arrive with [`Its::send_msi`] (or a `GITS_TRANSLATER` write carrying the
//! DeviceID). [`Its::translate`] is the oracle: which LPI on which vCPU does
//! (DeviceID, EventID) reach now.
//!
//! What it models:
//! - the register frame with 32- and 64-bit access rules ([`regs`]);
//! - the command queue and every physical-LPI command, each check carrying the spec's error
//!   mnemonic and encoding ([`cmd`]); GICv4 commands are rejected as unsupported
//!   (`GITS_TYPER.Virtual == 0`);
//! - flat and two-level Device and Collection tables in guest memory, ITTs at the address
//!   MAPD gives, collections on chip (`GITS_TYPER.HCC`) ([`tables`]);
//! - a bounded translation cache;
//! - snapshot/restore ([`ItsState`]).
//!
//! Nothing the guest controls can make it panic, loop without bound or allocate: the
//! command loop is bounded by the queue size, table walks are a fixed number of reads, and
//! every allocation is sized by the VMM's [`ItsConfig`].
//!
//! # Example
//!
//! Boot the way Linux's ITS driver does, then deliver an MSI:
//!
//! ```
//! use vgic_its::cmd::decode::RawCommand;
//! use vgic_its::regs::{GITS_BASER0, GITS_CBASER, GITS_CTLR, GITS_CWRITER};
//! use vgic_its::{Its, ItsConfig, Redistributors};
//! use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
//!
//! #[derive(Default)]
//! struct Pending(Vec<(u32, u32)>);
//! impl Redistributors for Pending {
//!     fn set_lpi_pending(&mut self, vcpu: u32, intid: u32) { self.0.push((vcpu, intid)); }
//!     fn clear_lpi_pending(&mut self, _: u32, _: u32) {}
//!     fn move_lpi(&mut self, _: u32, _: u32, _: u32) {}
//!     fn move_all_lpis(&mut self, _: u32, _: u32) {}
//!     fn invalidate_lpi(&mut self, _: u32, _: u32) {}
//!     fn invalidate_all(&mut self, _: u32) {}
//! }
//!
//! let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
//! let mut rd = Pending::default();
//! let mut its = Its::new(ItsConfig::builder().vcpus(2).build().unwrap());
//! let w64 = |its: &mut Its, rd: &mut Pending, off: u64, v: u64| {
//!     its.mmio_write(&mem, rd, off, &v.to_le_bytes(), None)
//! };
//!
//! // Device table (flat, one 4 KiB page at 0x10000), Collection table at 0x11000,
//! // a one-page command queue at 0x20000, then enable.
//! w64(&mut its, &mut rd, GITS_BASER0, (1 << 63) | 0x10000);
//! w64(&mut its, &mut rd, GITS_BASER0 + 8, (1 << 63) | 0x11000);
//! w64(&mut its, &mut rd, GITS_CBASER, (1 << 63) | 0x20000);
//! its.mmio_write(&mem, &mut rd, GITS_CTLR, &1u32.to_le_bytes(), None);
//!
//! // MAPC ICID 0 -> vCPU 1, MAPD DeviceID 8 (ITT at 0x30000, 5 EventID bits),
//! // MAPTI EventID 3 -> LPI 8195, SYNC.
//! let cmds = [
//!     RawCommand::mapc(0, 1, true),
//!     RawCommand::mapd(8, 4, 0x30000, true),
//!     RawCommand::mapti(8, 3, 8195, 0),
//!     RawCommand::sync(1),
//! ];
//! for (i, c) in cmds.iter().enumerate() {
//!     mem.write_slice(&c.to_bytes(), GuestAddress(0x20000 + 32 * i as u64)).unwrap();
//! }
//! w64(&mut its, &mut rd, GITS_CWRITER, 32 * cmds.len() as u64);
//! assert!(!its.is_stalled());
//!
//! // The device writes EventID 3 to GITS_TRANSLATER.
//! let t = its.send_msi(&mem, &mut rd, 8, 3).unwrap();
//! assert_eq!((t.intid, t.vcpu), (8195, 1));
//! assert_eq!(rd.0, vec![(1, 8195)]);
//! ```

#![deny(missing_docs)]

pub mod abi;
mod cache;
pub mod cmd;
pub mod config;
pub mod events;
mod its;
mod redist;
pub mod regs;
pub mod state;
pub mod tables;
mod translate;

pub use abi::{ItsImage, TableFormat, WorkLimit};
pub use cache::CacheStats;
pub use cmd::{Command, CommandError, CommandErrorKind};
pub use config::{CommandErrorPolicy, ConfigError, ItsConfig, ItsConfigBuilder};
pub use events::MappingEvent;
pub use its::{BASER_COUNT, COLLECTION_BASER, DEVICE_BASER, Its};
pub use redist::Redistributors;
pub use state::{ITS_STATE_VERSION, ItsState, StateError};
pub use translate::{Translation, TranslationError};
