// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Fuzz target `cap_list`: see `fuzz_common::cap_list` for the input and the invariants.

#![no_main]

use fuzz_common::cap_list::{CapInput, run};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: CapInput| run(&input));
