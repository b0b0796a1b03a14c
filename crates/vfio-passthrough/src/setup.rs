// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The bring-up a VMM embeds, in the order the kernel requires:
//!
//! 1. [`PreparedDevice::open`]: open the VFIO cdev, bind it to an iommufd, read the host's
//!    reserved regions (sysfs, before attach), probe the kernel (the proposed window option and
//!    per-vector MSI IOVA), read the device's facts, and plan the doorbell with
//!    `doorbell-planner`. The VMM then has [`PreparedDevice::plan`] before it creates its
//!    vITS and writes its FDT: the vITS goes at `plan.controller_base`.
//!    [`PreparedDevice::from_bound`] does the same on a device opened and bound elsewhere
//!    (vfio-ioctls' `VfioDevice`, adopted with `vfio_cdev::VfioDevice::from_bound_file`).
//! 2. [`PreparedDevice::attach`]: set the planned software MSI window (user-window strategy,
//!    before attach as the kernel requires), attach the device to a fresh IOAS, check that
//!    the kernel reserved the window (`IOMMU_IOAS_IOVA_RANGES`), verify the physical doorbell
//!    by enabling vector 0 once and reading the address the kernel programmed into the real
//!    MSI-X table, and map guest RAM at IOVA = GPA.
//!    [`PreparedDevice::attach_to`] does the same on an IOAS the VMM owns and maps nothing.
//! 3. [`AttachedDevice::into_device`]: build the [`PassthroughDevice`] on a router and mapper
//!    ([`AttachedDevice::into_device_with_group`] on the VMM's own interrupt group).
//!
//! [`read_kernel_doorbell`] is the doorbell check on its own, for any [`VectorBackend`].

use std::path::PathBuf;
use std::sync::Arc;

use doorbell_planner::{
    ControllerGeometry, DeviceFacts as PlanDeviceFacts, GuestMap, KernelCaps, Plan, PlanInput,
    StrategyChoice,
};
use iommufd_ioas::{Access, Ioas, Iommufd, IovaRange};
use msi_trap::caps::CapabilityList;
use msi_trap::msix::cap::MsixCapability;
use msi_trap::msix::layout::RelocationPolicy;
use msi_trap::write_through::DoorbellPolicy;
use vfio_cdev::{PciAddress, VfioDevice};
use vm_memory::GuestMemoryBackend;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::backend::{GuestMapper, MsiRouter, VectorBackend};
use crate::device::{PassthroughConfig, PassthroughDevice};
use crate::error::{Error, Result};
use crate::group::{InterruptGroup, RouterGroup};
use crate::parts::build_model;
use crate::vfio::{DeviceFacts, VfioBackend};

/// Which device to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// A VFIO cdev path (`/dev/vfio/devices/vfioN`).
    Cdev(PathBuf),
    /// A PCI address of a device bound to vfio-pci.
    Pci(PciAddress),
}

impl std::str::FromStr for DeviceSpec {
    type Err = Error;

    /// A path (anything with a `/`) or a PCI address.
    fn from_str(s: &str) -> Result<Self> {
        if s.contains('/') {
            Ok(DeviceSpec::Cdev(PathBuf::from(s)))
        } else {
            Ok(DeviceSpec::Pci(s.parse()?))
        }
    }
}

/// What the VMM tells the bring-up about its guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestSetup {
    /// The guest memory map (RAM, fixed MMIO, IPA size) the planner must respect.
    pub map: GuestMap,
    /// Where the VMM would like its vITS, if it has a preference (honoured or refused).
    pub preferred_base: Option<u64>,
    /// Which strategy to use.
    pub strategy: StrategyChoice,
    /// Whether the guest has a vIOMMU (it then programs gIOVAs).
    pub viommu: bool,
}

/// What the kernel and device offered, as probed; part of the VMM's report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Probes {
    /// `IOMMU_OPTION_SW_MSI_START/SIZE` answered (proposed UAPI).
    pub sw_msi_window_option: bool,
    /// `VFIO_IRQ_SET_DATA_MSI_IOVA` answered (proposed UAPI).
    pub per_vector_msi_iova: bool,
    /// The MSI-X table page may be mapped (`VFIO_REGION_INFO_CAP_MSIX_MAPPABLE`).
    pub msix_mappable: bool,
}

/// The host page size.
pub fn host_page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

/// A device opened, bound and planned for; not attached yet.
#[derive(Debug)]
pub struct PreparedDevice {
    iommufd: Arc<Iommufd>,
    dev: VfioDevice,
    dev_id: u32,
    input: PlanInput,
    plan: Plan,
    probes: Probes,
}

impl PreparedDevice {
    /// Opens, binds and plans (step 1).
    pub fn open(spec: &DeviceSpec, guest: GuestSetup) -> Result<Self> {
        let iommufd = Iommufd::open()?;
        Self::open_with(iommufd, spec, guest)
    }

