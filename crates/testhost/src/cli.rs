// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The `testhost` command line: argument parsing, where things are, and the
//! `run-kernel-tests` flow with its output.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::{Duration, Instant};

use crate::Error;
use crate::arch::Arch;
use crate::cross::CrossBuild;
use crate::host::{RunOutcome, TestHost};
use crate::kernel::{KernelRecipe, KernelSource, resolve_kernel};
use crate::plan::OutputFormat;
use crate::protocol::TestOutcome;
use crate::qemu::MAX_NICS;

/// Where setup.sh puts busybox and the recipe's kernels go, unless `TESTHOST_CACHE` or
/// `--cache` says otherwise.
pub const DEFAULT_CACHE: &str = "/var/cache/passthrough-testhost";

/// The help text.
pub const USAGE: &str = "\
usage: testhost [--arch ARCH] [--workspace DIR] [--cache DIR] [--kernel IMAGE] [--variant NAME] <command> [options]

  --arch ARCH           aarch64 (default) or riscv64: the test host's architecture, its
                        kernel recipe (tests/testhost/kernel, tests/testhost/kernel-riscv64)
                        and setup script (setup.sh, setup-riscv64.sh)
  --variant NAME        the recipe variant to build and boot when no kernel is given
                        (tests/testhost/kernel/variants: patched (default), viommu;
                        tests/testhost/kernel-riscv64/variants: patched (default), upstream)

commands:
  setup                 install QEMU, the aarch64 cross toolchain and busybox (tests/testhost/setup.sh)
  kernel                print the kernel image to boot, building it from tests/testhost/kernel if none is given
  run-kernel-tests      cross-build the tests of the given packages, run them in the test VM
      -p, --package PKG     a package whose tests to run (repeatable, at least one)
      --nics N              igb NICs in the VM (default 2, at most 6)
      --bind LIST           NICs bound to vfio-pci: comma-separated indices, `all` (default) or `none`
      --timeout SECS        kill the VM and fail after SECS seconds (default 300)
      --append ARG          extra kernel argument (repeatable)
      --test TARGET         only the integration-test target TARGET of the packages (repeatable;
                            default: every test executable, unit tests included)
      --run-name NAME       files go to <workspace>/target/testhost/NAME (default kernel-tests)
  help                  this text

environment: TESTHOST_KERNEL (prebuilt arm64 Image), TESTHOST_KERNEL_RISCV64 (prebuilt riscv64
Image), TESTHOST_CACHE, TESTHOST_WORKSPACE
";

/// Global options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    /// `--workspace`.
    pub workspace: Option<PathBuf>,
    /// `--cache`.
    pub cache: Option<PathBuf>,
    /// `--kernel`.
    pub kernel: Option<PathBuf>,
    /// `--variant`.
    pub variant: Option<String>,
    /// `--arch` (default aarch64).
    pub arch: Option<Arch>,
}

/// Which NICs go to vfio-pci.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bind {
    /// Every NIC.
    All,
    /// These indices (empty: none).
    Only(Vec<u8>),
}

/// Options of `run-kernel-tests`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunArgs {
    /// Packages whose tests run.
    pub packages: Vec<String>,
    /// igb NICs.
    pub nics: u8,
    /// NICs bound to vfio-pci.
    pub bind: Bind,
    /// Whole-run limit.
    pub timeout: Duration,
    /// Extra kernel arguments.
    pub kernel_args: Vec<String>,
    /// Run directory name under `target/testhost`.
    pub run_name: String,
    /// `--test`: only these integration-test targets (empty: every test executable).
    pub tests: Vec<String>,
}

impl Default for RunArgs {
    fn default() -> Self {
        RunArgs {
            packages: Vec::new(),
            nics: 2,
            bind: Bind::All,
            timeout: crate::host::DEFAULT_TIMEOUT,
            kernel_args: Vec::new(),
            run_name: "kernel-tests".to_owned(),
            tests: Vec::new(),
        }
    }
}

/// A subcommand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `help`.
    Help,
    /// `setup`.
    Setup,
    /// `kernel`.
    Kernel,
    /// `run-kernel-tests`.
    RunKernelTests(RunArgs),
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// Global options.
    pub options: Options,
    /// The subcommand.
    pub command: Command,
}

