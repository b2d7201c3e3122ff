#!/usr/bin/env bash
# Blocking handlers under mixed load (issue 20): `socketserver bench
# tcp-mixed` against each contender, one server process at a time, on
# loopback. A fraction F of requests (first byte `S`) makes the server block
# D ms (a database call), the rest are 64 B echoes.
#
#   contenders: event, pool, threading (`socketserver echo --strategy S
#   --bench-sleep-slow D`), event-hinted (the sleep inside
#   `StreamRequest::blocking`: `--bench-hint`), tokio-spawn-blocking and tokio-inline
#   (benches/contenders tokio_echo --sleep-slow D [--inline]), std
#   (std_echo --sleep-slow D: a thread per connection).
#
# Each cell (F, D) is run pinned (server `taskset -c 0`, generator
# `taskset -c 1`, one generator thread) and unpinned; ROUNDS rounds, the
# contenders taking turns within each round; the table shows each column's
# median over the rounds. Raw lines (one JSON object a run) go to
# benches/results/issue20/mixed-DATE.jsonl, the table to stdout (TABLE=FILE:
# only the table of raw lines already taken). "asleep at once" is the slow
# requests' rate times D: the handlers blocked at once.
#
#   benches/mixed.sh                     # the full grid (about 11 minutes)
#   QUICK=1 benches/mixed.sh             # F=10 %, D=5 ms only, 1 round, 2 s
#   CELLS="10:5" ROUNDS=3 benches/mixed.sh
#
# Settings (environment): CELLS ("F%:Dms ...", default "10:5 1:5 50:5 10:1
# 10:50"), PINNINGS ("pinned unpinned"), CONTENDERS (all seven), ROUNDS (3),
# CONNS (256), DURATION (3 s measured), WARMUP (0.5 s), OUT (raw file).
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    CELLS=${CELLS:-"10:5"}
    ROUNDS=${ROUNDS:-1}
    DURATION=${DURATION:-2}
fi
CELLS=${CELLS:-"10:5 1:5 50:5 10:1 10:50"}
PINNINGS=${PINNINGS:-"pinned unpinned"}
CONTENDERS=${CONTENDERS:-"event event-hinted pool threading tokio-spawn-blocking tokio-inline std"}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-256}
DURATION=${DURATION:-3}
WARMUP=${WARMUP:-0.5}
mkdir -p benches/results/issue20
[[ -n ${TABLE:-} ]] && OUT=$TABLE CELLS= ROUNDS=0
OUT=${OUT:-benches/results/issue20/mixed-$(date -u +%Y%m%dT%H%M%SZ).jsonl}