    /// Step 1 on an iommufd the VMM already has: open, bind, then
    /// [`from_bound`](Self::from_bound).
    pub fn open_with(iommufd: Arc<Iommufd>, spec: &DeviceSpec, guest: GuestSetup) -> Result<Self> {
        let mut dev = match spec {
            DeviceSpec::Cdev(p) => VfioDevice::open_cdev(p)?,
            DeviceSpec::Pci(a) => VfioDevice::open_pci(*a)?,
        };
        dev.bind(&iommufd)?;
        Self::from_bound(dev, guest)
    }

    /// Step 1 on a device opened and bound elsewhere: for example vfio-ioctls' `VfioDevice`,
    /// adopted through a duplicate of its descriptor with
    /// [`VfioDevice::from_bound_file`]. Reads the host's reserved regions (the device needs
    /// its sysfs directory for that), probes, reads the device's facts and plans, on the
    /// iommufd the device is bound to; the device must not be attached yet (the plan's
    /// window is set before the attach).
    pub fn from_bound(dev: VfioDevice, guest: GuestSetup) -> Result<Self> {
        Self::from_bound_for(dev, guest, ControllerGeometry::GICV3_ITS)
    }

    /// [`from_bound`](Self::from_bound) for the guest's own MSI controller: the vITS
    /// ([`ControllerGeometry::GICV3_ITS`]) or a vIMSIC
    /// ([`ControllerGeometry::riscv_imsic`]). With a vIMSIC the device's MSI routes carry no
    /// DeviceID (an IMSIC MSI is an address and an identity, RISC-V AIA 1.0 §3.5).
    pub fn from_bound_for(
        dev: VfioDevice,
        guest: GuestSetup,
        controller: ControllerGeometry,
    ) -> Result<Self> {
        const OP: &str = "planning the doorbell";
        let (Some(iommufd), Some(dev_id)) = (dev.iommufd().cloned(), dev.dev_id()) else {
            return Err(vfio_cdev::Error::NotBound {
                op: OP,
                device: dev.name().to_string(),
            }
            .into());
        };
        if let Some(pt) = dev.attached_to() {
            return Err(Error::Unsupported {
                device: dev.name().to_string(),
                reason: format!(
                    "{OP}: it is already attached (page table {pt}), \
                     and the plan's window must be set before the attach"
                ),
            });
        }
        let reserved = dev.reserved_regions()?;
        #[cfg(feature = "proposed")]
        let (sw_msi_window_option, per_vector_msi_iova) = (
            iommufd.probe_sw_msi_window(dev_id)?.is_available(),
            dev.probe_msi_iova(vfio_cdev::IrqIndex::Msix)?
                .is_available(),
        );
        // Built without the proposed UAPI: never asked, so planned as absent.
        #[cfg(not(feature = "proposed"))]
        let (sw_msi_window_option, per_vector_msi_iova) = (false, false);

        // Device facts for the planner: MSIX_MAPPABLE on the table's BAR, and an MSI cap.
        let config = dev.read_config_space()?;
        let caps = CapabilityList::parse_lenient(&config[..config.len().min(256)])
            .map(|l| l.list)
            .ok();
        let msix_mappable = match caps.as_ref().and_then(|l| l.msix()) {
            Some(c) => {
                let cap = MsixCapability::parse(&config, c.offset).map_err(|e| Error::Msix {
                    device: dev.name().to_string(),
                    reason: e.to_string(),
                })?;
                dev.region_info(u32::from(cap.table.bar.get()))?
                    .msix_mappable()
            }
            None => false,
        };
        let has_msi = caps.as_ref().is_some_and(|l| l.msi().is_some());

        let page = host_page_size();
        let mut input = PlanInput::new(controller, page);
        input.guest = guest.map;
        input.host.reserved = reserved;
        input.kernel = KernelCaps {
            sw_msi_window_option,
            per_vector_msi_iova,
            riscv_msi_remap: false,
        };
        input.device = PlanDeviceFacts {
            msix_mappable,
            has_msi,
        };
        input.guest_viommu = guest.viommu;
        input.preferred_base = guest.preferred_base;
        input.strategy = guest.strategy;
        let plan = doorbell_planner::plan(&input).map_err(|e| Error::Plan {
            device: dev.name().to_string(),
            source: Box::new(e),
        })?;
        Ok(PreparedDevice {
            iommufd,
            dev,
            dev_id,
            input,
            plan,
            probes: Probes {
                sw_msi_window_option,
                per_vector_msi_iova,
                msix_mappable,
            },
        })
    }

    /// The doorbell plan: the vITS goes at `plan().controller_base`.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// What the probes found.
    pub fn probes(&self) -> Probes {
        self.probes
    }

    /// The iommufd device ID.
    pub fn dev_id(&self) -> u32 {
        self.dev_id
    }

