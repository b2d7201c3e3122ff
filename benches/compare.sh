#!/usr/bin/env bash
# The side-by-side comparison, in one run on this machine: our Sync,
# Threading, ThreadPool and Event echo servers (`socketserver echo`), a
# hand-written std thread-per-connection server, tokio (multi-thread and
# current-thread runtimes) and Python's stock socketserver, all loaded by
# `socketserver bench`. Writes BENCHMARKS.md and BENCHMARKS.svg at the top
# of the repository; the raw results stay in target/compare/.
#
#   benches/compare.sh                   # unpinned and pinned: about 23 minutes
#   benches/compare.sh --pinned          # pinned only (as PIN=1 or MODES=pinned): 12 min
#   benches/compare.sh --with-criterion  # also runs `cargo bench` first (+3 min)
#
# Every load cell runs ROUNDS times, the contenders taking turns within a
# round, and the report shows the median round (and the spread): on a shared
# machine a build elsewhere then spoils one round, not one contender.
# Modes: "unpinned" (server and generator free on every CPU) and "pinned"
# (the server on CPU 0 by `taskset -c 0`, the generator on CPU 1 with
# `--threads 1`: neither steals the other's core). The idle-connection and
# SIGINT cells run once, unpinned.
#
# Knobs (environment): ROUNDS (3), DURATION (s per cell, 2), WARMUP (s, 1),
# CONTENDERS ("sync threading pool event std tokio tokio-ct python"),
# MODES ("unpinned pinned"; PIN=1 means "pinned"), IDLE (10000 connections),
# IDLE_SKIP ("sync python": not run with IDLE connections), IDLE_HOLD (s, 1),
# IDLE_PARALLEL (connects in flight, 16), IDLE_CAP (s for the connect phase,
# 30), IDLE_SIGINT (500), SIGINT_RUNS (5), SIGINT_CAP (s, 10), BACKLOG (the
# listen backlog given to std and tokio; default: ours, net.core.somaxconn),
# OUT (target/compare), MARKDOWN (BENCHMARKS.md), SVG (BENCHMARKS.svg), BIN
# (the socketserver binary to run as "ours"; default: built here), LOAD_ONLY
# (1: only the throughput cells, no idle or SIGINT runs).
#
# Needs: cargo, python3 (3.9+, Linux: pidfd), GNU env (--default-signal),
# taskset (util-linux) and 2 CPUs for the pinned mode.
# Not part of CI: nothing here runs under `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
COMMAND="benches/compare.sh${*:+ $*}"
WITH_CRITERION=0
PINNED_ONLY=${PIN:-0}
for arg in "$@"; do
    case $arg in
        --with-criterion) WITH_CRITERION=1 ;;
        --pinned) PINNED_ONLY=1 ;;
        -h | --help)
            awk 'NR > 1 && !/^#/ {exit} NR > 1 {print}' "$0"
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
CONTENDERS=${CONTENDERS:-"sync threading pool event std tokio tokio-ct python"}
if [[ $PINNED_ONLY == 1 ]]; then
    MODES=${MODES:-pinned}
else
    MODES=${MODES:-"unpinned pinned"}
fi
IDLE=${IDLE:-10000}
IDLE_SKIP=${IDLE_SKIP:-"sync python"}
IDLE_HOLD=${IDLE_HOLD:-1}
IDLE_PARALLEL=${IDLE_PARALLEL:-16}
IDLE_CAP=${IDLE_CAP:-30}
IDLE_SIGINT=${IDLE_SIGINT:-500}
SIGINT_RUNS=${SIGINT_RUNS:-5}
SIGINT_CAP=${SIGINT_CAP:-10}
BACKLOG=${BACKLOG:-$(cat /proc/sys/net/core/somaxconn 2>/dev/null || echo 4096)}
OUT=${OUT:-target/compare}
MARKDOWN=${MARKDOWN:-BENCHMARKS.md}
SVG=${SVG:-BENCHMARKS.svg}
BIN=${BIN:-target/release/socketserver}
LOAD_ONLY=${LOAD_ONLY:-0}
CB=target/contenders/release
SIGEXIT=benches/contenders/sigexit.py

log() { printf '[compare %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "$*"
    exit 1
}

