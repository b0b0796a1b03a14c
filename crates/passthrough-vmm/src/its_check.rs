// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The userspace ITS model (`vgic-its`) checked against KVM's in-kernel vITS, per
//! passed-through vector (issue 17). This module is the portable part: it works on what the
//! KVM side (`its_kvm`, aarch64) saved and on what the guest reported, and is unit-tested on
//! any host with the model standing in for KVM.
//!
//! Three views of each vector (DeviceID = the function's RID, EventID = the data the guest
//! programmed into the vector's MSI-X entry, trapped by the VMM):
//!
//! - **the model's**: KVM's vITS saved while the guest runs (`KVM_DEV_ARM_VGIC_GRP_ITS_REGS`
//!   and `KVM_DEV_ARM_ITS_SAVE_TABLES`, vCPUs paused), read with
//!   [`vgic_its::abi::kvm::load`], imported into a model in KVM's table format over a
//!   private copy of the guest's memory map, and asked [`vgic_its::Its::translate`]:
//!   (LPI, vCPU);
//! - **the guest's**: the CPU the guest's Linux reports the vector's interrupt affine to
//!   (`/proc/irq/N/effective_affinity_list`, sent in the request frame), and the LPI the
//!   guest's ITS driver itself mapped the event to: its MAPTI/MAPI/MOVI/MAPC commands, read
//!   from its command queue (`GITS_CBASER`, guest memory) and replayed by a second model in
//!   the native table format. The guest's `/proc/interrupts` and `/sys/kernel/irq/N/hwirq`
//!   cannot give the LPI on Linux 7.2: the vector's interrupt lives in a per-device MSI
//!   domain (`ITS-PCI-MSIX-<bdf>`) whose hwirq is the MSI-X index, and the LPI is only in
//!   the parent domains, which only debugfs shows (not in the test kernels);
//! - **KVM's delivery** (the reverse direction, [`restore_plan`]): the model moves every
//!   vector's event to another vCPU itself (MOVI through its command queue), its state is
//!   written as KVM tables ([`vgic_its::abi::kvm::store`]) into a second VM, restored with
//!   `KVM_DEV_ARM_ITS_RESTORE_TABLES`, and an MSI for each vector (`KVM_SIGNAL_MSI`) must
//!   leave exactly the predicted LPI pending on exactly the predicted vCPU, read through
//!   `KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES` from the second VM's pending tables.
//!
//! The guest asks for each check with a result frame
//! `@@VMM result {"its_request":"<tag>","vectors":[{"index":I,"irq":N,"cpu":C},...]}`
//! and waits for the VMM's answer `its <tag>` on its console input.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;
use vgic_its::abi::kvm::{self, KvmItsRegs, LoadParams};
use vgic_its::abi::{ItsImage, TableFormat, WorkLimit};
use vgic_its::cmd::decode::RawCommand;
use vgic_its::regs::{
    GITS_BASER0, GITS_CBASER, GITS_CTLR, GITS_CWRITER, cbaser_base, cbaser_queue_bytes,
};
use vgic_its::{Its, ItsConfig, Redistributors};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::console::GuestResult;
use crate::layout::Region;

/// The result-frame key of a guest's request.
pub const REQUEST_KEY: &str = "its_request";
/// Longest tag accepted (the answer `its <tag>\n` must fit the UART's 16-byte FIFO).
pub const MAX_TAG: usize = 8;

/// The answer the VMM types on the guest's console when a request is served.
pub fn answer(tag: &str) -> String {
    format!("its {tag}\n")
}

/// One vector as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GuestVector {
    /// MSI-X index (the hwirq in the guest's per-device MSI domain).
    pub index: u16,
    /// The guest's Linux IRQ number.
    pub irq: u32,
    /// The CPU the interrupt is affine to (first of `effective_affinity_list`).
    pub cpu: u32,
}

/// A guest's request for a check: its tag and its view of the vectors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GuestRequest {
    /// The tag (`[A-Za-z0-9_-]`, at most [`MAX_TAG`] bytes).
    pub tag: String,
    /// The guest's vectors.
    pub vectors: Vec<GuestVector>,
}

