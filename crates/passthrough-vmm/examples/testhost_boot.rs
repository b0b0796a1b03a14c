// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Runs this crate's in-guest tests in the QEMU test host, with what they need in the L1
//! initramfs: the cross-built `passthrough-vmm` binary at `/testhost/vmm/passthrough-vmm`
//! and the L2 kernel at `/testhost/vmm/Image` (busybox is always there).
//!
//! ```text
//! cargo run -p passthrough-vmm --example testhost_boot -- [KERNEL] [BUSYBOX]
//! ```
//!
//! Defaults: `$TESTHOST_KERNEL` or `/work/shared/kernel/Image-arm64` (booted as L1 and as
//! L2), and `/var/cache/passthrough-testhost/busybox/bin/busybox` (`testhost setup`). Files
//! go to `<workspace>/target/testhost/passthrough-vmm`. Prints each result and closes with
//! `testhost: N passed, M failed`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use testhost::cross::CrossBuild;
use testhost::host::TestHost;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("testhost_boot: {e}");
            println!("testhost: 0 passed, 1 failed");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool, testhost::Error> {
    let mut args = std::env::args().skip(1);
    let kernel = args
        .next()
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("TESTHOST_KERNEL").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/work/shared/kernel/Image-arm64"));
    let busybox = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/passthrough-testhost/busybox/bin/busybox"));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let workspace = workspace.canonicalize().unwrap_or(workspace);

    let cross = CrossBuild::new(&workspace);
    eprintln!("testhost_boot: cross-building passthrough-vmm and its tests");
    let vmm = cross.build_bins("passthrough-vmm", &["passthrough-vmm".to_owned()])?;
    let tests = cross.build_tests(&["passthrough-vmm".to_owned()])?;

    let run_dir = workspace.join("target/testhost/passthrough-vmm");
    let mut host = TestHost::new(&kernel, &busybox, &run_dir);
    host.nics(0)
        .bind([])
        .cpus(2)
        .memory_mib(2048)
        .timeout(Duration::from_secs(600));
    host.files()
        .dir("/testhost/vmm", 0o755)?
        .host_file("/testhost/vmm/passthrough-vmm", 0o755, &vmm[0].executable)?
        .host_file("/testhost/vmm/Image", 0o644, &kernel)?;
    for t in tests.iter().filter(|t| t.target == "in_guest") {
        host.test_binary(&t.suite_name(), &t.executable)?;
    }
    eprintln!("testhost_boot: booting {}", kernel.display());
    let outcome = host.run()?;
    let mut out = std::io::stdout();
    testhost::cli::print_outcome(&outcome, &mut out).map_err(|source| testhost::Error::Io {
        op: "write",
        path: PathBuf::from("stdout"),
        source,
    })?;
    println!(
        "testhost: VM ran {:.1} s{}",
        outcome.exit.elapsed.as_secs_f64(),
        outcome
            .report
            .done_uptime
            .map(|u| format!(" (L1 uptime at DONE {u:.1} s)"))
            .unwrap_or_default()
    );
    println!("testhost: {}", outcome.tally());
    Ok(outcome.success())
}
