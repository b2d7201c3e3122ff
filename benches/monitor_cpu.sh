#!/usr/bin/env bash
# What the event strategy's monitor costs while handlers block: an event
# server (in-process, `socketserver bench --spawn --strategies event
# --workloads sleep:MS`) with HANDLERS connections, each request sleeping
# SLEEP_MS in its handler, so that HANDLERS polling threads sit blocked in
# a sleep. Reports the CPU the monitor thread (`socketserver-monitor`,
# comm "socketserver-mo") used over MEASURE seconds, as % of one core
# (/proc/PID/task/TID/stat utime + stime), the whole process's CPU, and its
# threads (total, and polling threads and how many of them are asleep).
#
#   benches/monitor_cpu.sh                    # 256 handlers sleeping 60 s, 10 s measured
#   HANDLERS=64 benches/monitor_cpu.sh        # fewer
#   SLEEP_MS=100 benches/monitor_cpu.sh       # handlers that block, then finish, in turn
#
# The generator runs in the same process (one thread, --threads 1: its
# connections wait on their answers, so it is idle): the total thread count
# includes it, main and the server's accept/serve threads; the by-name
# counts tell them apart. With the default Event (max_workers 256), 256
# blocked handlers hold every thread the server may start.
#
# Knobs (environment): HANDLERS (256), SLEEP_MS (60000), MEASURE (s, 10),
# WAIT_CAP (s to wait for the polling threads to reach HANDLERS, 30), PIN
# (a CPU list for `taskset -c`, e.g. 0: empty = unpinned), BIN (the binary;
# else built, niced), KEEP_LOGS. Bounded: about WAIT_CAP + MEASURE + 5 s;
# the bench process is then killed (SIGKILL, by PID: its handlers sleep).
# Needs: python3, Linux /proc.
set -euo pipefail
LAB_NAME=monitor_cpu
# shellcheck source=benches/lab/common.sh
source "$(dirname "$0")/lab/common.sh"
[[ ${1:-} == -h || ${1:-} == --help ]] && {
    awk 'NR > 1 && !/^#/ {exit} NR > 1 {print}' "$0"
    exit 0
}

HANDLERS=${HANDLERS:-256}
SLEEP_MS=${SLEEP_MS:-60000}
MEASURE=${MEASURE:-10}
WAIT_CAP=${WAIT_CAP:-30}
PIN=${PIN:-}

lab_build
lab_nofile "$((HANDLERS * 2 + 256))"
pin=()
[[ -n $PIN ]] && pin=(taskset -c "$PIN")
# Longer than the wait and the measurement: killed before it ends.
run_for=$((WAIT_CAP + MEASURE + 30))
lab_start bench "${pin[@]}" "$BIN" bench tcp-echo --spawn --strategies event --workloads "sleep:$SLEEP_MS" \
    -c "$HANDLERS" --threads 1 --warmup 0 --duration "$run_for"
proc=$PID
lab_log "bench pid $proc: event server, $HANDLERS connections, handlers sleep ${SLEEP_MS} ms"

# Polling threads: comm "socketserver-po" (cut to 15 characters).
pollers() { cat /proc/"$1"/task/*/comm 2>/dev/null | grep -cx 'socketserver-po' || true; }
started=$SECONDS
n=0
while ((SECONDS - started < WAIT_CAP)); do
    kill -0 "$proc" 2>/dev/null || { cat "$LAB_TMP/bench.err" >&2; lab_die "the bench process ended early"; }
    n=$(pollers "$proc")
    ((n >= HANDLERS)) && break
    sleep 0.2
done
lab_log "$n polling threads after $((SECONDS - started)) s; measuring ${MEASURE} s"
sleep 1
lab_cpu_mark "$proc"
python3 "$LAB_DIR/proc_cpu.py" "$proc" "$MEASURE" >"$LAB_TMP/cpu.json"
cpu=$(lab_cpu_others 0 "$proc")
load=$(lab_loadavg)
kill -KILL "$proc" 2>/dev/null || true
wait "$proc" 2>/dev/null || true

python3 - "$LAB_TMP/cpu.json" "$HANDLERS" "$SLEEP_MS" "$load" "$cpu" "${PIN:-unpinned}" <<'EOF'
import json, sys
path, handlers, sleep_ms, load, cpu, pin = sys.argv[1:]
r = json.load(open(path))
by = r["by_name"]
mon = by.get("socketserver-mo", {"threads": 0, "cpu_pct": float("nan")})
pol = by.get("socketserver-po", {"threads": 0, "cpu_pct": 0.0, "states": {}})
asleep = pol.get("states", {}).get("S", 0)
others = ", ".join(f"{n} {e['threads']}" for n, e in by.items() if n not in ("socketserver-mo", "socketserver-po"))
print(f"monitor_cpu[{handlers} handlers in sleep:{sleep_ms}]: monitor thread {mon['cpu_pct']:.1f}% of a core "
      f"over {r['seconds']:g} s ({mon['threads']} monitor thread(s)); process {r['process_cpu_pct']:.1f}%, "
      f"{r['threads']} threads (polling {pol['threads']}, {asleep} asleep, {pol['cpu_pct']:.1f}% CPU together; "
      f"others: {others}) [{pin}; load avg {load}; {cpu}]")
EOF
[[ -n ${KEEP_LOGS:-} ]] && cat "$LAB_TMP/cpu.json" >&2
exit 0
