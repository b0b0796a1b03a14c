// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The results channel: what the guest's `/init` writes to the virtio-serial port named
//! `results`, and how the host turns it into a [`RunReport`].
//!
//! One record per line, fields separated by single spaces:
//!
//! | record | meaning |
//! |---|---|
//! | `HELLO <version>` | `/init` found the port; [`PROTOCOL_VERSION`] |
//! | `NIC <index> <bdf> <driver>` | the igb (8086:10c9) NIC number `index` in BDF order, its driver after binding (`none` if unbound) |
//! | `BIND <index> <bdf> <ok\|fail\|missing> [detail]` | the result of binding NIC `index` to vfio-pci (`-` for the BDF when missing) |
//! | `BEGIN <suite>` | a plan step starts |
//! | `E <suite> <line>` | one line of the step's standard output |
//! | `X <suite> <status>` | the step ended with shell exit status `status` |
//! | `DONE <uptime>` | the plan finished; guest uptime in seconds (`/proc/uptime`) |
//!
//! Input is guest output and is treated as hostile: nothing here panics or allocates by a
//! count the guest chose; a malformed record becomes a [`Failure`] of the run, never a
//! crash (`tests::garbage_never_panics`). A missing `DONE` means the guest crashed, hung or
//! was killed, and fails the run (`tests::missing_done_fails`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;

use crate::plan::{OutputFormat, validate_suite_name};

/// Version of the record format that `/init` writes in `HELLO`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest excerpt of a bad line quoted in a failure message.
const EXCERPT_LEN: usize = 160;

/// Status of one bind request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindStatus {
    /// The NIC is bound to vfio-pci.
    Ok,
    /// Binding failed; the detail says where.
    Fail,
    /// No igb NIC with that index exists.
    Missing,
}

/// One parsed record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record<'a> {
    /// `HELLO <version>`.
    Hello {
        /// Protocol version.
        version: u32,
    },
    /// `NIC <index> <bdf> <driver>`.
    Nic {
        /// Position among igb NICs in BDF order.
        index: u32,
        /// PCI address, `DDDD:BB:DD.F`.
        bdf: &'a str,
        /// Bound driver (`none` when unbound).
        driver: &'a str,
    },
    /// `BIND <index> <bdf> <status> [detail]`.
    Bind {
        /// Position among igb NICs in BDF order.
        index: u32,
        /// PCI address or `-`.
        bdf: &'a str,
        /// Outcome.
        status: BindStatus,
        /// Free text after the status.
        detail: &'a str,
    },
    /// `BEGIN <suite>`.
    Begin {
        /// Suite name.
        suite: &'a str,
    },
    /// `E <suite> <line>`.
    Event {
        /// Suite name.
        suite: &'a str,
        /// The output line (may be empty).
        payload: &'a str,
    },
    /// `X <suite> <status>`.
    Exit {
        /// Suite name.
        suite: &'a str,
        /// Shell exit status (128 + signal number for a killed step).
        status: i32,
    },
    /// `DONE <uptime>`.
    Done {
        /// Guest uptime in seconds.
        uptime: f64,
    },
}

/// Why a line is not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The first word is no known record tag.
    #[error("results: unknown record {0:?}")]
    UnknownTag(String),
    /// A record with missing, extra or malformed fields.
    #[error("results: malformed {tag} record {line:?}")]
    Malformed {
        /// The record tag.
        tag: &'static str,
        /// An excerpt of the line.
        line: String,
    },
}

fn excerpt(line: &str) -> String {
    if line.len() <= EXCERPT_LEN {
        return line.to_owned();
    }
    let mut end = EXCERPT_LEN;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &line[..end])
}

fn is_bdf(s: &str) -> bool {
    // DDDD:BB:DD.F, lowercase hex as sysfs names devices.
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

/// Parses one line (without its newline; a trailing `\r` is ignored).
pub fn parse_record(line: &str) -> Result<Record<'_>, ProtocolError> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
    let malformed = |tag| ProtocolError::Malformed {
        tag,
        line: excerpt(line),
    };
    let suite_word = |tag, word: &str| -> Result<(), ProtocolError> {
        validate_suite_name(word).map_err(|_| malformed(tag))
    };
    match tag {
        "HELLO" => rest
            .parse()
            .map(|version| Record::Hello { version })
            .map_err(|_| malformed("HELLO")),
        "NIC" => {
            let mut f = rest.split(' ');
            match (f.next(), f.next(), f.next(), f.next()) {
                (Some(index), Some(bdf), Some(driver), None)
                    if is_bdf(bdf) && !driver.is_empty() =>
                {
                    let index = index.parse().map_err(|_| malformed("NIC"))?;
                    Ok(Record::Nic { index, bdf, driver })
                }
                _ => Err(malformed("NIC")),
            }
        }
        "BIND" => {
            let mut f = rest.splitn(4, ' ');
            let (Some(index), Some(bdf), Some(status)) = (f.next(), f.next(), f.next()) else {
                return Err(malformed("BIND"));
            };
            let index = index.parse().map_err(|_| malformed("BIND"))?;
            let status = match status {
                "ok" => BindStatus::Ok,
                "fail" => BindStatus::Fail,
                "missing" => BindStatus::Missing,
                _ => return Err(malformed("BIND")),
            };
            if !(is_bdf(bdf) || (bdf == "-" && status == BindStatus::Missing)) {
                return Err(malformed("BIND"));
            }
            Ok(Record::Bind {
                index,
                bdf,
                status,
                detail: f.next().unwrap_or(""),
            })
        }
        "BEGIN" => {
            suite_word("BEGIN", rest)?;
            Ok(Record::Begin { suite: rest })
        }
        "E" => {
            let (suite, payload) = rest.split_once(' ').unwrap_or((rest, ""));
            suite_word("E", suite)?;
            Ok(Record::Event { suite, payload })
        }
        "X" => {
            let (suite, status) = rest.split_once(' ').ok_or_else(|| malformed("X"))?;
            suite_word("X", suite)?;
            let status = status.parse().map_err(|_| malformed("X"))?;
            Ok(Record::Exit { suite, status })
        }
        "DONE" => match rest.parse::<f64>() {
            Ok(uptime) if uptime.is_finite() && uptime >= 0.0 => Ok(Record::Done { uptime }),
            _ => Err(malformed("DONE")),
        },
        _ => Err(ProtocolError::UnknownTag(excerpt(tag))),
    }
}

