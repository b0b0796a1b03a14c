// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The device tree the guest boots with, built from the [`MemoryLayout`].
//!
//! Nodes (bindings from the Linux `Documentation/devicetree/bindings` tree):
//!
//! - `/cpus/cpu@N`: `arm,arm-v8`, `enable-method = "psci"`, `reg` = the MPIDR affinity KVM
//!   gives vCPU N ([`mpidr`]);
//! - `/psci`: `arm,psci-0.2`, `method = "hvc"` (KVM's in-kernel PSCI with the
//!   `KVM_ARM_VCPU_PSCI_0_2` feature);
//! - `/timer`: `arm,armv8-timer` with PPIs 13, 14, 11, 10 (secure, non-secure, virtual,
//!   hypervisor physical timer), level-high (`arm,gic-v3` binding: PPI cells carry no CPU
//!   mask);
//! - `/intc@...`: `arm,gic-v3`, `reg` = distributor then redistributors, three interrupt
//!   cells, and the ITS child `msi-controller@...` (`arm,gic-v3-its`, `msi-controller`,
//!   `#msi-cells = <1>`);
//! - `/memory@...`, `/chosen` (`bootargs`, `stdout-path`, `linux,initrd-start` and `-end`);
//! - `/uart@...`: `ns16550a` with a 1.8432 MHz clock and SPI [`UART_SPI`], level-high;
//! - `/pcie@...`: `pci-host-ecam-generic`, `device_type = "pci"`, `bus-range`, `reg` = ECAM,
//!   `ranges` = the 32-bit memory window (identity mapped), `dma-coherent`, and
//!   `msi-map = <0 &its 0 0x10000>` so that the ITS DeviceID of a function is its requester
//!   ID (`Documentation/devicetree/bindings/pci/pci-msi.txt`).
//!
//! - `/iommu@...` (with `--viommu smmuv3`): `arm,smmu-v3` (`Documentation/devicetree/
//!   bindings/iommu/arm,smmu-v3.yaml`): `reg` = the 128 KiB frame, edge SPIs named "eventq",
//!   "gerror", "cmdq-sync", `#iommu-cells = <1>`, `dma-coherent`; the PCIe host then also has
//!   `iommu-map = <0 &smmu 0 0x10000>` (StreamID = RID, `pci-iommu.txt`).
//!
//! There is never a `/reserved-memory` node: the design gives the guest no RMR-like hole
//! to respect (`tests::no_reserved_memory_node`).

use vm_fdt::{FdtWriter, FdtWriterResult};

use crate::boot::DTB_RESERVE;
use crate::layout::{MemoryLayout, Region};
use crate::uart::{UART_CLOCK_HZ, UART_SPI};

/// Phandle of the GIC.
pub const GIC_PHANDLE: u32 = 1;
/// Phandle of the ITS.
pub const ITS_PHANDLE: u32 = 2;
/// Phandle of the virtual SMMUv3.
pub const SMMU_PHANDLE: u32 = 3;
/// The virtual SMMUv3's wired interrupts, in `interrupt-names` order: "eventq", "gerror",
/// "cmdq-sync" (SPIs 2, 3, 4; edge-rising, as the SMMU signals edges).
pub const SMMU_SPIS: [u32; 3] = [2, 3, 4];
/// `IRQ_TYPE_EDGE_RISING` in the third cell.
const IRQ_TYPE_EDGE_RISING: u32 = 1;

/// `GIC_SPI` in the GIC interrupt specifier's first cell.
const GIC_SPI: u32 = 0;
/// `GIC_PPI` in the GIC interrupt specifier's first cell.
const GIC_PPI: u32 = 1;
/// `IRQ_TYPE_LEVEL_HIGH` in the third cell.
const IRQ_TYPE_LEVEL_HIGH: u32 = 4;
/// The architected timer PPIs in binding order: secure physical, non-secure physical,
/// virtual, hypervisor physical (`arm,arch_timer` binding).
pub const TIMER_PPIS: [u32; 4] = [13, 14, 11, 10];
/// PCI address space code of 32-bit memory space in `ranges` (phys.hi `ss` = 10, IEEE
/// 1275 PCI bus binding 2.2.1.1).
const PCI_RANGE_MMIO32: u32 = 0x0200_0000;