/// A command line that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// No subcommand.
    #[error("no command given")]
    NoCommand,
    /// An unknown subcommand.
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// An option the command does not take.
    #[error("unknown option {option:?} for {command}")]
    UnknownOption {
        /// The command.
        command: String,
        /// The option.
        option: String,
    },
    /// An option without its value.
    #[error("option {0} needs a value")]
    MissingValue(String),
    /// `run-kernel-tests` without `-p`.
    #[error("run-kernel-tests needs at least one -p PACKAGE")]
    NoPackage,
    /// A value that cannot be used.
    #[error("invalid value {value:?} for {option}: {reason}")]
    InvalidValue {
        /// The option.
        option: String,
        /// The value.
        value: String,
        /// Why.
        reason: &'static str,
    },
}

/// Splits `--opt=value` and takes `--opt value` from the iterator.
fn take_value(
    flag: &str,
    inline: Option<String>,
    rest: &mut impl Iterator<Item = String>,
) -> Result<String, UsageError> {
    match inline {
        Some(v) => Ok(v),
        None => rest
            .next()
            .ok_or_else(|| UsageError::MissingValue(flag.to_owned())),
    }
}

fn invalid(option: &str, value: &str, reason: &'static str) -> UsageError {
    UsageError::InvalidValue {
        option: option.to_owned(),
        value: value.to_owned(),
        reason,
    }
}

