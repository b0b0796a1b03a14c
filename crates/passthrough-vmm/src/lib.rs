// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A small arm64 KVM VMM: the project's embedding example and test driver.
//!
//! It boots a Linux `Image` with a vGICv3, the in-kernel vITS, PSCI, a 16550 console and a
//! generic ECAM PCIe host bridge, and is built so that a VFIO passthrough function can be
//! plugged in: a [`pci::PciFunction`] in a [`pci::PciBus`] slot, with its BAR traps moved on
//! the [`mmio::MmioBus`] as the guest programs its BARs, and the `VmFd` at hand for MSI
//! routes (`KVM_SET_GSI_ROUTING`), irqfds and memory slots.
//!
//! The pieces that need no KVM are portable and tested on any host:
//!
//! - [`layout`]: the guest memory map, data-driven and validated (the vITS base is an input:
//!   a doorbell planner puts `GITS_TRANSLATER` where the host maps the physical doorbell);
//! - [`fdt`]: the device tree (no `reserved-memory`, ever);
//! - [`boot`]: Image header parsing and where kernel, initramfs and DTB go;
//! - [`uart`] and [`console`]: the 16550 and the `@@VMM` console framing that carries the
//!   guest's status and results to the VMM;
//! - [`pci`] and [`mmio`]: ECAM decoding, PCI slots, MMIO dispatch;
//! - [`cli`] and [`report`]: the command line, exit codes and the report;
//! - [`its_check`]: the vgic-its model checked against the in-kernel vITS (issue 17), and
//!   [`vcpu_gate`], which pauses the vCPU threads for KVM's ITS save.
//!
//! `vm` (aarch64 only) is the KVM side: VM, RAM slot, vCPUs, vGIC and vITS, image loading
//! and the vCPU run loops; `its_kvm` (aarch64 only) saves and restores KVM's vITS.
//!
//! # Example
//!
//! Everything up to `KVM_CREATE_VM`: the memory map, the device tree, the console device on
//! the MMIO bus, and a guest reporting its status through it.
//!
//! ```
//! use std::sync::Arc;
//! use passthrough_vmm::fdt::{build_fdt, FdtConfig};
//! use passthrough_vmm::layout::MemoryLayout;
//! use passthrough_vmm::mmio::MmioBus;
//! use passthrough_vmm::pci::PciBus;
//! use passthrough_vmm::uart::Uart;
//!
//! let layout = MemoryLayout::new(2, 512 << 20);
//! layout.validate()?;
//! let dtb = build_fdt(&FdtConfig { layout: &layout, cmdline: "console=ttyS0", initrd: None })?;
//! assert!(dtb.len() < 0x1_0000);
//!
//! let bus = Arc::new(MmioBus::new());
//! let uart = Arc::new(Uart::new(None));
//! bus.insert(layout.uart, uart.clone())?;
//! let pci = Arc::new(PciBus::new(&bus, layout.pci_mmio32, layout.ecam_buses()));
//! bus.insert(layout.ecam, pci)?;
//!
//! // What a vCPU thread does on KVM_EXIT_MMIO: the guest prints its status line.
//! for b in b"@@VMM status 0\r\n" {
//!     bus.write(layout.uart.base, &[*b]);
//! }
//! assert_eq!(uart.finish().status, Some(0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod boot;
pub mod cli;
pub mod console;
pub mod fdt;
pub mod fdt_riscv;
pub mod its_check;
#[cfg(target_arch = "aarch64")]
pub mod its_kvm;
pub mod layout;
pub mod layout_riscv;
pub mod mmio;
#[cfg(target_arch = "aarch64")]
pub mod nested;
pub mod passthrough;
pub mod pci;
pub mod reliability;
#[cfg(target_arch = "aarch64")]
mod reliability_glue;
pub mod report;
pub mod uart;
pub mod vcpu_gate;
#[cfg(any(target_arch = "aarch64", target_arch = "riscv64"))]
pub mod vfio_open;
pub mod viommu;
#[cfg(target_arch = "aarch64")]
pub mod vm;
#[cfg(any(target_arch = "aarch64", target_arch = "riscv64"))]
pub mod vm_common;
#[cfg(target_arch = "riscv64")]
pub mod vm_riscv;
