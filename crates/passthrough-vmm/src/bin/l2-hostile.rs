// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! `l2-hostile`: a hostile guest program for the reliability tests (issue 18). It runs as
//! root inside L2 (the guest `passthrough-vmm` boots, packed into its initramfs by
//! `examples/testhost_e2e.rs`) against the passed-through igb (8086:10c9), through sysfs
//! only: the driver's `unbind`, the function's `config` file, and `resourceN` BAR mmaps.
//!
//! ```text
//! l2-hostile isolate --targets ADDR[,ADDR...] [--pace-ms N] [--target-pace-ms N] [--kinds K[,K...]]
//! l2-hostile storm --seconds N [--cpu C] [--seed S]
//! ```
//!
//! `isolate` takes the igb from its driver, maps BAR0 and, for every target address and
//! every kind of DMA, points the device at the target: `tx-ring` (the TX descriptor ring
//! there: the device fetches a descriptor from it), `tx-buffer` (a TX packet buffer there,
//! with MAC loopback on and good RX buffers armed: a read that must not reach the wire or
//! come back into guest RAM), `rx-buffer` (a good packet looped back into an RX buffer there:
//! a write) and `tx-head-wb` (TX head write-back there: a 4-byte write). Rings and buffers
//! that are not the target live in pages of this process (their guest-physical addresses
//! from `/proc/self/pagemap`; without a guest IOMMU the device uses guest-physical
//! addresses). Between attacks it waits `--pace-ms` (default 100 ms), between targets
//! `--target-pace-ms` (default 5200 ms): the host kernel's SMMU event log prints at most 10
//! events per 5 s, and a descriptor fetch alone is four 4-byte accesses, so each target
//! gets a fresh window in which its first, smaller attacks all show. The default kinds are
//! in that order: `tx-head-wb,tx-ring,tx-buffer,rx-buffer` (the head write-back needs a
//! clean transmit path: after `tx-ring` the model holds a half-built packet from the zero
//! descriptor it read, which the next end-of-packet descriptor clears). It prints one JSON object: each
//! attack, what the device did (TX head, descriptor done bits, RX length), whether every
//! page of this process that no attack pointed at kept its pattern, and errors.
//! It leaves the device reset, with Bus Master off, for the driver to bind again.
//!
//! `storm` runs with the igb driver bound: pinned to CPU `--cpu` (default 1), for
//! `--seconds`, it rewrites the MSI-X table entries of the vectors the driver does not
//! use (address, data with the marker 0x5a5a in the upper half, mask), rewrites the
//! driver's own entries with their current contents, pulses Function Mask in config space,
//! writes and reads the PBA, and reads the table. At the end every unused vector is left
//! unmasked with the driver's doorbell address and data `0x5a5a0000 | vector`, so that the
//! VMM enables them on the device, and Function Mask clear. It prints one JSON object with
//! the counts and the final table.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The storm's marker in the upper half of every data value it writes.
const MARKER: u32 = 0x5a5a_0000;

// 82576 registers (Intel 82576EB datasheet, section 8), queue 0.
const CTRL: usize = 0x0000;
const CTRL_SLU: u32 = 1 << 6;
const CTRL_RST: u32 = 1 << 26;
const STATUS: usize = 0x0008;
const STATUS_LU: u32 = 1 << 1;
const MDIC: usize = 0x0020;
const MDIC_READY: u32 = 1 << 28;
const IMC: usize = 0x150c;
const EIMC: usize = 0x1528;
const RCTL: usize = 0x0100;
const RCTL_EN: u32 = 1 << 1;
const RCTL_LBM_MAC: u32 = 1 << 6;
/// Receive Address Low/High `n` (datasheet 8.10.13-14) and the Address Valid bit.
const RAL: usize = 0x5400;
const RAH: usize = 0x5404;
const RAH_AV: u32 = 1 << 31;
/// The Multicast Table Array, 128 dwords (datasheet 8.10.15).
const MTA: usize = 0x5200;
/// The attacks' own unicast address (locally administered): the only one the RX filter
/// accepts while they run, so that L1's traffic to the guest (its pings, MLD reports)
/// cannot land in the RX buffer that tells whether a DMA came back.
const ATTACK_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x88, 0xb5];
const TCTL: usize = 0x0400;
const TCTL_EN: u32 = 1 << 1;
const RDBAL: usize = 0xc000;
const RDBAH: usize = 0xc004;
const RDLEN: usize = 0xc008;
const SRRCTL: usize = 0xc00c;
const RDH: usize = 0xc010;
const RDT: usize = 0xc018;
const RXDCTL: usize = 0xc028;
const TDBAL: usize = 0xe000;
const TDBAH: usize = 0xe004;
const TDLEN: usize = 0xe008;
const TDH: usize = 0xe010;
const TDT: usize = 0xe018;
const TXDCTL: usize = 0xe028;
const TDWBAL: usize = 0xe038;
const TDWBAH: usize = 0xe03c;
const QUEUE_ENABLE: u32 = 1 << 25;

