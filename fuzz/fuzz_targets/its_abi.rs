// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Fuzz target `its_abi`: see `fuzz_common::its_abi` for the input and the invariants.

#![no_main]

use fuzz_common::its_abi::{AbiInput, run};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: AbiInput| run(&input));
