// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The KVM side on riscv64: VM, RAM, vCPUs, KVM's in-kernel AIA (vIMSIC per vCPU at the
//! planned addresses, an APLIC for the UART), Image loading and the vCPU run loops.
//!
//! The call sequence (Linux `Documentation/virt/kvm/api.rst`, and the RISC-V AIA device of
//! `Documentation/virt/kvm/devices/riscv-aia.rst` as `crates/kvm-aia` drives it):
//!
//! 1. `KVM_CREATE_VM` (type 0), RAM as memory slot 0;
//! 2. every vCPU: `KVM_CREATE_VCPU`; KVM RISC-V leaves all but vCPU 0 stopped, and the guest
//!    starts them with the SBI HSM extension, which KVM handles;
//! 3. the ISA extensions and the timer frequency read back from vCPU 0
//!    (`KVM_REG_RISCV_ISA_EXT`, `KVM_REG_RISCV_TIMER`) for the device tree; Ssaia must be
//!    there (the guest's IMSIC driver needs it);
//! 4. `KVM_CREATE_DEVICE(KVM_DEV_TYPE_RISCV_AIA)`: mode, identities, APLIC sources, hart
//!    bits, each vCPU's vIMSIC page (`layout.imsic` + hart * 4 KiB, AIA 1.0 §3.6), the APLIC
//!    base, `CTRL_INIT` ([`kvm_aia::AiaDevice::create_and_init`]);
//! 5. after [`Vm::new`]: MSI routes (`KVM_IRQ_ROUTING_MSI`, address = the vIMSIC page of
//!    the target hart, data = the interrupt identity, no DeviceID), irqfds, BAR slots;
//! 6. [`Vm::load`]: the Image at RAM + 2 MiB, initramfs and DTB at the top of RAM, and vCPU 0
//!    at the Image with `a0` = its hart ID (0) and `a1` = the DTB (Linux
//!    `Documentation/arch/riscv/boot.rst`);
//! 7. [`Vm::run`]: one thread per vCPU until SBI SRST (`KVM_SYSTEM_EVENT_SHUTDOWN` or
//!    `RESET`) or an error.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use doorbell_planner::{ControllerGeometry, StrategyChoice};
use kvm_aia::{AiaDevice, AiaMode, AiaSetup, NumIds};
use kvm_bindings::{
    KVM_REG_RISCV, KVM_REG_RISCV_CORE, KVM_REG_RISCV_ISA_EXT, KVM_REG_RISCV_ISA_SINGLE,
    KVM_REG_RISCV_TIMER, KVM_REG_SIZE_U64, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
    kvm_userspace_memory_region,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use msi_trap::msix::layout::RelocationPolicy;
use riscv_imsic::{GeometryConfig, ImsicConfig};
use vfio_passthrough::setup::{GuestSetup, PreparedDevice};
use vfio_passthrough::{KvmInterruptGroup, KvmMsiRouter, KvmSlotMapper, VfioBackend};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::boot::{BootPlan, IMAGE_HEADER_SIZE, ImageHeader};
use crate::cli::VmmConfig;
use crate::fdt_riscv::{RiscvFdtConfig, build_riscv_fdt};
use crate::layout::LayoutError;
use crate::layout_riscv::{APLIC_SOURCES, IMSIC_IDS, RiscvLayout, UART_SOURCE};
use crate::mmio::MmioBus;
use crate::pci::PciBus;
use crate::report::{GuestExit, ImsicSummary, Report, Timings};
use crate::uart::Uart;
use crate::vm_common::{RAM_SLOT, VmError, install_kick_handler, kvm_err, stop_vcpus};

/// KVM's AIA mode: a hardware guest interrupt file when one is free, else KVM's emulation.
pub const AIA_MODE: AiaMode = AiaMode::Auto;

/// The ISA extensions the device tree may list, with their `KVM_RISCV_ISA_EXT_*` index
/// (`arch/riscv/include/uapi/asm/kvm.h`); those KVM reports enabled on vCPU 0 are listed.
/// Extensions whose binding needs more properties (Zicbom's block size) are left out.
const ISA_EXTENSIONS: &[(&str, u64)] = &[
    ("i", 5),
    ("m", 6),
    ("a", 0),
    ("f", 3),
    ("d", 2),
    ("c", 1),
    ("zicntr", 19),
    ("zicsr", 20),
    ("zifencei", 21),
    ("zihintpause", 10),
    ("zihpm", 22),
    ("zba", 17),
    ("zbb", 13),
    ("zbs", 18),
    ("ssaia", 14),
    ("sstc", 8),
    ("svinval", 9),
    ("svpbmt", 7),
];
/// Index of Ssaia in `KVM_RISCV_ISA_EXT_*`.
const ISA_EXT_SSAIA: u64 = 14;

fn riscv_reg(kind: u32, index: u64) -> u64 {
    KVM_REG_RISCV as u64 | KVM_REG_SIZE_U64 | u64::from(kind) | index
}

/// `struct kvm_riscv_core`: `regs.pc` is word 0, `regs.a0` word 10, `regs.a1` word 11.
const REG_PC: u64 = 0;
const REG_A0: u64 = 10;
const REG_A1: u64 = 11;
/// `struct kvm_riscv_timer`: `frequency` is word 0.
const REG_TIMER_FREQUENCY: u64 = 0;

fn get_reg(vcpu: &VcpuFd, id: u64, what: &str) -> Result<u64, VmError> {
    let mut b = [0u8; 8];
    vcpu.get_one_reg(id, &mut b)
        .map_err(kvm_err(format!("KVM_GET_ONE_REG {what}")))?;
    Ok(u64::from_le_bytes(b))
}

/// A complete RISC-V VM whose vCPUs have not run yet.
pub struct Vm {
    _kvm: Kvm,
    vm_fd: Arc<VmFd>,
    layout: RiscvLayout,
    memory: GuestMemoryMmap,
    vcpus: Vec<VcpuFd>,
    aia: AiaDevice,
    setup: AiaSetup,
    isa: Vec<&'static str>,
    timebase_hz: u32,
    mmio: Arc<MmioBus>,
    uart: Arc<Uart>,
    pci: Arc<PciBus>,
    reserved_memory_node: bool,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("layout", &self.layout)
            .field("vcpus", &self.vcpus.len())
            .field("isa", &self.isa)
            .finish_non_exhaustive()
    }
}

