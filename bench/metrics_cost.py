"""Benchmark: what --metrics-listen costs per message.

    .venv/bin/python -m bench.metrics_cost [--messages N] [--rounds N] [--sessions N]

Starts a real Swift and two filters on it, one with --metrics-listen (scraped
every second, far more often than a Prometheus would) and one without, and
sends the same 5 KB messages straight to each (smtplib, no Postfix), in
alternating rounds so that a machine busy with other work slows both alike.
Prints per filter: msg/s, and the filter's CPU time per message (from
/proc/PID/stat), which a loaded machine disturbs less than wall time.
The counters themselves always run; what differs between the two filters
is the metrics server and its scrapes, so the counting a message costs is
timed apart, in this process. Figures, not assertions.
"""

import argparse
import concurrent.futures
import os
import pathlib
import smtplib
import tempfile
import threading
import time
import timeit
import urllib.request

from bench.filter_throughput import write_ini
from swiftdrop import metrics
from tests.support.filterproc import FilterProcess
from tests.support.ports import reserve_port
from tests.support.swiftserver import SwiftServer

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
BODY = b"Subject: metrics cost\r\n\r\n" + (b"x" * 76 + b"\r\n") * 64  # about 5 KB


def cpu_seconds(pid):
    """User plus system CPU time of the process so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def send_all(address, messages, sessions):
    def session(count):
        with smtplib.SMTP(*address, timeout=60) as client:
            for _ in range(count):
                client.sendmail("bench@origin.test", ["bench@example.com"], BODY)

    shares = [messages // sessions + (index < messages % sessions) for index in range(sessions)]
    with concurrent.futures.ThreadPoolExecutor(sessions) as pool:
        list(pool.map(session, shares))


def scrape_every_second(url, stop):
    while not stop.wait(1.0):
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()


def count_one_message():
    """What the filter counts for one stored message with one copy."""
    metrics.SPOOL_BYTES.inc(len(BODY))
    metrics.SWIFT_REQUESTS.labels("PUT", "201").inc()
    metrics.COPIES.labels("DEFAULT", "stored").inc()
    metrics.SPOOL_BYTES.dec(len(BODY))
    metrics.STORE_DURATION.observe(0.03)
    metrics.MESSAGE_SIZE.observe(len(BODY))
    metrics.message_replied("250 2.0.0 Ok")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500, help="per round and filter")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--sessions", type=int, default=4)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="swiftdrop-bench-") as scratch:
        workdir = pathlib.Path(scratch)
        with SwiftServer(workdir / "swift") as swift:
            ini = write_ini(workdir / "swiftdrop.ini", swift)
            metrics_port = reserve_port()
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            plain = FilterProcess(ini, workdir, "--log-target", "stderr").start()
            measured = FilterProcess(ini, workdir, "--log-target", "stderr",
                                     "--metrics-listen", f"127.0.0.1:{metrics_port}").start()
            stop = threading.Event()
            scraper = threading.Thread(target=scrape_every_second, args=(url, stop), daemon=True)
            scraper.start()
            totals = {"without": [0.0, 0.0], "with": [0.0, 0.0]}  # wall s, CPU s
            try:
                for _ in range(options.rounds):
                    for label, proxy in (("without", plain), ("with", measured)):
                        cpu_before = cpu_seconds(proxy.process.pid)
                        started = time.monotonic()
                        send_all(proxy.address, options.messages, options.sessions)
                        totals[label][0] += time.monotonic() - started
                        totals[label][1] += cpu_seconds(proxy.process.pid) - cpu_before
            finally:
                stop.set()
                plain.stop()
                measured.stop()
            count = options.messages * options.rounds
            print(f"{count} messages of {len(BODY)} bytes per filter, {options.sessions} "
                  f"sessions, {options.rounds} alternating rounds")
            print(f"{'--metrics-listen':>17} {'msg/s':>8} {'CPU ms/msg':>11}")
            for label, (wall, cpu) in totals.items():
                print(f"{label:>17} {count / wall:>8.1f} {cpu * 1000 / count:>11.3f}")
            extra = (totals["with"][1] - totals["without"][1]) * 1e6 / count
            print(f"metrics server and scrapes (one per second): {extra:+.0f} µs CPU "
                  "per message")
    repeat = 100_000
    counting = timeit.timeit(count_one_message, number=repeat) / repeat
    print(f"counting one message (in-process): {counting * 1e6:.1f} µs")


if __name__ == "__main__":
    main()
