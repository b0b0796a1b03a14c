// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The passthrough model driven the way Linux's igb driver drives an 82576, against fake
//! backends that record every call: BAR placement and direct maps, MSI-X bring-up under
//! Function Mask (one routing update), masking and pending delivery, address changes,
//! disable, and the write-through policies. No kernel needed.

use std::sync::{Arc, Mutex};

use msi_trap::msix::layout::{BarInfo, RelocationPolicy};
use msi_trap::write_through::DoorbellPolicy;
use vfio_passthrough::{
    BackendError, DeviceBackend, DirectPiece, GuestMapper, MsiRemapping, MsiRoute, MsiRouter,
    PassthroughConfig, PassthroughDevice, RemapError, RouterGroup, VectorBackend, build_model,
};
use vmm_sys_util::eventfd::EventFd;

const DOORBELL: u64 = 0x0800_0040;
const DEVID: u32 = 0x8;
const MSIX_CAP: u16 = 0x70;
/// Guest data values are chosen to be recognisable: they must never reach the device.
const GUEST_DATA: u32 = 0xdead_0000;

#[derive(Debug, Clone, PartialEq)]
enum Call {
    SetVector(u16, bool),
    Disable,
    PrepareIova(u16, u64),
    TableWrite(u16, u32, u32),
    BarWrite(u8, u64, Vec<u8>),
    Routes(Vec<(u32, Option<MsiRoute>)>),
    Assign(u32),
    Deassign(u32),
    Inject(MsiRoute),
    Map(u64, u64),
    Unmap(u32),
    Reset,
}

type Log = Arc<Mutex<Vec<Call>>>;

struct FakeDevice {
    log: Log,
    config: Mutex<Vec<u8>>,
    /// What the "kernel" programs into the real table when a vector is enabled.
    kernel_address: u64,
    table: Mutex<[u64; 10]>,
}

