// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Cross-building aarch64 and riscv64 test executables and binaries with Debian's toolchain.
//!
//! rustup cannot add targets on the machines this runs on, so the build uses Debian's
//! `/usr/bin/cargo` and `/usr/bin/rustc` (`rustc-web`, with `libstd-rust-web-dev:arm64`) and
//! links statically with `aarch64-linux-gnu-gcc`, so the binaries need nothing from the
//! initramfs but the kernel.
//!
//! riscv64 has no prebuilt standard library matching `rustc-web` (bookworm has no riscv64
//! port; sid's `libstd-rust-dev:riscv64` is another rustc's), so the riscv64 build compiles
//! std itself from Debian's `rust-web-src` (the sources `rustc --print sysroot` finds under
//! `lib/rustlib/src/rust`) with cargo's `-Zbuild-std`, enabled on this stable toolchain by
//! `RUSTC_BOOTSTRAP=1`, and links with `riscv64-linux-gnu-gcc`. std is built once per
//! target directory (`target/testhost-riscv64`) and reused after. The workspace's `rust-toolchain.toml` only steers rustup's
//! proxies, so it does not apply here; environment that the calling cargo or rustup sets
//! (`RUSTUP_TOOLCHAIN`, `CARGO_ENCODED_RUSTFLAGS`, wrappers, ...) is removed so that it cannot
//! leak into the cross build (`tests::command_line_and_environment`).
//!
//! Executables are found in cargo's `--message-format=json-render-diagnostics` output (JSON
//! on stdout, diagnostics rendered on stderr): `compiler-artifact` records whose `profile.test`
//! is true are test harnesses, others with an `executable` are binaries.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

use crate::Error;
use crate::arch::Arch;

/// The Rust target of the aarch64 test VM ([`Arch::rust_target`] for either).
pub const TARGET: &str = "aarch64-unknown-linux-gnu";

/// The cargo flag that builds the standard library for a target without a prebuilt one
/// (riscv64); cargo adds `test` when it builds test harnesses.
pub const BUILD_STD: &str = "-Zbuild-std=std,panic_unwind";

/// Environment variables removed from the cross build: set by rustup or an outer cargo,
/// they would pick another toolchain or add flags meant for the host.
pub const SCRUBBED_ENV: [&str; 13] = [
    "RUSTUP_TOOLCHAIN",
    "CARGO",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_MAKEFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTDOC",
    "RUSTDOCFLAGS",
    "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
    "CARGO_TARGET_RISCV64GC_UNKNOWN_LINUX_GNU_RUSTFLAGS",
];

/// One executable cargo built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Package name.
    pub package: String,
    /// Target kind: `lib`, `bin`, `test`, `bench`, `example`, ...
    pub kind: String,
    /// Target name.
    pub target: String,
    /// Whether it is a libtest harness (`profile.test`).
    pub test: bool,
    /// Path of the executable.
    pub executable: PathBuf,
}

impl Artifact {
    /// The suite name results are reported under: `package/lib` for unit tests of the
    /// library, `package/kind/target` otherwise (`testhost/test/guest_env`).
    pub fn suite_name(&self) -> String {
        if self.kind == "lib" {
            format!("{}/lib", self.package)
        } else {
            format!("{}/{}/{}", self.package, self.kind, self.target)
        }
    }
}

#[derive(Deserialize)]
struct Message {
    reason: String,
    package_id: Option<String>,
    target: Option<MessageTarget>,
    profile: Option<MessageProfile>,
    executable: Option<PathBuf>,
}

#[derive(Deserialize)]
struct MessageTarget {
    kind: Vec<String>,
    name: String,
}

#[derive(Deserialize)]
struct MessageProfile {
    test: bool,
}

/// The package name in a cargo package ID, in both of cargo's formats:
/// `path+file:///w/crates/foo#0.1.0`, `registry+https://...#foo@1.2.3` (cargo >= 1.77),
/// and `foo 0.1.0 (path+file:///w/crates/foo)` (older).
pub fn package_name(id: &str) -> Option<&str> {
    if let Some((url, fragment)) = id.rsplit_once('#') {
        return match fragment.split_once('@') {
            Some((name, _version)) => Some(name),
            None => url
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .filter(|s| !s.is_empty()),
        };
    }
    id.split_once(' ').map(|(name, _)| name)
}

