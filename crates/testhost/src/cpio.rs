// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A streaming writer for cpio "newc" archives, the format Linux unpacks as an initramfs.
//!
//! Format (Linux `Documentation/driver-api/early-userspace/buffer-format.rst`, "initramfs
//! buffer format", which takes it from the SVR4 "new ASCII" cpio format): each entry is a
//! 110-byte header (`"070701"` then thirteen 8-digit hexadecimal fields: `c_ino`, `c_mode`,
//! `c_uid`, `c_gid`, `c_nlink`, `c_mtime`, `c_filesize`, `c_maj`, `c_min`, `c_rmaj`,
//! `c_rmin`, `c_namesize`, `c_chksum`), the NUL-terminated path name padded so that the
//! header plus name is a multiple of 4 bytes, then `c_filesize` bytes of data padded to a
//! multiple of 4. A symbolic link stores its target as its data. The archive ends with an
//! entry named `TRAILER!!!`.
//!
//! Every field is 32 bits, so a file larger than `u32::MAX` bytes cannot be stored
//! ([`Error::TooLarge`]). Entries are written with uid/gid 0 and mtime 0 so that an archive
//! depends only on its contents (`tests::archive_is_deterministic`).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The magic number that opens every newc header (no checksum variant: `070702` is "crc").
pub const NEWC_MAGIC: &str = "070701";
/// The name of the entry that ends a cpio archive.
pub const TRAILER_NAME: &str = "TRAILER!!!";
/// Length of a newc header before the name.
pub const HEADER_LEN: usize = 110;
/// Longest path accepted, in bytes (Linux `PATH_MAX` is 4096 including the NUL that the
/// header's `c_namesize` counts).
pub const MAX_PATH_LEN: usize = 4095;
/// Largest file size a newc header can describe (`c_filesize` is 8 hex digits).
pub const MAX_FILE_SIZE: u64 = u32::MAX as u64;

/// File type bits of `c_mode` (POSIX `<sys/stat.h>` values, as stored by cpio).
const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
/// Permission bits a caller may pass (rwx for all, setuid, setgid, sticky).
const PERM_MASK: u32 = 0o7777;

