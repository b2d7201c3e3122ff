#!/usr/bin/env bash
# Slow clients against the event strategy: N hostile connections hold the
# server while one honest client does a round trip every INTERVAL; reports
# the server's threads and the honest client's latency and failures.
#
#   benches/slowloris.sh            # `socketserver time`, 10,000 clients each
#                                   #   sending one byte a second, never a newline
#   benches/slowloris.sh 300        # the same with 300 clients (a quick run)
#   benches/slowloris.sh --echo     # `socketserver echo`, 300 clients that send
#                                   #   and never read (no timeouts set)
#   benches/slowloris.sh --proxy    # `socketserver time --proxy-protocol`, 300
#                                   #   loopback (trusted) clients that never
#                                   #   finish their PROXY v1 header
#   benches/slowloris.sh --echo 50  # N after the variant: any order
#
# The servers run with their default flags (event strategy, default
# --max-workers 256, --request-timeout 30, --proxy-header-timeout 3) on
# 127.0.0.1:0. A hostile connection the server closes is opened again (the
# count is reported). The honest client is an open loop: round trip i starts
# at i * INTERVAL on a fresh connection whether or not the earlier ones are
# done, each bounded by HONEST_TIMEOUT from connect to answer (not done in
# time: a failure). REUSE=1: a closed loop on one connection instead.
#
# Prints one line: the hostile connections open (connected as the client
# sees it: accepted, or still in the listen queue, whose length `ss` gives
# as "unaccepted"; "connecting": SYNs not answered yet), the server's
# threads (/proc/PID/status Threads: before the attack, when the honest
# client starts, the most seen while it ran, at its end), and the honest
# client's requests, failures by kind, p50/p99/max latency of those
# answered, and the machine's load (to judge the noise).
#
# Knobs (environment): DURATION (s of honest requests, 20), INTERVAL (s
# between honest requests, 0.05), HONEST_TIMEOUT (s, 1), REUSE (0), SETTLE
# (s between the attack being up and the honest client, 2), RAMP_CAP (s to
# wait for all N to connect, 30), WRITER_CAP (--echo: the most bytes a
# writer sends, 5 MiB; about 4 MiB stall the server's write back),
# SERVER_ARGS (more server flags, e.g. "--idle-timeout 5" to try a fix),
# BIN (the binary; else built, niced), KEEP_LOGS (1: keep the logs and
# print the clients' JSON). Bounded: at most about RAMP_CAP + SETTLE +
# DURATION + HONEST_TIMEOUT + 20 s.
#
# --echo holds about 1.5 GB of kernel socket memory while it runs (loopback
# buffers autotune to MBs): it reaches net.ipv4.tcp_mem's pressure level,
# which shrinks every TCP socket's buffers on the machine for that time.
# Needs: python3 (3.9+), ss (iproute2, optional), Linux /proc. Loopback
# only; ends only the processes it started, by PID.
set -euo pipefail
LAB_NAME=slowloris
# shellcheck source=benches/lab/common.sh
source "$(dirname "$0")/lab/common.sh"

VARIANT=time
N=""
for arg in "$@"; do
    case $arg in
        --echo) VARIANT=echo ;;
        --proxy) VARIANT=proxy ;;
        --time) VARIANT=time ;;
        -h | --help)
            awk 'NR > 1 && !/^#/ {exit} NR > 1 {print}' "$0"
            exit 0
            ;;
        *[!0-9]* | "") lab_die "unknown argument $arg (N, --echo, --proxy; see --help)" ;;
        *) N=$arg ;;
    esac
done
case $VARIANT in
    time) N=${N:-10000} KIND=slowloris HONEST=time SERVER=(time) ;;
    echo) N=${N:-300} KIND=writer HONEST=echo SERVER=(echo) ;;
    proxy) N=${N:-300} KIND=proxy HONEST=proxy SERVER=(time --proxy-protocol) ;;
esac
DURATION=${DURATION:-20}
INTERVAL=${INTERVAL:-0.05}
HONEST_TIMEOUT=${HONEST_TIMEOUT:-1}
REUSE=${REUSE:-0}
SETTLE=${SETTLE:-2}
RAMP_CAP=${RAMP_CAP:-30}
SERVER_ARGS=${SERVER_ARGS:-}
WRITER_CAP=${WRITER_CAP:-$((5 << 20))}

lab_build
lab_nofile "$((N + 1024))"

# shellcheck disable=SC2086
lab_server server "$BIN" "${SERVER[@]}" --tcp 127.0.0.1:0 $SERVER_ARGS
server=$PID
lab_log "server pid $server at $ADDR: ${SERVER[*]} ${SERVER_ARGS}"
sleep 0.3
threads_before=$(threads_of "$server")

