// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Command queue processing (IHI 0069H §5.3) and command execution.

use vm_memory::{Bytes, GuestAddress, GuestMemory};

use super::decode::{self, COMMAND_SIZE, RawCommand};
use super::{Command, CommandError, CommandErrorKind};
use crate::config::CommandErrorPolicy;
#[cfg(doc)]
use crate::config::{DEFAULT_COMMANDS_PER_CALL, ItsConfig};
use crate::events::MappingEvent;
use crate::its::Its;
use crate::redist::Redistributors;
use crate::regs::{cbaser_base, cbaser_queue_bytes};
use crate::tables::device::DeviceEntry;
use crate::tables::itt::IttEntry;
use crate::tables::{TableError, TableKind};

/// Commands read from guest memory at once by [`Its::process_commands`].
const FETCH_BATCH: usize = 64;

impl Its {
    /// Process commands from `GITS_CREADR` towards `GITS_CWRITER`.
    ///
    /// Runs only while `GITS_CTLR.Enabled == 1`, `GITS_CBASER.Valid == 1` and the queue is not
    /// stalled. One call executes at most [`ItsConfig::commands_per_call`] commands
    /// (default [`DEFAULT_COMMANDS_PER_CALL`]) and never more than the queue's slots (at
    /// most 32768), so one MMIO exit does bounded work whatever the guest queued, and the
    /// loop ends even if the guest rewrites the queue under it. Commands left over stay
    /// between `GITS_CREADR` and `GITS_CWRITER`, which the guest sees as commands the ITS
    /// has not consumed yet: IHI 0069H 5.3 lets an ITS process the queue asynchronously, and
    /// software (Linux's `its_wait_for_range_completion`) polls `GITS_CREADR` until it
    /// passes its commands.
    ///
    /// The VMM continues them: while [`Its::commands_pending`] is true it calls this method
    /// again, for example when the guest next reads `GITS_CREADR` (before answering the
    /// read), or from a worker between vCPU runs. Test: `bounded_work_per_exit`.
    ///
    /// A failing command is handled per [`CommandErrorPolicy`]: with `Stall`, `GITS_CREADR`
    /// stays at it and `Stalled` is set (test `stall_and_retry`); with `Skip` processing goes
    /// on (test `skip_policy_continues`).
    ///
    /// Called by the `GITS_CWRITER` and `GITS_CTLR` writes. Returns the number of commands
    /// executed.
    pub fn process_commands<M: GuestMemory + ?Sized, R: Redistributors + ?Sized>(
        &mut self,
        mem: &M,
        rd: &mut R,
    ) -> usize {
        if !self.commands_pending() {
            return 0;
        }
        let queue = cbaser_queue_bytes(self.cbaser);
        let base = cbaser_base(self.cbaser);
        let mut budget = (queue / COMMAND_SIZE).min(self.config.commands_per_call as u64);
        let mut done = 0;
        // Commands between CREADR and CWRITER belong to the ITS (software must not change
        // them, IHI 0069H §5.3), so they may be read ahead in batches: one guest-memory read
        // per FETCH_BATCH commands instead of one per command.
        let mut batch = [0u8; FETCH_BATCH * COMMAND_SIZE as usize];
        let mut batch_len = 0usize;
        let mut batch_pos = 0usize;
        while self.creadr != self.cwriter && budget > 0 {
            budget -= 1;
            let offset = self.creadr;
            if batch_pos == batch_len {
                batch_pos = 0;
                batch_len = self.fetch(mem, base, offset, queue, &mut batch);
            }
            let result = if batch_len == 0 {
                Err((
                    0,
                    CommandErrorKind::TableFault(TableError::Read {
                        kind: TableKind::CommandQueue,
                        addr: base + offset,
                        len: COMMAND_SIZE as usize,
                    }),
                ))
            } else {
                let start = batch_pos * COMMAND_SIZE as usize;
                batch_pos += 1;
                let mut bytes = [0u8; COMMAND_SIZE as usize];
                if let Some(src) = batch.get(start..start + COMMAND_SIZE as usize) {
                    bytes.copy_from_slice(src);
                }
                let raw = RawCommand::from_bytes(&bytes);
                let op = raw.cmd_type();
                self.execute(mem, rd, &raw).map_err(|kind| (op, kind))
            };
            done += 1;
            self.commands_processed = self.commands_processed.wrapping_add(1);
            if let Err((opcode, kind)) = result {
                let err = CommandError {
                    opcode,
                    offset,
                    kind,
                };
                log::debug!("{err}");
                self.last_error = Some(err);
                if self.config.error_policy == CommandErrorPolicy::Stall {
                    self.stalled = true;
                    break;
                }
                // Skipping: drop the read-ahead so a faulting fetch is retried per command.
                batch_len = 0;
                batch_pos = 0;
            }
            self.creadr = (offset + COMMAND_SIZE) % queue;
        }
        done
    }

