// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! MSI routes into the vIMSIC.
//!
//! On RISC-V a KVM MSI route (`KVM_IRQ_ROUTING_MSI`) is the MSI itself: the address is the
//! target vCPU's vIMSIC page (`seteipnum_le` at offset 0, or `seteipnum_be` at 4, AIA 1.0
//! §3.5), the data the interrupt identity; there is no DeviceID (the flags carry no
//! `KVM_MSI_VALID_DEVID`). An irqfd bound to the route's GSI injects it with no exit to
//! userspace (`kvm_riscv_aia_inject_msi()`), into the vCPU's hardware guest file or KVM's
//! software one.
//!
//! KVM drops an MSI whose address is no vCPU's page and still reports success, so every
//! route is checked against the [`AiaSetup`] first ([`AiaSetup::check_msi`]).

use kvm_bindings::{KVM_IRQ_ROUTING_MSI, KvmIrqRouting, kvm_irq_routing_entry};
use kvm_ioctls::VmFd;

use crate::Error;
use crate::config::AiaSetup;

/// Most routes KVM takes in one table (`KVM_MAX_IRQ_ROUTES`, `include/linux/kvm_host.h`).
pub const MAX_ROUTES: usize = 4096;

/// One MSI route: an irqfd on `gsi` writes identity `data` to `address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsiRoute {
    /// The GSI the irqfd is bound to.
    pub gsi: u32,
    /// A vCPU's vIMSIC page (plus 0 or 4).
    pub address: u64,
    /// The identity, as the device writes it.
    pub data: u32,
}

/// Checks `routes` against `setup` (each reaches a vCPU and carries an identity it has;
/// GSIs are distinct and below `KVM_MAX_IRQ_ROUTES`) and builds the routing table.
pub fn routing_table(setup: &AiaSetup, routes: &[MsiRoute]) -> Result<KvmIrqRouting, Error> {
    if routes.len() > MAX_ROUTES {
        return Err(Error::Invalid {
            what: "routing table",
            reason: format!("{} routes, KVM takes at most {MAX_ROUTES}", routes.len()),
        });
    }
    let mut gsis: Vec<u32> = Vec::with_capacity(routes.len());
    for r in routes {
        if r.gsi as usize >= MAX_ROUTES {
            return Err(Error::Invalid {
                what: "routing table",
                reason: format!("GSI {} is not below {MAX_ROUTES}", r.gsi),
            });
        }
        setup
            .check_msi(r.address, r.data)
            .map_err(|e| Error::Invalid {
                what: "routing table",
                reason: format!("GSI {}: {e}", r.gsi),
            })?;
        gsis.push(r.gsi);
    }
    gsis.sort_unstable();
    if let Some(w) = gsis.windows(2).find(|w| w[0] == w[1]) {
        return Err(Error::Invalid {
            what: "routing table",
            reason: format!("GSI {} has two MSI routes", w[0]),
        });
    }
    let mut table = KvmIrqRouting::new(0).map_err(|e| Error::Invalid {
        what: "routing table",
        reason: format!("allocating: {e:?}"),
    })?;
    for r in routes {
        let mut entry = kvm_irq_routing_entry {
            gsi: r.gsi,
            type_: KVM_IRQ_ROUTING_MSI,
            ..Default::default()
        };
        entry.u.msi.address_lo = r.address as u32;
        entry.u.msi.address_hi = (r.address >> 32) as u32;
        entry.u.msi.data = r.data;
        table.push(entry).map_err(|e| Error::Invalid {
            what: "routing table",
            reason: format!("adding GSI {}: {e:?}", r.gsi),
        })?;
    }
    Ok(table)
}

/// Checks and installs `routes` on `vm` with one `KVM_SET_GSI_ROUTING` (which replaces the
/// whole table).
pub fn set_routes(vm: &VmFd, setup: &AiaSetup, routes: &[MsiRoute]) -> Result<(), Error> {
    let table = routing_table(setup, routes)?;
    vm.set_gsi_routing(&table)
        .map_err(|errno| Error::SetRouting {
            routes: routes.len(),
            errno,
        })
}

#[cfg(test)]
mod tests {
    use riscv_imsic::{GeometryConfig, ImsicConfig, NumIds};

    use super::*;
    use crate::config::AiaMode;

    fn setup() -> AiaSetup {
        let g = GeometryConfig::supervisor_only(0x2800_0000, 2, 0);
        AiaSetup::from_imsic(
            AiaMode::HwAccel,
            &ImsicConfig::uniform(g, 2, NumIds::new(255).unwrap(), 0),
            0,
            None,
        )
        .unwrap()
    }

    #[test]
    fn table_carries_address_and_data_without_devid() {
        let routes = [
            MsiRoute {
                gsi: 0,
                address: 0x2800_1000,
                data: 5,
            },
            MsiRoute {
                gsi: 7,
                address: 0x2800_0004,
                data: 9u32.swap_bytes(),
            },
        ];
        let t = routing_table(&setup(), &routes).unwrap();
        let entries = t.as_slice();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].gsi, 0);
        assert_eq!(entries[0].type_, KVM_IRQ_ROUTING_MSI);
        assert_eq!(entries[0].flags, 0, "no KVM_MSI_VALID_DEVID");
        // SAFETY: the entries were built with the msi member of the union.
        let msi = unsafe { entries[1].u.msi };
        assert_eq!(
            (msi.address_lo, msi.address_hi, msi.data),
            (0x2800_0004, 0, 9u32.swap_bytes())
        );
    }

    #[test]
    fn routes_kvm_would_drop_are_refused() {
        let ok = MsiRoute {
            gsi: 1,
            address: 0x2800_1000,
            data: 5,
        };
        for (bad, needle) in [
            (
                MsiRoute {
                    address: 0x2800_2000,
                    ..ok
                },
                "no vCPU",
            ),
            (MsiRoute { data: 0, ..ok }, "identity 0"),
            (MsiRoute { data: 256, ..ok }, "identity 256"),
            (MsiRoute { gsi: 4096, ..ok }, "GSI 4096"),
        ] {
            let err = routing_table(&setup(), &[bad]).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
        let err = routing_table(&setup(), &[ok, ok]).unwrap_err();
        assert!(err.to_string().contains("two MSI routes"), "{err}");
        let many = vec![ok; MAX_ROUTES + 1];
        assert!(routing_table(&setup(), &many).is_err());
    }
}
