"""Store spooled messages in Swift, and say for certain whether it worked.

Why not ``swiftclient.Connection``: it re-authenticates per Connection object
and is not safe to share between threads, so a threaded filter would either
authenticate per message (the earlier SwiftDrop's cost: about a second per
message with Keystone) or per thread. Here each account has one token shared
by all threads, renewed only when Swift answers 401, and a pool of kept-alive
HTTP connections (:mod:`swiftdrop.swift_client`, which says why the filter
does its own HTTP).

A copy counts as stored only when Swift answered 201 to a PUT carrying
``If-None-Match: *`` (never overwrite) and our MD5 as ``ETag`` (Swift checks
the bytes and answers 422 otherwise), and the ETag it returns matches.
"""

from dataclasses import dataclass
import io
import logging
import secrets
import threading
import time

from . import metrics
from .auth import auth_server, authenticate
from .deadline import Deadline
from .failures import StoreError, service_errors, store_error
from .swift_client import Body, Endpoint

log = logging.getLogger(__name__)

CONTENT_TYPE = "message/rfc822"
# Swift's default constraints: max_meta_value_length.
MAX_META_VALUE = 256
# Don't start an attempt that has less than this left before the deadline.
MIN_ATTEMPT_SECONDS = 1.0
# 429 and 498 are rate limits (498 is Swift's ratelimit middleware's): a
# retry after the back-off may pass, like one after a 503.
RETRYABLE_STATUSES = frozenset({408, 422, 429, 498, 500, 502, 503, 504, 507})
# Where `swiftdrop check` probes its right to write: a random name under
# this prefix, which nothing ever creates (a POST to an existing object
# would replace its metadata).
WRITE_PROBE_PREFIX = "swiftdrop-check/"
# What `swiftdrop check` does with each right it needs, for its reasons.
RIGHTS = {"read": "reading", "write": "writing to", "create": "creating"}


@dataclass(frozen=True)
class StoredCopy:
    container: str
    name: str
    etag: str
    transaction_id: str | None
    attempts: int


class _Flight:
    """One authentication in progress; every thread that needs a token waits for it."""

    def __init__(self):
        self.done = threading.Event()
        self.credentials = None
        self.error = None


class AccountSession:
    """One account's token, shared by all threads, and its idle HTTP connections.

    Authentication is single flight: one background thread asks for the token
    (each of its requests bounded by the account's timeout), and every message
    that needs it waits only until its own deadline. A message never waits
    behind a queue of others, and a Keystone that never answers costs each
    message its store_timeout, not more.
    """

    def __init__(self, account, label):
        self.account = account
        self.label = label  # the section that used the account first, for the metrics
        self.auth_requests = 0
        self.auth_server = auth_server(account)
        self._lock = threading.Lock()
        self._storage_url = None
        self._token = None
        self._flight = None
        self._endpoint = None

    def credentials(self, deadline):
        """Return (storage URL, token), waiting at most until `deadline` for a new token."""
        with self._lock:
            if self._token is not None:
                return self._storage_url, self._token
            flight = self._flight
            if flight is None:
                flight = self._flight = _Flight()
                self.auth_requests += 1
                metrics.AUTH_REQUESTS.labels(self.label).inc()
                threading.Thread(target=self._authenticate, args=(flight,), daemon=True,
                                 name="swiftdrop-auth").start()
        waited = time.monotonic()
        if not flight.done.wait(deadline.remaining()):
            raise StoreError(f"{self.auth_server} did not answer within "
                             f"{time.monotonic() - waited:.1f} s (the message's deadline)")
        if flight.error is not None:
            raise flight.error
        return flight.credentials

    def _authenticate(self, flight):
        account = self.account
        try:
            flight.credentials = authenticate(account, account.timeout)
        except service_errors() as error:
            flight.error = store_error(error, server=self.auth_server, timeout=account.timeout)
            log.warning("authentication failed for %s: %s", account.describe(),
                        flight.error.reason)
        except Exception as error:  # a bug: the waiting messages report it as one
            flight.error = error
        else:
            log.info("authenticated %s", account.describe())
        finally:
            with self._lock:
                if flight.credentials is not None:
                    self._storage_url, self._token = flight.credentials
                self._flight = None
            flight.done.set()

    def forget_token(self, token):
        """Drop `token` after a 401, unless another thread already replaced it."""
        with self._lock:
            if self._token == token:
                self._token = None

    def endpoint(self, url):
        """The kept-alive connections to storage URL `url` (it may change with a new token)."""
        with self._lock:
            if self._endpoint is None or self._endpoint.storage_url != url:
                if self._endpoint is not None:
                    self._endpoint.close()
                self._endpoint = Endpoint(url, cacert=self.account.cacert,
                                          insecure=self.account.insecure)
            return self._endpoint

    def call(self, method, container, name=None, *, deadline, headers=(), body=None,
             doing=None):
        """One request, bounded by `deadline`; Swift's 2xx Answer, anything else a StoreError.

        `timeout` bounds each socket operation; the watchdog bounds the
        whole request, connect to the last byte of the answer, by what is
        left of the deadline (swiftdrop.watchdog).
        """
        url, token = self.credentials(deadline)
        timeout = deadline.timeout(self.account.timeout)
        prefix = f"{doing}: " if doing else ""
        if timeout <= 0:
            raise StoreError(f"{prefix}no time left before the deadline")
        endpoint = self.endpoint(url)
        answer = endpoint.request(method, endpoint.url_path(container, name), token=token,
                                  headers=headers, body=body, timeout=timeout,
                                  deadline=deadline, doing=doing)
        if 200 <= answer.status < 300:
            return answer
        if answer.status == 401:
            self.forget_token(token)
        raise StoreError(f"{prefix}Swift answered {answer.status} {answer.reason}".rstrip(),
                         answer.status, answer.transaction_id)


