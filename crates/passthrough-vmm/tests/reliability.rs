// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Reliability and isolation under a hostile guest, a crash and repetition (issue 18), in
//! the QEMU test host (L1), with `passthrough-vmm` and the igb passed through to L2. The L2
//! side is `tests/l2/hostile-init.sh` and the project's hostile program `l2-hostile`
//! (`src/bin/l2-hostile.rs`), packed by `examples/testhost_e2e.rs` into
//! `/testhost/vmm/l2-hostile.cpio`.
//!
//! - `hostile_guest_storm_and_dma_isolation` (the plain boot): L2 (2 vCPUs) pings L1; runs
//!   the MSI-X storm on vCPU 1 while vCPU 0 pings; takes the igb from its driver and points
//!   its DMA (descriptor fetch, buffer read, buffer write, head write-back) at guest-physical
//!   addresses outside its RAM: the vITS frame, the MSI doorbell page, the MSI window beyond
//!   it, below and above RAM, the PCIe window (the igb's own BAR), the top of the IPA space
//!   and of the host's IOVA space, and beyond; then binds the driver again and pings. Checked
//!   from L1: every non-doorbell target faulted in L1's SMMU (L1's kernel log, client = the
//!   igb), nothing of the guest's own pages that no attack named changed, the VMM's sentinel
//!   pages around guest RAM, its canary and a 64 MiB pattern in L1 (this test's own memory)
//!   are intact, the VMM ran on and exited 0, its route monitor never saw KVM's routes
//!   differ from the trap handler's, the device never held a data value the guest chose, and
//!   after teardown the VMM held no fd, pin or iommufd ID more than at start.
//! - `viommu_guest_dma_faults_reach_the_vmm` (the vIOMMU boot): the same attacks under the
//!   guest's own stage 1, at gIOVAs it never mapped; the faults arrive on the vEVENTQ and the
//!   VMM reports their addresses.
//! - `vmm_killed_while_pinging_leaves_nothing_and_the_next_run_works` (the plain boot):
//!   SIGKILL while L2 pings; then L1's pinned pages, locked memory and open files are back
//!   to before, the device binds to a fresh iommufd with the same object IDs as before, and
//!   the next VMM run on the device succeeds.
//! - `soak_full_runs_leave_nothing_behind`: `RELIABILITY_SOAK_RUNS` (e.g. 10) full runs in one
//!   L1 boot, figures after each; only when that variable is set (`testhost_e2e --soak N`).

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

fn in_guest() -> bool {
    std::env::var_os("TESTHOST_IN_GUEST").is_some_and(|v| v == "1")
}

fn viommu_boot() -> bool {
    std::env::var("TESTHOST_VIOMMU").is_ok_and(|v| v == "1")
}

fn patched() -> bool {
    std::env::var("TESTHOST_KERNEL_VARIANT").is_ok_and(|v| v == "patched")
}

