// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Fuzz target `ioas_decode`: see `fuzz_common::ioas_decode` for the input and the invariants.

#![no_main]

use fuzz_common::ioas_decode::{IoasDecodeInput, run};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: IoasDecodeInput| run(&input));
