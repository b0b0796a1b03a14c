// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! vEVENTQs (`IOMMU_VEVENTQ_ALLOC`): the queue through which the kernel hands a VMM the
//! events of its vIOMMU's devices (for SMMUv3, event records with the virtual StreamID), to
//! be injected into the guest's own event queue.
//!
//! Reads are bounded: one call reads at most [`READ_BUFFER_LEN`] bytes and parses them with
//! [`parse_vevents`], which treats the kernel's bytes as untrusted (a truncated record, a
//! record length that does not fit, or a sequence number going backwards are reported, never
//! read past).

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use iommufd_bindings::iommufd::{
    iommu_veventq_alloc, iommu_veventq_flag_IOMMU_VEVENTQ_FLAG_LOST_EVENTS,
    iommu_veventq_type_IOMMU_VEVENTQ_TYPE_ARM_SMMUV3,
};

use crate::error::{Error, Result};
use crate::hwpt::Viommu;
use crate::object::ObjectId;
use crate::smmuv3::SmmuV3Event;
use crate::sys;

/// The most a single [`Veventq::read`] takes from the kernel: 4 KiB, 102 SMMUv3 events.
pub const READ_BUFFER_LEN: usize = 4096;
/// The deepest queue the kernel accepts (`VEVENTQ_MAX_DEPTH` in Linux 7.2).
pub const MAX_DEPTH: u32 = 1 << 19;
/// The size of `struct iommufd_vevent_header`.
pub const HEADER_LEN: usize = 8;
/// The size of an SMMUv3 record (`struct iommu_vevent_arm_smmuv3`).
pub const SMMUV3_RECORD_LEN: usize = 32;

/// One entry read from a vEVENTQ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vevent {
    /// An event record.
    Event {
        /// The kernel's sequence number (0..=`i32::MAX`, wrapping to 0).
        sequence: u32,
        /// Events the kernel dropped between the previous entry read and this one (the gap in
        /// sequence numbers).
        lost_before: u32,
        /// The record.
        record: SmmuV3Event,
    },
    /// `IOMMU_VEVENTQ_FLAG_LOST_EVENTS`: the queue overflowed and events were dropped at its
    /// tail.
    Lost {
        /// The sequence number the next event would have had.
        sequence: u32,
    },
}

/// The number of sequence numbers skipped between `prev` and `next` (the kernel's sequence
/// space is `0..=i32::MAX`, then 0 again).
fn sequence_gap(prev: Option<u32>, next: u32) -> u32 {
    const SPAN: u32 = 1 << 31;
    match prev {
        None => 0,
        Some(p) => (next.wrapping_sub(p) & (SPAN - 1)).saturating_sub(1),
    }
}

/// Parses what one `read()` of an SMMUv3 vEVENTQ returned. `last_sequence` is the sequence
/// number of the previous entry read (updated here), so that gaps count as lost events.
pub fn parse_vevents(buf: &[u8], last_sequence: &mut Option<u32>) -> Result<Vec<Vevent>> {
    let bad = |reason: String| Error::KernelReply {
        op: "read of vEVENTQ",
        reason,
    };
    let mut out = Vec::with_capacity(buf.len() / (HEADER_LEN + SMMUV3_RECORD_LEN) + 1);
    let mut off = 0usize;
    while off < buf.len() {
        let Some(hdr) = buf.get(off..off + HEADER_LEN) else {
            return Err(bad(format!(
                "{} trailing bytes at offset {off} are not a header",
                buf.len() - off
            )));
        };
        let flags = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let sequence = u32::from_ne_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
        off += HEADER_LEN;
        if flags & !iommu_veventq_flag_IOMMU_VEVENTQ_FLAG_LOST_EVENTS != 0 {
            return Err(bad(format!("unknown header flags {flags:#x}")));
        }
        if sequence > i32::MAX as u32 {
            return Err(bad(format!("sequence {sequence:#x} beyond INT_MAX")));
        }
        if flags & iommu_veventq_flag_IOMMU_VEVENTQ_FLAG_LOST_EVENTS != 0 {
            *last_sequence = Some(sequence);
            out.push(Vevent::Lost { sequence });
            continue;
        }
        let Some(rec) = buf.get(off..off + SMMUV3_RECORD_LEN) else {
            return Err(bad(format!(
                "record of sequence {sequence} truncated at {} bytes",
                buf.len() - off
            )));
        };
        off += SMMUV3_RECORD_LEN;
        let mut b = [0u8; SMMUV3_RECORD_LEN];
        b.copy_from_slice(rec);
        let lost_before = sequence_gap(*last_sequence, sequence);
        *last_sequence = Some(sequence);
        out.push(Vevent::Event {
            sequence,
            lost_before,
            record: SmmuV3Event::from_le_bytes(&b),
        });
    }
    Ok(out)
}

