// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The test plan: the commands the guest's `/init` runs, in order, each as one suite whose
//! output goes to the results channel.
//!
//! The plan reaches the guest as a shell file of `step` lines (see [`render_plan`]); every
//! word is single-quoted, so no argument is ever interpreted by the guest's shell
//! (`tests::quoting_survives_shell_metacharacters`).

use std::collections::BTreeSet;
use std::time::Duration;

/// Arguments that make a libtest binary print one JSON event per line, time each test and
/// run tests one at a time (so that kernel-facing tests do not race for the one device).
/// `-Z unstable-options` needs `RUSTC_BOOTSTRAP=1`, which [`PlanStep::libtest`] sets.
pub const LIBTEST_ARGS: [&str; 6] = [
    "-Z",
    "unstable-options",
    "--format",
    "json",
    "--report-time",
    "--test-threads=1",
];

/// Longest suite name accepted.
pub const MAX_SUITE_NAME_LEN: usize = 128;

/// How the host reads a step's standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutputFormat {
    /// libtest's `--format json` events, one per line; each test becomes a result.
    Libtest,
    /// Free-form lines, kept as the suite's output; the step passes when it exits 0.
    Lines,
}

/// Errors in a plan, found before anything is built or booted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A suite name that is empty, too long, or has characters outside `[A-Za-z0-9_.:/+-]`.
    #[error("plan: invalid suite name {name:?} (1..=128 characters of [A-Za-z0-9_.:/+-])")]
    InvalidSuiteName {
        /// The name as given.
        name: String,
    },
    /// Two steps with the same suite name.
    #[error("plan: suite {name:?} appears twice")]
    DuplicateSuite {
        /// The repeated name.
        name: String,
    },
    /// A program path that is not an absolute guest path.
    #[error("plan: suite {suite:?}: program {program:?} is not an absolute guest path")]
    InvalidProgram {
        /// The step's suite.
        suite: String,
        /// The program as given.
        program: String,
    },
    /// An argument or environment value with a NUL byte, which no exec can pass.
    #[error("plan: suite {suite:?}: argument {arg:?} contains NUL")]
    NulInArgument {
        /// The step's suite.
        suite: String,
        /// The argument as given.
        arg: String,
    },
    /// An environment variable name that is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("plan: suite {suite:?}: invalid environment variable name {name:?}")]
    InvalidEnvName {
        /// The step's suite.
        suite: String,
        /// The name as given.
        name: String,
    },
}

/// Checks a suite name: 1..=[`MAX_SUITE_NAME_LEN`] characters of `[A-Za-z0-9_.:/+-]`,
/// so it is one word in the results protocol and safe in a file name.
pub fn validate_suite_name(name: &str) -> Result<(), PlanError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_SUITE_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:/+-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(PlanError::InvalidSuiteName {
            name: name.to_owned(),
        })
    }
}

/// One command of the plan.
///
/// # Example
///
/// ```
/// use testhost::plan::{OutputFormat, PlanStep};
///
/// let step = PlanStep::libtest("iommufd-ioas/lib", "/testhost/bin/iommufd_ioas")
///     .arg("ioas::")
///     .env("RUST_BACKTRACE", "1");
/// assert_eq!(step.format(), OutputFormat::Libtest);
/// assert_eq!(step.argv()[..3], ["env", "RUSTC_BOOTSTRAP=1", "RUST_BACKTRACE=1"]);
/// assert_eq!(step.argv().last().map(String::as_str), Some("--test-threads=1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanStep {
    suite: String,
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    format: OutputFormat,
    timeout: Option<Duration>,
}

impl PlanStep {
    /// A libtest binary at guest path `program`, run with [`LIBTEST_ARGS`] and
    /// `RUSTC_BOOTSTRAP=1`.
    pub fn libtest(suite: impl Into<String>, program: impl Into<String>) -> Self {
        PlanStep {
            suite: suite.into(),
            program: program.into(),
            args: Vec::new(),
            env: vec![("RUSTC_BOOTSTRAP".to_owned(), "1".to_owned())],
            format: OutputFormat::Libtest,
            timeout: None,
        }
    }

