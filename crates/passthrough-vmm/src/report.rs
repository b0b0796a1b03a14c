// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! How a run ended, the VMM's exit status, and the report (JSON and a readable summary).
//!
//! Exit status ([`GuestExit::exit_code`]):
//!
//! | how the guest stopped | status |
//! |---|---|
//! | PSCI SYSTEM_OFF (`KVM_SYSTEM_EVENT_SHUTDOWN`) after `@@VMM status N` | N |
//! | PSCI SYSTEM_OFF with no status line | 3 ([`EXIT_NO_STATUS`]) |
//! | PSCI SYSTEM_RESET (`KVM_SYSTEM_EVENT_RESET`), e.g. a panic with `panic=-1` | 4 ([`EXIT_RESET`]) |
//! | any other exit, or a VMM/KVM error | 1 ([`EXIT_ERROR`]) |
//!
//! A guest status of 1 or 2 cannot be told from a VMM error or a usage error by the status
//! alone; the report's `exit.reason` tells them apart.

use std::fmt::Write as _;

use serde::Serialize;

use crate::boot::BootPlan;
use crate::console::{Collected, FrameError, GuestResult};
use crate::layout::{MemoryLayout, RegionKind};
use crate::mmio::MmioStats;

/// Status when the guest powered off without a `@@VMM status` line.
pub const EXIT_NO_STATUS: u8 = 3;
/// Status when the guest reset.
pub const EXIT_RESET: u8 = 4;
/// Status on a VMM or KVM error, or an exit the VMM does not handle.
pub const EXIT_ERROR: u8 = 1;
/// Status on a usage error, or when the VMM does not run on this architecture.
pub const EXIT_USAGE: u8 = 2;

/// How the guest stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", content = "detail", rename_all = "kebab-case")]
pub enum GuestExit {
    /// PSCI SYSTEM_OFF.
    Shutdown,
    /// PSCI SYSTEM_RESET.
    Reset,
    /// Anything else: an unexpected exit or an error, described.
    Error(String),
}

impl GuestExit {
    /// The VMM's exit status for this exit and the guest's last reported status.
    pub fn exit_code(&self, guest_status: Option<u8>) -> u8 {
        match self {
            GuestExit::Shutdown => guest_status.unwrap_or(EXIT_NO_STATUS),
            GuestExit::Reset => EXIT_RESET,
            GuestExit::Error(_) => EXIT_ERROR,
        }
    }
}

/// One row of the memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MapEntry {
    /// What it is.
    pub kind: RegionKind,
    /// Base address.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

/// The exit section of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExitSummary {
    /// How the guest stopped.
    #[serde(flatten)]
    pub exit: GuestExit,
    /// The last `@@VMM status` the guest printed.
    pub guest_status: Option<u8>,
    /// The VMM's exit status.
    pub exit_code: u8,
}

/// Console counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConsoleSummary {
    /// Bytes the guest wrote.
    pub bytes: u64,
    /// Lines the guest wrote.
    pub lines: u64,
    /// Lines cut at the length limit.
    pub truncated_lines: u64,
    /// Results beyond the limit, dropped.
    pub results_dropped: u64,
    /// Malformed or unknown `@@VMM` lines.
    pub frame_errors: Vec<FrameError>,
}

/// Times from VMM start, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Timings {
    /// VM created, images loaded, vCPUs about to run.
    pub setup_ms: f64,
    /// First byte on the console.
    pub first_output_ms: Option<f64>,
    /// Guest stopped.
    pub total_ms: f64,
}

/// Everything the VMM reports about a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `passthrough-vmm <version>`.
    pub vmm: String,
    /// Kernel path.
    pub kernel: String,
    /// Initramfs path.
    pub initrd: Option<String>,
    /// Kernel command line.
    pub cmdline: String,
    /// vCPUs.
    pub vcpus: u32,
    /// The memory map, in address order.
    pub memory_map: Vec<MapEntry>,
    /// vITS base.
    pub its_base: u64,
    /// `GITS_TRANSLATER`, the MSI doorbell address.
    pub its_doorbell: u64,
    /// Where the kernel, initramfs and DTB went (absent if the VM never got that far).
    pub boot: Option<BootPlan>,
    /// How it ended.
    pub exit: ExitSummary,
    /// The `@@VMM result` lines.
    pub results: Vec<GuestResult>,
    /// Console counters.
    pub console: ConsoleSummary,
    /// MMIO dispatch counters.
    pub mmio: MmioStats,
    /// Timings.
    pub timings: Timings,
    /// The passed-through device, with `--device`.
    pub passthrough: Option<crate::passthrough::PassthroughReport>,
    /// Isolation and bookkeeping measured over the run (issue 18).
    pub reliability: Option<crate::reliability::ReliabilityReport>,
    /// The vgic-its model checked against the in-kernel vITS (`--its-check on`, issue 17).
    pub its: Option<crate::its_check::ItsReport>,
    /// RISC-V: the vIMSIC and KVM's AIA device (`its_base` and `its_doorbell` are then 0:
    /// there is no vITS).
    pub imsic: Option<ImsicSummary>,
}

