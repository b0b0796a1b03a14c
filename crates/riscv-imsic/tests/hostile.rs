// Copyright © 2026 The passthrough-msi authors
//
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Hostile input: every access size and offset of a page, every identity value
//! class, every `*iselect` class, addresses at the ends of the address space,
//! and garbage state blobs. Each has a defined result (AIA 1.0 §3.5-§3.8 or a
//! typed error) and none panics.

use proptest::prelude::*;
use riscv_imsic::{
    DecodeError, ExternalInterruptSink, FileKind, FileTarget, GeometryConfig, IgnoredWrite, Imsic,
    ImsicConfig, ImsicError, ImsicState, IselectError, NumIds, WriteOutcome, Xlen,
};

#[derive(Default)]
struct Count {
    raises: usize,
    lowers: usize,
}

impl ExternalInterruptSink for Count {
    fn raise(&mut self, _: FileTarget) {
        self.raises += 1;
    }
    fn lower(&mut self, _: FileTarget) {
        self.lowers += 1;
    }
}

const N: u32 = 191;

fn imsic_at(base: u64) -> Imsic<Count> {
    let geometry = GeometryConfig::supervisor_only(base, 2, 1);
    let config = ImsicConfig::uniform(geometry, 2, NumIds::new(N).unwrap(), 1);
    Imsic::new(config, Count::default()).unwrap()
}

fn s0() -> FileTarget {
    FileTarget::new(0, FileKind::Supervisor)
}

/// Enables everything and turns delivery on so any stray pending bit shows.
fn armed(base: u64) -> Imsic<Count> {
    let mut im = imsic_at(base);
    for t in im.targets().collect::<Vec<_>>() {
        im.write_indirect(t, 0x70, 1, Xlen::Rv64).unwrap();
        for k in [0xC0u64, 0xC2, 0xC4] {
            im.write_indirect(t, k, u64::MAX, Xlen::Rv64).unwrap();
        }
    }
    im
}

#[test]
fn every_offset_and_size_of_a_page() {
    let mut im = armed(0x2800_0000);
    let page = im.file_address(s0()).unwrap();
    for offset in 0..0x1000u64 {
        for len in [0usize, 1, 2, 3, 4, 5, 6, 7, 8, 16, 64] {
            let addr = page + offset;
            let data = vec![7u8; len];
            let got = im.mmio_write(addr, &data);
            let mut buf = vec![0xEEu8; len];
            let read = im.mmio_read(addr, &mut buf);
            assert!(
                buf.iter().all(|b| *b == 0),
                "reads are zero at {offset:#x}/{len}"
            );
            if len != 4 || offset % 4 != 0 {
                assert_eq!(got, Err(ImsicError::UnsupportedAccess { addr, len }));
                assert_eq!(read, Err(ImsicError::UnsupportedAccess { addr, len }));
            } else {
                assert_eq!(read, Ok(()));
                match offset {
                    0 => assert!(matches!(
                        got,
                        Ok(WriteOutcome::Ignored(IgnoredWrite::InvalidIdentity { .. }))
                    )),
                    4 => assert!(matches!(
                        got,
                        Ok(WriteOutcome::Ignored(IgnoredWrite::InvalidIdentity { .. }))
                    )),
                    _ => assert_eq!(
                        got,
                        Ok(WriteOutcome::Ignored(IgnoredWrite::ReadOnlyZero {
                            target: s0(),
                            offset: offset as u16
                        }))
                    ),
                }
            }
        }
    }
    // 0x07070707 is not an identity in either byte order: nothing happened.
    assert_eq!(im.topei(s0()), Ok(0));
    assert_eq!(im.sink().raises, 0);
}

#[test]
fn identity_values_le_and_be() {
    let mut im = armed(0x2800_0000);
    let page = im.file_address(s0()).unwrap();
    let mut expected = 0u32;
    for value in [
        0u32,
        1,
        2,
        N - 1,
        N,
        N + 1,
        2047,
        2048,
        0xFFFF,
        0x1_0000,
        u32::MAX,
        1 << 31,
    ] {
        for (off, bytes) in [(0u64, value.to_le_bytes()), (4, value.to_be_bytes())] {
            let got = im.mmio_write(page + off, &bytes).unwrap();
            if (1..=N).contains(&value) {
                assert!(matches!(got, WriteOutcome::Pending { id, .. } if id == value));
                expected += 1;
            } else {
                assert_eq!(
                    got,
                    WriteOutcome::Ignored(IgnoredWrite::InvalidIdentity {
                        target: s0(),
                        value
                    })
                );
            }
        }
    }
    // 1, 2, N-1, N pending: claims come out in priority order.
    let mut claimed = Vec::new();
    while let Ok(v) = im.claim_topei(s0()) {
        if v == 0 {
            break;
        }
        claimed.push(v >> 16);
    }
    assert_eq!(claimed, vec![1, 2, N - 1, N]);
    assert_eq!(expected, 8);
    assert_eq!(im.sink().raises, 1);
    assert_eq!(im.sink().lowers, 1);
}

#[test]
fn msi_data_is_little_endian() {
    let mut im = armed(0x2800_0000);
    let page = im.file_address(s0()).unwrap();
    // A device writing data 5 to seteipnum_be delivers identity 0x05000000: ignored.
    assert_eq!(
        im.write_msi(page + 4, 5),
        Ok(WriteOutcome::Ignored(IgnoredWrite::InvalidIdentity {
            target: s0(),
            value: 0x0500_0000
        }))
    );
    assert!(matches!(
        im.write_msi(page + 4, 5u32.swap_bytes()),
        Ok(WriteOutcome::Pending { id: 5, .. })
    ));
}

