// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Bounded accesses to guest memory: fixed-size reads and writes at guest-chosen addresses,
//! every address computed with checked arithmetic. A read or write that is not wholly inside
//! guest RAM fails; the callers turn that into the spec's abort (`F_STE_FETCH`,
//! `F_CD_FETCH`, `F_WALK_EABT`, `CERROR_ABT`, `EVENTQ_ABT_ERR`).

use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions};

/// A guest memory access failed: `addr` is not backed by RAM (or the range overflows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemFault {
    /// The first address of the failed access.
    pub addr: u64,
}

/// Reads `buf.len()` bytes at `addr`.
pub fn read<M: GuestMemory>(mem: &M, addr: u64, buf: &mut [u8]) -> Result<(), MemFault> {
    if addr.checked_add(buf.len() as u64).is_none() {
        return Err(MemFault { addr });
    }
    mem.read_slice(buf, GuestAddress(addr))
        .map_err(|_| MemFault { addr })
}

/// Reads `N` little-endian 64-bit words at `addr`.
pub fn read_words<M: GuestMemory, const N: usize>(
    mem: &M,
    addr: u64,
) -> Result<[u64; N], MemFault> {
    let mut buf = [0u8; 64];
    let bytes = N * 8;
    debug_assert!(bytes <= buf.len());
    let buf = &mut buf[..bytes.min(64)];
    read(mem, addr, buf)?;
    let mut out = [0u64; N];
    for (w, chunk) in out.iter_mut().zip(buf.chunks_exact(8)) {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        *w = u64::from_le_bytes(b);
    }
    Ok(out)
}

/// Writes `buf` at `addr`, only if the whole range is guest RAM (nothing is written
/// otherwise).
pub fn write<M: GuestMemory>(mem: &M, addr: u64, buf: &[u8]) -> Result<(), MemFault> {
    if addr.checked_add(buf.len() as u64).is_none()
        || !mem.check_range(GuestAddress(addr), buf.len(), Permissions::Write)
    {
        return Err(MemFault { addr });
    }
    mem.write_slice(buf, GuestAddress(addr))
        .map_err(|_| MemFault { addr })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn bounded_reads_and_writes() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x1000), 0x1000)]).unwrap();
        write(&mem, 0x1ff8, &7u64.to_le_bytes()).unwrap();
        let w: [u64; 1] = read_words(&mem, 0x1ff8).unwrap();
        assert_eq!(w, [7]);
        assert_eq!(
            read_words::<_, 2>(&mem, 0x1ff8),
            Err(MemFault { addr: 0x1ff8 })
        );
        assert!(read_words::<_, 1>(&mem, u64::MAX - 3).is_err());
        assert!(write(&mem, 0x1ffc, &[0; 8]).is_err());
        assert!(write(&mem, u64::MAX, &[0; 8]).is_err());
        // Nothing was written by the failed, straddling write.
        let w: [u64; 1] = read_words(&mem, 0x1ff8).unwrap();
        assert_eq!(w, [7]);
    }
}
