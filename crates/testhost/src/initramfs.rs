// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! An initramfs described as a tree of entries, written as one newc archive.
//!
//! Entries are kept sorted by path, which puts every directory before its contents as the
//! kernel's unpacker needs (a parent path is a prefix of its children's, and a prefix sorts
//! first). Parents are created on demand with mode 0755.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::cpio::{self, Error, NewcWriter, open_host_file, validate_path};

/// What a regular file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// Bytes held in memory.
    Bytes(Vec<u8>),
    /// A file on the host, read when the archive is written.
    HostFile(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir { mode: u32 },
    File { mode: u32, contents: Contents },
    Symlink { target: String },
    CharDevice { mode: u32, major: u32, minor: u32 },
}

/// The file tree of an initramfs.
///
/// # Example
///
/// ```
/// use testhost::initramfs::Initramfs;
///
/// let mut fs = Initramfs::new();
/// fs.bytes("/init", 0o755, b"#!/bin/busybox sh\npoweroff -f\n".to_vec()).unwrap();
/// fs.symlink("/bin/sh", "busybox").unwrap();
/// fs.char_device("/dev/console", 0o600, 5, 1).unwrap();
/// assert!(fs.contains("/bin"));
/// let archive = fs.write_to(Vec::new()).unwrap();
/// assert!(archive.starts_with(b"070701"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Initramfs {
    nodes: BTreeMap<String, Node>,
}

/// Turns a guest path (`/bin/sh` or `bin/sh`) into an archive path (`bin/sh`).
fn archive_path(path: &str) -> Result<String, Error> {
    let rel = path.strip_prefix('/').unwrap_or(path);
    validate_path(rel)?;
    Ok(rel.to_owned())
}

impl Initramfs {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries, directories included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the tree has no entries.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether `path` (guest path, with or without the leading `/`) is present.
    pub fn contains(&self, path: &str) -> bool {
        let rel = path.strip_prefix('/').unwrap_or(path);
        self.nodes.contains_key(rel)
    }

    /// Guest paths of all entries, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// Adds a directory (and its parents). Adding an existing directory again sets its
    /// mode; a directory over a file is [`Error::Duplicate`].
    pub fn dir(&mut self, path: &str, mode: u32) -> Result<&mut Self, Error> {
        let rel = archive_path(path)?;
        if mode & !0o7777 != 0 {
            return Err(Error::InvalidMode { path: rel, mode });
        }
        self.parents(&rel)?;
        match self.nodes.get_mut(&rel) {
            Some(Node::Dir { mode: m }) => *m = mode,
            Some(_) => return Err(Error::Duplicate { path: rel }),
            None => {
                self.nodes.insert(rel, Node::Dir { mode });
            }
        }
        Ok(self)
    }

    /// Adds a regular file holding `data`.
    pub fn bytes(&mut self, path: &str, mode: u32, data: Vec<u8>) -> Result<&mut Self, Error> {
        self.insert_file(path, mode, Contents::Bytes(data))
    }

    /// Adds a regular file whose contents are read from `host` when the archive is written.
    pub fn host_file(
        &mut self,
        path: &str,
        mode: u32,
        host: impl Into<PathBuf>,
    ) -> Result<&mut Self, Error> {
        self.insert_file(path, mode, Contents::HostFile(host.into()))
    }

