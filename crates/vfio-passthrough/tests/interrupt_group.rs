// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A VMM with its own interrupt manager plugs it in through [`InterruptGroup`].
//!
//! The manager here has the shape of cloud-hypervisor's `vm_device::interrupt`:
//! `InterruptSourceGroup::{update(index, config, masked, set_gsi), set_gsi(), trigger(index),
//! notifier(index)}` over a routing table only it writes. [`ChGroup`] is the whole adapter a
//! VMM of that shape needs (about forty lines); the tests drive the passthrough device the
//! way Linux's igb driver does and check the manager's table, not this crate's books: routes
//! carry the guest's address and data and the DeviceID, a batch is one `set_gsi`, masking
//! holds interrupts for the PBA and an unmask delivers them once, and the device's vectors
//! signal the manager's own eventfds. [`ChRemap`] is the remap hook's glue over a
//! `DmaRemapping`-shaped guest IOMMU: routes follow the guest's translations.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use msi_trap::msix::BarAccess;
use msi_trap::msix::layout::{BarIndex, BarInfo, RelocationPolicy};
use msi_trap::write_through::DoorbellPolicy;
use vfio_passthrough::{
    BackendError, DeviceBackend, GuestMapper, InterruptGroup, MsiRemapping, MsiRoute, MsixEngine,
    PassthroughConfig, PassthroughDevice, RemapError, VectorBackend, build_model,
};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

const DOORBELL: u64 = 0x0800_0040;
const DEVID: u32 = 0x8;
const MSIX_CAP: u16 = 0x70;
const GUEST_DATA: u32 = 0xdead_0000;
const VECTORS: u16 = 10;

// --- The VMM's interrupt manager, cloud-hypervisor-shaped -------------------------------

/// `vm_device::interrupt::MsiIrqSourceConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MsiIrqSourceConfig {
    high_addr: u32,
    low_addr: u32,
    data: u32,
    devid: u32,
}

/// `vm_device::interrupt::InterruptSourceConfig` (only its MSI variant matters here).
#[derive(Debug, Clone, Copy)]
enum InterruptSourceConfig {
    MsiIrq(MsiIrqSourceConfig),
}

/// `vm_device::interrupt::InterruptSourceGroup`, reduced to what a passthrough device uses.
trait InterruptSourceGroup: Send + Sync {
    fn trigger(&self, index: u32) -> io::Result<()>;
    fn notifier(&self, index: u32) -> Option<EventFd>;
    fn update(
        &self,
        index: u32,
        config: InterruptSourceConfig,
        masked: bool,
        set_gsi: bool,
    ) -> io::Result<()>;
    fn set_gsi(&self) -> io::Result<()>;
}

/// The manager's state: the VM's routing table as the manager knows it.
#[derive(Debug, Default)]
struct Table {
    /// GSI -> (config, masked), staged by `update`.
    staged: BTreeMap<u32, (MsiIrqSourceConfig, bool)>,
    /// What the last `set_gsi` installed.
    installed: BTreeMap<u32, (MsiIrqSourceConfig, bool)>,
    set_gsi_calls: u32,
    triggered: Vec<MsiIrqSourceConfig>,
}

/// The manager's MSI group: fixed GSIs `base..base+count`, one eventfd each.
struct MsiGroup {
    base: u32,
    eventfds: Vec<EventFd>,
    table: Arc<Mutex<Table>>,
}

impl InterruptSourceGroup for MsiGroup {
    fn trigger(&self, index: u32) -> io::Result<()> {
        let mut t = self.table.lock().unwrap();
        let (config, _) = *t
            .installed
            .get(&(self.base + index))
            .ok_or(io::ErrorKind::NotFound)?;
        t.triggered.push(config);
        Ok(())
    }
    fn notifier(&self, index: u32) -> Option<EventFd> {
        self.eventfds.get(index as usize)?.try_clone().ok()
    }
    fn update(
        &self,
        index: u32,
        config: InterruptSourceConfig,
        masked: bool,
        set_gsi: bool,
    ) -> io::Result<()> {
        let InterruptSourceConfig::MsiIrq(c) = config;
        let mut t = self.table.lock().unwrap();
        t.staged.insert(self.base + index, (c, masked));
        drop(t);
        if set_gsi { self.set_gsi() } else { Ok(()) }
    }
    fn set_gsi(&self) -> io::Result<()> {
        let mut t = self.table.lock().unwrap();
        t.installed = t.staged.clone();
        t.set_gsi_calls += 1;
        Ok(())
    }
}

