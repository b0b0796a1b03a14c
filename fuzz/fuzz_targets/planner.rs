// Copyright 2026 The planner-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Fuzz target `planner`: see `fuzz_common::planner` for the input and the invariants.

#![no_main]

use fuzz_common::planner::{PlannerInput, run};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: PlannerInput| run(&input));
