// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Where the kernel, the initramfs and the device tree go in guest RAM.
//!
//! The rules are those of the arm64 boot protocol (Linux
//! `Documentation/arch/arm64/booting.rst`):
//!
//! - section 4: the Image is placed `text_offset` bytes from a 2 MiB aligned base address,
//!   and the `image_size` bytes from there (which include the BSS the kernel clears) must be
//!   free RAM; with `image_size` 0 (kernels before 3.17) `text_offset` is 0x80000;
//! - section 2: the device tree blob is 8-byte aligned, at most 2 MiB, and must not share a
//!   2 MiB block with memory that needs other attributes;
//! - section 3: the initramfs may be anywhere in RAM that is not otherwise used.
//!
//! [`BootPlan::new`] puts the Image base at RAM + 2 MiB, the DTB in the last 2 MiB of RAM
//! and the initramfs just below it, 64 KiB aligned, and checks that nothing overlaps
//! (`tests::small_ram_is_refused`).

use serde::Serialize;

use crate::layout::Region;

/// `ARM\x64`, the Image header magic (booting.rst section 4), at offset 56.
pub const IMAGE_MAGIC: u32 = 0x644d_5241;
/// Size of the arm64 Image header.
pub const IMAGE_HEADER_SIZE: usize = 64;
/// Offset of the Image base from the start of RAM.
pub const KERNEL_BASE_OFFSET: u64 = 0x20_0000;
/// Space reserved for the device tree blob: its maximum size, and a whole 2 MiB block.
pub const DTB_RESERVE: u64 = 0x20_0000;
/// Alignment of the initramfs start.
pub const INITRD_ALIGN: u64 = 0x1_0000;

/// Why a boot cannot be laid out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootError {
    /// The kernel file is not an arm64 Image.
    #[error("kernel Image: {0}")]
    BadImage(&'static str),
    /// The pieces do not fit in RAM.
    #[error("boot layout: {what} ({need:#x} bytes) does not fit in RAM {ram}")]
    DoesNotFit {
        /// What did not fit.
        what: &'static str,
        /// How many bytes it needs.
        need: u64,
        /// The RAM region.
        ram: Region,
    },
    /// RAM that is not 2 MiB aligned at both ends.
    #[error("boot layout: RAM {0} is not 2 MiB aligned at both ends")]
    RamAlignment(Region),
}

/// The fields of an arm64 Image header the VMM uses (booting.rst section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ImageHeader {
    /// Offset of the image from its 2 MiB aligned base.
    pub text_offset: u64,
    /// Bytes the kernel occupies from its load address, BSS included (0: unknown).
    pub image_size: u64,
    /// Bit 0: big-endian kernel; bits 1-2: page size; bit 3: may be placed anywhere.
    pub flags: u64,
}

/// The fields both Image headers (arm64 `booting.rst`, RISC-V `boot-image-header.rst`)
/// keep at the same offsets, read after checking the magic at offset 56 and the endianness
/// bit: `text_offset` (8), `image_size` (16), `flags` (24).
struct RawHeader {
    text_offset: u64,
    image_size: u64,
    flags: u64,
}

impl RawHeader {
    fn parse(bytes: &[u8], magic: u32, no_magic: &'static str) -> Result<Self, BootError> {
        let header = bytes
            .get(..IMAGE_HEADER_SIZE)
            .ok_or(BootError::BadImage("shorter than its 64-byte header"))?;
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let mut m = [0u8; 4];
        m.copy_from_slice(&header[56..60]);
        if u32::from_le_bytes(m) != magic {
            return Err(BootError::BadImage(no_magic));
        }
        let flags = u64_at(24);
        if flags & 1 != 0 {
            return Err(BootError::BadImage("big-endian kernel"));
        }
        Ok(RawHeader {
            text_offset: u64_at(8),
            image_size: u64_at(16),
            flags,
        })
    }
}

