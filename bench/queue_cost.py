"""Benchmark: what stats, recover and a claim+finish cost as done/ grows.

    .venv/bin/python -m bench.queue_cost [--done 100,10000,100000] [--repeat 5]
                                         [--fill objects|rows]

On the test Swift (tests/support/swiftserver.py: all of Swift in one
process, plus the memcached of its tempauth), one container holds a little
work (cur/, one message in processing/ under a live lock, one in retry/,
one in failed/) while done/ is filled to each size in turn: with 1-byte
objects by many threads, or with ``--fill rows`` with their rows written
straight into the container's database (what stats and recover meet, as
they never read a done/ object; on a loaded machine the test Swift stores
too few objects a second for 100,000). At each size it prints the Swift requests and the
Swift server CPU (user + system time of Swift's and memcached's processes,
from /proc/<pid>/stat) per claim+finish, per ``stats`` and per ``recover``,
and, for comparison, per the listings ``stats`` made before this change (every
state in full, and cur/ twice). Figures, not assertions: the claim is that
stats and recover cost the same with 100,000 objects in done/ as with 100.
"""

import argparse
import collections
from concurrent.futures import ThreadPoolExecutor
import hashlib
import pathlib
import tempfile
import threading
import time

import swiftclient

from bench.filter_throughput import cpu_seconds
from swiftdrop import config as config_module
from swiftdrop.queue import PREFIXES, MailQueue
from swiftdrop.queue.states import CUR
from tests.support.swiftserver import SwiftServer

CONTAINER = "bench-costs"
FILL_THREADS = 32
MESSAGES_PER_SIZE = 20


class Meter:
    """Swift requests sent by this process, and the Swift server's CPU seconds.

    Requests are counted where swiftclient sends them over HTTP, so that
    each page of a full listing (10,000 names) counts, and a retry.
    """

    def __init__(self, swift):
        self.requests = collections.Counter()
        self.pids = [swift.process.pid, swift.memcached.pid]
        send = swiftclient.client.HTTPConnection.request
        requests = self.requests

        def counted(connection, method, *args, **kwargs):
            requests[method] += 1
            return send(connection, method, *args, **kwargs)

        swiftclient.client.HTTPConnection.request = counted

    def cpu(self):
        return sum(cpu_seconds(pid) for pid in self.pids)

    def measure(self, action, times):
        """(requests, Swift CPU ms) per run of `action`, over `times` runs."""
        self.requests.clear()
        before = self.cpu()
        for _ in range(times):
            action()
        cpu = self.cpu() - before
        return sum(self.requests.values()) / times, cpu * 1000 / times


def fill_done(swift, wanted, have):
    """Tiny objects in done/ up to `wanted`; the seconds it took."""
    local = threading.local()

    def put(number):
        if not hasattr(local, "connection"):
            # a loaded test Swift times out now and then: try again, longer
            local.connection = swift.connection(retries=10, timeout=60)
        local.connection.put_object(  # a str, which swiftclient can send again
            CONTAINER, f"done/{1_600_000_000 + number}.M000000P1Q{number}.bench,S=1", "x")

    started = time.monotonic()
    with ThreadPoolExecutor(FILL_THREADS) as pool:
        list(pool.map(put, range(have, wanted)))
    return time.monotonic() - started


