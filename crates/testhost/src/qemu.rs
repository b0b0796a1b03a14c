// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The test VM: QEMU TCG aarch64 `virt` with GICv3 + ITS, SMMUv3 in front of the PCIe root
//! complex, EL2 (so KVM works inside), igb NICs on a QEMU-internal hub, a virtio-serial port
//! for results, and the PL011 console in a file.
//!
//! Or, with [`Arch::Riscv64`], QEMU TCG riscv64 `virt` with the AIA (APLIC in MSI mode and an
//! IMSIC per hart with [`RISCV_AIA_GUESTS`] guest interrupt files, `aia=aplic-imsic`), the
//! H extension (so KVM works inside, its AIA device using the guest files), Sstc, and the
//! RISC-V IOMMU as a PCI function (`riscv-iommu-pci` at slot 1) in front of the other PCI
//! devices; same NICs, results port and console file (the machine's 16550). OpenSBI comes
//! from QEMU's default firmware (Debian's `opensbi` package).
//!
//! Networking never leaves QEMU: `-nodefaults` drops the default user-mode NIC, and each
//! igb is a `hubport` on hub 0, so the NICs reach each other and nothing else
//! (`tests::no_network_leaves_qemu`).
//!
//! PCI layout (bus 0, all behind the SMMUv3): the results port's virtio-serial-pci at slot
//! 2, NIC `i` at slot `4 + 2 * i`. The stride is 2 because QEMU reserves the igb's SR-IOV
//! VF functions at devfn + 0x80 with stride 2 (8 VFs), so NICs one slot apart would claim
//! the same VF functions; six NICs (slots 4..=14) keep every VF below devfn 0x100.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::Error;
use crate::arch::Arch;

/// The aarch64 QEMU binary looked up on `PATH` unless another is given ([`Arch::qemu`]).
pub const DEFAULT_QEMU: &str = "qemu-system-aarch64";
/// The riscv64 machine: AIA with APLIC + IMSIC and guest interrupt files.
pub const RISCV_MACHINE: &str = "virt,aia=aplic-imsic,aia-guests=5";
/// Guest interrupt files per hart on riscv64 (GEILEN), for KVM's hardware-accelerated AIA.
pub const RISCV_AIA_GUESTS: u8 = 5;
/// The riscv64 CPU: RV64GC with the H extension, Smaia/Ssaia (the AIA CSRs, `*iselect`,
/// `*topei`) and Sstc.
pub const RISCV_CPU: &str = "rv64,h=true,ssaia=true,smaia=true,sstc=true";
/// PCI slot of the RISC-V IOMMU on riscv64.
pub const RISCV_IOMMU_SLOT: u8 = 1;
/// Most igb NICs a VM can have (see the module docs for the slot layout).
pub const MAX_NICS: u8 = 6;
/// PCI vendor and device ID of QEMU's igb (Intel 82576).
pub const IGB_ID: (u16, u16) = (0x8086, 0x10c9);
/// Name of the virtio-serial port that carries results.
pub const RESULTS_PORT: &str = "results";
/// The arm64 kernel command line limit (`COMMAND_LINE_SIZE`, including the NUL);
/// [`Arch::max_cmdline`] for either architecture.
pub const MAX_CMDLINE: usize = 2048;
/// Kernel arguments always passed on arm64: console on the PL011, our /init, and reboot at
/// once on panic (which `-no-reboot` turns into QEMU exiting) so a crash ends the run
/// quickly. On riscv64 the console is `ttyS0` ([`Arch::console`]).
pub const BASE_KERNEL_ARGS: [&str; 3] = ["console=ttyAMA0", "rdinit=/init", "panic=-1"];

const RESULTS_SLOT: u8 = 2;
const NIC_FIRST_SLOT: u8 = 4;
const NIC_SLOT_STRIDE: u8 = 2;

/// The PCI slot of NIC `index`, if `index < MAX_NICS`.
fn nic_slot(index: u8) -> Option<u8> {
    (index < MAX_NICS).then(|| NIC_FIRST_SLOT + NIC_SLOT_STRIDE * index)
}

/// The guest PCI address (`0000:00:SS.0`) of NIC `index`, if `index < MAX_NICS`.
pub fn nic_bdf(index: u8) -> Option<String> {
    nic_slot(index).map(|slot| format!("0000:00:{slot:02x}.0"))
}

/// The MAC address of NIC `index` (locally administered, QEMU's 52:54:00 prefix).
pub fn nic_mac(index: u8) -> String {
    format!("52:54:00:7e:57:{:02x}", index)
}

/// Escapes a value for QEMU's `key=value,...` option syntax (a comma is written twice).
fn qemu_opt_value(what: &'static str, path: &Path) -> Result<String, Error> {
    let s = path.to_str().ok_or_else(|| Error::Config {
        what,
        reason: format!("path {} is not UTF-8", path.display()),
    })?;
    Ok(s.replace(',', ",,"))
}