/// Errors from writing an archive or building an [`crate::initramfs::Initramfs`].
///
/// After any error while writing, the output holds a partial archive that must be discarded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A path that cannot name an archive entry.
    #[error("cpio: invalid entry path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A symbolic link target that cannot be stored.
    #[error("cpio: invalid symlink target {target:?} for {path:?}: {reason}")]
    InvalidTarget {
        /// The link's path.
        path: String,
        /// The target as given.
        target: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Mode bits outside `0o7777`.
    #[error("cpio: mode {mode:#o} of {path:?} has bits outside the permission mask 0o7777")]
    InvalidMode {
        /// The entry's path.
        path: String,
        /// The mode as given.
        mode: u32,
    },
    /// A file larger than a newc header can describe.
    #[error("cpio: {path:?} is {size} bytes, over the newc limit of {max} bytes", max = MAX_FILE_SIZE)]
    TooLarge {
        /// The entry's path.
        path: String,
        /// The file's size.
        size: u64,
    },
    /// More entries than 32-bit inode numbers.
    #[error("cpio: inode numbers exhausted at entry {path:?}")]
    InodesExhausted {
        /// The entry that could not be numbered.
        path: String,
    },
    /// The data source ended before the size written in the header.
    #[error("cpio: contents of {path:?} ended after {got} bytes, header promised {expected}")]
    ShortRead {
        /// The entry's path.
        path: String,
        /// Bytes actually read.
        got: u64,
        /// Bytes announced in the header.
        expected: u64,
    },
    /// An entry added twice.
    #[error("initramfs: {path:?} is already present")]
    Duplicate {
        /// The entry's path.
        path: String,
    },
    /// An entry whose parent is not a directory.
    #[error("initramfs: cannot add {path:?}: its parent {parent:?} is not a directory")]
    ParentNotDirectory {
        /// The entry's path.
        path: String,
        /// The parent that is a file, link or device.
        parent: String,
    },
    /// A host file that could not be opened or sized.
    #[error("initramfs: {op} host file {host:?} for {path:?}: {source}")]
    HostFile {
        /// What was being done (`open`, `stat`).
        op: &'static str,
        /// The host file.
        host: PathBuf,
        /// The entry's path.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing to the output failed.
    #[error("cpio: writing entry {path:?}: {source}")]
    Io {
        /// The entry being written.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Checks that `path` can name an entry: relative, non-empty, no empty, `.` or `..`
/// components, no NUL, at most [`MAX_PATH_LEN`] bytes.
///
/// Linux's unpacker (`init/initramfs.c`) would accept `..` and create entries outside the
/// intended tree layout; refusing them keeps archives predictable
/// (`tests::rejects_bad_paths`).
pub fn validate_path(path: &str) -> Result<(), Error> {
    let bad = |reason| {
        Err(Error::InvalidPath {
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() {
        return bad("empty");
    }
    if path.len() > MAX_PATH_LEN {
        return bad("longer than 4095 bytes");
    }
    if path.contains('\0') {
        return bad("contains NUL");
    }
    if path.starts_with('/') {
        return bad("absolute (archive paths are relative to the root)");
    }
    for component in path.split('/') {
        match component {
            "" => return bad("empty component"),
            "." | ".." => return bad("`.` or `..` component"),
            _ => {}
        }
    }
    if path == TRAILER_NAME {
        return bad("reserved trailer name");
    }
    Ok(())
}

fn check_mode(path: &str, mode: u32) -> Result<(), Error> {
    if mode & !PERM_MASK != 0 {
        return Err(Error::InvalidMode {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// The fields of one header that vary between entries.
struct Header<'a> {
    name: &'a str,
    mode: u32,
    nlink: u32,
    filesize: u32,
    rdev_major: u32,
    rdev_minor: u32,
}

/// Number of zero bytes that bring `len` up to a multiple of 4.
fn pad4(len: u64) -> usize {
    ((4 - (len % 4)) % 4) as usize
}

/// Writes a newc archive entry by entry to any [`Write`].
///
/// # Example
///
/// ```
/// use testhost::cpio::NewcWriter;
///
/// let mut w = NewcWriter::new(Vec::new());
/// w.directory("bin", 0o755).unwrap();
/// w.file("bin/hello", 0o755, b"#!/bin/sh\necho hi\n").unwrap();
/// w.symlink("bin/sh", "busybox").unwrap();
/// let archive = w.finish().unwrap();
/// assert!(archive.starts_with(b"070701"));
/// assert_eq!(archive.len() % 4, 0);
/// ```
pub struct NewcWriter<W: Write> {
    out: W,
    next_ino: u32,
    written: u64,
}

impl<W: Write> NewcWriter<W> {
    /// Starts an archive on `out`.
    pub fn new(out: W) -> Self {
        NewcWriter {
            out,
            // Inode 0 is left to the trailer, as GNU cpio does.
            next_ino: 1,
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// Adds a directory. Its parents must be added first for the kernel to create it.
    pub fn directory(&mut self, path: &str, mode: u32) -> Result<(), Error> {
        validate_path(path)?;
        check_mode(path, mode)?;
        self.entry(
            Header {
                name: path,
                mode: S_IFDIR | mode,
                nlink: 2,
                filesize: 0,
                rdev_major: 0,
                rdev_minor: 0,
            },
            &mut io::empty(),
        )
    }

    /// Adds a regular file with `data` as its contents.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> Result<(), Error> {
        self.file_from_reader(path, mode, data.len() as u64, &mut &data[..])
    }

    /// Adds a regular file of `size` bytes read from `reader`.
    ///
    /// Exactly `size` bytes are copied; a reader that ends early gives
    /// [`Error::ShortRead`] (`tests::short_reader_is_an_error`).
    pub fn file_from_reader<R: Read>(
        &mut self,
        path: &str,
        mode: u32,
        size: u64,
        reader: &mut R,
    ) -> Result<(), Error> {
        validate_path(path)?;
        check_mode(path, mode)?;
        let filesize = u32::try_from(size).map_err(|_| Error::TooLarge {
            path: path.to_owned(),
            size,
        })?;
        self.entry(
            Header {
                name: path,
                mode: S_IFREG | mode,
                nlink: 1,
                filesize,
                rdev_major: 0,
                rdev_minor: 0,
            },
            reader,
        )
    }

    /// Adds a symbolic link `path` -> `target` (mode 0777, as symlink permissions are unused).
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), Error> {
        validate_path(path)?;
        let bad = |reason| {
            Err(Error::InvalidTarget {
                path: path.to_owned(),
                target: target.to_owned(),
                reason,
            })
        };
        if target.is_empty() {
            return bad("empty");
        }
        if target.len() > MAX_PATH_LEN {
            return bad("longer than 4095 bytes");
        }
        if target.contains('\0') {
            return bad("contains NUL");
        }
        self.entry(
            Header {
                name: path,
                mode: S_IFLNK | 0o777,
                nlink: 1,
                // Bounded by MAX_PATH_LEN just above.
                filesize: target.len() as u32,
                rdev_major: 0,
                rdev_minor: 0,
            },
            &mut target.as_bytes(),
        )
    }

    /// Adds a character device node with device number `major:minor`.
    pub fn char_device(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), Error> {
        validate_path(path)?;
        check_mode(path, mode)?;
        self.entry(
            Header {
                name: path,
                mode: S_IFCHR | mode,
                nlink: 1,
                filesize: 0,
                rdev_major: major,
                rdev_minor: minor,
            },
            &mut io::empty(),
        )
    }

    /// Writes the `TRAILER!!!` entry, flushes, and gives the output back.
    pub fn finish(mut self) -> Result<W, Error> {
        self.write_header(
            0,
            &Header {
                name: TRAILER_NAME,
                mode: 0,
                nlink: 1,
                filesize: 0,
                rdev_major: 0,
                rdev_minor: 0,
            },
        )?;
        self.out.flush().map_err(|source| Error::Io {
            path: TRAILER_NAME.to_owned(),
            source,
        })?;
        Ok(self.out)
    }

    fn entry<R: Read>(&mut self, header: Header<'_>, body: &mut R) -> Result<(), Error> {
        let ino = self.next_ino;
        self.next_ino = ino.checked_add(1).ok_or_else(|| Error::InodesExhausted {
            path: header.name.to_owned(),
        })?;
        self.write_header(ino, &header)?;
        let expected = u64::from(header.filesize);
        let got =
            io::copy(&mut body.take(expected), &mut self.out).map_err(|source| Error::Io {
                path: header.name.to_owned(),
                source,
            })?;
        if got != expected {
            return Err(Error::ShortRead {
                path: header.name.to_owned(),
                got,
                expected,
            });
        }
        self.written = self.written.saturating_add(got);
        self.pad(header.name, expected)
    }

    fn write_header(&mut self, ino: u32, h: &Header<'_>) -> Result<(), Error> {
        // validate_path bounds the name, so the name size (with its NUL) fits in u32.
        let namesize = h.name.len() + 1;
        let text = format!(
            "{NEWC_MAGIC}{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}\
             {size:08x}{maj:08x}{min:08x}{rmaj:08x}{rmin:08x}{namesize:08x}{check:08x}",
            mode = h.mode,
            uid = 0,
            gid = 0,
            nlink = h.nlink,
            mtime = 0,
            size = h.filesize,
            maj = 0,
            min = 0,
            rmaj = h.rdev_major,
            rmin = h.rdev_minor,
            check = 0,
        );
        debug_assert_eq!(text.len(), HEADER_LEN);
        let io_err = |source| Error::Io {
            path: h.name.to_owned(),
            source,
        };
        self.out.write_all(text.as_bytes()).map_err(io_err)?;
        self.out.write_all(h.name.as_bytes()).map_err(io_err)?;
        self.out.write_all(&[0]).map_err(io_err)?;
        self.written = self.written.saturating_add((HEADER_LEN + namesize) as u64);
        self.pad(h.name, (HEADER_LEN + namesize) as u64)
    }

    fn pad(&mut self, name: &str, len: u64) -> Result<(), Error> {
        let n = pad4(len);
        self.out
            .write_all(&[0u8; 3][..n])
            .map_err(|source| Error::Io {
                path: name.to_owned(),
                source,
            })?;
        self.written = self.written.saturating_add(n as u64);
        Ok(())
    }
}

/// Opens a host file for an entry and returns it with its size.
pub(crate) fn open_host_file(host: &Path, path: &str) -> Result<(File, u64), Error> {
    let file = File::open(host).map_err(|source| Error::HostFile {
        op: "open",
        host: host.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    let size = file
        .metadata()
        .map_err(|source| Error::HostFile {
            op: "stat",
            host: host.to_owned(),
            path: path.to_owned(),
            source,
        })?
        .len();
    Ok((file, size))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One entry decoded back from an archive.
    #[derive(Debug, PartialEq, Eq)]
    pub(crate) struct Decoded {
        pub(crate) name: String,
        pub(crate) mode: u32,
        pub(crate) ino: u32,
        pub(crate) nlink: u32,
        pub(crate) rdev: (u32, u32),
        pub(crate) data: Vec<u8>,
    }

    fn field(h: &[u8], i: usize) -> u32 {
        let s = std::str::from_utf8(&h[6 + 8 * i..14 + 8 * i]).unwrap();
        u32::from_str_radix(s, 16).unwrap()
    }

    /// A strict decoder used to check the writer's framing (a reference, test-only).
    pub(crate) fn decode(mut a: &[u8]) -> Vec<Decoded> {
        let mut out = Vec::new();
        let mut offset = 0usize;
        loop {
            assert_eq!(offset % 4, 0, "entry not 4-byte aligned");
            let h = &a[..HEADER_LEN];
            assert_eq!(&h[..6], NEWC_MAGIC.as_bytes());
            let namesize = field(h, 11) as usize;
            let filesize = field(h, 6) as usize;
            let name_end = HEADER_LEN + namesize;
            assert_eq!(a[name_end - 1], 0, "name not NUL-terminated");
            let name = String::from_utf8(a[HEADER_LEN..name_end - 1].to_vec()).unwrap();
            let data_start = name_end + pad4(name_end as u64);
            assert!(a[name_end..data_start].iter().all(|&b| b == 0));
            let data_end = data_start + filesize;
            let next = data_end + pad4(data_end as u64);
            assert!(a[data_end..next].iter().all(|&b| b == 0));
            assert_eq!(field(h, 12), 0, "check field must be 0 for 070701");
            if name == TRAILER_NAME {
                assert_eq!(next, a.len(), "bytes after trailer");
                return out;
            }
            out.push(Decoded {
                name,
                mode: field(h, 1),
                ino: field(h, 0),
                nlink: field(h, 4),
                rdev: (field(h, 9), field(h, 10)),
                data: a[data_start..data_end].to_vec(),
            });
            offset += next;
            a = &a[next..];
        }
    }

    fn sample() -> Vec<u8> {
        let mut w = NewcWriter::new(Vec::new());
        w.directory("bin", 0o755).unwrap();
        w.file("bin/busybox", 0o755, b"\x7fELF not really").unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        w.directory("dev", 0o755).unwrap();
        w.char_device("dev/console", 0o600, 5, 1).unwrap();
        w.file("init", 0o755, b"#!/bin/sh\n").unwrap();
        w.file("empty", 0o644, b"").unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn header_layout_matches_buffer_format() {
        let mut w = NewcWriter::new(Vec::new());
        w.file("a", 0o644, b"xyz").unwrap();
        let a = w.finish().unwrap();
        let expected_header = "070701\
            00000001\
            000081a4\
            00000000\
            00000000\
            00000001\
            00000000\
            00000003\
            00000000\
            00000000\
            00000000\
            00000000\
            00000002\
            00000000";
        assert_eq!(&a[..HEADER_LEN], expected_header.as_bytes());
        // 110 + "a\0" = 112, already aligned; data 3 bytes + 1 pad.
        assert_eq!(&a[110..112], b"a\0");
        assert_eq!(&a[112..116], b"xyz\0");
        assert_eq!(&a[116..122], b"070701");
    }

    #[test]
    fn entries_round_trip() {
        let entries = decode(&sample());
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/busybox",
                "bin/sh",
                "dev",
                "dev/console",
                "init",
                "empty"
            ]
        );
        assert_eq!(entries[0].mode, S_IFDIR | 0o755);
        assert_eq!(entries[0].nlink, 2);
        assert_eq!(entries[1].mode, S_IFREG | 0o755);
        assert_eq!(entries[1].data, b"\x7fELF not really");
        assert_eq!(entries[2].mode, S_IFLNK | 0o777);
        assert_eq!(entries[2].data, b"busybox");
        assert_eq!(entries[4].mode, S_IFCHR | 0o600);
        assert_eq!(entries[4].rdev, (5, 1));
        assert!(entries[6].data.is_empty());
        let mut inos: Vec<_> = entries.iter().map(|e| e.ino).collect();
        inos.dedup();
        assert_eq!(
            inos,
            (1..=7).collect::<Vec<_>>(),
            "inodes unique and ascending"
        );
    }

    #[test]
    fn every_name_and_data_length_aligns() {
        // Name lengths 1..=8 cover all four header+name residues, data lengths 0..=8 all
        // four data residues.
        let mut w = NewcWriter::new(Vec::new());
        for n in 1..=8usize {
            let name = "n".repeat(n);
            w.file(&name, 0o600, &vec![0xa5; n]).unwrap();
        }
        let a = w.finish().unwrap();
        let entries = decode(&a);
        assert_eq!(entries.len(), 8);
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.data, vec![0xa5; i + 1]);
        }
    }

    #[test]
    fn bytes_written_counts_everything() {
        let mut w = NewcWriter::new(Vec::new());
        w.file("f", 0o644, b"12345").unwrap();
        let before_trailer = w.bytes_written();
        let a = w.finish().unwrap();
        // 110 + 2 ("f\0") = 112, data 5 + 3 pad = 8.
        assert_eq!(before_trailer, 120);
        // Trailer: 110 + 11 = 121 + 3 pad.
        assert_eq!(a.len() as u64, before_trailer + 124);
    }

    #[test]
    fn archive_is_deterministic() {
        assert_eq!(sample(), sample());
    }

    #[test]
    fn rejects_bad_paths() {
        let long = "x".repeat(MAX_PATH_LEN + 1);
        for p in [
            "",
            "/abs",
            "a//b",
            "a/",
            "./a",
            "a/../b",
            "..",
            "nul\0byte",
            long.as_str(),
            TRAILER_NAME,
        ] {
            let mut w = NewcWriter::new(Vec::new());
            assert!(
                matches!(w.file(p, 0o644, b""), Err(Error::InvalidPath { .. })),
                "{p:?} accepted"
            );
            assert_eq!(w.bytes_written(), 0, "nothing written for {p:?}");
        }
        let ok = "x".repeat(MAX_PATH_LEN);
        let mut w = NewcWriter::new(Vec::new());
        w.file(&ok, 0o644, b"").unwrap();
        assert_eq!(decode(&w.finish().unwrap())[0].name, ok);
    }

    #[test]
    fn rejects_bad_modes_and_targets() {
        let mut w = NewcWriter::new(Vec::new());
        assert!(matches!(
            w.file("f", 0o100_644, b""),
            Err(Error::InvalidMode {
                mode: 0o100_644,
                ..
            })
        ));
        assert!(matches!(
            w.directory("d", 0o10_000),
            Err(Error::InvalidMode { .. })
        ));
        assert!(matches!(
            w.symlink("l", ""),
            Err(Error::InvalidTarget { .. })
        ));
        assert!(matches!(
            w.symlink("l", "a\0b"),
            Err(Error::InvalidTarget { .. })
        ));
        assert_eq!(w.bytes_written(), 0);
    }

    #[test]
    fn too_large_file_is_refused_before_writing() {
        let mut w = NewcWriter::new(Vec::new());
        let err = w
            .file_from_reader("big", 0o644, MAX_FILE_SIZE + 1, &mut io::repeat(0))
            .unwrap_err();
        assert!(matches!(err, Error::TooLarge { size, .. } if size == MAX_FILE_SIZE + 1));
        assert_eq!(w.bytes_written(), 0);
    }

    #[test]
    fn short_reader_is_an_error() {
        let mut w = NewcWriter::new(Vec::new());
        let err = w
            .file_from_reader("f", 0o644, 10, &mut &b"four"[..])
            .unwrap_err();
        assert!(matches!(
            err,
            Error::ShortRead {
                got: 4,
                expected: 10,
                ..
            }
        ));
    }

    #[test]
    fn write_errors_name_the_entry() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(28)) // ENOSPC
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut w = NewcWriter::new(Full);
        let err = w.file("bin/x", 0o755, b"1").unwrap_err();
        assert!(matches!(&err, Error::Io { path, .. } if path == "bin/x"));
        assert!(err.to_string().contains("bin/x"), "{err}");
    }

    /// Writes `archive` to a temporary file and returns its path.
    pub(crate) fn temp_archive(name: &str, archive: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("testhost-cpio-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("archive.cpio");
        std::fs::write(&path, archive).unwrap();
        path
    }

    /// Runs the system `cpio` (GNU cpio on the host, busybox cpio in the test VM) with `args`
    /// and the archive on stdin; `None` when no `cpio` is installed.
    pub(crate) fn run_cpio(args: &[&str], archive: &Path, cwd: &Path) -> Option<String> {
        let input = File::open(archive).unwrap();
        let out = match std::process::Command::new("cpio")
            .args(args)
            .current_dir(cwd)
            .stdin(input)
            .output()
        {
            Ok(out) => out,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                eprintln!("skipped: no `cpio` on PATH (tests/testhost/setup.sh installs it)");
                return None;
            }
            Err(e) => panic!("running cpio: {e}"),
        };
        assert!(
            out.status.success(),
            "cpio {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(String::from_utf8(out.stdout).unwrap())
    }

    #[test]
    fn system_cpio_lists_the_archive() {
        let path = temp_archive("list", &sample());
        let Some(listing) = run_cpio(&["-t"], &path, path.parent().unwrap()) else {
            return;
        };
        let names: Vec<_> = listing.lines().collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/busybox",
                "bin/sh",
                "dev",
                "dev/console",
                "init",
                "empty"
            ]
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn system_cpio_extracts_contents_and_links() {
        let path = temp_archive("extract", &sample());
        let root = path.parent().unwrap().join("root");
        std::fs::create_dir_all(&root).unwrap();
        // Device nodes need privileges to create; list them but extract everything else.
        let mut w = NewcWriter::new(Vec::new());
        w.directory("bin", 0o755).unwrap();
        w.file("bin/busybox", 0o755, b"\x7fELF not really").unwrap();
        w.symlink("bin/sh", "busybox").unwrap();
        w.file("odd", 0o640, b"123").unwrap();
        let path2 = path.parent().unwrap().join("nodev.cpio");
        std::fs::write(&path2, w.finish().unwrap()).unwrap();
        if run_cpio(&["-i", "-d"], &path2, &root).is_none() {
            return;
        }
        assert_eq!(
            std::fs::read(root.join("bin/busybox")).unwrap(),
            b"\x7fELF not really"
        );
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(std::fs::read(root.join("odd")).unwrap(), b"123");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.join("bin/busybox"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "executable bits kept: {mode:o}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
