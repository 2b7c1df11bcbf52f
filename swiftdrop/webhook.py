"""The webhook transport: one signed POST per hand-over, and what its answer means.

Only the standard library (http.client, ssl): a POST is one request with
one deadline for all of it (connect, TLS handshake, sending, the answer),
no redirects followed, no retries of its own. What the answer means for the
message is the contract of docs/webhooks.md, "Status semantics":

* 2xx: done;
* 406 or 410: failed at once, the receiver said never again;
* anything else is a retry with the queue's back-off: 429 and 5xx, and also
  3xx (redirects are not followed) and the other 4xx, because a receiver
  that is misconfigured (401, 404, 413 ...) must not eat mail; a timeout, a
  refused or reset connection, a TLS failure likewise.

A ``Retry-After`` on 429 or 503 asks the retry to wait at least that long.
"""

import base64
from dataclasses import dataclass
import email.utils
import hashlib
import hmac
import http.client
import socket
import ssl
import threading
import time
import urllib.parse

from . import __version__
from .config import public_url

NEVER_AGAIN = frozenset({406, 410})
RETRY_AFTER_STATUSES = frozenset({429, 503})
SIGNATURE_VERSION = "v1"
# What a Last-Error may take of Swift's 256 bytes of metadata value, with
# room for "gave up after 30 attempts; last: " in front.
MAX_REASON = 200
# Bytes of an answer's body read, for the first line of it in the reason.
ANSWER_READ = 4096


@dataclass(frozen=True)
class Answer:
    """One POST's result: its metric outcome, the queue state it asks for, and why.

    `status` is the HTTP status (None without one); `reason` is what a
    person reads in Last-Error and the journal (``HTTP 503 Service
    Unavailable: overloaded``, ``timed out after 30 s``); `retry_after` the
    seconds a 429 or 503 asked to wait (None: it did not).
    """

    outcome: str
    state: str
    reason: str
    status: int | None = None
    retry_after: float | None = None
    seconds: float = 0.0