/// Collects the executables from cargo's JSON messages. Lines that are not JSON, or JSON
/// records of other kinds, are skipped.
pub fn parse_cargo_messages<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<Artifact> {
    lines
        .into_iter()
        .filter_map(|line| serde_json::from_str::<Message>(line).ok())
        .filter(|m| m.reason == "compiler-artifact")
        .filter_map(|m| {
            let executable = m.executable?;
            let target = m.target?;
            Some(Artifact {
                package: package_name(m.package_id.as_deref()?)?.to_owned(),
                kind: target.kind.into_iter().next()?,
                target: target.name,
                test: m.profile?.test,
                executable,
            })
        })
        .collect()
}

/// A cross build of workspace packages for an [`Arch`]'s target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossBuild {
    /// The architecture built for.
    pub arch: Arch,
    /// Workspace root (where `Cargo.toml` and `Cargo.lock` are).
    pub workspace: PathBuf,
    /// Cargo target directory of the cross build, apart from the host's.
    pub target_dir: PathBuf,
    /// Debian's cargo.
    pub cargo: PathBuf,
    /// Debian's rustc, which has the aarch64 standard library (and the sources for
    /// building riscv64's).
    pub rustc: PathBuf,
    /// The target's linker.
    pub linker: String,
}

impl CrossBuild {
    /// Debian's aarch64 toolchain, target directory `<workspace>/target/testhost-aarch64`.
    pub fn new(workspace: impl Into<PathBuf>) -> Self {
        Self::for_arch(workspace, Arch::Aarch64)
    }

    /// Debian's toolchain for `arch`, target directory
    /// `<workspace>/target/testhost-<arch>`.
    pub fn for_arch(workspace: impl Into<PathBuf>, arch: Arch) -> Self {
        let workspace = workspace.into();
        CrossBuild {
            arch,
            target_dir: workspace
                .join("target")
                .join(format!("testhost-{}", arch.name())),
            workspace,
            cargo: PathBuf::from("/usr/bin/cargo"),
            rustc: PathBuf::from("/usr/bin/rustc"),
            linker: arch.linker().to_owned(),
        }
    }

    fn command(&self, subcommand: &[&str]) -> Command {
        let mut cmd = Command::new(&self.cargo);
        cmd.current_dir(&self.workspace).args(subcommand).args([
            "--target",
            self.arch.rust_target(),
            "--message-format=json-render-diagnostics",
        ]);
        if !self.arch.prebuilt_std() {
            cmd.arg(BUILD_STD);
        }
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        if !self.arch.prebuilt_std() {
            // -Zbuild-std is unstable; Debian's stable cargo takes it with this switch.
            cmd.env("RUSTC_BOOTSTRAP", "1");
        }
        cmd.env("RUSTC", &self.rustc)
            .env(self.arch.linker_env(), &self.linker)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env("CARGO_TARGET_DIR", &self.target_dir)
            // No debug info (the prebuilt aarch64 libstd's included): an eighth of the
            // size, so the initramfs stays small; panic messages keep their file:line and
            // backtraces their symbol names.
            .env("CARGO_PROFILE_DEV_DEBUG", "0")
            .env("CARGO_PROFILE_DEV_STRIP", "debuginfo")
            .env("CARGO_PROFILE_TEST_DEBUG", "0")
            .env("CARGO_PROFILE_TEST_STRIP", "debuginfo");
        cmd
    }

    /// `cargo test --no-run` for `packages`.
    pub fn tests_command(&self, packages: &[String]) -> Command {
        let mut cmd = self.command(&["test", "--no-run"]);
        for p in packages {
            cmd.arg("-p").arg(p);
        }
        cmd
    }

    /// `cargo build` of the named binaries of `package`.
    pub fn bins_command(&self, package: &str, bins: &[String]) -> Command {
        let mut cmd = self.command(&["build", "-p", package]);
        for b in bins {
            cmd.arg("--bin").arg(b);
        }
        cmd
    }

