// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`VfioDevice`]: a VFIO device opened through its cdev and driven through iommufd.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

#[cfg(feature = "proposed")]
use iommufd_ioas::proposed::Support;
use iommufd_ioas::{Hwpt, Ioas, IommuGroup, Iommufd, ReservedRegion};
use vfio_bindings::bindings::vfio::{
    VFIO_DEVICE_FLAGS_PCI, VFIO_DEVICE_FLAGS_RESET, VFIO_PCI_CONFIG_REGION_INDEX,
};
use vmm_sys_util::eventfd::EventFd;

use crate::attacher::Attacher;
use crate::error::{Error, Result};
use crate::fd::DeviceFd;
use crate::irq::{IrqIndex, IrqInfo, IrqSet};
use crate::pci::{PciAddress, SysRoots};
use crate::region::{RegionInfo, RegionMapping};
use crate::sys;

/// The largest region info reply (header plus capability chain) accepted from the kernel.
/// vfio-pci's chains are a few dozen bytes; the cap keeps a broken `argsz` from sizing a host
/// allocation.
pub const MAX_REGION_INFO_LEN: usize = 64 * 1024;

/// `VFIO_DEVICE_GET_INFO`, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Raw `VFIO_DEVICE_FLAGS_*`.
    pub flags: u32,
    /// Number of regions.
    pub num_regions: u32,
    /// Number of IRQ indexes.
    pub num_irqs: u32,
}

impl DeviceInfo {
    /// A vfio-pci device.
    pub fn is_pci(&self) -> bool {
        self.flags & VFIO_DEVICE_FLAGS_PCI != 0
    }
    /// `VFIO_DEVICE_RESET` is supported.
    pub fn can_reset(&self) -> bool {
        self.flags & VFIO_DEVICE_FLAGS_RESET != 0
    }
}

/// What the device is attached to; holding it keeps the page table alive while attached.
#[derive(Debug)]
enum PageTable {
    Ioas(Arc<Ioas>),
    Hwpt(Arc<Hwpt>),
}

impl PageTable {
    fn id(&self) -> u32 {
        match self {
            PageTable::Ioas(i) => i.id(),
            PageTable::Hwpt(h) => h.id(),
        }
    }
}

/// A VFIO device opened through its cdev (`/dev/vfio/devices/vfioN`).
///
/// The lifecycle the kernel imposes is: open, [`bind`](Self::bind) to an iommufd (once per
/// open file), optionally set per-device iommufd options (the proposed software MSI window
/// must be set here, before attach), [`attach_ioas`](Self::attach_ioas) or
/// [`attach_hwpt`](Self::attach_hwpt), then use regions and interrupts. Dropping the device
/// closes the file, which detaches and unbinds it in the kernel; the IOAS or HWPT it was
/// attached to is kept alive by the device until then.
///
/// # Examples
///
/// ```no_run
/// use std::sync::Arc;
/// use iommufd_ioas::Iommufd;
/// use vfio_cdev::{IrqIndex, PciAddress, VfioDevice};
///
/// let iommufd = Iommufd::open()?;
/// let ioas = Arc::new(iommufd.alloc_ioas()?);
/// let mut dev = VfioDevice::open_pci("0000:00:02.0".parse::<PciAddress>()?)?;
/// let dev_id = dev.bind(&iommufd)?;
/// dev.attach_ioas(&ioas)?;
/// let vendor = dev.read_config_u16(0)?;
/// let msix = dev.irq_info(IrqIndex::Msix)?;
/// println!("device {dev_id}: vendor {vendor:#06x}, {} MSI-X vectors", msix.count);
/// # Ok::<(), vfio_cdev::Error>(())
/// ```
#[derive(Debug)]
pub struct VfioDevice {
    file: File,
    name: String,
    sysfs_dir: Option<PathBuf>,
    info: Option<DeviceInfo>,
    /// The config region's info, read on first use: config accesses are frequent (every
    /// trapped guest access) and the region never changes.
    config: OnceLock<RegionInfo>,
    iommufd: Option<(Arc<Iommufd>, u32)>,
    attached: Option<PageTable>,
}

impl VfioDevice {
    /// Opens a VFIO cdev by path.
    pub fn open_cdev(path: &Path) -> Result<Self> {
        Self::open_cdev_in(path, &SysRoots::default())
    }

