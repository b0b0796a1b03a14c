//! Benchmarks of the passthrough model's trap paths with no-op backends: what a VMM pays in
//! userspace per trapped guest access, before any kernel call.
//!
//! - `config_read_dword`: a guest config read (header + capability overlay).
//! - `msix_masked_entry_write`: a table dword write to a masked entry (no commit due).
//! - `msix_unmask_commit`: unmask one vector and commit (route, enable, irqfd through the
//!   no-op router), then mask it again.
//! - `issue15/*`: the four cases of issue 15 through `write_bar`/`read_bar` of a device with
//!   a 2048-entry table (the msi-trap benchmarks' cases, plus the device's commit).

use criterion::{Criterion, criterion_group, criterion_main};
use msi_trap::msix::layout::{BarInfo, RelocationPolicy};
use msi_trap::write_through::DoorbellPolicy;
use std::hint::black_box;
use vfio_passthrough::{
    BackendError, DeviceBackend, GuestMapper, MsiRoute, MsiRouter, PassthroughConfig,
    PassthroughDevice, RouterGroup, VectorBackend, build_model,
};
use vmm_sys_util::eventfd::EventFd;

struct Dev(Vec<u8>);
impl VectorBackend for Dev {
    fn set_vector(&self, _: u16, _: Option<&EventFd>) -> Result<(), BackendError> {
        Ok(())
    }
    fn disable_vectors(&self) -> Result<(), BackendError> {
        Ok(())
    }
    fn prepare_msi_iova(&self, _: u16, _: u64) -> Result<(), BackendError> {
        Ok(())
    }
    fn read_table_address(&self, _: u16) -> Result<Option<u64>, BackendError> {
        Ok(None)
    }
    fn write_table_address(&self, _: u16, _: u32, _: u32) -> Result<(), BackendError> {
        Ok(())
    }
}

impl DeviceBackend for Dev {
    fn read_config(&self, o: u16, b: &mut [u8]) -> Result<(), BackendError> {
        let o = usize::from(o);
        b.copy_from_slice(&self.0[o..o + b.len()]);
        Ok(())
    }
    fn write_config(&self, _: u16, _: &[u8]) -> Result<(), BackendError> {
        Ok(())
    }
    fn read_bar(&self, _: u8, _: u64, _: &mut [u8]) -> Result<(), BackendError> {
        Ok(())
    }
    fn write_bar(&self, _: u8, _: u64, _: &[u8]) -> Result<(), BackendError> {
        Ok(())
    }
}

struct Router;
impl MsiRouter for Router {
    fn allocate_gsi(&mut self) -> Result<u32, BackendError> {
        Ok(32)
    }
    fn release_gsi(&mut self, _: u32) {}
    fn set_routes(&mut self, _: &[(u32, Option<MsiRoute>)]) -> Result<(), BackendError> {
        Ok(())
    }
    fn assign_irqfd(&mut self, _: &EventFd, _: u32) -> Result<(), BackendError> {
        Ok(())
    }
    fn deassign_irqfd(&mut self, _: &EventFd, _: u32) -> Result<(), BackendError> {
        Ok(())
    }
    fn inject(&mut self, _: MsiRoute) -> Result<(), BackendError> {
        Ok(())
    }
}

struct Mapper;
impl GuestMapper for Mapper {
    unsafe fn map(&mut self, _: u64, _: u64, _: *mut u8) -> Result<u32, BackendError> {
        Ok(0)
    }
    fn unmap(&mut self, _: u32) -> Result<(), BackendError> {
        Ok(())
    }
}

fn device() -> PassthroughDevice<Dev, RouterGroup<Router>, Mapper> {
    device_with(10, 0x4000)
}

