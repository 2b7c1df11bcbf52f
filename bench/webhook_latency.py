"""Benchmark: from the filter's 250 to the receiver's POST, and the Swift requests it costs.

    .venv/bin/python -m bench.webhook_latency [--messages 40] [--gap 4.0]

Starts a real Swift, the filter (``swiftdrop serve``, as
bench/filter_throughput.py starts it), one ``swiftdrop queue run`` webhook
worker with the DEFAULT poll interval and concurrency, and an HTTPS
receiver on loopback (tests/support/webhook_receiver.py, answering 2xx
always) that the worker trusts through ``webhook_cacert``. Sends
`--messages` messages over SMTP straight to the filter, one at a time at
random gaps (mean `--gap` s, so that the sends fall anywhere in the
worker's poll cycle; a gap shorter than the worker's time per message
measures its queue instead of its latency), and prints:

- the seconds from the filter's 250 (when smtplib's sendmail returns) to
  the POST arriving at the receiver: p50, p90, p99 and the largest;
- Swift requests per message, by method, of the filter and of the worker,
  each counted at a relaying proxy of its own in front of Swift
  (tests/consumer_faults/proxy.py), so every request counts, retries and
  listing pages included; the worker's idle polling per minute beside it.

Figures, not assertions.
"""

import argparse
import collections
import pathlib
import random
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time

from bench.filter_throughput import load_average, write_ini
from tests.consumer_faults.proxy import ConsumerProxy
from tests.support.filterproc import FilterProcess, swiftdrop_command
from tests.support.swiftserver import SwiftServer
from tests.support.webhook_receiver import FaultyReceiver, Policy
from tests.webhook_faults.books import read_posts
from tests.webhook_faults.rig import certificates

CONTAINER = "bench-webhook"
SECRET = "bench-webhook-secret"
RECIPIENT = "bench@example.com"
IDLE_SECONDS = 30  # the worker's polling with nothing to do, counted before the run
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def message(number):
    return (f"From: <bench@origin.test>\r\nTo: <{RECIPIENT}>\r\nSubject: latency {number}\r\n"
            f"Message-ID: <{number}.latency@bench.test>\r\n\r\n"
            + "A line of text for the body.\r\n" * 40).encode()


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up waiting for {what} after {timeout} s")
        time.sleep(0.1)


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def per_message(counter, messages):
    total = sum(counter.values()) / messages
    methods = ", ".join(f"{method} {count / messages:.1f}"
                        for method, count in sorted(counter.items()))
    return f"{total:.1f} ({methods})"


def main():
    parser = argparse.ArgumentParser(prog="python -m bench.webhook_latency",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=40)
    parser.add_argument("--gap", type=float, default=4.0,
                        help="mean seconds between two sends (default 4)")
    args = parser.parse_args()
    rng = random.Random(1)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="swiftdrop-bench-webhook-"))
    cacert, tls, wrong_tls = certificates(workdir)
    ledger = workdir / "receiver.jsonl"
    ledger.touch()
    with SwiftServer(workdir / "swift") as swift, \
            ConsumerProxy(swift.port) as filter_swift, ConsumerProxy(swift.port) as worker_swift, \
            FaultyReceiver(SECRET, ledger, Policy(0, 30, faulty_posts=0), tls, wrong_tls) \
            as receiver:
        filter_ini = write_ini(workdir / "filter.ini", swift, container=CONTAINER,
                               auth_url=filter_swift.auth_url)
        worker_ini = write_ini(workdir / "worker.ini", swift, container=CONTAINER,
                               auth_url=worker_swift.auth_url, webhook_url=receiver.url,
                               webhook_secret=SECRET, webhook_cacert=cacert)
        with FilterProcess(filter_ini, workdir, "--log-target", "stderr") as filter_process, \
                open(workdir / "worker.log", "ab") as worker_log:
            worker = subprocess.Popen(swiftdrop_command("queue", "--config", str(worker_ini),
                                                        "run"),
                                      stdout=worker_log, stderr=worker_log, cwd=REPO_ROOT)
            try:
                wait_for(lambda: worker_swift.requests["GET"], 120, "the worker's first poll")
                worker_swift.requests.clear()
                time.sleep(IDLE_SECONDS)
                idle = sum(worker_swift.requests.values()) * 60 / IDLE_SECONDS
                filter_swift.requests.clear()
                worker_swift.requests.clear()
                sent, loads = {}, [load_average()]
                with smtplib.SMTP(*filter_process.address, timeout=120) as client:
                    for number in range(1, args.messages + 1):
                        time.sleep(rng.uniform(0, 2 * args.gap))
                        client.sendmail("bench@origin.test", [RECIPIENT], message(number))
                        sent[number] = time.time()  # the 250 to the end of DATA is in
                wait_for(lambda: {post.number for post in read_posts(ledger)} >= set(sent),
                         300 + 10 * args.messages, "every message's POST")
                loads.append(load_average())
                filter_requests = collections.Counter(filter_swift.requests)
                worker_requests = collections.Counter(worker_swift.requests)
            finally:
                worker.terminate()
                worker.wait(60)
    first = {}
    for post in read_posts(ledger):
        first.setdefault(post.number, post.time)
    latencies = [first[number] - sent[number] for number in sent]
    print(f"{args.messages} messages, one worker (default --poll 5, --concurrency 1), "
          f"mean gap {args.gap:g} s, load average {min(loads):.1f}-{max(loads):.1f}")
    print("seconds from the filter's 250 to the receiver's POST: "
          f"p50 {percentile(latencies, 0.5):.2f}, p90 {percentile(latencies, 0.9):.2f}, "
          f"p99 {percentile(latencies, 0.99):.2f}, max {max(latencies):.2f}, "
          f"mean {statistics.mean(latencies):.2f}")
    print(f"Swift requests per message: filter {per_message(filter_requests, args.messages)}; "
          f"worker {per_message(worker_requests, args.messages)}")
    print(f"worker idle: {idle:.0f} Swift requests a minute")
    return 0


if __name__ == "__main__":
    sys.exit(main())