impl GuestRequest {
    /// The request in a result frame, `None` when the frame is not one. Untrusted: a bad tag
    /// or vector list is `Some(Err(why))`, so that the guest is still answered (with the tag
    /// when it is usable) and the report says what was wrong.
    pub fn parse(result: &GuestResult) -> Option<Result<Self, String>> {
        let GuestResult::Json(v) = result else {
            return None;
        };
        let tag = v.get(REQUEST_KEY)?;
        Some((|| {
            let tag = tag.as_str().ok_or("its_request is not a string")?;
            if tag.is_empty()
                || tag.len() > MAX_TAG
                || !tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(format!(
                    "its_request tag {tag:?} is not 1..={MAX_TAG} of [A-Za-z0-9_-]"
                ));
            }
            let list = v
                .get("vectors")
                .and_then(|l| l.as_array())
                .ok_or("its_request without a vectors array")?;
            let mut vectors = Vec::new();
            for x in list.iter().take(2048) {
                let num = |k: &str| x.get(k).and_then(|n| n.as_u64());
                let (Some(index), Some(irq), Some(cpu)) = (num("index"), num("irq"), num("cpu"))
                else {
                    return Err(format!("its_request vector {x} lacks index, irq or cpu"));
                };
                vectors.push(GuestVector {
                    index: u16::try_from(index).map_err(|_| format!("vector index {index}"))?,
                    irq: u32::try_from(irq).map_err(|_| format!("irq {irq}"))?,
                    cpu: u32::try_from(cpu).map_err(|_| format!("cpu {cpu}"))?,
                });
            }
            Ok(GuestRequest {
                tag: tag.to_owned(),
                vectors,
            })
        })())
    }
}

/// What the KVM side saved with the vCPUs paused.
#[derive(Clone, Debug)]
pub struct SavedIts {
    /// `KVM_DEV_ARM_VGIC_GRP_ITS_REGS`.
    pub regs: KvmItsRegs,
    /// KVM's state read from the tables `SAVE_TABLES` wrote ([`load_saved`]), read before
    /// the vCPUs resume so that nothing the guest does next can change it.
    pub image: Result<ItsImage, String>,
    /// The guest's command queue (`GITS_CBASER`), whole.
    pub queue: Vec<u8>,
    /// How long the vCPUs were paused, in milliseconds.
    pub pause_ms: f64,
}

/// [`kvm::load`] of KVM's registers and the tables in the guest's memory, the error with
/// the errno KVM's own restore would return.
pub fn load_saved(
    regs: &KvmItsRegs,
    guest: &GuestMemoryMmap,
    vcpus: u32,
) -> Result<ItsImage, String> {
    kvm::load(regs, guest, LoadParams::kvm(vcpus)).map_err(|e| {
        let errno = e
            .kvm_errno()
            .map_or(String::new(), |n| format!(" (KVM's restore: errno {n})"));
        format!("{e}{errno}")
    })
}

/// The guest's command queue, whole (`GITS_CBASER`'s base and size).
pub fn read_queue(regs: &KvmItsRegs, guest: &GuestMemoryMmap) -> Vec<u8> {
    let mut q = vec![0u8; cbaser_queue_bytes(regs.cbaser) as usize];
    if guest
        .read_slice(&mut q, GuestAddress(cbaser_base(regs.cbaser)))
        .is_err()
    {
        q.clear();
    }
    q
}

/// An LPI on a processor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Target {
    /// The LPI INTID.
    pub lpi: u32,
    /// The processor number (vCPU index).
    pub vcpu: u32,
}

/// One vector of one check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VectorCheck {
    /// MSI-X index.
    pub index: u16,
    /// ITS DeviceID.
    pub device_id: u32,
    /// EventID (the data the guest programmed).
    pub event_id: u32,
    /// The model's translation of KVM's saved state.
    pub model: Option<Target>,
    /// Why the model has none.
    pub model_error: Option<String>,
    /// The guest's own commands, replayed.
    pub guest_commands: Option<Target>,
    /// The guest's Linux IRQ of the vector.
    pub guest_irq: Option<u32>,
    /// The CPU the guest reports the vector affine to.
    pub guest_cpu: Option<u32>,
    /// Model LPI = the guest's LPI, and model vCPU = the guest's CPU = the replay's vCPU.
    pub matched: bool,
}

/// One check of the model against the in-kernel vITS.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SnapshotCheck {
    /// The guest's tag.
    pub tag: String,
    /// KVM's registers.
    pub regs: KvmItsRegs,
    /// vCPUs paused for the save, milliseconds.
    pub pause_ms: f64,
    /// Devices, events, collections in KVM's saved state.
    pub devices: usize,
    /// Valid events.
    pub events: usize,
    /// Collections.
    pub collections: usize,
    /// Why KVM's state could not be read, if it could not.
    pub load_error: Option<String>,
    /// The replay of the guest's commands: how many commands, or why not.
    pub replay: String,
    /// Per vector.
    pub vectors: Vec<VectorCheck>,
    /// Every vector matched (and there was at least one).
    pub all_match: bool,
    /// The reverse check on this state (a second VM restores the model's changed state).
    pub restore: Option<RestoreCheck>,
}

