"""The Redis Streams index of a container: announcing stored copies, once each.

With ``queue_index = redis-stream`` the container holds the bodies and
nothing else moves in it: the filter announces each stored copy (its name,
envelope and verdicts) in one stream per container, and consumers read the
stream with consumer groups (swiftdrop.queue.stream). A copy is announced
at most once per index, whoever announces it: the filter right after
Swift's 201, or the reconciler for copies the filter could not announce
(Redis away, the filter killed between the 201 and the announce). One Lua
script does the check and the XADD, so two announcers never both add.

Every key of a container carries the container in a hash tag
(``swiftdrop:{container}:...``): on Redis Cluster they share a slot, which
is what lets one script touch several of them.

``origin`` is the time this Redis began to index the container. A copy
named before it that the reconciler finds unannounced may have been
announced to a Redis that has since lost its data (restarted without
persistence): the reconciler marks it ``possible_repeat``, so that a
consumer that has seen it before knows it may be a repeat
(docs/stream-index.md). A copy the filter could not announce to a new
index is marked too: a false alarm costs a consumer a check, a repeat
left unmarked would break the contract.
"""

import json
import logging
import re
import time

from . import metrics
from .naming import delivery_time
from .shards import shard_destinations

log = logging.getLogger(__name__)

# A Redis request of the filter's: short, so that a Redis that hangs costs a
# message at most this much of its deadline, never its 250.
ANNOUNCE_TIMEOUT = 1.0
# How long after its name was taken a copy may still be on its way to Swift
# (the filter's --store-timeout, 60 s by default, with room): the reconciler
# leaves younger names to the filter, and starts each run this far before
# the newest name the last run saw.
IN_FLIGHT = 120.0
RECONCILE_PAGE = 1000
GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

_ANNOUNCE = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if id then return {0, id} end
redis.call('SET', KEYS[3], ARGV[2], 'NX')
id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
redis.call('HSET', KEYS[1], ARGV[1], id)
return {1, id}
"""


def keys(container):
    """The Redis key names of a container's index, by role."""
    base = f"swiftdrop:{{{container}}}"
    return {role: f"{base}:{role}" for role in (
        "stream", "announced", "origin", "watermark")}


def group_keys(container, group):
    """A consumer group's own keys: leases, retries, attempts, dead letters, counts."""
    base = f"swiftdrop:{{{container}}}:group:{group}"
    return {role: f"{base}:{role}" for role in (
        "leases", "retry", "attempts", "failed", "counts")}


def group_problem(group):
    """Why `group` cannot name a consumer group (None: it can)."""
    if not GROUP_NAME.match(group):
        return (f"consumer group {group!r}: letters, digits, '.', '_' and '-', "
                "at most 64, starting with a letter or digit")
    return None


def redis_client(url, timeout):
    """redis-py's client for `url`, every request bounded by `timeout` seconds."""
    import redis  # noqa: PLC0415 - only destinations with the index need it

    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                decode_responses=True)


def redis_errors():
    import redis  # noqa: PLC0415 - see redis_client

    return (redis.RedisError,)


def entry_fields(name, container, *, envelope, size, verdicts=None, announced_by="filter",
                 possible_repeat=False):
    """The stream entry of one copy: what a consumer needs without reading the body.

    `envelope` maps mail_from, rcpt_to (a list), client_address,
    client_name, client_helo and message_id to their values.
    Lists and the verdicts are JSON, every other value a string.
    """
    fields = {"name": name, "container": container, "size": str(size),
              "stored_at": f"{time.time():.3f}", "announced_by": announced_by}
    for key, value in envelope.items():
        fields[key] = json.dumps(value) if isinstance(value, list) else str(value or "")
    fields["verdicts"] = json.dumps(verdicts or {}, sort_keys=True)
    if possible_repeat:
        fields["possible_repeat"] = "1"
    return fields


def index_entries(destination):
    """How many entries the destination's stream holds (``swiftdrop check``)."""
    client = redis_client(destination.queue.redis_url, destination.account.timeout)
    return client.xlen(keys(destination.container)["stream"])


class StreamIndex:
    """One container's index in one Redis: announce a copy, once."""

    def __init__(self, url, container, *, timeout=ANNOUNCE_TIMEOUT, client=None):
        self.container = container
        self.client = client or redis_client(url, timeout)
        self.keys = keys(container)
        self._announce = self.client.register_script(_ANNOUNCE)

    def announce(self, fields):
        """Add the copy's entry unless it has one; (True if added now, its entry id)."""
        flat = [value for pair in fields.items() for value in pair]
        added, entry_id = self._announce(
            keys=[self.keys["announced"], self.keys["stream"], self.keys["origin"]],
            args=[fields["name"], f"{time.time():.3f}", *flat])
        return bool(added), entry_id

    def origin(self):
        """When this Redis began to index the container (None: not yet)."""
        value = self.client.get(self.keys["origin"])
        return float(value) if value is not None else None

    def unannounced(self, names):
        """Those of `names` that have no entry, in their order."""
        if not names:
            return []
        ids = self.client.hmget(self.keys["announced"], names)
        return [name for name, entry_id in zip(names, ids, strict=True) if entry_id is None]


