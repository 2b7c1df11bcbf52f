"""Finishing: moving a claimed message on to done/, failed/ or retry/, and letting go."""

from functools import partial

from ..retries import retry_delay
from .retry_index import entry_path
from .states import DONE, FAILED, PROCESSING, RETRY, LostLock


class Finishing:
    """The end of a claim: the move, the retry schedule, the release."""

    def finish(self, claimed, state, metadata=None, *, reason=None, wait_at_least=None):
        """Move a claimed message to done/, failed/ or retry/ and release its lock.

        ``retry`` counts an attempt and sets a not-before time with
        exponential back-off; the last allowed attempt goes to failed/.
        Whatever lands in failed/ says why in ``Failed-Reason``, the one key
        a person replaying failed/ looks at: `reason` for a message failed
        outright (``exit status 65``; required then), ``gave up after N
        attempts`` for one whose attempts ran out, followed by ``; last:
        `reason``` when a retry gives one (``killed by SIGKILL``). A retry
        waits at least `wait_at_least` seconds if given (a webhook's
        Retry-After), but no longer than ``queue_retry_longest``.
        The lock is released once the move is complete. An error of Swift's
        or Redis's leaves it held (the heartbeat goes on): a finish tried
        again with the same Claimed goes on from where this one stopped.
        LostLock means the lock is someone else's now.
        """
        metadata = dict(metadata or {})
        target = {"done": DONE, "failed": FAILED, "retry": RETRY}[state]
        now = self.clock()
        if state == "failed":
            if not reason:
                raise ValueError(f"{claimed.name}: a message finished as failed needs a "
                                 "reason (its Failed-Reason)")
            metadata["Failed-Reason"] = reason
        if state == "retry":
            attempts = claimed.attempts + 1
            metadata["Attempts"] = attempts
            if attempts >= self.settings.max_attempts:
                target = FAILED
                metadata["Failed-Reason"] = f"gave up after {attempts} attempts" + (
                    f"; last: {reason}" if reason else "")
            else:
                delay = retry_delay(self.settings, attempts)
                if wait_at_least:
                    delay = max(delay, min(wait_at_least, self.settings.retry_longest))
                metadata["Not-Before"] = f"{now + delay:.3f}"
        metadata["Finished-At"] = f"{now:.3f}"
        metadata["Deliveries"] = claimed.delivery
        name, token = claimed.name, claimed.token
        if claimed.moved_to is None:
            self._keep(name, token)
            if target == RETRY:
                # Before the copy: a retry/ object is never left without its
                # entry, which is how a claim finds it due (retry_index).
                self.connection.put_object(
                    self.container, entry_path(name, float(metadata["Not-Before"])), "")
                self._keep(name, token)
            if not self.copy(name, PROCESSING, target, metadata, fence=claimed.fence):
                self._forget(name, token)
                raise LostLock(name)  # moved on, or claimed again, by a later holder
            claimed.moved_to = target
        target = claimed.moved_to
        self._keep(name, token)
        self._delete_beside(PROCESSING + name,
                            partial(self._after_move, claimed, target, metadata))
        # Only now: released before the delete is done, the lock would let
        # recover find processing/<name> free and send a finished message round again.
        self._let_go(name, token)
        return target

    def _after_move(self, claimed, target, metadata):
        """What a finish does beside the delete that completes its move: the dedup marker."""
        if target == DONE and "Duplicate-Of" not in metadata:
            self.remember_done(claimed)
