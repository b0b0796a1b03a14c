// Copyright 2025 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What reaches the physical device: the guest's doorbell address, never its data.
//!
//! The guest programs (address, data) into its view of the MSI-X table. The address (a GPA
//! behind which the VMM mapped the physical doorbell, or a gIOVA when the guest has a vIOMMU)
//! is written through to the device by one of three strategies, chosen at run time by what
//! the kernel offers ([`DoorbellPolicy`]). The data dword is host-owned: the device sends the
//! EventID (ITS) or interrupt identity (IMSIC) the host kernel allocated, and the guest's
//! data only selects the guest-side route.
//!
//! This is a type-level property: [`DeviceProgram`] and [`TableAddressWrite`] have no data
//! field, [`program_address`] takes no data argument, and [`PhysicalMsixTable`] has no way to
//! write one. The property test `device_program_ignores_guest_data` checks that the output is
//! identical for any two tables that differ only in their data dwords.

use crate::msix::layout::{BarIndex, MsixRegion};

/// How the guest's address reaches the device (see docs/design.md, "The answer").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DoorbellPolicy {
    /// The host kernel (VFIO) programs the device's real entry with (doorbell IOVA, host
    /// data) when the vector is enabled. The guest's address is expected to equal
    /// `doorbell_iova` (the VMM placed its vITS doorbell page there); a mismatch is reported
    /// and the device keeps using the kernel's address.
    KernelProgrammed {
        /// The IOVA the kernel programs (its sw_msi window plus the doorbell page offset).
        doorbell_iova: u64,
    },
    /// Like `KernelProgrammed`, for a controller with one doorbell page per CPU (the RISC-V
    /// IMSIC behind the riscv64 test kernel's software MSI window, `docs/uapi.md` section
    /// 4): the kernel programs the page of the host hart the vector targets, some page of
    /// `[start, last]`, and the guest's address (its target vCPU's vIMSIC page, which the
    /// VMM placed in the same window) is expected there too. Never written through: the
    /// host's data is an identity of the host hart's file, so the host's page must stay.
    KernelProgrammedWindow {
        /// First IOVA of the window.
        start: u64,
        /// Last IOVA of the window.
        last: u64,
    },
    /// The kernel takes one IOVA per vector (`VFIO_IRQ_SET_DATA_MSI_IOVA`, proposed): the
    /// guest's address is that IOVA, set before the vector is (re)enabled.
    PerVectorIova,
    /// The VMM writes the address words into the real MSI-X table through the
    /// `MSIX_MAPPABLE` BAR mapping after VFIO enables the vector, and again after every
    /// re-enable or reset. MSI-X only: the MSI capability lives in config space, which VFIO
    /// virtualizes.
    TableAddressWrite,
}

impl DoorbellPolicy {
    /// Short name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            DoorbellPolicy::KernelProgrammed { .. } => "KernelProgrammed",
            DoorbellPolicy::KernelProgrammedWindow { .. } => "KernelProgrammedWindow",
            DoorbellPolicy::PerVectorIova => "PerVectorIova",
            DoorbellPolicy::TableAddressWrite => "TableAddressWrite",
        }
    }
}

/// Write the two address dwords of one real MSI-X table entry. There is no data field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TableAddressWrite {
    /// Vector index.
    pub vector: u16,
    /// Real BAR and offset of the entry's Message Address dword; Message Upper Address is
    /// at `offset + 4`.
    pub at: MsixRegion,
    /// Message Address (bits 1:0 are 0).
    pub lo: u32,
    /// Message Upper Address.
    pub hi: u32,
}

/// What must reach the physical device for one deliverable vector. No variant carries
/// message data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceProgram {
    /// [`DoorbellPolicy::KernelProgrammed`]: nothing to write. `address_matches` is false
    /// when the guest's address differs from the kernel's doorbell IOVA, so the VMM can say
    /// so (the device keeps the kernel's address and interrupts still reach the host).
    KernelProgrammed {
        /// Vector index.
        vector: u16,
        /// The guest's address.
        guest_address: u64,
        /// Whether it equals the kernel's doorbell IOVA.
        address_matches: bool,
    },
    /// [`DoorbellPolicy::PerVectorIova`]: set the vector's IOVA before enabling it.
    SetIova {
        /// Vector index.
        vector: u16,
        /// The IOVA (the guest's address).
        iova: u64,
    },
    /// [`DoorbellPolicy::TableAddressWrite`]: write the address into the real table.
    WriteTableAddress(TableAddressWrite),
}

