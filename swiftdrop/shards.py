"""A destination's messages spread over several containers: which one holds a message.

Swift advises about 100 writes a second per container, and a container's
database slows as it grows; Swift's own container sharding splits by name
ranges, and our names begin with the time, so every new message would land
in the last range. With ``container_shards = N`` a message goes to one of N
containers by a stable hash of its Maildir base name, and lives its whole
life there: every state (cur/, processing/, retry/, done/, failed/), its
lock, retry index entry, dedup marker and recipient list stay beside it.

Shard 0 is the configured container itself and shard k is
``<container>-<k>``, so raising N from 1 leaves every stored message where
the queue finds it. Lowering N hides the shards above the new N: never
lower it (docs/configuration.md). Names hash to shards only at ingest: a
message stored before N was raised stays in the container it was stored
in, so whoever looks for one by name tries its hashed shard first and then
the others (:func:`search_order`).
"""

import dataclasses
import zlib

from .naming import MAILDIR_PREFIX


def shard_names(container, count):
    """The N container names of a destination, shard 0 (the configured one) first."""
    return tuple(shard_name(container, number) for number in range(count))


def shard_name(container, number):
    """Shard 0 is the configured container itself; shard k is ``<container>-k``."""
    return container if number == 0 else f"{container}-{number}"


def shard_index(name, count):
    """The shard a message of this name is stored in: crc32 of its base name, modulo N."""
    base = name.removeprefix(MAILDIR_PREFIX).encode()
    return zlib.crc32(base) % count


def shard_destinations(destination):
    """One Destination per shard container, each a single-container destination."""
    return tuple(_shard(destination, number) for number in range(destination.container_shards))


def shard_for(destination, name):
    """The single-container Destination that stores the message `name`.

    Per message, on the filter's path: only that shard's Destination is made.
    """
    if destination.container_shards == 1:
        return destination
    return _shard(destination, shard_index(name, destination.container_shards))


def _shard(destination, number):
    return dataclasses.replace(destination, container=shard_name(destination.container, number),
                               container_shards=1, shard=number)


def search_order(name, count):
    """Shard indexes to look for `name` in: its hashed shard, then the rest in order."""
    first = shard_index(name, count)
    return [first, *(index for index in range(count) if index != first)]
