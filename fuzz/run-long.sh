#!/usr/bin/env bash
# Long run of one target (default 600 s), niced, logging to logs/<target>.log.
# Runs the built binary directly (build first: cargo fuzz build -s none).
set -euo pipefail
cd "$(dirname "$0")"
t=$1
secs=${2:-600}
mkdir -p "corpus/$t" "artifacts/$t" logs
exec nice -n 10 "target/x86_64-unknown-linux-gnu/release/$t" "corpus/$t" \
  -artifact_prefix="artifacts/$t/" -max_total_time="$secs" -timeout=120 \
  -rss_limit_mb=4096 -print_final_stats=1 >"logs/$t.log" 2>&1