/// One vector of the reverse check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RestoreVector {
    /// MSI-X index.
    pub index: u16,
    /// ITS DeviceID.
    pub device_id: u32,
    /// EventID.
    pub event_id: u32,
    /// Where the model put it before moving it.
    pub from_vcpu: u32,
    /// What the model predicts after its MOVI.
    pub predicted: Target,
    /// `KVM_SIGNAL_MSI`'s return value (1: delivered).
    pub signal: i32,
    /// What the second VM's pending tables show for this LPI.
    pub landed: Vec<Target>,
    /// Exactly the prediction.
    pub matched: bool,
}

/// The reverse check: a second VM restores a state the model produced.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RestoreCheck {
    /// Per vector.
    pub vectors: Vec<RestoreVector>,
    /// LPIs pending in the second VM that no vector predicted.
    pub unexpected: Vec<Target>,
    /// `KVM_DEV_ARM_ITS_SAVE_TABLES` in the second VM loads back to the image it restored.
    pub kvm_round_trip: bool,
    /// Why the check could not run to the end.
    pub error: Option<String>,
    /// Every vector landed as predicted, nothing else pending, and the round trip held.
    pub all_match: bool,
}

/// The `its` section of the VMM's report.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ItsReport {
    /// One per guest request, in order.
    pub snapshots: Vec<SnapshotCheck>,
    /// Requests that could not be served.
    pub errors: Vec<String>,
}

impl ItsReport {
    /// Every snapshot and its reverse check matched, and nothing failed.
    pub fn all_match(&self) -> bool {
        !self.snapshots.is_empty()
            && self
                .snapshots
                .iter()
                .all(|s| s.all_match && s.restore.as_ref().is_some_and(|r| r.all_match))
            && self.errors.is_empty()
    }

    /// The report's lines: one per vector and snapshot in the form
    /// `its: vector N (DeviceID 0x.., EventID ..) -> LPI .. on vCPU .. (model) = LPI .. on CPU .. (guest): match`.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let opt = |t: Option<u32>| t.map_or("?".to_owned(), |v| v.to_string());
        for snap in &self.snapshots {
            let _ = writeln!(
                s,
                "its: \"{}\": KVM's vITS saved with the vCPUs paused {:.1} ms: {} device(s), {} event(s), {} collection(s){}; guest commands: {}",
                snap.tag,
                snap.pause_ms,
                snap.devices,
                snap.events,
                snap.collections,
                snap.load_error
                    .as_ref()
                    .map_or(String::new(), |e| format!(", load error: {e}")),
                snap.replay
            );
            for v in &snap.vectors {
                let model = v.model.map_or_else(
                    || format!("nothing ({})", v.model_error.as_deref().unwrap_or("?")),
                    |t| format!("LPI {} on vCPU {}", t.lpi, t.vcpu),
                );
                let _ = writeln!(
                    s,
                    "its: vector {} (DeviceID {:#x}, EventID {}) -> {model} (model) {} LPI {} on CPU {} (guest): {}",
                    v.index,
                    v.device_id,
                    v.event_id,
                    if v.matched { "=" } else { "!=" },
                    opt(v.guest_commands.map(|t| t.lpi)),
                    opt(v.guest_cpu),
                    if v.matched { "match" } else { "MISMATCH" }
                );
            }
            if let Some(r) = &snap.restore {
                r.summary(&mut s);
            }
        }
        for e in &self.errors {
            let _ = writeln!(s, "its: error: {e}");
        }
        s
    }
}

impl RestoreCheck {
    fn summary(&self, s: &mut String) {
        let r = self;
        {
            let _ = writeln!(
                s,
                "its: second VM restored the model's state (RESTORE_TABLES); its SAVE_TABLES loads back to it: {}{}",
                r.kvm_round_trip,
                r.error
                    .as_ref()
                    .map_or(String::new(), |e| format!("; error: {e}"))
            );
            for v in &r.vectors {
                let landed: Vec<String> = v
                    .landed
                    .iter()
                    .map(|t| format!("LPI {} on vCPU {}", t.lpi, t.vcpu))
                    .collect();
                let _ = writeln!(
                    s,
                    "its: restored vector {} (DeviceID {:#x}, EventID {}), moved by the model vCPU {} -> {}: KVM_SIGNAL_MSI {} -> pending {} (KVM) {} LPI {} on vCPU {} (model): {}",
                    v.index,
                    v.device_id,
                    v.event_id,
                    v.from_vcpu,
                    v.predicted.vcpu,
                    v.signal,
                    if landed.is_empty() {
                        "nothing".to_owned()
                    } else {
                        landed.join(", ")
                    },
                    if v.matched { "=" } else { "!=" },
                    v.predicted.lpi,
                    v.predicted.vcpu,
                    if v.matched { "match" } else { "MISMATCH" }
                );
            }
            if !r.unexpected.is_empty() {
                let _ = writeln!(
                    s,
                    "its: unexpected pending LPIs in the second VM: {:?}",
                    r.unexpected
                );
            }
        }
    }
}

