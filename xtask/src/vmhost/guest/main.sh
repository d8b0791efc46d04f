#!/bin/bash
# The checks of `cargo xtask vmhost`, run once at boot by vmhost-check.service, which
# powers the machine off when they end. Not `set -e`: every check runs and reports,
# whatever the one before it did.
set -u
# Writing the results opens ttyS0, which makes it this session leader's controlling
# terminal: a hangup of the port (a getty, logind) must not end the checks.
trap '' HUP
cd /opt/vmhost || exit 1
. ./env
. ./lib.sh
. ./unit.sh
. ./nat.sh
. ./image.sh

printf 'VMHOST START %s kernel %s\n' "$(date -u +%FT%TZ)" "$(uname -r)" >"$RESULTS"
report guest-systemd "$([ "$(cat /proc/1/comm)" = systemd ] && [ -f /sys/fs/cgroup/cgroup.controllers ] && echo ok || echo FAIL)" \
    "PID 1 $(cat /proc/1/comm), $(stat -fc %T /sys/fs/cgroup), $(systemctl is-system-running)"
check no-programs-before no_portex_programs
# A NAT gateway for the unit and the image alike (nat.sh).
started=$SECONDS
if nat_setup >/tmp/nat-setup.log 2>&1; then
    NAT_READY=1
    report nat-setup ok "pod -> host (masquerade to :40000-40009) -> srv: $NAT_RANGE_SIZE connections held, $((SECONDS - started)) s"
else
    report nat-setup FAIL "the pod's $NAT_RANGE_SIZE connections through the NAT did not all establish: $(tail -n 2 /tmp/nat-setup.log)"
fi
started=$SECONDS
unit_checks
printf 'VMHOST TIME unit %s\n' "$((SECONDS - started))" >"$RESULTS"
started=$SECONDS
image_checks
printf 'VMHOST TIME image %s\n' "$((SECONDS - started))" >"$RESULTS"
nat_teardown
printf 'VMHOST DONE\n' >"$RESULTS"
