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
import ssl
import threading
import time
from urllib.parse import urlsplit

import requests
from swiftclient import client as swift
from swiftclient.exceptions import ClientException
from urllib3.util.ssl_match_hostname import CertificateError as HostnameMismatch

log = logging.getLogger(__name__)

CONTENT_TYPE = "message/rfc822"
# Swift's default constraints: max_meta_value_length.
MAX_META_VALUE = 256
# Don't start an attempt that has less than this left before the deadline.
MIN_ATTEMPT_SECONDS = 1.0
RETRYABLE_STATUSES = frozenset({408, 422, 429, 500, 502, 503, 504, 507})


class StoreError(Exception):
    """A copy could not be stored; carries what the operator needs to look it up."""

    def __init__(self, reason, status=None, transaction_id=None, *, permanent=False):
        super().__init__(reason)
        self.reason, self.status, self.transaction_id = reason, status, transaction_id
        # A retry cannot help (an untrusted certificate): fail at once, not after back-off.
        self.permanent = permanent


@dataclass(frozen=True)
class StoredCopy:
    container: str
    name: str
    etag: str
    transaction_id: str | None
    attempts: int


class AccountSession:
    """One account's token, shared by all threads, and its idle HTTP connections."""

    def __init__(self, account):
        self.account = account
        self.auth_requests = 0
        self._auth_lock = threading.Lock()
        self._storage_url = None
        self._token = None
        self._pool_lock = threading.Lock()
        self._idle = []

    def credentials(self):
        """Return (storage URL, token), authenticating only if we hold no token."""
        with self._auth_lock:
            if self._token is None:
                account = self.account
                self.auth_requests += 1
                self._storage_url, self._token = swift.get_auth(
                    account.authurl, account.user, account.key,
                    auth_version=account.auth_version,
                    tenant_name=account.tenant_name,
                    os_options=dict(account.os_options),
                    cacert=account.cacert, insecure=account.insecure,
                    timeout=account.timeout,
                )
                log.info("authenticated %s", account.describe())
            return self._storage_url, self._token

    def forget_token(self, token):
        """Drop `token` after a 401, unless another thread already replaced it."""
        with self._auth_lock:
            if self._token == token:
                self._token = None

    @contextmanager
    def http_connection(self, url, timeout):
        """Lend a keep-alive connection; one that failed is closed, not returned."""
        with self._pool_lock:
            pooled = self._idle.pop() if self._idle else None
        if pooled is None or pooled[1].url != url:
            pooled = swift.http_connection(url, cacert=self.account.cacert,
                                           insecure=self.account.insecure)
        pooled[1].requests_args["timeout"] = timeout
        try:
            yield pooled
        except BaseException:
            pooled[1].close()
            raise
        with self._pool_lock:
            self._idle.append(pooled)

    def call(self, request, *args, **kwargs):
        """One swiftclient.client request with our token and a pooled connection."""
        url, token = self.credentials()
        with self.http_connection(url, self.account.timeout) as http_conn:
            return request(url, token, *args, http_conn=http_conn, **kwargs)


