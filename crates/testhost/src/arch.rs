// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The two test hosts: aarch64 (the default: SMMUv3, GICv3 ITS) and riscv64 (AIA with an
//! IMSIC that has guest interrupt files, the RISC-V IOMMU).
//!
//! Everything that differs between them is here, so that the rest of the harness (plan,
//! initramfs, results channel, timeouts) is the same for both: the Rust target and its
//! linker, QEMU binary and machine, console device, kernel recipe directory and image name,
//! where the per-machine cache keeps its busybox and kernels, and the setup script.
//!
//! The aarch64 values are exactly those the harness had before riscv64 existed, so that the
//! arm64 kernel's cache key and paths do not move (`tests::aarch64_is_unchanged`).

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::Error;

/// The architecture of a test host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Arch {
    /// QEMU `virt` aarch64 with GICv3 + ITS and SMMUv3 (the default).
    #[default]
    Aarch64,
    /// QEMU `virt` riscv64 with AIA (APLIC + IMSIC with guest files) and the RISC-V IOMMU.
    Riscv64,
}

/// Offset of the magic number in an arm64 `Image` header.
pub const ARM64_MAGIC_OFFSET: usize = 0x38;
/// The arm64 magic, "ARM\x64" (Linux `Documentation/arch/arm64/booting.rst`, "Call the
/// kernel image": `u32 magic = 0x644d5241`, little-endian).
pub const ARM64_MAGIC: [u8; 4] = *b"ARM\x64";
/// Offset of `magic2` in a RISC-V `Image` header.
pub const RISCV_MAGIC_OFFSET: usize = 0x38;
/// The RISC-V `magic2`, "RSC\x05" (Linux `Documentation/arch/riscv/boot-image-header.rst`:
/// `u32 magic2 = 0x05435352`, little-endian, at offset 56).
pub const RISCV_MAGIC: [u8; 4] = *b"RSC\x05";

impl Arch {
    /// Every architecture, the default first.
    pub const ALL: [Arch; 2] = [Arch::Aarch64, Arch::Riscv64];