impl Vm {
    /// Creates the VM for `layout`, with the console echoing to `echo` if given.
    pub fn new(layout: RiscvLayout, echo: Option<Box<dyn Write + Send>>) -> Result<Self, VmError> {
        let t = Instant::now();
        layout.validate()?;
        let kvm = Kvm::new().map_err(kvm_err("opening /dev/kvm"))?;
        let vm_fd = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        let ram = layout.ram;
        let ram_len = usize::try_from(ram.size).map_err(|_| VmError::Ram {
            base: ram.base,
            size: ram.size,
            reason: "larger than the host address space".to_owned(),
        })?;
        let memory =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(ram.base), ram_len)]).map_err(|e| {
                VmError::Ram {
                    base: ram.base,
                    size: ram.size,
                    reason: e.to_string(),
                }
            })?;
        let host = memory
            .get_host_address(GuestAddress(ram.base))
            .map_err(|e| VmError::Ram {
                base: ram.base,
                size: ram.size,
                reason: e.to_string(),
            })?;
        let region = kvm_userspace_memory_region {
            slot: RAM_SLOT,
            flags: 0,
            guest_phys_addr: ram.base,
            memory_size: ram.size,
            userspace_addr: host as u64,
        };
        // SAFETY: `host` is the start of the `ram.size`-byte anonymous mapping `memory`
        // owns; `memory` lives in the returned `Vm` and is unmapped only after every vCPU
        // thread has stopped (`Vm::run`, `stop_vcpus`), so KVM never sees it go away while
        // the guest can touch it.
        unsafe { vm_fd.set_user_memory_region(region) }
            .map_err(kvm_err(format!("KVM_SET_USER_MEMORY_REGION RAM at {ram}")))?;

        let mut vcpus = Vec::with_capacity(layout.cpus as usize);
        for id in 0..layout.cpus {
            vcpus.push(
                vm_fd
                    .create_vcpu(u64::from(id))
                    .map_err(kvm_err(format!("KVM_CREATE_VCPU {id}")))?,
            );
        }
        let boot = vcpus.first().ok_or(VmError::Layout(LayoutError::Cpus {
            cpus: 0,
            max: crate::layout_riscv::MAX_CPUS,
        }))?;
        // What KVM gives the vCPUs; an extension KVM does not know reads as ENOENT/EINVAL.
        let mut isa = Vec::new();
        for &(name, index) in ISA_EXTENSIONS {
            let id = riscv_reg(
                KVM_REG_RISCV_ISA_EXT,
                u64::from(KVM_REG_RISCV_ISA_SINGLE) | index,
            );
            let mut b = [0u8; 8];
            if boot.get_one_reg(id, &mut b).is_ok() && u64::from_le_bytes(b) == 1 {
                isa.push(name);
            }
        }
        let ssaia = riscv_reg(
            KVM_REG_RISCV_ISA_EXT,
            u64::from(KVM_REG_RISCV_ISA_SINGLE) | ISA_EXT_SSAIA,
        );
        if get_reg(boot, ssaia, "ISA_EXT Ssaia of vCPU 0")? != 1 {
            return Err(VmError::Aia {
                op: "reading vCPU 0's ISA".to_owned(),
                reason: "the vCPUs lack Ssaia: KVM gives this guest no IMSIC".to_owned(),
            });
        }
        let freq = get_reg(
            boot,
            riscv_reg(KVM_REG_RISCV_TIMER, REG_TIMER_FREQUENCY),
            "timer frequency of vCPU 0",
        )?;
        let timebase_hz = u32::try_from(freq).map_err(|_| VmError::Aia {
            op: "reading vCPU 0's timer frequency".to_owned(),
            reason: format!("{freq} Hz does not fit timebase-frequency's 32 bits"),
        })?;
        log::info!(
            "{} vCPUs ready after {:?}; ISA {:?}, timebase {timebase_hz} Hz",
            layout.cpus,
            t.elapsed(),
            isa
        );

        let imsic = ImsicConfig::uniform(
            GeometryConfig::supervisor_only(layout.imsic.base, layout.cpus, 0),
            layout.cpus,
            NumIds::new(IMSIC_IDS).map_err(|e| VmError::Aia {
                op: format!("{IMSIC_IDS} vIMSIC identities"),
                reason: e.to_string(),
            })?,
            0,
        );
        let setup = AiaSetup::from_imsic(AIA_MODE, &imsic, APLIC_SOURCES, Some(layout.aplic.base))
            .map_err(|e| aia_err("vIMSIC layout", e))?;
        for (i, page) in setup.imsics.iter().enumerate() {
            if Some(*page) != layout.imsic_page(i as u32) {
                return Err(aia_err(
                    "vIMSIC layout",
                    kvm_aia::Error::Invalid {
                        what: "vIMSIC layout",
                        reason: format!("vCPU {i}'s page {page:#x} is not the memory map's"),
                    },
                ));
            }
        }
        let aia = AiaDevice::create_and_init(&vm_fd, &setup)
            .map_err(|e| aia_err("creating KVM's AIA device", e))?;
        log::info!("AIA ready after {:?}", t.elapsed());

        let vm_fd = Arc::new(vm_fd);
        let mmio = Arc::new(MmioBus::new());
        let uart = Arc::new(Uart::new(echo));
        // KVM_IRQ_LINE on RISC-V with the in-kernel AIA: the irq is the APLIC source.
        let irq_vm = Arc::clone(&vm_fd);
        uart.set_irq_line(Box::new(move |level| {
            if let Err(e) = irq_vm.set_irq_line(UART_SOURCE, level) {
                log::warn!("KVM_IRQ_LINE UART APLIC source {UART_SOURCE} level {level}: {e}");
            }
        }));
        mmio.insert(layout.uart, uart.clone())?;
        let pci = Arc::new(PciBus::new(&mmio, layout.pci_mmio32, layout.ecam_buses()));
        mmio.insert(layout.ecam, pci.clone())?;
        Ok(Vm {
            _kvm: kvm,
            vm_fd,
            layout,
            memory,
            vcpus,
            aia,
            setup,
            isa,
            timebase_hz,
            mmio,
            uart,
            pci,
            reserved_memory_node: false,
        })
    }

    /// The VM, for MSI routes, irqfds and memory slots.
    pub fn vm_fd(&self) -> &Arc<VmFd> {
        &self.vm_fd
    }

    /// The memory map.
    pub fn layout(&self) -> &RiscvLayout {
        &self.layout
    }

    /// Guest RAM.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The MMIO bus.
    pub fn mmio_bus(&self) -> &Arc<MmioBus> {
        &self.mmio
    }

    /// The PCI bus behind the ECAM window.
    pub fn pci_bus(&self) -> &Arc<PciBus> {
        &self.pci
    }

    /// The console.
    pub fn uart(&self) -> &Arc<Uart> {
        &self.uart
    }

    /// KVM's AIA setup (each vCPU's vIMSIC page), for MSI routes.
    pub fn aia_setup(&self) -> &AiaSetup {
        &self.setup
    }

    /// Whether the device tree [`load`](Self::load) wrote has a `reserved-memory` node,
    /// read from the blob (the builder never makes one).
    pub fn reserved_memory_node(&self) -> bool {
        self.reserved_memory_node
    }

    /// The interrupt controllers for the report: each vCPU's vIMSIC page as KVM has it.
    pub fn imsic_summary(&self) -> ImsicSummary {
        let pages = (0..self.layout.cpus)
            .map(|i| self.aia.imsic_addr(i).unwrap_or(u64::MAX))
            .collect();
        ImsicSummary {
            mode: match AIA_MODE {
                AiaMode::Emulation => "emulation",
                AiaMode::HwAccel => "hwaccel",
                AiaMode::Auto => "auto",
            }
            .to_owned(),
            pages,
            ids: IMSIC_IDS,
            aplic: self.layout.aplic.base,
        }
    }

    /// Loads the Image, the initramfs and the device tree per [`BootPlan`] and points
    /// vCPU 0 at the kernel: `pc` = the Image, `a0` = hart ID 0, `a1` = the DTB
    /// (`Documentation/arch/riscv/boot.rst`).
    pub fn load(
        &mut self,
        kernel: &Path,
        initrd: Option<&Path>,
        cmdline: &str,
    ) -> Result<BootPlan, VmError> {
        let io = |op, path: &Path| {
            let path = path.to_owned();
            move |source| VmError::Io { op, path, source }
        };
        let mut kfile = File::open(kernel).map_err(io("opening kernel", kernel))?;
        let mut head = [0u8; IMAGE_HEADER_SIZE];
        kfile
            .read_exact(&mut head)
            .map_err(io("reading the Image header of", kernel))?;
        let header = ImageHeader::parse_riscv(&head)?;
        let klen = kfile
            .metadata()
            .map_err(io("reading the size of", kernel))?
            .len();
        let initrd_file = match initrd {
            Some(p) => {
                let f = File::open(p).map_err(io("opening initramfs", p))?;
                let len = f.metadata().map_err(io("reading the size of", p))?.len();
                Some((p, f, len))
            }
            None => None,
        };
        let plan = BootPlan::new(
            self.layout.ram,
            &header,
            klen,
            initrd_file.as_ref().map(|(_, _, len)| *len),
        )?;
        let mut kfile = File::open(kernel).map_err(io("opening kernel", kernel))?;
        self.copy_in(&mut kfile, klen, plan.kernel_load, "kernel Image", kernel)?;
        if let (Some((path, mut file, len)), Some(region)) = (initrd_file, plan.initrd) {
            self.copy_in(&mut file, len, region.base, "initramfs", path)?;
        }
        let dtb = build_riscv_fdt(&RiscvFdtConfig {
            layout: &self.layout,
            cmdline,
            initrd: plan.initrd,
            isa_extensions: &self.isa,
            timebase_hz: self.timebase_hz,
            mmu_type: "riscv,sv39",
        })?;
        self.reserved_memory_node = dtb.windows(15).any(|w| w == b"reserved-memory");
        self.memory
            .write_slice(&dtb, GuestAddress(plan.dtb.base))
            .map_err(|e| VmError::GuestWrite {
                what: "device tree",
                addr: plan.dtb.base,
                reason: e.to_string(),
            })?;
        let boot = self
            .vcpus
            .first()
            .ok_or(VmError::Layout(LayoutError::Cpus {
                cpus: 0,
                max: crate::layout_riscv::MAX_CPUS,
            }))?;
        for (index, value, what) in [
            (REG_PC, plan.kernel_load, "pc"),
            (REG_A0, 0, "a0 (hart ID)"),
            (REG_A1, plan.dtb.base, "a1 (DTB)"),
        ] {
            boot.set_one_reg(riscv_reg(KVM_REG_RISCV_CORE, index), &value.to_le_bytes())
                .map_err(kvm_err(format!("KVM_SET_ONE_REG {what} = {value:#x}")))?;
        }
        Ok(plan)
    }

    fn copy_in(
        &self,
        file: &mut File,
        len: u64,
        addr: u64,
        what: &'static str,
        path: &Path,
    ) -> Result<(), VmError> {
        let count = usize::try_from(len).map_err(|_| VmError::GuestWrite {
            what,
            addr,
            reason: "larger than the host address space".to_owned(),
        })?;
        self.memory
            .read_exact_volatile_from(GuestAddress(addr), file, count)
            .map_err(|e| VmError::GuestWrite {
                what,
                addr,
                reason: format!("{}: {e}", path.display()),
            })
    }

    /// Runs every vCPU on its own thread until the guest powers off or resets (SBI SRST),
    /// or a vCPU fails; then stops the others and returns how the guest stopped.
    pub fn run(self) -> Result<GuestExit, VmError> {
        install_kick_handler()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let mut handles: Vec<JoinHandle<()>> = Vec::with_capacity(self.vcpus.len());
        for (id, vcpu) in self.vcpus.into_iter().enumerate() {
            let id = id as u32;
            let mmio = Arc::clone(&self.mmio);
            let thread_stop = Arc::clone(&stop);
            let tx = tx.clone();
            let spawned = thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || vcpu_loop(vcpu, id, &mmio, &thread_stop, &tx));
            match spawned {
                Ok(h) => handles.push(h),
                Err(source) => {
                    stop.store(true, Ordering::SeqCst);
                    stop_vcpus(&handles, self.memory);
                    return Err(VmError::Thread { id, source });
                }
            }
        }
        drop(tx);
        let exit = rx.recv().unwrap_or_else(|_| {
            GuestExit::Error("every vCPU thread ended without an exit event".to_owned())
        });
        stop.store(true, Ordering::SeqCst);
        stop_vcpus(&handles, self.memory);
        Ok(exit)
    }
}

