#!/usr/bin/env bash
# The README's first screen, run as a newcomer runs it: the run command starts, the curl line
# it prints works as printed, and SIGTERM stops it with exit code 0. Run from the repository
# root by .ci/run (its data goes to ./libsql-wal-data, removed before and after).
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf libsql-wal-data
out=$(mktemp)
err=$(mktemp)
pid=""
trap 'kill -9 "$pid" 2>/dev/null || true; rm -rf libsql-wal-data "$out" "$err"' EXIT

# The README's command. `cargo run` execs the binary on Unix, so $pid is the server itself.
cargo run --release -p libsql-wal-cli -- run >"$out" 2>"$err" &
pid=$!
for _ in $(seq 1 1800); do
  grep -q '^  try:' "$out" && break
  kill -0 "$pid" 2>/dev/null || { echo "the server exited before serving:" >&2; cat "$out" "$err" >&2; exit 1; }
  sleep 0.5
done
grep -q '^  try:' "$out" || { echo "no banner after 900 s" >&2; cat "$out" "$err" >&2; exit 1; }
echo "--- the banner"
cat "$out"

curl_line=$(sed -n 's/^  try: *//p' "$out")
answer=$(eval "$curl_line")
echo "--- the printed curl line answered: $answer"
case "$answer" in
  *'"type":"ok"'*'"value":"1"'*) ;;
  *) echo "the printed curl line did not answer SELECT 1" >&2; exit 1 ;;
esac

kill -TERM "$pid"
status=0
wait "$pid" || status=$?
echo "--- after SIGTERM (exit code $status)"
tail -n 1 "$out"
[ "$status" -eq 0 ] || { echo "SIGTERM gave exit code $status" >&2; cat "$err" >&2; exit 1; }
grep -q '^libsql-wal stopped: ' "$out" || { echo "no shutdown summary" >&2; exit 1; }
echo "newcomer: ok"