/// Redistributors that ignore everything (the translations are what is checked).
struct NoRd;

impl Redistributors for NoRd {
    fn set_lpi_pending(&mut self, _: u32, _: u32) {}
    fn clear_lpi_pending(&mut self, _: u32, _: u32) {}
    fn move_lpi(&mut self, _: u32, _: u32, _: u32) {}
    fn move_all_lpis(&mut self, _: u32, _: u32) {}
    fn invalidate_lpi(&mut self, _: u32, _: u32) {}
    fn invalidate_all(&mut self, _: u32) {}
}

/// KVM's ITS as a model configuration: [`ItsConfig::builder`]`.kvm_abi()` with `vcpus`.
pub fn kvm_model_config(vcpus: u32) -> Result<ItsConfig, String> {
    ItsConfig::builder()
        .vcpus(vcpus)
        .kvm_abi()
        .build()
        .map_err(|e| e.to_string())
}

/// A private memory map with the guest's RAM range (lazily backed: only what the model
/// writes is allocated) and `extra` bytes after it, 64 KiB aligned, for tables of the
/// model's own; returns it and the extra region's base.
pub fn scratch_memory(ram: Region, extra: u64) -> Result<(GuestMemoryMmap, u64), String> {
    let end = ram.base.checked_add(ram.size).ok_or("RAM range wraps")?;
    let extra_base = end.div_ceil(0x1_0000) * 0x1_0000;
    let mut ranges = vec![(
        GuestAddress(ram.base),
        usize::try_from(ram.size).map_err(|e| e.to_string())?,
    )];
    if extra > 0 {
        ranges.push((
            GuestAddress(extra_base),
            usize::try_from(extra).map_err(|e| e.to_string())?,
        ));
    }
    let mem = GuestMemoryMmap::from_ranges(&ranges).map_err(|e| format!("scratch memory: {e}"))?;
    Ok((mem, extra_base))
}

/// The model of KVM's saved vITS: [`Its::import_image`] of the image over a private copy
/// of the guest's RAM range, in KVM's table format.
pub fn model_of_kvm(
    image: &ItsImage,
    ram: Region,
    vcpus: u32,
) -> Result<(Its, GuestMemoryMmap), String> {
    let (scratch, _) = scratch_memory(ram, 0)?;
    let its = Its::import_image(
        kvm_model_config(vcpus)?,
        image,
        &scratch,
        WorkLimit::default(),
    )
    .map_err(|e| e.to_string())?;
    Ok((its, scratch))
}

/// The queue bytes below `GITS_CWRITER` hold every command the guest ever sent unless the
/// queue wrapped: Linux allocates it zeroed and writes it in order, so a non-zero byte at
/// or after `GITS_CWRITER` means older commands were overwritten.
fn queue_wrapped(queue: &[u8], cwriter: u64) -> bool {
    queue
        .get(cwriter as usize..)
        .is_some_and(|rest| rest.iter().any(|b| *b != 0))
}