impl ImageHeader {
    /// Parses the first 64 bytes of an Image.
    pub fn parse(bytes: &[u8]) -> Result<Self, BootError> {
        let raw = RawHeader::parse(bytes, IMAGE_MAGIC, "no ARM\\x64 magic at offset 56")?;
        Ok(ImageHeader {
            // booting.rst: "Where image_size is zero, text_offset can be assumed to be
            // 0x80000."
            text_offset: if raw.image_size == 0 {
                0x8_0000
            } else {
                raw.text_offset
            },
            image_size: raw.image_size,
            flags: raw.flags,
        })
    }
}

/// `RSC\x05`, the RISC-V Image header's `magic2` (Linux
/// `Documentation/arch/riscv/boot-image-header.rst`), at offset 56.
pub const RISCV_IMAGE_MAGIC2: u32 = 0x0543_5352;

impl ImageHeader {
    /// Parses the first 64 bytes of a RISC-V Image (`boot-image-header.rst`: `text_offset`
    /// at 8, `image_size` at 16, `flags` at 24 with bit 0 the endianness, `magic2` at 56).
    ///
    /// The RISC-V `text_offset` is the load offset from the start of RAM (0x20_0000 on
    /// RV64) and the kernel only needs a 2 MiB aligned load address
    /// (`Documentation/arch/riscv/boot.rst`), which [`BootPlan::new`] gives it at
    /// RAM + [`KERNEL_BASE_OFFSET`]; the returned header therefore has `text_offset` 0, so
    /// that the kernel is loaded and entered right at that base.
    pub fn parse_riscv(bytes: &[u8]) -> Result<Self, BootError> {
        let raw = RawHeader::parse(bytes, RISCV_IMAGE_MAGIC2, "no RSC\\x05 magic at offset 56")?;
        if !raw.text_offset.is_multiple_of(KERNEL_BASE_OFFSET) {
            return Err(BootError::BadImage(
                "text_offset is not a multiple of 2 MiB (not an RV64 Image)",
            ));
        }
        Ok(ImageHeader {
            text_offset: 0,
            image_size: raw.image_size,
            flags: raw.flags,
        })
    }
}

/// Where everything goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BootPlan {
    /// The 2 MiB aligned base the Image is placed relative to.
    pub kernel_base: u64,
    /// Where the Image is loaded and where the boot vCPU starts (`pc`).
    pub kernel_load: u64,
    /// The region the kernel may use from its load address (`image_size`, or the file size
    /// for headers without one).
    pub kernel: Region,
    /// The device tree blob's address (`x0`) and the space reserved for it.
    pub dtb: Region,
    /// The initramfs, if there is one.
    pub initrd: Option<Region>,
}

