// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A seeded random sequence of iommufd IOAS and VFIO cdev calls against the real kernel and
//! a real (QEMU-emulated) igb behind an SMMUv3, every answer checked against a model.
//!
//! Needs `/dev/iommu` and an Intel 82576 (8086:10c9) bound to vfio-pci (or the device named
//! by `VFIO_TEST_DEVICE`); where either is absent it prints why and returns, and inside the
//! QEMU test host (`TESTHOST_IN_GUEST=1`) absence is a failure. `KERNEL_FUZZ_SEED` (decimal
//! or 0x hex) picks the sequence, `KERNEL_FUZZ_OPS` its length (default 2000); both are
//! printed, so a failing run is replayed by setting them.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use iommufd_ioas::proposed::Support;
use iommufd_ioas::{Access, Ioas, IommuOption, Iommufd, IovaRange, MapTarget};
use kernel_fuzz::{
    Answer, DEFAULT_SEED, IoasModel, IoasOp, MEMFD_SIZE, Rng, SW_MSI, Which, generate,
};
use vfio_cdev::{IrqIndex, PciAddress, VfioDevice};
use vmm_sys_util::eventfd::EventFd;

fn in_guest() -> bool {
    std::env::var_os("TESTHOST_IN_GUEST").is_some()
}

fn skip(why: &str) {
    assert!(!in_guest(), "inside the test host: {why}");
    eprintln!("skipped: {why}; runs in the QEMU test host");
}

fn read_hex(path: &std::path::Path) -> Option<u32> {
    let s = std::fs::read_to_string(path).ok()?;
    u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
}

/// The test NIC, found as `crates/vfio-cdev/tests/kernel.rs` finds it.
fn find_nic() -> Option<PciAddress> {
    if let Ok(s) = std::env::var("VFIO_TEST_DEVICE") {
        return Some(s.parse().expect("VFIO_TEST_DEVICE"));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/sys/bus/pci/devices")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            read_hex(&p.join("vendor")) == Some(0x8086)
                && read_hex(&p.join("device")) == Some(0x10c9)
                && p.join("vfio-dev").is_dir()
        })
        .collect();
    found.sort();
    found.first()?.file_name()?.to_str()?.parse().ok()
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|e| panic!("{name}={s:?}: {e}"))
        }
        Err(_) => default,
    }
}

fn memfd(len: u64) -> OwnedFd {
    // SAFETY: the name is a NUL-terminated string literal and the flags are valid; the call
    // has no other inputs and returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"kernel-fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just returned by memfd_create and is owned by nothing else.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let file = std::fs::File::from(owned);
    file.set_len(len).expect("size the memfd");
    OwnedFd::from(file)
}

/// The complement of `reserved` in the 64-bit space, as `IOMMU_IOAS_IOVA_RANGES` lists it.
fn allowed_from(reserved: &[IovaRange]) -> Vec<IovaRange> {
    let mut out = Vec::new();
    let mut next = Some(0u64);
    let mut sorted = reserved.to_vec();
    sorted.sort();
    for r in sorted {
        if let Some(n) = next
            && r.start > n
        {
            out.push(IovaRange {
                start: n,
                last: r.start - 1,
            });
        }
        next = r.last.checked_add(1);
    }
    if let Some(n) = next {
        out.push(IovaRange {
            start: n,
            last: u64::MAX,
        });
    }
    out
}

fn vfio_answer<T>(r: &vfio_cdev::Result<T>) -> Answer {
    match r {
        Ok(_) => Answer::Ok,
        Err(e) => Answer::Err(e.errno().map_or(-1, |e| e.raw())),
    }
}

#[derive(Default)]
struct Tally {
    ok: u64,
    err: u64,
}

struct Run {
    seed: u64,
    step: u64,
    tallies: std::collections::BTreeMap<&'static str, Tally>,
}

impl Run {
    fn check(&mut self, what: &'static str, op: &dyn std::fmt::Debug, want: Answer, got: Answer) {
        assert_eq!(
            got, want,
            "seed {:#x} step {}: {op:?}: kernel answered {got:?}, the model predicted {want:?}",
            self.seed, self.step
        );
        let t = self.tallies.entry(what).or_default();
        if matches!(got, Answer::Err(_)) {
            t.err += 1;
        } else {
            t.ok += 1;
        }
    }
}

fn ioas_answer<T>(r: Result<T, iommufd_ioas::Error>, bytes: impl Fn(T) -> Option<u64>) -> Answer {
    match r {
        Ok(v) => bytes(v).map_or(Answer::Ok, Answer::Bytes),
        Err(e) => Answer::Err(e.errno().map_or(-1, |e| e.raw())),
    }
}

