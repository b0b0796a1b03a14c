// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Boots the test VM with an empty plan (both NICs bound to vfio-pci) and prints how long
//! it took: the figure of the bare tier, without tests.
//!
//! ```text
//! TESTHOST_KERNEL=../shared/kernel/Image-arm64 cargo run -p testhost --release --example boot_time
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use testhost::cli::DEFAULT_CACHE;
use testhost::host::TestHost;

fn main() -> ExitCode {
    let Some(kernel) = std::env::var_os("TESTHOST_KERNEL") else {
        eprintln!("boot_time: set TESTHOST_KERNEL to an arm64 Image");
        return ExitCode::from(2);
    };
    let cache = std::env::var_os("TESTHOST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE));
    let run_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/testhost/boot-time");
    let host = TestHost::new(kernel, cache.join("busybox/bin/busybox"), run_dir);
    match host.run() {
        Ok(outcome) => {
            println!(
                "boot_time: VM wall {:.2} s, guest uptime at DONE {}",
                outcome.exit.elapsed.as_secs_f64(),
                outcome
                    .report
                    .done_uptime
                    .map_or("(none)".to_owned(), |u| format!("{u:.2} s")),
            );
            for f in outcome.failures() {
                println!("boot_time: {f}");
            }
            if outcome.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("boot_time: {e}");
            ExitCode::FAILURE
        }
    }
}
