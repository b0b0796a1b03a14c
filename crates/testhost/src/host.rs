// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! [`TestHost`]: one boot of the test VM, from the pieces (kernel, initramfs contents, NICs,
//! plan) to the parsed results.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::Error;
use crate::arch::Arch;
use crate::initramfs::Initramfs;
use crate::plan::{PlanStep, render_plan, shell_quote, validate_suite_name};
use crate::protocol::{Expectations, Failure, RunReport, Tally, parse_results};
use crate::qemu::{MAX_NICS, VmConfig, VmExit, run_vm};

/// The `/init` script (see `src/init.sh`).
pub const INIT_SCRIPT: &str = include_str!("init.sh");
/// Where test binaries added with [`TestHost::test_binary`] go in the guest.
pub const GUEST_BIN_DIR: &str = "/testhost/bin";
/// Paths the harness writes itself; extra files may not use them.
pub const RESERVED_PATHS: [&str; 5] = [
    "/init",
    "/bin/busybox",
    "/dev/console",
    "/testhost/config",
    "/testhost/plan",
];
/// The default whole-run limit.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Results beyond this size are not read (the guest is not trusted to be brief).
pub const MAX_RESULTS_BYTES: u64 = 256 << 20;

/// One configured boot of the test VM.
///
/// # Example
///
/// ```no_run
/// use std::path::Path;
/// use testhost::host::TestHost;
/// use testhost::plan::PlanStep;
///
/// let mut host = TestHost::new(
///     "/work/shared/kernel/Image-arm64",
///     "/var/cache/passthrough-testhost/busybox/bin/busybox",
///     "target/testhost/e2e",
/// );
/// // Two NICs: the first stays on igb for the L1 host, the second goes to vfio-pci.
/// host.nics(2).bind([1]);
/// host.files().host_file("/usr/bin/vmm", 0o755, "target/aarch64/debug/vmm")?;
/// host.step(PlanStep::lines("e2e", "/usr/bin/vmm").arg("--passthrough"));
/// let outcome = host.run()?;
/// println!("{} ({})", outcome.tally(), outcome.console_log.display());
/// # Ok::<(), testhost::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct TestHost {
    arch: Arch,
    kernel: PathBuf,
    busybox: PathBuf,
    run_dir: PathBuf,
    qemu: Option<PathBuf>,
    nics: u8,
    /// `None`: every NIC.
    bind: Option<BTreeSet<u8>>,
    kernel_args: Vec<String>,
    timeout: Duration,
    memory_mib: u32,
    cpus: u8,
    files: Initramfs,
    plan: Vec<PlanStep>,
}

impl TestHost {
    /// An aarch64 VM booting `kernel` with the static aarch64 `busybox`, its files in
    /// `run_dir`. Defaults: 2 NICs, all bound to vfio-pci; 2 vCPUs, 2 GiB;
    /// [`DEFAULT_TIMEOUT`]. [`Self::arch`] switches to riscv64 (the kernel, busybox and test
    /// binaries must then be riscv64 ones).
    pub fn new(
        kernel: impl Into<PathBuf>,
        busybox: impl Into<PathBuf>,
        run_dir: impl Into<PathBuf>,
    ) -> Self {
        TestHost {
            arch: Arch::Aarch64,
            kernel: kernel.into(),
            busybox: busybox.into(),
            run_dir: run_dir.into(),
            qemu: None,
            nics: 2,
            bind: None,
            kernel_args: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            memory_mib: 2048,
            cpus: 2,
            files: Initramfs::new(),
            plan: Vec::new(),
        }
    }

    /// Sets the VM's architecture (and so its QEMU machine and console).
    pub fn arch(&mut self, arch: Arch) -> &mut Self {
        self.arch = arch;
        self
    }

    /// The VM's architecture.
    pub fn architecture(&self) -> Arch {
        self.arch
    }

    /// Uses another QEMU binary.
    pub fn qemu(&mut self, qemu: impl Into<PathBuf>) -> &mut Self {
        self.qemu = Some(qemu.into());
        self
    }

