#!/usr/bin/env bash
# TLS (issue 19): our echo server with --tls-cert/--tls-key (Event, the
# default strategy) against tokio with tokio-rustls (benches/contenders
# `tokio_echo --tls-cert --tls-key`, a task per connection), in one run,
# pinned and unpinned, loaded by `socketserver bench --tls` on the same
# machine. Both serve the same certificate (made by `socketserver bench
# --gen-cert`: ECDSA P-256, self-signed, for localhost and 127.0.0.1) with
# rustls 0.23 and its ring provider; the load's clients offer one cipher
# suite (TLS13_AES_128_GCM_SHA256) and one key exchange group (X25519) and
# no session resumption, so both servers negotiate the same (each result
# row records what was negotiated).
#
# Cells (each a fresh server per contender, mode and round; the contenders
# take turns within a round; the table shows each column's median round):
#   handshakes  bench tcp-connect --tls -c 16 -b 64: connect, full
#               handshake, one 64-byte echo, close_notify and close
#   echo 64 B   bench tcp-echo --tls -b 64 at 16 and 256 connections
#   echo 16 KiB bench tcp-echo --tls -b 16384 at 16 and 256 connections
#   idle        bench tcp-idle --tls -c 10000 (unpinned, once per
#               contender): 10,000 connections, each open once its
#               handshake is done, held 1 s, then one echo each; the
#               server's VmRSS before and while holding, per connection
# Pinned: the server under `taskset -c 1`, the load under `taskset -c 0`
# with one generator thread. Unpinned: both free on every CPU. Server CPU
# per request: the server's utime+stime from /proc/PID/stat over the
# measured window, divided by the requests.
#
#   benches/tls.sh               # 3 rounds, 3 s cells: about 10 minutes
#   QUICK=1 benches/tls.sh       # 1 round, 1 s cells, 2,000 idle: ~1.5 min
#
# Settings (environment): ROUNDS (3), DURATION (3), WARMUP (1), MODES
# ("pinned unpinned"), CONTENDERS ("ours tokio"), IDLE (10000), CONNS
# ("16,256"), OUT (benches/results/issue19/tls-DATE: raw JSON and
# table.md), BACKLOG (tokio's listen backlog; default net.core.somaxconn,
# ours).
#
# Needs: cargo, python3, taskset (util-linux), 2 CPUs for the pinned mode.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then
    ROUNDS=${ROUNDS:-1}
    DURATION=${DURATION:-1}
    WARMUP=${WARMUP:-0.5}
    IDLE=${IDLE:-2000}
fi
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
WARMUP=${WARMUP:-1}
MODES=${MODES:-"pinned unpinned"}
CONTENDERS=${CONTENDERS:-"ours tokio"}
IDLE=${IDLE:-10000}
CONNS=${CONNS:-16,256}
BACKLOG=${BACKLOG:-$(cat /proc/sys/net/core/somaxconn 2>/dev/null || echo 4096)}
OUT=${OUT:-benches/results/issue19/tls-$(date -u +%Y%m%dT%H%M%SZ)}

log() { printf '[tls %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "$*"
    exit 1
}

for mode in $MODES; do
    case $mode in
        unpinned) ;;
        pinned)
            command -v taskset >/dev/null || die "pinned needs taskset (util-linux)"
            [[ $(nproc) -ge 2 ]] || die "pinned needs 2 CPUs"
            ;;
        *) die "unknown mode $mode (pinned, unpinned)" ;;
    esac
done
# The idle cell holds IDLE connections in the generator and in the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
(($(ulimit -n) >= IDLE + 64)) || die "IDLE=$IDLE needs an open-file limit of $((IDLE + 64)); it is $(ulimit -n)"

