#!/usr/bin/env python3
"""Clients for the event-strategy lab scripts (benches/slowloris.sh).
Standard library only (Python 3.9+, Linux). Loopback use only.

    clients.py attack --addr HOST:PORT --n N --kind KIND [--ramp-cap S]
                      [--max-time S] [--ready FILE] [--parallel K]
    clients.py honest --addr HOST:PORT --kind KIND [--duration S]
                      [--interval S] [--timeout S] [--reuse]

attack: N hostile connections from one process (one epoll loop), each
reconnected when the server closes it, until --max-time or SIGTERM/SIGINT;
then one JSON line on stdout. Kinds:
  slowloris  one byte a second, never a newline (the time server's request
             line never ends)
  proxy      "PROXY TCP4 " then one more header byte a second, never the
             CRLF (the PROXY v1 header never ends)
  writer     sends (64 KiB at a time, again every 200 ms) and never reads,
             a 4 KiB receive buffer: an echo server's write back blocks
             once the buffers are full (on loopback, with autotuned
             buffers, after about 4 MB); at most --writer-cap bytes each
When every connection is up (a writer: has stalled for a second or sent
its cap), or --ramp-cap passed, it writes "open=K wanted=N" to --ready.

honest: a request/answer round trip every --interval for --duration, each
bounded by --timeout from connect to answer. By default an open loop of
fresh connections: request i starts at i * interval whether or not the
earlier ones are done (a stall cannot hide by fewer requests being sent).
--reuse: a closed loop on one connection (made again after a failure).
Kinds: time (a strftime line), echo (a line back), proxy (a PROXY v1
header, then the time request). Prints one JSON line.
"""
import argparse
import collections
import errno
import json
import os
import resource
import selectors
import signal
import socket
import sys
import time


def parse_addr(s):
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- attack -----------------------------------------------------------------

PROXY_PREFIX = b"PROXY TCP4 "
PROXY_DRIBBLE = b"127.0.0.1 127.0.0.1 5555 9000 "  # cycled, never a CRLF
WRITER_CHUNK = b"w" * 65536


