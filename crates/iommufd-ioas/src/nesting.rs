// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Whether the running kernel gives a device a vIOMMU, and, when it does not, why: the probe
//! a VMM runs before it offers a guest a virtual SMMU.
//!
//! The answer has several layers, each reported on its own so that an operator sees which
//! one stopped it: the IOMMU is not an SMMUv3; the SMMU cannot nest (no stage 1 or stage 2,
//! from its ID registers); the kernel refuses a nest-parent HWPT; or the kernel refuses the
//! vIOMMU itself. Linux 7.2 refuses an SMMUv3 vIOMMU with `EOPNOTSUPP` unless the SMMU has
//! `S2FWB` or the device's root complex is `CANWBS` (an ACPI IORT flag): VFIO does no cache
//! maintenance, and a guest stage 1 could otherwise make DMA non-cacheable. QEMU's emulated
//! SMMUv3 has neither, which the probe reports as [`ViommuRefusal::Incoherent`], with the state
//! of the project's test-only kernel switch (`arm_smmu_v3.viommu_assume_coherent`) when the
//! kernel has it.

use std::path::Path;
use std::sync::Arc;

use crate::errno::Errno;
use crate::error::{Error, Result};
use crate::hw_info::{HwInfo, HwInfoData};
use crate::hwpt::{Hwpt, Viommu, ViommuType};
use crate::ioas::Ioas;
use crate::smmuv3::{NestingUnsupported, SmmuV3Idr};

/// Where the test-only kernel switch shows up when the kernel carries it.
pub const ASSUME_COHERENT_PARAM: &str = "/sys/module/arm_smmu_v3/parameters/viommu_assume_coherent";

/// Why the kernel gives no vIOMMU.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ViommuRefusal {
    /// The device's IOMMU is not an SMMUv3 (the `IOMMU_GET_HW_INFO` type).
    #[error("the IOMMU is not an SMMUv3 (hw_info type {0})")]
    NotSmmuV3(u32),
    /// The SMMU's ID registers rule nesting out.
    #[error("the SMMU cannot nest: {0}")]
    HardwareCannotNest(NestingUnsupported),
    /// `IOMMU_HWPT_ALLOC` with `NEST_PARENT` failed.
    #[error("the kernel refuses a nest-parent HWPT: {0}")]
    NoNestParent(Errno),
    /// `IOMMU_VIOMMU_ALLOC` failed with `EOPNOTSUPP` on an SMMU without `S2FWB`: the kernel
    /// wants S2FWB or a CANWBS master.
    #[error(
        "the kernel refuses a vIOMMU (EOPNOTSUPP): the SMMU has no S2FWB and the device is not CANWBS; {}",
        match .assume_coherent {
            None => "this kernel has no viommu_assume_coherent switch",
            Some(false) => "arm_smmu_v3.viommu_assume_coherent is off",
            Some(true) => "arm_smmu_v3.viommu_assume_coherent is on, yet refused",
        }
    )]
    Incoherent {
        /// The test-only switch: absent (`None`), off or on.
        assume_coherent: Option<bool>,
    },
    /// `IOMMU_VIOMMU_ALLOC` failed otherwise.
    #[error("the kernel refuses a vIOMMU: {0}")]
    ViommuAlloc(Errno),
}

/// What [`probe_viommu`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViommuProbe {
    /// The SMMU's ID registers, when the IOMMU is an SMMUv3.
    pub idr: Option<SmmuV3Idr>,
    /// `Ok(())` when a vIOMMU was allocated (and destroyed again), else why not.
    pub support: std::result::Result<(), ViommuRefusal>,
}

impl ViommuProbe {
    /// Whether the kernel gives this device a vIOMMU.
    pub fn offered(&self) -> bool {
        self.support.is_ok()
    }
}

