// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Every input a fuzz run ever found failing, replayed as a plain test. The files live in
//! `tests/regressions/<target>/` (copied from `fuzz/artifacts/<target>/`); each test below
//! names the crate, file and line the bug was in and what was wrong. A test here fails
//! until the bug it records is fixed in the crate under test.

use std::path::PathBuf;

fn replay_dir(target: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/regressions")
        .join(target);
    let Some(t) = fuzz_common::targets()
        .into_iter()
        .find(|t| t.name == target)
    else {
        panic!("no target {target}");
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries {
        let path = e.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        eprintln!("replaying {}", path.display());
        (t.replay)(&bytes);
    }
}

/// Replays every stored input of every target (new crash files need no new code).
#[test]
fn all_stored_inputs_replay_clean() {
    for t in fuzz_common::targets() {
        replay_dir(t.name);
    }
}
