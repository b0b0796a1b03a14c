// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Plugging a VFIO passthrough device (`vfio-passthrough`) into this VMM.
//!
//! The order matters and is the kernel's: the device is opened, bound and planned for
//! before the VM exists, because the doorbell plan decides where the vITS goes (and the
//! FDT says so); the VM is created with the vITS at `plan.controller_base`; then the device
//! is attached, guest RAM is mapped at IOVA = GPA, and the function is put on the PCI bus
//! at slot [`PASSTHROUGH_SLOT`], whose requester ID is the ITS DeviceID the FDT `msi-map`
//! gives (`<0 &its 0 0x10000>`: DeviceID = RID).
//!
//! The portable pieces are here (and unit-tested on any host): the planner's view of the
//! guest map, applying the plan to the layout, the [`PciFunction`] adapter and the report
//! section. The KVM side is in `vm.rs`.

use std::sync::{Arc, Mutex, PoisonError};

use doorbell_planner::{GuestMap, NamedRange, Plan};
use iommufd_ioas::IovaRange;
use serde::Serialize;
use vfio_passthrough::{
    DeviceBackend, EnableRecord, FaultCounters, GuestMapper, InterruptGroup, PassthroughDevice,
};

use crate::cli::DeviceSpec;
use crate::layout::{LayoutError, MemoryLayout, Region};
use crate::pci::{BarChange, PciFunction, PciSlot};

/// Where the passed-through function sits on bus 0: device 1, function 0 (RID 0x08).
pub const PASSTHROUGH_SLOT: PciSlot = PciSlot {
    device: 1,
    function: 0,
};

fn named(name: &str, r: Region) -> Option<NamedRange> {
    NamedRange::from_len(name, r.base, r.size)
}

/// The guest map the doorbell planner must respect: RAM (all of it DMA-mapped) and every
/// fixed MMIO range except the vITS, which the planner places.
pub fn guest_map(layout: &MemoryLayout) -> GuestMap {
    let gicr = Region::new(layout.gicr_base, layout.gicr().size);
    let mmio = [
        named("gicd", layout.gicd),
        named("gicr", gicr),
        named("uart", layout.uart),
        named("pcie-ecam", layout.ecam),
        named("pcie-mmio32", layout.pci_mmio32),
        layout.smmu.and_then(|r| named("smmu", r)),
    ]
    .into_iter()
    .flatten()
    .collect();
    GuestMap {
        ram: IovaRange::from_len(layout.ram.base, layout.ram.size)
            .into_iter()
            .collect(),
        mmio,
        ipa_bits: layout.ipa_bits,
    }
}

/// Puts the vITS where the plan says and records the plan's MSI window as the range only
/// the vITS may intersect; validates the result.
pub fn apply_plan(layout: &mut MemoryLayout, plan: &Plan) -> Result<(), LayoutError> {
    layout.its.base = plan.controller_base;
    layout.host_msi_window = plan.msi_window().and_then(|w| {
        let size = w.len()?;
        Some(Region::new(w.start, size))
    });
    layout.validate()
}

/// The RISC-V guest map the doorbell planner must respect: RAM and every fixed MMIO range
/// but the vIMSIC, which the planner places.
pub fn guest_map_riscv(layout: &crate::layout_riscv::RiscvLayout) -> GuestMap {
    let mmio = [
        named("aplic", layout.aplic),
        named("uart", layout.uart),
        named("pcie-ecam", layout.ecam),
        named("pcie-mmio32", layout.pci_mmio32),
    ]
    .into_iter()
    .flatten()
    .collect();
    GuestMap {
        ram: IovaRange::from_len(layout.ram.base, layout.ram.size)
            .into_iter()
            .collect(),
        mmio,
        ipa_bits: layout.gpa_bits,
    }
}

/// Puts the vIMSIC where the plan says (hart 0's file at `plan.controller_base`) and records
/// the plan's MSI window as the range only the vIMSIC may intersect; validates the result.
pub fn apply_plan_riscv(
    layout: &mut crate::layout_riscv::RiscvLayout,
    plan: &Plan,
) -> Result<(), LayoutError> {
    layout.imsic.base = plan.controller_base;
    layout.host_msi_window = plan.msi_window().and_then(|w| {
        let size = w.len()?;
        Some(Region::new(w.start, size))
    });
    layout.validate()
}

