"""Holding a message's lock from claim to finish, with the queue's heartbeat.

The rules a holder follows are swiftdrop.lease's; the lock kinds are
swiftdrop.locks'.
"""

import logging

from .states import LostLock

log = logging.getLogger(__name__)


class Holding:
    """Acquire, keep, release or abandon the locks of one queue."""

    def _acquire(self, name):
        token = self.lock.acquire(name, self.settings.lease)
        if token is not None:
            self.heartbeat.hold(name, token)
        return token

    def _keep(self, name, token):
        """Make sure the lock is ours for one more whole request, or raise LostLock.

        The heartbeat sees to that as a rule; when it has not (yet), or the
        lock was taken in another process (``queue finish``), refresh it now.
        A Swift or Redis error leaves the lock held and is raised.
        """
        if self.lock.remaining(name, token) >= self.request_time:
            return
        if self.lock.refresh(name, token, self.settings.lease) \
                and self.lock.remaining(name, token) >= self.request_time:
            self.heartbeat.hold(name, token)
            return
        self._forget(name, token)
        raise LostLock(name)

    def _release(self, name, token):
        self.heartbeat.drop(name, token)
        self.lock.release(name, token)

    def _forget(self, name, token):
        """Stop refreshing the lock and leave it to run out."""
        self.heartbeat.drop(name, token)
        self.lock.forget(name, token)

    def _let_go(self, name, token):
        """Release a lock we no longer need, or let it run out if Swift or Redis is away."""
        try:
            self._release(name, token)
        except self.heartbeat.errors as error:
            self._forget(name, token)
            log.warning("cannot release the lock on %s: %s; it runs out by itself",
                        name, error)

    def check(self, claimed):
        """Raise LostLock if the heartbeat found the claim's lock gone or someone else's."""
        if (claimed.name, claimed.token) in self.heartbeat.lost:
            self._forget(claimed.name, claimed.token)
            raise LostLock(claimed.name)

    def abandon(self, claimed):
        """Give up a claim without finishing it: its lock runs out and recover returns it."""
        self._forget(claimed.name, claimed.token)


    def refresh(self, claimed):
        """Extend the claim's lease now (the heartbeat does it on its own)."""
        if not self.lock.refresh(claimed.name, claimed.token, self.settings.lease):
            self._forget(claimed.name, claimed.token)
            raise LostLock(claimed.name)
