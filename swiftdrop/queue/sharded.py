"""One destination's queue over its shard containers (``container_shards``, swiftdrop.shards).

Each shard container is a queue of its own, a MailQueue or a StreamQueue
with its lock, heartbeat and bookkeeping, because a message lives its whole
life in the container it was stored in. This fans the calls out: claim
tries the shards in a rotating order (workers spread over them, and none
is starved), finish, abandon and check go to the shard that claimed, and
recover, purge, replay and stats cover every shard. A message is found by
name in its hashed shard first, then in the others: one stored before
``container_shards`` was raised is still in the container it went to then.
"""

from concurrent.futures import ThreadPoolExecutor
import itertools
import random

from ..shards import search_order, shard_destinations
from .replay import NOT_FOUND
from .states import LostLock

# stats figures that are a longest wait, not a sum, when shards are added up.
LONGEST = "_seconds"


class ShardedQueue:
    """The calls of MailQueue (and StreamQueue) over one queue per shard container."""

    def __init__(self, destination, make_shard):
        self.destination = destination
        self.settings = destination.queue
        self.container = destination.container  # shard 0's, for log lines about the whole
        self.shards = [make_shard(shard) for shard in shard_destinations(destination)]
        self._by_container = {shard.container: shard for shard in self.shards}
        for shard in self.shards:  # a repeat may hash to any shard: one place per marker
            shard.marker_containers = tuple(self._by_container)
        # Each queue (a worker thread has one) starts at a shard of its own.
        self._next = random.randrange(len(self.shards))

    @property
    def errors(self):
        return self.shards[0].errors

    def refusal(self, error):
        """The refusal line of the shard the refused request was for (shard 0's otherwise)."""
        path = getattr(error, "http_path", "") or ""
        named = [shard for shard in self.shards if f"/{shard.container}/" in f"{path}/"]
        return (named[-1] if named else self.shards[0]).refusal(error)

    def close(self):
        for shard in self.shards:
            shard.close()

    # -- one message ------------------------------------------------------------------

    def claim(self, dedup=False):
        """A claim from the first shard that has one, starting after the last one claimed."""
        count = len(self.shards)
        for index in itertools.islice(itertools.count(self._next), count):
            shard = self.shards[index % count]
            claimed = shard.claim(dedup=dedup)
            if claimed is not None:
                self._next = (index + 1) % count
                claimed.container = shard.container
                return claimed
        return None

    def holder(self, claimed):
        """The shard queue that holds `claimed`: its container, connection and lock."""
        return self._by_container[claimed.container]

    def finish(self, claimed, state, metadata=None, **options):
        return self.holder(claimed).finish(claimed, state, metadata, **options)

    def abandon(self, claimed):
        self.holder(claimed).abandon(claimed)

    def check(self, claimed):
        self.holder(claimed).check(claimed)

    def in_order_for(self, name):
        """The shard queues in the order to look for `name`: its hashed shard first."""
        return [self.shards[index] for index in search_order(name, len(self.shards))]

    def holding(self, name, prefix):
        """The shard queue that has `name` under `prefix`; its hashed shard's if none does."""
        order = self.in_order_for(name)
        found = next((shard for shard in order
                      if shard.state_of(name, (prefix,)) is not None), None)
        return found or order[0]

    def held(self, name, token):
        """The stream index's claim `token` holds on `name`, from whichever shard has it."""
        lost = None
        for shard in self.in_order_for(name):
            try:
                claimed = shard.held(name, token)
            except LostLock as error:
                lost = error
                continue
            claimed.container = shard.container
            return claimed
        raise lost

    # -- every shard ------------------------------------------------------------------

    def recover(self):
        """Every shard's recover, side by side: each waits out a grace once (Recovery).

        One after the other, N shards would take N graces; each shard's
        queue has its own connection, so they run in threads of their own.
        """
        with ThreadPoolExecutor(len(self.shards), thread_name_prefix="recover") as pool:
            results = list(pool.map(lambda shard: list(shard.recover()), self.shards))
        return [action for actions in results for action in actions]

    def purge(self, older_than, prefix, execute=False):
        return [item for shard in self.shards
                for item in shard.purge(older_than, prefix, execute=execute)]

    def replay(self, source, names=(), since=None, until=None, execute=False):
        """DeadLetters as one queue's, in the order of `names`, each name sought in every shard."""
        if not names:
            return [letter for shard in self.shards
                    for letter in shard.replay(source, since=since, until=until,
                                               execute=execute)]
        letters = {}
        for name in names:
            for shard in self.in_order_for(name):
                letter = shard.replay(source, [name], execute=execute)[0]
                if letter.outcome != NOT_FOUND or name not in letters:
                    letters[name] = letter
                if letter.outcome != NOT_FOUND:
                    break
        return [letters[name] for name in names]

    def stats(self):
        """The shards' figures added up, and each shard's under "containers"."""
        per_container = {shard.container: shard.stats() for shard in self.shards}
        total = merge_figures(list(per_container.values()))
        total["containers"] = per_container
        return total


def merge_figures(figures):
    """Stats dicts of the same shape, added up: counts and bytes summed, waits the longest.

    Text (a group's name) is the first's; a key only some shards have (a
    consumer group one shard has seen) is merged from those that have it.
    """
    first = figures[0]
    if isinstance(first, dict):
        keys = dict.fromkeys(key for each in figures for key in each)
        return {key: merge_figures([each[key] for each in figures if key in each])
                if not _is_wait(key) else _longest([each.get(key) for each in figures])
                for key in keys}
    if isinstance(first, bool) or not isinstance(first, int | float):
        return first
    return sum(figures)


def _is_wait(key):
    return isinstance(key, str) and key.endswith(LONGEST)


def _longest(values):
    present = [value for value in values if value is not None]
    return max(present) if present else None
