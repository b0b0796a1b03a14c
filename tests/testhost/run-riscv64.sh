#!/usr/bin/env bash
# Runs the project's riscv64 kernel-facing tests in the riscv64 testhost VM (QEMU TCG
# riscv64 virt with AIA: APLIC + IMSIC with guest interrupt files, the H extension, the
# RISC-V IOMMU, igb NICs): installs what is missing (setup-riscv64.sh), then
# `cargo run -p testhost --release -- --arch riscv64 run-kernel-tests -p <package>... --bind none`
# (the NICs stay on igb in that boot).
#
# Packages: the arguments, else testhost, kvm-aia and vfio-cdev. vfio-cdev is not run as a
# package in that boot (its other tests are the arm64 host's) but in a second boot of its
# own, with only its riscv64 passthrough test `riscv_imsic_msi` (`--test riscv_imsic_msi`):
# the second igb bound to vfio-pci (`--bind 1`) and `iommufd.allow_unsafe_interrupts=1`
# (IMSIC MSIs are not isolated). On the upstream variant that boot binds no NIC (upstream
# 7.2 refuses vfio-pci behind the RISC-V IOMMU) and the test checks the refusal instead.
# Kernel: $TESTHOST_KERNEL_RISCV64, else ../shared/kernel/Image-riscv64 beside the repository
# if present, else the one built (once per machine, cached) from tests/testhost/kernel-riscv64/
# (variant $TESTHOST_RISCV64_VARIANT, default patched). The variant is also passed to the
# tests (TESTHOST_KERNEL_VARIANT on the kernel command line), so set it to `upstream` for a
# given upstream kernel too.
# Extra options for run-kernel-tests go in $TESTHOST_ARGS (e.g. "--timeout 600"; a later
# --run-name or --bind wins over the defaults, riscv64-<variant>[-vfio] and none / 1).
# Each boot closes with `testhost: N passed, M failed`; the exit status is non-zero on any
# failure (both boots run).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

if [ "$#" -gt 0 ]; then
  packages=("$@")
else
  packages=(testhost kvm-aia vfio-cdev)
fi

if [ -z "${TESTHOST_KERNEL_RISCV64:-}" ] && [ -f "$repo/../shared/kernel/Image-riscv64" ]; then
  TESTHOST_KERNEL_RISCV64="$(cd "$repo/../shared/kernel" && pwd)/Image-riscv64"
fi
export TESTHOST_KERNEL_RISCV64="${TESTHOST_KERNEL_RISCV64:-}"

bash "$here/setup-riscv64.sh"

args=()
vfio=0
for p in "${packages[@]}"; do
  if [ "$p" = vfio-cdev ]; then
    vfio=1
  else
    args+=(-p "$p")
  fi
done
# shellcheck disable=SC2206 # TESTHOST_ARGS is split on purpose.
extra=(${TESTHOST_ARGS:-})
cd "$repo"
variant="${TESTHOST_RISCV64_VARIANT:-patched}"
status=0
if [ "${#args[@]}" -gt 0 ]; then
  cargo run -q -p testhost --release -- --arch riscv64 --variant "$variant" \
    run-kernel-tests "${args[@]}" --bind none --run-name "riscv64-$variant" \
    --append "TESTHOST_KERNEL_VARIANT=$variant" "${extra[@]}" || status=$?
fi
if [ "$vfio" = 1 ]; then
  # The patched kernel binds vfio-pci behind the RISC-V IOMMU; upstream refuses (the test
  # checks that itself), so nothing is bound there.
  bind=1
  [ "$variant" = patched ] || bind=none
  cargo run -q -p testhost --release -- --arch riscv64 --variant "$variant" \
    run-kernel-tests -p vfio-cdev --test riscv_imsic_msi --bind "$bind" \
    --run-name "riscv64-$variant-vfio" --append iommufd.allow_unsafe_interrupts=1 \
    --append "TESTHOST_KERNEL_VARIANT=$variant" "${extra[@]}" || status=$?
fi
exit "$status"
