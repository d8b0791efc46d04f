//! Pools from a namespace's socket table (`portex status`).
use super::{Pool, PoolKey, PortRules, PortUse, Tally, any_address};
use crate::logic::{
    model::{DiagSocket, Owner, Transport},
    sysctls::NetSettings,
};

/// Builds every pool of one namespace, fullest first. `owner_of` names a socket's holder
/// (by inode for live sockets; for TIME_WAIT sockets only a ledger that saw the close
/// knows it).
pub(crate) fn build_pools(
    netns: u64,
    settings: &NetSettings,
    sockets: &[DiagSocket],
    owner_of: impl Fn(&DiagSocket) -> Option<Owner>,
) -> Vec<Pool> {
    let rules = table_rules(settings, sockets);
    let mut tally: Tally<Option<Owner>> = Tally::default();
    let udp = PoolKey {
        netns,
        transport: Transport::Udp,
        saddr: any_address(),
        daddr: any_address(),
        dport: 0,
    };
    for s in sockets {
        if !rules.ephemeral(s.local.port()) {
            continue;
        }
        if s.holds_tcp_port() && rules.client_side(s.local) {
            let key = PoolKey::tcp_of(netns, s);
            let u = match PortUse::of_tcp(s.state) {
                PortUse::TimeWait
                    if rules.tw_reusable(s.local.ip(), s.remote.ip(), s.time_wait_age_ms()) =>
                {
                    PortUse::TimeWaitReusable
                }
                u => u,
            };
            tally.add(&key, || rules.tcp_size(), s.local.port(), u, owner_of(s));
        } else if s.is_udp() {
            tally.add(
                &udp,
                || rules.udp_size(),
                s.local.port(),
                PortUse::Udp,
                owner_of(s),
            );
        }
    }
    tally.finish(|o| o.clone())
}

/// A port reached from at least this many distinct peer ports is a server's port whose
/// listener is gone: its accepted connections (and their TIME_WAIT) keep the bind bucket.
/// A client's port reaches one destination per pool, and clients talk to service ports:
/// 64 distinct destination ports on one local port at once is a server's fan-in.
pub(crate) const SERVER_PEER_PORTS: usize = 64;

/// The namespace's rules as its socket table shows them: listeners, and the ports bound
/// by servers whose listener closed (sock_diag does not say which bind bucket a socket
/// sits in, so these are inferred: see SERVER_PEER_PORTS). If the inference would take
/// more than an eighth of the range, it is a client reaching many destinations instead,
/// and nothing is inferred.
pub(crate) fn table_rules(settings: &NetSettings, sockets: &[DiagSocket]) -> PortRules {
    let rules = PortRules::new(
        settings.clone(),
        sockets
            .iter()
            .filter(|s| s.binds_tcp_port())
            .map(|s| (s.local.ip(), s.local.port())),
    );
    let peers = sockets
        .iter()
        .filter(|s| s.holds_tcp_port() && rules.unlistened(s.local))
        .map(|s| (s.local.port(), s.remote.port()))
        .collect();
    let bound = servers_without_listener(peers, settings.usable_ports());
    rules.with_bound(bound)
}

/// From (local port, peer port) of the sockets that look client-side, the local ports
/// that are servers' with their listener gone (SERVER_PEER_PORTS peers or more), unless
/// that would be more than an eighth of the `usable` ports.
pub(crate) fn servers_without_listener(mut peers: Vec<(u16, u16)>, usable: u32) -> Vec<u16> {
    peers.sort_unstable();
    peers.dedup();
    let bound: Vec<u16> = peers
        .chunk_by(|a, b| a.0 == b.0)
        .filter(|run| run.len() >= SERVER_PEER_PORTS)
        .map(|run| run[0].0)
        .collect();
    if bound.len() as u32 > usable / 8 {
        return Vec::new();
    }
    bound
}
