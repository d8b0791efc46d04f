//! The values of the filter flags: addresses and networks, ports and ranges, container
//! id prefixes. Parsed alike from a flag, a variable or the config file.
use std::{net::IpAddr, str::FromStr};

/// An address or a network: `10.0.0.9`, `10.0.0.0/8`, `::1`, `fd00::/8`. An IPv4-mapped
/// IPv6 address (`::ffff:10.0.0.9`, a dual-stack socket's) matches as the IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrMatch {
    net: IpAddr,
    bits: u8,
}

impl AddrMatch {
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                mask(u32::from(a).into(), 32, self.bits) == u128::from(u32::from(n))
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => mask(a.into(), 128, self.bits) == u128::from(n),
            _ => false,
        }
    }
}

/// The first `bits` of a `width`-bit number.
fn mask(v: u128, width: u8, bits: u8) -> u128 {
    if bits == 0 {
        0
    } else {
        v & ((u128::MAX << (128 - bits)) >> (128 - width))
    }
}

impl FromStr for AddrMatch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("not an address or a network (10.0.0.9, 10.0.0.0/8, fd00::/8): {s}");
        let (ip, bits) = match s.split_once('/') {
            Some((ip, bits)) => (ip, Some(bits)),
            None => (s, None),
        };
        let ip: IpAddr = ip.trim_matches(['[', ']']).parse().map_err(|_| bad())?;
        let ip = ip.to_canonical();
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => width,
            Some(b) => match b.parse::<u8>() {
                Ok(b) if b <= width => b,
                _ => return Err(format!("{s}: the prefix length must be 0 to {width}")),
            },
        };
        // Host bits are dropped (10.1.2.3/8 is 10.0.0.0/8), as a route would read it.
        let net = match ip {
            IpAddr::V4(a) => IpAddr::V4((mask(u32::from(a).into(), 32, bits) as u32).into()),
            IpAddr::V6(a) => IpAddr::V6(mask(a.into(), 128, bits).into()),
        };
        Ok(AddrMatch { net, bits })
    }
}

/// A port (`443`) or an inclusive range (`8000-8100`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    lo: u16,
    hi: u16,
}

impl PortRange {
    pub(crate) fn contains(&self, port: u16) -> bool {
        (self.lo..=self.hi).contains(&port)
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let port = |p: &str| match p.trim().parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!(
                "not a port (1 to 65535) or a range (8000-8100): {s}"
            )),
        };
        let (lo, hi) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => (port(s)?, port(s)?),
        };
        if lo > hi {
            return Err(format!(
                "{s}: the range is empty (first port above the last)"
            ));
        }
        Ok(PortRange { lo, hi })
    }
}

/// `--container`: a container id or a prefix of it, as `docker ps` or `crictl ps`
/// shows it (12 or 13 characters); hex, kept in lower case as the cgroup path has it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPrefix(pub String);

impl FromStr for ContainerPrefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "not a container id or a prefix of one (hex, as `docker ps` shows it): {s:?}"
            ));
        }
        Ok(ContainerPrefix(s.to_ascii_lowercase()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_networks_parse_and_match_by_prefix() {
        let m = |s: &str| s.parse::<AddrMatch>().unwrap();
        assert!(m("10.0.0.9").contains("10.0.0.9".parse().unwrap()));
        assert!(!m("10.0.0.9").contains("10.0.0.8".parse().unwrap()));
        assert!(m("10.0.0.0/8").contains("10.255.1.2".parse().unwrap()));
        assert!(!m("10.0.0.0/8").contains("11.0.0.1".parse().unwrap()));
        // Host bits are dropped; /0 is every address of the family.
        assert_eq!(m("10.1.2.3/8"), m("10.0.0.0/8"));
        assert!(m("0.0.0.0/0").contains("192.0.2.1".parse().unwrap()));
        assert!(!m("0.0.0.0/0").contains("::1".parse().unwrap()));
        assert!(m("fd00::/8").contains("fd12::1".parse().unwrap()));
        assert!(!m("fd00::/8").contains("fe80::1".parse().unwrap()));
        assert!(m("[::1]").contains("::1".parse().unwrap()));
        assert!(m("::/0").contains("2001:db8::1".parse().unwrap()));
        // A dual-stack socket's IPv4-mapped address is the IPv4 address, both ways.
        assert!(m("127.0.0.1").contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(m("::ffff:127.0.0.1").contains("127.0.0.1".parse().unwrap()));
        assert!(!m("127.0.0.1").contains("::1".parse().unwrap()));
        for bad in [
            "",
            "10.0.0",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "x/8",
            "host",
        ] {
            assert!(bad.parse::<AddrMatch>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ports_and_ranges_parse_and_match_inclusively() {
        let p = |s: &str| s.parse::<PortRange>().unwrap();
        assert!(p("443").contains(443));
        assert!(!p("443").contains(444));
        assert!(p("8000-8100").contains(8000));
        assert!(p("8000-8100").contains(8100));
        assert!(!p("8000-8100").contains(8101));
        assert!(p(" 1 - 65535 ").contains(1));
        for bad in ["", "0", "65536", "-1", "80-", "90-80", "http", "80,81"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad:?}");
        }
    }
}
