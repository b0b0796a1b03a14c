// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Runs this crate's in-guest tests in the QEMU test host, with what they need in the L1
//! initramfs: the cross-built `passthrough-vmm` binary at `/testhost/vmm/passthrough-vmm`
//! and the L2 kernel at `/testhost/vmm/Image` (busybox is always there).
//!
//! ```text
//! cargo run -p passthrough-vmm --example testhost_boot -- [--boot-only] [KERNEL] [BUSYBOX]
//! ```
//!
//! After the tests (all of them skipped with `--boot-only`), the plan boots L2 once with
//! one vCPU and once with two, one at a time, and prints their reports: the boot-time
//! figures of the README. `PASSTHROUGH_VMM_LOG` (e.g. `info`) is passed to those boots.
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
use testhost::initramfs::Initramfs;
use testhost::plan::PlanStep;

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

/// The L2 `/init` the in-guest tests use.
const L2_INIT: &str = include_str!("../tests/l2/init.sh");

fn run() -> Result<bool, testhost::Error> {
    let mut args = std::env::args().skip(1).peekable();
    let boot_only = args.next_if(|a| a == "--boot-only").is_some();
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
    if !boot_only {
        for t in &tests {
            host.test_binary(&t.suite_name(), &t.executable)?;
        }
    }
    // Then single boots, one at a time, for the boot-time figures, with an L2 initramfs
    // packed here from the same /init the tests use. The VMM's summary goes to the L1
    // console (console.log), its report to this run's output.
    let l2 = run_dir.join("l2-initramfs.cpio");
    let mut l2_fs = Initramfs::new();
    for dir in ["/bin", "/dev", "/proc", "/sys"] {
        l2_fs.dir(dir, 0o755)?;
    }
    l2_fs
        .host_file("/bin/busybox", 0o755, &busybox)?
        .bytes("/init", 0o755, L2_INIT.as_bytes().to_vec())?
        .char_device("/dev/console", 0o600, 5, 1)?;
    std::fs::create_dir_all(&run_dir).map_err(|source| testhost::Error::Io {
        op: "create",
        path: run_dir.clone(),
        source,
    })?;
    l2_fs.write_file(&l2)?;
    host.files()
        .host_file("/testhost/vmm/l2.cpio", 0o644, &l2)?;
    let log = std::env::var("PASSTHROUGH_VMM_LOG").unwrap_or_else(|_| "warn".to_owned());
    for cpus in ["1", "2"] {
        let report = format!("/tmp/boot-time-{cpus}.json");
        host.step(
            PlanStep::lines(
                format!("passthrough-vmm/boot-{cpus}cpu"),
                "/testhost/vmm/passthrough-vmm",
            )
            .args(["--kernel", "/testhost/vmm/Image"])
            .args(["--initrd", "/testhost/vmm/l2.cpio"])
            .args(["--mem", "256", "--cpus", cpus, "--report", &report])
            .args([
                "--cmdline",
                "console=ttyS0 earlycon panic=-1 quiet vmmtest=ok",
            ])
            .env("PASSTHROUGH_VMM_LOG", log.clone()),
        );
        host.step(
            PlanStep::lines(format!("passthrough-vmm/report-{cpus}cpu"), "/bin/cat").arg(report),
        );
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
