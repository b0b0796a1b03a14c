// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Issue 19 end to end on riscv64, inside the riscv64 QEMU test host (L1, driven by
//! `examples/testhost_e2e_riscv64.rs`): `passthrough-vmm` boots a riscv64 L2 Linux under
//! KVM with the in-kernel AIA (a vIMSIC page per vCPU at the IPA the VMM chose, an APLIC for
//! the UART), a 16550 console and an ECAM PCIe host whose MSIs go to the imsics.
//!
//! - `riscv64_guest_boots_without_a_device`: the guest boots to its `/init` (the same
//!   `tests/l2/e2e-init.sh` as on arm64), finds no NIC, says so in its result and powers off
//!   through SBI SRST with status 1; the report holds each vCPU's vIMSIC page as KVM has it.
//!
//! Inputs in L1: the VMM (`$PASSTHROUGH_VMM_BIN`, else `/testhost/vmm/passthrough-vmm`),
//! the L2 kernel (`/testhost/vmm/Image`), the L2 initramfs (`/testhost/vmm/l2-e2e.cpio`).
//! A readable report of each run is appended to `/tmp/e2e-report.txt`. Outside the test
//! host (or on another architecture) the tests print why they skip.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

fn in_riscv64_guest() -> bool {
    if std::env::var_os("TESTHOST_IN_GUEST").is_none_or(|v| v != "1") {
        eprintln!("skipped: not in the test VM (TESTHOST_IN_GUEST is not 1)");
        return false;
    }
    if !cfg!(target_arch = "riscv64") {
        eprintln!("skipped: the riscv64 end-to-end runs in the riscv64 test host");
        return false;
    }
    assert!(
        Path::new("/dev/kvm").exists(),
        "/dev/kvm missing in the test VM"
    );
    true
}

fn file(var: &str, default: &str) -> PathBuf {
    let p = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default));
    assert!(
        p.is_file(),
        "{} is missing from the L1 initramfs",
        p.display()
    );
    p
}

struct Run {
    code: Option<i32>,
    report: Value,
    stdout: String,
    stderr: String,
}

fn run_vmm(name: &str, extra: &[&str], cmdline: &str) -> Run {
    let report_path = PathBuf::from(format!("/tmp/e2e-riscv64-{name}.json"));
    let _ = std::fs::remove_file(&report_path);
    let started = Instant::now();
    let out = Command::new(file("PASSTHROUGH_VMM_BIN", "/testhost/vmm/passthrough-vmm"))
        .arg("--kernel")
        .arg(file("PASSTHROUGH_VMM_KERNEL", "/testhost/vmm/Image"))
        .arg("--initrd")
        .arg(file(
            "PASSTHROUGH_VMM_E2E_INITRD",
            "/testhost/vmm/l2-e2e.cpio",
        ))
        .args(["--mem", "256", "--cmdline", cmdline])
        .args(extra)
        .arg("--report")
        .arg(&report_path)
        .env("PASSTHROUGH_VMM_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("running passthrough-vmm");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let text = std::fs::read_to_string(&report_path).unwrap_or_else(|e| {
        panic!("{name}: no report: {e}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")
    });
    let run = Run {
        code: out.status.code(),
        report: serde_json::from_str(&text).expect("report JSON"),
        stdout,
        stderr,
    };
    let summary: String = run
        .stderr
        .lines()
        .filter(|l| !l.starts_with("passthrough-vmm: "))
        .map(|l| format!("{l}\n"))
        .collect();
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/tmp/e2e-report.txt")
    {
        let _ = writeln!(
            f,
            "=== riscv64 {name}: exit {:?}, {:.1} s ===\n{summary}",
            run.code,
            started.elapsed().as_secs_f64()
        );
    }
    run
}