/// What the VM looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// The machine's architecture.
    pub arch: Arch,
    /// QEMU binary.
    pub qemu: PathBuf,
    /// Kernel `Image` of [`Self::arch`].
    pub kernel: PathBuf,
    /// Initramfs (newc cpio).
    pub initrd: PathBuf,
    /// Number of igb NICs, at most [`MAX_NICS`].
    pub nics: u8,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub cpus: u8,
    /// Kernel arguments after [`BASE_KERNEL_ARGS`].
    pub kernel_args: Vec<String>,
    /// Where the PL011 console goes.
    pub console_log: PathBuf,
    /// Where the results port goes.
    pub results_log: PathBuf,
}

impl VmConfig {
    /// The default aarch64 VM (2 vCPUs, 2 GiB, 2 NICs) for `kernel` and `initrd`, with its
    /// logs in `run_dir`.
    pub fn new(kernel: impl Into<PathBuf>, initrd: impl Into<PathBuf>, run_dir: &Path) -> Self {
        Self::new_for(Arch::Aarch64, kernel, initrd, run_dir)
    }

    /// The default VM of `arch` (2 vCPUs, 2 GiB, 2 NICs, [`Arch::qemu`]).
    pub fn new_for(
        arch: Arch,
        kernel: impl Into<PathBuf>,
        initrd: impl Into<PathBuf>,
        run_dir: &Path,
    ) -> Self {
        VmConfig {
            arch,
            qemu: PathBuf::from(arch.qemu()),
            kernel: kernel.into(),
            initrd: initrd.into(),
            nics: 2,
            memory_mib: 2048,
            cpus: 2,
            kernel_args: Vec::new(),
            console_log: run_dir.join("console.log"),
            results_log: run_dir.join("results.log"),
        }
    }

    /// The kernel command line.
    pub fn cmdline(&self) -> Result<String, Error> {
        for arg in &self.kernel_args {
            if arg.is_empty() || arg.chars().any(|c| c.is_control()) {
                return Err(Error::Config {
                    what: "kernel argument",
                    reason: format!("{arg:?} is empty or has control characters"),
                });
            }
        }
        let console = format!("console={}", self.arch.console());
        let line = std::iter::once(console.as_str())
            .chain(BASE_KERNEL_ARGS[1..].iter().copied())
            .chain(self.kernel_args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        let max = self.arch.max_cmdline();
        if line.len() >= max {
            return Err(Error::Config {
                what: "kernel command line",
                reason: format!(
                    "{} bytes, the {} limit is {}",
                    line.len(),
                    self.arch,
                    max - 1
                ),
            });
        }
        Ok(line)
    }

    /// The QEMU arguments (without the program name).
    pub fn args(&self) -> Result<Vec<OsString>, Error> {
        if self.nics > MAX_NICS {
            return Err(Error::Config {
                what: "NIC count",
                reason: format!("{} NICs asked for, at most {MAX_NICS} fit", self.nics),
            });
        }
        if self.cpus == 0 || self.memory_mib < 128 {
            return Err(Error::Config {
                what: "VM size",
                reason: format!(
                    "{} vCPUs and {} MiB: at least 1 vCPU and 128 MiB",
                    self.cpus, self.memory_mib
                ),
            });
        }
        let console = qemu_opt_value("console log", &self.console_log)?;
        let results = qemu_opt_value("results log", &self.results_log)?;
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        let (machine, cpu) = match self.arch {
            Arch::Aarch64 => (
                "virt,gic-version=3,its=on,iommu=smmuv3,virtualization=on",
                "max",
            ),
            Arch::Riscv64 => (RISCV_MACHINE, RISCV_CPU),
        };
        push(&[
            "-M",
            machine,
            "-cpu",
            cpu,
            "-smp",
            &self.cpus.to_string(),
            "-m",
            &self.memory_mib.to_string(),
            "-accel",
            "tcg,thread=multi",
            // No default devices (above all no default user-mode NIC), no monitor, no
            // display: the console goes to a file, results to the virtio port.
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-chardev",
            &format!("file,id=console,path={console}"),
            "-serial",
            "chardev:console",
            "-device",
            &format!("virtio-serial-pci,id=results-bus,addr={RESULTS_SLOT:#x}"),
            "-chardev",
            &format!("file,id=results,path={results}"),
            "-device",
            &format!("virtserialport,bus=results-bus.0,chardev=results,name={RESULTS_PORT}"),
        ]);
        if self.arch == Arch::Riscv64 {
            push(&[
                "-device",
                &format!("riscv-iommu-pci,addr={RISCV_IOMMU_SLOT:#x}"),
            ]);
        }
        for i in 0..self.nics {
            // i < nics <= MAX_NICS (checked above), so this is at most 14.
            let slot = NIC_FIRST_SLOT + NIC_SLOT_STRIDE * i;
            push(&[
                "-netdev",
                &format!("hubport,id=net{i},hubid=0"),
                "-device",
                &format!("igb,netdev=net{i},mac={},addr={slot:#x}", nic_mac(i)),
            ]);
        }
        a.push("-kernel".into());
        a.push(self.kernel.clone().into_os_string());
        a.push("-initrd".into());
        a.push(self.initrd.clone().into_os_string());
        a.push("-append".into());
        a.push(self.cmdline()?.into());
        Ok(a)
    }
}

/// How QEMU ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmExit {
    /// QEMU's exit status (after a kill on timeout, the kill's).
    pub status: ExitStatus,
    /// Whether the timeout killed it.
    pub timed_out: bool,
    /// Wall time from spawn to exit.
    pub elapsed: Duration,
}