    /// Whether commands wait to be processed: the ITS is enabled, `GITS_CBASER` is valid,
    /// the queue is not stalled and `GITS_CREADR != GITS_CWRITER`. After an MMIO exit that
    /// left this true, the VMM calls [`Its::process_commands`] again (see there).
    pub fn commands_pending(&self) -> bool {
        let queue = cbaser_queue_bytes(self.cbaser);
        self.enabled
            && !self.stalled
            && crate::regs::cbaser_valid(self.cbaser)
            && self.creadr != self.cwriter
            && self.creadr < queue
            && self.cwriter < queue
    }

    /// Read up to [`FETCH_BATCH`] commands starting at queue `offset`, stopping at
    /// `GITS_CWRITER` and at the end of the queue. Returns how many were read: 0 when even
    /// the first command cannot be read (unbacked guest memory).
    fn fetch<M: GuestMemory + ?Sized>(
        &self,
        mem: &M,
        base: u64,
        offset: u64,
        queue: u64,
        batch: &mut [u8; FETCH_BATCH * COMMAND_SIZE as usize],
    ) -> usize {
        let end = if self.cwriter > offset {
            self.cwriter
        } else {
            queue
        };
        let n = (((end - offset) / COMMAND_SIZE) as usize).clamp(1, FETCH_BATCH);
        let addr = GuestAddress(base + offset);
        for count in [n, 1] {
            let len = count * COMMAND_SIZE as usize;
            if let Some(buf) = batch.get_mut(..len)
                && mem.read_slice(buf, addr).is_ok()
            {
                return count;
            }
        }
        0
    }

    /// Decode through the one table and execute a single command.
    pub(crate) fn execute<M: GuestMemory + ?Sized, R: Redistributors + ?Sized>(
        &mut self,
        mem: &M,
        rd: &mut R,
        raw: &RawCommand,
    ) -> Result<(), CommandErrorKind> {
        let decode = decode::lookup(raw.cmd_type())
            .and_then(|spec| spec.decode)
            .ok_or(CommandErrorKind::Unsupported)?;
        match decode(raw) {
            Command::Mapd {
                device_id,
                size,
                itt_addr,
                valid,
            } => self.mapd(mem, rd, device_id, size, itt_addr, valid),
            Command::Mapc {
                icid,
                rdbase,
                valid,
            } => self.mapc(mem, rd, icid, rdbase, valid),
            Command::Mapti {
                device_id,
                event_id,
                intid,
                icid,
            } => self.mapti(mem, rd, device_id, event_id, intid, icid),
            // IHI 0069H 5.3.12 INT, 5.3.10 CLEAR, 5.3.13 INV: DEVICE_OOR, UNMAPPED_DEVICE,
            // ID_OOR, UNMAPPED_INTERRUPT, UNMAPPED_COLLECTION (the ITE's collection), in that
            // order (`Its::lookup`). Test: `event_command_errors`.
            Command::Int {
                device_id,
                event_id,
            } => {
                let t = self.lookup(mem, device_id, event_id)?;
                rd.set_lpi_pending(t.vcpu, t.intid);
                Ok(())
            }
            Command::Clear {
                device_id,
                event_id,
            } => {
                let t = self.lookup(mem, device_id, event_id)?;
                rd.clear_lpi_pending(t.vcpu, t.intid);
                Ok(())
            }
            Command::Inv {
                device_id,
                event_id,
            } => {
                let t = self.lookup(mem, device_id, event_id)?;
                rd.invalidate_lpi(t.vcpu, t.intid);
                Ok(())
            }
            Command::Discard {
                device_id,
                event_id,
            } => self.discard(mem, rd, device_id, event_id),
            Command::Movi {
                device_id,
                event_id,
                icid,
            } => self.movi(mem, rd, device_id, event_id, icid),
            // IHI 0069H 5.3.14 INVALL: COLLECTION_OOR, UNMAPPED_COLLECTION. Test:
            // `invall_errors`.
            Command::Invall { icid } => {
                let vcpu = self
                    .read_collection(mem, icid)?
                    .ok_or(CommandErrorKind::UnmappedCollection { icid })?;
                rd.invalidate_all(vcpu);
                Ok(())
            }
            // IHI 0069H 5.3.22 SYNC: no architected error; an RDbase that is not a vCPU is
            // UNPREDICTABLE, reported as PROCNUM_OOR. Test: `movall_and_sync`.
            Command::Sync { rdbase } => {
                let vcpu = self.processor(rdbase)?;
                rd.sync(vcpu);
                Ok(())
            }
            // IHI 0069H 5.3.20 MOVALL: as SYNC for RDbase1 then RDbase2. Test:
            // `movall_and_sync`.
            Command::Movall { rdbase1, rdbase2 } => {
                let from = self.processor(rdbase1)?;
                let to = self.processor(rdbase2)?;
                if from != to {
                    rd.move_all_lpis(from, to);
                }
                Ok(())
            }
        }
    }