    /// Step 2: set the window (user-window strategy), attach to a fresh IOAS, check the
    /// kernel's reserved window, verify the physical doorbell, map guest RAM at IOVA = GPA.
    pub fn attach<G: GuestMemoryBackend>(self, guest_memory: &G) -> Result<AttachedDevice> {
        let ioas = Arc::new(self.iommufd.alloc_ioas()?);
        let ram = self.input.guest.ram.clone();
        let mut attached = self.attach_to(ioas)?;
        let mapped = attached
            .ioas
            .map_guest_memory(guest_memory, Access::READ_WRITE)?;
        for r in &mapped {
            if !ram.iter().any(|g| g.covers(r)) {
                log::warn!("guest memory {r} was not in the planned RAM map");
            }
        }
        attached.mapped = mapped;
        Ok(attached)
    }

    /// Step 2 for a VMM that owns the IOAS (an [`Ioas`] of its own, or
    /// [`Iommufd::ioas_view`] of one it made through iommufd-ioctls) and maps guest memory
    /// itself: set the window (user-window strategy), attach to `ioas`, check the kernel's
    /// reserved window and verify the physical doorbell. Maps nothing: the VMM maps guest
    /// RAM at IOVA = GPA, outside the plan's reserved window.
    pub fn attach_to(mut self, ioas: Arc<Ioas>) -> Result<AttachedDevice> {
        let name = self.dev.name().to_string();
        let mismatch = |reason: String| Error::PlanMismatch {
            device: name.clone(),
            reason,
        };
        #[cfg(feature = "proposed")]
        if let Some(window) = self.plan.window_to_set() {
            self.iommufd.set_sw_msi_window(self.dev_id, window)?;
        }
        self.dev.attach_ioas(&ioas)?;
        let ranges = ioas.iova_ranges()?;
        self.plan
            .check_iova_ranges(&ranges)
            .map_err(|e| mismatch(e.to_string()))?;
        let (mut backend, facts) = VfioBackend::new(self.dev)?;
        let observed = match msix_capability(&facts, backend.device().name())? {
            Some(cap) if backend.map_table(&cap.real(), host_page_size())? => {
                read_kernel_doorbell(&backend).map_err(|e| Error::Msix {
                    device: name.clone(),
                    reason: e.to_string(),
                })?
            }
            _ => None,
        };
        if let Some(addr) = observed {
            self.plan
                .check_device_address(addr)
                .map_err(|e| mismatch(e.to_string()))?;
        }
        Ok(AttachedDevice {
            _iommufd: self.iommufd,
            ioas,
            backend,
            facts,
            plan: self.plan,
            probes: self.probes,
            observed_doorbell: observed,
            mapped: Vec::new(),
            devid_in_msis: matches!(
                self.input.controller,
                ControllerGeometry::ArmGicv3Its { .. }
            ),
        })
    }
}

/// The function's MSI-X capability, if it has one.
fn msix_capability(facts: &DeviceFacts, name: &str) -> Result<Option<MsixCapability>> {
    let Some(msix) = CapabilityList::parse_lenient(&facts.config)
        .ok()
        .and_then(|l| l.list.msix())
    else {
        return Ok(None);
    };
    MsixCapability::parse(&facts.config, msix.offset)
        .map(Some)
        .map_err(|e| Error::Msix {
            device: name.to_string(),
            reason: e.to_string(),
        })
}

/// The doorbell the kernel programs into the device, read the only way it can be: enable
/// vector 0 once with a throwaway eventfd, read the Message Address the kernel wrote into
/// the real MSI-X table, disable MSI-X again. `Ok(None)` when the real table cannot be read
/// (not mappable, or memory decode off). Works on any [`VectorBackend`], so a VMM with its
/// own VFIO device type checks its doorbell plan with it
/// (`Plan::check_device_address`); call it before the guest runs, since it disables MSI-X.
pub fn read_kernel_doorbell<B: VectorBackend + ?Sized>(backend: &B) -> Result<Option<u64>> {
    let efd = EventFd::new(EFD_NONBLOCK).map_err(Error::Eventfd)?;
    let failed = |op: &'static str| move |source| Error::Backend { op, source };
    backend
        .set_vector(0, Some(&efd))
        .map_err(failed("enabling MSI-X vector 0 to read the doorbell"))?;
    let addr = backend.read_table_address(0);
    backend
        .disable_vectors()
        .map_err(failed("disabling MSI-X after reading the doorbell"))?;
    addr.map_err(failed("reading MSI-X vector 0's address in the real table"))
}

