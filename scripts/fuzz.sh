#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/, docs/fuzzing.md) for a fixed time and fails on any
# crash, hang or leak of an invariant the targets assert.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET…]     (default: 60 s, every target)
#
# - cargo-fuzz is installed into target/tools if it is not on PATH.
# - The compiler: a nightly toolchain if rustup has one, else the stable one with
#   RUSTC_BOOTSTRAP=1 (libFuzzer's instrumentation flags are unstable); FUZZ_TOOLCHAIN=stable
#   or =nightly forces the choice.
# - Sanitizer none, debug assertions on: the code is safe Rust, so AddressSanitizer would find
#   nothing the panics and overflow checks do not, at half the speed.
# - libFuzzer writes what it learns to target/fuzz-corpus/<target> (kept between runs) and
#   only reads the committed seeds in fuzz/corpus/<target>; a crash input lands in
#   fuzz/artifacts/<target>/ and the script prints how to reproduce it.
# - FUZZ_SEED=N makes a run reproducible: libFuzzer's random seed is N and it starts from the
#   committed seeds alone (a scratch corpus emptied first), so the same inputs are tried in
#   the same order on any machine; only how far it gets in the time differs. CI uses this, so
#   a green run here at a longer time means a green CI run (docs/fuzzing.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds="${1:-60}"
shift || true
all_targets=(smtp_reply config graph_json dsn)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
case "$seconds" in '' | *[!0-9]*) echo "fuzz.sh: seconds must be a number, got '$seconds'" >&2; exit 2 ;; esac
seed="${FUZZ_SEED:-}"
case "$seed" in *[!0-9]*) echo "fuzz.sh: FUZZ_SEED must be a number, got '$seed'" >&2; exit 2 ;; esac

export PATH="$PWD/target/tools/bin:$PATH"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz into target/tools" >&2
  cargo install cargo-fuzz --locked --root target/tools >&2
fi

toolchain="${FUZZ_TOOLCHAIN:-}"
if [ -z "$toolchain" ]; then
  if command -v rustup >/dev/null 2>&1 && rustup toolchain list | grep -q '^nightly'; then
    toolchain=nightly
  else
    toolchain=stable
  fi
fi
case "$toolchain" in
  nightly) export RUSTUP_TOOLCHAIN=nightly ;;
  # The default toolchain, whatever rustup calls it (a CI machine may have only "1.95.0").
  stable) export RUSTC_BOOTSTRAP=1 ;;
  *) echo "fuzz.sh: FUZZ_TOOLCHAIN must be nightly or stable, got '$toolchain'" >&2; exit 2 ;;
esac
build_flags=(--release --debug-assertions --sanitizer none)
echo "fuzz.sh: $(rustc --version) ($toolchain${RUSTC_BOOTSTRAP:+, RUSTC_BOOTSTRAP=1}), $(cargo fuzz --version)"
echo "fuzz.sh: ${targets[*]} for ${seconds}s each${seed:+, seed $seed from the committed seeds only}"
cargo fuzz build "${build_flags[@]}"

logs=target/fuzz-logs
mkdir -p "$logs"
failed=()
summary=()
for target in "${targets[@]}"; do
  scratch="target/fuzz-corpus/$target"
  seed_flags=()
  if [ -n "$seed" ]; then
    scratch="target/fuzz-corpus-seeded/$target"
    rm -rf "$scratch"
    seed_flags=(-seed="$seed")
  fi
  mkdir -p "$scratch"
  log="$logs/$target.log"
  echo "fuzz.sh: running $target for ${seconds}s (log: $log)"
  status=0
  started=$(date +%s)
  # -timeout: one input taking over 10 s is a hang, reported like a crash.
  cargo fuzz run "${build_flags[@]}" "$target" "$scratch" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
    -print_final_stats=1 "${seed_flags[@]}" >"$log" 2>&1 || status=$?
  elapsed=$(($(date +%s) - started))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  added=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -1)
  corpus=$(find "$scratch" -type f | wc -l)
  line="$target: ${runs:-?} executions in ${elapsed}s (${rate:-?}/s), ${added:-?} new inputs, corpus $corpus"
  if [ "$status" -ne 0 ]; then
    line="$line: FAILED (exit $status)"
    failed+=("$target")
    # The panic message and the input, without the stats libFuzzer prints after them.
    grep -v '^stat::' "$log" | grep -m1 -B2 -A30 -E 'panicked|ERROR: libFuzzer|deadly signal' >&2 ||
      tail -n 40 "$log" >&2
    artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
    if [ -n "$artifact" ]; then
      echo "fuzz.sh: reproduce with: cargo fuzz run ${build_flags[*]} $target $artifact" >&2
    fi
  fi
  summary+=("$line")
  echo "fuzz.sh: $line"
done

echo "fuzz.sh: summary"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: crashes in ${failed[*]}; see fuzz/artifacts/" >&2
  exit 1
fi