    /// Builds the test executables of `packages` and returns them (lib, bin and integration
    /// test harnesses; doctests are not built by `--no-run`).
    pub fn build_tests(&self, packages: &[String]) -> Result<Vec<Artifact>, Error> {
        if packages.is_empty() {
            return Err(Error::Config {
                what: "cross build",
                reason: "no package given".to_owned(),
            });
        }
        let artifacts = run_cargo(self.tests_command(packages), "cargo test --no-run")?;
        Ok(artifacts.into_iter().filter(|a| a.test).collect())
    }

    /// Builds the named binaries of `package` and returns them, in the order asked.
    pub fn build_bins(&self, package: &str, bins: &[String]) -> Result<Vec<Artifact>, Error> {
        let artifacts = run_cargo(self.bins_command(package, bins), "cargo build --bin")?;
        bins.iter()
            .map(|name| {
                artifacts
                    .iter()
                    .find(|a| {
                        !a.test && a.kind == "bin" && a.package == package && a.target == *name
                    })
                    .cloned()
                    .ok_or_else(|| Error::Cargo {
                        what: "cargo build --bin",
                        reason: format!("no executable reported for {package}/{name}"),
                    })
            })
            .collect()
    }
}

/// Runs cargo with diagnostics on our stderr and collects the artifacts it reports.
fn run_cargo(mut cmd: Command, what: &'static str) -> Result<Vec<Artifact>, Error> {
    let program = Path::new(cmd.get_program()).display().to_string();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .stdin(Stdio::null())
        .spawn()
        .map_err(|source| Error::Spawn { program, source })?;
    let mut artifacts = Vec::new();
    let mut read_error = None;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).split(b'\n') {
            match line {
                Ok(line) => {
                    let line = String::from_utf8_lossy(&line);
                    artifacts.extend(parse_cargo_messages([line.as_ref()]));
                }
                Err(e) => {
                    // Do not leave cargo running unattended; wait() below reaps it.
                    let _ = child.kill();
                    read_error = Some(e);
                    break;
                }
            }
        }
    }
    let status = child.wait().map_err(|source| Error::Io {
        op: "wait for",
        path: PathBuf::from(what),
        source,
    })?;
    if let Some(source) = read_error {
        return Err(Error::Io {
            op: "read output of",
            path: PathBuf::from(what),
            source,
        });
    }
    if !status.success() {
        return Err(Error::CommandFailed {
            what: what.to_owned(),
            status,
        });
    }
    Ok(artifacts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARGO_196: &str = include_str!("../tests/fixtures/cargo-test-no-run-1.96.jsonl");
    const CARGO_195: &str = include_str!("../tests/fixtures/cargo-test-no-run-1.95.jsonl");

    #[test]
    fn package_ids_in_both_formats() {
        assert_eq!(
            package_name("path+file:///work/main/crates/testhost#0.1.0"),
            Some("testhost")
        );
        assert_eq!(
            package_name("path+file:///tmp/libtest-sample#sample@0.1.0"),
            Some("sample")
        );
        assert_eq!(
            package_name("registry+https://github.com/rust-lang/crates.io-index#serde@1.0.228"),
            Some("serde")
        );
        assert_eq!(
            package_name("testhost 0.1.0 (path+file:///work/main/crates/testhost)"),
            Some("testhost")
        );
        assert_eq!(package_name("garbage"), None);
        assert_eq!(package_name("#0.1.0"), None);
    }

    #[test]
    fn real_cargo_output_yields_test_harnesses_and_binaries() {
        for text in [CARGO_196, CARGO_195] {
            let all = parse_cargo_messages(text.lines());
            let tests: Vec<_> = all.iter().filter(|a| a.test).collect();
            // Cargo reports artifacts as they finish, in no fixed order.
            let mut suites: Vec<_> = tests.iter().map(|a| a.suite_name()).collect();
            suites.sort();
            assert_eq!(
                suites,
                ["sample/bin/sample", "sample/lib", "sample/test/it"]
            );
            assert!(tests.iter().all(|a| a.executable.is_absolute()));
            let bins: Vec<_> = all.iter().filter(|a| !a.test).collect();
            assert_eq!(bins.len(), 1);
            assert_eq!(bins[0].kind, "bin");
            assert!(bins[0].executable.ends_with("debug/sample"));
        }
    }

    #[test]
    fn non_json_and_foreign_records_are_skipped() {
        let lines = [
            "warning: something",
            r#"{"reason":"build-script-executed","package_id":"x 0.1.0 (path+file:///x)"}"#,
            r#"{"reason":"compiler-artifact","package_id":"x 0.1.0 (path+file:///x)","target":{"kind":["lib"],"name":"x"},"profile":{"test":false},"executable":null}"#,
            "{",
        ];
        assert!(parse_cargo_messages(lines).is_empty());
    }

    #[test]
    fn command_line_and_environment() {
        let b = CrossBuild::new("/w");
        let cmd = b.tests_command(&["iommufd-ioas".into(), "testhost".into()]);
        assert_eq!(cmd.get_program(), "/usr/bin/cargo");
        assert_eq!(cmd.get_current_dir(), Some(Path::new("/w")));
        let args: Vec<_> = cmd.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "test",
                "--no-run",
                "--target",
                "aarch64-unknown-linux-gnu",
                "--message-format=json-render-diagnostics",
                "-p",
                "iommufd-ioas",
                "-p",
                "testhost"
            ]
        );
        let envs: Vec<_> = cmd
            .get_envs()
            .map(|(k, v)| (k.to_str().unwrap(), v.map(|v| v.to_str().unwrap())))
            .collect();
        for (k, v) in [
            ("RUSTC", "/usr/bin/rustc"),
            (
                "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
                "aarch64-linux-gnu-gcc",
            ),
            ("RUSTFLAGS", "-C target-feature=+crt-static"),
            ("CARGO_TARGET_DIR", "/w/target/testhost-aarch64"),
        ] {
            assert!(
                envs.contains(&(k, Some(v))),
                "{k}={v} missing from {envs:?}"
            );
        }
        for k in SCRUBBED_ENV {
            assert!(envs.contains(&(k, None)), "{k} not removed");
        }
        let bins = b.bins_command("vmm", &["vmm".into(), "probe".into()]);
        let args: Vec<_> = bins.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(args[..3], ["build", "-p", "vmm"]);
        assert_eq!(args[args.len() - 4..], ["--bin", "vmm", "--bin", "probe"]);
    }

    #[test]
    fn riscv64_builds_its_std() {
        let b = CrossBuild::for_arch("/w", Arch::Riscv64);
        let cmd = b.tests_command(&["riscv-imsic".into()]);
        let args: Vec<_> = cmd.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "test",
                "--no-run",
                "--target",
                "riscv64gc-unknown-linux-gnu",
                "--message-format=json-render-diagnostics",
                "-Zbuild-std=std,panic_unwind",
                "-p",
                "riscv-imsic"
            ]
        );
        let envs: Vec<_> = cmd
            .get_envs()
            .map(|(k, v)| (k.to_str().unwrap(), v.map(|v| v.to_str().unwrap())))
            .collect();
        for (k, v) in [
            ("RUSTC_BOOTSTRAP", "1"),
            (
                "CARGO_TARGET_RISCV64GC_UNKNOWN_LINUX_GNU_LINKER",
                "riscv64-linux-gnu-gcc",
            ),
            ("RUSTFLAGS", "-C target-feature=+crt-static"),
            ("CARGO_TARGET_DIR", "/w/target/testhost-riscv64"),
        ] {
            assert!(
                envs.contains(&(k, Some(v))),
                "{k}={v} missing from {envs:?}"
            );
        }
        // The aarch64 build stays as it was: prebuilt std, no unstable switch.
        let a = CrossBuild::new("/w").tests_command(&["x".into()]);
        assert!(!a.get_args().any(|x| x == BUILD_STD));
        assert!(!a.get_envs().any(|(k, _)| k == "RUSTC_BOOTSTRAP"));
    }

    #[test]
    fn no_packages_is_an_error() {
        assert!(matches!(
            CrossBuild::new("/w").build_tests(&[]),
            Err(Error::Config { .. })
        ));
    }

    #[test]
    fn failing_cargo_is_reported_with_its_status() {
        let mut b = CrossBuild::new("/");
        b.cargo = PathBuf::from("false");
        let err = b.build_tests(&["x".into()]).unwrap_err();
        assert!(matches!(err, Error::CommandFailed { .. }), "{err}");
        b.cargo = PathBuf::from("/nonexistent/cargo");
        assert!(matches!(
            b.build_tests(&["x".into()]),
            Err(Error::Spawn { .. })
        ));
    }
}
