// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The device tree of a RISC-V guest, built from the [`RiscvLayout`] (on any host; the
//! riscv64 KVM side `vm_riscv` fills in what KVM reports: ISA extensions, timebase).
//!
//! Nodes (bindings from Linux `Documentation/devicetree/bindings`):
//!
//! - `/cpus` with `timebase-frequency`; `/cpus/cpu@N` (`riscv/cpus.yaml`): `compatible =
//!   "riscv"`, `reg` = hart ID N (KVM's vCPU N has `mhartid` N), `riscv,isa-base`,
//!   `riscv,isa-extensions` and the legacy `riscv,isa` string, `mmu-type`; its child
//!   `interrupt-controller` (`interrupt-controller/riscv,cpu-intc.yaml`) with one cell;
//! - `/imsics@...` (`interrupt-controller/riscv,imsics.yaml`): `compatible = "riscv,imsics"`,
//!   `reg` = the vIMSIC region, `interrupts-extended` = each hart's local interrupt 9
//!   (supervisor external interrupt, the privileged spec's `mip.SEIP`),
//!   `riscv,num-ids`, `riscv,hart-index-bits`, `msi-controller` with `#msi-cells = <0>`:
//!   an IMSIC MSI carries no device ID (AIA 1.0 §3.5, an MSI is an address and an identity);
//! - `/aplic@...` (`interrupt-controller/riscv,aplic.yaml`): `compatible = "riscv,aplic"`,
//!   MSI mode (`msi-parent` = the imsics), two interrupt cells, `riscv,num-sources`: KVM's
//!   in-kernel APLIC, which turns the UART's level into an MSI;
//! - `/memory@...`, `/chosen` (`bootargs`, `stdout-path`, `linux,initrd-start` and `-end`);
//! - `/uart@...`: `ns16550a`, APLIC source [`UART_SOURCE`], level-high;
//! - `/pcie@...`: `pci-host-ecam-generic` as on arm64, with `msi-parent` = the imsics
//!   (`pci/pci-msi.txt`: with no `msi-map`, every function's MSIs go to that controller).
//!
//! There is never a `/reserved-memory` node (`tests::tree_parses_back_with_every_node`).

use vm_fdt::{FdtWriter, FdtWriterResult};

use crate::boot::DTB_RESERVE;
use crate::fdt::FdtError;
use crate::layout::Region;
use crate::layout_riscv::{APLIC_SOURCES, IMSIC_IDS, RiscvLayout, UART_SOURCE};
use crate::uart::UART_CLOCK_HZ;

/// Phandle of the imsics node.
pub const IMSIC_PHANDLE: u32 = 1;
/// Phandle of the APLIC.
pub const APLIC_PHANDLE: u32 = 2;
/// Phandle of hart N's local interrupt controller: `CPU_INTC_PHANDLE_BASE + N`.
pub const CPU_INTC_PHANDLE_BASE: u32 = 0x100;
/// The supervisor external interrupt, the local interrupt an IMSIC's supervisor file raises
/// (RISC-V privileged spec, `mip.SEIP` is bit 9).
pub const IRQ_S_EXT: u32 = 9;
/// `IRQ_TYPE_LEVEL_HIGH` in the APLIC's second cell.
const IRQ_TYPE_LEVEL_HIGH: u32 = 4;
/// PCI address space code of 32-bit memory space in `ranges` (IEEE 1275 PCI binding).
const PCI_RANGE_MMIO32: u32 = 0x0200_0000;

/// What the device tree needs besides the memory map.
#[derive(Debug, Clone, Copy)]
pub struct RiscvFdtConfig<'a> {
    /// The memory map (vCPU count included).
    pub layout: &'a RiscvLayout,
    /// The kernel command line.
    pub cmdline: &'a str,
    /// Where the initramfs was loaded.
    pub initrd: Option<Region>,
    /// The ISA extensions of every hart in `riscv,isa-extensions` spelling, single letters
    /// first (`i`, `m`, `a`, ..., then `zicsr`, `ssaia`, ...): what KVM enabled on the vCPUs.
    pub isa_extensions: &'a [&'a str],
    /// `timebase-frequency`: KVM's timer frequency (`KVM_REG_RISCV_TIMER`).
    pub timebase_hz: u32,
    /// `mmu-type`, e.g. `riscv,sv39`.
    pub mmu_type: &'a str,
}

