// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! What a VMM pays on the host side per operation: checking an MSI route against the
//! layout, building a routing table, and moving a vCPU's IMSIC state between KVM's register
//! view and the model (against an in-memory register file, so the figure excludes ioctls).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use kvm_aia::routing::{MsiRoute, routing_table};
use kvm_aia::{AiaDevice, AiaMode, AiaSetup, AttrIo};
use riscv_imsic::{GeometryConfig, Imsic, ImsicConfig, NumIds};
use vmm_sys_util::errno::Error as Errno;

#[derive(Default)]
struct Regs(RefCell<BTreeMap<u64, u64>>);

impl AttrIo for Regs {
    fn set_u32(&self, _: u32, _: u64, _: u32) -> Result<(), Errno> {
        Ok(())
    }
    fn get_u32(&self, _: u32, _: u64) -> Result<u32, Errno> {
        Ok(0)
    }
    fn set_u64(&self, _: u32, attr: u64, value: u64) -> Result<(), Errno> {
        self.0.borrow_mut().insert(attr, value);
        Ok(())
    }
    fn get_u64(&self, _: u32, attr: u64) -> Result<u64, Errno> {
        Ok(self.0.borrow().get(&attr).copied().unwrap_or(0))
    }
    fn control(&self, _: u32, _: u64) -> Result<(), Errno> {
        Ok(())
    }
    fn has(&self, _: u32, _: u64) -> Result<(), Errno> {
        Ok(())
    }
}

struct NoSink;
impl riscv_imsic::ExternalInterruptSink for NoSink {
    fn raise(&mut self, _: riscv_imsic::FileTarget) {}
    fn lower(&mut self, _: riscv_imsic::FileTarget) {}
}

fn benches(c: &mut Criterion) {
    let ids = NumIds::new(2047).unwrap();
    let imsic = ImsicConfig::uniform(
        GeometryConfig::supervisor_only(0x2800_0000, 8, 0),
        8,
        ids,
        0,
    );
    let setup = AiaSetup::from_imsic(AiaMode::HwAccel, &imsic, 0, None).unwrap();
    c.bench_function("check_msi", |b| {
        b.iter(|| setup.check_msi(black_box(0x2800_7000), black_box(2047)))
    });
    let routes: Vec<MsiRoute> = (0..256)
        .map(|i| MsiRoute {
            gsi: i,
            address: 0x2800_0000 + u64::from(i % 8) * 0x1000,
            data: 1 + i,
        })
        .collect();
    c.bench_function("routing_table_256", |b| {
        b.iter(|| routing_table(&setup, black_box(&routes)).unwrap())
    });
    let dev = AiaDevice::from_attr_io(Regs::default());
    let model = Imsic::new(imsic.clone(), NoSink).unwrap();
    let vcpus: Vec<u32> = (0..8).collect();
    let state = model.save();
    c.bench_function("write_state_8x2047", |b| {
        b.iter(|| kvm_aia::state::write_state(&dev, black_box(&state), &vcpus).unwrap())
    });
    c.bench_function("read_state_8x2047", |b| {
        b.iter(|| kvm_aia::state::read_state(&dev, &imsic, &vcpus).unwrap())
    });
}

criterion_group!(aia, benches);
criterion_main!(aia);
