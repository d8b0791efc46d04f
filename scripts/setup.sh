#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test portex. Idempotent and quick
# when everything is already present. Needs root (apt-get) the first time.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf 'setup: %s\n' "$*" >&2; }

need_apt=()
[ -d /usr/lib/llvm-22/lib ] && ls /usr/lib/llvm-22/lib/libLLVM*.so >/dev/null 2>&1 || need_apt+=(llvm-22-dev)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v ss >/dev/null 2>&1 || need_apt+=(iproute2)
command -v bpftool >/dev/null 2>&1 || need_apt+=(bpftool)
command -v tmux >/dev/null 2>&1 || need_apt+=(tmux)
command -v sysctl >/dev/null 2>&1 || need_apt+=(procps)
command -v setpriv >/dev/null 2>&1 || need_apt+=(util-linux)
# The agent tests scrape portex with a real Prometheus and run promtool.
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# The NAT tests: a masquerade rule and the conntrack table to compare with.
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
command -v conntrack >/dev/null 2>&1 || need_apt+=(conntrack)
# The bench's peer (libbpf-tools' tcplife): churn ratio and lines per connection beside it.
command -v tcplife >/dev/null 2>&1 || need_apt+=(libbpf-tools)
# The unit's tests: systemd-analyze rates and verifies it offline and expands its syscall
# groups; the kernel's syscall numbers for the emulated filter.
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
[ "$(uname -m)" != x86_64 ] || [ -e /usr/include/x86_64-linux-gnu/asm/unistd_64.h ] || need_apt+=(linux-libc-dev)
# `cargo xtask dist` builds the OCI image with podman (dpkg-deb, for the .deb, is dpkg's).
command -v podman >/dev/null 2>&1 || need_apt+=(podman)
# `cargo xtask vmhost`: a Debian root filesystem (debootstrap), its disk image (mkfs.ext4
# -d) and the VM that boots it (QEMU, TCG).
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
command -v mkfs.ext4 >/dev/null 2>&1 || need_apt+=(e2fsprogs)
command -v qemu-system-x86_64 >/dev/null 2>&1 || need_apt+=(qemu-system-x86)
if [ "${#need_apt[@]}" -gt 0 ]; then
  log "installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The DaemonSet's schema check: the Kubernetes API's schemas, bundled (no cluster).
if ! python3 -c 'import kubernetes_validate' >/dev/null 2>&1; then
  log "installing kubernetes-validate"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    kubernetes-validate==1.37.0
fi

if ! rustup toolchain list | grep -q '^nightly'; then
  log "installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
# rust-src for -Z build-std=core (the eBPF build); clippy for `cargo xtask clippy`, whose
# kernel pass runs nightly clippy for the bpf target.
for component in rust-src clippy; do
  if ! rustup component list --toolchain nightly --installed | grep -q "^$component"; then
    log "adding $component to nightly"
    rustup component add "$component" --toolchain nightly
  fi
done

if ! command -v bpf-linker >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/bpf-linker" ]; then
  log "building bpf-linker against LLVM 22 (about a minute)"
  LLVM_PREFIX=/usr/lib/llvm-22 cargo install --locked bpf-linker --no-default-features --features llvm-22
fi
# The Vector config's remap program runs in Vector's own VRL implementation (its CLI).
if ! command -v vrl >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/vrl" ]; then
  log "building the vrl command line (a few minutes, once)"
  cargo install --locked vrl --version 0.38.0
fi
log "ready"
