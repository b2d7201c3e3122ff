#!/usr/bin/env bash
# SIGINT -> exit with many idle connections open: the time from the signal
# to the process's end, RUNS times, with N connections held (each probed
# with one echo first) on `socketserver echo --strategy STRATEGY`.
#
#   benches/idle_exit.sh                 # 10,000 connections, event, 5 runs
#   N=500 STRATEGY=pool RUNS=3 benches/idle_exit.sh
#   DRAIN=0 benches/idle_exit.sh         # --drain-window 0: no window to wait out
#
# Prints one line per run: held, answered, and the exit time in ms (from
# benches/contenders/sigexit.py, a pidfd wait). The server's default drain
# window is 100 ms: idle connections are watched that long after the
# signal, so an exit time is the window plus what closing N sockets and
# ending the threads takes. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
RUNS=${RUNS:-5}
STRATEGY=${STRATEGY:-event}
DRAIN=${DRAIN:-}
BIN=${BIN:-target/release/socketserver}
CB=target/contenders/release
[[ -n ${BIN_BUILT:-} ]] || cargo build --release -q -p socketserver-cli
cargo build --release -q --manifest-path benches/contenders/Cargo.toml --target-dir target/contenders --bin hold_conns
ulimit -n "$((N + 1024))" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
extra=()
[[ -n $DRAIN ]] && extra=(--drain-window "$DRAIN")
for run in $(seq "$RUNS"); do
    # A non-interactive shell starts background jobs with SIGINT ignored.
    env --default-signal=INT "$BIN" echo --tcp 127.0.0.1:0 --strategy "$STRATEGY" "${extra[@]}" \
        >"$log/out" 2>"$log/err" &
    pid=$!
    addr=""
    for _ in $(seq 200); do
        addr=$(awk '/^listening tcp/ {print $3}' "$log/out")
        [[ -n $addr ]] && break
        sleep 0.05
    done
    [[ -n $addr ]] || { cat "$log/err" >&2; kill -KILL "$pid"; exit 1; }
    "$CB/hold_conns" "$addr" "$N" --verify-timeout 1 >"$log/hold" 2>"$log/hold.err" &
    holder=$!
    held=""
    for _ in $(seq 1200); do
        held=$(cat "$log/hold")
        [[ -n $held ]] && break
        sleep 0.1
    done
    sleep 0.5
    result=$(python3 benches/contenders/sigexit.py "$pid" 10)
    echo "run $run: $STRATEGY, ${held:-nothing held}: $result"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    kill -KILL "$holder" 2>/dev/null || true
    wait "$holder" 2>/dev/null || true
done
