#!/usr/bin/env python3
"""Sends SIGINT to PID and reports how long the process takes to exit.

    python3 sigexit.py PID [CAP_SECS]

Prints one JSON object: {"exit_ms": 1.23} or {"exit_ms": null} when the
process is still alive after CAP_SECS (default 10). Uses a pidfd, so the
process need not be our child and the wait is not a polling loop.
"""
import json
import os
import select
import signal
import sys
import time

pid = int(sys.argv[1])
cap = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
fd = os.pidfd_open(pid)
poller = select.poll()
poller.register(fd, select.POLLIN)
start = time.perf_counter()
os.kill(pid, signal.SIGINT)
ready = poller.poll(cap * 1000)
elapsed = time.perf_counter() - start
print(json.dumps({"exit_ms": round(elapsed * 1000, 3) if ready else None}))