# --- checks before the long part ----------------------------------------------------
for mode in $MODES; do
    case $mode in
        unpinned) ;;
        pinned)
            command -v taskset >/dev/null || die "MODES has pinned but there is no taskset (util-linux)"
            [[ $(nproc) -ge 2 ]] || die "MODES has pinned, which needs 2 CPUs (the server on 0, the generator on 1)"
            ;;
        *) die "unknown mode $mode in MODES (unpinned, pinned)" ;;
    esac
done
ulimit -n "$(ulimit -Hn)"
if [[ $LOAD_ONLY != 1 ]] && (($(ulimit -n) < IDLE + 64)); then
    die "IDLE=$IDLE connections need an open-file limit of $((IDLE + 64)), the hard limit is $(ulimit -Hn) (lower IDLE or raise ulimit -Hn)"
fi
# The most threads `socketserver echo` will start (vm.max_map_count / 5).
THREAD_CEILING=$(($(cat /proc/sys/vm/max_map_count 2>/dev/null || echo 65530) / 5))

# --- servers ---------------------------------------------------------------------
server_cmd() {
    case $1 in
        sync | threading | pool | event) echo "$BIN echo --strategy $1 --log-level warn" ;;
        std) echo "$CB/std_echo --backlog $BACKLOG" ;;
        tokio) echo "$CB/tokio_echo --backlog $BACKLOG" ;;
        tokio-ct) echo "$CB/tokio_echo --current-thread --backlog $BACKLOG" ;;
        python) echo "python3 benches/contenders/python_echo.py" ;;
        *) die "compare.sh: unknown contender $1" ;;
    esac
}

for name in $CONTENDERS; do server_cmd "$name" >/dev/null; done

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
    log "criterion: cargo bench --bench dispatch --bench echo"
    rm -rf target/criterion
    cargo bench --quiet --bench dispatch --bench echo >&2
fi

# Should this script stop early: its background jobs still running (a
# server, hold_conns), and only those.
cleanup() {
    local running
    running=$(jobs -p)
    # shellcheck disable=SC2086
    [[ -z $running ]] || kill -KILL $running 2>/dev/null || true
}
trap cleanup EXIT

rm -rf "$OUT"
mkdir -p "$OUT/cells" "$OUT/idle" "$OUT/logs" "$(dirname "$MARKDOWN")" "$(dirname "$SVG")"
for mode in $MODES; do mkdir -p "$OUT/cells/$mode"; done
started=$(date +%s)

