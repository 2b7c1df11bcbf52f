"""Replay: dead letters (failed/, or done/) listed, and sent back to cur/ to be handed over again.

An operator fixes what made messages fail, then replays them; until then
the dry run is how to see what failed and why. A replayed message keeps
its ``Deliveries``, so its next hand-over is marked as a repeat, and
carries ``Replayed`` (how often) and ``Replayed-At``, so a consumer can
tell a replay from a retry. Its attempts start again from 0.

The move is the queue's (swiftdrop.queue.moves): a server-side copy into
cur/, then a delete of the source, under the message's lock, so that no
worker, recover or second replay moves it meanwhile. A name that is
already in cur/, processing/ or retry/ is left alone: it is in work (or a
crash's leftover that recover settles), and a second copy in cur/ would
hand it over twice.
"""

from dataclasses import dataclass, field

from ..libraries import ClientException
from ..naming import delivery_time
from . import retry_index
from .states import CUR, PREFIXES, PROCESSING, RETRY, LostLock, metadata_of

# What replay drops (as read: lower case): the last attempt's error and the
# retry schedule belong to the attempts that failed, not to the ones to come.
DROPPED = ("last-error", "not-before")
IN_WORK = (CUR, PROCESSING, RETRY)

WOULD_REPLAY, REPLAYED, REFUSED, NOT_FOUND = "would replay", "replayed", "refused", "not found"


@dataclass
class DeadLetter:
    """One message replay looked at, and what became of it (`outcome`, and why: `reason`)."""

    name: str
    source: str
    received_at: float | None  # the delivery time in the name
    attempts: int = 0
    deliveries: int = 0
    replayed: int = 0
    last_error: str = ""
    failed_reason: str = ""
    outcome: str = WOULD_REPLAY
    reason: str = ""
    metadata: dict = field(default_factory=dict, repr=False)  # as read, for the move

    @property
    def cause(self):
        """What to show for it: Last-Error, or Failed-Reason when no attempt recorded one."""
        return self.last_error or self.failed_reason or "no error recorded"


class Replaying:
    """``swiftdrop queue replay``: list or move messages of failed/ or done/ back to cur/."""

    def replay(self, source, names=(), since=None, until=None, execute=False):
        """A DeadLetter for each message chosen, moved to cur/ only with `execute`.

        Chosen are `names` if given (each one not in `source` comes back as
        NOT_FOUND), else those in `source` whose delivery time (from the
        name) is at or after `since` and before `until` (unix seconds; None:
        no bound). Without `execute` nothing changes: the DeadLetters say
        what an execute would do, but for a lock that is held then.
        """
        if names:
            chosen = [(name, True) for name in names]
        else:
            listed = (item["name"][len(source):] for item in self.listing(source))
            chosen = [(name, False) for name in listed
                      if in_window(delivery_time(name), since, until)]
        return [self._replay_one(name, source, named, execute) for name, named in chosen]

    def _replay_one(self, name, source, named, execute):
        if not execute:
            return self._examine(name, source, named)
        token = self._acquire(name)
        if token is None:
            return DeadLetter(name, source, delivery_time(name), outcome=REFUSED,
                              reason="its lock is held: a worker, recover or another "
                                     "replay is at it")
        try:
            self._keep(name, token)
            letter = self._examine(name, source, named)
            if letter.outcome == WOULD_REPLAY:
                self._move_back(letter, token)
        except LostLock:  # Swift or Redis too slow for the lease: nobody else's move undone
            return DeadLetter(name, source, delivery_time(name), outcome=REFUSED,
                              reason=f"its lock ran out midway: see whether it is in {CUR}, "
                                     f"{source} or both")
        finally:
            if self.heartbeat.holds(name, token):
                self._let_go(name, token)
        return letter

    def _examine(self, name, source, named):
        """The DeadLetter of `name` in `source`, and whether it may be replayed."""
        try:
            headers = self.connection.head_object(self.container, source + name)
        except ClientException as error:
            if error.http_status != 404:
                raise
            if not named:  # listed, then moved before we looked
                return DeadLetter(name, source, delivery_time(name), outcome=REFUSED,
                                  reason=f"no longer in {source}")
            state = self.state_of(name, [prefix for prefix in PREFIXES if prefix != source])
            return DeadLetter(name, source, delivery_time(name), outcome=NOT_FOUND,
                              reason=f"not in {source} ("
                                     + (f"it is in {state})" if state else "in no state)"))
        metadata = metadata_of(headers)
        letter = DeadLetter(name, source, delivery_time(name),
                            attempts=_count(metadata, "attempts"),
                            deliveries=_count(metadata, "deliveries"),
                            replayed=_count(metadata, "replayed"),
                            last_error=metadata.get("last-error", ""),
                            failed_reason=metadata.get("failed-reason", ""), metadata=metadata)
        in_work = self.state_of(name, IN_WORK)
        if in_work is not None:
            letter.outcome = REFUSED
            letter.reason = f"it is in {in_work} already"
        return letter

    def _move_back(self, letter, token):
        """Copy the letter to cur/ with its new metadata, then delete it and its retry entry.

        The copy sends all of the metadata with ``X-Fresh-Metadata``: a copy
        that keeps the source's can change and add keys but not remove one.
        Swift keeps the content type and its own system metadata either way.
        """
        name, source, metadata = letter.name, letter.source, letter.metadata
        new = {"Attempts": "0", "Replayed": str(letter.replayed + 1),
               "Replayed-At": f"{self.clock():.3f}"}
        replaced = {key.lower() for key in new}
        kept = {key: value for key, value in metadata.items()
                if key not in DROPPED and key not in replaced}
        kept.update(new)
        headers = {"X-Copy-From": f"/{self.container}/{source}{name}",
                   "X-Fresh-Metadata": "true",
                   **{f"X-Object-Meta-{key}": value for key, value in kept.items()}}
        try:
            self.connection.put_object(self.container, CUR + name, None, headers=headers)
        except ClientException as error:
            if error.http_status != 404:
                raise
            letter.outcome, letter.reason = REFUSED, f"no longer in {source}"
            return
        self._keep(name, token)
        self._delete(source + name)
        not_before = _seconds(metadata.get("not-before"))
        if not_before is not None:
            # A finish to retry/ wrote it; the claim after deletes it, so
            # it is there only after a crash. Due, it would only cost a
            # claim a copy that finds nothing in retry/.
            self._delete(retry_index.entry_path(name, not_before))
        letter.outcome = REPLAYED


def in_window(received_at, since, until):
    if received_at is None:
        return since is None and until is None  # not a Maildir name: only with --all
    return (since is None or received_at >= since) and (until is None or received_at < until)


def _count(metadata, key):
    try:
        return int(metadata.get(key, 0))
    except ValueError:
        return 0


def _seconds(text):
    try:
        return float(text) if text else None
    except ValueError:
        return None