/// A libtest `exec_time`: seconds as a number (current libtest) or a string like `"0.01s"`
/// (older releases).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ExecTime {
    /// Seconds.
    Seconds(f64),
    /// Text as printed.
    Text(String),
}

impl ExecTime {
    /// The time in seconds, when it can be read.
    pub fn seconds(&self) -> Option<f64> {
        let s = match self {
            ExecTime::Seconds(s) => *s,
            ExecTime::Text(t) => t.strip_suffix('s').unwrap_or(t).parse().ok()?,
        };
        (s.is_finite() && s >= 0.0).then_some(s)
    }
}

/// The `event` of a libtest suite record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SuiteEventKind {
    /// `started`, with `test_count`.
    Started,
    /// `ok`: all tests passed.
    Ok,
    /// `failed`: some test failed.
    Failed,
    /// A kind this parser does not know.
    #[serde(other)]
    Other,
}

/// The `event` of a libtest test record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TestEventKind {
    /// The test started.
    Started,
    /// It passed.
    Ok,
    /// It failed (panicked, or did not panic as `should_panic` wanted).
    Failed,
    /// It was not run (`#[ignore]`).
    Ignored,
    /// It has run for over 60 s (a warning, not an outcome).
    Timeout,
    /// A kind this parser does not know.
    #[serde(other)]
    Other,
}

/// A libtest suite record (`{"type":"suite",...}`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SuiteEvent {
    /// What happened.
    pub event: SuiteEventKind,
    /// Number of tests (on `started`).
    pub test_count: Option<u64>,
    /// Passed tests (at the end).
    pub passed: Option<u64>,
    /// Failed tests (at the end).
    pub failed: Option<u64>,
    /// Ignored tests (at the end).
    pub ignored: Option<u64>,
    /// Benchmarks measured (at the end).
    pub measured: Option<u64>,
    /// Tests left out by a filter (at the end).
    pub filtered_out: Option<u64>,
    /// Suite run time (with `--report-time`).
    pub exec_time: Option<ExecTime>,
}

/// A libtest test record (`{"type":"test",...}`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TestEvent {
    /// What happened.
    pub event: TestEventKind,
    /// The test's path, e.g. `tests::maps_over_window`.
    pub name: String,
    /// Run time (with `--report-time`).
    pub exec_time: Option<ExecTime>,
    /// Captured output, with the panic message, for a failed test.
    pub stdout: Option<String>,
    /// The `#[ignore = "..."]` reason, or why a `should_panic` test failed.
    pub message: Option<String>,
}

/// One line of libtest's `--format json` output.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LibtestEvent {
    /// A suite record.
    Suite(SuiteEvent),
    /// A test record.
    Test(TestEvent),
    /// Any other type (`bench`, ...).
    #[serde(other)]
    Other,
}

/// Parses one libtest JSON line.
pub fn parse_libtest_event(line: &str) -> Result<LibtestEvent, serde_json::Error> {
    serde_json::from_str(line)
}

/// The final outcome of one test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestOutcome {
    /// It passed.
    Passed,
    /// It failed.
    Failed {
        /// Captured output with the panic message.
        stdout: String,
        /// libtest's own message (`should_panic` mismatch), if any.
        message: Option<String>,
    },
    /// It was ignored.
    Ignored {
        /// The reason given in `#[ignore = "..."]`.
        reason: Option<String>,
    },
    /// It started and never finished: the binary crashed or was killed.
    Unfinished,
}

/// One test's result.
#[derive(Debug, Clone, PartialEq)]
pub struct TestResult {
    /// The test's path within its suite.
    pub name: String,
    /// Its outcome.
    pub outcome: TestOutcome,
    /// Run time in seconds, when reported.
    pub exec_time: Option<f64>,
}

/// libtest's closing counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SuiteSummary {
    /// Passed tests.
    pub passed: u64,
    /// Failed tests.
    pub failed: u64,
    /// Ignored tests.
    pub ignored: u64,
    /// Tests left out by a filter.
    pub filtered_out: u64,
}