// --- The adapter a VMM of that shape writes --------------------------------------------

/// [`InterruptGroup`] over a cloud-hypervisor-shaped group. The notifiers are cloned once,
/// so that the device can borrow them; a vector without a route is updated masked with its
/// last configuration (that manager has no "no route").
struct ChGroup {
    group: Arc<dyn InterruptSourceGroup>,
    notifiers: Vec<EventFd>,
    last: Vec<MsiIrqSourceConfig>,
}

impl ChGroup {
    fn new(group: Arc<dyn InterruptSourceGroup>, vectors: u16) -> io::Result<Self> {
        let notifiers = (0..u32::from(vectors))
            .map(|i| group.notifier(i).ok_or(io::ErrorKind::NotFound))
            .collect::<Result<Vec<_>, _>>()?;
        let zero = MsiIrqSourceConfig {
            high_addr: 0,
            low_addr: 0,
            data: 0,
            devid: 0,
        };
        Ok(ChGroup {
            group,
            notifiers,
            last: vec![zero; usize::from(vectors)],
        })
    }
}

impl InterruptGroup for ChGroup {
    fn vectors(&self) -> u16 {
        self.notifiers.len() as u16
    }
    fn notifier(&self, vector: u16) -> Option<&EventFd> {
        self.notifiers.get(usize::from(vector))
    }
    fn update(&mut self, vector: u16, route: Option<MsiRoute>, masked: bool) {
        let Some(last) = self.last.get_mut(usize::from(vector)) else {
            return;
        };
        if let Some(r) = route {
            *last = MsiIrqSourceConfig {
                high_addr: (r.address >> 32) as u32,
                low_addr: r.address as u32,
                data: r.data,
                devid: r.devid.unwrap_or(0),
            };
        }
        let config = InterruptSourceConfig::MsiIrq(*last);
        let masked = masked || route.is_none();
        if let Err(e) = self.group.update(u32::from(vector), config, masked, false) {
            eprintln!("vector {vector}: update failed: {e}");
        }
    }
    fn commit(&mut self) -> Result<(), BackendError> {
        Ok(self.group.set_gsi()?)
    }
    fn trigger(&mut self, vector: u16) -> Result<(), BackendError> {
        Ok(self.group.trigger(u32::from(vector))?)
    }
}

// --- The remap hook over a cloud-hypervisor-shaped DmaRemapping ------------------------

/// `pci::DmaRemapping` of cloud-hypervisor's virtual IOMMU, reduced to what is used here.
trait DmaRemapping: Send + Sync {
    fn translate_gva(&self, id: u32, addr: u64) -> io::Result<u64>;
}

/// The whole remap glue.
struct ChRemap(Arc<dyn DmaRemapping>);

impl MsiRemapping for ChRemap {
    fn translate_msi(&self, stream: u32, address: u64) -> Result<u64, RemapError> {
        self.0
            .translate_gva(stream, address)
            .map_err(|e| RemapError::NotTranslated {
                stream,
                address,
                reason: e.to_string(),
            })
    }
}

/// A guest IOMMU with one page table for one stream: gIOVA page -> GPA page.
struct FakeIommu {
    stream: u32,
    pages: Mutex<BTreeMap<u64, u64>>,
}