def fill_done_rows(swift, wanted, have):
    """Rows of done/ straight into the container's database, up to `wanted`; seconds taken.

    The rows the container server adds for each object PUT (the container
    update), without the objects: stats and recover read only the listing
    and the container's totals, never a done/ object, so they meet the
    same. A loaded test Swift writes 20-80 objects a second, too few for
    100,000 in a bench's time; this writes 10,000 rows a transaction.
    """
    # python3-swift, only for --fill rows
    from swift.common import utils  # noqa: PLC0415
    from swift.common.ring import Ring  # noqa: PLC0415
    from swift.container.backend import DATADIR, ContainerBroker  # noqa: PLC0415

    utils.set_swift_dir(str(swift.workdir))
    utils.validate_hash_conf()
    account = swift.connection().get_auth()[0].rstrip("/").rsplit("/", 1)[1]
    part, [node] = Ring(str(swift.workdir), ring_name="container").get_nodes(account, CONTAINER)
    digest = utils.hash_path(account, CONTAINER)
    database = (swift.workdir / "devices" / node["device"]
                / utils.storage_directory(DATADIR, part, digest) / f"{digest}.db")
    broker = ContainerBroker(str(database), account=account, container=CONTAINER)
    etag = hashlib.md5(b"x").hexdigest()
    started = time.monotonic()
    for batch in range(have, wanted, 10_000):
        broker.merge_items([
            {"name": f"done/{1_600_000_000 + number}.M000000P1Q{number}.bench,S=1",
             "created_at": utils.Timestamp.now().internal, "size": 1,
             "content_type": "text/plain", "etag": etag, "deleted": 0,
             "storage_policy_index": 0}
            for number in range(batch, min(batch + 10_000, wanted))])
    return time.monotonic() - started


def store(connection, count, start):
    for number in range(count):
        connection.put_object(CONTAINER, f"cur/{start + number}.M000000P1Q{number}.bench,S=64",
                              b"Subject: bench\r\n\r\n" + b"x" * 46 + b"\r\n")


def old_stats_listings(queue):
    """The listings stats made before: every state in full, then cur/ again."""
    for prefix in (*PREFIXES, CUR):
        queue.listing(prefix)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--done", default="100,10000,100000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--fill", choices=("objects", "rows"), default="objects",
                        help="done/ as tiny objects, or as rows of the container listing only "
                        "(what stats and recover meet; much faster to make)")
    options = parser.parse_args()
    sizes = [int(size) for size in options.done.split(",")]
    with tempfile.TemporaryDirectory(prefix="swiftdrop-queue-cost-") as scratch:
        workdir = pathlib.Path(scratch)
        with SwiftServer(workdir / "swift") as swift:
            ini = workdir / "bench.ini"
            ini.write_text(f"[DEFAULT]\ncontainer = {CONTAINER}\nauthurl = {swift.auth_url}\n"
                           "user = test:tester\nkey = testing\nqueue_retry_delay = 3600\n")
            destination = config_module.load(str(ini)).catch_all
            connection = swift.connection()
            connection.put_container(CONTAINER)
            queue = MailQueue(destination)
            store(connection, 3, 1_700_000_000)
            queue.finish(queue.claim(), "retry")
            queue.finish(queue.claim(), "failed", reason="exit status 3")
            queue.claim()  # held in processing/ by this process's heartbeat
            meter = Meter(swift)
            print(f"{'done/':>8} {'filled in s':>11} {'claim+finish':>17} {'stats':>17} "
                  f"{'recover':>17} {'stats before':>17}")
            print(f"{'':>8} {'':>11}" + f" {'requests':>9} {'CPU ms':>7}" * 4)
            have = 0
            for size in sizes:
                # The claims below add MESSAGES_PER_SIZE to done/.
                fill = fill_done if options.fill == "objects" else fill_done_rows
                filled = fill(swift, size - MESSAGES_PER_SIZE, have)
                have = size - MESSAGES_PER_SIZE
                store(connection, MESSAGES_PER_SIZE, 1_700_001_000 + size)

                def claim_and_finish():
                    queue.finish(queue.claim(), "done")

                figures = [meter.measure(claim_and_finish, MESSAGES_PER_SIZE),
                           meter.measure(queue.stats, options.repeat),
                           meter.measure(queue.recover, options.repeat),
                           meter.measure(lambda: old_stats_listings(queue), options.repeat)]
                have += MESSAGES_PER_SIZE
                done = queue.stats()["done/"]["count"]
                print(f"{done:>8} {filled:>11.1f}" + "".join(
                    f" {requests:>9.1f} {cpu:>7.1f}" for requests, cpu in figures))
            queue.close()


if __name__ == "__main__":
    main()
