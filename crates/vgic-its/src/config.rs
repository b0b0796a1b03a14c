// Copyright 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! ITS configuration: what the emulated ITS advertises in `GITS_TYPER` and how it behaves.
//!
//! Every value here is chosen by the VMM, never by the guest, and is fixed for the lifetime of
//! an [`Its`](crate::Its). [`ItsConfigBuilder::build`] checks each value against the range the
//! architecture allows (IHI 0069H ch. 12 GITS_TYPER) so that the rest of the crate can rely
//! on them.

use serde::{Deserialize, Serialize};

use crate::abi::{TableFormat, kvm};

/// Smallest number of INTID bits that still leaves room for LPIs (INTID 8192 needs 14 bits).
pub const MIN_INTID_BITS: u8 = 14;
/// First LPI INTID (IHI 0069H ch. 1: LPIs start at 8192).
pub const LPI_BASE: u32 = 8192;
/// Size in bytes of one entry of the Device and Collection tables this ITS writes.
///
/// The format is IMPLEMENTATION DEFINED (IHI 0069H §5.2): see [`crate::tables`].
pub const TABLE_ENTRY_SIZE: u8 = 8;
/// Smallest ITT entry size this ITS can use: the ITE format of [`crate::tables::itt`] needs
/// eight bytes.
pub const MIN_ITT_ENTRY_SIZE: u8 = 8;
/// Largest ITT entry size `GITS_TYPER.ITT_entry_size` can express (4 bits, minus one).
pub const MAX_ITT_ENTRY_SIZE: u8 = 16;
/// Largest translation-cache capacity accepted by the builder.
pub const MAX_CACHE_ENTRIES: usize = 1 << 16;
/// Command slots of the largest queue `GITS_CBASER` can describe (256 pages of 4 KiB).
pub const MAX_QUEUE_COMMANDS: usize = 256 * 4096 / 32;
/// Default of [`ItsConfigBuilder::commands_per_call`]: at most this many commands run in one
/// `GITS_CWRITER`/`GITS_CTLR` write (one MMIO exit), about 0.1-0.3 ms of MAPDs on the
/// development machine; Linux queues a handful per write.
pub const DEFAULT_COMMANDS_PER_CALL: usize = 1024;

fn default_commands_per_call() -> usize {
    DEFAULT_COMMANDS_PER_CALL
}

/// What the ITS does when a command fails one of the spec's checks.
///
/// IHI 0069H §5.3 (command errors): the ITS either ignores the failing command and goes on,
/// or stalls the queue and reports `GITS_CREADR.Stalled == 1` until software writes
/// `GITS_CWRITER.Retry`. Both are allowed; the choice is the VMM's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandErrorPolicy {
    /// Stop at the failing command: `GITS_CREADR` keeps pointing at it and
    /// `GITS_CREADR.Stalled` reads 1 (the default: the error is visible to the guest).
    #[default]
    Stall,
    /// Skip the failing command and go on with the next one (what KVM's vITS does).
    Skip,
}

/// Errors returned by [`ItsConfigBuilder::build`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The number of vCPUs is zero or above what `GICR_TYPER.Processor_Number` (16 bits) holds.
    #[error("ITS config: vcpu count {0} is outside 1..=65536")]
    VcpuCount(u32),
    /// DeviceID bits outside 1..=32 (`GITS_TYPER.Devbits` is 5 bits, minus one).
    #[error("ITS config: DeviceID bits {0} is outside 1..=32")]
    DeviceIdBits(u8),
    /// EventID bits outside 1..=32 (`GITS_TYPER.ID_bits` is 5 bits, minus one).
    #[error("ITS config: EventID bits {0} is outside 1..=32")]
    EventIdBits(u8),
    /// INTID bits outside 14..=32 (`GICD_TYPER.IDbits`; LPIs need at least 14).
    #[error("ITS config: INTID bits {0} is outside 14..=32")]
    IntidBits(u8),
    /// ITT entry size outside 8..=16 bytes.
    #[error("ITS config: ITT entry size {0} is outside 8..=16 bytes")]
    IttEntrySize(u8),
    /// Collection ID bits outside 1..=16 (`GITS_TYPER.CIDbits`, ICIDs are 16 bits).
    #[error("ITS config: collection ID bits {0} is outside 1..=16")]
    CollectionIdBits(u8),
    /// Translation-cache capacity is not a power of two in 1..=65536.
    #[error("ITS config: translation cache size {0} is not a power of two in 1..=65536")]
    CacheEntries(usize),
    /// Commands per call outside 1..=32768 (the largest queue).
    #[error("ITS config: commands per call {0} is outside 1..=32768")]
    CommandsPerCall(usize),
    /// The table format cannot hold this geometry (KVM's ABI: 8-byte ITEs, no HCC).
    #[error("ITS config: table format {format:?}: {reason}")]
    TableFormat {
        /// The format asked for.
        format: TableFormat,
        /// What does not fit.
        reason: &'static str,
    },
}