impl DmaRemapping for FakeIommu {
    fn translate_gva(&self, id: u32, addr: u64) -> io::Result<u64> {
        if id != self.stream {
            return Err(io::Error::other(format!("stream {id:#x} bypasses")));
        }
        let pages = self.pages.lock().unwrap();
        let gpa = pages
            .get(&(addr & !0xfff))
            .ok_or_else(|| io::Error::other(format!("{addr:#x} not mapped")))?;
        Ok(gpa | (addr & 0xfff))
    }
}

// --- A fake function (82576-like MSI-X layout) -------------------------------------------

struct FakeDevice {
    config: Mutex<Vec<u8>>,
    /// Per vector: the eventfd VFIO was given (shared with the test, which raises them).
    enabled: Enabled,
}

type Enabled = Arc<Mutex<BTreeMap<u16, EventFd>>>;

impl VectorBackend for FakeDevice {
    fn set_vector(&self, vector: u16, eventfd: Option<&EventFd>) -> Result<(), BackendError> {
        let mut enabled = self.enabled.lock().unwrap();
        match eventfd {
            Some(e) => {
                enabled.insert(vector, e.try_clone()?);
            }
            None => {
                enabled.remove(&vector);
            }
        }
        Ok(())
    }
    fn disable_vectors(&self) -> Result<(), BackendError> {
        self.enabled.lock().unwrap().clear();
        Ok(())
    }
    fn prepare_msi_iova(&self, _: u16, _: u64) -> Result<(), BackendError> {
        Ok(())
    }
    fn read_table_address(&self, _: u16) -> Result<Option<u64>, BackendError> {
        Ok(Some(DOORBELL))
    }
    fn write_table_address(&self, _: u16, _: u32, _: u32) -> Result<(), BackendError> {
        Ok(())
    }
}

impl DeviceBackend for FakeDevice {
    fn read_config(&self, offset: u16, buf: &mut [u8]) -> Result<(), BackendError> {
        let c = self.config.lock().unwrap();
        let o = usize::from(offset);
        buf.copy_from_slice(c.get(o..o + buf.len()).ok_or("range")?);
        Ok(())
    }
    fn write_config(&self, offset: u16, buf: &[u8]) -> Result<(), BackendError> {
        let mut c = self.config.lock().unwrap();
        let o = usize::from(offset);
        c.get_mut(o..o + buf.len())
            .ok_or("range")?
            .copy_from_slice(buf);
        Ok(())
    }
    fn read_bar(&self, _: u8, _: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        buf.fill(0);
        Ok(())
    }
    fn write_bar(&self, _: u8, _: u64, _: &[u8]) -> Result<(), BackendError> {
        Ok(())
    }
}

/// The device raises `vector` (VFIO signals the eventfd it was given).
fn raise(enabled: &Enabled, vector: u16) {
    enabled.lock().unwrap()[&vector].write(1).unwrap();
}

struct NoMapper;

impl GuestMapper for NoMapper {
    unsafe fn map(&mut self, _: u64, _: u64, _: *mut u8) -> Result<u32, BackendError> {
        Err("no direct maps in this test".into())
    }
    fn unmap(&mut self, _: u32) -> Result<(), BackendError> {
        Ok(())
    }
}

fn igb_config() -> Vec<u8> {
    let mut c = vec![0u8; 256];
    c[0..4].copy_from_slice(&[0x86, 0x80, 0xc9, 0x10]);
    c[0x06] = 0x10;
    c[0x34] = 0x70;
    c[0x70..0x74].copy_from_slice(&[0x11, 0x00, 0x09, 0x00]);
    c[0x74..0x78].copy_from_slice(&3u32.to_le_bytes());
    c[0x78..0x7c].copy_from_slice(&0x2003u32.to_le_bytes());
    c
}

type Dev = PassthroughDevice<FakeDevice, ChGroup, NoMapper>;

struct World {
    dev: Dev,
    enabled: Enabled,
    table: Arc<Mutex<Table>>,
    /// The manager's own eventfds, as KVM's irqfds would see them.
    manager_fds: Vec<EventFd>,
}

const GSI_BASE: u32 = 40;