#[test]
fn iselect_classes() {
    let mut im = armed(0x2800_0000);
    let t = s0();
    for iselect in (0u64..0x300).chain([u64::MAX, 1 << 63, 1 << 31, 0x8000_0070]) {
        for xlen in [Xlen::Rv32, Xlen::Rv64] {
            let got = im.rmw_indirect(t, iselect, u64::MAX, 0, xlen);
            let odd_eix = (0x80..=0xFF).contains(&iselect) && iselect % 2 == 1;
            match got {
                Ok(_) => {
                    assert!((0x70..=0xFF).contains(&iselect) && !(xlen == Xlen::Rv64 && odd_eix))
                }
                Err(ImsicError::Indirect {
                    source: IselectError::OddRegisterOnRv64 { iselect: i },
                    ..
                }) => {
                    assert_eq!(i, iselect);
                    assert!(odd_eix && xlen == Xlen::Rv64);
                }
                Err(ImsicError::Indirect {
                    source: IselectError::NotImsicRegister { iselect: i },
                    ..
                }) => {
                    assert_eq!(i, iselect);
                    assert!(!(0x70..=0xFF).contains(&iselect));
                }
                other => panic!("{iselect:#x}: {other:?}"),
            }
        }
    }
    // Reserved numbers read zero and ignore writes.
    for iselect in [0x71u64, 0x73, 0x7A, 0x7F] {
        im.write_indirect(t, iselect, u64::MAX, Xlen::Rv64).unwrap();
        assert_eq!(im.read_indirect(t, iselect, Xlen::Rv64), Ok(0));
    }
    // eie/eip registers past N (192 identities = 3 words) are read-only zero.
    for k in [6u64, 8, 62] {
        im.write_indirect(t, 0xC0 + k, u64::MAX, Xlen::Rv64)
            .unwrap();
        assert_eq!(im.read_indirect(t, 0xC0 + k, Xlen::Rv64), Ok(0));
        im.write_indirect(t, 0x80 + k, u64::MAX, Xlen::Rv64)
            .unwrap();
        assert_eq!(im.read_indirect(t, 0x80 + k, Xlen::Rv64), Ok(0));
    }
}

#[test]
fn ends_of_the_address_space() {
    // Files right below 2^64: no overflow when decoding or offsetting.
    let base = u64::MAX - 0x3FFF; // 2 harts x 2 pages (guest index bits 1)
    let mut im = armed(base);
    let last = im
        .file_address(FileTarget::new(1, FileKind::Guest(1)))
        .unwrap();
    assert_eq!(last, u64::MAX - 0xFFF);
    assert!(matches!(
        im.write_msi(last, 3),
        Ok(WriteOutcome::Pending { id: 3, .. })
    ));
    let mut buf = [1u8; 8];
    assert_eq!(
        im.mmio_read(u64::MAX - 3, &mut buf),
        Err(ImsicError::UnsupportedAccess {
            addr: u64::MAX - 3,
            len: 8
        })
    );
    let mut buf = [1u8; 4];
    assert_eq!(im.mmio_read(u64::MAX - 3, &mut buf), Ok(()));
    assert_eq!(buf, [0; 4]);
    assert_eq!(
        im.write_msi(base - 4, 1),
        Err(ImsicError::Decode(DecodeError::Outside { addr: base - 4 }))
    );
    // And at zero.
    let mut im = armed(0);
    assert!(matches!(
        im.write_msi(0, 1),
        Ok(WriteOutcome::Pending { id: 1, .. })
    ));
    assert!(matches!(
        im.write_msi(u64::MAX, 1),
        Err(ImsicError::Decode(_))
    ));
}

proptest! {
    #[test]
    fn garbage_state_blobs(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut im = imsic_at(0x2800_0000);
        let before = im.save();
        if let Ok(state) = serde_json::from_slice::<ImsicState>(&bytes) {
            let _ = im.restore(&state);
        } else {
            prop_assert_eq!(im.save(), before);
        }
    }

    #[test]
    fn mutated_state_blobs(word in 0usize..3, value in any::<u64>(), delivery in any::<u32>(), threshold in any::<u32>()) {
        let mut im = armed(0x2800_0000);
        im.set_pending(s0(), 4).unwrap();
        let before = im.save();
        let mut state = before.clone();
        state.harts[1].guests[0].eip[word] = value;
        state.harts[1].guests[0].eidelivery = delivery;
        state.harts[1].guests[0].eithreshold = threshold;
        let valid = (word != 0 || value & 1 == 0) && delivery <= 1 && threshold <= 2047;
        match im.restore(&state) {
            Ok(()) => {
                prop_assert!(valid);
                prop_assert_eq!(im.save(), state);
            }
            Err(_) => {
                prop_assert!(!valid);
                prop_assert_eq!(im.save(), before);
            }
        }
    }

    #[test]
    fn any_msi_any_address(addr in any::<u64>(), data in any::<u32>(), len in 0usize..16) {
        let mut im = armed(0x2800_0000);
        let _ = im.write_msi(addr, data);
        let mut buf = vec![0xFFu8; len];
        let _ = im.mmio_read(addr, &mut buf);
        prop_assert!(buf.iter().all(|b| *b == 0));
        let _ = im.mmio_write(addr, &buf);
    }
}