    /// The name used on the command line and in paths: `aarch64`, `riscv64`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64",
            Arch::Riscv64 => "riscv64",
        }
    }

    /// The Rust target the tests are cross-built for.
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64-unknown-linux-gnu",
            Arch::Riscv64 => "riscv64gc-unknown-linux-gnu",
        }
    }

    /// Debian's cross linker for [`Self::rust_target`].
    pub fn linker(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64-linux-gnu-gcc",
            Arch::Riscv64 => "riscv64-linux-gnu-gcc",
        }
    }

    /// The environment variable naming cargo's linker for the target.
    pub fn linker_env(self) -> &'static str {
        match self {
            Arch::Aarch64 => "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER",
            Arch::Riscv64 => "CARGO_TARGET_RISCV64GC_UNKNOWN_LINUX_GNU_LINKER",
        }
    }

    /// The environment variable with target-specific rustflags (scrubbed from the build).
    pub fn rustflags_env(self) -> &'static str {
        match self {
            Arch::Aarch64 => "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            Arch::Riscv64 => "CARGO_TARGET_RISCV64GC_UNKNOWN_LINUX_GNU_RUSTFLAGS",
        }
    }

    /// Whether Debian ships a prebuilt standard library for the target that matches the
    /// host's `rustc-web`. aarch64 has `libstd-rust-web-dev:arm64`; riscv64 has none
    /// (bookworm has no riscv64 port, and sid's `libstd-rust-dev:riscv64` belongs to another
    /// rustc), so its std is built from `rust-web-src` with `-Zbuild-std`.
    pub fn prebuilt_std(self) -> bool {
        matches!(self, Arch::Aarch64)
    }

    /// The QEMU system emulator.
    pub fn qemu(self) -> &'static str {
        match self {
            Arch::Aarch64 => "qemu-system-aarch64",
            Arch::Riscv64 => "qemu-system-riscv64",
        }
    }

    /// The guest console device (the machine's first UART).
    pub fn console(self) -> &'static str {
        match self {
            Arch::Aarch64 => "ttyAMA0",
            Arch::Riscv64 => "ttyS0",
        }
    }

    /// The recipe directory under `tests/testhost/`.
    pub fn recipe_dir(self) -> &'static str {
        match self {
            Arch::Aarch64 => "kernel",
            Arch::Riscv64 => "kernel-riscv64",
        }
    }

    /// The recipe's config fragment file name.
    pub fn config_fragment(self) -> &'static str {
        match self {
            Arch::Aarch64 => "arm64.config",
            Arch::Riscv64 => "riscv64.config",
        }
    }

    /// The file name of the built (and cached) kernel image.
    pub fn image_name(self) -> &'static str {
        match self {
            Arch::Aarch64 => "Image-arm64",
            Arch::Riscv64 => "Image-riscv64",
        }
    }

    /// The variant built when none is named.
    pub fn default_variant(self) -> &'static str {
        match self {
            Arch::Aarch64 => "patched",
            Arch::Riscv64 => "patched",
        }
    }

    /// The directory under the per-machine cache that holds this architecture's busybox,
    /// kernels and kernel build trees: the cache itself for aarch64 (as before riscv64
    /// existed), `<cache>/riscv64` for riscv64.
    pub fn cache_dir(self, cache: &Path) -> PathBuf {
        match self {
            Arch::Aarch64 => cache.to_owned(),
            Arch::Riscv64 => cache.join("riscv64"),
        }
    }

    /// The static busybox the setup script unpacks for this architecture.
    pub fn busybox(self, cache: &Path) -> PathBuf {
        self.cache_dir(cache)
            .join("busybox")
            .join("bin")
            .join("busybox")
    }

    /// The setup script under `tests/testhost/`.
    pub fn setup_script(self) -> &'static str {
        match self {
            Arch::Aarch64 => "setup.sh",
            Arch::Riscv64 => "setup-riscv64.sh",
        }
    }

    /// The environment variable naming a prebuilt kernel for this architecture.
    pub fn kernel_env(self) -> &'static str {
        match self {
            Arch::Aarch64 => "TESTHOST_KERNEL",
            Arch::Riscv64 => "TESTHOST_KERNEL_RISCV64",
        }
    }

    /// The kernel command-line limit (`COMMAND_LINE_SIZE`, including the NUL): 2048 on both
    /// (`arch/arm64/include/uapi/asm/setup.h`, `arch/riscv/include/uapi/asm/setup.h`).
    pub fn max_cmdline(self) -> usize {
        match self {
            Arch::Aarch64 | Arch::Riscv64 => 2048,
        }
    }

    /// Offset and value of the image header's magic number.
    pub fn image_magic(self) -> (usize, [u8; 4]) {
        match self {
            Arch::Aarch64 => (ARM64_MAGIC_OFFSET, ARM64_MAGIC),
            Arch::Riscv64 => (RISCV_MAGIC_OFFSET, RISCV_MAGIC),
        }
    }

    /// Checks that `path` is a kernel `Image` of this architecture (by its header's magic),
    /// so that a wrong file fails here with its name rather than as a silent QEMU hang.
    pub fn check_image(self, path: &Path) -> Result<(), Error> {
        let (offset, magic) = self.image_magic();
        let mut header = [0u8; 64];
        let mut f = File::open(path).map_err(|source| Error::Io {
            op: "open kernel image",
            path: path.to_owned(),
            source,
        })?;
        f.read_exact(&mut header).map_err(|source| Error::Io {
            op: "read header of kernel image",
            path: path.to_owned(),
            source,
        })?;
        let found = &header[offset..offset + 4];
        if found != magic {
            return Err(Error::Kernel {
                path: path.to_owned(),
                reason: format!(
                    "no {} Image magic at offset {offset:#x} (found {found:02x?})",
                    self.name()
                ),
            });
        }
        Ok(())
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = String;

    /// `aarch64` (or `arm64`), `riscv64`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "aarch64" | "arm64" => Ok(Arch::Aarch64),
            "riscv64" => Ok(Arch::Riscv64),
            other => Err(format!("unknown architecture {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aarch64_is_unchanged() {
        // The values the harness used before it knew riscv64: the arm64 kernel's cache key
        // and the cache layout depend on them.
        let a = Arch::default();
        assert_eq!(a, Arch::Aarch64);
        assert_eq!(a.rust_target(), "aarch64-unknown-linux-gnu");
        assert_eq!(a.recipe_dir(), "kernel");
        assert_eq!(a.config_fragment(), "arm64.config");
        assert_eq!(a.image_name(), "Image-arm64");
        assert_eq!(a.default_variant(), "patched");
        assert_eq!(a.cache_dir(Path::new("/c")), Path::new("/c"));
        assert_eq!(
            a.busybox(Path::new("/c")),
            Path::new("/c/busybox/bin/busybox")
        );
        assert_eq!(a.setup_script(), "setup.sh");
        assert_eq!(a.console(), "ttyAMA0");
        assert_eq!(a.max_cmdline(), 2048);
        assert!(a.prebuilt_std());
    }

    #[test]
    fn riscv64_lives_apart() {
        let r = Arch::Riscv64;
        assert_eq!(r.rust_target(), "riscv64gc-unknown-linux-gnu");
        assert_eq!(r.linker(), "riscv64-linux-gnu-gcc");
        assert_eq!(
            r.linker_env(),
            format!(
                "CARGO_TARGET_{}_LINKER",
                r.rust_target().to_uppercase().replace('-', "_")
            )
        );
        assert_eq!(
            r.rustflags_env(),
            format!(
                "CARGO_TARGET_{}_RUSTFLAGS",
                r.rust_target().to_uppercase().replace('-', "_")
            )
        );
        assert_eq!(
            r.busybox(Path::new("/c")),
            Path::new("/c/riscv64/busybox/bin/busybox")
        );
        assert_ne!(r.recipe_dir(), Arch::Aarch64.recipe_dir());
        assert!(!r.prebuilt_std());
        for a in Arch::ALL {
            assert_eq!(a.name().parse::<Arch>(), Ok(a));
            assert_eq!(a.to_string(), a.name());
        }
        assert_eq!("arm64".parse::<Arch>(), Ok(Arch::Aarch64));
        assert!("x86_64".parse::<Arch>().is_err());
    }

    #[test]
    fn image_magic_is_checked_per_arch() {
        let d = std::env::temp_dir().join(format!("testhost-arch-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        for a in Arch::ALL {
            let (offset, magic) = a.image_magic();
            let mut header = vec![0u8; 64];
            header[offset..offset + 4].copy_from_slice(&magic);
            let path = d.join(a.image_name());
            std::fs::write(&path, &header).unwrap();
            a.check_image(&path).unwrap();
            for other in Arch::ALL.into_iter().filter(|o| *o != a) {
                let err = other.check_image(&path).unwrap_err();
                assert!(err.to_string().contains(other.name()), "{err}");
            }
        }
        std::fs::write(d.join("short"), b"RSC").unwrap();
        assert!(matches!(
            Arch::Riscv64.check_image(&d.join("short")),
            Err(Error::Io { .. })
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
