"""Soak: concurrent SMTP sessions of mixed sizes through Postfix for minutes on end.

    PYTHONPATH=. .venv/bin/python -m bench.soak [--sessions 20] [--minutes 10]

Starts a real Swift, the filter (with its own TMPDIR) and a private Postfix
on loopback, like bench.filter_throughput, then keeps `--sessions` clients
busy: each connects, sends one message of 1 KB to 10 MB (mostly small, a few
large, as an MX sees them), QUITs and starts over. It prints:

- throughput (messages and MB per second) and the reply codes;
- p50/p99 latency of the final reply, from the last byte of the message to
  the reply (what the sender waits for: Postfix passing the message on,
  the filter storing it in Swift), overall and per size;
- the filter's RSS, open descriptors and temporary files every
  `--sample-seconds`, and their drift from the first to the last minute
  (a leak shows as a slope; they must stay flat);
- whether Swift holds exactly one object per 250 reply.

Figures, not assertions: the tests check behaviour, this measures it.
"""

import argparse
import collections
import os
import pathlib
import random
import smtplib
import statistics
import tempfile
import threading
import time

from bench.filter_throughput import RECIPIENT, load_average, object_count, proc_status, write_ini
from tests.support.filterproc import FilterProcess
from tests.support.postfix import postfix_instance
from tests.support.swiftserver import SwiftServer

# (label, bytes, weight): mostly small messages, a few large ones.
SIZES = [("1 KB", 1024, 40), ("10 KB", 10 * 1024, 25), ("100 KB", 100 * 1024, 20),
         ("1 MB", 1024 * 1024, 12), ("10 MB", 10 * 1024 * 1024, 3)]
LINE = b"x" * 76 + b"\r\n"


