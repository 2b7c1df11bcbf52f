"""Benchmark: the listing queue against the Redis stream index, side by side.

    PYTHONPATH=. .venv/bin/python -m bench.stream_index [--messages N] [--big-messages N]

For each index (listing with the Swift lock, redis-stream), 1 and 8 worker
threads, 5 KB and 1 MB messages: store the messages as the filter does (one
PUT each, and for the stream its announce), then let the workers claim and
finish them as done until none is left. Prints claim+finish per second, and
per message the Swift requests (the store's PUT included), the body bytes
Swift wrote (PUTs with a body, and the bodies each server-side copy wrote
again) and read (GETs), and the test Swift's CPU time. On a machine shared
with other work the rate follows the load; the counts do not.
Figures, not assertions.
"""

import argparse
import collections
import pathlib
import tempfile
import threading

import swiftclient

from bench.queue_throughput import cpu_seconds, drain
from swiftdrop import config as config_module
from swiftdrop.queue import MailQueue
from swiftdrop.queue.stream import StreamQueue
from swiftdrop.stream_index import StreamIndex
from tests.support.redisserver import RedisServer
from tests.support.swiftserver import SwiftServer

SIZES = {"5 KB": 5 * 1024, "1 MB": 1024 * 1024}


class Traffic:
    """Every request swiftclient sends in this process, and the body bytes it moves."""

    def __init__(self, sizes):
        self.sizes = sizes  # object name -> size, for what a copy writes again
        self.requests = collections.Counter()
        self.written = self.read = 0
        self._lock = threading.Lock()
        send = swiftclient.Connection._retry

        def counted(connection, reset_func, func, *args, **kwargs):
            result = send(connection, reset_func, func, *args, **kwargs)
            with self._lock:
                self.requests[func.__name__] += 1
                self._count(func.__name__, args, kwargs, result)
            return result

        swiftclient.Connection._retry = counted

    def _count(self, request, args, kwargs, result):
        if request == "put_object":
            contents = args[2] if len(args) > 2 else kwargs.get("contents")
            copied = (kwargs.get("headers") or {}).get("X-Copy-From")
            if copied:
                self.written += self.sizes.get(copied.split("/", 2)[2], 0)
            elif contents:
                self.written += len(contents)
        elif request == "get_object" and isinstance(result, tuple) and \
                isinstance(result[1], bytes):
            self.read += len(result[1])

    def clear(self):
        self.requests.clear()
        self.written = self.read = 0


def run_case(swift, redis, workdir, traffic, *, index, workers, size, messages):
    container = f"bench-{index}-{workers}-{size}"
    ini = workdir / f"{container}.ini"
    ini.write_text(f"[DEFAULT]\ncontainer = {container}\nauthurl = {swift.auth_url}\n"
                   "user = test:tester\nkey = testing\n"
                   f"queue_index = {index}\nqueue_redis_url = {redis.url}\n")
    destination = config_module.load(str(ini)).catch_all
    connection = swift.connection()
    connection.put_container(container)
    body = b"Subject: bench\r\n\r\n" + b"x" * (size - 20) + b"\r\n"
    announcer = StreamIndex(redis.url, container) if index == "redis-stream" else None
    traffic.clear()
    cpu_before = cpu_seconds(swift.process.pid)
    for number in range(messages):
        name = f"{1_700_000_000 + number}.M000000P1Q{number}.bench,S={len(body)}"
        for prefix in ("cur/", "processing/", "done/"):
            traffic.sizes[f"{prefix}{name}"] = len(body)
        connection.put_object(container, f"cur/{name}", body)
        if announcer is not None:
            announcer.announce({"name": name, "container": container,
                                "size": str(len(body))})
    if index == "redis-stream":
        elapsed = drain(lambda: StreamQueue(destination), workers)
    else:
        elapsed = drain(lambda: MailQueue(destination), workers)
    swift_cpu = cpu_seconds(swift.process.pid) - cpu_before
    return {"rate": messages / elapsed,
            "requests": sum(traffic.requests.values()) / messages,
            "written": traffic.written / messages / len(body),
            "read": traffic.read / messages / len(body),
            "cpu_ms": swift_cpu * 1000 / messages}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200, help="of 5 KB per case")
    parser.add_argument("--big-messages", type=int, default=40, help="of 1 MB per case")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swiftdrop-stream-bench-") as scratch:
        workdir = pathlib.Path(scratch)
        with RedisServer(workdir / "redis", appendonly=True) as redis, \
                SwiftServer(workdir / "swift") as swift:
            traffic = Traffic({})
            print(f"{'size':>5} {'workers':>7} {'index':>13} {'claim+finish/s':>15} "
                  f"{'Swift requests':>15} {'bodies written':>15} {'bodies read':>12} "
                  f"{'Swift CPU ms':>13}")
            for label, size in SIZES.items():
                messages = options.messages if size < 1024 * 1024 else options.big_messages
                for workers in (1, 8):
                    rates = {}
                    for index in ("listing", "redis-stream"):
                        figures = run_case(swift, redis, workdir, traffic, index=index,
                                           workers=workers, size=size, messages=messages)
                        rates[index] = figures["rate"]
                        print(f"{label:>5} {workers:>7} {index:>13} {figures['rate']:>15.1f} "
                              f"{figures['requests']:>15.2f} {figures['written']:>15.2f} "
                              f"{figures['read']:>12.2f} {figures['cpu_ms']:>13.1f}")
                    print(f"{'':>5} {'':>7} {'ratio':>13} "
                          f"{rates['redis-stream'] / rates['listing']:>14.1f}x")


if __name__ == "__main__":
    main()
