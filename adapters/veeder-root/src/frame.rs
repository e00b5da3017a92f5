//! Framing of the TLS console's serial interface, sans-IO.
//!
//! A command is `SOH` + an optional 6-character security code + the
//! function (`i20100`: computer format, lowercase `i`; `I20100`: display
//! format, uppercase). A reply runs from `SOH` to `ETX`:
//! - computer format: `SOH i20100 <data> && CCCC ETX`, where `CCCC` is the
//!   16-bit two's complement (4 hex digits) of the sum of every byte from
//!   `SOH` through `&&`, so that sum + checksum = 0 modulo 2^16;
//! - display format: `SOH <CR LF> I20100 <CR LF> <report text> ETX`, no checksum;
//! - a function the console does not know: `SOH 9999FF1B ETX`.
//!
//! [`Framer`] cuts replies out of the byte stream (bounded); [`check`]
//! verifies a reply against the command that asked for it. Every error
//! carries the raw bytes, shown escaped ([`escape`]), for the log.

use std::fmt;

pub const SOH: u8 = 0x01;
pub const ETX: u8 = 0x03;
/// Longest reply accepted (a full i202 of 16 tanks x 10 deliveries is ~17 KB
/// in the computer format, more in the display format).
pub const MAX_REPLY: usize = 64 * 1024;
/// What a console answers to a function it does not support.
pub const UNSUPPORTED: &[u8] = b"9999FF1B";

/// Reply format, chosen per device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Lowercase function codes, hex IEEE floats, `&&` + checksum.
    Computer,
    /// Uppercase function codes, the printed report (older consoles, many bridges).
    Display,
}

/// A function code with its tank: `i201` + `00` (all tanks) or `01`..`99`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    pub function: Function,
    /// 0 = all tanks.
    pub tank: u8,
    pub format: Format,
}

/// The functions this adapter parses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// 201: in-tank inventory.
    Inventory,
    /// 202: delivery reports.
    Deliveries,
    /// 205: tank status (alarms).
    Alarms,
}

impl Function {
    pub fn code(self) -> &'static str {
        match self {
            Function::Inventory => "201",
            Function::Deliveries => "202",
            Function::Alarms => "205",
        }
    }
}

impl Command {
    pub fn new(function: Function, tank: u8, format: Format) -> Command {
        Command {
            function,
            tank,
            format,
        }
    }

    /// `i20100` / `I20100`.
    pub fn text(&self) -> String {
        let i = match self.format {
            Format::Computer => 'i',
            Format::Display => 'I',
        };
        format!("{i}{}{:02}", self.function.code(), self.tank)
    }

    /// The bytes to send (SOH, security code, function).
    pub fn encode(&self, security_code: &str) -> Vec<u8> {
        let mut v = vec![SOH];
        v.extend_from_slice(security_code.as_bytes());
        v.extend_from_slice(self.text().as_bytes());
        v
    }

    /// Parses `i20100`-like text (probe input); `None` if it is not one.
    pub fn parse(s: &str) -> Option<Command> {
        let b = s.as_bytes();
        if b.len() != 6 || !b[1..].iter().all(u8::is_ascii_digit) {
            return None;
        }
        let format = match b[0] {
            b'i' => Format::Computer,
            b'I' => Format::Display,
            _ => return None,
        };
        let function = match &s[1..4] {
            "201" => Function::Inventory,
            "202" => Function::Deliveries,
            "205" => Function::Alarms,
            _ => return None,
        };
        Some(Command::new(function, s[4..].parse().ok()?, format))
    }
}

/// Why a reply was refused. Each carries the raw reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// More than [`MAX_REPLY`] bytes without an `ETX`.
    TooLong { raw: Vec<u8> },
    /// The console answered `9999FF1B`: it does not know the function.
    Unsupported { raw: Vec<u8> },
    /// The reply does not start with the command that asked for it.
    WrongEcho { expected: String, raw: Vec<u8> },
    /// A computer-format reply without `&&` and 4 hex digits before `ETX`.
    MissingChecksum { raw: Vec<u8> },
    /// The checksum does not match the bytes.
    BadChecksum {
        sent: u16,
        computed: u16,
        raw: Vec<u8>,
    },
    /// The reply's data cannot be read (too short, not a number, ...).
    Malformed { what: String, raw: Vec<u8> },
}

