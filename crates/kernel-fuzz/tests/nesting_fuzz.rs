// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A seeded random sequence of iommufd nesting calls against the real kernel: vIOMMUs on a
//! nest parent, the device's vDEVICE, vEVENTQs, nested HWPTs (abort, bypass, stage 1,
//! forbidden vSTE bits), attach/replace/detach of the device among them, destroys in every
//! order, and invalidation arrays through the vIOMMUs; every answer (and, for invalidations,
//! how many commands the kernel handled before failing) is checked against the model of
//! `kernel_fuzz::nesting`. At the end everything is torn down and fresh IOASes must get
//! every object ID but the device's: the kernel freed all the run made.
//!
//! Runs only in the test host's nesting boot (`TESTHOST_NESTING=1` and the test-only
//! `arm_smmu_v3.viommu_assume_coherent=1`; `tests/run-all.sh` adds `-p kernel-fuzz --test
//! nesting_fuzz` to that boot); skips elsewhere. `KERNEL_FUZZ_NESTING_SEEDS` (default 3)
//! sequences of `KERNEL_FUZZ_NESTING_OPS` (default 400) operations, from seed
//! `KERNEL_FUZZ_SEED` (default `kernel_fuzz::DEFAULT_SEED`) upwards.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use iommufd_ioas::smmuv3::{HWPT_DATA_TYPE, SmmuV3Command, VSte};
use iommufd_ioas::{
    Access, Error as IoasError, Hwpt, Iommufd, Vdevice, Veventq, Viommu, ViommuType,
};
use kernel_fuzz::nesting::{Attach, Inval, NestModel, NestOp, REFUSED, SteKind, generate};
use kernel_fuzz::{Answer, DEFAULT_SEED, Rng};
use vfio_cdev::{PciAddress, VfioDevice};
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// Straight to the stdout descriptor: libtest captures `println!` of passing tests, and the
/// test host shows this output with the suite's.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

fn in_guest() -> bool {
    std::env::var_os("TESTHOST_IN_GUEST").is_some()
}

fn nesting_boot() -> bool {
    let asked = std::env::var("TESTHOST_NESTING").is_ok_and(|v| v == "1");
    if !in_guest() || !asked {
        // Through `out!`: libtest would swallow an `eprintln!` of a passing test, and the
        // reason must show in every tier's output.
        out!(
            "kernel-fuzz nesting: skipped: runs in the test host's nesting boot \
             (TESTHOST_NESTING=1 arm_smmu_v3.viommu_assume_coherent=1)"
        );
        return false;
    }
    let switch = std::fs::read_to_string("/proc/cmdline").is_ok_and(|c| {
        c.split_whitespace()
            .any(|a| a == "arm_smmu_v3.viommu_assume_coherent=1")
    });
    assert!(switch, "TESTHOST_NESTING=1 without the vIOMMU switch");
    true
}

fn read_hex(path: &std::path::Path) -> Option<u32> {
    let s = std::fs::read_to_string(path).ok()?;
    u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
}

fn find_nic() -> PciAddress {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/sys/bus/pci/devices")
        .expect("sysfs")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            read_hex(&p.join("vendor")) == Some(0x8086)
                && read_hex(&p.join("device")) == Some(0x10c9)
                && p.join("vfio-dev").is_dir()
        })
        .collect();
    found.sort();
    found
        .first()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
        .expect("an igb bound to vfio-pci")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map_or(default, |s| {
        let s = s.trim();
        match s.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16),
            None => s.parse(),
        }
        .unwrap_or_else(|e| panic!("{name}={s:?}: {e}"))
    })
}

/// The crate's error as an answer: its errno, or [`REFUSED`] when it refused before the
/// kernel.
fn answer_of(e: &IoasError) -> Answer {
    Answer::Err(e.errno().map_or(REFUSED, |e| e.raw()))
}

fn vfio_answer(e: &vfio_cdev::Error) -> Answer {
    Answer::Err(e.errno().map_or(REFUSED, |e| e.raw()))
}

/// Bits of a stage-1 vSTE a guest may not set (IHI 0070 5.2, as the kernel's
/// `STRTAB_STE_{0,1}_NESTING_ALLOWED` leaves them out): word 0 bits 58:52, word 1 bits
/// 26:8 and 63:30.
fn forbidden_bit(word: usize, k: u8) -> u32 {
    let bits: Vec<u32> = if word == 0 {
        (52..=58).collect()
    } else {
        (8..=26).chain(30..=63).collect()
    };
    bits[usize::from(k) % bits.len()]
}