    /// Opens the VFIO cdev of the PCI device `addr` (which must be bound to vfio-pci).
    pub fn open_pci(addr: PciAddress) -> Result<Self> {
        let roots = SysRoots::default();
        let cdev = roots.cdev_of_pci(&addr)?;
        let mut dev = Self::open_cdev_in(&cdev, &roots)?;
        dev.sysfs_dir = Some(roots.pci_device_dir(&addr));
        Ok(dev)
    }

    fn open_cdev_in(path: &Path, roots: &SysRoots) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| Error::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let mut dev = Self::from_file(file, name)?;
        dev.sysfs_dir = roots.device_dir_of_cdev(path).ok();
        Ok(dev)
    }

    /// Adopts an open, not yet bound VFIO cdev (for example passed in by a management
    /// stack). `name` is used in error messages.
    pub fn from_file(file: File, name: impl Into<String>) -> Result<Self> {
        Ok(VfioDevice {
            file,
            name: name.into(),
            sysfs_dir: None,
            info: None,
            config: OnceLock::new(),
            iommufd: None,
            attached: None,
        })
    }

    /// The cdev name (`vfio0`), as used in errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `VFIO_DEVICE_GET_INFO`, as read when the device was bound (a cdev answers no ioctl
    /// but `VFIO_DEVICE_BIND_IOMMUFD` before it is bound).
    pub fn info(&self) -> Result<DeviceInfo> {
        self.info.ok_or_else(|| Error::NotBound {
            op: "VFIO_DEVICE_GET_INFO",
            device: self.name.clone(),
        })
    }

    /// The device's sysfs directory, when it was found.
    pub fn sysfs_dir(&self) -> Option<&Path> {
        self.sysfs_dir.as_deref()
    }

    /// Binds the device to `iommufd` (`VFIO_DEVICE_BIND_IOMMUFD`) and returns its iommufd
    /// device ID, used by `IOMMU_HWPT_ALLOC`, `IOMMU_GET_HW_INFO` and device options. The
    /// kernel grants every other device ioctl, and region access, only after this; the
    /// device info is read here.
    pub fn bind(&mut self, iommufd: &Arc<Iommufd>) -> Result<u32> {
        if let Some((_, dev_id)) = &self.iommufd {
            return Err(Error::AlreadyBound {
                device: self.name.clone(),
                dev_id: *dev_id,
            });
        }
        let dev_id =
            sys::bind_iommufd(self.file.as_fd(), iommufd.as_raw_fd()).map_err(|errno| {
                Error::Bind {
                    device: self.name.clone(),
                    iommufd: iommufd.as_raw_fd(),
                    errno,
                }
            })?;
        self.iommufd = Some((iommufd.clone(), dev_id));
        let raw = sys::device_info(self.file.as_fd()).map_err(|errno| Error::DeviceInfo {
            device: self.name.clone(),
            errno,
        })?;
        self.info = Some(DeviceInfo {
            flags: raw.flags,
            num_regions: raw.num_regions,
            num_irqs: raw.num_irqs,
        });
        Ok(dev_id)
    }

    /// The iommufd device ID, once bound.
    pub fn dev_id(&self) -> Option<u32> {
        self.iommufd.as_ref().map(|(_, id)| *id)
    }

    fn bound(&self, op: &'static str) -> Result<&Arc<Iommufd>> {
        self.iommufd
            .as_ref()
            .map(|(fd, _)| fd)
            .ok_or_else(|| Error::NotBound {
                op,
                device: self.name.clone(),
            })
    }

    fn attach(&mut self, pt: PageTable, owner: &Arc<Iommufd>) -> Result<u32> {
        const OP: &str = "VFIO_DEVICE_ATTACH_IOMMUFD_PT";
        let bound = self.bound(OP)?;
        if !Arc::ptr_eq(bound, owner) {
            return Err(Error::ForeignIommufd {
                op: OP,
                device: self.name.clone(),
                pt_id: pt.id(),
            });
        }
        let pt_id = pt.id();
        let attached = sys::attach_pt(self.file.as_fd(), pt_id).map_err(|errno| Error::Attach {
            device: self.name.clone(),
            pt_id,
            errno,
        })?;
        // Re-attaching replaces the old page table in the kernel (a "replace" attach);
        // dropping the old reference here matches that.
        self.attached = Some(pt);
        Ok(attached)
    }

    /// Attaches the device to an IOAS (the kernel picks or creates a HWPT for it) and
    /// returns the ID of the HWPT actually attached. Query
    /// [`Ioas::iova_ranges`] afterwards: the device narrows them.
    pub fn attach_ioas(&mut self, ioas: &Arc<Ioas>) -> Result<u32> {
        self.attach(PageTable::Ioas(ioas.clone()), ioas.iommufd())
    }

    /// Attaches the device to an explicitly allocated HWPT.
    pub fn attach_hwpt(&mut self, hwpt: &Arc<Hwpt>, iommufd: &Arc<Iommufd>) -> Result<u32> {
        self.attach(PageTable::Hwpt(hwpt.clone()), iommufd)
    }

    /// An [`Attacher`] for this device: a second descriptor of the same bound file, through
    /// which another part of the VMM (a virtual IOMMU) can replace the device's page table
    /// with `&self`. The device must be bound. Attachments made through the attacher are
    /// not reflected in [`attached_to`](Self::attached_to), which keeps reporting (and
    /// keeping alive) what this handle attached.
    pub fn attacher(&self) -> Result<Attacher> {
        const OP: &str = "dup of the device file for an attacher";
        let iommufd = self.bound(OP)?.clone();
        let file = self.file.try_clone().map_err(|source| Error::Open {
            path: PathBuf::from(format!("{} (dup)", self.name)),
            source,
        })?;
        Ok(Attacher::new(file, self.name.clone(), iommufd))
    }

    /// The ID of the IOAS or HWPT the device is attached to.
    pub fn attached_to(&self) -> Option<u32> {
        self.attached.as_ref().map(PageTable::id)
    }

    /// Detaches the device from its page table (`VFIO_DEVICE_DETACH_IOMMUFD_PT`). Detaching a
    /// device that is not attached is refused ([`Error::NotAttached`]); the kernel would accept
    /// it silently.
    pub fn detach(&mut self) -> Result<()> {
        if self.attached.is_none() {
            return Err(Error::NotAttached {
                device: self.name.clone(),
            });
        }
        sys::detach_pt(self.file.as_fd()).map_err(|errno| Error::Detach {
            device: self.name.clone(),
            errno,
        })?;
        self.attached = None;
        Ok(())
    }

    /// The reserved IOVA regions of the device's IOMMU group, from sysfs: readable before
    /// attach, which the doorbell planner needs.
    pub fn reserved_regions(&self) -> Result<Vec<ReservedRegion>> {
        let dir = self.sysfs_dir.as_deref().ok_or_else(|| Error::Sysfs {
            path: PathBuf::from(format!("/sys/class/vfio-dev/{}/device", self.name)),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        Ok(IommuGroup::of_device(dir)?.reserved_regions()?)
    }

    /// The device's descriptor as a [`DeviceFd`]: every region, interrupt and reset
    /// operation below is one of its operations (which also work on a descriptor this crate
    /// did not open, such as `vfio-ioctls`' `VfioDevice`).
    pub fn fd(&self) -> DeviceFd<'_> {
        DeviceFd::new(self.file.as_fd(), &self.name)
    }

    /// See [`DeviceFd::region_info`].
    pub fn region_info(&self, index: u32) -> Result<RegionInfo> {
        self.fd().region_info(index)
    }

    /// See [`DeviceFd::irq_info`].
    pub fn irq_info(&self, index: IrqIndex) -> Result<IrqInfo> {
        self.fd().irq_info(index)
    }

    /// See [`DeviceFd::set_irqs`].
    pub fn set_irqs(&self, index: IrqIndex, start: u32, set: &IrqSet) -> Result<()> {
        self.fd().set_irqs(index, start, set)
    }

    /// See [`DeviceFd::set_vector_eventfd`].
    pub fn set_vector_eventfd(
        &self,
        index: IrqIndex,
        vector: u32,
        eventfd: Option<&EventFd>,
    ) -> Result<()> {
        self.fd().set_vector_eventfd(index, vector, eventfd)
    }

    /// See [`DeviceFd::set_vector_eventfds`].
    pub fn set_vector_eventfds(
        &self,
        index: IrqIndex,
        start: u32,
        fds: &[Option<&EventFd>],
    ) -> Result<()> {
        self.fd().set_vector_eventfds(index, start, fds)
    }

    /// See [`DeviceFd::disable_irqs`].
    pub fn disable_irqs(&self, index: IrqIndex) -> Result<()> {
        self.fd().disable_irqs(index)
    }

    /// See [`DeviceFd::trigger_irq`].
    pub fn trigger_irq(&self, index: IrqIndex, vector: u32) -> Result<()> {
        self.fd().trigger_irq(index, vector)
    }

    /// See [`DeviceFd::prepare_msi_iovas`].
    #[cfg(feature = "proposed")]
    pub fn prepare_msi_iovas(&self, index: IrqIndex, start: u32, iovas: &[u64]) -> Result<()> {
        self.fd().prepare_msi_iovas(index, start, iovas)
    }

    /// See [`DeviceFd::probe_msi_iova`].
    #[cfg(feature = "proposed")]
    pub fn probe_msi_iova(&self, index: IrqIndex) -> Result<Support<()>> {
        self.fd().probe_msi_iova(index)
    }

    /// See [`DeviceFd::reset`]; refused ([`Error::ResetUnsupported`]) when the device does
    /// not advertise `VFIO_DEVICE_FLAGS_RESET`.
    pub fn reset(&self) -> Result<()> {
        if !self.info()?.can_reset() {
            return Err(Error::ResetUnsupported {
                device: self.name.clone(),
            });
        }
        self.fd().reset_unchecked()
    }

    /// See [`DeviceFd::read_region`].
    pub fn read_region(&self, region: &RegionInfo, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.fd().read_region(region, offset, buf)
    }

    /// See [`DeviceFd::write_region`].
    pub fn write_region(&self, region: &RegionInfo, offset: u64, buf: &[u8]) -> Result<()> {
        self.fd().write_region(region, offset, buf)
    }

    fn config_region(&self, op: &'static str) -> Result<&RegionInfo> {
        if let Some(r) = self.config.get() {
            return Ok(r);
        }
        let info = self.info()?;
        if !info.is_pci() {
            return Err(Error::NotPci {
                op,
                device: self.name.clone(),
                flags: info.flags,
            });
        }
        let region = self.region_info(VFIO_PCI_CONFIG_REGION_INDEX)?;
        Ok(self.config.get_or_init(|| region))
    }

    /// Reads PCI configuration space at `offset`.
    pub fn read_config(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let region = self.config_region("config read")?;
        self.read_region(region, offset, buf)
    }

    /// Writes PCI configuration space at `offset` (vfio-pci virtualizes some fields).
    pub fn write_config(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let region = self.config_region("config write")?;
        self.write_region(region, offset, buf)
    }

    /// Reads a little-endian 16-bit config register.
    pub fn read_config_u16(&self, offset: u64) -> Result<u16> {
        let mut b = [0u8; 2];
        self.read_config(offset, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Reads a little-endian 32-bit config register.
    pub fn read_config_u32(&self, offset: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read_config(offset, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes a little-endian 16-bit config register.
    pub fn write_config_u16(&self, offset: u64, value: u16) -> Result<()> {
        self.write_config(offset, &value.to_le_bytes())
    }

    /// Reads the whole configuration space (256 bytes for PCI, up to 4096 for PCIe, as the
    /// region reports) into a vector.
    pub fn read_config_space(&self) -> Result<Vec<u8>> {
        let region = self.config_region("config read")?;
        let len = region.size.min(4096) as usize;
        let mut buf = vec![0u8; len];
        self.read_region(region, 0, &mut buf)?;
        Ok(buf)
    }

    /// See [`DeviceFd::mmap_region`].
    pub fn mmap_region(&self, region: &RegionInfo, offset: u64, len: u64) -> Result<RegionMapping> {
        self.fd().mmap_region(region, offset, len)
    }
}

impl AsRawFd for VfioDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl AsFd for VfioDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

pub(crate) fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_ne_bytes)
        .unwrap_or(0)
}

pub(crate) fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_ne_bytes)
        .unwrap_or(0)
}
