"""Work through a SwiftDrop container as a queue, safely, with many workers.

The container's prefixes are the states of a message; an object keeps its
Maildir base name in all of them:

``cur/``         stored by the filter, waiting
``processing/``  claimed by a worker, under its lock
``retry/``       to be tried again, not before ``X-Object-Meta-Not-Before``
``done/``        processed
``failed/``      given up on (or failed permanently); ``Failed-Reason`` says why

A move is a server-side copy (``X-Copy-From``) followed by a delete of the
source, done only while holding the message's lock: the lock is what keeps
two workers from moving the same message, so nothing is checked that the
lock already proves. The lock taken by ``claim`` is held, and refreshed by
the queue's heartbeat (swiftdrop.lease), until ``finish`` has moved the
message on; if the worker dies its lease runs out, and ``recover`` moves the
message to ``retry/``. A crash between copy and delete leaves one name under
two prefixes; ``recover`` keeps the copy that is furthest along and deletes
the other. Each hand-over to a consumer is counted (``Deliveries``), so that
a repeat is known as one.

A claim and its finish cost 8 Swift requests with the Swift lock (lock PUT
and read-back, copy, delete, GET; copy, delete, lock DELETE), 5 with Redis
(plus a GET at Redis at finish); a worker lists ``cur/`` a page at a time,
not once per claim. A worker waits for 7 round trips of those 8: the delete
that completes the claim's move runs on a second connection beside the GET
of the message, which does not depend on it. A retry costs one request
more at each end (its entry in the retry index, swiftdrop.queue.retry_index);
``stats`` and ``recover`` never list ``done/`` (docs/queue.md, What it costs).
"""

import os
import socket
import time

from ..failures import service_errors
from ..lease import Heartbeat, longest_request
from ..locks import make_lock
from .claim import Claiming
from .connection import connect, refusal
from .dedup import Dedup
from .finish import Finishing
from .holding import Holding
from .moves import Moves
from .recover import Recovery
from .replay import Replaying
from .states import PREFIXES, Claimed, LostLock
from .stats import Counting

__all__ = ["PREFIXES", "Claimed", "LostLock", "MailQueue", "connect"]


class MailQueue(Claiming, Finishing, Recovery, Replaying, Counting, Dedup, Holding, Moves):
    """Claim, finish, recover, replay, purge and count messages of one destination's container.

    Each concern is a module of this package (claim, finish, recover, replay,
    stats, dedup, holding, moves); this class gives them one connection, one lock
    and one heartbeat.
    """

    def __init__(self, destination, connection=None, lock=None, clock=time.time):
        self.destination = destination
        self.settings = destination.queue
        self.container = destination.container
        # Where --dedup markers go: this container, or one of all the shards'.
        self.marker_containers = (self.container,)
        self.connection = connection or connect(destination)
        account = destination.account
        # The longest one request may take: a step under the lock starts only
        # with this much of the lease left, and recover waits this long for
        # what a holder whose lease ran out may still have on its way.
        self.request_time = self.grace = longest_request(account.timeout, account.retries)
        self.lock = lock or make_lock(
            self.settings, self.connection, self.container, namespace=self.container,
            # lock writes go out once, never resent (swiftdrop.locks)
            lock_connection=lambda: connect(destination, self.connection.url,
                                            self.connection.token, retries=0),
            attempt_time=account.timeout)
        lease = self.settings.lease
        self.heartbeat = Heartbeat(
            self.lock, lease, errors=(*service_errors(), *self.lock.errors),
            refresh_below=max((lease - self.lock.margin) * 2 / 3, self.request_time))
        self.clock = clock
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._waiting = []  # names of the cur/ page listed last, to claim in order
        self._page_outdated = False
        self._retry_entries = {}  # name: its retry index entry, of the due retries offered
        self._beside = None  # (executor, connection) for a delete beside the next request

    @property
    def errors(self):
        """What the lock can raise when its server misbehaves (Swift's own aside)."""
        return self.lock.errors

    def close(self):
        """Stop the heartbeat; locks still held run out by themselves."""
        self.heartbeat.stop()
        if self._beside is not None:
            self._beside[0].shutdown()
            self._beside = None

    def refusal(self, error):
        """One line naming the right Swift refused this user (a 403), else None."""
        return refusal(self.destination, error)

    def holder(self, claimed):
        """The queue that holds `claimed`: this one (a sharded queue has one per shard)."""
        return self
