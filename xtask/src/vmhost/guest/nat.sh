# A NAT gateway on this machine, as a container host is one, set up once by main.sh
# for the unit's checks and the image's alike:
# pod -> this host -> srv, each namespace joined by a veth, the host masquerading what
# leaves towards srv to the ports 40000-40009 (the 10-port pool the checks look for),
# and 10 connections from the pod held open, so conntrack holds 10 SNAT mappings.

NAT_RANGE_SIZE=10
NAT_DEST=10.202.0.2
NAT_DPORT=8080
NAT_READY=0
NAT_CLIENT=""
NAT_SERVER=""

nat_setup() {
    ip netns add pod
    ip netns add srv
    ip link add h-pod type veth peer name eth0 netns pod
    ip link add h-srv type veth peer name eth0 netns srv
    ip addr add 10.201.0.1/24 dev h-pod
    ip addr add 10.202.0.1/24 dev h-srv
    ip link set h-pod up
    ip link set h-srv up
    ip -n pod addr add 10.201.0.2/24 dev eth0
    ip -n srv addr add "$NAT_DEST/24" dev eth0
    local ns
    for ns in pod srv; do
        ip -n "$ns" link set lo up
        ip -n "$ns" link set eth0 up
    done
    ip -n pod route add default via 10.201.0.1
    sysctl -qw net.ipv4.ip_forward=1
    nft add table ip nat
    nft add chain ip nat post '{ type nat hook postrouting priority 100 ; }'
    nft add rule ip nat post oifname h-srv meta l4proto tcp masquerade to :40000-40009
    ip netns exec srv socat "TCP-LISTEN:$NAT_DPORT,reuseaddr,fork,backlog=64" EXEC:/bin/cat &
    NAT_SERVER=$!
    wait_for 10 ip netns exec srv bash -c "exec 3<>/dev/tcp/127.0.0.1/$NAT_DPORT"
    # Held open until nat_teardown: one shell, 10 descriptors.
    ip netns exec pod bash -c '
        for i in $(seq '"$NAT_RANGE_SIZE"'); do exec {fd}<>/dev/tcp/'"$NAT_DEST/$NAT_DPORT"'; done
        sleep 900' &
    NAT_CLIENT=$!
    wait_for 60 nat_mappings_at_least "$NAT_RANGE_SIZE"
}

# nat_mappings_at_least N: the pod holds N established connections to the server, each
# through a NAT mapping of the host (conntrack(8) is not installed: ss sees the result).
nat_mappings_at_least() {
    [ "$(ip netns exec pod ss -Htn state established dst "$NAT_DEST:$NAT_DPORT" | grep -c .)" -ge "$1" ]
}

nat_teardown() {
    kill "$NAT_CLIENT" "$NAT_SERVER" 2>/dev/null || true
    nft delete table ip nat 2>/dev/null || true
    ip netns del pod 2>/dev/null || true
    ip netns del srv 2>/dev/null || true
}

# nat_checks PREFIX METRICS EXPLAIN PORTEX...: the pool towards the server as
# `PORTEX status --json` reports it, and as the agent at METRICS exports it (after its
# NAT scan, every 5 s): 10 ports, from the rule. EXPLAIN (a command) adds to a failure.
nat_checks() {
    local prefix=$1 metrics=$2 explain=$3
    shift 3
    local status pool
    status=$("$@" status --json --log-level debug 2>/tmp/status.err)
    pool=$(printf '%s' "$status" | jq -c --arg d "$NAT_DEST" --argjson p "$NAT_DPORT" \
        '[.namespaces[]? | .nat.pools[]? | select(.destination.ip == $d and .destination.port == $p)] | first | {size, size_from, used}')
    if [ "$(printf '%s' "$pool" | jq -r '"\(.size) \(.size_from)"')" = "$NAT_RANGE_SIZE rule" ]; then
        report "$prefix-nat-status" ok "portex status --json: $pool"
    else
        report "$prefix-nat-status" FAIL "portex status --json: pool $pool, expected size $NAT_RANGE_SIZE from the rule; $($explain); $(grep -i 'nft' /tmp/status.err | tail -n 1 | cut -c1-200)"
    fi
    local line="" deadline=$((SECONDS + 30))
    while [ "$SECONDS" -lt "$deadline" ]; do
        line=$(http_get "http://$metrics/metrics" | grep "^portex_nat_pool_size_ports{.*destination_address=\"$NAT_DEST\"") && break
        sleep 2
    done
    case "$line" in
        *'size_from="rule"'*" $NAT_RANGE_SIZE") report "$prefix-nat-metrics" ok "$line" ;;
        *) report "$prefix-nat-metrics" FAIL "${line:-no portex_nat_pool_size_ports towards $NAT_DEST at $metrics (a pool of the kernel default size, 64512, is far below metrics_pool_min)}; $($explain)" ;;
    esac
}