    /// Sets the number of igb NICs (at most [`MAX_NICS`]). Bind indices at or above it are
    /// an error at [`Self::run`].
    pub fn nics(&mut self, count: u8) -> &mut Self {
        self.nics = count;
        self
    }

    /// Sets which NICs (indices in PCI address order) `/init` binds to vfio-pci; the others
    /// keep the igb driver. Without it every NIC is bound.
    pub fn bind(&mut self, indices: impl IntoIterator<Item = u8>) -> &mut Self {
        self.bind = Some(indices.into_iter().collect());
        self
    }

    /// The NICs that go to vfio-pci, in index order.
    pub fn bound_nics(&self) -> Vec<u8> {
        match &self.bind {
            Some(set) => set.iter().copied().collect(),
            None => (0..self.nics).collect(),
        }
    }

    /// Appends a kernel argument.
    pub fn kernel_arg(&mut self, arg: impl Into<String>) -> &mut Self {
        self.kernel_args.push(arg.into());
        self
    }

    /// Sets the whole-run limit; QEMU is killed when it passes and the run fails.
    pub fn timeout(&mut self, limit: Duration) -> &mut Self {
        self.timeout = limit;
        self
    }

    /// Sets guest memory.
    pub fn memory_mib(&mut self, mib: u32) -> &mut Self {
        self.memory_mib = mib;
        self
    }

    /// Sets the vCPU count.
    pub fn cpus(&mut self, cpus: u8) -> &mut Self {
        self.cpus = cpus;
        self
    }

    /// Extra initramfs contents (anything but [`RESERVED_PATHS`]).
    pub fn files(&mut self) -> &mut Initramfs {
        &mut self.files
    }

    /// Appends a plan step.
    pub fn step(&mut self, step: PlanStep) -> &mut Self {
        self.plan.push(step);
        self
    }

    /// Adds the libtest executable `host` at `/testhost/bin/<suite with / as ->` and a
    /// libtest step for it.
    pub fn test_binary(&mut self, suite: &str, host: &Path) -> Result<&mut Self, Error> {
        validate_suite_name(suite)?;
        let guest = format!("{GUEST_BIN_DIR}/{}", suite.replace('/', "-"));
        self.files.host_file(&guest, 0o755, host)?;
        self.plan.push(PlanStep::libtest(suite, guest));
        Ok(self)
    }

    /// The plan so far.
    pub fn plan(&self) -> &[PlanStep] {
        &self.plan
    }

    /// Where this run's files go.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The VM this host boots (initramfs at `<run_dir>/initramfs.cpio`).
    pub fn vm_config(&self) -> VmConfig {
        let mut vm = VmConfig::new_for(
            self.arch,
            &self.kernel,
            self.run_dir.join("initramfs.cpio"),
            &self.run_dir,
        );
        if let Some(q) = &self.qemu {
            vm.qemu = q.clone();
        }
        vm.nics = self.nics;
        vm.memory_mib = self.memory_mib;
        vm.cpus = self.cpus;
        vm.kernel_args = self.kernel_args.clone();
        vm
    }

    /// What the results must show.
    pub fn expectations(&self) -> Expectations {
        Expectations {
            suites: self
                .plan
                .iter()
                .map(|s| (s.suite().to_owned(), s.format()))
                .collect(),
            nics: u32::from(self.nics),
            bind: self.bound_nics().into_iter().map(u32::from).collect(),
        }
    }

    fn check(&self) -> Result<(), Error> {
        if self.nics > MAX_NICS {
            return Err(Error::Config {
                what: "NIC count",
                reason: format!("{} NICs asked for, at most {MAX_NICS} fit", self.nics),
            });
        }
        if let Some(i) = self.bound_nics().iter().find(|i| **i >= self.nics) {
            return Err(Error::Config {
                what: "NIC binding",
                reason: format!(
                    "NIC {i} asked for vfio-pci, the VM has {} NIC(s)",
                    self.nics
                ),
            });
        }
        if self.timeout.is_zero() {
            return Err(Error::Config {
                what: "timeout",
                reason: "zero".to_owned(),
            });
        }
        for path in RESERVED_PATHS {
            if self.files.contains(path) {
                return Err(Error::Config {
                    what: "initramfs contents",
                    reason: format!("{path} is written by the harness"),
                });
            }
        }
        Ok(())
    }

