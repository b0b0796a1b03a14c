// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The `passthrough-vmm` binary's command-line behaviour, on any host.
//!
//! In the QEMU test host the build-time binary path does not exist; the binary is then
//! taken from `PASSTHROUGH_VMM_BIN` or `/testhost/vmm/passthrough-vmm`, and the tests are
//! skipped (with a note) when neither is there.

use std::path::PathBuf;
use std::process::{Command, Output};

fn binary() -> Option<PathBuf> {
    [
        Some(PathBuf::from(env!("CARGO_BIN_EXE_passthrough-vmm"))),
        std::env::var_os("PASSTHROUGH_VMM_BIN").map(PathBuf::from),
        Some(PathBuf::from("/testhost/vmm/passthrough-vmm")),
    ]
    .into_iter()
    .flatten()
    .find(|p| p.is_file())
}

fn vmm(args: &[&str]) -> Option<Output> {
    let Some(bin) = binary() else {
        eprintln!("skipped: no passthrough-vmm binary here");
        return None;
    };
    Some(Command::new(bin).args(args).output().unwrap())
}

#[test]
fn help_exits_0() {
    let Some(out) = vmm(&["--help"]) else { return };
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--its-base"), "{text}");
    assert!(text.contains("@@VMM status N"), "{text}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["--kernel"],
        &["--kernel", "/k", "--cpus", "0"],
        &["--kernel", "/k", "--its-base", "0x1234"],
        &["--bogus"],
    ] {
        let Some(out) = vmm(args) else { return };
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("usage:"), "{args:?}: {err}");
    }
}

/// A device that is not there: the bring-up fails before the VM exists, and the report says
/// which device and why (here: no VFIO cdev for that PCI address).
#[cfg(target_arch = "aarch64")]
#[test]
fn a_device_that_is_not_there_is_an_error_in_the_report() {
    if !std::path::Path::new("/dev/iommu").exists() {
        eprintln!("skipped: no /dev/iommu");
        return;
    }
    let report = std::env::temp_dir().join("passthrough-vmm-missing-device.json");
    let Some(out) = vmm(&[
        "--kernel",
        "/nonexistent/Image",
        "--device",
        "0000:00:1f.7",
        "--report",
        report.to_str().unwrap(),
    ]) else {
        return;
    };
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(v["exit"]["reason"], "error");
    let detail = v["exit"]["detail"].as_str().unwrap();
    assert!(detail.contains("0000:00:1f.7"), "{detail}");
    assert!(detail.contains("vfio-pci"), "{detail}");
}

#[cfg(not(any(target_arch = "aarch64", target_arch = "riscv64")))]
#[test]
fn other_arches_say_aarch64_and_riscv64_only() {
    let Some(out) = vmm(&["--kernel", "/k"]) else {
        return;
    };
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("runs on aarch64 and riscv64 only"), "{err}");
}

#[cfg(any(target_arch = "aarch64", target_arch = "riscv64"))]
#[test]
fn a_missing_kernel_is_an_error_in_the_report() {
    if !std::path::Path::new("/dev/kvm").exists() {
        eprintln!("skipped: no /dev/kvm");
        return;
    }
    let report = std::env::temp_dir().join("passthrough-vmm-missing-kernel.json");
    let Some(out) = vmm(&[
        "--kernel",
        "/nonexistent/Image",
        "--report",
        report.to_str().unwrap(),
    ]) else {
        return;
    };
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(v["exit"]["reason"], "error");
    assert!(
        v["exit"]["detail"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/Image"),
        "{v:#}"
    );
}
