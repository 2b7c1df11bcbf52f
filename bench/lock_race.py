"""Benchmark: how often the Swift lock lets two claimers win, and what that costs a consumer.

    .venv/bin/python -m bench.lock_race [--claimers N] [--lock-rounds L] [--rounds R]
                                        [--messages M]

On the test Swift (one replica: the best case; a multi-replica cluster can
only do worse), two figures for ``queue_lock = swift``:

* lock PUTs: in each of L rounds, N threads start ``SwiftLock.acquire`` on
  one new name at once (a barrier); a round with more than one token back
  is a double win, which ``If-None-Match: *`` alone lets through;
* hand-overs: in each of R rounds, N queues, one thread each, start
  ``claim`` at once on M fresh messages and finish what they get as done;
  a message handed over twice is a double hand-over, "silent" when both
  had the same delivery number. The claim's read-back of the lock and its
  check of the token on the message are what stand between the two.

Both again with ``queue_lock = redis`` as the control (0 expected). Figures,
not assertions; they vary with the machine's load.
"""

import argparse
import collections
import pathlib
import tempfile
import threading

from swiftdrop import config as config_module
from swiftdrop.locks import SwiftLock
from swiftdrop.queue import LostLock, MailQueue
from tests.support.redisserver import RedisServer
from tests.support.swiftserver import SwiftServer


def race(claimers, work):
    """Run work(index) in `claimers` threads released together; their results."""
    barrier = threading.Barrier(claimers)
    results = [None] * claimers

    def run(index):
        barrier.wait()
        results[index] = work(index)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def lock_wins(swift, claimers, rounds, container="race-locks"):
    """Rounds in which more than one lock PUT won, of `rounds`; `container` must be new."""
    swift.connection().put_container(container)
    locks = [SwiftLock(swift.connection(), container) for _ in range(claimers)]
    doubles = 0
    for number in range(rounds):
        tokens = race(claimers, lambda index, name=f"m{number}": locks[index].acquire(name, 300))
        doubles += sum(token is not None for token in tokens) > 1
    return doubles


def drain(queue):
    """Claim and finish until nothing is left; (name, delivery) of each hand-over."""
    got = []
    while (claimed := queue.claim()) is not None:
        got.append((claimed.name, claimed.delivery))
        try:
            queue.finish(claimed, "done")
        except LostLock:
            pass  # the other winner's now: counted by its hand-over
    return got


def hand_overs(swift, ini_text, claimers, rounds, messages, *, prefix="race"):
    """(messages handed over twice, of those with the same delivery, messages in all).

    Each round uses a new container, ``<prefix>-<round>``.
    """
    doubles = silent = 0
    for number in range(rounds):
        container = f"{prefix}-{number}"
        swift.connection().put_container(container)
        ini = pathlib.Path(ini_text["dir"]) / f"{container}.ini"
        ini.write_text(ini_text["text"].format(container=container))
        destination = config_module.load(str(ini)).catch_all
        queues = [MailQueue(destination) for _ in range(claimers)]
        connection = swift.connection()
        for message in range(messages):
            connection.put_object(container, f"cur/{1_700_000_000 + message}.M{message:06d}"
                                  f"P1Q{message}.race,S=64", b"Subject: race\r\n\r\nx\r\n")

        given = collections.defaultdict(list)
        for got in race(claimers, lambda index, queues=queues: drain(queues[index])):
            for name, delivery in got:
                given[name].append(delivery)
        for deliveries in given.values():
            doubles += len(deliveries) > 1
            silent += len(deliveries) != len(set(deliveries))
        for queue in queues:
            queue.close()
    return doubles, silent, rounds * messages


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claimers", type=int, default=8)
    parser.add_argument("--lock-rounds", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--messages", type=int, default=4)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swiftdrop-lock-race-") as scratch:
        workdir = pathlib.Path(scratch)
        with RedisServer(workdir / "redis") as redis, SwiftServer(workdir / "swift") as swift:
            doubles = lock_wins(swift, options.claimers, options.lock_rounds)
            print(f"swift lock PUTs: {options.claimers} at once, {options.lock_rounds} rounds: "
                  f"{doubles} rounds with two or more winners")
            for lock in ("swift", "redis"):
                ini = {"dir": scratch, "text": (
                    "[DEFAULT]\ncontainer = {container}\n"
                    f"authurl = {swift.auth_url}\nuser = test:tester\nkey = testing\n"
                    f"queue_lock = {lock}\n"
                    f"queue_redis_url = {redis.url}\n")}
                doubles, silent, total = hand_overs(swift, ini, options.claimers,
                                                    options.rounds, options.messages)
                print(f"{lock} lock claims: {options.claimers} claimers, {total} messages: "
                      f"{doubles} handed over twice, {silent} of them with the same "
                      "delivery (silent)")


if __name__ == "__main__":
    main()