/// Fixed configuration of one emulated ITS.
///
/// Build it with [`ItsConfig::builder`]. The fields map onto `GITS_TYPER` (IHI 0069H
/// ch. 12) as documented on each accessor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItsConfig {
    pub(crate) vcpus: u32,
    pub(crate) device_id_bits: u8,
    pub(crate) event_id_bits: u8,
    pub(crate) intid_bits: u8,
    pub(crate) itt_entry_size: u8,
    pub(crate) collection_id_bits: u8,
    pub(crate) hcc: u8,
    pub(crate) error_policy: CommandErrorPolicy,
    pub(crate) cache_entries: usize,
    pub(crate) iidr: u32,
    #[serde(default = "default_commands_per_call")]
    pub(crate) commands_per_call: usize,
    #[serde(default)]
    pub(crate) table_format: TableFormat,
}

impl ItsConfig {
    /// Start a builder with the defaults documented on [`ItsConfigBuilder`].
    pub fn builder() -> ItsConfigBuilder {
        ItsConfigBuilder::default()
    }

    /// Number of redistributors (vCPUs) that collections may target; processor numbers are
    /// `0..vcpus`.
    pub fn vcpus(&self) -> u32 {
        self.vcpus
    }

    /// DeviceID bits (`GITS_TYPER.Devbits + 1`).
    pub fn device_id_bits(&self) -> u8 {
        self.device_id_bits
    }

    /// EventID bits (`GITS_TYPER.ID_bits + 1`): the largest MAPD `Size + 1`.
    pub fn event_id_bits(&self) -> u8 {
        self.event_id_bits
    }

    /// INTID bits of the GIC (`GICD_TYPER.IDbits + 1`): MAPTI's pINTID must be below
    /// `2^intid_bits`.
    pub fn intid_bits(&self) -> u8 {
        self.intid_bits
    }

    /// Bytes per ITT entry (`GITS_TYPER.ITT_entry_size + 1`).
    pub fn itt_entry_size(&self) -> u8 {
        self.itt_entry_size
    }

    /// Collection ID bits: ICIDs are `0..2^collection_id_bits`. Reported as `GITS_TYPER.CIL = 1`
    /// and `CIDbits = bits - 1` when below 16, and `CIL = 0` at 16.
    pub fn collection_id_bits(&self) -> u8 {
        self.collection_id_bits
    }

    /// Collections held on chip (`GITS_TYPER.HCC`): ICIDs below this need no memory.
    pub fn hcc(&self) -> u8 {
        self.hcc
    }

    /// Number of ICIDs the ITS accepts (`2^collection_id_bits`).
    pub fn collection_count(&self) -> u32 {
        1u32 << self.collection_id_bits
    }

    /// Number of collections held on chip: `min(HCC, collection_count())`.
    pub fn on_chip_collections(&self) -> u32 {
        u32::from(self.hcc).min(self.collection_count())
    }

    /// Whether some ICIDs live in a Collection table in guest memory, that is whether
    /// `GITS_BASER1` is implemented with `Type = Collections`.
    pub fn collections_in_memory(&self) -> bool {
        self.collection_count() > u32::from(self.hcc)
    }

