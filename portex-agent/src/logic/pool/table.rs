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
    let rules = PortRules::new(
        settings.clone(),
        sockets
            .iter()
            .filter(|s| s.is_tcp_listener())
            .map(|s| (s.local.ip(), s.local.port())),
    );
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
            let key = PoolKey {
                netns,
                transport: Transport::Tcp,
                saddr: s.local.ip(),
                daddr: s.remote.ip(),
                dport: s.remote.port(),
            };
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