impl VectorBackend for FakeDevice {
    fn set_vector(&self, vector: u16, eventfd: Option<&EventFd>) -> Result<(), BackendError> {
        self.log
            .lock()
            .unwrap()
            .push(Call::SetVector(vector, eventfd.is_some()));
        if eventfd.is_some() {
            self.table.lock().unwrap()[usize::from(vector)] = self.kernel_address;
        }
        Ok(())
    }
    fn disable_vectors(&self) -> Result<(), BackendError> {
        self.log.lock().unwrap().push(Call::Disable);
        Ok(())
    }
    fn prepare_msi_iova(&self, vector: u16, iova: u64) -> Result<(), BackendError> {
        self.log
            .lock()
            .unwrap()
            .push(Call::PrepareIova(vector, iova));
        Ok(())
    }
    fn read_table_address(&self, vector: u16) -> Result<Option<u64>, BackendError> {
        Ok(self.table.lock().unwrap().get(usize::from(vector)).copied())
    }
    fn write_table_address(&self, vector: u16, lo: u32, hi: u32) -> Result<(), BackendError> {
        self.log
            .lock()
            .unwrap()
            .push(Call::TableWrite(vector, lo, hi));
        self.table.lock().unwrap()[usize::from(vector)] = (u64::from(hi) << 32) | u64::from(lo);
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
        c[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }
    fn read_bar(&self, _: u8, _: u64, buf: &mut [u8]) -> Result<(), BackendError> {
        buf.fill(0x5a);
        Ok(())
    }
    fn write_bar(&self, bar: u8, offset: u64, buf: &[u8]) -> Result<(), BackendError> {
        self.log
            .lock()
            .unwrap()
            .push(Call::BarWrite(bar, offset, buf.to_vec()));
        Ok(())
    }
    /// Like vfio-pci: the PCI core restores the table from the kernel's messages.
    fn reset(&self) -> Result<(), BackendError> {
        self.log.lock().unwrap().push(Call::Reset);
        for a in self.table.lock().unwrap().iter_mut() {
            if *a != 0 {
                *a = self.kernel_address;
            }
        }
        Ok(())
    }
}

struct FakeRouter {
    log: Log,
    next: u32,
}

impl MsiRouter for FakeRouter {
    fn allocate_gsi(&mut self) -> Result<u32, BackendError> {
        self.next += 1;
        Ok(31 + self.next)
    }
    fn release_gsi(&mut self, _: u32) {}
    fn set_routes(&mut self, changes: &[(u32, Option<MsiRoute>)]) -> Result<(), BackendError> {
        self.log
            .lock()
            .unwrap()
            .push(Call::Routes(changes.to_vec()));
        Ok(())
    }
    fn assign_irqfd(&mut self, _: &EventFd, gsi: u32) -> Result<(), BackendError> {
        self.log.lock().unwrap().push(Call::Assign(gsi));
        Ok(())
    }
    fn deassign_irqfd(&mut self, _: &EventFd, gsi: u32) -> Result<(), BackendError> {
        self.log.lock().unwrap().push(Call::Deassign(gsi));
        Ok(())
    }
    fn inject(&mut self, route: MsiRoute) -> Result<(), BackendError> {
        self.log.lock().unwrap().push(Call::Inject(route));
        Ok(())
    }
}

struct FakeMapper {
    log: Log,
    next: u32,
}

impl GuestMapper for FakeMapper {
    unsafe fn map(&mut self, gpa: u64, len: u64, _: *mut u8) -> Result<u32, BackendError> {
        self.log.lock().unwrap().push(Call::Map(gpa, len));
        self.next += 1;
        Ok(self.next)
    }
    fn unmap(&mut self, handle: u32) -> Result<(), BackendError> {
        self.log.lock().unwrap().push(Call::Unmap(handle));
        Ok(())
    }
}

/// An 82576-like function: PM -> MSI -> MSI-X (10 vectors, BAR3 table 0, PBA 0x2000) -> PCIe.
fn igb_config() -> Vec<u8> {
    let mut c = vec![0u8; 256];
    c[0..4].copy_from_slice(&[0x86, 0x80, 0xc9, 0x10]);
    c[0x06] = 0x10;
    c[0x34] = 0x40;
    c[0x40..0x42].copy_from_slice(&[0x01, 0x50]);
    c[0x50..0x53].copy_from_slice(&[0x05, 0x70, 0x80]);
    c[0x70..0x74].copy_from_slice(&[0x11, 0xa0, 0x09, 0x00]);
    c[0x74..0x78].copy_from_slice(&3u32.to_le_bytes());
    c[0x78..0x7c].copy_from_slice(&0x2003u32.to_le_bytes());
    c[0xa0..0xa2].copy_from_slice(&[0x10, 0x00]);
    c
}

const BARS: [BarInfo; 6] = [
    BarInfo::memory32(0x2_0000),
    BarInfo::memory32(0x2_0000),
    BarInfo::io(0x20),
    BarInfo::memory32(0x4000),
    BarInfo::ABSENT,
    BarInfo::ABSENT,
];

type Dev = PassthroughDevice<FakeDevice, RouterGroup<FakeRouter>, FakeMapper>;

fn device(policy: DoorbellPolicy, kernel_address: u64) -> (Dev, Log) {
    let log: Log = Arc::default();
    let cfg = igb_config();
    let parts = build_model(
        "fake",
        &cfg,
        &BARS,
        &[0, 0, 1, 0, 0, 0],
        RelocationPolicy::Never,
        0x1000,
    )
    .unwrap();
    let mut mapping = vec![0u8; 0x3_0000];
    let host = mapping.as_mut_ptr();
    std::mem::forget(mapping);
    let pieces = vec![
        DirectPiece {
            bar: 0,
            offset: 0,
            len: 0x2_0000,
            host,
        },
        DirectPiece {
            bar: 3,
            offset: 0x1000,
            len: 0x1000,
            host,
        },
        DirectPiece {
            bar: 3,
            offset: 0x3000,
            len: 0x1000,
            host,
        },
    ];
    let dev = PassthroughDevice::new(
        FakeDevice {
            log: log.clone(),
            config: Mutex::new(cfg),
            kernel_address,
            table: Mutex::new([0; 10]),
        },
        RouterGroup::new(
            FakeRouter {
                log: log.clone(),
                next: 0,
            },
            parts.msix.as_ref().map_or(0, |m| m.vectors()),
        )
        .unwrap(),
        FakeMapper {
            log: log.clone(),
            next: 0,
        },
        parts.config,
        parts.msix,
        pieces,
        PassthroughConfig {
            devid: Some(DEVID),
            policy,
        },
    )
    .unwrap();
    (dev, log)
}

fn take(log: &Log) -> Vec<Call> {
    std::mem::take(&mut *log.lock().unwrap())
}

fn w32(dev: &mut Dev, reg: u16, v: u32) {
    dev.write_config(reg, &v.to_le_bytes());
}

/// Places BAR0 at 0x1000_0000 and BAR3 at 0x1004_0000, then turns Memory Space and Bus
/// Master on, as the guest's PCI core does.
fn place_bars(dev: &mut Dev) {
    for reg in [0x10, 0x14, 0x18, 0x1c] {
        w32(dev, reg, 0xffff_ffff);
    }
    w32(dev, 0x10, 0x1000_0000);
    w32(dev, 0x14, 0x1002_0000);
    w32(dev, 0x1c, 0x1004_0000);
    dev.write_config(0x04, &[0x06, 0x00]);
}

fn table_write(dev: &mut Dev, vector: u64, dword: u64, v: u32) {
    dev.write_bar(3, vector * 16 + dword * 4, &v.to_le_bytes());
}

/// Linux's MSI-X setup: enable under Function Mask, program entries, unmask them, then
/// clear Function Mask.
fn linux_msix_setup(dev: &mut Dev, vectors: u64) {
    dev.write_config(MSIX_CAP + 2, &0xc009u16.to_le_bytes());
    for v in 0..vectors {
        table_write(dev, v, 0, DOORBELL as u32);
        table_write(dev, v, 1, 0);
        table_write(dev, v, 2, GUEST_DATA + v as u32);
        table_write(dev, v, 3, 0);
    }
    dev.write_config(MSIX_CAP + 2, &0x8009u16.to_le_bytes());
}

#[test]
fn bars_map_directly_except_the_msix_pages() {
    let (mut dev, log) = device(
        DoorbellPolicy::KernelProgrammed {
            doorbell_iova: DOORBELL,
        },
        DOORBELL,
    );
    place_bars(&mut dev);
    let calls = take(&log);
    assert_eq!(
        calls,
        vec![
            Call::Map(0x1000_0000, 0x2_0000),
            Call::Map(0x1004_1000, 0x1000),
            Call::Map(0x1004_3000, 0x1000)
        ]
    );
    assert_eq!(dev.bar_windows().len(), 3, "BAR0, BAR1 and BAR3 decode");
    // Moving BAR3 re-maps only its pieces.
    w32(&mut dev, 0x1c, 0x1008_0000);
    let calls = take(&log);
    assert_eq!(
        calls,
        vec![
            Call::Unmap(2),
            Call::Unmap(3),
            Call::Map(0x1008_1000, 0x1000),
            Call::Map(0x1008_3000, 0x1000)
        ]
    );
    // Memory Space off: everything unmapped.
    dev.write_config(0x04, &[0x04, 0x00]);
    assert_eq!(take(&log).len(), 3);
}

#[test]
fn linux_bringup_is_one_routing_update() {
    let (mut dev, log) = device(
        DoorbellPolicy::KernelProgrammed {
            doorbell_iova: DOORBELL,
        },
        DOORBELL,
    );
    place_bars(&mut dev);
    take(&log);
    linux_msix_setup(&mut dev, 3);
    let calls = take(&log);
    let routes: Vec<_> = calls
        .iter()
        .filter(|c| matches!(c, Call::Routes(_)))
        .collect();
    assert_eq!(routes.len(), 1, "{calls:?}");
    let Call::Routes(r) = routes[0] else {
        unreachable!()
    };
    assert_eq!(r.len(), 3);
    for (i, (gsi, route)) in r.iter().enumerate() {
        assert_eq!(*gsi, 32 + i as u32);
        assert_eq!(
            *route,
            Some(MsiRoute {
                address: DOORBELL,
                data: GUEST_DATA + i as u32,
                devid: Some(DEVID)
            })
        );
    }
    // Each vector enabled on the device and its irqfd assigned after the route exists.
    let pos = |c: &Call| calls.iter().position(|x| x == c).unwrap();
    for v in 0..3u16 {
        assert!(pos(&Call::SetVector(v, true)) > pos(routes[0]));
        assert!(pos(&Call::Assign(32 + u32::from(v))) > pos(routes[0]));
    }
    // The table writes never reached the device's BAR.
    assert!(
        !calls.iter().any(|c| matches!(c, Call::BarWrite(..))),
        "{calls:?}"
    );
    let report = dev.vectors();
    assert!(
        report[..3]
            .iter()
            .all(|v| v.device_address == Some(DOORBELL) && v.host_enabled)
    );
    assert!(
        report[3..]
            .iter()
            .all(|v| !v.host_enabled && v.gsi.is_none())
    );
    assert_eq!(dev.faults().address_mismatch, 0);
}

#[test]
fn masked_interrupts_pend_and_are_delivered_once_on_unmask() {
    let (mut dev, log) = device(
        DoorbellPolicy::KernelProgrammed {
            doorbell_iova: DOORBELL,
        },
        DOORBELL,
    );
    place_bars(&mut dev);
    linux_msix_setup(&mut dev, 3);
    take(&log);
    // Mask vector 1: its irqfd goes away, its route stays.
    table_write(&mut dev, 1, 3, 1);
    assert_eq!(take(&log), vec![Call::Deassign(33)]);
    // The device fires vector 1 while masked: the count waits in the eventfd.
    dev.vector_eventfd(1).unwrap().write(1).unwrap();
    // A PBA read drains it into the Pending bit.
    let mut pba = [0u8; 8];
    dev.read_bar(3, 0x2000, &mut pba);
    assert_eq!(u64::from_le_bytes(pba), 0b10);
    // Unmask: delivered once through injection, irqfd back.
    table_write(&mut dev, 1, 3, 0);
    let calls = take(&log);
    assert_eq!(
        calls,
        vec![
            Call::Assign(33),
            Call::Inject(MsiRoute {
                address: DOORBELL,
                data: GUEST_DATA + 1,
                devid: Some(DEVID)
            })
        ]
    );
    dev.read_bar(3, 0x2000, &mut pba);
    assert_eq!(u64::from_le_bytes(pba), 0);
    // Masked again and fired but the PBA never read: the eventfd keeps the count and the
    // irqfd, re-assigned on unmask, delivers it (KVM checks pending counts at assign); no
    // injection from here.
    table_write(&mut dev, 1, 3, 1);
    dev.vector_eventfd(1).unwrap().write(1).unwrap();
    table_write(&mut dev, 1, 3, 0);
    let calls = take(&log);
    assert_eq!(calls, vec![Call::Deassign(33), Call::Assign(33)]);
}

#[test]
fn address_change_of_a_live_vector_updates_its_route() {
    let (mut dev, log) = device(
        DoorbellPolicy::KernelProgrammed {
            doorbell_iova: DOORBELL,
        },
        DOORBELL,
    );
    place_bars(&mut dev);
    linux_msix_setup(&mut dev, 1);
    take(&log);
    table_write(&mut dev, 0, 2, GUEST_DATA + 7);
    assert_eq!(
        take(&log),
        vec![Call::Routes(vec![(
            32,
            Some(MsiRoute {
                address: DOORBELL,
                data: GUEST_DATA + 7,
                devid: Some(DEVID)
            })
        )])]
    );
}

#[test]
fn disable_tears_routes_and_vectors_down() {
    let (mut dev, log) = device(
        DoorbellPolicy::KernelProgrammed {
            doorbell_iova: DOORBELL,
        },
        DOORBELL,
    );
    place_bars(&mut dev);
    linux_msix_setup(&mut dev, 2);
    take(&log);
    dev.write_config(MSIX_CAP + 2, &0x0009u16.to_le_bytes());
    let calls = take(&log);
    assert_eq!(
        calls,
        vec![
            Call::Deassign(32),
            Call::Deassign(33),
            Call::Routes(vec![(32, None), (33, None)]),
            Call::Disable
        ]
    );
    // The enable records outlive the disable.
    assert_eq!(dev.enable_records().len(), 2);
    // Re-enabling brings them back with fresh GSIs and one routing update.
    linux_msix_setup(&mut dev, 2);
    assert!(dev.enable_records().iter().all(|r| r.enables == 2));
    let calls = take(&log);
    assert_eq!(
        calls
            .iter()
            .filter(|c| matches!(c, Call::Routes(_)))
            .count(),
        1
    );
    assert!(calls.contains(&Call::SetVector(0, true)));
}

/// Found by the `passthrough` fuzz target: MSI-X Enable cleared while every vector is
/// masked changes no vector's deliverability, so no batch is due; the device must still
/// release the physical vectors and the routes.
#[test]
fn disable_while_all_masked_releases_vectors() {
    let (mut dev, log) = device(
        DoorbellPolicy::KernelProgrammed {
            doorbell_iova: DOORBELL,
        },
        DOORBELL,
    );
    place_bars(&mut dev);
    linux_msix_setup(&mut dev, 2);
    table_write(&mut dev, 0, 3, 1);
    table_write(&mut dev, 1, 3, 1);
    take(&log);
    dev.write_config(MSIX_CAP + 2, &0x0009u16.to_le_bytes());
    let calls = take(&log);
    assert!(calls.contains(&Call::Disable), "{calls:?}");
    assert!(
        calls.contains(&Call::Routes(vec![(32, None), (33, None)])),
        "{calls:?}"
    );
    assert!(
        dev.vectors()
            .iter()
            .all(|v| !v.host_enabled && v.gsi.is_none())
    );
}

#[test]
fn kernel_address_mismatch_is_counted() {
    let (mut dev, _log) = device(
        DoorbellPolicy::KernelProgrammed {
            doorbell_iova: DOORBELL,
        },
        0x0810_0040,
    );
    place_bars(&mut dev);
    linux_msix_setup(&mut dev, 2);
    assert_eq!(dev.faults().address_mismatch, 2);
}

#[test]
fn table_address_write_through_carries_the_address_only() {
    // A guest with a vIOMMU programs a gIOVA; the kernel programmed its own window.
    let giova = 0x1_fee0_0040u64;
    let (mut dev, log) = device(DoorbellPolicy::TableAddressWrite, DOORBELL);
    place_bars(&mut dev);
    take(&log);
    dev.write_config(MSIX_CAP + 2, &0xc009u16.to_le_bytes());
    table_write(&mut dev, 0, 0, giova as u32);
    table_write(&mut dev, 0, 1, (giova >> 32) as u32);
    table_write(&mut dev, 0, 2, GUEST_DATA);
    table_write(&mut dev, 0, 3, 0);
    dev.write_config(MSIX_CAP + 2, &0x8009u16.to_le_bytes());
    let calls = take(&log);
    let set = calls
        .iter()
        .position(|c| *c == Call::SetVector(0, true))
        .unwrap();
    let tw = calls
        .iter()
        .position(|c| *c == Call::TableWrite(0, giova as u32, (giova >> 32) as u32))
        .unwrap();
    assert!(
        tw > set,
        "the address is written after VFIO enabled the vector"
    );
    assert_eq!(dev.vectors()[0].device_address, Some(giova));
    // No call anywhere carried the guest's data.
    for c in &calls {
        if let Call::TableWrite(_, lo, hi) = c {
            assert_ne!(*lo, GUEST_DATA);
            assert_ne!(*hi, GUEST_DATA);
        }
        if let Call::BarWrite(..) = c {
            panic!("table write forwarded to the device: {c:?}");
        }
    }
}

#[test]
fn per_vector_iova_is_prepared_before_enable() {
    let (mut dev, log) = device(DoorbellPolicy::PerVectorIova, DOORBELL);
    place_bars(&mut dev);
    take(&log);
    linux_msix_setup(&mut dev, 1);
    let calls = take(&log);
    let prep = calls
        .iter()
        .position(|c| *c == Call::PrepareIova(0, DOORBELL))
        .unwrap();
    let set = calls
        .iter()
        .position(|c| *c == Call::SetVector(0, true))
        .unwrap();
    assert!(prep < set);
}

#[test]
fn registers_outside_the_msix_pages_are_forwarded() {
    let (mut dev, log) = device(
        DoorbellPolicy::KernelProgrammed {
            doorbell_iova: DOORBELL,
        },
        DOORBELL,
    );
    take(&log);
    // BAR3 page 1 is not MSI-X: trapped accesses there go to the device.
    dev.write_bar(3, 0x1008, &[1, 2, 3, 4]);
    let mut b = [0u8; 4];
    dev.read_bar(3, 0x1008, &mut b);
    assert_eq!(b, [0x5a; 4]);
    assert_eq!(
        take(&log),
        vec![Call::BarWrite(3, 0x1008, vec![1, 2, 3, 4])]
    );
}

#[test]
fn dropping_the_device_releases_everything() {
    let (mut dev, log) = device(
        DoorbellPolicy::KernelProgrammed {
            doorbell_iova: DOORBELL,
        },
        DOORBELL,
    );
    place_bars(&mut dev);
    linux_msix_setup(&mut dev, 2);
    take(&log);
    drop(dev);
    let calls = take(&log);
    assert_eq!(
        calls,
        vec![
            Call::Deassign(32),
            Call::Deassign(33),
            Call::Routes(vec![(32, None), (33, None)]),
            Call::Disable,
            Call::Unmap(1),
            Call::Unmap(2),
            Call::Unmap(3)
        ]
    );
}

/// A guest IOMMU's MSI translations, as a table the test edits: gIOVA page -> doorbell page.
#[derive(Default)]
struct FakeRemap {
    pages: Mutex<std::collections::HashMap<u64, u64>>,
    calls: Mutex<Vec<(u32, u64)>>,
}

impl MsiRemapping for FakeRemap {
    fn translate_msi(&self, stream: u32, address: u64) -> Result<u64, RemapError> {
        self.calls.lock().unwrap().push((stream, address));
        match self.pages.lock().unwrap().get(&(address & !0xfff)) {
            Some(page) => Ok(page | (address & 0xfff)),
            None => Err(RemapError::NotTranslated {
                stream,
                address,
                reason: "no stage-1 mapping".into(),
            }),
        }
    }
}

const GIOVA: u64 = 0xffff_f040;

/// Linux's MSI-X setup with gIOVA addresses (a guest with a vIOMMU).
fn linux_msix_setup_giova(dev: &mut Dev, vectors: u64) {
    dev.write_config(MSIX_CAP + 2, &0xc009u16.to_le_bytes());
    for v in 0..vectors {
        table_write(dev, v, 0, GIOVA as u32);
        table_write(dev, v, 1, 0);
        table_write(dev, v, 2, GUEST_DATA + v as u32);
        table_write(dev, v, 3, 0);
    }
    dev.write_config(MSIX_CAP + 2, &0x8009u16.to_le_bytes());
}

fn routes_of(calls: &[Call]) -> Vec<Vec<(u32, Option<MsiRoute>)>> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Routes(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn remapped_routes_carry_the_doorbell_gpa_and_the_device_the_giova() {
    let (mut dev, log) = device(DoorbellPolicy::TableAddressWrite, DOORBELL);
    let remap = Arc::new(FakeRemap::default());
    remap
        .pages
        .lock()
        .unwrap()
        .insert(GIOVA & !0xfff, DOORBELL & !0xfff);
    dev.set_msi_remapping(remap.clone(), DEVID);
    place_bars(&mut dev);
    take(&log);
    linux_msix_setup_giova(&mut dev, 2);
    let calls = take(&log);
    // One routing update, both routes at the doorbell GPA (the translated gIOVA).
    let routes = routes_of(&calls);
    assert_eq!(routes.len(), 1, "{calls:?}");
    for (_, r) in &routes[0] {
        assert_eq!(r.unwrap().address, DOORBELL);
    }
    // The device carries the gIOVA (written through), never the doorbell GPA.
    for v in dev.vectors().iter().take(2) {
        assert_eq!(v.device_address, Some(GIOVA));
        assert_eq!(v.route_address, Some(DOORBELL));
        assert_eq!(v.unroutable, None);
    }
    assert!(remap.calls.lock().unwrap().iter().all(|(s, _)| *s == DEVID));
    assert_eq!(dev.faults().unroutable, 0);
}

#[test]
fn an_untranslated_giova_is_not_routed_and_is_reported() {
    let (mut dev, log) = device(DoorbellPolicy::TableAddressWrite, DOORBELL);
    let remap = Arc::new(FakeRemap::default());
    dev.set_msi_remapping(remap.clone(), DEVID);
    place_bars(&mut dev);
    take(&log);
    linux_msix_setup_giova(&mut dev, 1);
    let calls = take(&log);
    // Enabled on the device with the gIOVA written through, but no route and no irqfd.
    assert!(calls.contains(&Call::SetVector(0, true)), "{calls:?}");
    assert!(
        routes_of(&calls)
            .iter()
            .all(|r| r.iter().all(|(_, x)| x.is_none()))
    );
    assert!(
        !calls.iter().any(|c| matches!(c, Call::Assign(_))),
        "{calls:?}"
    );
    let v = &dev.vectors()[0];
    assert_eq!(v.route_address, None);
    assert!(matches!(
        v.unroutable,
        Some(RemapError::NotTranslated { .. })
    ));
    assert_eq!(dev.faults().unroutable, 1);
    assert_eq!(dev.unroutable_vectors(), 1);

    // The guest maps the page (no invalidation is needed for a new mapping); the VMM
    // retries after the guest's next IOMMU command: the route comes, with the irqfd.
    remap
        .pages
        .lock()
        .unwrap()
        .insert(GIOVA & !0xfff, DOORBELL & !0xfff);
    assert_eq!(dev.remap_changed(), 1);
    let calls = take(&log);
    let routes = routes_of(&calls);
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0][0].1.unwrap().address, DOORBELL);
    assert!(
        calls.iter().any(|c| matches!(c, Call::Assign(_))),
        "{calls:?}"
    );
    assert_eq!(dev.vectors()[0].unroutable, None);
}