log "building (release)"
target=${CARGO_TARGET_DIR:-target}
[[ $target = /* ]] || target="$PWD/$target"
cargo build --release -q -p socketserver-cli
CARGO_TARGET_DIR="$target/contenders" cargo build --release -q --manifest-path benches/contenders/Cargo.toml
ss="$target/release/socketserver"
tokio_echo="$target/contenders/release/tokio_echo"

mkdir -p "$OUT/cells" "$OUT/logs" "$OUT/cpu"
# The certificate and its key stay out of OUT (which is committed).
CERTDIR=${CERTDIR:-$target/tls-bench-cert}
"$ss" bench --gen-cert "$CERTDIR"
CERT="$CERTDIR/cert.pem"
KEY="$CERTDIR/key.pem"
COMMIT="$(git rev-parse HEAD 2>/dev/null || echo '?')"
[[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]] || COMMIT="$COMMIT (with uncommitted changes)"

server_cmd() {
    case $1 in
        ours) echo "$ss echo --log-level warn --tls-cert $CERT --tls-key $KEY" ;;
        tokio) echo "$tokio_echo --backlog $BACKLOG --tls-cert $CERT --tls-key $KEY" ;;
        *) die "unknown contender $1" ;;
    esac
}

PID=""
cleanup() {
    [[ -z $PID ]] || kill -KILL "$PID" 2>/dev/null || true
}
trap cleanup EXIT

# start NAME TAG [PIN]: sets PID and TCP.
start() {
    local log="$OUT/logs/$1.$2"
    : >"$log.out"
    : >"$log.err"
    # shellcheck disable=SC2046,SC2086
    env --default-signal=INT ${3:-} $(server_cmd "$1") --tcp 127.0.0.1:0 >"$log.out" 2>"$log.err" &
    PID=$!
    TCP=""
    for _ in $(seq 200); do
        TCP=$(awk '/^listening tcp/ {print $3}' "$log.out")
        [[ -n $TCP ]] && return 0
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.05
    done
    cat "$log.err" >&2
    die "$1 did not start"
}

stop() {
    kill -INT "$PID" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=""
}

# Machine-wide CPU jiffies from /proc/stat: busy (user nice system irq softirq steal) and total.
cpu_jiffies() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }

# bench NAME MODE CELL ARGS...: one `socketserver bench` run, its JSON kept,
# and the machine's CPU use over it (what other processes took is the
# rest, once the server's and the generator's are taken off).
bench() {
    local name=$1 mode=$2 cell=$3
    shift 3
    local -a gen=("$ss")
    local -a threads=()
    if [[ $mode == pinned ]]; then
        gen=(taskset -c 0 "$ss")
        threads=(--threads 1)
    fi
    local b0 t0 b1 t1
    read -r b0 t0 < <(cpu_jiffies)
    "${gen[@]}" bench "$@" --tls --ca "$CERT" --duration "$DURATION" --warmup "$WARMUP" "${threads[@]}" \
        --label "$name" --server-pid "$PID" --json >"$OUT/cells/$mode.$cell.$name.json"
    read -r b1 t1 < <(cpu_jiffies)
    printf '{"busy": %s, "total": %s}\n' $((b1 - b0)) $((t1 - t0)) >"$OUT/cpu/$mode.$cell.$name.json"
    sleep 0.3
}

python3 - "$OUT/settings.json" <<EOF
import json, sys
json.dump({"rounds": $ROUNDS, "duration": $DURATION, "warmup": $WARMUP, "modes": "$MODES".split(),
           "contenders": "$CONTENDERS".split(), "idle": $IDLE, "conns": "$CONNS", "commit": "$COMMIT",
           "cpus": $(nproc), "loadavg_before": "$(cut -d' ' -f1-3 /proc/loadavg)",
           "ours": "$(server_cmd ours | sed "s|$target/||g")", "tokio": "$(server_cmd tokio | sed "s|$target/||g")"},
          open(sys.argv[1], "w"), indent=1)
EOF

started=$(date +%s)
for round in $(seq "$ROUNDS"); do
    for mode in $MODES; do
        pin=""
        [[ $mode == pinned ]] && pin="taskset -c 1"
        for name in $CONTENDERS; do
            log "round $round/$ROUNDS, $mode: $name"
            start "$name" "$mode.$round" "$pin"
            bench "$name" "$mode" "handshake.r$round" tcp-connect --addr "$TCP" -c 16 -b 64
            for c in ${CONNS//,/ }; do
                bench "$name" "$mode" "echo64-c$c.r$round" tcp-echo --addr "$TCP" -c "$c" -b 64
                bench "$name" "$mode" "echo16k-c$c.r$round" tcp-echo --addr "$TCP" -c "$c" -b 16384
            done
            stop
        done
    done
done
for name in $CONTENDERS; do
    log "$name: $IDLE idle TLS connections (unpinned)"
    start "$name" idle ""
    sleep 0.5
    "$ss" bench tcp-idle --tls --ca "$CERT" --addr "$TCP" -c "$IDLE" --parallel 16 --duration 1 --max-time 60 \
        --label "$name" --server-pid "$PID" --json >"$OUT/cells/idle.$name.json"
    stop
done
cut -d' ' -f1-3 /proc/loadavg >"$OUT/loadavg_after"
log "done in $(($(date +%s) - started)) s"
python3 benches/tls_report.py "$OUT" | tee "$OUT/table.md"