/// How often a running QEMU is polled for exit.
const POLL: Duration = Duration::from_millis(20);

/// Runs QEMU with `args`, its stdout and stderr in `log`, and kills it (SIGKILL) once
/// `timeout` has passed.
pub fn run_vm(
    qemu: &Path,
    args: &[OsString],
    log: &Path,
    timeout: Duration,
) -> Result<VmExit, Error> {
    let out = File::create(log).map_err(|source| Error::Io {
        op: "create",
        path: log.to_owned(),
        source,
    })?;
    let err = out.try_clone().map_err(|source| Error::Io {
        op: "dup",
        path: log.to_owned(),
        source,
    })?;
    let start = Instant::now();
    let mut child = Command::new(qemu)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|source| Error::Spawn {
            program: qemu.display().to_string(),
            source,
        })?;
    let wait_err = |source| Error::Io {
        op: "wait for",
        path: qemu.to_owned(),
        source,
    };
    loop {
        if let Some(status) = child.try_wait().map_err(wait_err)? {
            return Ok(VmExit {
                status,
                timed_out: false,
                elapsed: start.elapsed(),
            });
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            // kill() fails only if the child already exited, which wait() then reports.
            let _ = child.kill();
            let status = child.wait().map_err(wait_err)?;
            return Ok(VmExit {
                status,
                timed_out: true,
                elapsed: start.elapsed(),
            });
        }
        std::thread::sleep(POLL.min(timeout - elapsed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(c: &VmConfig) -> Vec<String> {
        c.args()
            .unwrap()
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    fn value_after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    fn config() -> VmConfig {
        VmConfig::new("/k/Image", "/r/initramfs.cpio", Path::new("/r"))
    }

    #[test]
    fn machine_matches_the_design() {
        let a = strings(&config());
        assert_eq!(
            value_after(&a, "-M"),
            ["virt,gic-version=3,its=on,iommu=smmuv3,virtualization=on"]
        );
        assert_eq!(value_after(&a, "-cpu"), ["max"]);
        assert_eq!(value_after(&a, "-smp"), ["2"]);
        assert_eq!(value_after(&a, "-m"), ["2048"]);
        assert_eq!(value_after(&a, "-accel"), ["tcg,thread=multi"]);
        assert_eq!(value_after(&a, "-kernel"), ["/k/Image"]);
        assert_eq!(value_after(&a, "-initrd"), ["/r/initramfs.cpio"]);
        assert_eq!(
            value_after(&a, "-append"),
            ["console=ttyAMA0 rdinit=/init panic=-1"]
        );
        assert!(a.contains(&"-no-reboot".to_owned()));
    }

    #[test]
    fn nics_sit_on_one_hub_at_fixed_slots() {
        let mut c = config();
        c.nics = 3;
        let a = strings(&c);
        assert_eq!(
            value_after(&a, "-netdev"),
            [
                "hubport,id=net0,hubid=0",
                "hubport,id=net1,hubid=0",
                "hubport,id=net2,hubid=0"
            ]
        );
        let devices = value_after(&a, "-device");
        assert_eq!(
            devices[2..],
            [
                "igb,netdev=net0,mac=52:54:00:7e:57:00,addr=0x4",
                "igb,netdev=net1,mac=52:54:00:7e:57:01,addr=0x6",
                "igb,netdev=net2,mac=52:54:00:7e:57:02,addr=0x8"
            ]
        );
        assert_eq!(nic_bdf(0).unwrap(), "0000:00:04.0");
        assert_eq!(nic_bdf(5).unwrap(), "0000:00:0e.0");
        assert_eq!(nic_bdf(6), None);
    }

    #[test]
    fn results_port_and_console_go_to_files() {
        let a = strings(&config());
        assert_eq!(
            value_after(&a, "-chardev"),
            [
                "file,id=console,path=/r/console.log",
                "file,id=results,path=/r/results.log"
            ]
        );
        assert_eq!(value_after(&a, "-serial"), ["chardev:console"]);
        let devices = value_after(&a, "-device");
        assert_eq!(
            devices[..2],
            [
                "virtio-serial-pci,id=results-bus,addr=0x2",
                "virtserialport,bus=results-bus.0,chardev=results,name=results"
            ]
        );
    }

    #[test]
    fn no_network_leaves_qemu() {
        let mut c = config();
        c.nics = MAX_NICS;
        let a = strings(&c);
        assert!(a.contains(&"-nodefaults".to_owned()));
        for flag in ["-net", "-nic"] {
            assert!(!a.iter().any(|x| x == flag), "{flag} present");
        }
        for netdev in value_after(&a, "-netdev") {
            assert!(netdev.starts_with("hubport,"), "{netdev}");
        }
    }

    #[test]
    fn commas_in_paths_are_escaped() {
        let c = VmConfig::new("/k", "/r", Path::new("/tmp/a,b"));
        let a = strings(&c);
        assert_eq!(
            value_after(&a, "-chardev")[0],
            "file,id=console,path=/tmp/a,,b/console.log"
        );
    }

    #[test]
    fn bad_configs_are_refused() {
        let mut c = config();
        c.nics = MAX_NICS + 1;
        assert!(matches!(
            c.args(),
            Err(Error::Config {
                what: "NIC count",
                ..
            })
        ));
        let mut c = config();
        c.kernel_args = vec!["a\nb".into()];
        assert!(matches!(
            c.args(),
            Err(Error::Config {
                what: "kernel argument",
                ..
            })
        ));
        let mut c = config();
        c.kernel_args = vec!["x".repeat(MAX_CMDLINE)];
        assert!(matches!(
            c.args(),
            Err(Error::Config {
                what: "kernel command line",
                ..
            })
        ));
        let mut c = config();
        c.cpus = 0;
        assert!(c.args().is_err());
    }

    #[test]
    fn extra_kernel_args_follow_the_base() {
        let mut c = config();
        c.kernel_args = vec!["loglevel=4".into(), "iommu.strict=1".into()];
        assert_eq!(
            c.cmdline().unwrap(),
            "console=ttyAMA0 rdinit=/init panic=-1 loglevel=4 iommu.strict=1"
        );
    }

    #[test]
    fn riscv64_machine_has_aia_guest_files_and_an_iommu() {
        let mut c = VmConfig::new_for(
            Arch::Riscv64,
            "/k/Image",
            "/r/initramfs.cpio",
            Path::new("/r"),
        );
        c.nics = 2;
        let a = strings(&c);
        assert_eq!(c.qemu, Path::new("qemu-system-riscv64"));
        assert_eq!(value_after(&a, "-M"), ["virt,aia=aplic-imsic,aia-guests=5"]);
        assert_eq!(
            value_after(&a, "-cpu"),
            ["rv64,h=true,ssaia=true,smaia=true,sstc=true"]
        );
        assert_eq!(
            value_after(&a, "-append"),
            ["console=ttyS0 rdinit=/init panic=-1"]
        );
        let devices = value_after(&a, "-device");
        assert_eq!(
            devices,
            [
                "virtio-serial-pci,id=results-bus,addr=0x2",
                "virtserialport,bus=results-bus.0,chardev=results,name=results",
                "riscv-iommu-pci,addr=0x1",
                "igb,netdev=net0,mac=52:54:00:7e:57:00,addr=0x4",
                "igb,netdev=net1,mac=52:54:00:7e:57:01,addr=0x6"
            ]
        );
        assert!(a.contains(&"-nodefaults".to_owned()));
        c.kernel_args = vec!["x".repeat(MAX_CMDLINE)];
        assert!(matches!(
            c.args(),
            Err(Error::Config {
                what: "kernel command line",
                ..
            })
        ));
    }

    #[test]
    fn a_hung_vm_is_killed_at_the_timeout() {
        let dir = std::env::temp_dir().join(format!("testhost-qemu-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("qemu.log");
        // `sleep` stands in for a guest that never powers off.
        let exit = run_vm(
            Path::new("sleep"),
            &["30".into()],
            &log,
            Duration::from_millis(200),
        )
        .unwrap();
        assert!(exit.timed_out);
        assert!(!exit.status.success());
        assert!(exit.elapsed < Duration::from_secs(10), "{:?}", exit.elapsed);

        let exit = run_vm(Path::new("true"), &[], &log, Duration::from_secs(30)).unwrap();
        assert!(!exit.timed_out);
        assert!(exit.status.success());

        let err = run_vm(
            Path::new("/nonexistent/qemu"),
            &[],
            &log,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Spawn { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
