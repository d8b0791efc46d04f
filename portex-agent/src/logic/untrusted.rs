//! Text that other processes choose (process and thread names, cgroup paths): how it is
//! decoded and how it is shown. A process can name itself with any 15 bytes, so a name
//! must neither vanish (invalid UTF-8), nor drive a terminal (escape sequences), nor
//! reorder what a person reads (bidirectional controls), nor break a metrics line.
use std::{borrow::Cow, fmt::Write};

/// Bytes as text: valid UTF-8 as it is, every invalid byte as `\xNN`. Never empty for
/// non-empty input, and the common case does not allocate.
pub fn decode(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(bytes.len() * 2);
    let mut rest = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                break;
            }
            Err(e) => {
                let good = e.valid_up_to();
                out.push_str(std::str::from_utf8(&rest[..good]).unwrap_or_default());
                let bad = e.error_len().unwrap_or(rest.len() - good);
                for b in &rest[good..good + bad] {
                    let _ = write!(out, "\\x{b:02x}");
                }
                rest = &rest[good + bad..];
            }
        }
    }
    Cow::Owned(out)
}

/// Characters that reorder the text around them when a terminal renders it (Unicode
/// bidirectional embeddings, overrides, isolates and marks): "evil\u{202e}lortnoc"
/// would read as another name.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Copies `s` for a terminal: control characters (escape sequences included) and bidi
/// controls become visible escapes, so that an untrusted name cannot drive the
/// terminal or disguise itself.
pub fn sanitize(s: &str, out: &mut String) {
    for c in s.chars() {
        if c.is_control() {
            let _ = write!(out, "\\x{:02x}", c as u32 & 0xff);
        } else if is_bidi_control(c) {
            let _ = write!(out, "\\u{{{:04x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
}

/// A Prometheus label value: `\`, `"` and newline escaped as the exposition format
/// says, and every other control character shown as the text `\xNN` (so `curl
/// /metrics` in a terminal runs no escape sequence).
pub fn label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\\\x{:02x}", c as u32 & 0xff);
            }
            c if is_bidi_control(c) => {
                let _ = write!(out, "\\\\u{{{:04x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_bytes_are_escaped_never_dropped() {
        assert_eq!(decode(b"curl"), "curl");
        assert_eq!(decode(b"\xffevil"), "\\xffevil");
        assert_eq!(decode(b"a\xc3"), "a\\xc3");
        assert_eq!(decode(b"\xe2\x80"), "\\xe2\\x80");
        assert_eq!(decode("é\u{202e}".as_bytes()), "é\u{202e}");
    }

    #[test]
    fn terminal_text_has_no_controls_and_no_bidi() {
        let mut s = String::new();
        sanitize("a\u{1b}[31mb\u{202e}c\u{7}", &mut s);
        assert_eq!(s, "a\\x1b[31mb\\u{202e}c\\x07");
    }

    #[test]
    fn label_values_carry_no_raw_control_bytes() {
        let v = label_value("a\u{1b}]0;x\u{7}\r\u{7f}\"\\\n\u{2066}");
        assert!(!v.chars().any(|c| c.is_control()), "{v:?}");
        assert_eq!(v, "a\\\\x1b]0;x\\\\x07\\\\x0d\\\\x7f\\\"\\\\\\n\\\\u{2066}");
    }
}