/// Replay the guest's own ITS commands (its whole command queue up to `GITS_CWRITER`) in a
/// native-format model over a private copy of the guest's RAM range. `Err` says why not.
pub fn replay_guest_commands(
    regs: &KvmItsRegs,
    queue: &[u8],
    ram: Region,
    vcpus: u32,
) -> Result<(Its, GuestMemoryMmap, u64), String> {
    let cwriter = regs.cwriter & vgic_its::regs::GITS_CQUEUE_OFFSET_MASK;
    let qbytes = cbaser_queue_bytes(regs.cbaser);
    if queue.len() as u64 != qbytes {
        return Err(format!(
            "the saved queue has {} bytes, GITS_CBASER says {qbytes}",
            queue.len()
        ));
    }
    if queue_wrapped(queue, cwriter) {
        return Err(
            "the guest's command queue has wrapped: its early commands are overwritten".to_owned(),
        );
    }
    // Tables of the replaying model after the RAM range: Device table, Collection table
    // (512 KiB each: 16-bit IDs, 8-byte entries), then the queue.
    const TABLE: u64 = 0x8_0000;
    let (mem, extra) = scratch_memory(ram, 2 * TABLE + qbytes)?;
    let config = ItsConfig::builder()
        .vcpus(vcpus)
        .device_id_bits(16)
        .event_id_bits(16)
        .intid_bits(16)
        .collection_id_bits(16)
        .error_policy(vgic_its::CommandErrorPolicy::Skip)
        .table_format(TableFormat::Native)
        .build()
        .map_err(|e| e.to_string())?;
    let mut its = Its::new(config);
    let mut rd = NoRd;
    let w64 = |its: &mut Its, rd: &mut NoRd, off: u64, v: u64| {
        its.mmio_write(&mem, rd, off, &v.to_le_bytes(), None)
    };
    let pages = |bytes: u64| bytes / 0x1_0000 - 1;
    // 64 KiB pages (Page_Size 0b10).
    w64(
        &mut its,
        &mut rd,
        GITS_BASER0,
        (1 << 63) | (2 << 8) | extra | pages(TABLE),
    );
    w64(
        &mut its,
        &mut rd,
        GITS_BASER0 + 8,
        (1 << 63) | (2 << 8) | (extra + TABLE) | pages(TABLE),
    );
    let qbase = extra + 2 * TABLE;
    w64(
        &mut its,
        &mut rd,
        GITS_CBASER,
        (1 << 63) | qbase | (qbytes / 0x1000 - 1),
    );
    mem.write_slice(&queue[..cwriter as usize], GuestAddress(qbase))
        .map_err(|e| format!("copying the guest's queue: {e}"))?;
    its.mmio_write(&mem, &mut rd, GITS_CTLR, &1u32.to_le_bytes(), None);
    w64(&mut its, &mut rd, GITS_CWRITER, cwriter);
    while its.commands_pending() {
        its.process_commands(&mem, &mut rd);
    }
    Ok((its, mem, cwriter / 32))
}

/// Check KVM's saved vITS against the guest's view, vector by vector.
pub fn check_snapshot(
    request: &GuestRequest,
    saved: &SavedIts,
    ram: Region,
    vcpus: u32,
    device_id: u32,
    vectors: &[(u16, u32)],
) -> SnapshotCheck {
    let mut check = SnapshotCheck {
        tag: request.tag.clone(),
        regs: saved.regs,
        pause_ms: saved.pause_ms,
        devices: 0,
        events: 0,
        collections: 0,
        load_error: None,
        replay: String::new(),
        vectors: Vec::new(),
        all_match: false,
        restore: None,
    };
    let model = saved.image.clone().and_then(|image| {
        check.devices = image.devices.len();
        check.events = image.event_count();
        check.collections = image.collections.len();
        model_of_kvm(&image, ram, vcpus)
    });
    let mut model = match model {
        Ok(m) => Some(m),
        Err(e) => {
            check.load_error = Some(e);
            None
        }
    };
    let mut replay = match replay_guest_commands(&saved.regs, &saved.queue, ram, vcpus) {
        Ok((its, mem, n)) => {
            check.replay = format!("{n} commands replayed");
            Some((its, mem))
        }
        Err(e) => {
            check.replay = format!("unavailable: {e}");
            None
        }
    };
    for &(index, event_id) in vectors {
        let (model_t, model_error) = match model.as_mut() {
            Some((its, mem)) => match its.translate(&*mem, device_id, event_id) {
                Ok(t) => (
                    Some(Target {
                        lpi: t.intid,
                        vcpu: t.vcpu,
                    }),
                    None,
                ),
                Err(e) => (None, Some(e.to_string())),
            },
            None => (None, check.load_error.clone()),
        };
        let guest_commands = replay.as_mut().and_then(|(its, mem)| {
            its.translate(&*mem, device_id, event_id)
                .ok()
                .map(|t| Target {
                    lpi: t.intid,
                    vcpu: t.vcpu,
                })
        });
        let g = request.vectors.iter().find(|v| v.index == index);
        let guest_cpu = g.map(|v| v.cpu);
        let matched = match (model_t, guest_commands, guest_cpu) {
            (Some(m), Some(c), Some(cpu)) => m.lpi == c.lpi && m.vcpu == cpu && c.vcpu == cpu,
            _ => false,
        };
        check.vectors.push(VectorCheck {
            index,
            device_id,
            event_id,
            model: model_t,
            model_error,
            guest_commands,
            guest_irq: g.map(|v| v.irq),
            guest_cpu,
            matched,
        });
    }
    check.all_match = !check.vectors.is_empty()
        && check.vectors.len() == request.vectors.len()
        && check.vectors.iter().all(|v| v.matched);
    check
}

