#!/usr/bin/env bash
# The demo's OpenAPI document is exactly what the demo does: Schemathesis (PyPI) generates
# requests from the running demo's own /openapi.json and runs every check on the answers
# (`--checks all`: undeclared statuses, content types and headers, bodies off their schema,
# valid requests refused, invalid ones accepted, server errors...). Any failure fails the run.
#
# The demo runs from `cargo build -p demo-app` on a free loopback port with its data in a
# temporary directory, and is stopped when the run ends. Requests carry the seeded admin
# token (`DEMO_ADMIN_TOKEN`, the demo's documented way to fix its credentials). The audit log
# API's operations (`/accounts/{account_id}/logs/audit...`, `audit_store::query`, merged into
# the demo's document) are sent to the seeded account `acc_demo`, the one that token may read:
# with a random account every request would be the same 404, and the API's parameters would
# go untested.
#
# Bounded: a fixed number of examples per operation (`ST_MAX_EXAMPLES`), and killed past a
# time limit (`ST_MAX_TIME` seconds); a fixed seed (`ST_SEED`) so that a run is reproducible.
#
# Run from the workspace root: `bash scripts/check-demo-openapi.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_EXAMPLES="${ST_MAX_EXAMPLES:-25}"
MAX_TIME="${ST_MAX_TIME:-240}"
SEED="${ST_SEED:-20}"
TOKEN="demo_schemathesis_0123456789abcdef"
VENV=target/schemathesis-venv

if [ ! -x "$VENV/bin/st" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4.32,<5'

cargo build --quiet --locked -p demo-app --bin demo-app
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
DEMO="$TARGET_DIR/debug/demo-app"

DATA="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
DEMO_PID=""
cleanup() {
  if [ -n "$DEMO_PID" ]; then
    kill "$DEMO_PID" 2>/dev/null || true
    wait "$DEMO_PID" 2>/dev/null || true
  fi
  rm -rf "$DATA"
}
trap cleanup EXIT

env -u DATABASE_URL DEMO_ADMIN_TOKEN="$TOKEN" RUST_LOG=warn \
  "$DEMO" --listen "127.0.0.1:$PORT" --data-dir "$DATA/demo" >"$DATA/stdout.txt" 2>"$DATA/stderr.txt" &
DEMO_PID=$!
for _ in $(seq 1 300); do
  if curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$DEMO_PID" 2>/dev/null; then
    echo "demo-app exited before answering /healthz:" >&2
    cat "$DATA/stderr.txt" >&2
    exit 1
  fi
  sleep 0.1
done

# `--max-time` would repeat fuzzing until the time is spent: the examples bound the run, and
# `timeout` bounds a run gone wrong.
ST="$PWD/$VENV/bin/st"
# The audit log API's filters repeat (up to 100 values each, 1,024 characters a value), so a
# query can be longer than the server takes: hyper answers a request line over 64 KiB with
# 414, before any handler, whatever the document allows. OpenAPI cannot bound the length of a
# whole query; the document declares the 414, and both data checks take it as what it is, a
# refusal. What else OpenAPI cannot state (a cursor comes from the server; the stats' bucket
# limit) the hooks in schemathesis_hooks.py keep the valid cases to.
cat >"$DATA/schemathesis.toml" <<'EOF'
[[operations]]
include-path-regex = "/logs/audit"
parameters = { "path.account_id" = "acc_demo" }
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "414", "429", "5xx"]
checks.negative_data_rejection.expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "414", "415", "422", "428", "429", "5xx"]
EOF
export SCHEMATHESIS_HOOKS="$PWD/scripts/schemathesis_hooks.py"
# Run from the temporary directory: Schemathesis keeps a cache (`.schemathesis/`) where it runs.
# One worker: with two, Hypothesis's lambda-description cache (not thread-safe) once raised a
# KeyError inside the generator, reported as a `FlakyFailure` "Runtime Error" with every test
# case passing (schemathesis 4.32.5, hypothesis 6.170.27); a flake of the tool, not the API.
schemathesis() {
  (cd "$DATA" && timeout "$MAX_TIME" "$ST" --config-file "$DATA/schemathesis.toml" --no-color \
    run "http://127.0.0.1:$PORT/openapi.json" \
    --checks all \
    --header "Authorization: Bearer $TOKEN" \
    --max-examples "$MAX_EXAMPLES" \
    --seed "$SEED" \
    --workers 1 \
    --request-timeout 10 \
    --generation-database none \
    "$@")
}
# Revoking a token can revoke the one the run authenticates with: every later request would
# be a 401. That operation runs last, on its own.
REVOKE="/accounts/{account_id}/tokens/{token_id}"
schemathesis --exclude-path "$REVOKE" "$@"
schemathesis --include-path "$REVOKE" "$@"
