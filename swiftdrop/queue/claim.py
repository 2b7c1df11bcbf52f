"""Claiming: which message comes next, and taking it into processing/ under its lock."""

from functools import partial
import logging
import random

from . import retry_index
from .envelope import read_recipients
from .states import CUR, PROCESSING, RETRY, Claimed, LostLock, metadata_of

log = logging.getLogger(__name__)

CLAIM_WINDOW = 64
CLAIM_PAGE = 1000
# Listings of cur/ one claim may make after finding its page out of date.
# Each such finding means another worker took a message; the bound only
# keeps a container listing that lags behind deletions from spinning us.
CLAIM_RELISTS = 3


class Claiming:
    """The worker's side of cur/ and retry/: find a waiting message and take it."""

    def candidates(self):
        """Oldest first: cur/ (names begin with the delivery time), then due retries.

        The due retries come from one listing of the retry index that ends
        at now (swiftdrop.queue.retry_index), not from a HEAD of each
        message in retry/. `_retry_entries` keeps the index entry of each
        retry offered, for the claim to delete once the message is taken.
        """
        for name in self._waiting_names():
            yield CUR, name
        due = self.connection.get_container(
            self.container, prefix=retry_index.RETRY_AT, limit=CLAIM_PAGE,
            end_marker=retry_index.due_before(self.clock()))[1]
        self._retry_entries = {}
        for item in due:
            entry = retry_index.parse(item["name"])
            if entry is None:
                continue
            name = entry[1]
            self._retry_entries[name] = item["name"]
            yield RETRY, name

    def _waiting_names(self):
        """Names from this worker's page of cur/, and from a new page once it is used up.

        Approximately oldest first: each page's CLAIM_WINDOW oldest come in
        random order, so that workers do not all race for the very oldest
        message. A name another worker holds fails at the lock and costs one
        request; a name another worker has already finished is gone from
        cur/, which shows the whole page is out of date: it is dropped and
        cur/ listed again, rather than walking every name others have taken.
        """
        listings = 0
        while True:
            if not self._waiting:
                if listings > CLAIM_RELISTS or (listings and not self._page_outdated):
                    return
                self._page_outdated = False
                page = [item["name"][len(CUR):] for item in self.connection.get_container(
                    self.container, prefix=CUR, limit=CLAIM_PAGE)[1]]
                head = page[:CLAIM_WINDOW]
                random.shuffle(head)
                self._waiting = (head + page[CLAIM_WINDOW:])[::-1]  # pop() takes the oldest
                listings += 1
                if not self._waiting:
                    return
            yield self._waiting.pop()

    def claim(self, dedup=False):
        """Take the oldest waiting message; None when there is nothing to do.

        Its lock is refreshed by the heartbeat until ``finish`` (or ``abandon``).
        """
        skipped = []
        for source, name in self.candidates():
            token = self._acquire(name)
            if token is None:
                continue
            try:
                claimed = self._take(source, name, token, skipped, dedup)
                if claimed is not None and dedup:
                    original = self.duplicate_of(claimed)
                    if original and original != name:  # its own marker: a replay from done/
                        self.finish(claimed, "done", {"Duplicate-Of": original})
                        skipped.append(name)
                        continue
            except LostLock:
                continue  # someone else's now
            except BaseException:
                # Nothing was handed over: free the lock for whoever comes next.
                self._let_go(name, token)
                raise
            if claimed is None:
                continue
            claimed.delivery += 1  # handed over now
            return claimed
        return None

    def _take(self, source, name, token, skipped, dedup=False):
        """Move `name` from `source` to processing/ under our lock; None if it is not ours to take.

        The Claimed's `delivery` counts the hand-overs before this one.
        """
        self._keep(name, token)
        entry = self._retry_entries.pop(name, None) if source == RETRY else None
        now = self.clock()
        # The token is recorded on the claimed object: a claim that finds
        # another's there knows it was not alone, and `swiftdrop queue finish`
        # acts only with the token of the claim.
        copied = self.copy(name, source, PROCESSING, {
            "Claimed-By": self.worker, "Claimed-At": f"{now:.3f}", "Lock-Token": token,
            # so that a `queue finish` in another process knows to leave a dedup marker
            "Dedup": "1" if dedup else "0"})
        if not copied:
            if entry is not None:
                self._delete(entry)  # a crash's leftover: no retry/ object behind it
            self._release(name, token)
            if source == CUR:
                self._waiting.clear()
                self._page_outdated = True
            return None
        self._keep(name, token)
        headers, body = self._delete_beside(source + name, partial(
            self.connection.get_object, self.container, PROCESSING + name))
        if entry is not None:
            self._delete(entry)  # after the move: a retry/ object always has one
        metadata = metadata_of(headers)
        if metadata.get("lock-token") != token:
            # Another claimer's copy replaced ours: it got the lock too (the
            # Swift lock cannot exclude every race) and hands the message
            # over; we do not. The lock is left to it.
            log.warning("%s was claimed by %s at the same time; leaving it to that claim",
                        name, metadata.get("claimed-by", "another worker"))
            self._forget(name, token)
            return None
        # Our copy's Last-Modified fences every move of it (Claimed.fence).
        return Claimed(name, body, metadata, token, attempts=int(metadata.get("attempts", 0)),
                       skipped_duplicates=skipped,
                       delivery=int(metadata.get("deliveries", 0)),
                       fence=headers.get("last-modified"),
                       recipients=read_recipients(self.connection, self.container, metadata),
                       dedup=dedup, replayed=int(metadata.get("replayed", 0)))
