// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The VFIO implementation of [`DeviceBackend`]: a bound, attached [`VfioDevice`] plus the
//! BAR mappings the passthrough model uses.

use std::sync::atomic::{AtomicBool, Ordering};

use msi_trap::msix::layout::{BarInfo, MsixLayout, RealMsix, TrapRange};
use vfio_cdev::{IrqIndex, RegionInfo, RegionMapping, VfioDevice};
use vmm_sys_util::eventfd::EventFd;

use crate::backend::{BackendError, DeviceBackend, VectorBackend};
use crate::device::DirectPiece;
use crate::error::{Error, Result};

/// What the passthrough model needs to know about the device, read once at setup.
#[derive(Clone, Debug)]
pub struct DeviceFacts {
    /// The standard configuration space (256 bytes).
    pub config: Vec<u8>,
    /// The real BARs: kind and size (upper halves of 64-bit BARs are `ABSENT`).
    pub bars: [BarInfo; 6],
    /// The BAR registers as vfio-pci shows them (type and prefetchable bits).
    pub bar_regs: [u32; 6],
}

/// The real MSI-X table, mapped through `VFIO_REGION_INFO_CAP_MSIX_MAPPABLE`.
#[derive(Debug)]
struct TableMap {
    map: RegionMapping,
    /// Offset of entry 0 within the mapping.
    base: usize,
    vectors: u16,
}

/// A bound and attached VFIO device as a [`DeviceBackend`].
///
/// Field order is drop order: the BAR mappings go first, because each holds the device file
/// open; only then does closing the device detach it from its IOAS, so that the IOAS (held
/// by the device) can be destroyed.
#[derive(Debug)]
pub struct VfioBackend {
    table: Option<TableMap>,
    direct: Vec<RegionMapping>,
    dev: VfioDevice,
    regions: [Option<RegionInfo>; 6],
    /// MSI-X vectors of the device: the first enable allocates all of them (the unused ones
    /// without an eventfd), see `set_vector` below.
    msix_vectors: u32,
    /// Whether MSI-X is enabled on the device (through this backend).
    msix_on: AtomicBool,
    /// Offset of the Power Management capability, if any: its PMCSR says whether the
    /// device is in D0 (see [`VfioBackend::memory_enabled`]).
    pm_cap: Option<u16>,
}

fn bar_kind(reg: u32, size: u64) -> BarInfo {
    if size == 0 {
        BarInfo::ABSENT
    } else if reg & 1 != 0 {
        BarInfo::io(size)
    } else if (reg >> 1) & 3 == 2 {
        BarInfo::memory64(size)
    } else {
        BarInfo::memory32(size)
    }
}

/// The real BARs from the BAR registers and the region sizes; the slot after a 64-bit BAR
/// is its upper half and absent.
pub fn decode_bars(regs: &[u32; 6], sizes: &[u64; 6]) -> [BarInfo; 6] {
    let mut out = [BarInfo::ABSENT; 6];
    let mut i = 0;
    while i < 6 {
        out[i] = bar_kind(regs[i], sizes[i]);
        if out[i].kind == msi_trap::msix::layout::BarKind::Memory64 {
            i += 1;
        }
        i += 1;
    }
    out
}

/// Page-aligned `[start, end)` pieces of `areas` that no trap range covers.
pub fn subtract_traps(
    bar: u8,
    areas: &[(u64, u64)],
    traps: &[TrapRange],
    page: u64,
) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(start, end) in areas {
        // Only whole pages can be mapped.
        let mut s = start.div_ceil(page).saturating_mul(page);
        let e = end / page * page;
        let mut cuts: Vec<(u64, u64)> = traps
            .iter()
            .filter(|t| t.bar.get() == bar && t.start < e && t.end > s)
            .map(|t| (t.start, t.end))
            .collect();
        cuts.sort_unstable();
        for (cs, ce) in cuts {
            if cs > s {
                out.push((s, cs.min(e)));
            }
            s = s.max(ce);
        }
        if s < e {
            out.push((s, e));
        }
    }
    out
}

