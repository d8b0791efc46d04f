# The OCI image run by a container runtime as packaging/kubernetes/daemonset.yaml runs
# it (sourced by main.sh). The host turned the manifest into podman's options
# (xtask/src/vmhost/daemonset.rs): PODMAN_RUN, AGENT_ARGS, DS_DIRS (its DirectoryOrCreate
# host paths), DS_METRICS (the metrics address, the pod's address being this node's),
# DS_OUTPUT (the event file as the host sees it).

image_checks() {
    check image-load podman load -q -i "/opt/vmhost/$OCI"
    # The node's primary address, which hostNetwork gives the pod ($(POD_IP)).
    ip link add node0 type dummy
    ip addr add "$NODE_IP/24" dev node0
    ip link set node0 up
    mkdir -p "${DS_DIRS[@]}"
    local id
    if ! id=$(podman run -d --name portex-ds "${PODMAN_RUN[@]}" "$IMAGE" "${AGENT_ARGS[@]}" 2>&1); then
        report image-run FAIL "podman run: $id"
        return
    fi
    local healthy=ok
    local why
    why=$(wait_healthy container_running "http://$DS_METRICS/healthz" 180) || healthy=FAIL
    report image-run "$healthy" "$(podman inspect -f '{{.State.Status}} pid {{.State.Pid}}' portex-ds) ${why:-healthz answers} $(podman logs portex-ds 2>&1 | first_error)"
    if [ "$healthy" != ok ]; then
        podman logs --tail 40 portex-ds
        podman rm -f portex-ds >/dev/null
        return
    fi
    local pid
    pid=$(podman inspect -f '{{.State.Pid}}' portex-ds)
    local nnp cap
    nnp=$(awk '/^NoNewPrivs:/ { print $2 }' "/proc/$pid/status")
    cap=$(cap_eff "$pid")
    if [ "$nnp" = 1 ] && [ "$cap" = "$EXPECTED_CAPEFF" ]; then
        report image-credentials ok "NoNewPrivs $nnp CapEff $cap (the unit's set)"
    else
        report image-credentials FAIL "NoNewPrivs $nnp CapEff $cap, expected 1 and $EXPECTED_CAPEFF"
    fi
    # Through the container's root (the image has no touch to run in it).
    if touch "/proc/$pid/root/usr/vmhost-probe" 2>/tmp/probe.err; then
        report image-readonly FAIL "/usr is writable in the container"
    elif grep -q 'Read-only file system' /tmp/probe.err; then
        report image-readonly ok "/usr: EROFS"
    else
        report image-readonly FAIL "$(cat /tmp/probe.err)"
    fi

    # A connection of the host, from a process of the host (--pid host).
    listen_local 7002
    local client i found=""
    for i in 1 2 3; do client=$(connect_from_shell 7002); done
    for i in $(seq 40); do
        found=$(event_of "$client" 7002 "$DS_OUTPUT") && break
        sleep 0.5
    done
    if [ -n "$found" ]; then
        report image-events ok "pid $client: $(printf '%s' "$found" | jq -r .event.action) in $DS_OUTPUT"
    else
        report image-events FAIL "no line of pid $client to port 7002 in $DS_OUTPUT ($(grep -c . "$DS_OUTPUT" 2>&1) lines)"
    fi
    cleanup_listeners

    local metrics
    if metrics=$(http_get "http://$DS_METRICS/metrics") && printf '%s\n' "$metrics" | grep -q '^portex_'; then
        report image-metrics ok "$(printf '%s\n' "$metrics" | grep -c '^portex_') portex_ samples at $DS_METRICS"
    else
        report image-metrics FAIL "no portex_ sample at http://$DS_METRICS/metrics"
    fi

    # The NAT pool of the host's masquerade rule (main.sh set it up), its size from the
    # rule's range: `portex status` run in the container, and the agent's gauges.
    if [ "$NAT_READY" = 1 ]; then
        nat_checks image "$DS_METRICS" "nft_in_image $pid" podman exec portex-ds /usr/bin/portex
    fi

    podman logs portex-ds 2>&1 | tail -n 20
    podman rm -f portex-ds >/dev/null
    wait_for 30 no_portex_programs
    check image-stop-detaches no_portex_programs
}

# nft_in_image PID: whether the container has the nft the agent runs for a rule's range.
nft_in_image() {
    if [ -e "/proc/$1/root/usr/sbin/nft" ]; then
        echo "the image has /usr/sbin/nft"
    else
        echo "the image has no /usr/sbin/nft, which the agent runs to read the rule's range"
    fi
}