def signature(secret, timestamp, body):
    """``v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>``: X-SwiftDrop-Signature."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def request_headers(settings, body, content_type, fields, clock=time.time):
    """The headers of one POST: type, agent, timestamp and signature, then `fields`.

    `fields` are the X-SwiftDrop-* headers of the message (name: value).
    The timestamp is signed with the body, so that a receiver that refuses
    old timestamps refuses a replayed request too.
    """
    timestamp = int(clock())
    return {"Content-Type": content_type, "User-Agent": f"SwiftDrop/{__version__}",
            "X-SwiftDrop-Timestamp": str(timestamp),
            "X-SwiftDrop-Signature": signature(settings.secret, timestamp, body),
            **fields}


def post(settings, body, headers):
    """POST `body` to the settings' URL within its timeout; the Answer, never an exception.

    Every way a POST can go wrong (no connection, a bad certificate, a
    receiver that hangs or hangs up) is an Answer asking for a retry.
    """
    url = urllib.parse.urlsplit(settings.url)
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    if url.username is not None:
        credentials = f"{urllib.parse.unquote(url.username)}:" \
                      f"{urllib.parse.unquote(url.password or '')}"
        headers = {**headers, "Authorization": "Basic "
                   + base64.b64encode(credentials.encode()).decode()}
    started = time.monotonic()
    deadline = _Deadline(settings.timeout)
    connection = _connection(url, settings)
    # http.client opens its socket through this attribute: the deadline
    # watches the socket from then on, TLS handshake included.
    connection._create_connection = deadline.watching(connection._create_connection)
    try:
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        excerpt = response.read(ANSWER_READ)
        answer = judge(response.status, response.reason, response.headers, excerpt)
    except (OSError, http.client.HTTPException) as error:
        answer = _failure(error, deadline, settings)
    finally:
        deadline.end()
        connection.close()
    return _with_time(answer, time.monotonic() - started)


def _connection(url, settings):
    timeout = settings.timeout
    if url.scheme == "https":
        return http.client.HTTPSConnection(url.hostname, url.port, timeout=timeout,
                                           context=tls_context(settings))
    return http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)


def tls_context(settings):
    """Verify the receiver with webhook_cacert (else the system's CAs), unless webhook_insecure."""
    context = ssl.create_default_context(cafile=settings.cacert)
    if settings.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def judge(status, phrase, headers, excerpt=b""):
    """The Answer for an HTTP answer (docs/webhooks.md, "Status semantics")."""
    outcome = f"{status // 100}xx" if 200 <= status < 600 else "5xx"
    reason = f"HTTP {status} {phrase}".rstrip()
    if outcome == "2xx":
        return Answer(outcome, "done", reason, status)
    if outcome == "3xx":
        location = headers.get("Location")
        reason += ": redirects are not followed" + (
            f" (Location: {public_url(location)})" if location else "")
        return Answer(outcome, "retry", shortened(reason), status)
    reason = shortened(reason + _first_line(excerpt))
    if status in NEVER_AGAIN:
        return Answer(outcome, "failed", reason, status)
    retry_after = retry_after_seconds(headers.get("Retry-After")) \
        if status in RETRY_AFTER_STATUSES else None
    return Answer(outcome, "retry", reason, status, retry_after)


def retry_after_seconds(value, clock=time.time):
    """Seconds from now a Retry-After asks for (delay-seconds or an HTTP date); None if neither."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - clock())


def _failure(error, deadline, settings):
    """The Answer for a POST that got no HTTP answer: a retry, classified."""
    if deadline.passed or isinstance(error, TimeoutError):
        return _timed_out(settings)
    if isinstance(error, ssl.SSLCertVerificationError):
        return Answer("tls", "retry", shortened(f"TLS: {error.verify_message}"))
    if isinstance(error, ssl.SSLError):
        return Answer("tls", "retry", shortened(f"TLS: {error.reason or error}"))
    if isinstance(error, ConnectionRefusedError):
        return Answer("connection", "retry", "connection refused")
    if isinstance(error, ConnectionResetError):
        return Answer("connection", "retry", "connection reset")
    if isinstance(error, http.client.RemoteDisconnected):
        return Answer("connection", "retry", "connection closed without an answer")
    if isinstance(error, http.client.HTTPException):
        return Answer("connection", "retry", shortened(
            f"not an HTTP answer: {type(error).__name__} {error}".rstrip()))
    return Answer("connection", "retry", shortened(
        f"connection: {error.strerror or error}"))


def _timed_out(settings):
    return Answer("timeout", "retry", f"timed out after {settings.timeout:g} s")


def _with_time(answer, seconds):
    return Answer(answer.outcome, answer.state, answer.reason, answer.status,
                  answer.retry_after, seconds)


def _first_line(excerpt):
    """": <the answer body's first line>", printable ASCII only; "" for an empty body."""
    line = excerpt.decode("ascii", "replace").strip().split("\n", 1)[0]
    line = "".join(char if char.isprintable() and char.isascii() else "?" for char in line)
    return f": {' '.join(line.split())}" if line.strip() else ""


def shortened(text):
    """`text` cut to MAX_REASON characters, to fit a metadata value with room to spare."""
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."


class _Deadline:
    """One deadline for a whole POST: when it passes, the connection's socket is shut down.

    A socket timeout counts per read, so a receiver trickling its answer a
    byte at a time would hold the POST for ever; shutting the socket down
    from a timer ends whatever the POST is blocked in. The timer works on a
    duplicate of the socket's descriptor, so that wrapping it in TLS (which
    takes the original over) changes nothing.
    """

    def __init__(self, seconds):
        self.seconds = seconds
        self.passed = False
        self._socket = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True
        self._timer.start()

    def watching(self, create_connection):
        def create(*args, **kwargs):
            sock = create_connection(*args, **kwargs)
            with self._lock:
                self._socket = sock.dup()
                if self.passed:  # the connect itself took the time
                    self._shut()
            return sock
        return create

    def _cut(self):
        with self._lock:
            self.passed = True
            if self._socket is not None:
                self._shut()

    def _shut(self):
        try:
            self._socket.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # closed by the other side already

    def end(self):
        self._timer.cancel()
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
