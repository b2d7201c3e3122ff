#!/usr/bin/env bash
# Issue 20, "Datagrams in batches": UDP echo, 64-byte datagrams, CLIENTS
# clients (16), in one run: our Event and pool servers before batching
# (BEFORE, a `socketserver` built at 6bec294) and after (BIN), tokio
# (multi-thread) and the std thread-per-core server, unpinned and pinned.
# Pinned: the server on CPU 1 (`taskset -c 1`), the load generator on CPU 0
# with one thread. Each cell runs ROUNDS times, contenders taking turns
# within a round; the summary shows the median round and the spread.
#
#   BEFORE=/path/to/socketserver-6bec294 benches/issue20.sh
#
# Knobs: ROUNDS (3), DURATION (s, 3), WARMUP (s, 1), CLIENTS (16),
# CONTENDERS ("before-event event before-pool pool tokio std"),
# MODES ("unpinned pinned"), BIN (target/release/socketserver), LOAD (the
# generator; default BIN), CB (target/contenders/release), OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
WARMUP=${WARMUP:-1}
CLIENTS=${CLIENTS:-16}
CONTENDERS=${CONTENDERS:-"before-event event before-pool pool tokio std"}
MODES=${MODES:-"unpinned pinned"}
BIN=${BIN:-target/release/socketserver}
BEFORE=${BEFORE:?BEFORE=the socketserver binary built at 6bec294}
LOAD=${LOAD:-$BIN}
CB=${CB:-target/contenders/release}
OUT=${OUT:-benches/results/issue20/udp-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT/logs"

server_cmd() {
    case $1 in
        before-event) echo "$BEFORE echo --strategy event --log-level warn" ;;
        before-pool) echo "$BEFORE echo --strategy pool --log-level warn" ;;
        event | pool) echo "$BIN echo --strategy $1 --log-level warn" ;;
        tokio) echo "$CB/tokio_echo" ;;
        std) echo "$CB/std_echo" ;;
        *) echo "unknown contender $1" >&2; exit 2 ;;
    esac
}

start() { # NAME TAG PIN
    local log="$OUT/logs/$1.$2"
    : >"$log.out"
    # shellcheck disable=SC2046,SC2086
    env --default-signal=INT ${3:-} $(server_cmd "$1") --udp 127.0.0.1:0 >"$log.out" 2>"$log.err" &
    PID=$!
    UDP=""
    for _ in $(seq 200); do
        UDP=$(awk '/^listening udp/ {print $3}' "$log.out")
        [[ -n $UDP ]] && return 0
        sleep 0.05
    done
    echo "$1 did not start" >&2
    cat "$log.err" >&2
    exit 1
}

stop() {
    kill -INT "$PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
}

{
    echo "commit $(git rev-parse HEAD) before $BEFORE"
    echo "rounds $ROUNDS duration $DURATION warmup $WARMUP clients $CLIENTS cpus $(nproc)"
    echo "loadavg before $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$OUT/settings.txt"

for round in $(seq "$ROUNDS"); do
    for mode in $MODES; do
        pin="" gen=("$LOAD") threads=()
        if [[ $mode == pinned ]]; then
            pin="taskset -c 1" gen=(taskset -c 0 "$LOAD") threads=(--threads 1)
        fi
        for name in $CONTENDERS; do
            echo "[issue20 $(date -u +%T)] round $round $mode $name" >&2
            start "$name" "$mode.$round" "$pin"
            "${gen[@]}" bench udp-echo --addr "$UDP" -c "$CLIENTS" -b 64 --duration "$DURATION" --warmup "$WARMUP" \
                "${threads[@]}" --label "$name" --server-pid "$PID" --json >"$OUT/$mode.$name.r$round.json"
            stop
            sleep 0.3
        done
    done
done
echo "loadavg after $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/settings.txt"
python3 - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import json, sys, glob, os, statistics
out = sys.argv[1]
cells = {}
for f in sorted(glob.glob(f"{out}/*.json")):
    mode, name, _ = os.path.basename(f).split(".", 2)
    rows = json.load(open(f))
    row = rows[0] if isinstance(rows, list) else rows
    cells.setdefault((mode, name), []).append(row)
print("| mode | server | requests/s (median, spread) | server CPU µs/request (median, spread) | p99 µs | lost |")
print("|---|---|---|---|---|---|")
for (mode, name), rows in sorted(cells.items()):
    rps = sorted(r["requests_per_sec"] for r in rows)
    cpu = sorted(r.get("server_cpu_us_per_request") or float("nan") for r in rows)
    p99 = statistics.median(r["p99_us"] for r in rows)
    lost = sum(r["lost"] for r in rows)
    print(f"| {mode} | {name} | {statistics.median(rps):,.0f} ({rps[0]:,.0f}–{rps[-1]:,.0f}) | "
          f"{statistics.median(cpu):.2f} ({cpu[0]:.2f}–{cpu[-1]:.2f}) | {p99:.0f} | {lost} |")
EOF