impl VfioBackend {
    /// Reads what the model needs from a bound device.
    pub fn new(dev: VfioDevice) -> Result<(Self, DeviceFacts)> {
        let mut config = dev.read_config_space()?;
        config.truncate(crate::config::CONFIG_SIZE);
        if config.len() < crate::config::CONFIG_SIZE {
            return Err(Error::Unsupported {
                device: dev.name().to_string(),
                reason: format!("config space is only {} bytes", config.len()),
            });
        }
        if config[0x0e] & 0x7f != 0 {
            return Err(Error::Unsupported {
                device: dev.name().to_string(),
                reason: format!("header type {:#x} is not a type 0 endpoint", config[0x0e]),
            });
        }
        let mut regions: [Option<RegionInfo>; 6] = Default::default();
        let mut sizes = [0u64; 6];
        let mut regs = [0u32; 6];
        for i in 0..6 {
            let r = dev.region_info(i as u32)?;
            sizes[i] = r.size;
            regs[i] = u32::from_le_bytes([
                config[0x10 + 4 * i],
                config[0x11 + 4 * i],
                config[0x12 + 4 * i],
                config[0x13 + 4 * i],
            ]);
            regions[i] = Some(r);
        }
        let bars = decode_bars(&regs, &sizes);
        let pm_cap = msi_trap::caps::CapabilityList::parse_lenient(&config)
            .ok()
            .and_then(|l| l.list.find(0x01))
            .map(|c| u16::from(c.offset));
        let msix_vectors = match dev.irq_info(IrqIndex::Msix) {
            Ok(info) => info.count,
            Err(e) => {
                log::warn!("{}: no MSI-X IRQ info: {e}", dev.name());
                0
            }
        };
        Ok((
            VfioBackend {
                table: None,
                direct: Vec::new(),
                dev,
                regions,
                msix_vectors,
                msix_on: AtomicBool::new(false),
                pm_cap,
            },
            DeviceFacts {
                config,
                bars,
                bar_regs: regs,
            },
        ))
    }

    /// The VFIO device.
    pub fn device(&self) -> &VfioDevice {
        &self.dev
    }

    /// Whether the real MSI-X table is mapped (so its addresses can be read and written).
    pub fn table_mapped(&self) -> bool {
        self.table.is_some()
    }

    /// Maps the pages of the real MSI-X table when the kernel allows it
    /// (`VFIO_REGION_INFO_CAP_MSIX_MAPPABLE`); returns whether it did.
    pub fn map_table(&mut self, real: &RealMsix, page: u64) -> Result<bool> {
        let Some(region) = &self.regions[real.table.bar.as_usize()] else {
            return Ok(false);
        };
        if !region.msix_mappable() {
            return Ok(false);
        }
        let len = u64::from(real.vectors) * 16;
        let start = real.table.offset / page * page;
        let end = (real.table.offset + len).div_ceil(page) * page;
        let map = self
            .dev
            .mmap_region(region, start, end.min(region.size) - start)?;
        self.table = Some(TableMap {
            map,
            base: (real.table.offset - start) as usize,
            vectors: real.vectors,
        });
        Ok(true)
    }

    /// Maps every page of the device's BARs that may go straight to the guest: inside the
    /// kernel's mmap-able areas and outside the MSI-X trap ranges.
    pub fn map_direct_pieces(
        &mut self,
        layout: Option<&MsixLayout>,
        page: u64,
    ) -> Result<Vec<DirectPiece>> {
        let traps = layout.map(|l| l.trap_ranges()).unwrap_or_default();
        let mut pieces = Vec::new();
        for (bar, region) in self.regions.iter().enumerate() {
            let Some(region) = region else { continue };
            if !region.mappable() || region.size == 0 {
                continue;
            }
            let areas: Vec<(u64, u64)> = match region.sparse_areas() {
                Some(a) => a.iter().map(|a| (a.offset, a.offset + a.size)).collect(),
                None => vec![(0, region.size)],
            };
            for (start, end) in subtract_traps(bar as u8, &areas, &traps, page) {
                let map = self.dev.mmap_region(region, start, end - start)?;
                pieces.push(DirectPiece {
                    bar: bar as u8,
                    offset: start,
                    len: end - start,
                    host: map.as_ptr(),
                });
                self.direct.push(map);
            }
        }
        Ok(pieces)
    }

