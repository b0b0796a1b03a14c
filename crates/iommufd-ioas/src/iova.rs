// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! IOVA ranges: the allowed-range list of an IOAS and the holes between its entries. The
//! types live in `hw-defs` (pure, shared with the doorbell planner); this crate re-exports
//! them and turns a malformed kernel reply into its own error.

pub use hw_defs::iova::{IovaRange, IovaRanges, IovaRangesError};

use crate::error::{Error, Result};

/// Validates the answer of `IOMMU_IOAS_IOVA_RANGES`; a reply that breaks the UAPI contract
/// is [`Error::KernelReply`].
pub(crate) fn from_kernel(ranges: &[(u64, u64)], alignment: u64) -> Result<IovaRanges> {
    IovaRanges::from_kernel(ranges, alignment).map_err(|e| Error::KernelReply {
        op: "IOMMU_IOAS_IOVA_RANGES",
        reason: e.to_string(),
    })
}
