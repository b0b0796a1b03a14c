// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The human-readable and machine-readable report of a plan.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An inclusive address range, as it appears in a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReportRange {
    /// First address.
    pub start: u64,
    /// Last address (inclusive).
    pub last: u64,
}

impl From<hw_defs::iova::IovaRange> for ReportRange {
    fn from(r: hw_defs::iova::IovaRange) -> Self {
        ReportRange {
            start: r.start,
            last: r.last,
        }
    }
}

impl fmt::Display for ReportRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}-{:#x}", self.start, self.last)
    }
}

/// The software MSI window the VMM must set before attach (strategy 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReportWindow {
    /// `IOMMU_OPTION_SW_MSI_START`.
    pub start: u64,
    /// `IOMMU_OPTION_SW_MSI_SIZE`, in MiB.
    pub size_mib: u64,
}

/// What a plan decided, why, and what the VMM must verify at run time.
///
/// `Display` gives a readable summary for logs; serde gives the same content for a VMM's
/// JSON report.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Report {
    /// The interrupt controller (`"GICv3 ITS"`, `"RISC-V IMSIC"`).
    pub controller: String,
    /// The strategy (`"user-window"`, `"kernel-window"`, `"imsic-msi-page-table"`).
    pub strategy: String,
    /// The controller frame in guest physical space.
    pub controller_frame: ReportRange,
    /// The address the guest programs (without a vIOMMU) or maps its gIOVA to (with one).
    pub doorbell_gpa: u64,
    /// The software MSI window the plan relies on, if any.
    pub msi_window: Option<ReportRange>,
    /// The window to set before attach (strategy 1 only).
    pub set_window: Option<ReportWindow>,
    /// The write-through policy (`DoorbellPolicy` name).
    pub write_through: String,
    /// For `KernelProgrammed`: the address the kernel programs into the device.
    pub kernel_doorbell_iova: Option<u64>,
    /// The doorbell page index assumed (Arm only).
    pub pgoff: Option<u32>,
    /// The host page size.
    pub page_size: u64,
    /// Why this strategy and this placement.
    pub why: Vec<String>,
    /// What the VMM must verify at run time, in order.
    pub verify: Vec<String>,
    /// Inputs the planner ignored or treated conservatively, and limits of the plan.
    pub notes: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "doorbell plan: {} for a {}",
            self.strategy, self.controller
        )?;
        writeln!(f, "  controller frame: {}", self.controller_frame)?;
        writeln!(f, "  doorbell GPA:     {:#x}", self.doorbell_gpa)?;
        if let Some(w) = &self.msi_window {
            writeln!(f, "  MSI window:       {w}")?;
        }
        if let Some(w) = &self.set_window {
            writeln!(
                f,
                "  set before attach: IOMMU_OPTION_SW_MSI_START = {:#x}, SW_MSI_SIZE = {} MiB",
                w.start, w.size_mib
            )?;
        }
        write!(f, "  write-through:    {}", self.write_through)?;
        if let Some(iova) = self.kernel_doorbell_iova {
            write!(f, " (kernel programs {iova:#x})")?;
        } else if self.write_through == "KernelProgrammedWindow" {
            write!(
                f,
                " (kernel programs the target host hart's page of the window)"
            )?;
        }
        writeln!(f)?;
        if let Some(pgoff) = self.pgoff {
            writeln!(
                f,
                "  assumption:       doorbell page index {pgoff} with {:#x}-byte pages",
                self.page_size
            )?;
        }
        for (title, lines) in [
            ("why", &self.why),
            ("verify at run time", &self.verify),
            ("notes", &self.notes),
        ] {
            if lines.is_empty() {
                continue;
            }
            writeln!(f, "{title}:")?;
            for line in lines {
                writeln!(f, "  - {line}")?;
            }
        }
        Ok(())
    }
}
