"""What is in the queue: counts per state, the oldest waiting; and purging the old.

``stats`` runs every minute (the role's textfile timer), so what it costs
must follow the work, not the history: it lists every name in the
container except those in done/ (two listings: the names sorting before
``done/`` and those after it), and takes done/'s figures as the
container's totals, which Swift keeps in the container's headers, minus
everything listed. done/, which grows by every message ever processed, is
never listed; what is listed is the work (cur/, processing/, retry/,
failed/) and the queue's own bounded bookkeeping (locks/, retry-at/, and
dedup/ for the dedup window).
"""

from datetime import UTC, datetime

from ..envelope import ENVELOPES, envelope_path
from ..links import ATTACHMENTS
from ..naming import delivery_time
from .states import CUR, DONE, PREFIXES

# "/" sorts before "0": names below DONE come before done/, names from
# AFTER_DONE on come after it.
AFTER_DONE = DONE[:-1] + "0"


class Counting:
    """``swiftdrop queue stats`` and ``purge``."""

    def purge(self, older_than, prefix=DONE, execute=False):
        """Messages under `prefix` that entered it more than `older_than` seconds ago.

        Deletes them only with `execute`; by default it only tells. What is
        kept beside a purged message goes with it, as nothing reads it once
        the message is gone: its recipient list (envelopes/, only for long
        envelopes) and the attachments a webhook stored for it to be
        fetched by link (attachments/<name>/, one object each).
        """
        cutoff = self.clock() - older_than
        old = [item for item in self.listing(prefix)
               if listed_time(item["last_modified"]) < cutoff]
        if prefix != ENVELOPES:
            kept_beside = {item["name"] for item in self.listing(ENVELOPES)}
            purged = {item["name"].rpartition("/")[2] for item in old}
            old += [{**item, "name": side} for item in list(old)
                    if (side := envelope_path(item["name"])) in kept_beside]
            old += [item for item in self.listing(ATTACHMENTS)
                    if item["name"][len(ATTACHMENTS):].partition("/")[0] in purged]
        if execute:
            for item in old:
                self._delete(item["name"])
        return old

    def stats(self):
        """Count and bytes per state, and how long the oldest message in cur/ has waited.

        done/'s count and bytes are the container's totals minus all else,
        never below 0. Swift updates a container's totals shortly after a
        write, as it does its listings: both may lag by a moment.
        """
        headers, before = self.connection.get_container(
            self.container, end_marker=DONE, full_listing=True)
        after = self.connection.get_container(
            self.container, marker=AFTER_DONE, full_listing=True)[1]
        result = {prefix: {"count": 0, "bytes": 0} for prefix in PREFIXES}
        listed = {"count": 0, "bytes": 0}
        oldest = None
        for item in before + after:
            listed["count"] += 1
            listed["bytes"] += item["bytes"]
            prefix = item["name"].split("/", 1)[0] + "/"
            if prefix in result:
                result[prefix]["count"] += 1
                result[prefix]["bytes"] += item["bytes"]
            if prefix == CUR:
                delivered = delivery_time(item["name"])
                if delivered is not None and (oldest is None or delivered < oldest):
                    oldest = delivered
        result[DONE] = {
            "count": max(0, int(headers.get("x-container-object-count", 0)) - listed["count"]),
            "bytes": max(0, int(headers.get("x-container-bytes-used", 0)) - listed["bytes"])}
        result["oldest_cur_age_seconds"] = (
            round(self.clock() - oldest, 3) if oldest is not None else None)
        return result


def listed_time(last_modified):
    """Swift listings say 2026-11-25T23:41:07.123456 (UTC)."""
    return datetime.fromisoformat(last_modified).replace(tzinfo=UTC).timestamp()
