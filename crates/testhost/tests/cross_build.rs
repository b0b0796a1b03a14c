// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The cross build for real: a named binary of this crate built for aarch64 (riscv64) with
//! Debian's toolchain must be a static aarch64 (riscv64) ELF executable. Ignored by default
//! (they need what `tests/testhost/setup.sh` and `setup-riscv64.sh` install, and a cold build
//! takes minutes; riscv64's builds its standard library first):
//!
//! ```text
//! cargo test -p testhost --test cross_build -- --ignored
//! ```

use std::path::Path;

use testhost::arch::Arch;
use testhost::cross::CrossBuild;

/// ELF64 little-endian header fields (System V gABI, "ELF Header").
fn elf_machine_and_type(bytes: &[u8]) -> (u16, u16) {
    assert!(bytes.len() >= 64, "shorter than an ELF64 header");
    assert_eq!(&bytes[..4], b"\x7fELF", "no ELF magic");
    assert_eq!(bytes[4], 2, "not ELFCLASS64");
    assert_eq!(bytes[5], 1, "not little-endian");
    let e_type = u16::from_le_bytes([bytes[16], bytes[17]]);
    let e_machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    (e_machine, e_type)
}

/// Whether any program header is PT_INTERP (a dynamically linked executable has one).
fn has_interpreter(bytes: &[u8]) -> bool {
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let phoff = u64_at(32) as usize;
    let phentsize = usize::from(u16_at(54));
    let phnum = usize::from(u16_at(56));
    (0..phnum).any(|i| {
        let p = phoff + i * phentsize;
        u32::from_le_bytes(bytes[p..p + 4].try_into().unwrap()) == 3 // PT_INTERP
    })
}

#[test]
#[ignore = "needs Debian's aarch64 toolchain (tests/testhost/setup.sh); slow when cold"]
fn named_binary_is_a_static_aarch64_executable() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let built = CrossBuild::new(&workspace)
        .build_bins("testhost", &["testhost".to_owned()])
        .unwrap();
    assert_eq!(built.len(), 1);
    assert_eq!(built[0].kind, "bin");
    assert!(!built[0].test);
    let bytes = std::fs::read(&built[0].executable).unwrap();
    let (machine, e_type) = elf_machine_and_type(&bytes);
    assert_eq!(machine, 183, "e_machine is not EM_AARCH64");
    // Static executables are ET_EXEC, or ET_DYN when static-pie; neither has PT_INTERP.
    assert!(matches!(e_type, 2 | 3), "e_type {e_type}");
    assert!(!has_interpreter(&bytes), "dynamically linked");
}

#[test]
#[ignore = "needs Debian's riscv64 toolchain and rust-web-src (tests/testhost/setup-riscv64.sh); slow when cold"]
fn named_binary_is_a_static_riscv64_executable() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let built = CrossBuild::for_arch(&workspace, Arch::Riscv64)
        .build_bins("testhost", &["testhost".to_owned()])
        .unwrap();
    assert_eq!(built.len(), 1);
    assert!(
        built[0]
            .executable
            .starts_with(workspace.join("target/testhost-riscv64")),
        "{}",
        built[0].executable.display()
    );
    let bytes = std::fs::read(&built[0].executable).unwrap();
    let (machine, e_type) = elf_machine_and_type(&bytes);
    assert_eq!(machine, 243, "e_machine is not EM_RISCV");
    assert!(matches!(e_type, 2 | 3), "e_type {e_type}");
    assert!(!has_interpreter(&bytes), "dynamically linked");
    // EF_RISCV_FLOAT_ABI_DOUBLE | EF_RISCV_RVC: the riscv64gc (lp64d) ABI busybox uses too.
    let e_flags = u32::from_le_bytes(bytes[48..52].try_into().unwrap());
    assert_eq!(e_flags & 0x7, 0x5, "e_flags {e_flags:#x}");
}