    /// The complete initramfs: busybox, `/init`, `/dev/console`, the mount points, the
    /// config and plan files, and the extra files.
    pub fn initramfs(&self) -> Result<Initramfs, Error> {
        self.check()?;
        let plan = render_plan(&self.plan)?;
        let bind: Vec<String> = self.bound_nics().iter().map(u8::to_string).collect();
        let config = format!(
            "# Generated by testhost.\nTESTHOST_BIND={}\n",
            shell_quote(&bind.join(" "))
        );
        let mut fs = self.files.clone();
        fs.host_file("/bin/busybox", 0o755, &self.busybox)?;
        fs.bytes("/init", 0o755, INIT_SCRIPT.as_bytes().to_vec())?;
        // The kernel opens /dev/console for init's stdio before /init mounts devtmpfs.
        fs.char_device("/dev/console", 0o600, 5, 1)?;
        for dir in ["/proc", "/sys", "/tmp", "/testhost"] {
            fs.dir(dir, 0o755)?;
        }
        fs.bytes("/testhost/config", 0o644, config.into_bytes())?;
        fs.bytes("/testhost/plan", 0o644, plan.into_bytes())?;
        Ok(fs)
    }

    /// Packs the initramfs, boots the VM, waits for it (at most the timeout), and parses
    /// the results. A guest failure is in the [`RunOutcome`]; `Err` means the harness itself
    /// could not do its work (bad configuration, missing file, QEMU not startable).
    pub fn run(&self) -> Result<RunOutcome, Error> {
        self.arch.check_image(&self.kernel)?;
        let fs = self.initramfs()?;
        let vm = self.vm_config();
        let args = vm.args()?;
        fs::create_dir_all(&self.run_dir).map_err(|source| Error::Io {
            op: "create run directory",
            path: self.run_dir.clone(),
            source,
        })?;
        for old in [&vm.console_log, &vm.results_log] {
            match fs::remove_file(old) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Io {
                        op: "remove previous",
                        path: old.clone(),
                        source,
                    });
                }
            }
        }
        let packing = Instant::now();
        let initramfs_bytes = fs.write_file(&vm.initrd)?;
        let pack_time = packing.elapsed();
        let qemu_log = self.run_dir.join("qemu.log");
        let exit = run_vm(&vm.qemu, &args, &qemu_log, self.timeout)?;
        let report = read_results(&vm.results_log, self.expectations())?;
        Ok(RunOutcome {
            report,
            exit,
            timeout: self.timeout,
            console_log: vm.console_log,
            results_log: vm.results_log,
            qemu_log,
            initramfs: vm.initrd,
            initramfs_bytes,
            pack_time,
        })
    }
}

/// Reads and parses a results file, at most [`MAX_RESULTS_BYTES`] of it. A missing file
/// (QEMU never started the guest) gives an empty report, which fails for want of `DONE`.
pub fn read_results(path: &Path, expected: Expectations) -> Result<RunReport, Error> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(f) => {
            f.take(MAX_RESULTS_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(|source| Error::Io {
                    op: "read results",
                    path: path.to_owned(),
                    source,
                })?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::Io {
                op: "open results",
                path: path.to_owned(),
                source,
            });
        }
    }
    let oversized = bytes.len() as u64 > MAX_RESULTS_BYTES;
    bytes.truncate(MAX_RESULTS_BYTES as usize);
    let mut report = parse_results(&bytes, expected);
    if oversized {
        report.problems.push(format!(
            "results exceed {MAX_RESULTS_BYTES} bytes; the rest was not read"
        ));
    }
    Ok(report)
}

