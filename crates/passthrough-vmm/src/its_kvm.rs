// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The KVM side of the ITS checks (aarch64 only; the logic is in [`crate::its_check`]).
//!
//! - [`KvmIts`]: the in-kernel vITS's registers through `KVM_DEV_ARM_VGIC_GRP_ITS_REGS`
//!   (`kvm_device_attr.addr` points at a `u64` whatever the register's width) and the
//!   `KVM_DEV_ARM_VGIC_GRP_CTRL` attributes `KVM_DEV_ARM_ITS_SAVE_TABLES` /
//!   `KVM_DEV_ARM_ITS_RESTORE_TABLES` (Linux
//!   `Documentation/virt/kvm/devices/arm-vgic-its.rst`). KVM serves them only while no vCPU
//!   is in `KVM_RUN`: callers hold a [`crate::vcpu_gate::Paused`].
//! - [`ItsVm`]: a second VM that never runs a vCPU: vGICv3 and vITS initialized, LPIs
//!   enabled on every redistributor (`GICR_PROPBASER`, `GICR_PENDBASER`, `GICR_CTLR` through
//!   `KVM_DEV_ARM_VGIC_GRP_REDIST_REGS`, 32-bit halves, `arm-vgic-v3.rst`), the ITS restored
//!   in the documented order ("ITS Restore Sequence": redistributors first, then
//!   `GITS_CBASER`, the other registers, `RESTORE_TABLES`, `GITS_CTLR` last). An MSI is
//!   `KVM_SIGNAL_MSI` with `KVM_MSI_VALID_DEVID` at the ITS doorbell; where it landed is
//!   read back from the pending tables `KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES` writes (one
//!   bit per LPI in the pending table of the LPI's target vCPU, IHI 0069H 5.1.2). No guest
//!   code runs, so nothing but the MSIs the check sends can make an LPI pending.
//! - [`Inspector`]: the thread that serves the guest's requests during a run.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{
    KVM_ARM_VCPU_POWER_OFF, KVM_ARM_VCPU_PSCI_0_2, KVM_DEV_ARM_ITS_RESTORE_TABLES,
    KVM_DEV_ARM_ITS_SAVE_TABLES, KVM_DEV_ARM_VGIC_CTRL_INIT, KVM_DEV_ARM_VGIC_GRP_ADDR,
    KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_GRP_ITS_REGS, KVM_DEV_ARM_VGIC_GRP_REDIST_REGS,
    KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES, KVM_MSI_VALID_DEVID, KVM_VGIC_ITS_ADDR_TYPE,
    KVM_VGIC_V3_ADDR_TYPE_DIST, KVM_VGIC_V3_ADDR_TYPE_REDIST, kvm_create_device, kvm_device_attr,
    kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_ITS, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3, kvm_msi,
    kvm_userspace_memory_region, kvm_vcpu_init,
};
use kvm_ioctls::{Cap, DeviceFd, Kvm, VcpuFd, VmFd};
use vgic_its::abi::kvm::{self, KvmItsRegs, LoadParams};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::its_check::{self, GuestRequest, ItsReport, RestoreCheck, SavedIts, Target};
use crate::layout::Region;
use crate::uart::Uart;
use crate::vcpu_gate::VcpuGate;

/// A failed KVM call of the ITS checks: the ioctl, its object and the errno.
#[derive(Debug, thiserror::Error)]
pub enum ItsKvmError {
    /// A KVM ioctl failed.
    #[error("{op}: {source}")]
    Kvm {
        /// The ioctl and its object, e.g. "KVM_GET_DEVICE_ATTR ITS_REGS GITS_CBASER (0x80)".
        op: String,
        /// The errno.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Anything else (guest memory, layout).
    #[error("{0}")]
    Other(String),
}

fn kvm_err(op: impl Into<String>) -> impl FnOnce(kvm_ioctls::Error) -> ItsKvmError {
    let op = op.into();
    move |source| ItsKvmError::Kvm { op, source }
}

/// The name of an ITS register offset, for error messages.
fn its_reg_name(offset: u64) -> &'static str {
    match offset {
        0x0 => "GITS_CTLR",
        0x4 => "GITS_IIDR",
        0x8 => "GITS_TYPER",
        0x80 => "GITS_CBASER",
        0x88 => "GITS_CWRITER",
        0x90 => "GITS_CREADR",
        0x100..=0x138 => "GITS_BASER<n>",
        _ => "ITS register",
    }
}

