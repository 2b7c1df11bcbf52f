"""Recover: crash leftovers resolved, and the messages of dead workers returned to retry/.

What it lists follows the work, not the history: every move passes through
processing/ (cur/ and retry/ into it, it into done/, failed/ or retry/), so
every crash leftover has a copy there, and recover lists processing/ in
full but never done/. The other states are asked about (HEADs) only for the
names in processing/ whose lock it takes. It lists retry/ and the retry
index too, both as long as the retries waiting, to keep the index whole.
"""

import time

from ..libraries import ClientException
from . import retry_index
from .states import CUR, DONE, FAILED, META, PROCESSING, RETRY, Claimed, LostLock
from .stats import listed_time


class Recovery:
    """What ``swiftdrop queue recover`` does, one lock at a time."""

    def recover(self):
        """Resolve crash leftovers and return messages of dead workers to retry/.

        Returns (action, name) pairs for the operator.
        """
        actions = []
        taken = []
        try:
            for item in self.listing(PROCESSING):
                name = item["name"][len(PROCESSING):]
                token = self._acquire(name)
                if token is None:
                    continue  # a live worker holds it
                taken.append((name, token, time.monotonic()))
            for name, token, since in taken:
                # Its holder's lease has run out; what that holder sent in
                # time may still be on its way: give it the grace to land.
                time.sleep(max(0.0, since + self.grace - time.monotonic()))
                try:
                    actions.extend(self._recover_one(name, token))
                except LostLock:
                    continue  # our lease ran out meanwhile: whoever took it settles it
                if self.heartbeat.holds(name, token):
                    self._let_go(name, token)
        finally:
            for name, token, _ in taken:
                if self.heartbeat.holds(name, token):
                    self._let_go(name, token)
        actions.extend(self._mend_retry_index())
        return actions

    def _exists(self, path):
        try:
            self.connection.head_object(self.container, path)
        except ClientException as error:
            if error.http_status == 404:
                return False
            raise
        return True

    def _remove(self, name, token, prefix):
        """Delete prefix+name under our lock; True if there was one to delete."""
        self._keep(name, token)
        try:
            self.connection.delete_object(self.container, prefix + name)
        except ClientException as error:
            if error.http_status == 404:
                return False
            raise
        return True

    def _recover_one(self, name, token):
        """Settle one name found in processing/, whose lock is ours now."""
        # The listing may be older than a worker's finish that landed before
        # we took the lock, or during the grace: then the message has moved
        # on, and what is in processing/ may be a leftover.
        try:
            headers = self.connection.head_object(self.container, PROCESSING + name)
        except ClientException as error:
            if error.http_status == 404:
                return []
            raise
        # A claim from cur/ that crashed between copy and delete left its source.
        actions = [(f"removed leftover {CUR}", name)] if self._remove(name, token, CUR) else []
        if self._exists(DONE + name) or self._exists(FAILED + name):
            # A finish that crashed between copy and delete.
            actions += [(f"removed leftover {prefix}", name) for prefix in (RETRY, PROCESSING)
                        if self._remove(name, token, prefix)]
            return actions
        # A leftover in retry/ (of a claim from there, or of a finish to
        # there) needs no request of its own: the move below replaces it.
        attempts = int(headers.get(META + "attempts", 0))
        # Its worker may have handed it over before it died: count that.
        # Fenced by the copy it saw: one claimed again since is not moved.
        claimed = Claimed(name, b"", {}, token, attempts=attempts,
                          delivery=int(headers.get(META + "deliveries", 0)) + 1,
                          fence=headers.get("last-modified"))
        try:
            worker = headers.get(META + "claimed-by", "unknown worker")
            target = self.finish(claimed, "retry", {"Recovered-From": worker},
                                 reason=f"the lease of {worker} ran out")
        except LostLock:
            return actions  # moved on between our HEAD and our copy
        actions.append((f"lease expired, moved to {target}", name))
        return actions

    def _mend_retry_index(self):
        """One entry for each message in retry/, and none for a message not there.

        A message without an entry was put in retry/ by an older version (or
        by hand): its Not-Before is read once, here, not at every claim. Of
        two entries of one name the earlier is a crash's leftover of an
        earlier retry (the later is always the newer finish's): it goes, or
        it would let the message be claimed before its time. An entry
        without a message is removed only when it is older than a lease and
        its grace and a HEAD confirms the message is gone: a younger one may
        be a finish's, written just before its copy.
        """
        actions = []
        waiting = {item["name"][len(RETRY):] for item in self.listing(RETRY)}
        latest = {}  # name: its listed entry with the latest Not-Before
        for item in self.listing(retry_index.RETRY_AT):
            entry = retry_index.parse(item["name"])
            if entry is None:
                continue
            name = entry[1]
            if name in latest:  # listed oldest first: the one before is superseded
                self._delete(latest[name]["name"])
                actions.append((f"removed superseded {retry_index.RETRY_AT} entry", name))
            latest[name] = item
        now = time.time()  # the entries' listed times are Swift's, not our (test) clock's
        for name, item in latest.items():
            if name in waiting:
                continue
            age = now - listed_time(item["last_modified"])
            if age > self.settings.lease + self.grace and not self._exists(RETRY + name):
                self._delete(item["name"])
                actions.append((f"removed stale {retry_index.RETRY_AT} entry", name))
        for name in sorted(waiting - latest.keys()):
            try:
                headers = self.connection.head_object(self.container, RETRY + name)
            except ClientException as error:
                if error.http_status == 404:
                    continue  # claimed meanwhile
                raise
            not_before = float(headers.get(META + "not-before", 0))
            self.connection.put_object(
                self.container, retry_index.entry_path(name, not_before), "")
            actions.append((f"added {retry_index.RETRY_AT} entry", name))
        return actions
