// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! A Linux errno that prints by its symbolic name.
//!
//! Kernel interfaces answer with an errno; an operator reading a log wants to see `EINVAL`,
//! not `os error 22`. [`Errno`] keeps the raw number and prints the name followed by the
//! description, for example `EINVAL (Invalid argument)`.

use std::fmt;

/// A raw Linux errno value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// The errno of the last failed libc call on this thread.
    pub fn last() -> Self {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }

    /// The raw errno number.
    pub fn raw(self) -> i32 {
        self.0
    }

    /// The symbolic name of the errno (`"EINVAL"`), when it is one of the values Linux
    /// ioctls commonly return.
    pub fn name(self) -> Option<&'static str> {
        let name = match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::ESRCH => "ESRCH",
            libc::EINTR => "EINTR",
            libc::EIO => "EIO",
            libc::ENXIO => "ENXIO",
            libc::E2BIG => "E2BIG",
            libc::EBADF => "EBADF",
            libc::EAGAIN => "EAGAIN",
            libc::ENOMEM => "ENOMEM",
            libc::EACCES => "EACCES",
            libc::EFAULT => "EFAULT",
            libc::EBUSY => "EBUSY",
            libc::EEXIST => "EEXIST",
            libc::ENODEV => "ENODEV",
            libc::ENOTDIR => "ENOTDIR",
            libc::EISDIR => "EISDIR",
            libc::EINVAL => "EINVAL",
            libc::ENFILE => "ENFILE",
            libc::EMFILE => "EMFILE",
            libc::ENOTTY => "ENOTTY",
            libc::EFBIG => "EFBIG",
            libc::ENOSPC => "ENOSPC",
            libc::ESPIPE => "ESPIPE",
            libc::EROFS => "EROFS",
            libc::EDOM => "EDOM",
            libc::ERANGE => "ERANGE",
            libc::EDEADLK => "EDEADLK",
            libc::ENOSYS => "ENOSYS",
            libc::EOVERFLOW => "EOVERFLOW",
            libc::EMSGSIZE => "EMSGSIZE",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            libc::EADDRINUSE => "EADDRINUSE",
            libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
            libc::ETIMEDOUT => "ETIMEDOUT",
            libc::EALREADY => "EALREADY",
            libc::EINPROGRESS => "EINPROGRESS",
            _ => return None,
        };
        Some(name)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let desc = std::io::Error::from_raw_os_error(self.0);
        // `io::Error`'s Display appends " (os error N)"; keep only the description.
        let desc = desc.to_string();
        let desc = desc.split(" (os error").next().unwrap_or("");
        match self.name() {
            Some(name) => write!(f, "{name} ({desc})"),
            None => write!(f, "errno {} ({desc})", self.0),
        }
    }
}

impl From<vmm_sys_util::errno::Error> for Errno {
    fn from(e: vmm_sys_util::errno::Error) -> Self {
        Errno(e.errno())
    }
}

impl From<Errno> for std::io::Error {
    fn from(e: Errno) -> Self {
        std::io::Error::from_raw_os_error(e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_symbolic_name_and_description() {
        assert_eq!(Errno(libc::EINVAL).to_string(), "EINVAL (Invalid argument)");
        assert_eq!(
            Errno(libc::EOPNOTSUPP).to_string(),
            "EOPNOTSUPP (Operation not supported)"
        );
        assert_eq!(Errno(libc::EADDRINUSE).name(), Some("EADDRINUSE"));
    }

    #[test]
    fn unknown_errno_prints_number() {
        let s = Errno(4000).to_string();
        assert!(s.starts_with("errno 4000 ("), "{s}");
        assert_eq!(Errno(4000).name(), None);
    }

    #[test]
    fn converts_from_vmm_sys_util() {
        let e = vmm_sys_util::errno::Error::new(libc::EBUSY);
        assert_eq!(Errno::from(e), Errno(libc::EBUSY));
    }
}