/// Everything reported for one plan step.
#[derive(Debug, Clone, PartialEq)]
pub struct SuiteReport {
    /// Suite name.
    pub name: String,
    /// How its output was read.
    pub format: OutputFormat,
    /// Whether `BEGIN` was seen.
    pub began: bool,
    /// Test results (libtest suites), in the order they finished.
    pub tests: Vec<TestResult>,
    /// Output lines that are not libtest events (all lines of a [`OutputFormat::Lines`] step).
    pub output: Vec<String>,
    /// libtest's closing counts.
    pub summary: Option<SuiteSummary>,
    /// libtest's suite run time in seconds.
    pub exec_time: Option<f64>,
    /// Exit status, when `X` was seen.
    pub exit_status: Option<i32>,
}

impl SuiteReport {
    fn new(name: String, format: OutputFormat) -> Self {
        SuiteReport {
            name,
            format,
            began: false,
            tests: Vec::new(),
            output: Vec::new(),
            summary: None,
            exec_time: None,
            exit_status: None,
        }
    }

    fn count(&self, f: impl Fn(&TestOutcome) -> bool) -> u64 {
        self.tests.iter().filter(|t| f(&t.outcome)).count() as u64
    }
}

/// A NIC as `/init` saw it after binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicState {
    /// Position among igb NICs in BDF order.
    pub index: u32,
    /// PCI address.
    pub bdf: String,
    /// Bound driver, `none` when unbound.
    pub driver: String,
}

/// The result of binding one NIC to vfio-pci.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindResult {
    /// Position among igb NICs in BDF order.
    pub index: u32,
    /// PCI address, or `-` when missing.
    pub bdf: String,
    /// Outcome.
    pub status: BindStatus,
    /// Free text from `/init`.
    pub detail: String,
}

/// What the host expects from a run: the plan's suites and the NIC setup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expectations {
    /// Suite names and formats, in plan order.
    pub suites: Vec<(String, OutputFormat)>,
    /// Number of igb NICs the VM has.
    pub nics: u32,
    /// Indices of the NICs that must end up on vfio-pci.
    pub bind: Vec<u32>,
}

/// One reason a run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What failed: `suite::test`, a suite, a NIC, or `guest`.
    pub subject: String,
    /// Why.
    pub reason: String,
    /// Captured output, if any.
    pub output: Option<String>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.reason)
    }
}

/// Counts for the closing line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    /// Tests passed (plus [`OutputFormat::Lines`] steps that exited 0).
    pub passed: u64,
    /// Failures: failed tests plus every other [`Failure`] of the run.
    pub failed: u64,
    /// Ignored tests.
    pub ignored: u64,
}

impl fmt::Display for Tally {
    /// `N passed, M failed`, then `, K skipped` when tests were ignored: the plain closing
    /// line CI reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)?;
        if self.ignored > 0 {
            write!(f, ", {} skipped", self.ignored)?;
        }
        Ok(())
    }
}

/// Everything the results channel said, checked against the [`Expectations`].
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// What was expected.
    pub expected: Expectations,
    /// The `HELLO` version, if seen.
    pub protocol_version: Option<u32>,
    /// igb NICs as `/init` reported them.
    pub nics: Vec<NicState>,
    /// Bind results.
    pub binds: Vec<BindResult>,
    /// One report per planned suite, in plan order.
    pub suites: Vec<SuiteReport>,
    /// Guest uptime at `DONE`; `None` if the plan did not finish.
    pub done_uptime: Option<f64>,
    /// Records that broke the protocol.
    pub problems: Vec<String>,
}

impl RunReport {
    /// Every reason the run failed; empty means it passed.
    pub fn failures(&self) -> Vec<Failure> {
        let mut out = Vec::new();
        let fail = |subject: &str, reason: String| Failure {
            subject: subject.to_owned(),
            reason,
            output: None,
        };
        for p in &self.problems {
            out.push(fail("results", p.clone()));
        }
        if let Some(v) = self.protocol_version.filter(|v| *v != PROTOCOL_VERSION) {
            out.push(fail(
                "results",
                format!("guest speaks protocol {v}, host {PROTOCOL_VERSION}"),
            ));
        }
        if self.nics.len() as u64 != u64::from(self.expected.nics)
            && self.protocol_version.is_some()
        {
            out.push(fail(
                "nics",
                format!(
                    "guest found {} igb NIC(s), the VM has {}",
                    self.nics.len(),
                    self.expected.nics
                ),
            ));
        }
        for index in &self.expected.bind {
            match self.binds.iter().find(|b| b.index == *index) {
                Some(b) if b.status == BindStatus::Ok => {}
                Some(b) => out.push(fail(
                    &format!("nic{index}"),
                    format!("binding {} to vfio-pci: {:?} {}", b.bdf, b.status, b.detail),
                )),
                None => out.push(fail(
                    &format!("nic{index}"),
                    "no bind result from the guest".to_owned(),
                )),
            }
        }
        for suite in &self.suites {
            suite_failures(suite, &mut out);
        }
        if self.done_uptime.is_none() {
            out.push(fail(
                "guest",
                "no DONE record: the guest crashed, hung or was killed before the plan finished"
                    .to_owned(),
            ));
        }
        out
    }

