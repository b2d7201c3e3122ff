#!/usr/bin/env bash
# ab.sh ROUNDS DURATION CONTENDERS...: pinned interleaved 64 B x 16 conns; prints one JSON line per cell.
# contenders: head | base | tokio | tokio-ct
set -euo pipefail
ROUNDS=$1 DUR=$2; shift 2
HEAD=/work/target-measure/release/socketserver
BASE=/work/target-base/release/socketserver
CB=/work/wt-measure/target/contenders/release
T=$(mktemp -d /tmp/ab.XXXXXX)
srvpid=""
trap '[[ -n $srvpid ]] && kill -KILL $srvpid 2>/dev/null; rm -rf $T' EXIT
ticks() { awk '/^cpu / {print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
for r in $(seq $ROUNDS); do
  for c in "$@"; do
    case $c in
      head) cmd=("$HEAD" echo --strategy event --log-level warn) ;;
      base) cmd=("$BASE" echo --strategy event --log-level warn) ;;
      tokio) cmd=("$CB/tokio_echo" --backlog 4096) ;;
      tokio-ct) cmd=("$CB/tokio_echo" --current-thread --backlog 4096) ;;
    esac
    taskset -c 0 "${cmd[@]}" --tcp 127.0.0.1:0 >$T/out 2>$T/err &
    srvpid=$!
    addr=""
    for _ in $(seq 100); do addr=$(awk '/^listening tcp/{print $3}' $T/out); [[ -n $addr ]] && break; sleep 0.05; done
    read -r b0 t0 < <(ticks)
    la=$(cut -d' ' -f1 /proc/loadavg)
    taskset -c 1 "$HEAD" bench tcp-echo --addr "$addr" -c ${CONNS:-16} -b 64 --duration "$DUR" --warmup 1 --threads 1 --server-pid $srvpid --label $c --json >$T/j
    read -r b1 t1 < <(ticks)
    kill -TERM $srvpid 2>/dev/null || true; wait $srvpid 2>/dev/null || true; srvpid=""
    python3 - $T/j $c $r $((b1-b0)) $((t1-t0)) $la <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))[0]; c, r = sys.argv[2], sys.argv[3]
b, t, la = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
busy = 200.0 * b / t if t else 0
others = busy - j["server_cpu_pct"] - j["generator_cpu_pct"]   # approx (includes warmup in busy window)
us = j["server_cpu_pct"] / 100 / j["requests_per_sec"] * 1e6
print(json.dumps({"c": c, "round": int(r), "us_per_req": round(us, 3), "rps": round(j["requests_per_sec"]), "p99_us": round(j["p99_us"]),
   "srv_cpu": round(j["server_cpu_pct"], 1), "gen_cpu": round(j["generator_cpu_pct"], 1), "machine_busy_pct": round(busy), "others_pct_approx": round(others), "loadavg": la, "unserved": j["unserved"], "errors": j["errors"]}))
PY
    sleep 0.3
  done
done
