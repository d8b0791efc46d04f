# The Debian package and its systemd unit on a machine where systemd is PID 1: what
# `cargo xtask dist --check` could only check offline (sourced by main.sh; the names
# in capitals come from /opt/vmhost/env, which the host writes from the packaging).

unit_checks() {
    unit_run_checks
    # Purged whatever the checks above found (the image's checks need a machine
    # without the unit's agent).
    unit_purge_checks
}

# Installed, started and looked at; returns early when the agent does not come up.
unit_run_checks() {
    # dpkg, not apt: the package has no dependencies, and apt's cache takes a minute
    # to build under TCG (check_deb.rs runs `apt install ./` on the build machine).
    check deb-install dpkg -i "/opt/vmhost/$DEB"
    check unit-known loaded_state portex.service

    # The package never starts the unit: the administrator does.
    systemctl start portex.service
    if ! wait_for 60 systemctl is-active --quiet portex.service; then
        report unit-active FAIL "$(systemctl is-active portex.service): $(journalctl -u portex -n 5 --no-pager -o cat)"
        journalctl -u portex --no-pager -o cat | tail -n 40
        return
    fi
    # Active is not yet loaded: /healthz answers once the programs are attached.
    local healthy=ok
    local why
    why=$(wait_healthy unit_running "http://$UNIT_METRICS/healthz" 180) || healthy=FAIL
    report unit-active "$healthy" "$(systemctl show -P ActiveState,SubState,MainPID portex.service | paste -sd' ') ${why:-healthz answers} $(journalctl -u portex -o cat --no-pager | first_error)"
    [ "$healthy" = ok ] || { journalctl -u portex --no-pager -o cat | tail -n 40; return; }
    local pid
    pid=$(systemctl show -P MainPID portex.service)

    # Its programs, held by the agent.
    local programs
    programs=$(portex_programs | paste -sd' ')
    if [ -n "$programs" ]; then
        report unit-bpf-programs ok "$programs"
    else
        report unit-bpf-programs FAIL "bpftool prog show lists none of $PORTEX_PROGRAM_NAMES"
    fi

    # Connections of this machine, from a process of their own, in the unit's file.
    listen_local 7001
    local client i found=""
    for i in 1 2 3; do client=$(connect_from_shell 7001); done
    for i in $(seq 40); do
        found=$(event_of "$client" 7001 "$UNIT_OUTPUT") && break
        sleep 0.5
    done
    if [ -n "$found" ]; then
        report unit-events ok "$(grep -c . "$UNIT_OUTPUT") lines; pid $client: $(printf '%s' "$found" | jq -r .event.action)"
    else
        report unit-events FAIL "no line of pid $client to port 7001 in $UNIT_OUTPUT ($(grep -c . "$UNIT_OUTPUT" 2>&1) lines): $(tail -n 2 "$UNIT_OUTPUT" 2>&1)"
    fi
    cleanup_listeners

    local metrics
    if metrics=$(http_get "http://$UNIT_METRICS/metrics"); then
        if printf '%s\n' "$metrics" | grep -q '^portex_'; then
            report unit-metrics ok "$(printf '%s\n' "$metrics" | grep -c '^portex_') portex_ samples at $UNIT_METRICS"
        else
            report unit-metrics FAIL "no portex_ sample at $UNIT_METRICS: $(printf '%s' "$metrics" | head -c 200)"
        fi
    else
        report unit-metrics FAIL "http://$UNIT_METRICS/metrics did not answer"
    fi

    # The sandbox, from inside: the agent's mount namespace, credentials, capabilities.
    local ro=""
    for dir in /usr /etc; do
        if nsenter -t "$pid" -m touch "$dir/vmhost-probe" 2>/tmp/probe.err; then
            ro="$ro $dir:writable"
            nsenter -t "$pid" -m rm -f "$dir/vmhost-probe"
        elif grep -q 'Read-only file system' /tmp/probe.err; then
            ro="$ro $dir:EROFS"
        else
            ro="$ro $dir:$(tr '\n' ' ' </tmp/probe.err)"
        fi
    done
    case "$ro" in
        " /usr:EROFS /etc:EROFS") report unit-sandbox-readonly ok "$ro" ;;
        *) report unit-sandbox-readonly FAIL "$ro" ;;
    esac
    local nnp cap
    nnp=$(awk '/^NoNewPrivs:/ { print $2 }' "/proc/$pid/status")
    cap=$(cap_eff "$pid")
    if [ "$nnp" = 1 ] && [ "$cap" = "$EXPECTED_CAPEFF" ]; then
        report unit-sandbox-credentials ok "NoNewPrivs $nnp CapEff $cap"
    else
        report unit-sandbox-credentials FAIL "NoNewPrivs $nnp CapEff $cap, expected 1 and $EXPECTED_CAPEFF"
    fi
    check unit-status systemctl status --no-pager --lines=0 portex.service

    # The host's NAT pool (main.sh set it up): the package's `portex status` as root,
    # and the unit's agent, which reads the rule's range from its sandbox.
    if [ "$NAT_READY" = 1 ]; then
        nat_checks unit "$UNIT_METRICS" true /usr/bin/portex
    fi

    # Stopped, the agent leaves no program behind.
    systemctl stop portex.service
    wait_for 10 no_portex_programs
    local left
    if left=$(no_portex_programs) && ! systemctl is-active --quiet portex.service; then
        report unit-stop-detaches ok "$(systemctl is-active portex.service); $left"
    else
        report unit-stop-detaches FAIL "$(systemctl is-active portex.service); $left"
    fi
}

unit_purge_checks() {
    systemctl stop portex.service 2>/dev/null
    dpkg --purge portex
    local p left=""
    for p in /usr/bin/portex /usr/lib/systemd/system/portex.service /etc/portex /var/log/portex; do
        [ ! -e "$p" ] || left="$left $p"
    done
    dpkg-query -W portex >/dev/null 2>&1 && left="$left dpkg-record"
    [ "$(systemctl show -P LoadState portex.service)" = not-found ] || left="$left unit-loaded"
    if [ -z "$left" ]; then
        report deb-purge ok "no binary, unit, /etc/portex, /var/log/portex or dpkg record"
    else
        report deb-purge FAIL "left:$left"
    fi
}