class SwiftStore:
    """Puts and deletes message copies; one AccountSession per distinct account."""

    def __init__(self):
        self._sessions = {}
        self._lock = threading.Lock()

    def session(self, destination):
        """The session of the destination's account, shared with other sections using it."""
        account = destination.account
        with self._lock:
            if account not in self._sessions:
                self._sessions[account] = AccountSession(account, destination.section)
            return self._sessions[account]

    @property
    def auth_requests(self):
        with self._lock:
            return sum(session.auth_requests for session in self._sessions.values())

    def put(self, destination, name, message, metadata, *, deadline,
            content_type=CONTENT_TYPE):
        """Store one copy or raise StoreError; never overwrites, never leaves a partial object.

        `deadline` (a Deadline) bounds every attempt, the wait for a token
        included: no attempt starts with less than MIN_ATTEMPT_SECONDS left.
        """
        session = self.session(destination)
        headers = [("Content-Type", content_type), ("ETag", message.md5),
                   ("If-None-Match", "*")]
        headers.extend((f"X-Object-Meta-{key}", value) for key, value in metadata.items())
        if destination.retention is not None:
            # Swift turns it into X-Delete-At, which its server-side copies
            # keep: every state the queue moves the message to expires with it.
            headers.append(("X-Delete-After", f"{destination.retention:.0f}"))
        last_error = StoreError("no attempt could start before the deadline")
        for attempt in range(1, destination.account.retries + 2):
            if deadline.remaining() < MIN_ATTEMPT_SECONDS:
                break
            if attempt > 1:
                metrics.SWIFT_RETRIES.inc()
            try:
                return self._put_once(session, destination, name, message, headers,
                                      deadline=deadline, attempt=attempt)
            except StoreError as error:
                last_error = error
                error.attempts = attempt  # for the journal entry's SWIFTDROP_ATTEMPTS
                if error.permanent or (error.status not in RETRYABLE_STATUSES
                                       and error.status not in (None, 401)):
                    raise
            log.warning("storing %s/%s, attempt %d failed: %s",
                        destination.container, name, attempt, last_error.reason,
                        extra={"SWIFTDROP_SECTION": destination.section})
            if last_error.status != 401:
                time.sleep(min(0.5 * 2 ** (attempt - 1),
                               max(0.0, deadline.remaining() - MIN_ATTEMPT_SECONDS)))
        raise last_error

    def _put_once(self, session, destination, name, message, headers, *, deadline, attempt):
        try:
            answer = session.call("PUT", destination.container, name, deadline=deadline,
                                  headers=headers, body=message_body(message))
        except StoreError as error:
            if error.status == 412:
                return self._confirm_existing(session, destination, name, message.md5,
                                              attempt=attempt, deadline=deadline)
            raise
        etag = answer.headers.get("etag", "").strip('"')
        if answer.status != 201 or etag != message.md5:
            raise StoreError(f"unexpected answer {answer.status} with ETag {etag!r}",
                             answer.status, answer.transaction_id)
        return StoredCopy(destination.container, name, etag, answer.transaction_id, attempt)

    def _confirm_existing(self, session, destination, name, md5, *, attempt, deadline):
        """A 412 means the name exists: it is ours if an earlier attempt landed.

        A failed check is a StoreError like a failed PUT, so that the attempt
        is retried and Deliverer removes the sibling copies if all fail.
        """
        answer = session.call("HEAD", destination.container, name, deadline=deadline,
                              doing=f"checking the existing {name}")
        if answer.headers.get("etag", "").strip('"') == md5:
            log.info("%s/%s was already stored by an earlier attempt",
                     destination.container, name)
            return StoredCopy(destination.container, name, md5, answer.transaction_id, attempt)
        raise StoreError(f"object name {name} is taken by other content", 412)

    def delete(self, destination, name, *, deadline=None):
        """Remove a copy whose sibling copies failed; never raises. True once it is gone.

        Without a `deadline` (cleanup after the reply) one attempt may take
        the account's timeout.
        """
        session = self.session(destination)
        deadline = deadline or Deadline(destination.account.timeout + MIN_ATTEMPT_SECONDS)
        try:
            session.call("DELETE", destination.container, name, deadline=deadline,
                         doing=f"removing {destination.container}/{name}")
        except StoreError as error:
            if error.status == 404:
                return True
            log.warning("could not remove %s/%s: %s", destination.container, name,
                        error.reason, extra={"SWIFTDROP_SECTION": destination.section})
            return False
        return True

    def check(self, destination):
        """Authenticate, HEAD the container (creating it if configured to), probe writing.

        The filter needs both rights on the container: write for its PUTs
        and DELETEs, read for the HEAD that confirms an earlier copy after a
        412. The HEAD proves reading; writing is proven by a POST to a name
        that never exists, which Swift authorizes against the write ACL like
        a PUT and then answers 404, storing nothing. A 403 says which right
        is missing.
        """
        session = self.session(destination)

        def call(method, name=None, *, right):
            try:
                return session.call(method, destination.container, name,
                                    doing=f"{RIGHTS[right]} it",
                                    deadline=Deadline(2 * destination.account.timeout + 1))
            except StoreError as error:
                if error.status != 403:
                    raise
                raise StoreError(f"{error.reason}; {_lacking_right(destination, right)}",
                                 403, error.transaction_id, permanent=True) from None
        try:
            answer = call("HEAD", right="read")
        except StoreError as error:
            if error.status != 404 or not destination.create_container:
                raise
            call("PUT", right="create")
            answer = call("HEAD", right="read")
        try:
            call("POST", f"{WRITE_PROBE_PREFIX}{secrets.token_hex(16)}", right="write")
        except StoreError as error:
            if error.status != 404:
                raise
        return answer.headers