    /// Any command at guest path `program` whose output lines are kept as they are.
    pub fn lines(suite: impl Into<String>, program: impl Into<String>) -> Self {
        PlanStep {
            suite: suite.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            format: OutputFormat::Lines,
            timeout: None,
        }
    }

    /// Appends an argument (for a libtest step, before [`LIBTEST_ARGS`]: a test name filter,
    /// `--ignored`, ...).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for this step only.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Kills the step (SIGKILL, via busybox `timeout`) after `limit`, rounded up to whole
    /// seconds; the rest of the plan still runs. Without it only the whole-run timeout
    /// applies.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// The suite name results are reported under.
    pub fn suite(&self) -> &str {
        &self.suite
    }

    /// How the output is read.
    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// The guest path of the program.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// The full command line as the guest executes it: `env K=V... program args...`
    /// (no `env` when there are no variables), with [`LIBTEST_ARGS`] last for libtest steps.
    pub fn argv(&self) -> Vec<String> {
        let mut argv = Vec::new();
        if !self.env.is_empty() {
            argv.push("env".to_owned());
            argv.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        }
        argv.push(self.program.clone());
        argv.extend(self.args.iter().cloned());
        if self.format == OutputFormat::Libtest {
            argv.extend(LIBTEST_ARGS.iter().map(|s| (*s).to_owned()));
        }
        argv
    }

    /// The per-step limit in whole seconds (0 = none).
    fn timeout_secs(&self) -> u64 {
        match self.timeout {
            None => 0,
            Some(d) => {
                let secs = d.as_secs();
                let secs = if d.subsec_nanos() > 0 {
                    secs.saturating_add(1)
                } else {
                    secs
                };
                secs.max(1)
            }
        }
    }

    /// Checks names, paths and arguments.
    pub fn validate(&self) -> Result<(), PlanError> {
        validate_suite_name(&self.suite)?;
        let suite = || self.suite.clone();
        if !self.program.starts_with('/') || self.program.contains('\0') {
            return Err(PlanError::InvalidProgram {
                suite: suite(),
                program: self.program.clone(),
            });
        }
        for (name, value) in &self.env {
            let mut bytes = name.bytes();
            let first_ok = bytes
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
            if !first_ok || !bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(PlanError::InvalidEnvName {
                    suite: suite(),
                    name: name.clone(),
                });
            }
            if value.contains('\0') {
                return Err(PlanError::NulInArgument {
                    suite: suite(),
                    arg: format!("{name}={value}"),
                });
            }
        }
        if let Some(arg) = self.args.iter().find(|a| a.contains('\0')) {
            return Err(PlanError::NulInArgument {
                suite: suite(),
                arg: arg.clone(),
            });
        }
        Ok(())
    }
}