    /// What a failing command does to the queue.
    pub fn error_policy(&self) -> CommandErrorPolicy {
        self.error_policy
    }

    /// Capacity of the translation cache, in entries.
    pub fn cache_entries(&self) -> usize {
        self.cache_entries
    }

    /// Value of `GITS_IIDR`.
    pub fn iidr(&self) -> u32 {
        self.iidr
    }

    /// Most commands one call of [`Its::process_commands`](crate::Its::process_commands)
    /// (and so one `GITS_CWRITER` or `GITS_CTLR` write) executes.
    pub fn commands_per_call(&self) -> usize {
        self.commands_per_call
    }

    /// The layout of the tables in guest memory ([`crate::abi`]).
    pub fn table_format(&self) -> TableFormat {
        self.table_format
    }

    /// Whether the ITS holds every collection itself rather than in a Collection table
    /// indexed by ICID (the KVM format: its Collection table is a list written at save).
    pub fn collections_held(&self) -> bool {
        !self.table_format.collection_table_indexed()
    }

    /// Check every field against the architectural range. Also used on restore, where the
    /// configuration comes from a snapshot and may be garbage.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let c = self;
        if c.vcpus == 0 || c.vcpus > 1 << 16 {
            return Err(ConfigError::VcpuCount(c.vcpus));
        }
        if !(1..=32).contains(&c.device_id_bits) {
            return Err(ConfigError::DeviceIdBits(c.device_id_bits));
        }
        if !(1..=32).contains(&c.event_id_bits) {
            return Err(ConfigError::EventIdBits(c.event_id_bits));
        }
        if !(MIN_INTID_BITS..=32).contains(&c.intid_bits) {
            return Err(ConfigError::IntidBits(c.intid_bits));
        }
        if !(MIN_ITT_ENTRY_SIZE..=MAX_ITT_ENTRY_SIZE).contains(&c.itt_entry_size) {
            return Err(ConfigError::IttEntrySize(c.itt_entry_size));
        }
        if !(1..=16).contains(&c.collection_id_bits) {
            return Err(ConfigError::CollectionIdBits(c.collection_id_bits));
        }
        if !c.cache_entries.is_power_of_two() || c.cache_entries > MAX_CACHE_ENTRIES {
            return Err(ConfigError::CacheEntries(c.cache_entries));
        }
        if !(1..=MAX_QUEUE_COMMANDS).contains(&c.commands_per_call) {
            return Err(ConfigError::CommandsPerCall(c.commands_per_call));
        }
        let format = c.table_format;
        if !format.ite_bytes().contains(&c.itt_entry_size) {
            return Err(ConfigError::TableFormat {
                format,
                reason: "the ITT entry size is not one the format has",
            });
        }
        if c.collections_held() && c.hcc != 0 {
            // KVM's ITS holds every collection and still reports HCC = 0; an HCC would
            // promise on-chip collections that a save could not tell from held ones.
            return Err(ConfigError::TableFormat {
                format,
                reason: "collections are held by the ITS, HCC must be 0",
            });
        }
        Ok(())
    }
}

/// Builder for [`ItsConfig`].
///
/// Defaults: 1 vCPU, 16 DeviceID bits, 16 EventID bits, 16 INTID bits, 8-byte ITT entries,
/// 16 collection ID bits, HCC = 0 (all collections in memory), [`CommandErrorPolicy::Stall`],
/// a 1024-entry translation cache, `GITS_IIDR = 0x0000_043b` (Implementer JEP106 Arm,
/// revision 0, product 0) and [`DEFAULT_COMMANDS_PER_CALL`] commands per call.
#[derive(Clone, Debug)]
pub struct ItsConfigBuilder {
    config: ItsConfig,
}

