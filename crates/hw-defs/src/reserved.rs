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
//! ([`crate::iova::IovaRanges::holes`]); sysfs tells them apart by type and is readable
//! before any attach, which the doorbell planner needs. Reading the file is `iommufd-ioas`'s
//! `IommuGroup`; this is the format.

use crate::iova::IovaRange;

/// A line of a `reserved_regions` file that does not follow the kernel's format.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ReservedRegionsError {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// The kind of a reserved region.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ReservedKind {
    /// `direct`: must stay identity-mapped (an RMR or RMRR).
    Direct,
    /// `direct-relaxable`: identity mapping that may be dropped when the device is assigned.
    DirectRelaxable,
    /// `reserved`: must not be mapped at all.
    Reserved,
    /// `msi`: an MSI doorbell window (hardware MSI region or the software MSI window).
    Msi,
    /// A type this crate does not know, kept verbatim.
    Other(String),
}

impl ReservedKind {
    /// The kind the kernel prints as `s`.
    pub fn parse(s: &str) -> Self {
        match s {
            "direct" => ReservedKind::Direct,
            "direct-relaxable" => ReservedKind::DirectRelaxable,
            "reserved" => ReservedKind::Reserved,
            "msi" => ReservedKind::Msi,
            other => ReservedKind::Other(other.to_string()),
        }
    }
}

/// One reserved region of an IOMMU group.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReservedRegion {
    /// The IOVAs it covers.
    pub range: IovaRange,
    /// Its kind.
    pub kind: ReservedKind,
}

/// At most this many lines are accepted from a `reserved_regions` file; the kernel prints a
/// handful, and a file this long is broken.
pub const MAX_RESERVED_REGIONS: usize = 4096;

fn parse_hex(field: &str) -> Option<u64> {
    let digits = field.strip_prefix("0x")?;
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// Parses the content of a `reserved_regions` file.
pub fn parse_reserved_regions(text: &str) -> Result<Vec<ReservedRegion>, ReservedRegionsError> {
    let err = |line: usize, reason: String| ReservedRegionsError { line, reason };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        if out.len() == MAX_RESERVED_REGIONS {
            return Err(err(
                lineno,
                format!("more than {MAX_RESERVED_REGIONS} regions"),
            ));
        }
        let mut fields = line.split_ascii_whitespace();
        let (Some(start), Some(last), Some(kind), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(err(
                lineno,
                format!("expected \"<start> <end> <type>\", got {line:?}"),
            ));
        };
        let start = parse_hex(start)
            .ok_or_else(|| err(lineno, format!("start {start:?} is not a 0x hex u64")))?;
        let last = parse_hex(last)
            .ok_or_else(|| err(lineno, format!("end {last:?} is not a 0x hex u64")))?;
        let range = IovaRange::new(start, last)
            .ok_or_else(|| err(lineno, format!("start {start:#x} is after end {last:#x}")))?;
        out.push(ReservedRegion {
            range,
            kind: ReservedKind::parse(kind),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMMU_IGB: &str = "0x0000000008000000 0x00000000080fffff msi\n";

    #[test]
    fn parses_the_smmu_msi_window() {
        assert_eq!(
            parse_reserved_regions(SMMU_IGB).unwrap(),
            vec![ReservedRegion {
                range: IovaRange {
                    start: 0x800_0000,
                    last: 0x80f_ffff
                },
                kind: ReservedKind::Msi
            }]
        );
        assert!(parse_reserved_regions("").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_line_and_input_is_bounded() {
        let e = parse_reserved_regions(&format!("{SMMU_IGB}0x2000 0x1000 msi\n")).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.reason.contains("after end"), "{e}");
        let e = parse_reserved_regions(&SMMU_IGB.repeat(MAX_RESERVED_REGIONS + 1)).unwrap_err();
        assert_eq!(e.line, MAX_RESERVED_REGIONS + 1);
        assert_eq!(
            ReservedKind::parse("weird"),
            ReservedKind::Other("weird".into())
        );
    }
}
