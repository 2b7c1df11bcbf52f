"""Benchmark: how often the Swift lock lets two claimers win on a three-replica Swift.

    .venv/bin/python -m bench.lock_replicas [--claimers N] [--lock-rounds L]
                                            [--rounds R] [--messages M]

bench/lock_race.py measures the race on the one-replica test Swift, the best
case. Here the same two figures for ``queue_lock = swift`` come from
:class:`tests.support.swiftcluster.SwiftCluster` (three nodes, a quorum of
two), first whole, then with one node stopped, when each PUT needs both of
the other two:

* lock PUTs: rounds of N threads acquiring one new lock name at once, and
  in how many more than one got a token;
* hand-overs: rounds of N queues claiming M fresh messages at once, how
  many messages were handed over twice and how many of those silently
  (with the same delivery number).

Figures, not assertions; they vary with the machine's load.
"""

import argparse
import pathlib
import tempfile

from bench.lock_race import hand_overs, lock_wins
from tests.support.swiftcluster import SwiftCluster

# The node taken away for the second half: any one will do, all are primaries.
STOPPED_NODE = 2


def measure(cluster, options, scratch, label, prefix):
    """Print both figures for the cluster as it is now, in containers named `prefix`-*."""
    doubles = lock_wins(cluster, options.claimers, options.lock_rounds, f"{prefix}-locks")
    print(f"{label}: swift lock PUTs: {options.claimers} at once, {options.lock_rounds} "
          f"rounds: {doubles} rounds with two or more winners", flush=True)
    ini = {"dir": scratch, "text": (
        "[DEFAULT]\ncontainer = {container}\n"
        f"authurl = {cluster.auth_url}\nuser = test:tester\nkey = testing\n"
        "queue_lock = swift\n")}
    doubles, silent, total = hand_overs(cluster, ini, options.claimers, options.rounds,
                                        options.messages, prefix=prefix)
    print(f"{label}: swift lock claims: {options.claimers} claimers, {total} messages: "
          f"{doubles} handed over twice, {silent} of them with the same delivery (silent)",
          flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claimers", type=int, default=8)
    parser.add_argument("--lock-rounds", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--messages", type=int, default=4)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swiftdrop-lock-replicas-") as scratch:
        with SwiftCluster(pathlib.Path(scratch) / "cluster") as cluster:
            measure(cluster, options, scratch, "3 of 3 nodes", "whole")
            cluster.stop_node(STOPPED_NODE)
            measure(cluster, options, scratch, "2 of 3 nodes", "degraded")


if __name__ == "__main__":
    main()