impl Default for ItsConfigBuilder {
    fn default() -> Self {
        ItsConfigBuilder {
            config: ItsConfig {
                vcpus: 1,
                device_id_bits: 16,
                event_id_bits: 16,
                intid_bits: 16,
                itt_entry_size: 8,
                collection_id_bits: 16,
                hcc: 0,
                error_policy: CommandErrorPolicy::Stall,
                cache_entries: 1024,
                iidr: 0x0000_043b,
                commands_per_call: DEFAULT_COMMANDS_PER_CALL,
                table_format: TableFormat::Native,
            },
        }
    }
}

impl ItsConfigBuilder {
    /// Number of vCPUs (redistributors) collections may target, 1..=65536.
    pub fn vcpus(mut self, vcpus: u32) -> Self {
        self.config.vcpus = vcpus;
        self
    }

    /// DeviceID bits, 1..=32.
    pub fn device_id_bits(mut self, bits: u8) -> Self {
        self.config.device_id_bits = bits;
        self
    }

    /// EventID bits, 1..=32.
    pub fn event_id_bits(mut self, bits: u8) -> Self {
        self.config.event_id_bits = bits;
        self
    }

    /// INTID bits of the GIC (`GICD_TYPER.IDbits + 1`), 14..=32.
    pub fn intid_bits(mut self, bits: u8) -> Self {
        self.config.intid_bits = bits;
        self
    }

    /// Bytes per ITT entry, 8..=16.
    pub fn itt_entry_size(mut self, bytes: u8) -> Self {
        self.config.itt_entry_size = bytes;
        self
    }

    /// Collection ID bits, 1..=16.
    pub fn collection_id_bits(mut self, bits: u8) -> Self {
        self.config.collection_id_bits = bits;
        self
    }

    /// Collections held on chip (`GITS_TYPER.HCC`). When `2^collection_id_bits <= hcc`, every
    /// collection is on chip and `GITS_BASER1` is not implemented.
    pub fn hcc(mut self, hcc: u8) -> Self {
        self.config.hcc = hcc;
        self
    }

    /// Hold every collection on chip: clamps the collection ID bits to 7 (HCC is 8 bits) and
    /// sets HCC to the collection count.
    pub fn all_collections_on_chip(mut self) -> Self {
        let bits = self.config.collection_id_bits.clamp(1, 7);
        self.config.collection_id_bits = bits;
        // bits <= 7, so the count is at most 128 and fits HCC's 8 bits.
        self.config.hcc = 1u8 << bits;
        self
    }

    /// What a failing command does to the queue.
    pub fn error_policy(mut self, policy: CommandErrorPolicy) -> Self {
        self.config.error_policy = policy;
        self
    }

    /// Translation cache capacity in entries (power of two, 1..=65536).
    pub fn cache_entries(mut self, entries: usize) -> Self {
        self.config.cache_entries = entries;
        self
    }

    /// Value reported in `GITS_IIDR`.
    pub fn iidr(mut self, iidr: u32) -> Self {
        self.config.iidr = iidr;
        self
    }

    /// Most commands one MMIO exit executes, 1..=32768 (see
    /// [`Its::process_commands`](crate::Its::process_commands)).
    pub fn commands_per_call(mut self, commands: usize) -> Self {
        self.config.commands_per_call = commands;
        self
    }

    /// The layout of the tables in guest memory (default [`TableFormat::Native`]).
    pub fn table_format(mut self, format: TableFormat) -> Self {
        self.config.table_format = format;
        self
    }

    /// The ITS KVM presents (Linux `arch/arm64/kvm/vgic/vgic-its.c`, ABI revision 0):
    /// 16 DeviceID, EventID and INTID bits, 8-byte ITEs, 16-bit ICIDs all held by the ITS
    /// (HCC 0), failing commands skipped, `GITS_IIDR` `0x4b00_043b`, tables in
    /// [`TableFormat::KvmRev0`]. `GITS_TYPER` then reads exactly as KVM's
    /// ([`kvm::KVM_TYPER`]). The vCPU count stays the caller's.
    pub fn kvm_abi(mut self) -> Self {
        let c = &mut self.config;
        c.device_id_bits = kvm::KVM_DEVICE_ID_BITS;
        c.event_id_bits = kvm::KVM_EVENT_ID_BITS;
        c.intid_bits = kvm::KVM_INTID_BITS;
        c.itt_entry_size = kvm::ENTRY_BYTES as u8;
        c.collection_id_bits = 16;
        c.hcc = 0;
        c.error_policy = CommandErrorPolicy::Skip;
        c.iidr = kvm::KVM_IIDR_REV0;
        c.table_format = TableFormat::KvmRev0;
        self
    }

