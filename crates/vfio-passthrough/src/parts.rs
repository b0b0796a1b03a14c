// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Building the guest-visible model of a function from its config space and BARs: the
//! capability plan, the MSI-X emulation with its layout, the guest BARs and the virtual
//! config space. Pure: no device access.

use msi_trap::msix::MsixState;
use msi_trap::msix::cap::MsixCapability;
use msi_trap::msix::layout::{BarInfo, MsixLayout, RelocationPolicy};

use crate::bars::GuestBars;
use crate::config::{VirtualConfig, plan_caps};
use crate::error::{Error, Result};

/// The guest-visible model of a function.
#[derive(Debug)]
pub struct ModelParts {
    /// The virtual config space.
    pub config: VirtualConfig,
    /// The MSI-X emulation, when the function has MSI-X.
    pub msix: Option<MsixState>,
}

/// Builds the model. `name` only names the device in errors.
pub fn build_model(
    name: &str,
    config: &[u8],
    bars: &[BarInfo; 6],
    bar_regs: &[u32; 6],
    relocation: RelocationPolicy,
    page_size: u64,
) -> Result<ModelParts> {
    let plan = plan_caps(config);
    let msix_err = |reason: String| Error::Msix {
        device: name.to_string(),
        reason,
    };
    let msix = match plan.msix {
        Some(offset) => {
            let mut cap =
                MsixCapability::parse(config, offset).map_err(|e| msix_err(e.to_string()))?;
            cap.next = plan
                .visible
                .iter()
                .find(|c| c.1 == offset)
                .map_or(0, |c| c.2);
            let layout = MsixLayout::compute(bars, cap.real(), page_size, relocation)
                .map_err(|e| msix_err(e.to_string()))?;
            Some(MsixState::new(cap, layout).map_err(|e| msix_err(e.to_string()))?)
        }
        None => None,
    };
    let guest_bars = match &msix {
        Some(m) => GuestBars::new(m.layout().guest_bars(), bar_regs),
        None => GuestBars::new(bars, bar_regs),
    };
    Ok(ModelParts {
        config: VirtualConfig::new(config, &plan, guest_bars),
        msix,
    })
}
