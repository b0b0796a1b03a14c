// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The host SMMU's ID registers (Arm IHI 0070 6.3.1 SMMU_IDR0 .. 6.3.6 SMMU_IDR5), decoded.

use super::bits;

/// How the SMMU handles stalls (`SMMU_IDR0.STALL_MODEL`, IHI 0070 6.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StallModel {
    /// `0b00`: stall and terminate models supported.
    StallAndTerminate,
    /// `0b01`: stall not supported.
    TerminateOnly,
    /// `0b10`: stall forced (faults always stall).
    StallForced,
    /// `0b11`: reserved.
    Reserved,
}

/// The translation granules the SMMU supports (`SMMU_IDR5.GRAN4K/16K/64K`, IHI 0070 6.3.6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Granules {
    /// 4 KiB granule.
    pub g4k: bool,
    /// 16 KiB granule.
    pub g16k: bool,
    /// 64 KiB granule.
    pub g64k: bool,
}

/// Why a host SMMU cannot give a guest a stage 1 through iommufd nesting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NestingUnsupported {
    /// `SMMU_IDR0.S1P` is 0: no stage 1 for the guest.
    #[error("the SMMU has no stage 1 (IDR0.S1P = 0)")]
    NoStage1,
    /// `SMMU_IDR0.S2P` is 0: no stage 2 for the VMM.
    #[error("the SMMU has no stage 2 (IDR0.S2P = 0)")]
    NoStage2,
    /// `SMMU_IDR0.TTF` has no AArch64 format.
    #[error("the SMMU has no AArch64 translation tables (IDR0.TTF = {0:#b})")]
    NoAArch64(u32),
}

/// The six ID registers of an SMMUv3, as `IOMMU_GET_HW_INFO` reports them
/// (`struct iommu_hw_info_arm_smmuv3.idr`), with accessors named after the spec's fields.
///
/// ```
/// use iommufd_ioas::smmuv3::SmmuV3Idr;
/// // QEMU 10's SMMUv3 (machine virt-9.2 and later).
/// let idr = SmmuV3Idr::new([0x0d44_101b, 0x0273_0010, 0, 0x1414, 0, 0x74]);
/// assert!(idr.s1p() && idr.s2p() && idr.coherent());
/// assert!(!idr.fwb());
/// assert_eq!(idr.oas_bits(), 44);
/// assert_eq!(idr.ssid_bits(), 0);
/// assert!(idr.check_nesting().is_ok());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmmuV3Idr {
    raw: [u32; 6],
}

impl SmmuV3Idr {
    /// Wraps raw IDR0..IDR5.
    pub const fn new(raw: [u32; 6]) -> Self {
        SmmuV3Idr { raw }
    }

    /// The raw registers.
    pub const fn raw(&self) -> [u32; 6] {
        self.raw
    }

    fn r(&self, n: usize, hi: u32, lo: u32) -> u32 {
        bits(u64::from(self.raw[n]), hi, lo) as u32
    }

    /// `IDR0.S2P`: stage 2 translation.
    pub fn s2p(&self) -> bool {
        self.r(0, 0, 0) == 1
    }

    /// `IDR0.S1P`: stage 1 translation.
    pub fn s1p(&self) -> bool {
        self.r(0, 1, 1) == 1
    }

    /// `IDR0.TTF`: translation table formats (`0b10` AArch64, `0b11` AArch32 and AArch64).
    pub fn ttf(&self) -> u32 {
        self.r(0, 3, 2)
    }

    /// Whether AArch64 translation tables are supported (`TTF` bit 1).
    pub fn aarch64_tables(&self) -> bool {
        self.ttf() & 0b10 != 0
    }

    /// `IDR0.COHACC`: coherent access to tables, queues and (for devices) memory.
    pub fn coherent(&self) -> bool {
        self.r(0, 4, 4) == 1
    }

    /// `IDR0.BTM`: broadcast TLB maintenance.
    pub fn btm(&self) -> bool {
        self.r(0, 5, 5) == 1
    }

    /// `IDR0.HTTU`: hardware update of the Access flag (1) and dirty state (2).
    pub fn httu(&self) -> u32 {
        self.r(0, 7, 6)
    }

