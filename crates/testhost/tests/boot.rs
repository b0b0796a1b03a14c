// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The harness booting for real, with busybox commands as the plan: NIC binding by index,
//! free-form steps, exit statuses, per-step timeouts, a guest that dies mid-plan and one
//! that hangs. Each test boots QEMU (5-10 s), so they are ignored by default:
//!
//! ```text
//! TESTHOST_KERNEL=/path/to/Image-arm64 cargo test -p testhost --test boot -- --ignored
//! ```
//!
//! They need what `tests/testhost/setup.sh` installs (QEMU, busybox in `TESTHOST_CACHE`).

use std::path::PathBuf;
use std::time::Duration;

use testhost::cli::DEFAULT_CACHE;
use testhost::host::TestHost;
use testhost::plan::PlanStep;
use testhost::protocol::BindStatus;

fn host(name: &str) -> TestHost {
    let kernel = std::env::var_os("TESTHOST_KERNEL")
        .map(PathBuf::from)
        .expect("TESTHOST_KERNEL must name an arm64 Image for the boot tests");
    let cache = std::env::var_os("TESTHOST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE));
    let run_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/testhost/boot-tests")
        .join(name);
    TestHost::new(kernel, cache.join("busybox/bin/busybox"), run_dir)
}

#[test]
#[ignore = "boots QEMU: needs TESTHOST_KERNEL and tests/testhost/setup.sh"]
fn steps_statuses_and_partial_binding() {
    let mut h = host("steps");
    h.nics(2).bind([1]);
    h.step(
        PlanStep::lines("print", "/bin/sh")
            .arg("-c")
            .arg("printf 'one\\n\\n  three  \\nno newline'"),
    )
    .step(
        PlanStep::lines("env", "/bin/sh")
            .arg("-c")
            .arg("echo \"$TESTHOST_IN_GUEST|$TESTHOST_VFIO_BDFS|$STEP_VAR\"")
            .env("STEP_VAR", "it's set"),
    )
    .step(PlanStep::lines("exit3", "/bin/sh").args(["-c", "exit 3"]))
    .step(
        PlanStep::lines("slow", "/bin/sleep")
            .arg("60")
            .timeout(Duration::from_secs(1)),
    )
    .step(PlanStep::lines("after", "/bin/true"));
    let outcome = h.run().unwrap();
    let report = &outcome.report;

    let drivers: Vec<_> = report
        .nics
        .iter()
        .map(|n| (n.bdf.as_str(), n.driver.as_str()))
        .collect();
    assert_eq!(
        drivers,
        [("0000:00:04.0", "igb"), ("0000:00:06.0", "vfio-pci")]
    );
    assert_eq!(report.binds.len(), 1);
    assert_eq!(report.binds[0].status, BindStatus::Ok);

    let suite = |name: &str| report.suites.iter().find(|s| s.name == name).unwrap();
    assert_eq!(
        suite("print").output,
        ["one", "", "  three  ", "no newline"]
    );
    assert_eq!(suite("env").output, ["1|0000:00:06.0|it's set"]);
    assert_eq!(suite("exit3").exit_status, Some(3));
    // busybox timeout kills with SIGKILL: 128 + 9.
    assert_eq!(suite("slow").exit_status, Some(137));
    assert_eq!(suite("after").exit_status, Some(0));

    let failures: Vec<_> = outcome.failures().iter().map(|f| f.to_string()).collect();
    assert_eq!(
        failures,
        [
            "exit3: exited with status 3",
            "slow: exited with status 137"
        ]
    );
    assert_eq!(outcome.tally().to_string(), "3 passed, 2 failed");
    assert!(report.done_uptime.is_some());
    assert!(!outcome.exit.timed_out);
}

#[test]
#[ignore = "boots QEMU: needs TESTHOST_KERNEL and tests/testhost/setup.sh"]
fn guest_that_dies_mid_plan_fails_the_run() {
    let mut h = host("dies");
    h.nics(0).bind([]);
    h.step(PlanStep::lines("first", "/bin/echo").arg("before"))
        .step(PlanStep::lines("poweroff", "/bin/poweroff").arg("-f"))
        .step(PlanStep::lines("never", "/bin/true"));
    let outcome = h.run().unwrap();
    assert!(!outcome.exit.timed_out);
    assert_eq!(outcome.report.suites[0].output, ["before"]);
    let subjects: Vec<_> = outcome.failures().into_iter().map(|f| f.subject).collect();
    assert_eq!(subjects, ["poweroff", "never", "guest"]);
    assert!(outcome.console_tail(5).contains("reboot: Power down"));
}

#[test]
#[ignore = "boots QEMU: needs TESTHOST_KERNEL and tests/testhost/setup.sh"]
fn hung_guest_is_killed_at_the_timeout() {
    let mut h = host("hangs");
    h.nics(0).bind([]).timeout(Duration::from_secs(20));
    h.step(PlanStep::lines("hang", "/bin/sleep").arg("3600"));
    let outcome = h.run().unwrap();
    assert!(outcome.exit.timed_out);
    assert!(outcome.exit.elapsed < Duration::from_secs(40));
    let failures: Vec<_> = outcome.failures().iter().map(|f| f.to_string()).collect();
    assert_eq!(failures.len(), 3, "{failures:?}");
    assert!(failures[0].starts_with("hang: started but never ended"));
    assert!(failures[1].starts_with("guest: no DONE"));
    assert_eq!(failures[2], "qemu: killed after the 20 s timeout");
}
