// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! The `passthrough-vmm` command line.

use std::path::PathBuf;

use serde::Serialize;

use crate::layout::{DEFAULT_ITS_BASE, LayoutError, MemoryLayout};

/// The help text.
pub const USAGE: &str = "\
usage: passthrough-vmm --kernel <Image> [options]

Boots an arm64 Linux Image under KVM with a GICv3, an in-kernel vITS, a 16550 console and
an ECAM PCIe host bridge. Exits with the guest's status (see below).

options:
  --kernel <path>       arm64 Image to boot (required)
  --initrd <path>       initramfs (newc cpio, optionally compressed)
  --cmdline <string>    kernel command line (default: \"console=ttyS0 earlycon panic=-1\")
  --mem <MiB>           guest RAM in MiB, even, 64..=65536 (default 512)
  --cpus <n>            vCPUs, 1..=64 (default 1)
  --ram-base <addr>     guest RAM base, 2 MiB aligned (default 0x40000000)
  --its-base <addr>     vITS base address, 64 KiB aligned (default 0x7ff0000, so that
                        GITS_TRANSLATER is at 0x8000040; with --device the doorbell
                        planner chooses it and this is a preference it honours or refuses)
  --report <path>       write the JSON report there (a summary always goes to stderr)
  --device <dev>        a VFIO cdev (/dev/vfio/devices/vfioN) or PCI address (bound to
                        vfio-pci) to pass through at 00:01.0
  --viommu smmuv3       give the guest a virtual SMMUv3 in front of the device (needs
                        --device and a kernel that offers an SMMUv3 vIOMMU): the guest owns
                        stage 1, the device attaches to nested HWPTs that follow its STEs
  --write-through <w>   auto (default): the guest's MSI address reaches the device (per
                        vector MSI IOVA or a table write); off: the kernel's doorbell IOVA
                        stays in the device's table (a negative control: under a guest
                        stage 1 its MSIs fault)
  --its-check <on|off>  on: serve the guest's ITS check requests (a result frame with
                        \"its_request\"): save the in-kernel vITS with the vCPUs paused,
                        compare the vgic-its model's translation of every passed-through
                        vector with the guest's view, replay the model's state in a second
                        VM, answer \"its <tag>\" on the console; report section \"its\"
  -h, --help            this text

exit status: the N of the guest's last \"@@VMM status N\" console line when it powers off
(PSCI SYSTEM_OFF); 3 if it powered off without one; 4 if it reset; 1 on a VMM or KVM
error; 2 on a usage error or when not running on aarch64.
";

/// The command line used when none is given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 earlycon panic=-1";
/// The longest command line arm64 Linux takes (`COMMAND_LINE_SIZE` 2048, with its NUL).
pub const MAX_CMDLINE: usize = 2047;
/// Default RAM in MiB.
pub const DEFAULT_MEM_MIB: u64 = 512;

/// A device to pass through, as given with `--device`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceSpec {
    /// A VFIO device cdev, `/dev/vfio/devices/vfioN`.
    Cdev(PathBuf),
    /// A host PCI address `[DDDD:]BB:DD.F`.
    Pci {
        /// PCI segment.
        domain: u16,
        /// Bus.
        bus: u8,
        /// Device (0..32).
        device: u8,
        /// Function (0..8).
        function: u8,
    },
}

impl DeviceSpec {
    /// Parses a cdev path (anything starting with `/`) or a PCI address.
    pub fn parse(s: &str) -> Option<Self> {
        if s.starts_with('/') {
            return Some(DeviceSpec::Cdev(PathBuf::from(s)));
        }
        let (head, function) = s.rsplit_once('.')?;
        let parts: Vec<&str> = head.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [d, b, v] => (*d, *b, *v),
            [b, v] => ("0", *b, *v),
            _ => return None,
        };
        let hex = |t: &str, max_len: usize| {
            (!t.is_empty() && t.len() <= max_len && t.bytes().all(|c| c.is_ascii_hexdigit()))
                .then(|| u32::from_str_radix(t, 16).ok())
                .flatten()
        };
        let domain = u16::try_from(hex(domain, 4)?).ok()?;
        let bus = u8::try_from(hex(bus, 2)?).ok()?;
        let device = u8::try_from(hex(device, 2)?).ok().filter(|d| *d < 32)?;
        let function = u8::try_from(hex(function, 1)?).ok().filter(|f| *f < 8)?;
        Some(DeviceSpec::Pci {
            domain,
            bus,
            device,
            function,
        })
    }
}