/// The device can be bound by one open file at a time: the tests take turns.
static DEVICE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn device() -> Option<(std::sync::MutexGuard<'static, ()>, PciAddress)> {
    let guard = DEVICE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if !std::path::Path::new("/dev/iommu").exists() {
        skip("/dev/iommu absent (no CONFIG_IOMMUFD)");
        return None;
    }
    let Some(addr) = find_nic() else {
        skip("no 8086:10c9 NIC bound to vfio-pci");
        return None;
    };
    Some((guard, addr))
}

#[test]
fn seeded_ioas_and_vfio_sequence_matches_the_model() {
    let Some((_guard, addr)) = device() else {
        return;
    };
    let seed = env_u64("KERNEL_FUZZ_SEED", DEFAULT_SEED);
    let ops = env_u64("KERNEL_FUZZ_OPS", 2000);
    let tallies = run_seed(addr, seed, ops);
    // The sequence is not vacuous: each kind of answer the model predicts was seen.
    let seen = |what: &str, ok: bool| {
        tallies
            .get(what)
            .is_some_and(|t| if ok { t.ok > 0 } else { t.err > 0 })
    };
    for (what, ok) in [
        ("map", true),
        ("map", false),
        ("unmap", true),
        ("unmap", false),
        ("copy", true),
        ("copy", false),
        ("allow_iovas", true),
        ("allow_iovas", false),
        ("set_irqs", true),
        ("set_irqs", false),
        ("region_info", true),
        ("region_info", false),
        ("option", false),
    ] {
        assert!(
            seen(what, ok),
            "seed {seed:#x}: no {what} answered {}",
            if ok { "ok" } else { "an error" }
        );
    }
}

/// More sequences, so one run of the suite covers more than one path: four in CI,
/// `KERNEL_FUZZ_SEEDS` (from `KERNEL_FUZZ_SEED` + 1 upwards) for a longer run.
#[test]
fn other_seeds_match_the_model() {
    let Some((_guard, addr)) = device() else {
        return;
    };
    let base = env_u64("KERNEL_FUZZ_SEED", DEFAULT_SEED);
    let seeds = env_u64("KERNEL_FUZZ_SEEDS", 4);
    for k in 1..=seeds {
        run_seed(addr, base.wrapping_add(k), 1000);
    }
}