fn aia_err(op: &str, e: kvm_aia::Error) -> VmError {
    VmError::Aia {
        op: op.to_owned(),
        reason: e.to_string(),
    }
}

fn vcpu_loop(
    mut vcpu: VcpuFd,
    id: u32,
    mmio: &MmioBus,
    stop: &AtomicBool,
    tx: &mpsc::Sender<GuestExit>,
) {
    let exit = loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match vcpu.run() {
            Ok(VcpuExit::MmioRead(addr, data)) => {
                mmio.read(addr, data);
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                mmio.write(addr, data);
            }
            Ok(VcpuExit::SystemEvent(kind, data)) => {
                break match kind {
                    KVM_SYSTEM_EVENT_SHUTDOWN => GuestExit::Shutdown,
                    KVM_SYSTEM_EVENT_RESET => GuestExit::Reset,
                    other => {
                        GuestExit::Error(format!("vCPU {id}: system event {other} ({data:x?})"))
                    }
                };
            }
            Ok(VcpuExit::Intr) => {}
            Ok(other) => break GuestExit::Error(format!("vCPU {id}: unexpected exit {other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                vcpu.set_kvm_immediate_exit(0);
            }
            Err(e) => break GuestExit::Error(format!("vCPU {id}: KVM_RUN: {e}")),
        }
    };
    let _ = tx.send(exit);
}