/// The IPv6 link-local address of a MAC (RFC 4291 Appendix A, modified EUI-64).
fn link_local(mac: &str) -> Option<String> {
    let b: Vec<u8> = mac
        .split(':')
        .map(|p| u8::from_str_radix(p, 16).ok())
        .collect::<Option<_>>()?;
    (b.len() == 6).then(|| {
        format!(
            "fe80::{:x}:{:x}:{:x}:{:x}",
            (u16::from(b[0] ^ 2) << 8) | u16::from(b[1]),
            (u16::from(b[2]) << 8) | 0xff,
            0xfe00 | u16::from(b[3]),
            (u16::from(b[4]) << 8) | u16::from(b[5])
        )
    })
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

struct Inputs {
    vmm: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    /// The passed-through NIC (L1 PCI address, bound to vfio-pci).
    device: String,
    l1_iface: String,
    l1_addr: String,
    l2_addr: String,
}

fn inputs() -> Option<Inputs> {
    if !in_guest() {
        eprintln!("skipped: not in the test VM (TESTHOST_IN_GUEST is not 1)");
        return None;
    }
    let file = |var: &str, default: &str| {
        let p = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
        assert!(
            p.is_file(),
            "{} is missing from the L1 initramfs",
            p.display()
        );
        p
    };
    let device = std::env::var("TESTHOST_VFIO_BDFS")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .map(str::to_owned)
        .expect("no NIC bound to vfio-pci");
    let index = (0..testhost::qemu::MAX_NICS)
        .find(|i| testhost::qemu::nic_bdf(*i).as_deref() == Some(device.as_str()))
        .expect("the bound NIC is not one of the test host's");
    let mut l1 = None;
    for e in std::fs::read_dir("/sys/bus/pci/devices").unwrap().flatten() {
        let d = e.path();
        let driver = std::fs::read_link(d.join("driver")).unwrap_or_default();
        if read(&d.join("device")) == "0x10c9" && driver.file_name().is_some_and(|n| n == "igb") {
            l1 = std::fs::read_dir(d.join("net"))
                .unwrap()
                .flatten()
                .next()
                .map(|n| n.file_name().to_string_lossy().into_owned());
            break;
        }
    }
    let l1_iface = l1.expect("no igb left on L1's driver");
    let l1_mac = read(&Path::new("/sys/class/net").join(&l1_iface).join("address"));
    Some(Inputs {
        vmm: file("PASSTHROUGH_VMM_BIN", "/testhost/vmm/passthrough-vmm"),
        kernel: file("PASSTHROUGH_VMM_KERNEL", "/testhost/vmm/Image"),
        initrd: file(
            "PASSTHROUGH_VMM_HOSTILE_INITRD",
            "/testhost/vmm/l2-hostile.cpio",
        ),
        device,
        l1_addr: link_local(&l1_mac).expect("L1 MAC"),
        l2_addr: link_local(&testhost::qemu::nic_mac(index)).expect("L2 MAC"),
        l1_iface,
    })
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

fn l1_up(iface: &str) {
    busybox(&["ip", "link", "set", iface, "up"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let (_, a) = busybox(&["ip", "-6", "addr", "show", "dev", iface, "scope", "link"]);
        if a.contains("inet6") && !a.contains("tentative") {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("L1's {iface} has no usable link-local address after 20 s");
}

/// L1-wide figures a leak would move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct L1Figures {
    /// FOLL_PIN pages held system-wide (iommufd pins guest RAM with FOLL_PIN).
    pinned_pages: i64,
    /// `Mlocked` in /proc/meminfo, kB.
    mlocked_kb: u64,
    /// Allocated file handles (first field of /proc/sys/fs/file-nr).
    files: u64,
}

fn meminfo_kb(name: &str) -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    testhost::proc_stats::kb_field(&meminfo, name)
        .unwrap_or_else(|| panic!("/proc/meminfo has no {name}"))
}

fn l1_figures() -> L1Figures {
    L1Figures {
        pinned_pages: testhost::proc_stats::pinned_pages()
            .expect("/proc/vmstat has the FOLL_PIN counters"),
        mlocked_kb: meminfo_kb("Mlocked"),
        files: read(Path::new("/proc/sys/fs/file-nr"))
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
    }
}

impl L1Figures {
    /// Nothing more held than in `base` (pins may have dropped below it: the count is
    /// system-wide and the previous test's teardown can still be releasing a few).
    fn within(&self, base: &L1Figures) -> bool {
        self.pinned_pages <= base.pinned_pages
            && self.mlocked_kb == base.mlocked_kb
            && self.files <= base.files
    }
}

/// Waits up to 5 s for the figures to come back within `want`; returns the last ones and
/// the wait.
fn settle(want: L1Figures) -> (L1Figures, Duration) {
    let t = Instant::now();
    loop {
        let now = l1_figures();
        if now.within(&want) || t.elapsed() > Duration::from_secs(5) {
            return (now, t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The figures once they stay the same for a second (at most 10 s).
fn stable_figures() -> L1Figures {
    let t = Instant::now();
    let mut last = l1_figures();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = l1_figures();
        if now == last || t.elapsed() > Duration::from_secs(10) {
            return now;
        }
        last = now;
    }
}

/// Opens the device on a fresh iommufd, binds it, allocates an IOAS, attaches, maps 4 MiB:
/// the object IDs it got (device, IOAS). Panics with the kernel's error if the device is
/// still held by someone.
fn bind_probe(device: &str) -> (u32, u32) {
    use iommufd_ioas::{Access, Iommufd};
    let addr: vfio_cdev::PciAddress = device.parse().expect("PCI address");
    let iommufd = Iommufd::open().expect("open /dev/iommu");
    let mut dev = vfio_cdev::VfioDevice::open_pci(addr).expect("open the device");
    let dev_id = dev.bind(&iommufd).expect("bind to a fresh iommufd");
    let ioas = Arc::new(iommufd.alloc_ioas().expect("IOAS"));
    let ram = vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(
        vm_memory::GuestAddress(0x4000_0000),
        4 << 20,
    )])
    .unwrap();
    ioas.map_guest_memory(&ram, Access::READ_WRITE)
        .expect("map 4 MiB");
    dev.attach_ioas(&ioas).expect("attach");
    let ids = (dev_id, ioas.id());
    dev.detach().expect("detach");
    drop(dev);
    Arc::try_unwrap(ioas)
        .expect("sole owner")
        .destroy()
        .expect("IOAS destroy");
    ids
}

/// A marker in L1's kernel log; returns it.
fn kmsg_marker(what: &str) -> String {
    let nonce = format!(
        "reliability-{what}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = writeln!(f, "{nonce}");
    }
    nonce
}

/// L1's kernel log after `marker`.
fn kmsg_after(marker: &str) -> Vec<String> {
    let (_, log) = busybox(&["dmesg"]);
    let lines: Vec<String> = log.lines().map(str::to_owned).collect();
    match lines.iter().rposition(|l| l.contains(marker)) {
        Some(i) => lines[i + 1..].to_vec(),
        None => lines,
    }
}

/// SMMU faults L1's kernel logged for `client`: (input address, write).
fn smmu_faults(log: &[String], client: &str) -> Vec<(u64, bool)> {
    let mut out = Vec::new();
    for (i, l) in log.iter().enumerate() {
        if !(l.contains("arm-smmu-v3") && l.contains(&format!("client: {client}"))) {
            continue;
        }
        let Some(addr) = l
            .split("iova: ")
            .nth(1)
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
        else {
            continue;
        };
        // The next line says "unpriv data read s1 ..." or "... write ...".
        let write = log.get(i + 1).is_some_and(|n| n.contains(" data write "));
        out.push((addr, write));
    }
    out
}

/// A block of L1 memory with a known pattern, locked in place: a DMA that escaped the
/// guest would have to miss it.
struct L1Canary(Vec<u64>);

impl L1Canary {
    fn new(bytes: usize) -> Self {
        let v: Vec<u64> = (0..bytes / 8)
            .map(|i| 0xc0de_0000_0000_0000 ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        // SAFETY: mlock of the vector's own buffer; it only pins pages in memory.
        unsafe { libc::mlock(v.as_ptr().cast(), v.len() * 8) };
        L1Canary(v)
    }
    fn changed(&self) -> usize {
        self.0
            .iter()
            .enumerate()
            .filter(|(i, w)| {
                // SAFETY: a valid reference into the vector; volatile so the compiler cannot
                // assume the values.
                let v = unsafe { std::ptr::read_volatile(*w) };
                v != 0xc0de_0000_0000_0000 ^ (*i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            })
            .count()
    }
}

struct Run {
    code: Option<i32>,
    report: Value,
    stdout: String,
    stderr: String,
    l1_replies: u32,
    wall: Duration,
}

impl Run {
    fn phase(&self, name: &str) -> Value {
        self.report["results"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["phase"] == name).cloned())
            .unwrap_or(Value::Null)
    }
    fn context(&self) -> String {
        format!(
            "VMM exit {:?}\nreport: {:#}\n--- L2 console ---\n{}\n--- VMM stderr ---\n{}",
            self.code, self.report, self.stdout, self.stderr
        )
    }
}

fn vmm_command(inp: &Inputs, cmdline: &str, extra: &[&str], report: &Path, cpus: u32) -> Command {
    let mut c = Command::new(&inp.vmm);
    c.arg("--kernel")
        .arg(&inp.kernel)
        .arg("--initrd")
        .arg(&inp.initrd)
        .args(["--cpus", &cpus.to_string(), "--device", &inp.device])
        .args(["--mem", "256", "--ram-base", "0x40000000"])
        .args([
            "--cmdline",
            &format!("console=ttyS0 earlycon panic=-1 quiet {cmdline}"),
        ])
        .args(extra)
        .arg("--report")
        .arg(report)
        .env("PASSTHROUGH_VMM_LOG", "info")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Pings L2 from L1 until `done`, counting replies.
fn pinger(
    inp: &Inputs,
    done: &Arc<AtomicBool>,
    replies: &Arc<AtomicU32>,
) -> std::thread::JoinHandle<()> {
    let (done, replies) = (Arc::clone(done), Arc::clone(replies));
    let (iface, addr) = (inp.l1_iface.clone(), inp.l2_addr.clone());
    std::thread::spawn(move || {
        while !done.load(Ordering::SeqCst) {
            let (ok, _) = busybox(&["ping6", "-c", "1", "-W", "1", "-I", &iface, &addr]);
            if ok {
                replies.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    })
}

/// One VMM run to completion.
fn run_vmm(inp: &Inputs, name: &str, cmdline: &str, extra: &[&str], cpus: u32) -> Run {
    let report_path = PathBuf::from(format!("/tmp/reliability-{name}.json"));
    let _ = std::fs::remove_file(&report_path);
    let started = Instant::now();
    let child = vmm_command(inp, cmdline, extra, &report_path, cpus)
        .spawn()
        .expect("spawning passthrough-vmm");
    let done = Arc::new(AtomicBool::new(false));
    let replies = Arc::new(AtomicU32::new(0));
    let p = pinger(inp, &done, &replies);
    let out = child.wait_with_output().expect("waiting for the VMM");
    done.store(true, Ordering::SeqCst);
    let _ = p.join();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let text = std::fs::read_to_string(&report_path).unwrap_or_else(|e| {
        panic!(
            "{name}: no report: {e} (VMM {:?})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            out.status
        )
    });
    Run {
        code: out.status.code(),
        report: serde_json::from_str(&text).expect("report JSON"),
        stdout,
        stderr,
        l1_replies: replies.load(Ordering::SeqCst),
        wall: started.elapsed(),
    }
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| {
            v.as_str()
                .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

fn append_report(text: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/tmp/e2e-report.txt")
    {
        let _ = f.write_all(text.as_bytes());
    }
    println!("{text}");
}

/// The VMM's own leftovers after teardown, and its isolation patterns.
fn check_vmm_leftovers(run: &Run) -> String {
    let r = &run.report["reliability"];
    let ctx = || run.context();
    let start = &r["at_start"];
    let after = &r["after_teardown"];
    assert_eq!(after["fds"], start["fds"], "fds after teardown\n{}", ctx());
    assert_eq!(after["vm_pin_kb"], 0, "{}", ctx());
    assert_eq!(after["vm_lck_kb"], 0, "{}", ctx());
    assert_eq!(after["threads"], 1, "{}", ctx());
    assert_eq!(r["iommufd_ids"]["all_free"], true, "{}", ctx());
    let iso = &r["isolation"];
    assert!(u64_of(&iso["sentinel_below"]) >= 0x1_0000, "{}", ctx());
    assert!(u64_of(&iso["sentinel_above"]) >= 0x1_0000, "{}", ctx());
    assert_eq!(iso["sentinel_changed"], serde_json::json!([]), "{}", ctx());
    assert_eq!(iso["canary_changed"], 0, "{}", ctx());
    format!(
        "VMM after teardown: {} fds (at start {}), {} mappings (at start {}), VmPin {} kB, VmLck {} kB, {} thread(s); 64 fresh IOASes got IDs {}..{} (highest ID the run used {}); sentinels {} + {} bytes intact, canary {} bytes intact\n",
        after["fds"],
        start["fds"],
        after["maps"],
        start["maps"],
        after["vm_pin_kb"],
        after["vm_lck_kb"],
        after["threads"],
        r["iommufd_ids"]["ids"][0],
        r["iommufd_ids"]["ids"][63],
        r["iommufd_ids"]["highest_used"],
        iso["sentinel_below"],
        iso["sentinel_above"],
        iso["canary_bytes"]
    )
}

/// The host's IPA limit (KVM), for the top-of-IPA target.
fn host_ipa_bits() -> u32 {
    #[cfg(target_arch = "aarch64")]
    {
        let kvm = kvm_ioctls::Kvm::new().expect("/dev/kvm");
        u32::try_from(kvm.get_host_ipa_limit()).unwrap_or(40)
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        40
    }
}

/// The doorbell page (where the kernel maps the physical ITS doorbell): DMA there is
/// an MSI write or a read of the doorbell page, not a fault.
const DOORBELL: u64 = 0x800_0040;

/// The DMA targets: (name, guest-physical address).
fn targets() -> Vec<(&'static str, u64)> {
    let ipa = host_ipa_bits();
    vec![
        ("vITS frame (GITS_CTLR page)", 0x7ff_0000),
        ("vITS doorbell page (GITS_TRANSLATER)", DOORBELL),
        ("MSI window beyond the doorbell page", 0x801_0000),
        ("just below guest RAM", 0x3fff_f000),
        ("just above guest RAM", 0x5000_0000),
        ("PCIe window (the igb's own BAR0)", 0x1000_0000),
        ("top of the IPA space", (1u64 << ipa) - 0x1000),
        ("top of the host's IOVA space", 0xffff_ffff_f000),
        ("beyond the host's IOVA space", 0x1_0000_0000_0000),
    ]
}

#[test]
fn hostile_guest_storm_and_dma_isolation() {
    if viommu_boot() || patched() {
        eprintln!("skipped: runs in the plain upstream boot");
        return;
    }
    let Some(inp) = inputs() else { return };
    l1_up(&inp.l1_iface);
    let canary = L1Canary::new(64 << 20);
    let targets = targets();
    let list: Vec<String> = targets.iter().map(|(_, a)| format!("{a:#x}")).collect();
    let marker = kmsg_marker("isolation");
    let run = run_vmm(
        &inp,
        "hostile",
        &format!(
            "hostile_mode=full hostile_peer={} hostile_storm=10 hostile_targets={} hostile_linger=4",
            inp.l1_addr,
            list.join(",")
        ),
        &[],
        2,
    );
    let log = kmsg_after(&marker);
    let ctx = || run.context();
    let mut text = format!(
        "=== hostile guest: {:.1} s, VMM exit {:?}, guest status {}\n",
        run.wall.as_secs_f64(),
        run.code,
        run.report["exit"]["guest_status"]
    );

    // The VMM ran through it all and the guest's own checks held.
    assert_eq!(run.code, Some(0), "{}", ctx());
    assert!(!run.stderr.contains("ERROR"), "{}", ctx());
    assert_eq!(run.phase("summary")["errors"], "", "{}", ctx());
    for (k, v) in run.report["passthrough"]["faults"]
        .as_object()
        .cloned()
        .unwrap_or_default()
    {
        if k != "guest_address_not_doorbell" {
            assert_eq!(v, 0, "host fault counter {k}\n{}", ctx());
        }
    }

    // The storm: it ran, the pings on the other vCPU kept their answers, the routes never
    // left the trap handler's view, the device never held the guest's data.
    let storm = run.phase("storm");
    let sd = &storm["data"];
    let writes = u64_of(&sd["unused_entry_writes"]);
    assert!(writes > 100, "{}", ctx());
    let used = u64_of(&sd["used_vectors"]);
    let size = u64_of(&sd["table_size"]);
    let m = &run.report["reliability"]["monitor"];
    assert!(u64_of(&m["samples"]) > 50, "{}", ctx());
    assert_eq!(m["mismatch_samples"], 0, "{}", ctx());
    assert_eq!(m["guest_data_on_device"], 0, "{}", ctx());
    assert!(
        u64_of(&m["max_deliverable"]) >= size,
        "the storm's vectors never became deliverable\n{}",
        ctx()
    );
    let real = m["real_data"].as_object().cloned().unwrap_or_default();
    for v in used..size {
        assert!(
            real.contains_key(&v.to_string()),
            "vector {v} was never enabled on the device\n{}",
            ctx()
        );
    }
    for (v, values) in &real {
        for d in values.as_array().cloned().unwrap_or_default() {
            assert_ne!(
                u64_of(&d) >> 16,
                0x5a5a,
                "vector {v}: the device held guest data {d}\n{}",
                ctx()
            );
        }
    }
    text += &format!(
        "storm: {} s on vCPU 1, {} unused-entry writes, {} rewrites of the driver's {} entries, {} Function Mask pulses, {} PBA writes, {} table reads; pings on vCPU 0 {}/{}\n",
        sd["seconds"],
        writes,
        sd["used_entry_rewrites"],
        used,
        sd["function_mask_pulses"],
        sd["pba_writes"],
        sd["table_reads"],
        storm["ping_received"],
        storm["ping_sent"]
    );
    text += &format!(
        "route monitor: {} samples, {} with live routes, {} mismatches, up to {} vectors deliverable and {} routes; guest data on the device: {}; real data dwords seen {}\n",
        m["samples"],
        m["samples_with_live_routes"],
        m["mismatch_samples"],
        m["max_deliverable"],
        m["max_routes"],
        m["guest_data_on_device"],
        m["real_data"]
    );

    // The isolation attacks.
    let iso = run.phase("isolation");
    let d = &iso["data"];
    assert_eq!(iso["rc"], 0, "{}", ctx());
    assert_eq!(d["errors"], serde_json::json!([]), "{}", ctx());
    assert_eq!(d["witness_intact"], true, "{}", ctx());
    let attacks = d["attacks"].as_array().cloned().unwrap_or_default();
    assert_eq!(attacks.len(), targets.len() * 4, "{}", ctx());
    assert_eq!(
        d["link_up"],
        true,
        "the loopback attacks need the link\n{}",
        ctx()
    );
    for a in &attacks {
        let kind = a["kind"].as_str().unwrap_or("?");
        match kind {
            // The descriptor or the buffer at the target: nothing is sent, so nothing comes
            // back through the loopback into the guest's RX buffer (a read of host memory
            // would show there).
            "tx-ring" | "tx-buffer" => {
                assert_eq!(a["rx_dd"], false, "{a}\n{}", ctx());
                assert_eq!(a["rx_buffer_intact"], true, "{a}\n{}", ctx());
            }
            // The packet goes to the target, not to the guest's own RX buffer.
            "rx-buffer" => assert_eq!(a["rx_buffer_intact"], true, "{a}\n{}", ctx()),
            // A good packet: it comes back whole (the loopback works, so the negative results
            // above mean something).
            "tx-head-wb" => {
                assert_eq!(a["rx_dd"], true, "{a}\n{}", ctx());
                assert_eq!(a["rx_frame_ok"], true, "{a}\n{}", ctx());
            }
            other => panic!("unknown attack {other}"),
        }
        assert_eq!(a["tx_buffer_tail_intact"], true, "{a}\n{}", ctx());
    }
    // Every target but the doorbell page faulted in L1's SMMU, for this device, both for
    // a read (the descriptor fetch) and for a write (the head write-back).
    let faults = smmu_faults(&log, &inp.device);
    let seen = |t: u64, write: bool| {
        faults
            .iter()
            .any(|(a, w)| a & !0xfff == t & !0xfff && *w == write)
    };
    let mut missing = Vec::new();
    for (name, t) in &targets {
        let (r, w) = (seen(*t, false), seen(*t, true));
        if *t & !0xfff == DOORBELL & !0xfff {
            text += &format!(
                "target {t:#x} ({name}): no fault expected (the physical doorbell is mapped there), read fault {r}, write fault {w}; TX head / RX done per attack {:?}\n",
                attacks
                    .iter()
                    .filter(|a| u64_of(&a["target"]) == *t)
                    .map(|a| format!("{}: {}/{}", a["kind"], a["tdh"], a["rx_dd"]))
                    .collect::<Vec<_>>()
            );
            continue;
        }
        text += &format!("target {t:#x} ({name}): SMMU fault in L1 on read {r}, on write {w}\n");
        if !(r && w) {
            missing.push(format!("{t:#x} ({name}): read {r} write {w}"));
        }
    }
    let pages: BTreeSet<u64> = faults.iter().map(|(a, _)| a & !0xfff).collect();
    let outside: Vec<String> = pages
        .iter()
        .filter(|p| !targets.iter().any(|(_, t)| t & !0xfff == **p))
        .map(|p| format!("{p:#x}"))
        .collect();
    let suppressed: u64 = log
        .iter()
        .filter_map(|l| {
            l.split("arm_smmu_dump_event: ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    text += &format!(
        "L1 SMMU events for {}: {} printed ({} more suppressed by the kernel's rate limit), at {} pages; outside the targets: {:?}\n",
        inp.device,
        faults.len(),
        suppressed,
        pages.len(),
        outside
    );
    assert!(
        missing.is_empty(),
        "no SMMU fault for {missing:?}\nL1 log after the marker:\n{}\n{}",
        log.join("\n"),
        ctx()
    );
    assert!(
        outside.is_empty(),
        "faults outside the targets {outside:?}\n{}",
        ctx()
    );

    // The guest binds its driver again and pings; L1 reached L2 too.
    let rebind = run.phase("rebind");
    assert!(u64_of(&rebind["ping_received"]) >= 1, "{}", ctx());
    assert!(
        u64_of(&rebind["irq_after"]) > u64_of(&rebind["irq_before"]),
        "{}",
        ctx()
    );
    assert!(run.l1_replies >= 1, "{}", ctx());
    text += &format!(
        "rebind: driver {}, {} vectors, pings {}, interrupts {} -> {}; L1's pings to L2 answered {}\n",
        rebind["driver"],
        rebind["vectors"],
        rebind["ping_received"],
        rebind["irq_before"],
        rebind["irq_after"],
        run.l1_replies
    );

    // No L1 memory outside the guest's changed.
    assert_eq!(canary.changed(), 0, "L1's 64 MiB pattern changed");
    text += &format!("L1 pattern: {} MiB intact\n", (canary.0.len() * 8) >> 20);
    text += &check_vmm_leftovers(&run);
    append_report(&text);
}

#[test]
fn viommu_guest_dma_faults_reach_the_vmm() {
    if !viommu_boot() || patched() {
        eprintln!("skipped: runs in the vIOMMU boot on the viommu kernel");
        return;
    }
    let Some(inp) = inputs() else { return };
    l1_up(&inp.l1_iface);
    // gIOVAs the guest's stage 1 does not map (its DMA allocator hands out addresses from
    // the top of the 32-bit space down; these stay clear of what the driver mapped).
    let giovas: [u64; 6] = [
        0x7ff_0000,
        DOORBELL,
        0x1000_0000,
        0x4000_0000,
        0x1_0000_0000,
        0xffff_ffff_f000,
    ];
    let list: Vec<String> = giovas.iter().map(|a| format!("{a:#x}")).collect();
    let run = run_vmm(
        &inp,
        "viommu-hostile",
        &format!(
            "iommu.passthrough=0 hostile_mode=viommu hostile_peer={} hostile_targets={} hostile_kinds=tx-ring hostile_target_pace=300 hostile_linger=4",
            inp.l1_addr,
            list.join(",")
        ),
        &["--viommu", "smmuv3"],
        1,
    );
    let ctx = || run.context();
    assert_eq!(run.code, Some(0), "{}", ctx());
    assert!(!run.stderr.contains("ERROR"), "{}", ctx());
    assert_eq!(run.phase("summary")["errors"], "", "{}", ctx());
    let v = &run.report["passthrough"]["viommu"];
    let addrs: BTreeSet<u64> = v["fault_addresses"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|a| u64_of(a) & !0xfff)
        .collect();
    let missing: Vec<String> = giovas
        .iter()
        .filter(|g| !addrs.contains(&(*g & !0xfff)))
        .map(|g| format!("{g:#x}"))
        .collect();
    assert!(
        missing.is_empty(),
        "the VMM did not report faults at {missing:?}\n{}",
        ctx()
    );
    let rebind = run.phase("rebind");
    assert!(u64_of(&rebind["ping_received"]) >= 1, "{}", ctx());
    let text = format!(
        "=== hostile guest with a vIOMMU: {:.1} s, VMM exit {:?}\nDMA descriptor fetches at gIOVAs {list:?}: {} vEVENTQ records, {} translation faults reported by the VMM at {:?}; rebind: pings {}, interrupts {} -> {}\n{}",
        run.wall.as_secs_f64(),
        run.code,
        v["host_events"],
        v["host_translation_faults"],
        v["fault_addresses"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|a| format!("{:#x}", u64_of(a)))
            .collect::<Vec<_>>(),
        rebind["ping_received"],
        rebind["irq_before"],
        rebind["irq_after"],
        check_vmm_leftovers(&run)
    );
    append_report(&text);
}

/// Starts the VMM in ping-loop mode, waits until L2 pings, SIGKILLs it.
fn killed_run(inp: &Inputs) -> (L1Figures, Duration, String) {
    let report = PathBuf::from("/tmp/reliability-killed.json");
    let mut child = vmm_command(
        inp,
        &format!("hostile_mode=pingloop hostile_peer={}", inp.l1_addr),
        &[],
        &report,
        1,
    )
    .spawn()
    .expect("spawning passthrough-vmm");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut console = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("\"phase\":\"pinging\"") {
                let _ = tx.send(());
            }
            console += &line;
            console.push('\n');
        }
        console
    });
    let up = rx.recv_timeout(Duration::from_secs(180)).is_ok();
    // L1 reaches L2 too, and guest RAM is pinned now.
    let mut l1_ok = false;
    for _ in 0..20 {
        if busybox(&[
            "ping6",
            "-c",
            "1",
            "-W",
            "1",
            "-I",
            &inp.l1_iface,
            &inp.l2_addr,
        ])
        .0
        {
            l1_ok = true;
            break;
        }
    }
    let during = l1_figures();
    let t = Instant::now();
    child.kill().expect("SIGKILL the VMM");
    let status = child.wait().expect("reaping the VMM");
    let died = t.elapsed();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let console = reader.join().unwrap_or_default();
    assert!(
        up,
        "L2 never reported pinging\n--- console ---\n{console}\n--- stderr ---\n{stderr}"
    );
    assert!(l1_ok, "L1 could not ping L2 before the kill");
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    (during, died, console)
}

#[test]
fn vmm_killed_while_pinging_leaves_nothing_and_the_next_run_works() {
    if viommu_boot() || patched() {
        eprintln!("skipped: runs in the plain upstream boot");
        return;
    }
    let Some(inp) = inputs() else { return };
    l1_up(&inp.l1_iface);
    let ids_before = bind_probe(&inp.device);
    let before = stable_figures();
    let (during, died, _) = killed_run(&inp);
    assert!(
        during.pinned_pages >= 65536,
        "guest RAM (256 MiB) was not pinned while the VMM ran: {during:?} vs {before:?}"
    );
    let (after_kill, settled) = settle(before);
    assert!(
        after_kill.within(&before),
        "after SIGKILL, {settled:?} later: something was left: {after_kill:?} vs {before:?}"
    );
    let ids_after = bind_probe(&inp.device);
    assert_eq!(ids_after, ids_before, "object IDs on a fresh iommufd");
    // The next run on the same device.
    let run = run_vmm(
        &inp,
        "after-kill",
        &format!("hostile_mode=quick hostile_peer={}", inp.l1_addr),
        &[],
        1,
    );
    let ctx = || run.context();
    assert_eq!(run.code, Some(0), "{}", ctx());
    assert!(!run.stderr.contains("ERROR"), "{}", ctx());
    let b = run.phase("baseline");
    assert!(u64_of(&b["ping_received"]) >= 1, "{}", ctx());
    assert!(
        u64_of(&b["irq_after"]) > u64_of(&b["irq_before"]),
        "{}",
        ctx()
    );
    let leftovers = check_vmm_leftovers(&run);
    let (end, _) = settle(before);
    assert!(
        end.within(&before),
        "after the next run: {end:?} vs {before:?}"
    );
    append_report(&format!(
        "=== crash recovery: SIGKILL while L2 pinged; the VMM was gone {died:?} after the signal\n\
         L1 before: {before:?}\nL1 while running: {during:?}\nL1 after the kill ({settled:?} to settle): {after_kill:?}\n\
         fresh iommufd bind/IOAS IDs before {ids_before:?}, after {ids_after:?}\n\
         next run: {:.1} s, exit {:?}, pings {}, interrupts {} -> {}, L1's pings answered {}\n{leftovers}L1 at the end: {end:?}\n",
        run.wall.as_secs_f64(),
        run.code,
        b["ping_received"],
        b["irq_before"],
        b["irq_after"],
        run.l1_replies
    ));
}

#[test]
fn soak_full_runs_leave_nothing_behind() {
    let Some(runs) = std::env::var("RELIABILITY_SOAK_RUNS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    else {
        eprintln!("skipped: RELIABILITY_SOAK_RUNS is not set (testhost_e2e --soak N)");
        return;
    };
    let Some(inp) = inputs() else { return };
    l1_up(&inp.l1_iface);
    let ids_before = bind_probe(&inp.device);
    let before = stable_figures();
    let mut text = format!(
        "=== soak: {runs} full runs in one L1 boot\nL1 before: {before:?}, fresh iommufd IDs {ids_before:?}\n\
         run | wall s | exit | pings | irqs | L1 replies | VMM fds start/after | VmPin/VmLck kB after | IOAS IDs free | L1 pinned pages | L1 Mlocked kB | L1 files | settle ms | fresh IDs\n"
    );
    for n in 1..=runs {
        let run = run_vmm(
            &inp,
            &format!("soak-{n}"),
            &format!("hostile_mode=quick hostile_peer={}", inp.l1_addr),
            &[],
            1,
        );
        let ctx = || run.context();
        assert_eq!(run.code, Some(0), "run {n}\n{}", ctx());
        let b = run.phase("baseline");
        assert!(u64_of(&b["ping_received"]) >= 1, "run {n}\n{}", ctx());
        check_vmm_leftovers(&run);
        let (now, settled) = settle(before);
        let ids = bind_probe(&inp.device);
        let r = &run.report["reliability"];
        text += &format!(
            "{n} | {:.1} | {:?} | {} | {}->{} | {} | {}/{} | {}/{} | {} | {} | {} | {} | {} | {:?}\n",
            run.wall.as_secs_f64(),
            run.code,
            b["ping_received"],
            b["irq_before"],
            b["irq_after"],
            run.l1_replies,
            r["at_start"]["fds"],
            r["after_teardown"]["fds"],
            r["after_teardown"]["vm_pin_kb"],
            r["after_teardown"]["vm_lck_kb"],
            r["iommufd_ids"]["all_free"],
            now.pinned_pages,
            now.mlocked_kb,
            now.files,
            settled.as_millis(),
            ids
        );
        assert!(now.within(&before), "run {n}: L1 figures grew\n{text}");
        assert_eq!(ids, ids_before, "run {n}: fresh iommufd IDs\n{text}");
    }
    append_report(&text);
}
