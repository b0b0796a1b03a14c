// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Fuzz target `passthrough`: see `fuzz_common::passthrough` for the input and the invariants.

#![no_main]

use fuzz_common::passthrough::{PtInput, run};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: PtInput| run(&input));