    fn region(&self, bar: u8) -> std::result::Result<&RegionInfo, BackendError> {
        self.regions
            .get(usize::from(bar))
            .and_then(|r| r.as_ref())
            .ok_or_else(|| format!("BAR{bar} does not exist").into())
    }

    /// Whether the device decodes its memory BARs now: Command register Memory Space
    /// Enable set and the function in D0 (PMCSR PowerState, PCI PM 1.2 section 3.2.4).
    /// vfio-pci answers a fault on a BAR mapping with SIGBUS otherwise (its
    /// `__vfio_pci_memory_enabled` checks both), so the real MSI-X table is touched only
    /// when this holds. The guest controls both: it clears Memory Space while sizing BARs,
    /// and its driver puts the function in D3hot when it shuts down (seen in issue 18's
    /// reliability run: the VMM died of SIGBUS sampling the table after the guest's
    /// power-off).
    pub fn memory_enabled(&self) -> std::result::Result<bool, BackendError> {
        let mut cmd = [0u8; 2];
        self.dev.read_config(4, &mut cmd)?;
        if u16::from_le_bytes(cmd) & 0x2 == 0 {
            return Ok(false);
        }
        if let Some(pm) = self.pm_cap {
            let mut pmcsr = [0u8; 2];
            self.dev.read_config(u64::from(pm) + 4, &mut pmcsr)?;
            return Ok(u16::from_le_bytes(pmcsr) & 0x3 == 0);
        }
        Ok(true)
    }

    fn entry(&self, vector: u16) -> std::result::Result<(&TableMap, usize), BackendError> {
        let t = self
            .table
            .as_ref()
            .ok_or("the real MSI-X table is not mapped")?;
        if vector >= t.vectors {
            return Err(format!("vector {vector} >= {}", t.vectors).into());
        }
        Ok((t, t.base + 16 * usize::from(vector)))
    }
}

impl VectorBackend for VfioBackend {
    /// The first enable allocates the whole MSI-X block: vfio-pci sizes the host's
    /// allocation on the first `SET_IRQS` (start + count vectors), and adding vectors later
    /// needs dynamic MSI-X allocation in the host's MSI domain, which is refused with
    /// `EINVAL` when it is missing: even without `VFIO_IRQ_INFO_NORESIZE`, the GICv3 ITS of
    /// the Linux 7.2 test host refuses it (seen in the end-to-end test). Unused vectors get
    /// no eventfd (-1) and stay masked on the device.
    fn set_vector(
        &self,
        vector: u16,
        eventfd: Option<&EventFd>,
    ) -> std::result::Result<(), BackendError> {
        let vector = u32::from(vector);
        if !self.msix_on.load(Ordering::SeqCst) && eventfd.is_some() {
            let fds: Vec<Option<&EventFd>> = (0..self.msix_vectors.max(vector + 1))
                .map(|i| if i == vector { eventfd } else { None })
                .collect();
            self.dev.set_vector_eventfds(IrqIndex::Msix, 0, &fds)?;
        } else {
            self.dev
                .set_vector_eventfd(IrqIndex::Msix, vector, eventfd)?;
        }
        self.msix_on.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn disable_vectors(&self) -> std::result::Result<(), BackendError> {
        self.dev.disable_irqs(IrqIndex::Msix)?;
        self.msix_on.store(false, Ordering::SeqCst);
        Ok(())
    }

    #[cfg(not(feature = "proposed"))]
    fn prepare_msi_iova(&self, vector: u16, iova: u64) -> std::result::Result<(), BackendError> {
        Err(format!(
            "MSI IOVA {iova:#x} for vector {vector}: built without the proposed \
             VFIO_IRQ_SET_DATA_MSI_IOVA (feature `proposed`)"
        )
        .into())
    }

    #[cfg(feature = "proposed")]
    fn prepare_msi_iova(&self, vector: u16, iova: u64) -> std::result::Result<(), BackendError> {
        Ok(self
            .dev
            .prepare_msi_iovas(IrqIndex::Msix, u32::from(vector), &[iova])?)
    }

    fn read_table_address(&self, vector: u16) -> std::result::Result<Option<u64>, BackendError> {
        // Unreadable while memory decode is off: a read would be a SIGBUS.
        if self.table.is_none() || !self.memory_enabled()? {
            return Ok(None);
        }
        let (t, at) = self.entry(vector)?;
        let lo = t
            .map
            .read_u32(at)
            .ok_or("table entry outside the mapping")?;
        let hi = t
            .map
            .read_u32(at + 4)
            .ok_or("table entry outside the mapping")?;
        Ok(Some((u64::from(hi) << 32) | u64::from(lo)))
    }

    fn write_table_address(
        &self,
        vector: u16,
        lo: u32,
        hi: u32,
    ) -> std::result::Result<(), BackendError> {
        let (t, at) = self.entry(vector)?;
        if !self.memory_enabled()? {
            return Err(format!(
                "vector {vector}: the device's memory decode is off (Command register), so \
                 its MSI-X table cannot be written now"
            )
            .into());
        }
        if !(t.map.write_u32(at, lo) && t.map.write_u32(at + 4, hi)) {
            return Err("table entry outside the mapping".into());
        }
        Ok(())
    }
}

impl DeviceBackend for VfioBackend {
    fn read_config(&self, offset: u16, buf: &mut [u8]) -> std::result::Result<(), BackendError> {
        Ok(self.dev.read_config(u64::from(offset), buf)?)
    }

