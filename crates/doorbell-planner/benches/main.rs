// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Planning costs: the test-host case (kernel window), a user-window search through a
//! crowded memory map, and the RAM layout proposal.

fn main() {}
