"""Benchmark: what asking rspamd for verdicts costs per message.

    PYTHONPATH=. .venv/bin/python -m bench.verdicts_cost [--messages N] [--rounds R]

Starts a real Swift, dnsmasq with the test domains' SPF/DKIM/DMARC records
and rspamd on loopback (tests/support/rspamd.py), and two filters on the
same Swift: one without, one with ``--rspamd-url``. Each message is 5 KB,
DKIM-signed, sent as Postfix's proxy client sends it (XFORWARD with a
client address SPF allows, one connection per message), with 1 and 8
sessions. Prints per configuration the latency from the end of DATA to the
reply (p50, p99), msg/s, and what rspamd adds: the latency difference and
the throughput ratio (with / without). Rounds alternate the two filters,
so load from other processes on the machine falls on both alike; the load
average is printed next to the figures, as they depend on it.
"""

import argparse
import concurrent.futures
import pathlib
import statistics
import tempfile
import time

from bench.filter_throughput import write_ini
from tests.support.filterproc import FilterProcess
from tests.support.rawsmtp import RawSmtp, dot_stuff
from tests.support.rspamd import CLIENT, DOMAIN, DnsServer, RspamdServer, dkim_key, sign
from tests.support.swiftserver import SwiftServer

CONTAINER = "bench-verdicts"
SIZE = 5 * 1024


def five_kb_message(private_key, number):
    header = (f"From: Alice <alice@{DOMAIN}>\r\nTo: <bob@example.com>\r\n"
              f"Subject: bench {number}\r\n"
              f"Message-ID: <bench-{number}-{time.time_ns()}@{DOMAIN}>\r\n"
              "Date: Mon, 30 Nov 2026 22:00:00 +0000\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again.\r\n"
    body = header + line * ((SIZE - len(header)) // len(line))
    return sign(body, private_key)


def one_message(address, body):
    """Seconds from the end of DATA to the reply; SystemExit unless it is 250."""
    with RawSmtp(address) as smtp:
        smtp.command("EHLO postfix.example.com")
        smtp.command(f"XFORWARD NAME=mail.{DOMAIN} ADDR={CLIENT} PROTO=ESMTP "
                     f"HELO=mail.{DOMAIN}")
        smtp.command(f"MAIL FROM:<alice@{DOMAIN}>")
        smtp.command("RCPT TO:<bob@example.com>")
        smtp.command("DATA")
        started = time.monotonic()
        smtp.send(dot_stuff(body))
        code, text = smtp.reply()
        elapsed = time.monotonic() - started
    if code != 250:
        raise SystemExit(f"not stored: {code} {text}")
    return elapsed


def run(address, bodies, sessions):
    """(latencies, msg/s) of sending `bodies` over `sessions` concurrent sessions."""
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(sessions) as pool:
        latencies = list(pool.map(lambda body: one_message(address, body), bodies))
    return latencies, len(bodies) / (time.monotonic() - started)


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200, help="per round and filter")
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="swiftdrop-bench-") as scratch:
        workdir = pathlib.Path(scratch)
        private_key, public_key = dkim_key(workdir)
        dns = DnsServer(workdir, public_key).start()
        rspamd = RspamdServer(dns.port).start()
        try:
            with SwiftServer(workdir / "swift") as swift:
                ini = write_ini(workdir / "swiftdrop.ini", swift, CONTAINER)
                with FilterProcess(ini, workdir, "--log-target", "stderr") as plain, \
                        FilterProcess(ini, workdir, "--log-target", "stderr",
                                      "--rspamd-url", rspamd.url) as asking:
                    report(plain, asking, private_key, options)
                    unavailable = asking.log().count("verdicts of this message are unavailable")
                    print(f"messages stored without verdicts (rspamd too slow): {unavailable}")
        finally:
            rspamd.close()
            dns.stop()


def report(plain, asking, private_key, options):
    warm = [five_kb_message(private_key, -1)]
    run(plain.address, warm, 1)
    run(asking.address, warm, 1)
    print(f"load average before: {pathlib.Path('/proc/loadavg').read_text().strip()}")
    print(f"{'5 KB x':>6} {'rspamd':>6} {'p50 ms':>8} {'p99 ms':>8} {'msg/s':>8}")
    for sessions in (1, 8):
        results = {False: ([], []), True: ([], [])}
        for round_number in range(options.rounds):
            for with_rspamd, proxy in ((False, plain), (True, asking)):
                bodies = [five_kb_message(private_key, round_number * options.messages + n)
                          for n in range(options.messages)]
                latencies, rate = run(proxy.address, bodies, sessions)
                results[with_rspamd][0].extend(latencies)
                results[with_rspamd][1].append(rate)
        figures = {}
        for with_rspamd, (latencies, rates) in results.items():
            p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
            rate = statistics.median(rates)
            figures[with_rspamd] = (p50, p99, rate)
            print(f"{sessions:>6} {'yes' if with_rspamd else 'no':>6} {p50:>8.1f} {p99:>8.1f} "
                  f"{rate:>8.1f}")
        added_p50 = figures[True][0] - figures[False][0]
        added_p99 = figures[True][1] - figures[False][1]
        print(f"{sessions:>6} rspamd adds p50 {added_p50:+.1f} ms, p99 {added_p99:+.1f} ms; "
              f"throughput ratio {figures[True][2] / figures[False][2]:.2f}")
    print(f"load average after: {pathlib.Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()
