#!/usr/bin/env bash
# A local fleet (issue 23's "Scaling out"): a 3-node NATS JetStream cluster on loopback
# ports, two demo-app instances publishing their audit records to it (AUDIT_NATS_URL), two
# audit-ingest processes sharing the stream's durable consumer and writing into the existing
# PostgreSQL. Prints what runs where; Ctrl-C stops everything.
#
#   scripts/fleet.sh                 # debug builds, DATABASE_URL or the local test database
#   scripts/fleet.sh --release       # release builds
#
# Settings (environment):
#   DATABASE_URL     the PostgreSQL both the demos (their own tables) and the ingestors (the
#                    audit tables) use [postgres://postgres@127.0.0.1:5432/test]
#   FLEET_DIR        where the nodes' stores, the demos' data and every log go [a new temp dir,
#                    deleted at exit unless FLEET_KEEP=1]
#   AUDIT_CHAIN_SECRET  the fleet's chain secret, 64 hex digits [generated on the first run,
#                    kept in target/fleet/chain-secret for the next ones]
#   DEMO_ADMIN_TOKEN, DEMO_OTHER_TOKEN  the seeded accounts' API tokens, shared by both demos
#                    [generated for this run]
#   NATS_SERVER      the nats-server binary [/usr/sbin/nats-server, else the PATH's]
#
# Every port is a free loopback port picked at start: never 4222, so a NATS server of the
# machine's own is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug
cargo_flags=()
case "${1:-}" in
  --release) profile=release; cargo_flags=(--release) ;;
  "") ;;
  *) echo "usage: $0 [--release]" >&2; exit 2 ;;
esac

database_url="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
nats_server="${NATS_SERVER:-}"
if [ -z "$nats_server" ]; then
  if [ -x /usr/sbin/nats-server ]; then nats_server=/usr/sbin/nats-server
  else nats_server="$(command -v nats-server || true)"; fi
fi
if [ -z "$nats_server" ] || [ ! -x "$nats_server" ]; then
  echo "fleet: no nats-server (Debian: apt-get install nats-server; or set NATS_SERVER)" >&2
  exit 1
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

echo "fleet: building demo-app and audit-ingest ($profile)"
cargo build "${cargo_flags[@]}" -p demo-app --bin demo-app
cargo build "${cargo_flags[@]}" -p audit-store --features ingest --bin audit-ingest
target="${CARGO_TARGET_DIR:-target}/$profile"

if [ -n "${FLEET_DIR:-}" ]; then
  dir="$FLEET_DIR"; mkdir -p "$dir"
else
  dir="$(mktemp -d -t audit-fleet-XXXXXX)"
fi
# The chain secret outlives the run: the audit tables do (in DATABASE_URL), and their chains
# verify only under the secret that wrote them.
secret_file="${CARGO_TARGET_DIR:-target}/fleet/chain-secret"
if [ -z "${AUDIT_CHAIN_SECRET:-}" ] && [ ! -s "$secret_file" ]; then
  mkdir -p "$(dirname "$secret_file")"
  (umask 077; python3 -c 'import secrets; print(secrets.token_hex(32))' >"$secret_file")
fi
secret="${AUDIT_CHAIN_SECRET:-$(cat "$secret_file")}"
# Both demos seed the same app database at start: one pair of API tokens for both, or the
# second demo's seeding would replace the first's.
admin_token="${DEMO_ADMIN_TOKEN:-demo_$(python3 -c 'import secrets; print(secrets.token_hex(24))')}"
other_token="${DEMO_OTHER_TOKEN:-demo_$(python3 -c 'import secrets; print(secrets.token_hex(24))')}"

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "fleet: stopping (SIGTERM: the demos flush to the stream, the ingestors finish their batch)"
  # Apps first, then ingestors, then NATS: each drains into the next.
  for group in demo ingest nats; do
    for entry in "${pids[@]}"; do
      [ "${entry%%:*}" = "$group" ] && kill -TERM "${entry#*:}" 2>/dev/null || true
    done
    for entry in "${pids[@]}"; do
      [ "${entry%%:*}" = "$group" ] && wait "${entry#*:}" 2>/dev/null || true
    done
  done
  if [ -z "${FLEET_DIR:-}" ] && [ "${FLEET_KEEP:-0}" != 1 ]; then
    rm -rf "$dir"
  else
    echo "fleet: logs and stores kept in $dir"
  fi
}
trap 'stop; exit 130' INT TERM
trap stop EXIT

# The NATS cluster: three nodes, JetStream on, routes to each other.
client=(); route=(); monitor=()
for i in 0 1 2; do
  client+=("$(free_port)"); route+=("$(free_port)"); monitor+=("$(free_port)")
