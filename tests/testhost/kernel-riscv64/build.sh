#!/usr/bin/env bash
# Builds the riscv64 testhost VM's kernel Image from Debian's linux-source-7.x package:
# a fresh source tree, the patches of the variant (see `variants`) applied in the order
# listed there, the config fragment riscv64.config merged over allnoconfig with LOCALVERSION
# -testhost-<variant>, every option of the fragment checked in the resolved config, then
# `make Image` with ARCH=riscv and Debian's riscv64-linux-gnu cross compiler.
#
# The testhost crate (`testhost --arch riscv64 kernel`) calls this only when its cache
# (keyed by the SHA-256 of this script, the fragment, `variants`, the variant's name and its
# patches; see crates/testhost/src/kernel.rs) has no image yet. It is apart from the arm64
# recipe in ../kernel so that neither changes the other's cache key. About 7 minutes on 2
# idle cores.
#
# Environment:
#   VARIANT     the variant to build, a name in `variants` (default: patched)
#   OUT_DIR     where Image-riscv64 goes (default: tests/testhost/out-riscv64)
#   WORK_DIR    source, objects and the downloaded package (default: /tmp/testhost-kernel-riscv64)
#   DEB_SEARCH  colon-separated directories where an already downloaded linux-source .deb
#               may be (the arm64 build's; the harness passes them), to avoid a second download
#   JOBS        make -j (default: nproc)
#   LINUX_SOURCE_PKG  the package to use (default: the newest linux-source-7.N apt sees)
#   CONFIG_ONLY=1     stop after checking the resolved config (copied to OUT_DIR/config)
# Needs (tests/testhost/setup-riscv64.sh with TESTHOST_KERNEL_BUILD=1 installs them): make,
# gcc, gcc-riscv64-linux-gnu, flex, bison, bc, patch, xz-utils, libssl-dev, libelf-dev, and
# the sid suite that carries linux-source-7.x.
set -euo pipefail
export LC_ALL=C

here="$(cd "$(dirname "$0")" && pwd)"
out="${OUT_DIR:-$here/../out-riscv64}"
work="${WORK_DIR:-/tmp/testhost-kernel-riscv64}"
jobs="${JOBS:-$(nproc)}"

variant="${VARIANT:-patched}"

die() { echo "kernel build (riscv64): $*" >&2; exit 1; }

case "$variant" in
  *[!A-Za-z0-9_]* | "") die "bad variant name '$variant'" ;;
esac
numbers="$(awk -v v="$variant" '$1 == v { $1 = ""; print; found = 1 } END { if (!found) exit 1 }' "$here/variants")" ||
  die "variant '$variant' is not in $here/variants"
patches=()
for n in $numbers; do
  shopt -s nullglob
  matches=("$here"/patches/"$n"-*.patch)
  shopt -u nullglob
  [ "${#matches[@]}" = 1 ] || die "variant $variant: patch $n matches ${#matches[@]} files in patches/"
  patches+=("${matches[0]}")
done

for tool in make gcc riscv64-linux-gnu-gcc flex bison bc patch xz perl; do
  command -v "$tool" >/dev/null 2>&1 ||
    die "$tool is missing (run: TESTHOST_KERNEL_BUILD=1 bash tests/testhost/setup-riscv64.sh)"
done

pkg="${LINUX_SOURCE_PKG:-}"
if [ -z "$pkg" ]; then
  pkg="$(apt-cache search --names-only '^linux-source-7\.[0-9]+$' | awk '{print $1}' | sort -V | tail -n 1)"
fi
[ -n "$pkg" ] || die "apt sees no linux-source-7.N package (setup.sh adds sid; then apt-get update)"
version="$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')"
[ -n "$version" ] && [ "$version" != "(none)" ] || die "$pkg has no installable version"
echo "kernel build (riscv64): $pkg $version, variant $variant (patches: ${numbers:- none}), $jobs jobs, work in $work"

mkdir -p "$work/debs" "$out"
debname="${pkg}_${version//:/%3a}.deb"
deb="$work/debs/$debname"
if [ ! -f "$deb" ]; then
  IFS=: read -r -a search <<<"${DEB_SEARCH:-}"
  for d in "${search[@]}"; do
    if [ -n "$d" ] && [ -f "$d/$debname" ]; then
      echo "kernel build (riscv64): using $d/$debname"
      cp "$d/$debname" "$deb.partial" && mv "$deb.partial" "$deb"
      break
    fi
  done
fi
if [ ! -f "$deb" ]; then
  tmp="$(mktemp -d "$work/debs/download.XXXXXX")"
  (cd "$tmp" && apt-get download -q "$pkg=$version")
  mv "$tmp"/*.deb "$deb"
  rmdir "$tmp"
fi

# A fresh tree every time: patches must apply to pristine sources.
rm -rf "$work/deb" "$work/src" "$work/obj"
dpkg-deb -x "$deb" "$work/deb"
tarball="$(find "$work/deb/usr/src" -maxdepth 1 -name 'linux-source-*.tar.*' | head -n 1)"
[ -n "$tarball" ] || die "no source tarball in $deb"
mkdir -p "$work/src" "$work/obj"
tar -xf "$tarball" -C "$work/src" --strip-components=1
rm -rf "$work/deb"

for p in "${patches[@]}"; do
  echo "kernel build (riscv64): applying $(basename "$p")"
  patch -d "$work/src" -p1 --forward --batch --quiet <"$p" || die "patch $(basename "$p") does not apply"
done

export ARCH=riscv CROSS_COMPILE=riscv64-linux-gnu-
make -C "$work/src" -s O="$work/obj" allnoconfig
"$work/src/scripts/kconfig/merge_config.sh" -m -O "$work/obj" "$work/obj/.config" "$here/riscv64.config" >/dev/null
"$work/src/scripts/config" --file "$work/obj/.config" --set-str LOCALVERSION "-testhost-$variant"
make -C "$work/src" -s O="$work/obj" olddefconfig

# Every y/n of the fragment must hold in the resolved config: an option whose dependencies
# are not met is dropped silently by olddefconfig, and the VM would lack it.
missing=0
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=y)
      grep -qx "$line" "$work/obj/.config" || { echo "kernel build (riscv64): $line did not survive olddefconfig" >&2; missing=1; } ;;
    CONFIG_*=n)
      opt="${line%=n}"
      if grep -q "^$opt=" "$work/obj/.config"; then
        echo "kernel build (riscv64): $opt should be off" >&2; missing=1
      fi ;;
  esac
done <"$here/riscv64.config"
[ "$missing" = 0 ] || die "the resolved config lacks options of riscv64.config"
if [ "${CONFIG_ONLY:-0}" = 1 ]; then
  cp "$work/obj/.config" "$out/config"
  echo "kernel build (riscv64): config checked, $out/config (CONFIG_ONLY=1: no Image built)"
  exit 0
fi

make -C "$work/src" O="$work/obj" -j"$jobs" Image
cp "$work/obj/arch/riscv/boot/Image" "$out/Image-riscv64"
cp "$work/obj/.config" "$out/config"
echo "kernel build (riscv64): built $out/Image-riscv64"
