"""Store spooled messages in Swift, and say for certain whether it worked.

Why not ``swiftclient.Connection``: it re-authenticates per Connection object
and is not safe to share between threads, so a threaded filter would either
authenticate per message (the earlier SwiftDrop's cost: about a second per
message with Keystone) or per thread. Here each account has one token shared
by all threads, renewed only when Swift answers 401, and a small pool of
keep-alive HTTP connections; the low-level ``swiftclient.client`` calls do the
HTTP.

A copy counts as stored only when Swift answered 201 to a PUT carrying
``If-None-Match: *`` (never overwrite) and our MD5 as ``ETag`` (Swift checks
the bytes and answers 422 otherwise), and the ETag it returns matches.
"""

from contextlib import contextmanager
from dataclasses import dataclass
import logging
import secrets
import threading
import time

from . import metrics
from .auth import auth_server, authenticate
from .deadline import Deadline
from .failures import StoreError, server_of, service_errors, store_error
from .libraries import ClientException, swift
from .watchdog import WATCHDOG, watch_session

log = logging.getLogger(__name__)

CONTENT_TYPE = "message/rfc822"
# Swift's default constraints: max_meta_value_length.
MAX_META_VALUE = 256
# Don't start an attempt that has less than this left before the deadline.
MIN_ATTEMPT_SECONDS = 1.0
# Bodies up to this size are handed over as bytes: http.client then sends
# headers and body in one send, instead of reading a file 8 KiB at a time
# through swiftclient's wrapper (for a 5 KB message, a third of the calls).
WHOLE_BODY_MAX = 256 * 1024
RETRYABLE_STATUSES = frozenset({408, 422, 429, 500, 502, 503, 504, 507})
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
        self._idle = []

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

    @contextmanager
    def http_connection(self, url, timeout):
        """Lend a keep-alive connection; one that failed is closed, not returned."""
        with self._lock:
            pooled = self._idle.pop() if self._idle else None
        if pooled is None or pooled[1].url != url:
            pooled = swift.http_connection(url, cacert=self.account.cacert,
                                           insecure=self.account.insecure)
            metrics.count_responses(pooled[1])
            watch_session(pooled[1].request_session)
        pooled[1].requests_args["timeout"] = timeout
        try:
            yield pooled
        except BaseException:
            pooled[1].close()
            raise
        with self._lock:
            self._idle.append(pooled)

    def call(self, request, *args, deadline, doing=None, **kwargs):
        """One swiftclient request, bounded by `deadline`; any failure is a StoreError.

        `timeout` bounds each socket operation; the watchdog bounds the
        whole request, connect to the last byte of the answer, by what is
        left of the deadline (swiftdrop.watchdog).
        """
        url, token = self.credentials(deadline)
        timeout = deadline.timeout(self.account.timeout)
        if timeout <= 0:
            raise StoreError(f"{doing or 'the request'}: no time left before the deadline")
        left = deadline.remaining()
        cut = None
        try:
            with self.http_connection(url, timeout) as http_conn, \
                    WATCHDOG.watch(left) as cut:
                return request(url, token, *args, http_conn=http_conn, **kwargs)
        except service_errors() as error:
            answered = isinstance(error, ClientException) and error.http_status
            if not answered:  # answers are counted by count_responses
                metrics.swift_request(request, None)
            if answered == 401:
                self.forget_token(token)
            if cut is not None and cut.fired:
                prefix = f"{doing}: " if doing else ""
                raise StoreError(f"{prefix}Swift at {server_of(url)} did not answer within "
                                 f"{left:.1f} s (the message's deadline)") from None
            raise store_error(error, server=f"Swift at {server_of(url)}", timeout=timeout,
                              doing=doing) from None


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
        headers = {"If-None-Match": "*"}
        headers.update((f"X-Object-Meta-{key}", value) for key, value in metadata.items())
        last_error = StoreError("no attempt could start before the deadline")
        for attempt in range(1, destination.account.retries + 2):
            if deadline.remaining() < MIN_ATTEMPT_SECONDS:
                break
            if attempt > 1:
                metrics.SWIFT_RETRIES.inc()
            try:
                return self._put_once(session, destination, name, message, headers,
                                      deadline=deadline, attempt=attempt,
                                      content_type=content_type)
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

    def _put_once(self, session, destination, name, message, headers, *, deadline, attempt,
                  content_type):
        response = {}
        message.spool.seek(0)
        contents = message.spool.read() if message.size <= WHOLE_BODY_MAX else message.spool
        try:
            etag = session.call(
                swift.put_object, destination.container, name, deadline=deadline,
                contents=contents, content_length=message.size, etag=message.md5,
                content_type=content_type, headers=headers, response_dict=response)
        except StoreError as error:
            if error.status == 412:
                return self._confirm_existing(session, destination, name, message.md5,
                                              attempt=attempt, deadline=deadline)
            raise
        transaction_id = response.get("headers", {}).get("x-trans-id")
        if response.get("status") != 201 or etag != message.md5:
            raise StoreError(f"unexpected answer {response.get('status')} with ETag {etag!r}",
                             response.get("status"), transaction_id)
        return StoredCopy(destination.container, name, etag, transaction_id, attempt)

    def _confirm_existing(self, session, destination, name, md5, *, attempt, deadline):
        """A 412 means the name exists: it is ours if an earlier attempt landed.

        A failed check is a StoreError like a failed PUT, so that the attempt
        is retried and Deliverer removes the sibling copies if all fail.
        """
        headers = session.call(swift.head_object, destination.container, name,
                               deadline=deadline, doing=f"checking the existing {name}")
        if headers.get("etag", "").strip('"') == md5:
            log.info("%s/%s was already stored by an earlier attempt",
                     destination.container, name)
            return StoredCopy(destination.container, name, md5,
                              headers.get("x-trans-id"), attempt)
        raise StoreError(f"object name {name} is taken by other content", 412)

    def delete(self, destination, name, *, deadline=None):
        """Remove a copy whose sibling copies failed; never raises. True once it is gone.

        Without a `deadline` (cleanup after the reply) one attempt may take
        the account's timeout.
        """
        session = self.session(destination)
        deadline = deadline or Deadline(destination.account.timeout + MIN_ATTEMPT_SECONDS)
        try:
            session.call(swift.delete_object, destination.container, name, deadline=deadline,
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

        def call(request, *args, right):
            try:
                return session.call(request, destination.container, *args,
                                    doing=f"{RIGHTS[right]} it",
                                    deadline=Deadline(2 * destination.account.timeout + 1))
            except StoreError as error:
                if error.status != 403:
                    raise
                raise StoreError(f"{error.reason}; {_lacking_right(destination, right)}",
                                 403, error.transaction_id, permanent=True) from None
        try:
            headers = call(swift.head_container, right="read")
        except StoreError as error:
            if error.status != 404 or not destination.create_container:
                raise
            call(swift.put_container, right="create")
            headers = call(swift.head_container, right="read")
        try:
            call(swift.post_object, f"{WRITE_PROBE_PREFIX}{secrets.token_hex(16)}", {},
                 right="write")
        except StoreError as error:
            if error.status != 404:
                raise
        return headers


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


def metadata_value(text):
    """Make `text` safe as a Swift metadata value: printable, within the size limit."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text)
    encoded = cleaned.encode("utf-8")[:MAX_META_VALUE]
    return encoded.decode("utf-8", errors="ignore")
