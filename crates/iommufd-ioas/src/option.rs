// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `IOMMU_OPTION`: get and set simple options on the iommufd or on one of its objects.

use iommufd_bindings::iommufd::{
    iommufd_option_IOMMU_OPTION_HUGE_PAGES, iommufd_option_IOMMU_OPTION_RLIMIT_MODE,
    iommufd_option_ops_IOMMU_OPTION_OP_GET, iommufd_option_ops_IOMMU_OPTION_OP_SET,
};

use crate::proposed;

/// An option of `IOMMU_OPTION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IommuOption {
    /// `IOMMU_OPTION_RLIMIT_MODE` (0): global (object 0); 0 = per-user, 1 = per-process
    /// `RLIMIT_MEMLOCK` accounting. Setting it needs `CAP_SYS_RESOURCE`.
    RlimitMode,
    /// `IOMMU_OPTION_HUGE_PAGES` (1): per IOAS; 1 (default) lets contiguous pages be combined
    /// into large IOMMU mappings, 0 maps everything at `PAGE_SIZE`.
    HugePages,
    /// `IOMMU_OPTION_SW_MSI_START` (2), **not upstream**: per device (object = iommufd device
    /// ID); the IOVA of the device's software MSI window. See [`crate::proposed`].
    SwMsiStart,
    /// `IOMMU_OPTION_SW_MSI_SIZE` (3), **not upstream**: per device; the window size in MiB.
    /// See [`crate::proposed`].
    SwMsiSize,
    /// Any other option number, passed through unchanged.
    Other(u32),
}

impl IommuOption {
    /// The `option_id` value of the uapi.
    pub fn id(self) -> u32 {
        match self {
            IommuOption::RlimitMode => iommufd_option_IOMMU_OPTION_RLIMIT_MODE,
            IommuOption::HugePages => iommufd_option_IOMMU_OPTION_HUGE_PAGES,
            IommuOption::SwMsiStart => proposed::IOMMU_OPTION_SW_MSI_START,
            IommuOption::SwMsiSize => proposed::IOMMU_OPTION_SW_MSI_SIZE,
            IommuOption::Other(id) => id,
        }
    }

    /// The option for an `option_id` value.
    pub fn from_id(id: u32) -> Self {
        match id {
            x if x == iommufd_option_IOMMU_OPTION_RLIMIT_MODE => IommuOption::RlimitMode,
            x if x == iommufd_option_IOMMU_OPTION_HUGE_PAGES => IommuOption::HugePages,
            proposed::IOMMU_OPTION_SW_MSI_START => IommuOption::SwMsiStart,
            proposed::IOMMU_OPTION_SW_MSI_SIZE => IommuOption::SwMsiSize,
            other => IommuOption::Other(other),
        }
    }
}

impl std::fmt::Display for IommuOption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IommuOption::RlimitMode => f.write_str("IOMMU_OPTION_RLIMIT_MODE"),
            IommuOption::HugePages => f.write_str("IOMMU_OPTION_HUGE_PAGES"),
            IommuOption::SwMsiStart => f.write_str("IOMMU_OPTION_SW_MSI_START"),
            IommuOption::SwMsiSize => f.write_str("IOMMU_OPTION_SW_MSI_SIZE"),
            IommuOption::Other(id) => write!(f, "{id}"),
        }
    }
}

/// The two operations of `IOMMU_OPTION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OptionOp {
    Get,
    Set(u64),
}

impl OptionOp {
    pub(crate) fn raw(self) -> u16 {
        match self {
            OptionOp::Get => iommufd_option_ops_IOMMU_OPTION_OP_GET as u16,
            OptionOp::Set(_) => iommufd_option_ops_IOMMU_OPTION_OP_SET as u16,
        }
    }

    pub(crate) fn describe(self) -> String {
        match self {
            OptionOp::Get => "get".to_string(),
            OptionOp::Set(v) => format!("set {v:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_ids_match_uapi() {
        assert_eq!(IommuOption::RlimitMode.id(), 0);
        assert_eq!(IommuOption::HugePages.id(), 1);
        assert_eq!(IommuOption::SwMsiStart.id(), 2);
        assert_eq!(IommuOption::SwMsiSize.id(), 3);
        for id in 0..8 {
            assert_eq!(IommuOption::from_id(id).id(), id);
        }
        assert_eq!(OptionOp::Set(1).raw(), 0);
        assert_eq!(OptionOp::Get.raw(), 1);
    }

    #[test]
    fn names() {
        assert_eq!(
            IommuOption::HugePages.to_string(),
            "IOMMU_OPTION_HUGE_PAGES"
        );
        assert_eq!(IommuOption::Other(9).to_string(), "9");
    }
}
