// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! KVM's in-kernel RISC-V AIA (`KVM_DEV_TYPE_RISCV_AIA`) as a VMM uses it for MSIs.
//!
//! - [`AiaSetup`]: the device's configuration and every vCPU's vIMSIC page, derived from the
//!   same [`riscv_imsic::ImsicConfig`] the userspace model takes, and checked the way KVM
//!   checks it (plus what KVM does not check but a working VM needs, such as two vCPUs
//!   sharing a hart index).
//! - [`AiaDevice`]: create, configure, place, `CTRL_INIT`, and each vCPU's interrupt-file
//!   registers through the IMSIC attribute group (Linux
//!   `arch/riscv/include/uapi/asm/kvm.h`, "Device Control API: RISC-V AIA").
//! - [`routing`]: `KVM_IRQ_ROUTING_MSI` routes whose address is the target vCPU's vIMSIC
//!   page and whose data is the interrupt identity (AIA 1.0 §3.5), refused when KVM would
//!   drop the MSI silently.
//! - [`state`]: a vCPU's IMSIC registers (`eidelivery`, `eithreshold`, `eip*`, `eie*`, AIA
//!   1.0 §3.8) read into a [`riscv_imsic::ImsicState`] for the model, and a model's state
//!   written back.
//!
//! The crate builds on any 64-bit Linux host (the UAPI values are mirrored in [`uapi`] and
//! checked against kvm-bindings at compile time on riscv64); it works on a riscv64 host
//! with the H extension and Ssaia. The project's riscv64 test host runs its tests there
//! (`tests/kvm_aia.rs`): a KVM vCPU taking irqfd MSIs through a hardware guest interrupt
//! file, and the model agreeing with KVM and with the hart's own `stopei`.
//!
//! # Example
//!
//! ```no_run
//! use kvm_aia::routing::{MsiRoute, set_routes};
//! use kvm_aia::{AiaDevice, AiaMode, AiaSetup};
//! use riscv_imsic::{GeometryConfig, ImsicConfig, NumIds};
//!
//! let kvm = kvm_ioctls::Kvm::new()?;
//! let vm = kvm.create_vm()?;
//! let vcpus = [vm.create_vcpu(0)?, vm.create_vcpu(1)?];
//! // The guest's IMSIC: one supervisor-level page per vCPU from 0x2800_0000, 255 identities.
//! let imsic = ImsicConfig::uniform(
//!     GeometryConfig::supervisor_only(0x2800_0000, 2, 0),
//!     2,
//!     NumIds::new(255)?,
//!     0,
//! );
//! let setup = AiaSetup::from_imsic(AiaMode::HwAccel, &imsic, 0, None)?;
//! let aia = AiaDevice::create_and_init(&vm, &setup)?;
//! // A device's vector: identity 33 to vCPU 1, through an irqfd on GSI 0.
//! set_routes(
//!     &vm,
//!     &setup,
//!     &[MsiRoute {
//!         gsi: 0,
//!         address: setup.imsics[1],
//!         data: 33,
//!     }],
//! )?;
//! let irqfd = vmm_sys_util::eventfd::EventFd::new(0)?;
//! vm.register_irqfd(&irqfd, 0)?;
//! // ... run the vCPUs; later, the vCPUs' IMSIC state for the model:
//! let state = kvm_aia::state::read_state(&aia, &imsic, &[0, 1])?;
//! # drop((vcpus, state));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]

pub mod config;
pub mod device;
mod error;
pub mod routing;
pub mod state;
pub mod uapi;

pub use config::{AiaConfig, AiaMode, AiaSetup, MsiTarget};
pub use device::{AiaDevice, Attr, AttrIo, ConfigAttr};
pub use error::Error;
pub use riscv_imsic::NumIds;

// The IMSIC group carries `unsigned long` values, which this crate reads as u64.
const _: () = assert!(
    std::mem::size_of::<libc::c_ulong>() == 8,
    "kvm-aia supports 64-bit hosts only"
);