fn world() -> World {
    let cfg = igb_config();
    let bars = [
        BarInfo::memory32(0x2_0000),
        BarInfo::ABSENT,
        BarInfo::ABSENT,
        BarInfo::memory32(0x4000),
        BarInfo::ABSENT,
        BarInfo::ABSENT,
    ];
    let parts = build_model(
        "fake",
        &cfg,
        &bars,
        &[0; 6],
        RelocationPolicy::Never,
        0x1000,
    )
    .unwrap();
    let vectors = parts.msix.as_ref().unwrap().vectors();
    assert_eq!(vectors, VECTORS);
    let table = Arc::new(Mutex::new(Table::default()));
    let eventfds: Vec<EventFd> = (0..vectors)
        .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
        .collect();
    let manager_fds = eventfds.iter().map(|e| e.try_clone().unwrap()).collect();
    let group: Arc<dyn InterruptSourceGroup> = Arc::new(MsiGroup {
        base: GSI_BASE,
        eventfds,
        table: table.clone(),
    });
    let enabled = Enabled::default();
    let dev = PassthroughDevice::new(
        FakeDevice {
            config: Mutex::new(cfg),
            enabled: enabled.clone(),
        },
        ChGroup::new(group, vectors).unwrap(),
        NoMapper,
        parts.config,
        parts.msix,
        Vec::new(),
        PassthroughConfig {
            devid: Some(DEVID),
            policy: DoorbellPolicy::KernelProgrammed {
                doorbell_iova: DOORBELL,
            },
        },
    )
    .unwrap();
    World {
        dev,
        enabled,
        table,
        manager_fds,
    }
}

fn table_write(dev: &mut Dev, vector: u16, dword: u64, v: u32) {
    dev.write_bar(3, u64::from(vector) * 16 + dword * 4, &v.to_le_bytes());
}

/// BAR3 at 0x1004_0000, Memory Space on, then Linux's MSI-X setup of `vectors` vectors:
/// enable under Function Mask, program and unmask entries, clear Function Mask.
fn bring_up(dev: &mut Dev, vectors: u16) {
    bring_up_at(dev, vectors, DOORBELL);
}

fn bring_up_at(dev: &mut Dev, vectors: u16, address: u64) {
    dev.write_config(0x1c, &0x1004_0000u32.to_le_bytes());
    dev.write_config(0x04, &[0x06, 0x00]);
    dev.write_config(MSIX_CAP + 2, &0xc009u16.to_le_bytes());
    for v in 0..vectors {
        table_write(dev, v, 0, address as u32);
        table_write(dev, v, 1, (address >> 32) as u32);
        table_write(dev, v, 2, GUEST_DATA + u32::from(v));
        table_write(dev, v, 3, 0);
    }
    dev.write_config(MSIX_CAP + 2, &0x8009u16.to_le_bytes());
}

fn expected(v: u16) -> MsiIrqSourceConfig {
    MsiIrqSourceConfig {
        high_addr: 0,
        low_addr: DOORBELL as u32,
        data: GUEST_DATA + u32::from(v),
        devid: DEVID,
    }
}

#[test]
fn bring_up_is_one_set_gsi_with_the_guests_messages() {
    let mut w = world();
    bring_up(&mut w.dev, 3);
    let t = w.table.lock().unwrap();
    assert_eq!(
        t.set_gsi_calls, 1,
        "the whole bring-up is one routing update"
    );
    let live: Vec<_> = t.installed.iter().filter(|(_, (_, m))| !m).collect();
    assert_eq!(live.len(), 3);
    for v in 0..3u16 {
        assert_eq!(
            t.installed[&(GSI_BASE + u32::from(v))],
            (expected(v), false),
            "vector {v}"
        );
    }
    drop(t);
    // The device signals the manager's eventfds: what VFIO was given is the manager's.
    for v in 0..3u16 {
        raise(&w.enabled, v);
        assert_eq!(w.manager_fds[usize::from(v)].read().unwrap(), 1);
    }
}

