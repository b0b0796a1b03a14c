// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The end-to-end passthrough run in the QEMU test host, and the project's demo.
//!
//! ```text
//! cargo run -p passthrough-vmm --example testhost_e2e -- [--demo] [--viommu] [--soak N] [--only SUITE] [--kernel IMAGE] [--busybox PATH]
//! ```
//!
//! Cross-builds `passthrough-vmm` and this crate's tests, packs an L2 initramfs (busybox and
//! `tests/l2/e2e-init.sh`), and boots L1 (QEMU TCG aarch64, SMMUv3, GICv3 ITS, KVM) with two
//! igb NICs on one QEMU hub, NIC 1 bound to vfio-pci. In L1 it runs this crate's in-guest
//! tests, among them `tests/e2e.rs`: the VMM boots L2 with NIC 1 passed through, twice.
//! With `--demo` only the end-to-end test runs. Either way the readable report of each
//! end-to-end run is printed, then every in-guest result and `testhost: N passed, M failed`.
//!
//! The kernel (booted as L1 and as L2): `--kernel`, else `$TESTHOST_KERNEL`, else
//! `../shared/kernel/Image-arm64` beside the repository. `$TESTHOST_KERNEL_VARIANT` (`upstream`,
//! the default, or `patched`) says which UAPI the kernel has and is passed to the tests; with
//! `patched` and no kernel given, the project's recipe (`tests/testhost/kernel`, patches
//! applied) is built once per machine and cached. Busybox from `testhost setup`'s cache.
//! Files go to `<workspace>/target/testhost/e2e[-viommu][-patched]`.
//!
//! `--viommu`: the run with a virtual SMMUv3 in L2 (`tests/e2e.rs`,
//! `viommu_end_to_end_without_rmr`, and its negative control). L1 boots with the test-only
//! switch `arm_smmu_v3.viommu_assume_coherent=1` (that boot only) and `TESTHOST_VIOMMU=1`, on
//! the `viommu` kernel (`$TESTHOST_KERNEL`, else `../shared/kernel/Image-arm64-viommu`, else
//! the recipe's `viommu` variant) or, with `TESTHOST_KERNEL_VARIANT=patched`, the patched one.
//!
//! The reliability tests (`tests/reliability.rs`, issue 18) run in the plain boot and, the
//! vIOMMU one, in the `--viommu` boot; their L2 initramfs (`l2-hostile.cpio`: busybox,
//! `tests/l2/hostile-init.sh` and the cross-built `l2-hostile`) is packed here too.
//! `--soak N` runs only their soak: N full VMM runs in one L1 boot, figures after each.
//! `--only SUITE` runs only the in-guest suites whose name ends with SUITE.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use testhost::cross::CrossBuild;
use testhost::host::TestHost;
use testhost::initramfs::Initramfs;
use testhost::plan::PlanStep;

/// L2's `/init` for the end-to-end test.
const L2_E2E_INIT: &str = include_str!("../tests/l2/e2e-init.sh");
/// L2's `/init` for the reliability tests.
const L2_HOSTILE_INIT: &str = include_str!("../tests/l2/hostile-init.sh");

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("testhost_e2e: {e}");
            println!("testhost: 0 passed, 1 failed");
            ExitCode::FAILURE
        }
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> testhost::Error {
    let path = path.to_path_buf();
    move |source| testhost::Error::Io { op, path, source }
}