/// Set a `KVM_DEV_ARM_VGIC_GRP_CTRL` attribute.
fn ctrl(dev: &DeviceFd, attr: u32, what: &str) -> Result<(), ItsKvmError> {
    let a = kvm_device_attr {
        group: KVM_DEV_ARM_VGIC_GRP_CTRL,
        attr: u64::from(attr),
        addr: 0,
        flags: 0,
    };
    dev.set_device_attr(&a).map_err(kvm_err(what.to_owned()))
}

/// The in-kernel vITS device.
#[derive(Debug, Clone, Copy)]
pub struct KvmIts<'a> {
    dev: &'a DeviceFd,
}

impl<'a> KvmIts<'a> {
    /// The vITS behind `dev` (a `KVM_DEV_TYPE_ARM_VGIC_ITS` device).
    pub fn new(dev: &'a DeviceFd) -> Self {
        KvmIts { dev }
    }

    /// Read the ITS register at `offset` (`KVM_GET_DEVICE_ATTR`, `ITS_REGS`).
    pub fn reg(&self, offset: u64) -> Result<u64, ItsKvmError> {
        let mut value: u64 = 0;
        let mut a = kvm_device_attr {
            group: KVM_DEV_ARM_VGIC_GRP_ITS_REGS,
            attr: offset,
            addr: &mut value as *mut u64 as u64,
            flags: 0,
        };
        // SAFETY: `a.addr` points at `value`, a live, exclusively borrowed u64: KVM writes
        // exactly 8 bytes there for every ITS_REGS register (arm-vgic-its.rst: "addr points
        // to a __u64 value whatever the width of the addressed register").
        unsafe { self.dev.get_device_attr(&mut a) }.map_err(kvm_err(format!(
            "KVM_GET_DEVICE_ATTR ITS_REGS {} ({offset:#x})",
            its_reg_name(offset)
        )))?;
        Ok(value)
    }

    /// Write the ITS register at `offset` (`KVM_SET_DEVICE_ATTR`, `ITS_REGS`).
    pub fn set_reg(&self, offset: u64, value: u64) -> Result<(), ItsKvmError> {
        let a = kvm_device_attr {
            group: KVM_DEV_ARM_VGIC_GRP_ITS_REGS,
            attr: offset,
            // KVM reads the u64 during the ioctl; `value` outlives it.
            addr: &value as *const u64 as u64,
            flags: 0,
        };
        self.dev.set_device_attr(&a).map_err(kvm_err(format!(
            "KVM_SET_DEVICE_ATTR ITS_REGS {} ({offset:#x}) = {value:#x}",
            its_reg_name(offset)
        )))
    }

    /// Every register of [`KvmItsRegs`].
    pub fn regs(&self) -> Result<KvmItsRegs, ItsKvmError> {
        let mut r = KvmItsRegs::default();
        for off in KvmItsRegs::offsets() {
            let v = self.reg(off)?;
            r.set(off, v);
        }
        Ok(r)
    }

    /// `KVM_DEV_ARM_ITS_SAVE_TABLES`: KVM writes its tables into guest memory.
    pub fn save_tables(&self) -> Result<(), ItsKvmError> {
        ctrl(
            self.dev,
            KVM_DEV_ARM_ITS_SAVE_TABLES,
            "KVM_DEV_ARM_ITS_SAVE_TABLES on the vITS",
        )
    }

    /// The restore sequence (registers in [`KvmItsRegs::restore_order`],
    /// `KVM_DEV_ARM_ITS_RESTORE_TABLES`, `GITS_CTLR`).
    pub fn restore(&self, regs: &KvmItsRegs) -> Result<(), ItsKvmError> {
        for (off, v) in regs.restore_order() {
            self.set_reg(off, v)?;
        }
        ctrl(
            self.dev,
            KVM_DEV_ARM_ITS_RESTORE_TABLES,
            "KVM_DEV_ARM_ITS_RESTORE_TABLES on the vITS",
        )?;
        self.set_reg(0, u64::from(regs.ctlr))
    }
}

/// What the inspector needs from the VMM.
pub struct InspectorContext {
    /// The guest's vITS.
    pub its: Arc<DeviceFd>,
    /// The vCPU threads' gate.
    pub gate: Arc<VcpuGate>,
    /// Guest RAM.
    pub memory: GuestMemoryMmap,
    /// Where guest RAM is.
    pub ram: Region,
    /// vCPUs of the guest.
    pub vcpus: u32,
    /// The console: requests come in as result frames, answers go out as input.
    pub uart: Arc<Uart>,
    /// The passed-through function's DeviceID and its enabled vectors: (MSI-X index,
    /// EventID = the data the guest programmed).
    pub vectors: VectorsFn,
}