fn to_region(w: vfio_passthrough::BarWindow) -> Region {
    Region::new(w.gpa, w.size)
}

/// The passthrough device's BAR changes in the bus's terms: unmaps first, then maps.
pub fn bar_changes(changes: &[vfio_passthrough::BarChange]) -> Vec<BarChange> {
    let mut out = Vec::with_capacity(changes.len() * 2);
    for c in changes {
        if let Some(old) = c.old {
            out.push(BarChange::Unmapped {
                bar: c.bar,
                region: to_region(old),
            });
        }
    }
    for c in changes {
        if let Some(new) = c.new {
            out.push(BarChange::Mapped {
                bar: c.bar,
                region: to_region(new),
            });
        }
    }
    out
}

/// A [`PassthroughDevice`] shared between the PCI bus and the VMM's report.
pub type SharedDevice<D, R, M> = Arc<Mutex<PassthroughDevice<D, R, M>>>;

/// The [`PciFunction`] of a passthrough device.
pub struct PassthroughFunction<D: DeviceBackend, R: InterruptGroup, M: GuestMapper> {
    dev: SharedDevice<D, R, M>,
}

impl<D: DeviceBackend, R: InterruptGroup, M: GuestMapper> PassthroughFunction<D, R, M> {
    /// Wraps a shared device.
    pub fn new(dev: SharedDevice<D, R, M>) -> Self {
        PassthroughFunction { dev }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PassthroughDevice<D, R, M>> {
        self.dev.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<D: DeviceBackend, R: InterruptGroup, M: GuestMapper> PciFunction
    for PassthroughFunction<D, R, M>
{
    fn read_config(&mut self, reg: u16, data: &mut [u8]) {
        self.lock().read_config(reg, data);
    }

    fn write_config(&mut self, reg: u16, data: &[u8]) -> Vec<BarChange> {
        let changes = self.lock().write_config(reg, data);
        bar_changes(&changes)
    }

    fn read_bar(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        self.lock().read_bar(bar, offset, data);
    }

    fn write_bar(&mut self, bar: u8, offset: u64, data: &[u8]) {
        self.lock().write_bar(bar, offset, data);
    }
}

/// The command line's device in `vfio-passthrough`'s terms.
pub fn setup_spec(spec: &DeviceSpec) -> vfio_passthrough::setup::DeviceSpec {
    match spec {
        DeviceSpec::Cdev(path) => vfio_passthrough::setup::DeviceSpec::Cdev(path.clone()),
        DeviceSpec::Pci {
            domain,
            bus,
            device,
            function,
        } => vfio_passthrough::setup::DeviceSpec::Pci(vfio_cdev::PciAddress {
            domain: u32::from(*domain),
            bus: *bus,
            device: *device,
            function: *function,
        }),
    }
}

/// The device as an operator reads it: the cdev path or the PCI address.
pub fn describe(spec: &DeviceSpec) -> String {
    match setup_spec(spec) {
        vfio_passthrough::setup::DeviceSpec::Cdev(p) => p.display().to_string(),
        vfio_passthrough::setup::DeviceSpec::Pci(a) => a.to_string(),
    }
}

/// [`PassthroughReport::controller`] of a guest with a GICv3 ITS.
pub const CONTROLLER_ITS: &str = "gicv3-its";
/// [`PassthroughReport::controller`] of a guest with RISC-V IMSICs.
pub const CONTROLLER_IMSIC: &str = "riscv-imsic";

/// The passthrough part of the VMM's report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PassthroughReport {
    /// The device as given on the command line.
    pub device: String,
    /// The guest's MSI controller: `gicv3-its` (routes carry the DeviceID) or `riscv-imsic`
    /// (routes name a vIMSIC page, no DeviceID; `devid` and the `its_*` fields then describe
    /// the vIMSIC: `its_doorbell` is hart 0's page, `doorbell_at_its_ipa` whether the kernel
    /// programmed one of the vIMSIC pages).
    pub controller: &'static str,
    /// The guest slot and its ITS DeviceID.
    pub slot: String,
    /// The ITS DeviceID routes carry (`KVM_MSI_VALID_DEVID`).
    pub devid: u32,
    /// The planner's report: strategy, placement, why, what was verified.
    pub plan: doorbell_planner::Report,
    /// What the kernel and device offered.
    pub probes: vfio_passthrough::setup::Probes,
    /// The vITS doorbell the guest programs (`GITS_TRANSLATER`).
    pub its_doorbell: u64,
    /// The software MSI window the device uses: `[start, last]`.
    pub msi_window: Option<(u64, u64)>,
    /// The doorbell address the kernel programmed into the device's real table when vector 0
    /// was enabled at setup.
    pub observed_doorbell: Option<u64>,
    /// Whether that equals the vITS doorbell: the physical doorbell is mapped at the guest's
    /// doorbell IPA.
    pub doorbell_at_its_ipa: bool,
    /// Guest RAM mapped at IOVA = GPA: `[start, last]` ranges (by the VMM, into its IOAS).
    pub dma_mapped: Vec<(u64, u64)>,
    /// VFIO files added to the VM's KVM VFIO device (`KVM_DEV_VFIO_FILE_ADD`).
    pub kvm_vfio_files: usize,
    /// What opened and bound the device: `vfio-ioctls` (its `VfioDevice::new` on the VMM's
    /// `VfioIommufd`); the bring-up then runs on a duplicate of its descriptor.
    pub opened_by: &'static str,
    /// Every vector the guest enabled, with the address the device's real table held.
    pub vectors: Vec<EnableRecord>,
    /// Whether every enabled vector's real address equals the guest's.
    pub addresses_written_through: bool,
    /// Host-side faults during the run.
    pub faults: FaultCounters,
    /// The guest's virtual IOMMU, when it has one.
    pub viommu: Option<ViommuReport>,
}

/// How the device's MSI address reached it under a guest vIOMMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteThroughPath {
    /// The address words written into the real table through the `MSIX_MAPPABLE` mapping.
    MsixMmap,
    /// Set per vector with the proposed `VFIO_IRQ_SET_DATA_MSI_IOVA`.
    MsiIova,
    /// Not written through: the kernel's doorbell IOVA stayed (negative control).
    Off,
}

impl WriteThroughPath {
    /// The report's name.
    pub fn name(self) -> &'static str {
        match self {
            WriteThroughPath::MsixMmap => "msix-mmap",
            WriteThroughPath::MsiIova => "msi-iova",
            WriteThroughPath::Off => "off",
        }
    }
}

