# Shared by benches/slowloris.sh, timer_rss.sh and monitor_cpu.sh: sourced,
# not run. Building, starting a server, reading /proc, and ending only the
# processes started here (by PID).
#
# BIN: the socketserver binary to run (then nothing is built); otherwise
# `cargo build --release -p socketserver-cli` (niced) and
# ${CARGO_TARGET_DIR:-target}/release/socketserver.

LAB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$LAB_DIR/../.." && pwd)"
CLIENTS="$LAB_DIR/clients.py"
LAB_PIDS=()
LAB_TMP=$(mktemp -d "${TMPDIR:-/tmp}/socketserver-lab.XXXXXX")

lab_log() { printf '[%s %(%H:%M:%S)T] %s\n' "${LAB_NAME:-lab}" -1 "$*" >&2; }
lab_die() {
    lab_log "$*"
    exit 1
}

lab_build() {
    if [[ -n ${BIN:-} ]]; then
        [[ -x $BIN ]] || lab_die "BIN=$BIN is not an executable"
        return
    fi
    local target=${CARGO_TARGET_DIR:-$REPO/target}
    [[ $target == /* ]] || target="$REPO/$target"
    lab_log "building: nice -n 10 cargo build --release -p socketserver-cli (target $target)"
    (cd "$REPO" && nice -n 10 cargo build --release --quiet -p socketserver-cli) || lab_die "build failed"
    BIN="$target/release/socketserver"
}

# Ends every process this script started that is still alive, by PID.
lab_cleanup() {
    local pid
    for pid in "${LAB_PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    for pid in "${LAB_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n ${KEEP_LOGS:-} ]]; then
        lab_log "logs kept in $LAB_TMP"
    else
        rm -rf "$LAB_TMP"
    fi
}
trap lab_cleanup EXIT
trap 'exit 130' INT TERM

# lab_start NAME CMD...: starts CMD in the background with stdout and stderr
# in $LAB_TMP/NAME.{out,err}; sets PID. `taskset` and `env` exec their
# command, so PID is the server's own.
lab_start() {
    local name=$1
    shift
    : >"$LAB_TMP/$name.out"
    : >"$LAB_TMP/$name.err"
    "$@" >"$LAB_TMP/$name.out" 2>"$LAB_TMP/$name.err" &
    PID=$!
    LAB_PIDS+=("$PID")
}

# lab_server NAME CMD...: lab_start, then waits up to 10 s for the
# "listening tcp ADDR" line; sets PID and ADDR.
lab_server() {
    local name=$1
    lab_start "$@"
    ADDR=""
    for _ in $(seq 200); do
        ADDR=$(awk '/^listening tcp/ {print $3; exit}' "$LAB_TMP/$name.out")
        [[ -n $ADDR ]] && return 0
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.05
    done
    cat "$LAB_TMP/$name.err" >&2
    lab_die "$name did not start"
}

# lab_stop PID [CAP]: SIGTERM, up to CAP seconds (default 8: the server's
# 5 s grace period and some) to exit, then SIGKILL; reaps it.
lab_stop() {
    local pid=$1 cap=${2:-8} i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < cap * 20; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        lab_log "pid $pid still alive ${cap} s after SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# A field of /proc/PID/status, as a number (kB for Vm*).
proc_status() { awk -v k="$2:" '$1 == k {print $2; exit}' "/proc/$1/status" 2>/dev/null || echo "?"; }
threads_of() { proc_status "$1" Threads; }
rss_kb() { proc_status "$1" VmRSS; }
kb_to_mb() { awk -v k="$1" 'BEGIN { if (k == "?" || k == "") print "?"; else printf "%.1f", k / 1024 }'; }

# Machine load, to judge how noisy a figure is. lab_cpu_mark PID...: notes
# the machine's CPU time (/proc/stat) and each PID's (utime + stime).
# lab_cpu_others [EXTRA_PCT] PID...: the CPU time since, in % of one core:
# "busy B%, others O%", O being what the machine used beyond these PIDs
# (and EXTRA_PCT, for a process of ours that has ended: its own figure).
# The machine has $(nproc) cores: 100% is one of them.
declare -A LAB_TICKS0=()
proc_ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null || echo 0; }
machine_ticks() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
lab_cpu_mark() {
    local pid
    read -r LAB_BUSY0 LAB_TOTAL0 < <(machine_ticks)
    for pid in "$@"; do LAB_TICKS0[$pid]=$(proc_ticks "$pid"); done
}
lab_cpu_others() {
    local extra=${1:-0} b t pid ours=0
    shift || true
    read -r b t < <(machine_ticks)
    for pid in "$@"; do ours=$((ours + $(proc_ticks "$pid") - ${LAB_TICKS0[$pid]:-0})); done
    awk -v b=$((b - LAB_BUSY0)) -v t=$((t - LAB_TOTAL0)) -v o="$ours" -v x="$extra" -v n="$(nproc)" 'BEGIN {
        wall = t / n; if (wall <= 0) { print "busy ?"; exit }
        busy = 100 * b / wall; others = busy - 100 * o / wall - x
        printf "CPU busy %.0f%% of a core (%d cores), others %.0f%%", busy, n, (others < 0 ? 0 : others) }'
}
# lab_cpu_of PID: its CPU time since lab_cpu_mark, in % of one core.
lab_cpu_of() {
    local t
    read -r _ t < <(machine_ticks)
    awk -v o=$(($(proc_ticks "$1") - ${LAB_TICKS0[$1]:-0})) -v t=$((t - LAB_TOTAL0)) -v n="$(nproc)" \
        'BEGIN { printf "%.0f", (t > 0 ? 100 * o * n / t : 0) }'
}
lab_loadavg() { cut -d' ' -f1 /proc/loadavg; }

# Raises the open-file limit to what is needed (or the hard limit).
lab_nofile() {
    local need=$1
    ulimit -n "$need" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    (($(ulimit -n) >= need)) || lab_die "need $need open files, the hard limit is $(ulimit -Hn) (lower N or raise ulimit -Hn)"
}
