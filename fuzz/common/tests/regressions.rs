// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Every input a fuzz run ever found failing, replayed as a plain test. The files live in
//! `tests/regressions/<target>/` (copied from `fuzz/artifacts/<target>/`); each test below
//! names the crate, file and line the bug was in and what was wrong. A test here fails
//! until the bug it records is fixed in the crate under test.
//!
//! Stored so far (all three were harness bugs, fixed in `fuzz/common`; none in a crate):
//!
//! - `cap_list/crash-6fd0…`-style file: an extended header at 0x100 with ID 0, version 0,
//!   next 0 but reserved bits 21:20 set is a capability for the parser (correct: only an
//!   all-zero header means none, PCIe 6.0 §7.6.3); the round-trip rebuild dropped those
//!   bits. The rebuild now keeps them.
//! - `ioas_decode/crash-fd59…`: a `reserved_regions` kind holding U+000B, which is Unicode
//!   but not ASCII whitespace; the parser (splitting on ASCII whitespace, as the kernel
//!   prints) keeps it, the harness wrongly required no Unicode whitespace.
//! - `passthrough/crash-b199…`: with injected routing failures the device releases GSIs
//!   whose route removal failed (it logs and counts the fault); the harness demanded a clean
//!   teardown even then. Teardown cleanliness is now checked on fault-free runs only.

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