/// Boots `cfg` on riscv64 and reports. A failure at any step is in the report as
/// [`GuestExit::Error`], with exit code 1.
pub fn run(cfg: &VmmConfig) -> Report {
    let started = Instant::now();
    let ms = |t: Instant| t.duration_since(started).as_secs_f64() * 1000.0;
    let mut layout = RiscvLayout::new(cfg.cpus, cfg.mem_mib.saturating_mul(1 << 20));
    if let Some(base) = cfg.ram_base {
        layout.ram.base = base;
    }
    let failed = |layout: &RiscvLayout, e: String| {
        Report::new_riscv(
            cfg,
            layout,
            None,
            GuestExit::Error(e),
            Default::default(),
            Default::default(),
            Timings {
                setup_ms: ms(Instant::now()),
                first_output_ms: None,
                total_ms: ms(Instant::now()),
            },
        )
    };
    if let Some(what) = arm_only_option(cfg) {
        return failed(
            &layout,
            format!("{what} is an arm64 option; riscv64 has no such piece"),
        );
    }
    // Passthrough step 1, before the VM exists: the plan decides where the vIMSIC goes.
    let mut vmm_iommu = None;
    let prepared = match &cfg.device {
        Some(spec) => {
            let guest = GuestSetup {
                map: crate::passthrough::guest_map_riscv(&layout),
                preferred_base: None,
                strategy: StrategyChoice::Auto,
                viommu: false,
            };
            let iommu = match crate::vfio_open::VmmIommu::new() {
                Ok(i) => vmm_iommu.insert(i),
                Err(e) => return failed(&layout, e.to_string()),
            };
            let dev = match iommu.open_device(&crate::passthrough::setup_spec(spec)) {
                Ok(d) => d,
                Err(e) => return failed(&layout, e.to_string()),
            };
            let controller = ControllerGeometry::riscv_imsic(layout.cpus);
            let prepared = match PreparedDevice::from_bound_for(dev, guest, controller) {
                Ok(p) => p,
                Err(e) => return failed(&layout, e.to_string()),
            };
            log::info!("doorbell plan:\n{}", prepared.plan());
            if let Err(e) = crate::passthrough::apply_plan_riscv(&mut layout, prepared.plan()) {
                return failed(
                    &layout,
                    format!("the doorbell plan does not fit the memory map: {e}"),
                );
            }
            Some((prepared, crate::passthrough::describe(spec)))
        }
        None => None,
    };
    let mut vm = match Vm::new(layout.clone(), Some(Box::new(io::stdout()))) {
        Ok(vm) => vm,
        Err(e) => return failed(&layout, e.to_string()),
    };
    let passthrough = match (prepared, vmm_iommu.as_ref()) {
        (Some((prepared, name)), Some(iommu)) => {
            match attach_passthrough(&vm, iommu, prepared, name) {
                Ok(p) => Some(p),
                Err(e) => return failed(&layout, format!("passthrough: {e}")),
            }
        }
        _ => None,
    };
    let uart = Arc::clone(vm.uart());
    let mmio = Arc::clone(vm.mmio_bus());
    let imsic = vm.imsic_summary();
    let (boot, exit, setup) = match vm.load(&cfg.kernel, cfg.initrd.as_deref(), &cfg.cmdline) {
        Ok(plan) => {
            if vm.reserved_memory_node() {
                log::error!("the device tree has a reserved-memory node");
            }
            let setup = ms(Instant::now());
            let exit = vm.run().unwrap_or_else(|e| GuestExit::Error(e.to_string()));
            (Some(plan), exit, setup)
        }
        Err(e) => (None, GuestExit::Error(e.to_string()), ms(Instant::now())),
    };
    let collected = uart.finish();
    let mut report = Report::new_riscv(
        cfg,
        &layout,
        boot,
        exit,
        collected,
        mmio.stats(),
        Timings {
            setup_ms: setup,
            first_output_ms: uart.first_output().map(ms),
            total_ms: ms(Instant::now()),
        },
    );
    report.imsic = Some(imsic);
    report.passthrough = passthrough.map(|p| p.report(&layout));
    // The device and the bus go before the IOAS.
    drop(mmio);
    drop(uart);
    drop(vmm_iommu);
    report
}