impl BootPlan {
    /// Lays out a kernel with `header` whose file is `kernel_file_len` bytes, and an
    /// initramfs of `initrd_len` bytes if given, in `ram`.
    pub fn new(
        ram: Region,
        header: &ImageHeader,
        kernel_file_len: u64,
        initrd_len: Option<u64>,
    ) -> Result<Self, BootError> {
        let ram_end = ram.end().ok_or(BootError::RamAlignment(ram))?;
        if !ram.base.is_multiple_of(0x20_0000) || !ram.size.is_multiple_of(0x20_0000) {
            return Err(BootError::RamAlignment(ram));
        }
        let too_big = |what, need| BootError::DoesNotFit { what, need, ram };
        let kernel_base = ram
            .base
            .checked_add(KERNEL_BASE_OFFSET)
            .ok_or(too_big("kernel", kernel_file_len))?;
        let kernel_load = kernel_base
            .checked_add(header.text_offset)
            .ok_or(too_big("kernel", kernel_file_len))?;
        let kernel_size = header.image_size.max(kernel_file_len);
        let kernel_end = kernel_load
            .checked_add(kernel_size)
            .ok_or(too_big("kernel", kernel_size))?;
        // The DTB takes the last 2 MiB block.
        let dtb_base = ram_end
            .checked_sub(DTB_RESERVE)
            .filter(|&b| b >= kernel_end)
            .ok_or(too_big(
                "kernel and device tree",
                kernel_size.saturating_add(DTB_RESERVE),
            ))?;
        let initrd = match initrd_len {
            None | Some(0) => None,
            Some(len) => {
                let start = dtb_base
                    .checked_sub(len)
                    .map(|s| s & !(INITRD_ALIGN - 1))
                    .filter(|&s| s >= kernel_end)
                    .ok_or(too_big("kernel, initramfs and device tree", len))?;
                Some(Region::new(start, len))
            }
        };
        Ok(BootPlan {
            kernel_base,
            kernel_load,
            kernel: Region::new(kernel_load, kernel_size),
            dtb: Region::new(dtb_base, DTB_RESERVE),
            initrd,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text_offset: u64, image_size: u64, flags: u64) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[8..16].copy_from_slice(&text_offset.to_le_bytes());
        h[16..24].copy_from_slice(&image_size.to_le_bytes());
        h[24..32].copy_from_slice(&flags.to_le_bytes());
        h[56..60].copy_from_slice(&IMAGE_MAGIC.to_le_bytes());
        h
    }

    const RAM: Region = Region::new(0x4000_0000, 512 << 20);

    #[test]
    fn header_fields_and_defaults() {
        let h = ImageHeader::parse(&header(0, 0x260_0000, 0xa)).unwrap();
        assert_eq!((h.text_offset, h.image_size, h.flags), (0, 0x260_0000, 0xa));
        // Pre-3.17: image_size 0 means text_offset 0x80000 whatever the field says.
        let h = ImageHeader::parse(&header(0x1234, 0, 0)).unwrap();
        assert_eq!(h.text_offset, 0x8_0000);
        assert_eq!(
            ImageHeader::parse(&header(0, 0x100, 1)),
            Err(BootError::BadImage("big-endian kernel"))
        );
        let mut bad = header(0, 0x100, 0);
        bad[56] = 0;
        assert!(ImageHeader::parse(&bad).is_err());
        assert!(ImageHeader::parse(&bad[..63]).is_err());
        assert!(ImageHeader::parse(&[]).is_err());
    }

    fn riscv_header(text_offset: u64, image_size: u64, flags: u64) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[8..16].copy_from_slice(&text_offset.to_le_bytes());
        h[16..24].copy_from_slice(&image_size.to_le_bytes());
        h[24..32].copy_from_slice(&flags.to_le_bytes());
        h[48..56].copy_from_slice(b"RISCV\0\0\0");
        h[56..60].copy_from_slice(b"RSC\x05");
        h
    }

    #[test]
    fn riscv_header_loads_at_the_2mib_base() {
        let h = ImageHeader::parse_riscv(&riscv_header(0x20_0000, 0x180_0000, 0)).unwrap();
        assert_eq!((h.text_offset, h.image_size, h.flags), (0, 0x180_0000, 0));
        let plan =
            BootPlan::new(Region::new(0x8000_0000, 256 << 20), &h, 0x100_0000, None).unwrap();
        assert_eq!(plan.kernel_load, 0x8020_0000);
        assert_eq!(plan.kernel, Region::new(0x8020_0000, 0x180_0000));
        assert_eq!(
            ImageHeader::parse_riscv(&riscv_header(0x20_0000, 0x100, 1)),
            Err(BootError::BadImage("big-endian kernel"))
        );
        assert!(ImageHeader::parse_riscv(&riscv_header(0x1000, 0x100, 0)).is_err());
        // An arm64 Image is not a RISC-V one, and the other way round.
        assert!(ImageHeader::parse_riscv(&header(0, 0x100, 0)).is_err());
        assert!(ImageHeader::parse(&riscv_header(0x20_0000, 0x100, 0)).is_err());
        assert!(ImageHeader::parse_riscv(&riscv_header(0x20_0000, 0x100, 0)[..63]).is_err());
    }