#[test]
fn masked_interrupts_wait_for_the_pba_and_an_unmask_delivers_once() {
    let mut w = world();
    bring_up(&mut w.dev, 2);
    // The guest masks vector 1.
    table_write(&mut w.dev, 1, 3, 1);
    {
        let t = w.table.lock().unwrap();
        assert_eq!(t.set_gsi_calls, 2);
        assert_eq!(t.installed[&(GSI_BASE + 1)], (expected(1), true));
        assert_eq!(t.installed[&GSI_BASE], (expected(0), false));
    }
    // The device raises it while masked: a PBA read shows it pending.
    raise(&w.enabled, 1);
    let mut pba = [0u8; 8];
    w.dev.read_bar(3, 0x2000, &mut pba);
    assert_eq!(u64::from_le_bytes(pba), 0b10);
    // Unmask: delivered exactly once, through the manager's trigger.
    table_write(&mut w.dev, 1, 3, 0);
    let t = w.table.lock().unwrap();
    assert_eq!(t.triggered, vec![expected(1)]);
    assert_eq!(t.installed[&(GSI_BASE + 1)], (expected(1), false));
    drop(t);
    w.dev.read_bar(3, 0x2000, &mut pba);
    assert_eq!(u64::from_le_bytes(pba), 0);
}

#[test]
fn disable_and_drop_leave_every_vector_masked_in_the_manager() {
    let mut w = world();
    bring_up(&mut w.dev, 4);
    // MSI-X Enable off: the device's vectors go and the manager masks the routes.
    w.dev.write_config(MSIX_CAP + 2, &0x0009u16.to_le_bytes());
    {
        let t = w.table.lock().unwrap();
        assert!(t.installed.values().all(|(_, masked)| *masked));
        assert!(w.enabled.lock().unwrap().is_empty());
    }
    bring_up(&mut w.dev, 4);
    assert_eq!(
        w.table
            .lock()
            .unwrap()
            .installed
            .values()
            .filter(|(_, m)| !m)
            .count(),
        4
    );
    let table = w.table.clone();
    let enabled = w.enabled.clone();
    drop(w);
    assert!(table.lock().unwrap().installed.values().all(|(_, m)| *m));
    assert!(enabled.lock().unwrap().is_empty());
}

#[test]
fn routes_follow_the_guest_iommu_through_the_remap_glue() {
    const GIOVA: u64 = 0xffff_f040;
    const STREAM: u32 = 0x8;
    let mut w = world();
    let iommu = Arc::new(FakeIommu {
        stream: STREAM,
        pages: Mutex::new(BTreeMap::from([(GIOVA & !0xfff, DOORBELL & !0xfff)])),
    });
    w.dev
        .set_msi_remapping(Arc::new(ChRemap(iommu.clone())), STREAM);
    bring_up_at(&mut w.dev, 2, GIOVA);
    {
        let t = w.table.lock().unwrap();
        // The route carries the doorbell GPA the gIOVA reaches, not the gIOVA.
        assert_eq!(t.installed[&GSI_BASE], (expected(0), false));
        assert_eq!(t.installed[&(GSI_BASE + 1)], (expected(1), false));
    }
    assert_eq!(w.dev.unroutable_vectors(), 0);
    // The guest unmaps the page and invalidates: both routes go, masked in the manager.
    iommu.pages.lock().unwrap().clear();
    assert_eq!(w.dev.remap_changed(), 2);
    assert_eq!(w.dev.unroutable_vectors(), 2);
    assert!(w.table.lock().unwrap().installed.values().all(|(_, m)| *m));
    let reports = w.dev.vectors();
    assert!(matches!(
        reports[0].unroutable,
        Some(RemapError::NotTranslated {
            stream: STREAM,
            address: GIOVA,
            ..
        })
    ));
    // Mapped again: routed again by the next recomputation.
    iommu
        .pages
        .lock()
        .unwrap()
        .insert(GIOVA & !0xfff, DOORBELL & !0xfff);
    assert_eq!(w.dev.remap_changed(), 2);
    assert_eq!(w.dev.unroutable_vectors(), 0);
    assert_eq!(
        w.table.lock().unwrap().installed[&GSI_BASE],
        (expected(0), false)
    );
}