# start NAME TAG [PIN_PREFIX [EXTRA_ARGS [tcp]]]: sets PID, TCP, UDP (with
# "tcp", a TCP listener only, except for Python's script). SIGINT is
# reset to its default action: a non-interactive shell starts background
# jobs with SIGINT ignored, and a signal ignored at exec stays ignored
# (Python would never see KeyboardInterrupt, `socketserver echo` would
# keep running). `taskset` execs the server, so PID is the server's.
start() {
    local log="$OUT/logs/$1.$2"
    # Created here: the background job's redirection may come after the
    # first look below (awk on a missing file would end the script).
    : >"$log.out"
    : >"$log.err"
    local udp="--udp 127.0.0.1:0"
    [[ ${5:-} == tcp && $1 != python ]] && udp=""
    # shellcheck disable=SC2046,SC2086
    env --default-signal=INT ${3:-} $(server_cmd "$1") ${4:-} --tcp 127.0.0.1:0 $udp >"$log.out" 2>"$log.err" &
    PID=$!
    TCP="" UDP=""
    for _ in $(seq 200); do
        TCP=$(awk '/^listening tcp/ {print $3}' "$log.out")
        UDP=$(awk '/^listening udp/ {print $3}' "$log.out")
        [[ -n $TCP && (-n $UDP || -z $udp) ]] && return 0
        kill -0 "$PID" 2>/dev/null || break
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

# bench NAME PINMODE CELL MODE ADDR CONNS SIZE. Also notes the machine's
# CPU use over the run, so that the report can tell CPU used by other
# processes (a build on a shared machine) from the server's and the
# generator's. Pinned: the generator on CPU 1 with one thread.
bench() {
    local b0 s0 t0 b1 s1 t1 file="$2/$1.$3.json"
    local -a gen=("$BIN")
    [[ $2 == pinned ]] && gen=(taskset -c 1 "$BIN")
    local -a threads=()
    [[ $2 == pinned ]] && threads=(--threads 1)
    read -r b0 s0 t0 < <(cpu_jiffies)
    "${gen[@]}" bench "$4" --addr "$5" -c "$6" -b "$7" --duration "$DURATION" --warmup "$WARMUP" \
        "${threads[@]}" --label "$1" --server-pid "$PID" --json >"$OUT/cells/$file"
    read -r b1 s1 t1 < <(cpu_jiffies)
    printf '{"file": "%s", "busy": %s, "steal": %s, "total": %s}\n' \
        "$file" $((b1 - b0)) $((s1 - s0)) $((t1 - t0)) >>"$OUT/cpu.jsonl"
    sleep 0.5
}

python3 - "$OUT/settings.json" <<EOF
import json, sys
json.dump({
    "rounds": $ROUNDS, "duration": $DURATION, "warmup": $WARMUP, "modes": "$MODES".split(),
    "contenders": "$CONTENDERS".split(), "idle": $IDLE, "idle_skip": "$IDLE_SKIP".split(),
    "idle_hold": $IDLE_HOLD, "idle_parallel": $IDLE_PARALLEL, "idle_cap": $IDLE_CAP,
    "idle_sigint": $IDLE_SIGINT, "sigint_runs": $SIGINT_RUNS, "sigint_cap": $SIGINT_CAP,
    "backlog": $BACKLOG, "load_only": "$LOAD_ONLY" == "1", "cpus": $(nproc),
    "loadavg_before": "$(cut -d' ' -f1-3 /proc/loadavg)", "commit": "$COMMIT",
}, open(sys.argv[1], "w"))
EOF
: >"$OUT/cpu.jsonl"
: >"$OUT/sigint.jsonl"

# Throughput and latency: a fresh server per contender, mode and round.
for round in $(seq "$ROUNDS"); do
    for mode in $MODES; do
        pin=""
        [[ $mode == pinned ]] && pin="taskset -c 0"
        for name in $CONTENDERS; do
            log "round $round/$ROUNDS, $mode: $name"
            start "$name" "load.$mode.$round" "$pin"
            bench "$name" "$mode" "echo64.r$round" tcp-echo "$TCP" 1,16,64,256 64
            bench "$name" "$mode" "echo16k.r$round" tcp-echo "$TCP" 16 16384
            bench "$name" "$mode" "connect.r$round" tcp-connect "$TCP" 16 64
            bench "$name" "$mode" "udp.r$round" udp-echo "$UDP" 1,16 64
            stop
        done
    done
done
cut -d' ' -f1-3 /proc/loadavg >"$OUT/loadavg_after"

for name in $CONTENDERS; do
    [[ $LOAD_ONLY == 1 ]] && break
    # Idle connections: connect time, probes answered, RSS and threads; the
    # server listens on TCP only (no UDP receiver threads in its count). Our
    # thread-per-connection strategies get enough threads for all of them.
    if [[ " $IDLE_SKIP " != *" $name "* ]]; then
        extra=""
        if [[ $name == threading || $name == pool ]] && ((IDLE + 64 > 4096)); then
            workers=$((IDLE + 64 < THREAD_CEILING ? IDLE + 64 : THREAD_CEILING))
            extra="--max-workers $workers"
        fi
        log "$name: $IDLE idle connections${extra:+ ($extra)}"
        start "$name" idle "" "$extra" tcp
        sleep 0.5
        "$BIN" bench tcp-idle --addr "$TCP" -c "$IDLE" --parallel "$IDLE_PARALLEL" --duration "$IDLE_HOLD" \
            --max-time "$IDLE_CAP" --label "$name" --server-pid "$PID" --json >"$OUT/idle/$name.json"
        printf '%s' "$extra" >"$OUT/idle/$name.flags"
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

log "done in $(($(date +%s) - started)) s; writing $MARKDOWN"
python3 benches/report.py --results "$OUT" --command "$COMMAND" --markdown "$MARKDOWN" --svg "$SVG"
log "wrote $MARKDOWN and $SVG (raw results in $OUT)"