/// What the second VM is given and what it must show.
#[derive(Clone, Debug)]
pub struct RestorePlan {
    /// The model's state after its own MOVIs.
    pub image: ItsImage,
    /// Per vector: (index, EventID, vCPU before, prediction).
    pub vectors: Vec<(u16, u32, u32, Target)>,
}

/// The model's own change: import KVM's saved state, move every vector's event to the
/// collection of the next vCPU with MOVI commands through the model's command queue, and
/// export the result with the predictions.
pub fn restore_plan(
    image: &ItsImage,
    ram: Region,
    vcpus: u32,
    device_id: u32,
    vectors: &[(u16, u32)],
) -> Result<RestorePlan, String> {
    let (mut its, mem) = model_of_kvm(image, ram, vcpus)?;
    // The ICID of each vCPU's collection (Linux maps one per CPU).
    let mut icid_of: BTreeMap<u32, u16> = BTreeMap::new();
    for (&icid, &t) in &image.collections {
        if let Some(v) = t {
            icid_of.entry(v).or_insert(icid);
        }
    }
    let mut before = Vec::new();
    let mut cmds = Vec::new();
    for &(index, event_id) in vectors {
        let t = its
            .translate(&mem, device_id, event_id)
            .map_err(|e| format!("vector {index}: {e}"))?;
        let to = (t.vcpu + 1) % vcpus;
        let icid = *icid_of.get(&to).ok_or(format!(
            "no collection targets vCPU {to}: the model cannot move vector {index} there"
        ))?;
        before.push((index, event_id, t.vcpu));
        cmds.push(RawCommand::movi(device_id, event_id, icid));
    }
    cmds.push(RawCommand::sync(0));
    // Queue them where the guest's next commands would go.
    let base = cbaser_base(image.cbaser);
    let qbytes = cbaser_queue_bytes(image.cbaser);
    let mut at = image.cwriter;
    for c in &cmds {
        mem.write_slice(&c.to_bytes(), GuestAddress(base + at))
            .map_err(|e| format!("writing the model's MOVI: {e}"))?;
        at = (at + 32) % qbytes;
    }
    let mut rd = NoRd;
    its.mmio_write(&mem, &mut rd, GITS_CWRITER, &at.to_le_bytes(), None);
    while its.commands_pending() {
        its.process_commands(&mem, &mut rd);
    }
    if let Some(e) = its.last_command_error() {
        return Err(format!("the model's MOVI failed: {e}"));
    }
    let moved = its
        .export_image(&mem, WorkLimit::default())
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (index, event_id, from) in before {
        let (lpi, vcpu) = moved
            .translate(device_id, event_id)
            .ok_or(format!("vector {index} does not translate after the move"))?;
        out.push((index, event_id, from, Target { lpi, vcpu }));
    }
    Ok(RestorePlan {
        image: moved,
        vectors: out,
    })
}