    /// Check every value and return the configuration.
    pub fn build(self) -> Result<ItsConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = ItsConfig::builder().build().unwrap();
        assert_eq!(c.vcpus(), 1);
        assert!(c.collections_in_memory());
        assert_eq!(c.on_chip_collections(), 0);
    }

    #[test]
    fn ranges_are_checked() {
        let b = ItsConfig::builder;
        assert_eq!(b().vcpus(0).build(), Err(ConfigError::VcpuCount(0)));
        assert_eq!(b().vcpus(65537).build(), Err(ConfigError::VcpuCount(65537)));
        assert_eq!(
            b().device_id_bits(0).build(),
            Err(ConfigError::DeviceIdBits(0))
        );
        assert_eq!(
            b().device_id_bits(33).build(),
            Err(ConfigError::DeviceIdBits(33))
        );
        assert_eq!(
            b().event_id_bits(33).build(),
            Err(ConfigError::EventIdBits(33))
        );
        assert_eq!(b().intid_bits(13).build(), Err(ConfigError::IntidBits(13)));
        assert_eq!(
            b().itt_entry_size(7).build(),
            Err(ConfigError::IttEntrySize(7))
        );
        assert_eq!(
            b().itt_entry_size(17).build(),
            Err(ConfigError::IttEntrySize(17))
        );
        assert_eq!(
            b().collection_id_bits(17).build(),
            Err(ConfigError::CollectionIdBits(17))
        );
        assert_eq!(
            b().cache_entries(3).build(),
            Err(ConfigError::CacheEntries(3))
        );
        assert_eq!(
            b().commands_per_call(0).build(),
            Err(ConfigError::CommandsPerCall(0))
        );
        assert_eq!(
            b().commands_per_call(32769).build(),
            Err(ConfigError::CommandsPerCall(32769))
        );
        assert!(b().commands_per_call(32768).build().is_ok());
        assert!(b().vcpus(65536).intid_bits(32).build().is_ok());
    }

    #[test]
    fn all_on_chip_needs_no_collection_table() {
        let c = ItsConfig::builder()
            .collection_id_bits(4)
            .all_collections_on_chip()
            .build()
            .unwrap();
        assert_eq!(c.hcc(), 16);
        assert!(!c.collections_in_memory());
        let c = ItsConfig::builder()
            .all_collections_on_chip()
            .build()
            .unwrap();
        assert_eq!(c.collection_id_bits(), 7);
        assert_eq!(c.hcc(), 128);
        assert!(!c.collections_in_memory());
    }

    #[test]
    fn kvm_abi_preset_and_its_limits() {
        let c = ItsConfig::builder().vcpus(2).kvm_abi().build().unwrap();
        assert_eq!(c.table_format(), TableFormat::KvmRev0);
        assert!(c.collections_held());
        assert_eq!(c.iidr(), 0x4b00_043b);
        assert_eq!(crate::Its::new(c).typer(), kvm::KVM_TYPER);
        let k = || ItsConfig::builder().kvm_abi();
        assert!(matches!(
            k().itt_entry_size(16).build(),
            Err(ConfigError::TableFormat { .. })
        ));
        assert!(matches!(
            k().hcc(4).build(),
            Err(ConfigError::TableFormat { .. })
        ));
        assert!(!ItsConfig::builder().build().unwrap().collections_held());
    }

    #[test]
    fn partial_hcc_keeps_memory_table() {
        let c = ItsConfig::builder()
            .collection_id_bits(8)
            .hcc(4)
            .build()
            .unwrap();
        assert_eq!(c.on_chip_collections(), 4);
        assert!(c.collections_in_memory());
    }
}
