//! /proc/<pid>/stat as the agent reads it: `untrusted::decode` of the raw bytes (a
//! process names itself with any bytes), `owners::parse_stat`, the numeric fields of
//! the agent's own process_* metrics (`self_stats::parse_stat_fields`), and the ways an
//! untrusted name is shown (terminal text, Prometheus label value).
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use portex_agent::fuzzing::{
    parse_stat, parse_stat_fields,
    untrusted::{self, is_bidi_control},
};

fuzz_target!(|data: &[u8]| {
    let text = untrusted::decode(data);
    // Never empty for non-empty input; valid UTF-8 passes through untouched (and without
    // a copy); every invalid byte becomes the 4 characters \xNN.
    assert_eq!(text.is_empty(), data.is_empty());
    match std::str::from_utf8(data) {
        Ok(s) => assert!(matches!(&text, Cow::Borrowed(t) if *t == s)),
        Err(_) => {
            assert!(matches!(text, Cow::Owned(_)));
            assert!(text.len() > data.len() && text.len() <= 4 * data.len());
        }
    }
    // The output is text, so decoding it again changes nothing.
    assert!(matches!(untrusted::decode(text.as_bytes()), Cow::Borrowed(t) if *t == *text));

    if let Some((name, _start)) = parse_stat(&text) {
        assert!(text.contains(&format!("({name})")));
    }
    // The numbers come after the last ')': nothing a name holds can shift them.
    if let Some(f) = parse_stat_fields(&text) {
        let close = text.rfind(')').expect("a stat line has a comm");
        assert_eq!(parse_stat_fields(&text[close..]), Some(f));
    }

    let mut shown = String::new();
    untrusted::sanitize(&text, &mut shown);
    assert!(
        !shown.chars().any(|c| c.is_control() || is_bidi_control(c)),
        "{shown:?}"
    );
    let label = untrusted::label_value(&text);
    assert!(
        !label.chars().any(|c| c.is_control() || is_bidi_control(c)),
        "{label:?}"
    );
});
