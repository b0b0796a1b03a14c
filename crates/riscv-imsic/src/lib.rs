// Copyright © 2026 The passthrough-msi authors
//
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A userspace model of the RISC-V AIA 1.0 Incoming MSI Controller (IMSIC).
//!
//! This is the RISC-V counterpart of a virtual GIC ITS for a VMM that passes a
//! PCI device through to a guest: the device's MSIs are 32-bit writes of an
//! interrupt identity to an IMSIC interrupt-file page, and this crate models
//! those files and the address layout that locates them.
//!
//! - [`ImsicGeometry`] (AIA 1.0 §3.6): where the machine-level, supervisor-level
//!   and guest interrupt-file pages of every hart and group sit, validated, with
//!   the decode from an address to (group, hart, file) and back, and the IOMMU's
//!   MSI address mask/pattern and interrupt-file numbers (§8.4).
//! - [`InterruptFile`] (§3.1, §3.5, §3.8-§3.10): `seteipnum_le`/`seteipnum_be`,
//!   `eidelivery`, `eithreshold`, `eip0`-`eip63`, `eie0`-`eie63` for RV32 and
//!   RV64 accesses, `*topei` read and claim, the interrupt signal, and the MRIF
//!   image of §8.3.1.
//! - [`IndirectRegister`] (§3.7): decoding of `*iselect` values.
//! - [`Imsic`]: all harts' files, routing MSIs and MMIO by address, reporting
//!   each file's signal edges and configuration changes to an
//!   [`ExternalInterruptSink`], with serde save/restore ([`ImsicState`]).
//!
//! Everything a guest or a device controls (addresses, access sizes, identity
//! values, `*iselect` values, register values, state blobs) has a defined
//! result: the spec's, or a typed error. Nothing allocates on a guest's behalf.
//!
//! # Example
//!
//! A guest's two-vCPU virtual IMSIC, programmed the way Linux's IMSIC driver
//! does, receiving a device MSI:
//!
//! ```
//! use riscv_imsic::{
//!     ExternalInterruptSink, FileKind, FileTarget, GeometryConfig, Imsic, ImsicConfig, NumIds,
//!     WriteOutcome, Xlen,
//! };
//!
//! // The VMM's interrupt controller: here, it records the SEIP level per vCPU.
//! #[derive(Default)]
//! struct Seip([bool; 2]);
//! impl ExternalInterruptSink for Seip {
//!     fn raise(&mut self, t: FileTarget) {
//!         self.0[t.hart] = true;
//!     }
//!     fn lower(&mut self, t: FileTarget) {
//!         self.0[t.hart] = false;
//!     }
//! }
//!
//! // Supervisor-level files at 0x2800_0000, one page per vCPU, 255 identities.
//! let geometry = GeometryConfig::supervisor_only(0x2800_0000, 2, 0);
//! let config = ImsicConfig::uniform(geometry, 2, NumIds::new(255).unwrap(), 0);
//! let mut imsic = Imsic::new(config, Seip::default()).unwrap();
//!
//! // vCPU 1 turns on delivery and enables identity 33 (csrs of eie0 via siselect).
//! let s1 = FileTarget::new(1, FileKind::Supervisor);
//! imsic.write_indirect(s1, 0x70, 1, Xlen::Rv64).unwrap(); // eidelivery = 1
//! imsic.write_indirect(s1, 0x72, 0, Xlen::Rv64).unwrap(); // eithreshold = 0
//! imsic.rmw_indirect(s1, 0xC0, !0, 1 << 33, Xlen::Rv64).unwrap(); // eie0 |= 1 << 33
//!
//! // The device writes identity 33 to vCPU 1's seteipnum_le.
//! let doorbell = imsic.file_address(s1).unwrap();
//! assert_eq!(doorbell, 0x2800_1000);
//! let out = imsic.write_msi(doorbell, 33).unwrap();
//! assert!(matches!(out, WriteOutcome::Pending { id: 33, .. }));
//! assert_eq!(imsic.sink().0, [false, true]);
//!
//! // The guest's handler: csrrw a0, stopei, zero.
//! assert_eq!(imsic.claim_topei(s1).unwrap() >> 16, 33);
//! assert_eq!(imsic.sink().0, [false, false]);
//! ```

#![deny(missing_docs)]

use serde::{Deserialize, Serialize};

pub mod file;
pub mod geometry;
pub mod imsic;
pub mod iselect;
pub mod mmio;
pub mod state;

pub use file::{
    BitChange, EIDELIVERY_APLIC, EIDELIVERY_OFF, EIDELIVERY_ON, EiDelivery, FileError,
    IndirectEffect, InterruptFile, MRIF_SIZE, NumIds, TOPEI_ID_SHIFT,
};
pub use geometry::{
    DecodeError, DecodedAddress, GeometryConfig, GeometryError, ImsicGeometry, Level,
    MsiAddressPattern, PAGE_SHIFT, PAGE_SIZE, Region, bits_for, extract_bits,
};
pub use imsic::{
    ConfigError, ExternalInterruptSink, HartConfig, IgnoredWrite, Imsic, ImsicConfig, ImsicError,
    ImsicEvent, ResolvedAddress, WriteOutcome,
};
pub use iselect::{IndirectRegister, IselectError, Trap, Xlen};
pub use mmio::{PageAccess, SETEIPNUM_BE, SETEIPNUM_LE, page_access, seteipnum_value};
pub use state::{FileState, HartState, ImsicState, StateError};

/// Which interrupt file of a hart's IMSIC (AIA 1.0 §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FileKind {
    /// The machine-level file (drives `mip.MEIP`).
    Machine,
    /// The supervisor-level file (drives `mip.SEIP`).
    Supervisor,
    /// Guest file `i`, 1..=GEILEN (drives bit `i` of `hgeip`).
    Guest(u8),
}

/// One interrupt file of one hart: `hart` is the hart's index in
/// [`ImsicConfig::harts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileTarget {
    /// Index of the hart in the configuration.
    pub hart: usize,
    /// Which of its files.
    pub file: FileKind,
}

impl FileTarget {
    /// A target.
    pub const fn new(hart: usize, file: FileKind) -> Self {
        FileTarget { hart, file }
    }
}