    /// RDbase as a processor number (`GITS_TYPER.PTA == 0`), or `PROCNUM_OOR`.
    fn processor(&self, rdbase: u64) -> Result<u32, CommandErrorKind> {
        if rdbase < u64::from(self.config.vcpus) {
            Ok(rdbase as u32)
        } else {
            Err(CommandErrorKind::ProcnumOor {
                rdbase,
                vcpus: self.config.vcpus,
            })
        }
    }

    /// IHI 0069H 5.3.17 MAPD: checks `DEVICE_OOR` (DeviceID beyond Devbits or the Device
    /// table) then, when V = 1, `ITTSIZE_OOR` (Size + 1 beyond `GITS_TYPER.ID_bits + 1`).
    /// Tests: `mapd_errors`, `flat_and_two_level_device_tables`.
    fn mapd<M: GuestMemory + ?Sized, R: Redistributors + ?Sized>(
        &mut self,
        mem: &M,
        rd: &mut R,
        device_id: u32,
        size: u8,
        itt_addr: u64,
        valid: bool,
    ) -> Result<(), CommandErrorKind> {
        let addr = self.device_entry_addr(mem, device_id)?;
        let entry = if valid {
            let bits = size + 1;
            if bits > self.config.event_id_bits {
                return Err(CommandErrorKind::IttSizeOor {
                    bits,
                    max: self.config.event_id_bits,
                });
            }
            Some(DeviceEntry {
                itt_addr,
                event_id_bits: bits,
            })
        } else {
            None
        };
        self.write_device(mem, device_id, addr, entry)?;
        self.cache.invalidate_device(device_id);
        rd.mapping_changed(&match entry {
            Some(e) => MappingEvent::DeviceMapped {
                device_id,
                itt_addr: e.itt_addr,
                event_id_bits: e.event_id_bits,
            },
            None => MappingEvent::DeviceUnmapped { device_id },
        });
        Ok(())
    }

    /// IHI 0069H 5.3.16 MAPC: checks `COLLECTION_OOR` (ICID beyond the collection ID space or
    /// the Collection table) then, when V = 1, `PROCNUM_OOR`. Test: `mapc_errors`.
    fn mapc<M: GuestMemory + ?Sized, R: Redistributors + ?Sized>(
        &mut self,
        mem: &M,
        rd: &mut R,
        icid: u16,
        rdbase: u64,
        valid: bool,
    ) -> Result<(), CommandErrorKind> {
        let previous = self.read_collection(mem, icid)?;
        let target = if valid {
            Some(self.processor(rdbase)?)
        } else {
            None
        };
        self.write_collection(mem, icid, target)?;
        self.cache.invalidate_collection(icid);
        rd.mapping_changed(&match target {
            Some(vcpu) => MappingEvent::CollectionMapped {
                icid,
                vcpu,
                previous,
            },
            None => MappingEvent::CollectionUnmapped { icid, previous },
        });
        Ok(())
    }

