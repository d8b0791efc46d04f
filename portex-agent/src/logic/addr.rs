//! Addresses as the kernel hands them over (a family and 16 bytes) and as the ledger
//! packs them (16 bytes, IPv4 mapped). One place for the IPv4-mapped rule: a dual-stack
//! socket talking IPv4 shows and counts as IPv4 everywhere.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use portex_common::AF_INET;

/// An address from the kernel's 16-byte buffer; IPv4-mapped IPv6 shows as IPv4.
pub(crate) fn ip_from(family: u16, raw: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        return IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]));
    }
    let v6 = Ipv6Addr::from(*raw);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// IPv4-mapped IPv6 as IPv4; anything else unchanged.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// 16 bytes, IPv4 as IPv4-mapped IPv6.
pub(crate) fn to_bytes(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The inverse of to_bytes.
pub(crate) fn from_bytes(b: [u8; 16]) -> IpAddr {
    canonical(IpAddr::V6(Ipv6Addr::from(b)))
}