    /// `IDR0.ATS`: PCIe ATS.
    pub fn ats(&self) -> bool {
        self.r(0, 10, 10) == 1
    }

    /// `IDR0.ASID16`: 16-bit ASIDs (else 8-bit).
    pub fn asid16(&self) -> bool {
        self.r(0, 12, 12) == 1
    }

    /// `IDR0.MSI`: MSI-capable interrupts of the SMMU itself.
    pub fn msi(&self) -> bool {
        self.r(0, 13, 13) == 1
    }

    /// `IDR0.SEV`: the SMMU can generate WFE wake-up events.
    pub fn sev(&self) -> bool {
        self.r(0, 14, 14) == 1
    }

    /// `IDR0.PRI`: PCIe PRI.
    pub fn pri(&self) -> bool {
        self.r(0, 16, 16) == 1
    }

    /// `IDR0.VMID16`: 16-bit VMIDs.
    pub fn vmid16(&self) -> bool {
        self.r(0, 18, 18) == 1
    }

    /// `IDR0.CD2L`: 2-level context descriptor tables.
    pub fn cd2l(&self) -> bool {
        self.r(0, 19, 19) == 1
    }

    /// `IDR0.TTENDIAN`: table endianness (`0b00` mixed, `0b10` little, `0b11` big).
    pub fn ttendian(&self) -> u32 {
        self.r(0, 22, 21)
    }

    /// `IDR0.STALL_MODEL`.
    pub fn stall_model(&self) -> StallModel {
        match self.r(0, 25, 24) {
            0 => StallModel::StallAndTerminate,
            1 => StallModel::TerminateOnly,
            2 => StallModel::StallForced,
            _ => StallModel::Reserved,
        }
    }

    /// `IDR0.ST_LEVEL`: `0b00` linear stream table only, `0b01` 2-level too.
    pub fn st_level(&self) -> u32 {
        self.r(0, 28, 27)
    }

    /// `IDR1.SIDSIZE`: StreamID bits.
    pub fn sid_bits(&self) -> u32 {
        self.r(1, 5, 0)
    }

    /// `IDR1.SSIDSIZE`: SubstreamID bits (0: no PASIDs).
    pub fn ssid_bits(&self) -> u32 {
        self.r(1, 10, 6)
    }

    /// `IDR1.EVENTQS`: log2 of the largest event queue.
    pub fn eventqs(&self) -> u32 {
        self.r(1, 20, 16)
    }

    /// `IDR1.CMDQS`: log2 of the largest command queue.
    pub fn cmdqs(&self) -> u32 {
        self.r(1, 25, 21)
    }

    /// `IDR3.HAD`: hierarchical attribute disables.
    pub fn had(&self) -> bool {
        self.r(3, 2, 2) == 1
    }

    /// `IDR3.FWB`: stage-2 forced write-back (`STE.S2FWB`).
    pub fn fwb(&self) -> bool {
        self.r(3, 8, 8) == 1
    }

    /// `IDR3.RIL`: range-based TLB invalidation.
    pub fn ril(&self) -> bool {
        self.r(3, 10, 10) == 1
    }

    /// `IDR3.BBML`: break-before-make level.
    pub fn bbml(&self) -> u32 {
        self.r(3, 12, 11)
    }

    /// `IDR5.OAS` as a number of bits (IHI 0070 6.3.6: 32, 36, 40, 42, 44, 48, 52; the
    /// reserved encodings read as 48, the largest an SMMUv3.0 defines, so that a consumer
    /// never widens past a real maximum on garbage).
    pub fn oas_bits(&self) -> u32 {
        match self.r(5, 2, 0) {
            0 => 32,
            1 => 36,
            2 => 40,
            3 => 42,
            4 => 44,
            6 => 52,
            _ => 48,
        }
    }

    /// `IDR5.GRAN4K/16K/64K`.
    pub fn granules(&self) -> Granules {
        Granules {
            g4k: self.r(5, 4, 4) == 1,
            g16k: self.r(5, 5, 5) == 1,
            g64k: self.r(5, 6, 6) == 1,
        }
    }

    /// `IDR5.VAX`: virtual address size (`0b00` 48 bits, `0b01` 52 bits).
    pub fn vax(&self) -> u32 {
        self.r(5, 11, 10)
    }