impl FrameError {
    /// A short kind, for metrics and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::TooLong { .. } => "too_long",
            FrameError::Unsupported { .. } => "unsupported",
            FrameError::WrongEcho { .. } => "wrong_echo",
            FrameError::MissingChecksum { .. } => "missing_checksum",
            FrameError::BadChecksum { .. } => "bad_checksum",
            FrameError::Malformed { .. } => "malformed",
        }
    }
    pub fn raw(&self) -> &[u8] {
        match self {
            FrameError::TooLong { raw }
            | FrameError::Unsupported { raw }
            | FrameError::WrongEcho { raw, .. }
            | FrameError::MissingChecksum { raw }
            | FrameError::BadChecksum { raw, .. }
            | FrameError::Malformed { raw, .. } => raw,
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLong { .. } => {
                write!(f, "reply longer than {MAX_REPLY} bytes without ETX")
            }
            FrameError::Unsupported { .. } => write!(
                f,
                "the console answered 9999FF1B: it does not support this function (or the security code is wrong)"
            ),
            FrameError::WrongEcho { expected, .. } => {
                write!(
                    f,
                    "the reply does not start with {expected}: out of step with the console"
                )
            }
            FrameError::MissingChecksum { .. } => write!(
                f,
                "no && checksum before ETX: a display-format reply to a computer-format command, or a cut reply"
            ),
            FrameError::BadChecksum { sent, computed, .. } => write!(
                f,
                "bad checksum: the reply says {sent:04X}, its bytes sum to {computed:04X} (line noise or a cut reply)"
            ),
            FrameError::Malformed { what, .. } => write!(f, "malformed reply: {what}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// `raw` for a log line: printable ASCII as is, the rest as `<SOH>`,
/// `<ETX>`, `\r`, `\n` or `\xNN`; cut to `max` bytes with the total length.
pub fn escape(raw: &[u8], max: usize) -> String {
    let mut s = String::new();
    for &b in raw.iter().take(max) {
        match b {
            SOH => s.push_str("<SOH>"),
            ETX => s.push_str("<ETX>"),
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    if raw.len() > max {
        s.push_str(&format!("... ({} bytes)", raw.len()));
    }
    s
}

/// The 16-bit checksum of `bytes` as the console writes it.
pub fn checksum(bytes: &[u8]) -> u16 {
    let sum = bytes
        .iter()
        .fold(0u16, |a, &b| a.wrapping_add(u16::from(b)));
    0u16.wrapping_sub(sum)
}

/// Cuts replies out of a byte stream: bytes before `SOH` are skipped
/// (line noise, CR/LF), a reply ends at `ETX`.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    skipped: usize,
}

impl Framer {
    pub fn new() -> Framer {
        Framer::default()
    }

    /// Feeds bytes; returns a complete reply (SOH..=ETX) once there is
    /// one. Bytes after its `ETX` stay for the next call.
    pub fn push(&mut self, bytes: &[u8]) -> Option<Result<Vec<u8>, FrameError>> {
        self.buf.extend_from_slice(bytes);
        self.next_reply()
    }

    /// The next complete reply already buffered.
    pub fn next_reply(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        if let Some(start) = self.buf.iter().position(|&b| b == SOH) {
            self.skipped += start;
            self.buf.drain(..start);
        } else {
            self.skipped += self.buf.len();
            self.buf.clear();
            return None;
        }
        match self.buf.iter().position(|&b| b == ETX) {
            Some(end) => Some(Ok(self.buf.drain(..=end).collect())),
            None if self.buf.len() > MAX_REPLY => {
                let raw = std::mem::take(&mut self.buf);
                Some(Err(FrameError::TooLong { raw }))
            }
            None => None,
        }
    }

    /// Bytes of a reply begun but not finished (a cut reply when the link drops).
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes skipped before a `SOH` since the start.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

/// Checks a reply (SOH..=ETX) to `cmd` and returns its data: for the
/// computer format the text after the echo and before `&&`; for the
/// display format the report text after the echo line.
pub fn check(cmd: &Command, raw: &[u8]) -> Result<String, FrameError> {
    let inner = raw
        .strip_prefix(&[SOH])
        .and_then(|r| r.strip_suffix(&[ETX]))
        .ok_or_else(|| FrameError::Malformed {
            what: "a reply must run from SOH to ETX".into(),
            raw: raw.to_vec(),
        })?;
    if inner == UNSUPPORTED {
        return Err(FrameError::Unsupported { raw: raw.to_vec() });
    }
    let echo = cmd.text();
    let wrong_echo = || FrameError::WrongEcho {
        expected: echo.clone(),
        raw: raw.to_vec(),
    };
    let text = std::str::from_utf8(inner).map_err(|_| FrameError::Malformed {
        what: "bytes that are not text".into(),
        raw: raw.to_vec(),
    })?;
    match cmd.format {
        Format::Computer => {
            let n = inner.len();
            if n < 6 || &inner[n - 6..n - 4] != b"&&" {
                return Err(FrameError::MissingChecksum { raw: raw.to_vec() });
            }
            let sent = std::str::from_utf8(&inner[n - 4..])
                .ok()
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|h| u16::from_str_radix(h, 16).ok())
                .ok_or_else(|| FrameError::MissingChecksum { raw: raw.to_vec() })?;
            // SOH + everything through "&&"
            let computed = checksum(&raw[..raw.len() - 5]);
            if computed != sent {
                return Err(FrameError::BadChecksum {
                    sent,
                    computed,
                    raw: raw.to_vec(),
                });
            }
            let body = &text[..n - 6];
            body.strip_prefix(echo.as_str())
                .map(str::to_string)
                .ok_or_else(wrong_echo)
        }
        Format::Display => {
            let body = text.trim_start_matches(['\r', '\n']);
            let rest = body.strip_prefix(echo.as_str()).ok_or_else(wrong_echo)?;
            Ok(rest.trim_start_matches(['\r', '\n']).to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn computer(cmd: &str, data: &str) -> Vec<u8> {
        let mut v = vec![SOH];
        v.extend_from_slice(cmd.as_bytes());
        v.extend_from_slice(data.as_bytes());
        v.extend_from_slice(b"&&");
        let cs = checksum(&v);
        v.extend_from_slice(format!("{cs:04X}").as_bytes());
        v.push(ETX);
        v
    }

    #[test]
    fn the_checksum_makes_the_byte_sum_zero_modulo_2_16() {
        // the example of the PyPI veeder-root-tls-socket-library's README:
        // "i10100" + "2312301342020402" + "&&" sums to FB3B's complement
        let v = computer("i10100", "2312301342020402");
        let n = v.len();
        assert_eq!(&v[n - 5..n - 1], b"FB3B");
        let sum: u32 = v[..n - 5].iter().map(|&b| u32::from(b)).sum::<u32>() + 0xFB3B;
        assert_eq!(sum & 0xFFFF, 0);
    }

    #[test]
    fn commands_encode_and_parse_in_both_formats() {
        let c = Command::new(Function::Inventory, 0, Format::Computer);
        assert_eq!(c.encode(""), b"\x01i20100");
        assert_eq!(c.encode("ABC123"), b"\x01ABC123i20100");
        let d = Command::parse("I20502").unwrap();
        assert_eq!(
            (d.function, d.tank, d.format),
            (Function::Alarms, 2, Format::Display)
        );
        for bad in ["i20", "x20100", "i99900", "i2010a", "i201000"] {
            assert_eq!(Command::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_valid_computer_reply_yields_its_data_and_every_defect_is_named() {
        let c = Command::new(Function::Inventory, 0, Format::Computer);
        let good = computer("i20100", "2611231504");
        assert_eq!(check(&c, &good).unwrap(), "2611231504");
        // a flipped byte
        let mut bad = good.clone();
        bad[9] = b'9';
        let e = check(&c, &bad).unwrap_err();
        assert_eq!(e.kind(), "bad_checksum");
        assert!(e.to_string().contains("bad checksum"), "{e}");
        assert_eq!(e.raw(), &bad[..]);
        // no checksum (a display reply, or cut before &&)
        let e = check(&c, b"\x01i201002611231504\x03").unwrap_err();
        assert_eq!(e.kind(), "missing_checksum");
        // another command's reply
        let e = check(&c, &computer("i20500", "2611231504")).unwrap_err();
        assert_eq!(e.kind(), "wrong_echo");
        assert_eq!(
            check(&c, b"\x019999FF1B\x03").unwrap_err().kind(),
            "unsupported"
        );
        assert_eq!(
            check(&c, b"\x01\x03").unwrap_err().kind(),
            "missing_checksum"
        );
        assert_eq!(check(&c, b"i20100").unwrap_err().kind(), "malformed");
        let mut not_text = computer("i20100", "26\u{e9}");
        not_text[8] = 0xff;
        assert!(check(&c, &not_text).is_err());
    }

    #[test]
    fn a_display_reply_is_the_text_after_its_echo_line() {
        let c = Command::new(Function::Inventory, 0, Format::Display);
        let r = b"\x01\r\nI20100\r\nNOV 23, 2026  3:04 PM\r\n\r\nIN-TANK INVENTORY\r\n\x03";
        assert!(check(&c, r).unwrap().starts_with("NOV 23, 2026"));
        let e = check(&c, b"\x01\r\nI20500\r\n\x03").unwrap_err();
        assert_eq!(e.kind(), "wrong_echo");
    }

    #[test]
    fn the_framer_cuts_replies_at_etx_skips_noise_and_bounds_its_buffer() {
        let mut f = Framer::new();
        assert_eq!(f.push(b"\r\n\x01i201"), None);
        assert_eq!(f.pending(), b"\x01i201");
        let got = f.push(b"00abc\x03\x01i2").unwrap().unwrap();
        assert_eq!(got, b"\x01i20100abc\x03");
        assert_eq!(f.pending(), b"\x01i2", "the next reply's start is kept");
        assert_eq!(f.skipped(), 2);
        let mut f = Framer::new();
        let e = f.push(&[b'x'; 10]);
        assert_eq!(e, None, "no SOH: skipped, nothing buffered");
        let mut big = vec![SOH];
        big.resize(MAX_REPLY + 2, b'0');
        let e = f.push(&big).unwrap().unwrap_err();
        assert_eq!(e.kind(), "too_long");
        assert!(f.pending().is_empty());
    }

    #[test]
    fn raw_bytes_are_escaped_and_cut_for_the_log() {
        assert_eq!(
            escape(b"\x01i201\r\n\xff\x03", 100),
            "<SOH>i201\\r\\n\\xff<ETX>"
        );
        assert_eq!(escape(b"abcdef", 3), "abc... (6 bytes)");
    }
}
