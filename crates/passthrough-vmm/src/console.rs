// Copyright © 2026 The passthrough-msi authors
// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Console framing: the channel from guest userspace to the VMM.
//!
//! The test kernel has no `/dev/mem`, so guest userspace cannot reach a paravirtual
//! register; what it can always reach is the console. A guest program reports to the VMM
//! by printing lines that start with `@@VMM ` on the console:
//!
//! - `@@VMM status N` (N in 0..=255): the status the VMM exits with when the guest powers
//!   off. The last such line wins.
//! - `@@VMM result <text>`: a structured result, collected into the report (parsed as JSON
//!   when it is JSON, kept as a string otherwise).
//! - any other `@@VMM <kind> ...` line is kept as an unknown frame, so a typo shows up in the
//!   report instead of vanishing.
//!
//! The guest is not trusted: a line is cut at [`MAX_LINE`] bytes, at most [`MAX_RESULTS`]
//! results and [`MAX_FRAME_ERRORS`] unknown or malformed frames are kept (the rest are only
//! counted), and the raw capture keeps the last [`MAX_CAPTURE`] bytes. Carriage returns
//! (the tty's `ONLCR` turns `\n` into `\r\n`) and NULs are dropped.
//! `tests::hostile_output_is_bounded` holds the bounds.

use std::collections::VecDeque;

use serde::Serialize;

/// The prefix of a framed line.
pub const FRAME_PREFIX: &str = "@@VMM ";
/// The longest line kept, in bytes; the rest of a longer line is dropped.
pub const MAX_LINE: usize = 64 * 1024;
/// The most `@@VMM result` frames kept.
pub const MAX_RESULTS: usize = 1024;
/// The most malformed or unknown frames kept.
pub const MAX_FRAME_ERRORS: usize = 64;
/// The bytes of raw console output kept (the most recent ones).
pub const MAX_CAPTURE: usize = 1 << 20;

/// One `@@VMM result` frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum GuestResult {
    /// The text was JSON.
    Json(serde_json::Value),
    /// The text was not JSON; kept verbatim (lossily decoded as UTF-8).
    Text(String),
}

/// A framed line the VMM could not use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FrameError {
    /// The line, lossily decoded and cut at 256 bytes.
    pub line: String,
    /// Why it was refused.
    pub reason: &'static str,
}

/// What the console framing collected.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Collected {
    /// The status of the last `@@VMM status` line.
    pub status: Option<u8>,
    /// The `@@VMM result` frames, in order (at most [`MAX_RESULTS`]).
    pub results: Vec<GuestResult>,
    /// Results beyond [`MAX_RESULTS`], counted but not kept.
    pub results_dropped: u64,
    /// Unknown or malformed frames (at most [`MAX_FRAME_ERRORS`]).
    pub frame_errors: Vec<FrameError>,
    /// Frame errors beyond [`MAX_FRAME_ERRORS`], counted.
    pub frame_errors_dropped: u64,
    /// Complete lines seen.
    pub lines: u64,
    /// Bytes of output seen.
    pub bytes: u64,
    /// Lines that were cut at [`MAX_LINE`].
    pub truncated_lines: u64,
}

/// Splits console output into lines and collects the framed ones.
///
/// # Example
///
/// ```
/// use passthrough_vmm::console::{ConsoleFramer, GuestResult};
///
/// let mut c = ConsoleFramer::new();
/// c.push_bytes(b"[    1.0] booting\r\n@@VMM result {\"its\":true}\r\n@@VMM sta");
/// c.push_bytes(b"tus 0\r\n");
/// let got = c.collected();
/// assert_eq!(got.status, Some(0));
/// assert_eq!(got.results, [GuestResult::Json(serde_json::json!({"its": true}))]);
/// ```
#[derive(Debug, Clone)]
pub struct ConsoleFramer {
    line: Vec<u8>,
    line_truncated: bool,
    capture: VecDeque<u8>,
    collected: Collected,
}

impl Default for ConsoleFramer {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsoleFramer {
    /// An empty framer.
    pub fn new() -> Self {
        ConsoleFramer {
            line: Vec::new(),
            line_truncated: false,
            capture: VecDeque::new(),
            collected: Collected::default(),
        }
    }

    /// Feeds one byte of output.
    pub fn push(&mut self, byte: u8) {
        self.collected.bytes = self.collected.bytes.saturating_add(1);
        if self.capture.len() >= MAX_CAPTURE {
            self.capture.pop_front();
        }
        self.capture.push_back(byte);
        match byte {
            b'\n' => self.end_line(),
            b'\r' | 0 => {}
            _ if self.line.len() < MAX_LINE => self.line.push(byte),
            _ => self.line_truncated = true,
        }
    }

