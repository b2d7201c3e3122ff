#!/usr/bin/env bash
# The side-by-side comparison of issue 4, in one run on this machine:
# our Sync, Threading and ThreadPool echo servers (`socketserver echo`),
# a hand-written std thread-per-connection server, a tokio server and
# Python's stock socketserver, all loaded by `socketserver bench`.
# Writes BENCHMARKS.md and BENCHMARKS.svg at the top of the repository;
# the raw results stay in target/compare/.
#
#   benches/compare.sh                   # about 10 minutes
#   benches/compare.sh --with-criterion  # also runs `cargo bench` first (+3 min)
#
# Every load cell runs ROUNDS times, the contenders taking turns within a
# round, and the report shows the median round (and the spread): on a shared
# machine a build elsewhere then spoils one round, not one contender.
#
# Knobs (environment): ROUNDS (3), DURATION (s per cell, 2), WARMUP (s, 1),
# CONTENDERS ("sync threading pool std tokio python"), IDLE (2000),
# IDLE_SIGINT (500), SIGINT_RUNS (5), SIGINT_CAP (s, 10), OUT (target/compare),
# MARKDOWN (BENCHMARKS.md), SVG (BENCHMARKS.svg), BIN (the socketserver
# binary to run as "ours"; default: built here), LOAD_ONLY (1: only the
# throughput cells, no idle or SIGINT runs).
#
# Needs: cargo, python3 (3.9+, Linux: pidfd), GNU env (--default-signal).
# Not part of CI: nothing here runs under `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
COMMAND="benches/compare.sh${*:+ $*}"
WITH_CRITERION=0
for arg in "$@"; do
    case $arg in
        --with-criterion) WITH_CRITERION=1 ;;
        -h | --help)
            sed -n '2,22p' "$0"
            exit 0
            ;;
        *)
            echo "compare.sh: unknown argument $arg" >&2
            exit 2
            ;;
    esac
done

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-2}
WARMUP=${WARMUP:-1}
CONTENDERS=${CONTENDERS:-"sync threading pool std tokio python"}
IDLE=${IDLE:-2000}
IDLE_SIGINT=${IDLE_SIGINT:-500}
SIGINT_RUNS=${SIGINT_RUNS:-5}
SIGINT_CAP=${SIGINT_CAP:-10}
OUT=${OUT:-target/compare}
MARKDOWN=${MARKDOWN:-BENCHMARKS.md}
SVG=${SVG:-BENCHMARKS.svg}
BIN=${BIN:-target/release/socketserver}
LOAD_ONLY=${LOAD_ONLY:-0}
CB=target/contenders/release
SIGEXIT=benches/contenders/sigexit.py

log() { printf '[compare %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# --- build ---------------------------------------------------------------------
log "building (release)"
COMMIT="$(git rev-parse HEAD 2>/dev/null || echo '?')"
if [[ -n "$(git status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null)" ]]; then
    COMMIT="$COMMIT (with uncommitted changes in src/ or Cargo.*)"
fi
cargo build --release --quiet --bin socketserver
CARGO_TARGET_DIR="$PWD/target/contenders" cargo build --release --quiet \
    --manifest-path benches/contenders/Cargo.toml
if [[ $WITH_CRITERION == 1 ]]; then
    log "criterion: cargo bench --bench pool_dispatch --bench echo"
    rm -rf target/criterion
    cargo bench --quiet --bench pool_dispatch --bench echo >&2
fi

rm -rf "$OUT"
mkdir -p "$OUT/cells" "$OUT/logs"
ulimit -n "$(ulimit -Hn)"
started=$(date +%s)

# --- servers ---------------------------------------------------------------------
server_cmd() {
    case $1 in
        sync | threading | pool) echo "$BIN echo --strategy $1 --log-level warn" ;;
        std) echo "$CB/std_echo" ;;
        tokio) echo "$CB/tokio_echo" ;;
        python) echo "python3 benches/contenders/python_echo.py" ;;
        *)
            echo "compare.sh: unknown contender $1" >&2
            exit 2
            ;;
    esac
}

# start NAME TAG: sets PID, TCP, UDP. SIGINT is reset to its default action,
# which a non-interactive shell would otherwise set to "ignore" for background
# jobs (Python would then never see KeyboardInterrupt).
start() {
    local log="$OUT/logs/$1.$2"
    # Created here: the background job's redirection may come after the
    # first look below (awk on a missing file would end the script).
    : >"$log.out"
    : >"$log.err"
    # shellcheck disable=SC2046
    env --default-signal=INT $(server_cmd "$1") --tcp 127.0.0.1:0 --udp 127.0.0.1:0 >"$log.out" 2>"$log.err" &
    PID=$!
    TCP="" UDP=""
    for _ in $(seq 200); do
        TCP=$(awk '/^listening tcp/ {print $3}' "$log.out")
        UDP=$(awk '/^listening udp/ {print $3}' "$log.out")
        [[ -n $TCP && -n $UDP ]] && return 0
        sleep 0.05
    done
    log "$1 did not start:"
    cat "$log.err" >&2
    exit 1
}

# stop: SIGINT, up to 5 s to exit, then SIGKILL; reaps the process.
stop() {
    python3 "$SIGEXIT" "$PID" 5 >/dev/null 2>&1 || true
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
}

status_field() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/status"; }

