// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Reserved IOVA regions of a device's IOMMU group, from
//! `/sys/kernel/iommu_groups/<N>/reserved_regions`.
//!
//! Each line of that file is `"0x%016llx 0x%016llx %s"`: first IOVA, last IOVA (inclusive)
//! and a type the kernel prints from `iommu_group_resv_type_string` (`direct`,
//! `direct-relaxable`, `reserved`, `msi`). Both the hardware MSI regions and the software MSI
//! window (`IOMMU_RESV_SW_MSI`, 0x8000000-0x80fffff on SMMUv3) print as `msi`.
//!
//! The same holes show up as gaps in `IOMMU_IOAS_IOVA_RANGES` after a device is attached
//! ([`crate::IovaRanges::holes`]); sysfs tells them apart by type and is readable before any
//! attach, which the doorbell planner needs.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub use hw_defs::reserved::{
    MAX_RESERVED_REGIONS, ReservedKind, ReservedRegion, ReservedRegionsError,
};

/// Parses the content of a `reserved_regions` file (`hw_defs::reserved`); `path` only
/// names the file in errors.
pub fn parse_reserved_regions(text: &str, path: &Path) -> Result<Vec<ReservedRegion>> {
    hw_defs::reserved::parse_reserved_regions(text).map_err(|e| Error::SysfsFormat {
        path: path.to_path_buf(),
        line: e.line,
        reason: e.reason,
    })
}

/// An IOMMU group, found through sysfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IommuGroup {
    id: u32,
    sysfs_root: PathBuf,
}

impl IommuGroup {
    /// The group with number `id` under the real `/sys`.
    pub fn new(id: u32) -> Self {
        Self::with_sysfs_root(id, "/sys")
    }

    /// The group with number `id` under another sysfs root (for tests and chroots).
    pub fn with_sysfs_root(id: u32, sysfs_root: impl Into<PathBuf>) -> Self {
        IommuGroup {
            id,
            sysfs_root: sysfs_root.into(),
        }
    }

    /// The group of a device, from its sysfs directory (for example
    /// `/sys/bus/pci/devices/0000:00:02.0`), whose `iommu_group` link names the group.
    pub fn of_device(device_sysfs_dir: &Path) -> Result<Self> {
        let link = device_sysfs_dir.join("iommu_group");
        let target = std::fs::read_link(&link).map_err(|source| Error::Sysfs {
            path: link.clone(),
            source,
        })?;
        let id = target
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(|| Error::SysfsFormat {
                path: link.clone(),
                line: 1,
                reason: format!(
                    "link target {} does not end in a group number",
                    target.display()
                ),
            })?;
        // `<root>/bus/pci/devices/<bdf>` or `<root>/devices/...`: the sysfs root is the
        // ancestor that holds `kernel/iommu_groups`.
        let root = device_sysfs_dir
            .ancestors()
            .find(|a| a.join("kernel/iommu_groups").is_dir())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/sys"));
        Ok(IommuGroup {
            id,
            sysfs_root: root,
        })
    }

    /// The group number.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The path of the group's `reserved_regions` file.
    pub fn reserved_regions_path(&self) -> PathBuf {
        self.sysfs_root
            .join("kernel/iommu_groups")
            .join(self.id.to_string())
            .join("reserved_regions")
    }

    /// Reads and parses the group's reserved regions.
    pub fn reserved_regions(&self) -> Result<Vec<ReservedRegion>> {
        let path = self.reserved_regions_path();
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Sysfs {
            path: path.clone(),
            source,
        })?;
        parse_reserved_regions(&text, &path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iova::IovaRange;

    const SMMU_IGB: &str = "0x0000000008000000 0x00000000080fffff msi\n";

    #[test]
    fn parses_smmu_msi_window() {
        let r = parse_reserved_regions(SMMU_IGB, Path::new("x")).unwrap();
        assert_eq!(
            r,
            vec![ReservedRegion {
                range: IovaRange {
                    start: 0x800_0000,
                    last: 0x80f_ffff
                },
                kind: ReservedKind::Msi
            }]
        );
    }

    #[test]
    fn parses_every_kind() {
        let text = "0x0000000000000000 0x0000000000000fff direct\n\
                    0x0000000000001000 0x0000000000001fff direct-relaxable\n\
                    0x00000000fee00000 0x00000000feefffff msi\n\
                    0x0000fd0000000000 0x0000ffffffffffff reserved\n\
                    0x0000000000002000 0x0000000000002fff weird\n";
        let kinds: Vec<_> = parse_reserved_regions(text, Path::new("x"))
            .unwrap()
            .into_iter()
            .map(|r| r.kind)
            .collect();
        assert_eq!(
            kinds,
            vec![
                ReservedKind::Direct,
                ReservedKind::DirectRelaxable,
                ReservedKind::Msi,
                ReservedKind::Reserved,
                ReservedKind::Other("weird".into())
            ]
        );
    }

    #[test]
    fn empty_file_is_no_regions() {
        assert!(
            parse_reserved_regions("", Path::new("x"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn malformed_lines_name_the_line() {
        for bad in [
            "0x1000 msi",
            "0x1000 0x2000 msi extra",
            "1000 0x2000 msi",
            "0x 0x2000 msi",
            "0x2000 0x1000 msi",
            "0x10000000000000000 0x1 msi",
            "0xzz 0x1 msi",
        ] {
            let text = format!("{SMMU_IGB}{bad}\n");
            let e = parse_reserved_regions(&text, Path::new("/g/reserved_regions")).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.starts_with("/g/reserved_regions: line 2:"),
                "{bad}: {msg}"
            );
        }
    }

    #[test]
    fn huge_file_is_bounded() {
        let text = SMMU_IGB.repeat(MAX_RESERVED_REGIONS + 1);
        assert!(parse_reserved_regions(&text, Path::new("x")).is_err());
    }

    #[test]
    fn group_from_fake_sysfs() {
        let dir = std::env::temp_dir().join(format!("iommufd-ioas-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let group_dir = dir.join("kernel/iommu_groups/7");
        let dev_dir = dir.join("bus/pci/devices/0000:00:02.0");
        std::fs::create_dir_all(&group_dir).unwrap();
        std::fs::create_dir_all(&dev_dir).unwrap();
        std::fs::write(group_dir.join("reserved_regions"), SMMU_IGB).unwrap();
        std::os::unix::fs::symlink(
            "../../../../kernel/iommu_groups/7",
            dev_dir.join("iommu_group"),
        )
        .unwrap();
        let g = IommuGroup::of_device(&dev_dir).unwrap();
        assert_eq!(g.id(), 7);
        assert_eq!(g.reserved_regions().unwrap().len(), 1);
        let missing = IommuGroup::with_sysfs_root(8, &dir)
            .reserved_regions()
            .unwrap_err();
        assert_eq!(missing.errno(), Some(crate::Errno(libc::ENOENT)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
