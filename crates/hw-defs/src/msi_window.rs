// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The software MSI window of a device (`IOMMU_RESV_SW_MSI`, and the proposed
//! `IOMMU_OPTION_SW_MSI_START`/`SIZE` that let userspace place it): where the kernel maps the
//! physical MSI doorbell in the device's IO page tables.

/// Where Linux's Arm SMMU drivers put the software MSI window (`MSI_IOVA_BASE`).
pub const LINUX_MSI_IOVA_BASE: u64 = 0x800_0000;
/// Its length (`MSI_IOVA_LENGTH`, 1 MiB).
pub const LINUX_MSI_IOVA_LENGTH: u64 = 0x10_0000;
/// The alignment the proposed UAPI requires of a software MSI window start.
pub const SW_MSI_ALIGN: u64 = 1 << 20;

/// The effective software MSI window of a device, as the proposed options report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwMsiWindow {
    /// The first IOVA of the window.
    pub start: u64,
    /// The window size in MiB.
    pub size_mib: u64,
}

impl SwMsiWindow {
    /// Validates a window before it is handed to the kernel: the start 1 MiB aligned, the
    /// size at least 1 MiB and the end representable.
    pub fn new(start: u64, size_mib: u64) -> Result<Self, String> {
        if !start.is_multiple_of(SW_MSI_ALIGN) {
            return Err(format!("window start {start:#x} is not 1 MiB aligned"));
        }
        if size_mib == 0 {
            return Err("window size is 0 MiB".to_string());
        }
        size_mib
            .checked_mul(SW_MSI_ALIGN)
            .and_then(|len| start.checked_add(len - 1))
            .ok_or_else(|| format!("window {start:#x} + {size_mib} MiB overflows"))?;
        Ok(SwMsiWindow { start, size_mib })
    }

    /// The window as an IOVA range.
    pub fn range(&self) -> crate::iova::IovaRange {
        // `new` checked that the end does not overflow; values read back from a kernel are
        // clamped rather than trusted.
        let len = self.size_mib.saturating_mul(SW_MSI_ALIGN).max(1);
        crate::iova::IovaRange {
            start: self.start,
            last: self.start.saturating_add(len - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_validation() {
        assert!(SwMsiWindow::new(LINUX_MSI_IOVA_BASE, 1).is_ok());
        assert!(SwMsiWindow::new(0x800_1000, 1).is_err());
        assert!(SwMsiWindow::new(0x800_0000, 0).is_err());
        assert!(SwMsiWindow::new(u64::MAX - (1 << 20) + 1, 2).is_err());
        let w = SwMsiWindow::new(0x4000_0000, 2).unwrap();
        assert_eq!(w.range().start, 0x4000_0000);
        assert_eq!(w.range().last, 0x401f_ffff);
    }
}