/// What one boot produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The parsed results.
    pub report: RunReport,
    /// How QEMU ended.
    pub exit: VmExit,
    /// The limit that applied.
    pub timeout: Duration,
    /// The guest console (PL011).
    pub console_log: PathBuf,
    /// The raw results channel.
    pub results_log: PathBuf,
    /// QEMU's own stdout and stderr.
    pub qemu_log: PathBuf,
    /// The initramfs that was booted.
    pub initramfs: PathBuf,
    /// Its size.
    pub initramfs_bytes: u64,
    /// Time spent writing it.
    pub pack_time: Duration,
}

impl RunOutcome {
    /// Every reason the run failed: the report's, then QEMU's (timeout, error exit).
    pub fn failures(&self) -> Vec<Failure> {
        let mut f = self.report.failures();
        let qemu = |reason| Failure {
            subject: "qemu".to_owned(),
            reason,
            output: None,
        };
        if self.exit.timed_out {
            f.push(qemu(format!(
                "killed after the {} s timeout",
                self.timeout.as_secs_f64()
            )));
        } else if !self.exit.status.success() {
            f.push(qemu(format!(
                "exited with {} (see {})",
                self.exit.status,
                self.qemu_log.display()
            )));
        }
        f
    }

    /// Counts for the closing line, QEMU failures included.
    pub fn tally(&self) -> Tally {
        let mut t = self.report.tally();
        t.failed = self.failures().len() as u64;
        t
    }

    /// Whether everything passed.
    pub fn success(&self) -> bool {
        self.failures().is_empty()
    }

    /// The last `lines` lines of the console log (at most its last 256 KiB are read).
    pub fn console_tail(&self, lines: usize) -> String {
        tail(&self.console_log, lines)
    }
}