/// The legacy `riscv,isa` string of `extensions`: `rv64` + the single letters, then `_` +
/// each multi-letter extension (`riscv/extensions.yaml`).
pub fn isa_string(extensions: &[&str]) -> String {
    let mut s = String::from("rv64");
    for e in extensions.iter().filter(|e| e.len() == 1) {
        s.push_str(e);
    }
    for e in extensions.iter().filter(|e| e.len() > 1) {
        s.push('_');
        s.push_str(e);
    }
    s
}

fn reg(r: Region) -> [u64; 2] {
    [r.base, r.size]
}

/// Builds the device tree blob.
///
/// # Example
///
/// ```
/// use passthrough_vmm::fdt_riscv::{build_riscv_fdt, RiscvFdtConfig};
/// use passthrough_vmm::layout_riscv::RiscvLayout;
///
/// let layout = RiscvLayout::new(2, 256 << 20);
/// let dtb = build_riscv_fdt(&RiscvFdtConfig {
///     layout: &layout,
///     cmdline: "console=ttyS0",
///     initrd: None,
///     isa_extensions: &["i", "m", "a", "f", "d", "c", "zicsr", "ssaia"],
///     timebase_hz: 10_000_000,
///     mmu_type: "riscv,sv39",
/// })?;
/// assert_eq!(&dtb[..4], &[0xd0, 0x0d, 0xfe, 0xed]); // FDT magic
/// # Ok::<(), passthrough_vmm::fdt::FdtError>(())
/// ```
pub fn build_riscv_fdt(cfg: &RiscvFdtConfig<'_>) -> Result<Vec<u8>, FdtError> {
    let blob = write_tree(cfg).map_err(|source| FdtError::Write {
        what: "the RISC-V tree",
        source,
    })?;
    if blob.len() as u64 > DTB_RESERVE {
        return Err(FdtError::TooLarge(blob.len()));
    }
    Ok(blob)
}

