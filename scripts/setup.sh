#!/usr/bin/env bash
# Installs what a fresh machine lacks. Idempotent and quick when everything is already
# present. Needs root (apt-get) the first time.
#
#   bash scripts/setup.sh           what building and running portex needs: the eBPF tool
#                                   chain (nightly rust-src, llvm-22-dev, bpf-linker)
#   bash scripts/setup.sh --test    that, and what the tests, the bench, packaging and the
#                                   kernel matrix use (README.md, "On a fresh machine")
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf 'setup: %s\n' "$*" >&2; }

test_tools=0
for arg in "$@"; do
  case "$arg" in
    --test) test_tools=1 ;;
    *) echo "setup: unknown argument $arg (known: --test)" >&2; exit 2 ;;
  esac
done

need_apt=()
[ -d /usr/lib/llvm-22/lib ] && ls /usr/lib/llvm-22/lib/libLLVM*.so >/dev/null 2>&1 || need_apt+=(llvm-22-dev)
if [ "$test_tools" = 1 ]; then
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
  # The kernel matrix (`cargo xtask kernels`): QEMU boots Debian's kernels through
  # virtme-ng, which needs busybox, kmod, file and udev on the host (without udev the
  # guest's output channel is lost).
  command -v qemu-system-x86_64 >/dev/null 2>&1 || need_apt+=(qemu-system-x86)
  [ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || need_apt+=(busybox-static)
  command -v modprobe >/dev/null 2>&1 || need_apt+=(kmod)
  command -v file >/dev/null 2>&1 || need_apt+=(file)
  command -v udevadm >/dev/null 2>&1 || need_apt+=(udev)
  # `cargo xtask vmhost`: a Debian root filesystem (debootstrap), its disk image (mkfs.ext4
  # -d) and the VM that boots it (QEMU, TCG).
  command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
  command -v mkfs.ext4 >/dev/null 2>&1 || need_apt+=(e2fsprogs)
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
  log "installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ "$test_tools" = 1 ]; then
  # The DaemonSet's schema check: the Kubernetes API's schemas, bundled (no cluster).
  if ! python3 -c 'import kubernetes_validate' >/dev/null 2>&1; then
    log "installing kubernetes-validate"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      kubernetes-validate==1.37.0
  fi
  if ! command -v vng >/dev/null 2>&1; then
    log "installing virtme-ng"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
      virtme-ng==1.42
  fi
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
if [ "$test_tools" = 1 ]; then
  # The Vector config's remap program runs in Vector's own VRL implementation (its CLI).
  if ! command -v vrl >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/vrl" ]; then
    log "building the vrl command line (a few minutes, once)"
    cargo install --locked vrl --version 0.38.0
  fi
fi
log "ready"