done
for i in 0 1 2; do
  mkdir -p "$dir/nats-$i"
  routes=""
  for j in 0 1 2; do
    [ "$j" = "$i" ] || routes="${routes:+$routes, }\"nats-route://127.0.0.1:${route[$j]}\""
  done
  cat >"$dir/nats-$i/nats.conf" <<EOF
server_name: fleet-n$i
listen: 127.0.0.1:${client[$i]}
http: 127.0.0.1:${monitor[$i]}
log_file: "$dir/nats-$i/server.log"
jetstream { store_dir: "$dir/nats-$i/jetstream" }
cluster { name: audit-fleet, listen: 127.0.0.1:${route[$i]}, routes: [$routes] }
EOF
  "$nats_server" -c "$dir/nats-$i/nats.conf" &
  pids+=("nats:$!")
done
nats_urls="nats://127.0.0.1:${client[0]},nats://127.0.0.1:${client[1]},nats://127.0.0.1:${client[2]}"

echo "fleet: waiting for the NATS cluster to elect a JetStream leader"
for _ in $(seq 1 300); do
  ready=0
  for i in 0 1 2; do
    if python3 - "${monitor[$i]}" <<'EOF' 2>/dev/null; then ready=$((ready + 1)); fi
import json, sys, urllib.request
port = sys.argv[1]
urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
jsz = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/jsz", timeout=2))
sys.exit(0 if jsz.get("meta_cluster", {}).get("leader") else 1)
EOF
  done
  [ "$ready" = 3 ] && break
  sleep 0.2
done
if [ "$ready" != 3 ]; then
  echo "fleet: the NATS cluster did not become ready; see $dir/nats-*/server.log" >&2
  exit 1
fi

# Two demos: the first creates the stream (replicated on the three nodes).
demo_port=()
for i in 0 1; do
  demo_port+=("$(free_port)")
  mkdir -p "$dir/demo-$i"
  AUDIT_NATS_URL="$nats_urls" AUDIT_NATS_REPLICAS=3 DATABASE_URL="$database_url" \
    DEMO_CHAIN_SECRET="$secret" DEMO_ADMIN_TOKEN="$admin_token" DEMO_OTHER_TOKEN="$other_token" \
    "$target/demo-app" --listen "127.0.0.1:${demo_port[$i]}" --data-dir "$dir/demo-$i/data" \
    >"$dir/demo-$i/stdout.log" 2>"$dir/demo-$i/stderr.log" &
  pids+=("demo:$!")
  for _ in $(seq 1 600); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${demo_port[$i]}/healthz', timeout=1)" \
      2>/dev/null && break
    sleep 0.1
  done
done

# Two ingestors, one durable consumer.
for i in 0 1; do
  mkdir -p "$dir/ingest-$i"
  AUDIT_NATS_URL="$nats_urls" DATABASE_URL="$database_url" AUDIT_CHAIN_SECRET="$secret" \
    RUST_LOG="${RUST_LOG:-info}" \
    "$target/audit-ingest" >"$dir/ingest-$i/stdout.log" 2>"$dir/ingest-$i/stderr.log" &
  pids+=("ingest:$!")
done

cat <<EOF

fleet: running (Ctrl-C stops everything)
  NATS cluster   $nats_urls
                 monitoring http://127.0.0.1:${monitor[0]}/jsz (also :${monitor[1]}, :${monitor[2]})
  demo 0         http://127.0.0.1:${demo_port[0]}   (logs $dir/demo-0/)
  demo 1         http://127.0.0.1:${demo_port[1]}   (logs $dir/demo-1/)
  API tokens     acc_demo: $admin_token
                 acc_other: $other_token
  ingestors      2 x audit-ingest, stream AUDIT, consumer audit-ingest (logs $dir/ingest-*/)
  PostgreSQL     $database_url
  directory      $dir

  try: curl -s -H "Authorization: Bearer $admin_token" http://127.0.0.1:${demo_port[1]}/zones
       curl -s -H "Authorization: Bearer $admin_token" "http://127.0.0.1:${demo_port[0]}/accounts/acc_demo/logs/audit?since=$(date -u +%F)"
EOF

# Until Ctrl-C, or until one of the processes dies.
while :; do
  for entry in "${pids[@]}"; do
    if ! kill -0 "${entry#*:}" 2>/dev/null; then
      echo "fleet: ${entry%%:*} process ${entry#*:} exited; see $dir" >&2
      exit 1
    fi
  done
  sleep 1
done