/// The thread serving the guest's ITS check requests.
pub struct Inspector {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<ItsReport>,
}

/// How long a pause may take before the check gives up.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the inspector looks at the console.
const POLL: Duration = Duration::from_millis(20);

impl Inspector {
    /// Start serving requests.
    pub fn spawn(ctx: InspectorContext) -> Result<Self, ItsKvmError> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("its-inspector".into())
            .spawn(move || serve(ctx, &thread_stop))
            .map_err(|e| ItsKvmError::Other(format!("starting the ITS inspector thread: {e}")))?;
        Ok(Inspector { stop, handle })
    }

    /// Serve what is left and return the report (call after the guest stopped).
    pub fn finish(self) -> ItsReport {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap_or_else(|_| ItsReport {
            errors: vec!["the ITS inspector thread panicked".to_owned()],
            ..ItsReport::default()
        })
    }
}

fn serve(ctx: InspectorContext, stop: &AtomicBool) -> ItsReport {
    let mut report = ItsReport::default();
    let mut seen = 0usize;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        let results = ctx.uart.collected().results;
        for r in results.iter().skip(seen) {
            match GuestRequest::parse(r) {
                None => {}
                Some(Err(why)) => report.errors.push(format!("guest request refused: {why}")),
                Some(Ok(req)) => {
                    if stopping {
                        report.errors.push(format!(
                            "request {:?} came after the guest stopped",
                            req.tag
                        ));
                        continue;
                    }
                    match check(&ctx, &req) {
                        Ok(c) => report.snapshots.push(c),
                        Err(e) => report.errors.push(format!("request {:?}: {e}", req.tag)),
                    }
                    ctx.uart.queue_input(its_check::answer(&req.tag).as_bytes());
                }
            }
        }
        seen = results.len();
        if stopping {
            return report;
        }
        std::thread::sleep(POLL);
    }
}

/// One request: save KVM's vITS with the vCPUs paused, compare, then the reverse check.
fn check(
    ctx: &InspectorContext,
    req: &GuestRequest,
) -> Result<its_check::SnapshotCheck, ItsKvmError> {
    let (devid, vectors) = (ctx.vectors)();
    let its = KvmIts::new(&ctx.its);
    let t = Instant::now();
    let saved = {
        let _paused = ctx
            .gate
            .pause(PAUSE_TIMEOUT)
            .map_err(|e| ItsKvmError::Other(e.to_string()))?;
        its.save_tables()?;
        let regs = its.regs()?;
        let image = its_check::load_saved(&regs, &ctx.memory, ctx.vcpus);
        let queue = its_check::read_queue(&regs, &ctx.memory);
        SavedIts {
            regs,
            image,
            queue,
            pause_ms: t.elapsed().as_secs_f64() * 1000.0,
        }
    };
    log::info!(
        "ITS check {:?}: KVM's vITS saved, vCPUs paused {:.1} ms",
        req.tag,
        saved.pause_ms
    );
    let mut c = its_check::check_snapshot(req, &saved, ctx.ram, ctx.vcpus, devid, &vectors);
    c.restore = Some(match &saved.image {
        Ok(image) => reverse_check(image, ctx.ram, ctx.vcpus, devid, &vectors),
        Err(e) => RestoreCheck {
            error: Some(format!("KVM's state could not be read: {e}")),
            ..RestoreCheck::default()
        },
    });
    Ok(c)
}