class SwiftStore:
    """Puts and deletes message copies; one AccountSession per distinct account."""

    def __init__(self):
        self._sessions = {}
        self._lock = threading.Lock()

    def session(self, account):
        with self._lock:
            if account not in self._sessions:
                self._sessions[account] = AccountSession(account)
            return self._sessions[account]

    @property
    def auth_requests(self):
        with self._lock:
            return sum(session.auth_requests for session in self._sessions.values())

    def put(self, destination, name, message, metadata, *, deadline):
        """Store one copy or raise StoreError; never overwrites, never leaves a partial object.

        `deadline` is a time.monotonic() value: no attempt starts that could
        not finish by then, so the SMTP reply always beats Postfix's
        smtpd_proxy_timeout.
        """
        session = self.session(destination.account)
        headers = {"If-None-Match": "*"}
        headers.update((f"X-Object-Meta-{key}", value) for key, value in metadata.items())
        last_error = StoreError("no attempt could start before the deadline")
        for attempt in range(1, destination.account.retries + 2):
            remaining = deadline - time.monotonic()
            if remaining < MIN_ATTEMPT_SECONDS:
                break
            try:
                return self._put_once(session, destination, name, message, headers,
                                      timeout=min(destination.account.timeout, remaining),
                                      attempt=attempt)
            except StoreError as error:
                last_error = error
                if error.permanent or (error.status not in RETRYABLE_STATUSES
                                       and error.status not in (None, 401)):
                    raise
            log.warning("storing %s/%s, attempt %d failed: %s",
                        destination.container, name, attempt, last_error.reason,
                        extra={"SWIFTDROP_SECTION": destination.section})
            if last_error.status != 401:
                time.sleep(min(0.5 * 2 ** (attempt - 1),
                               max(0.0, deadline - time.monotonic() - MIN_ATTEMPT_SECONDS)))
        raise last_error

    def _put_once(self, session, destination, name, message, headers, *, timeout, attempt):
        response = {}
        token = None
        try:
            url, token = session.credentials()
            message.spool.seek(0)
            with session.http_connection(url, timeout) as http_conn:
                etag = swift.put_object(
                    url, token, destination.container, name, contents=message.spool,
                    content_length=message.size, etag=message.md5, content_type=CONTENT_TYPE,
                    headers=headers, http_conn=http_conn, response_dict=response)
        except ClientException as error:
            if error.http_status == 401 and token is not None:
                session.forget_token(token)
            if error.http_status == 412:
                return self._confirm_existing(session, destination, name, message.md5, attempt)
            raise _store_error(error) from None
        except (requests.RequestException, OSError) as error:
            raise _store_error(error) from None
        transaction_id = response.get("headers", {}).get("x-trans-id")
        if response.get("status") != 201 or etag != message.md5:
            raise StoreError(f"unexpected answer {response.get('status')} with ETag {etag!r}",
                             response.get("status"), transaction_id)
        return StoredCopy(destination.container, name, etag, transaction_id, attempt)

    def _confirm_existing(self, session, destination, name, md5, attempt):
        """A 412 means the name exists: it is ours if an earlier attempt landed.

        A failed check is a StoreError like a failed PUT, so that the attempt
        is retried and Deliverer removes the sibling copies if all fail.
        """
        try:
            headers = session.call(swift.head_object, destination.container, name)
        except (ClientException, requests.RequestException, OSError) as error:
            raise _store_error(error, doing=f"checking the existing {name}") from None
        if headers.get("etag", "").strip('"') == md5:
            log.info("%s/%s was already stored by an earlier attempt",
                     destination.container, name)
            return StoredCopy(destination.container, name, md5,
                              headers.get("x-trans-id"), attempt)
        raise StoreError(f"object name {name} is taken by other content", 412)

    def delete(self, destination, name):
        """Best-effort removal of a copy whose sibling copies failed; never raises."""
        session = self.session(destination.account)
        try:
            session.call(swift.delete_object, destination.container, name)
        except (ClientException, requests.RequestException, OSError) as error:
            log.error("could not remove %s/%s after a failed delivery: %s",
                      destination.container, name, describe_failure(error))
            return False
        return True

    def check(self, destination):
        """Authenticate and HEAD the container, creating it if configured to."""
        session = self.session(destination.account)
        try:
            return session.call(swift.head_container, destination.container)
        except ClientException as error:
            if error.http_status != 404 or not destination.create_container:
                raise
        session.call(swift.put_container, destination.container)
        return session.call(swift.head_container, destination.container)


def _describe(error):
    """Status and reason without the response body, which may echo request data."""
    reason = f"Swift answered {error.http_status} {error.http_reason}".strip()
    if error.http_status is None:
        reason = error.msg
    return reason


def describe_failure(error):
    """One line for the operator, whatever a Swift or Keystone request raised."""
    if (isinstance(error, requests.RequestException | OSError)
            or untrusted_certificate(error) is not None):
        return describe_transport_error(error)
    return str(error)


def _store_error(error, doing=None):
    """The StoreError for what a Swift request raised: Swift's answer, or why none came.

    An untrusted certificate (also Keystone's, which swiftclient wraps in a
    ClientException) is permanent: no retry can fix it.
    """
    prefix = f"{doing}: " if doing else ""
    if isinstance(error, ClientException) and untrusted_certificate(error) is None:
        return StoreError(prefix + _describe(error), error.http_status, error.transaction_id)
    return StoreError(prefix + describe_transport_error(error),
                      permanent=untrusted_certificate(error) is not None)


def describe_transport_error(error):
    """A failure below HTTP, worded plainly.

    requests buries an untrusted certificate three wrappers deep ("Max retries
    exceeded ... Caused by SSLError(SSLCertVerificationError(...))"); the
    operator needs the server and the reason, so that is what comes first.
    """
    reason = untrusted_certificate(error)
    if reason is not None:
        return f"TLS certificate of {_origin(error)} not trusted: {reason}"
    return f"{type(error).__name__}: {error}"


def untrusted_certificate(error):
    """Why the certificate was refused if `error` comes from verifying it, else None.

    OpenSSL checks the chain; urllib3 checks the host name itself for IP addresses.
    """
    for cause in _causes(error):
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause.verify_message or cause.reason or str(cause)
        if isinstance(cause, HostnameMismatch):
            return str(cause)
    return None


def _origin(error):
    """scheme://host:port of the server the failed request went to."""
    for cause in _causes(error):
        request = getattr(cause, "request", None)
        if getattr(request, "url", None):
            parts = urlsplit(request.url)
            return f"{parts.scheme}://{parts.netloc}"
        pool = getattr(cause, "pool", None)  # urllib3's MaxRetryError
        if pool is not None:
            return f"{pool.scheme}://{pool.host}:{pool.port}"
    return "the server"


def _causes(error):
    """`error` and everything it wraps: causes, contexts, exceptions among its args, .reason."""
    seen, pending = set(), [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None),
                  *current.args]
        pending.extend(item for item in linked if isinstance(item, BaseException))


def metadata_value(text):
    """Make `text` safe as a Swift metadata value: printable, within the size limit."""
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text)
    encoded = cleaned.encode("utf-8")[:MAX_META_VALUE]
    return encoded.decode("utf-8", errors="ignore")
