#!/usr/bin/env bash
# Runs every test of the project, in order, stopping at the first failure:
#   1. formatting, clippy (all targets, warnings denied) and rustdoc (warnings denied);
#   2. the unit, property and doc tests of every crate (`cargo test --workspace`; tests that
#      need /dev/iommu, a vfio-pci device or /dev/kvm print why they skip);
#   3. the real-kernel tier: the kernel-facing tests cross-built for aarch64 and run inside the
#      QEMU test host (SMMUv3, GICv3 ITS, igb NICs), which installs what it needs itself;
#   4. the end-to-end test: passthrough-vmm, inside the test host, boots a Linux guest with
#      an igb NIC passed through (VFIO cdev + iommufd), twice, plus the VMM's own boot tests;
#   5. the same kernel tier and end-to-end test on the project's patched kernel (built once per
#      machine from tests/testhost/kernel with its patches), where the MSI window is the VMM's;
#   6. a short run of every fuzz target (FUZZ_SECONDS each, default 20).
# The kernel is $TESTHOST_KERNEL, else ../shared/kernel/Image-arm64 beside the repository,
# else built once per machine from tests/testhost/kernel/.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

step() { printf '\n==> %s\n' "$*"; }
started=$(date +%s)

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "cargo test --workspace"
cargo test --workspace

step "real-kernel tier in the QEMU test host: IOAS, VFIO, a real MSI-X interrupt, stateful fuzzing"
bash tests/testhost/run.sh testhost iommufd-ioas vfio-cdev kernel-fuzz

step "end to end: passthrough-vmm boots a guest with an igb passed through, twice"
cargo run -q -p passthrough-vmm --example testhost_e2e

step "patched kernel (the project's user-settable MSI window UAPI): built once per machine"
TESTHOST_KERNEL_BUILD=1 bash tests/testhost/setup.sh
# The build log goes to stderr (duplicated, never reopened: a log file must not be truncated);
# the image path is the last line.
kernel_out="$(mktemp)"
env -u TESTHOST_KERNEL cargo run -q -p testhost --release -- kernel | tee "$kernel_out" >&2
patched="$(tail -n 1 "$kernel_out")"
rm -f "$kernel_out"
[ -f "$patched" ] || { echo "no patched kernel image: '$patched'" >&2; exit 1; }

step "real-kernel tier on the patched kernel: the proposed UAPI is there and works"
TESTHOST_KERNEL="$patched" \
  TESTHOST_ARGS="--append TESTHOST_KERNEL_VARIANT=patched --run-name kernel-tests-patched" \
  bash tests/testhost/run.sh iommufd-ioas vfio-cdev

step "end to end on the patched kernel: the VMM chooses the doorbell IPA, RAM at 0x8000000"
TESTHOST_KERNEL="$patched" TESTHOST_KERNEL_VARIANT=patched \
  cargo run -q -p passthrough-vmm --example testhost_e2e -- --demo

step "fuzzing: every target for a short while"
bash fuzz/run.sh "${FUZZ_SECONDS:-20}"

printf '\nall tests passed in %ss\n' "$(( $(date +%s) - started ))"
