"""The stream queue's books: dead letters and replay, stats, and purge.

A consumer group's state is Redis's (swiftdrop.queue.stream): these read it,
and purge is the one place a body leaves Swift, once every group is through
with it.
"""

import json
import time

from ..libraries import ClientException
from ..naming import delivery_time
from ..stream_index import StreamIndex, announce_lag, group_keys
from .replay import NOT_FOUND, REPLAYED, WOULD_REPLAY, DeadLetter, in_window
from .states import CUR, DONE, FAILED, PROCESSING, RETRY

PURGE_PAGE = 1000
# Fields of a replayed entry that describe the replay, not the copy.
REPLAY_FIELDS = ("replay_of", "for_group", "replayed", "prior_deliveries")


def entry_time(entry_id):
    """The unix time an entry was added: its id's milliseconds."""
    return int(entry_id.partition("-")[0]) / 1000


class StreamBooks:
    """``replay``, ``stats`` and ``purge`` of StreamQueue, which gives the Redis client and keys."""

    def dead_letters(self):
        """{entry id: the dead letter} of this group."""
        return {entry_id: json.loads(value) for entry_id, value in
                self.client.hgetall(self.group_keys["failed"]).items()}

    def replay(self, source, names=(), since=None, until=None, execute=False):
        """Dead letters of this group back into the stream, for this group only.

        A replayed entry is a new entry with the copy's fields, ``replay_of``
        the old one, ``replayed`` counted up and the deliveries before it, so
        that its delivery counts on from there. The other groups skip it.
        """
        if source != FAILED:
            raise ValueError("replay --from done/ needs the listing queue; the stream index "
                             "replays dead letters (failed/)")
        letters = self.dead_letters()
        by_name = {letter["name"]: entry_id for entry_id, letter in letters.items()}
        if names:
            chosen = [(name, by_name.get(name)) for name in names]
        else:
            chosen = sorted(((letter["name"], entry_id) for entry_id, letter in letters.items()
                             if in_window(delivery_time(letter["name"]), since, until)),
                            key=lambda pair: delivery_time(pair[0]) or 0)
        result = []
        for name, entry_id in chosen:
            if entry_id is None:
                result.append(DeadLetter(name, source, delivery_time(name), outcome=NOT_FOUND,
                                         reason=f"not a dead letter of group {self.group}"))
                continue
            letter = letters[entry_id]
            dead = DeadLetter(name, source, delivery_time(name), attempts=letter["attempts"],
                              deliveries=letter["deliveries"], replayed=letter["replayed"],
                              failed_reason=letter["reason"],
                              last_error=letter["metadata"].get("Last-Error", ""))
            if execute:
                added = self._replay(
                    keys=[self.keys["stream"], self.group_keys["failed"],
                          self.group_keys["attempts"]],
                    args=[entry_id, self.group, letter["replayed"] + 1, letter["deliveries"],
                          *REPLAY_FIELDS])
                dead.outcome = REPLAYED if added else NOT_FOUND
                dead.reason = "" if added else "replayed or purged meanwhile"
            else:
                dead.outcome = WOULD_REPLAY
            result.append(dead)
        return result

    def stats(self):
        """The group's counts per state, as MailQueue.stats; without a group, every group's.

        cur/ is what the group has not read yet, processing/ and retry/ its
        pending entries, done/ and failed/ what it finished (failed/: the
        dead letters still kept). A group that does not exist yet is one
        that has read nothing; none is created. Costs a few requests and a
        read of each entry waiting or in work, and the announce lag one
        page of cur/'s newest (swiftdrop.stream_index).
        """
        lag = announce_lag(StreamIndex(None, self.container, client=self.client),
                           self.connection)
        if self.group is not None:
            return {**self.group_stats(self.group), "group": self.group,
                    "announce_lag_seconds": lag}
        return {"groups": {group: self.group_stats(group) for group in self.groups()},
                "announce_lag_seconds": lag}

    def group_stats(self, group):
        read_up_to = next((info["last-delivered-id"] for info in self._group_infos()
                           if info["name"] == group), "0-0")
        unread = [(entry_id, fields) for entry_id, fields in self.client.xrange(
                  self.keys["stream"], f"({read_up_to}", "+")
                  if fields.get("for_group", group) == group]
        ours = group_keys(self.container, group)
        leases = self.client.zrange(ours["leases"], 0, -1)
        retries = self.client.zrange(ours["retry"], 0, -1)
        counts = self.client.hgetall(ours["counts"])
        letters = list(self.client.hkeys(ours["failed"]))

        def figures(entries):
            return {"count": len(entries),
                    "bytes": sum(int(fields.get("size", 0)) for _, fields in entries)}

        result = {CUR: figures(unread), PROCESSING: figures(self._entries(leases)),
                  RETRY: figures(self._entries(retries)),
                  DONE: {"count": int(counts.get("done", 0)),
                         "bytes": int(counts.get("done_bytes", 0))},
                  FAILED: figures(self._entries(letters))}
        oldest = min((entry_time(entry_id) for entry_id, _ in unread), default=None)
        result["oldest_cur_age_seconds"] = (round(time.time() - oldest, 3)
                                            if oldest is not None else None)
        return result

    def _group_infos(self):
        """XINFO GROUPS of the stream; none before anything was announced."""
        try:
            return self.client.xinfo_groups(self.keys["stream"])
        except self.errors as error:
            if "no such key" in str(error).lower():
                return []
            raise

    def purge(self, older_than, prefix=DONE, execute=False):
        """Bodies every group is through with, announced over `older_than` seconds ago.

        ``done/``: every group finished it as done; ``failed/``: every
        group finished it, at least one as failed (its dead letters go
        too). A body is deleted once, with its recipient list; then its
        entries and its announcement, so that no group is handed a body
        that is gone (a claim that finds one gone drops its entry).
        """
        if prefix not in (DONE, FAILED):
            raise ValueError("the stream index purges done/ or failed/ messages")
        cutoff = time.time() - older_than
        groups = {group["name"]: group for group in self._group_infos()}
        if not groups:  # nobody has read anything: nobody is through with anything
            return []
        letters = {name: self._group_letters(name) for name in groups}
        entries_of = {}
        for entry_id, fields in self._all_entries():
            entries_of.setdefault(fields.get("name", ""), []).append((entry_id, fields))
        old = []
        for name, entries in entries_of.items():
            if entry_time(entries[-1][0]) >= cutoff:
                continue
            states = [self._state(entry_id, group, letters[group_name])
                      for entry_id, _ in entries for group_name, group in groups.items()]
            if "open" in states or (prefix == FAILED) != ("failed" in states):
                continue
            old.append({"name": CUR + name, "bytes": int(entries[0][1].get("size", 0)),
                        "last_modified": entries[-1][1].get("stored_at", ""),
                        "entries": [entry_id for entry_id, _ in entries]})
        if execute:
            for item in old:
                self._purge_one(item, groups)
        return old

    def _group_letters(self, group):
        return set(self.client.hkeys(group_keys(self.container, group)["failed"]))

    def _all_entries(self):
        start = "-"
        while True:
            page = self.client.xrange(self.keys["stream"], start, "+", count=PURGE_PAGE)
            yield from page
            if len(page) < PURGE_PAGE:
                return
            start = f"({page[-1][0]}"

    def _state(self, entry_id, group, letters):
        """done, failed or open: where `group` is with the entry."""
        if _later(entry_id, group["last-delivered-id"]):
            return "open"
        if self.client.xpending_range(self.keys["stream"], group["name"], entry_id, entry_id,
                                      1):
            return "open"
        return "failed" if entry_id in letters else "done"

    def _purge_one(self, item, groups):
        name = item["name"]
        for path in (name, f"envelopes/{name.removeprefix(CUR)}"):
            try:
                self.connection.delete_object(self.container, path)
            except ClientException as error:
                if error.http_status != 404:
                    raise
        pipe = self.client.pipeline(transaction=False)
        pipe.xdel(self.keys["stream"], *item["entries"])
        pipe.hdel(self.keys["announced"], name.removeprefix(CUR))
        for group in groups:
            pipe.hdel(group_keys(self.container, group)["failed"], *item["entries"])
        pipe.execute()


def _later(entry_id, other):
    """Whether stream id `entry_id` comes after `other`."""
    def parts(value):
        milliseconds, _, sequence = value.partition("-")
        return int(milliseconds), int(sequence or 0)
    return parts(entry_id) > parts(other)