fn write_tree(cfg: &RiscvFdtConfig<'_>) -> FdtWriterResult<Vec<u8>> {
    let l = cfg.layout;
    let mut fdt = FdtWriter::new()?;
    let root = fdt.begin_node("")?;
    fdt.property_string("compatible", "linux,dummy-virt")?;
    fdt.property_string("model", "passthrough-vmm")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 2)?;

    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    fdt.property_u32("timebase-frequency", cfg.timebase_hz)?;
    let isa = isa_string(cfg.isa_extensions);
    let extensions: Vec<String> = cfg.isa_extensions.iter().map(|e| e.to_string()).collect();
    for hart in 0..l.cpus {
        let cpu = fdt.begin_node(&format!("cpu@{hart:x}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", "riscv")?;
        fdt.property_u32("reg", hart)?;
        fdt.property_string("status", "okay")?;
        fdt.property_string("riscv,isa", &isa)?;
        fdt.property_string("riscv,isa-base", "rv64i")?;
        fdt.property_string_list("riscv,isa-extensions", extensions.clone())?;
        fdt.property_string("mmu-type", cfg.mmu_type)?;
        let intc = fdt.begin_node("interrupt-controller")?;
        fdt.property_string("compatible", "riscv,cpu-intc")?;
        fdt.property_u32("#interrupt-cells", 1)?;
        fdt.property_null("interrupt-controller")?;
        fdt.property_phandle(CPU_INTC_PHANDLE_BASE + hart)?;
        fdt.end_node(intc)?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(cpus)?;

    let imsics = fdt.begin_node(&format!("imsics@{:x}", l.imsic.base))?;
    fdt.property_string("compatible", "riscv,imsics")?;
    fdt.property_array_u64("reg", &reg(l.imsic))?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_u32("#interrupt-cells", 0)?;
    fdt.property_null("msi-controller")?;
    fdt.property_u32("#msi-cells", 0)?;
    let mut parents = Vec::with_capacity(2 * l.cpus as usize);
    for hart in 0..l.cpus {
        parents.extend_from_slice(&[CPU_INTC_PHANDLE_BASE + hart, IRQ_S_EXT]);
    }
    fdt.property_array_u32("interrupts-extended", &parents)?;
    fdt.property_u32("riscv,num-ids", IMSIC_IDS)?;
    fdt.property_u32("riscv,hart-index-bits", u32::from(l.hart_index_bits()))?;
    fdt.property_phandle(IMSIC_PHANDLE)?;
    fdt.end_node(imsics)?;

    let aplic = fdt.begin_node(&format!("aplic@{:x}", l.aplic.base))?;
    fdt.property_string("compatible", "riscv,aplic")?;
    fdt.property_array_u64("reg", &reg(l.aplic))?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_u32("#interrupt-cells", 2)?;
    fdt.property_u32("msi-parent", IMSIC_PHANDLE)?;
    fdt.property_u32("riscv,num-sources", APLIC_SOURCES)?;
    fdt.property_phandle(APLIC_PHANDLE)?;
    fdt.end_node(aplic)?;

    let memory = fdt.begin_node(&format!("memory@{:x}", l.ram.base))?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u64("reg", &reg(l.ram))?;
    fdt.end_node(memory)?;

    let uart_name = format!("uart@{:x}", l.uart.base);
    let uart = fdt.begin_node(&uart_name)?;
    fdt.property_string("compatible", "ns16550a")?;
    fdt.property_array_u64("reg", &reg(l.uart))?;
    fdt.property_u32("clock-frequency", UART_CLOCK_HZ)?;
    fdt.property_u32("interrupt-parent", APLIC_PHANDLE)?;
    fdt.property_array_u32("interrupts", &[UART_SOURCE, IRQ_TYPE_LEVEL_HIGH])?;
    fdt.end_node(uart)?;

    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string("bootargs", cfg.cmdline)?;
    fdt.property_string("stdout-path", &format!("/{uart_name}"))?;
    if let Some(initrd) = cfg.initrd {
        fdt.property_u64("linux,initrd-start", initrd.base)?;
        fdt.property_u64("linux,initrd-end", initrd.end().unwrap_or(u64::MAX))?;
    }
    fdt.end_node(chosen)?;

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
    fdt.property_u32("msi-parent", IMSIC_PHANDLE)?;
    fdt.property_null("dma-coherent")?;
    fdt.end_node(pcie)?;

    fdt.end_node(root)?;
    fdt.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdt::Fdt;

    const ISA: &[&str] = &["i", "m", "a", "f", "d", "c", "zicsr", "zifencei", "ssaia"];

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

    fn build(layout: &RiscvLayout, initrd: Option<Region>) -> Vec<u8> {
        build_riscv_fdt(&RiscvFdtConfig {
            layout,
            cmdline: "console=ttyS0 earlycon panic=-1",
            initrd,
            isa_extensions: ISA,
            timebase_hz: 10_000_000,
            mmu_type: "riscv,sv39",
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

    fn phandle(fdt: &Fdt<'_>, node: &str) -> u32 {
        u32s(prop(fdt, node, "phandle"))[0]
    }

    #[test]
    fn isa_string_puts_letters_first() {
        assert_eq!(isa_string(ISA), "rv64imafdc_zicsr_zifencei_ssaia");
        assert_eq!(isa_string(&[]), "rv64");
    }

    #[test]
    fn tree_parses_back_with_every_node() {
        let mut layout = RiscvLayout::new(3, 512 << 20);
        layout.imsic.base = 0x0800_4000 & !0x3fff; // 3 harts: 2 hart bits, 16 KiB aligned
        layout.validate().unwrap();
        let blob = build(&layout, Some(Region::new(0x9f00_0000, 0x12_3456)));
        let fdt = Fdt::new(&blob).unwrap();

        // cpus: hart IDs, ISA, timebase, each hart's local interrupt controller.
        assert_eq!(
            u32s(prop(&fdt, "/cpus", "timebase-frequency")),
            [10_000_000]
        );
        let cpus: Vec<_> = fdt.cpus().collect();
        assert_eq!(cpus.len(), 3);
        for (i, cpu) in cpus.iter().enumerate() {
            assert_eq!(cpu.ids().first(), i);
            let node = format!("/cpus/cpu@{i:x}");
            assert_eq!(prop(&fdt, &node, "compatible"), b"riscv\0");
            assert_eq!(
                prop(&fdt, &node, "riscv,isa"),
                b"rv64imafdc_zicsr_zifencei_ssaia\0"
            );
            assert_eq!(prop(&fdt, &node, "riscv,isa-base"), b"rv64i\0");
            let exts: Vec<&str> = prop(&fdt, &node, "riscv,isa-extensions")
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| std::str::from_utf8(s).unwrap())
                .collect();
            assert_eq!(exts, ISA);
            let intc = format!("{node}/interrupt-controller");
            assert_eq!(prop(&fdt, &intc, "compatible"), b"riscv,cpu-intc\0");
            assert_eq!(u32s(prop(&fdt, &intc, "#interrupt-cells")), [1]);
            assert_eq!(phandle(&fdt, &intc), CPU_INTC_PHANDLE_BASE + i as u32);
        }

        // The imsics node: the region, every hart's S-level external interrupt, no DeviceID.
        let imsics = "/imsics@8004000";
        assert_eq!(prop(&fdt, imsics, "compatible"), b"riscv,imsics\0");
        assert_eq!(u64s(prop(&fdt, imsics, "reg")), [0x0800_4000, 0x3000]);
        assert_eq!(
            u32s(prop(&fdt, imsics, "interrupts-extended")),
            [0x100, 9, 0x101, 9, 0x102, 9]
        );
        assert_eq!(u32s(prop(&fdt, imsics, "riscv,num-ids")), [255]);
        assert_eq!(u32s(prop(&fdt, imsics, "riscv,hart-index-bits")), [2]);
        assert_eq!(u32s(prop(&fdt, imsics, "#msi-cells")), [0]);
        assert_eq!(u32s(prop(&fdt, imsics, "#interrupt-cells")), [0]);
        let node = fdt.find_node(imsics).unwrap();
        assert!(node.property("msi-controller").is_some());
        assert!(node.property("interrupt-controller").is_some());
        assert_eq!(phandle(&fdt, imsics), IMSIC_PHANDLE);

        // APLIC in MSI mode, and the UART on its source 1.
        let aplic = "/aplic@c000000";
        assert_eq!(prop(&fdt, aplic, "compatible"), b"riscv,aplic\0");
        assert_eq!(u64s(prop(&fdt, aplic, "reg")), [0x0c00_0000, 0x4000]);
        assert_eq!(u32s(prop(&fdt, aplic, "msi-parent")), [IMSIC_PHANDLE]);
        assert_eq!(
            u32s(prop(&fdt, aplic, "riscv,num-sources")),
            [APLIC_SOURCES]
        );
        assert_eq!(u32s(prop(&fdt, aplic, "#interrupt-cells")), [2]);
        let uart = "/uart@6000000";
        assert_eq!(prop(&fdt, uart, "compatible"), b"ns16550a\0");
        assert_eq!(u32s(prop(&fdt, uart, "interrupt-parent")), [APLIC_PHANDLE]);
        assert_eq!(u32s(prop(&fdt, uart, "interrupts")), [UART_SOURCE, 4]);
        assert_eq!(u64s(prop(&fdt, uart, "reg")), [0x0600_0000, 0x1000]);

        // memory and chosen
        assert_eq!(
            u64s(prop(&fdt, "/memory@80000000", "reg")),
            [0x8000_0000, 512 << 20]
        );
        assert_eq!(prop(&fdt, "/chosen", "stdout-path"), b"/uart@6000000\0");
        assert_eq!(
            u64s(prop(&fdt, "/chosen", "linux,initrd-start")),
            [0x9f00_0000]
        );
        assert_eq!(
            u64s(prop(&fdt, "/chosen", "linux,initrd-end")),
            [0x9f12_3456]
        );

        // PCIe: ECAM, the window identity mapped, MSIs to the imsics, no msi-map.
        let pcie = "/pcie@30000000";
        assert_eq!(prop(&fdt, pcie, "compatible"), b"pci-host-ecam-generic\0");
        assert_eq!(u64s(prop(&fdt, pcie, "reg")), [0x3000_0000, 0x10_0000]);
        assert_eq!(u32s(prop(&fdt, pcie, "bus-range")), [0, 0]);
        assert_eq!(
            u32s(prop(&fdt, pcie, "ranges")),
            [0x0200_0000, 0, 0x1000_0000, 0, 0x1000_0000, 0, 0x2000_0000]
        );
        assert_eq!(u32s(prop(&fdt, pcie, "msi-parent")), [IMSIC_PHANDLE]);
        let pcie_node = fdt.find_node(pcie).unwrap();
        assert!(pcie_node.property("msi-map").is_none());
        assert!(pcie_node.property("dma-coherent").is_some());

        // Nothing the guest must keep clear of, and nothing Arm.
        assert!(fdt.find_node("/reserved-memory").is_none());
        assert!(!blob.windows(15).any(|w| w == b"reserved-memory"));
        assert!(fdt.find_node("/psci").is_none());
    }

    #[test]
    fn one_hart_needs_no_hart_bits() {
        let layout = RiscvLayout::new(1, 256 << 20);
        let blob = build(&layout, None);
        let fdt = Fdt::new(&blob).unwrap();
        let imsics = "/imsics@8000000";
        assert_eq!(u32s(prop(&fdt, imsics, "riscv,hart-index-bits")), [0]);
        assert_eq!(u64s(prop(&fdt, imsics, "reg")), [0x0800_0000, 0x1000]);
        assert!(
            fdt.find_node("/chosen")
                .unwrap()
                .property("linux,initrd-start")
                .is_none()
        );
    }
}
