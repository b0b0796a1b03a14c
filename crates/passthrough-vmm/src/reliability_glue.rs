// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The VMM's side of [`crate::reliability`] (aarch64): the real device, its router and the
//! VMM's own mapping of the device's MSI-X table.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use vfio_cdev::RegionMapping;
use vfio_passthrough::{
    KvmInterruptGroup, KvmMsiRouter, KvmSlotMapper, PassthroughDevice, VfioBackend,
};

use crate::reliability::{
    Canary, IdCheck, IsolationReport, Monitor, MonitorReport, RealEntry, ReliabilityReport, Sample,
    SelfFigures, Sentinels,
};

type Device = PassthroughDevice<VfioBackend, KvmInterruptGroup, KvmSlotMapper>;

/// How often the monitor samples.
const PERIOD: Duration = Duration::from_millis(40);
/// Fresh IOASes allocated after teardown to check that every object ID is free again.
const ID_PROBES: usize = 64;

/// The VMM's own read-only view of the device's real MSI-X table (through
/// `MSIX_MAPPABLE`), independent of the backend's.
pub(crate) struct TableMap {
    map: RegionMapping,
    base: usize,
    vectors: u16,
}

impl TableMap {
    fn entry(&self, vector: u16) -> Option<RealEntry> {
        if vector >= self.vectors {
            return None;
        }
        let at = self.base + 16 * usize::from(vector);
        let lo = self.map.read_u32(at)?;
        let hi = self.map.read_u32(at + 4)?;
        Some(RealEntry {
            address: (u64::from(hi) << 32) | u64::from(lo),
            data: self.map.read_u32(at + 8)?,
            control: self.map.read_u32(at + 12)?,
        })
    }
}

/// Maps the pages of the device's real MSI-X table, when the kernel allows it.
pub(crate) fn map_real_table(dev: &Device) -> Option<TableMap> {
    let real = dev.msix_layout()?.real();
    let vfio = dev.backend().device();
    let region = match vfio.region_info(u32::from(real.table.bar.get())) {
        Ok(r) if r.msix_mappable() => r,
        Ok(_) => return None,
        Err(e) => {
            log::warn!("monitor: {e}");
            return None;
        }
    };
    let page = vfio_passthrough::setup::host_page_size();
    let len = u64::from(real.vectors) * 16;
    let start = real.table.offset / page * page;
    let end = (real.table.offset + len).div_ceil(page) * page;
    match vfio.mmap_region(&region, start, end.min(region.size) - start) {
        Ok(map) => Some(TableMap {
            map,
            base: (real.table.offset - start) as usize,
            vectors: real.vectors,
        }),
        Err(e) => {
            log::warn!("monitor: {e}");
            None
        }
    }
}

/// Starts the route monitor over the device (held weakly: the monitor never keeps it).
pub(crate) fn start_monitor(
    dev: &Arc<Mutex<Device>>,
    router: Arc<Mutex<KvmMsiRouter>>,
    table: Option<TableMap>,
    devid: u32,
) -> Option<Monitor> {
    let weak = Arc::downgrade(dev);
    let sample = move || {
        let Some(dev) = weak.upgrade() else {
            return Sample::default();
        };
        // The device lock, then the router's: the order of every commit, so the sample
        // never sees half of one.
        let d = dev.lock().unwrap_or_else(PoisonError::into_inner);
        let vectors = d.vectors();
        let routes = router
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .routes()
            .clone();
        // Never while the device's memory decode is off: vfio-pci would answer the read
        // with SIGBUS.
        let readable = d.backend().memory_enabled().unwrap_or(false);
        let real = (0..vectors.len() as u16)
            .map(|v| table.as_ref().filter(|_| readable).and_then(|t| t.entry(v)))
            .collect();
        drop(d);
        Sample {
            vectors,
            routes,
            real,
        }
    };
    match Monitor::start(PERIOD, Some(devid), Box::new(sample)) {
        Ok(m) => Some(m),
        Err(e) => {
            log::warn!("no route monitor: {e}");
            None
        }
    }
}

/// The `reliability` section once everything of the run is gone but `ids`' iommufd.
pub(crate) fn finish(
    monitor: Option<MonitorReport>,
    sentinels: &Sentinels,
    canary: &Canary,
    at_start: SelfFigures,
    ids: Option<(Arc<iommufd_ioas::Iommufd>, u32)>,
) -> ReliabilityReport {
    let (below, above) = sentinels.sizes();
    let isolation = IsolationReport {
        sentinel_below: below,
        sentinel_above: above,
        sentinel_changed: sentinels.changed(),
        canary_bytes: canary.bytes(),
        canary_changed: canary.changed(),
    };
    let iommufd_ids = ids.map(|(iommufd, highest)| {
        let mut held = Vec::with_capacity(ID_PROBES);
        for _ in 0..ID_PROBES {
            match iommufd.alloc_ioas() {
                Ok(ioas) => held.push(ioas),
                Err(e) => {
                    return IdCheck {
                        highest_used: highest,
                        error: Some(e.to_string()),
                        ..Default::default()
                    };
                }
            }
        }
        let ids = held.iter().map(|i| i.id()).collect();
        drop(held);
        IdCheck::judge(ids, highest)
    });
    ReliabilityReport {
        monitor,
        isolation,
        at_start,
        after_teardown: Some(SelfFigures::now()),
        iommufd_ids,
    }
}
