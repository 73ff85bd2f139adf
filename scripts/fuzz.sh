#!/usr/bin/env bash
# Coverage-guided fuzzing of every target in tests/fuzz (cargo-fuzz, libFuzzer,
# AddressSanitizer) for SECONDS each. Installs what it needs when missing: the
# nightly toolchain (rustup, minimal profile) and cargo-fuzz (pinned).
#
# Usage: [JOBS=1] scripts/fuzz.sh [SECONDS=60] [TARGET...]
#
# Inputs that grow coverage go to target/fuzz-corpus/<target>/ (not committed;
# the committed seeds and regressions in tests/fuzz/corpus/<target>/ are read
# too). A finding stops its target and leaves the input in
# target/fuzz-artifacts/<target>/: minimise it (`cargo +nightly fuzz tmin`),
# fix the bug, and commit the input as tests/fuzz/corpus/<target>/regress-<what>
# (`cargo test -p wasmtap-fuzz` then runs it on every build).
# Prints one line per target: its runs, its time, and whether it found anything.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}; shift || true
CARGO_FUZZ_VERSION=0.13.2
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: installing the nightly toolchain (rustup, minimal)" >&2
  rustup toolchain install nightly --profile minimal >&2
fi
if [[ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
  echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" -j2 >&2
fi
targets=("$@")
if ((${#targets[@]} == 0)); then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' tests/fuzz/cargo-fuzz/Cargo.toml | grep -v '^wasmtap-fuzz-cargo$')
fi
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
dir=(--fuzz-dir tests/fuzz/cargo-fuzz --target-dir target/fuzz)
cargo +nightly fuzz build "${dir[@]}" >&2
one() {
  local t=$1 log="target/fuzz-artifacts/$1.log"
  mkdir -p "target/fuzz-corpus/$t" "target/fuzz-artifacts/$t"
  if cargo +nightly fuzz run "${dir[@]}" "$t" "target/fuzz-corpus/$t" "tests/fuzz/corpus/$t" -- \
      -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="target/fuzz-artifacts/$t/" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    echo "fuzz: $t: ${runs:-?} runs in ${secs}s, ${cov:-cov: ?}, no finding"
  else
    echo "fuzz: $t: FINDING; see $log and target/fuzz-artifacts/$t/"
    return 1
  fi
}
export -f one
export secs
# JOBS targets at a time (default 1; each takes one core).
export dir_args="${dir[*]}"
printf '%s\n' "${targets[@]}" | xargs -P "${JOBS:-1}" -I{} bash -c 'dir=($dir_args); one "$@"' _ {}
