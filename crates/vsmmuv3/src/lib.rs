// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A guest-facing virtual Arm SMMUv3 (Arm IHI 0070) for VMMs that pass devices through
//! with iommufd nesting: the guest owns stage 1 (its Stream table, CDs and page tables in
//! its memory), the host kernel installs the guest's STEs as nested HWPTs over the VMM's
//! stage 2, and forwards the guest's invalidations.
//!
//! The VMM puts a [`VSmmu`] behind the guest's SMMU frame ([`regs::FRAME_SIZE`] bytes:
//! page 0 and page 1), forwards MMIO to [`VSmmu::mmio_read`] / [`VSmmu::mmio_write`],
//! implements [`SmmuBackend`] over iommufd (install a vSTE per stream, batch-invalidate)
//! and [`InterruptSink`] for the SMMU's own interrupts, declares its passthrough devices'
//! vSIDs with [`VSmmu::add_host_stream`], and feeds host events in with
//! [`VSmmu::inject_host_event`]. [`VSmmu::translate`] answers "which IPA does this gIOVA
//! reach for this stream", which the VMM needs for MSI routes (KVM finds its vITS by the
//! doorbell's guest physical address); [`VSmmu::take_changed_streams`] says when to ask
//! again.
//!
//! The modules, by what they do:
//! - [`regs`]: the register map and access-size rules; [`idr`]: host ID registers decoded
//!   and the guest's derived from them;
//! - [`strtab`]: Stream table lookup (linear, 2-level); [`ste`]: the STE decoder;
//!   [`cd`]: the CD decoder;
//! - [`cmd`]: the command decoder; [`queue`]: queue pointer arithmetic;
//!   [`event`]: event records;
//! - [`walk`]: the VMSAv8-64 stage-1 walker; [`tlb`]: its TLB;
//! - [`backend`]: the host trait and a recording fake; [`irq`]: the interrupt sink;
//!   [`observer`]: invalidation reports; [`state`]: snapshot/restore.
//!
//! Guest input is hostile. Every register access has a defined result, every table or
//! queue read is a fixed-size read at a checked address, one MMIO write consumes at most
//! [`SmmuConfig::max_commands_per_call`] commands, and every allocation is sized by the
//! VMM's [`SmmuConfig`], never by the guest.
//!
//! # Example
//!
//! The way Linux's arm-smmu-v3 driver brings an SMMU up, then a stage-1 stream and the
//! translation of an MSI gIOVA:
//!
//! ```
//! use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
//! use vsmmuv3::backend::{BackendCall, GuestSte, RecordingBackend};
//! use vsmmuv3::cd::cd_words;
//! use vsmmuv3::cmd::RawCommand;
//! use vsmmuv3::irq::RecordingSink;
//! use vsmmuv3::regs::*;
//! use vsmmuv3::ste::stage1_ste_words;
//! use vsmmuv3::walk::{Access, desc};
//! use vsmmuv3::{QEMU_HOST_IDRS, SmmuConfig, VSmmu};
//!
//! let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap();
//! let put = |addr: u64, words: &[u64]| {
//!     for (i, w) in words.iter().enumerate() {
//!         mem.write_obj(*w, GuestAddress(addr + 8 * i as u64))
//!             .unwrap();
//!     }
//! };
//! let mut smmu = VSmmu::new(SmmuConfig::builder(&QEMU_HOST_IDRS).build().unwrap());
//! let mut host = RecordingBackend::new();
//! let mut irq = RecordingSink::default();
//! // 32- and 64-bit register writes.
//! let w32 = |s: &mut VSmmu, h: &mut RecordingBackend, i: &mut RecordingSink, off, v: u32| {
//!     s.mmio_write(&mem, h, i, off, &v.to_le_bytes())
//! };
//! let w64 = |s: &mut VSmmu, h: &mut RecordingBackend, i: &mut RecordingSink, off, v: u64| {
//!     s.mmio_write(&mem, h, i, off, &v.to_le_bytes())
//! };
//!
//! // Probe, then the passthrough device's vSID 8 is declared: SMMU disabled, GBPA bypass.
//! let mut idr0 = [0u8; 4];
//! smmu.mmio_read(IDR0, &mut idr0);
//! assert_ne!(u32::from_le_bytes(idr0) & idr0::S1P, 0);
//! smmu.add_host_stream(&mem, &mut host, &mut irq, 8).unwrap();
//! assert_eq!(host.installs(), vec![(8, GuestSte::Bypass)]);
//!
//! // Linear Stream table of 256 STEs at 0x10000, a 256-entry command queue at 0x20000.
//! w64(&mut smmu, &mut host, &mut irq, STRTAB_BASE, 0x1_0000);
//! w32(&mut smmu, &mut host, &mut irq, STRTAB_BASE_CFG, 8);
//! w64(&mut smmu, &mut host, &mut irq, CMDQ_BASE, 0x2_0000 | 8);
//! w32(&mut smmu, &mut host, &mut irq, CR0, cr0::CMDQEN);
//!
//! // STE 8: stage 1 through the CD at 0x30000 (4K granule, 48-bit VA, ASID 1), whose
//! // tables map gIOVA 0xfee0_0000 to the vITS doorbell page at IPA 0x0800_0000.
//! put(0x1_0000 + 8 * 64, &stage1_ste_words(0x3_0000));
//! put(0x3_0000, &cd_words(0x4_0000, 16, 0, 5, 1));
//! let va: u64 = 0xfee0_0000;
//! let idx = |l: u32| (va >> (12 + 9 * (3 - l))) & 0x1ff;
//! put(0x4_0000 + idx(0) * 8, &[desc::table(0x5_0000)]);
//! put(0x5_0000 + idx(1) * 8, &[desc::table(0x6_0000)]);
//! put(0x6_0000 + idx(2) * 8, &[desc::table(0x7_0000)]);
//! put(0x7_0000 + idx(3) * 8, &[desc::page(0x0800_0000)]);
//!
//! // Enable, then CFGI_STE + CMD_SYNC the way Linux does after writing an STE.
//! w32(
//!     &mut smmu,
//!     &mut host,
//!     &mut irq,
//!     CR0,
//!     cr0::CMDQEN | cr0::SMMUEN,
//! );
//! put(0x2_0000, &RawCommand::cfgi_ste(8, true).0);
//! put(0x2_0010, &RawCommand::sync(0, 0, 0).0);
//! let p = w32(&mut smmu, &mut host, &mut irq, CMDQ_PROD, 2);
//! assert!(!p.more);
//! let mut cons = [0u8; 4];
//! smmu.mmio_read(CMDQ_CONS, &mut cons);
//! assert_eq!(u32::from_le_bytes(cons), 2);
//! assert!(matches!(
//!     host.calls.last(),
//!     Some(BackendCall::Install {
//!         stream_id: 8,
//!         ste: GuestSte::Stage1(_)
//!     })
//! ));
//!
//! // The device's MSI to gIOVA 0xfee0_0040 reaches the doorbell at IPA 0x0800_0040.
//! let t = smmu.translate(&mem, 8, 0xfee0_0040, Access::WRITE).unwrap();
//! assert_eq!(t.output, 0x0800_0040);
//! ```

#![deny(missing_docs)]

pub mod backend;
pub mod cd;
pub mod cmd;
pub mod event;
pub mod fault;
pub mod idr;
#[cfg(feature = "iommufd")]
pub mod iommufd;
pub mod irq;
mod mem;
pub mod observer;
pub mod queue;
pub mod regs;
mod smmu;
pub mod state;
pub mod ste;
pub mod strtab;
pub mod tlb;
pub mod walk;

pub use backend::{BackendError, GuestSte, InvalidateError, RecordingBackend, SmmuBackend, VSte};
pub use event::{EventOutcome, EventRecord};
pub use fault::{CdError, SteError, TranslateFault};
pub use idr::{ConfigError, HostFeatures, HostIdrs, QEMU_HOST_IDRS, SmmuConfig, SmmuConfigBuilder};
pub use irq::{InterruptSink, IrqLine, MsiMessage, RecordingSink};
pub use observer::StreamChanges;
pub use smmu::{HostStreamError, MAX_HOST_STREAMS, Progress, Stats, Translation, VSmmu, cerror};
pub use state::{StateError, VSMMU_STATE_VERSION, VSmmuState};
pub use walk::Access;
