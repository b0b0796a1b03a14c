#!/usr/bin/env bash
# Runs the project's riscv64 kernel-facing tests in the riscv64 testhost VM (QEMU TCG
# riscv64 virt with AIA: APLIC + IMSIC with guest interrupt files, the H extension, the
# RISC-V IOMMU, igb NICs): installs what is missing (setup-riscv64.sh), then
# `cargo run -p testhost --release -- --arch riscv64 run-kernel-tests -p <package>... --bind none`
# (upstream 7.2 cannot bind vfio-pci behind the RISC-V IOMMU, so the NICs stay on igb).
#
# Packages: the arguments, else testhost and kvm-aia.
# Kernel: $TESTHOST_KERNEL_RISCV64, else ../shared/kernel/Image-riscv64 beside the repository
# if present, else the one built (once per machine, cached) from tests/testhost/kernel-riscv64/
# (variant $TESTHOST_RISCV64_VARIANT, default patched). The variant is also passed to the
# tests (TESTHOST_KERNEL_VARIANT on the kernel command line), so set it to `upstream` for a
# given upstream kernel too.
# Extra options for run-kernel-tests go in $TESTHOST_ARGS (e.g. "--timeout 600"; a later
# --run-name or --bind wins over the defaults, riscv64-<variant> and none).
# The closing line is `testhost: N passed, M failed`; the exit status is non-zero on any
# failure.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

if [ "$#" -gt 0 ]; then
  packages=("$@")
else
  packages=(testhost kvm-aia)
fi

if [ -z "${TESTHOST_KERNEL_RISCV64:-}" ] && [ -f "$repo/../shared/kernel/Image-riscv64" ]; then
  TESTHOST_KERNEL_RISCV64="$(cd "$repo/../shared/kernel" && pwd)/Image-riscv64"
fi
export TESTHOST_KERNEL_RISCV64="${TESTHOST_KERNEL_RISCV64:-}"

bash "$here/setup-riscv64.sh"

args=()
for p in "${packages[@]}"; do
  args+=(-p "$p")
done
# shellcheck disable=SC2206 # TESTHOST_ARGS is split on purpose.
extra=(${TESTHOST_ARGS:-})
cd "$repo"
variant="${TESTHOST_RISCV64_VARIANT:-patched}"
exec cargo run -q -p testhost --release -- --arch riscv64 --variant "$variant" \
  run-kernel-tests "${args[@]}" --bind none --run-name "riscv64-$variant" \
  --append "TESTHOST_KERNEL_VARIANT=$variant" "${extra[@]}"