/// Reads the test-only switch: `None` when the kernel has no such parameter.
pub fn read_assume_coherent(path: &Path) -> Option<bool> {
    let s = std::fs::read_to_string(path).ok()?;
    match s.trim() {
        "Y" | "y" | "1" => Some(true),
        "N" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// Turns the answers of the probe's steps into its verdict (pure; the steps are in
/// [`probe_viommu`]).
pub fn classify_viommu(
    hw: &HwInfo,
    nest_parent: std::result::Result<(), Errno>,
    viommu: std::result::Result<(), Errno>,
    assume_coherent: Option<bool>,
) -> ViommuProbe {
    let idr = match &hw.data {
        HwInfoData::ArmSmmuV3 { idr, .. } => SmmuV3Idr::new(*idr),
        other => {
            let ty = match other {
                HwInfoData::None => 0,
                HwInfoData::IntelVtd { .. } => 1,
                HwInfoData::Amd { .. } => 3,
                HwInfoData::Raw { data_type, .. } => *data_type,
                HwInfoData::ArmSmmuV3 { .. } => 2,
            };
            return ViommuProbe {
                idr: None,
                support: Err(ViommuRefusal::NotSmmuV3(ty)),
            };
        }
    };
    let support = (|| {
        idr.check_nesting()
            .map_err(ViommuRefusal::HardwareCannotNest)?;
        nest_parent.map_err(ViommuRefusal::NoNestParent)?;
        viommu.map_err(|e| {
            if e.raw() == libc::EOPNOTSUPP && !idr.fwb() {
                ViommuRefusal::Incoherent { assume_coherent }
            } else {
                ViommuRefusal::ViommuAlloc(e)
            }
        })
    })();
    ViommuProbe {
        idr: Some(idr),
        support,
    }
}

/// Probes whether the kernel gives `dev_id` (bound to the iommufd of `ioas`, attached or
/// not) an SMMUv3 vIOMMU: reads its SMMU's ID registers, then allocates a nest-parent HWPT
/// from `ioas` and a vIOMMU on it, and destroys both. Kernel refusals are the verdict;
/// only failures to ask at all (`IOMMU_GET_HW_INFO`) are errors.
pub fn probe_viommu(ioas: &Arc<Ioas>, dev_id: u32) -> Result<ViommuProbe> {
    let hw = ioas.iommufd().hw_info(dev_id)?;
    let errno_of = |e: Error| e.errno().unwrap_or(Errno(libc::EIO));
    let mut viommu_answer = Err(Errno(libc::ENODEV));
    let nest_parent = match Hwpt::alloc_nest_parent(ioas, dev_id) {
        Ok(parent) => {
            let parent = Arc::new(parent);
            viommu_answer = Viommu::alloc(&parent, dev_id, ViommuType::ArmSmmuV3)
                .map(drop)
                .map_err(errno_of);
            Ok(())
        }
        Err(e) => Err(errno_of(e)),
    };
    Ok(classify_viommu(
        &hw,
        nest_parent,
        viommu_answer,
        read_assume_coherent(Path::new(ASSUME_COHERENT_PARAM)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smmu(idr0: u32, idr3: u32) -> HwInfo {
        HwInfo {
            data: HwInfoData::ArmSmmuV3 {
                flags: 0,
                idr: [idr0, 0, 0, idr3, 0, 0x74],
                iidr: 0,
                aidr: 0,
            },
            capabilities: 0,
            max_pasid_log2: 0,
        }
    }

    const QEMU_IDR0: u32 = 0x0d44_101b;
    const QEMU_IDR3: u32 = 0x1414;

    #[test]
    fn upstream_on_qemu_is_incoherent() {
        let p = classify_viommu(
            &smmu(QEMU_IDR0, QEMU_IDR3),
            Ok(()),
            Err(Errno(libc::EOPNOTSUPP)),
            None,
        );
        assert!(!p.offered());
        assert_eq!(
            p.support,
            Err(ViommuRefusal::Incoherent {
                assume_coherent: None
            })
        );
        let msg = p.support.unwrap_err().to_string();
        assert!(
            msg.contains("no S2FWB") && msg.contains("no viommu_assume_coherent"),
            "{msg}"
        );
        let p = classify_viommu(
            &smmu(QEMU_IDR0, QEMU_IDR3),
            Ok(()),
            Err(Errno(libc::EOPNOTSUPP)),
            Some(false),
        );
        assert!(p.support.unwrap_err().to_string().contains("is off"));
    }

    #[test]
    fn offered_and_other_refusals() {
        let ok = classify_viommu(&smmu(QEMU_IDR0, QEMU_IDR3), Ok(()), Ok(()), Some(true));
        assert!(ok.offered());
        assert_eq!(ok.idr.unwrap().oas_bits(), 44);
        // With S2FWB an EOPNOTSUPP is something else.
        let fwb = classify_viommu(
            &smmu(QEMU_IDR0, QEMU_IDR3 | 1 << 8),
            Ok(()),
            Err(Errno(libc::EOPNOTSUPP)),
            None,
        );
        assert_eq!(
            fwb.support,
            Err(ViommuRefusal::ViommuAlloc(Errno(libc::EOPNOTSUPP)))
        );
        let parent = classify_viommu(
            &smmu(QEMU_IDR0, QEMU_IDR3),
            Err(Errno(libc::EOPNOTSUPP)),
            Err(Errno(libc::ENODEV)),
            None,
        );
        assert_eq!(
            parent.support,
            Err(ViommuRefusal::NoNestParent(Errno(libc::EOPNOTSUPP)))
        );
        let s1_only = classify_viommu(&smmu(0b1010, 0), Ok(()), Ok(()), None);
        assert_eq!(
            s1_only.support,
            Err(ViommuRefusal::HardwareCannotNest(
                NestingUnsupported::NoStage2
            ))
        );
        let vtd = HwInfo {
            data: HwInfoData::IntelVtd {
                flags: 0,
                cap_reg: 0,
                ecap_reg: 0,
            },
            capabilities: 0,
            max_pasid_log2: 0,
        };
        assert_eq!(
            classify_viommu(&vtd, Ok(()), Ok(()), None).support,
            Err(ViommuRefusal::NotSmmuV3(1))
        );
    }

    #[test]
    fn switch_file_values() {
        let d = std::env::temp_dir().join(format!("nesting-param-{}", std::process::id()));
        std::fs::write(&d, "Y\n").unwrap();
        assert_eq!(read_assume_coherent(&d), Some(true));
        std::fs::write(&d, "N\n").unwrap();
        assert_eq!(read_assume_coherent(&d), Some(false));
        std::fs::write(&d, "maybe").unwrap();
        assert_eq!(read_assume_coherent(&d), None);
        std::fs::remove_file(&d).unwrap();
        assert_eq!(read_assume_coherent(&d), None);
    }
}
