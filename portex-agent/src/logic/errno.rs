//! Errno names for the codes a connect() or bind() can return. Pure.

/// The symbolic name of a positive errno, as C headers spell it.
pub(crate) fn name(errno: i32) -> &'static str {
    match errno {
        1 => "EPERM",
        2 => "ENOENT",
        4 => "EINTR",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        19 => "ENODEV",
        22 => "EINVAL",
        23 => "ENFILE",
        24 => "EMFILE",
        88 => "ENOTSOCK",
        91 => "EPROTOTYPE",
        93 => "EPROTONOSUPPORT",
        95 => "EOPNOTSUPP",
        97 => "EAFNOSUPPORT",
        98 => "EADDRINUSE",
        99 => "EADDRNOTAVAIL",
        100 => "ENETDOWN",
        101 => "ENETUNREACH",
        103 => "ECONNABORTED",
        104 => "ECONNRESET",
        105 => "ENOBUFS",
        106 => "EISCONN",
        110 => "ETIMEDOUT",
        111 => "ECONNREFUSED",
        112 => "EHOSTDOWN",
        113 => "EHOSTUNREACH",
        114 => "EALREADY",
        115 => "EINPROGRESS",
        _ => "EUNKNOWN",
    }
}

pub(crate) const EAGAIN: i32 = 11;
pub(crate) const EADDRINUSE: i32 = 98;
pub(crate) const EADDRNOTAVAIL: i32 = 99;
pub(crate) const EINPROGRESS: i32 = 115;
pub(crate) const ETIMEDOUT: i32 = 110;

#[cfg(test)]
mod tests {
    #[test]
    fn names_the_port_errors() {
        assert_eq!(super::name(99), "EADDRNOTAVAIL");
        assert_eq!(super::name(98), "EADDRINUSE");
        assert_eq!(super::name(11), "EAGAIN");
        assert_eq!(super::name(4242), "EUNKNOWN");
    }
}
