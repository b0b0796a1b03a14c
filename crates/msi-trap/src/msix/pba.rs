// Copyright 2025 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The Pending Bit Array (PCI 3.0 §6.8.2.10, PCIe Base 6.0 §7.7.2.10).
//!
//! One bit per vector, packed into `div_ceil(N, 64)` QWORDs; bits at or beyond N read as 0.
//! The PBA is read-only to software ("if software writes to Pending Bits, the result is
//! undefined"): writes are ignored. A bit is set when the host reports the device signalled
//! a masked vector and cleared when an unmask releases the message.

use crate::access::put_u32;
use crate::update::Bitmap;

/// Reads an aligned DWORD or QWORD of the PBA into `data` (the shape was checked).
pub(crate) fn read(pba: &Bitmap, offset: u64, data: &mut [u8]) {
    let word = pba.words().get((offset / 8) as usize).copied().unwrap_or(0);
    match data.len() {
        8 => data.copy_from_slice(&word.to_le_bytes()),
        _ => {
            let dword = if offset % 8 == 4 { word >> 32 } else { word };
            put_u32(data, 0, dword as u32);
        }
    }
}
