// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The riscv64 end-to-end passthrough run in the riscv64 QEMU test host (issue 19).
//!
//! ```text
//! cargo run -p passthrough-vmm --example testhost_e2e_riscv64 -- [--kernel IMAGE] [--only TEST]
//! ```
//!
//! Cross-builds `passthrough-vmm` and this crate's tests for riscv64, packs an L2 initramfs
//! (riscv64 busybox and `tests/l2/e2e-init.sh`, the same `/init` as on arm64) and boots L1
//! (QEMU TCG riscv64 virt with AIA guest interrupt files, the H extension, the RISC-V IOMMU)
//! with two igb NICs on one hub, NIC 1 bound to vfio-pci, and
//! `iommufd.allow_unsafe_interrupts=1` (IMSIC MSIs are not isolated, `docs/uapi.md` section
//! 4). In L1 it runs `tests/e2e_riscv64.rs`: the VMM boots a riscv64 L2 without a device,
//! then with NIC 1 passed through. The readable report of each run is printed, then every
//! result and `testhost: N passed, M failed`.
//!
//! The kernel (L1 and L2): `--kernel`, else `$TESTHOST_KERNEL_RISCV64`, else the riscv64
//! recipe's `patched` variant (`tests/testhost/kernel-riscv64`, patches 0001-0005: the
//! passthrough needs 0002-0005), built once per machine and cached. Busybox from
//! `setup-riscv64.sh`'s cache. Files go to `<workspace>/target/testhost/e2e-riscv64`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use testhost::arch::Arch;
use testhost::cross::CrossBuild;
use testhost::host::TestHost;
use testhost::initramfs::Initramfs;
use testhost::plan::PlanStep;

/// L2's `/init`.
const L2_E2E_INIT: &str = include_str!("../tests/l2/e2e-init.sh");

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("testhost_e2e_riscv64: {e}");
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
    let arch = Arch::Riscv64;
    let mut kernel = std::env::var_os("TESTHOST_KERNEL_RISCV64")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let mut only: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--kernel" => kernel = args.next().map(PathBuf::from),
            "--only" => only = args.next(),
            other => {
                return Err(testhost::Error::Config {
                    what: "argument",
                    reason: format!("unknown argument {other:?}"),
                });
            }
        }
    }
    let cache = std::env::var_os("TESTHOST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(testhost::cli::DEFAULT_CACHE));
    let variant = std::env::var("TESTHOST_RISCV64_VARIANT").unwrap_or_else(|_| "patched".into());
    let recipe = testhost::kernel::KernelRecipe::for_arch(&workspace, arch).with_variant(variant);
    let kernel = testhost::kernel::resolve_kernel(kernel.as_deref(), &recipe, &cache)?
        .path()
        .to_path_buf();
    let busybox = arch.busybox(&cache);

    let cross = CrossBuild::for_arch(&workspace, arch);
    eprintln!("testhost_e2e_riscv64: cross-building passthrough-vmm and its tests");
    let bins = cross.build_bins("passthrough-vmm", &["passthrough-vmm".to_owned()])?;
    let vmm = bins
        .iter()
        .find(|a| a.target == "passthrough-vmm")
        .map(|a| a.executable.clone())
        .ok_or_else(|| testhost::Error::Config {
            what: "cross build",
            reason: "no passthrough-vmm binary".to_owned(),
        })?;
    let tests = cross.build_tests(&["passthrough-vmm".to_owned()])?;

    let run_dir = workspace.join("target/testhost/e2e-riscv64");
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

    let mut host = TestHost::new(&kernel, &busybox, &run_dir);
    host.arch(arch)
        .nics(2)
        .bind([1])
        .cpus(2)
        .memory_mib(2048)
        .kernel_arg("iommufd.allow_unsafe_interrupts=1")
        .timeout(Duration::from_secs(900));
    host.files()
        .dir("/testhost/vmm", 0o755)?
        .host_file("/testhost/vmm/passthrough-vmm", 0o755, &vmm)?
        .host_file("/testhost/vmm/Image", 0o644, &kernel)?
        .host_file("/testhost/vmm/l2-e2e.cpio", 0o644, &l2)?;
    for t in &tests {
        let suite = t.suite_name();
        if !suite.ends_with("e2e_riscv64") {
            continue;
        }
        let guest = format!("/testhost/bin/{}", suite.replace('/', "-"));
        host.files().host_file(&guest, 0o755, &t.executable)?;
        let mut step = PlanStep::libtest(suite, guest);
        if let Some(o) = &only {
            step = step.arg(o.clone());
        }
        host.step(step);
    }
    host.step(PlanStep::lines("e2e-report", "/bin/busybox").args(["cat", "/tmp/e2e-report.txt"]));
    eprintln!(
        "testhost_e2e_riscv64: booting {} with 2 NICs, NIC 1 on vfio-pci",
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