/// A vEVENTQ of an SMMUv3 vIOMMU. Destroyed on drop (its file first, since the kernel keeps
/// the object busy while the file is open).
#[derive(Debug)]
pub struct Veventq {
    file: Option<File>,
    obj: ObjectId,
    _viommu: Arc<Viommu>,
    depth: u32,
    last_sequence: Option<u32>,
}

impl Veventq {
    /// Allocates an SMMUv3 vEVENTQ of `depth` entries (1..=[`MAX_DEPTH`]) on `viommu`. The
    /// kernel allows one per vIOMMU and type (`EEXIST` for a second).
    pub fn alloc(viommu: &Arc<Viommu>, depth: u32) -> Result<Self> {
        let veventq_type = iommu_veventq_type_IOMMU_VEVENTQ_TYPE_ARM_SMMUV3;
        if depth == 0 || depth > MAX_DEPTH {
            return Err(Error::InvalidArgument {
                op: "IOMMU_VEVENTQ_ALLOC",
                reason: format!("depth {depth} is not in 1..={MAX_DEPTH}"),
            });
        }
        let mut arg = iommu_veventq_alloc {
            size: sys::size_of_u32::<iommu_veventq_alloc>(),
            viommu_id: viommu.id(),
            type_: veventq_type,
            veventq_depth: depth,
            ..Default::default()
        };
        let iommufd = viommu.iommufd().clone();
        let (id, file) =
            sys::veventq_alloc(iommufd.raw(), &mut arg).map_err(|errno| Error::VeventqAlloc {
                viommu_id: viommu.id(),
                veventq_type,
                depth,
                errno,
            })?;
        Ok(Veventq {
            file: Some(file),
            obj: ObjectId::new(iommufd, id, "vEVENTQ"),
            _viommu: viommu.clone(),
            depth,
            last_sequence: None,
        })
    }

    /// The vEVENTQ object ID.
    pub fn id(&self) -> u32 {
        self.obj.id()
    }

    /// The depth it was allocated with.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    fn file(&self) -> &File {
        // Only `destroy` and `drop` take the file, and both consume `self`.
        self.file
            .as_ref()
            .expect("vEVENTQ file is open while the object lives")
    }

    /// Waits up to `timeout` for events; `true` when there are some to read.
    pub fn wait(&self, timeout: Duration) -> Result<bool> {
        sys::poll_in(self.file().as_fd(), timeout).map_err(|errno| Error::VeventqRead {
            id: self.id(),
            errno,
        })
    }

    /// Reads what the queue holds now, at most [`READ_BUFFER_LEN`] bytes' worth (call again
    /// for more); empty when there is nothing. Never blocks (the fd is non-blocking).
    pub fn read(&mut self) -> Result<Vec<Vevent>> {
        let mut buf = [0u8; READ_BUFFER_LEN];
        let n = loop {
            match self.file().read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break 0,
                Err(e) => {
                    return Err(Error::VeventqRead {
                        id: self.id(),
                        errno: crate::Errno(e.raw_os_error().unwrap_or(libc::EIO)),
                    });
                }
            }
        };
        parse_vevents(&buf[..n.min(buf.len())], &mut self.last_sequence)
    }

    /// Reads until the queue is empty or `limit` entries were collected.
    pub fn drain(&mut self, limit: usize) -> Result<Vec<Vevent>> {
        let mut all = Vec::new();
        while all.len() < limit {
            let batch = self.read()?;
            if batch.is_empty() {
                break;
            }
            all.extend(batch);
        }
        all.truncate(limit);
        Ok(all)
    }

    /// Closes the queue's file and destroys the object now, reporting failure.
    pub fn destroy(mut self) -> Result<()> {
        drop(self.file.take());
        self.obj.destroy()
    }
}

