// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The KVM side (aarch64 only): VM, RAM, vCPUs, vGICv3 and in-kernel vITS, image loading,
//! and the vCPU run loops.
//!
//! The call sequence (Linux `Documentation/virt/kvm/api.rst` and
//! `Documentation/virt/kvm/devices/arm-vgic-v3.rst`, `arm-vgic-its.rst`):
//!
//! 1. `KVM_CREATE_VM` with the host's IPA limit as machine type (when KVM has
//!    `KVM_CAP_ARM_VM_IPA_SIZE`);
//! 2. RAM as memory slot 0 (`KVM_SET_USER_MEMORY_REGION`);
//! 3. every vCPU: `KVM_CREATE_VCPU`, then `KVM_ARM_VCPU_INIT` with the target from
//!    `KVM_ARM_PREFERRED_TARGET`, the `PSCI_0_2` feature, and `POWER_OFF` for all but vCPU 0
//!    (the guest starts them with PSCI CPU_ON, which KVM handles);
//! 4. `KVM_CREATE_DEVICE(KVM_DEV_TYPE_ARM_VGIC_V3)`, distributor and redistributor bases
//!    (`KVM_DEV_ARM_VGIC_GRP_ADDR`);
//! 5. `KVM_CREATE_DEVICE(KVM_DEV_TYPE_ARM_VGIC_ITS)`, its base (`KVM_VGIC_ITS_ADDR_TYPE`)
//!    at the planned address;
//! 6. `KVM_DEV_ARM_VGIC_CTRL_INIT` on the vGIC (after all vCPUs exist, as the vGIC
//!    documentation requires), then on the ITS.
//!
//! After [`Vm::new`] the VM is complete but no vCPU has run: that is when the embedder adds
//! MSI routes (`KVM_SET_GSI_ROUTING`), irqfds, memory slots for device BARs
//! ([`Vm::add_memory_slot`]), MMIO handlers ([`Vm::mmio_bus`]) and PCI functions
//! ([`Vm::pci_bus`]). [`Vm::load`] places kernel, initramfs and device tree and sets the
//! boot vCPU's `pc` and `x0`; [`Vm::run`] runs every vCPU on its own thread until the
//! guest powers off or resets, or a vCPU fails.

use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::offset_of;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use doorbell_planner::StrategyChoice;
use kvm_bindings::{
    KVM_ARM_IRQ_TYPE_SHIFT, KVM_ARM_IRQ_TYPE_SPI, KVM_ARM_VCPU_POWER_OFF, KVM_ARM_VCPU_PSCI_0_2,
    KVM_DEV_ARM_VGIC_CTRL_INIT, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_DEV_ARM_VGIC_GRP_CTRL,
    KVM_REG_ARM_CORE, KVM_REG_ARM64, KVM_REG_SIZE_U64, KVM_SYSTEM_EVENT_RESET,
    KVM_SYSTEM_EVENT_SHUTDOWN, KVM_VGIC_ITS_ADDR_TYPE, KVM_VGIC_V3_ADDR_TYPE_DIST,
    KVM_VGIC_V3_ADDR_TYPE_REDIST, kvm_create_device, kvm_device_attr,
    kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_ITS, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3, kvm_regs,
    kvm_userspace_memory_region, kvm_vcpu_init, user_pt_regs,
};
use kvm_ioctls::{Cap, DeviceFd, Kvm, VcpuExit, VcpuFd, VmFd};
use linux_loader::loader::KernelLoader;
use linux_loader::loader::pe::PE;
use msi_trap::msix::layout::RelocationPolicy;
use vfio_passthrough::setup::{GuestSetup, PreparedDevice};
use vfio_passthrough::{KvmInterruptGroup, KvmMsiRouter, KvmSlotMapper, VfioBackend};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::boot::{BootError, BootPlan, IMAGE_HEADER_SIZE, ImageHeader};
use crate::cli::VmmConfig;
use crate::fdt::{FdtConfig, build_fdt};
use crate::layout::{DEFAULT_IPA_BITS, LayoutError, MemoryLayout, Region};
use crate::mmio::MmioBus;
use crate::pci::PciBus;
use crate::report::{GuestExit, Report, Timings};
use crate::uart::{UART_SPI, Uart};
pub use crate::vm_common::{RAM_SLOT, STOP_TIMEOUT, VmError};
use crate::vm_common::{install_kick_handler, kvm_err, stop_vcpus};

/// The register ID of a 64-bit core register at byte offset `offset` in `struct kvm_regs`
/// (`Documentation/virt/kvm/api.rst`, KVM_SET_ONE_REG, arm64 core registers: the index is
/// the offset in 32-bit words).
fn core_reg_id(offset: usize) -> u64 {
    KVM_REG_ARM64 | KVM_REG_SIZE_U64 | u64::from(KVM_REG_ARM_CORE) | (offset / 4) as u64
}

