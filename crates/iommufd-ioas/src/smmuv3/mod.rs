// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The ARM SMMUv3 side of iommufd nesting: the driver-specific data that crosses the UAPI,
//! typed and checked before any ioctl is issued.
//!
//! - [`SmmuV3Idr`]: the host SMMU's ID registers as `IOMMU_GET_HW_INFO` returns them
//!   (`struct iommu_hw_info_arm_smmuv3`), decoded into the features that decide whether, and
//!   how, a guest can be given a stage 1 (Arm IHI 0070 6.3.1-6.3.6).
//! - [`VSte`]: the guest's Stream Table Entry as `IOMMU_HWPT_ALLOC` takes it for a nested
//!   HWPT (`struct iommu_hwpt_arm_smmuv3`), restricted to the fields the kernel lets a guest
//!   control (IHI 0070 5.2).
//! - [`SmmuV3Command`]: the invalidation commands `IOMMU_HWPT_INVALIDATE` forwards from a
//!   vIOMMU (`struct iommu_viommu_arm_smmuv3_invalidate`, IHI 0070 4.x).
//! - [`SmmuV3Event`]: the event records a vEVENTQ delivers (`struct iommu_vevent_arm_smmuv3`,
//!   IHI 0070 7.3), with the virtual StreamID.
//!
//! Everything here is plain data, tested without a kernel.

mod cmd;
mod event;
mod idr;
mod vste;

pub use cmd::{CommandError, SmmuV3Command, is_forwarded, opcode};
pub use event::{SmmuV3Event, event_id};
pub use idr::{Granules, NestingUnsupported, SmmuV3Idr, StallModel};
pub use vste::{StreamConfig, VSte, VSteError};

/// `IOMMU_HWPT_DATA_ARM_SMMUV3`: the data type of a nested HWPT allocated from a guest STE
/// (for [`crate::Hwpt::alloc_nested`] with raw bytes; [`crate::Hwpt::alloc_nested_smmuv3`]
/// passes it itself).
pub const HWPT_DATA_TYPE: u32 =
    iommufd_bindings::iommufd::iommu_hwpt_data_type_IOMMU_HWPT_DATA_ARM_SMMUV3;

/// Extracts bits `hi..=lo` of `v`.
pub(crate) const fn bits(v: u64, hi: u32, lo: u32) -> u64 {
    (v >> lo) & (u64::MAX >> (63 - (hi - lo)))
}

/// Places `v` into bits `hi..=lo` (bits of `v` beyond the field are dropped).
pub(crate) const fn field(v: u64, hi: u32, lo: u32) -> u64 {
    (v & (u64::MAX >> (63 - (hi - lo)))) << lo
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_helpers() {
        assert_eq!(bits(0xf0, 7, 4), 0xf);
        assert_eq!(bits(u64::MAX, 63, 0), u64::MAX);
        assert_eq!(bits(1 << 63, 63, 63), 1);
        assert_eq!(field(0x1f, 3, 1), 0b1110);
        assert_eq!(field(u64::MAX, 63, 48), 0xffff << 48);
    }
}
