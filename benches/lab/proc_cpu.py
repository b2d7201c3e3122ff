#!/usr/bin/env python3
"""CPU used by a process's threads over an interval, by thread name.

    proc_cpu.py PID SECONDS

Reads /proc/PID/task/*/stat (utime + stime, in clock ticks) at the start
and the end of SECONDS and prints one JSON object:
  {"seconds": 10.0, "clk_tck": 100, "threads": 262,
   "by_name": {"socketserver-mo": {"threads": 1, "cpu_pct": 58.9,
               "states": {"S": 1}}, ...},
   "process_cpu_pct": 61.2}
cpu_pct is % of one core over the interval (ticks / CLK_TCK / seconds);
thread names are /proc comm values, cut to 15 characters by the kernel
("socketserver-monitor" is "socketserver-mo"). Threads that come or go
during the interval are counted with what they used while seen at both
ends (a thread seen at one end only is left out). States are as at the end.
"""
import collections
import json
import os
import sys
import time


def task_stats(pid):
    out = {}
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/stat") as f:
                raw = f.read()
        except OSError:
            continue  # gone
        lpar, rpar = raw.index("("), raw.rindex(")")
        name = raw[lpar + 1 : rpar]
        fields = raw[rpar + 2 :].split()
        # fields[0] is state (field 3); utime/stime are fields 14/15.
        out[tid] = (name, fields[0], int(fields[11]) + int(fields[12]))
    return out


def process_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        raw = f.read()
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def main():
    pid, secs = int(sys.argv[1]), float(sys.argv[2])
    tck = os.sysconf("SC_CLK_TCK")
    t0 = time.monotonic()
    a, pa = task_stats(pid), process_ticks(pid)
    time.sleep(secs)
    b, pb = task_stats(pid), process_ticks(pid)
    elapsed = time.monotonic() - t0
    by = collections.defaultdict(lambda: {"threads": 0, "ticks": 0, "states": collections.Counter()})
    for tid, (name, state, ticks) in b.items():
        e = by[name]
        e["threads"] += 1
        e["states"][state] += 1
        if tid in a:
            e["ticks"] += ticks - a[tid][2]
    out = {
        "seconds": round(elapsed, 2),
        "clk_tck": tck,
        "threads": len(b),
        "threads_at_start": len(a),
        "by_name": {
            n: {"threads": e["threads"], "cpu_pct": round(100 * e["ticks"] / tck / elapsed, 1), "states": dict(e["states"])}
            for n, e in sorted(by.items())
        },
        "process_cpu_pct": round(100 * (pb - pa) / tck / elapsed, 1),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
