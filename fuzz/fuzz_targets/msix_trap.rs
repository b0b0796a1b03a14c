// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Fuzz target `msix_trap`: see `fuzz_common::msix` for the input and the invariants.

#![no_main]

use fuzz_common::msix::{MsixInput, run};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: MsixInput| run(&input));
