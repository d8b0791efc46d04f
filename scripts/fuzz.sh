#!/usr/bin/env bash
# Fuzzes every parser of bytes from outside the agent (fuzz/fuzz_targets/, cargo-fuzz and
# libFuzzer on nightly) for SECONDS per target (default 20), one target at a time.
#
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET]
#
# Each target starts from its checked-in seed corpus (fuzz/corpus/<target>/), copied to a
# scratch directory so that a run leaves the repository as it was. One line per target:
# the executions run and whether it crashed; a crashing input stays under
# fuzz/artifacts/<target>/ and its path is printed. Exits 1 when any target crashed.
# Installs cargo-fuzz when it is missing; builds without the eBPF object
# (AYA_BUILD_SKIP=1), so bpf-linker is not needed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

secs="${1:-20}"
if ! [[ "$secs" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET]" >&2
  exit 2
fi

log() { printf 'fuzz: %s\n' "$*" >&2; }
start=$SECONDS

if ! rustup toolchain list | grep -q '^nightly'; then
  log "installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal
fi
# libfuzzer-sys compiles libFuzzer (C++).
if ! command -v c++ >/dev/null 2>&1; then
  log "installing g++"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends g++ >/dev/null
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  # A debug build of the tool: it only drives cargo, and builds in half the time.
  log "installing cargo-fuzz (under a minute)"
  cargo install cargo-fuzz --locked --version 0.13.2 --debug --quiet
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# No eBPF object in the fuzz build (see portex-agent/build.rs). The coverage-guided
# build is release-optimised with overflow checks and debug assertions on, under
# AddressSanitizer (cargo-fuzz's defaults); fuzz/Cargo.toml lowers opt-level to keep
# the build inside CI's budget.
export AYA_BUILD_SKIP=1
log "building the fuzz targets"
if ! cargo +nightly fuzz build >"$work/build.log" 2>&1; then
  tail -n 40 "$work/build.log" >&2
  log "build failed"
  exit 1
fi
log "built in $((SECONDS - start)) s"

triple="$(rustc +nightly -vV | sed -n 's/^host: //p')"
bins="fuzz/target/$triple/release"
mapfile -t targets < <(cargo +nightly fuzz list)

crashed=0
total=0
for t in "${targets[@]}"; do
  corpus="$work/corpus/$t"
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  cp -R "fuzz/corpus/$t/." "$corpus/"
  args=(
    -max_total_time="$secs"
    # A single input running this long is a hang: reported like a crash.
    -timeout=10
    # One allocation or the whole process past this is reported too (oom-...).
    -rss_limit_mb=2048
    -print_final_stats=1
    -artifact_prefix="fuzz/artifacts/$t/"
  )
  [ -f "fuzz/dict/$t.dict" ] && args+=(-dict="fuzz/dict/$t.dict")
  rc=0
  "$bins/$t" "${args[@]}" "$corpus" >"$work/$t.log" 2>&1 || rc=$?
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/$t.log" | tail -n 1)"
  execs="${execs:-0}"
  total=$((total + execs))
  input="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$work/$t.log" | tail -n 1)"
  if [ "$rc" -eq 0 ] && [ -z "$input" ]; then
    printf 'fuzz: %-14s %10s executions in %s s, no crash\n' "$t" "$execs" "$secs"
  else
    crashed=$((crashed + 1))
    printf 'fuzz: %-14s %10s executions, CRASH (exit %s); input: %s\n' \
      "$t" "$execs" "$rc" "${input:-none written, see the log above}"
    # The panic or sanitizer report, and libFuzzer's summary.
    grep -E -A12 "panicked at|==ERROR|ERROR: libFuzzer" "$work/$t.log" | head -n 40 >&2 ||
      tail -n 40 "$work/$t.log" >&2
    [ -n "$input" ] && log "reproduce: AYA_BUILD_SKIP=1 cargo +nightly fuzz run $t $input"
  fi
done

log "${#targets[@]} targets, $total executions, $crashed crashed, $((SECONDS - start)) s in all"
[ "$crashed" -eq 0 ]