impl DeviceProgram {
    /// The vector this concerns.
    pub fn vector(&self) -> u16 {
        match self {
            DeviceProgram::KernelProgrammed { vector, .. }
            | DeviceProgram::SetIova { vector, .. } => *vector,
            DeviceProgram::WriteTableAddress(w) => w.vector,
        }
    }

    /// The address that reaches the device: the guest's for `SetIova` and
    /// `WriteTableAddress`; `None` for `KernelProgrammed` (the kernel's address is used).
    pub fn device_address(&self) -> Option<u64> {
        match self {
            DeviceProgram::KernelProgrammed { .. } => None,
            DeviceProgram::SetIova { iova, .. } => Some(*iova),
            DeviceProgram::WriteTableAddress(w) => Some(u64::from(w.hi) << 32 | u64::from(w.lo)),
        }
    }
}

/// Errors of the write-through computation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteThroughError {
    /// The policy cannot serve this kind of interrupt.
    #[error("program device {kind} vector {vector}: policy {policy} is not available for {kind}")]
    Unsupported {
        /// The policy's name.
        policy: &'static str,
        /// "MSI" or "MSI-X".
        kind: &'static str,
        /// The vector.
        vector: u16,
    },
    /// The real table entry's offset overflows (cannot happen with a validated layout).
    #[error("program device MSI-X vector {vector}: real table offset overflows")]
    TableOffset {
        /// The vector.
        vector: u16,
    },
}

/// Where the real MSI-X table starts, for [`DoorbellPolicy::TableAddressWrite`]; `None`
/// for MSI.
pub type RealTable = Option<MsixRegion>;

/// Computes what reaches the device for one vector from its guest address alone: the
/// function has no data input, so its output cannot depend on guest data.
pub fn program_address(
    policy: DoorbellPolicy,
    vector: u16,
    address: u64,
    real_table: RealTable,
) -> Result<DeviceProgram, WriteThroughError> {
    match policy {
        DoorbellPolicy::KernelProgrammed { doorbell_iova } => Ok(DeviceProgram::KernelProgrammed {
            vector,
            guest_address: address,
            address_matches: address == doorbell_iova,
        }),
        DoorbellPolicy::KernelProgrammedWindow { start, last } => {
            Ok(DeviceProgram::KernelProgrammed {
                vector,
                guest_address: address,
                address_matches: (start..=last).contains(&address),
            })
        }
        DoorbellPolicy::PerVectorIova => Ok(DeviceProgram::SetIova {
            vector,
            iova: address,
        }),
        DoorbellPolicy::TableAddressWrite => {
            let table = real_table.ok_or(WriteThroughError::Unsupported {
                policy: policy.name(),
                kind: "MSI",
                vector,
            })?;
            let offset = u64::from(vector)
                .checked_mul(crate::msix::cap::MSIX_ENTRY_SIZE)
                .and_then(|o| o.checked_add(table.offset))
                .ok_or(WriteThroughError::TableOffset { vector })?;
            Ok(DeviceProgram::WriteTableAddress(TableAddressWrite {
                vector,
                at: MsixRegion {
                    bar: table.bar,
                    offset,
                },
                lo: address as u32,
                hi: (address >> 32) as u32,
            }))
        }
    }
}

/// The real MSI-X table, as the VMM reaches it (normally through the `MSIX_MAPPABLE` mmap
/// of the table's BAR). It can write address words only.
pub trait PhysicalMsixTable {
    /// Error of the underlying access.
    type Error;

    /// Writes Message Address (`lo`) at `bar`/`offset` and Message Upper Address (`hi`) at
    /// `offset + 4`.
    fn write_address(
        &mut self,
        bar: BarIndex,
        offset: u64,
        lo: u32,
        hi: u32,
    ) -> Result<(), Self::Error>;
}

