"""The queue on a Redis stream index: state in Redis, each body read once and never copied.

With ``queue_index = redis-stream`` the filter announces every stored copy
in the container's stream (swiftdrop.stream_index); a consumer group is one
team's view of it, and each group gets every message (fan-out), with its
own retries, dead letters and counts. Nothing moves in Swift: a message's
body stays at ``cur/<name>`` until ``purge`` deletes it, once, after every
group is through with it. What the listing queue does with prefixes, this
does with Redis's own structures:

=================  ==============================================================
claim              a due retry, else an expired lease, else ``XREADGROUP >``;
                   then one GET of the body
lease              a sorted set entry id -> expiry (Redis's clock), kept by the
                   heartbeat; ``XPENDING`` names the holder, so a holder whose
                   lease was taken over is refused at finish (LostLock)
finish done        ``XACK`` and a count
finish failed      ``XACK`` and a dead letter (a hash entry id -> JSON)
finish retry       the entry stays pending; a sorted set entry id -> not-before
delivery           the pending entry's delivery count (``XCLAIM`` adds one),
                   plus the deliveries before a replay
=================  ==============================================================

Each step is one Lua script, so it is atomic in Redis: two workers never
take one entry, and a finish checks the holder and acts in one step.
"""

import json
import logging
import os
import secrets
import socket
import time

from ..config import DEFAULT_GROUP
from ..lease import CLOCK_MARGIN, Heartbeat
from ..libraries import ClientException
from ..naming import delivery_time
from ..retries import retry_delay
from ..stream_index import (
    StreamIndex,
    announce_lag,
    group_keys,
    keys,
    redis_client,
    redis_errors,
)
from .connection import connect, refusal
from .replay import NOT_FOUND, REPLAYED, WOULD_REPLAY, DeadLetter, in_window
from .states import CUR, DONE, FAILED, META, PROCESSING, RETRY, Claimed, LostLock

log = logging.getLogger(__name__)

# Entries a claim may find gone (purged) or meant for another group before it gives up.
CLAIM_SKIPS = 100
PURGE_PAGE = 1000
# Fields of a replayed entry that describe the replay, not the copy.
REPLAY_FIELDS = ("replay_of", "for_group", "replayed", "prior_deliveries")

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# KEYS: stream, leases, retry, attempts. ARGV: group, consumer, lease (ms).
_CLAIM = _NOW + """
local id, source
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1)
if #due > 0 then
  id, source = due[1], 'retry'
  redis.call('ZREM', KEYS[3], id)
else
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1)
  if #expired > 0 then id, source = expired[1], 'recovered' end
end
local entry
if id then
  local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id)
  if #claimed == 0 or not claimed[1] then
    redis.call('ZREM', KEYS[2], id)
    redis.call('XACK', KEYS[1], ARGV[1], id)
    return {'gone', id}
  end
  entry = claimed[1]
else
  local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1,
                          'STREAMS', KEYS[1], '>')
  if not read then return false end
  entry = read[1][2][1]
  source = 'new'
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), entry[1])
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
return {source, entry[1], pending[1][4], redis.call('HGET', KEYS[4], entry[1]) or '0', entry[2]}
"""
_HOLDER = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] or not redis.call('ZSCORE', KEYS[2], ARGV[3]) then
  return false
