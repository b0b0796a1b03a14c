// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `VFIO_DEVICE_GET_IRQ_INFO` results and the `VFIO_DEVICE_SET_IRQS` argument builder.
//!
//! `struct vfio_irq_set` is a 20-byte header (`argsz`, `flags`, `index`, `start`, `count`)
//! followed by `count` data items whose type the flags name. The builder here produces the
//! exact bytes, so the layout is tested without a kernel.

use std::os::fd::RawFd;

use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_INFO_AUTOMASKED, VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_INFO_MASKABLE,
    VFIO_IRQ_INFO_NORESIZE, VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_TRIGGER,
    VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_BOOL, VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_IRQ_SET_DATA_NONE, VFIO_PCI_ERR_IRQ_INDEX, VFIO_PCI_INTX_IRQ_INDEX,
    VFIO_PCI_MSI_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_REQ_IRQ_INDEX,
};

use iommufd_ioas::proposed::{VFIO_IRQ_SET_ACTION_PREPARE, VFIO_IRQ_SET_DATA_MSI_IOVA};

/// Size of `struct vfio_irq_set` without its data.
pub const IRQ_SET_HEADER_LEN: usize = 20;

/// The interrupt indexes of a vfio-pci device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IrqIndex {
    /// `VFIO_PCI_INTX_IRQ_INDEX`.
    Intx,
    /// `VFIO_PCI_MSI_IRQ_INDEX`.
    Msi,
    /// `VFIO_PCI_MSIX_IRQ_INDEX`.
    Msix,
    /// `VFIO_PCI_ERR_IRQ_INDEX`.
    Err,
    /// `VFIO_PCI_REQ_IRQ_INDEX`.
    Req,
    /// Another index.
    Other(u32),
}

impl IrqIndex {
    /// The raw index.
    pub fn raw(self) -> u32 {
        match self {
            IrqIndex::Intx => VFIO_PCI_INTX_IRQ_INDEX,
            IrqIndex::Msi => VFIO_PCI_MSI_IRQ_INDEX,
            IrqIndex::Msix => VFIO_PCI_MSIX_IRQ_INDEX,
            IrqIndex::Err => VFIO_PCI_ERR_IRQ_INDEX,
            IrqIndex::Req => VFIO_PCI_REQ_IRQ_INDEX,
            IrqIndex::Other(i) => i,
        }
    }
}

impl std::fmt::Display for IrqIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IrqIndex::Intx => f.write_str("INTx"),
            IrqIndex::Msi => f.write_str("MSI"),
            IrqIndex::Msix => f.write_str("MSI-X"),
            IrqIndex::Err => f.write_str("ERR"),
            IrqIndex::Req => f.write_str("REQ"),
            IrqIndex::Other(i) => write!(f, "irq index {i}"),
        }
    }
}

/// `struct vfio_irq_info`, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqInfo {
    /// The index it describes.
    pub index: u32,
    /// How many interrupts (vectors) the index has.
    pub count: u32,
    /// Raw `VFIO_IRQ_INFO_*` flags.
    pub flags: u32,
}

impl IrqInfo {
    /// `VFIO_IRQ_INFO_EVENTFD`: signalling by eventfd is supported.
    pub fn eventfd(&self) -> bool {
        self.flags & VFIO_IRQ_INFO_EVENTFD != 0
    }
    /// `VFIO_IRQ_INFO_MASKABLE`.
    pub fn maskable(&self) -> bool {
        self.flags & VFIO_IRQ_INFO_MASKABLE != 0
    }
    /// `VFIO_IRQ_INFO_AUTOMASKED` (INTx).
    pub fn automasked(&self) -> bool {
        self.flags & VFIO_IRQ_INFO_AUTOMASKED != 0
    }
    /// `VFIO_IRQ_INFO_NORESIZE`: vectors cannot be added while enabled (older kernels or
    /// devices without dynamic MSI-X allocation).
    pub fn noresize(&self) -> bool {
        self.flags & VFIO_IRQ_INFO_NORESIZE != 0
    }
}

/// The action and data of one `VFIO_DEVICE_SET_IRQS` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IrqSet {
    /// `DATA_EVENTFD | ACTION_TRIGGER`: vector `start + i` signals `fds[i]`; `None` (fd -1)
    /// unassigns that vector's eventfd. On MSI/MSI-X the first call enables the index.
    Eventfds(Vec<Option<RawFd>>),
    /// `DATA_NONE | ACTION_TRIGGER` with `count` 0: disable the whole index.
    DisableAll,
    /// `DATA_NONE | ACTION_TRIGGER` with `count` vectors: fire them from userspace (loopback
    /// test of the signalling path).
    Trigger(u32),
    /// `DATA_NONE | ACTION_MASK` with `count` vectors (INTx only on vfio-pci).
    Mask(u32),
    /// `DATA_NONE | ACTION_UNMASK` with `count` vectors.
    Unmask(u32),
    /// `DATA_BOOL | ACTION_TRIGGER`: fire the vectors whose flag is set.
    TriggerBool(Vec<bool>),
    /// **Proposed UAPI** `DATA_MSI_IOVA | ACTION_PREPARE`: the MSI address each vector uses
    /// when it is enabled (see `iommufd_ioas::proposed`). Empty = the probe.
    PrepareMsiIova(Vec<u64>),
}