/// The vSTE of `kind` as 16 raw bytes.
fn vste_bytes(kind: SteKind) -> [u8; 16] {
    let good = VSte::stage1(0x4000_0000).expect("a stage-1 vSTE");
    let words = match kind {
        SteKind::Abort => VSte::abort().words(),
        SteKind::Bypass => VSte::bypass().words(),
        SteKind::Stage1 => good.words(),
        SteKind::Stage1Anywhere(p) => VSte::stage1(p).expect("a valid CD pointer").words(),
        SteKind::Forbidden(w, k) => {
            let mut words = good.words();
            words[w] |= 1 << forbidden_bit(w, k);
            assert!(
                VSte::from_words(words).is_err(),
                "the crate takes {words:x?}"
            );
            words
        }
    };
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&words[0].to_le_bytes());
    b[8..].copy_from_slice(&words[1].to_le_bytes());
    b
}

fn command(c: Inval) -> SmmuV3Command {
    match c {
        Inval::NhAll => SmmuV3Command::TlbiNhAll,
        Inval::NhAsid(asid) => SmmuV3Command::TlbiNhAsid { asid },
        Inval::NhVa(asid, addr, leaf) => SmmuV3Command::TlbiNhVa { asid, addr, leaf },
        Inval::NhVaa(addr, leaf) => SmmuV3Command::TlbiNhVaa { addr, leaf },
        Inval::NsnhAll => SmmuV3Command::TlbiNsnhAll,
        Inval::CfgiCd(sid, leaf) => SmmuV3Command::CfgiCd { sid, ssid: 0, leaf },
        Inval::CfgiCdAll(sid) => SmmuV3Command::CfgiCdAll { sid },
        Inval::AtcInv(sid) => SmmuV3Command::AtcInv {
            sid,
            ssid: 0,
            ssv: false,
            global: false,
            size: 0,
            addr: 0,
        },
        Inval::Unforwarded(op) => SmmuV3Command::Raw([u64::from(op), 0]),
    }
}

/// What the run holds, by model slot.
#[derive(Default)]
struct Objects {
    viommus: BTreeMap<u32, Arc<Viommu>>,
    vdevice: Option<Vdevice>,
    veventqs: BTreeMap<u32, Veventq>,
    nested: BTreeMap<u32, Arc<Hwpt>>,
}

/// Destroys an object the run holds: through its owner when nothing else in this process
/// holds it (the kernel must agree), else `IOMMU_DESTROY` of its ID (the kernel must refuse
/// with `EBUSY`, as the model says; the object stays either way).
fn destroy_arc<T: std::fmt::Debug>(
    map: &mut BTreeMap<u32, Arc<T>>,
    slot: u32,
    iommufd: &Iommufd,
    id: impl Fn(&T) -> u32,
    destroy: impl Fn(T) -> Result<(), iommufd_ioas::DestroyError<T>>,
    want: Answer,
) -> Answer {
    let Some(arc) = map.remove(&slot) else {
        panic!("slot {slot} is not held");
    };
    match Arc::try_unwrap(arc) {
        Ok(obj) => match destroy(obj) {
            Ok(()) => Answer::Ok,
            Err(e) => {
                let a = answer_of(&e.error);
                map.insert(slot, Arc::new(e.object));
                a
            }
        },
        Err(arc) => {
            assert_ne!(
                want,
                Answer::Ok,
                "the model says object {} is free, but this process still holds it",
                id(&arc)
            );
            let a = match iommufd.destroy_raw(id(&arc)) {
                Ok(()) => panic!(
                    "IOMMU_DESTROY of {} succeeded although it is in use here",
                    id(&arc)
                ),
                Err(e) => answer_of(&e),
            };
            map.insert(slot, arc);
            a
        }
    }
}

#[derive(Default)]
struct Tally(BTreeMap<String, (u64, u64)>);

impl Tally {
    fn add(&mut self, op: &NestOp, a: Answer) {
        let name = format!("{op:?}")
            .split(['(', ' '])
            .next()
            .unwrap_or("")
            .to_owned();
        let e = self.0.entry(name).or_default();
        if a == Answer::Ok {
            e.0 += 1;
        } else {
            e.1 += 1;
        }
    }
}

