#!/usr/bin/env bash
# The project's demo: boots the QEMU test host (aarch64, SMMUv3, GICv3 ITS, two igb NICs on
# one QEMU hub) and, inside it, passthrough-vmm boots a Linux guest with the second NIC
# passed through via VFIO cdev + iommufd:
#   1. without a vIOMMU, twice: the doorbell placement, every MSI-X vector (the guest's
#      address and the address in the device's real table), interrupt counts, ping results;
#   2. with a virtual SMMUv3 (the guest owns stage 1, no RMR): every vector's gIOVA, the
#      doorbell IPA it translates to and the device's table address, the guest's IOMMU and
#      DMA domain, interrupts and pings before and after a driver rebind; then the negative
#      control (write-through off: the MSIs fault on the vEVENTQ, no interrupt).
# Then the test tallies.
#
# Kernels: $TESTHOST_KERNEL, else ../shared/kernel/Image-arm64 beside the repository (run 1);
# $TESTHOST_KERNEL_VIOMMU, else ../shared/kernel/Image-arm64-viommu, else the recipe's viommu
# variant built once per machine (run 2; the test-only vIOMMU switch is on for that boot only).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
if [ -z "${TESTHOST_KERNEL:-}" ] && [ -f ../shared/kernel/Image-arm64 ]; then
  TESTHOST_KERNEL="$(cd ../shared/kernel && pwd)/Image-arm64"
  export TESTHOST_KERNEL
fi
viommu="${TESTHOST_KERNEL_VIOMMU:-}"
if [ -z "$viommu" ] && [ -f ../shared/kernel/Image-arm64-viommu ]; then
  viommu="$(cd ../shared/kernel && pwd)/Image-arm64-viommu"
fi
if [ -n "$viommu" ]; then
  bash tests/testhost/setup.sh
else
  TESTHOST_KERNEL_BUILD=1 bash tests/testhost/setup.sh
fi
status=0
echo "==> demo 1/2: the NIC passed through, no vIOMMU"
cargo run -q -p passthrough-vmm --example testhost_e2e -- --demo || status=1
echo "==> demo 2/2: the NIC passed through to a guest with a virtual SMMUv3, no RMR"
env -u TESTHOST_KERNEL TESTHOST_KERNEL_VARIANT=viommu \
  cargo run -q -p passthrough-vmm --example testhost_e2e -- --viommu ${viommu:+--kernel "$viommu"} || status=1
exit "$status"
