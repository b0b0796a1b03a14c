// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Errors of setting a passthrough device up. Once running, guest accesses cannot fail:
//! host-side failures are logged and counted (`FaultCounters`).

/// An error while setting a passthrough device up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A VFIO call failed.
    #[error(transparent)]
    Vfio(#[from] vfio_cdev::Error),
    /// An iommufd call failed.
    #[error(transparent)]
    Iommu(#[from] iommufd_ioas::Error),
    /// The device's MSI-X capability or layout is unusable.
    #[error("MSI-X of {device}: {reason}")]
    Msix {
        /// The device.
        device: String,
        /// What is wrong.
        reason: String,
    },
    /// The device is not something this crate can pass through.
    #[error("{device} cannot be passed through: {reason}")]
    Unsupported {
        /// The device.
        device: String,
        /// Why.
        reason: String,
    },
    /// The doorbell plan failed (the configuration would need an RMR, or overlaps).
    #[error("doorbell plan for {device}: {source}")]
    Plan {
        /// The device.
        device: String,
        /// The planner's reason.
        #[source]
        source: Box<doorbell_planner::PlanError>,
    },
    /// After attach, the kernel's reserved IOVA windows did not match the plan.
    #[error("{device}: doorbell plan not honoured by the kernel: {reason}")]
    PlanMismatch {
        /// The device.
        device: String,
        /// What differed.
        reason: String,
    },
    /// Creating an eventfd failed.
    #[error("eventfd creation failed: {0}")]
    Eventfd(#[source] std::io::Error),
    /// A device operation the VMM asked for failed in the backend.
    #[error("{op} failed: {source}")]
    Backend {
        /// The operation.
        op: &'static str,
        /// The backend's error.
        #[source]
        source: crate::backend::BackendError,
    },
}

/// A `Result` whose error is [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
