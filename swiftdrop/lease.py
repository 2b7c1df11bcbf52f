"""How long a queue lock must last, and the heartbeat that keeps it from claim to finish.

A lock is worth what its holder can be sure of by its own clock, so four
rules decide what a holder may do (docs/queue.md, "Leases"):

* It counts its lease from just before it sent the request that set it,
  less ``margin``: Swift keeps a lock object's expiry in whole seconds,
  rounded down, so the object can vanish up to a second before "lease
  seconds after our request" (LEASE_MARGIN); the rest is for the clocks.
* A request that must happen under the lock (either half of a move) starts
  only while the lease surely has :func:`longest_request` left: the time of
  every attempt swiftclient makes and its back-off between them. Then each
  attempt reaches Swift while the lock is ours, and Swift's timestamps put
  it before anything a next holder does.
* One :class:`Heartbeat` thread per queue refreshes every lock the queue
  holds, from acquire to release: through claim, the command and finish
  alike, so that no slow request eats the lease.
* ``recover`` moves a message only a grace of :func:`longest_request` after
  it took the lock its holder let run out: a request that holder sent in
  time has landed by then.

So a lease must hold one whole request and the margin, plus a second for
the heartbeat, which extends a lease by whole seconds (:func:`shortest_lease`,
checked when the ini is read). Nothing here sends a request itself.
"""

import logging
import math
import threading
import time

log = logging.getLogger(__name__)

# Swift stores X-Delete-At in whole seconds, rounded down.
SWIFT_ROUNDING = 1.0
# Our clock against Swift's or Redis's over one lease; and the servers' among themselves.
CLOCK_MARGIN = 0.5
LEASE_MARGIN = SWIFT_ROUNDING + CLOCK_MARGIN
# Room for the heartbeat: it extends a lease by whole seconds.
HEARTBEAT_ROOM = 1.0
# swiftclient's back-off between the attempts of one request: 1 s, doubling, at most 64 s.
BACKOFF_START, BACKOFF_LONGEST = 1.0, 64.0
# A refresh that failed is tried again this much later.
RETRY_PAUSE = 1.0


def longest_request(timeout, retries):
    """Seconds one swiftclient call may take: each of its attempts timing out, and the waits."""
    backoff = sum(min(BACKOFF_START * 2 ** attempt, BACKOFF_LONGEST)
                  for attempt in range(retries))
    return timeout * (retries + 1) + backoff


def shortest_lease(timeout, retries):
    """The shortest queue_lease that holds one whole request (whole seconds, as Swift counts)."""
    return math.ceil(longest_request(timeout, retries) + LEASE_MARGIN + HEARTBEAT_ROOM)


class Heartbeat:
    """Refreshes the locks one queue holds, in a thread of its own, until they are dropped.

    A lock is refreshed once `refresh_below` seconds or fewer of its lease
    are surely left (the lock kind's ``remaining``); a refresh that fails is
    tried again RETRY_PAUSE later, for as long as the lock kind allows. One
    it finds to be someone else's (or too late to extend safely) is dropped
    and noted in ``lost``; the holder's next step under it then stops.
    """

    def __init__(self, lock, lease, *, refresh_below, errors):
        self.lock = lock
        self.lease = lease
        self.refresh_below = refresh_below
        self.errors = errors  # what a refresh may raise when Swift or Redis misbehaves
        self.lost = set()
        self._held = {}  # (name, token) -> monotonic time before which not to try again
        self._changed = threading.Condition()
        self._thread = None
        self._stopping = False

    def hold(self, name, token):
        with self._changed:
            self._held[(name, token)] = 0.0
            self.lost.discard((name, token))
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name="queue-heartbeat",
                                                daemon=True)
                self._thread.start()
            self._changed.notify()

    def drop(self, name, token):
        with self._changed:
            self._held.pop((name, token), None)
            self.lost.discard((name, token))
            self._changed.notify()

    def holds(self, name, token):
        return (name, token) in self._held

    def stop(self):
        """End the thread; the locks it held run out unless released."""
        with self._changed:
            thread, self._thread = self._thread, None
            self._stopping = True
            self._held.clear()
            self._changed.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _wait(self, key, not_before):
        return max(not_before - time.monotonic(),
                   self.lock.remaining(*key) - self.refresh_below)

    def _run(self):
        while True:
            with self._changed:
                while True:
                    if self._stopping:
                        return
                    waits = {key: self._wait(key, not_before)
                             for key, not_before in self._held.items()}
                    due = [key for key, wait in waits.items() if wait <= 0]
                    if due:
                        break
                    self._changed.wait(min(waits.values(), default=None))
            for key in due:
                self._beat(key)

    def _beat(self, key):
        name = key[0]
        try:
            ours = self.lock.refresh(*key, self.lease)
        except self.errors as error:
            log.warning("cannot refresh the lock on %s: %s; trying again in %.0f s",
                        name, error, RETRY_PAUSE)
            ours, pause = True, RETRY_PAUSE
        else:
            pause = 1.0  # a lease grows by whole seconds: nothing to gain sooner
        with self._changed:
            if key not in self._held:
                return  # released meanwhile
            if ours:
                self._held[key] = time.monotonic() + pause
                return
            del self._held[key]
            self.lost.add(key)
        log.error("lost the lock on %s: it ran out or is someone else's now", name)