fn parse_bind(value: &str) -> Result<Bind, UsageError> {
    match value {
        "all" => Ok(Bind::All),
        "none" => Ok(Bind::Only(Vec::new())),
        list => list
            .split(',')
            .map(|i| {
                i.trim()
                    .parse::<u8>()
                    .ok()
                    .filter(|n| *n < MAX_NICS)
                    .ok_or_else(|| invalid("--bind", value, "indices 0..=5, `all` or `none`"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Bind::Only),
    }
}

fn valid_run_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Parses the arguments after the program name.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Invocation, UsageError> {
    let mut it = args.into_iter();
    let mut options = Options::default();
    let command = loop {
        let Some(arg) = it.next() else {
            return Err(UsageError::NoCommand);
        };
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        match flag.as_str() {
            "--workspace" => options.workspace = Some(take_value(&flag, inline, &mut it)?.into()),
            "--cache" => options.cache = Some(take_value(&flag, inline, &mut it)?.into()),
            "--kernel" => options.kernel = Some(take_value(&flag, inline, &mut it)?.into()),
            "--arch" => {
                let v = take_value(&flag, inline, &mut it)?;
                options.arch = Some(
                    v.parse()
                        .map_err(|_| invalid("--arch", &v, "aarch64 or riscv64"))?,
                );
            }
            "--variant" => {
                let v = take_value(&flag, inline, &mut it)?;
                if !crate::kernel::valid_variant_name(&v) {
                    return Err(invalid("--variant", &v, "1..=32 of [A-Za-z0-9_]"));
                }
                options.variant = Some(v);
            }
            "help" | "--help" | "-h" => break Command::Help,
            "setup" => break Command::Setup,
            "kernel" => break Command::Kernel,
            "run-kernel-tests" => break Command::RunKernelTests(RunArgs::default()),
            f if f.starts_with('-') => {
                return Err(UsageError::UnknownOption {
                    command: "testhost".to_owned(),
                    option: arg,
                });
            }
            _ => return Err(UsageError::UnknownCommand(arg)),
        }
    };
    let command = match command {
        Command::RunKernelTests(mut run) => {
            while let Some(arg) = it.next() {
                let (flag, inline) = match arg.split_once('=') {
                    Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
                    _ => (arg.clone(), None),
                };
                match flag.as_str() {
                    "-p" | "--package" => run.packages.push(take_value(&flag, inline, &mut it)?),
                    "--nics" => {
                        let v = take_value(&flag, inline, &mut it)?;
                        run.nics = v
                            .parse()
                            .ok()
                            .filter(|n| *n <= MAX_NICS)
                            .ok_or_else(|| invalid("--nics", &v, "0..=6"))?;
                    }
                    "--bind" => {
                        run.bind = parse_bind(&take_value(&flag, inline, &mut it)?)?;
                    }
                    "--timeout" => {
                        let v = take_value(&flag, inline, &mut it)?;
                        let secs: u64 = v
                            .parse()
                            .ok()
                            .filter(|s| (1..=86_400).contains(s))
                            .ok_or_else(|| invalid("--timeout", &v, "1..=86400 seconds"))?;
                        run.timeout = Duration::from_secs(secs);
                    }
                    "--append" => run.kernel_args.push(take_value(&flag, inline, &mut it)?),
                    "--test" => {
                        let v = take_value(&flag, inline, &mut it)?;
                        if v.is_empty() || v.starts_with('-') {
                            return Err(invalid("--test", &v, "a test target name"));
                        }
                        run.tests.push(v);
                    }
                    "--run-name" => {
                        let v = take_value(&flag, inline, &mut it)?;
                        if !valid_run_name(&v) {
                            return Err(invalid("--run-name", &v, "1..=64 of [A-Za-z0-9_.-]"));
                        }
                        run.run_name = v;
                    }
                    _ => {
                        return Err(UsageError::UnknownOption {
                            command: "run-kernel-tests".to_owned(),
                            option: arg,
                        });
                    }
                }
            }
            if run.packages.is_empty() {
                return Err(UsageError::NoPackage);
            }
            if let Bind::Only(list) = &run.bind
                && let Some(i) = list.iter().find(|i| **i >= run.nics)
            {
                return Err(UsageError::InvalidValue {
                    option: "--bind".to_owned(),
                    value: i.to_string(),
                    reason: "index not below --nics",
                });
            }
            Command::RunKernelTests(run)
        }
        other => {
            if let Some(arg) = it.next() {
                return Err(UsageError::UnknownOption {
                    command: format!("{other:?}").to_lowercase(),
                    option: arg,
                });
            }
            other
        }
    };
    Ok(Invocation { options, command })
}

/// Settings taken from the environment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Env {
    /// `TESTHOST_KERNEL`.
    pub kernel: Option<PathBuf>,
    /// `TESTHOST_KERNEL_RISCV64`.
    pub kernel_riscv64: Option<PathBuf>,
    /// `TESTHOST_CACHE`.
    pub cache: Option<PathBuf>,
    /// `TESTHOST_WORKSPACE`.
    pub workspace: Option<PathBuf>,
}

impl Env {
    /// Reads the process environment; empty variables count as unset.
    pub fn from_process() -> Self {
        let var = |name| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Env {
            kernel: var(Arch::Aarch64.kernel_env()),
            kernel_riscv64: var(Arch::Riscv64.kernel_env()),
            cache: var("TESTHOST_CACHE"),
            workspace: var("TESTHOST_WORKSPACE"),
        }
    }
}

/// Where things are, after options, environment and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Workspace root.
    pub workspace: PathBuf,
    /// Cache directory.
    pub cache: PathBuf,
    /// A kernel given by option or environment.
    pub kernel: Option<PathBuf>,
    /// The recipe variant used when no kernel is given.
    pub variant: String,
    /// The test host's architecture.
    pub arch: Arch,
}

impl Resolved {
    /// Options win over the environment, which wins over the defaults (`default_workspace`,
    /// [`DEFAULT_CACHE`]). The environment's kernel is the one of the architecture
    /// (`TESTHOST_KERNEL` for aarch64, `TESTHOST_KERNEL_RISCV64` for riscv64).
    pub fn new(options: &Options, env: &Env, default_workspace: &Path) -> Self {
        let arch = options.arch.unwrap_or_default();
        let env_kernel = match arch {
            Arch::Aarch64 => env.kernel.clone(),
            Arch::Riscv64 => env.kernel_riscv64.clone(),
        };
        Resolved {
            arch,
            workspace: options
                .workspace
                .clone()
                .or_else(|| env.workspace.clone())
                .unwrap_or_else(|| default_workspace.to_owned()),
            cache: options
                .cache
                .clone()
                .or_else(|| env.cache.clone())
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE)),
            kernel: options.kernel.clone().or(env_kernel),
            variant: options
                .variant
                .clone()
                .unwrap_or_else(|| arch.default_variant().to_owned()),
        }
    }

    /// The busybox that the setup script unpacked.
    pub fn busybox(&self) -> PathBuf {
        self.arch.busybox(&self.cache)
    }

    /// The architecture's setup script of the workspace (tests/testhost/setup.sh,
    /// setup-riscv64.sh).
    pub fn setup_script(&self) -> PathBuf {
        self.workspace
            .join("tests")
            .join("testhost")
            .join(self.arch.setup_script())
    }
}