    /// Counts for the closing line; `failed` is the number of [`Self::failures`].
    pub fn tally(&self) -> Tally {
        let mut t = Tally {
            failed: self.failures().len() as u64,
            ..Tally::default()
        };
        for s in &self.suites {
            match s.format {
                OutputFormat::Libtest => {
                    t.passed += s.count(|o| *o == TestOutcome::Passed);
                    t.ignored += s.count(|o| matches!(o, TestOutcome::Ignored { .. }));
                }
                OutputFormat::Lines => t.passed += u64::from(s.exit_status == Some(0)),
            }
        }
        t
    }

    /// Whether the run passed.
    pub fn success(&self) -> bool {
        self.failures().is_empty()
    }
}

/// Failures a suite's exit status and libtest summary show (failed tests come separately).
fn exit_failures(s: &SuiteReport, status: i32, fail: &mut impl FnMut(String)) {
    match s.format {
        OutputFormat::Lines => {
            if status != 0 {
                fail(format!("exited with status {status}"));
            }
        }
        OutputFormat::Libtest => {
            let failed =
                s.count(|o| matches!(o, TestOutcome::Failed { .. } | TestOutcome::Unfinished));
            if status != 0 && failed == 0 {
                fail(format!(
                    "exited with status {status} but reported no failed test{}",
                    if status > 128 {
                        format!(" (killed by signal {})", status - 128)
                    } else {
                        String::new()
                    }
                ));
            }
            if status == 0 && s.summary.is_none() {
                fail(
                    "exited 0 without libtest's closing record (not a libtest binary?)".to_owned(),
                );
            }
            if let Some(sum) = s.summary {
                let seen = (
                    s.count(|o| *o == TestOutcome::Passed),
                    s.count(|o| matches!(o, TestOutcome::Failed { .. })),
                    s.count(|o| matches!(o, TestOutcome::Ignored { .. })),
                );
                if seen != (sum.passed, sum.failed, sum.ignored) {
                    fail(format!(
                        "libtest counted {}/{}/{} passed/failed/ignored but the channel carried {}/{}/{}",
                        sum.passed, sum.failed, sum.ignored, seen.0, seen.1, seen.2
                    ));
                }
            }
        }
    }
}

fn suite_failures(s: &SuiteReport, out: &mut Vec<Failure>) {
    let mut fail = |reason: String| {
        out.push(Failure {
            subject: s.name.clone(),
            reason,
            output: None,
        })
    };
    if !s.began {
        fail("never started (the guest stopped before this step)".to_owned());
        return;
    }
    match s.exit_status {
        None => fail(
            "started but never ended: the guest crashed, hung or was killed during it".to_owned(),
        ),
        Some(status) => exit_failures(s, status, &mut fail),
    }
    for t in &s.tests {
        let reason = match &t.outcome {
            TestOutcome::Failed { message, .. } => match message {
                Some(m) => format!("failed: {m}"),
                None => "failed".to_owned(),
            },
            TestOutcome::Unfinished => {
                "started and never finished (the test binary crashed or was killed)".to_owned()
            }
            TestOutcome::Passed | TestOutcome::Ignored { .. } => continue,
        };
        out.push(Failure {
            subject: format!("{}::{}", s.name, t.name),
            reason,
            output: match &t.outcome {
                TestOutcome::Failed { stdout, .. } if !stdout.is_empty() => Some(stdout.clone()),
                _ => None,
            },
        });
    }
}

/// Builds a [`RunReport`] from results-channel lines.
///
/// # Example
///
/// ```
/// use testhost::plan::OutputFormat;
/// use testhost::protocol::{Expectations, ResultsParser};
///
/// let mut p = ResultsParser::new(Expectations {
///     suites: vec![("demo".into(), OutputFormat::Libtest)],
///     nics: 0,
///     bind: vec![],
/// });
/// for line in [
///     "HELLO 1",
///     "BEGIN demo",
///     r#"E demo { "type": "suite", "event": "started", "test_count": 1 }"#,
///     r#"E demo { "type": "test", "event": "started", "name": "t" }"#,
///     r#"E demo { "type": "test", "name": "t", "event": "ok", "exec_time": 0.001 }"#,
///     r#"E demo { "type": "suite", "event": "ok", "passed": 1, "failed": 0, "ignored": 0, "measured": 0, "filtered_out": 0 }"#,
///     "X demo 0",
///     "DONE 2.5",
/// ] {
///     p.line(line);
/// }
/// let report = p.finish();
/// assert!(report.success());
/// assert_eq!(report.tally().to_string(), "1 passed, 0 failed");
/// ```
#[derive(Debug, Clone)]
pub struct ResultsParser {
    report: RunReport,
    index: BTreeMap<String, usize>,
    /// Per suite: tests started and not yet finished, by name.
    running: BTreeSet<(usize, String)>,
    line_no: u64,
}