/// A complete VMM configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmmConfig {
    /// Kernel Image.
    pub kernel: PathBuf,
    /// Initramfs.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
    /// RAM in MiB.
    pub mem_mib: u64,
    /// vCPUs.
    pub cpus: u32,
    /// vITS base asked for with `--its-base`; `None` lets the VMM choose (the doorbell
    /// planner with `--device`, else [`DEFAULT_ITS_BASE`]).
    pub its_base: Option<u64>,
    /// Guest RAM base asked for with `--ram-base`; `None` keeps the layout's default.
    pub ram_base: Option<u64>,
    /// Where the JSON report goes.
    pub report: Option<PathBuf>,
    /// The device to pass through.
    pub device: Option<DeviceSpec>,
    /// The guest's virtual IOMMU (`--viommu`).
    pub viommu: Option<ViommuKind>,
    /// `--write-through`.
    pub write_through: WriteThrough,
    /// `--its-check on`: serve the guest's ITS check requests (see `its_check`).
    pub its_check: bool,
}

/// A virtual IOMMU model the VMM can give its guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ViommuKind {
    /// An Arm SMMUv3 (`vsmmuv3`), accelerated by iommufd nesting.
    SmmuV3,
}

/// Whether the guest's MSI address is written through to the device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteThrough {
    /// The doorbell planner's policy.
    #[default]
    Auto,
    /// Leave the kernel's doorbell IOVA in the device's table (negative control).
    Off,
}

impl VmmConfig {
    /// A configuration with every default and this kernel.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        VmmConfig {
            kernel: kernel.into(),
            initrd: None,
            cmdline: DEFAULT_CMDLINE.to_owned(),
            mem_mib: DEFAULT_MEM_MIB,
            cpus: 1,
            its_base: None,
            ram_base: None,
            report: None,
            device: None,
            viommu: None,
            write_through: WriteThrough::Auto,
            its_check: false,
        }
    }

    /// The memory map for this configuration, not validated: with `--device` the vITS
    /// position (and the host MSI window it may sit in) is the doorbell planner's to decide,
    /// so the VMM validates only after applying the plan.
    pub fn unvalidated_layout(&self) -> MemoryLayout {
        let mut layout = MemoryLayout::new(self.cpus, self.mem_mib.saturating_mul(1 << 20));
        layout.its.base = self.its_base.unwrap_or(DEFAULT_ITS_BASE);
        if self.viommu.is_some() {
            layout.smmu = Some(crate::layout::Region::new(
                crate::layout::DEFAULT_SMMU_BASE,
                crate::layout::SMMU_SIZE,
            ));
        }
        if let Some(base) = self.ram_base {
            layout.ram.base = base;
        }
        layout
    }

    /// The validated memory map for this configuration.
    pub fn layout(&self) -> Result<MemoryLayout, LayoutError> {
        let layout = self.unvalidated_layout();
        layout.validate()?;
        Ok(layout)
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Print [`USAGE`].
    Help,
    /// Boot.
    Run(VmmConfig),
}

/// A command line that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// An option the VMM does not know.
    #[error("unknown option {0:?}")]
    UnknownOption(String),
    /// An option without its value.
    #[error("option {0} needs a value")]
    MissingValue(String),
    /// An option given twice.
    #[error("option {0} given twice")]
    Repeated(String),
    /// A value that cannot be used.
    #[error("invalid value {value:?} for {option}: {reason}")]
    InvalidValue {
        /// The option.
        option: &'static str,
        /// The value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// No `--kernel`.
    #[error("--kernel is required")]
    NoKernel,
    /// An option that only means something for a passed-through device.
    #[error("{0} needs --device")]
    NeedsDevice(&'static str),
}

/// Parses `0x`-prefixed hexadecimal or decimal.
fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && !hex.starts_with('+') => u64::from_str_radix(hex, 16).ok(),
        Some(_) => None,
        None if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        None => None,
    }
}

fn set_once<T>(slot: &mut Option<T>, flag: &str, value: T) -> Result<(), UsageError> {
    if slot.is_some() {
        return Err(UsageError::Repeated(flag.to_owned()));
    }
    *slot = Some(value);
    Ok(())
}

