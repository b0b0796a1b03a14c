// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A real-kernel test host for the project's kernel-facing code.
//!
//! The machines that build this project have no VFIO and no iommufd, so its kernel-facing
//! tests run inside a QEMU TCG aarch64 VM ("L1") that has a real SMMUv3, a GICv3 ITS and igb
//! NICs, with KVM available inside (`virtualization=on`). This crate is the harness:
//!
//! - [`cross`]: cross-builds the tests (and named binaries) for aarch64 with Debian's
//!   toolchain, statically linked;
//! - [`cpio`] and [`initramfs`]: packs busybox, [`host::INIT_SCRIPT`], the test binaries
//!   and any extra files into a newc initramfs;
//! - [`plan`]: the commands `/init` runs, each a suite;
//! - [`qemu`]: the VM's command line and a run with a timeout;
//! - [`protocol`]: the results channel (virtio-serial port `results`) and the libtest JSON
//!   events it carries, parsed into a [`protocol::RunReport`];
//! - [`kernel`]: a prebuilt kernel, or the project's recipe built once and cached;
//! - [`host::TestHost`]: all of it for one boot, for the kernel-test runner and for the
//!   end-to-end scenario;
//! - [`proc_stats`]: exact pinned-page and memory figures for the in-guest tests that
//!   check nothing stays pinned.
//!
//! [`arch::Arch::Riscv64`] (`testhost --arch riscv64`) boots the riscv64 test host instead:
//! QEMU riscv64 `virt` with the AIA's IMSIC guest interrupt files, the H extension (KVM
//! inside) and the RISC-V IOMMU, with its own kernel recipe and cache directories and tests
//! cross-built for `riscv64gc-unknown-linux-gnu` (std built with `-Zbuild-std`).
//!
//! The `testhost` binary drives it: `testhost run-kernel-tests -p <package>...` prints each
//! in-guest result and closes with `testhost: N passed, M failed`.
//!
//! # Example
//!
//! Everything up to the boot, without booting: the plan, the VM command line, and the
//! parsing of what the guest sends back.
//!
//! ```
//! use testhost::host::TestHost;
//! use testhost::plan::PlanStep;
//! use testhost::protocol::parse_results;
//!
//! let mut host = TestHost::new("/k/Image-arm64", "/c/busybox", "/tmp/run");
//! host.nics(2).bind([1]);
//! host.step(PlanStep::lines("hello", "/bin/echo").arg("hi"));
//! let fs = host.initramfs()?; // written to the run directory by `host.run()`
//! assert!(fs.contains("/init") && fs.contains("/testhost/plan"));
//! let args = host.vm_config().args()?;
//! assert!(args.iter().any(|a| a == "igb,netdev=net1,mac=52:54:00:7e:57:01,addr=0x6"));
//!
//! let guest_said = "HELLO 1\nBIND 1 0000:00:06.0 ok\nNIC 0 0000:00:04.0 igb\n\
//!                   NIC 1 0000:00:06.0 vfio-pci\nBEGIN hello\nE hello hi\nX hello 0\nDONE 2.4\n";
//! let report = parse_results(guest_said.as_bytes(), host.expectations());
//! assert!(report.success());
//! assert_eq!(report.suites[0].output, ["hi"]);
//! assert_eq!(report.tally().to_string(), "1 passed, 0 failed");
//! # Ok::<(), testhost::Error>(())
//! ```

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

pub mod arch;
pub mod cli;
pub mod cpio;
pub mod cross;
pub mod host;
pub mod initramfs;
pub mod kernel;
pub mod plan;
pub mod proc_stats;
pub mod protocol;
pub mod qemu;

/// Errors of the harness itself. What goes wrong inside the guest is not an `Error` but a
/// [`protocol::Failure`] of the run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting that cannot work.
    #[error("invalid {what}: {reason}")]
    Config {
        /// The setting.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// An invalid plan.
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    /// The initramfs could not be built or written.
    #[error(transparent)]
    Archive(#[from] cpio::Error),
    /// A file operation failed.
    #[error("{op} {path}: {source}", path = path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error (its errno is in the message).
        #[source]
        source: io::Error,
    },
    /// A program could not be started.
    #[error("starting {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A program ran and failed.
    #[error("{what} failed: {status}")]
    CommandFailed {
        /// What was run.
        what: String,
        /// Its exit status.
        status: ExitStatus,
    },
    /// Cargo did not report what was asked for.
    #[error("{what}: {reason}")]
    Cargo {
        /// The cargo command.
        what: &'static str,
        /// What is missing.
        reason: String,
    },
    /// A file that is not a usable arm64 kernel.
    #[error("kernel image {path}: {reason}", path = path.display())]
    Kernel {
        /// The file.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
}