# hold ADDR N VERIFY_TIMEOUT: opens N idle connections in the background
# (HOLDER = its pid) and waits for its report line (HELD).
hold() {
    local out="$OUT/logs/hold.out"
    "$CB/hold_conns" "$1" "$2" --verify-timeout "$3" >"$out" 2>"$OUT/logs/hold.err" &
    HOLDER=$!
    HELD=""
    for _ in $(seq 1200); do
        HELD=$(cat "$out")
        [[ -n $HELD ]] && return 0
        kill -0 "$HOLDER" 2>/dev/null || break
        sleep 0.1
    done
    HELD=${HELD:-"held 0 failed $2 served 0"}
}

unhold() {
    kill -KILL "$HOLDER" 2>/dev/null || true
    wait "$HOLDER" 2>/dev/null || true
}

# Machine-wide CPU jiffies from /proc/stat: busy (user nice system irq softirq), steal, total.
cpu_jiffies() { awk '/^cpu / {print $2+$3+$4+$7+$8, $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }

# bench NAME FILE MODE ADDR CONNS SIZE. Also notes the machine's CPU use over
# the run, so that the report can tell CPU used by other processes (a build
# on a shared machine) from the server's and the generator's.
bench() {
    local b0 s0 t0 b1 s1 t1
    read -r b0 s0 t0 < <(cpu_jiffies)
    "$BIN" bench "$3" --addr "$4" -c "$5" -b "$6" --duration "$DURATION" --warmup "$WARMUP" \
        --label "$1" --server-pid "$PID" --json >"$OUT/cells/$1.$2.json"
    read -r b1 s1 t1 < <(cpu_jiffies)
    printf '{"file": "%s.%s.json", "busy": %s, "steal": %s, "total": %s}\n' \
        "$1" "$2" $((b1 - b0)) $((s1 - s0)) $((t1 - t0)) >>"$OUT/cpu.jsonl"
    sleep 0.5
}

printf '{"rounds": %s, "duration": %s, "warmup": %s, "idle": %s, "idle_sigint": %s, "sigint_runs": %s, "sigint_cap": %s, "loadavg_before": "%s", "commit": "%s"}\n' \
    "$ROUNDS" "$DURATION" "$WARMUP" "$IDLE" "$IDLE_SIGINT" "$SIGINT_RUNS" "$SIGINT_CAP" "$(cut -d' ' -f1-3 /proc/loadavg)" "$COMMIT" \
    >"$OUT/settings.json"
: >"$OUT/idle.jsonl"
: >"$OUT/cpu.jsonl"
: >"$OUT/sigint.jsonl"

# Throughput and latency: a fresh server per contender and round.
for round in $(seq "$ROUNDS"); do
    for name in $CONTENDERS; do
        log "round $round/$ROUNDS: $name"
        start "$name" "load$round"
        bench "$name" "echo64.r$round" tcp-echo "$TCP" 1,16,64,256 64
        bench "$name" "echo16k.r$round" tcp-echo "$TCP" 16 16384
        bench "$name" "connect.r$round" tcp-connect "$TCP" 16 64
        bench "$name" "udp.r$round" udp-echo "$UDP" 1,16 64
        stop
    done
done
cut -d' ' -f1-3 /proc/loadavg >"$OUT/loadavg_after"

for name in $CONTENDERS; do
    [[ $LOAD_ONLY == 1 ]] && break
    # Idle connections: RSS and threads (a Sync server serves one at a time).
    if [[ $name != sync ]]; then
        log "$name: $IDLE idle connections"
        start "$name" idle
        sleep 0.5
        base_rss=$(status_field "$PID" VmRSS)
        base_threads=$(status_field "$PID" Threads)
        hold "$TCP" "$IDLE" 2
        sleep 1
        rss=$(status_field "$PID" VmRSS)
        threads=$(status_field "$PID" Threads)
        read -r _ held _ failed _ served <<<"$HELD"
        printf '{"server": "%s", "conns": %s, "held": %s, "failed": %s, "served": %s, "base_rss_kib": %s, "rss_kib": %s, "base_threads": %s, "threads": %s}\n' \
            "$name" "$IDLE" "$held" "$failed" "$served" "$base_rss" "$rss" "$base_threads" "$threads" >>"$OUT/idle.jsonl"
        unhold
        stop
    fi

    # SIGINT → exit with nothing in flight (after a few requests were served).
    log "$name: SIGINT with nothing in flight (x$SIGINT_RUNS)"
    for run in $(seq "$SIGINT_RUNS"); do
        start "$name" sigint
        "$CB/hold_conns" "$TCP" 4 --verify-timeout 1 --release >/dev/null
        sleep 0.3
        result=$(python3 "$SIGEXIT" "$PID" "$SIGINT_CAP")
        printf '{"server": "%s", "idle": 0, "run": %s, "result": %s}\n' "$name" "$run" "$result" >>"$OUT/sigint.jsonl"
        kill -KILL "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    done

    # SIGINT → exit with idle connections open.
    log "$name: SIGINT with $IDLE_SIGINT idle connections"
    start "$name" sigint-idle
    hold "$TCP" "$IDLE_SIGINT" 1
    sleep 0.5
    result=$(python3 "$SIGEXIT" "$PID" "$SIGINT_CAP")
    read -r _ held _ failed _ served <<<"$HELD"
    printf '{"server": "%s", "idle": %s, "held": %s, "served": %s, "run": 1, "result": %s}\n' \
        "$name" "$IDLE_SIGINT" "$held" "$served" "$result" >>"$OUT/sigint.jsonl"
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    unhold
done

log "done in $(($(date +%s) - started)) s; writing BENCHMARKS.md"
python3 benches/report.py --results "$OUT" --command "$COMMAND" --markdown "$MARKDOWN" --svg "$SVG"
log "wrote $MARKDOWN and $SVG (raw results in $OUT)"
