"""Recover: crash leftovers resolved, and the messages of dead workers returned to retry/."""

import time

from ..libraries import ClientException
from .states import DONE, FAILED, META, PREFIXES, PROCESSING, PROGRESS, Claimed, LostLock


class Recovery:
    """What ``swiftdrop queue recover`` does, one lock at a time."""

    def recover(self):
        """Resolve crash leftovers and return messages of dead workers to retry/.

        Returns (action, name) pairs for the operator.
        """
        actions = []
        where = {}
        for prefix in PREFIXES:
            for item in self.listing(prefix):
                where.setdefault(item["name"][len(prefix):], []).append(prefix)
        taken = []
        try:
            for name, prefixes in sorted(where.items()):
                if len(prefixes) == 1 and prefixes[0] != PROCESSING:
                    continue
                token = self._acquire(name)
                if token is None:
                    continue  # a live worker holds it
                taken.append((name, prefixes, token, time.monotonic()))
            for name, prefixes, token, since in taken:
                # Its holder's lease has run out; what that holder sent in
                # time may still be on its way: give it the grace to land.
                time.sleep(max(0.0, since + self.grace - time.monotonic()))
                actions.extend(self._recover_one(name, prefixes, token))
                if self.heartbeat.holds(name, token):
                    self._let_go(name, token)
        finally:
            for name, _, token, _ in taken:
                if self.heartbeat.holds(name, token):
                    self._let_go(name, token)
        return actions

    def _exists(self, path):
        try:
            self.connection.head_object(self.container, path)
        except ClientException as error:
            if error.http_status == 404:
                return False
            raise
        return True

    def _recover_one(self, name, prefixes, token):
        actions = []
        keep = max(prefixes, key=PROGRESS.__getitem__)
        for prefix in prefixes:
            if prefix != keep:
                self._keep(name, token)
                self._delete(prefix + name)
                actions.append((f"removed leftover {prefix}", name))
        if keep == PROCESSING:
            # The listing may be older than a worker's finish that landed
            # before we took the lock, or during the grace: then the message
            # has moved on, and what is in processing/ may be a leftover.
            try:
                headers = self.connection.head_object(self.container, PROCESSING + name)
            except ClientException as error:
                if error.http_status == 404:
                    return actions
                raise
            if self._exists(DONE + name) or self._exists(FAILED + name):
                self._keep(name, token)
                self._delete(PROCESSING + name)
                actions.append((f"removed leftover {PROCESSING}", name))
                return actions
            attempts = int(headers.get(META + "attempts", 0))
            # Its worker may have handed it over before it died: count that.
            # Fenced by the copy it saw: one claimed again since is not moved.
            claimed = Claimed(name, b"", {}, token, attempts=attempts,
                              delivery=int(headers.get(META + "deliveries", 0)) + 1,
                              fence=headers.get("last-modified"))
            try:
                target = self.finish(claimed, "retry", {"Recovered-From": headers.get(
                    META + "claimed-by", "unknown worker")})
            except LostLock:
                return actions  # moved on between our HEAD and our copy
            actions.append((f"lease expired, moved to {target}", name))
        return actions
