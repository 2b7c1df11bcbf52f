"""Benchmark: writes a second into one container and into N shard containers, replicated.

    PYTHONPATH=. .venv/bin/python -m bench.container_shards [--messages M] [--writers W]
                                                           [--shards 1 4 ...]

On :class:`tests.support.swiftcluster.SwiftCluster` (three nodes, three
replicas), W threads store M messages through the filter's own store
(swiftdrop.storage.SwiftStore, the PUT with ETag and ``If-None-Match: *``),
each to the shard container its Maildir name hashes to (swiftdrop.shards),
for each N given. Printed per N: messages a second in all, the PUT's p50
and p99, and the writes a second each container's database took.

What it shows on one machine: the cost of sharding to the filter (the
hash, a container per shard) and how the writes divide; not the gain on a
production cluster, where each container's database lives on its own
container servers' disks and the ~100 writes/s guidance is per container.
Here all containers share the same two cores and disks. Figures, not
assertions.
"""

import argparse
import collections
import hashlib
import io
import pathlib
import tempfile
import threading
import time

from swiftdrop import config as config_module
from swiftdrop.deadline import Deadline
from swiftdrop.naming import MaildirNamer
from swiftdrop.reception import Message
from swiftdrop.shards import shard_for, shard_names
from swiftdrop.storage import SwiftStore
from tests.support.swiftcluster import SwiftCluster

BODY = b"From: bench@example.test\r\nSubject: shards\r\n\r\n" + b"x" * 2000 + b"\r\n"


def destination_of(cluster, scratch, container, shards):
    ini = pathlib.Path(scratch) / f"{container}.ini"
    ini.write_text(f"[DEFAULT]\nrecipient = DEFAULT\ncontainer = {container}\n"
                   f"authurl = {cluster.auth_url}\nuser = test:tester\nkey = testing\n"
                   f"create_container = true\ncontainer_shards = {shards}\n")
    return config_module.load(str(ini)).catch_all


def message():
    return Message(io.BytesIO(BODY), len(BODY), hashlib.md5(BODY).hexdigest(), None)


def run(cluster, scratch, shards, options):
    """(seconds, PUT times, writes per container) of storing the messages over `shards`."""
    container = f"bench-{shards}-{time.monotonic_ns()}"
    destination = destination_of(cluster, scratch, container, shards)
    connection = cluster.connection()
    for name in shard_names(container, shards):
        connection.put_container(name)
    store, namer = SwiftStore(), MaildirNamer("mx.bench")
    store.check(destination)  # the token, before the clock starts
    times, per_container, lock = [], collections.Counter(), threading.Lock()
    left = iter(range(options.messages))

    def writer():
        while next(left, None) is not None:
            name = namer.name(len(BODY))
            shard = shard_for(destination, name)
            started = time.perf_counter()
            store.put(shard, name, message(), {}, deadline=Deadline(60))
            took = time.perf_counter() - started
            with lock:
                times.append(took)
                per_container[shard.container] += 1

    threads = [threading.Thread(target=writer) for _ in range(options.writers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, sorted(times), per_container


def report(shards, seconds, times, per_container):
    def at(fraction):
        return times[min(len(times) - 1, int(fraction * len(times)))] * 1000

    total = sum(per_container.values())
    rates = ", ".join(f"{count / seconds:.1f}" for _, count in sorted(per_container.items()))
    print(f"{shards} container(s): {total} messages in {seconds:.1f} s = {total / seconds:.1f} "
          f"msg/s; PUT p50 {at(0.5):.0f} ms, p99 {at(0.99):.0f} ms; writes/s per container: "
          f"{rates}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 4, 1, 4])
    parser.add_argument("--without-replicators", action="store_true",
                        help="stop the object and container replicators first: what the "
                             "writes cost without their sweeps over every database")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swiftdrop-shards-") as scratch:
        with SwiftCluster(pathlib.Path(scratch) / "cluster") as cluster:
            if options.without_replicators:
                for kind in ("object-replicator", "container-replicator"):
                    cluster.stop_daemons(kind)
            run(cluster, scratch, 1, argparse.Namespace(messages=50, writers=4))  # warm up
            for shards in options.shards:
                report(shards, *run(cluster, scratch, shards, options))


if __name__ == "__main__":
    main()
