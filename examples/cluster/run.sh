#!/usr/bin/env bash
# Three Trellis nodes sharing realm1 over one nats-server, all on loopback:
# WebSocket on 8081, 8082, 8083; admin listeners (/readyz, /status,
# /metrics) on 9091, 9092, 9093. Ctrl-C stops everything.
#
#   TRELLIS=path/to/trellis examples/cluster/run.sh
set -euo pipefail
cd "$(dirname "$0")"
TRELLIS=${TRELLIS:-trellis}
command -v nats-server >/dev/null || { echo "nats-server not found (Debian: apt install nats-server)" >&2; exit 1; }
WORK=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; wait; rm -rf "$WORK"' EXIT INT TERM
nats-server -a 127.0.0.1 -p 4222 -js -sd "$WORK/jetstream" &
PIDS+=($!)
sleep 0.5
for n in a b c; do
    "$TRELLIS" start --config "node-$n.json" --node-dir "$WORK/node-$n" &
    PIDS+=($!)
done
echo "three nodes up: ws://127.0.0.1:8081/ws, :8082, :8083 (Ctrl-C to stop)" >&2
wait
