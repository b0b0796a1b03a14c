#!/usr/bin/env bash
# Runs every test of the project, in order, stopping at the first failure:
#   1. formatting, clippy (all targets, warnings denied) and rustdoc (warnings denied);
#   2. the unit, property and doc tests of every crate (`cargo test --workspace`; tests that
#      need /dev/iommu, a vfio-pci device or /dev/kvm print why they skip);
#   3. the real-kernel tier: the kernel-facing tests cross-built for aarch64 and run inside the
#      QEMU test host (SMMUv3, GICv3 ITS, igb NICs), which installs what it needs itself.
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

step "real-kernel tier in the QEMU test host"
bash tests/testhost/run.sh

printf '\nall tests passed in %ss\n' "$(( $(date +%s) - started ))"
