// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Input structures, replay logic and invariant checks of the passthrough-msi fuzz targets.
//!
//! Each module is one target: an input type (decoded from bytes by [`wire`], also an
//! [`arbitrary::Arbitrary`]), a `run` function that replays it against the crate under test
//! and a small reference model, and `seeds()` taken from the crates' unit-test scenarios.
//! The `fuzz_targets/*.rs` binaries are one line each: `run(&input)`. So a crash file
//! reproduces on stable Rust, without libFuzzer:
//!
//! ```
//! use fuzz_common::wire::Wire;
//! let bytes: &[u8] = &[]; // std::fs::read("artifacts/msix_trap/crash-...")
//! fuzz_common::msix::run(&fuzz_common::msix::MsixInput::from_bytes(bytes));
//! ```
//!
//! `tests/regressions.rs` replays every crash ever found; `tests/seeds.rs` checks (and, with
//! `FUZZ_WRITE_SEEDS=1`, writes) the seed corpora in `fuzz/corpus/<target>/`.

pub mod cap_list;
pub mod ioas_decode;
pub mod its_abi;
pub mod msi;
pub mod msix;
pub mod passthrough;
pub mod planner;
pub mod region_caps;
pub mod vimsic;
pub mod vits;
pub mod vsmmuv3;
pub mod wire;

/// Every target: its name (the `fuzz_targets/<name>.rs` binary and corpus directory), its
/// seeds as bytes, and its replay function over bytes.
pub fn targets() -> Vec<Target> {
    use wire::Wire;
    vec![
        Target {
            name: "msix_trap",
            seeds: encode_seeds(msix::seeds()),
            replay: |b| msix::run(&msix::MsixInput::from_bytes(b)),
        },
        Target {
            name: "msi_trap",
            seeds: encode_seeds(msi::seeds()),
            replay: |b| msi::run(&msi::MsiInput::from_bytes(b)),
        },
        Target {
            name: "vits",
            seeds: encode_seeds(vits::seeds()),
            replay: |b| vits::run(&vits::VitsInput::from_bytes(b)),
        },
        Target {
            name: "its_abi",
            seeds: encode_seeds(its_abi::seeds()),
            replay: |b| its_abi::run(&its_abi::AbiInput::from_bytes(b)),
        },
        Target {
            name: "vimsic",
            seeds: encode_seeds(vimsic::seeds()),
            replay: |b| vimsic::run(&vimsic::ImsicInput::from_bytes(b)),
        },
        Target {
            name: "cap_list",
            seeds: encode_seeds(cap_list::seeds()),
            replay: |b| cap_list::run(&cap_list::CapInput::from_bytes(b)),
        },
        Target {
            name: "region_caps",
            seeds: encode_seeds(region_caps::seeds()),
            replay: |b| region_caps::run(&region_caps::RegionCapsInput::from_bytes(b)),
        },
        Target {
            name: "ioas_decode",
            seeds: encode_seeds(ioas_decode::seeds()),
            replay: |b| ioas_decode::run(&ioas_decode::IoasDecodeInput::from_bytes(b)),
        },
        Target {
            name: "passthrough",
            seeds: encode_seeds(passthrough::seeds()),
            replay: |b| passthrough::run(&passthrough::PtInput::from_bytes(b)),
        },
        Target {
            name: "planner",
            seeds: encode_seeds(planner::seeds()),
            replay: |b| planner::run(&planner::PlannerInput::from_bytes(b)),
        },
        Target {
            name: "vsmmuv3",
            seeds: encode_seeds(vsmmuv3::seeds()),
            replay: |b| vsmmuv3::run(&vsmmuv3::VsmmuInput::from_bytes(b)),
        },
    ]
}

/// One fuzz target, as the seed writer and the regression tests see it.
pub struct Target {
    /// Binary and corpus directory name.
    pub name: &'static str,
    /// Named seed inputs.
    pub seeds: Vec<(&'static str, Vec<u8>)>,
    /// Replays one input (panics on a broken invariant).
    pub replay: fn(&[u8]),
}

fn encode_seeds<T: wire::Wire>(seeds: Vec<(&'static str, T)>) -> Vec<(&'static str, Vec<u8>)> {
    seeds.into_iter().map(|(n, s)| (n, s.to_bytes())).collect()
}
