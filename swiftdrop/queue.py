"""Work through a SwiftDrop container as a queue, safely, with many workers.

The container's prefixes are the states of a message; an object keeps its
Maildir base name in all of them:

``cur/``         stored by the filter, waiting
``processing/``  claimed by a worker, under its lock
``retry/``       to be tried again, not before ``X-Object-Meta-Not-Before``
``done/``        processed
``failed/``      given up on (or failed permanently); ``Failed-Reason`` says why

A move is a server-side copy (``X-Copy-From``) followed by a delete of the
source, done only while holding the message's lock: the lock is what keeps
two workers from moving the same message, so nothing is checked that the
lock already proves. The lock taken by ``claim`` is held, and refreshed by
the queue's heartbeat (swiftdrop.lease), until ``finish`` has moved the
message on; if the worker dies its lease runs out, and ``recover`` moves the
message to ``retry/``. A crash between copy and delete leaves one name under
two prefixes; ``recover`` keeps the copy that is furthest along and deletes
the other. Each hand-over to a consumer is counted (``Deliveries``), so that
a repeat is known as one.

A claim and its finish cost 8 Swift requests with the Swift lock (lock PUT
and read-back, copy, delete, GET; copy, delete, lock DELETE), 5 with Redis
(plus a GET at Redis at finish); a worker lists ``cur/`` a page at a time,
not once per claim. A worker waits for 7 round trips of those 8: the delete
that completes the claim's move runs on a second connection beside the GET
of the message, which does not depend on it.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
import hashlib
import logging
import os
import random
import re
import socket
import time
from urllib.parse import unquote

from .auth import authenticate
from .failures import service_errors
from .lease import Heartbeat, longest_request
from .libraries import ClientException, swift
from .locks import make_lock

log = logging.getLogger(__name__)

CUR, PROCESSING, RETRY, DONE, FAILED = "cur/", "processing/", "retry/", "done/", "failed/"
PREFIXES = (CUR, PROCESSING, RETRY, DONE, FAILED)
# When one name is found under two prefixes, the one further along wins.
PROGRESS = {CUR: 0, RETRY: 1, PROCESSING: 2, DONE: 3, FAILED: 3}
DEDUP_PREFIX = "dedup/"
CLAIM_WINDOW = 64
CLAIM_PAGE = 1000
# Listings of cur/ one claim may make after finding its page out of date.
# Each such finding means another worker took a message; the bound only
# keeps a container listing that lags behind deletions from spinning us.
CLAIM_RELISTS = 3
META = "x-object-meta-"
# How swiftclient names a failed request: "Object PUT failed".
FAILED_REQUEST = re.compile(r"^(?:Account|Container|Object) ([A-Z]+) failed")


@dataclass
class Claimed:
    """A message a worker holds: its bytes, metadata and lock token.

    `delivery` counts the hand-overs to a consumer, this one included (1 the
    first time); the name, unique in its container, is the idempotency key.
    """

    name: str
    body: bytes
    metadata: dict
    token: str
    attempts: int = 0
    skipped_duplicates: list = field(default_factory=list)
    delivery: int = 1
    moved_to: str | None = field(default=None, repr=False)  # a finish's copy is done

    @property
    def path(self):
        return PROCESSING + self.name

    @property
    def redelivered(self):
        return self.delivery > 1


class LostLock(Exception):
    """The worker's lease ran out and someone else may hold the message now."""


class AccountConnection(swift.Connection):
    """swiftclient's Connection, authenticated the way the filter does it (swiftdrop.auth).

    swiftclient's own Keystone path needs keystoneclient, which the queue
    tools must not pay for (swiftdrop.libraries). Given another
    connection's URL and token, it starts with them and authenticates
    itself only when the token runs out.
    """

    def __init__(self, account, preauthurl=None, preauthtoken=None, retries=None):
        super().__init__(authurl=account.authurl, user=account.user, key=account.key,
                         auth_version=account.auth_version, cacert=account.cacert,
                         insecure=account.insecure, timeout=account.timeout,
                         retries=account.retries if retries is None else retries,
                         preauthurl=preauthurl, preauthtoken=preauthtoken)
        self.account = account

    def get_auth(self):
        self.url, self.token = authenticate(self.account, self.timeout)
        return self.url, self.token


def connect(destination, preauthurl=None, preauthtoken=None, retries=None):
    """A swiftclient Connection for one destination's account (one per worker)."""
    return AccountConnection(destination.account, preauthurl, preauthtoken, retries)


