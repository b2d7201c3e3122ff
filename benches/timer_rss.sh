#!/usr/bin/env bash
# Memory of the event strategy's idle timers under load: `socketserver echo
# --idle-timeout 3600` loaded by `socketserver bench tcp-echo` for DURATION
# seconds, then left alone; the same without --idle-timeout to compare.
# Reports the server's RSS (/proc/PID/status VmRSS) before the load, at the
# end of the load (the last sample while the clients were connected; and
# the peak, VmHWM), and AFTER seconds after the clients left.
#
#   benches/timer_rss.sh                    # both variants, 30 s of load each
#   DURATION=10 benches/timer_rss.sh        # shorter
#   VARIANTS=timeout benches/timer_rss.sh   # only --idle-timeout (or: none)
#
# Pinned (PIN=1, the default on 2+ CPUs): the server on CPU 0 and the
# generator on CPU 1 with one thread (`taskset`), as benches/compare.sh's
# pinned mode. Each request parks the connection again, so the request rate
# drives how many idle deadlines are queued; the line says the rate reached
# (the figures compared are at >= 100k req/s; a busy machine may not get
# there), and the RSS growth over the load divided by the requests served,
# which compares runs at different rates.
#
# Knobs (environment): DURATION (s of load, 30), AFTER (s after the clients
# left, 5), CONNS (generator connections, 16), SIZE (bytes a request, 64),
# IDLE_TIMEOUT (3600), VARIANTS ("timeout none"), PIN (1 on 2+ CPUs),
# SERVER_ARGS (more server flags), BIN (the binary; else built, niced),
# KEEP_LOGS. Bounded: about (DURATION + AFTER + 12) s a variant.
# Needs: taskset for PIN=1, python3, Linux /proc. Loopback only.
set -euo pipefail
LAB_NAME=timer_rss
# shellcheck source=benches/lab/common.sh
source "$(dirname "$0")/lab/common.sh"
[[ ${1:-} == -h || ${1:-} == --help ]] && {
    awk 'NR > 1 && !/^#/ {exit} NR > 1 {print}' "$0"
    exit 0
}

DURATION=${DURATION:-30}
AFTER=${AFTER:-5}
CONNS=${CONNS:-16}
SIZE=${SIZE:-64}
IDLE_TIMEOUT=${IDLE_TIMEOUT:-3600}
VARIANTS=${VARIANTS:-"timeout none"}
SERVER_ARGS=${SERVER_ARGS:-}
if [[ -z ${PIN:-} ]]; then
    PIN=0
    [[ $(nproc) -ge 2 ]] && command -v taskset >/dev/null && PIN=1
fi

lab_build
srv_pin=() gen_pin=() gen_threads=()
if [[ $PIN == 1 ]]; then
    srv_pin=(taskset -c 0) gen_pin=(taskset -c 1) gen_threads=(--threads 1)
fi

for variant in $VARIANTS; do
    case $variant in
        timeout) flags=(--idle-timeout "$IDLE_TIMEOUT") label="--idle-timeout $IDLE_TIMEOUT" ;;
        none) flags=() label="no idle timeout" ;;
        *) lab_die "unknown variant $variant (timeout, none)" ;;
    esac
    # shellcheck disable=SC2086
    lab_server "server.$variant" "${srv_pin[@]}" "$BIN" echo --tcp 127.0.0.1:0 "${flags[@]}" $SERVER_ARGS
    server=$PID
    sleep 0.5
    rss_before=$(rss_kb "$server")
    lab_log "$label: server pid $server at $ADDR, RSS $(kb_to_mb "$rss_before") MB; ${DURATION} s of load"
    lab_cpu_mark "$server"
    lab_start "bench.$variant" "${gen_pin[@]}" "$BIN" bench tcp-echo --addr "$ADDR" -c "$CONNS" -b "$SIZE" \
        "${gen_threads[@]}" --duration "$DURATION" --warmup 0 --server-pid "$server" --json
    gen=$PID
    rss_load=$rss_before
    cap=$((DURATION + 30))
    started=$SECONDS
    while kill -0 "$gen" 2>/dev/null; do
        r=$(rss_kb "$server")
        [[ $r =~ ^[0-9]+$ ]] && rss_load=$r
        if ((SECONDS - started > cap)); then
            lab_log "the generator is still running after ${cap} s: stopping it"
            kill -KILL "$gen" 2>/dev/null || true
            break
        fi
        sleep 0.25
    done
    wait "$gen" || lab_log "the generator failed: $(tail -3 "$LAB_TMP/bench.$variant.err")"
    gen_cpu=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[0]["generator_cpu_pct"])' \
        "$LAB_TMP/bench.$variant.out" 2>/dev/null || echo 0)
    cpu=$(lab_cpu_others "$gen_cpu" "$server")
    load=$(lab_loadavg)
    hwm=$(proc_status "$server" VmHWM)
    sleep "$AFTER"
    rss_after=$(rss_kb "$server")
    threads=$(threads_of "$server")
    lab_stop "$server"
    python3 - "$LAB_TMP/bench.$variant.out" "$label" "$DURATION" "$AFTER" "$CONNS" "$PIN" \
        "$rss_before" "$rss_load" "$hwm" "$rss_after" "$threads" "$load" "$cpu" <<'EOF'
import json, sys
path, label, duration, after, conns, pin, before, load_kb, hwm, after_kb, threads, loadavg, cpu = sys.argv[1:]
try:
    row = json.load(open(path))[0]
    rate = (f"{row['requests_per_sec'] / 1000:.0f}k req/s, p99 {row['p99_us']:.0f} us, "
            f"server CPU {row['server_cpu_pct']:.0f}%, generator {row['generator_cpu_pct']:.0f}%")
    if row["errors"]:
        rate += f", {row['errors']} errors"
    if before.isdigit() and load_kb.isdigit() and row["requests"]:
        rate += f"; RSS grew {(int(load_kb) - int(before)) * 1024 / row['requests']:.1f} B a request"
except (OSError, ValueError, IndexError, KeyError, TypeError):
    rate = "no generator report"
mb = lambda k: f"{int(k) / 1024:.1f} MB" if k.isdigit() else "?"
print(f"timer_rss[{label}]: RSS {mb(before)} before, {mb(load_kb)} after {duration} s of load "
      f"(peak {mb(hwm)}), {mb(after_kb)} {after} s after the clients left; {rate} "
      f"({conns} conns, {'pinned' if pin == '1' else 'unpinned'}; {threads} threads) "
      f"[load avg {loadavg}; {cpu}]")
EOF
done