impl IrqSet {
    /// The `flags` word.
    pub fn flags(&self) -> u32 {
        match self {
            IrqSet::Eventfds(_) => VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
            IrqSet::DisableAll | IrqSet::Trigger(_) => {
                VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER
            }
            IrqSet::Mask(_) => VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_MASK,
            IrqSet::Unmask(_) => VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_UNMASK,
            IrqSet::TriggerBool(_) => VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER,
            IrqSet::PrepareMsiIova(_) => VFIO_IRQ_SET_DATA_MSI_IOVA | VFIO_IRQ_SET_ACTION_PREPARE,
        }
    }

    /// The `count` word.
    pub fn count(&self) -> usize {
        match self {
            IrqSet::Eventfds(v) => v.len(),
            IrqSet::DisableAll => 0,
            IrqSet::Trigger(n) | IrqSet::Mask(n) | IrqSet::Unmask(n) => *n as usize,
            IrqSet::TriggerBool(v) => v.len(),
            IrqSet::PrepareMsiIova(v) => v.len(),
        }
    }

    /// A short description for error messages.
    pub fn describe(&self) -> String {
        match self {
            IrqSet::Eventfds(fds) => {
                let assigned = fds.iter().filter(|f| f.is_some()).count();
                format!(
                    "eventfd trigger ({assigned} assigned, {} unassigned)",
                    fds.len() - assigned
                )
            }
            IrqSet::DisableAll => "disable".to_string(),
            IrqSet::Trigger(_) => "loopback trigger".to_string(),
            IrqSet::Mask(_) => "mask".to_string(),
            IrqSet::Unmask(_) => "unmask".to_string(),
            IrqSet::TriggerBool(_) => "bool trigger".to_string(),
            IrqSet::PrepareMsiIova(_) => "prepare MSI IOVA (proposed UAPI)".to_string(),
        }
    }

    /// The full `struct vfio_irq_set` for `index` starting at vector `start`. `None` when the
    /// argument would not fit the uapi's `u32` fields.
    pub fn to_bytes(&self, index: u32, start: u32) -> Option<Vec<u8>> {
        let mut data = Vec::new();
        match self {
            IrqSet::Eventfds(fds) => {
                for fd in fds {
                    data.extend_from_slice(&fd.unwrap_or(-1).to_ne_bytes());
                }
            }
            IrqSet::TriggerBool(v) => data.extend(v.iter().map(|b| u8::from(*b))),
            IrqSet::PrepareMsiIova(iovas) => {
                for iova in iovas {
                    data.extend_from_slice(&iova.to_ne_bytes());
                }
            }
            IrqSet::DisableAll | IrqSet::Trigger(_) | IrqSet::Mask(_) | IrqSet::Unmask(_) => {}
        }
        let count = u32::try_from(self.count()).ok()?;
        // The kernel rejects `start + count` overflowing; refuse it here with a clear error.
        start.checked_add(count)?;
        let argsz = u32::try_from(IRQ_SET_HEADER_LEN + data.len()).ok()?;
        let mut buf = Vec::with_capacity(argsz as usize);
        for word in [argsz, self.flags(), index, start, count] {
            buf.extend_from_slice(&word.to_ne_bytes());
        }
        buf.extend_from_slice(&data);
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(b: &[u8]) -> Vec<u32> {
        b.chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                u32::from_ne_bytes(w)
            })
            .collect()
    }

    #[test]
    fn header_layout_matches_uapi() {
        use std::mem::{offset_of, size_of};
        use vfio_bindings::bindings::vfio::vfio_irq_set;
        assert_eq!(size_of::<vfio_irq_set>(), IRQ_SET_HEADER_LEN);
        assert_eq!(offset_of!(vfio_irq_set, count), 16);
    }

    #[test]
    fn assign_one_vector() {
        let b = IrqSet::Eventfds(vec![Some(7)]).to_bytes(2, 5).unwrap();
        assert_eq!(words(&b), vec![24, 0x24, 2, 5, 1, 7]);
    }

    #[test]
    fn unassign_uses_minus_one() {
        let b = IrqSet::Eventfds(vec![None, Some(9)])
            .to_bytes(2, 0)
            .unwrap();
        assert_eq!(words(&b), vec![28, 0x24, 2, 0, 2, u32::MAX, 9]);
    }

    #[test]
    fn disable_all_is_data_none_trigger_count_zero() {
        let b = IrqSet::DisableAll.to_bytes(2, 0).unwrap();
        assert_eq!(words(&b), vec![20, 0x21, 2, 0, 0]);
    }

    #[test]
    fn proposed_msi_iova_layout() {
        let b = IrqSet::PrepareMsiIova(vec![0x800_0040, 0x1_0000_0040])
            .to_bytes(2, 3)
            .unwrap();
        assert_eq!(b.len(), 20 + 16);
        assert_eq!(words(&b[..20]), vec![36, (1 << 6) | (1 << 7), 2, 3, 2]);
        assert_eq!(
            u64::from_ne_bytes(b[20..28].try_into().unwrap()),
            0x800_0040
        );
        assert_eq!(
            u64::from_ne_bytes(b[28..36].try_into().unwrap()),
            0x1_0000_0040
        );
    }

    #[test]
    fn start_plus_count_overflow_is_refused() {
        assert_eq!(IrqSet::Trigger(2).to_bytes(2, u32::MAX), None);
    }

    #[test]
    fn bool_data_is_one_byte_each() {
        let b = IrqSet::TriggerBool(vec![true, false, true])
            .to_bytes(0, 0)
            .unwrap();
        assert_eq!(b.len(), 23);
        assert_eq!(&b[20..], &[1, 0, 1]);
    }
}
