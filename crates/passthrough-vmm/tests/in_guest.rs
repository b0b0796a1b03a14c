// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Boots a real L2 Linux guest with the `passthrough-vmm` binary, inside the QEMU test host
//! (L1, where `/dev/kvm` is VHE KVM).
//!
//! Runs only when `TESTHOST_IN_GUEST=1` (set by the test host's `/init`) and `/dev/kvm`
//! exists; elsewhere each test says why it is skipped and returns. In the test host a
//! missing input is a failure. Inputs, from the L1 initramfs:
//!
//! - the VMM binary: `$PASSTHROUGH_VMM_BIN`, else `/testhost/vmm/passthrough-vmm`;
//! - the L2 kernel: `$PASSTHROUGH_VMM_KERNEL`, else `/testhost/vmm/Image`;
//! - busybox: `/bin/busybox` (every test-host initramfs has it).
//!
//! The L2 initramfs is packed here, at run time, from L1's busybox and a `/init` that
//! reports through the console framing (`@@VMM result`, `@@VMM status`) and powers off; the
//! kernel argument `vmmtest=` picks its behaviour, so one initramfs covers every exit path.
//! `examples/testhost_boot.rs` builds such an L1 initramfs and boots it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use testhost::initramfs::Initramfs;

/// L2's `/init` (busybox ash); see the comments in the file for its modes.
const L2_INIT: &str = include_str!("l2/init.sh");

fn in_guest() -> bool {
    std::env::var_os("TESTHOST_IN_GUEST").is_some_and(|v| v == "1")
}

/// `None` (and a note) when not in the test VM; panics there when an input is missing.
fn inputs() -> Option<&'static Inputs> {
    if !in_guest() {
        eprintln!("skipped: not in the test VM (TESTHOST_IN_GUEST is not 1)");
        return None;
    }
    if !Path::new("/dev/kvm").exists() {
        panic!("in the test VM but /dev/kvm is missing");
    }
    static INPUTS: OnceLock<Inputs> = OnceLock::new();
    Some(INPUTS.get_or_init(Inputs::prepare))
}

struct Inputs {
    vmm: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
}

fn input(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.is_file(),
        "{} missing: the L1 initramfs must carry it (or set {var})",
        path.display()
    );
    path
}

impl Inputs {
    fn prepare() -> Self {
        let vmm = input("PASSTHROUGH_VMM_BIN", "/testhost/vmm/passthrough-vmm");
        let kernel = input("PASSTHROUGH_VMM_KERNEL", "/testhost/vmm/Image");
        let initrd = std::env::temp_dir().join("passthrough-vmm-l2.cpio");
        let busybox = input("PASSTHROUGH_VMM_BUSYBOX", "/bin/busybox");
        let mut fs = Initramfs::new();
        for dir in ["/bin", "/dev", "/proc", "/sys"] {
            fs.dir(dir, 0o755).unwrap();
        }
        fs.host_file("/bin/busybox", 0o755, &busybox)
            .unwrap()
            .bytes("/init", 0o755, L2_INIT.as_bytes().to_vec())
            .unwrap()
            .char_device("/dev/console", 0o600, 5, 1)
            .unwrap();
        fs.write_file(&initrd).unwrap();
        Inputs {
            vmm,
            kernel,
            initrd,
        }
    }
}

struct Boot {
    code: Option<i32>,
    report: serde_json::Value,
    stdout: String,
    wall_ms: u128,
}

fn boot(inputs: &Inputs, name: &str, extra_cmdline: &str, cpus: u32) -> Boot {
    let report_path = std::env::temp_dir().join(format!("passthrough-vmm-{name}.json"));
    let _ = std::fs::remove_file(&report_path);
    let cmdline = format!("console=ttyS0 earlycon panic=-1 quiet {extra_cmdline}");
    let started = Instant::now();
    let out = Command::new(&inputs.vmm)
        .arg("--kernel")
        .arg(&inputs.kernel)
        .arg("--initrd")
        .arg(&inputs.initrd)
        .args(["--cmdline", &cmdline, "--mem", "256"])
        .args(["--cpus", &cpus.to_string()])
        .arg("--report")
        .arg(&report_path)
        .output()
        .expect("running passthrough-vmm");
    let wall_ms = started.elapsed().as_millis();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let text = std::fs::read_to_string(&report_path).unwrap_or_else(|e| {
        panic!(
            "no report at {}: {e}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            report_path.display()
        )
    });
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    // The summary the VMM printed, for the test log (and the boot time in the README).
    eprintln!("{name}: {wall_ms} ms wall\n{stderr}");
    Boot {
        code: out.status.code(),
        report,
        stdout,
        wall_ms,
    }
}

#[test]
fn l2_boots_and_reports_status_zero() {
    let Some(inputs) = inputs() else { return };
    let b = boot(inputs, "ok", "vmmtest=ok", 2);
    let r = &b.report;
    assert_eq!(b.code, Some(0), "report: {r:#}\nconsole:\n{}", b.stdout);
    assert_eq!(r["exit"]["reason"], "shutdown");
    assert_eq!(r["exit"]["guest_status"], 0);
    assert_eq!(r["exit"]["exit_code"], 0);
    assert_eq!(r["vcpus"], 2);
    assert_eq!(r["its_base"], 0x07ff_0000);
    assert_eq!(r["its_doorbell"], 0x0800_0040);
    assert_eq!(r["memory_map"].as_array().map(Vec::len), Some(7));
    assert!(r["boot"]["kernel_load"].is_number());
    assert!(r["timings"]["first_output_ms"].is_number());
    let result = &r["results"][0];
    assert_eq!(result["mode"], "ok", "{r:#}");
    // Both vCPUs came up through PSCI CPU_ON, and the guest found the vITS in its tree
    // and probed it.
    assert_eq!(result["cpus"], 2, "{r:#}");
    assert_eq!(result["its_node"], true, "{r:#}");
    assert_eq!(result["its_probed"], true, "{r:#}");
    assert!(b.stdout.contains("@@VMM status 0"));
    println!(
        "L2 boot: {} ms wall, first console byte at {} ms, guest uptime at report {} s",
        b.wall_ms, r["timings"]["first_output_ms"], result["uptime"]
    );
}

#[test]
fn guest_status_becomes_the_exit_code() {
    let Some(inputs) = inputs() else { return };
    let b = boot(inputs, "status7", "vmmtest=status7", 1);
    assert_eq!(b.code, Some(7), "{:#}", b.report);
    assert_eq!(b.report["exit"]["guest_status"], 7);
}

#[test]
fn poweroff_without_status_exits_3() {
    let Some(inputs) = inputs() else { return };
    let b = boot(inputs, "nostatus", "vmmtest=nostatus", 1);
    assert_eq!(b.code, Some(3), "{:#}", b.report);
    assert_eq!(b.report["exit"]["reason"], "shutdown");
    assert!(b.report["exit"]["guest_status"].is_null());
}

#[test]
fn guest_panic_resets_and_exits_4() {
    let Some(inputs) = inputs() else { return };
    let b = boot(inputs, "panic", "vmmtest=panic", 1);
    assert_eq!(b.code, Some(4), "{:#}", b.report);
    assert_eq!(b.report["exit"]["reason"], "reset");
}