/// Applies every [`DeviceProgram::WriteTableAddress`] of `programs` to `table`, in order;
/// returns how many were written. Other variants are skipped (they need no table write).
pub fn apply_table_writes<T: PhysicalMsixTable>(
    programs: &[DeviceProgram],
    table: &mut T,
) -> Result<usize, T::Error> {
    let mut written = 0;
    for p in programs {
        if let DeviceProgram::WriteTableAddress(w) = p {
            table.write_address(w.at.bar, w.at.offset, w.lo, w.hi)?;
            written += 1;
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(i: u8) -> BarIndex {
        BarIndex::new(i).unwrap()
    }

    #[test]
    fn kernel_programmed_window_accepts_any_page_of_it() {
        let p = DoorbellPolicy::KernelProgrammedWindow {
            start: 0x800_0000,
            last: 0x80f_ffff,
        };
        for (addr, inside) in [
            (0x800_0000, true),
            (0x800_1000, true),
            (0x80f_ffff, true),
            (0x810_0000, false),
            (0x7ff_ffff, false),
        ] {
            assert_eq!(
                program_address(p, 1, addr, None).unwrap(),
                DeviceProgram::KernelProgrammed {
                    vector: 1,
                    guest_address: addr,
                    address_matches: inside
                },
                "{addr:#x}"
            );
        }
        assert_eq!(p.name(), "KernelProgrammedWindow");
    }

    #[test]
    fn kernel_programmed_reports_mismatch() {
        let p = DoorbellPolicy::KernelProgrammed {
            doorbell_iova: 0x800_0040,
        };
        assert_eq!(
            program_address(p, 3, 0x800_0040, None).unwrap(),
            DeviceProgram::KernelProgrammed {
                vector: 3,
                guest_address: 0x800_0040,
                address_matches: true
            }
        );
        let got = program_address(p, 3, 0x900_0040, None).unwrap();
        assert!(matches!(
            got,
            DeviceProgram::KernelProgrammed {
                address_matches: false,
                ..
            }
        ));
        assert_eq!(got.device_address(), None);
    }

    #[test]
    fn per_vector_iova_is_guest_address() {
        let got = program_address(DoorbellPolicy::PerVectorIova, 1, 0x1_2345_6780, None).unwrap();
        assert_eq!(got.device_address(), Some(0x1_2345_6780));
        assert_eq!(got.vector(), 1);
    }

    #[test]
    fn table_address_write_targets_the_real_entry() {
        let table = MsixRegion {
            bar: bar(3),
            offset: 0x2000,
        };
        let got = program_address(
            DoorbellPolicy::TableAddressWrite,
            5,
            0xaa_bbbb_cccc,
            Some(table),
        )
        .unwrap();
        assert_eq!(
            got,
            DeviceProgram::WriteTableAddress(TableAddressWrite {
                vector: 5,
                at: MsixRegion {
                    bar: bar(3),
                    offset: 0x2050
                },
                lo: 0xbbbb_cccc,
                hi: 0xaa
            })
        );
        assert_eq!(
            program_address(DoorbellPolicy::TableAddressWrite, 0, 0, None),
            Err(WriteThroughError::Unsupported {
                policy: "TableAddressWrite",
                kind: "MSI",
                vector: 0
            })
        );
    }

    #[derive(Default)]
    struct Recorder(Vec<(u8, u64, u32, u32)>);

    impl PhysicalMsixTable for Recorder {
        type Error = ();
        fn write_address(
            &mut self,
            bar: BarIndex,
            offset: u64,
            lo: u32,
            hi: u32,
        ) -> Result<(), ()> {
            self.0.push((bar.get(), offset, lo, hi));
            Ok(())
        }
    }

    #[test]
    fn apply_writes_only_table_programs() {
        let table = Some(MsixRegion {
            bar: bar(0),
            offset: 0,
        });
        let programs = [
            program_address(DoorbellPolicy::TableAddressWrite, 0, 0x1000, table).unwrap(),
            program_address(DoorbellPolicy::PerVectorIova, 1, 0x2000, table).unwrap(),
            program_address(DoorbellPolicy::TableAddressWrite, 2, 0x3000, table).unwrap(),
        ];
        let mut rec = Recorder::default();
        assert_eq!(apply_table_writes(&programs, &mut rec), Ok(2));
        assert_eq!(rec.0, vec![(0, 0, 0x1000, 0), (0, 0x20, 0x3000, 0)]);
    }
}
