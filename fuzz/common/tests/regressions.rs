// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Every input a fuzz run ever found failing, replayed as a plain test. The files live in
//! `tests/regressions/<target>/` (copied from `fuzz/artifacts/<target>/`); each test below
//! names the crate, file and line the bug was in and what was wrong. A test here fails
//! until the bug it records is fixed in the crate under test.
//!
//! Stored so far (all four were harness bugs, fixed in `fuzz/common`; none in a crate):
//!
//! - `cap_list/crash-ae32…`: an extended header at 0x100 with ID 0, version 0,
//!   next 0 but reserved bits 21:20 set is a capability for the parser (correct: only an
//!   all-zero header means none, PCIe 6.0 §7.6.3); the round-trip rebuild dropped those
//!   bits. The rebuild now keeps them.
//! - `ioas_decode/crash-fd59…`: a `reserved_regions` kind holding U+000B, which is Unicode
//!   but not ASCII whitespace; the parser (splitting on ASCII whitespace, as the kernel
//!   prints) keeps it, the harness wrongly required no Unicode whitespace.
//! - `passthrough/crash-b199…`: with injected routing failures the device releases GSIs
//!   whose route removal failed (it logs and counts the fault); the harness demanded a clean
//!   teardown even then. Teardown cleanliness is now checked on fault-free runs only.
//! - `vits/crash-*`: two mapped DeviceIDs given the same ITT; a MOVI through one left the
//!   other's cached translation in place. Sharing an ITT is a guest error with
//!   UNPREDICTABLE results (the ITS caches per DeviceID), so the model now stops predicting
//!   once it happens; the no-panic and range invariants still apply.
//! - `its_abi/crash-8c5e…` (issue 17, a `vgic-its` bug, fixed in `abi::kvm::store` and
//!   `Its::import_image`): a level-1 descriptor after the page of the last DTE, which KVM's
//!   restore never walks, pointed at unbacked memory; `load` recorded it and `store` and
//!   `import_image` then failed clearing that page. They now clear only the pages a restore
//!   walks or that hold an entry.
//! - `its_abi/crash-2dea…` (issue 17, `vgic-its`, fixed in `abi::kvm::load`): a level-1
//!   descriptor beyond the DeviceID range walked before the last DTE was recorded, so a
//!   store and load gave a different image; only descriptors that can hold a DeviceID are
//!   recorded now (the others are still walked, as KVM walks them).
//! - `planner/crash-ce47…` (issue 19, a `doorbell-planner` bug, fixed in
//!   `plan_riscv_kernel_window`): the `imsic-kernel-window` strategy put the vIMSIC at the
//!   start of a host software MSI window that was only 4 KiB aligned (0x970001000), below
//!   the alignment a 4-hart vIMSIC base needs (AIA 1.0 3.6); `check_plan` refused the plan.
//!   The planner now refuses such a window (`PlanError::ImsicWindowMisaligned`).
//! - `planner/crash-7e86…` (issue 19, `doorbell-planner`, fixed in
//!   `plan_riscv_kernel_window` and `check_plan`): guest MMIO inside the host's software MSI
//!   window was accepted by `imsic-kernel-window` (the Arm kernel window refuses it), and
//!   `check_plan` did not look at that window. Both refuse it now.

use std::path::PathBuf;

fn replay_dir(target: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/regressions")
        .join(target);
    let Some(t) = fuzz_common::targets()
        .into_iter()
        .find(|t| t.name == target)
    else {
        panic!("no target {target}");
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries {
        let path = e.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        eprintln!("replaying {}", path.display());
        (t.replay)(&bytes);
    }
}

/// Replays every stored input of every target (new crash files need no new code).
#[test]
fn all_stored_inputs_replay_clean() {
    for t in fuzz_common::targets() {
        replay_dir(t.name);
    }
}

/// Found by the `passthrough` target, fixed in `vfio-passthrough`: clearing MSI-X Enable
/// while every vector is masked changes no vector's deliverability, so `msi-trap` marks no
/// batch due (by design there), and the device used to keep the physical vectors enabled and
/// the disabled vectors' GSIs and routes until some later commit. PCIe Base 6.0 §7.7.2.2:
/// with MSI-X Enable clear the function must not use MSI-X. The device now also commits when
/// its host state is stale (`PassthroughDevice::host_state_stale`); the unit test
/// `disable_while_all_masked_releases_vectors` in `crates/vfio-passthrough/tests/model.rs`
/// holds the rule too.
///
/// Replays the fuzz input `tests/open/passthrough-crash-735dc9bb` and the minimal sequence.
#[test]
fn passthrough_disable_while_all_masked_releases_vectors() {
    use fuzz_common::msix::PolicyChoice;
    use fuzz_common::passthrough::{PtOp, run, seeds};
    let bytes = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/open/passthrough-crash-735dc9bb"),
    )
    .unwrap();
    let replay = || {
        let t = fuzz_common::targets()
            .into_iter()
            .find(|t| t.name == "passthrough")
            .unwrap();
        (t.replay)(&bytes);
    };
    let fuzz_input = std::panic::catch_unwind(replay);
    // Minimal: Linux bring-up of 10 vectors, mask them all, clear MSI-X Enable.
    let mut input = seeds().remove(0).1;
    input.policy = PolicyChoice::PerVector;
    for v in 0..10 {
        input.ops.push(PtOp::Entry {
            vector: v,
            address: 0x0800_0040,
            data: u32::from(v),
            masked: true,
        });
    }
    input.ops.push(PtOp::Control {
        enable: false,
        mask: false,
    });
    run(&input);
    assert!(fuzz_input.is_ok(), "the fuzz input still fails");
}