    /// Adds a symbolic link `path` -> `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<&mut Self, Error> {
        let rel = archive_path(path)?;
        if target.is_empty() || target.contains('\0') || target.len() > cpio::MAX_PATH_LEN {
            return Err(Error::InvalidTarget {
                path: rel,
                target: target.to_owned(),
                reason: "empty, too long or contains NUL",
            });
        }
        self.insert_new(
            rel,
            Node::Symlink {
                target: target.to_owned(),
            },
        )
    }

    /// Adds a character device node `major:minor`.
    pub fn char_device(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<&mut Self, Error> {
        let rel = archive_path(path)?;
        if mode & !0o7777 != 0 {
            return Err(Error::InvalidMode { path: rel, mode });
        }
        self.insert_new(rel, Node::CharDevice { mode, major, minor })
    }

    fn insert_file(
        &mut self,
        path: &str,
        mode: u32,
        contents: Contents,
    ) -> Result<&mut Self, Error> {
        let rel = archive_path(path)?;
        if mode & !0o7777 != 0 {
            return Err(Error::InvalidMode { path: rel, mode });
        }
        self.insert_new(rel, Node::File { mode, contents })
    }

    fn insert_new(&mut self, rel: String, node: Node) -> Result<&mut Self, Error> {
        if self.nodes.contains_key(&rel) {
            return Err(Error::Duplicate { path: rel });
        }
        self.parents(&rel)?;
        self.nodes.insert(rel, node);
        Ok(self)
    }

    /// Creates the missing parents of `rel`, failing if one exists and is not a directory.
    fn parents(&mut self, rel: &str) -> Result<(), Error> {
        let mut end = 0;
        // `rel` was validated: components are non-empty, so each '/' ends a parent.
        while let Some(pos) = rel[end..].find('/') {
            let parent = &rel[..end + pos];
            match self.nodes.get(parent) {
                Some(Node::Dir { .. }) => {}
                Some(_) => {
                    return Err(Error::ParentNotDirectory {
                        path: rel.to_owned(),
                        parent: parent.to_owned(),
                    });
                }
                None => {
                    self.nodes
                        .insert(parent.to_owned(), Node::Dir { mode: 0o755 });
                }
            }
            end += pos + 1;
        }
        Ok(())
    }

    /// Writes the archive to `out` and returns `out`.
    pub fn write_to<W: Write>(&self, out: W) -> Result<W, Error> {
        let mut w = NewcWriter::new(out);
        for (path, node) in &self.nodes {
            match node {
                Node::Dir { mode } => w.directory(path, *mode)?,
                Node::File {
                    mode,
                    contents: Contents::Bytes(data),
                } => w.file(path, *mode, data)?,
                Node::File {
                    mode,
                    contents: Contents::HostFile(host),
                } => {
                    let (mut file, size) = open_host_file(host, path)?;
                    w.file_from_reader(path, *mode, size, &mut file)?;
                }
                Node::Symlink { target } => w.symlink(path, target)?,
                Node::CharDevice { mode, major, minor } => {
                    w.char_device(path, *mode, *major, *minor)?
                }
            }
        }
        w.finish()
    }

    /// Writes the archive to the host file `dest` (created or truncated) and returns its size.
    pub fn write_file(&self, dest: &Path) -> Result<u64, Error> {
        let file = File::create(dest).map_err(|source| Error::HostFile {
            op: "create",
            host: dest.to_owned(),
            path: String::new(),
            source,
        })?;
        let out = self.write_to(BufWriter::new(file))?;
        let file = out.into_inner().map_err(|e| Error::Io {
            path: dest.display().to_string(),
            source: e.into_error(),
        })?;
        let len = file
            .metadata()
            .map_err(|source| Error::HostFile {
                op: "stat",
                host: dest.to_owned(),
                path: String::new(),
                source,
            })?
            .len();
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::tests::{decode, run_cpio, temp_archive};

    #[test]
    fn parents_are_created_and_sorted_first() {
        let mut fs = Initramfs::new();
        fs.bytes("/testhost/bin/a-b", 0o755, b"x".to_vec()).unwrap();
        fs.bytes("/testhost-x", 0o644, b"y".to_vec()).unwrap();
        fs.bytes("/testhost/plan", 0o644, b"z".to_vec()).unwrap();
        let names: Vec<_> = decode(&fs.write_to(Vec::new()).unwrap())
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(
            names,
            [
                "testhost",
                "testhost-x",
                "testhost/bin",
                "testhost/bin/a-b",
                "testhost/plan"
            ]
        );
    }

    #[test]
    fn duplicates_and_non_directory_parents_are_refused() {
        let mut fs = Initramfs::new();
        fs.bytes("/etc/conf", 0o644, vec![]).unwrap();
        assert!(matches!(
            fs.bytes("etc/conf", 0o644, vec![]),
            Err(Error::Duplicate { .. })
        ));
        assert!(matches!(
            fs.bytes("/etc/conf/x", 0o644, vec![]),
            Err(Error::ParentNotDirectory { parent, .. }) if parent == "etc/conf"
        ));
        assert!(matches!(
            fs.dir("/etc/conf", 0o755),
            Err(Error::Duplicate { .. })
        ));
        // A directory may be declared again, to set its mode.
        fs.dir("/etc", 0o700).unwrap();
        let entries = decode(&fs.write_to(Vec::new()).unwrap());
        assert_eq!(entries[0].mode & 0o7777, 0o700);
        assert_eq!(fs.len(), 2);
    }

    #[test]
    fn invalid_paths_and_modes_are_refused() {
        let mut fs = Initramfs::new();
        assert!(fs.bytes("/", 0o644, vec![]).is_err());
        assert!(fs.bytes("//x", 0o644, vec![]).is_err());
        assert!(fs.bytes("/a/../b", 0o644, vec![]).is_err());
        assert!(fs.bytes("/a", 0o1_0000, vec![]).is_err());
        assert!(fs.symlink("/l", "").is_err());
        assert!(fs.is_empty());
    }

    #[test]
    fn host_files_are_streamed_and_missing_ones_named() {
        let dir = std::env::temp_dir().join(format!("testhost-initramfs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let host = dir.join("payload");
        std::fs::write(&host, vec![7u8; 5000]).unwrap();
        let mut fs = Initramfs::new();
        fs.host_file("/bin/payload", 0o755, &host).unwrap();
        let entries = decode(&fs.write_to(Vec::new()).unwrap());
        assert_eq!(entries[1].data, vec![7u8; 5000]);

        fs.host_file("/bin/missing", 0o755, dir.join("missing"))
            .unwrap();
        let err = fs.write_to(Vec::new()).unwrap_err();
        assert!(
            matches!(&err, Error::HostFile { op: "open", path, .. } if path == "bin/missing"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn system_cpio_agrees_with_the_tree() {
        let mut fs = Initramfs::new();
        fs.bytes("/init", 0o755, b"#!/bin/sh\n".to_vec()).unwrap();
        fs.symlink("/bin/sh", "busybox").unwrap();
        fs.char_device("/dev/console", 0o600, 5, 1).unwrap();
        fs.dir("/proc", 0o555).unwrap();
        let path = temp_archive("tree", &fs.write_to(Vec::new()).unwrap());
        let Some(listing) = run_cpio(&["-t"], &path, path.parent().unwrap()) else {
            return;
        };
        let listed: Vec<_> = listing.lines().collect();
        let ours: Vec<_> = fs.paths().collect();
        assert_eq!(listed, ours);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