/// `regs.pc`.
fn pc_reg_id() -> u64 {
    core_reg_id(offset_of!(kvm_regs, regs) + offset_of!(user_pt_regs, pc))
}

/// `regs.regs[n]`.
fn x_reg_id(n: usize) -> u64 {
    core_reg_id(offset_of!(kvm_regs, regs) + offset_of!(user_pt_regs, regs) + 8 * n)
}

/// Sets a KVM device attribute whose value is a guest address.
fn set_addr_attr(dev: &DeviceFd, what: &str, attr: u32, addr: u64) -> Result<(), VmError> {
    let value: u64 = addr;
    let a = kvm_device_attr {
        group: KVM_DEV_ARM_VGIC_GRP_ADDR,
        attr: u64::from(attr),
        // KVM reads the address from this pointer during the ioctl; `value` outlives it.
        addr: &value as *const u64 as u64,
        flags: 0,
    };
    dev.set_device_attr(&a).map_err(kvm_err(format!(
        "KVM_SET_DEVICE_ATTR {what} base {addr:#x}"
    )))
}

fn ctrl_init(dev: &DeviceFd, what: &str) -> Result<(), VmError> {
    let a = kvm_device_attr {
        group: KVM_DEV_ARM_VGIC_GRP_CTRL,
        attr: u64::from(KVM_DEV_ARM_VGIC_CTRL_INIT),
        addr: 0,
        flags: 0,
    };
    dev.set_device_attr(&a)
        .map_err(kvm_err(format!("KVM_DEV_ARM_VGIC_CTRL_INIT {what}")))
}

fn create_device(vm: &VmFd, type_: u32, what: &str) -> Result<DeviceFd, VmError> {
    let mut d = kvm_create_device {
        type_,
        fd: 0,
        flags: 0,
    };
    vm.create_device(&mut d)
        .map_err(kvm_err(format!("KVM_CREATE_DEVICE {what}")))
}