class Announcer:
    """The filter's side: announce each stored copy of the destinations that have the index.

    A failed announce is a warning and a count, never a 451: the copy is in
    Swift, and the reconciler announces it later.
    """

    def __init__(self, destinations, index_factory=StreamIndex):
        self._indexes = {}  # (section, container): each shard container has its own stream
        for destination in destinations:
            if destination.queue.index == "redis-stream":
                for shard in shard_destinations(destination):
                    self._indexes[(shard.section, shard.container)] = index_factory(
                        shard.queue.redis_url, shard.container)
                for result in ("announced", "failed"):  # at 0, so that increase() sees a first
                    metrics.ANNOUNCES.labels(destination.section, result)
        self._errors = redis_errors() if self._indexes else ()

    def __bool__(self):
        return bool(self._indexes)

    def announce(self, destination, name, fields, *, deadline):
        """Announce one copy if its destination has the index; True unless it failed."""
        index = self._indexes.get((destination.section, destination.container))
        if index is None:
            return True
        section = destination.section
        if deadline.remaining() < ANNOUNCE_TIMEOUT:
            problem = "no time left before the deadline"
        else:
            try:
                index.announce(fields)
            except self._errors as error:
                problem = f"Redis: {error}"
            else:
                metrics.ANNOUNCES.labels(section, "announced").inc()
                return True
        metrics.ANNOUNCES.labels(section, "failed").inc()
        log.warning("not announced %s in [%s] %s's index (%s); the reconciler will",
                    name, section, destination.container, problem,
                    extra={"SWIFTDROP_SECTION": section, "SWIFTDROP_OBJECT": name})
        return False


def _first_marker(index):
    """Where a look at cur/ starts: IN_FLIGHT before the newest name the reconciler saw."""
    watermark = index.client.get(index.keys["watermark"])
    return f"cur/{int(float(watermark) - IN_FLIGHT)}" if watermark is not None else ""


def _settled(page, now):
    """The base names of a cur/ listing page that are older than IN_FLIGHT."""
    names = (item["name"][len("cur/"):] for item in page)
    return [name for name in names if (delivery_time(name) or now) < now - IN_FLIGHT]


def reconcile(index, connection, *, clock=time.time, envelope_of):
    """Announce the copies in cur/ that have no entry; the names announced, oldest first.

    Lists cur/ from IN_FLIGHT before the newest name the last run saw (the
    whole of cur/ on a Redis that has lost that mark), and leaves names
    younger than IN_FLIGHT to the filter that may still be announcing them.
    `envelope_of(name)` gives a name's (envelope, size, verdicts) from its
    object. A copy named before the index's origin is marked possible_repeat.
    """
    now = clock()
    marker = _first_marker(index)
    origin = index.origin()
    if origin is None:  # a new index, or one Redis lost: what is older may have been seen
        index.client.set(index.keys["origin"], f"{now:.3f}", nx=True)
        origin = index.origin()
    announced, newest = [], None
    while True:
        page = connection.get_container(index.container, prefix="cur/", marker=marker,
                                        limit=RECONCILE_PAGE)[1]
        if not page:
            break
        marker = page[-1]["name"]
        settled = _settled(page, now)
        if settled:
            newest = max(newest or 0, delivery_time(settled[-1]))
        for name in index.unannounced(settled):
            envelope, size, verdicts = envelope_of(name)
            born = delivery_time(name)
            added, _ = index.announce(entry_fields(
                name, index.container, envelope=envelope, size=size, verdicts=verdicts,
                announced_by="reconciler", possible_repeat=born < origin))
            if added:
                announced.append(name)
        if len(page) < RECONCILE_PAGE:
            break
    if newest is not None:
        index.client.set(index.keys["watermark"], f"{newest:.3f}")
    return announced


def announce_lag(index, connection, *, clock=time.time):
    """How long the oldest settled copy in cur/ has waited unannounced, in seconds; 0: none.

    What the SwiftDropAnnounceLag alert watches: the reconciler keeps it
    near zero, and it grows while Redis is away.
    """
    now = clock()
    page = connection.get_container(index.container, prefix="cur/",
                                    marker=_first_marker(index), limit=RECONCILE_PAGE)[1]
    waiting = index.unannounced(_settled(page, now))
    return round(now - delivery_time(waiting[0]), 3) if waiting else 0