/// The model moves every vector, a second VM restores the result, MSIs must land as
/// predicted.
pub fn reverse_check(
    image: &vgic_its::ItsImage,
    ram: Region,
    vcpus: u32,
    devid: u32,
    vectors: &[(u16, u32)],
) -> RestoreCheck {
    let failed = |e: String| RestoreCheck {
        error: Some(e),
        ..RestoreCheck::default()
    };
    let plan = match its_check::restore_plan(image, ram, vcpus, devid, vectors) {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    let run = || -> Result<RestoreCheck, ItsKvmError> {
        let vm = ItsVm::new(vcpus, &[ram])?;
        let regs = kvm::store(&plan.image, vm.memory(), LoadParams::kvm(vcpus)).map_err(|e| {
            ItsKvmError::Other(format!("writing the model's state as KVM tables: {e}"))
        })?;
        vm.its().restore(&regs)?;
        let mut signals = Vec::new();
        for &(_, event_id, _, _) in &plan.vectors {
            signals.push(vm.signal_msi(devid, event_id)?);
        }
        let pending = vm.pending_lpis()?;
        vm.its().save_tables()?;
        let back = kvm::load(&vm.its().regs()?, vm.memory(), LoadParams::kvm(vcpus));
        // Equal but for the cacheability and shareability KVM rewrites in every base
        // register it is given (the tables' content is what is compared).
        let round_trip = back.as_ref() == Ok(&kvm::sanitised(&plan.image));
        if let Err(e) = &back {
            log::warn!("the second VM's SAVE_TABLES does not load: {e}");
        }
        Ok(its_check::check_restore(
            &plan, devid, &signals, &pending, round_trip,
        ))
    };
    run().unwrap_or_else(|e| failed(e.to_string()))
}

/// KVM's default MPIDR of vCPU `id` as `KVM_DEV_ARM_VGIC_GRP_REDIST_REGS` wants it in
/// `attr` bits \[63:32\] (Aff3.Aff2.Aff1.Aff0; KVM's reset value: Aff0 = id\[3:0\],
/// Aff1 = id\[11:4\], Aff2 = id\[19:12\]).
fn mpidr_attr(id: u32) -> u64 {
    let aff0 = u64::from(id & 0xf);
    let aff1 = u64::from((id >> 4) & 0xff);
    let aff2 = u64::from((id >> 12) & 0xff);
    ((aff2 << 16) | (aff1 << 8) | aff0) << 32
}

/// `GICR_CTLR`, `GICR_PROPBASER`, `GICR_PENDBASER` offsets in the RD_base frame.
const GICR_CTLR: u64 = 0x0;
const GICR_PROPBASER: u64 = 0x70;
const GICR_PENDBASER: u64 = 0x78;
/// `GICR_CTLR.EnableLPIs`.
const GICR_CTLR_ENABLE_LPIS: u32 = 1;
/// INTID bits the second VM's LPI tables cover (`GICR_PROPBASER.IDbits + 1`): 16, KVM's
/// maximum with an ITS.
const LPI_ID_BITS: u32 = 16;
/// Bytes of an LPI Configuration or Pending table for 16 INTID bits, rounded up to 64 KiB.
const LPI_TABLE_BYTES: u64 = 0x1_0000;

/// A VM that only holds a vGICv3 and a vITS (see the module documentation).
pub struct ItsVm {
    // Declared (and so dropped) before `memory`: KVM's memory slots point into it.
    its: DeviceFd,
    gic: DeviceFd,
    _vcpus: Vec<VcpuFd>,
    vm: VmFd,
    _kvm: Kvm,
    vcpu_count: u32,
    its_base: u64,
    pend_base: u64,
    memory: GuestMemoryMmap,
}

impl ItsVm {
    /// A VM with `vcpus` vCPUs and RAM at `ram` (lazily allocated), its GIC, ITS and LPI
    /// tables placed above the highest RAM address; LPIs enabled on every redistributor.
    pub fn new(vcpus: u32, ram: &[Region]) -> Result<Self, ItsKvmError> {
        let kvm = Kvm::new().map_err(kvm_err("opening /dev/kvm for the second VM"))?;
        let ipa_cap = kvm.check_extension(Cap::ArmVmIPASize);
        let ipa_bits = if ipa_cap {
            kvm.get_host_ipa_limit() as u64
        } else {
            40
        };
        let vm = kvm
            .create_vm_with_type(if ipa_cap { ipa_bits } else { 0 })
            .map_err(kvm_err("KVM_CREATE_VM (second VM)"))?;
        let top = ram
            .iter()
            .map(|r| r.base.saturating_add(r.size))
            .max()
            .unwrap_or(0);
        let aux = top.div_ceil(1 << 30) * (1 << 30);
        let gicd = aux;
        let gicr = aux + 0x10_0000;
        let its_base = aux + 0x40_0000;
        let tables = aux + 0x80_0000;
        let tables_len = LPI_TABLE_BYTES * (1 + u64::from(vcpus));
        if tables + tables_len > 1 << ipa_bits || u64::from(vcpus) * 0x2_0000 > 0x30_0000 {
            return Err(ItsKvmError::Other(format!(
                "second VM: {vcpus} vCPUs and RAM up to {top:#x} do not fit {ipa_bits} IPA bits"
            )));
        }
        let mut ranges = Vec::new();
        for r in ram {
            let len = usize::try_from(r.size).map_err(|e| ItsKvmError::Other(e.to_string()))?;
            ranges.push((GuestAddress(r.base), len));
        }
        ranges.push((GuestAddress(tables), tables_len as usize));
        let memory = GuestMemoryMmap::from_ranges(&ranges)
            .map_err(|e| ItsKvmError::Other(format!("second VM memory: {e}")))?;
        for (slot, region) in memory.iter().enumerate() {
            let base = region.start_addr().0;
            let host = memory
                .get_host_address(GuestAddress(base))
                .map_err(|e| ItsKvmError::Other(format!("second VM memory: {e}")))?;
            let m = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: base,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: `host` is the start of `region`, a mapping of `region.len()` bytes
            // that `memory` owns; `memory` is a field of the returned ItsVm declared after
            // the VM fd, so it is unmapped only after the VM (and its slots) are gone, and
            // no vCPU of this VM ever runs.
            unsafe { vm.set_user_memory_region(m) }.map_err(kvm_err(format!(
                "KVM_SET_USER_MEMORY_REGION slot {slot} at {base:#x} (second VM)"
            )))?;
        }
        let mut init = kvm_vcpu_init::default();
        vm.get_preferred_target(&mut init)
            .map_err(kvm_err("KVM_ARM_PREFERRED_TARGET (second VM)"))?;
        init.features[0] |= 1 << KVM_ARM_VCPU_PSCI_0_2;
        let mut vcpu_fds = Vec::new();
        for id in 0..vcpus {
            let v = vm
                .create_vcpu(u64::from(id))
                .map_err(kvm_err(format!("KVM_CREATE_VCPU {id} (second VM)")))?;
            let mut i = init;
            if id > 0 {
                i.features[0] |= 1 << KVM_ARM_VCPU_POWER_OFF;
            }
            v.vcpu_init(&i)
                .map_err(kvm_err(format!("KVM_ARM_VCPU_INIT {id} (second VM)")))?;
            vcpu_fds.push(v);
        }
        let create = |type_: u32, what: &str| {
            let mut d = kvm_create_device {
                type_,
                fd: 0,
                flags: 0,
            };
            vm.create_device(&mut d)
                .map_err(kvm_err(format!("KVM_CREATE_DEVICE {what} (second VM)")))
        };
        let addr = |dev: &DeviceFd, attr: u32, what: &str, value: u64| {
            let a = kvm_device_attr {
                group: KVM_DEV_ARM_VGIC_GRP_ADDR,
                attr: u64::from(attr),
                // KVM reads the u64 during the ioctl; `value` outlives it.
                addr: &value as *const u64 as u64,
                flags: 0,
            };
            dev.set_device_attr(&a).map_err(kvm_err(format!(
                "KVM_SET_DEVICE_ATTR {what} base {value:#x} (second VM)"
            )))
        };
        let gic = create(kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3, "vGICv3")?;
        addr(&gic, KVM_VGIC_V3_ADDR_TYPE_DIST, "GICD", gicd)?;
        addr(&gic, KVM_VGIC_V3_ADDR_TYPE_REDIST, "GICR", gicr)?;
        let its = create(kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_ITS, "vITS")?;
        addr(&its, KVM_VGIC_ITS_ADDR_TYPE, "ITS", its_base)?;
        ctrl(
            &gic,
            KVM_DEV_ARM_VGIC_CTRL_INIT,
            "KVM_DEV_ARM_VGIC_CTRL_INIT vGICv3 (second VM)",
        )?;
        ctrl(
            &its,
            KVM_DEV_ARM_VGIC_CTRL_INIT,
            "KVM_DEV_ARM_VGIC_CTRL_INIT vITS (second VM)",
        )?;
        let vmx = ItsVm {
            its,
            gic,
            _vcpus: vcpu_fds,
            vm,
            _kvm: kvm,
            vcpu_count: vcpus,
            its_base,
            pend_base: tables + LPI_TABLE_BYTES,
            memory,
        };
        // Redistributors first (the restore sequence's step b): the LPI Configuration
        // table (shared), a Pending table per vCPU, then EnableLPIs. Both tables are zero.
        let prop = tables | u64::from(LPI_ID_BITS - 1);
        for id in 0..vcpus {
            vmx.set_gicr64(id, GICR_PROPBASER, prop)?;
            vmx.set_gicr64(id, GICR_PENDBASER, vmx.pending_table(id))?;
        }
        for id in 0..vcpus {
            vmx.set_gicr32(id, GICR_CTLR, GICR_CTLR_ENABLE_LPIS)?;
        }
        Ok(vmx)
    }

    /// The VM's memory (write the ITS tables here before [`KvmIts::restore`]).
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The VM's vITS.
    pub fn its(&self) -> KvmIts<'_> {
        KvmIts::new(&self.its)
    }

    fn pending_table(&self, vcpu: u32) -> u64 {
        self.pend_base + u64::from(vcpu) * LPI_TABLE_BYTES
    }

    fn set_gicr32(&self, vcpu: u32, offset: u64, value: u32) -> Result<(), ItsKvmError> {
        let a = kvm_device_attr {
            group: KVM_DEV_ARM_VGIC_GRP_REDIST_REGS,
            attr: mpidr_attr(vcpu) | offset,
            // KVM reads the u32 during the ioctl; `value` outlives it.
            addr: &value as *const u32 as u64,
            flags: 0,
        };
        self.gic.set_device_attr(&a).map_err(kvm_err(format!(
            "KVM_SET_DEVICE_ATTR REDIST_REGS vCPU {vcpu} offset {offset:#x} = {value:#x} (second VM)"
        )))
    }

    fn set_gicr64(&self, vcpu: u32, offset: u64, value: u64) -> Result<(), ItsKvmError> {
        self.set_gicr32(vcpu, offset, value as u32)?;
        self.set_gicr32(vcpu, offset + 4, (value >> 32) as u32)
    }

    /// `KVM_SIGNAL_MSI`: `event_id` from `device_id` to the ITS doorbell
    /// (`GITS_TRANSLATER`). KVM returns 1 when it delivered the MSI.
    pub fn signal_msi(&self, device_id: u32, event_id: u32) -> Result<i32, ItsKvmError> {
        let doorbell = self.its_base + hw_defs::gic::GITS_TRANSLATER;
        let msi = kvm_msi {
            address_lo: doorbell as u32,
            address_hi: (doorbell >> 32) as u32,
            data: event_id,
            flags: KVM_MSI_VALID_DEVID,
            devid: device_id,
            ..Default::default()
        };
        self.vm.signal_msi(msi).map_err(kvm_err(format!(
            "KVM_SIGNAL_MSI DeviceID {device_id:#x} EventID {event_id} (second VM)"
        )))
    }

    /// Every pending LPI and its vCPU: `KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES`, then the
    /// bits of each vCPU's pending table (the first KiB, INTIDs below 8192, is not LPIs).
    pub fn pending_lpis(&self) -> Result<BTreeSet<Target>, ItsKvmError> {
        ctrl(
            &self.gic,
            KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES,
            "KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES (second VM)",
        )?;
        let mut set = BTreeSet::new();
        let bytes = (1usize << LPI_ID_BITS) / 8;
        let mut table = vec![0u8; bytes];
        for vcpu in 0..self.vcpu_count {
            self.memory
                .read_slice(&mut table, GuestAddress(self.pending_table(vcpu)))
                .map_err(|e| {
                    ItsKvmError::Other(format!("reading vCPU {vcpu}'s pending table: {e}"))
                })?;
            for (i, b) in table.iter().enumerate().skip(1024) {
                for bit in 0..8 {
                    if b & (1 << bit) != 0 {
                        set.insert(Target {
                            lpi: (i * 8 + bit) as u32,
                            vcpu,
                        });
                    }
                }
            }
        }
        Ok(set)
    }
}

/// The passed-through function's DeviceID and its enabled vectors, on request: (MSI-X
/// index, EventID).
pub type VectorsFn = Box<dyn Fn() -> (u32, Vec<(u16, u32)>) + Send>;

/// The enabled vectors of a passthrough device, for [`InspectorContext::vectors`].
pub fn vectors_of<T>(
    dev: &Arc<Mutex<T>>,
    records: impl Fn(&T) -> Vec<(u16, u32)> + Send + 'static,
    devid: u32,
) -> VectorsFn
where
    T: Send + 'static,
{
    let dev = Arc::clone(dev);
    Box::new(move || {
        let d = dev.lock().unwrap_or_else(PoisonError::into_inner);
        (devid, records(&d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpidr_attr_follows_kvms_reset_mpidr() {
        assert_eq!(mpidr_attr(0), 0);
        assert_eq!(mpidr_attr(1), 1 << 32);
        assert_eq!(mpidr_attr(17), ((1 << 8) | 1) << 32);
        assert_eq!(its_reg_name(0x108), "GITS_BASER<n>");
    }
}