/// A complete VM whose vCPUs have not run yet.
pub struct Vm {
    _kvm: Kvm,
    vm_fd: Arc<VmFd>,
    layout: MemoryLayout,
    memory: GuestMemoryMmap,
    vcpus: Vec<VcpuFd>,
    _gic: DeviceFd,
    its: Arc<DeviceFd>,
    /// Pauses the vCPU threads outside `KVM_RUN` (for KVM's ITS save, `its_kvm`).
    gate: Arc<crate::vcpu_gate::VcpuGate>,
    mmio: Arc<MmioBus>,
    uart: Arc<Uart>,
    pci: Arc<PciBus>,
    slots: Vec<(u32, Region)>,
    /// Whether the device tree `load` wrote has a reserved-memory node (it never has; the
    /// report checks the blob itself).
    reserved_memory_node: bool,
    /// The pattern pages around guest RAM's host mapping.
    sentinels: Arc<crate::reliability::Sentinels>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("layout", &self.layout)
            .field("vcpus", &self.vcpus.len())
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

impl Vm {
    /// Creates the VM for `layout` (whose `ipa_bits` is replaced by what the host gives),
    /// with the console echoing to `echo` if given.
    pub fn new(
        mut layout: MemoryLayout,
        echo: Option<Box<dyn Write + Send>>,
    ) -> Result<Self, VmError> {
        let t = Instant::now();
        let kvm = Kvm::new().map_err(kvm_err("opening /dev/kvm"))?;
        let ipa_cap = kvm.check_extension(Cap::ArmVmIPASize);
        layout.ipa_bits = if ipa_cap {
            u8::try_from(kvm.get_host_ipa_limit()).unwrap_or(DEFAULT_IPA_BITS)
        } else {
            DEFAULT_IPA_BITS
        };
        layout.validate()?;
        let vm_type = if ipa_cap {
            u64::from(layout.ipa_bits)
        } else {
            0
        };
        let vm_fd = kvm.create_vm_with_type(vm_type).map_err(kvm_err(format!(
            "KVM_CREATE_VM (IPA {} bits)",
            layout.ipa_bits
        )))?;

        let ram = layout.ram;
        let ram_len = usize::try_from(ram.size).map_err(|_| VmError::Ram {
            base: ram.base,
            size: ram.size,
            reason: "larger than the host address space".to_owned(),
        })?;
        // Sentinel pages of a known pattern right below and above RAM's host mapping
        // (checked at the end of the run, see `reliability`): the reservation must come
        // right before RAM's mapping, with nothing mapped in between.
        let reservation =
            crate::reliability::Sentinels::reserve(ram_len, crate::reliability::SENTINEL_BYTES);
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
        let sentinels = Arc::new(match reservation {
            Ok(r) => crate::reliability::Sentinels::place(r, host as usize, ram.base),
            Err(e) => {
                log::warn!("no sentinel pages around guest RAM: {e}");
                crate::reliability::Sentinels::none()
            }
        });
        let region = kvm_userspace_memory_region {
            slot: RAM_SLOT,
            flags: 0,
            guest_phys_addr: ram.base,
            memory_size: ram.size,
            userspace_addr: host as u64,
        };
        // SAFETY: `host` is the start of the `ram.size`-byte anonymous mapping `memory`
        // owns; `memory` lives in the returned `Vm` and is only unmapped after every vCPU
        // thread has stopped (see `Vm::run`), so KVM never sees the mapping go away while
        // the guest can touch it.
        unsafe { vm_fd.set_user_memory_region(region) }
            .map_err(kvm_err(format!("KVM_SET_USER_MEMORY_REGION RAM at {ram}")))?;

        log::info!("VM and RAM slot ready after {:?}", t.elapsed());
        let mut init = kvm_vcpu_init::default();
        vm_fd
            .get_preferred_target(&mut init)
            .map_err(kvm_err("KVM_ARM_PREFERRED_TARGET"))?;
        init.features[0] |= 1 << KVM_ARM_VCPU_PSCI_0_2;
        let mut vcpus = Vec::with_capacity(layout.cpus as usize);
        for id in 0..layout.cpus {
            let vcpu = vm_fd
                .create_vcpu(u64::from(id))
                .map_err(kvm_err(format!("KVM_CREATE_VCPU {id}")))?;
            let mut vcpu_init = init;
            if id > 0 {
                vcpu_init.features[0] |= 1 << KVM_ARM_VCPU_POWER_OFF;
            }
            vcpu.vcpu_init(&vcpu_init)
                .map_err(kvm_err(format!("KVM_ARM_VCPU_INIT {id}")))?;
            vcpus.push(vcpu);
        }

        log::info!("{} vCPUs ready after {:?}", layout.cpus, t.elapsed());
        let gic = create_device(&vm_fd, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3, "vGICv3")?;
        set_addr_attr(&gic, "GICD", KVM_VGIC_V3_ADDR_TYPE_DIST, layout.gicd.base)?;
        set_addr_attr(&gic, "GICR", KVM_VGIC_V3_ADDR_TYPE_REDIST, layout.gicr_base)?;
        let its = create_device(&vm_fd, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_ITS, "vITS")?;
        set_addr_attr(&its, "ITS", KVM_VGIC_ITS_ADDR_TYPE, layout.its.base)?;
        ctrl_init(&gic, "vGICv3")?;
        ctrl_init(&its, "vITS")?;

        log::info!("vGIC and vITS ready after {:?}", t.elapsed());
        let vm_fd = Arc::new(vm_fd);
        let mmio = Arc::new(MmioBus::new());
        let uart = Arc::new(Uart::new(echo));
        // KVM_IRQ_LINE on arm64 (api.rst): irq_type in bits 27:24, INTID in bits 15:0.
        let uart_irq = (KVM_ARM_IRQ_TYPE_SPI << KVM_ARM_IRQ_TYPE_SHIFT) | (32 + UART_SPI);
        let irq_vm = Arc::clone(&vm_fd);
        uart.set_irq_line(Box::new(move |level| {
            if let Err(e) = irq_vm.set_irq_line(uart_irq, level) {
                log::warn!("KVM_IRQ_LINE UART SPI {UART_SPI} level {level}: {e}");
            }
        }));
        mmio.insert(layout.uart, uart.clone())?;
        let pci = Arc::new(PciBus::new(&mmio, layout.pci_mmio32, layout.ecam_buses()));
        mmio.insert(layout.ecam, pci.clone())?;

        Ok(Vm {
            _kvm: kvm,
            vm_fd,
            memory,
            gate: Arc::new(crate::vcpu_gate::VcpuGate::new(vcpus.len() as u32)),
            vcpus,
            _gic: gic,
            its: Arc::new(its),
            mmio,
            uart,
            pci,
            slots: vec![(RAM_SLOT, ram)],
            reserved_memory_node: false,
            sentinels,
            layout,
        })
    }

    /// The VM, for MSI routes (`set_gsi_routing`), irqfds (`register_irqfd`), ioeventfds.
    pub fn vm_fd(&self) -> &Arc<VmFd> {
        &self.vm_fd
    }

    /// The memory map as created (with the host's IPA size).
    pub fn layout(&self) -> &MemoryLayout {
        &self.layout
    }