def body_of(size):
    """A message of about `size` bytes; no line starts with a dot, so it needs no stuffing."""
    header = b"From: <soak@origin.test>\r\nSubject: soak\r\n\r\n"
    return header + LINE * max(1, (size - len(header)) // len(LINE))


class Sampler(threading.Thread):
    """Every `interval` seconds: the filter's RSS, open descriptors and spool files."""

    def __init__(self, pid, tmpdir, interval):
        super().__init__(daemon=True)
        self.pid, self.tmpdir, self.interval = pid, pathlib.Path(tmpdir), interval
        # (seconds since start, rss bytes, descriptors, tmp files, load average)
        self.samples = []
        self.stopping = threading.Event()
        self.started_at = time.monotonic()

    def sample(self):
        targets = []
        for entry in pathlib.Path(f"/proc/{self.pid}/fd").iterdir():
            try:
                targets.append(os.readlink(entry))
            except FileNotFoundError:  # closed while we looked
                continue
        # Spool files are O_TMPFILE (no name): count names and open descriptors into TMPDIR.
        spool = (sum(1 for _ in self.tmpdir.iterdir())
                 + sum(1 for target in targets if target.startswith(f"{self.tmpdir}/")))
        self.samples.append((time.monotonic() - self.started_at,
                             proc_status(self.pid, "VmRSS"), len(targets), spool,
                             load_average()))

    def run(self):
        while not self.stopping.wait(self.interval):
            self.sample()


def client_loop(address, deadline, seed, results):
    """One session per message until the deadline; record (size label, code, latency)."""
    rng = random.Random(seed)
    labels = [label for label, _, _ in SIZES]
    weights = [weight for _, _, weight in SIZES]
    bodies = {label: body_of(size) for label, size, _ in SIZES}
    while time.monotonic() < deadline:
        label = rng.choices(labels, weights)[0]
        try:
            with smtplib.SMTP(*address, timeout=300) as client:
                client.ehlo("soak.origin.test")
                client.mail("soak@origin.test", [f"SIZE={len(bodies[label])}"])
                client.rcpt(RECIPIENT)
                code, _ = client.docmd("DATA")
                if code != 354:
                    results.append((label, code, None))
                    continue
                client.send(bodies[label] + b".\r\n")
                sent = time.monotonic()
                code, _ = client.getreply()
                results.append((label, code, time.monotonic() - sent))
        except (OSError, smtplib.SMTPException) as error:
            results.append((label, type(error).__name__, None))


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(results, elapsed, sampler, stored):
    codes = collections.Counter(code for _, code, _ in results)
    accepted = codes.get(250, 0)
    sizes = dict((label, size) for label, size, _ in SIZES)
    megabytes = sum(sizes[label] for label, code, _ in results if code == 250) / 2**20
    print(f"messages: {len(results)} in {elapsed:.0f} s, replies {dict(codes)}")
    print(f"throughput: {accepted / elapsed:.2f} msg/s, {megabytes / elapsed:.2f} MB/s "
          f"stored ({megabytes:.0f} MB)")
    print(f"Swift holds {stored} new objects for {accepted} replies of 250"
          + ("" if stored == accepted else "  <-- MISMATCH"))
    latencies = [latency for _, code, latency in results if code == 250]
    if latencies:
        print(f"final-reply latency: p50 {percentile(latencies, .5) * 1000:.0f} ms, "
              f"p99 {percentile(latencies, .99) * 1000:.0f} ms")
    for label, _, _ in SIZES:
        mine = [latency for name, code, latency in results if name == label and code == 250]
        if mine:
            print(f"  {label:>6}: {len(mine):>6} messages, p50 "
                  f"{percentile(mine, .5) * 1000:>6.0f} ms, p99 "
                  f"{percentile(mine, .99) * 1000:>6.0f} ms")
    print(f"{'t (s)':>6} {'RSS MiB':>8} {'fds':>5} {'spool':>5} {'load':>5}")
    step = max(1, len(sampler.samples) // 40)  # at most ~40 lines
    shown = sorted({*range(0, len(sampler.samples), step), len(sampler.samples) - 1})
    for at, rss, fds, spool, load in (sampler.samples[index] for index in shown):
        print(f"{at:>6.0f} {rss / 2**20:>8.1f} {fds:>5} {spool:>5} {load:>5.1f}")
    # Drift under load: the idle sample before and the ones after the run are left out.
    loaded = [sample for sample in sampler.samples if 0 < sample[0] <= elapsed]
    first = [sample for sample in loaded if sample[0] <= 60]
    last = [sample for sample in loaded if sample[0] >= elapsed - 60]
    if first and last:
        def mean(samples, index):
            return statistics.mean(sample[index] for sample in samples)

        print(f"under load, first -> last minute: RSS {mean(first, 1) / 2**20:.1f} -> "
              f"{mean(last, 1) / 2**20:.1f} MiB, fds {mean(first, 2):.1f} -> "
              f"{mean(last, 2):.1f}; peak RSS {max(s[1] for s in loaded) / 2**20:.1f} MiB; "
              f"load average {min(s[4] for s in loaded):.1f}-{max(s[4] for s in loaded):.1f}")
    idle, after = sampler.samples[0], sampler.samples[-1]
    print(f"idle before -> after the run: RSS {idle[1] / 2**20:.1f} -> {after[1] / 2**20:.1f} "
          f"MiB, fds {idle[2]} -> {after[2]} (the rest are kept-alive Swift connections), "
          f"spool files {idle[3]} -> {after[3]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--sample-seconds", type=float, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--direct", action="store_true",
                        help="send straight to the filter, without Postfix: tells the "
                             "filter's own memory behaviour from the whole path's")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="swiftdrop-soak-") as scratch:
        workdir = pathlib.Path(scratch)
        tmpdir = workdir / "filter-tmp"
        tmpdir.mkdir()
        with SwiftServer(workdir / "swift") as swift:
            ini = write_ini(workdir / "swiftdrop.ini", swift)
            with FilterProcess(ini, workdir, "--log-target", "stderr",
                               env={"TMPDIR": str(tmpdir)}) as proxy, \
                    postfix_instance(proxy_filter=f"inet:127.0.0.1:{proxy.port}",
                                     relay_domains=["example.com"],
                                     recipients=[RECIPIENT]) as postfix:
                address = proxy.address if options.direct else ("127.0.0.1", postfix.smtp_port)
                before = object_count(swift)
                sampler = Sampler(proxy.process.pid, tmpdir, options.sample_seconds)
                sampler.sample()
                sampler.start()
                results = []
                started = time.monotonic()
                deadline = started + options.minutes * 60
                clients = [threading.Thread(target=client_loop,
                                            args=(address, deadline, options.seed + index,
                                                  results))
                           for index in range(options.sessions)]
                for client in clients:
                    client.start()
                for client in clients:
                    client.join()
                elapsed = time.monotonic() - started
                time.sleep(options.sample_seconds)  # let the last sessions close
                sampler.stopping.set()
                sampler.join()
                sampler.sample()
                route = "straight to the filter" if options.direct else "through Postfix"
                print(f"{options.sessions} sessions for {options.minutes:g} minutes {route}, "
                      f"sizes {', '.join(label for label, _, _ in SIZES)} "
                      f"weighted {'/'.join(str(w) for _, _, w in SIZES)}")
                report(results, elapsed, sampler, object_count(swift) - before)
                if "Traceback" in proxy.log():
                    print("the filter logged a traceback:\n" + proxy.log()[-3000:])


if __name__ == "__main__":
    main()