class Attack:
    def __init__(self, args):
        self.args = args
        self.addr = parse_addr(args.addr)
        self.sel = selectors.DefaultSelector()
        self.conns = {}  # fd -> dict(sock, state, sent, step)
        self.pending = 0  # connects in flight
        self.to_open = args.n  # connections still to start
        self.due = collections.deque()  # (time, fd, generation) sends due, FIFO
        self.gen = 0
        self.stats = collections.Counter()
        self.open_peak = 0
        self.n_open = 0
        self.stalled = []  # writer: bytes sent when each stopped making progress
        self.stop = False
        self.ready_written = False
        self.started = time.monotonic()

    def start_connect(self):
        s = socket.socket(socket.AF_INET6 if ":" in self.addr[0] else socket.AF_INET, socket.SOCK_STREAM)
        if self.args.kind == "writer":
            # Small buffers on our side: the server's writes block soon, and
            # the kernel holds little on our behalf.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        s.setblocking(False)
        err = s.connect_ex(self.addr)
        if err not in (0, errno.EINPROGRESS):
            self.stats["connect_errors"] += 1
            s.close()
            return False
        self.gen += 1
        t0 = time.monotonic()
        c = {"sock": s, "state": "connecting", "sent": 0, "step": 0, "gen": self.gen, "t0": t0, "progress_at": t0}
        self.conns[s.fileno()] = c
        self.sel.register(s, selectors.EVENT_WRITE, c)
        self.pending += 1
        return True

    def drop(self, c, why):
        s = c["sock"]
        fd = s.fileno()
        if c["state"] == "connecting":
            self.pending -= 1
        elif c["state"] == "open":
            self.n_open -= 1
        try:
            self.sel.unregister(s)
        except (KeyError, ValueError):
            pass
        self.conns.pop(fd, None)
        s.close()
        self.stats[why] += 1
        if not self.stop:
            self.to_open += 1  # reconnect
            self.stats["reconnects"] += 1

    def send_step(self, c, now):
        s = c["sock"]
        kind = self.args.kind
        try:
            if kind == "slowloris":
                s.send(b"x")
                c["sent"] += 1
            elif kind == "proxy":
                if c["step"] == 0:
                    s.send(PROXY_PREFIX)
                    c["sent"] += len(PROXY_PREFIX)
                else:
                    i = (c["step"] - 1) % len(PROXY_DRIBBLE)
                    s.send(PROXY_DRIBBLE[i : i + 1])
                    c["sent"] += 1
            else:  # writer
                before = c["sent"]
                try:
                    while c["sent"] < self.args.writer_cap:
                        n = s.send(WRITER_CHUNK[: min(len(WRITER_CHUNK), self.args.writer_cap - c["sent"])])
                        c["sent"] += n
                finally:
                    if c["sent"] > before:
                        c["progress_at"] = now
                    elif "stalled_at" not in c and c["sent"] < self.args.writer_cap and now - c["progress_at"] >= 1.0:
                        # Nothing taken for a second: the server has
                        # stopped reading (its write back is blocked).
                        c["stalled_at"] = c["sent"]
                        self.stalled.append(c["sent"])
        except BlockingIOError:
            pass
        except OSError:
            self.drop(c, "closed_by_server")
            return
        c["step"] += 1
        period = 0.2 if kind == "writer" else 1.0
        self.due.append((now + period, s.fileno(), c["gen"]))

    def on_connected(self, c, now):
        s = c["sock"]
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.drop(c, "connect_errors")
            return
        self.pending -= 1
        c["state"] = "open"
        self.n_open += 1
        self.open_peak = max(self.open_peak, self.n_open)
        self.stats["connected"] += 1
        if self.args.kind == "writer":
            # Never read: only sends tell us it was closed.
            self.sel.unregister(s)
        else:
            # Watch for the server closing it (its `error:` line, then EOF).
            self.sel.modify(s, selectors.EVENT_READ, c)
        self.send_step(c, now)

    def on_readable(self, c):
        try:
            data = c["sock"].recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self.drop(c, "closed_by_server")
            return
        if not data:
            self.drop(c, "closed_by_server")
        else:
            self.stats["bytes_from_server"] += len(data)

    def run(self):
        a = self.args
        deadline = self.started + a.max_time
        ramp_deadline = self.started + a.ramp_cap
        last_sweep = self.started
        while not self.stop:
            now = time.monotonic()
            if now >= deadline:
                break
            while self.to_open > 0 and self.pending < a.parallel:
                self.to_open -= 1
                if not self.start_connect():
                    self.to_open += 1
                    break
            while self.due and self.due[0][0] <= now:
                _, fd, gen = self.due.popleft()
                c = self.conns.get(fd)
                if c is not None and c["gen"] == gen and c["state"] == "open":
                    self.send_step(c, now)
            all_up = self.to_open == 0 and self.pending == 0 and self.stats["connected"] >= a.n
            if all_up and a.kind == "writer":
                # Up means every writer has filled the buffers (or sent its cap).
                all_up = all("stalled_at" in c or c["sent"] >= a.writer_cap for c in self.conns.values())
            if not self.ready_written and (all_up or now >= ramp_deadline):
                self.ready_written = True
                if a.ready:
                    with open(a.ready + ".tmp", "w") as f:
                        f.write(f"open={self.n_open} wanted={a.n} ramp_s={now - self.started:.1f}\n")
                    os.replace(a.ready + ".tmp", a.ready)
            timeout = 0.05
            if self.due:
                timeout = max(0.0, min(timeout, self.due[0][0] - now))
            for key, mask in self.sel.select(timeout):
                c = key.data
                if c["sock"].fileno() not in self.conns:
                    continue
                if c["state"] == "connecting":
                    if mask & selectors.EVENT_WRITE:
                        self.on_connected(c, time.monotonic())
                elif mask & selectors.EVENT_READ:
                    self.on_readable(c)
            # A connect the server's full backlog never answers: give up on
            # it after 10 s and try again (counted).
            if self.pending and now - last_sweep >= 1.0:
                last_sweep = now
                for c in list(self.conns.values()):
                    if c["state"] == "connecting" and now - c["t0"] > 10:
                        self.drop(c, "connect_timeouts")
        open_now = self.n_open
        out = {
            "kind": a.kind,
            "wanted": a.n,
            "open_at_end": open_now,
            "open_peak": max(self.open_peak, open_now),
            "connecting_at_end": self.pending,
            "connected_total": self.stats["connected"],
            "closed_by_server": self.stats["closed_by_server"],
            "reconnects": self.stats["reconnects"],
            "connect_errors": self.stats["connect_errors"],
            "connect_timeouts": self.stats["connect_timeouts"],
            "bytes_sent": sum(c["sent"] for c in self.conns.values()),
            "writers_stalled": len(self.stalled),
            "writers_at_cap": sum(1 for c in self.conns.values() if c["sent"] >= a.writer_cap),
            "writer_mb_when_stalled_median": (
                round(sorted(self.stalled)[len(self.stalled) // 2] / 2**20, 2) if self.stalled else None
            ),
            "writer_mb_when_stalled_max": round(max(self.stalled) / 2**20, 2) if self.stalled else None,
            "bytes_from_server": self.stats["bytes_from_server"],
            "seconds": round(time.monotonic() - self.started, 1),
        }
        print(json.dumps(out), flush=True)
        for c in list(self.conns.values()):
            c["sock"].close()


def attack(args):
    limit = raise_nofile()
    if limit < args.n + 64:
        sys.exit(f"clients.py: RLIMIT_NOFILE {limit} is too low for {args.n} connections")
    at = Attack(args)

    def stop(_sig, _frame):
        at.stop = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    at.run()


# --- honest -----------------------------------------------------------------


def request_bytes(kind):
    if kind == "time":
        return b"%Y-%m-%d %H:%M:%S\n"
    if kind == "echo":
        return b"honest ping\n"
    if kind == "proxy":
        return b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 9000\r\n%Y-%m-%d %H:%M:%S\n"
    raise ValueError(kind)


def read_line(sock, deadline):
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("read")
        sock.settimeout(left)
        data = sock.recv(4096)
        if not data:
            raise ConnectionError("closed before the answer")
        buf += data
    return buf


def one_round_trip(addr, req, kind, timeout, sock=None):
    """One request: (latency_s, None, sock) or (None, failure_kind, None)
    plus a description. With `sock`, that connection is used (and returned
    for the next one unless it failed)."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    stage = "connect"
    try:
        if sock is None:
            sock = socket.create_connection(addr, timeout=timeout)
        stage = "answer"
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        sock.sendall(req)
        line = read_line(sock, deadline)
        if kind in ("time", "proxy") and line.startswith(b"error"):
            raise ConnectionError("error reply: " + line.decode(errors="replace").strip())
        return time.monotonic() - t0, None, sock, None
    except (socket.timeout, TimeoutError) as e:
        fail, what = f"{stage}_timeout", str(e)
    except OSError as e:
        fail, what = f"{stage}_error", repr(e)
    if sock is not None:
        sock.close()
    return None, fail, None, what


def honest(args):
    """Open loop (fresh connections): request i starts at start + i *
    interval whether or not the earlier ones are done (up to 256 in
    flight), so a stall is not hidden by fewer requests being sent.
    --reuse: closed loop on one connection, the next request at its due
    time or at once when late; the run ends at --duration either way (the
    last request may take up to --timeout more)."""
    import concurrent.futures as cf
    import threading

    addr = parse_addr(args.addr)
    req = request_bytes(args.kind)
    lat = []
    fails = collections.Counter()
    sample_error = {}
    lock = threading.Lock()

    def record(result):
        latency, fail, _sock, what = result
        with lock:
            if fail is None:
                lat.append(latency)
            else:
                fails[fail] += 1
                sample_error.setdefault(fail, what)

    start = time.monotonic()
    cpu0 = os.times()
    end = start + args.duration
    i = 0
    if args.reuse:
        sock = None
        while True:
            due = start + i * args.interval
            now = time.monotonic()
            if due >= end or now >= end:
                break
            if due > now:
                time.sleep(due - now)
            i += 1
            result = one_round_trip(addr, req, args.kind, args.timeout, sock)
            sock = result[2]
            record(result)
        if sock is not None:
            sock.close()
    else:
        def fresh():
            result = one_round_trip(addr, req, args.kind, args.timeout)
            if result[2] is not None:
                result[2].close()
            record(result)

        with cf.ThreadPoolExecutor(max_workers=256) as pool:
            while True:
                due = start + i * args.interval
                if due >= end:
                    break
                now = time.monotonic()
                if due > now:
                    time.sleep(due - now)
                i += 1
                pool.submit(fresh)
    lat.sort()

    def q(p):
        if not lat:
            return None
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2)

    out = {
        "kind": args.kind,
        "mode": "closed loop, one connection" if args.reuse else "open loop, fresh connections",
        "requests": i,
        "ok": len(lat),
        "failed": sum(fails.values()),
        "failures": dict(fails),
        "sample_errors": sample_error,
        "p50_ms": q(0.50),
        "p99_ms": q(0.99),
        "max_ms": round(lat[-1] * 1000, 2) if lat else None,
        "timeout_s": args.timeout,
        "seconds": round(time.monotonic() - start, 1),
    }
    cpu1 = os.times()
    out["cpu_pct"] = round(100 * (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / max(0.001, time.monotonic() - start), 1)
    print(json.dumps(out), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("attack")
    a.add_argument("--addr", required=True)
    a.add_argument("--n", type=int, required=True)
    a.add_argument("--kind", choices=["slowloris", "proxy", "writer"], required=True)
    a.add_argument("--ramp-cap", type=float, default=30.0, help="seconds to wait for all N before --ready anyway")
    a.add_argument("--max-time", type=float, default=120.0, help="the attack stops after this many seconds")
    a.add_argument("--parallel", type=int, default=256, help="connects in flight at once")
    a.add_argument("--writer-cap", type=int, default=5 << 20, help="writer: most bytes sent per connection")
    a.add_argument("--ready", help="file written once the connections are up")
    h = sub.add_parser("honest")
    h.add_argument("--addr", required=True)
    h.add_argument("--kind", choices=["time", "echo", "proxy"], required=True)
    h.add_argument("--duration", type=float, default=20.0)
    h.add_argument("--interval", type=float, default=0.05)
    h.add_argument("--timeout", type=float, default=1.0)
    h.add_argument("--reuse", action="store_true", help="keep one connection (remade after a failure)")
    args = p.parse_args()
    if args.cmd == "attack":
        attack(args)
    else:
        honest(args)


if __name__ == "__main__":
    main()