class MailQueue:
    """Claim, finish, recover, purge and count messages of one destination's container."""

    def __init__(self, destination, connection=None, lock=None, clock=time.time):
        self.destination = destination
        self.settings = destination.queue
        self.container = destination.container
        self.connection = connection or connect(destination)
        account = destination.account
        # The longest one request may take: a step under the lock starts only
        # with this much of the lease left, and recover waits this long for
        # what a holder whose lease ran out may still have on its way.
        self.request_time = self.grace = longest_request(account.timeout, account.retries)
        self.lock = lock or make_lock(
            self.settings, self.connection, self.container, namespace=self.container,
            # lock writes go out once, never resent (swiftdrop.locks)
            lock_connection=lambda: connect(destination, self.connection.url,
                                            self.connection.token, retries=0),
            attempt_time=account.timeout)
        lease = self.settings.lease
        self.heartbeat = Heartbeat(
            self.lock, lease, errors=(*service_errors(), *self.lock.errors),
            refresh_below=max((lease - self.lock.margin) * 2 / 3, self.request_time))
        self.clock = clock
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._waiting = []  # names of the cur/ page listed last, to claim in order
        self._page_outdated = False
        self._beside = None  # (executor, connection) for a delete beside the next request

    def close(self):
        """Stop the heartbeat; locks still held run out by themselves."""
        self.heartbeat.stop()
        if self._beside is not None:
            self._beside[0].shutdown()
            self._beside = None

    def refusal(self, error):
        """One line naming the right Swift refused this user (a 403), else None.

        Unlike Swift being away, a missing right does not pass by itself:
        someone has to grant it (docs/deployment.md says which).
        """
        if not isinstance(error, ClientException) or error.http_status != 403:
            return None
        failed = FAILED_REQUEST.match(error.msg or "")
        if failed is None:
            return f"Swift answered 403 Forbidden to {self.destination.account.describe()}"
        method = failed.group(1)
        target = unquote(error.http_path or "").partition(f"/{self.container}/")[2]
        right = "read" if method in ("GET", "HEAD") else "write to"
        return (f"Swift answered 403 Forbidden to {method} {target or self.container}: "
                f"{self.destination.account.describe()} may not {right} "
                f"container {self.container}")

    # -- listing and moving -------------------------------------------------

    def listing(self, prefix):
        return self.connection.get_container(self.container, prefix=prefix,
                                             full_listing=True)[1]

    def move(self, name, source, target, metadata=None):
        """Copy source+name to target+name, then delete the source; False if it is gone."""
        if not self.copy(name, source, target, metadata):
            return False
        self._delete(source + name)
        return True

    def copy(self, name, source, target, metadata=None):
        """Copy source+name to target+name server-side; False if the source is gone.

        Callers hold the name's lock, so nobody else moves it meanwhile; a
        copy already at the target can only be a crash's leftover of the
        same message, and is replaced. The source being gone means someone
        else moved it before we took the lock.
        """
        headers = {"X-Copy-From": f"/{self.container}/{source}{name}"}
        headers.update((f"X-Object-Meta-{key}", str(value))
                       for key, value in (metadata or {}).items())
        try:
            self.connection.put_object(self.container, target + name, None, headers=headers)
        except ClientException as error:
            if error.http_status == 404:
                return False
            raise
        return True

    def _delete(self, path, connection=None):
        try:
            (connection or self.connection).delete_object(self.container, path)
        except ClientException as error:
            if error.http_status != 404:
                raise

    def _delete_beside(self, path, request):
        """Delete `path` on the second connection while `request()` runs; return its result.

        Both must succeed before the caller goes on, as if one followed the
        other; the delete's error is raised once the request is done.
        """
        if self._beside is None:
            self._beside = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="queue-delete"),
                            connect(self.destination, self.connection.url, self.connection.token))
        executor, connection = self._beside
        deleting = executor.submit(self._delete, path, connection)
        try:
            return request()
        finally:
            deleting.result()

    # -- holding locks ------------------------------------------------------

    def _acquire(self, name):
        token = self.lock.acquire(name, self.settings.lease)
        if token is not None:
            self.heartbeat.hold(name, token)
        return token

    def _keep(self, name, token):
        """Make sure the lock is ours for one more whole request, or raise LostLock.

        The heartbeat sees to that as a rule; when it has not (yet), or the
        lock was taken in another process (``queue finish``), refresh it now.
        A Swift or Redis error leaves the lock held and is raised.
        """
        if self.lock.remaining(name, token) >= self.request_time:
            return
        if self.lock.refresh(name, token, self.settings.lease) \
                and self.lock.remaining(name, token) >= self.request_time:
            self.heartbeat.hold(name, token)
            return
        self._forget(name, token)
        raise LostLock(name)

    def _release(self, name, token):
        self.heartbeat.drop(name, token)
        self.lock.release(name, token)

    def _forget(self, name, token):
        """Stop refreshing the lock and leave it to run out."""
        self.heartbeat.drop(name, token)
        self.lock.forget(name, token)

    def _let_go(self, name, token):
        """Release a lock we no longer need, or let it run out if Swift or Redis is away."""
        try:
            self._release(name, token)
        except self.heartbeat.errors as error:
            self._forget(name, token)
            log.warning("cannot release the lock on %s: %s; it runs out by itself",
                        name, error)

    def check(self, claimed):
        """Raise LostLock if the heartbeat found the claim's lock gone or someone else's."""
        if (claimed.name, claimed.token) in self.heartbeat.lost:
            self._forget(claimed.name, claimed.token)
            raise LostLock(claimed.name)

    def abandon(self, claimed):
        """Give up a claim without finishing it: its lock runs out and recover returns it."""
        self._forget(claimed.name, claimed.token)

    # -- claim and finish ---------------------------------------------------

    def candidates(self):
        """Oldest first: cur/ (names begin with the delivery time), then due retries."""
        for name in self._waiting_names():
            yield CUR, name
        now = self.clock()
        for item in self.listing(RETRY):
            name = item["name"][len(RETRY):]
            headers = self.connection.head_object(self.container, RETRY + name)
            if float(headers.get(META + "not-before", 0)) <= now:
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
                claimed = self._take(source, name, token, skipped)
                if claimed is not None and dedup:
                    original = self.duplicate_of(claimed)
                    if original:
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

    def _take(self, source, name, token, skipped):
        """Move `name` from `source` to processing/ under our lock; None if it is not ours to take.

        The Claimed's `delivery` counts the hand-overs before this one.
        """
        self._keep(name, token)
        now = self.clock()
        # The token is recorded on the claimed object: a claim that finds
        # another's there knows it was not alone, and `swiftdrop queue finish`
        # acts only with the token of the claim.
        copied = self.copy(name, source, PROCESSING, {
            "Claimed-By": self.worker, "Claimed-At": f"{now:.3f}", "Lock-Token": token})
        if not copied:
            self._release(name, token)
            if source == CUR:
                self._waiting.clear()
                self._page_outdated = True
            return None
        self._keep(name, token)
        headers, body = self._delete_beside(source + name, partial(
            self.connection.get_object, self.container, PROCESSING + name))
        metadata = {key[len(META):]: value for key, value in headers.items()
                    if key.startswith(META)}
        if metadata.get("lock-token") != token:
            # Another claimer's copy replaced ours: it got the lock too (the
            # Swift lock cannot exclude every race) and hands the message
            # over; we do not. The lock is left to it.
            log.warning("%s was claimed by %s at the same time; leaving it to that claim",
                        name, metadata.get("claimed-by", "another worker"))
            self._forget(name, token)
            return None
        return Claimed(name, body, metadata, token, attempts=int(metadata.get("attempts", 0)),
                       skipped_duplicates=skipped,
                       delivery=int(metadata.get("deliveries", 0)))

    def refresh(self, claimed):
        """Extend the claim's lease now (the heartbeat does it on its own)."""
        if not self.lock.refresh(claimed.name, claimed.token, self.settings.lease):
            self._forget(claimed.name, claimed.token)
            raise LostLock(claimed.name)

    def finish(self, claimed, state, metadata=None, *, reason=None):
        """Move a claimed message to done/, failed/ or retry/ and release its lock.

        ``retry`` counts an attempt and sets a not-before time with
        exponential back-off; the last allowed attempt goes to failed/.
        Whatever lands in failed/ says why in ``Failed-Reason``, the one key
        a person replaying failed/ looks at: `reason` for a message failed
        outright (``exit status 3``; required then), ``gave up after N
        attempts`` for one whose attempts ran out.
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
                metadata["Failed-Reason"] = f"gave up after {attempts} attempts"
            else:
                delay = self.settings.retry_delay * 2 ** (attempts - 1)
                metadata["Not-Before"] = f"{now + delay:.3f}"
        metadata["Finished-At"] = f"{now:.3f}"
        metadata["Deliveries"] = claimed.delivery
        name, token = claimed.name, claimed.token
        if claimed.moved_to is None:
            self._keep(name, token)
            if not self.copy(name, PROCESSING, target, metadata):
                self._forget(name, token)
                raise LostLock(name)  # moved on by someone who held the lock after us
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

    # -- duplicates ---------------------------------------------------------

    def _dedup_marker(self, claimed):
        message_id = claimed.metadata.get("message-id")
        content = claimed.metadata.get("dedup-md5") or hashlib.md5(
            claimed.body, usedforsecurity=False).hexdigest()
        if not message_id:
            return None  # identical content alone may be two real messages
        key = hashlib.sha256(f"{message_id}\0{content}".encode()).hexdigest()
        return DEDUP_PREFIX + key

    def remember_done(self, claimed):
        """Note Message-ID + content of a done message for the dedup window."""
        marker = self._dedup_marker(claimed)
        if marker and self.settings.dedup_window > 0:
            self.connection.put_object(
                self.container, marker, claimed.name,  # str: swiftclient can resend it
                headers={"X-Delete-After": str(int(self.settings.dedup_window))})

    def duplicate_of(self, claimed):
        """The done message this one duplicates within the window, or None."""
        marker = self._dedup_marker(claimed)
        if marker is None:
            return None
        try:
            return self.connection.get_object(self.container, marker)[1].decode()
        except ClientException as error:
            if error.http_status == 404:
                return None
            raise

    # -- housekeeping -------------------------------------------------------

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
            claimed = Claimed(name, b"", {}, token, attempts=attempts,
                              delivery=int(headers.get(META + "deliveries", 0)) + 1)
            try:
                target = self.finish(claimed, "retry", {"Recovered-From": headers.get(
                    META + "claimed-by", "unknown worker")})
            except LostLock:
                return actions  # moved on between our HEAD and our copy
            actions.append((f"lease expired, moved to {target}", name))
        return actions

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