#[test]
fn remap_changes_move_and_drop_routes_in_one_update() {
    let (mut dev, log) = device(DoorbellPolicy::TableAddressWrite, DOORBELL);
    let remap = Arc::new(FakeRemap::default());
    remap
        .pages
        .lock()
        .unwrap()
        .insert(GIOVA & !0xfff, DOORBELL & !0xfff);
    dev.set_msi_remapping(remap.clone(), DEVID);
    place_bars(&mut dev);
    linux_msix_setup_giova(&mut dev, 3);
    take(&log);
    // Nothing changed: no routing update at all.
    assert_eq!(dev.remap_changed(), 0);
    assert!(take(&log).is_empty());
    // The guest remaps the gIOVA to another doorbell page: three routes move, one update.
    remap
        .pages
        .lock()
        .unwrap()
        .insert(GIOVA & !0xfff, 0x0900_0000);
    assert_eq!(dev.remap_changed(), 3);
    let calls = take(&log);
    let routes = routes_of(&calls);
    assert_eq!(routes.len(), 1);
    assert!(
        routes[0]
            .iter()
            .all(|(_, r)| r.unwrap().address == 0x0900_0040)
    );
    // The guest unmaps it: routes removed in one update, irqfds deassigned.
    remap.pages.lock().unwrap().clear();
    assert_eq!(dev.remap_changed(), 3);
    let calls = take(&log);
    let routes = routes_of(&calls);
    assert_eq!(routes.len(), 1);
    assert!(routes[0].iter().all(|(_, r)| r.is_none()));
    assert_eq!(
        calls
            .iter()
            .filter(|c| matches!(c, Call::Deassign(_)))
            .count(),
        3
    );
    assert_eq!(dev.faults().unroutable, 3);
    assert!(dev.vectors()[..3].iter().all(|v| v.unroutable.is_some()));
    // Without remapping, remap_changed is a no-op.
    let (mut plain, _) = device(DoorbellPolicy::TableAddressWrite, DOORBELL);
    assert_eq!(plain.remap_changed(), 0);
}