/// A passed-through device once attached, with what its report needs.
struct Passthrough {
    _kvm_vfio: Option<vfio_passthrough::KvmVfioDevice>,
    kvm_vfio_files: usize,
    dev: crate::passthrough::SharedDevice<VfioBackend, KvmInterruptGroup, KvmSlotMapper>,
    device: String,
    plan: doorbell_planner::Plan,
    probes: vfio_passthrough::setup::Probes,
    observed: Option<u64>,
    dma_mapped: Vec<(u64, u64)>,
}

impl Passthrough {
    fn report(&self, layout: &RiscvLayout) -> crate::passthrough::PassthroughReport {
        let dev = self
            .dev
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let vectors = dev.enable_records();
        // The kernel programmed a host hart's page; it is a vIMSIC page of the same hart
        // number when the VM has at least as many vCPUs as the host has harts.
        let in_vimsic = |a: u64| layout.imsic.contains(a) && a.is_multiple_of(0x1000);
        crate::passthrough::PassthroughReport {
            device: self.device.clone(),
            controller: crate::passthrough::CONTROLLER_IMSIC,
            slot: crate::passthrough::PASSTHROUGH_SLOT.to_string(),
            devid: 0,
            plan: self.plan.report.clone(),
            probes: self.probes,
            its_doorbell: self.plan.doorbell_gpa,
            msi_window: self.plan.msi_window().map(|w| (w.start, w.last)),
            observed_doorbell: self.observed,
            doorbell_at_its_ipa: self.observed.is_some_and(in_vimsic),
            dma_mapped: self.dma_mapped.clone(),
            kvm_vfio_files: self.kvm_vfio_files,
            opened_by: crate::vfio_open::OPENED_BY,
            addresses_written_through: crate::passthrough::all_written_through(&vectors),
            vectors,
            faults: dev.faults(),
            viommu: None,
        }
    }
}

