#!/usr/bin/env bash
# Installs what the QEMU test host needs on a fresh Debian 12 machine, idempotently:
#   - QEMU 10 (qemu-system-arm, which carries qemu-system-aarch64) from bookworm-backports,
#   - the aarch64 cross toolchain: Debian's rustc-web/cargo-web with libstd-rust-web-dev:arm64
#     and gcc-aarch64-linux-gnu,
#   - busybox-static:arm64, unpacked into the cache (never installed over the host's busybox),
#   - cpio (the testhost crate's tests compare its archives with `cpio -t`),
#   - with TESTHOST_KERNEL_BUILD=1, the kernel build tools (used only when no prebuilt kernel
#     is given; tests/testhost/kernel/build.sh).
# Run as root. Safe to run again: it does nothing when everything is present.
set -euo pipefail

CACHE="${TESTHOST_CACHE:-/var/cache/passthrough-testhost}"
mkdir -p "$CACHE"

need_apt=0
command -v qemu-system-aarch64 >/dev/null 2>&1 || need_apt=1
[ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] || need_apt=1
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need_apt=1
[ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu ] || need_apt=1
[ -x "$CACHE/busybox/bin/busybox" ] || need_apt=1
command -v cpio >/dev/null 2>&1 || need_apt=1
if [ "${TESTHOST_KERNEL_BUILD:-0}" = 1 ]; then
  for t in flex bison bc patch make xz perl; do command -v $t >/dev/null 2>&1 || need_apt=1; done
  [ -f /usr/include/openssl/ssl.h ] && [ -f /usr/include/libelf.h ] || need_apt=1
fi

if [ "$need_apt" = 0 ]; then
  echo "testhost setup: everything present"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive

# Extra suites, pinned low so that nothing on the machine is upgraded by accident:
# bookworm-backports carries QEMU 10, sid carries linux-source-7.x.
uri="$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
uri="${uri:-http://deb.debian.org/debian}"
if [ ! -f /etc/apt/sources.list.d/passthrough-testhost.sources ]; then
  cat > /etc/apt/sources.list.d/passthrough-testhost.sources <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  cat > /etc/apt/preferences.d/passthrough-testhost <<'PIN'
Package: *
Pin: release n=sid
Pin-Priority: 100

Package: *
Pin: release n=bookworm-backports
Pin-Priority: 100
PIN
fi
dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
apt-get update -qq

apt-get install -y -qq -t bookworm-backports qemu-system-arm >/dev/null
apt-get install -y -qq gcc-aarch64-linux-gnu libc6-dev-arm64-cross cpio gzip >/dev/null
apt-get install -y -qq rustc-web cargo-web "libstd-rust-web-dev:arm64" >/dev/null
if [ "${TESTHOST_KERNEL_BUILD:-0}" = 1 ]; then
  apt-get install -y -qq flex bison bc patch make perl libssl-dev libelf-dev xz-utils >/dev/null
fi

if [ ! -x "$CACHE/busybox/bin/busybox" ]; then
  tmp="$(mktemp -d)"
  (cd "$tmp" && apt-get download -qq "busybox-static:arm64")
  rm -rf "$CACHE/busybox" && mkdir -p "$CACHE/busybox/bin"
  dpkg-deb -x "$tmp"/busybox-static_*_arm64.deb "$tmp/x"
  cp "$tmp/x/bin/busybox" "$CACHE/busybox/bin/busybox"
  rm -rf "$tmp"
fi

qemu-system-aarch64 --version | head -1
/usr/bin/rustc --version
echo "testhost setup: done"