    /// Guest RAM.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The MMIO bus: add handlers here (BAR traps are added by the PCI bus itself).
    pub fn mmio_bus(&self) -> &Arc<MmioBus> {
        &self.mmio
    }

    /// Whether the device tree [`load`](Self::load) wrote has a `reserved-memory` node,
    /// read from the blob itself (the builder never makes one).
    pub fn reserved_memory_node(&self) -> bool {
        self.reserved_memory_node
    }

    /// The sentinel pages around guest RAM.
    pub fn sentinels(&self) -> &Arc<crate::reliability::Sentinels> {
        &self.sentinels
    }

    /// The PCI bus behind the ECAM window: add functions here.
    pub fn pci_bus(&self) -> &Arc<PciBus> {
        &self.pci
    }

    /// The console.
    pub fn uart(&self) -> &Arc<Uart> {
        &self.uart
    }

    /// The in-kernel vITS device (`KVM_DEV_TYPE_ARM_VGIC_ITS`).
    pub fn its_device(&self) -> &Arc<DeviceFd> {
        &self.its
    }

    /// The gate every vCPU thread passes before `KVM_RUN` (see [`crate::vcpu_gate`]).
    pub fn vcpu_gate(&self) -> &Arc<crate::vcpu_gate::VcpuGate> {
        &self.gate
    }

    /// Maps `host_addr..host_addr + region.size` of this process at guest `region` as a new
    /// memory slot (for a passthrough BAR mapped directly) and returns its slot number.
    ///
    /// The region must be 4 KiB aligned and must not overlap RAM or another slot.
    ///
    /// # Safety
    ///
    /// `host_addr` must be the start of a mapping of at least `region.size` bytes in this
    /// process that stays mapped, and is not remapped, for as long as the VM exists (KVM
    /// gives the guest direct access to it).
    pub unsafe fn add_memory_slot(
        &mut self,
        region: Region,
        host_addr: u64,
        readonly: bool,
    ) -> Result<u32, VmError> {
        if region.size == 0
            || region.end().is_none()
            || !region.base.is_multiple_of(0x1000)
            || !region.size.is_multiple_of(0x1000)
            || !host_addr.is_multiple_of(0x1000)
        {
            return Err(VmError::Slot {
                region,
                reason: "empty, wrapping, or not 4 KiB aligned",
            });
        }
        if self.slots.iter().any(|(_, r)| r.overlaps(&region)) {
            return Err(VmError::Slot {
                region,
                reason: "overlaps RAM or another slot",
            });
        }
        let slot = self
            .slots
            .iter()
            .map(|(s, _)| *s)
            .max()
            .unwrap_or(RAM_SLOT)
            .checked_add(1)
            .ok_or(VmError::Slot {
                region,
                reason: "no slot number left",
            })?;
        let mem = kvm_userspace_memory_region {
            slot,
            flags: if readonly {
                kvm_bindings::KVM_MEM_READONLY
            } else {
                0
            },
            guest_phys_addr: region.base,
            memory_size: region.size,
            userspace_addr: host_addr,
        };
        // SAFETY: the caller guarantees the host range is a live mapping for the VM's
        // lifetime; the guest range was checked not to overlap other slots.
        unsafe { self.vm_fd.set_user_memory_region(mem) }.map_err(kvm_err(format!(
            "KVM_SET_USER_MEMORY_REGION slot {slot} at {region}"
        )))?;
        self.slots.push((slot, region));
        Ok(slot)
    }