/// Compare the second VM's pending LPIs with the plan.
pub fn check_restore(
    plan: &RestorePlan,
    device_id: u32,
    signals: &[i32],
    pending: &BTreeSet<Target>,
    kvm_round_trip: bool,
) -> RestoreCheck {
    let mut r = RestoreCheck {
        kvm_round_trip,
        ..RestoreCheck::default()
    };
    let mut expected = BTreeSet::new();
    for (i, &(index, event_id, from, predicted)) in plan.vectors.iter().enumerate() {
        expected.insert(predicted);
        let landed: Vec<Target> = pending
            .iter()
            .copied()
            .filter(|t| t.lpi == predicted.lpi)
            .collect();
        let signal = signals.get(i).copied().unwrap_or(-1);
        r.vectors.push(RestoreVector {
            index,
            device_id,
            event_id,
            from_vcpu: from,
            predicted,
            signal,
            matched: signal == 1 && landed == [predicted],
            landed,
        });
    }
    r.unexpected = pending.difference(&expected).copied().collect();
    r.all_match = !r.vectors.is_empty()
        && r.vectors.iter().all(|v| v.matched)
        && r.unexpected.is_empty()
        && kvm_round_trip;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use vgic_its::regs::GITS_BASER0;

    const RAM: Region = Region::new(0x4000_0000, 0x100_0000);
    const DT: u64 = 0x4010_0000;
    const CT: u64 = 0x4020_0000;
    const CQ: u64 = 0x4030_0000;
    const ITT: u64 = 0x4040_0000;

    /// KVM stand-in: a model in KVM's format booted the way Linux boots an ITS with two
    /// CPUs and one 3-vector device (DeviceID 8), then saved with `kvm::store`, exactly as
    /// `KVM_DEV_ARM_ITS_SAVE_TABLES` leaves guest memory. Also returns the guest's queue.
    fn kvm_saved(moves: &[(u32, u16)]) -> (GuestMemoryMmap, SavedIts) {
        let (mem, _) = scratch_memory(RAM, 0).unwrap();
        let mut its = Its::new(kvm_model_config(2).unwrap());
        let mut rd = NoRd;
        let w = |its: &mut Its, rd: &mut NoRd, off: u64, v: u64| {
            its.mmio_write(&mem, rd, off, &v.to_le_bytes(), None)
        };
        w(&mut its, &mut rd, GITS_BASER0, (1 << 63) | DT | 7);
        w(&mut its, &mut rd, GITS_BASER0 + 8, (1 << 63) | CT);
        w(&mut its, &mut rd, GITS_CBASER, (1 << 63) | CQ | 15);
        its.mmio_write(&mem, &mut rd, GITS_CTLR, &1u32.to_le_bytes(), None);
        let mut cmds = vec![
            RawCommand::mapc(0, 0, true),
            RawCommand::mapc(1, 1, true),
            RawCommand::mapd(8, 1, ITT, true),
        ];
        for e in 0..3 {
            cmds.push(RawCommand::mapti(8, e, 8192 + e, 0));
        }
        for &(e, icid) in moves {
            cmds.push(RawCommand::movi(8, e, icid));
        }
        for (i, c) in cmds.iter().enumerate() {
            mem.write_slice(&c.to_bytes(), GuestAddress(CQ + 32 * i as u64))
                .unwrap();
        }
        w(&mut its, &mut rd, GITS_CWRITER, 32 * cmds.len() as u64);
        assert!(its.last_command_error().is_none());
        let img = its.export_image(&mem, WorkLimit::default()).unwrap();
        let regs = kvm::store(&img, &mem, LoadParams::kvm(2)).unwrap();
        let queue = read_queue(&regs, &mem);
        assert_eq!(queue.len(), 0x1_0000);
        let image = load_saved(&regs, &mem, 2);
        (
            mem,
            SavedIts {
                regs,
                image,
                queue,
                pause_ms: 1.0,
            },
        )
    }

    fn request(cpus: [u32; 3]) -> GuestRequest {
        GuestRequest {
            tag: "before".into(),
            vectors: (0..3)
                .map(|i| GuestVector {
                    index: i as u16,
                    irq: 14 + i,
                    cpu: cpus[i as usize],
                })
                .collect(),
        }
    }

    const VECTORS: [(u16, u32); 3] = [(0, 0), (1, 1), (2, 2)];

    #[test]
    fn kvm_state_guest_view_and_guest_commands_agree() {
        let (_mem, saved) = kvm_saved(&[(2, 1)]);
        let c = check_snapshot(&request([0, 0, 1]), &saved, RAM, 2, 8, &VECTORS);
        assert!(c.all_match, "{c:#?}");
        assert_eq!(c.vectors[2].model, Some(Target { lpi: 8194, vcpu: 1 }));
        assert_eq!((c.devices, c.events, c.collections), (1, 3, 2));
        assert_eq!(c.replay, "7 commands replayed");
        let report = ItsReport {
            snapshots: vec![c.clone()],
            ..ItsReport::default()
        };
        assert!(report.summary().contains(
            "its: vector 2 (DeviceID 0x8, EventID 2) -> LPI 8194 on vCPU 1 (model) = LPI 8194 on CPU 1 (guest): match"
        ));
        // The guest says CPU 0 where KVM has vCPU 1: a mismatch, reported.
        let c = check_snapshot(&request([0, 0, 0]), &saved, RAM, 2, 8, &VECTORS);
        assert!(!c.all_match && !c.vectors[2].matched && c.vectors[0].matched);
        // A vector the guest did not report.
        let c = check_snapshot(
            &request([0, 0, 1]),
            &saved,
            RAM,
            2,
            8,
            &[(0, 0), (1, 1), (3, 7)],
        );
        assert!(!c.all_match);
        assert!(c.vectors[2].model_error.is_some());
    }

    #[test]
    fn a_model_decoding_bug_would_show() {
        // KVM's tables say LPI 8194 for event 2; corrupt the guest's own MAPTI instead so
        // that the two sources disagree, as they would if either side were misread.
        let (_mem, mut saved) = kvm_saved(&[]);
        let slot = 5 * 32; // MAPTI event 2
        saved.queue[slot + 12] ^= 1; // pINTID 8194 -> 8195
        let c = check_snapshot(&request([0, 0, 0]), &saved, RAM, 2, 8, &VECTORS);
        assert!(!c.vectors[2].matched);
        assert_eq!(c.vectors[2].guest_commands.map(|t| t.lpi), Some(8195));
        // A wrapped queue cannot be replayed: reported, not guessed.
        let (_mem, mut saved) = kvm_saved(&[]);
        *saved.queue.last_mut().unwrap() = 1;
        let c = check_snapshot(&request([0, 0, 0]), &saved, RAM, 2, 8, &VECTORS);
        assert!(c.replay.contains("wrapped") && !c.all_match, "{}", c.replay);
        // Garbage registers: KVM's state cannot be read, every vector says why.
        let (mem, mut saved) = kvm_saved(&[]);
        saved.regs.iidr |= 1 << 12;
        saved.image = load_saved(&saved.regs, &mem, 2);
        let c = check_snapshot(&request([0, 0, 0]), &saved, RAM, 2, 8, &VECTORS);
        assert!(c.load_error.as_deref().unwrap().contains("GITS_IIDR"));
        assert!(
            c.vectors
                .iter()
                .all(|v| !v.matched && v.model_error.is_some())
        );
    }

    #[test]
    fn the_model_moves_events_and_predicts_the_second_vm() {
        let (_mem, saved) = kvm_saved(&[(2, 1)]);
        let image = saved.image.clone().unwrap();
        let plan = restore_plan(&image, RAM, 2, 8, &VECTORS).unwrap();
        let want: Vec<_> = plan
            .vectors
            .iter()
            .map(|v| (v.2, v.3.vcpu, v.3.lpi))
            .collect();
        assert_eq!(want, [(0, 1, 8192), (0, 1, 8193), (1, 0, 8194)]);
        // The plan's image is a KVM image: stored and loaded back it is the same.
        let (m2, _) = scratch_memory(RAM, 0).unwrap();
        let regs = kvm::store(&plan.image, &m2, LoadParams::kvm(2)).unwrap();
        assert_eq!(
            kvm::load(&regs, &m2, LoadParams::kvm(2)).unwrap(),
            plan.image
        );
        let pending: BTreeSet<Target> = plan.vectors.iter().map(|v| v.3).collect();
        let r = check_restore(&plan, 8, &[1, 1, 1], &pending, true);
        assert!(r.all_match, "{r:#?}");
        // An LPI on the wrong vCPU, a lost MSI, an extra LPI: each fails.
        let mut wrong = pending.clone();
        wrong.remove(&plan.vectors[0].3);
        wrong.insert(Target { lpi: 8192, vcpu: 0 });
        assert!(!check_restore(&plan, 8, &[1, 1, 1], &wrong, true).all_match);
        assert!(!check_restore(&plan, 8, &[1, 0, 1], &pending, true).all_match);
        let mut extra = pending.clone();
        extra.insert(Target { lpi: 9000, vcpu: 0 });
        let r = check_restore(&plan, 8, &[1, 1, 1], &extra, true);
        assert!(!r.all_match && r.unexpected.len() == 1);
        assert!(!check_restore(&plan, 8, &[1, 1, 1], &pending, false).all_match);
        // With one vCPU there is nowhere to move: a defined error.
        assert!(restore_plan(&image, RAM, 1, 8, &VECTORS).is_err());
    }

    #[test]
    fn requests_are_parsed_defensively() {
        let j = |s: &str| GuestResult::Json(serde_json::from_str(s).unwrap());
        assert_eq!(GuestRequest::parse(&j(r#"{"driver":"igb"}"#)), None);
        assert_eq!(
            GuestRequest::parse(&GuestResult::Text("its_request".into())),
            None
        );
        let r = GuestRequest::parse(&j(
            r#"{"its_request":"after","vectors":[{"index":1,"irq":15,"cpu":1}]}"#,
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            r.vectors,
            [GuestVector {
                index: 1,
                irq: 15,
                cpu: 1
            }]
        );
        for bad in [
            r#"{"its_request":"a b","vectors":[]}"#,
            r#"{"its_request":"toolongtag","vectors":[]}"#,
            r#"{"its_request":7,"vectors":[]}"#,
            r#"{"its_request":"x"}"#,
            r#"{"its_request":"x","vectors":[{"index":70000,"irq":1,"cpu":0}]}"#,
            r#"{"its_request":"x","vectors":[{"irq":1,"cpu":0}]}"#,
        ] {
            assert!(GuestRequest::parse(&j(bad)).unwrap().is_err(), "{bad}");
        }
        assert_eq!(answer("before"), "its before\n");
        assert!(answer(&"x".repeat(MAX_TAG)).len() <= 16);
    }
}
