#!/usr/bin/env bash
# The project's demo: boots the QEMU test host (aarch64, SMMUv3, GICv3 ITS, two igb NICs on
# one QEMU hub) and, inside it, passthrough-vmm boots a Linux guest with the second NIC
# passed through via VFIO cdev + iommufd, twice. Prints the readable report of each run:
# the doorbell placement, every MSI-X vector (the guest's address and the address in the
# device's real table), interrupt counts and ping results, then the test tally.
#
# The kernel is $TESTHOST_KERNEL, else ../shared/kernel/Image-arm64 beside the repository.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
if [ -z "${TESTHOST_KERNEL:-}" ] && [ -f ../shared/kernel/Image-arm64 ]; then
  TESTHOST_KERNEL="$(cd ../shared/kernel && pwd)/Image-arm64"
  export TESTHOST_KERNEL
fi
bash tests/testhost/setup.sh
exec cargo run -q -p passthrough-vmm --example testhost_e2e -- --demo