def _lacking_right(destination, right):
    """What Swift's 403 to `swiftdrop check`'s request for `right` means, and the remedy."""
    if right == "create":
        return ("this user may not create containers, only Swift's operator role may: "
                "create it as the account's owner and set create_container = false")
    if right == "write":
        return ("this user may not write to the container: give it the container's write "
                "ACL (X-Container-Write) or Swift's operator role")
    reason = ("this user may not read the container, or it does not exist (Swift tells "
              "only the account's owner which): give it the container's read ACL "
              "(X-Container-Read) or Swift's operator role")
    if destination.create_container:
        reason += ("; create_container = true cannot create it, only Swift's operator "
                   "role may create containers")
    return reason


def message_body(message):
    """The PUT body of a spooled message: its bytes if it is in memory, else its file."""
    if isinstance(message.spool, io.BytesIO):
        return Body(data=message.spool.getvalue())
    return Body(file=message.spool, size=message.size)


def metadata_value(text):
    """Make `text` safe as a Swift metadata value: printable, within the size limit."""
    cleaned = text if text.isprintable() else "".join(
        ch if ch.isprintable() else "?" for ch in text)
    encoded = cleaned.encode("utf-8")[:MAX_META_VALUE]
    return encoded.decode("utf-8", errors="ignore")