impl AsRawFd for Veventq {
    fn as_raw_fd(&self) -> RawFd {
        self.file().as_raw_fd()
    }
}

impl AsFd for Veventq {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file().as_fd()
    }
}

impl Drop for Veventq {
    fn drop(&mut self) {
        // The file goes first: while it is open the kernel refuses IOMMU_DESTROY (EBUSY).
        drop(self.file.take());
        // `obj` is dropped after this, issuing IOMMU_DESTROY.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u32, flags: u32, id: u8, sid: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        if flags == 0 {
            v.extend_from_slice(&(u64::from(id) | u64::from(sid) << 32).to_le_bytes());
            v.extend_from_slice(&[0u8; 24]);
        }
        v
    }

    #[test]
    fn parses_events_gaps_and_lost_markers() {
        let mut buf = event(0, 0, 0x10, 0x20);
        buf.extend(event(1, 0, 0x10, 0x20));
        buf.extend(event(4, 0, 0x04, 0x21));
        buf.extend(event(5, 1, 0, 0));
        let mut last = None;
        let v = parse_vevents(&buf, &mut last).unwrap();
        assert_eq!(v.len(), 4);
        match v[2] {
            Vevent::Event {
                sequence,
                lost_before,
                record,
            } => {
                assert_eq!(sequence, 4);
                assert_eq!(lost_before, 2);
                assert_eq!(record.stream_id(), 0x21);
                assert_eq!(record.name(), Some("C_BAD_STE"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(v[3], Vevent::Lost { sequence: 5 });
        assert_eq!(last, Some(5));
        // The next read continues the numbering: 7 after 5 lost one.
        let v = parse_vevents(&event(7, 0, 0x10, 1), &mut last).unwrap();
        assert!(matches!(v[0], Vevent::Event { lost_before: 1, .. }));
    }

    #[test]
    fn sequence_wraps_at_int_max() {
        assert_eq!(sequence_gap(Some(i32::MAX as u32), 0), 0);
        assert_eq!(sequence_gap(Some(i32::MAX as u32 - 1), 1), 2);
        assert_eq!(sequence_gap(None, 77), 0);
        assert_eq!(sequence_gap(Some(3), 4), 0);
    }

    #[test]
    fn hostile_bytes_are_errors_not_panics() {
        let mut last = None;
        assert!(parse_vevents(&[], &mut last).unwrap().is_empty());
        // A header cut short, a record cut short, unknown flags, a sequence past INT_MAX.
        assert!(parse_vevents(&[0u8; 5], &mut last).is_err());
        let full = event(0, 0, 0x10, 1);
        assert!(parse_vevents(&full[..20], &mut last).is_err());
        assert!(parse_vevents(&event(0, 2, 0, 0), &mut last).is_err());
        assert!(parse_vevents(&event(u32::MAX, 1, 0, 0), &mut last).is_err());
        // Random bytes of every length up to two records: never a panic.
        let mut x = 0x1234_5678u32;
        for len in 0..80 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = parse_vevents(&bytes, &mut last);
        }
    }
}
