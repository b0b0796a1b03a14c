// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `passthrough-vmm`: boots an arm64 or riscv64 Linux guest under KVM. See `--help` and the crate
//! README. The exit status is the guest's (see `passthrough_vmm::report`).

use std::process::ExitCode;

use passthrough_vmm::cli::{Command, USAGE, VmmConfig, parse_args};
use passthrough_vmm::report::EXIT_USAGE;

/// A logger to stderr; the level comes from `PASSTHROUGH_VMM_LOG` (error, warn, info,
/// debug, trace; default warn).
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!("passthrough-vmm: {}: {}", record.level(), record.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

fn init_logging() {
    let level = std::env::var("PASSTHROUGH_VMM_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(log::LevelFilter::Warn);
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}

fn main() -> ExitCode {
    init_logging();
    let cfg = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(cfg)) => cfg,
        Err(e) => {
            eprintln!("passthrough-vmm: {e}\n\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    run(&cfg)
}

#[cfg(target_arch = "aarch64")]
fn run(cfg: &VmmConfig) -> ExitCode {
    let report = passthrough_vmm::vm::run(cfg);
    eprint!("{}", report.summary());
    if let Some(path) = &cfg.report
        && let Err(e) = std::fs::write(path, report.to_json())
    {
        eprintln!(
            "passthrough-vmm: writing the report to {}: {e}",
            path.display()
        );
        return ExitCode::from(passthrough_vmm::report::EXIT_ERROR);
    }
    ExitCode::from(report.exit.exit_code)
}

#[cfg(target_arch = "riscv64")]
fn run(cfg: &VmmConfig) -> ExitCode {
    let report = passthrough_vmm::vm_riscv::run(cfg);
    eprint!("{}", report.summary());
    if let Some(path) = &cfg.report
        && let Err(e) = std::fs::write(path, report.to_json())
    {
        eprintln!(
            "passthrough-vmm: writing the report to {}: {e}",
            path.display()
        );
        return ExitCode::from(passthrough_vmm::report::EXIT_ERROR);
    }
    ExitCode::from(report.exit.exit_code)
}

#[cfg(not(any(target_arch = "aarch64", target_arch = "riscv64")))]
fn run(_cfg: &VmmConfig) -> ExitCode {
    eprintln!(
        "passthrough-vmm: the VMM runs on aarch64 and riscv64 only (this is {})",
        std::env::consts::ARCH
    );
    ExitCode::from(EXIT_USAGE)
}