/// Quotes `word` for a POSIX shell: the word in single quotes, each `'` written as `'\''`.
pub fn shell_quote(word: &str) -> String {
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Renders the plan file `/init` sources: one `step SUITE TIMEOUT_SECS ARGV...` line per
/// step, every word quoted. Validates every step and refuses duplicate suite names.
pub fn render_plan(steps: &[PlanStep]) -> Result<String, PlanError> {
    let mut seen = BTreeSet::new();
    let mut out =
        String::from("# Generated by testhost: one `step SUITE TIMEOUT ARGV...` per line.\n");
    for step in steps {
        step.validate()?;
        if !seen.insert(step.suite.as_str()) {
            return Err(PlanError::DuplicateSuite {
                name: step.suite.clone(),
            });
        }
        out.push_str("step ");
        out.push_str(&shell_quote(&step.suite));
        out.push(' ');
        out.push_str(&step.timeout_secs().to_string());
        for word in step.argv() {
            out.push(' ');
            out.push_str(&shell_quote(&word));
        }
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_argv_has_bootstrap_env_and_json_flags_last() {
        let step = PlanStep::libtest("a/lib", "/testhost/bin/a").arg("filter");
        assert_eq!(
            step.argv(),
            [
                "env",
                "RUSTC_BOOTSTRAP=1",
                "/testhost/bin/a",
                "filter",
                "-Z",
                "unstable-options",
                "--format",
                "json",
                "--report-time",
                "--test-threads=1"
            ]
        );
    }

    #[test]
    fn lines_argv_is_plain_without_env() {
        let step = PlanStep::lines("e2e", "/bin/vmm").args(["--nic", "0000:00:06.0"]);
        assert_eq!(step.argv(), ["/bin/vmm", "--nic", "0000:00:06.0"]);
    }

    #[test]
    fn suite_names_are_checked() {
        for good in ["a", "iommufd-ioas/test/map", "x.y:z+1", &"s".repeat(128)] {
            validate_suite_name(good).unwrap();
        }
        for bad in [
            "",
            "has space",
            "new\nline",
            "quote'",
            "semi;colon",
            &"s".repeat(129),
        ] {
            assert!(validate_suite_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn steps_are_validated() {
        let err = |s: PlanStep| s.validate().unwrap_err();
        assert!(matches!(
            err(PlanStep::lines("s", "relative/prog")),
            PlanError::InvalidProgram { .. }
        ));
        assert!(matches!(
            err(PlanStep::lines("s", "/p").arg("a\0b")),
            PlanError::NulInArgument { .. }
        ));
        assert!(matches!(
            err(PlanStep::lines("s", "/p").env("1X", "v")),
            PlanError::InvalidEnvName { .. }
        ));
        assert!(matches!(
            err(PlanStep::lines("s", "/p").env("A-B", "v")),
            PlanError::InvalidEnvName { .. }
        ));
        assert!(matches!(
            err(PlanStep::lines("s", "/p").env("A", "v\0")),
            PlanError::NulInArgument { .. }
        ));
        PlanStep::lines("s", "/p")
            .env("_A1", "")
            .validate()
            .unwrap();
    }

    #[test]
    fn duplicate_suites_are_refused() {
        let steps = [PlanStep::lines("s", "/a"), PlanStep::lines("s", "/b")];
        assert_eq!(
            render_plan(&steps).unwrap_err(),
            PlanError::DuplicateSuite { name: "s".into() }
        );
    }

    #[test]
    fn timeouts_round_up_to_seconds() {
        let secs = |d| PlanStep::lines("s", "/p").timeout(d).timeout_secs();
        assert_eq!(PlanStep::lines("s", "/p").timeout_secs(), 0);
        assert_eq!(secs(Duration::from_millis(1)), 1);
        assert_eq!(secs(Duration::from_secs(0)), 1);
        assert_eq!(secs(Duration::from_millis(2500)), 3);
        assert_eq!(secs(Duration::from_secs(60)), 60);
    }

    #[test]
    fn plan_lines_are_quoted() {
        let plan = render_plan(&[
            PlanStep::lines("one", "/bin/echo").arg("it's"),
            PlanStep::libtest("two", "/t").timeout(Duration::from_secs(5)),
        ])
        .unwrap();
        let lines: Vec<_> = plan.lines().skip(1).collect();
        assert_eq!(lines[0], r#"step 'one' 0 '/bin/echo' 'it'\''s'"#);
        assert!(lines[1].starts_with("step 'two' 5 'env' 'RUSTC_BOOTSTRAP=1' '/t' '-Z'"));
    }

    /// Feeds a rendered plan to the host's `sh` with a `step` that prints its arguments one
    /// per line, and checks that each word arrives unchanged.
    #[test]
    fn quoting_survives_shell_metacharacters() {
        let nasty = [
            "$(touch /tmp/testhost-pwned)",
            "`id`",
            "a'b\"c",
            "semi;colon && true",
            "new\nline",
            "*",
            "",
            "\\",
            "$HOME",
        ];
        let plan = render_plan(&[PlanStep::lines("q", "/bin/x").args(nasty)]).unwrap();
        let script = format!(
            "step() {{ shift 2; for a in \"$@\"; do printf '[%s]' \"$a\"; done; }}\n{plan}"
        );
        let out = match std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
        {
            Ok(out) => out,
            Err(e) => panic!("running sh: {e}"),
        };
        assert!(out.status.success());
        let expected: String = std::iter::once("/bin/x")
            .chain(nasty)
            .map(|a| format!("[{a}]"))
            .collect();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    }
}