#[test]
fn a_reset_puts_the_written_through_addresses_back() {
    let (mut dev, log) = device(DoorbellPolicy::TableAddressWrite, DOORBELL);
    let remap = Arc::new(FakeRemap::default());
    remap
        .pages
        .lock()
        .unwrap()
        .insert(GIOVA & !0xfff, DOORBELL & !0xfff);
    dev.set_msi_remapping(remap, DEVID);
    place_bars(&mut dev);
    linux_msix_setup_giova(&mut dev, 2);
    take(&log);
    dev.reset_device().unwrap();
    let calls = take(&log);
    assert_eq!(calls[0], Call::Reset);
    // Both enabled vectors get the gIOVA again, address words only; nothing else.
    assert_eq!(
        calls[1..],
        [
            Call::TableWrite(0, GIOVA as u32, 0),
            Call::TableWrite(1, GIOVA as u32, 0)
        ]
    );
    for r in dev.enable_records() {
        assert_eq!(r.device_address, Some(GIOVA));
    }
    // With the kernel's address as the plan, a reset writes nothing.
    let (mut plain, log) = device(
        DoorbellPolicy::KernelProgrammed {
            doorbell_iova: DOORBELL,
        },
        DOORBELL,
    );
    place_bars(&mut plain);
    linux_msix_setup(&mut plain, 2);
    take(&log);
    plain.reset_device().unwrap();
    assert_eq!(take(&log), [Call::Reset]);
}