/// Runs setup.sh (`kernel_build` also installs the kernel build tools).
pub fn run_setup(r: &Resolved, kernel_build: bool) -> Result<(), Error> {
    let script = r.setup_script();
    let status = Process::new("bash")
        .arg(&script)
        .env("TESTHOST_CACHE", &r.cache)
        .env(
            "TESTHOST_KERNEL_BUILD",
            if kernel_build { "1" } else { "0" },
        )
        .status()
        .map_err(|source| Error::Spawn {
            program: format!("bash {}", script.display()),
            source,
        })?;
    if !status.success() {
        return Err(Error::CommandFailed {
            what: script.display().to_string(),
            status,
        });
    }
    Ok(())
}

/// The kernel to boot: the given one, else the recipe's, installing the build tools and
/// building it when it is not cached yet.
pub fn kernel(r: &Resolved) -> Result<KernelSource, Error> {
    let recipe = KernelRecipe::for_arch(&r.workspace, r.arch).with_variant(r.variant.clone());
    if r.kernel.is_none() && !recipe.cached_image(&r.cache)?.is_file() {
        run_setup(r, true)?;
    }
    resolve_kernel(r.kernel.as_deref(), &recipe, &r.cache)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Writes every result of `outcome`, the failures with their output, the console tail on
/// failure, and the closing `testhost: N passed, M failed` line.
pub fn print_outcome(outcome: &RunOutcome, out: &mut dyn Write) -> io::Result<()> {
    let report = &outcome.report;
    for nic in &report.nics {
        writeln!(
            out,
            "testhost: NIC {} {} on {}",
            nic.index, nic.bdf, nic.driver
        )?;
    }
    for suite in &report.suites {
        match suite.format {
            OutputFormat::Libtest => {
                for t in &suite.tests {
                    let verdict = match &t.outcome {
                        TestOutcome::Passed => "ok".to_owned(),
                        TestOutcome::Failed { .. } => "FAILED".to_owned(),
                        TestOutcome::Ignored { reason: Some(r) } => format!("ignored, {r}"),
                        TestOutcome::Ignored { reason: None } => "ignored".to_owned(),
                        TestOutcome::Unfinished => "UNFINISHED".to_owned(),
                    };
                    let time = t
                        .exec_time
                        .map(|s| format!(" <{s:.3}s>"))
                        .unwrap_or_default();
                    writeln!(out, "test {}::{} ... {verdict}{time}", suite.name, t.name)?;
                }
                for line in &suite.output {
                    writeln!(out, "{} | {line}", suite.name)?;
                }
            }
            OutputFormat::Lines => {
                for line in &suite.output {
                    writeln!(out, "{} | {line}", suite.name)?;
                }
                let verdict = match suite.exit_status {
                    Some(0) => "ok".to_owned(),
                    Some(s) => format!("FAILED (exit {s})"),
                    None => "UNFINISHED".to_owned(),
                };
                writeln!(out, "suite {} ... {verdict}", suite.name)?;
            }
        }
    }
    let failures = outcome.failures();
    if !failures.is_empty() {
        writeln!(out, "\nfailures:")?;
        for f in &failures {
            writeln!(out, "    {f}")?;
            if let Some(output) = &f.output {
                writeln!(out, "---- {} output ----\n{}", f.subject, output.trim_end())?;
            }
        }
        writeln!(
            out,
            "\ntesthost: last console lines ({}):\n{}",
            outcome.console_log.display(),
            outcome.console_tail(40)
        )?;
        writeln!(
            out,
            "testhost: results channel: {}, QEMU log: {}",
            outcome.results_log.display(),
            outcome.qemu_log.display()
        )?;
    }
    Ok(())
}

/// `run-kernel-tests`: cross-builds, boots, prints; `Ok(true)` when everything passed.
pub fn run_kernel_tests(r: &Resolved, args: &RunArgs, out: &mut dyn Write) -> Result<bool, Error> {
    let started = Instant::now();
    let io_err = |source| Error::Io {
        op: "write report to",
        path: PathBuf::from("stdout"),
        source,
    };
    let busybox = r.busybox();
    if !busybox.is_file() {
        return Err(Error::Config {
            what: "busybox",
            reason: format!(
                "{} is missing: run `testhost setup` (tests/testhost/setup.sh) first",
                busybox.display()
            ),
        });
    }
    let kernel = kernel(r)?;
    writeln!(
        out,
        "testhost: kernel {} ({})",
        kernel.path().display(),
        match kernel {
            KernelSource::Given(_) => "given".to_owned(),
            KernelSource::Recipe(_) => format!(
                "built from tests/testhost/{}, variant {}",
                r.arch.recipe_dir(),
                r.variant
            ),
        }
    )
    .map_err(io_err)?;

    writeln!(
        out,
        "testhost: cross-building tests of {}",
        args.packages.join(", ")
    )
    .map_err(io_err)?;
    out.flush().map_err(io_err)?;
    let build_start = Instant::now();
    let mut tests = CrossBuild::for_arch(&r.workspace, r.arch).build_tests(&args.packages)?;
    if !args.tests.is_empty() {
        tests.retain(|t| t.kind == "test" && args.tests.contains(&t.target));
        if let Some(missing) = args
            .tests
            .iter()
            .find(|name| !tests.iter().any(|t| &t.target == *name))
        {
            return Err(Error::Cargo {
                what: "cargo test --no-run",
                reason: format!("no test target {missing} in {}", args.packages.join(", ")),
            });
        }
    }
    // Cargo reports executables in the order they finish; run them in a fixed order.
    tests.sort_by_key(|t| t.suite_name());
    let build_time = build_start.elapsed();
    if tests.is_empty() {
        return Err(Error::Cargo {
            what: "cargo test --no-run",
            reason: format!("no test executable for {}", args.packages.join(", ")),
        });
    }

    let run_dir = r
        .workspace
        .join("target")
        .join("testhost")
        .join(&args.run_name);
    let mut host = TestHost::new(kernel.path(), &busybox, &run_dir);
    host.arch(r.arch).nics(args.nics).timeout(args.timeout);
    if let Bind::Only(list) = &args.bind {
        host.bind(list.iter().copied());
    }
    for arg in &args.kernel_args {
        host.kernel_arg(arg.clone());
    }
    for t in &tests {
        host.test_binary(&t.suite_name(), &t.executable)?;
    }
    let suites: Vec<_> = host.plan().iter().map(|s| s.suite().to_owned()).collect();
    writeln!(
        out,
        "testhost: booting the {} test VM ({} NICs) with {} suites: {}",
        r.arch,
        args.nics,
        suites.len(),
        suites.join(" ")
    )
    .map_err(io_err)?;
    out.flush().map_err(io_err)?;

    let outcome = host.run()?;
    print_outcome(&outcome, out).map_err(io_err)?;
    let mut timing = String::new();
    let _ = write!(
        timing,
        "testhost: cross-build {}, initramfs {:.1} MiB packed in {}, VM {}",
        secs(build_time),
        outcome.initramfs_bytes as f64 / f64::from(1u32 << 20),
        secs(outcome.pack_time),
        secs(outcome.exit.elapsed),
    );
    if let Some(up) = outcome.report.done_uptime {
        let _ = write!(timing, " (guest uptime at DONE {up:.1} s)");
    }
    let _ = write!(timing, ", total {}", secs(started.elapsed()));
    writeln!(out, "{timing}").map_err(io_err)?;
    writeln!(out, "testhost: {}", outcome.tally()).map_err(io_err)?;
    Ok(outcome.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Invocation, UsageError> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    fn run_args(args: &[&str]) -> RunArgs {
        match parse(args).unwrap().command {
            Command::RunKernelTests(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn run_kernel_tests_options() {
        let r = run_args(&[
            "run-kernel-tests",
            "-p",
            "iommufd-ioas",
            "--package=testhost",
            "--nics",
            "3",
            "--bind=0,2",
            "--timeout",
            "60",
            "--append",
            "loglevel=4",
            "--run-name",
            "ci-1",
            "--test",
            "nesting",
        ]);
        assert_eq!(
            r,
            RunArgs {
                packages: vec!["iommufd-ioas".into(), "testhost".into()],
                nics: 3,
                bind: Bind::Only(vec![0, 2]),
                timeout: Duration::from_secs(60),
                kernel_args: vec!["loglevel=4".into()],
                run_name: "ci-1".into(),
                tests: vec!["nesting".into()],
            }
        );
        let d = run_args(&["run-kernel-tests", "-p", "x"]);
        assert_eq!(d.nics, 2);
        assert_eq!(d.bind, Bind::All);
        assert_eq!(d.timeout, Duration::from_secs(300));
        assert_eq!(
            run_args(&["run-kernel-tests", "-p", "x", "--bind", "none"]).bind,
            Bind::Only(vec![])
        );
    }

    #[test]
    fn global_options_and_simple_commands() {
        let inv = parse(&["--kernel", "/k", "--cache=/c", "kernel"]).unwrap();
        assert_eq!(inv.command, Command::Kernel);
        assert_eq!(inv.options.kernel.as_deref(), Some(Path::new("/k")));
        assert_eq!(inv.options.cache.as_deref(), Some(Path::new("/c")));
        assert_eq!(inv.options.variant, None);
        let inv = parse(&["--variant", "viommu", "kernel"]).unwrap();
        assert_eq!(inv.options.variant.as_deref(), Some("viommu"));
        assert_eq!(inv.options.arch, None);
        let inv = parse(&["--arch", "riscv64", "--variant=upstream", "kernel"]).unwrap();
        assert_eq!(inv.options.arch, Some(Arch::Riscv64));
        assert!(parse(&["--arch", "x86_64", "kernel"]).is_err());
        assert!(parse(&["--variant", "../x", "kernel"]).is_err());
        assert_eq!(parse(&["setup"]).unwrap().command, Command::Setup);
        assert_eq!(parse(&["--help"]).unwrap().command, Command::Help);
    }

    #[test]
    fn usage_errors() {
        assert_eq!(parse(&[]), Err(UsageError::NoCommand));
        assert_eq!(
            parse(&["frobnicate"]),
            Err(UsageError::UnknownCommand("frobnicate".into()))
        );
        assert!(matches!(
            parse(&["--verbose", "setup"]),
            Err(UsageError::UnknownOption { .. })
        ));
        assert!(matches!(
            parse(&["setup", "extra"]),
            Err(UsageError::UnknownOption { .. })
        ));
        assert_eq!(
            parse(&["--kernel"]),
            Err(UsageError::MissingValue("--kernel".into()))
        );
        assert_eq!(parse(&["run-kernel-tests"]), Err(UsageError::NoPackage));
        for bad in [
            &["--nics", "7"][..],
            &["--nics", "-1"],
            &["--bind", "0,x"],
            &["--bind", "6"],
            &["--bind", "2"],
            &["--timeout", "0"],
            &["--timeout", "1e3"],
            &["--run-name", "../x"],
            &["--run-name", ""],
            &["--what", "1"],
            &["-p"],
            &["--test"],
            &["--test", "--nics"],
        ] {
            let mut args = vec!["run-kernel-tests", "-p", "x"];
            args.extend_from_slice(bad);
            assert!(parse(&args).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn options_beat_environment_beat_defaults() {
        let env = Env {
            kernel: Some("/env/k".into()),
            kernel_riscv64: Some("/env/rk".into()),
            cache: Some("/env/c".into()),
            workspace: None,
        };
        let r = Resolved::new(&Options::default(), &env, Path::new("/ws"));
        assert_eq!(
            r,
            Resolved {
                workspace: "/ws".into(),
                cache: "/env/c".into(),
                kernel: Some("/env/k".into()),
                variant: "patched".into(),
                arch: Arch::Aarch64,
            }
        );
        let riscv = Options {
            arch: Some(Arch::Riscv64),
            ..Options::default()
        };
        let r = Resolved::new(&riscv, &env, Path::new("/ws"));
        assert_eq!(r.kernel.as_deref(), Some(Path::new("/env/rk")));
        assert_eq!(r.variant, "patched");
        assert_eq!(r.busybox(), Path::new("/env/c/riscv64/busybox/bin/busybox"));
        assert_eq!(
            r.setup_script(),
            Path::new("/ws/tests/testhost/setup-riscv64.sh")
        );
        let opts = Options {
            workspace: Some("/o/ws".into()),
            cache: None,
            kernel: Some("/o/k".into()),
            variant: Some("viommu".into()),
            arch: None,
        };
        let r = Resolved::new(&opts, &Env::default(), Path::new("/ws"));
        assert_eq!(r.workspace, Path::new("/o/ws"));
        assert_eq!(r.cache, Path::new(DEFAULT_CACHE));
        assert_eq!(r.kernel.as_deref(), Some(Path::new("/o/k")));
        assert_eq!(r.variant, "viommu");
        assert_eq!(
            r.busybox(),
            Path::new("/var/cache/passthrough-testhost/busybox/bin/busybox")
        );
        assert_eq!(r.setup_script(), Path::new("/o/ws/tests/testhost/setup.sh"));
    }
}
