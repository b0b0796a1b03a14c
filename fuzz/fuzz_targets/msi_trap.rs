// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Fuzz target `msi_trap`: see `fuzz_common::msi` for the input and the invariants.

#![no_main]

use fuzz_common::msi::{MsiInput, run};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: MsiInput| run(&input));