/// The first GSI passthrough routes use; KVM_SET_GSI_ROUTING replaces the default APLIC
/// routes (GSIs 0..=APLIC_SOURCES), which nothing here needs: the UART uses KVM_IRQ_LINE,
/// which injects into the APLIC directly.
const PASSTHROUGH_FIRST_GSI: u32 = 64;
/// KVM memory slots for directly mapped BAR pages, apart from RAM's.
const PASSTHROUGH_SLOTS: std::ops::Range<u32> = 100..164;

/// Steps 2 and 3 of the passthrough bring-up on a created VM: attach to the VMM's IOAS,
/// map guest RAM at IOVA = GPA, register the device with KVM, build it on the VM's MSI
/// router (routes to vIMSIC pages, no DeviceID) and put it on the PCI bus.
fn attach_passthrough(
    vm: &Vm,
    iommu: &crate::vfio_open::VmmIommu,
    prepared: PreparedDevice,
    device: String,
) -> Result<Passthrough, String> {
    let ioas = iommu.ioas_view();
    let attached = prepared
        .attach_to(Arc::clone(&ioas))
        .map_err(|e| e.to_string())?;
    let mapped = ioas
        .map_guest_memory(vm.memory(), iommufd_ioas::Access::READ_WRITE)
        .map_err(|e| e.to_string())?;
    // The KVM-VFIO pseudo device only tells KVM about the device (non-coherent DMA,
    // irqbypass); the riscv64 test kernel's KVM has none (KVM_CREATE_DEVICE answers ENODEV:
    // `arch/riscv/kvm/Kconfig` does not select KVM_VFIO), and the passthrough works
    // without it, so its absence is logged and reported (`kvm_vfio_files` 0).
    let kvm_vfio = match vfio_passthrough::KvmVfioDevice::new(vm.vm_fd()) {
        Ok(mut k) => {
            k.add(std::os::fd::AsFd::as_fd(attached.vfio_device()))
                .map_err(|e| format!("{}: {e}", attached.vfio_device().name()))?;
            Some(k)
        }
        Err(e) => {
            log::warn!("KVM VFIO device: {e}; going on without it");
            None
        }
    };
    let plan = attached.plan().clone();
    let probes = attached.probes();
    let observed = attached.observed_doorbell();
    let router = Arc::new(Mutex::new(KvmMsiRouter::new(
        Arc::clone(vm.vm_fd()),
        PASSTHROUGH_FIRST_GSI,
        Vec::new(),
    )));
    let mapper = KvmSlotMapper::new(Arc::clone(vm.vm_fd()), PASSTHROUGH_SLOTS);
    let dev = attached
        .into_device_with_group(
            |vectors| {
                KvmMsiRouter::group(&router, vectors).map_err(vfio_passthrough::Error::Eventfd)
            },
            mapper,
            0,
            RelocationPolicy::IfShared,
        )
        .map_err(|e| e.to_string())?;
    let dev = Arc::new(Mutex::new(dev));
    vm.pci_bus()
        .add(
            crate::passthrough::PASSTHROUGH_SLOT,
            Box::new(crate::passthrough::PassthroughFunction::new(Arc::clone(
                &dev,
            ))),
        )
        .map_err(|e| e.to_string())?;
    Ok(Passthrough {
        kvm_vfio_files: kvm_vfio.as_ref().map_or(0, |k| k.files()),
        _kvm_vfio: kvm_vfio,
        dev,
        device,
        plan,
        probes,
        observed,
        dma_mapped: mapped.iter().map(|r| (r.start, r.last)).collect(),
    })
}

/// The first arm64-only option `cfg` asks for, if any.
fn arm_only_option(cfg: &VmmConfig) -> Option<&'static str> {
    if cfg.its_base.is_some() {
        Some("--its-base")
    } else if cfg.viommu.is_some() {
        Some("--viommu")
    } else if cfg.its_check {
        Some("--its-check on")
    } else if cfg.write_through != crate::cli::WriteThrough::default() {
        Some("--write-through")
    } else {
        None
    }
}