target=${CARGO_TARGET_DIR:-target}
# Absolute before the contenders' build, which runs in their directory.
[[ $target = /* ]] || target="$PWD/$target"
cargo build --release -q -p socketserver-cli
(cd benches/contenders && CARGO_TARGET_DIR="$target/contenders" cargo build --release -q)
ss="$target/release/socketserver"
contenders="$target/contenders/release"

log=$(mktemp)
server_pid=
stop_server() {
    [[ -n $server_pid ]] || return 0
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 30); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}
trap 'stop_server; rm -f "$log"' EXIT

# start_server CONTENDER D_MS PINNING: starts it, sets server_pid and addr.
start_server() {
    local who=$1 d=$2 pin=$3 cmd
    case $who in
        event | pool | threading)
            cmd=("$ss" echo --tcp 127.0.0.1:0 --strategy "$who" --bench-sleep-slow "$d" --log-level warn) ;;
        event-hinted)
            cmd=("$ss" echo --tcp 127.0.0.1:0 --strategy event --bench-sleep-slow "$d" --bench-hint --log-level warn) ;;
        tokio-spawn-blocking) cmd=("$contenders/tokio_echo" --tcp 127.0.0.1:0 --sleep-slow "$d") ;;
        tokio-inline) cmd=("$contenders/tokio_echo" --tcp 127.0.0.1:0 --sleep-slow "$d" --inline) ;;
        std) cmd=("$contenders/std_echo" --tcp 127.0.0.1:0 --backlog 1024 --sleep-slow "$d") ;;
        *) echo "unknown contender $who" >&2; exit 2 ;;
    esac
    [[ $pin == pinned ]] && cmd=(taskset -c 0 "${cmd[@]}")
    : >"$log"
    "${cmd[@]}" >"$log" 2>/dev/null &
    server_pid=$!
    addr=
    for _ in $(seq 50); do
        addr=$(awk '/^listening tcp/ {print $3; exit}' "$log")
        [[ -n $addr ]] && return 0
        sleep 0.1
    done
    echo "$who did not start" >&2
    exit 1
}

for cell in $CELLS; do
    f=${cell%%:*} d=${cell##*:}
    every=$((100 / f))
    for pin in $PINNINGS; do
        gen=("$ss")
        [[ $pin == pinned ]] && gen=(taskset -c 1 "$ss")
        threads=()
        [[ $pin == pinned ]] && threads=(--threads 1)
        for round in $(seq "$ROUNDS"); do
            for who in $CONTENDERS; do
                start_server "$who" "$d" "$pin"
                echo "f=$f% D=${d}ms $pin round $round: $who" >&2
                row=$(timeout $((${DURATION%.*} + 30)) "${gen[@]}" bench tcp-mixed --addr "$addr" -c "$CONNS" \
                    --slow-every "$every" -d "$DURATION" --warmup "$WARMUP" "${threads[@]}" \
                    --server-pid "$server_pid" --label "$who" --json)
                stop_server
                python3 -c 'import json,sys; r=json.loads(sys.argv[1])[0]; print(json.dumps({"f_pct":int(sys.argv[2]),"d_ms":float(sys.argv[3]),"pinning":sys.argv[4],"round":int(sys.argv[5]),**r}))' \
                    "$row" "$f" "$d" "$pin" "$round" >>"$OUT"
            done
        done
    done
done

echo "raw lines: $OUT" >&2
python3 - "$OUT" "$CONNS" <<'EOF'
import json, statistics, sys
from collections import defaultdict
runs = [json.loads(l) for l in open(sys.argv[1])]
cells = defaultdict(list)
for r in runs:
    cells[(r["f_pct"], r["d_ms"], r["pinning"], r["server"])].append(r)
med = lambda rs, f: statistics.median(f(r) for r in rs)
ms = lambda us: f"{us / 1000:.2f}"
# Handlers asleep at once: the slow requests' rate times D.
asleep = lambda r: r["slow"]["requests"] * r["requests_per_sec"] / max(r["requests"], 1) * r["d_ms"] / 1000
print(f"{sys.argv[2]} connections, 64 B, medians of {max(r['round'] for r in runs)} rounds\n")
print("| f | D | pinning | server | req/s | fast p50 ms | fast p99 ms | fast p99.9 ms | slow p99 ms "
      "| threads (max) | asleep at once | CPU µs/req | errors |")
print("|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
order = list(dict.fromkeys((r["f_pct"], r["d_ms"], r["pinning"], r["server"]) for r in runs))
order.sort(key=lambda k: (k[0] != 10 or k[1] != 5, k[0], k[1], k[2] != "pinned"))
for k in order:
    rs = cells[k]
    print(f"| {k[0]} % | {k[1]:g} ms | {k[2]} | {k[3]} | {med(rs, lambda r: r['requests_per_sec']):,.0f} "
          f"| {ms(med(rs, lambda r: r['p50_us']))} | {ms(med(rs, lambda r: r['p99_us']))} "
          f"| {ms(med(rs, lambda r: r['p999_us']))} | {ms(med(rs, lambda r: r['slow']['p99_us']))} "
          f"| {med(rs, lambda r: r.get('server_threads_max') or 0):.0f} | {med(rs, asleep):.0f} "
          f"| {med(rs, lambda r: r.get('server_cpu_us_per_request') or 0):.1f} | {sum(r['errors'] for r in rs)} |")
EOF