fn context(run: &Run) -> String {
    format!(
        "exit {:?}\n--- report ---\n{}\n--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}",
        run.code,
        run.report,
        tail(&run.stdout, 60),
        tail(&run.stderr, 40)
    )
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The guest's final result (the one with its driver).
fn guest_result(r: &Value) -> &Value {
    r["results"]
        .as_array()
        .and_then(|a| a.iter().find(|g| g.get("driver").is_some()))
        .unwrap_or(&Value::Null)
}

#[test]
fn riscv64_guest_boots_without_a_device() {
    if !in_riscv64_guest() {
        return;
    }
    let run = run_vmm(
        "no-device",
        &["--cpus", "2"],
        "console=ttyS0 earlycon panic=-1 quiet e2e_linger=0",
    );
    let r = &run.report;
    let ctx = || context(&run);
    // The init ran, found no NIC, reported and powered off with its status.
    assert_eq!(r["exit"]["reason"], "shutdown", "{}", ctx());
    assert_eq!(r["exit"]["guest_status"], 1, "{}", ctx());
    assert_eq!(run.code, Some(1), "{}", ctx());
    let g = guest_result(r);
    assert!(
        g["errors"]
            .as_str()
            .is_some_and(|e| e.contains("no 8086:10c9 function")),
        "{}",
        ctx()
    );
    assert_eq!(g["reserved_memory"], false, "{}", ctx());
    // KVM has each vCPU's vIMSIC page where the memory map put it.
    let imsic = &r["imsic"];
    assert_eq!(
        imsic["pages"],
        serde_json::json!([0x0800_0000u64, 0x0800_1000u64]),
        "{}",
        ctx()
    );
    let map = r["memory_map"].as_array().expect("memory map");
    assert!(
        map.iter()
            .any(|e| e["kind"] == "imsic" && e["base"] == 0x0800_0000u64),
        "{}",
        ctx()
    );
}

/// The IPv6 link-local address of a MAC (RFC 4291 Appendix A, modified EUI-64).
fn link_local(mac: &str) -> Option<String> {
    let b: Vec<u8> = mac
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect::<Option<_>>()?;
    if b.len() != 6 {
        return None;
    }
    Some(format!(
        "fe80::{:x}:{:x}:{:x}:{:x}",
        (u16::from(b[0] ^ 2) << 8) | u16::from(b[1]),
        (u16::from(b[2]) << 8) | 0xff,
        0xfe00 | u16::from(b[3]),
        (u16::from(b[4]) << 8) | u16::from(b[5])
    ))
}

fn busybox(args: &[&str]) -> (bool, String) {
    let out = Command::new("/bin/busybox")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("busybox");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Brings L1's NIC up and waits (up to 20 s) for its link-local address to leave duplicate
/// address detection: a tentative address answers no neighbour solicitation and sends no
/// ping.
fn l1_up(iface: &str) {
    busybox(&["ip", "link", "set", iface, "up"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let (_, a) = busybox(&["ip", "-6", "addr", "show", "dev", iface, "scope", "link"]);
        if a.contains("inet6") && !a.contains("tentative") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("L1's {iface} has no usable link-local address after 20 s");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The igb passed through to a 2-vCPU riscv64 guest: the plan puts the vIMSIC at the
/// kernel's software MSI window, the guest's igb driver enables MSI-X, pings go both ways,
/// its interrupt counts rise, and every vector's real table address is a host hart's page of
/// the window while its KVM route goes to the guest's vIMSIC page.
#[test]
fn riscv64_end_to_end_with_the_igb_passed_through() {
    if !in_riscv64_guest() {
        return;
    }
    let Some(device) = std::env::var("TESTHOST_VFIO_BDFS")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .map(str::to_owned)
    else {
        eprintln!("skipped: no NIC bound to vfio-pci (upstream kernel?)");
        return;
    };
    let index = (0..testhost::qemu::MAX_NICS)
        .find(|i| testhost::qemu::nic_bdf(*i).as_deref() == Some(device.as_str()))
        .expect("the bound NIC is not one of the test host's");
    let mut l1 = None;
    for e in std::fs::read_dir("/sys/bus/pci/devices").unwrap().flatten() {
        let d = e.path();
        let driver = std::fs::read_link(d.join("driver")).unwrap_or_default();
        if read(&d.join("vendor")) == "0x8086"
            && read(&d.join("device")) == "0x10c9"
            && driver.file_name().is_some_and(|n| n == "igb")
        {
            l1 = std::fs::read_dir(d.join("net"))
                .unwrap()
                .flatten()
                .next()
                .map(|n| n.file_name().to_string_lossy().into_owned());
            break;
        }
    }
    let l1_iface = l1.expect("no igb NIC left on L1's igb driver");
    let l1_addr = link_local(&read(
        &Path::new("/sys/class/net").join(&l1_iface).join("address"),
    ))
    .expect("L1 MAC");
    let l2_addr = link_local(&testhost::qemu::nic_mac(index)).expect("L2 MAC");
    l1_up(&l1_iface);

    // L1 pings L2 while it runs.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let replies = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let pinger = {
        let (done, replies) = (done.clone(), replies.clone());
        let (iface, addr) = (l1_iface.clone(), l2_addr.clone());
        std::thread::spawn(move || {
            use std::sync::atomic::Ordering::SeqCst;
            while !done.load(SeqCst) && replies.load(SeqCst) < 3 {
                let (ok, _) = busybox(&["ping6", "-c", "1", "-W", "1", "-I", &iface, &addr]);
                if ok {
                    replies.fetch_add(1, SeqCst);
                } else {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                }
            }
        })
    };
    // The host's count of each passed-through vector (vfio-pci's handler, which signals the
    // eventfd KVM's irqfd reads), sampled while the VMM runs (the lines go with the VMM), to
    // set against the guest's counts: a vector the guest stopped seeing while L1 kept
    // counting points between the eventfd and the guest. Equal counts prove little: MSIs
    // that arrive before a handler runs merge in L1's and L2's pending bits (once read as
    // a lost MSI; it was device DMA hitting the wrong page, tests/testhost/README.md).
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut last = String::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let now: String = std::fs::read_to_string("/proc/interrupts")
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("vfio-msix"))
                    .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") + "\n")
                    .collect();
                if !now.is_empty() {
                    last = now;
                }
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            last
        })
    };
    let cmdline = format!(
        "console=ttyS0 earlycon panic=-1 quiet e2e_peer={l1_addr} e2e_linger=10 e2e_move=1"
    );
    let run = run_vmm(
        "passthrough",
        &["--cpus", "2", "--device", &device],
        &cmdline,
    );
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = pinger.join();
    let l1_replies = replies.load(std::sync::atomic::Ordering::SeqCst);
    let r = &run.report;
    // L1's side of the link, for a failure's context: its address (still tentative? DAD
    // failed?) and what it knows of L2.
    let (_, l1_addrs) = busybox(&["ip", "-6", "addr", "show", "dev", &l1_iface]);
    let (_, l1_neigh) = busybox(&["ip", "-6", "neigh", "show", "dev", &l1_iface]);
    let l1_vfio_irqs = sampler.join().unwrap_or_default();
    let ctx = || {
        format!(
            "L1 got {l1_replies} replies\nL1 {l1_iface} addresses:\n{l1_addrs}\nL1 neighbours:\n{l1_neigh}\nL1 vfio interrupts:\n{l1_vfio_irqs}{}",
            context(&run)
        )
    };
    {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .open("/tmp/e2e-report.txt")
        {
            let guest_final: String = run
                .stdout
                .lines()
                .filter(|l| l.starts_with("final irqs:"))
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") + "\n")
                .collect();
            let _ = writeln!(
                f,
                "L1 vfio interrupts while the VMM ran (last sample):\n{l1_vfio_irqs}\
                 L2's at power-off:\n{guest_final}"
            );
        }
    }
    let g = guest_result(r);
    assert_eq!(g["errors"], "", "{}", ctx());
    assert_eq!(r["exit"]["guest_status"], 0, "{}", ctx());
    assert_eq!(run.code, Some(0), "{}", ctx());
    assert_eq!(g["driver"], "igb", "{}", ctx());
    assert!(g["ping_received"].as_u64().unwrap_or(0) >= 1, "{}", ctx());
    assert!(
        g["irq_after"].as_u64().unwrap_or(0) > g["irq_before"].as_u64().unwrap_or(u64::MAX),
        "{}",
        ctx()
    );
    assert!(l1_replies >= 1, "L1's pings to L2 got no reply\n{}", ctx());
    // Every vector moved to the other vCPU: the guest rewrote its address (the other
    // vIMSIC page) and EIID, the VMM followed with the route, and interrupts kept coming on
    // the new vCPU (the init fails the run otherwise).
    assert_eq!(g["move_targets"], g["msix_vectors"], "{}", ctx());
    assert!(g["moved"].as_u64().unwrap_or(0) >= 1, "{}", ctx());
    assert!(
        g["ping_received_after_move"].as_u64().unwrap_or(0) >= 1,
        "{}",
        ctx()
    );
    // The plan: the vIMSIC at the kernel's window, and KVM has it there.
    let p = &r["passthrough"];
    assert_eq!(p["controller"], "riscv-imsic", "{}", ctx());
    assert_eq!(p["plan"]["strategy"], "imsic-kernel-window", "{}", ctx());
    assert_eq!(
        p["msi_window"],
        serde_json::json!([0x800_0000u64, 0x80f_ffffu64])
    );
    assert_eq!(
        r["imsic"]["pages"],
        serde_json::json!([0x800_0000u64, 0x800_1000u64]),
        "{}",
        ctx()
    );
    assert_eq!(p["doorbell_at_its_ipa"], true, "{}", ctx());
    // Every enabled vector: the device holds a host hart's page of the window, the route
    // goes to the guest's vIMSIC page the guest programmed.
    let vectors = p["vectors"].as_array().expect("vectors");
    assert!(vectors.len() >= 2, "{}", ctx());
    for v in vectors {
        let dev = v["device_address"].as_u64().unwrap_or(0);
        assert!(
            (0x800_0000..0x810_0000).contains(&dev) && dev % 0x1000 == 0,
            "{v}"
        );
        assert_eq!(v["route_address"], v["guest_address"], "{v}");
        let guest = v["guest_address"].as_u64().unwrap_or(0);
        assert!(guest == 0x800_0000 || guest == 0x800_1000, "{v}");
    }
    let f = &p["faults"];
    for k in [
        "router",
        "device",
        "mapping",
        "address_mismatch",
        "guest_address_not_doorbell",
    ] {
        assert_eq!(f[k], 0, "fault counter {k}\n{}", ctx());
    }
}
