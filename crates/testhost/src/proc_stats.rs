// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Exact memory figures of the machine a test runs on (L1 in the test host), for the
//! in-guest tests that check nothing stays pinned or locked.
//!
//! The node counters in `/proc/vmstat` (`nr_foll_pin_acquired`, `nr_foll_pin_released`)
//! are kept per CPU and folded into the global value only when a CPU's delta passes its
//! threshold (Linux `mm/vmstat.c`, `mod_node_state`), so two reads of `/proc/vmstat` can
//! disagree with what is really pinned by up to the threshold times the number of CPUs,
//! and a test comparing "before" with "after" sees pages that are not there, or misses
//! pages that are. [`vmstat`] first writes `/proc/sys/vm/stat_refresh`, which folds every
//! CPU's deltas (`vmstat_refresh`), so its figure is exact at the time of the read.
//!
//! # Example
//!
//! ```no_run
//! let before = testhost::proc_stats::pinned_pages().expect("/proc/vmstat");
//! // ... map and pin 4 MiB of guest RAM ...
//! let after = testhost::proc_stats::pinned_pages().expect("/proc/vmstat");
//! assert!(after >= before + 1024);
//! ```

use std::fs;

const STAT_REFRESH: &str = "/proc/sys/vm/stat_refresh";

/// Folds every CPU's pending counter deltas into the global counters.
///
/// Needs root and `CONFIG_PROC_SYSCTL` (the test hosts run as root with it). A failure is
/// not an error for the callers: the kernel may refuse (EINVAL while some counter is
/// transiently negative on older kernels) after it has folded the deltas anyway.
pub fn refresh() {
    let _ = fs::write(STAT_REFRESH, "1");
}

/// The value of the `/proc/vmstat` line `name`, after [`refresh`]; `None` if the file or
/// the line is missing or the value is not a number.
pub fn vmstat(name: &str) -> Option<i64> {
    refresh();
    parse_vmstat(&fs::read_to_string("/proc/vmstat").ok()?, name)
}

/// Pages pinned with FOLL_PIN system-wide (iommufd pins guest RAM that way):
/// `nr_foll_pin_acquired - nr_foll_pin_released`, from one refreshed read.
pub fn pinned_pages() -> Option<i64> {
    refresh();
    let text = fs::read_to_string("/proc/vmstat").ok()?;
    let acquired = parse_vmstat(&text, "nr_foll_pin_acquired")?;
    let released = parse_vmstat(&text, "nr_foll_pin_released")?;
    acquired.checked_sub(released)
}

/// A `kB` figure of `/proc/meminfo` (`Mlocked`) or `/proc/self/status` (`VmPin`) style
/// text: the number after `name:`.
pub fn kb_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The value of the line `name value` in `/proc/vmstat`-style text.
pub fn parse_vmstat(text: &str, name: &str) -> Option<i64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        if k == name {
            v.trim().parse().ok()
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmstat_lines_are_matched_whole() {
        let text =
            "nr_foll_pin_acquired 2048\nnr_foll_pin_acquired_x 7\nnr_foll_pin_released 1000\n";
        assert_eq!(parse_vmstat(text, "nr_foll_pin_acquired"), Some(2048));
        assert_eq!(parse_vmstat(text, "nr_foll_pin_released"), Some(1000));
        assert_eq!(parse_vmstat(text, "nr_foll_pin"), None);
        assert_eq!(parse_vmstat("nr_x garbage\n", "nr_x"), None);
    }

    #[test]
    fn kb_fields_need_the_colon() {
        let text = "VmPin:\t    4096 kB\nVmLck:       0 kB\nMlocked2: 9 kB\n";
        assert_eq!(kb_field(text, "VmPin"), Some(4096));
        assert_eq!(kb_field(text, "VmLck"), Some(0));
        assert_eq!(kb_field(text, "Mlocked"), None);
    }

    #[test]
    fn this_machine_has_the_counters_or_says_none() {
        // On any Linux the figures exist; elsewhere the answer is None, never a panic.
        if let Some(p) = pinned_pages() {
            assert!(p >= 0, "negative pinned-page count {p}");
        }
    }
}
