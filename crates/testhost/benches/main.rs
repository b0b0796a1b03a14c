// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Benchmarks of the host-side work per run: packing the initramfs and parsing results.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use testhost::initramfs::Initramfs;
use testhost::plan::OutputFormat;
use testhost::protocol::{Expectations, parse_results};

const FAILING: &str = include_str!("../tests/fixtures/libtest-failing.jsonl");

fn pack(c: &mut Criterion) {
    // About the size of one cross-built test executable.
    let payload = vec![0x5au8; 16 << 20];
    let mut fs = Initramfs::new();
    fs.bytes("/testhost/bin/suite", 0o755, payload).unwrap();
    for i in 0..200 {
        fs.symlink(&format!("/bin/applet{i}"), "busybox").unwrap();
    }
    let mut g = c.benchmark_group("initramfs");
    g.throughput(Throughput::Bytes(16 << 20));
    g.bench_function("write_16MiB_200_links", |b| {
        let mut out = Vec::with_capacity(17 << 20);
        b.iter(|| {
            out.clear();
            out = fs.write_to(std::mem::take(&mut out)).unwrap();
            black_box(out.len())
        })
    });
    g.finish();
}

fn parse(c: &mut Criterion) {
    // 100 suites of real libtest output (5 tests each, two failures with captured stdout).
    let mut text = String::from("HELLO 1\n");
    let mut suites = Vec::new();
    for i in 0..100 {
        let name = format!("pkg/test/s{i}");
        text += &format!("BEGIN {name}\n");
        for line in FAILING.lines() {
            text += &format!("E {name} {line}\n");
        }
        text += &format!("X {name} 101\n");
        suites.push((name, OutputFormat::Libtest));
    }
    text += "DONE 5.0\n";
    let expected = Expectations {
        suites,
        nics: 0,
        bind: vec![],
    };
    let mut g = c.benchmark_group("results");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("parse_100_suites", |b| {
        b.iter(|| black_box(parse_results(text.as_bytes(), expected.clone()).tally()))
    });
    g.finish();
}

criterion_group!(benches, pack, parse);
criterion_main!(benches);
