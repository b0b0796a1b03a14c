// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A VFIO PCI passthrough device for a KVM VMM, with MSI-X reaching the guest through a
//! doorbell the VMM chose.
//!
//! The pieces:
//!
//! - [`PassthroughDevice`]: the function as the guest sees it. Config space is virtualized
//!   ([`VirtualConfig`]: BARs shadowed and relocatable, the MSI-X capability from
//!   `msi-trap`, a write mask for the rest); BAR pages are mapped straight into the guest
//!   except the trapped MSI-X table and PBA pages; MSI-X vectors go through an
//!   [`InterruptGroup`] (one eventfd per vector, one commit per batch) with the DeviceID the
//!   FDT `msi-map` gives.
//! - The traits it drives ([`DeviceBackend`], [`InterruptGroup`], [`GuestMapper`]) and their
//!   real implementations: [`VfioBackend`] over `vfio-cdev`, [`RouterGroup`] over an
//!   [`MsiRouter`] such as [`KvmMsiRouter`] (GSIs allocated as vectors become deliverable,
//!   one routing update per commit, irqfds), and [`KvmSlotMapper`] over `kvm-ioctls`. A VMM
//!   with its own interrupt manager implements [`InterruptGroup`] on its groups instead.
//!   Tests drive the same device with fakes.
//! - [`setup`]: the whole bring-up a VMM embeds: open and bind the device, gather the host's
//!   reserved regions and kernel capabilities, plan the doorbell (`doorbell-planner`), set the
//!   proposed MSI window when the kernel has it, attach, check the plan against the kernel's
//!   IOVA ranges, and map guest RAM at IOVA = GPA.
//!
//! The MSI data the device sends is always the host's: only the guest's address is written
//! through (see `msi_trap::write_through`).

#![deny(missing_docs)]

mod backend;
mod bars;
mod config;
mod device;
mod engine;
mod error;
mod group;
#[cfg(feature = "kvm")]
mod kvm;
mod parts;
pub mod setup;
mod vfio;

pub use backend::{
    BackendError, DeviceBackend, GuestMapper, MsiRemapping, MsiRoute, MsiRouter, RemapError,
    VectorBackend,
};
pub use bars::{BarChange, BarWindow, GuestBar, GuestBars};
pub use config::{COMMAND_FORWARD_MASK, CapPlan, VirtualConfig, plan_caps};
pub use device::{DirectPiece, PassthroughConfig, PassthroughDevice};
pub use engine::{EnableRecord, FaultCounters, MsixEngine, VectorReport};
pub use error::{Error, Result};
pub use group::{InterruptGroup, RouterGroup};
#[cfg(feature = "kvm")]
pub use kvm::{
    KVM_MAX_IRQ_ROUTES, KvmInterruptGroup, KvmMsiRouter, KvmSlotMapper, KvmVfioDevice, msi_entry,
};
pub use parts::{ModelParts, build_model};
pub use vfio::{DeviceFacts, VfioBackend, decode_bars, subtract_traps};
