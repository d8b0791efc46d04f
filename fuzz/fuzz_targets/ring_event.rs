//! Ring-buffer records: `decode::decode`, then what the agent does with every decoded
//! event on its hot path (lifecycle::interpret, the thread's comm as text, the NDJSON and
//! text lines). The kernel side is ours, but a record is still bytes of any length and
//! content (a newer kernel program, a bug, a corrupted ring).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portex_agent::fuzzing::{
    DecodeError, View, decode, json, lifecycle, text, untrusted::is_bidi_control,
};
use portex_common::{EVENT_SIZE, kind};

/// CLOCK_REALTIME - CLOCK_BOOTTIME of a host booted in late 2023, what the agent adds to
/// an event's ts_ns.
const BOOT_OFFSET_NS: i128 = 1_700_000_000_000_000_000;

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Err(DecodeError::Short(n)) => assert!(n == data.len() && n < EVENT_SIZE),
        Err(DecodeError::UnknownKind(k)) => {
            assert!(data.len() >= EVENT_SIZE);
            assert!(!matches!(
                k,
                kind::STATE | kind::CONNECT_RET | kind::BIND_RET
            ));
        }
        Ok(ev) => {
            // Never Ok for a short buffer, and the event is the record's first bytes.
            assert!(data.len() >= EVENT_SIZE);
            assert_eq!(&ev.as_bytes()[..], &data[..EVENT_SIZE]);
            let mut records = 0;
            let header = json::Header::new("fuzz", Some("0123456789abcdef0123456789abcdef"));
            lifecycle::interpret(&ev, |r| {
                records += 1;
                let name = r.process.thread_name.name();
                let view = View {
                    rec: &r,
                    unix_ns: BOOT_OFFSET_NS + r.ts_ns as i128,
                    process_name: &name,
                };
                // One NDJSON object per line, whatever the comm bytes are.
                let mut line = String::new();
                json::write_line(&view, &header, &mut line);
                assert!(
                    line.ends_with('\n') && line.matches('\n').count() == 1,
                    "{line:?}"
                );
                if let Err(e) = serde_json::from_str::<serde_json::Value>(&line) {
                    panic!("not JSON ({e}): {line:?}");
                }
                // A terminal line carries no control character but its newline, and no
                // bidi control.
                line.clear();
                text::write_line(&view, &mut line);
                let body = line
                    .strip_suffix('\n')
                    .expect("text line ends with a newline");
                assert!(
                    !body.chars().any(|c| c.is_control() || is_bidi_control(c)),
                    "{line:?}"
                );
            });
            // STATE SYN_SENT -> CLOSE gives at most connect, close, time_wait.
            assert!(records <= 3);
        }
    }
});