max_time=$(awk -v r="$RAMP_CAP" -v s="$SETTLE" -v d="$DURATION" -v t="$HONEST_TIMEOUT" 'BEGIN {print r + s + d + t + 10}')
lab_start attack python3 "$CLIENTS" attack --addr "$ADDR" --n "$N" --kind "$KIND" \
    --ramp-cap "$RAMP_CAP" --max-time "$max_time" --ready "$LAB_TMP/ready" --writer-cap "$WRITER_CAP"
attacker=$PID
lab_log "attacker pid $attacker: $N $KIND connections"
for _ in $(seq $(((RAMP_CAP + 5) * 10))); do
    [[ -s $LAB_TMP/ready ]] && break
    kill -0 "$attacker" 2>/dev/null || { cat "$LAB_TMP/attack.err" >&2; lab_die "the attacker ended early"; }
    sleep 0.1
done
lab_log "attack up: $(cat "$LAB_TMP/ready" 2>/dev/null || echo 'no ready line'); settling ${SETTLE} s"
sleep "$SETTLE"

threads_start=$(threads_of "$server")
threads_max=$threads_start
lab_cpu_mark "$server" "$attacker"
reuse=()
[[ $REUSE == 1 ]] && reuse=(--reuse)
lab_start honest python3 "$CLIENTS" honest --addr "$ADDR" --kind "$HONEST" --duration "$DURATION" \
    --interval "$INTERVAL" --timeout "$HONEST_TIMEOUT" "${reuse[@]}"
honest=$PID
lab_log "honest client pid $honest: one $HONEST round trip every ${INTERVAL} s for ${DURATION} s"
while kill -0 "$honest" 2>/dev/null; do
    t=$(threads_of "$server")
    [[ $t =~ ^[0-9]+$ ]] && ((t > threads_max)) && threads_max=$t
    sleep 0.5
done
wait "$honest" || true
threads_end=$(threads_of "$server")
# Connections the kernel completed that the server has not accepted (the
# listener's Recv-Q); "?" without ss.
backlog=$(ss -Hltn "sport = :${ADDR##*:}" 2>/dev/null | awk '{print $2; exit}')
backlog=${backlog:-?}
server_cpu=$(lab_cpu_of "$server")
honest_cpu=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("cpu_pct", 0))' "$LAB_TMP/honest.out" 2>/dev/null || echo 0)
cpu=$(lab_cpu_others "$honest_cpu" "$server" "$attacker")
load=$(lab_loadavg)

kill -TERM "$attacker" 2>/dev/null || true
for _ in $(seq 100); do
    kill -0 "$attacker" 2>/dev/null || break
    sleep 0.1
done
wait "$attacker" 2>/dev/null || true
lab_stop "$server"

python3 - "$LAB_TMP/honest.out" "$LAB_TMP/attack.out" "$VARIANT" "$N" "$threads_before" "$threads_start" \
    "$threads_max" "$threads_end" "$load" "$cpu" "$INTERVAL" "$DURATION" "$backlog" "$server_cpu" <<'EOF'
import json, sys
hf, af, variant, n, tb, ts, tm, te, load, cpu, interval, duration, backlog, server_cpu = sys.argv[1:]
def first_json(path):
    try:
        with open(path) as f:
            return json.loads(f.readline())
    except (OSError, ValueError):
        return None
h, a = first_json(hf), first_json(af)
if a:
    att = (f"hostile open {a['open_at_end']}/{n} at the end (peak {a['open_peak']}, "
           f"closed by server {a['closed_by_server']}, connecting {a['connecting_at_end']}; "
           f"{backlog} unaccepted in the listen queue)")
else:
    att = "hostile: no report"
thr = f"server threads {tb} before, {ts} at start, max {tm}, {te} at end, CPU {server_cpu}% of a core"
if h:
    fails = ", ".join(f"{k} {v}" for k, v in sorted(h["failures"].items())) or "none"
    ms = lambda v: "-" if v is None else f"{v:g} ms"
    hon = (f"honest {h['ok']}/{h['requests']} ok, {h['failed']} failed ({fails}; timeout {h['timeout_s']:g} s), "
           f"p50 {ms(h['p50_ms'])} p99 {ms(h['p99_ms'])} max {ms(h['max_ms'])}")
else:
    hon = "honest: no report"
print(f"slowloris[{variant}] N={n}: {att}; {thr}; {hon} [every {interval} s for {duration} s; "
      f"load avg {load}; {cpu}]")
EOF
[[ -n ${KEEP_LOGS:-} ]] && cat "$LAB_TMP/attack.out" "$LAB_TMP/honest.out" >&2
exit 0
