"""The states a message passes through, and what a worker holds of one.

A state is a prefix of the container; an object keeps its Maildir base name
in all of them, so the name is a message's identity from cur/ to done/.
"""

from dataclasses import dataclass, field
from functools import cached_property

from .dedup import content_digest

CUR, PROCESSING, RETRY, DONE, FAILED = "cur/", "processing/", "retry/", "done/", "failed/"
PREFIXES = (CUR, PROCESSING, RETRY, DONE, FAILED)
# When one name is found under two prefixes, the one further along wins.
PROGRESS = {CUR: 0, RETRY: 1, PROCESSING: 2, DONE: 3, FAILED: 3}
META = "x-object-meta-"


def metadata_of(headers):
    """An object's X-Object-Meta-* headers, keys lower case without the prefix."""
    return {key[len(META):]: value for key, value in headers.items() if key.startswith(META)}


@dataclass
class Claimed:
    """A message a worker holds: its bytes, metadata and lock token.

    `delivery` counts the hand-overs to a consumer, this one included (1 the
    first time); the name, unique in its container, is the idempotency key.
    `fence` is the Last-Modified of this claim's own ``processing/`` copy:
    every move out of processing/ is sent with ``If-Unmodified-Since`` of
    it, so that Swift itself refuses (412) the move of a holder whose lease
    ran out once someone else has claimed the message again (a later claim's
    copy is a lease later, so its Last-Modified, in whole seconds, is later).
    None moves without that check (a leftover nobody claimed).
    `replayed` counts the times an operator sent it back to cur/
    (``swiftdrop queue replay``): a replayed message's delivery is above 1.
    `redelivered` is what a consumer checks: a repeat, or possibly one.
    """

    name: str
    body: bytes
    metadata: dict
    token: str
    attempts: int = 0
    skipped_duplicates: list = field(default_factory=list)
    delivery: int = 1
    fence: str | None = None
    recipients: list = field(default_factory=list)  # all of them (swiftdrop.envelope)
    dedup: bool = False  # claimed with --dedup: its finish leaves a dedup marker
    replayed: int = 0
    moved_to: str | None = field(default=None, repr=False)  # a finish's copy is done
    # The stream index's (swiftdrop.queue.stream): the entry handed over, and
    # whether the reconciler found the copy after Redis lost what it knew.
    entry: dict = field(default_factory=dict, repr=False)
    possible_repeat: bool = False
    # The shard container it was claimed from, with container_shards > 1
    # (swiftdrop.queue.sharded); "" for a destination of one container.
    container: str = ""

    @property
    def path(self):
        return PROCESSING + self.name

    @cached_property
    def dedup_md5(self):
        """What the filter stored as Dedup-Md5, or the same digest taken from the body now."""
        return self.metadata.get("dedup-md5") or (content_digest(self.body)
                                                  if self.body else "")

    @property
    def redelivered(self):
        return self.delivery > 1 or self.possible_repeat


class LostLock(Exception):
    """The worker's lease ran out and someone else may hold the message now."""