const PAGE: usize = 4096;

type Result<T> = std::result::Result<T, String>;

fn io<T>(what: impl std::fmt::Display, r: std::io::Result<T>) -> Result<T> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// The passed-through igb in sysfs.
fn find_igb() -> Result<PathBuf> {
    let dir = io(
        "reading /sys/bus/pci/devices",
        std::fs::read_dir("/sys/bus/pci/devices"),
    )?;
    for e in dir.flatten() {
        let p = e.path();
        let id = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
        if id("vendor").trim() == "0x8086" && id("device").trim() == "0x10c9" {
            return Ok(p);
        }
    }
    Err("no 8086:10c9 function on the PCI bus".to_owned())
}

fn driver_of(dev: &Path) -> Option<String> {
    std::fs::read_link(dev.join("driver"))
        .ok()
        .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()))
}

/// The function's configuration space through sysfs.
struct Config(File);

impl Config {
    fn open(dev: &Path) -> Result<Self> {
        let p = dev.join("config");
        let f = io(
            format!("opening {}", p.display()),
            OpenOptions::new().read(true).write(true).open(&p),
        )?;
        Ok(Config(f))
    }
    fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        io(
            format!("config read at {off:#x}"),
            self.0.read_exact_at(buf, off),
        )
    }
    fn u8(&self, off: u64) -> Result<u8> {
        let mut b = [0u8; 1];
        self.read(off, &mut b)?;
        Ok(b[0])
    }
    fn u16(&self, off: u64) -> Result<u16> {
        let mut b = [0u8; 2];
        self.read(off, &mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    fn u32(&self, off: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read(off, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn write_u16(&self, off: u64, v: u16) -> Result<()> {
        io(
            format!("config write at {off:#x}"),
            self.0.write_all_at(&v.to_le_bytes(), off),
        )
    }
    /// The MSI-X capability's offset (PCI 3.0 6.7 capability list, ID 0x11).
    fn msix_cap(&self) -> Result<u64> {
        let mut at = u64::from(self.u8(0x34)? & 0xfc);
        for _ in 0..48 {
            if at == 0 {
                break;
            }
            if self.u8(at)? == 0x11 {
                return Ok(at);
            }
            at = u64::from(self.u8(at + 1)? & 0xfc);
        }
        Err("no MSI-X capability".to_owned())
    }
}

/// A BAR mapped through sysfs `resourceN`.
struct Bar {
    ptr: *mut u8,
    len: usize,
}

impl Bar {
    fn map(dev: &Path, index: u32) -> Result<Self> {
        let p = dev.join(format!("resource{index}"));
        let f = io(
            format!("opening {}", p.display()),
            OpenOptions::new().read(true).write(true).open(&p),
        )?;
        let len = io("resource size", f.metadata())?.len() as usize;
        if len == 0 {
            return Err(format!("{} is empty", p.display()));
        }
        use std::os::fd::AsRawFd;
        // SAFETY: a shared mapping of the BAR's resource file, at an address the kernel
        // picks; it is only accessed with volatile loads and stores inside `len`.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!(
                "mmap of {}: {}",
                p.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(Bar {
            ptr: ptr.cast(),
            len,
        })
    }
    fn r(&self, off: usize) -> u32 {
        assert!(
            off.is_multiple_of(4) && off + 4 <= self.len,
            "register {off:#x}"
        );
        // SAFETY: aligned and inside the live mapping (checked above); device memory is
        // accessed by volatile loads only.
        unsafe { (self.ptr.wrapping_add(off) as *const u32).read_volatile() }
    }
    fn w(&self, off: usize, v: u32) {
        assert!(
            off.is_multiple_of(4) && off + 4 <= self.len,
            "register {off:#x}"
        );
        // SAFETY: as for `r`.
        unsafe { (self.ptr.wrapping_add(off) as *mut u32).write_volatile(v) }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // SAFETY: the mapping this value owns.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Pages of this process the device may DMA to, with their guest-physical addresses.
struct DmaPages {
    ptr: *mut u8,
    pages: usize,
    gpa: Vec<u64>,
}

/// The pattern of byte `i` of page `p` while nothing wrote it.
fn pattern(p: usize, i: usize) -> u8 {
    (0xa5 ^ (p as u8).wrapping_mul(31) ^ (i as u8).wrapping_mul(7)) | 1
}

impl DmaPages {
    fn new(pages: usize) -> Result<Self> {
        let len = pages * PAGE;
        // SAFETY: a fresh anonymous mapping, populated and locked so that its pages stay
        // where pagemap says they are.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE | libc::MAP_LOCKED,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!(
                "mmap DMA pages: {}",
                std::io::Error::last_os_error()
            ));
        }
        // SAFETY: the mapping just made.
        if unsafe { libc::mlock(ptr, len) } != 0 {
            return Err(format!("mlock: {}", std::io::Error::last_os_error()));
        }
        let mut pm = io("opening pagemap", File::open("/proc/self/pagemap"))?;
        let mut gpa = Vec::with_capacity(pages);
        for p in 0..pages {
            let va = ptr as u64 + (p * PAGE) as u64;
            let mut e = [0u8; 8];
            io(
                "pagemap seek",
                pm.seek(SeekFrom::Start(va / PAGE as u64 * 8)),
            )?;
            io("pagemap read", pm.read_exact(&mut e))?;
            let e = u64::from_le_bytes(e);
            let pfn = e & ((1 << 55) - 1);
            if e >> 63 == 0 || pfn == 0 {
                return Err(format!(
                    "page {p} not present or PFN hidden (pagemap {e:#x})"
                ));
            }
            gpa.push(pfn * PAGE as u64);
        }
        let d = DmaPages {
            ptr: ptr.cast(),
            pages,
            gpa,
        };
        for p in 0..pages {
            d.fill(p);
        }
        Ok(d)
    }
    fn fill(&self, p: usize) {
        for i in 0..PAGE {
            // SAFETY: inside the mapping (p < pages, i < PAGE).
            unsafe {
                self.ptr
                    .wrapping_add(p * PAGE + i)
                    .write_volatile(pattern(p, i))
            };
        }
    }
    fn intact(&self, p: usize) -> bool {
        (0..PAGE).all(|i| {
            // SAFETY: as in `fill`.
            unsafe { self.ptr.wrapping_add(p * PAGE + i).read_volatile() == pattern(p, i) }
        })
    }
    fn w64(&self, p: usize, off: usize, v: u64) {
        assert!(p < self.pages && off.is_multiple_of(8) && off + 8 <= PAGE);
        // SAFETY: aligned, inside the mapping.
        unsafe { (self.ptr.wrapping_add(p * PAGE + off) as *mut u64).write_volatile(v) }
    }
    fn r32(&self, p: usize, off: usize) -> u32 {
        assert!(p < self.pages && off.is_multiple_of(4) && off + 4 <= PAGE);
        // SAFETY: aligned, inside the mapping.
        unsafe { (self.ptr.wrapping_add(p * PAGE + off) as *const u32).read_volatile() }
    }
    fn zero(&self, p: usize) {
        for off in (0..PAGE).step_by(8) {
            self.w64(p, off, 0);
        }
    }
}

// The DMA pages: rings, buffers, and a witness page no attack points at.
const P_TX_RING: usize = 0;
const P_RX_RING: usize = 1;
const P_TX_BUF: usize = 2;
const P_RX_BUF: usize = 3;
const P_WITNESS: usize = 4;
const DMA_PAGES: usize = 5;

/// A 60-byte frame to [`ATTACK_MAC`] of ethertype 0x88b5 (local experimental).
fn frame() -> [u8; 60] {
    let mut f = [0u8; 60];
    f[..6].copy_from_slice(&ATTACK_MAC);
    f[6..12].copy_from_slice(&[0x52, 0x54, 0x00, 0x7e, 0x57, 0x99]);
    f[12..14].copy_from_slice(&[0x88, 0xb5]);
    for (i, b) in f[14..].iter_mut().enumerate() {
        *b = 0x40 + i as u8;
    }
    f
}

/// The second quadword of an advanced TX data descriptor (datasheet 7.2.2.3): length,
/// DTYP data, DCMD EOP | IFCS | RS | DEXT, and PAYLEN in the upper half.
fn tx_desc(len: u64) -> u64 {
    let cmd = (1u64 << 24) | (1 << 25) | (1 << 27) | (1 << 29) | (3 << 20) | len;
    cmd | ((len << 14) << 32)
}

struct Igb {
    bar: Bar,
}

impl Igb {
    fn reset(&self) -> Result<()> {
        self.bar.w(IMC, u32::MAX);
        self.bar.w(EIMC, u32::MAX);
        self.bar.w(CTRL, self.bar.r(CTRL) | CTRL_RST);
        let t = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        while self.bar.r(CTRL) & CTRL_RST != 0 {
            if t.elapsed() > Duration::from_secs(2) {
                return Err("CTRL.RST did not clear".to_owned());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.bar.w(IMC, u32::MAX);
        self.bar.w(EIMC, u32::MAX);
        Ok(())
    }

    /// Link up as the igb driver brings it: Set Link Up, then the PHY's BMCR (PHY address
    /// 1, register 0, through MDIC) with auto-negotiation enabled and restarted; the model
    /// reports the link once negotiation is done. Needed for the MAC-loopback attacks.
    fn link_up(&self) -> bool {
        self.bar.w(CTRL, self.bar.r(CTRL) | CTRL_SLU);
        // BMCR: AN enable | restart AN | full duplex | 1000 Mb/s; MDIC: write, PHY 1, reg 0.
        self.bar.w(MDIC, 0x1340 | 0x0200 | (1 << 21) | (1 << 26));
        let t = Instant::now();
        while self.bar.r(MDIC) & MDIC_READY == 0 && t.elapsed() < Duration::from_millis(100) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if self.bar.r(STATUS) & STATUS_LU != 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn stop(&self) {
        self.bar.w(TCTL, 0);
        self.bar.w(RCTL, 0);
        self.bar.w(TXDCTL, 0);
        self.bar.w(RXDCTL, 0);
        self.bar.w(TDWBAL, 0);
        self.bar.w(TDWBAH, 0);
    }

    /// TX ring at `ring`, 16 descriptors, head and tail 0, enabled; `wb` is the head
    /// write-back address (0: none).
    fn tx_ring(&self, ring: u64, wb: u64) {
        self.bar.w(TDBAL, ring as u32);
        self.bar.w(TDBAH, (ring >> 32) as u32);
        self.bar.w(TDLEN, 256);
        self.bar.w(TDH, 0);
        self.bar.w(TDT, 0);
        self.bar.w(TDWBAL, wb as u32 | u32::from(wb != 0));
        self.bar.w(TDWBAH, (wb >> 32) as u32);
        self.bar.w(TXDCTL, QUEUE_ENABLE);
        self.bar.w(TCTL, TCTL_EN);
    }

    /// RX ring at `ring` (16 descriptors), `armed` descriptors ready, MAC loopback on.
    fn rx_ring(&self, ring: u64, armed: u32) {
        self.bar.w(RDBAL, ring as u32);
        self.bar.w(RDBAH, (ring >> 32) as u32);
        self.bar.w(RDLEN, 256);
        // Advanced one-buffer descriptors, 2 KiB buffers.
        self.bar.w(SRRCTL, 2 | (1 << 25));
        self.bar.w(RDH, 0);
        self.bar.w(RXDCTL, QUEUE_ENABLE);
        self.bar.w(RDT, armed);
        // No promiscuous, multicast or broadcast acceptance: only ATTACK_MAC (`filter`).
        self.bar.w(RCTL, RCTL_EN | RCTL_LBM_MAC);
    }

    /// The RX address filter for the attacks: entry 1 holds [`ATTACK_MAC`], entry 0 (the
    /// NIC's own address) is switched off and the multicast table cleared. Returns entry
    /// 0's RAH, for [`unfilter`](Self::unfilter).
    fn filter(&self) -> u32 {
        let rah0 = self.bar.r(RAH);
        let m = ATTACK_MAC;
        self.bar
            .w(RAL + 8, u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
        self.bar.w(
            RAH + 8,
            u32::from(u16::from_le_bytes([m[4], m[5]])) | RAH_AV,
        );
        self.bar.w(RAH, rah0 & !RAH_AV);
        for i in 0..128 {
            self.bar.w(MTA + 4 * i, 0);
        }
        rah0
    }

    /// Entry 0 back as it was, entry 1 off (the driver rewrites the rest when it binds).
    fn unfilter(&self, rah0: u32) {
        self.bar.w(RAH + 8, 0);
        self.bar.w(RAL + 8, 0);
        self.bar.w(RAH, rah0);
    }
}

/// One attack: point the device at `target` in the way `kind` says and trigger it.
fn attack(igb: &Igb, d: &DmaPages, target: u64, kind: &str) -> Result<Value> {
    igb.stop();
    for p in [P_TX_RING, P_RX_RING] {
        d.zero(p);
    }
    d.fill(P_TX_BUF);
    d.fill(P_RX_BUF);
    let f = frame();
    for (i, b) in f.iter().enumerate() {
        // SAFETY: inside the TX buffer page.
        unsafe { d.ptr.wrapping_add(P_TX_BUF * PAGE + i).write_volatile(*b) };
    }
    let (tx_ring, tx_buf, rx_buf, wb) = match kind {
        "tx-ring" => (target, d.gpa[P_TX_BUF], d.gpa[P_RX_BUF], 0),
        "tx-buffer" => (d.gpa[P_TX_RING], target, d.gpa[P_RX_BUF], 0),
        "rx-buffer" => (d.gpa[P_TX_RING], d.gpa[P_TX_BUF], target, 0),
        "tx-head-wb" => (d.gpa[P_TX_RING], d.gpa[P_TX_BUF], d.gpa[P_RX_BUF], target),
        other => return Err(format!("unknown attack kind {other}")),
    };
    d.w64(P_TX_RING, 0, tx_buf);
    d.w64(P_TX_RING, 8, tx_desc(f.len() as u64));
    // RX descriptor 0: packet buffer, no header buffer.
    d.w64(P_RX_RING, 0, rx_buf);
    d.w64(P_RX_RING, 8, 0);
    igb.rx_ring(d.gpa[P_RX_RING], 1);
    igb.tx_ring(tx_ring, wb);
    igb.bar.w(TDT, 1);
    // The model processes the ring within the doorbell write; give a real device time.
    std::thread::sleep(Duration::from_millis(50));
    let tdh = igb.bar.r(TDH);
    let rdh = igb.bar.r(RDH);
    let tx_dd = d.r32(P_TX_RING, 12) & 1 == 1;
    let rx_status = d.r32(P_RX_RING, 8);
    let rx_len = d.r32(P_RX_RING, 12) & 0xffff;
    let rx_buf_intact = d.intact(P_RX_BUF);
    // What came back through the loopback into the guest's own RX buffer is exactly the
    // frame sent (nothing from outside the guest).
    let rx_frame = f.iter().enumerate().all(|(i, b)| {
        // SAFETY: inside the RX buffer page.
        unsafe { d.ptr.wrapping_add(P_RX_BUF * PAGE + i).read_volatile() == *b }
    });
    let tx_buf_intact = (f.len()..PAGE).all(|i| {
        // SAFETY: inside the TX buffer page.
        unsafe { d.ptr.wrapping_add(P_TX_BUF * PAGE + i).read_volatile() == pattern(P_TX_BUF, i) }
    });
    igb.stop();
    Ok(json!({
        "target": format!("{target:#x}"),
        "kind": kind,
        "tdh": tdh,
        "rdh": rdh,
        "tx_dd": tx_dd,
        "rx_dd": rx_status & 1 == 1,
        "rx_len": rx_len,
        "rx_buffer_intact": rx_buf_intact,
        "rx_frame_ok": rx_frame,
        "tx_buffer_tail_intact": tx_buf_intact,
    }))
}

fn parse_u64(s: &str) -> Result<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("{s:?}: {e}"))
}

fn isolate(args: &Args) -> Result<Value> {
    let targets: Vec<u64> = args
        .get("targets")
        .ok_or("--targets is required")?
        .split(',')
        .map(parse_u64)
        .collect::<Result<_>>()?;
    let kinds: Vec<String> = args
        .get("kinds")
        .unwrap_or("tx-head-wb,tx-ring,tx-buffer,rx-buffer")
        .split(',')
        .map(str::to_owned)
        .collect();
    let pace = Duration::from_millis(parse_u64(args.get("pace-ms").unwrap_or("100"))?);
    let target_pace =
        Duration::from_millis(parse_u64(args.get("target-pace-ms").unwrap_or("5200"))?);
    let dev = find_igb()?;
    let bdf = dev
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let driver = driver_of(&dev);
    if let Some(drv) = &driver {
        let p = format!("/sys/bus/pci/drivers/{drv}/unbind");
        io(format!("writing {p}"), std::fs::write(&p, &bdf))?;
    }
    let cfg = Config::open(&dev)?;
    let cmd = cfg.u16(4)?;
    // Memory Space and Bus Master on.
    cfg.write_u16(4, cmd | 0x6)?;
    let d = DmaPages::new(DMA_PAGES)?;
    let igb = Igb {
        bar: Bar::map(&dev, 0)?,
    };
    igb.reset()?;
    let link = igb.link_up();
    let rah0 = igb.filter();
    let mut attacks = Vec::new();
    let mut errors = Vec::new();
    for &t in &targets {
        for k in &kinds {
            match attack(&igb, &d, t, k) {
                Ok(v) => attacks.push(v),
                Err(e) => errors.push(e),
            }
            std::thread::sleep(pace);
        }
        std::thread::sleep(target_pace);
    }
    // Nothing pointed at the witness page; the rings and buffers were rewritten per attack
    // and checked there.
    let witness_intact = d.intact(P_WITNESS);
    igb.unfilter(rah0);
    igb.reset()?;
    drop(igb);
    // Bus Master off again, as the driver left it at unbind.
    cfg.write_u16(4, cmd & !0x4)?;
    Ok(json!({
        "bdf": bdf,
        "unbound_from": driver,
        "link_up": link,
        "dma_gpas": d.gpa.iter().map(|g| format!("{g:#x}")).collect::<Vec<_>>(),
        "attacks": attacks,
        "witness_intact": witness_intact,
        "errors": errors,
    }))
}

/// xorshift64*: the storm's choices, reproducible from `--seed`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn pin_to_cpu(cpu: usize) -> Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(format!("CPU {cpu} is out of range"));
    }
    // SAFETY: `cpu_set_t` is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above), so the bit is inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t passed with its size; 0 is this thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(format!(
            "sched_setaffinity to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn storm(args: &Args) -> Result<Value> {
    let seconds = parse_u64(args.get("seconds").unwrap_or("10"))?;
    let cpu = parse_u64(args.get("cpu").unwrap_or("1"))? as usize;
    let mut rng = Rng(parse_u64(args.get("seed").unwrap_or("0x18"))? | 1);
    pin_to_cpu(cpu)?;
    let dev = find_igb()?;
    let cfg = Config::open(&dev)?;
    let cap = cfg.msix_cap()?;
    let mc = cfg.u16(cap + 2)?;
    let size = usize::from(mc & 0x7ff) + 1;
    let table = cfg.u32(cap + 4)?;
    let pba = cfg.u32(cap + 8)?;
    if table & 7 != pba & 7 {
        return Err("table and PBA in different BARs: not an igb".to_owned());
    }
    let bar = Bar::map(&dev, table & 7)?;
    let (t_off, p_off) = ((table & !7) as usize, (pba & !7) as usize);
    let used = std::fs::read_dir(dev.join("msi_irqs")).map_or(0, |d| d.count());
    if used == 0 || used >= size {
        return Err(format!(
            "the driver uses {used} of {size} vectors: nothing to storm"
        ));
    }
    let entry = |v: usize, dw: usize| t_off + 16 * v + 4 * dw;
    // The driver's doorbell: what vector 0 holds.
    let doorbell = (u64::from(bar.r(entry(0, 1))) << 32) | u64::from(bar.r(entry(0, 0)));
    let mut counts = [0u64; 6];
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut n: u32 = 0;
    while Instant::now() < deadline {
        for _ in 0..64 {
            n = n.wrapping_add(1);
            match rng.below(100) {
                // An unused vector: any of its dwords, with hostile values.
                0..=39 => {
                    let v = used + rng.below((size - used) as u64) as usize;
                    let addr = match rng.below(4) {
                        0 => doorbell as u32,
                        1 => (doorbell as u32).wrapping_add(4 * rng.below(64) as u32),
                        2 => 0xfee0_0000,
                        _ => rng.next() as u32 & !3,
                    };
                    match rng.below(4) {
                        0 => bar.w(entry(v, 0), addr),
                        1 => bar.w(entry(v, 1), (rng.below(3) == 0) as u32 * rng.next() as u32),
                        2 => bar.w(entry(v, 2), MARKER | (n & 0xffff)),
                        _ => bar.w(entry(v, 3), rng.below(2) as u32),
                    }
                    counts[0] += 1;
                }
                // The driver's vectors: rewritten with what they hold.
                40..=59 => {
                    let v = rng.below(used as u64) as usize;
                    for dw in 0..3 {
                        let x = bar.r(entry(v, dw));
                        bar.w(entry(v, dw), x);
                    }
                    counts[1] += 1;
                }
                // Function Mask pulsed.
                60..=74 => {
                    let cur = cfg.u16(cap + 2)?;
                    cfg.write_u16(cap + 2, cur | 0x4000)?;
                    cfg.write_u16(cap + 2, cur & !0x4000)?;
                    counts[2] += 1;
                }
                // The PBA: written (read-only to the guest) and read.
                75..=89 => {
                    let at = p_off + 4 * rng.below(2) as usize;
                    bar.w(at, rng.next() as u32);
                    let _ = bar.r(at);
                    counts[3] += 1;
                }
                // Reads anywhere in the table.
                _ => {
                    let v = rng.below(size as u64) as usize;
                    let _ = bar.r(entry(v, rng.below(4) as usize));
                    counts[4] += 1;
                }
            }
        }
        counts[5] += 1;
    }
    // Final state: every unused vector deliverable with the doorbell and marker data.
    for v in used..size {
        bar.w(entry(v, 3), 1);
        bar.w(entry(v, 0), doorbell as u32);
        bar.w(entry(v, 1), (doorbell >> 32) as u32);
        bar.w(entry(v, 2), MARKER | v as u32);
        bar.w(entry(v, 3), 0);
    }
    let cur = cfg.u16(cap + 2)?;
    cfg.write_u16(cap + 2, cur & !0x4000)?;
    let final_table: Vec<Value> = (0..size)
        .map(|v| {
            json!([
                format!("{:#x}", bar.r(entry(v, 0))),
                format!("{:#x}", bar.r(entry(v, 1))),
                format!("{:#x}", bar.r(entry(v, 2))),
                bar.r(entry(v, 3)),
            ])
        })
        .collect();
    Ok(json!({
        "seconds": seconds,
        "cpu": cpu,
        "table_size": size,
        "used_vectors": used,
        "doorbell": format!("{doorbell:#x}"),
        "marker": format!("{MARKER:#x}"),
        "unused_entry_writes": counts[0],
        "used_entry_rewrites": counts[1],
        "function_mask_pulses": counts[2],
        "pba_writes": counts[3],
        "table_reads": counts[4],
        "message_control": cfg.u16(cap + 2)?,
        "final_table": final_table,
    }))
}

/// `--name value` pairs after the command.
struct Args(Vec<(String, String)>);

impl Args {
    fn parse(args: &[String]) -> Result<Self> {
        let mut out = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let name = a
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {a:?}"))?;
            let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
            out.push((name.to_owned(), value.clone()));
        }
        Ok(Args(out))
    }
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = match argv.split_first() {
        Some((cmd, rest)) => Args::parse(rest).and_then(|a| match cmd.as_str() {
            "isolate" => isolate(&a),
            "storm" => storm(&a),
            other => Err(format!("unknown command {other:?} (isolate, storm)")),
        }),
        None => Err("usage: l2-hostile isolate|storm [--name value]...".to_owned()),
    };
    let mut out = std::io::stdout();
    match result {
        Ok(v) => {
            let _ = writeln!(out, "{v}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(out, "{}", json!({ "error": e }));
            std::process::ExitCode::FAILURE
        }
    }
}
