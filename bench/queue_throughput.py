"""Benchmark: claims+finishes per second of swiftdrop queue on the test Swift.

    .venv/bin/python -m bench.queue_throughput [--messages N]

For each lock kind (swift, redis) and 1 and 8 worker threads: store N
messages in cur/, let the workers claim and finish them as done until the
queue is empty, and print messages per second, the Swift requests each
claim+finish made and the test Swift's CPU time for each. On a machine
shared with other work the rate follows the load; the other two do not.
Figures, not assertions.
"""

import argparse
import collections
import functools
import os
import pathlib
import tempfile
import threading
import time

import swiftclient

from swiftdrop import config as config_module
from swiftdrop.queue import MailQueue
from tests.support.redisserver import RedisServer
from tests.support.swiftserver import SwiftServer


def count_requests():
    """Count every request swiftclient sends, on every connection of this process."""
    requests = collections.Counter()
    send = swiftclient.Connection._retry

    def counted(connection, reset_func, func, *args, **kwargs):
        requests[func.__name__] += 1
        return send(connection, reset_func, func, *args, **kwargs)

    swiftclient.Connection._retry = counted
    return requests


def cpu_seconds(pid):
    """User plus system CPU time a process has used so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drain(make_queue, workers):
    """Seconds `workers` threads, each with a queue of its own, take to finish all as done."""
    def worker():
        queue = make_queue()
        try:
            while (claimed := queue.claim()) is not None:
                queue.finish(claimed, "done")
        finally:
            queue.close()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swiftdrop-queue-bench-") as scratch:
        workdir = pathlib.Path(scratch)
        with RedisServer(workdir / "redis") as redis, SwiftServer(workdir / "swift") as swift:
            requests = count_requests()
            print(f"{'lock':>6} {'workers':>8} {'messages':>9} {'claim+finish/s':>15} "
                  f"{'requests each':>14} {'Swift CPU ms each':>18}")
            for lock in ("swift", "redis"):
                for workers in (1, 8):
                    container = f"bench-{lock}-{workers}"
                    ini = workdir / f"{container}.ini"
                    ini.write_text(
                        f"[DEFAULT]\ncontainer = {container}\nauthurl = {swift.auth_url}\n"
                        "user = test:tester\nkey = testing\n"
                        f"queue_lock = {lock}\n"
                        f"queue_redis_url = {redis.url}\n")
                    destination = config_module.load(str(ini)).catch_all
                    connection = swift.connection()
                    connection.put_container(container)
                    for number in range(options.messages):
                        connection.put_object(
                            container, f"cur/{1_700_000_000 + number}.M000000P1Q{number}"
                            f".bench,S=64", b"Subject: bench\r\n\r\n" + b"x" * 46 + b"\r\n")
                    requests.clear()
                    cpu_before = cpu_seconds(swift.process.pid)
                    elapsed = drain(functools.partial(MailQueue, destination), workers)
                    swift_cpu = cpu_seconds(swift.process.pid) - cpu_before
                    print(f"{lock:>6} {workers:>8} {options.messages:>9} "
                          f"{options.messages / elapsed:>15.1f} "
                          f"{sum(requests.values()) / options.messages:>14.2f} "
                          f"{swift_cpu * 1000 / options.messages:>18.1f}")


if __name__ == "__main__":
    main()