fn run() -> Result<bool, testhost::Error> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let workspace = workspace.canonicalize().unwrap_or(workspace);
    let mut demo = false;
    let mut viommu = false;
    let mut soak: Option<u32> = None;
    let mut only: Option<String> = None;
    let mut kernel = std::env::var_os("TESTHOST_KERNEL").map(PathBuf::from);
    let mut busybox = PathBuf::from("/var/cache/passthrough-testhost/busybox/bin/busybox");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--demo" => demo = true,
            "--viommu" => viommu = true,
            "--soak" => soak = args.next().and_then(|n| n.parse().ok()),
            "--only" => only = args.next(),
            "--kernel" => kernel = args.next().map(PathBuf::from),
            "--busybox" => busybox = args.next().map(PathBuf::from).unwrap_or(busybox),
            other => {
                return Err(testhost::Error::Config {
                    what: "argument",
                    reason: format!("unknown argument {other:?}"),
                });
            }
        }
    }
    let default_variant = if viommu { "viommu" } else { "upstream" };
    let variant =
        std::env::var("TESTHOST_KERNEL_VARIANT").unwrap_or_else(|_| default_variant.into());
    let cache = std::env::var_os("TESTHOST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(testhost::cli::DEFAULT_CACHE));
    let shared_viommu = workspace.join("../shared/kernel/Image-arm64-viommu");
    let kernel = match (kernel, variant.as_str()) {
        (Some(k), _) => k,
        (None, "viommu") if shared_viommu.is_file() => shared_viommu,
        (None, "patched" | "viommu") => {
            eprintln!("testhost_e2e: building (or reusing) the {variant} kernel of the recipe");
            let recipe = testhost::kernel::KernelRecipe::in_workspace(&workspace)
                .with_variant(variant.clone());
            testhost::kernel::resolve_kernel(None, &recipe, &cache)?
                .path()
                .to_path_buf()
        }
        (None, _) => {
            let shared = workspace.join("../shared/kernel/Image-arm64");
            if !shared.is_file() {
                return Err(testhost::Error::Config {
                    what: "kernel",
                    reason: "set TESTHOST_KERNEL or pass --kernel".to_owned(),
                });
            }
            shared
        }
    };

    let cross = CrossBuild::new(&workspace);
    eprintln!("testhost_e2e: cross-building passthrough-vmm and its tests");
    let bins = cross.build_bins(
        "passthrough-vmm",
        &["passthrough-vmm".to_owned(), "l2-hostile".to_owned()],
    )?;
    let bin = |name: &str| {
        bins.iter()
            .find(|a| a.target == name)
            .map(|a| a.executable.clone())
            .ok_or_else(|| testhost::Error::Config {
                what: "cross build",
                reason: format!("no {name} binary"),
            })
    };
    let (vmm, hostile) = (bin("passthrough-vmm")?, bin("l2-hostile")?);
    let tests = cross.build_tests(&["passthrough-vmm".to_owned()])?;

    let run_dir = workspace.join(format!(
        "target/testhost/e2e{}{}",
        if viommu { "-viommu" } else { "" },
        if variant == "patched" { "-patched" } else { "" }
    ));
    std::fs::create_dir_all(&run_dir).map_err(io_err("create", &run_dir))?;
    let l2 = run_dir.join("l2-e2e.cpio");
    let mut l2_fs = Initramfs::new();
    for dir in ["/bin", "/dev", "/proc", "/sys"] {
        l2_fs.dir(dir, 0o755)?;
    }
    l2_fs
        .host_file("/bin/busybox", 0o755, &busybox)?
        .bytes("/init", 0o755, L2_E2E_INIT.as_bytes().to_vec())?
        .char_device("/dev/console", 0o600, 5, 1)?;
    l2_fs.write_file(&l2)?;
    let l2_hostile = run_dir.join("l2-hostile.cpio");
    let mut fs = Initramfs::new();
    for dir in ["/bin", "/dev", "/proc", "/sys", "/tmp"] {
        fs.dir(dir, 0o755)?;
    }
    fs.host_file("/bin/busybox", 0o755, &busybox)?
        .host_file("/bin/l2-hostile", 0o755, &hostile)?
        .bytes("/init", 0o755, L2_HOSTILE_INIT.as_bytes().to_vec())?
        .char_device("/dev/console", 0o600, 5, 1)?;
    fs.write_file(&l2_hostile)?;

    let mut host = TestHost::new(&kernel, &busybox, &run_dir);
    host.nics(2)
        .bind([1])
        .cpus(2)
        .memory_mib(2048)
        .timeout(Duration::from_secs(if soak.is_some() { 2400 } else { 900 }));
    if viommu {
        // Only this boot gets the test-only switch; the tests learn it is the vIOMMU boot.
        host.kernel_arg("arm_smmu_v3.viommu_assume_coherent=1")
            .kernel_arg("TESTHOST_VIOMMU=1");
    }
    host.files()
        .dir("/testhost/vmm", 0o755)?
        .host_file("/testhost/vmm/passthrough-vmm", 0o755, &vmm)?
        .host_file("/testhost/vmm/Image", 0o644, &kernel)?
        .host_file("/testhost/vmm/l2-e2e.cpio", 0o644, &l2)?
        .host_file("/testhost/vmm/l2-hostile.cpio", 0o644, &l2_hostile)?;
    for t in &tests {
        let suite = t.suite_name();
        let reliability = suite.ends_with("reliability");
        if (demo || viommu) && !suite.ends_with("e2e") && !(viommu && reliability)
            || soak.is_some() && !reliability
            || only.as_ref().is_some_and(|o| !suite.ends_with(o.as_str()))
        {
            continue;
        }
        let guest = format!("/testhost/bin/{}", suite.replace('/', "-"));
        host.files().host_file(&guest, 0o755, &t.executable)?;
        let mut step =
            PlanStep::libtest(suite, guest).env("TESTHOST_KERNEL_VARIANT", variant.clone());
        if viommu {
            step = step.env("TESTHOST_VIOMMU", "1");
        }
        if let Some(n) = soak {
            step = step
                .env("RELIABILITY_SOAK_RUNS", n.to_string())
                .arg("soak_full_runs");
        }
        host.step(step);
    }
    host.step(PlanStep::lines("e2e-report", "/bin/busybox").args(["cat", "/tmp/e2e-report.txt"]));
    eprintln!(
        "testhost_e2e: booting {} ({variant}) with 2 NICs, NIC 1 on vfio-pci",
        kernel.display()
    );
    let outcome = host.run()?;
    for s in &outcome.report.suites {
        if s.name == "e2e-report" {
            println!("{}", s.output.join("\n"));
        }
    }
    let mut out = std::io::stdout();
    testhost::cli::print_outcome(&outcome, &mut out)
        .map_err(io_err("write", Path::new("stdout")))?;
    println!(
        "testhost: L1 ran {:.1} s{}",
        outcome.exit.elapsed.as_secs_f64(),
        outcome
            .report
            .done_uptime
            .map(|u| format!(" (uptime at DONE {u:.1} s)"))
            .unwrap_or_default()
    );
    println!("testhost: {}", outcome.tally());
    Ok(outcome.success())
}
