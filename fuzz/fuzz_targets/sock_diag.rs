//! NETLINK_SOCK_DIAG replies: `sockdiag::parse_messages` on one datagram, as `recv`
//! returns it (any length, any nlmsg_len, any type), for TCP and UDP.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portex_agent::fuzzing::{Parsed, parse_messages};

/// nlmsghdr + struct inet_diag_msg: the smallest message that yields a socket.
const MIN_SOCKET_MSG: usize = 16 + 72;

fuzz_target!(|data: &[u8]| {
    for protocol in [6u8, 17] {
        let mut sockets = 0usize;
        let parsed = parse_messages(data, protocol, &mut |s| {
            assert_eq!(s.protocol, protocol);
            sockets += 1;
        });
        assert!(sockets <= data.len() / MIN_SOCKET_MSG);
        if let Parsed::Error(errno) = parsed {
            assert_ne!(errno, 0, "an error reply with errno 0 is an ACK, i.e. Done");
        }
    }
});
