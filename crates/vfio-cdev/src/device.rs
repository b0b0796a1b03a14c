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
    /// Whether the file was adopted already bound ([`VfioDevice::from_bound_file`]): other
    /// descriptors of the same file then keep the binding after this handle is closed, so
    /// dropping the handle detaches explicitly.
    adopted_bound: bool,
    attached: Option<PageTable>,
    /// What must outlive this handle's use of the file ([`VfioDevice::hold_owner`]):
    /// dropped last, after the detach, the file and the page table.
    owner: Owner,
}

/// The object a file was duplicated from, kept until the device handle is gone.
struct Owner(Option<Box<dyn std::any::Any + Send + Sync>>);

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

impl Drop for Owner {
    /// Drops the owner, containing a panic from its `Drop` (vfio-ioctls' `VfioDevice`
    /// unwraps its teardown ioctls): it is logged instead of unwinding out of the device's
    /// teardown. The owner's remaining resources may then leak.
    fn drop(&mut self) {
        if let Some(owner) = self.0.take()
            && std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(owner))).is_err()
        {
            log::error!("the owner of an adopted VFIO device file panicked while dropped");
        }
    }
}

/// The error for a failed `VFIO_DEVICE_GET_INFO` on a file adopted as bound: the kernel
/// answers `EINVAL` to every ioctl but the bind on a cdev file that is not bound.
fn adopt_info_error(device: String, errno: iommufd_ioas::Errno) -> Error {
    if errno.0 == libc::EINVAL {
        Error::AdoptUnbound {
            op: "VFIO_DEVICE_GET_INFO",
            device,
            errno,
        }
    } else {
        Error::DeviceInfo { device, errno }
    }
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
            adopted_bound: false,
            attached: None,
            owner: Owner(None),
        })
    }

    /// Adopts a VFIO cdev file that is already bound to `iommufd` as device `dev_id`: for
    /// example a duplicate of the descriptor of vfio-ioctls' `VfioDevice`, which opened and
    /// bound the device (`VfioDevice::new` on a `VfioIommufd`). `sysfs_dir` is the device's
    /// sysfs directory (for [`reserved_regions`](Self::reserved_regions)), `name` is used in
    /// errors. The device info is read here (`VFIO_DEVICE_GET_INFO`).
    ///
    /// Duplicates and bindings: the binding lives on the kernel's open file (its
    /// `vfio_device_file`), not on a descriptor. A duplicate (`dup(2)`, `File::try_clone`)
    /// shares that open file, so it is bound as soon as the original is, and every ioctl,
    /// region access and `mmap` works on it; opening the cdev again would give a new, unbound
    /// file instead. The kernel checks nothing against the caller's word here: it answers
    /// `VFIO_DEVICE_GET_INFO` only on a bound file (an unbound one gives
    /// [`Error::AdoptUnbound`]), but which iommufd the file is bound to, and its device ID,
    /// are the caller's to get right (an attach to a page table of another iommufd fails
    /// in the kernel).
    ///
    /// The binding, and an attachment, end only when the LAST reference to the open file
    /// goes: every descriptor, BAR mapping and KVM VFIO registration. Closing this handle
    /// therefore releases nothing while the original is open, so dropping a device adopted
    /// this way detaches it explicitly (`VFIO_DEVICE_DETACH_IOMMUFD_PT`) when this handle
    /// attached it, before it lets go of the page table: the IOAS or HWPT can then be
    /// destroyed while the original descriptor is still open. Whoever holds the original
    /// keeps it open while this handle is used, and closes it afterwards
    /// ([`hold_owner`](Self::hold_owner) does both).
    ///
    /// ```no_run
    /// use std::os::fd::AsFd;
    /// use iommufd_ioas::Iommufd;
    /// use vfio_cdev::VfioDevice;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let iommufd = Iommufd::open()?;
    /// // Stands for a descriptor bound elsewhere (vfio-ioctls' device).
    /// let mut theirs = VfioDevice::open_pci("0000:00:06.0".parse()?)?;
    /// let dev_id = theirs.bind(&iommufd)?;
    /// let dup = std::fs::File::from(theirs.as_fd().try_clone_to_owned()?);
    /// let mut ours = VfioDevice::from_bound_file(dup, "vfio0", None, &iommufd, dev_id)?;
    /// ours.hold_owner(theirs);
    /// println!("{} regions", ours.info()?.num_regions);
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_bound_file(
        file: File,
        name: impl Into<String>,
        sysfs_dir: Option<PathBuf>,
        iommufd: &Arc<Iommufd>,
        dev_id: u32,
    ) -> Result<Self> {
        let name = name.into();
        let raw = match sys::device_info(file.as_fd()) {
            Ok(raw) => raw,
            Err(errno) => return Err(adopt_info_error(name, errno)),
        };
        Ok(VfioDevice {
            file,
            name,
            sysfs_dir,
            info: Some(DeviceInfo {
                flags: raw.flags,
                num_regions: raw.num_regions,
                num_irqs: raw.num_irqs,
            }),
            config: OnceLock::new(),
            iommufd: Some((iommufd.clone(), dev_id)),
            adopted_bound: true,
            attached: None,
            owner: Owner(None),
        })
    }

    /// Keeps `owner` (the object the file was duplicated from, such as vfio-ioctls'
    /// `VfioDevice`) until this device is dropped, and drops it last: after the explicit
    /// detach, this handle's file and the page table. A panic in the owner's `Drop` is
    /// contained and logged. A second call replaces (and drops) the first owner.
    pub fn hold_owner<T: Send + Sync + 'static>(&mut self, owner: T) {
        self.owner = Owner(Some(Box::new(owner)));
    }

    /// Whether the device was adopted already bound ([`from_bound_file`](Self::from_bound_file)).
    pub fn adopted_bound(&self) -> bool {
        self.adopted_bound
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

    /// The iommufd the device is bound to, once bound.
    pub fn iommufd(&self) -> Option<&Arc<Iommufd>> {
        self.iommufd.as_ref().map(|(fd, _)| fd)
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

impl Drop for VfioDevice {
    /// A device adopted bound ([`VfioDevice::from_bound_file`]) and attached by this handle
    /// is detached here: closing this descriptor would not detach it while other descriptors
    /// of the file are open. Then the file closes, the page table reference goes, and the
    /// held owner goes last (field order).
    fn drop(&mut self) {
        if self.adopted_bound
            && self.attached.is_some()
            && let Err(errno) = sys::detach_pt(self.file.as_fd())
        {
            log::error!(
                "VFIO_DEVICE_DETACH_IOMMUFD_PT of {} at teardown failed: {errno}",
                self.name
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn null_file() -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .unwrap()
    }

    #[test]
    fn an_unbound_file_is_named_as_such() {
        let e = adopt_info_error("vfio3".into(), iommufd_ioas::Errno(libc::EINVAL));
        assert!(matches!(e, Error::AdoptUnbound { .. }), "{e:?}");
        assert_eq!(e.errno(), Some(iommufd_ioas::Errno(libc::EINVAL)));
        let msg = e.to_string();
        for part in ["VFIO_DEVICE_GET_INFO", "vfio3", "not bound"] {
            assert!(msg.contains(part), "{msg}");
        }
        // Any other answer is a plain GET_INFO failure.
        let e = adopt_info_error("vfio3".into(), iommufd_ioas::Errno(libc::ENOTTY));
        assert!(matches!(e, Error::DeviceInfo { .. }), "{e:?}");
    }

    #[test]
    fn adopting_a_file_that_is_no_vfio_device_fails_with_the_kernels_answer() {
        // Any character device stands in for the iommufd: nothing is asked of it here.
        let iommufd = Iommufd::open_path(Path::new("/dev/null")).unwrap();
        let e = VfioDevice::from_bound_file(null_file(), "null", None, &iommufd, 7).unwrap_err();
        assert!(matches!(e, Error::DeviceInfo { .. }), "{e:?}");
        assert_eq!(e.errno(), Some(iommufd_ioas::Errno(libc::ENOTTY)));
        assert!(
            e.to_string().contains("VFIO_DEVICE_GET_INFO of null"),
            "{e}"
        );
    }

    struct Recorder(Arc<Mutex<Vec<&'static str>>>, &'static str);

    impl Drop for Recorder {
        fn drop(&mut self) {
            self.0.lock().unwrap().push(self.1);
        }
    }

    #[test]
    fn the_owner_goes_with_the_device_and_a_replaced_owner_at_once() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut dev = VfioDevice::from_file(null_file(), "null").unwrap();
        assert!(!dev.adopted_bound());
        dev.hold_owner(Recorder(log.clone(), "first"));
        dev.hold_owner(Recorder(log.clone(), "second"));
        assert_eq!(*log.lock().unwrap(), ["first"]);
        drop(dev);
        assert_eq!(*log.lock().unwrap(), ["first", "second"]);
    }

    struct Panics(Arc<AtomicBool>);

    impl Drop for Panics {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
            panic!("teardown unwrap");
        }
    }

    #[test]
    fn a_panicking_owner_does_not_unwind_out_of_the_device() {
        let ran = Arc::new(AtomicBool::new(false));
        let mut dev = VfioDevice::from_file(null_file(), "null").unwrap();
        dev.hold_owner(Panics(ran.clone()));
        drop(dev);
        assert!(ran.load(Ordering::SeqCst));
    }
}
