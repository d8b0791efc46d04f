# The vocabulary of the guest's checks (sourced by main.sh). Result lines go to the
# serial port, the host's only channel out of the VM (-nic none): one line per check,
#   VMHOST CHECK <name> ok [detail]
#   VMHOST CHECK <name> FAIL <detail>
# which xtask/src/vmhost/results.rs parses. Everything else the checks print goes to
# the journal and the console, for the serial log the host keeps.

RESULTS=/dev/ttyS0

# report NAME ok|FAIL DETAIL: one result line, on one line whatever DETAIL holds.
report() {
    local name=$1 verdict=$2
    shift 2
    local detail
    detail=$(printf '%s' "$*" | tr '\n\r\t' '   ' | cut -c1-400)
    printf 'VMHOST CHECK %s %s %s\n' "$name" "$verdict" "$detail" >"$RESULTS"
    printf 'vmhost: %s %s %s\n' "$name" "$verdict" "$detail"
}

# check NAME COMMAND...: ok when COMMAND succeeds, else FAIL with its output. The
# command's last line of output is the detail in both cases.
check() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then
        report "$name" ok "$(printf '%s' "$out" | tail -n 1)"
    else
        report "$name" FAIL "$(printf '%s' "$out" | tail -n 3)"
    fi
}

# wait_for SECONDS COMMAND...: retries COMMAND every half second until it succeeds.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

# wait_healthy ALIVE URL SECONDS: waits until URL (/healthz) answers; gives up at once
# when ALIVE says the agent no longer runs.
wait_healthy() {
    local alive=$1 url=$2 deadline=$((SECONDS + $3))
    until http_get "$url" >/dev/null 2>&1; do
        "$alive" || { echo "the agent is not running"; return 1; }
        [ "$SECONDS" -lt "$deadline" ] || { echo "$url did not answer within $3 s"; return 1; }
        sleep 0.5
    done
}

# first_error: the first line of the agent's log on stdin that says error, cut short
# (the verifier's log, when it refuses a program, is a thousand lines on one).
first_error() {
    grep -m1 -i 'error' | cut -c1-240
}

unit_running() { systemctl is-active --quiet portex.service; }
container_running() { [ "$(podman inspect -f '{{.State.Running}}' portex-ds 2>/dev/null)" = true ]; }

# http_get URL: the body, failing on an HTTP error (curl's -f).
http_get() {
    curl -fsS --max-time 20 "$1"
}

# A listener on 127.0.0.1:PORT answering each connection with a line (socat, forking).
listen_local() {
    socat "TCP-LISTEN:$1,bind=127.0.0.1,reuseaddr,fork,backlog=64" SYSTEM:'echo hello' &
    LISTENERS+=("$!")
    wait_for 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1"
}

# connect_from_shell PORT: one connection to 127.0.0.1:PORT from a shell of its own;
# prints that shell's pid (the process an event must name).
connect_from_shell() {
    bash -c 'echo $$; exec 3<>/dev/tcp/127.0.0.1/'"$1"'; read -r -t 5 line <&3; sleep 0.2; exec 3>&-'
}

# portex_programs: the tracepoint programs named as portex's are, one "id name" a line
# (bpftool prints the whole name from BTF, else the kernel's 15 characters of it). By
# name, not by holder: Debian's bpftool is built without the pid iterator (no "pids" in
# its output). Before the agent starts there is none (main.sh checks), so those listed
# while it runs are its own.
portex_programs() {
    bpftool -j prog show | jq -r --arg names "$PORTEX_PROGRAM_NAMES" \
        '($names | split(" ")) as $n | .[] | select(.type == "tracepoint") | .name as $x
         | select(any($n[]; . == $x or .[0:15] == $x)) | "\(.id) \($x)"'
}

# event_of PID PORT FILE: a `connect` line of FILE from process PID towards PORT.
event_of() {
    jq -c --argjson pid "$1" --argjson port "$2" \
        'select(.process.pid == $pid and .destination.port == $port)' "$3" 2>/dev/null | grep -m1 .
}

# cap_eff PID: the effective capability set of PID, as /proc prints it.
cap_eff() {
    awk '/^CapEff:/ { print $2 }' "/proc/$1/status"
}

cleanup_listeners() {
    local pid
    for pid in "${LISTENERS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    LISTENERS=()
}
LISTENERS=()

# loaded_state UNIT: succeeds when systemd has loaded UNIT's file.
loaded_state() {
    local state
    state=$(systemctl show -P LoadState "$1")
    echo "LoadState=$state"
    [ "$state" = loaded ]
}

# no_portex_programs: succeeds when bpftool lists no program of portex's.
no_portex_programs() {
    local left
    left=$(portex_programs | paste -sd' ')
    if [ -n "$left" ]; then
        echo "left: $left"
        return 1
    fi
    echo "no portex program in bpftool prog show"
}
