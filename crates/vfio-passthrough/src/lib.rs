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
//!
//! # Example
//!
//! A VMM's bring-up on its own iommufd and IOAS, with the device's vectors in a group of the
//! VM's one routing table (`docs/embedding.md` walks through the pieces):
//!
//! ```no_run
//! # #[cfg(all(feature = "kvm", feature = "proposed"))]
//! # fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! use std::sync::{Arc, Mutex};
//! use doorbell_planner::{GuestMap, StrategyChoice};
//! use iommufd_ioas::{Access, Iommufd};
//! use msi_trap::msix::layout::RelocationPolicy;
//! use vfio_passthrough::setup::{DeviceSpec, GuestSetup, PreparedDevice};
//! use vfio_passthrough::{Error, KvmMsiRouter, KvmSlotMapper, KvmVfioDevice};
//! use vm_memory::{GuestAddress, GuestMemoryMmap};
//!
//! let kvm = kvm_ioctls::Kvm::new()?;
//! let vm = Arc::new(kvm.create_vm()?);
//! let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x4000_0000), 0x1000_0000)])?;
//! let iommufd = Iommufd::open()?;
//! let guest = GuestSetup {
//!     map: GuestMap::default(),
//!     preferred_base: None,
//!     strategy: StrategyChoice::Auto,
//!     viommu: false,
//! };
//! let spec: DeviceSpec = "0000:00:06.0".parse()?;
//! let prepared = PreparedDevice::open_with(iommufd.clone(), &spec, guest)?;
//! // ... create the vITS at prepared.plan().controller_base, write the FDT ...
//! let ioas = Arc::new(iommufd.alloc_ioas()?);
//! let attached = prepared.attach_to(ioas.clone())?;
//! ioas.map_guest_memory(&ram, Access::READ_WRITE)?;
//! let mut kvm_vfio = KvmVfioDevice::new(&vm)?;
//! kvm_vfio.add(std::os::fd::AsFd::as_fd(attached.vfio_device()))?;
//! let router = Arc::new(Mutex::new(KvmMsiRouter::new(vm.clone(), 64, Vec::new())));
//! let mut dev = attached.into_device_with_group(
//!     |vectors| KvmMsiRouter::group(&router, vectors).map_err(Error::Eventfd),
//!     KvmSlotMapper::new(vm.clone(), 16..32),
//!     0x8,
//!     RelocationPolicy::IfShared,
//! )?;
//! // From the VMM's traps:
//! let mut id = [0u8; 4];
//! dev.read_config(0, &mut id);
//! # Ok(())
//! # }
//! # #[cfg(not(all(feature = "kvm", feature = "proposed")))]
//! # fn main() {}
//! ```

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