end
"""
# KEYS: stream, leases. ARGV: group, consumer, id, lease (ms). The delivery count, or nil.
_REFRESH = _NOW + _HOLDER + """
redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[4]), ARGV[3])
return p[1][4]
"""
# KEYS: stream, leases, retry, attempts, failed, counts.
# ARGV: group, consumer, id, state, retry delay (ms), attempts, dead letter (JSON), size.
_FINISH = _NOW + _HOLDER + """
redis.call('ZREM', KEYS[2], ARGV[3])
if ARGV[4] == 'retry' then
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), ARGV[3])
  redis.call('HSET', KEYS[4], ARGV[3], ARGV[6])
  return 1
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('HDEL', KEYS[4], ARGV[3])
if ARGV[4] == 'failed' then redis.call('HSET', KEYS[5], ARGV[3], ARGV[7]) end
redis.call('HINCRBY', KEYS[6], ARGV[4], 1)
redis.call('HINCRBY', KEYS[6], ARGV[4] .. '_bytes', ARGV[8])
return 1
"""
# KEYS: stream, failed, attempts. ARGV: id, group, replayed, prior deliveries, then the
# fields of a replay to drop. The new entry's id, or nil when the dead letter is gone.
_REPLAY = """
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e == 0 or redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then return false end
redis.call('HDEL', KEYS[3], ARGV[1])
local drop, fields = {}, {}
for i = 5, #ARGV do drop[ARGV[i]] = true end
local old = e[1][2]
for i = 1, #old, 2 do
  if not drop[old[i]] then
    fields[#fields + 1] = old[i]
    fields[#fields + 1] = old[i + 1]
  end
end
for _, v in ipairs({'replay_of', ARGV[1], 'for_group', ARGV[2], 'replayed', ARGV[3],
                    'prior_deliveries', ARGV[4]}) do fields[#fields + 1] = v end
return redis.call('XADD', KEYS[1], '*', unpack(fields))
"""
# KEYS: stream, leases, retry. Expired leases -> due retries: (ids), without an attempt.
_RECOVER = _NOW + """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[3], now, id)
end
return expired
"""


def entry_time(entry_id):
    """The unix time an entry was added: its id's milliseconds."""
    return int(entry_id.partition("-")[0]) / 1000


class StreamLeases:
    """The heartbeat's view of stream claims: a key is (name, token), token "<id>/<consumer>"."""

    margin = CLOCK_MARGIN

    def __init__(self, queue):
        self.queue = queue
        self.errors = redis_errors()
        self._leases = {}  # (name, token) -> (monotonic time the lease counts from, seconds)

    def start(self, name, token, sent, lease):
        self._leases[(name, token)] = (sent, lease)

    def remaining(self, name, token):
        record = self._leases.get((name, token))
        if record is None:
            return 0.0
        sent, lease = record
        return max(0.0, sent + lease - self.margin - time.monotonic())

    def refresh(self, name, token, lease):
        entry_id, _, consumer = token.partition("/")
        sent = time.monotonic()
        if self.queue.refresh_script(
                keys=[self.queue.keys["stream"], self.queue.group_keys["leases"]],
                args=[self.queue.group, consumer, entry_id, int(lease * 1000)]) is None:
            self._leases.pop((name, token), None)
            return False
        self._leases[(name, token)] = (sent, lease)
        return True

    def forget(self, name, token):
        self._leases.pop((name, token), None)


class StreamQueue:
    """claim, finish, recover, replay, purge and stats of one destination for one consumer group.

    The same calls as MailQueue (swiftdrop.queue), so the CLI and the
    workers use either; the Swift connection is used for the bodies only.
    """

    def __init__(self, destination, group=DEFAULT_GROUP, connection=None, client=None):
        self.destination = destination
        self.settings = destination.queue
        self.container = destination.container
        self.group = group
        self.connection = connection or connect(destination)
        self.client = client or redis_client(self.settings.redis_url,
                                             destination.account.timeout)
        self.keys = keys(self.container)
        self.group_keys = group_keys(self.container, group)
        self.errors = redis_errors()
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._claim = self.client.register_script(_CLAIM)
        self.refresh_script = self.client.register_script(_REFRESH)
        self._finish = self.client.register_script(_FINISH)
        self._replay = self.client.register_script(_REPLAY)
        self._recover = self.client.register_script(_RECOVER)
        self.leases = StreamLeases(self)
        lease = self.settings.lease
        self.heartbeat = Heartbeat(self.leases, lease, errors=(*self.errors, OSError),
                                   refresh_below=lease * 2 / 3)
        self._group_ready = False

    def close(self):
        self.heartbeat.stop()

    def refusal(self, error):
        return refusal(self.destination, error)

    def _ensure_group(self):
        """Create the group on first use, from the stream's start: a new team sees it all."""
        if self._group_ready:
            return
        try:
            self.client.xgroup_create(self.keys["stream"], self.group, id="0", mkstream=True)
        except self.errors as error:
            if "BUSYGROUP" not in str(error):
                raise
        self._group_ready = True

    # -- claim and finish -------------------------------------------------------------

    def claim(self, dedup=False):
        """The next message for this group, its body read once; None when there is none."""
        if dedup:
            raise ValueError("--dedup needs the listing queue (queue_index = listing)")
        self._ensure_group()
        consumer = self.consumer
        for _ in range(CLAIM_SKIPS):
            sent = time.monotonic()
            taken = self._claim(
                keys=[self.keys["stream"], self.group_keys["leases"], self.group_keys["retry"],
                      self.group_keys["attempts"]],
                args=[self.group, consumer, int(self.settings.lease * 1000)])
            if not taken:
                return None
            if taken[0] == "gone":
                continue
            _, entry_id, count, attempts, flat = taken
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            token = f"{entry_id}/{consumer}"
            if fields.get("for_group", self.group) != self.group:
                self._finish_entry(entry_id, consumer, "skipped", fields)
                continue
            self.leases.start(fields["name"], token, sent, self.settings.lease)
            self.heartbeat.hold(fields["name"], token)
            try:
                headers, body = self.connection.get_object(self.container,
                                                           CUR + fields["name"])
            except ClientException as error:
                if error.http_status != 404:
                    self.abandon_token(fields["name"], token)
                    raise
                # Purged, or deleted by hand: nothing left to hand over.
                log.warning("%s/%s%s is announced but not in Swift; dropping its entry",
                            self.container, CUR, fields["name"])
                self.heartbeat.drop(fields["name"], token)
                self._finish_entry(entry_id, consumer, "skipped", fields)
                continue
            return self._claimed(entry_id, token, fields, count=int(count),
                                 attempts=int(attempts), headers=headers, body=body)
        return None

    def _claimed(self, entry_id, token, fields, *, count, attempts, headers, body):
        metadata = {key[len(META):]: value for key, value in headers.items()
                    if key.startswith(META)}
        # Before a replay, and, for a copy Redis may have lost the count of
        # (possible_repeat), one hand-over it cannot know: a delivery of at least 2.
        possible_repeat = fields.get("possible_repeat") == "1"
        prior = int(fields.get("prior_deliveries", 0)) + possible_repeat
        return Claimed(fields["name"], body, metadata, token, attempts=attempts,
                       delivery=prior + count,
                       recipients=json.loads(fields.get("rcpt_to") or "[]"),
                       replayed=int(fields.get("replayed", 0)),
                       entry=dict(fields, id=entry_id),
                       possible_repeat=possible_repeat)

    def held(self, name, token):
        """The claim `token` (a claim's printout) holds on `name`, for ``queue finish``.

        Raises LostLock when the token no longer holds it.
        """
        entry_id, _, consumer = token.partition("/")
        count = self.refresh_script(
            keys=[self.keys["stream"], self.group_keys["leases"]],
            args=[self.group, consumer, entry_id, int(self.settings.lease * 1000)])
        entries = self.client.xrange(self.keys["stream"], entry_id, entry_id) if count else []
        if not entries or entries[0][1].get("name") != name:
            raise LostLock(name)
        fields = entries[0][1]
        attempts = self.client.hget(self.group_keys["attempts"], entry_id) or 0
        claimed = self._claimed(entry_id, token, fields, count=int(count),
                                attempts=int(attempts), headers={}, body=b"")
        self.leases.start(name, token, time.monotonic(), self.settings.lease)
        return claimed

    def check(self, claimed):
        """Raise LostLock if the heartbeat found the claim taken over."""
        if (claimed.name, claimed.token) in self.heartbeat.lost:
            self.abandon(claimed)
            raise LostLock(claimed.name)

    def abandon(self, claimed):
        """Give up a claim unfinished: its lease runs out and a claim takes it again."""
        self.abandon_token(claimed.name, claimed.token)

    def abandon_token(self, name, token):
        self.heartbeat.drop(name, token)
        self.leases.forget(name, token)

    def finish(self, claimed, state, metadata=None, *, reason=None, wait_at_least=None):
        """done, failed or retry, as MailQueue.finish; the state it went to ("done/", ...).

        `metadata` is kept in the dead letter of a message that fails (a
        webhook's last status); nothing is written to Swift.
        """
        if state == "failed" and not reason:
            raise ValueError(f"{claimed.name}: a message finished as failed needs a reason")
        entry_id, _, consumer = claimed.token.partition("/")
        attempts, delay, target = claimed.attempts, 0.0, state
        if state == "retry":
            attempts += 1
            if attempts >= self.settings.max_attempts:
                target = "failed"
                reason = f"gave up after {attempts} attempts" + (
                    f"; last: {reason}" if reason else "")
            else:
                delay = retry_delay(self.settings, attempts)
                if wait_at_least:
                    delay = max(delay, min(wait_at_least, self.settings.retry_longest))
        letter = {"name": claimed.name, "reason": reason or "", "attempts": attempts,
                  "deliveries": claimed.delivery, "replayed": claimed.replayed,
                  "failed_at": round(time.time(), 3),
                  "metadata": {key: str(value) for key, value in (metadata or {}).items()}}
        done = self._finish_entry(entry_id, consumer, target, claimed.entry, delay=delay,
                                  attempts=attempts, letter=letter)
        self.abandon_token(claimed.name, claimed.token)
        if not done:
            raise LostLock(claimed.name)
        return {"done": DONE, "failed": FAILED, "retry": RETRY}[target]

    def _finish_entry(self, entry_id, consumer, state, fields, *, delay=0.0, attempts=0,
                      letter=None):
        return self._finish(
            keys=[self.keys["stream"], self.group_keys["leases"], self.group_keys["retry"],
                  self.group_keys["attempts"], self.group_keys["failed"],
                  self.group_keys["counts"]],
            args=[self.group, consumer, entry_id, state, int(delay * 1000), attempts,
                  json.dumps(letter or {}), int(fields.get("size", 0))])

    # -- recover, replay, stats, purge ------------------------------------------------

    def recover(self):
        """Claims whose lease ran out become due retries (no attempt counted): (what, name)."""
        self._ensure_group()
        ids = self._recover(keys=[self.keys["stream"], self.group_keys["leases"],
                                  self.group_keys["retry"]], args=[])
        for entry_id, fields in self._entries(ids):
            yield "returned to retry (its lease ran out)", fields.get("name", entry_id)

    def _entries(self, ids):
        pipe = self.client.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xrange(self.keys["stream"], entry_id, entry_id)
        return [(entry_id, found[0][1] if found else {})
                for entry_id, found in zip(ids, pipe.execute(), strict=True)]

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
        """This group's counts per state, as MailQueue.stats: cur/ is what it has not read yet.

        processing/ and retry/ are its pending entries, done/ and failed/
        what it finished (failed/: the dead letters still kept). Costs a
        few requests plus one read of each entry waiting or in work, and
        the announce lag one page of cur/'s newest (swiftdrop.stream_index).
        """
        self._ensure_group()
        info = next(group for group in self.client.xinfo_groups(self.keys["stream"])
                    if group["name"] == self.group)
        unread = self.client.xrange(self.keys["stream"], f"({info['last-delivered-id']}", "+")
        unread = [(entry_id, fields) for entry_id, fields in unread
                  if fields.get("for_group", self.group) == self.group]
        leases = self.client.zrange(self.group_keys["leases"], 0, -1)
        retries = self.client.zrange(self.group_keys["retry"], 0, -1)
        counts = self.client.hgetall(self.group_keys["counts"])
        letters = self.dead_letters()
        failed_entries = self._entries(list(letters))

        def figures(entries):
            return {"count": len(entries),
                    "bytes": sum(int(fields.get("size", 0)) for _, fields in entries)}

        result = {CUR: figures(unread), PROCESSING: figures(self._entries(leases)),
                  RETRY: figures(self._entries(retries)),
                  DONE: {"count": int(counts.get("done", 0)),
                         "bytes": int(counts.get("done_bytes", 0))},
                  FAILED: figures(failed_entries)}
        oldest = min((entry_time(entry_id) for entry_id, _ in unread), default=None)
        result["oldest_cur_age_seconds"] = (round(time.time() - oldest, 3)
                                            if oldest is not None else None)
        result["group"] = self.group
        result["announce_lag_seconds"] = announce_lag(
            StreamIndex(None, self.container, client=self.client), self.connection)
        return result

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
        groups = {group["name"]: group for group in self.client.xinfo_groups(
            self.keys["stream"])}
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

