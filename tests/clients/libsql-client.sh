#!/usr/bin/env bash
# The real-client test: `@libsql/client` (its pure-JS web entry, from npm) against a release
# `libsql-wal run` with auth on both APIs. Run from the repository root by .ci/run after the
# release build; needs node and npm (and the npm registry for `npm ci`).
set -euo pipefail
cd "$(dirname "$0")/../.."
bin="${CARGO_TARGET_DIR:-target}/release/libsql-wal"
[ -x "$bin" ] || { echo "no $bin: build the workspace first" >&2; exit 1; }
data=$(mktemp -d)
pid=""
replica=""
forwarding=""
trap 'kill -9 "$pid" "$replica" "$forwarding" 2>/dev/null || true; rm -rf "$data"' EXIT

export LIBSQL_WAL_AUTH_TOKEN="user-$RANDOM$RANDOM"
export LIBSQL_WAL_ADMIN_AUTH_TOKEN="admin-$RANDOM$RANDOM"
"$bin" run --data-dir "$data/data" --listen 127.0.0.1:18080 --admin-listen 127.0.0.1:19090 \
  >"$data/out" 2>"$data/err" &
pid=$!
# A read replica of it, following `default`, with the same user token, catching up from the
# primary's bucket (made here: the primary may not have made it yet).
mkdir -p "$data/data/bucket"
"$bin" run --data-dir "$data/replica" --listen 127.0.0.1:18081 --admin-listen 127.0.0.1:19091 \
  --replicate-from http://127.0.0.1:18080 --namespaces default --primary-storage "$data/data/bucket" \
  --primary-auth-token "$LIBSQL_WAL_AUTH_TOKEN" >"$data/replica-out" 2>"$data/replica-err" &
replica=$!
# Another, which forwards writes to the primary.
"$bin" run --data-dir "$data/forwarding" --listen 127.0.0.1:18082 --admin-listen 127.0.0.1:19092 \
  --replicate-from http://127.0.0.1:18080 --namespaces default --forward-writes \
  --primary-auth-token "$LIBSQL_WAL_AUTH_TOKEN" >"$data/forwarding-out" 2>"$data/forwarding-err" &
forwarding=$!
for server in "$pid:out:err" "$replica:replica-out:replica-err" "$forwarding:forwarding-out:forwarding-err"; do
  IFS=: read -r p out err <<<"$server"
  for _ in $(seq 1 100); do
    grep -q '^  try:' "$data/$out" 2>/dev/null && break
    kill -0 "$p" 2>/dev/null || { cat "$data/$out" "$data/$err" >&2; exit 1; }
    sleep 0.2
  done
done

(
  cd tests/clients/libsql-client
  npm ci --no-audit --no-fund --loglevel=error
  LIBSQL_URL=http://127.0.0.1:18080 LIBSQL_ADMIN_URL=http://127.0.0.1:19090 \
    LIBSQL_REPLICA_URL=http://127.0.0.1:18081 LIBSQL_FORWARDING_REPLICA_URL=http://127.0.0.1:18082 \
    LIBSQL_AUTH_TOKEN="$LIBSQL_WAL_AUTH_TOKEN" LIBSQL_ADMIN_TOKEN="$LIBSQL_WAL_ADMIN_AUTH_TOKEN" \
    node test.mjs
)

for server in "$replica:replica-err" "$forwarding:forwarding-err"; do
  IFS=: read -r p err <<<"$server"
  kill -TERM "$p"
  status=0
  wait "$p" || status=$?
  [ "$status" -eq 0 ] || { echo "a replica's SIGTERM gave exit code $status" >&2; cat "$data/$err" >&2; exit 1; }
done
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
[ "$status" -eq 0 ] || { echo "SIGTERM gave exit code $status" >&2; cat "$data/err" >&2; exit 1; }
tail -n 1 "$data/out"