fn invalid(option: &'static str, value: &str, reason: &'static str) -> UsageError {
    UsageError::InvalidValue {
        option,
        value: value.to_owned(),
        reason,
    }
}

/// Parses the arguments after the program name (`--opt value` or `--opt=value`).
///
/// # Example
///
/// ```
/// use passthrough_vmm::cli::{parse_args, Command};
///
/// let args = ["--kernel", "Image", "--mem=256", "--its-base", "0x8000000"];
/// match parse_args(args.iter().map(|s| s.to_string()))? {
///     Command::Run(cfg) => {
///         assert_eq!(cfg.mem_mib, 256);
///         assert_eq!(cfg.layout()?.its_doorbell(), 0x0801_0040);
///     }
///     Command::Help => unreachable!(),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, UsageError> {
    let mut it = args.into_iter();
    let mut kernel = None;
    let mut initrd = None;
    let mut cmdline = None;
    let mut mem = None;
    let mut cpus = None;
    let mut its_base = None;
    let mut ram_base = None;
    let mut report = None;
    let mut device = None;
    let mut viommu = None;
    let mut write_through = None;
    let mut its_check = None;
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(Command::Help);
        }
        if !matches!(
            flag.as_str(),
            "--kernel"
                | "--initrd"
                | "--cmdline"
                | "--mem"
                | "--cpus"
                | "--its-base"
                | "--ram-base"
                | "--report"
                | "--device"
                | "--viommu"
                | "--write-through"
                | "--its-check"
        ) {
            return Err(UsageError::UnknownOption(arg));
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .ok_or_else(|| UsageError::MissingValue(flag.clone()))?,
        };
        match flag.as_str() {
            "--kernel" => set_once(&mut kernel, &flag, PathBuf::from(value))?,
            "--initrd" => set_once(&mut initrd, &flag, PathBuf::from(value))?,
            "--cmdline" => {
                if value.len() > MAX_CMDLINE {
                    return Err(invalid("--cmdline", &value, "longer than 2047 bytes"));
                }
                if value.contains('\0') {
                    return Err(invalid("--cmdline", &value, "contains a NUL"));
                }
                set_once(&mut cmdline, &flag, value)?
            }
            "--mem" => {
                let mib = parse_u64(&value)
                    .filter(|m| (64..=65536).contains(m) && m % 2 == 0)
                    .ok_or_else(|| invalid("--mem", &value, "an even MiB count in 64..=65536"))?;
                set_once(&mut mem, &flag, mib)?
            }
            "--cpus" => {
                let n = parse_u64(&value)
                    .filter(|n| (1..=u64::from(crate::layout::MAX_CPUS)).contains(n))
                    .ok_or_else(|| invalid("--cpus", &value, "1..=64"))?;
                set_once(&mut cpus, &flag, n as u32)?
            }
            "--its-base" => {
                let base = parse_u64(&value)
                    .filter(|b| b % crate::layout::REGION_ALIGN == 0)
                    .ok_or_else(|| {
                        invalid(
                            "--its-base",
                            &value,
                            "a 64 KiB aligned address (0x... or decimal)",
                        )
                    })?;
                set_once(&mut its_base, &flag, base)?
            }
            "--ram-base" => {
                let base = parse_u64(&value)
                    .filter(|b| b % (2 << 20) == 0)
                    .ok_or_else(|| {
                        invalid(
                            "--ram-base",
                            &value,
                            "a 2 MiB aligned address (0x... or decimal)",
                        )
                    })?;
                set_once(&mut ram_base, &flag, base)?
            }
            "--report" => set_once(&mut report, &flag, PathBuf::from(value))?,
            "--device" => {
                let spec = DeviceSpec::parse(&value).ok_or_else(|| {
                    invalid(
                        "--device",
                        &value,
                        "a /dev/vfio/devices/vfioN path or a [DDDD:]BB:DD.F PCI address",
                    )
                })?;
                set_once(&mut device, &flag, spec)?
            }
            "--viommu" => {
                let kind = match value.as_str() {
                    "smmuv3" => ViommuKind::SmmuV3,
                    _ => return Err(invalid("--viommu", &value, "smmuv3")),
                };
                set_once(&mut viommu, &flag, kind)?
            }
            "--write-through" => {
                let w = match value.as_str() {
                    "auto" => WriteThrough::Auto,
                    "off" => WriteThrough::Off,
                    _ => return Err(invalid("--write-through", &value, "auto or off")),
                };
                set_once(&mut write_through, &flag, w)?
            }
            "--its-check" => {
                let on = match value.as_str() {
                    "on" => true,
                    "off" => false,
                    _ => return Err(invalid("--its-check", &value, "on or off")),
                };
                set_once(&mut its_check, &flag, on)?
            }
            _ => unreachable!("filtered above"),
        }
    }
    let mut cfg = VmmConfig::new(kernel.ok_or(UsageError::NoKernel)?);
    cfg.initrd = initrd;
    if let Some(c) = cmdline {
        cfg.cmdline = c;
    }
    if let Some(m) = mem {
        cfg.mem_mib = m;
    }
    if let Some(c) = cpus {
        cfg.cpus = c;
    }
    cfg.its_base = its_base;
    cfg.ram_base = ram_base;
    cfg.report = report;
    if device.is_none() && (viommu.is_some() || write_through.is_some()) {
        return Err(UsageError::NeedsDevice(if viommu.is_some() {
            "--viommu"
        } else {
            "--write-through"
        }));
    }
    cfg.device = device;
    cfg.viommu = viommu;
    cfg.write_through = write_through.unwrap_or_default();
    cfg.its_check = its_check.unwrap_or(false);
    Ok(Command::Run(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, UsageError> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    fn run(args: &[&str]) -> VmmConfig {
        match parse(args).unwrap() {
            Command::Run(c) => c,
            Command::Help => panic!("help"),
        }
    }

    #[test]
    fn its_check_option() {
        assert!(!run(&["--kernel", "/k"]).its_check);
        assert!(run(&["--kernel", "/k", "--its-check", "on"]).its_check);
        assert!(!run(&["--kernel", "/k", "--its-check=off"]).its_check);
        assert!(matches!(
            parse(&["--kernel", "/k", "--its-check", "yes"]),
            Err(UsageError::InvalidValue {
                option: "--its-check",
                ..
            })
        ));
        assert_eq!(
            parse(&["--kernel", "/k", "--its-check", "on", "--its-check", "on"]),
            Err(UsageError::Repeated("--its-check".into()))
        );
    }

    #[test]
    fn viommu_and_write_through_options() {
        let run = |args: &[&str]| match parse(args) {
            Ok(Command::Run(c)) => c,
            other => panic!("{other:?}"),
        };
        let c = run(&[
            "--kernel",
            "/k",
            "--device",
            "0000:00:06.0",
            "--viommu",
            "smmuv3",
            "--write-through=off",
            "--ram-base",
            "0x8000000",
            "--mem",
            "128",
        ]);
        assert_eq!(c.viommu, Some(ViommuKind::SmmuV3));
        assert_eq!(c.write_through, WriteThrough::Off);
        // The vSMMU frame is in the map, clear of RAM at 0x8000000 (the patched-kernel runs).
        let mut l = c.unvalidated_layout();
        assert_eq!(
            l.smmu,
            Some(crate::layout::Region::new(
                crate::layout::DEFAULT_SMMU_BASE,
                crate::layout::SMMU_SIZE
            ))
        );
        l.host_msi_window = None;
        l.its.base = 0x07f0_0000;
        l.validate().unwrap();
        let plain = run(&["--kernel", "/k", "--device", "0000:00:06.0"]);
        assert_eq!(
            (plain.viommu, plain.write_through),
            (None, WriteThrough::Auto)
        );
        assert_eq!(plain.unvalidated_layout().smmu, None);
        assert_eq!(
            parse(&["--kernel", "/k", "--viommu", "smmuv3"]),
            Err(UsageError::NeedsDevice("--viommu"))
        );
        assert_eq!(
            parse(&["--kernel", "/k", "--write-through", "off"]),
            Err(UsageError::NeedsDevice("--write-through"))
        );
        for bad in [&["--viommu", "vtd"][..], &["--write-through", "maybe"]] {
            let mut args = vec!["--kernel", "/k", "--device", "0000:00:06.0"];
            args.extend_from_slice(bad);
            assert!(parse(&args).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults() {
        let c = run(&["--kernel", "/k"]);
        assert_eq!(c, VmmConfig::new("/k"));
        assert_eq!(c.cmdline, DEFAULT_CMDLINE);
        assert_eq!((c.mem_mib, c.cpus, c.its_base), (512, 1, None));
        let l = c.layout().unwrap();
        assert_eq!(l.its_doorbell(), 0x0800_0040);
        assert_eq!(l.ram.size, 512 << 20);
    }

    #[test]
    fn every_option() {
        let c = run(&[
            "--kernel=/k",
            "--initrd",
            "/i",
            "--cmdline",
            "console=ttyS0 quiet",
            "--mem",
            "256",
            "--cpus=2",
            "--its-base",
            "0x80f0000",
            "--ram-base",
            "0x8000000",
            "--report",
            "/r.json",
            "--device",
            "/dev/vfio/devices/vfio0",
        ]);
        assert_eq!(c.initrd.as_deref(), Some(std::path::Path::new("/i")));
        assert_eq!(c.cmdline, "console=ttyS0 quiet");
        assert_eq!((c.mem_mib, c.cpus, c.its_base), (256, 2, Some(0x080f_0000)));
        assert_eq!(c.ram_base, Some(0x0800_0000));
        assert_eq!(c.report.as_deref(), Some(std::path::Path::new("/r.json")));
        assert_eq!(
            c.device,
            Some(DeviceSpec::Cdev("/dev/vfio/devices/vfio0".into()))
        );
        // A value containing '=' after --opt=.
        assert_eq!(
            run(&["--kernel", "/k", "--cmdline=a=b c=d"]).cmdline,
            "a=b c=d"
        );
        assert_eq!(
            run(&["--kernel", "/k", "--its-base", "134152192"])
                .its_base
                .unwrap_or_default(),
            0x07ff_0000
        );
    }

    #[test]
    fn device_addresses() {
        assert_eq!(
            DeviceSpec::parse("0000:00:06.0"),
            Some(DeviceSpec::Pci {
                domain: 0,
                bus: 0,
                device: 6,
                function: 0
            })
        );
        assert_eq!(
            DeviceSpec::parse("1f:1f.7"),
            Some(DeviceSpec::Pci {
                domain: 0,
                bus: 0x1f,
                device: 0x1f,
                function: 7
            })
        );
        for bad in [
            "",
            "00:20.0",
            "00:00.8",
            "0:0:0:0.0",
            "00:00",
            "zz:00.0",
            "00:00.",
            "10000:00:00.0",
            "+1:00.0",
        ] {
            assert_eq!(DeviceSpec::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn usage_errors() {
        assert_eq!(parse(&[]), Err(UsageError::NoKernel));
        assert_eq!(parse(&["-h"]), Ok(Command::Help));
        assert_eq!(parse(&["--kernel", "/k", "--help"]), Ok(Command::Help));
        assert_eq!(
            parse(&["--kernel"]),
            Err(UsageError::MissingValue("--kernel".into()))
        );
        assert_eq!(
            parse(&["--kernel", "/k", "--kernel", "/j"]),
            Err(UsageError::Repeated("--kernel".into()))
        );
        assert_eq!(
            parse(&["--frob"]),
            Err(UsageError::UnknownOption("--frob".into()))
        );
        assert_eq!(
            parse(&["Image"]),
            Err(UsageError::UnknownOption("Image".into()))
        );
        let long = "x".repeat(MAX_CMDLINE + 1);
        for bad in [
            &["--mem", "63"][..],
            &["--mem", "65"],
            &["--mem", "65538"],
            &["--mem", "-2"],
            &["--mem", "1e3"],
            &["--mem", ""],
            &["--cpus", "0"],
            &["--cpus", "65"],
            &["--cpus", "0x"],
            &["--its-base", "0x7ff8000"],
            &["--its-base", "0x+10000"],
            &["--its-base", "0x1_0000"],
            &["--its-base", "0x10000000000000000"],
            &["--ram-base", "0x8010000"],
            &["--ram-base", "x"],
            &["--device", "eth0"],
            &["--cmdline", &long],
            &["--cmdline", "a\0b"],
        ] {
            let mut args = vec!["--kernel", "/k"];
            args.extend_from_slice(bad);
            assert!(
                matches!(parse(&args), Err(UsageError::InvalidValue { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn layout_errors_surface_from_config() {
        let mut c = VmmConfig::new("/k");
        c.its_base = Some(0x0600_0000); // on the UART
        assert!(c.layout().is_err());
        c.its_base = Some(0x4000_0000); // in RAM
        assert!(c.layout().is_err());
    }
}