    /// Loads the kernel Image (linux-loader's PE loader), the initramfs and the device tree
    /// per [`BootPlan`], and points the boot vCPU at the kernel: `pc` = entry, `x0` = DTB,
    /// `x1`..`x3` = 0 (Linux `booting.rst` section 5).
    pub fn load(
        &mut self,
        kernel: &Path,
        initrd: Option<&Path>,
        cmdline: &str,
    ) -> Result<BootPlan, VmError> {
        let t = Instant::now();
        let io = |op, path: &Path| {
            let path = path.to_owned();
            move |source| VmError::Io { op, path, source }
        };
        let mut kfile = File::open(kernel).map_err(io("opening kernel", kernel))?;
        let mut head = [0u8; IMAGE_HEADER_SIZE];
        kfile
            .read_exact(&mut head)
            .map_err(io("reading the Image header of", kernel))?;
        let header = ImageHeader::parse(&head)?;
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

        let loaded = PE::load(
            &self.memory,
            Some(GuestAddress(plan.kernel_base)),
            &mut kfile,
            None,
        )
        .map_err(|source| VmError::Loader {
            path: kernel.to_owned(),
            source,
        })?;
        if loaded.kernel_load.0 != plan.kernel_load {
            return Err(VmError::Boot(BootError::BadImage(
                "loader and header disagree on text_offset",
            )));
        }

        log::info!(
            "kernel loaded at {:#x} after {:?}",
            plan.kernel_load,
            t.elapsed()
        );
        if let (Some((path, mut file, len)), Some(region)) = (initrd_file, plan.initrd) {
            let count = usize::try_from(len).map_err(|_| VmError::GuestWrite {
                what: "initramfs",
                addr: region.base,
                reason: "larger than the host address space".to_owned(),
            })?;
            self.memory
                .read_exact_volatile_from(GuestAddress(region.base), &mut file, count)
                .map_err(|e| VmError::GuestWrite {
                    what: "initramfs",
                    addr: region.base,
                    reason: format!("{}: {e}", path.display()),
                })?;
        }

        log::info!("initramfs loaded after {:?}", t.elapsed());
        let dtb = build_fdt(&FdtConfig {
            layout: &self.layout,
            cmdline,
            initrd: plan.initrd,
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
                max: crate::layout::MAX_CPUS,
            }))?;
        let set = |id: u64, value: u64, what: &str| {
            boot.set_one_reg(id, &value.to_le_bytes())
                .map(|_| ())
                .map_err(kvm_err(format!("KVM_SET_ONE_REG {what} = {value:#x}")))
        };
        set(pc_reg_id(), plan.kernel_load, "pc")?;
        set(x_reg_id(0), plan.dtb.base, "x0")?;
        for n in 1..4 {
            set(x_reg_id(n), 0, "x1..x3")?;
        }
        Ok(plan)
    }

    /// Runs every vCPU on its own thread until the guest powers off or resets, or a vCPU
    /// fails; then stops the others and returns how the guest stopped.
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
            let gate = Arc::clone(&self.gate);
            let spawned = thread::Builder::new()
                .name(format!("vcpu{id}"))
                .spawn(move || {
                    gate.register(id);
                    vcpu_loop(vcpu, id, &mmio, &thread_stop, &tx, &gate);
                    gate.ended(id);
                });
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
        // Every thread sends exactly one event before it ends, unless it was stopped; the
        // first one decides the outcome.
        let exit = rx.recv().unwrap_or_else(|_| {
            GuestExit::Error("every vCPU thread ended without an exit event".to_owned())
        });
        stop.store(true, Ordering::SeqCst);
        stop_vcpus(&handles, self.memory);
        Ok(exit)
    }
}