    /// Feeds output.
    pub fn push_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.push(b);
        }
    }

    /// Ends a pending partial line as if a newline followed (at VM exit).
    pub fn flush(&mut self) {
        if !self.line.is_empty() {
            self.end_line();
        }
    }

    /// What was collected so far.
    pub fn collected(&self) -> &Collected {
        &self.collected
    }

    /// The most recent raw output (at most [`MAX_CAPTURE`] bytes), lossily decoded.
    pub fn capture(&self) -> String {
        let (a, b) = self.capture.as_slices();
        let mut bytes = Vec::with_capacity(a.len() + b.len());
        bytes.extend_from_slice(a);
        bytes.extend_from_slice(b);
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn end_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        self.collected.lines = self.collected.lines.saturating_add(1);
        if std::mem::take(&mut self.line_truncated) {
            self.collected.truncated_lines = self.collected.truncated_lines.saturating_add(1);
        }
        if let Some(frame) = line.strip_prefix(FRAME_PREFIX.as_bytes()) {
            self.frame(&line, frame);
        }
    }

    fn frame(&mut self, line: &[u8], frame: &[u8]) {
        let (kind, rest) = match frame.iter().position(|&b| b == b' ') {
            Some(i) => (&frame[..i], &frame[i + 1..]),
            None => (frame, &[][..]),
        };
        match kind {
            b"status" => match parse_status(rest) {
                Some(s) => self.collected.status = Some(s),
                None => self.frame_error(line, "status is not a number in 0..=255"),
            },
            b"result" => {
                if self.collected.results.len() >= MAX_RESULTS {
                    self.collected.results_dropped =
                        self.collected.results_dropped.saturating_add(1);
                    return;
                }
                let result = match serde_json::from_slice(rest) {
                    Ok(v) => GuestResult::Json(v),
                    Err(_) => GuestResult::Text(String::from_utf8_lossy(rest).into_owned()),
                };
                self.collected.results.push(result);
            }
            _ => self.frame_error(line, "unknown frame kind"),
        }
    }

    fn frame_error(&mut self, line: &[u8], reason: &'static str) {
        if self.collected.frame_errors.len() >= MAX_FRAME_ERRORS {
            self.collected.frame_errors_dropped =
                self.collected.frame_errors_dropped.saturating_add(1);
            return;
        }
        let shown = &line[..line.len().min(256)];
        self.collected.frame_errors.push(FrameError {
            line: String::from_utf8_lossy(shown).into_owned(),
            reason,
        });
    }
}

/// A decimal status in 0..=255, surrounding blanks allowed.
fn parse_status(text: &[u8]) -> Option<u8> {
    let text = std::str::from_utf8(text).ok()?.trim();
    if text.is_empty() || text.len() > 3 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(s: &str) -> ConsoleFramer {
        let mut c = ConsoleFramer::new();
        c.push_bytes(s.as_bytes());
        c
    }

    #[test]
    fn last_status_wins_and_crlf_is_handled() {
        let c = feed("@@VMM status 7\r\n@@VMM status 0\r\nbye\r\n");
        assert_eq!(c.collected().status, Some(0));
        assert_eq!(c.collected().lines, 3);
        assert!(c.collected().frame_errors.is_empty());
    }

    #[test]
    fn frames_must_start_the_line() {
        let c = feed("x @@VMM status 9\n @@VMM status 9\n@@VMMstatus 9\n");
        assert_eq!(c.collected().status, None);
        // `@@VMMstatus` lacks the space, so it is not a frame at all.
        assert!(c.collected().frame_errors.is_empty());
    }

    #[test]
    fn malformed_status_is_reported_not_taken() {
        for bad in ["-1", "256", "1e3", "", "0x1", "00000", "7 8"] {
            let c = feed(&format!("@@VMM status {bad}\n"));
            assert_eq!(c.collected().status, None, "{bad:?}");
            assert_eq!(c.collected().frame_errors.len(), 1, "{bad:?}");
        }
        assert_eq!(feed("@@VMM status  255 \n").collected().status, Some(255));
        let c = feed("@@VMM frobnicate 1\n");
        assert_eq!(c.collected().frame_errors[0].reason, "unknown frame kind");
    }

    #[test]
    fn results_keep_json_and_text() {
        let c = feed("@@VMM result {\"a\":1}\n@@VMM result not json\n@@VMM result\n");
        assert_eq!(
            c.collected().results,
            [
                GuestResult::Json(serde_json::json!({"a": 1})),
                GuestResult::Text("not json".into()),
                GuestResult::Text(String::new()),
            ]
        );
    }

    #[test]
    fn partial_line_is_framed_on_flush() {
        let mut c = feed("@@VMM status 3");
        assert_eq!(c.collected().status, None);
        c.flush();
        assert_eq!(c.collected().status, Some(3));
        c.flush(); // nothing pending: no empty line counted
        assert_eq!(c.collected().lines, 1);
    }

    #[test]
    fn hostile_output_is_bounded() {
        let mut c = ConsoleFramer::new();
        // One enormous line: kept to MAX_LINE, counted as truncated.
        c.push_bytes(b"@@VMM result ");
        for _ in 0..(MAX_LINE + 10) {
            c.push(b'x');
        }
        c.push(b'\n');
        assert_eq!(c.collected().truncated_lines, 1);
        match &c.collected().results[0] {
            GuestResult::Text(t) => assert_eq!(t.len(), MAX_LINE - "@@VMM result ".len()),
            other => panic!("{other:?}"),
        }
        for _ in 0..(MAX_RESULTS + 5) {
            c.push_bytes(b"@@VMM result 1\n");
        }
        assert_eq!(c.collected().results.len(), MAX_RESULTS);
        assert_eq!(c.collected().results_dropped, 6);
        for _ in 0..(MAX_FRAME_ERRORS + 3) {
            c.push_bytes(b"@@VMM ???\n");
        }
        assert_eq!(c.collected().frame_errors.len(), MAX_FRAME_ERRORS);
        assert_eq!(c.collected().frame_errors_dropped, 3);
        assert!(c.capture().len() <= MAX_CAPTURE);
        // Invalid UTF-8 is carried lossily, never rejected.
        c.push_bytes(b"@@VMM result \xff\xfe\n");
        assert_eq!(c.collected().results_dropped, 7);
    }
}
