"""Benchmark: SwiftDrop end to end against raw Swift PUTs on the same Swift.

    .venv/bin/python -m bench.filter_throughput [--messages-5k N] [--messages-1m N]

Starts a real Swift, the filter and a private Postfix on loopback, then prints:
- msg/s of smtp-source -> Postfix -> filter -> Swift, for 5 KB and 1 MB
  messages with 1 and 8 sessions, next to the msg/s of a raw
  swiftclient put_object loop (same sizes, same concurrency, same Swift) and
  the ratio (target: >= 0.8);
- the filter's peak RSS while it stores one 50 MB message, above its idle
  RSS (target: <= 16 MB);
- auth requests per 1,000 messages (target: one per account).
Figures, not assertions: the tests check behaviour, this measures it.
"""

import argparse
import concurrent.futures
import hashlib
import os
import pathlib
import smtplib
import subprocess
import tempfile
import time

from tests.support.filterproc import FilterProcess, run_swiftdrop
from tests.support.postfix import postfix_instance
from tests.support.swiftserver import SwiftServer

CONTAINER = "bench"
RECIPIENT = "bench@example.com"


def write_ini(path, swift):
    user, key = swift.accounts["test"]
    path.write_text(f"[DEFAULT]\nrecipient = DEFAULT\ncontainer = {CONTAINER}\n"
                    f"authurl = {swift.auth_url}\nuser = {user}\nkey = {key}\n"
                    "create_container = true\n")
    path.chmod(0o600)
    result = run_swiftdrop("check", "--config", str(path))
    if result.returncode:
        raise SystemExit(result.stdout + result.stderr)
    return path


def object_count(swift):
    return int(swift.connection().head_container(CONTAINER)["x-container-object-count"])


def raw_put_rate(swift, size, sessions, messages):
    """msg/s of PUTs with the same guarantees the filter asks for."""
    body = os.urandom(size)
    etag = hashlib.md5(body).hexdigest()
    connections = [swift.connection(retries=0) for _ in range(sessions)]
    for connection in connections:
        connection.get_auth()  # authenticate outside the timed loop, as the filter does

    def work(index):
        connection = connections[index % sessions]
        connection.put_object(CONTAINER, f"raw/{size}/{sessions}/{index}", body, etag=etag,
                              content_type="message/rfc822",
                              headers={"If-None-Match": "*"})

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(sessions) as pool:
        list(pool.map(work, range(messages)))
    return messages / (time.monotonic() - started)


def end_to_end_rate(swift, postfix, size, sessions, messages):
    """msg/s of smtp-source through Postfix and the filter; checks all were stored."""
    before = object_count(swift)
    started = time.monotonic()
    subprocess.run(["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size),
                    "-f", "bench@origin.test", "-t", RECIPIENT,
                    f"127.0.0.1:{postfix.smtp_port}"], check=True, timeout=3600)
    elapsed = time.monotonic() - started
    stored = object_count(swift) - before
    if stored != messages:
        raise SystemExit(f"only {stored} of {messages} messages were stored")
    return messages / elapsed


def proc_status(pid, field):
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def peak_rss_for_large_message(ini, workdir, size):
    """Peak RSS above idle while one `size`-byte message is received and stored."""
    with FilterProcess(ini, workdir, "--log-target", "stderr",
                       "--max-message-size", str(size * 2)) as proxy:
        with smtplib.SMTP(*proxy.address) as client:
            client.sendmail("a@o.test", [RECIPIENT], b"warm-up\r\n")
        pid = proxy.process.pid
        idle = proc_status(pid, "VmRSS")
        pathlib.Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM
        line = b"x" * 998 + b"\r\n"
        body = b"Subject: large\r\n\r\n" + line * (size // len(line))
        with smtplib.SMTP(*proxy.address, timeout=300) as client:
            client.sendmail("a@o.test", [RECIPIENT], body)
        return idle, proc_status(pid, "VmHWM") - idle


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages-5k", type=int, default=400)
    parser.add_argument("--messages-1m", type=int, default=80)
    parser.add_argument("--large-mb", type=int, default=50)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="swiftdrop-bench-") as scratch:
        workdir = pathlib.Path(scratch)
        with SwiftServer(workdir / "swift") as swift:
            ini = write_ini(workdir / "swiftdrop.ini", swift)
            with FilterProcess(ini, workdir, "--log-target", "stderr") as proxy, \
                    postfix_instance(proxy_filter=f"inet:127.0.0.1:{proxy.port}",
                                     relay_domains=["example.com"],
                                     recipients=[RECIPIENT]) as postfix:
                print(f"{'size':>6} {'sessions':>8} {'raw PUT msg/s':>14} "
                      f"{'SwiftDrop msg/s':>16} {'ratio':>6}")
                total = 0
                for size, label, messages in ((5 * 1024, "5 KB", options.messages_5k),
                                              (1024 * 1024, "1 MB", options.messages_1m)):
                    for sessions in (1, 8):
                        raw = raw_put_rate(swift, size, sessions, messages)
                        e2e = end_to_end_rate(swift, postfix, size, sessions, messages)
                        total += messages
                        print(f"{label:>6} {sessions:>8} {raw:>14.1f} {e2e:>16.1f} "
                              f"{e2e / raw:>6.2f}")
                auths = proxy.log().count("authenticated ")
                print(f"auth requests: {auths} for {total} messages "
                      f"= {auths * 1000 / total:.2f} per 1,000 messages (one account)")
            idle, peak = peak_rss_for_large_message(ini, workdir, options.large_mb * 1024 * 1024)
            print(f"filter RSS: idle {idle / 2**20:.1f} MiB, peak while storing a "
                  f"{options.large_mb} MB message: +{peak / 2**20:.1f} MiB above idle")


if __name__ == "__main__":
    main()
