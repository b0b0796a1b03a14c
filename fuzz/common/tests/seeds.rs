// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The seed corpora in `fuzz/corpus/<target>/` are the unit-test scenarios of
//! `fuzz_common::*::seeds()`, encoded. This test checks that every committed seed file
//! equals its generator's output and replays clean; `FUZZ_WRITE_SEEDS=1 cargo test --test
//! seeds` (re)writes them.

use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("corpus")
        .join(target)
}

#[test]
fn seed_corpora_are_current_and_replay() {
    let write = std::env::var_os("FUZZ_WRITE_SEEDS").is_some();
    for t in fuzz_common::targets() {
        assert!(!t.seeds.is_empty(), "target {} has no seeds", t.name);
        let dir = corpus_dir(t.name);
        if write {
            std::fs::create_dir_all(&dir).unwrap();
        }
        for (name, bytes) in &t.seeds {
            (t.replay)(bytes);
            let path = dir.join(format!("seed-{name}"));
            if write {
                std::fs::write(&path, bytes).unwrap();
            }
            let on_disk = std::fs::read(&path).unwrap_or_else(|e| {
                panic!("{}: {e} (run with FUZZ_WRITE_SEEDS=1)", path.display())
            });
            assert_eq!(
                &on_disk,
                bytes,
                "{} is stale (run with FUZZ_WRITE_SEEDS=1)",
                path.display()
            );
        }
    }
}

#[test]
fn every_target_has_a_binary() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz_targets");
    for t in fuzz_common::targets() {
        assert!(
            dir.join(format!("{}.rs", t.name)).is_file(),
            "no fuzz_targets/{}.rs",
            t.name
        );
    }
}
