"""What is in the queue: counts per state, the oldest waiting; and purging the old."""

from datetime import UTC, datetime

from .states import CUR, DONE, PREFIXES


class Counting:
    """``swiftdrop queue stats`` and ``purge``."""

    def purge(self, older_than, prefix=DONE, execute=False):
        """Messages under `prefix` that entered it more than `older_than` seconds ago.

        Deletes them only with `execute`; by default it only tells.
        """
        cutoff = self.clock() - older_than
        old = [item for item in self.listing(prefix)
               if _timestamp(item["last_modified"]) < cutoff]
        if execute:
            for item in old:
                self._delete(item["name"])
        return old

    def stats(self):
        """Count and bytes per prefix, and how long the oldest message has waited."""
        result = {}
        for prefix in PREFIXES:
            items = self.listing(prefix)
            result[prefix] = {"count": len(items), "bytes": sum(i["bytes"] for i in items)}
        waiting = self.listing(CUR)
        times = [_delivery_time(item["name"]) for item in waiting]
        oldest = min((t for t in times if t is not None), default=None)
        result["oldest_cur_age_seconds"] = (
            round(self.clock() - oldest, 3) if oldest is not None else None)
        return result



def _timestamp(last_modified):
    """Swift listings say 2026-11-25T23:41:07.123456 (UTC)."""
    return datetime.fromisoformat(last_modified).replace(tzinfo=UTC).timestamp()


def _delivery_time(path):
    """The delivery time encoded in a Maildir name: <seconds>.M<microseconds>..."""
    base = path.rsplit("/", 1)[-1]
    seconds, _, rest = base.partition(".M")
    try:
        return int(seconds) + int(rest[:6]) / 1e6
    except ValueError:
        return None
