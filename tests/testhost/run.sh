#!/usr/bin/env bash
# Runs the project's kernel-facing tests in the testhost VM (QEMU TCG aarch64 with SMMUv3,
# GICv3 ITS and igb NICs): installs what is missing (setup.sh), then
# `cargo run -p testhost --release -- run-kernel-tests -p <package>...`.
#
# Packages: the arguments, else testhost plus those of iommufd-ioas and vfio-cdev that exist.
# Kernel: $TESTHOST_KERNEL, else ../shared/kernel/Image-arm64 beside the repository if
# present, else the one built (once per machine, cached) from tests/testhost/kernel/.
# Extra options for run-kernel-tests go in $TESTHOST_ARGS (e.g. "--timeout 600").
# The closing line is `testhost: N passed, M failed`; the exit status is non-zero on any
# failure.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

if [ "$#" -gt 0 ]; then
  packages=("$@")
else
  packages=(testhost)
  for p in iommufd-ioas vfio-cdev; do
    [ -f "$repo/crates/$p/Cargo.toml" ] && packages+=("$p")
  done
fi

if [ -z "${TESTHOST_KERNEL:-}" ] && [ -f "$repo/../shared/kernel/Image-arm64" ]; then
  TESTHOST_KERNEL="$(cd "$repo/../shared/kernel" && pwd)/Image-arm64"
fi
export TESTHOST_KERNEL="${TESTHOST_KERNEL:-}"

bash "$here/setup.sh"

args=()
for p in "${packages[@]}"; do
  args+=(-p "$p")
done
# shellcheck disable=SC2206 # TESTHOST_ARGS is split on purpose.
extra=(${TESTHOST_ARGS:-})
cd "$repo"
exec cargo run -q -p testhost --release -- run-kernel-tests "${args[@]}" "${extra[@]}"