/// A VMM that keeps its own VFIO device (config space, BARs) holds the engine alone: it
/// routes the MSI-X capability, table and PBA accesses there and performs forwarded ones
/// itself.
#[test]
fn a_vmm_with_its_own_device_holds_the_engine_alone() {
    let cfg = igb_config();
    let bars = [
        BarInfo::memory32(0x2_0000),
        BarInfo::ABSENT,
        BarInfo::ABSENT,
        BarInfo::memory32(0x4000),
        BarInfo::ABSENT,
        BarInfo::ABSENT,
    ];
    let parts = build_model(
        "fake",
        &cfg,
        &bars,
        &[0; 6],
        RelocationPolicy::Never,
        0x1000,
    )
    .unwrap();
    let msix = parts.msix.unwrap();
    let table = Arc::new(Mutex::new(Table::default()));
    let group: Arc<dyn InterruptSourceGroup> = Arc::new(MsiGroup {
        base: GSI_BASE,
        eventfds: (0..VECTORS)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect(),
        table: table.clone(),
    });
    let mut engine = MsixEngine::new(
        msix,
        ChGroup::new(group, VECTORS).unwrap(),
        PassthroughConfig {
            devid: Some(DEVID),
            policy: DoorbellPolicy::KernelProgrammed {
                doorbell_iova: DOORBELL,
            },
        },
    )
    .unwrap();
    // The VMM's own VFIO device: only its vector operations reach the engine.
    let enabled = Enabled::default();
    let vfio = FakeDevice {
        config: Mutex::new(cfg),
        enabled: enabled.clone(),
    };
    let bar3 = BarIndex::new(3).unwrap();
    // The VMM's config-space code sees a write to the capability's Message Control.
    engine.write_config(&vfio, MSIX_CAP + 2, &0xc009u16.to_le_bytes());
    for v in 0..2u64 {
        for (dword, value) in [DOORBELL as u32, 0, GUEST_DATA + v as u32, 0]
            .into_iter()
            .enumerate()
        {
            let access =
                engine.write_bar(&vfio, bar3, v * 16 + dword as u64 * 4, &value.to_le_bytes());
            assert_eq!(access, BarAccess::Handled);
        }
    }
    engine.write_config(&vfio, MSIX_CAP + 2, &0x8009u16.to_le_bytes());
    {
        let t = table.lock().unwrap();
        assert_eq!(t.set_gsi_calls, 1);
        assert_eq!(t.installed[&GSI_BASE], (expected(0), false));
        assert_eq!(t.installed[&(GSI_BASE + 1)], (expected(1), false));
    }
    assert_eq!(enabled.lock().unwrap().len(), 2);
    // The guest view of the capability comes from the engine.
    let mut control = [0u8; 2];
    engine.read_config(MSIX_CAP + 2, &mut control);
    assert_eq!(u16::from_le_bytes(control), 0x8009);
    // BAR3 outside the table and PBA pages is the device's: the VMM performs the access.
    let mut buf = [0u8; 4];
    match engine.read_bar(bar3, 0x1000, &mut buf) {
        BarAccess::Forward(at) => assert_eq!((at.bar, at.offset), (bar3, 0x1000)),
        BarAccess::Handled => panic!("BAR3+0x1000 is a device register"),
    }
    // The table reads back the guest's entry.
    assert_eq!(engine.read_bar(bar3, 8, &mut buf), BarAccess::Handled);
    assert_eq!(u32::from_le_bytes(buf), GUEST_DATA);
    // Shutdown: vectors disabled on the device, every route masked in the manager.
    engine.shutdown(&vfio);
    assert!(enabled.lock().unwrap().is_empty());
    assert!(table.lock().unwrap().installed.values().all(|(_, m)| *m));
    assert_eq!(engine.faults(), Default::default());
}