    /// Whether a guest can be given a stage 1 over a host stage 2 on this SMMU: S1P, S2P and
    /// AArch64 tables. Coherency (S2FWB or a CANWBS master) is the kernel's further condition
    /// for a vIOMMU and is reported by [`crate::probe_viommu`].
    pub fn check_nesting(&self) -> Result<(), NestingUnsupported> {
        if !self.s1p() {
            return Err(NestingUnsupported::NoStage1);
        }
        if !self.s2p() {
            return Err(NestingUnsupported::NoStage2);
        }
        if !self.aarch64_tables() {
            return Err(NestingUnsupported::NoAArch64(self.ttf()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The registers of QEMU 10's SMMUv3: IDR0 0x0d44101b, IDR3 0x1414 and IDR5 (44-bit OAS,
    /// three granules) as measured in the test host through `IOMMU_GET_HW_INFO`; IDR1 as its
    /// model builds it (SIDSIZE 16, SSIDSIZE 0, 2^19-entry queues).
    const QEMU: [u32; 6] = [0x0d44_101b, 0x0273_0010, 0, 0x1414, 0, 0x74];

    #[test]
    fn decodes_qemu_smmuv3() {
        let idr = SmmuV3Idr::new(QEMU);
        assert!(idr.s2p());
        assert!(idr.s1p());
        assert_eq!(idr.ttf(), 0b10);
        assert!(idr.aarch64_tables());
        assert!(idr.coherent());
        assert!(!idr.btm());
        assert_eq!(idr.httu(), 0);
        assert!(!idr.ats());
        assert!(!idr.pri());
        assert!(idr.asid16());
        assert!(!idr.msi());
        assert!(idr.vmid16());
        assert_eq!(idr.ttendian(), 0b10);
        assert_eq!(idr.stall_model(), StallModel::TerminateOnly);
        assert_eq!(idr.st_level(), 1);
        assert_eq!(idr.sid_bits(), 16);
        assert_eq!(idr.ssid_bits(), 0);
        assert_eq!(idr.cmdqs(), 19);
        assert_eq!(idr.eventqs(), 19);
        assert!(idr.had());
        assert!(!idr.fwb());
        assert!(idr.ril());
        assert_eq!(idr.bbml(), 0b10);
        assert_eq!(idr.oas_bits(), 44);
        assert_eq!(
            idr.granules(),
            Granules {
                g4k: true,
                g16k: true,
                g64k: true
            }
        );
        assert_eq!(idr.check_nesting(), Ok(()));
    }

    #[test]
    fn oas_encodings() {
        let oas = |v: u32| SmmuV3Idr::new([0, 0, 0, 0, 0, v]).oas_bits();
        assert_eq!(
            (0..8).map(oas).collect::<Vec<_>>(),
            [32, 36, 40, 42, 44, 48, 52, 48]
        );
    }

    #[test]
    fn nesting_needs_both_stages_and_aarch64() {
        assert_eq!(
            SmmuV3Idr::new([0b1001, 0, 0, 0, 0, 0]).check_nesting(),
            Err(NestingUnsupported::NoStage1)
        );
        assert_eq!(
            SmmuV3Idr::new([0b1010, 0, 0, 0, 0, 0]).check_nesting(),
            Err(NestingUnsupported::NoStage2)
        );
        assert_eq!(
            SmmuV3Idr::new([0b0111, 0, 0, 0, 0, 0]).check_nesting(),
            Err(NestingUnsupported::NoAArch64(0b01))
        );
        assert_eq!(
            SmmuV3Idr::new([0b1111, 0, 0, 0, 0, 0]).check_nesting(),
            Ok(())
        );
    }

    #[test]
    fn garbage_never_panics() {
        for v in [0u32, u32::MAX, 0xaaaa_aaaa, 0x5555_5555] {
            let idr = SmmuV3Idr::new([v; 6]);
            let _ = (
                idr.stall_model(),
                idr.oas_bits(),
                idr.granules(),
                idr.check_nesting(),
                idr.sid_bits(),
                idr.ssid_bits(),
                idr.cmdqs(),
                idr.eventqs(),
                idr.vax(),
                idr.cd2l(),
                idr.sev(),
            );
        }
    }
}