/// The last `lines` lines of `path`, reading at most its last 256 KiB; a note if unreadable.
pub fn tail(path: &Path, lines: usize) -> String {
    const WINDOW: u64 = 256 << 10;
    let read = || -> std::io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(WINDOW)))?;
        let mut buf = Vec::new();
        f.take(WINDOW).read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::OutputFormat;

    fn host() -> TestHost {
        TestHost::new("/k/Image", "/bb/busybox", "/run")
    }

    #[test]
    fn initramfs_has_the_harness_and_the_tests() {
        let mut h = host();
        h.test_binary("pkg/test/env", Path::new("/t/env-123"))
            .unwrap();
        h.files().bytes("/etc/extra", 0o644, b"x".to_vec()).unwrap();
        let fs = h.initramfs().unwrap();
        let paths: Vec<_> = fs.paths().collect();
        for p in [
            "bin/busybox",
            "init",
            "dev/console",
            "proc",
            "sys",
            "tmp",
            "testhost/config",
            "testhost/plan",
            "testhost/bin/pkg-test-env",
            "etc/extra",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
        assert_eq!(h.plan()[0].program(), "/testhost/bin/pkg-test-env");
        assert_eq!(
            h.expectations(),
            Expectations {
                suites: vec![("pkg/test/env".into(), OutputFormat::Libtest)],
                nics: 2,
                bind: vec![0, 1],
            }
        );
    }

    #[test]
    fn config_and_plan_files_are_rendered() {
        let d = std::env::temp_dir().join(format!("testhost-host-cfg-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("busybox"), b"bb").unwrap();
        let mut h = TestHost::new("/k", d.join("busybox"), &d);
        h.nics(3).bind([2, 0]);
        h.step(PlanStep::lines("s", "/bin/true"));
        let fs = h.initramfs().unwrap();
        let archive = fs.write_to(Vec::new()).unwrap();
        let entries = crate::cpio::tests::decode(&archive);
        let file = |name: &str| {
            String::from_utf8(
                entries
                    .iter()
                    .find(|e| e.name == name)
                    .unwrap()
                    .data
                    .clone(),
            )
            .unwrap()
        };
        assert!(file("testhost/config").contains("TESTHOST_BIND='0 2'\n"));
        assert!(file("testhost/plan").contains("step 's' 0 '/bin/true'\n"));
        assert!(file("init").starts_with("#!/bin/busybox sh\n"));
        assert_eq!(file("bin/busybox"), "bb");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_setups_are_refused_before_booting() {
        let mut h = host();
        h.nics(1);
        // Default binding follows the NIC count.
        assert_eq!(h.bound_nics(), [0]);
        h.initramfs().unwrap();
        h.bind([1]);
        assert!(matches!(
            h.initramfs(),
            Err(Error::Config {
                what: "NIC binding",
                ..
            })
        ));
        h.bind([0]);
        h.initramfs().unwrap();
        h.nics(MAX_NICS + 1);
        assert!(matches!(
            h.initramfs(),
            Err(Error::Config {
                what: "NIC count",
                ..
            })
        ));
        let mut h = host();
        h.files().bytes("/init", 0o755, vec![]).unwrap();
        assert!(matches!(h.initramfs(), Err(Error::Config { .. })));
        let mut h = host();
        h.timeout(Duration::ZERO);
        assert!(h.initramfs().is_err());
        let mut h = host();
        assert!(h.test_binary("bad name", Path::new("/x")).is_err());
        h.step(PlanStep::lines("s", "/a"))
            .step(PlanStep::lines("s", "/b"));
        assert!(matches!(h.initramfs(), Err(Error::Plan(_))));
    }

    #[test]
    fn vm_follows_the_host_settings() {
        let mut h = host();
        h.nics(1)
            .bind([])
            .memory_mib(1024)
            .cpus(1)
            .kernel_arg("loglevel=3")
            .qemu("/q");
        let vm = h.vm_config();
        assert_eq!(vm.qemu, Path::new("/q"));
        assert_eq!(vm.nics, 1);
        assert_eq!(vm.memory_mib, 1024);
        assert_eq!(vm.initrd, Path::new("/run/initramfs.cpio"));
        assert!(vm.cmdline().unwrap().ends_with(" loglevel=3"));
    }

    #[test]
    fn init_script_is_valid_shell() {
        // `sh -n` parses without running; the in-guest run is the real test.
        let out = std::process::Command::new("sh")
            .args(["-n", "-c", INIT_SCRIPT])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn results_are_read_with_a_cap_and_missing_file_is_empty() {
        let d = std::env::temp_dir().join(format!("testhost-host-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        let r = read_results(&d.join("none"), Expectations::default()).unwrap();
        assert_eq!(r.done_uptime, None);
        assert!(!r.success());
        fs::write(d.join("res"), "HELLO 1\nDONE 2.5\n").unwrap();
        let r = read_results(&d.join("res"), Expectations::default()).unwrap();
        assert!(r.success(), "{:?}", r.failures());
        fs::write(d.join("log"), "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail(&d.join("log"), 2), "c\nd");
        assert_eq!(tail(&d.join("log"), 10), "a\nb\nc\nd");
        assert!(tail(&d.join("nope"), 2).starts_with("(cannot read"));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn run_refuses_a_non_arm64_kernel() {
        let d = std::env::temp_dir().join(format!("testhost-host-k-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("Image"), vec![0u8; 4096]).unwrap();
        let err = TestHost::new(d.join("Image"), "/bb", &d).run().unwrap_err();
        assert!(matches!(err, Error::Kernel { .. }), "{err}");
        // An arm64 Image is not a riscv64 one.
        let mut header = vec![0u8; 4096];
        header[0x38..0x3c].copy_from_slice(b"ARM\x64");
        fs::write(d.join("Image"), &header).unwrap();
        let mut host = TestHost::new(d.join("Image"), "/bb", &d);
        host.arch(Arch::Riscv64);
        assert_eq!(host.architecture(), Arch::Riscv64);
        assert_eq!(host.vm_config().qemu, Path::new("qemu-system-riscv64"));
        let err = host.run().unwrap_err();
        assert!(err.to_string().contains("riscv64"), "{err}");
        fs::remove_dir_all(&d).unwrap();
    }
}
