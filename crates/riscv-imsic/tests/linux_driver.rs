// Copyright © 2026 The passthrough-msi authors
//
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The IMSIC driven the way Linux's IMSIC driver (drivers/irqchip/irq-riscv-imsic-*.c)
//! programs it: delivery on with threshold 0, identity 1 for IPIs, identities
//! enabled and disabled with csrs/csrc on `eieK`, MSIs through `seteipnum_le`,
//! claims through `csrrw *topei`, vector moves that re-trigger through MMIO, and
//! CPU offline (delivery off, threshold 1).

use std::collections::BTreeMap;

use riscv_imsic::{
    ExternalInterruptSink, FileKind, FileTarget, GeometryConfig, Imsic, ImsicConfig, ImsicEvent,
    ImsicGeometry, Level, NumIds, WriteOutcome, Xlen, bits_for,
};

const EIDELIVERY: u64 = 0x70;
const EITHRESHOLD: u64 = 0x72;
const EIP0: u64 = 0x80;
const EIE0: u64 = 0xC0;
const IPI_ID: u32 = 1;

/// The VMM side: SEIP level per vCPU plus every event.
#[derive(Default, Debug)]
struct Vmm {
    seip: BTreeMap<usize, bool>,
    edges: usize,
    events: Vec<ImsicEvent>,
}

impl ExternalInterruptSink for Vmm {
    fn raise(&mut self, t: FileTarget) {
        assert_eq!(t.file, FileKind::Supervisor);
        let prev = self.seip.insert(t.hart, true);
        assert_ne!(prev, Some(true), "raise without an edge");
        self.edges += 1;
    }
    fn lower(&mut self, t: FileTarget) {
        let prev = self.seip.insert(t.hart, false);
        assert_eq!(prev, Some(true), "lower without an edge");
        self.edges += 1;
    }
    fn event(&mut self, e: ImsicEvent) {
        self.events.push(e);
    }
}

/// What the guest kernel does on one CPU, through siselect/sireg/stopei.
struct Cpu<'a> {
    imsic: &'a mut Imsic<Vmm>,
    target: FileTarget,
    xlen: Xlen,
}

impl Cpu<'_> {
    fn bits_per_long(&self) -> u32 {
        match self.xlen {
            Xlen::Rv32 => 32,
            Xlen::Rv64 => 64,
        }
    }

    /// imsic_csr_write()
    fn csr_write(&mut self, isel: u64, val: u64) {
        self.imsic
            .write_indirect(self.target, isel, val, self.xlen)
            .unwrap();
    }

    /// The isel/mask pair of __imsic_eix_update() for one identity.
    fn eix(&self, id: u32, pend: bool) -> (u64, u64) {
        let bpl = self.bits_per_long();
        let isel = u64::from(id / bpl) * u64::from(bpl / 32) + if pend { EIP0 } else { EIE0 };
        (isel, 1u64 << (id % bpl))
    }

    /// __imsic_id_set_enable(): csr_set(IREG, BIT(id % XLEN)).
    fn enable(&mut self, id: u32) {
        let (isel, mask) = self.eix(id, false);
        self.imsic
            .rmw_indirect(self.target, isel, u64::MAX, mask, self.xlen)
            .unwrap();
    }

    /// __imsic_id_clear_enable(): csr_clear.
    fn disable(&mut self, id: u32) {
        let (isel, mask) = self.eix(id, false);
        self.imsic
            .rmw_indirect(self.target, isel, 0, mask, self.xlen)
            .unwrap();
    }

    /// __imsic_id_read_clear_pending(): csr_read_clear on eipK.
    fn read_clear_pending(&mut self, id: u32) -> bool {
        let (isel, mask) = self.eix(id, true);
        let old = self
            .imsic
            .rmw_indirect(self.target, isel, 0, mask, self.xlen)
            .unwrap();
        old & mask != 0
    }

    /// imsic_local_delivery()
    fn delivery(&mut self, enable: bool) {
        if enable {
            self.csr_write(EITHRESHOLD, 0);
            self.csr_write(EIDELIVERY, 1);
        } else {
            self.csr_write(EIDELIVERY, 0);
            self.csr_write(EITHRESHOLD, 1);
        }
    }

    /// The handler loop: while ((id = csr_swap(CSR_TOPEI, 0))) handle(id >> 16).
    fn handle(&mut self) -> Vec<u32> {
        let mut ids = Vec::new();
        for _ in 0..4096 {
            let v = self.imsic.claim_topei(self.target).unwrap();
            if v == 0 {
                return ids;
            }
            assert_eq!(v & 0x7FF, v >> 16, "topei priority field equals identity");
            ids.push(v >> 16);
        }
        panic!("topei never drained");
    }
}