impl ResultsParser {
    /// A parser for a run with these expectations.
    pub fn new(expected: Expectations) -> Self {
        let mut index = BTreeMap::new();
        let mut suites = Vec::new();
        for (name, format) in &expected.suites {
            if index.insert(name.clone(), suites.len()).is_none() {
                suites.push(SuiteReport::new(name.clone(), *format));
            }
        }
        ResultsParser {
            report: RunReport {
                expected,
                protocol_version: None,
                nics: Vec::new(),
                binds: Vec::new(),
                suites,
                done_uptime: None,
                problems: Vec::new(),
            },
            index,
            running: BTreeSet::new(),
            line_no: 0,
        }
    }

    fn problem(&mut self, what: String) {
        self.report
            .problems
            .push(format!("line {}: {what}", self.line_no));
    }

    /// Feeds one line (without its newline).
    pub fn line(&mut self, line: &str) {
        self.line_no = self.line_no.saturating_add(1);
        let record = match parse_record(line) {
            Ok(r) => r,
            Err(e) => return self.problem(e.to_string()),
        };
        if self.report.done_uptime.is_some() {
            return self.problem(format!("record after DONE: {:?}", excerpt(line)));
        }
        match record {
            Record::Hello { version } => {
                if self.report.protocol_version.replace(version).is_some() {
                    self.problem("second HELLO (did the guest reboot?)".to_owned());
                }
            }
            Record::Nic { index, bdf, driver } => self.report.nics.push(NicState {
                index,
                bdf: bdf.to_owned(),
                driver: driver.to_owned(),
            }),
            Record::Bind {
                index,
                bdf,
                status,
                detail,
            } => {
                if !self.report.expected.bind.contains(&index) {
                    self.problem(format!("BIND for NIC {index}, which was not asked for"));
                }
                self.report.binds.push(BindResult {
                    index,
                    bdf: bdf.to_owned(),
                    status,
                    detail: detail.to_owned(),
                });
            }
            Record::Begin { suite } => {
                let Some(i) = self.suite(suite) else { return };
                if std::mem::replace(&mut self.report.suites[i].began, true) {
                    self.problem(format!("suite {suite} began twice"));
                }
            }
            Record::Event { suite, payload } => {
                let Some(i) = self.open_suite(suite, "E") else {
                    return;
                };
                self.event(i, payload);
            }
            Record::Exit { suite, status } => {
                let Some(i) = self.open_suite(suite, "X") else {
                    return;
                };
                self.report.suites[i].exit_status = Some(status);
                self.close_running(i);
            }
            Record::Done { uptime } => self.report.done_uptime = Some(uptime),
        }
    }

    /// The index of a planned suite, or a problem.
    fn suite(&mut self, suite: &str) -> Option<usize> {
        let i = self.index.get(suite).copied();
        if i.is_none() {
            self.problem(format!("suite {suite:?} is not in the plan"));
        }
        i
    }

    /// The index of a suite that has begun and not ended, or a problem.
    fn open_suite(&mut self, suite: &str, tag: &str) -> Option<usize> {
        let i = self.suite(suite)?;
        let s = &self.report.suites[i];
        if !s.began || s.exit_status.is_some() {
            self.problem(format!("{tag} record for suite {suite} outside BEGIN..X"));
            return None;
        }
        Some(i)
    }

    fn event(&mut self, i: usize, payload: &str) {
        let suite = &mut self.report.suites[i];
        if suite.format == OutputFormat::Lines {
            suite.output.push(payload.to_owned());
            return;
        }
        match parse_libtest_event(payload) {
            Ok(LibtestEvent::Test(t)) => self.test_event(i, t),
            Ok(LibtestEvent::Suite(e)) => {
                if matches!(e.event, SuiteEventKind::Ok | SuiteEventKind::Failed) {
                    suite.summary = Some(SuiteSummary {
                        passed: e.passed.unwrap_or(0),
                        failed: e.failed.unwrap_or(0),
                        ignored: e.ignored.unwrap_or(0),
                        filtered_out: e.filtered_out.unwrap_or(0),
                    });
                    suite.exec_time = e.exec_time.as_ref().and_then(ExecTime::seconds);
                }
            }
            // Output a test wrote around libtest (a child process, say): keep it.
            Ok(LibtestEvent::Other) | Err(_) => suite.output.push(payload.to_owned()),
        }
    }

    fn test_event(&mut self, i: usize, t: TestEvent) {
        let key = (i, t.name);
        let outcome = match t.event {
            TestEventKind::Started => {
                if !self.running.insert(key.clone()) {
                    self.problem(format!("test {} started twice", key.1));
                }
                return;
            }
            TestEventKind::Timeout | TestEventKind::Other => return,
            TestEventKind::Ok => TestOutcome::Passed,
            TestEventKind::Failed => TestOutcome::Failed {
                stdout: t.stdout.unwrap_or_default(),
                message: t.message,
            },
            TestEventKind::Ignored => TestOutcome::Ignored { reason: t.message },
        };
        // libtest announces ignored tests as started too; a result without a start is
        // accepted (older libtest did not always print `started`).
        self.running.remove(&key);
        let (_, name) = key;
        self.report.suites[i].tests.push(TestResult {
            name,
            outcome,
            exec_time: t.exec_time.as_ref().and_then(ExecTime::seconds),
        });
    }

