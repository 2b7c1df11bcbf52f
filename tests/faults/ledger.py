"""The fault suite's books: every message sent, every reply, and what Swift holds.

A sender holds the promise to account: a ``250`` means the message is in
Swift with exactly the bytes sent (after the ``Received:`` field Postfix
prepends) and an ETag equal to their MD5; a ``4xx`` means the sender keeps
it and retries, and once the fault is over the retry must be stored.
:meth:`Ledger.reconcile` reads the whole container back from Swift and
checks every message against that, and every object against the messages.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
import hashlib
import random
import re
import threading

from swiftclient.exceptions import ClientException

DOMAIN = "faults.swiftdrop.test"
STORED = re.compile(r"2\.0\.0 Ok: stored as ([^/\s]+)/(\S+)$")
RECEIVED_END = re.compile(rb"\r\n(?![ \t])")
NO_REPLY = 0  # the connection failed before a reply; the sender retries, like a 4xx


@dataclass
class Attempt:
    code: int
    text: str
    fault: str


@dataclass
class Message:
    number: int
    message_id: str
    data: bytes
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def accepted(self):
        """The location the 250 named, or None while not accepted."""
        for attempt in self.attempts:
            if attempt.code == 250:
                match = STORED.match(attempt.text)
                return (match.group(1), match.group(2)) if match else ("?", attempt.text)
        return None

    @property
    def deferred(self):
        return [a for a in self.attempts if 400 <= a.code < 500 or a.code == NO_REPLY]


def make_body(run, number, size, rng):
    """Message bytes of about `size`, CRLF lines, a dot-led line, a unique Message-ID."""
    message_id = f"<{number}.{run}@{DOMAIN}>"
    head = (f"From: <sender@{DOMAIN}>\r\nTo: <someone@example.com>\r\n"
            f"Subject: fault run {run} message {number}\r\nMessage-ID: {message_id}\r\n"
            f"Date: Thu, 26 Nov 2026 00:00:00 +0000\r\n\r\n.leading dot\r\n").encode()
    line = f"{number:08d} ".encode() + rng.randbytes(36).hex().encode() + b"\r\n"
    lines = max(1, (size - len(head)) // len(line))
    return message_id, head + line * lines


@dataclass
class Summary:
    sent: int
    attempts: int
    replies_250: int
    replies_4xx: int
    no_reply: int
    replies_5xx: int
    retried: int
    stored: int
    unresolved: int
    lost: int
    corrupt: int
    bad_etag: int
    stray: int
    duplicates: int
    duplicate_reasons: dict
    objects: int
    unlisted: int
    deferrals: dict = field(default_factory=dict)  # reply line -> how often
    injected: dict = field(default_factory=dict)
    auth_requests: int = 0
    filter_restarts: int = 0
    notices: int = 0
    internal_errors: int = 0
    seconds: float = 0

    @property
    def promise_kept(self):
        """Nothing lost, nothing half-stored, every retried message stored in the end.

        And no bug on the way: a failure of Swift or Keystone is never an
        internal error of the filter.
        """
        return not (self.lost or self.corrupt or self.bad_etag or self.stray
                    or self.unresolved or self.replies_5xx or self.internal_errors)

    def table(self):
        rows = [("sent (messages)", self.sent), ("SMTP attempts", self.attempts),
                ("250", self.replies_250), ("4xx", self.replies_4xx),
                ("no reply (counted as 4xx)", self.no_reply), ("5xx", self.replies_5xx),
                ("messages retried", self.retried), ("stored", self.stored),
                ("objects in Swift", self.objects),
                ("stored, not yet in the listing (Swift killed before "
                 "its container update)", self.unlisted),
                ("lost (250 but not stored / bytes differ)", self.lost),
                ("not stored after the fault cleared", self.unresolved),
                ("corrupt or partial objects", self.corrupt),
                ("ETag != MD5", self.bad_etag), ("objects of no message", self.stray),
                ("duplicates (stored twice after a 4xx)", self.duplicates)]
        rows += [(f"  because: {why}", count) for why, count in
                 sorted(self.duplicate_reasons.items())]
        rows += [(f"deferred with: {reply}", count) for reply, count in
                 sorted(self.deferrals.items())]
        rows += [("faults injected", ", ".join(f"{name} x{count}" for name, count
                                               in sorted(self.injected.items())) or "-"),
                 ("auth requests by the filter", self.auth_requests),
                 ("failure notices (webhook)", self.notices),
                 ("'internal error' in the filter's log", self.internal_errors),
                 ("filter restarts", self.filter_restarts), ("seconds", self.seconds)]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _check(message, headers, stored):
    """(bytes after Postfix's Received: field are the message's, ETag is their MD5)."""
    end = RECEIVED_END.search(stored)
    intact = (stored.startswith(b"Received: ") and end is not None
              and stored[end.end():] == message.data)
    etag_ok = headers.get("etag", "").strip('"') == hashlib.md5(
        stored, usedforsecurity=False).hexdigest()
    return intact, etag_ok


class Ledger:
    """Thread-safe record of the messages of one run, keyed by number."""

    def __init__(self, run, seed=0):
        self.run = run
        self.rng = random.Random(seed)
        self.messages: dict[int, Message] = {}
        self.by_id: dict[str, Message] = {}
        self.lock = threading.Lock()

    def new(self, size):
        with self.lock:
            number = len(self.messages) + 1
            message_id, data = make_body(self.run, number, size, self.rng)
            message = Message(number, message_id, data)
            self.messages[number] = message
            self.by_id[message_id] = message
            return message

    def record(self, message, code, text, fault):
        with self.lock:
            message.attempts.append(Attempt(code, text, fault))

    def to_retry(self):
        """Messages the sender still holds: no 250 yet."""
        with self.lock:
            return [m for m in self.messages.values() if m.accepted is None]

    def reconcile(self, connection, container):
        """Read every object back and settle the books; `connection` is a swiftclient one."""
        copies = collections.defaultdict(list)  # message number -> [(name, good)]
        corrupt = bad_etag = stray = 0
        objects = connection.get_container(container, full_listing=True)[1]
        for listed in objects:
            headers, stored = connection.get_object(container, listed["name"])
            message = self.by_id.get(headers.get("x-object-meta-message-id"))
            if message is None:
                stray += 1
                continue
            intact, etag_ok = _check(message, headers, stored)
            corrupt += not intact
            bad_etag += not etag_ok
            copies[message.number].append((listed["name"], intact and etag_ok))
        unlisted = 0
        for message in self.messages.values():
            accepted = message.accepted
            if accepted is None or accepted[1] in (name for name, _ in copies[message.number]):
                continue
            # Swift lists an object once its container update is done; when
            # Swift dies right after storing, that update waits for the
            # object-updater (not running here). Look the object up by name.
            try:
                headers, stored = connection.get_object(container, accepted[1])
            except ClientException as error:
                if error.http_status != 404:
                    raise
                continue
            unlisted += 1
            copies[message.number].append((accepted[1], all(_check(message, headers, stored))))
        attempts = [a for m in self.messages.values() for a in m.attempts]
        lost = unresolved = duplicates = 0
        reasons = collections.Counter()
        for message in self.messages.values():
            good = [name for name, ok in copies[message.number] if ok]
            accepted = message.accepted
            if accepted is None:
                unresolved += 1
            elif accepted[1] not in good:
                lost += 1
            if len(good) > 1:
                duplicates += len(good) - 1
                faults = ", ".join(sorted({a.fault for a in message.deferred}))
                why = (f"4xx after the object landed (last fault injected: {faults})" if faults
                       else "stored twice without a 4xx")
                reasons[why] += len(good) - 1
        return Summary(
            sent=len(self.messages), attempts=len(attempts),
            replies_250=sum(a.code == 250 for a in attempts),
            replies_4xx=sum(400 <= a.code < 500 for a in attempts),
            no_reply=sum(a.code == NO_REPLY for a in attempts),
            replies_5xx=sum(a.code >= 500 for a in attempts),
            retried=sum(bool(m.deferred) for m in self.messages.values()),
            stored=sum(any(ok for _, ok in copies[n]) for n in self.messages),
            unresolved=unresolved, lost=lost, corrupt=corrupt, bad_etag=bad_etag, stray=stray,
            duplicates=duplicates, duplicate_reasons=dict(reasons), objects=len(objects),
            unlisted=unlisted,
            deferrals=dict(collections.Counter(
                f"{a.code} {a.text}" for a in attempts if a.code != 250)))
