#!/usr/bin/env python3
"""The markdown table of a benches/tls.sh run: `tls_report.py OUT_DIR`.

Per mode and cell, each contender's median round (by requests/s) with its
server CPU per request and p99; the ratio ours / tokio-rustls; then the
idle-connection memory."""
import glob
import json
import os
import statistics
import sys

out = sys.argv[1]
settings = json.load(open(os.path.join(out, "settings.json")))
contenders = settings["contenders"]
NAMES = {"ours": "ours (Event)", "tokio": "tokio-rustls"}

rows = {}  # (mode, cell, conns) -> name -> [row per round]
negotiated = set()
for path in sorted(glob.glob(os.path.join(out, "cells", "*.json"))):
    base = os.path.basename(path)
    if base.startswith("idle."):
        continue
    mode, cell, _round, name, _ = base.split(".")
    cell = cell.split("-c")[0]
    cpu_path = os.path.join(out, "cpu", base)
    other = None
    if os.path.exists(cpu_path):
        j = json.load(open(cpu_path))
        cores = settings["cpus"] * j["busy"] / max(j["total"], 1)
    for r in json.load(open(path)):
        if os.path.exists(cpu_path):
            r["other_cores"] = max(0.0, cores - (r["generator_cpu_pct"] + (r["server_cpu_pct"] or 0)) / 100)
        rows.setdefault((mode, cell, r["connections"]), {}).setdefault(name, []).append(r)
        if r.get("tls"):
            negotiated.add(r["tls"])

CELLS = {"handshake": "handshakes/s (connect, handshake, 64 B echo, close)", "echo64": "TLS echo 64 B", "echo16k": "TLS echo 16 KiB"}


def median_row(rs):
    rs = sorted(rs, key=lambda r: r["requests_per_sec"])
    return rs[len(rs) // 2], rs


def fmt(v, digits=0):
    return f"{v:,.{digits}f}"


print(f"Commit `{settings['commit']}`; {settings['rounds']} round(s) of {settings['duration']} s (+{settings['warmup']} s warm-up) per cell; "
      f"load average {settings['loadavg_before']} before, {open(os.path.join(out, 'loadavg_after')).read().strip()} after.")
print(f"Negotiated: {', '.join(sorted(negotiated)) or '?'}.")
others = []
print()
for mode in settings["modes"]:
    print(f"### {mode.capitalize()}" + (" (server `taskset -c 1`, load `taskset -c 0 --threads 1`)" if mode == "pinned" else " (server and load free on both CPUs)"))
    print()
    head = "| cell | conns |"
    for c in contenders:
        head += f" {NAMES.get(c, c)} req/s | µs CPU/req | p99 µs |"
    if "ours" in contenders and "tokio" in contenders:
        head += " ours/tokio req/s | ours/tokio CPU/req |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for cell in CELLS:
        for conns in sorted({k[2] for k in rows if k[0] == mode and k[1] == cell}):
            by = rows.get((mode, cell, conns), {})
            line = f"| {CELLS[cell]} | {conns} |"
            med = {}
            for c in contenders:
                if c not in by:
                    line += " - | - | - |"
                    continue
                m, rs = median_row(by[c])
                med[c] = m
                spread = ""
                if len(rs) > 1:
                    spread = f" ({fmt(rs[0]['requests_per_sec'])}–{fmt(rs[-1]['requests_per_sec'])})"
                bad = ""
                if m["errors"] or m["unserved"]:
                    bad = f" [{m['errors']} errors, {m['unserved']} unserved]"
                cpu = m.get("server_cpu_us_per_request")
                cpus = sorted(r.get("server_cpu_us_per_request") or 0 for r in rs)
                cspread = f" ({cpus[0]:.1f}–{cpus[-1]:.1f})" if len(rs) > 1 else ""
                others.extend(r["other_cores"] for r in rs if "other_cores" in r)
                line += f" {fmt(m['requests_per_sec'])}{spread}{bad} | {fmt(cpu, 2) if cpu is not None else '-'}{cspread} | {fmt(m['p99_us'], 1)} |"
            if "ours" in med and "tokio" in med:
                o, t = med["ours"], med["tokio"]
                ratio = o["requests_per_sec"] / max(t["requests_per_sec"], 1e-9)
                oc, tc = o.get("server_cpu_us_per_request"), t.get("server_cpu_us_per_request")
                cratio = f"{oc / tc:.2f}" if oc and tc else "-"
                line += f" {ratio:.2f}× | {cratio}× |"
            elif "ours" in contenders and "tokio" in contenders:
                line += " - | - |"
            print(line)
    print()

if others:
    print(f"Other processes on the machine used {statistics.median(others):.2f} cores in the median cell and up to {max(others):.2f} (of {settings['cpus']}; machine busy minus server and generator).")
    print()
idle = {}
for path in glob.glob(os.path.join(out, "cells", "idle.*.json")):
    name = os.path.basename(path).split(".")[1]
    idle[name] = json.load(open(path))[0]
if idle:
    print(f"### {settings['idle']:,} idle TLS connections (unpinned, after their handshake)")
    print()
    print("| server | connected | answered | connect s | RSS before | RSS holding | KiB per connection | threads |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for c in contenders:
        if c not in idle:
            continue
        r = idle[c]
        mib = lambda k: "-" if k is None else f"{k / 1024:.1f} MiB"
        holding = max(x for x in (r.get("held_rss_kib"), r.get("rss_kib")) if x is not None) if (r.get("held_rss_kib") or r.get("rss_kib")) else None
        per = r.get("rss_per_conn_kib")
        print(f"| {NAMES.get(c, c)} | {r['connected']:,} | {r['answered']:,} | {r['connect_secs']:.2f} | {mib(r.get('base_rss_kib'))} | {mib(holding)} | "
              f"{'-' if per is None else f'{per:.1f}'} | {r.get('base_threads')} → {r.get('threads')} |")