/// The RISC-V guest's interrupt controllers, as KVM was given them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImsicSummary {
    /// KVM's AIA mode (`emulation`, `hwaccel` or `auto`).
    pub mode: String,
    /// Each vCPU's vIMSIC page (its supervisor-level interrupt file), by vCPU index, as read
    /// back from KVM (`KVM_DEV_RISCV_AIA_GRP_ADDR`).
    pub pages: Vec<u64>,
    /// `riscv,num-ids`.
    pub ids: u32,
    /// The APLIC's base.
    pub aplic: u64,
}

impl Report {
    /// Builds the report from the pieces of a run.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: &crate::cli::VmmConfig,
        layout: &MemoryLayout,
        boot: Option<BootPlan>,
        exit: GuestExit,
        collected: Collected,
        mmio: MmioStats,
        timings: Timings,
    ) -> Self {
        let guest_status = collected.status;
        Report {
            vmm: format!("passthrough-vmm {}", env!("CARGO_PKG_VERSION")),
            kernel: cfg.kernel.display().to_string(),
            initrd: cfg.initrd.as_ref().map(|p| p.display().to_string()),
            cmdline: cfg.cmdline.clone(),
            vcpus: layout.cpus,
            memory_map: layout
                .regions()
                .into_iter()
                .map(|(kind, r)| MapEntry {
                    kind,
                    base: r.base,
                    size: r.size,
                })
                .collect(),
            its_base: layout.its.base,
            its_doorbell: layout.its_doorbell(),
            boot,
            exit: ExitSummary {
                exit_code: exit.exit_code(guest_status),
                exit,
                guest_status,
            },
            results: collected.results,
            console: ConsoleSummary {
                bytes: collected.bytes,
                lines: collected.lines,
                truncated_lines: collected.truncated_lines,
                results_dropped: collected.results_dropped,
                frame_errors: collected.frame_errors,
            },
            mmio,
            timings,
            passthrough: None,
            reliability: None,
            its: None,
            imsic: None,
        }
    }

    /// The report of a RISC-V run: the map is `layout`'s, the interrupt controllers are in
    /// `imsic`, `its_base` and `its_doorbell` are 0.
    #[allow(clippy::too_many_arguments)]
    pub fn new_riscv(
        cfg: &crate::cli::VmmConfig,
        layout: &crate::layout_riscv::RiscvLayout,
        boot: Option<BootPlan>,
        exit: GuestExit,
        collected: Collected,
        mmio: MmioStats,
        timings: Timings,
    ) -> Self {
        let mut arm = MemoryLayout::new(layout.cpus, layout.ram.size);
        arm.ram = layout.ram;
        let mut r = Report::new(cfg, &arm, boot, exit, collected, mmio, timings);
        r.memory_map = layout
            .regions()
            .into_iter()
            .map(|(kind, r)| MapEntry {
                kind,
                base: r.base,
                size: r.size,
            })
            .collect();
        r.its_base = 0;
        r.its_doorbell = 0;
        r
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// A readable summary for stderr.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{}: {} vCPU(s)", self.vmm, self.vcpus);
        let _ = writeln!(s, "memory map:");
        for e in &self.memory_map {
            let _ = writeln!(
                s,
                "  {:#012x}..{:#012x}  {}",
                e.base,
                e.base.saturating_add(e.size),
                e.kind
            );
        }
        match &self.imsic {
            Some(i) => {
                let pages: Vec<String> = i.pages.iter().map(|p| format!("{p:#x}")).collect();
                let _ = writeln!(
                    s,
                    "vIMSIC (AIA {}, {} identities) pages {}, APLIC at {:#x}",
                    i.mode,
                    i.ids,
                    pages.join(" "),
                    i.aplic
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "vITS at {:#x}, GITS_TRANSLATER (MSI doorbell) at {:#x}",
                    self.its_base, self.its_doorbell
                );
            }
        }
        let how = match &self.exit.exit {
            GuestExit::Shutdown => "guest powered off".to_owned(),
            GuestExit::Reset => "guest reset".to_owned(),
            GuestExit::Error(e) => format!("error: {e}"),
        };
        let status = match self.exit.guest_status {
            Some(n) => format!("guest status {n}"),
            None => "no guest status".to_owned(),
        };
        if let Some(p) = &self.passthrough {
            s.push_str(&p.summary());
        }
        if let Some(its) = &self.its {
            s.push_str(&its.summary());
        }
        let _ = writeln!(
            s,
            "exit: {how}, {status}, exit code {}",
            self.exit.exit_code
        );
        let first = self
            .timings
            .first_output_ms
            .map(|t| format!("{t:.0} ms"))
            .unwrap_or_else(|| "never".to_owned());
        let _ = writeln!(
            s,
            "time: setup {:.0} ms, first console output {first}, total {:.0} ms",
            self.timings.setup_ms, self.timings.total_ms
        );
        let _ = writeln!(
            s,
            "console: {} bytes, {} lines; MMIO: {} reads, {} writes, {} unmapped, {} malformed",
            self.console.bytes,
            self.console.lines,
            self.mmio.reads,
            self.mmio.writes,
            self.mmio.unmapped,
            self.mmio.malformed
        );
        for r in &self.results {
            let text = match r {
                GuestResult::Json(v) => v.to_string(),
                GuestResult::Text(t) => t.clone(),
            };
            let _ = writeln!(s, "result: {text}");
        }
        for e in &self.console.frame_errors {
            let _ = writeln!(s, "bad frame ({}): {}", e.reason, e.line);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::VmmConfig;
    use crate::console::ConsoleFramer;

    #[test]
    fn exit_codes() {
        assert_eq!(GuestExit::Shutdown.exit_code(Some(0)), 0);
        assert_eq!(GuestExit::Shutdown.exit_code(Some(42)), 42);
        assert_eq!(GuestExit::Shutdown.exit_code(None), EXIT_NO_STATUS);
        assert_eq!(GuestExit::Reset.exit_code(Some(0)), EXIT_RESET);
        assert_eq!(GuestExit::Error("x".into()).exit_code(Some(0)), EXIT_ERROR);
    }

    #[test]
    fn report_json_has_the_promised_fields() {
        let cfg = VmmConfig::new("/k");
        let layout = cfg.layout().unwrap();
        let mut c = ConsoleFramer::new();
        c.push_bytes(b"@@VMM result {\"x\":1}\n@@VMM status 0\n@@VMM bogus\n");
        let r = Report::new(
            &cfg,
            &layout,
            None,
            GuestExit::Shutdown,
            c.collected().clone(),
            MmioStats::default(),
            Timings {
                setup_ms: 1.0,
                first_output_ms: Some(2.0),
                total_ms: 3.0,
            },
        );
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["exit"]["reason"], "shutdown");
        assert_eq!(v["exit"]["guest_status"], 0);
        assert_eq!(v["exit"]["exit_code"], 0);
        assert_eq!(v["its_base"], 0x07ff_0000);
        assert_eq!(v["its_doorbell"], 0x0800_0040);
        assert_eq!(v["results"][0]["x"], 1);
        assert_eq!(v["memory_map"].as_array().unwrap().len(), 7);
        assert_eq!(v["memory_map"][0]["kind"], "gic-distributor");
        assert_eq!(
            v["console"]["frame_errors"][0]["reason"],
            "unknown frame kind"
        );
        assert!(v["timings"]["total_ms"].is_number());
        let e = serde_json::to_value(GuestExit::Error("KVM_RUN: EFAULT".into())).unwrap();
        assert_eq!(
            e,
            serde_json::json!({"reason": "error", "detail": "KVM_RUN: EFAULT"})
        );
        let s = r.summary();
        assert!(
            s.contains("GITS_TRANSLATER (MSI doorbell) at 0x8000040"),
            "{s}"
        );
        assert!(s.contains("exit code 0"), "{s}");
        assert!(s.contains("result: {\"x\":1}"), "{s}");
    }
}