    /// IHI 0069H 5.3.19 MAPTI / 5.3.18 MAPI: checks `DEVICE_OOR`, `COLLECTION_OOR`,
    /// `UNMAPPED_DEVICE`, `ID_OOR`, `PHYSICALID_OOR`, in that order. The collection need not
    /// be mapped yet. A MAPTI over a valid mapping replaces it (reported as
    /// [`MappingEvent::EventUnmapped`] then [`MappingEvent::EventMapped`]).
    /// Tests: `mapti_errors`, `mapti_replaces_mapping`.
    fn mapti<M: GuestMemory + ?Sized, R: Redistributors + ?Sized>(
        &mut self,
        mem: &M,
        rd: &mut R,
        device_id: u32,
        event_id: u32,
        intid: u32,
        icid: u16,
    ) -> Result<(), CommandErrorKind> {
        let dte = self.device_entry(mem, device_id)?;
        let vcpu = self.read_collection(mem, icid)?;
        let dte = dte.ok_or(CommandErrorKind::UnmappedDevice { device_id })?;
        if !dte.covers(event_id) {
            return Err(CommandErrorKind::IdOor {
                device_id,
                event_id,
                bits: dte.event_id_bits,
            });
        }
        if !self.intid_is_lpi(intid) {
            return Err(CommandErrorKind::PhysicalIdOor {
                intid,
                intid_bits: self.config.intid_bits,
            });
        }
        let old = self.read_ite(mem, &dte, event_id)?;
        self.write_ite(mem, &dte, event_id, Some(IttEntry { intid, icid }))?;
        self.cache.invalidate(device_id, event_id);
        if let Some(old) = old {
            rd.mapping_changed(&MappingEvent::EventUnmapped {
                device_id,
                event_id,
                intid: old.intid,
                icid: old.icid,
            });
        }
        rd.mapping_changed(&MappingEvent::EventMapped {
            device_id,
            event_id,
            intid,
            icid,
            vcpu,
        });
        Ok(())
    }

    /// IHI 0069H 5.3.11 DISCARD: checks `DEVICE_OOR`, `UNMAPPED_DEVICE`, `ID_OOR`,
    /// `UNMAPPED_INTERRUPT`, then `UNMAPPED_COLLECTION` for the ITE's collection (the
    /// pseudocode reads the collection to clear the pending state on its redistributor, as
    /// for CLEAR; KVM and QEMU also refuse to discard then). On success clears the pending
    /// state on the collection's target and invalidates the ITE.
    /// Tests: `discard_clears_and_unmaps`, `event_command_errors`.
    fn discard<M: GuestMemory + ?Sized, R: Redistributors + ?Sized>(
        &mut self,
        mem: &M,
        rd: &mut R,
        device_id: u32,
        event_id: u32,
    ) -> Result<(), CommandErrorKind> {
        let (dte, ite) = self.resolve_event(mem, device_id, event_id)?;
        let vcpu = self.collection_target(mem, ite.icid)?;
        self.write_ite(mem, &dte, event_id, None)?;
        self.cache.invalidate(device_id, event_id);
        rd.clear_lpi_pending(vcpu, ite.intid);
        rd.mapping_changed(&MappingEvent::EventUnmapped {
            device_id,
            event_id,
            intid: ite.intid,
            icid: ite.icid,
        });
        Ok(())
    }

    /// IHI 0069H 5.3.21 MOVI: checks `DEVICE_OOR`, `COLLECTION_OOR` (new ICID),
    /// `UNMAPPED_DEVICE`, `ID_OOR`, `UNMAPPED_INTERRUPT`, then `UNMAPPED_COLLECTION` for the
    /// event's current collection and then for the new one (the pseudocode reads both CTEs
    /// to move the pending state between their redistributors; KVM and QEMU check in the
    /// same order). Moves the pending state when the two targets differ.
    /// Tests: `movi_moves_pending_state`, `movi_from_unmapped_collection`.
    fn movi<M: GuestMemory + ?Sized, R: Redistributors + ?Sized>(
        &mut self,
        mem: &M,
        rd: &mut R,
        device_id: u32,
        event_id: u32,
        icid: u16,
    ) -> Result<(), CommandErrorKind> {
        self.device_entry(mem, device_id)?;
        let new_target = self.read_collection(mem, icid)?;
        let (dte, ite) = self.resolve_event(mem, device_id, event_id)?;
        let from = self.collection_target(mem, ite.icid)?;
        let to = new_target.ok_or(CommandErrorKind::UnmappedCollection { icid })?;
        self.write_ite(
            mem,
            &dte,
            event_id,
            Some(IttEntry {
                intid: ite.intid,
                icid,
            }),
        )?;
        self.cache.invalidate(device_id, event_id);
        if from != to {
            rd.move_lpi(from, to, ite.intid);
        }
        rd.mapping_changed(&MappingEvent::EventMoved {
            device_id,
            event_id,
            intid: ite.intid,
            from_icid: ite.icid,
            to_icid: icid,
            from_vcpu: Some(from),
            to_vcpu: to,
        });
        Ok(())
    }
}