fn cpu(imsic: &mut Imsic<Vmm>, hart: usize, xlen: Xlen) -> Cpu<'_> {
    Cpu {
        imsic,
        target: FileTarget::new(hart, FileKind::Supervisor),
        xlen,
    }
}

/// A guest with four vCPUs: supervisor files only, hart index bits as Linux
/// derives them without `riscv,hart-index-bits` (ceil(log2(nr_parent_irqs))).
fn guest(n: u32) -> Imsic<Vmm> {
    let geometry = GeometryConfig::supervisor_only(0x2800_0000, n, 0);
    let config = ImsicConfig::uniform(geometry, n, NumIds::new(255).unwrap(), 0);
    Imsic::new(config, Vmm::default()).unwrap()
}

fn msi_va(imsic: &Imsic<Vmm>, hart: usize) -> u64 {
    imsic
        .file_address(FileTarget::new(hart, FileKind::Supervisor))
        .unwrap()
}

#[test]
fn boot_ipi_and_device_msi() {
    for xlen in [Xlen::Rv64, Xlen::Rv32] {
        let mut imsic = guest(4);
        for hart in 0..4 {
            let mut c = cpu(&mut imsic, hart, xlen);
            c.delivery(true);
            c.enable(IPI_ID);
        }
        assert_eq!(imsic.sink().edges, 0);

        // CPU 0 sends an IPI to CPU 2: writel(IMSIC_IPI_ID, msi_va).
        let va = msi_va(&imsic, 2);
        assert!(matches!(
            imsic.write_msi(va, IPI_ID),
            Ok(WriteOutcome::Pending { id: 1, .. })
        ));
        assert_eq!(imsic.sink().seip.get(&2), Some(&true));
        assert_eq!(cpu(&mut imsic, 2, xlen).handle(), vec![IPI_ID]);
        assert_eq!(imsic.sink().seip.get(&2), Some(&false));

        // A device vector at local id 37 on CPU 1 (unmask -> set enable).
        cpu(&mut imsic, 1, xlen).enable(37);
        let va = msi_va(&imsic, 1);
        imsic.write_msi(va, 37).unwrap();
        imsic.write_msi(va, 37).unwrap(); // coalesces
        imsic.write_msi(va, IPI_ID).unwrap();
        // Identity 1 has priority over 37.
        assert_eq!(cpu(&mut imsic, 1, xlen).handle(), vec![IPI_ID, 37]);
        assert_eq!(imsic.sink().seip.get(&1), Some(&false));
        assert_eq!(imsic.sink().edges, 4);
    }
}

#[test]
fn masked_vector_latches_and_fires_on_unmask() {
    let mut imsic = guest(2);
    let mut c = cpu(&mut imsic, 0, Xlen::Rv64);
    c.delivery(true);
    c.enable(200);
    c.disable(200); // imsic_vector_mask()
    let va = msi_va(&imsic, 0);
    imsic.write_msi(va, 200).unwrap();
    assert_eq!(imsic.sink().seip.get(&0), None, "masked: no signal");
    assert_eq!(imsic.topei(FileTarget::new(0, FileKind::Supervisor)), Ok(0));
    cpu(&mut imsic, 0, Xlen::Rv64).enable(200); // imsic_vector_unmask()
    assert_eq!(imsic.sink().seip.get(&0), Some(&true));
    assert_eq!(cpu(&mut imsic, 0, Xlen::Rv64).handle(), vec![200]);
    // The events told the VMM about every enable change of identity 200.
    let s0 = FileTarget::new(0, FileKind::Supervisor);
    let seen: Vec<&ImsicEvent> = imsic
        .sink()
        .events
        .iter()
        .filter(|e| {
            matches!(e, ImsicEvent::IdentityEnabled { target, id: 200 }
                | ImsicEvent::IdentityDisabled { target, id: 200 } if *target == s0)
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            &ImsicEvent::IdentityEnabled {
                target: s0,
                id: 200
            },
            &ImsicEvent::IdentityDisabled {
                target: s0,
                id: 200
            },
            &ImsicEvent::IdentityEnabled {
                target: s0,
                id: 200
            },
        ]
    );
}