    /// Marks tests still running in suite `i` as unfinished.
    fn close_running(&mut self, i: usize) {
        let keys: Vec<_> = self
            .running
            .range((i, String::new())..)
            .take_while(|(j, _)| *j == i)
            .cloned()
            .collect();
        for key in keys {
            self.running.remove(&key);
            self.report.suites[i].tests.push(TestResult {
                name: key.1,
                outcome: TestOutcome::Unfinished,
                exec_time: None,
            });
        }
    }

    /// Ends the input and returns the report. Tests still running in a suite that never
    /// ended are marked [`TestOutcome::Unfinished`].
    pub fn finish(mut self) -> RunReport {
        for i in 0..self.report.suites.len() {
            self.close_running(i);
        }
        self.report
    }
}

/// Parses a whole results file: lines split on `\n`, invalid UTF-8 replaced. A last line
/// without its newline is a record cut short (the guest died while writing) and is a
/// problem, not a record.
pub fn parse_results(bytes: &[u8], expected: Expectations) -> RunReport {
    let mut parser = ResultsParser::new(expected);
    let text = String::from_utf8_lossy(bytes);
    let mut rest: &str = &text;
    while let Some((line, tail)) = rest.split_once('\n') {
        parser.line(line);
        rest = tail;
    }
    let mut report = parser.finish();
    if !rest.is_empty() {
        report.problems.push(format!(
            "results end in a partial record {:?}",
            excerpt(rest)
        ));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAILING: &str = include_str!("../tests/fixtures/libtest-failing.jsonl");
    const PASSING: &str = include_str!("../tests/fixtures/libtest-passing.jsonl");

    fn expect(suites: &[(&str, OutputFormat)], nics: u32, bind: &[u32]) -> Expectations {
        Expectations {
            suites: suites.iter().map(|(n, f)| ((*n).to_owned(), *f)).collect(),
            nics,
            bind: bind.to_vec(),
        }
    }

    /// A results stream for libtest suites given as (name, fixture text, exit status).
    fn stream(suites: &[(&str, &str, i32)], nics: &[&str], done: bool) -> String {
        let mut s = String::from("HELLO 1\n");
        for (i, bdf) in nics.iter().enumerate() {
            s += &format!("BIND {i} {bdf} ok\n");
        }
        for (i, bdf) in nics.iter().enumerate() {
            s += &format!("NIC {i} {bdf} vfio-pci\n");
        }
        for (name, text, status) in suites {
            s += &format!("BEGIN {name}\n");
            for line in text.lines() {
                s += &format!("E {name} {line}\n");
            }
            s += &format!("X {name} {status}\n");
        }
        if done {
            s += "DONE 3.25\n";
        }
        s
    }

    #[test]
    fn records_parse() {
        assert_eq!(parse_record("HELLO 1"), Ok(Record::Hello { version: 1 }));
        assert_eq!(
            parse_record("NIC 1 0000:00:06.0 igb"),
            Ok(Record::Nic {
                index: 1,
                bdf: "0000:00:06.0",
                driver: "igb"
            })
        );
        assert_eq!(
            parse_record("BIND 0 0000:00:04.0 fail unbind: No such device"),
            Ok(Record::Bind {
                index: 0,
                bdf: "0000:00:04.0",
                status: BindStatus::Fail,
                detail: "unbind: No such device"
            })
        );
        assert_eq!(
            parse_record("BIND 3 - missing"),
            Ok(Record::Bind {
                index: 3,
                bdf: "-",
                status: BindStatus::Missing,
                detail: ""
            })
        );
        assert_eq!(
            parse_record("E s "),
            Ok(Record::Event {
                suite: "s",
                payload: ""
            })
        );
        assert_eq!(
            parse_record("E s"),
            Ok(Record::Event {
                suite: "s",
                payload: ""
            })
        );
        assert_eq!(
            parse_record("E s  two  spaces "),
            Ok(Record::Event {
                suite: "s",
                payload: " two  spaces "
            })
        );
        assert_eq!(
            parse_record("X s -1\r"),
            Ok(Record::Exit {
                suite: "s",
                status: -1
            })
        );
        assert_eq!(parse_record("DONE 12.5"), Ok(Record::Done { uptime: 12.5 }));
    }

    #[test]
    fn malformed_records_are_errors() {
        for bad in [
            "",
            "HELLO",
            "HELLO x",
            "NIC 0 0000:00:04.0",
            "NIC 0 00:04.0 igb",
            "NIC 0 0000:00:04.0 igb extra",
            "NIC -1 0000:00:04.0 igb",
            "BIND 0 0000:00:04.0 maybe",
            "BIND 0 - ok",
            "BEGIN",
            "BEGIN two words",
            "E bad'suite x",
            "X s",
            "X s 1.5",
            "X s 99999999999",
            "DONE nan",
            "DONE -1",
            "DONE inf",
            "hello 1",
            "RESULT ok",
        ] {
            assert!(parse_record(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn real_failing_libtest_output() {
        let text = stream(&[("sample/lib", FAILING, 101)], &[], true);
        let report = parse_results(
            text.as_bytes(),
            expect(&[("sample/lib", OutputFormat::Libtest)], 0, &[]),
        );
        let suite = &report.suites[0];
        let names: Vec<_> = suite.tests.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "tests::ignored_plain",
                "tests::ignored_with_reason",
                "tests::panics",
                "tests::passes",
                "tests::should_panic_wrong"
            ]
        );
        assert_eq!(
            suite.tests[0].outcome,
            TestOutcome::Ignored { reason: None }
        );
        assert_eq!(
            suite.tests[1].outcome,
            TestOutcome::Ignored {
                reason: Some("needs /dev/iommu".into())
            }
        );
        let TestOutcome::Failed { stdout, message } = &suite.tests[2].outcome else {
            panic!("{:?}", suite.tests[2]);
        };
        assert!(stdout.starts_with("captured line\n"));
        assert!(stdout.contains("arithmetic is broken"));
        assert_eq!(*message, None);
        assert!(suite.tests[2].exec_time.is_some_and(|t| t > 0.0));
        let TestOutcome::Failed { message, .. } = &suite.tests[4].outcome else {
            panic!();
        };
        assert!(
            message
                .as_deref()
                .unwrap()
                .contains("expected substring: \"boom\"")
        );
        assert_eq!(
            suite.summary,
            Some(SuiteSummary {
                passed: 1,
                failed: 2,
                ignored: 2,
                filtered_out: 0
            })
        );
        assert!(suite.output.is_empty());

        let failures = report.failures();
        let subjects: Vec<_> = failures.iter().map(|f| f.subject.as_str()).collect();
        assert_eq!(
            subjects,
            [
                "sample/lib::tests::panics",
                "sample/lib::tests::should_panic_wrong"
            ]
        );
        assert!(
            failures[0]
                .output
                .as_deref()
                .unwrap()
                .contains("panicked at")
        );
        assert_eq!(
            report.tally(),
            Tally {
                passed: 1,
                failed: 2,
                ignored: 2
            }
        );
        assert_eq!(report.tally().to_string(), "1 passed, 2 failed, 2 skipped");
    }

    #[test]
    fn real_passing_libtest_output_with_nics() {
        let text = stream(
            &[("a", PASSING, 0), ("b", PASSING, 0)],
            &["0000:00:04.0", "0000:00:06.0"],
            true,
        );
        let report = parse_results(
            text.as_bytes(),
            expect(
                &[("a", OutputFormat::Libtest), ("b", OutputFormat::Libtest)],
                2,
                &[0, 1],
            ),
        );
        assert_eq!(report.failures(), []);
        assert!(report.success());
        assert_eq!(report.tally().to_string(), "2 passed, 0 failed");
        assert_eq!(report.done_uptime, Some(3.25));
        assert_eq!(report.nics[1].bdf, "0000:00:06.0");
        assert_eq!(report.suites[0].summary.unwrap().filtered_out, 4);
    }

    #[test]
    fn missing_done_fails() {
        let text = stream(&[("a", PASSING, 0)], &[], false);
        let report = parse_results(
            text.as_bytes(),
            expect(&[("a", OutputFormat::Libtest)], 0, &[]),
        );
        let f = report.failures();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].subject, "guest");
        assert_eq!(report.tally().to_string(), "1 passed, 1 failed");
    }

    #[test]
    fn crash_inside_a_test_marks_it_unfinished() {
        // The guest died during tests::passes: its start is the last record.
        let mut text = String::from("HELLO 1\nBEGIN a\n");
        for line in PASSING.lines().take(2) {
            text += &format!("E a {line}\n");
        }
        let report = parse_results(
            text.as_bytes(),
            expect(
                &[("a", OutputFormat::Libtest), ("b", OutputFormat::Lines)],
                0,
                &[],
            ),
        );
        assert_eq!(report.suites[0].tests[0].outcome, TestOutcome::Unfinished);
        let subjects: Vec<_> = report.failures().into_iter().map(|f| f.subject).collect();
        assert_eq!(subjects, ["a", "a::tests::passes", "b", "guest"]);
    }

    #[test]
    fn killed_binary_without_failed_test_fails_its_suite() {
        // A segfault (status 139) after one test passed, before the closing record.
        let partial: String = PASSING.lines().take(3).map(|l| format!("{l}\n")).collect();
        let text = stream(&[("a", &partial, 139)], &[], true);
        let report = parse_results(
            text.as_bytes(),
            expect(&[("a", OutputFormat::Libtest)], 0, &[]),
        );
        let f = report.failures();
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].reason.contains("killed by signal 11"), "{}", f[0]);
    }

    #[test]
    fn summary_must_match_the_events_carried() {
        // Drop the passing test's `ok` record: libtest's counts then disagree.
        let lossy: String = PASSING
            .lines()
            .filter(|l| !l.contains("\"event\": \"ok\", \"exec_time\""))
            .map(|l| format!("{l}\n"))
            .collect();
        let text = stream(&[("a", &lossy, 0)], &[], true);
        let report = parse_results(
            text.as_bytes(),
            expect(&[("a", OutputFormat::Libtest)], 0, &[]),
        );
        let reasons: Vec<_> = report.failures().into_iter().map(|f| f.reason).collect();
        assert!(
            reasons.iter().any(|r| r.contains("libtest counted 1/0/0")),
            "{reasons:?}"
        );
    }

    #[test]
    fn lines_suites_pass_on_exit_zero_and_keep_output() {
        let text = "HELLO 1\nBEGIN e2e\nE e2e guest booted\nE e2e {\"not\":\"libtest\"}\nX e2e 0\nBEGIN bad\nX bad 3\nDONE 9\n";
        let report = parse_results(
            text.as_bytes(),
            expect(
                &[("e2e", OutputFormat::Lines), ("bad", OutputFormat::Lines)],
                0,
                &[],
            ),
        );
        assert_eq!(
            report.suites[0].output,
            ["guest booted", "{\"not\":\"libtest\"}"]
        );
        let f = report.failures();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].to_string(), "bad: exited with status 3");
        assert_eq!(report.tally().to_string(), "1 passed, 1 failed");
    }

    #[test]
    fn bind_results_are_checked() {
        let text = "HELLO 1\nBIND 0 0000:00:04.0 fail driver=igb\nBIND 2 0000:00:08.0 ok\nNIC 0 0000:00:04.0 igb\nNIC 1 0000:00:06.0 igb\nDONE 1\n";
        let report = parse_results(text.as_bytes(), expect(&[], 3, &[0, 1]));
        let f: Vec<_> = report
            .failures()
            .into_iter()
            .map(|f| f.to_string())
            .collect();
        assert_eq!(
            f,
            [
                "results: line 3: BIND for NIC 2, which was not asked for",
                "nics: guest found 2 igb NIC(s), the VM has 3",
                "nic0: binding 0000:00:04.0 to vfio-pci: Fail driver=igb",
                "nic1: no bind result from the guest",
            ]
        );
    }

    #[test]
    fn out_of_order_and_unknown_records_are_problems() {
        let text = "HELLO 1\nE a {}\nBEGIN zz\nBEGIN a\nBEGIN a\nX a 0\nE a late\nHELLO 1\nDONE 1\nX a 0\n";
        let report = parse_results(
            text.as_bytes(),
            expect(&[("a", OutputFormat::Lines)], 0, &[]),
        );
        assert_eq!(
            report.problems,
            [
                "line 2: E record for suite a outside BEGIN..X",
                "line 3: suite \"zz\" is not in the plan",
                "line 5: suite a began twice",
                "line 7: E record for suite a outside BEGIN..X",
                "line 8: second HELLO (did the guest reboot?)",
                "line 10: record after DONE: \"X a 0\"",
            ]
        );
        assert!(!report.success());
    }

    #[test]
    fn partial_last_line_is_a_problem() {
        let report = parse_results(b"HELLO 1\nDONE 1\nE a {\"ty", expect(&[], 0, &[]));
        assert_eq!(report.problems.len(), 1);
        assert!(report.problems[0].contains("partial record"));
    }

    #[test]
    fn wrong_protocol_version_fails() {
        let report = parse_results(b"HELLO 2\nDONE 1\n", expect(&[], 0, &[]));
        assert_eq!(
            report.failures()[0].reason,
            "guest speaks protocol 2, host 1"
        );
    }

    #[test]
    fn exec_time_forms() {
        assert_eq!(ExecTime::Seconds(0.5).seconds(), Some(0.5));
        assert_eq!(ExecTime::Text("0.25s".into()).seconds(), Some(0.25));
        assert_eq!(ExecTime::Text("soon".into()).seconds(), None);
        assert_eq!(ExecTime::Seconds(-1.0).seconds(), None);
        assert_eq!(ExecTime::Seconds(f64::NAN).seconds(), None);
        let e =
            parse_libtest_event(r#"{"type":"test","event":"ok","name":"x","exec_time":"0.001s"}"#)
                .unwrap();
        let LibtestEvent::Test(t) = e else { panic!() };
        assert_eq!(t.exec_time.unwrap().seconds(), Some(0.001));
    }

    #[test]
    fn unknown_libtest_types_and_kinds_are_tolerated() {
        assert_eq!(
            parse_libtest_event(r#"{"type":"bench","name":"b","median":1}"#).unwrap(),
            LibtestEvent::Other
        );
        let e = parse_libtest_event(r#"{"type":"test","event":"retried","name":"x"}"#).unwrap();
        assert!(matches!(
            e,
            LibtestEvent::Test(TestEvent {
                event: TestEventKind::Other,
                ..
            })
        ));
    }

    /// Deterministic pseudo-random garbage, mutations of a real stream included, must
    /// produce problems, never a panic.
    #[test]
    fn garbage_never_panics() {
        let good = stream(&[("a", FAILING, 101)], &["0000:00:04.0"], true);
        let good = good.as_bytes();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..500 {
            let mut bytes = good.to_vec();
            for _ in 0..(next() % 16) {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            let cut = (next() as usize) % (bytes.len() + 1);
            let report = parse_results(
                &bytes[..cut],
                expect(&[("a", OutputFormat::Libtest)], 1, &[0]),
            );
            let _ = report.tally();
        }
        let noise: Vec<u8> = (0..4096).map(|_| next() as u8).collect();
        assert!(!parse_results(&noise, expect(&[], 0, &[])).success());
    }
}
