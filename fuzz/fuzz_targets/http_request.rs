//! The metrics server's request reader: `http::route` on the bytes a client sent (up to
//! 4 KiB, possibly cut short). Anyone on the host can connect.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portex_agent::fuzzing::{Route, route};

fuzz_target!(|data: &[u8]| {
    let r = route(data);
    // Only the request line decides.
    let line = match data.iter().position(|&b| b == b'\n') {
        Some(end) => {
            assert_eq!(route(&data[..end]), r);
            &data[..end]
        }
        None => data,
    };
    // Only a GET is served.
    if matches!(r, Route::Metrics | Route::Health | Route::Root) {
        let line = std::str::from_utf8(line).expect("a routed request line is text");
        assert_eq!(line.split_ascii_whitespace().next(), Some("GET"));
    }
});