/// The guest's virtual IOMMU in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViommuReport {
    /// `smmuv3`.
    pub kind: &'static str,
    /// The frame's guest physical address.
    pub base: u64,
    /// The vDEVICE's virtual StreamID (the device's RID, `iommu-map` identity).
    pub vsid: u32,
    /// The host SMMU's IDR0-5 (from `IOMMU_GET_HW_INFO`) and the guest's.
    pub host_idr: [u32; 6],
    /// The ID registers the guest reads.
    pub guest_idr: [u32; 6],
    /// Whether the guest enabled its SMMU (`SMMU_CR0.SMMUEN`) during the run (it disables
    /// it again when it shuts down).
    pub guest_enabled: bool,
    /// Whether the device's stream was ever installed with a guest stage 1.
    pub guest_stage1: bool,
    /// The STE the device's stream had last: `abort`, `bypass` or `stage1`.
    pub last_ste: String,
    /// How the guest's address reached the device.
    pub write_through: WriteThroughPath,
    /// Whether the guest's device tree had a reserved-memory node (never).
    pub reserved_memory_node: bool,
    /// The vSMMU's counters.
    pub counters: crate::viommu::ViommuCounters,
    /// The iommufd backend's counters.
    pub backend: vsmmuv3::iommufd::IommufdStats,
    /// Event records the kernel delivered on the vEVENTQ.
    pub host_events: u64,
    /// Of those, translation faults (`F_TRANSLATION`, `F_ADDR_SIZE`, `F_ACCESS`,
    /// `F_PERMISSION`).
    pub host_translation_faults: u64,
    /// The first few faulting addresses (gIOVAs), for the report.
    pub fault_addresses: Vec<u64>,
}

