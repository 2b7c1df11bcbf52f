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

Each step is one Lua script (swiftdrop.queue.stream_scripts); replay,
stats and purge are in swiftdrop.queue.stream_books.
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
from ..retries import retry_delay
from ..stream_index import group_keys, keys, redis_client, redis_errors
from . import stream_scripts
from .connection import connect, refusal
from .states import CUR, DONE, FAILED, RETRY, Claimed, LostLock, metadata_of
from .stream_books import StreamBooks

log = logging.getLogger(__name__)

# Entries a claim may find gone (purged) or meant for another group before it gives up.
CLAIM_SKIPS = 100


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


class StreamQueue(StreamBooks):
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
        # None: every group, for recover and stats, which create none (a group
        # nobody consumes would hold every body back from purge).
        self.group_keys = group_keys(self.container, group) if group else None
        self.errors = redis_errors()
        self.consumer = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._claim = self.client.register_script(stream_scripts.CLAIM)
        self.refresh_script = self.client.register_script(stream_scripts.REFRESH)
        self._finish = self.client.register_script(stream_scripts.FINISH)
        self._replay = self.client.register_script(stream_scripts.REPLAY)
        self._recover = self.client.register_script(stream_scripts.RECOVER)
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
        metadata = metadata_of(headers)
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

    def holder(self, claimed):
        """The queue that holds `claimed`: this one (a sharded queue has one per shard)."""
        return self

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

    def groups(self):
        """The names of the stream's consumer groups: this one, or every one there is."""
        if self.group is not None:
            return [self.group]
        return [info["name"] for info in self._group_infos()]

    def recover(self):
        """Claims whose lease ran out become due retries (no attempt counted): (what, name)."""
        for group in self.groups():
            ours = group_keys(self.container, group)
            ids = self._recover(keys=[self.keys["stream"], ours["leases"], ours["retry"]],
                                args=[])
            for entry_id, fields in self._entries(ids):
                yield (f"returned to retry for group {group} (its lease ran out)",
                       fields.get("name", entry_id))

    def _entries(self, ids):
        pipe = self.client.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xrange(self.keys["stream"], entry_id, entry_id)
        return [(entry_id, found[0][1] if found else {})
                for entry_id, found in zip(ids, pipe.execute(), strict=True)]