/// An attached device (with guest RAM mapped, after [`PreparedDevice::attach`]); ready to
/// become a [`PassthroughDevice`].
#[derive(Debug)]
pub struct AttachedDevice {
    _iommufd: Arc<Iommufd>,
    ioas: Arc<Ioas>,
    backend: VfioBackend,
    facts: DeviceFacts,
    plan: Plan,
    probes: Probes,
    observed_doorbell: Option<u64>,
    mapped: Vec<IovaRange>,
    /// Whether the guest's MSI controller takes a DeviceID (the ITS does, the IMSIC not).
    devid_in_msis: bool,
}

impl AttachedDevice {
    /// The plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// What the probes found.
    pub fn probes(&self) -> Probes {
        self.probes
    }

    /// The VFIO device (for example to add its file to the VM's KVM VFIO device).
    pub fn vfio_device(&self) -> &VfioDevice {
        self.backend.device()
    }

    /// The doorbell address the kernel programmed into the real table when vector 0 was
    /// enabled at setup, when it could be read.
    pub fn observed_doorbell(&self) -> Option<u64> {
        self.observed_doorbell
    }

    /// The IOAS the device is attached to.
    pub fn ioas(&self) -> &Arc<Ioas> {
        &self.ioas
    }

    /// The iommufd the device is bound to.
    pub fn iommufd(&self) -> &Arc<Iommufd> {
        &self._iommufd
    }

    /// The device's iommufd device ID.
    pub fn dev_id(&self) -> Option<u32> {
        self.backend.device().dev_id()
    }

    /// An attacher for the device (see [`vfio_cdev::Attacher`]): how a virtual IOMMU moves
    /// the device to the nested HWPTs that follow its guest's STEs, while the passthrough
    /// device owns the device itself.
    pub fn attacher(&self) -> Result<vfio_cdev::Attacher> {
        Ok(self.backend.device().attacher()?)
    }

    /// Replaces the write-through policy the plan chose. For tests and negative controls:
    /// `DoorbellPolicy::KernelProgrammed` leaves the kernel's doorbell IOVA in the device's
    /// table, which under a guest stage 1 does not translate, so the device's MSIs fault.
    pub fn override_policy(&mut self, policy: DoorbellPolicy) {
        self.plan.policy = policy;
    }

    /// The guest RAM ranges mapped at IOVA = GPA.
    pub fn mapped(&self) -> &[IovaRange] {
        &self.mapped
    }

    /// Step 3: the passthrough device, routing through a [`RouterGroup`] over `router` and
    /// mapping BAR pages through `mapper`; `devid` is the DeviceID of the function in the
    /// guest's ITS.
    pub fn into_device<R: MsiRouter, M: GuestMapper>(
        self,
        router: R,
        mapper: M,
        devid: u32,
        relocation: RelocationPolicy,
    ) -> Result<PassthroughDevice<VfioBackend, RouterGroup<R>, M>> {
        self.into_device_with_group(
            |vectors| RouterGroup::new(router, vectors).map_err(Error::Eventfd),
            mapper,
            devid,
            relocation,
        )
    }

    /// Step 3 for a VMM with its own interrupt manager: `group` is called once with the
    /// function's MSI-X vector count (0 without MSI-X) and returns the [`InterruptGroup`]
    /// the device's vectors go through. `devid` is ignored for a vIMSIC (no DeviceID).
    pub fn into_device_with_group<G, F, M>(
        mut self,
        group: F,
        mapper: M,
        devid: u32,
        relocation: RelocationPolicy,
    ) -> Result<PassthroughDevice<VfioBackend, G, M>>
    where
        G: InterruptGroup,
        F: FnOnce(u16) -> Result<G>,
        M: GuestMapper,
    {
        let page = host_page_size();
        let name = self.backend.device().name().to_string();
        let parts = build_model(
            &name,
            &self.facts.config,
            &self.facts.bars,
            &self.facts.bar_regs,
            relocation,
            page,
        )?;
        if let Some(m) = &parts.msix
            && !self.backend.table_mapped()
        {
            self.backend.map_table(&m.layout().real(), page)?;
        }
        let pieces = self
            .backend
            .map_direct_pieces(parts.msix.as_ref().map(|m| m.layout()), page)?;
        let group = group(parts.msix.as_ref().map_or(0, |m| m.vectors()))?;
        PassthroughDevice::new(
            self.backend,
            group,
            mapper,
            parts.config,
            parts.msix,
            pieces,
            PassthroughConfig {
                devid: self.devid_in_msis.then_some(devid),
                policy: self.plan.policy,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planning_needs_a_bound_device() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let dev = VfioDevice::from_file(file, "vfio9").unwrap();
        let guest = GuestSetup {
            map: GuestMap::default(),
            preferred_base: None,
            strategy: StrategyChoice::Auto,
            viommu: false,
        };
        let e = PreparedDevice::from_bound(dev, guest).unwrap_err();
        assert!(
            matches!(e, Error::Vfio(vfio_cdev::Error::NotBound { .. })),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains("planning the doorbell on vfio9"), "{msg}");
    }
}