/// Why the device tree could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FdtError {
    /// vm-fdt refused a node or property.
    #[error("device tree: writing {what}: {source}")]
    Write {
        /// What was being written.
        what: &'static str,
        /// The vm-fdt error.
        #[source]
        source: vm_fdt::Error,
    },
    /// The blob is larger than the 2 MiB the boot protocol allows.
    #[error("device tree: {0} bytes is more than the 2 MiB the arm64 boot protocol allows")]
    TooLarge(usize),
}

/// What goes into the device tree besides the memory map.
#[derive(Debug, Clone, Copy)]
pub struct FdtConfig<'a> {
    /// The memory map (vCPU count included).
    pub layout: &'a MemoryLayout,
    /// The kernel command line.
    pub cmdline: &'a str,
    /// Where the initramfs was loaded.
    pub initrd: Option<Region>,
}

/// The MPIDR_EL1 affinity KVM gives vCPU `id` (Linux `arch/arm64/kvm/sys_regs.c`,
/// `reset_mpidr`: Aff0 = `id[3:0]`, Aff1 = `id[11:4]`, Aff2 = `id[19:12]`), which the `reg` of
/// its cpu node must match.
pub fn mpidr(id: u32) -> u64 {
    u64::from(id & 0xf) | (u64::from((id >> 4) & 0xff) << 8) | (u64::from((id >> 12) & 0xff) << 16)
}

fn reg(r: Region) -> [u64; 2] {
    [r.base, r.size]
}

/// Builds the device tree blob.
///
/// # Example
///
/// ```
/// use passthrough_vmm::fdt::{build_fdt, FdtConfig};
/// use passthrough_vmm::layout::MemoryLayout;
///
/// let layout = MemoryLayout::new(2, 256 << 20);
/// let dtb = build_fdt(&FdtConfig { layout: &layout, cmdline: "console=ttyS0", initrd: None })?;
/// assert_eq!(&dtb[..4], &[0xd0, 0x0d, 0xfe, 0xed]); // FDT magic
/// # Ok::<(), passthrough_vmm::fdt::FdtError>(())
/// ```
pub fn build_fdt(cfg: &FdtConfig<'_>) -> Result<Vec<u8>, FdtError> {
    let blob = write_tree(cfg).map_err(|source| FdtError::Write {
        what: "the tree",
        source,
    })?;
    if blob.len() as u64 > DTB_RESERVE {
        return Err(FdtError::TooLarge(blob.len()));
    }
    Ok(blob)
}

