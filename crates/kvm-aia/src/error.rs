// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Errors: each names the operation, the attribute (or object) and the errno.

use vmm_sys_util::errno::Error as Errno;

use crate::device::Attr;

/// An error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `KVM_CREATE_DEVICE` of the AIA failed (`ENODEV`: the host has no Ssaia; `EEXIST`: the
    /// VM has an irqchip already; `EBUSY`: a vCPU has run).
    #[error("KVM_CREATE_DEVICE of KVM_DEV_TYPE_RISCV_AIA failed: {0}")]
    Create(#[source] Errno),
    /// `KVM_SET_DEVICE_ATTR` failed.
    #[error("KVM_SET_DEVICE_ATTR of the RISC-V AIA's {attr} to {value:#x} failed: {errno}")]
    SetAttr {
        /// The attribute.
        attr: Attr,
        /// The value written.
        value: u64,
        /// The kernel's answer.
        #[source]
        errno: Errno,
    },
    /// `KVM_GET_DEVICE_ATTR` failed.
    #[error("KVM_GET_DEVICE_ATTR of the RISC-V AIA's {attr} failed: {errno}")]
    GetAttr {
        /// The attribute.
        attr: Attr,
        /// The kernel's answer.
        #[source]
        errno: Errno,
    },
    /// `KVM_HAS_DEVICE_ATTR` failed.
    #[error("KVM_HAS_DEVICE_ATTR of the RISC-V AIA's {attr} failed: {errno}")]
    HasAttr {
        /// The attribute.
        attr: Attr,
        /// The kernel's answer.
        #[source]
        errno: Errno,
    },
    /// A configuration, layout or state that KVM would refuse (or silently misuse), found
    /// before any ioctl.
    #[error("RISC-V AIA {what}: {reason}")]
    Invalid {
        /// What was checked.
        what: &'static str,
        /// Why it cannot work.
        reason: String,
    },
    /// A value read from KVM that breaks the UAPI's contract (kernel replies are treated
    /// as hostile input).
    #[error("RISC-V AIA {attr}: KVM returned {value:#x}, {reason}")]
    KernelReply {
        /// The attribute read.
        attr: Attr,
        /// The value.
        value: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `KVM_SET_GSI_ROUTING` failed.
    #[error("KVM_SET_GSI_ROUTING with {routes} MSI routes failed: {errno}")]
    SetRouting {
        /// Number of routes.
        routes: usize,
        /// The kernel's answer.
        #[source]
        errno: Errno,
    },
    /// A state read from KVM that the model refuses to load.
    #[error("loading the IMSIC state read from KVM into the model failed")]
    Model(#[source] riscv_imsic::StateError),
}
