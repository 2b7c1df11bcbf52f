"""The COMMAND the consumer fault suite gives ``swiftdrop queue run``: it keeps the books.

``python consumer.py LEDGER [--sleep-range A B | --kill-worker]``

Reads the message on stdin, appends one JSON line (name, SWIFTDROP_DELIVERY,
SWIFTDROP_REDELIVERED, the worker's pid, the time, the bytes' sha256) to
LEDGER with O_APPEND and fsync *before* anything else, so that a hand-over
the command could have acted on is on the books even if what follows kills
it, and then, for a message the rig marked (its X-Consumer-Fault header) on
its first hand-over, sleeps (past the lease) or SIGKILLs its worker
(``queue run``, its parent) mid-command, as its fault asks. Exits 0.

Run as a script by path, not as a module: it starts once per hand-over,
and importing nothing of the test suite keeps it quick.
"""

import argparse
import hashlib
import json
import os
import random
import re
import signal
import sys
import time


def record(path, line):
    """Append `line` and make it durable: the ledger must outlive any crash after it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one write of < PIPE_BUF: never interleaved
        os.fsync(fd)
    finally:
        os.close(fd)


MARKED = re.compile(rb"^X-Consumer-Fault: yes\r$", re.M)  # rig.FAULT_HEADER


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("ledger")
    parser.add_argument("--sleep-range", type=float, nargs=2)
    parser.add_argument("--kill-worker", action="store_true")
    args = parser.parse_args(argv)
    body = sys.stdin.buffer.read()
    worker = os.getppid()
    header = body.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    faulted = os.environ.get("SWIFTDROP_DELIVERY") == "1" and MARKED.search(header)
    kill = bool(faulted and args.kill_worker)
    sleep = random.uniform(*args.sleep_range) if faulted and args.sleep_range else 0
    record(args.ledger, json.dumps({
        "name": os.environ["SWIFTDROP_NAME"],
        "delivery": int(os.environ.get("SWIFTDROP_DELIVERY", "0")),
        "redelivered": os.environ.get("SWIFTDROP_REDELIVERED", ""),
        "worker": worker, "time": time.time(),
        "digest": hashlib.sha256(body).hexdigest(),
        "fault": "kill" if kill else f"sleep {sleep:.1f}" if sleep else ""}) + "\n")
    if kill:
        os.kill(worker, signal.SIGKILL)
    time.sleep(sleep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