fn write_tree(cfg: &FdtConfig<'_>) -> FdtWriterResult<Vec<u8>> {
    let l = cfg.layout;
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_string("compatible", "linux,dummy-virt")?;
    fdt.property_string("model", "passthrough-vmm")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_u32("interrupt-parent", GIC_PHANDLE)?;

    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    for id in 0..l.cpus {
        let affinity = mpidr(id);
        let cpu = fdt.begin_node(&format!("cpu@{affinity:x}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", "arm,arm-v8")?;
        fdt.property_string("enable-method", "psci")?;
        // Aff3 is always 0 here, so one cell holds the affinity.
        fdt.property_u32("reg", affinity as u32)?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(cpus)?;

    let psci = fdt.begin_node("psci")?;
    fdt.property_string("compatible", "arm,psci-0.2")?;
    fdt.property_string("method", "hvc")?;
    fdt.end_node(psci)?;

    let timer = fdt.begin_node("timer")?;
    fdt.property_string("compatible", "arm,armv8-timer")?;
    let mut irqs = Vec::with_capacity(12);
    for ppi in TIMER_PPIS {
        irqs.extend_from_slice(&[GIC_PPI, ppi, IRQ_TYPE_LEVEL_HIGH]);
    }
    fdt.property_array_u32("interrupts", &irqs)?;
    fdt.property_null("always-on")?;
    fdt.end_node(timer)?;

    let gic = fdt.begin_node(&format!("intc@{:x}", l.gicd.base))?;
    fdt.property_string("compatible", "arm,gic-v3")?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_u32("#interrupt-cells", 3)?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_null("ranges")?;
    let mut gic_reg = reg(l.gicd).to_vec();
    gic_reg.extend_from_slice(&reg(l.gicr()));
    fdt.property_array_u64("reg", &gic_reg)?;
    fdt.property_phandle(GIC_PHANDLE)?;
    let its = fdt.begin_node(&format!("msi-controller@{:x}", l.its.base))?;
    fdt.property_string("compatible", "arm,gic-v3-its")?;
    fdt.property_null("msi-controller")?;
    fdt.property_u32("#msi-cells", 1)?;
    fdt.property_array_u64("reg", &reg(l.its))?;
    fdt.property_phandle(ITS_PHANDLE)?;
    fdt.end_node(its)?;
    fdt.end_node(gic)?;

    let memory = fdt.begin_node(&format!("memory@{:x}", l.ram.base))?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u64("reg", &reg(l.ram))?;
    fdt.end_node(memory)?;

    let uart_name = format!("uart@{:x}", l.uart.base);
    let uart = fdt.begin_node(&uart_name)?;
    fdt.property_string("compatible", "ns16550a")?;
    fdt.property_array_u64("reg", &reg(l.uart))?;
    fdt.property_u32("clock-frequency", UART_CLOCK_HZ)?;
    fdt.property_array_u32("interrupts", &[GIC_SPI, UART_SPI, IRQ_TYPE_LEVEL_HIGH])?;
    fdt.end_node(uart)?;

    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string("bootargs", cfg.cmdline)?;
    fdt.property_string("stdout-path", &format!("/{uart_name}"))?;
    if let Some(initrd) = cfg.initrd {
        fdt.property_u64("linux,initrd-start", initrd.base)?;
        fdt.property_u64("linux,initrd-end", initrd.end().unwrap_or(u64::MAX))?;
    }
    fdt.end_node(chosen)?;

    if let Some(smmu) = l.smmu {
        let node = fdt.begin_node(&format!("iommu@{:x}", smmu.base))?;
        fdt.property_string("compatible", "arm,smmu-v3")?;
        fdt.property_array_u64("reg", &reg(smmu))?;
        let mut irqs = Vec::with_capacity(9);
        for spi in SMMU_SPIS {
            irqs.extend_from_slice(&[GIC_SPI, spi, IRQ_TYPE_EDGE_RISING]);
        }
        fdt.property_array_u32("interrupts", &irqs)?;
        fdt.property_string_list(
            "interrupt-names",
            vec!["eventq".into(), "gerror".into(), "cmdq-sync".into()],
        )?;
        fdt.property_u32("#iommu-cells", 1)?;
        fdt.property_null("dma-coherent")?;
        fdt.property_phandle(SMMU_PHANDLE)?;
        fdt.end_node(node)?;
    }

    let pcie = fdt.begin_node(&format!("pcie@{:x}", l.ecam.base))?;
    fdt.property_string("compatible", "pci-host-ecam-generic")?;
    fdt.property_string("device_type", "pci")?;
    fdt.property_u32("#address-cells", 3)?;
    fdt.property_u32("#size-cells", 2)?;
    fdt.property_array_u32("bus-range", &[0, l.ecam_buses().saturating_sub(1)])?;
    fdt.property_u32("linux,pci-domain", 0)?;
    fdt.property_array_u64("reg", &reg(l.ecam))?;
    let w = l.pci_mmio32;
    let ranges = [
        PCI_RANGE_MMIO32,
        (w.base >> 32) as u32,
        w.base as u32,
        (w.base >> 32) as u32,
        w.base as u32,
        (w.size >> 32) as u32,
        w.size as u32,
    ];
    fdt.property_array_u32("ranges", &ranges)?;
    // msi-map = <rid-base msi-controller msi-base length>: RID r -> DeviceID r.
    fdt.property_array_u32("msi-map", &[0, ITS_PHANDLE, 0, 0x1_0000])?;
    if l.smmu.is_some() {
        // iommu-map = <rid-base iommu iommu-base length>: RID r -> StreamID r.
        fdt.property_array_u32("iommu-map", &[0, SMMU_PHANDLE, 0, 0x1_0000])?;
    }
    fdt.property_null("dma-coherent")?;
    fdt.end_node(pcie)?;

    fdt.end_node(root)?;
    fdt.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdt::Fdt;

    fn u32s(bytes: &[u8]) -> Vec<u32> {
        bytes
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn u64s(bytes: &[u8]) -> Vec<u64> {
        bytes
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn build(layout: &MemoryLayout, initrd: Option<Region>) -> Vec<u8> {
        build_fdt(&FdtConfig {
            layout,
            cmdline: "console=ttyS0 earlycon panic=-1",
            initrd,
        })
        .unwrap()
    }

    fn prop<'a>(fdt: &'a Fdt<'a>, node: &str, name: &str) -> &'a [u8] {
        fdt.find_node(node)
            .unwrap_or_else(|| panic!("no node {node}"))
            .property(name)
            .unwrap_or_else(|| panic!("no {name} in {node}"))
            .value
    }

    #[test]
    fn tree_parses_back_with_every_node() {
        let layout = MemoryLayout::new(3, 512 << 20);
        let blob = build(&layout, Some(Region::new(0x5f00_0000, 0x12_3456)));
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(fdt.root().compatible().first(), "linux,dummy-virt");
        // cpus and PSCI
        let cpus: Vec<_> = fdt.cpus().collect();
        assert_eq!(cpus.len(), 3);
        for (i, cpu) in cpus.iter().enumerate() {
            assert_eq!(cpu.ids().first(), mpidr(i as u32) as usize);
            assert_eq!(
                cpu.property("enable-method").unwrap().as_str(),
                Some("psci")
            );
        }
        assert_eq!(prop(&fdt, "/psci", "compatible"), b"arm,psci-0.2\0");
        assert_eq!(prop(&fdt, "/psci", "method"), b"hvc\0");
        // timer
        assert_eq!(
            u32s(prop(&fdt, "/timer", "interrupts")),
            [1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]
        );
        // GIC: distributor then redistributors for 3 vCPUs.
        let gic = "/intc@4000000";
        assert_eq!(prop(&fdt, gic, "compatible"), b"arm,gic-v3\0");
        assert_eq!(u32s(prop(&fdt, gic, "#interrupt-cells")), [3]);
        assert!(
            fdt.find_node(gic)
                .unwrap()
                .property("interrupt-controller")
                .is_some()
        );
        assert_eq!(
            u64s(prop(&fdt, gic, "reg")),
            [0x0400_0000, 0x1_0000, 0x0402_0000, 3 * 0x2_0000]
        );
        let its = "/intc@4000000/msi-controller@7ff0000";
        assert_eq!(prop(&fdt, its, "compatible"), b"arm,gic-v3-its\0");
        assert_eq!(u32s(prop(&fdt, its, "#msi-cells")), [1]);
        assert!(
            fdt.find_node(its)
                .unwrap()
                .property("msi-controller")
                .is_some()
        );
        assert_eq!(u64s(prop(&fdt, its, "reg")), [0x07ff_0000, 0x2_0000]);
        assert_eq!(u32s(prop(&fdt, its, "phandle")), [ITS_PHANDLE]);
        // memory
        let mem = fdt.memory().regions().next().unwrap();
        assert_eq!(mem.starting_address as usize, 0x4000_0000);
        assert_eq!(mem.size, Some(512 << 20));
        // chosen
        let chosen = fdt.chosen();
        assert_eq!(chosen.bootargs(), Some("console=ttyS0 earlycon panic=-1"));
        assert_eq!(chosen.stdout().unwrap().name, "uart@6000000");
        assert_eq!(
            u64s(prop(&fdt, "/chosen", "linux,initrd-start")),
            [0x5f00_0000]
        );
        assert_eq!(
            u64s(prop(&fdt, "/chosen", "linux,initrd-end")),
            [0x5f12_3456]
        );
        // UART on SPI 1, level-high
        let uart = fdt.find_node("/uart@6000000").unwrap();
        assert_eq!(uart.compatible().unwrap().first(), "ns16550a");
        assert_eq!(
            u32s(prop(&fdt, "/uart@6000000", "interrupts")),
            [0, UART_SPI, 4]
        );
        assert_eq!(
            u32s(prop(&fdt, "/uart@6000000", "clock-frequency")),
            [1_843_200]
        );
    }

    #[test]
    fn pcie_host_bridge_and_msi_map() {
        let layout = MemoryLayout::default();
        let blob = build(&layout, None);
        let fdt = Fdt::new(&blob).unwrap();
        let pcie = "/pcie@30000000";
        assert_eq!(prop(&fdt, pcie, "compatible"), b"pci-host-ecam-generic\0");
        assert_eq!(prop(&fdt, pcie, "device_type"), b"pci\0");
        assert_eq!(u32s(prop(&fdt, pcie, "#address-cells")), [3]);
        assert_eq!(u32s(prop(&fdt, pcie, "#size-cells")), [2]);
        assert_eq!(u32s(prop(&fdt, pcie, "bus-range")), [0, 0]);
        assert_eq!(u64s(prop(&fdt, pcie, "reg")), [0x3000_0000, 0x10_0000]);
        assert_eq!(
            u32s(prop(&fdt, pcie, "ranges")),
            [0x0200_0000, 0, 0x1000_0000, 0, 0x1000_0000, 0, 0x2000_0000]
        );
        // msi-map: RID 0.. maps to the ITS, DeviceID = RID, 64 Ki of them.
        assert_eq!(
            u32s(prop(&fdt, pcie, "msi-map")),
            [0, ITS_PHANDLE, 0, 0x1_0000]
        );
        assert!(
            fdt.find_node(pcie)
                .unwrap()
                .property("dma-coherent")
                .is_some()
        );
        // The phandle in msi-map names the ITS node.
        let its = fdt.find_phandle(ITS_PHANDLE).unwrap();
        assert_eq!(its.compatible().unwrap().first(), "arm,gic-v3-its");
        let gic = fdt.find_phandle(GIC_PHANDLE).unwrap();
        assert_eq!(gic.compatible().unwrap().first(), "arm,gic-v3");
        assert_eq!(u32s(prop(&fdt, "/", "interrupt-parent")), [GIC_PHANDLE]);
        // No initramfs, no initrd properties.
        assert!(
            fdt.find_node("/chosen")
                .unwrap()
                .property("linux,initrd-start")
                .is_none()
        );
    }

    #[test]
    fn no_reserved_memory_node() {
        // Whatever the map, the tree never carries a reserved-memory node nor a memory
        // reservation block entry.
        for cpus in [1, 4, 64] {
            let mut layout = MemoryLayout::new(cpus, 1 << 30);
            layout.its.base = 0x080f_0000;
            let blob = build(&layout, Some(Region::new(0x7000_0000, 0x1000)));
            let fdt = Fdt::new(&blob).unwrap();
            assert!(fdt.find_node("/reserved-memory").is_none());
            assert!(
                fdt.all_nodes()
                    .all(|n| !n.name.starts_with("reserved-memory"))
            );
            assert_eq!(fdt.memory_reservations().count(), 0);
        }
    }

    /// With a vSMMU: the `arm,smmu-v3` node, its interrupts and `iommu-map` on the host
    /// bridge naming it (StreamID = RID), and still nothing that reserves or identity-maps
    /// an MSI window (no reserved-memory node, no memory reservation).
    #[test]
    fn viommu_node_and_iommu_map() {
        let mut layout = MemoryLayout::new(2, 256 << 20);
        layout.smmu = Some(Region::new(
            crate::layout::DEFAULT_SMMU_BASE,
            crate::layout::SMMU_SIZE,
        ));
        layout.validate().unwrap();
        let blob = build(&layout, None);
        let fdt = Fdt::new(&blob).unwrap();
        let smmu = "/iommu@7000000";
        assert_eq!(
            std::str::from_utf8(prop(&fdt, smmu, "compatible")).unwrap(),
            "arm,smmu-v3\0"
        );
        assert_eq!(u64s(prop(&fdt, smmu, "reg")), [0x0700_0000, 0x2_0000]);
        assert_eq!(
            u32s(prop(&fdt, smmu, "interrupts")),
            [0, 2, 1, 0, 3, 1, 0, 4, 1]
        );
        assert_eq!(
            prop(&fdt, smmu, "interrupt-names"),
            b"eventq\0gerror\0cmdq-sync\0"
        );
        assert_eq!(u32s(prop(&fdt, smmu, "#iommu-cells")), [1]);
        assert_eq!(u32s(prop(&fdt, smmu, "phandle")), [SMMU_PHANDLE]);
        let pcie = "/pcie@30000000";
        assert_eq!(
            u32s(prop(&fdt, pcie, "iommu-map")),
            [0, SMMU_PHANDLE, 0, 0x1_0000]
        );
        assert_eq!(
            u32s(prop(&fdt, pcie, "msi-map")),
            [0, ITS_PHANDLE, 0, 0x1_0000]
        );
        assert!(
            fdt.all_nodes()
                .all(|n| !n.name.starts_with("reserved-memory"))
        );
        assert_eq!(fdt.memory_reservations().count(), 0);
        // Without a vSMMU, no node and no iommu-map.
        let plain = build(&MemoryLayout::new(2, 256 << 20), None);
        let fdt = Fdt::new(&plain).unwrap();
        assert!(fdt.find_node(smmu).is_none());
        assert!(fdt.find_node(pcie).unwrap().property("iommu-map").is_none());
    }

    #[test]
    fn smmu_region_is_validated() {
        let mut layout = MemoryLayout::new(1, 256 << 20);
        layout.smmu = Some(Region::new(0x0701_0000, crate::layout::SMMU_SIZE));
        assert!(layout.validate().is_err(), "128 KiB alignment");
        layout.smmu = Some(Region::new(0x0700_0000, 0x1_0000));
        assert!(layout.validate().is_err(), "both pages");
        layout.smmu = Some(Region::new(0x0600_0000, crate::layout::SMMU_SIZE));
        assert!(layout.validate().is_err(), "overlaps the UART");
        layout.smmu = Some(Region::new(0x0800_0000, crate::layout::SMMU_SIZE));
        assert!(layout.validate().is_err(), "inside the host MSI window");
    }

    #[test]
    fn moved_its_is_described_where_it_is() {
        let mut layout = MemoryLayout::default();
        layout.its.base = 0x0800_0000;
        let blob = build(&layout, None);
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(
            u64s(prop(&fdt, "/intc@4000000/msi-controller@8000000", "reg")),
            [0x0800_0000, 0x2_0000]
        );
    }

    #[test]
    fn mpidr_follows_kvm() {
        assert_eq!(mpidr(0), 0);
        assert_eq!(mpidr(15), 0xf);
        assert_eq!(mpidr(16), 0x100);
        assert_eq!(mpidr(0x123), 0x1203);
        assert_eq!(mpidr(0x1000), 0x1_0000);
    }
}
