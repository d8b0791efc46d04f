//! Which sockets take a port from a connect() pool, and how big the pools are: the
//! kernel's rules as portex applies them, once, for the status table and the ledger.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use portex_common::tcpstate;
use rustc_hash::FxHashSet;

use crate::logic::sysctls::NetSettings;

/// TCP_TIMEWAIT_LEN: how long a TIME_WAIT socket lives.
pub(crate) const TIME_WAIT_MS: u64 = 60_000;

/// TCP states in which a connection holds its local port (LISTEN and SYN_RECV hold the
/// listener's port, not one of their own).
const PORT_HOLDING: [u8; 8] = [
    tcpstate::ESTABLISHED,
    tcpstate::SYN_SENT,
    tcpstate::FIN_WAIT1,
    tcpstate::FIN_WAIT2,
    tcpstate::TIME_WAIT,
    tcpstate::CLOSE_WAIT,
    tcpstate::LAST_ACK,
    tcpstate::CLOSING,
];

/// A TCP state number, as the kernel and sock_diag number them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TcpState(pub(crate) u8);

impl TcpState {
    pub(crate) fn holds_port(self) -> bool {
        PORT_HOLDING.contains(&self.0)
    }
}

/// The port-holding states as a sock_diag state mask (bit n = state n).
pub(crate) fn held_states_mask() -> u32 {
    PORT_HOLDING.iter().fold(0, |m, &s| m | 1 << s)
}

/// One namespace's rules: its sysctls, the ports its listeners and bound-only sockets
/// hold ("listeners" below: bind() took the port either way), and the ports that bind()
/// took for sockets whose listener is gone (accepted connections and their
/// TIME_WAIT keep the listener's bind bucket, which connect() never picks).
#[derive(Clone, Debug)]
pub(crate) struct PortRules {
    pub(crate) settings: NetSettings,
    listeners: FxHashSet<(IpAddr, u16)>,
    /// Listening (or bound-only) ports inside the range, sorted.
    listening: Vec<u16>,
    /// Ports inside the range bound without a listener now, sorted (see with_bound).
    bound: Vec<u16>,
    tcp_size: u32,
}

impl PortRules {
    pub(crate) fn new(
        settings: NetSettings,
        listeners: impl IntoIterator<Item = (IpAddr, u16)>,
    ) -> Self {
        let listeners: FxHashSet<(IpAddr, u16)> = listeners.into_iter().collect();
        let mut listening: Vec<u16> = listeners
            .iter()
            .map(|l| l.1)
            .filter(|&p| ephemeral(&settings, p))
            .collect();
        listening.sort_unstable();
        listening.dedup();
        // Each listening port inside the range is one port less for every destination.
        let tcp_size = settings
            .usable_ports()
            .saturating_sub(listening.len() as u32);
        PortRules {
            settings,
            listeners,
            listening,
            bound: Vec::new(),
            tcp_size,
        }
    }

    /// The same rules with `ports` (replacing any given before) known to be bound by
    /// bind() though no listener holds them now: like a listening port, each is one port less for every destination and
    /// its sockets belong to no connect() pool.
    pub(crate) fn with_bound(mut self, ports: impl IntoIterator<Item = u16>) -> Self {
        let mut bound: Vec<u16> = ports
            .into_iter()
            .filter(|&p| self.ephemeral(p) && self.listening.binary_search(&p).is_err())
            .collect();
        bound.sort_unstable();
        bound.dedup();
        self.tcp_size = self
            .settings
            .usable_ports()
            .saturating_sub((self.listening.len() + bound.len()) as u32);
        self.bound = bound;
        self
    }

    /// Ports inside the range that bind() holds with no listener now (sorted).
    pub(crate) fn bound_in_range(&self) -> &[u16] {
        &self.bound
    }

    /// connect() may pick this port: inside ip_local_port_range, not reserved.
    pub(crate) fn ephemeral(&self, port: u16) -> bool {
        ephemeral(&self.settings, port)
    }

    /// A TCP socket with this local address draws from a connect() pool: its port is
    /// ephemeral and no listener holds it (accepted sockets share their listener's port).
    /// Hash lookups, not a scan: the ledger asks on every event.
    pub(crate) fn client_side(&self, local: SocketAddr) -> bool {
        self.unlistened(local)
            && (self.bound.is_empty() || self.bound.binary_search(&local.port()).is_err())
    }

    /// An ephemeral port no listener holds: client_side before the ports bound without
    /// a listener are taken out (what their inference looks at).
    pub(crate) fn unlistened(&self, local: SocketAddr) -> bool {
        let port = local.port();
        let listens_on = |ip: IpAddr| self.listeners.contains(&(ip, port));
        self.ephemeral(port)
            && !(listens_on(local.ip())
                || listens_on(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
                || listens_on(IpAddr::V6(Ipv6Addr::UNSPECIFIED)))
    }

    /// Every TCP pool's size: the usable range minus the listening and bound ports inside it.
    pub(crate) fn tcp_size(&self) -> u32 {
        self.tcp_size
    }

    /// Whether connect() may take over the port of a TIME_WAIT socket between these
    /// addresses once it is older than the reuse delay (tcp_twsk_unique): tcp_tw_reuse
    /// 1, or 2 when either address is loopback, and TCP timestamps on (the old
    /// connection's timestamps are what make the reuse safe).
    pub(crate) fn tw_reuse_applies(&self, local: IpAddr, remote: IpAddr) -> bool {
        tw_reuse_applies(&self.settings, local, remote)
    }

    /// How long a TIME_WAIT socket between these addresses keeps its port from connect()
    /// towards the same destination: the reuse delay where reuse applies, else the whole
    /// TIME_WAIT (60 s).
    pub(crate) fn tw_hold_ms(&self, local: IpAddr, remote: IpAddr) -> u64 {
        tw_hold_ms(&self.settings, local, remote)
    }

    /// A TIME_WAIT socket `age_ms` old: is its port free again for connect()?
    pub(crate) fn tw_reusable(&self, local: IpAddr, remote: IpAddr, age_ms: u64) -> bool {
        self.tw_reuse_applies(local, remote) && age_ms >= self.settings.tw_reuse_delay_ms as u64
    }

    /// The UDP pool's size: the usable range (auto-bind needs a port no UDP socket holds).
    pub(crate) fn udp_size(&self) -> u32 {
        self.settings.usable_ports()
    }
}

/// PortRules::tw_reuse_applies for a namespace's settings alone.
fn tw_reuse_applies(settings: &NetSettings, local: IpAddr, remote: IpAddr) -> bool {
    settings.timestamps
        && match settings.tw_reuse {
            1 => true,
            2 => local.is_loopback() || remote.is_loopback(),
            _ => false,
        }
}

/// PortRules::tw_hold_ms for a namespace's settings alone.
pub(crate) fn tw_hold_ms(settings: &NetSettings, local: IpAddr, remote: IpAddr) -> u64 {
    if tw_reuse_applies(settings, local, remote) {
        settings.tw_reuse_delay_ms as u64
    } else {
        TIME_WAIT_MS
    }
}

/// New connections per second a pool of `size` ports sustains when this side closes
/// each first: every port is held for the TIME_WAIT hold (Little's law).
pub(crate) fn sustainable_per_s(size: u32, hold_ms: u64) -> f64 {
    size as f64 * 1000.0 / hold_ms.max(1) as f64
}

fn ephemeral(settings: &NetSettings, port: u16) -> bool {
    settings.in_range(port) && !settings.is_reserved(port)
}