    #[test]
    fn the_riscv_test_kernel_header_parses() {
        // The riscv64 test kernels the harness cached, when there are any.
        let cache = std::path::Path::new("/var/cache/passthrough-testhost/riscv64/kernel");
        let images: Vec<_> = std::fs::read_dir(cache)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("Image-riscv64"))
            .filter(|p| p.is_file())
            .collect();
        if images.is_empty() {
            eprintln!("skipped: no riscv64 test kernel in {}", cache.display());
        }
        for path in images {
            let bytes = std::fs::read(&path).unwrap();
            let h = ImageHeader::parse_riscv(&bytes).unwrap();
            assert!(h.image_size >= bytes.len() as u64, "{}", path.display());
        }
    }

    #[test]
    fn the_test_kernel_header_parses() {
        // The project's kernel, when it is there (it is on the development machines).
        let path = "/work/shared/kernel/Image-arm64";
        let Ok(bytes) = std::fs::read(path) else {
            eprintln!("skipped: {path} not present");
            return;
        };
        let h = ImageHeader::parse(&bytes).unwrap();
        assert_eq!(h.text_offset, 0);
        assert!(h.image_size >= bytes.len() as u64);
    }

    #[test]
    fn plan_places_everything_apart() {
        let h = ImageHeader::parse(&header(0, 0x260_0000, 0xa)).unwrap();
        let p = BootPlan::new(RAM, &h, 0x8f_8808, Some(0x12_3456)).unwrap();
        assert_eq!(p.kernel_base, 0x4020_0000);
        assert_eq!(p.kernel_load, 0x4020_0000);
        assert_eq!(p.kernel, Region::new(0x4020_0000, 0x260_0000));
        assert_eq!(p.dtb, Region::new(0x5fe0_0000, 0x20_0000));
        let initrd = p.initrd.unwrap();
        assert_eq!(initrd.base % INITRD_ALIGN, 0);
        assert_eq!(initrd.size, 0x12_3456);
        assert!(initrd.end().unwrap() <= p.dtb.base);
        assert!(!initrd.overlaps(&p.kernel));
        assert_eq!(p.dtb.base % 8, 0);
        // The file size counts when the header has no image_size.
        let old = ImageHeader::parse(&header(0, 0, 0)).unwrap();
        let p = BootPlan::new(RAM, &old, 0x100_0000, None).unwrap();
        assert_eq!(p.kernel, Region::new(0x4028_0000, 0x100_0000));
        assert_eq!(p.initrd, None);
    }

    #[test]
    fn small_ram_is_refused() {
        let h = ImageHeader::parse(&header(0, 0x260_0000, 0xa)).unwrap();
        let small = Region::new(0x4000_0000, 0x40_0000);
        assert!(matches!(
            BootPlan::new(small, &h, 0x100, None),
            Err(BootError::DoesNotFit { .. })
        ));
        // Kernel fits, initramfs does not.
        let ram = Region::new(0x4000_0000, KERNEL_BASE_OFFSET + 0x260_0000 + DTB_RESERVE);
        assert!(BootPlan::new(ram, &h, 0x100, None).is_ok());
        assert!(matches!(
            BootPlan::new(ram, &h, 0x100, Some(0x20_0000)),
            Err(BootError::DoesNotFit { .. })
        ));
        assert!(matches!(
            BootPlan::new(RAM, &h, 0x100, Some(u64::MAX)),
            Err(BootError::DoesNotFit { .. })
        ));
        assert!(matches!(
            BootPlan::new(Region::new(0x4010_0000, 512 << 20), &h, 0x100, None),
            Err(BootError::RamAlignment(_))
        ));
        // A hostile header cannot wrap the arithmetic.
        let huge = ImageHeader {
            text_offset: u64::MAX,
            image_size: u64::MAX,
            flags: 0,
        };
        assert!(BootPlan::new(RAM, &huge, 0x100, None).is_err());
    }
}
