// Copyright 2025 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Trap-and-emulate for the MSI and MSI-X capabilities of a passed-through PCI function.
//!
//! This crate sits between a guest's accesses to a device's MSI/MSI-X registers and the
//! host, and decides what reaches the device. It knows nothing of KVM or VFIO: a VMM calls it
//! from its config-space and BAR trap handlers and consumes plain-data output, so the whole
//! of it can be unit-tested and fuzzed alone.
//!
//! | piece | module | spec |
//! |---|---|---|
//! | capability list walk | [`caps`] | PCI 3.0 §6.7, PCIe Base 6.0 §7.6.3 |
//! | MSI capability | [`msi`] | PCI 3.0 §6.8.1 |
//! | MSI-X capability, table, PBA | [`msix`] | PCI 3.0 §6.8.2, PCIe Base 6.0 §7.7.2 |
//! | table/PBA relocation | [`msix::layout`] | PCI 3.0 §6.2.5.1 (BAR sizing) |
//! | batched vector updates | [`update`] | |
//! | doorbell write-through | [`write_through`] | |
//!
//! # How a VMM uses it
//!
//! 1. Read the device's config space (VFIO config region), walk it with
//!    [`caps::CapabilityList::parse`], and build [`msix::MsixState`] (and/or
//!    [`msi::MsiState`]) from the capability and a [`msix::layout::MsixLayout`].
//! 2. Config-space trap: fill the buffer from the device, then let each capability overlay
//!    its bytes (`read_config`); on writes, hand the bytes to `write_config`. Each returns a
//!    [`Coverage`]; `Outside` means "not mine".
//! 3. BAR trap on the pages [`msix::layout::MsixLayout::trap_ranges`] lists: call
//!    [`msix::MsixState::read_bar`] / [`write_bar`](msix::MsixState::write_bar); a
//!    [`msix::BarAccess::Forward`] goes to the real device at the translated location.
//! 4. At the end of the trap, if `updates_due()`, call `take_updates()` and give the
//!    [`update::UpdateBatch`] to the interrupt router (one routing update), then inject its
//!    deliveries. Then `device_program_for(policy, &batch)` says what reaches the device.
//! 5. When the host sees the device signal a vector whose route is not installed (masked),
//!    call `signal(vector)`: the Pending bit is set, and the unmask releases it.
//!
//! # Example
//!
//! ```
//! use msi_trap::caps::CapabilityList;
//! use msi_trap::msix::cap::MsixCapability;
//! use msi_trap::msix::layout::{BarInfo, MsixLayout, RelocationPolicy};
//! use msi_trap::msix::MsixState;
//! use msi_trap::write_through::{DeviceProgram, DoorbellPolicy};
//!
//! // A device with 4 MSI-X vectors: table at BAR0 + 0x2000, PBA at BAR0 + 0x3000.
//! let mut config = [0u8; 256];
//! config[0x06] = 0x10; // Status: Capabilities List
//! config[0x34] = 0x40;
//! config[0x40..0x4c].copy_from_slice(&[0x11, 0, 3, 0, 0, 0x20, 0, 0, 0, 0x30, 0, 0]);
//! let caps = CapabilityList::parse(&config).unwrap();
//! let cap = MsixCapability::parse(&config, caps.msix().unwrap().offset).unwrap();
//! let mut bars = [BarInfo::ABSENT; 6];
//! bars[0] = BarInfo::memory32(0x4000);
//! let layout = MsixLayout::compute(&bars, cap.real(), 0x1000, RelocationPolicy::Never).unwrap();
//! let mut msix = MsixState::new(cap, layout).unwrap();
//!
//! // The guest (Linux style) enables MSI-X under Function Mask, programs the table, unmasks.
//! msix.write_config(0x42, &0xc000u16.to_le_bytes());
//! for v in 0..4u64 {
//!     msix.write_table(v * 16, &0x0800_0040u32.to_le_bytes()); // vITS GITS_TRANSLATER
//!     msix.write_table(v * 16 + 4, &0u32.to_le_bytes());
//!     msix.write_table(v * 16 + 8, &(v as u32).to_le_bytes()); // EventID
//!     msix.write_table(v * 16 + 12, &0u32.to_le_bytes()); // unmask the vector
//! }
//! assert!(!msix.updates_due(), "nothing is deliverable under Function Mask");
//! msix.write_config(0x43, &[0x80]); // clear Function Mask
//! assert!(msix.updates_due());
//!
//! let batch = msix.take_updates(); // one routing update for all four vectors
//! assert_eq!(batch.updates.len(), 4);
//! assert!(batch.updates.iter().all(|u| u.is_deliverable()));
//!
//! // Write-through: the guest's address reaches the device, its data never does.
//! let programs = msix.device_program_for(DoorbellPolicy::TableAddressWrite, &batch);
//! assert!(matches!(programs[1], DeviceProgram::WriteTableAddress(w)
//!     if w.at.offset == 0x2010 && w.lo == 0x0800_0040));
//! ```
//!
//! # Design choices
//!
//! * **Overlay config access.** Config accesses of any size at any offset are applied byte
//!   by byte through a write mask over the capability's image, then decoded; read-only
//!   fields stay read-only by construction and straddling accesses are handled for the bytes
//!   inside ([`Coverage::Partial`]).
//! * **Commit points.** Writes only mark vectors dirty; the VMM commits when a batch is due
//!   (see [`update`]). The batch is coalesced: one entry per vector whose routing state
//!   changed since the previous batch.
//! * **Pending delivery carries its message.** An unmask that releases a pending vector
//!   queues the (address, data) the function would send at that moment
//!   ([`update::PendingDelivery`]); the Pending bit clears at once, as the guest would see.
//! * **Data never reaches the device, by type.** Device-bound output
//!   ([`write_through::DeviceProgram`]) has no data field and is computed by a function
//!   with no data input.
//! * **No panics on guest input.** Every guest-supplied offset and length goes through
//!   checked arithmetic; unsupported MMIO shapes read all-ones and ignore writes; hidden and
//!   unbacked BAR space reads zero and ignores writes.
//! * **Snapshots are checked.** `restore` validates everything against the destination
//!   device (same capability and guest layout, reserved bits clear, no pending bit on a
//!   deliverable vector) and changes nothing on error.

pub mod caps;
pub mod msi;
pub mod msix;
pub mod update;
pub mod write_through;

mod access;

pub use access::Coverage;

/// An MSI message: what the function writes, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsiMessage {
    /// Guest message address.
    pub address: u64,
    /// Guest message data.
    pub data: u32,
}

/// What happened to a vector the host reports the device signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignalOutcome {
    /// The vector is deliverable: inject this message now.
    Deliver(MsiMessage),
    /// The vector is masked: its Pending bit is now set; the unmask releases it.
    Pending,
    /// MSI/MSI-X is disabled (or the MSI vector is not allocated): the signal is dropped.
    Dropped,
}