impl PassthroughReport {
    /// A readable summary, one fact per line.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let imsic = self.controller == CONTROLLER_IMSIC;
        let window = self
            .msi_window
            .map_or("none".to_owned(), |(a, b)| format!("{a:#x}-{b:#x}"));
        let observed = self
            .observed_doorbell
            .map_or("unreadable".to_owned(), |a| format!("{a:#x}"));
        if imsic {
            let _ = writeln!(
                s,
                "passthrough: {} at {} (IMSIC routes: vIMSIC page and EIID, no DeviceID)",
                self.device, self.slot
            );
            let _ = writeln!(
                s,
                "passthrough: strategy {}, vIMSIC hart 0 page {:#x}, MSI window {window}",
                self.plan.strategy, self.its_doorbell,
            );
            let _ = writeln!(
                s,
                "passthrough: kernel-programmed doorbell {observed} ({})",
                if self.doorbell_at_its_ipa {
                    "a host hart's page in the window = that hart's vIMSIC page IPA"
                } else {
                    "MISMATCH"
                }
            );
        } else {
            let _ = writeln!(
                s,
                "passthrough: {} at {} (ITS DeviceID {:#x})",
                self.device, self.slot, self.devid
            );
            let _ = writeln!(
                s,
                "passthrough: strategy {}, vITS doorbell {:#x}, MSI window {window}",
                self.plan.strategy, self.its_doorbell,
            );
            let _ = writeln!(
                s,
                "passthrough: kernel-programmed doorbell {observed} ({})",
                if self.doorbell_at_its_ipa {
                    "= the vITS doorbell IPA"
                } else {
                    "MISMATCH"
                }
            );
        }
        for v in &self.vectors {
            let _ = writeln!(
                s,
                "passthrough: vector {:>2}: guest {:#x}/{:#x}, device {} ({} enable(s))",
                v.index,
                v.guest_address,
                v.guest_data,
                v.device_address
                    .map_or("unreadable".to_owned(), |a| format!("{a:#x}")),
                v.enables
            );
        }
        let _ = writeln!(
            s,
            "passthrough: {} vector(s), guest addresses written through: {}, faults {:?}",
            self.vectors.len(),
            self.addresses_written_through,
            self.faults
        );
        if let Some(v) = &self.viommu {
            let _ = writeln!(
                s,
                "viommu: {} nested, guest stage 1 {}, RMR: none, reserved-memory node: {}",
                v.kind,
                if v.guest_stage1 { "on" } else { "off" },
                v.reserved_memory_node
            );
            for r in &self.vectors {
                let _ = writeln!(
                    s,
                    "vector {}: gIOVA {:#x} -> doorbell IPA {} (guest stage 1); device table address {} (via {})",
                    r.index,
                    r.guest_address,
                    r.route_address
                        .map_or("none".to_owned(), |a| format!("{a:#x}")),
                    r.device_address
                        .map_or("unreadable".to_owned(), |a| format!("{a:#x}")),
                    v.write_through.name()
                );
            }
            let _ = writeln!(
                s,
                "viommu: {} vEVENTQ records ({} translation faults{}), last STE {}, backend {:?}",
                v.host_events,
                v.host_translation_faults,
                if v.fault_addresses.is_empty() {
                    String::new()
                } else {
                    format!(
                        " at {}",
                        v.fault_addresses
                            .iter()
                            .map(|a| format!("{a:#x}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
                v.last_ste,
                v.backend
            );
        }
        s
    }
}

/// Whether every record's device address equals its guest address (vacuously true when no
/// vector was enabled; `false` when one is unreadable).
pub fn all_written_through(records: &[EnableRecord]) -> bool {
    records
        .iter()
        .all(|r| r.device_address == Some(r.guest_address))
}

#[cfg(test)]
mod tests {
    use super::*;
    use doorbell_planner::{ControllerGeometry, PlanInput};
    use iommufd_ioas::{ReservedKind, ReservedRegion};

    #[test]
    fn guest_map_lists_ram_and_every_fixed_mmio_but_the_its() {
        let l = MemoryLayout::new(2, 512 << 20);
        let m = guest_map(&l);
        assert_eq!(
            m.ram,
            vec![IovaRange::from_len(0x4000_0000, 512 << 20).unwrap()]
        );
        let names: Vec<&str> = m.mmio.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["gicd", "gicr", "uart", "pcie-ecam", "pcie-mmio32"]);
    }

    /// The test host: the planner puts the vITS at 0x7ff0000 and the layout accepts it.
    #[test]
    fn the_test_host_plan_applies_to_the_default_layout() {
        let mut l = MemoryLayout::new(1, 512 << 20);
        let mut input = PlanInput::new(ControllerGeometry::GICV3_ITS, 0x1000);
        input.guest = guest_map(&l);
        input.host.reserved.push(ReservedRegion {
            range: IovaRange::new(0x800_0000, 0x80f_ffff).unwrap(),
            kind: ReservedKind::Msi,
        });
        let plan = doorbell_planner::plan(&input).unwrap();
        apply_plan(&mut l, &plan).unwrap();
        assert_eq!(l.its.base, 0x7ff_0000);
        assert_eq!(l.its_doorbell(), 0x800_0040);
        assert_eq!(l.host_msi_window, Some(Region::new(0x800_0000, 0x10_0000)));
    }

    /// The riscv64 test host (patched kernel: a software MSI window with one IMSIC page per
    /// host hart): the planner puts the vIMSIC at the window's start and the layout takes it.
    #[test]
    fn the_riscv64_test_host_plan_applies_to_the_riscv_layout() {
        let mut l = crate::layout_riscv::RiscvLayout::new(2, 256 << 20);
        l.imsic.base = 0x2800_0000; // anywhere: the plan moves it
        let mut input = PlanInput::new(ControllerGeometry::riscv_imsic(2), 0x1000);
        input.guest = guest_map_riscv(&l);
        input.device.msix_mappable = true;
        // Without the window (upstream) there is no kernel strategy.
        assert!(doorbell_planner::plan(&input).is_err());
        input.host.reserved.push(ReservedRegion {
            range: IovaRange::new(0x800_0000, 0x80f_ffff).unwrap(),
            kind: ReservedKind::Msi,
        });
        let plan = doorbell_planner::plan(&input).unwrap();
        assert_eq!(plan.strategy.name(), "imsic-kernel-window");
        assert_eq!(
            plan.policy,
            msi_trap::write_through::DoorbellPolicy::KernelProgrammedWindow {
                start: 0x800_0000,
                last: 0x80f_ffff
            }
        );
        doorbell_planner::check_plan(&input, &plan).unwrap();
        // Host hart 1's page is a page of the window; an address outside it is not.
        plan.check_device_address(0x800_1000).unwrap();
        assert!(plan.check_device_address(0x2800_8000).is_err());
        apply_plan_riscv(&mut l, &plan).unwrap();
        assert_eq!(l.imsic, Region::new(0x800_0000, 0x2000));
        assert_eq!(l.imsic_page(1), Some(0x800_1000));
        assert_eq!(l.host_msi_window, Some(Region::new(0x800_0000, 0x10_0000)));
        // RAM in the window is refused by the planner.
        input.guest.ram = vec![IovaRange::from_len(0x800_0000, 0x10_0000).unwrap()];
        assert!(doorbell_planner::plan(&input).is_err());
    }

    #[test]
    fn bar_changes_unmap_before_map() {
        use vfio_passthrough::{BarChange as D, BarWindow as W};
        let moved = D {
            bar: 0,
            old: Some(W {
                bar: 0,
                gpa: 0x1000_0000,
                size: 0x2_0000,
            }),
            new: Some(W {
                bar: 0,
                gpa: 0x1100_0000,
                size: 0x2_0000,
            }),
        };
        let enabled = D {
            bar: 3,
            old: None,
            new: Some(W {
                bar: 3,
                gpa: 0x1004_0000,
                size: 0x4000,
            }),
        };
        assert_eq!(
            bar_changes(&[moved, enabled]),
            vec![
                BarChange::Unmapped {
                    bar: 0,
                    region: Region::new(0x1000_0000, 0x2_0000)
                },
                BarChange::Mapped {
                    bar: 0,
                    region: Region::new(0x1100_0000, 0x2_0000)
                },
                BarChange::Mapped {
                    bar: 3,
                    region: Region::new(0x1004_0000, 0x4000)
                },
            ]
        );
    }

    #[test]
    fn written_through_needs_every_address_read_and_equal() {
        let r = |d: Option<u64>| EnableRecord {
            index: 0,
            guest_address: 0x800_0040,
            guest_data: 5,
            device_address: d,
            route_address: Some(0x800_0040),
            enables: 1,
        };
        assert!(all_written_through(&[]));
        assert!(all_written_through(&[r(Some(0x800_0040))]));
        assert!(!all_written_through(&[r(Some(0x800_0040)), r(None)]));
        assert!(!all_written_through(&[r(Some(0x800_1040))]));
    }
}
