// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `IOMMU_GET_HW_INFO`: what the IOMMU behind a device is, and its raw ID registers.
//!
//! The kernel fills a type-specific blob; this module decodes it from bytes with bounds
//! checks (a blob shorter than its type needs is an error, never an out-of-bounds read).

use iommufd_bindings::iommufd::{
    iommu_hw_info_type_IOMMU_HW_INFO_TYPE_AMD, iommu_hw_info_type_IOMMU_HW_INFO_TYPE_ARM_SMMUV3,
    iommu_hw_info_type_IOMMU_HW_INFO_TYPE_INTEL_VTD, iommu_hw_info_type_IOMMU_HW_INFO_TYPE_NONE,
    iommufd_hw_capabilities_IOMMU_HW_CAP_DIRTY_TRACKING,
};

use crate::error::{Error, Result};

/// Room given to the kernel for the type-specific data; the largest type today is 40 bytes.
pub(crate) const HW_INFO_BUF_LEN: usize = 256;

/// The type-specific part of `IOMMU_GET_HW_INFO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HwInfoData {
    /// `IOMMU_HW_INFO_TYPE_NONE`: the driver reports nothing.
    None,
    /// `struct iommu_hw_info_arm_smmuv3`.
    ArmSmmuV3 {
        /// `flags` (must be 0 today).
        flags: u32,
        /// SMMU_IDR0..SMMU_IDR5 as the kernel exposes them (some fields masked).
        idr: [u32; 6],
        /// SMMU_IIDR.
        iidr: u32,
        /// SMMU_AIDR.
        aidr: u32,
    },
    /// `struct iommu_hw_info_vtd`.
    IntelVtd {
        /// `flags`.
        flags: u32,
        /// The capability register.
        cap_reg: u64,
        /// The extended capability register.
        ecap_reg: u64,
    },
    /// `struct iommu_hw_info_amd`.
    Amd {
        /// The extended feature register.
        efr: u64,
        /// The extended feature register 2.
        efr2: u64,
    },
    /// A type this crate does not decode (including `TEGRA241_CMDQV`), with its raw bytes.
    Raw {
        /// The `out_data_type` value.
        data_type: u32,
        /// The bytes the kernel wrote.
        bytes: Vec<u8>,
    },
}

/// The decoded answer of `IOMMU_GET_HW_INFO`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HwInfo {
    /// The type-specific data.
    pub data: HwInfoData,
    /// `out_capabilities` (`IOMMU_HW_CAP_*`).
    pub capabilities: u64,
    /// `out_max_pasid_log2`: 0 when the device has no PASID support.
    pub max_pasid_log2: u8,
}

impl HwInfo {
    /// Whether the IOMMU can track dirty pages (`IOMMU_HW_CAP_DIRTY_TRACKING`).
    pub fn dirty_tracking(&self) -> bool {
        self.capabilities & u64::from(iommufd_hw_capabilities_IOMMU_HW_CAP_DIRTY_TRACKING) != 0
    }

    /// Decodes the kernel's answer: the data type it reported, the data length it reported,
    /// the buffer it wrote into, and the capability fields.
    pub fn decode(
        data_type: u32,
        reported_len: u32,
        buf: &[u8],
        capabilities: u64,
        max_pasid_log2: u8,
    ) -> Result<Self> {
        // The kernel copies min(its length, our length) and reports its own length.
        let len = (reported_len as usize).min(buf.len());
        let bytes = &buf[..len];
        let need = |n: usize| -> Result<()> {
            if len < n {
                Err(Error::KernelReply {
                    op: "IOMMU_GET_HW_INFO",
                    reason: format!("type {data_type} data is {len} bytes, needs {n}"),
                })
            } else {
                Ok(())
            }
        };
        let u32_at =
            |o: usize| u32::from_ne_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
        let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
        let data = match data_type {
            t if t == iommu_hw_info_type_IOMMU_HW_INFO_TYPE_NONE => HwInfoData::None,
            t if t == iommu_hw_info_type_IOMMU_HW_INFO_TYPE_ARM_SMMUV3 => {
                need(40)?;
                let mut idr = [0u32; 6];
                for (i, r) in idr.iter_mut().enumerate() {
                    *r = u32_at(8 + 4 * i);
                }
                HwInfoData::ArmSmmuV3 {
                    flags: u32_at(0),
                    idr,
                    iidr: u32_at(32),
                    aidr: u32_at(36),
                }
            }
            t if t == iommu_hw_info_type_IOMMU_HW_INFO_TYPE_INTEL_VTD => {
                need(24)?;
                HwInfoData::IntelVtd {
                    flags: u32_at(0),
                    cap_reg: u64_at(8),
                    ecap_reg: u64_at(16),
                }
            }
            t if t == iommu_hw_info_type_IOMMU_HW_INFO_TYPE_AMD => {
                need(16)?;
                HwInfoData::Amd {
                    efr: u64_at(0),
                    efr2: u64_at(8),
                }
            }
            t => HwInfoData::Raw {
                data_type: t,
                bytes: bytes.to_vec(),
            },
        };
        Ok(HwInfo {
            data,
            capabilities,
            max_pasid_log2,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_smmuv3() {
        let mut buf = [0u8; HW_INFO_BUF_LEN];
        for i in 0..10u32 {
            buf[4 * i as usize..4 * i as usize + 4].copy_from_slice(&(0x100 + i).to_ne_bytes());
        }
        let info = HwInfo::decode(2, 40, &buf, 1, 0).unwrap();
        assert!(info.dirty_tracking());
        match info.data {
            HwInfoData::ArmSmmuV3 {
                flags,
                idr,
                iidr,
                aidr,
            } => {
                assert_eq!(flags, 0x100);
                assert_eq!(idr, [0x102, 0x103, 0x104, 0x105, 0x106, 0x107]);
                assert_eq!(iidr, 0x108);
                assert_eq!(aidr, 0x109);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn short_blob_is_an_error_not_a_panic() {
        let buf = [0u8; HW_INFO_BUF_LEN];
        assert!(HwInfo::decode(2, 39, &buf, 0, 0).is_err());
        assert!(HwInfo::decode(1, 8, &buf, 0, 0).is_err());
        assert!(HwInfo::decode(4, 0, &buf, 0, 0).is_err());
        // Reported length larger than the buffer is clamped to the buffer.
        assert!(HwInfo::decode(2, u32::MAX, &buf[..16], 0, 0).is_err());
    }

    #[test]
    fn unknown_type_keeps_bytes() {
        let buf = [7u8; 12];
        let info = HwInfo::decode(77, 8, &buf, 0, 5).unwrap();
        assert_eq!(
            info.data,
            HwInfoData::Raw {
                data_type: 77,
                bytes: vec![7; 8]
            }
        );
        assert_eq!(info.max_pasid_log2, 5);
    }
}