/// A device whose MSI-X table (in BAR3 at 0, PBA at 0x8000) has `vectors` entries.
fn device_with(vectors: u16, bar3: u64) -> PassthroughDevice<Dev, RouterGroup<Router>, Mapper> {
    let mut c = vec![0u8; 256];
    c[0..4].copy_from_slice(&[0x86, 0x80, 0xc9, 0x10]);
    c[0x06] = 0x10;
    c[0x34] = 0x70;
    c[0x70..0x74].copy_from_slice(&[0x11, 0x00, (vectors - 1) as u8, ((vectors - 1) >> 8) as u8]);
    c[0x74..0x78].copy_from_slice(&3u32.to_le_bytes());
    let pba = if vectors > 10 { 0x8000u32 } else { 0x2000 };
    c[0x78..0x7c].copy_from_slice(&(pba | 3).to_le_bytes());
    let bars = [
        BarInfo::memory32(0x2_0000),
        BarInfo::ABSENT,
        BarInfo::ABSENT,
        BarInfo::memory32(bar3),
        BarInfo::ABSENT,
        BarInfo::ABSENT,
    ];
    let parts = build_model("bench", &c, &bars, &[0; 6], RelocationPolicy::Never, 0x1000).unwrap();
    let mut d = PassthroughDevice::new(
        Dev(c),
        RouterGroup::new(Router, vectors).unwrap(),
        Mapper,
        parts.config,
        parts.msix,
        Vec::new(),
        PassthroughConfig {
            devid: Some(8),
            policy: DoorbellPolicy::KernelProgrammed {
                doorbell_iova: 0x800_0040,
            },
        },
    )
    .unwrap();
    d.write_config(0x72, &0x8009u16.to_le_bytes());
    d.write_bar(3, 0, &0x800_0040u32.to_le_bytes());
    d
}

fn benches(c: &mut Criterion) {
    let mut d = device();
    c.bench_function("config_read_dword", |b| {
        let mut buf = [0u8; 4];
        b.iter(|| d.read_config(black_box(0x70), &mut buf))
    });
    c.bench_function("msix_masked_entry_write", |b| {
        b.iter(|| d.write_bar(3, black_box(0x18), &0x1234u32.to_le_bytes()))
    });
    c.bench_function("msix_unmask_commit", |b| {
        b.iter(|| {
            d.write_bar(3, black_box(12), &0u32.to_le_bytes());
            d.write_bar(3, black_box(12), &1u32.to_le_bytes());
        })
    });
}

fn issue15(c: &mut Criterion) {
    // Enable MSI-X, program and unmask every vector: all live.
    let mut d = device_with(2048, 0x1_0000);
    for v in 0..2048u64 {
        d.write_bar(3, v * 16, &0x800_0040u32.to_le_bytes());
        d.write_bar(3, v * 16 + 12, &0u32.to_le_bytes());
    }
    let mut data = 0u32;
    c.bench_function("issue15/device_live_data_write_route_update", |b| {
        b.iter(|| {
            data = data.wrapping_add(1);
            d.write_bar(3, black_box(0x408), &data.to_le_bytes());
        })
    });
    // Vector 64 masked again, reprogrammed and unmasked each time.
    d.write_bar(3, 0x40c, &1u32.to_le_bytes());
    let mut round = 0u32;
    c.bench_function("issue15/device_program_masked_vector_then_mask", |b| {
        b.iter(|| {
            round = round.wrapping_add(1);
            d.write_bar(3, black_box(0x400), &0x800_0040u32.to_le_bytes());
            d.write_bar(3, black_box(0x404), &round.to_le_bytes());
            d.write_bar(3, black_box(0x408), &round.to_le_bytes());
            d.write_bar(3, black_box(0x40c), &0u32.to_le_bytes());
            d.write_bar(3, black_box(0x40c), &1u32.to_le_bytes());
        })
    });
    let mut round = 0u32;
    c.bench_function(
        "issue15/device_full_table_rewrite_2048_function_mask",
        |b| {
            b.iter(|| {
                round = round.wrapping_add(1);
                d.write_config(0x72, &0xc7ffu16.to_le_bytes()); // Enable + Function Mask
                for v in 0..2048u64 {
                    let base = v * 16;
                    d.write_bar(3, base, &0x800_0040u32.to_le_bytes());
                    d.write_bar(3, base + 4, &0u32.to_le_bytes());
                    d.write_bar(3, base + 8, &(v as u32 ^ round).to_le_bytes());
                    d.write_bar(3, base + 12, &0u32.to_le_bytes());
                }
                d.write_config(0x72, &0x87ffu16.to_le_bytes()); // clear Function Mask
            })
        },
    );
    let mut buf = [0u8; 4];
    c.bench_function("issue15/device_table_dword_read", |b| {
        b.iter(|| {
            d.read_bar(3, black_box(0x408), &mut buf);
            black_box(&buf);
        })
    });
}

criterion_group!(all, benches, issue15);
criterion_main!(all);
