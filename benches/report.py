#!/usr/bin/env python3
"""Turns the raw results of benches/compare.sh (and, when present, of the
criterion benches in target/criterion) into BENCHMARKS.md and an SVG plot.

    python3 benches/report.py --results target/compare --command "..." \
        --markdown BENCHMARKS.md --svg BENCHMARKS.svg

Standard library only. A section of the existing BENCHMARKS.md between
`<!-- notes:start -->` and `<!-- notes:end -->` (hand-written analysis) is
kept when the file is regenerated.

Results layout (written by compare.sh): cells/MODE/NAME.CELL.rROUND.json
(MODE: unpinned or pinned; a flat cells/*.json counts as unpinned),
idle/NAME.json (`socketserver bench tcp-idle --json`) and idle/NAME.flags,
sigint.jsonl, cpu.jsonl, settings.json, loadavg_after.
"""
import argparse
import datetime
import glob
import json
import os
import platform
import re
import statistics
import subprocess
import sys

NAMES = {
    "sync": "ours: Sync",
    "threading": "ours: Threading",
    "pool": "ours: ThreadPool",
    "event": "ours: Event",
    "std": "std thread/conn",
    "tokio": "tokio",
    "tokio-ct": "tokio current-thread",
    "python": "Python socketserver",
}
ORDER = ["sync", "threading", "pool", "event", "std", "tokio", "tokio-ct", "python"]
COLORS = {
    "sync": "#7f7f7f",
    "threading": "#ff7f0e",
    "pool": "#d62728",
    "event": "#17becf",
    "std": "#1f77b4",
    "tokio": "#2ca02c",
    "tokio-ct": "#bcbd22",
    "python": "#9467bd",
}
MODES = ["unpinned", "pinned"]
MODE_TITLES = {
    "unpinned": "unpinned (server and load generator free on both CPUs)",
    "pinned": "pinned (server on CPU 0, load generator on CPU 1 with one thread)",
}
# Why a contender may be left out of the idle-connections cell (IDLE_SKIP).
IDLE_SKIP_WHY = {
    "sync": "serves one connection at a time: the others wait in the listen queue, unanswered",
    "python": "listen backlog of 5 and a thread started per connection: about 16 connections a second"
              " once the queue overflows (a dropped SYN is sent again after 1 s)",
}
# (key, label): key = (mode, connections, size)
CELLS = [
    (("tcp-echo", 1, 64), "TCP echo 64 B, 1 conn"),
    (("tcp-echo", 16, 64), "TCP echo 64 B, 16 conns"),
    (("tcp-echo", 64, 64), "TCP echo 64 B, 64 conns"),
    (("tcp-echo", 256, 64), "TCP echo 64 B, 256 conns"),
    (("tcp-echo", 16, 16384), "TCP echo 16 KiB, 16 conns"),
    (("tcp-connect", 16, 64), "connect-per-request, 16 clients"),
    (("udp-echo", 1, 64), "UDP echo 64 B, 1 client"),
    (("udp-echo", 16, 64), "UDP echo 64 B, 16 clients"),
]
LABELS = dict(CELLS)


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def read_jsonl(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                if line.strip():
                    out.append(json.loads(line))
    except OSError:
        pass
    return out


def load(results):
    """rows: {(mode, server, cell): median round}; idle: {server: row};
    sigint: [..]; settings; servers (in ORDER); modes (in MODES order)."""
    with open(os.path.join(results, "settings.json")) as f:
        settings = json.load(f)
    settings.setdefault("rounds", 1)
    try:
        with open(os.path.join(results, "loadavg_after")) as f:
            settings["loadavg_after"] = f.read().strip()
    except OSError:
        settings["loadavg_after"] = "?"
    rounds = {}
    files = [("unpinned", p, os.path.basename(p)) for p in glob.glob(os.path.join(results, "cells", "*.json"))]
    for mode in MODES:
        files += [(mode, p, f"{mode}/{os.path.basename(p)}")
                  for p in glob.glob(os.path.join(results, "cells", mode, "*.json"))]
    for mode, path, name in sorted(files):
        with open(path) as f:
            for r in json.load(f):
                r["_file"] = name
                rounds.setdefault((mode, r["server"], (r["mode"], r["connections"], r["size"])), []).append(r)
    rows = {k: median_round(v) for k, v in rounds.items()}
    # CPU used by other processes while each `bench` invocation ran: the
    # machine's busy time less what the server and the generator used.
    cpu = {d["file"]: d for d in read_jsonl(os.path.join(results, "cpu.jsonl"))}
    window = settings["duration"] + settings["warmup"]
    ncpu = os.cpu_count() or 1
    by_file = {}
    for rs in rounds.values():
        for x in rs:
            by_file.setdefault(x["_file"], []).append(x)
    for r in rows.values():
        d = cpu.get(r["_file"])
        if not d or not d["total"]:
            r["other_cpu_pct"] = r["steal_pct"] = None
            continue
        wall = d["total"] / ncpu / 100
        ours = sum((x["server_cpu_pct"] or 0) + x["generator_cpu_pct"] for x in by_file[r["_file"]]) / 100 * window
        r["other_cpu_pct"] = max(0.0, (d["busy"] / 100 - ours) / wall * 100)
        r["steal_pct"] = d["steal"] / 100 / wall * 100
    idle = {}
    for path in glob.glob(os.path.join(results, "idle", "*.json")):
        with open(path) as f:
            for d in json.load(f):
                try:
                    with open(path[:-len(".json")] + ".flags") as g:
                        d["flags"] = g.read().strip()
                except OSError:
                    d["flags"] = ""
                idle[d["server"]] = d
    sigint = read_jsonl(os.path.join(results, "sigint.jsonl"))
    present = {k[1] for k in rows} | set(idle) | {d["server"] for d in sigint}
    servers = [s for s in ORDER if s in present] + sorted(present - set(ORDER))
    modes = [m for m in MODES if any(k[0] == m for k in rows)]
    return rows, idle, sigint, settings, servers, modes


def median_round(runs):
    """The round with the median requests/s (the lower middle one for an even
    count), with the spread of all rounds; errors and unserved clients are the
    worst of any round, so that "every client served" holds in every round."""
    runs = sorted(runs, key=lambda r: r["requests_per_sec"])
    r = dict(runs[(len(runs) - 1) // 2])
    r["rounds"] = len(runs)
    r["rps_all"] = [x["requests_per_sec"] for x in runs]
    for k in ("errors", "unserved", "lost"):
        r[k] = max(x[k] for x in runs)
    return r


def name(s):
    return NAMES.get(s, s)


def color(s):
    return COLORS.get(s, "#8c564b")


def pct(x):
    return "–" if x is None else f"{x:.0f}%"


def fmt_int(x):
    return f"{x:,.0f}"


def fmt_us(x):
    if x >= 10_000:
        return f"{x / 1000:,.1f} ms"
    return f"{x:,.0f} µs"


def fmt_kib(k):
    return "–" if k is None else f"{k / 1024:.1f} MiB"


def served_note(r):
    notes = []
    if r["unserved"]:
        notes.append(f"{r['unserved']}/{r['connections']} unserved")
    if r["errors"]:
        notes.append(f"{r['errors']} errors")
    if r.get("lost"):
        notes.append(f"{r['lost']} lost")
    return f" ({', '.join(notes)})" if notes else ""


def cpu_per_request(r):
    """Server CPU µs per request, or None."""
    if r is None or r.get("server_cpu_pct") is None or not r["requests_per_sec"]:
        return None
    return r["server_cpu_pct"] / 100 / r["requests_per_sec"] * 1e6


def fully_served(r):
    return r is not None and r["unserved"] == 0 and r["errors"] == 0


def idle_per_conn(d):
    """RSS growth per connection (KiB) of an idle-connections row, or None."""
    return None if d is None else d.get("rss_per_conn_kib")


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f"{kib / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    commit = sh("git", "rev-parse", "HEAD")
    dirty = sh("git", "status", "--porcelain", "--untracked-files=no")
    tokio = "?"
    try:
        with open("benches/contenders/Cargo.lock") as f:
            m = re.search(r'name = "tokio"\nversion = "([^"]+)"', f.read())
            tokio = m.group(1) if m else "?"
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "rustc": sh("rustc", "--version"),
        "python": sh("python3", "--version"),
        "tokio": tokio,
        "commit": commit + (" (with uncommitted changes)" if dirty and dirty != "?" else ""),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# --- criterion -------------------------------------------------------------------


def criterion(root="target/criterion"):
    """{group_id: {value_str: (ns_per_iter, throughput_elements)}}"""
    out = {}
    for path in glob.glob(os.path.join(root, "**", "new", "benchmark.json"), recursive=True):
        with open(path) as f:
            b = json.load(f)
        with open(os.path.join(os.path.dirname(path), "estimates.json")) as f:
            e = json.load(f)
        est = e.get("slope") or e["mean"]
        name = b.get("value_str") or b.get("function_id") or "?"
        out.setdefault(b["group_id"], {})[name] = est["point_estimate"]
    return out


def criterion_section(crit):
    if not crit:
        return ["_No criterion results in target/criterion: run `cargo bench --bench dispatch --bench echo`"
                " (or `benches/compare.sh --with-criterion`)._", ""]
    lines = []

    def fmt(ns):
        return "–" if ns is None else f"{ns / 1000:.1f} µs ({1e9 / ns:,.0f}/s)"

    dispatch = crit.get("dispatch")
    if dispatch:
        names = [n for n in ["threading", "pool_queue0", "pool", "event", "std_spawn"] if n in dispatch]
        names += sorted(n for n in dispatch if n not in names)
        lines += [
            "### Dispatch (`benches/dispatch.rs`)",
            "",
            "One connection per iteration through the public API: connect, read the handler's first byte,"
            " close (the TCP handshake is in every figure; the differences are the hand-off to the thread"
            " that runs the handler).",
            "",
            "| " + " | ".join(f"`{n}`" for n in names) + " |",
            "|" + "---:|" * len(names),
            "| " + " | ".join(fmt(dispatch.get(n)) for n in names) + " |",
            "",
        ]
    other = {g: v for g, v in crit.items() if g != "dispatch"}
    if other:
        strategies = ["sync", "threading", "pool", "event"]
        lines += [
            "### Echo through in-process servers (`benches/echo.rs`)",
            "",
            "| benchmark | ours: Sync | ours: Threading | ours: ThreadPool | ours: Event |",
            "|---|---:|---:|---:|---:|",
        ]
        for g in sorted(other):
            v = other[g]
            lines.append(f"| `{g}` | " + " | ".join(fmt(v.get(s)) for s in strategies) + " |")
        lines.append("")
    return lines


# --- SVG -------------------------------------------------------------------------


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Svg:
    def __init__(self, w, h):
        self.w, self.h, self.parts = w, h, []

    def add(self, s):
        self.parts.append(s)

    def text(self, x, y, s, size=12, anchor="start", weight="normal", color="#000", rotate=None):
        tr = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate else ""
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
                 f'font-weight="{weight}" fill="{color}"{tr}>{esc(s)}</text>')

    def line(self, x1, y1, x2, y2, color="#000", width=1, dash=None):
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{color}" '
                 f'stroke-width="{width}"{d}/>')

    def render(self):
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
                f'viewBox="0 0 {self.w} {self.h}" font-family="sans-serif">\n'
                f'<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(self.parts) + "\n</svg>\n")


def nice_max(v):
    if v <= 0:
        return 1
    mag = 10 ** len(str(int(v))) / 10
    for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * mag >= v:
            return m * mag
    return 10 * mag


def si(v):
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def line_panel(svg, x0, y0, w, h, title, servers, series, ylabel, log_y=False):
    """series: {server: [(x_index, y, label_x, warn)]}; x is categorical."""
    svg.text(x0 + w / 2, y0 - 10, title, 14, "middle", "bold")
    xs = sorted({p[0] for pts in series.values() for p in pts})
    xlabels = {p[0]: p[2] for pts in series.values() for p in pts}
    ys = [p[1] for pts in series.values() for p in pts if p[1] > 0]
    if not xs or not ys:
        return
    import math
    if log_y:
        lo = 10 ** math.floor(math.log10(min(ys)))
        hi = 10 ** math.ceil(math.log10(max(ys)))
        fy = lambda v: y0 + h - (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * h
        ticks = [lo * 10 ** i for i in range(int(round(math.log10(hi / lo))) + 1)]
    else:
        hi = nice_max(max(ys))
        fy = lambda v: y0 + h - v / hi * h
        ticks = [hi * i / 5 for i in range(6)]
    fx = lambda i: x0 + (xs.index(i) + 0.5) / len(xs) * w
    for t in ticks:
        svg.line(x0, fy(t), x0 + w, fy(t), "#ddd")
        svg.text(x0 - 6, fy(t) + 4, si(t) if not log_y else (f"{t / 1000:g} ms" if t >= 1000 else f"{t:g} µs"),
                 11, "end")
    svg.line(x0, y0, x0, y0 + h, "#333")
    svg.line(x0, y0 + h, x0 + w, y0 + h, "#333")
    for i in xs:
        svg.text(fx(i), y0 + h + 16, xlabels[i], 11, "middle")
    svg.text(x0 + w / 2, y0 + h + 34, "concurrent connections", 11, "middle")
    svg.text(x0 - 52, y0 + h / 2, ylabel, 11, "middle", rotate=-90)
    for s in servers:
        pts = sorted(series.get(s, []))
        if not pts:
            continue
        c = color(s)
        d = " ".join(f"{'M' if k == 0 else 'L'}{fx(p[0]):.1f},{fy(p[1]):.1f}" for k, p in enumerate(pts) if p[1] > 0)
        svg.add(f'<path d="{d}" fill="none" stroke="{c}" stroke-width="2"/>')
        for p in pts:
            if p[1] > 0 and p[3]:  # not every client served: hollow
                svg.add(f'<circle cx="{fx(p[0]):.1f}" cy="{fy(p[1]):.1f}" r="4.5" fill="white" stroke="{c}" '
                        'stroke-width="2"/>')
            elif p[1] > 0:
                svg.add(f'<circle cx="{fx(p[0]):.1f}" cy="{fy(p[1]):.1f}" r="3" fill="{c}"/>')


def bar_panel(svg, x0, y0, w, h, title, servers, values):
    """values: {server: (value, warn)}"""
    svg.text(x0 + w / 2, y0 - 10, title, 13, "middle", "bold")
    vals = [v for v, _ in values.values()]
    if not vals:
        return
    hi = nice_max(max(vals))
    for i in range(6):
        t = hi * i / 5
        y = y0 + h - t / hi * h
        svg.line(x0, y, x0 + w, y, "#ddd")
        svg.text(x0 - 5, y + 4, si(t), 10, "end")
    svg.line(x0, y0 + h, x0 + w, y0 + h, "#333")
    present = [s for s in servers if s in values]
    bw = w / max(len(present), 1)
    for k, s in enumerate(present):
        v, warn = values[s]
        bh = v / hi * h
        x = x0 + k * bw + bw * 0.15
        svg.add(f'<rect x="{x:.1f}" y="{y0 + h - bh:.1f}" width="{bw * 0.7:.1f}" height="{bh:.1f}" '
                f'fill="{color(s)}"/>')
        if warn:
            svg.text(x + bw * 0.35, y0 + h - bh - 4, "!", 12, "middle", "bold", "#c00")



def draw(rows, servers, modes, path, settings):
    bar_mode = modes[0] if modes else "unpinned"
    others = [(c, lbl) for c, lbl in CELLS if not (c[0] == "tcp-echo" and c[2] == 64)]
    bar_rows = (len(others) + 1) // 2
    height = 70 + 400 * max(len(modes), 1) + 230 * bar_rows + 60
    svg = Svg(1000, height)
    svg.text(500, 24, f"socketserver vs std, tokio and Python — requests/s and p99 latency (loopback,"
             f" {settings.get('cpus', os.cpu_count())} CPUs)", 15, "middle", "bold")
    echo = [(c, lbl) for c, lbl in CELLS if c[0] == "tcp-echo" and c[2] == 64]
    y = 70
    for mode in modes:
        thr, p99 = {}, {}
        for s in servers:
            for i, (c, _) in enumerate(echo):
                r = rows.get((mode, s, c))
                if r:
                    warn = not fully_served(r)
                    thr.setdefault(s, []).append((i, r["requests_per_sec"], str(c[1]), warn))
                    p99.setdefault(s, []).append((i, r["p99_us"], str(c[1]), warn))
        line_panel(svg, 90, y, 360, 300, f"TCP echo 64 B, {mode}: requests/s", servers, thr, "requests/s")
        line_panel(svg, 590, y, 360, 300, f"TCP echo 64 B, {mode}: p99 latency", servers, p99, "p99 (log scale)",
                   log_y=True)
        y += 400
    for k, (c, lbl) in enumerate(others):
        vals = {}
        for s in servers:
            r = rows.get((bar_mode, s, c))
            if r:
                vals[s] = (r["requests_per_sec"], not fully_served(r) or r.get("lost", 0) > 0)
        bar_panel(svg, 90 + (k % 2) * 500, y + (k // 2) * 230, 360, 160, f"{lbl} ({bar_mode}): requests/s",
                  servers, vals)
    # Legend.
    lx, ly = 90, height - 46
    for s in servers:
        if lx + 28 + 6.6 * len(name(s)) > 990:
            lx, ly = 90, ly + 18
        svg.add(f'<rect x="{lx}" y="{ly - 10}" width="14" height="10" fill="{color(s)}"/>')
        svg.text(lx + 18, ly, name(s), 12)
        lx += 28 + 6.6 * len(name(s))
    svg.text(990, height - 10, f"median of {settings.get('rounds', 1)} rounds of {settings['duration']} s per cell"
             f" after {settings['warmup']} s warm-up; ! or hollow point = some clients unserved, errors or lost"
             " datagrams", 10, "end", color="#555")
    with open(path, "w") as f:
        f.write(svg.render())


# --- markdown --------------------------------------------------------------------


def interference(rows):
    """A sentence on CPU used by other processes during the median rounds."""
    vals = [r["other_cpu_pct"] for r in rows.values() if r.get("other_cpu_pct") is not None]
    if not vals:
        return ""
    worst = max(vals)
    steal = max((r["steal_pct"] for r in rows.values() if r.get("steal_pct") is not None), default=0)
    return (f"other processes used at most {worst:.0f}% of a core during the rounds shown (median"
            f" {statistics.median(vals):.0f}%; hypervisor steal at most {steal:.0f}%; per cell in the last table).")


def metric_tables(L, rows, servers, modes, cell_value):
    for mode in modes:
        present = [s for s in servers if any(k[0] == mode and k[1] == s for k in rows)]
        if len(modes) > 1:
            L += [f"### {MODE_TITLES[mode][0].upper()}{MODE_TITLES[mode][1:]}", ""]
        L += ["| cell | " + " | ".join(name(s) for s in present) + " |", "|---|" + "---:|" * len(present)]
        for c, lbl in CELLS:
            L.append(f"| {lbl} | " + " | ".join(cell_value(rows.get((mode, s, c))) for s in present) + " |")
        L.append("")


def idle_section(L, idle, servers, settings):
    n = settings.get("idle", 0)
    skip = settings.get("idle_skip", [])
    L += ["## Idle connections", "",
          f"`socketserver bench tcp-idle -c {n} --parallel {settings.get('idle_parallel', 16)}`: {n:,} connections"
          f" opened at most {settings.get('idle_parallel', 16)} connects at a time (each given 5 s, the phase"
          f" {settings.get('idle_cap', 30)} s), held idle for {settings.get('idle_hold', 1)} s, then probed at once"
          " with one 64-byte round trip each. *Connect time*: wall clock from the first connect to the last one done"
          " (a SYN dropped because the listen queue was full is sent again after 1 s, then 2 s more). RSS (`VmRSS`)"
          " and threads from `/proc/PID/status` of a freshly started server (unpinned), before the first connect and"
          " while holding (the larger of the samples before and after the probe). Listen backlog: ours"
          f" `SOMAXCONN`, std and tokio `--backlog {settings.get('backlog', '?')}` (the same), Python 5.", "",
          "| server | connected | connect time | answered the probe | probe time (p99) | RSS before | RSS holding |"
          " per connection | threads before → holding | server CPU |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in servers:
        d = idle.get(s)
        if not d:
            if s in skip:
                L.append(f"| {name(s)} | not run with {n:,}: {IDLE_SKIP_WHY.get(s, 'left out (IDLE_SKIP)')} |"
                         " – | – | – | – | – | – | – | – |")
            continue
        label = name(s) + (f" (`{d['flags']}`)" if d.get("flags") else "")
        conn = f"{d['connected']:,} of {d['connections']:,}"
        if d.get("first_error"):
            conn += f" (first error: {d['first_error']})"
        ct = f"{d['connect_secs']:.2f} s"
        if d.get("listen_overflows"):
            ct += f" ({d['listen_overflows']:,} listen-queue overflows, machine-wide)"
        closed = f", {d['closed_before_probe']:,} closed by the server before" if d.get("closed_before_probe") else ""
        holding = max((v for v in (d.get("held_rss_kib"), d.get("rss_kib")) if v is not None), default=None)
        threads = max((v for v in (d.get("held_threads"), d.get("threads")) if v is not None), default=None)
        per = idle_per_conn(d)
        cpu = "–" if d.get("server_cpu_secs") is None else f"{d['server_cpu_secs']:.2f} s"
        L.append(f"| {label} | {conn} | {ct} | {d['answered']:,}{closed} |"
                 f" {d['probe_secs']:.2f} s ({d['probe_p99_ms']:,.0f} ms) | {fmt_kib(d.get('base_rss_kib'))} |"
                 f" {fmt_kib(holding)} | {'–' if per is None else f'{per:.1f} KiB'} |"
                 f" {d.get('base_threads', '–')} → {'–' if threads is None else f'{threads:,}'} |"
                 f" {cpu} |")
    L.append("")


def sigint_section(L, sigint, servers, settings):
    sig0 = [d for d in sigint if d["idle"] == 0]
    sigN = [d for d in sigint if d["idle"] != 0]
    L += ["## SIGINT → exit", "",
          f"Time from `kill -INT` to the process's exit (a pidfd becoming readable), capped at {settings['sigint_cap']} s."
          f" *Nothing in flight*: a fresh server that has served 4 connections, all closed ({settings['sigint_runs']}"
          f" runs). *Idle*: a fresh server holding {settings['idle_sigint']} idle connections (ours close a connection"
          " that is idle between requests after the drain window, 0.1 s; only requests under way get the grace"
          " period). Servers run unpinned, started with SIGINT at its default action (`env --default-signal=INT`:"
          " a signal ignored at exec stays ignored).", "",
          "| server | nothing in flight: median | max | with idle connections |", "|---|---:|---:|---:|"]
    for s in servers:
        runs = [d["result"]["exit_ms"] for d in sig0 if d["server"] == s]
        idl = [d for d in sigN if d["server"] == s]
        if not runs and not idl:
            continue
        if runs and all(v is not None for v in runs):
            med, mx = f"{statistics.median(runs):.1f} ms", f"{max(runs):.1f} ms"
        elif runs:
            n = sum(v is None for v in runs)
            med, mx = f"did not exit ({n}/{len(runs)} runs)", "–"
        else:
            med, mx = "–", "–"
        if idl:
            d = idl[0]
            v = d["result"]["exit_ms"]
            it = ("did not exit" if v is None else f"{v / 1000:.2f} s" if v >= 1000 else f"{v:.1f} ms")
            it += f" ({d['held']} held, {d['served']} served)" if d["served"] != d["held"] else ""
        else:
            it = "–"
        L.append(f"| {name(s)} | {med} | {mx} | {it} |")
    L.append("")
    return sig0


def markdown(rows, idle, sigint, settings, servers, modes, meta, command, crit, notes, svg_name):
    L = []
    cpus = settings.get("cpus") or meta["cpus"]
    L += [
        "# Benchmarks",
        "",
        "Generated by `benches/compare.sh` (tables and plot; regenerate rather than edit — only the section"
        " *What the figures mean* is hand-written and kept across runs; each figure there names its command)."
        f" One run on a shared {cpus}-CPU machine: absolute numbers drift from run to run, ratios less so. Earlier"
        " runs, per-issue targets and profiles are in git: `git show 4144281:BENCHMARKS.md`.",
        "",
        f"![requests/s and p99 per contender]({svg_name})",
        "",
        "## Setup",
        "",
        f"* Command: `{command}` (cells: `socketserver bench --duration {settings['duration']} --warmup"
        f" {settings['warmup']} --json --server-pid PID`, {settings.get('rounds', 1)} rounds, the contenders taking"
        " turns in each; tables show the median round, and a cell counts as fully served only if every round"
        " served every client)",
        f"* Modes: {'; '.join(MODE_TITLES[m] for m in modes) or 'none'}. Pinned: `taskset -c 0` for the server,"
        " `taskset -c 1 socketserver bench --threads 1` for the load; servers size their threads by the CPUs they may"
        " run on, so a pinned Event or tokio runs one poller / worker.",
        f"* Commit: `{settings.get('commit', meta['commit'])}` (built at the start of the run); report written"
        f" {meta['date']}",
        f"* Machine: {meta['cpus']} CPUs ({meta['cpu']}), {meta['memory']} RAM, Linux {meta['kernel']}; load average"
        f" {settings.get('loadavg_before', '?')} before, {settings.get('loadavg_after', '?')} after",
        f"* {meta['rustc']}; {meta['python']}; tokio {meta['tokio']}",
        f"* Shared machine: {interference(rows) or 'CPU use of other processes was not recorded.'}",
        "* Load generator: `target/release/socketserver bench` on the same machine (unpinned, it shares the CPUs"
        " with the server; its own CPU use is in the detail table). Clients: closed loops, one request in flight"
        " each.",
        "",
        "Contenders, each serving TCP and UDP echo on 127.0.0.1 with port 0:",
        "",
        "| name | what runs |",
        "|---|---|",
        "| ours: Sync / Threading / ThreadPool / Event | `target/release/socketserver echo --strategy"
        " sync\\|threading\\|pool\\|event --tcp 127.0.0.1:0 --udp 127.0.0.1:0` (defaults: pool of CPUs ≥ 2 workers"
        " growing to 4,096, queue 1,024; Event: a polling thread per CPU, connections parked in epoll between"
        " requests, datagrams as the pool; grace 5 s; `TCP_NODELAY` on; listen backlog `SOMAXCONN`) |",
        f"| std thread/conn | `benches/contenders` `std_echo --backlog {settings.get('backlog', '?')}`:"
        " `TcpListener::incoming`, `thread::spawn` per connection (std's default stack), 16 KiB buffer; UDP: one"
        " blocking `recv_from` loop per CPU; no signal handling |",
        f"| tokio | `benches/contenders` `tokio_echo --backlog {settings.get('backlog', '?')}`: tokio {meta['tokio']}"
        " multi-thread runtime (a worker per CPU), a task per connection with a 16 KiB buffer; UDP: a task per worker"
        " on one shared socket; Ctrl-C drops the runtime |",
        "| tokio current-thread | the same with `--current-thread`: one thread runs every task |",
        "| Python socketserver | `benches/contenders/python_echo.py`: stock `ThreadingTCPServer` /"
        " `ThreadingUDPServer` (backlog 5, a thread per connection / datagram, non-daemon threads) |",
        "",
    ]
    L += ["## Requests per second", ""]
    metric_tables(L, rows, servers, modes,
                  lambda r: "–" if r is None else fmt_int(r["requests_per_sec"]) + served_note(r))
    L += ["## p99 latency", ""]
    metric_tables(L, rows, servers, modes, lambda r: "–" if r is None else fmt_us(r["p99_us"]))
    L += ["## Server CPU per request", "",
          "Server CPU time (user + system, from `/proc/PID/stat`) divided by requests, in µs: what a request costs the"
          " server, independent of whether the load generator was the bottleneck.", ""]
    metric_tables(L, rows, servers, modes,
                  lambda r: "–" if cpu_per_request(r) is None else f"{cpu_per_request(r):.1f}")
    if idle or (settings.get("idle_skip") and not settings.get("load_only")):
        idle_section(L, idle, servers, settings)
    sig0 = sigint_section(L, sigint, servers, settings) if sigint else []
    L += ["## Criterion micro-benchmarks", ""]
    L += criterion_section(crit)
    L += ["## What the figures mean, and figures from other scripts", "", "<!-- notes:start -->",
          notes.strip() if notes.strip() else "_None yet._", "<!-- notes:end -->", ""]
    L += ["## All cells", "", "<details><summary>req/s (median round, and every round), p50/p99/p99.9 of the median"
          " round, errors, lost and unserved (worst round), generator and server CPU (100% = one core)</summary>", "",
          "| mode | cell | server | req/s | all rounds | p50 | p99 | p99.9 | errors | lost | unserved | gen CPU |"
          " server CPU | other CPU | steal |",
          "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for mode in modes:
        for c, lbl in CELLS:
            for s in servers:
                r = rows.get((mode, s, c))
                if not r:
                    continue
                srv = "–" if r["server_cpu_pct"] is None else f"{r['server_cpu_pct']:.0f}%"
                spread = " / ".join(fmt_int(v) for v in r["rps_all"])
                L.append(f"| {mode} | {lbl} | {name(s)} | {fmt_int(r['requests_per_sec'])} | {spread} |"
                         f" {fmt_us(r['p50_us'])} | {fmt_us(r['p99_us'])} | {fmt_us(r['p999_us'])} | {r['errors']} |"
                         f" {r['lost']} | {r['unserved']} | {r['generator_cpu_pct']:.0f}% | {srv} |"
                         f" {pct(r.get('other_cpu_pct'))} | {pct(r.get('steal_pct'))} |")
    L += ["", "</details>", ""]
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--markdown", required=True)
    ap.add_argument("--svg", required=True)
    ap.add_argument("--criterion", default="target/criterion")
    a = ap.parse_args()
    rows, idle, sigint, settings, servers, modes = load(a.results)
    notes = ""
    if os.path.exists(a.markdown):
        with open(a.markdown) as f:
            m = re.search(r"<!-- notes:start -->\n(.*?)<!-- notes:end -->", f.read(), re.S)
            if m:
                notes = "" if m.group(1).strip() == "_None yet._" else m.group(1)
    draw(rows, servers, modes, a.svg, settings)
    md = markdown(rows, idle, sigint, settings, servers, modes, machine(), a.command, criterion(a.criterion), notes,
                  os.path.relpath(a.svg, os.path.dirname(os.path.abspath(a.markdown))))
    with open(a.markdown, "w") as f:
        f.write(md)


if __name__ == "__main__":
    sys.exit(main())