#[test]
fn vector_move_retriggers_on_new_cpu() {
    // imsic_vector_move() + __imsic_local_sync(): the old vector is disabled,
    // an MSI that raced in is read-cleared from eip and re-sent by MMIO to the
    // new CPU's file with the new local id.
    let mut imsic = guest(4);
    for hart in 0..4 {
        cpu(&mut imsic, hart, Xlen::Rv64).delivery(true);
    }
    cpu(&mut imsic, 1, Xlen::Rv64).enable(70);
    cpu(&mut imsic, 3, Xlen::Rv64).enable(71);
    // The move starts: old vector disabled, then the device's MSI lands there.
    cpu(&mut imsic, 1, Xlen::Rv64).disable(70);
    let old_va = msi_va(&imsic, 1);
    imsic.write_msi(old_va, 70).unwrap();
    assert_eq!(imsic.sink().seip.get(&1), None);
    // Old CPU syncs.
    assert!(cpu(&mut imsic, 1, Xlen::Rv64).read_clear_pending(70));
    assert!(!cpu(&mut imsic, 1, Xlen::Rv64).read_clear_pending(70));
    let new_va = msi_va(&imsic, 3);
    imsic.mmio_write(new_va, &71u32.to_le_bytes()).unwrap();
    assert_eq!(imsic.sink().seip.get(&3), Some(&true));
    assert_eq!(cpu(&mut imsic, 3, Xlen::Rv64).handle(), vec![71]);
    assert_eq!(cpu(&mut imsic, 1, Xlen::Rv64).handle(), Vec::<u32>::new());
}

#[test]
fn cpu_offline_blocks_everything() {
    let mut imsic = guest(2);
    let mut c = cpu(&mut imsic, 1, Xlen::Rv64);
    c.delivery(true);
    c.enable(IPI_ID);
    c.enable(5);
    let va = msi_va(&imsic, 1);
    imsic.write_msi(va, 5).unwrap();
    assert_eq!(imsic.sink().seip.get(&1), Some(&true));
    // imsic_local_delivery(false): eidelivery 0 lowers the line; threshold 1
    // hides every identity from topei.
    cpu(&mut imsic, 1, Xlen::Rv64).delivery(false);
    assert_eq!(imsic.sink().seip.get(&1), Some(&false));
    assert_eq!(cpu(&mut imsic, 1, Xlen::Rv64).handle(), Vec::<u32>::new());
    // Back online: the latched MSI is delivered.
    cpu(&mut imsic, 1, Xlen::Rv64).delivery(true);
    assert_eq!(imsic.sink().seip.get(&1), Some(&true));
    assert_eq!(cpu(&mut imsic, 1, Xlen::Rv64).handle(), vec![5]);
}

#[test]
fn linux_parse_fwnode_base_address_rule() {
    // imsic_parse_fwnode(): every reg region, with the guest, hart and group
    // index bits cleared, must give the same base address; and each CPU's
    // msi_pa is its region base + hart index << (guest bits + 12).
    let cfg = GeometryConfig {
        machine_base: Some(0x2400_0000),
        machine_hart_shift: 12,
        supervisor_base: 0x2800_0000,
        guest_index_bits: 3,
        hart_index_bits: bits_for(3),
        group_index_bits: 2,
        group_index_shift: 24,
    };
    let geo = ImsicGeometry::new(cfg).unwrap();
    let hart_field = (1u64 << (cfg.guest_index_bits + cfg.hart_index_bits + 12)) - 1;
    let group_field = ((1u64 << cfg.group_index_bits) - 1) << cfg.group_index_shift;
    for r in geo.regions().filter(|r| r.level == Level::Supervisor) {
        assert_eq!(r.base & !hart_field & !group_field, cfg.supervisor_base);
        for h in 0..3u32 {
            let pa = geo.file_address(r.group, h, FileKind::Supervisor).unwrap();
            assert_eq!(pa, r.base + (u64::from(h) << (cfg.guest_index_bits + 12)));
        }
    }
}