fn vcpu_loop(
    mut vcpu: VcpuFd,
    id: u32,
    mmio: &MmioBus,
    stop: &AtomicBool,
    tx: &mpsc::Sender<GuestExit>,
    gate: &crate::vcpu_gate::VcpuGate,
) {
    let exit = loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        gate.checkpoint();
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

/// A passed-through device once attached, with what its report needs.
struct Passthrough {
    /// Samples routes and the real table (issue 18); stopped, and its table mapping
    /// dropped, before the device goes.
    monitor: Option<crate::reliability::Monitor>,
    /// The VM's KVM VFIO device, with the passed-through device's file added.
    kvm_vfio: vfio_passthrough::KvmVfioDevice,
    /// The iommufd, kept to check after teardown that every object ID is free again.
    iommufd: Arc<iommufd_ioas::Iommufd>,
    /// Who opened and bound the device (vfio-ioctls).
    opened_by: &'static str,
    /// The highest iommufd object ID the bring-up saw.
    highest_id: u32,
    /// The guest's vSMMU objects (`--viommu`): shut down before the device goes.
    nested: Option<crate::nested::Nested>,
    write_through: crate::passthrough::WriteThroughPath,
    dev: crate::passthrough::SharedDevice<VfioBackend, KvmInterruptGroup, KvmSlotMapper>,
    device: String,
    devid: u32,
    plan: doorbell_planner::Plan,
    probes: vfio_passthrough::setup::Probes,
    observed: Option<u64>,
    dma_mapped: Vec<(u64, u64)>,
}

impl Passthrough {
    fn report(
        &mut self,
        its_doorbell: u64,
        smmu_base: Option<u64>,
        reserved_memory_node: bool,
    ) -> crate::passthrough::PassthroughReport {
        let viommu = self.nested.as_mut().map(|n| {
            n.shutdown();
            let (guest_idr, last, backend) = n.smmu.with(|m, b| {
                let mut idr = [0u32; 6];
                for (i, r) in idr.iter_mut().enumerate() {
                    let mut v = [0u8; 4];
                    m.mmio_read(vsmmuv3::regs::IDR0 + 4 * i as u64, &mut v);
                    *r = u32::from_le_bytes(v);
                }
                (idr, m.installed(n.vsid), b.stats())
            });
            crate::passthrough::ViommuReport {
                kind: "smmuv3",
                base: smmu_base.unwrap_or(0),
                vsid: n.vsid,
                host_idr: n.host_idr,
                guest_idr,
                guest_enabled: n.smmu.guest_enabled_seen(),
                guest_stage1: n.smmu.stage1_seen(n.vsid),
                last_ste: match last {
                    Some(vsmmuv3::GuestSte::Abort) => "abort".to_owned(),
                    Some(vsmmuv3::GuestSte::Bypass) => "bypass".to_owned(),
                    Some(vsmmuv3::GuestSte::Stage1(v)) => {
                        format!("stage1 {:#x}/{:#x}", v.0[0], v.0[1])
                    }
                    None => "none".to_owned(),
                },
                write_through: self.write_through,
                reserved_memory_node,
                counters: n.smmu.counters(),
                backend,
                host_events: n.events.records.load(std::sync::atomic::Ordering::Relaxed),
                host_translation_faults: n
                    .events
                    .translation_faults
                    .load(std::sync::atomic::Ordering::Relaxed),
                fault_addresses: n
                    .events
                    .fault_addresses
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
            }
        });
        let dev = self
            .dev
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let vectors = dev.enable_records();
        crate::passthrough::PassthroughReport {
            device: self.device.clone(),
            controller: crate::passthrough::CONTROLLER_ITS,
            slot: crate::passthrough::PASSTHROUGH_SLOT.to_string(),
            devid: self.devid,
            plan: self.plan.report.clone(),
            probes: self.probes,
            its_doorbell,
            msi_window: self.plan.msi_window().map(|w| (w.start, w.last)),
            observed_doorbell: self.observed,
            doorbell_at_its_ipa: self.observed == Some(its_doorbell),
            dma_mapped: self.dma_mapped.clone(),
            kvm_vfio_files: self.kvm_vfio.files(),
            opened_by: self.opened_by,
            addresses_written_through: crate::passthrough::all_written_through(&vectors),
            vectors,
            faults: dev.faults(),
            viommu,
        }
    }
}

/// Step 2 and 3 of the passthrough bring-up on a created VM, as an adopter of the crates
/// does it: the device is attached to the VMM's own IOAS (`ioas`, a view of the
/// iommufd-ioctls IOAS the VMM allocated), the VMM maps guest RAM itself, registers the
/// device with KVM, builds the device on a KVM interrupt group and slots, and puts it on
/// the PCI bus.
fn attach_passthrough(
    vm: &Vm,
    iommu: &crate::vfio_open::VmmIommu,
    prepared: PreparedDevice,
    device: String,
    cfg: &VmmConfig,
) -> Result<Passthrough, String> {
    let iommufd = Arc::clone(iommu.iommufd());
    let ioas = iommu.ioas_view();
    let mut attached = prepared
        .attach_to(Arc::clone(&ioas))
        .map_err(|e| e.to_string())?;
    // Guest RAM at IOVA = GPA, after the attach: the kernel's reserved windows are in the
    // IOAS by then, so a plan that let RAM overlap one fails here, loudly.
    let mapped = ioas
        .map_guest_memory(vm.memory(), iommufd_ioas::Access::READ_WRITE)
        .map_err(|e| e.to_string())?;
    let mut kvm_vfio = vfio_passthrough::KvmVfioDevice::new(vm.vm_fd())
        .map_err(|e| format!("KVM VFIO device: {e}"))?;
    kvm_vfio
        .add(std::os::fd::AsFd::as_fd(attached.vfio_device()))
        .map_err(|e| format!("{}: {e}", attached.vfio_device().name()))?;
    let devid = u32::from(crate::passthrough::PASSTHROUGH_SLOT.requester_id());
    // The guest's vSMMU: the device moves to nested HWPTs that follow the guest's STEs.
    let nested = match cfg.viommu {
        Some(crate::cli::ViommuKind::SmmuV3) => Some(crate::nested::setup(
            &attached,
            devid,
            vm.layout(),
            vm.memory(),
            vm.vm_fd(),
            vm.mmio_bus(),
        )?),
        None => None,
    };
    let write_through = if cfg.write_through == crate::cli::WriteThrough::Off {
        // Negative control: the kernel's doorbell IOVA stays in the device's table.
        let doorbell_iova = attached
            .observed_doorbell()
            .unwrap_or_else(|| vm.layout().its_doorbell());
        attached.override_policy(msi_trap::write_through::DoorbellPolicy::KernelProgrammed {
            doorbell_iova,
        });
        crate::passthrough::WriteThroughPath::Off
    } else {
        match attached.plan().policy {
            msi_trap::write_through::DoorbellPolicy::PerVectorIova => {
                crate::passthrough::WriteThroughPath::MsiIova
            }
            _ => crate::passthrough::WriteThroughPath::MsixMmap,
        }
    };
    let plan = attached.plan().clone();
    let probes = attached.probes();
    let observed = attached.observed_doorbell();
    let dma_mapped = mapped.iter().map(|r| (r.start, r.last)).collect();
    let highest_id = attached.dev_id().unwrap_or(0).max(attached.ioas().id());
    let router = Arc::new(Mutex::new(KvmMsiRouter::new(
        Arc::clone(vm.vm_fd()),
        PASSTHROUGH_FIRST_GSI,
        Vec::new(),
    )));
    let mapper = KvmSlotMapper::new(Arc::clone(vm.vm_fd()), PASSTHROUGH_SLOTS);
    // The device's vectors: a group handed out by the VM's one routing table.
    let mut dev = attached
        .into_device_with_group(
            |vectors| {
                KvmMsiRouter::group(&router, vectors).map_err(vfio_passthrough::Error::Eventfd)
            },
            mapper,
            devid,
            RelocationPolicy::IfShared,
        )
        .map_err(|e| e.to_string())?;
    let table = crate::reliability_glue::map_real_table(&dev);
    if let Some(n) = &nested {
        // Routes carry the doorbell GPA the guest's gIOVA translates to.
        dev.set_msi_remapping(n.smmu.clone(), n.vsid);
    }
    let dev = Arc::new(Mutex::new(dev));
    if let Some(n) = &nested {
        // The guest invalidated or changed its STE/CD: recompute the routes. A weak
        // reference: the device holds the vSMMU (its remapping), not the other way round.
        let weak = Arc::downgrade(&dev);
        n.smmu.on_change(Box::new(move |changes| {
            if let Some(dev) = weak.upgrade() {
                let mut dev = dev
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                // Recompute after a change; after any other guest command only when some
                // vector is unrouted (its gIOVA may be mapped now: new mappings need no
                // invalidation).
                if matches!(changes, vsmmuv3::StreamChanges::None) && dev.unroutable_vectors() == 0
                {
                    return;
                }
                let changed = dev.remap_changed();
                if changed > 0 {
                    log::info!("vSMMU invalidation: {changed} MSI route(s) recomputed");
                }
            }
        }));
    }
    let monitor = crate::reliability_glue::start_monitor(&dev, router, table, devid);
    vm.pci_bus()
        .add(
            crate::passthrough::PASSTHROUGH_SLOT,
            Box::new(crate::passthrough::PassthroughFunction::new(Arc::clone(
                &dev,
            ))),
        )
        .map_err(|e| e.to_string())?;
    Ok(Passthrough {
        monitor,
        kvm_vfio,
        iommufd,
        opened_by: crate::vfio_open::OPENED_BY,
        highest_id,
        nested,
        write_through,
        dev,
        device,
        devid,
        plan,
        probes,
        observed,
        dma_mapped,
    })
}

/// Starts the thread serving the guest's ITS check requests (`--its-check on`); a failure
/// is logged and the run goes on without it (the report then has no `its` section).
fn start_its_inspector(
    vm: &Vm,
    passthrough: Option<&Passthrough>,
) -> Option<crate::its_kvm::Inspector> {
    let vectors: crate::its_kvm::VectorsFn = match passthrough {
        Some(p) => crate::its_kvm::vectors_of(
            &p.dev,
            |d| {
                d.enable_records()
                    .iter()
                    .map(|r| (r.index, r.guest_data))
                    .collect()
            },
            p.devid,
        ),
        None => Box::new(|| (0, Vec::new())),
    };
    let ctx = crate::its_kvm::InspectorContext {
        its: Arc::clone(vm.its_device()),
        gate: Arc::clone(vm.vcpu_gate()),
        memory: vm.memory().clone(),
        ram: vm.layout().ram,
        vcpus: vm.layout().cpus,
        uart: Arc::clone(vm.uart()),
        vectors,
    };
    match crate::its_kvm::Inspector::spawn(ctx) {
        Ok(i) => Some(i),
        Err(e) => {
            log::error!("--its-check: {e}");
            None
        }
    }
}

/// The first GSI passthrough routes use. `KVM_SET_GSI_ROUTING` replaces arm64's default
/// SPI routes; nothing here needs them (the UART uses `KVM_IRQ_LINE`, which bypasses
/// routing).
const PASSTHROUGH_FIRST_GSI: u32 = 32;
/// KVM memory slots for directly mapped BAR pages, apart from RAM's.
const PASSTHROUGH_SLOTS: std::ops::Range<u32> = 100..164;

/// Boots `cfg` and reports: the whole `passthrough-vmm` run. A failure at any step is in
/// the report as [`GuestExit::Error`], with exit code 1.
pub fn run(cfg: &VmmConfig) -> Report {
    let started = Instant::now();
    let at_start = crate::reliability::SelfFigures::now();
    let canary = crate::reliability::Canary::new(1 << 20, started.elapsed().as_nanos() as u64);
    let ms = |t: Instant| t.duration_since(started).as_secs_f64() * 1000.0;
    let failed = |layout: &MemoryLayout, e: String| {
        Report::new(
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
    // With a device the vITS goes where the plan says, and the layout is validated once the
    // plan is applied; without one it is validated now.
    let mut layout = cfg.unvalidated_layout();
    if cfg.device.is_none()
        && let Err(e) = layout.validate()
    {
        return failed(&layout, e.to_string());
    }
    // The VMM's iommufd, IOAS and vfio-ioctls `VfioIommufd`: they outlive the device (which
    // holds vfio-ioctls' device, itself holding the `VfioIommufd`), and go after it below.
    let mut vmm_iommu = None;
    // Passthrough step 1, before the VM exists: the plan decides where the vITS goes.
    let prepared = match &cfg.device {
        Some(spec) => {
            let guest = GuestSetup {
                map: crate::passthrough::guest_map(&layout),
                preferred_base: cfg.its_base,
                strategy: StrategyChoice::Auto,
                viommu: cfg.viommu.is_some(),
            };
            // The VMM owns the iommufd and the IOAS, as a VMM with other devices on them
            // would, and opens and binds the device through vfio-ioctls; planning and the
            // rest run on a duplicate of its descriptor.
            let iommu = match crate::vfio_open::VmmIommu::new() {
                Ok(i) => vmm_iommu.insert(i),
                Err(e) => return failed(&layout, e.to_string()),
            };
            let dev = match iommu.open_device(&crate::passthrough::setup_spec(spec)) {
                Ok(d) => d,
                Err(e) => return failed(&layout, e.to_string()),
            };
            let prepared = match PreparedDevice::from_bound(dev, guest) {
                Ok(p) => p,
                Err(e) => return failed(&layout, e.to_string()),
            };
            log::info!("doorbell plan:\n{}", prepared.plan());
            if let Err(e) = crate::passthrough::apply_plan(&mut layout, prepared.plan()) {
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
    let layout = vm.layout().clone();
    let passthrough = match prepared {
        Some((prepared, name)) => {
            let Some(iommu) = vmm_iommu.as_ref() else {
                return failed(&layout, "passthrough: no iommufd".to_owned());
            };
            match attach_passthrough(&vm, iommu, prepared, name, cfg) {
                Ok(p) => Some(p),
                Err(e) => return failed(&layout, format!("passthrough: {e}")),
            }
        }
        None => None,
    };
    let uart = Arc::clone(vm.uart());
    let mmio = Arc::clone(vm.mmio_bus());
    let sentinels = Arc::clone(vm.sentinels());
    let mut reserved_memory_node = false;
    let mut inspector = None;
    let (boot, exit, setup) = match vm.load(&cfg.kernel, cfg.initrd.as_deref(), &cfg.cmdline) {
        Ok(plan) => {
            reserved_memory_node = vm.reserved_memory_node();
            if cfg.its_check {
                inspector = start_its_inspector(&vm, passthrough.as_ref());
            }
            let setup = ms(Instant::now());
            let exit = vm.run().unwrap_or_else(|e| GuestExit::Error(e.to_string()));
            (Some(plan), exit, setup)
        }
        Err(e) => (None, GuestExit::Error(e.to_string()), ms(Instant::now())),
    };
    let its_report = inspector.map(crate::its_kvm::Inspector::finish);
    let collected = uart.finish();
    let mut report = Report::new(
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
    let mut passthrough = passthrough;
    let monitor = passthrough
        .as_mut()
        .and_then(|p| p.monitor.take())
        .map(crate::reliability::Monitor::finish);
    let ids = passthrough
        .as_ref()
        .map(|p| (Arc::clone(&p.iommufd), p.highest_id));
    report.its = its_report;
    report.passthrough = passthrough.map(|mut p| {
        p.report(
            layout.its_doorbell(),
            layout.smmu.map(|r| r.base),
            reserved_memory_node,
        )
    });
    // Everything that holds the device, the vSMMU and the VM goes now: the bus (device,
    // vSMMU) and the console (its interrupt line holds the VM).
    drop(mmio);
    drop(uart);
    // The device is gone, and with it vfio-ioctls' device: the IOAS goes now.
    drop(vmm_iommu);
    report.reliability = Some(crate::reliability_glue::finish(
        monitor, &sentinels, &canary, at_start, ids,
    ));
    report
}
