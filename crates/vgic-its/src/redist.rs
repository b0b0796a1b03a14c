// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The redistributor side: what the ITS asks of the VMM.

use crate::events::MappingEvent;

/// The VMM's redistributors, as the ITS sees them.
///
/// The ITS decides *which* LPI on *which* vCPU; LPI configuration (enable and priority in the
/// LPI Configuration table) and pending state belong to the redistributors (IHI 0069H §5.1), so
/// every effect of a translation or command reaches them through this trait. vCPUs are
/// processor numbers `0..ItsConfig::vcpus()` (`GITS_TYPER.PTA == 0`): the ITS never passes a
/// vCPU outside that range.
///
/// All methods are called synchronously from [`Its`](crate::Its) while it processes an MMIO
/// write or [`Its::send_msi`](crate::Its::send_msi).
pub trait Redistributors {
    /// Make LPI `intid` pending on `vcpu` (a translated MSI or an INT command, IHI 0069H
    /// §5.3). The redistributor applies its own LPI enable/priority configuration.
    fn set_lpi_pending(&mut self, vcpu: u32, intid: u32);

    /// Clear LPI `intid`'s pending state on `vcpu` (CLEAR, DISCARD; §5.3).
    fn clear_lpi_pending(&mut self, vcpu: u32, intid: u32);

    /// Move LPI `intid`'s pending state from `from` to `to` (MOVI §5.3). Called only when
    /// `from != to`.
    fn move_lpi(&mut self, from: u32, to: u32, intid: u32);

    /// Move every pending LPI of `from` to `to` (MOVALL §5.3). Called only when
    /// `from != to`.
    fn move_all_lpis(&mut self, from: u32, to: u32);

    /// Reload LPI `intid`'s configuration on `vcpu` (INV §5.3).
    fn invalidate_lpi(&mut self, vcpu: u32, intid: u32);

    /// Reload the configuration of every LPI on `vcpu` (INVALL §5.3).
    fn invalidate_all(&mut self, vcpu: u32);

    /// Make every earlier effect on `vcpu` visible (SYNC §5.3). Effects here are synchronous,
    /// so most VMMs need nothing; the default does nothing.
    fn sync(&mut self, vcpu: u32) {
        let _ = vcpu;
    }

    /// A mapping changed. The default ignores it. This is the hook for mirroring the guest's
    /// mappings (e.g. a later GICv4 direct-injection path).
    fn mapping_changed(&mut self, event: &MappingEvent) {
        let _ = event;
    }
}

impl<T: Redistributors + ?Sized> Redistributors for &mut T {
    fn set_lpi_pending(&mut self, vcpu: u32, intid: u32) {
        (**self).set_lpi_pending(vcpu, intid)
    }
    fn clear_lpi_pending(&mut self, vcpu: u32, intid: u32) {
        (**self).clear_lpi_pending(vcpu, intid)
    }
    fn move_lpi(&mut self, from: u32, to: u32, intid: u32) {
        (**self).move_lpi(from, to, intid)
    }
    fn move_all_lpis(&mut self, from: u32, to: u32) {
        (**self).move_all_lpis(from, to)
    }
    fn invalidate_lpi(&mut self, vcpu: u32, intid: u32) {
        (**self).invalidate_lpi(vcpu, intid)
    }
    fn invalidate_all(&mut self, vcpu: u32) {
        (**self).invalidate_all(vcpu)
    }
    fn sync(&mut self, vcpu: u32) {
        (**self).sync(vcpu)
    }
    fn mapping_changed(&mut self, event: &MappingEvent) {
        (**self).mapping_changed(event)
    }
}
