// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Fuzz target `vsmmuv3`: see `fuzz_common::vsmmuv3` for the input and the invariants.

#![no_main]

use fuzz_common::vsmmuv3::{VsmmuInput, run};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: VsmmuInput| run(&input));