    fn write_config(&self, offset: u16, buf: &[u8]) -> std::result::Result<(), BackendError> {
        Ok(self.dev.write_config(u64::from(offset), buf)?)
    }

    fn read_bar(
        &self,
        bar: u8,
        offset: u64,
        buf: &mut [u8],
    ) -> std::result::Result<(), BackendError> {
        Ok(self.dev.read_region(self.region(bar)?, offset, buf)?)
    }

    fn write_bar(&self, bar: u8, offset: u64, buf: &[u8]) -> std::result::Result<(), BackendError> {
        Ok(self.dev.write_region(self.region(bar)?, offset, buf)?)
    }

    fn reset(&self) -> std::result::Result<(), BackendError> {
        Ok(self.dev.reset()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use msi_trap::msix::layout::{BarIndex, BarKind};

    #[test]
    fn bars_decode_from_registers_and_sizes() {
        // igb: BAR0 mem32 128K, BAR1 mem32 128K (flash), BAR2 I/O 32, BAR3 mem32 16K.
        let b = decode_bars(
            &[0, 0, 1, 0, 0, 0],
            &[0x2_0000, 0x2_0000, 0x20, 0x4000, 0, 0],
        );
        assert_eq!(b[0], BarInfo::memory32(0x2_0000));
        assert_eq!(b[2].kind, BarKind::Io);
        assert_eq!(b[4], BarInfo::ABSENT);
        // A 64-bit BAR swallows the next slot even when vfio reports a size there.
        let b = decode_bars(&[0xc, 0, 0, 0, 0, 0], &[0x10_0000, 0x10_0000, 0, 0, 0, 0]);
        assert_eq!(b[0], BarInfo::memory64(0x10_0000));
        assert_eq!(b[1], BarInfo::ABSENT);
    }

    #[test]
    fn trap_pages_are_cut_out_of_mappable_areas() {
        let bar3 = BarIndex::new(3).unwrap();
        let traps = [
            TrapRange {
                bar: bar3,
                start: 0,
                end: 0x1000,
            },
            TrapRange {
                bar: bar3,
                start: 0x2000,
                end: 0x3000,
            },
        ];
        assert_eq!(
            subtract_traps(3, &[(0, 0x4000)], &traps, 0x1000),
            vec![(0x1000, 0x2000), (0x3000, 0x4000)]
        );
        // Other BARs are untouched; partial pages at area edges are dropped.
        assert_eq!(
            subtract_traps(0, &[(0x800, 0x2_0000)], &traps, 0x1000),
            vec![(0x1000, 0x2_0000)]
        );
        // A trap covering the whole area leaves nothing.
        let all = [TrapRange {
            bar: bar3,
            start: 0,
            end: 0x4000,
        }];
        assert!(subtract_traps(3, &[(0, 0x4000)], &all, 0x1000).is_empty());
    }
}