fn run_seed(
    addr: PciAddress,
    seed: u64,
    ops: u64,
) -> std::collections::BTreeMap<&'static str, Tally> {
    println!("kernel-fuzz: seed {seed:#x}, {ops} operations, device {addr}");
    let started = Instant::now();

    let iommufd = Iommufd::open().expect("open /dev/iommu");
    let a = Arc::new(iommufd.alloc_ioas().expect("IOAS A"));
    let b = Arc::new(iommufd.alloc_ioas().expect("IOAS B"));
    let mut dev = VfioDevice::open_pci(addr).expect("open the NIC");
    let dev_id = dev.bind(&iommufd).expect("bind");
    dev.attach_ioas(&a).expect("attach to IOAS A");

    // What the attach reserved, as the kernel reports it: the SMMUv3's software MSI window
    // must be one of the holes.
    let ranges_a = a.iova_ranges().expect("IOVA ranges of A");
    let mut reserved = ranges_a.holes();
    assert!(
        reserved.contains(&SW_MSI),
        "holes {reserved:x?} lack the MSI window"
    );
    if let Some(last) = ranges_a.ranges().last()
        && last.last < u64::MAX
    {
        reserved.push(IovaRange {
            start: last.last + 1,
            last: u64::MAX,
        });
    }
    let mut model_a = IoasModel::new();
    model_a.attach(reserved.clone(), ranges_a.alignment());
    let mut model_b = IoasModel::new();
    let ranges_b = b.iova_ranges().expect("IOVA ranges of B");
    assert_eq!(
        ranges_b.ranges(),
        &[IovaRange {
            start: 0,
            last: u64::MAX
        }],
        "bare IOAS"
    );
    println!(
        "kernel-fuzz: attached IOAS reserves {reserved:x?}, alignment {:#x}",
        ranges_a.alignment()
    );

    // What the device offers, read once; later answers must agree.
    let info = dev.info().expect("device info");
    let msix = dev.irq_info(IrqIndex::Msix).expect("MSI-X info");
    let config_before = dev.read_config_space().expect("config space");
    // Every region's first answer is the model for the later ones (the igb has no VGA
    // region: index 8 answers EINVAL although it is below num_regions).
    let regions: Vec<_> = (0..info.num_regions).map(|i| dev.region_info(i)).collect();
    let region_answers: Vec<Answer> = regions.iter().map(vfio_answer).collect();
    println!(
        "kernel-fuzz: {} regions answer {region_answers:?}",
        info.num_regions
    );
    let efds: Vec<EventFd> = (0..msix.count)
        .map(|_| EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"))
        .collect();
    let all: Vec<Option<&EventFd>> = efds.iter().map(Some).collect();
    dev.set_vector_eventfds(IrqIndex::Msix, 0, &all)
        .expect("enable every MSI-X vector");

    let file = memfd(MEMFD_SIZE);
    let mut rng = Rng::new(seed);
    let mut run = Run {
        seed,
        step: 0,
        tallies: Default::default(),
    };
    let mut allowed = [false, false];
    for step in 0..ops {
        run.step = step;
        if rng.chance(85) {
            let op = generate(&mut rng, &model_a, &model_b);
            let pick = |w: Which| match w {
                Which::Attached => (&a, 0usize),
                Which::Bare => (&b, 1usize),
            };
            match &op {
                IoasOp::Map {
                    ioas,
                    iova,
                    len,
                    file_offset,
                } => {
                    let (io, k) = pick(*ioas);
                    let model = if k == 0 { &mut model_a } else { &mut model_b };
                    let want = model.predict_map(*iova, *len);
                    let got = ioas_answer(
                        io.map_file(
                            file.as_fd(),
                            *file_offset,
                            *len,
                            MapTarget::Fixed(*iova),
                            Access::READ_WRITE,
                        ),
                        |_| None,
                    );
                    if got == Answer::Ok {
                        model.map(*iova, *len);
                    }
                    run.check("map", &op, want, got);
                }
                IoasOp::Unmap { ioas, iova, len } => {
                    let (io, k) = pick(*ioas);
                    let model = if k == 0 { &mut model_a } else { &mut model_b };
                    let want = model.unmap(*iova, *len);
                    let got = ioas_answer(io.unmap(*iova, *len), Some);
                    run.check("unmap", &op, want, got);
                }
                IoasOp::Copy {
                    src,
                    src_iova,
                    len,
                    dst_iova,
                } => {
                    let (src_io, k) = pick(*src);
                    let (dst_io, dst_model, src_model): (&Arc<Ioas>, &mut IoasModel, &IoasModel) =
                        if k == 0 {
                            (&b, &mut model_b, &model_a)
                        } else {
                            (&a, &mut model_a, &model_b)
                        };
                    let want = if src_model.is_area(*src_iova, *len) {
                        dst_model.predict_map(*dst_iova, *len)
                    } else if src_model.is_unmapped(*src_iova, *len) {
                        Answer::Err(libc::ENOENT)
                    } else {
                        // Part of an area: the kernel may copy a slice; not modelled.
                        continue;
                    };
                    let got = ioas_answer(
                        dst_io.copy_from(
                            src_io,
                            *src_iova,
                            *len,
                            MapTarget::Fixed(*dst_iova),
                            Access::READ_WRITE,
                        ),
                        |_| None,
                    );
                    if got == Answer::Ok {
                        dst_model.map(*dst_iova, *len);
                    }
                    run.check("copy", &op, want, got);
                }
                IoasOp::Allow { ioas, ranges } => {
                    let (io, k) = pick(*ioas);
                    let model = if k == 0 { &model_a } else { &model_b };
                    let want = model.predict_allow(ranges);
                    let got = ioas_answer(io.allow_iovas(ranges), |_| None);
                    if got == Answer::Ok {
                        allowed[k] = !ranges.is_empty();
                    }
                    run.check("allow_iovas", &op, want, got);
                }
                IoasOp::Ranges(w) => {
                    let (io, k) = pick(*w);
                    let model = if k == 0 { &model_a } else { &model_b };
                    let got = io.iova_ranges();
                    let ok = match &got {
                        Ok(r) if !allowed[k] => {
                            r.ranges() == allowed_from(model.reserved()).as_slice()
                                && r.alignment() == model.alignment()
                        }
                        Ok(_) => true,
                        Err(_) => false,
                    };
                    assert!(ok, "seed {seed:#x} step {step}: {op:?} answered {got:x?}");
                    run.check("iova_ranges", &op, Answer::Ok, Answer::Ok);
                }
            }
        } else {
            match rng.below(6) {
                0 => {
                    let index = rng.below(u64::from(info.num_regions) + 3) as u32;
                    let got = dev.region_info(index);
                    let want = region_answers
                        .get(index as usize)
                        .copied()
                        .unwrap_or(Answer::Err(libc::EINVAL));
                    if let (Ok(r), Some(Ok(before))) = (&got, regions.get(index as usize)) {
                        assert_eq!(
                            r, before,
                            "seed {seed:#x} step {step}: region {index} changed"
                        );
                    }
                    run.check(
                        "region_info",
                        &("region_info", index),
                        want,
                        vfio_answer(&got),
                    );
                }
                1 => {
                    let len = 1 + rng.below(8) as usize;
                    let off = rng.below(config_before.len() as u64 - len as u64);
                    let mut buf = vec![0u8; len];
                    let got = dev.read_config(off, &mut buf);
                    if got.is_ok() && off < 4 {
                        let end = (off as usize + len).min(4);
                        assert_eq!(
                            &buf[..end - off as usize],
                            &config_before[off as usize..end],
                            "seed {seed:#x} step {step}: IDs changed"
                        );
                    }
                    run.check(
                        "config_read",
                        &("config", off, len),
                        Answer::Ok,
                        vfio_answer(&got),
                    );
                }
                2 | 3 => {
                    let v = rng.below(u64::from(msix.count) + 3) as u32;
                    let assign = rng.chance(60);
                    let fd = efds.get(v as usize).filter(|_| assign);
                    let got = dev.set_vector_eventfd(IrqIndex::Msix, v, fd);
                    let want = if v < msix.count {
                        Answer::Ok
                    } else {
                        Answer::Err(libc::EINVAL)
                    };
                    run.check("set_irqs", &("vector", v, assign), want, vfio_answer(&got));
                }
                4 => {
                    let got = dev.disable_irqs(IrqIndex::Msix);
                    run.check("set_irqs", &"disable", Answer::Ok, vfio_answer(&got));
                    // Enable them all again, so that later single-vector calls never depend
                    // on dynamic MSI-X allocation.
                    let again = dev.set_vector_eventfds(IrqIndex::Msix, 0, &all);
                    run.check("set_irqs", &"enable all", Answer::Ok, vfio_answer(&again));
                }
                _ => {
                    // IOMMU_OPTION: huge pages of either IOAS (default 1), of an object that
                    // does not exist (ENOENT), an unknown option (EOPNOTSUPP), and the
                    // proposed SW_MSI window probe (absent upstream).
                    let (what, want, got) = match rng.below(4) {
                        0 => {
                            let io = if rng.chance(50) { &a } else { &b };
                            let got = iommufd.get_option(IommuOption::HugePages, io.id());
                            assert!(got.as_ref().is_err() || got.as_ref().ok() == Some(&1));
                            ("huge pages", Answer::Ok, got.map(|_| ()))
                        }
                        1 => (
                            "huge pages of a missing object",
                            Answer::Err(libc::ENOENT),
                            iommufd
                                .get_option(IommuOption::HugePages, 0xdead)
                                .map(|_| ()),
                        ),
                        2 => (
                            "unknown option",
                            Answer::Err(libc::EOPNOTSUPP),
                            iommufd
                                .get_option(IommuOption::Other(0x77), a.id())
                                .map(|_| ()),
                        ),
                        _ => {
                            let patched = std::env::var("TESTHOST_KERNEL_VARIANT")
                                .is_ok_and(|v| v == "patched");
                            let probe = iommufd.probe_sw_msi_window(dev_id);
                            let ok = match &probe {
                                Ok(Support::Absent { .. }) => !patched,
                                Ok(Support::Available(_)) => patched,
                                Err(_) => false,
                            };
                            assert!(ok, "seed {seed:#x} step {step}: SW_MSI probe {probe:?}");
                            ("sw_msi probe", Answer::Ok, Ok(()))
                        }
                    };
                    let got = match got {
                        Ok(()) => Answer::Ok,
                        Err(e) => Answer::Err(e.errno().map_or(-1, |e| e.raw())),
                    };
                    run.check("option", &what, want, got);
                }
            }
        }
    }

    // Unmap-all returns exactly what the model holds.
    let mapped = (model_a.mapped_bytes(), model_b.mapped_bytes());
    let got_a = a.unmap_all().expect("unmap all of A");
    let got_b = b.unmap_all().expect("unmap all of B");
    assert_eq!(
        (got_a, got_b),
        (model_a.unmap_all(), model_b.unmap_all()),
        "seed {seed:#x}: unmap all"
    );
    dev.disable_irqs(IrqIndex::Msix).expect("disable MSI-X");
    let elapsed = started.elapsed();
    for (what, t) in &run.tallies {
        println!(
            "kernel-fuzz: {what:<12} {:>5} ok {:>5} failed as predicted",
            t.ok, t.err
        );
    }
    println!(
        "kernel-fuzz: seed {seed:#x}: {ops} operations matched the model in {:.2} s; unmap-all \
         returned {:#x} + {:#x} bytes as modelled",
        elapsed.as_secs_f64(),
        mapped.0,
        mapped.1
    );
    run.tallies
}