fn run_seed(addr: PciAddress, seed: u64, ops: u64, tally: &mut Tally) {
    let started = Instant::now();
    let iommufd = Iommufd::open().expect("open /dev/iommu");
    let mut dev = VfioDevice::open_pci(addr).expect("open the NIC");
    let dev_id = dev.bind(&iommufd).expect("bind");
    let ioas = Arc::new(iommufd.alloc_ioas().expect("IOAS"));
    let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x4000_0000), 4 << 20)]).unwrap();
    ioas.map_guest_memory(&ram, Access::READ_WRITE)
        .expect("map guest RAM");
    dev.attach_ioas(&ioas).expect("attach to the IOAS");
    let parent = Arc::new(Hwpt::alloc_nest_parent(&ioas, dev_id).expect("nest parent"));
    let mut model = NestModel::new();
    let mut objs = Objects::default();
    let mut rng = Rng::new(seed);
    let mut highest = dev_id.max(ioas.id()).max(parent.id());
    for step in 0..ops {
        let op = generate(&mut rng, &model);
        let want = model.predict(&op);
        let slot = model.slot();
        let got = match &op {
            NestOp::AllocViommu => match Viommu::alloc(&parent, dev_id, ViommuType::ArmSmmuV3) {
                Ok(v) => {
                    highest = highest.max(v.id());
                    objs.viommus.insert(slot, Arc::new(v));
                    Answer::Ok
                }
                Err(e) => answer_of(&e),
            },
            NestOp::DestroyViommu(v) => destroy_arc(
                &mut objs.viommus,
                *v,
                &iommufd,
                Viommu::id,
                Viommu::destroy,
                want,
            ),
            NestOp::AllocVdevice(v, vsid) => {
                match Vdevice::alloc(&objs.viommus[v], dev_id, *vsid) {
                    Ok(d) => {
                        highest = highest.max(d.id());
                        // The model never predicts a second one; if the kernel made it, the
                        // check below fails first.
                        if objs.vdevice.is_none() {
                            objs.vdevice = Some(d);
                        }
                        Answer::Ok
                    }
                    Err(e) => answer_of(&e),
                }
            }
            NestOp::DestroyVdevice => {
                let d = objs.vdevice.take().expect("a vDEVICE");
                match d.destroy() {
                    Ok(()) => Answer::Ok,
                    Err(e) => {
                        let a = answer_of(&e.error);
                        objs.vdevice = Some(e.object);
                        a
                    }
                }
            }
            NestOp::AllocVeventq(v, depth) => match Veventq::alloc(&objs.viommus[v], *depth) {
                Ok(q) => {
                    highest = highest.max(q.id());
                    objs.veventqs.insert(*v, q);
                    Answer::Ok
                }
                Err(e) => answer_of(&e),
            },
            NestOp::DestroyVeventq(v) => {
                let q = objs.veventqs.remove(v).expect("a vEVENTQ");
                match q.destroy() {
                    Ok(()) => Answer::Ok,
                    Err(e) => answer_of(&e),
                }
            }
            NestOp::AllocNested(v, kind) => {
                match Hwpt::alloc_nested(
                    &objs.viommus[v],
                    dev_id,
                    HWPT_DATA_TYPE,
                    &vste_bytes(*kind),
                ) {
                    Ok(h) => {
                        highest = highest.max(h.id());
                        objs.nested.insert(slot, Arc::new(h));
                        Answer::Ok
                    }
                    Err(e) => answer_of(&e),
                }
            }
            NestOp::DestroyNested(h) => destroy_arc(
                &mut objs.nested,
                *h,
                &iommufd,
                Hwpt::id,
                Hwpt::destroy,
                want,
            ),
            NestOp::DestroyParent => match iommufd.destroy_raw(parent.id()) {
                Ok(()) => panic!("the nest parent was destroyed while in use"),
                Err(e) => answer_of(&e),
            },
            NestOp::DestroyUnknown(id) => match iommufd.destroy_raw(*id) {
                Ok(()) => panic!("IOMMU_DESTROY of unknown ID {id} succeeded"),
                Err(e) => answer_of(&e),
            },
            NestOp::Attach(a) => {
                let r = match a {
                    Attach::None => dev.detach(),
                    Attach::Ioas => dev.attach_ioas(&ioas).map(drop),
                    Attach::Parent => dev.attach_hwpt(&parent, &iommufd).map(drop),
                    Attach::Nested(h) => dev.attach_hwpt(&objs.nested[h], &iommufd).map(drop),
                };
                match r {
                    Ok(()) => Answer::Ok,
                    Err(e) => vfio_answer(&e),
                }
            }
            NestOp::Invalidate(v, cmds) => {
                let list: Vec<SmmuV3Command> = cmds.iter().map(|c| command(*c)).collect();
                let got = objs.viommus[v].invalidate(&list);
                let predicted = model.predict_invalidate(*v, cmds);
                match (&got, predicted) {
                    (Err(IoasError::HwptInvalidate { consumed, .. }), Err((_, at))) => {
                        assert_eq!(
                            *consumed, at,
                            "seed {seed:#x} step {step}: {op:?}: the kernel stopped at {consumed}"
                        );
                    }
                    (Err(IoasError::HwptInvalidate { consumed, .. }), Ok(())) => {
                        panic!("seed {seed:#x} step {step}: {op:?}: failed at {consumed}: {got:?}")
                    }
                    _ => {}
                }
                match got {
                    Ok(()) => Answer::Ok,
                    Err(e) => answer_of(&e),
                }
            }
        };
        assert_eq!(
            got, want,
            "seed {seed:#x} step {step}: {op:?}: the kernel answered {got:?}, the model predicted {want:?}\nmodel: {model:?}"
        );
        tally.add(&op, got);
        model.apply(&op, got, slot);
    }

    // Teardown in the kernel's order; every destroy must succeed.
    if dev.attached_to().is_some() {
        dev.detach().expect("detach");
    }
    if let Some(d) = objs.vdevice.take() {
        d.destroy().expect("vDEVICE destroy");
    }
    for (_, q) in std::mem::take(&mut objs.veventqs) {
        q.destroy().expect("vEVENTQ destroy");
    }
    for (_, h) in std::mem::take(&mut objs.nested) {
        Arc::try_unwrap(h)
            .expect("sole owner")
            .destroy()
            .expect("nested HWPT destroy");
    }
    for (_, v) in std::mem::take(&mut objs.viommus) {
        Arc::try_unwrap(v)
            .expect("sole owner")
            .destroy()
            .expect("vIOMMU destroy");
    }
    Arc::try_unwrap(parent)
        .expect("sole owner")
        .destroy()
        .expect("nest parent destroy");
    Arc::try_unwrap(ioas)
        .expect("sole owner")
        .destroy()
        .expect("IOAS destroy");
    // Everything but the bound device is gone: fresh IOASes take every other ID, lowest
    // first, past the highest the run used.
    let n = highest as usize + 8;
    let fresh: Vec<_> = (0..n)
        .map(|_| iommufd.alloc_ioas().expect("fresh IOAS"))
        .collect();
    let ids: Vec<u32> = fresh.iter().map(|i| i.id()).collect();
    let want: Vec<u32> = (1..).filter(|i| *i != dev_id).take(n).collect();
    assert_eq!(
        ids, want,
        "seed {seed:#x}: object IDs not freed (device {dev_id})"
    );
    drop(fresh);
    drop(dev);
    out!(
        "kernel-fuzz nesting: seed {seed:#x}: {ops} operations matched the model in {:.2} s; \
         highest object ID {highest}; every ID free again",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn seeded_nesting_sequences_match_the_model() {
    if !nesting_boot() {
        return;
    }
    let addr = find_nic();
    let seeds = env_u64("KERNEL_FUZZ_NESTING_SEEDS", 3);
    let ops = env_u64("KERNEL_FUZZ_NESTING_OPS", 400);
    let first = env_u64("KERNEL_FUZZ_SEED", DEFAULT_SEED);
    let mut tally = Tally::default();
    for k in 0..seeds {
        run_seed(addr, first.wrapping_add(k), ops, &mut tally);
    }
    for (what, (ok, err)) in &tally.0 {
        out!("kernel-fuzz nesting: {what:<15} {ok:>5} ok {err:>5} failed as predicted");
    }
    // Not vacuous: the calls that must both succeed and fail did.
    for what in [
        "AllocVdevice",
        "DestroyViommu",
        "Attach",
        "Invalidate",
        "AllocNested",
    ] {
        let (ok, err) = tally.0.get(what).copied().unwrap_or_default();
        assert!(ok > 0 && err > 0, "{what}: {ok} ok, {err} failed");
    }
}
