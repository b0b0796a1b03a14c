// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Fuzz target `vimsic`: see `fuzz_common::vimsic` for the input and the invariants.

#![no_main]

use fuzz_common::vimsic::{ImsicInput, run};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: ImsicInput| run(&input));
