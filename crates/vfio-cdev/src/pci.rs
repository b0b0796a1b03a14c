// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! PCI addresses and the sysfs lookups from a PCI device to its VFIO cdev and back.
//!
//! A device bound to vfio-pci with `CONFIG_VFIO_DEVICE_CDEV` has exactly one entry
//! `/sys/bus/pci/devices/<bdf>/vfio-dev/vfioN`, and its cdev is `/dev/vfio/devices/vfioN`;
//! `/sys/class/vfio-dev/vfioN/device` links back to the PCI device.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A PCI address: domain (segment), bus, device, function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    /// PCI domain (segment group).
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device number, 0..=31.
    pub device: u8,
    /// Function number, 0..=7.
    pub function: u8,
}

impl PciAddress {
    /// The routing ID (`bus << 8 | device << 3 | function`): what an SMMU StreamID or an ITS
    /// DeviceID is derived from.
    pub fn rid(&self) -> u16 {
        (u16::from(self.bus) << 8) | (u16::from(self.device) << 3) | u16::from(self.function)
    }
}

impl std::str::FromStr for PciAddress {
    type Err = Error;

    /// Parses `dddd:bb:dd.f` or `bb:dd.f` (hex, as lspci and sysfs print them).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::BadPciAddress {
            input: s.to_string(),
        };
        let (rest, function) = s.rsplit_once('.').ok_or_else(bad)?;
        let mut parts: Vec<&str> = rest.split(':').collect();
        let (domain, bus, device) = match parts.len() {
            2 => ("0", parts.remove(0), parts.remove(0)),
            3 => (parts[0], parts[1], parts[2]),
            _ => return Err(bad()),
        };
        let hex = |f: &str, max_len: usize| {
            if f.is_empty() || f.len() > max_len || !f.bytes().all(|b| b.is_ascii_hexdigit()) {
                None
            } else {
                u32::from_str_radix(f, 16).ok()
            }
        };
        let domain = hex(domain, 8).ok_or_else(bad)?;
        let bus = hex(bus, 2).ok_or_else(bad)? as u8;
        let device = hex(device, 2).filter(|d| *d < 32).ok_or_else(bad)? as u8;
        let function = hex(function, 1).filter(|f| *f < 8).ok_or_else(bad)? as u8;
        Ok(PciAddress {
            domain,
            bus,
            device,
            function,
        })
    }
}

impl std::fmt::Display for PciAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

/// Where sysfs and devtmpfs are; the defaults are `/sys` and `/dev`. Tests point them at a
/// fake tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysRoots {
    /// The sysfs mount.
    pub sys: PathBuf,
    /// The devtmpfs mount.
    pub dev: PathBuf,
}

impl Default for SysRoots {
    fn default() -> Self {
        SysRoots {
            sys: PathBuf::from("/sys"),
            dev: PathBuf::from("/dev"),
        }
    }
}

impl SysRoots {
    /// The sysfs directory of a PCI device.
    pub fn pci_device_dir(&self, addr: &PciAddress) -> PathBuf {
        self.sys.join("bus/pci/devices").join(addr.to_string())
    }

    /// The VFIO cdev of a PCI device bound to vfio-pci.
    pub fn cdev_of_pci(&self, addr: &PciAddress) -> Result<PathBuf> {
        let dir = self.pci_device_dir(addr).join("vfio-dev");
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NoCdev {
                    bdf: addr.to_string(),
                    path: dir.clone(),
                }
            } else {
                Error::Sysfs {
                    path: dir.clone(),
                    source: e,
                }
            }
        })?;
        let mut found = None;
        for entry in entries.take(64) {
            let entry = entry.map_err(|source| Error::Sysfs {
                path: dir.clone(),
                source,
            })?;
            let name = entry.file_name();
            if let Some(n) = name.to_str()
                && n.starts_with("vfio")
                && n[4..].bytes().all(|b| b.is_ascii_digit())
                && n.len() > 4
            {
                if found.is_some() {
                    return Err(Error::NoCdev {
                        bdf: addr.to_string(),
                        path: dir,
                    });
                }
                found = Some(n.to_string());
            }
        }
        let name = found.ok_or_else(|| Error::NoCdev {
            bdf: addr.to_string(),
            path: dir.clone(),
        })?;
        Ok(self.dev.join("vfio/devices").join(name))
    }

    /// The sysfs directory of the device behind a cdev path (`.../vfioN`), resolved through
    /// `/sys/class/vfio-dev/vfioN/device`.
    pub fn device_dir_of_cdev(&self, cdev: &Path) -> Result<PathBuf> {
        let name = cdev.file_name().ok_or_else(|| Error::Sysfs {
            path: cdev.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
        let link = self.sys.join("class/vfio-dev").join(name).join("device");
        std::fs::canonicalize(&link).map_err(|source| Error::Sysfs { path: link, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let a: PciAddress = "0000:00:02.0".parse().unwrap();
        assert_eq!(
            a,
            PciAddress {
                domain: 0,
                bus: 0,
                device: 2,
                function: 0
            }
        );
        assert_eq!(a.to_string(), "0000:00:02.0");
        let b: PciAddress = "3a:1f.7".parse().unwrap();
        assert_eq!(b.to_string(), "0000:3a:1f.7");
        assert_eq!(b.rid(), 0x3aff);
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "0000:00:02",
            "00:20.0",
            "00:02.8",
            "x:00:02.0",
            "0:0:0:0.0",
            "00:02.00",
            "000:00:02.0:1",
            "00:002.0",
            "+0:02.0",
        ] {
            assert!(s.parse::<PciAddress>().is_err(), "{s}");
        }
    }

    #[test]
    fn cdev_lookup_in_fake_sysfs() {
        let root = std::env::temp_dir().join(format!("vfio-cdev-pci-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let roots = SysRoots {
            sys: root.join("sys"),
            dev: root.join("dev"),
        };
        let a: PciAddress = "0000:00:02.0".parse().unwrap();
        // Not bound to vfio-pci yet: a clear error naming the device.
        std::fs::create_dir_all(roots.pci_device_dir(&a)).unwrap();
        let e = roots.cdev_of_pci(&a).unwrap_err();
        assert!(e.to_string().contains("is it bound to vfio-pci"), "{e}");
        std::fs::create_dir_all(roots.pci_device_dir(&a).join("vfio-dev/vfio3")).unwrap();
        assert_eq!(
            roots.cdev_of_pci(&a).unwrap(),
            root.join("dev/vfio/devices/vfio3")
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
