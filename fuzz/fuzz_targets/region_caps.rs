// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Fuzz target `region_caps`: see `fuzz_common::region_caps` for the input and the invariants.

#![no_main]

use fuzz_common::region_caps::{RegionCapsInput, run};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: RegionCapsInput| run(&input));
