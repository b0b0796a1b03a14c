#!/usr/bin/env bash
# Installs what the riscv64 QEMU test host needs on a fresh Debian 12 machine, idempotently:
#   - QEMU 10 (qemu-system-riscv, which carries qemu-system-riscv64) and OpenSBI 1.5 (QEMU's
#     default riscv64 firmware, /usr/share/qemu/opensbi-riscv64-generic-fw_dynamic.bin) from
#     bookworm-backports,
#   - the riscv64 Rust cross toolchain. rustup cannot add targets here and Debian has no
#     riscv64 standard library matching the host's rustc-web (bookworm has no riscv64 port;
#     sid's libstd-rust-dev:riscv64 belongs to another rustc), so: rustc-web/cargo-web with
#     rust-web-src (std's sources, which `-Zbuild-std` compiles; the testhost crate passes it
#     with RUSTC_BOOTSTRAP=1) and gcc-riscv64-linux-gnu + libc6-dev-riscv64-cross to link,
#   - busybox-static:riscv64 from sid, unpacked into $TESTHOST_CACHE/riscv64/busybox (never
#     installed: sid's riscv64 packages are only downloaded),
#   - cpio,
#   - with TESTHOST_KERNEL_BUILD=1, the kernel build tools (used only when no prebuilt kernel
#     is given; tests/testhost/kernel-riscv64/build.sh).
# The suites are those of setup.sh (bookworm-backports and sid, pinned low), added the same
# way if setup.sh has not run yet. Run as root. Safe to run again: it does nothing when
# everything is present.
set -euo pipefail

CACHE="${TESTHOST_CACHE:-/var/cache/passthrough-testhost}"
BUSYBOX="$CACHE/riscv64/busybox/bin/busybox"
mkdir -p "$CACHE/riscv64"

need_apt=0
command -v qemu-system-riscv64 >/dev/null 2>&1 || need_apt=1
[ -f /usr/share/qemu/opensbi-riscv64-generic-fw_dynamic.bin ] || need_apt=1
[ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] || need_apt=1
[ -f "$(/usr/bin/rustc --print sysroot 2>/dev/null)/lib/rustlib/src/rust/library/std/Cargo.toml" ] || need_apt=1
command -v riscv64-linux-gnu-gcc >/dev/null 2>&1 || need_apt=1
[ -f /usr/riscv64-linux-gnu/lib/libc.a ] || need_apt=1
[ -x "$BUSYBOX" ] || need_apt=1
command -v cpio >/dev/null 2>&1 || need_apt=1
if [ "${TESTHOST_KERNEL_BUILD:-0}" = 1 ]; then
  for t in gcc flex bison bc patch make xz perl; do command -v $t >/dev/null 2>&1 || need_apt=1; done
  [ -f /usr/include/openssl/ssl.h ] && [ -f /usr/include/libelf.h ] || need_apt=1
fi

if [ "$need_apt" = 0 ]; then
  echo "testhost setup (riscv64): everything present"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive

# The same extra suites as setup.sh, pinned low so that nothing on the machine is upgraded
# by accident: bookworm-backports carries QEMU 10 and OpenSBI 1.5, sid carries
# linux-source-7.x and the riscv64 busybox.
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
# For `apt-get download busybox-static:riscv64` only (no riscv64 package is installed).
dpkg --print-foreign-architectures | grep -qx riscv64 || dpkg --add-architecture riscv64
apt-get update -qq

apt-get install -y -qq -t bookworm-backports qemu-system-riscv opensbi >/dev/null
apt-get install -y -qq gcc-riscv64-linux-gnu libc6-dev-riscv64-cross cpio >/dev/null
apt-get install -y -qq rustc-web cargo-web rust-web-src >/dev/null
if [ "${TESTHOST_KERNEL_BUILD:-0}" = 1 ]; then
  apt-get install -y -qq gcc flex bison bc patch make perl libssl-dev libelf-dev xz-utils >/dev/null
fi

if [ ! -x "$BUSYBOX" ]; then
  tmp="$(mktemp -d)"
  (cd "$tmp" && apt-get download -qq "busybox-static:riscv64")
  dpkg-deb -x "$tmp"/busybox-static_*_riscv64.deb "$tmp/x"
  # usr-merged packages (sid) carry it in /usr/bin, older ones in /bin.
  found=""
  for f in "$tmp/x/usr/bin/busybox" "$tmp/x/bin/busybox"; do
    [ -f "$f" ] && found="$f" && break
  done
  [ -n "$found" ] || { echo "testhost setup (riscv64): no busybox in busybox-static:riscv64" >&2; exit 1; }
  rm -rf "$CACHE/riscv64/busybox" && mkdir -p "$CACHE/riscv64/busybox/bin"
  cp "$found" "$BUSYBOX"
  rm -rf "$tmp"
fi

qemu-system-riscv64 --version | head -1
/usr/bin/rustc --version
echo "testhost setup (riscv64): done"
