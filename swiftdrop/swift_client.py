"""The filter's own Swift client: one HTTP/1.1 request on a kept-alive connection.

Why not swiftclient's ``put_object`` (requests and urllib3 underneath) on
the hot path: measured in the filter (bench.filter_profile, 5 KB messages),
swiftclient + requests + urllib3 cost about 0.85 ms per PUT, most of it
URL re-parsing and a scan of the environment for proxy settings on every
request, where ``http.client`` on a kept-alive connection costs about
0.17 ms; and swiftclient sends a file body 8 KiB per read and write, where
``sendfile`` hands the spool file to the kernel in one call. The filter
makes few kinds of request (PUT, HEAD, DELETE, and ``check``'s HEAD, PUT
and POST), all to one storage URL per account: that is little HTTP to own.
Authentication stays with swiftclient and keystoneauth1
(:mod:`swiftdrop.auth`); they do that well and it is off the hot path.

Every request here is one the filter may repeat: its PUTs carry
``If-None-Match: *`` (a repeat after a lost answer gets 412, which
swiftdrop.storage turns into a check of the existing copy), and HEAD,
DELETE and the probe POST change nothing twice. So a kept-alive connection
the server closed while it sat idle is retried at once on a fresh one;
what to do about a failed answer is swiftdrop.storage's business.
"""

from dataclasses import dataclass
import http.client
import os
import socket
import ssl
import threading
from urllib.parse import quote, urlsplit

import requests.certs

from . import metrics
from .failures import StoreError, store_error, untrusted_certificate
from .watchdog import WATCHDOG

# Big enough that a large body goes out in few system calls over TLS,
# where sendfile cannot be used; small enough to stay in the CPU's cache.
SEND_BLOCK = 256 * 1024
# What a reused connection raises when the server closed it while it was idle.
STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError,
         ConnectionAbortedError)


@dataclass(frozen=True)
class Answer:
    """Swift's answer: the status, the headers with lower-case names, the body."""

    status: int
    reason: str
    headers: dict
    body: bytes

    @property
    def transaction_id(self):
        return self.headers.get("x-trans-id")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    token: str
    headers: tuple
    body: "Body | None"


class Body:
    """What a PUT sends: bytes (one send with the headers) or an open file of `size` bytes."""

    def __init__(self, data=None, file=None, size=None):
        self.data, self.file = data, file
        self.size = len(data) if data is not None else size

    def send(self, connection):
        """Send the body on `connection`'s socket: sendfile for a file over plain HTTP."""
        sock = connection.sock
        self.file.seek(0)
        if not isinstance(sock, ssl.SSLSocket):
            sent = sock.sendfile(self.file, 0, self.size)
            if sent != self.size:
                raise BrokenPipeError(f"sent {sent} of {self.size} bytes")
            return
        block = bytearray(min(SEND_BLOCK, self.size) or 1)
        view = memoryview(block)
        left = self.size
        while left:
            count = self.file.readinto(view[:min(left, len(block))])
            if not count:
                raise OSError(f"the spool file ended {left} bytes early")
            sock.sendall(view[:count])
            left -= count


class Endpoint:
    """One storage URL's kept-alive connections, lent to one request at a time.

    Thread-safe: each request takes a connection from the idle list (or
    opens one), and gives it back only after reading the whole answer, so a
    connection is never shared by two requests.
    """

    def __init__(self, storage_url, *, cacert=None, insecure=False):
        parts = urlsplit(storage_url)
        self.storage_url = storage_url
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.path = parts.path.rstrip("/")
        self.host, self.port = parts.hostname, parts.port
        self.tls = _tls_context(cacert, insecure) if parts.scheme == "https" else None
        self._idle = []
        self._lock = threading.Lock()

    def url_path(self, container, name=None):
        """The quoted request path of a container or an object in this account."""
        path = f"{self.path}/{quote(container, safe='')}"
        return path if name is None else f"{path}/{quote(name, safe='/')}"

    def request(self, method, path, *, token, headers=(), body=None, timeout, deadline):
        """One request, answered or a StoreError; cut when `deadline` passes (the watchdog).

        `timeout` bounds each socket operation, `deadline` the whole request.
        """
        left = deadline.remaining()
        with WATCHDOG.watch(left) as cut:
            try:
                return self._answer(Request(method, path, token, headers, body), timeout, cut)
            except (OSError, http.client.HTTPException) as error:
                metrics.SWIFT_REQUESTS.labels(method, "none").inc()
                if cut.fired:
                    raise StoreError(f"Swift at {self.origin} did not answer within "
                                     f"{left:.1f} s (the message's deadline)") from None
                certificate = untrusted_certificate(error)
                if certificate is not None:
                    raise StoreError(f"TLS certificate of {self.origin} not trusted: "
                                     f"{certificate}", permanent=True) from None
                raise store_error(error, server=f"Swift at {self.origin}",
                                  timeout=timeout) from None

    def _answer(self, request, timeout, cut):
        connection, reused = self._connection(timeout)
        cut.add(connection)
        try:
            try:
                answer = self._exchange(connection, request)
            except STALE:
                if not reused or cut.fired:
                    raise
                connection.close()  # closed by Swift while idle: once more, on a new one
                connection, _ = self._connection(timeout, fresh=True)
                cut.add(connection)
                answer = self._exchange(connection, request)
        except BaseException:
            connection.close()
            raise
        metrics.SWIFT_REQUESTS.labels(request.method, str(answer.status)).inc()
        with self._lock:
            self._idle.append(connection)
        return answer

    def _connection(self, timeout, fresh=False):
        """(connection, whether it was kept alive from an earlier request)."""
        connection = None
        if not fresh:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
        if connection is None or connection.sock is None:  # None: it said Connection: close
            if self.tls is not None:
                connection = http.client.HTTPSConnection(self.host, self.port, timeout=timeout,
                                                         context=self.tls)
            else:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
            connection.connect()
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return connection, False
        connection.sock.settimeout(timeout)
        return connection, True

    @staticmethod
    def _exchange(connection, request):
        connection.putrequest(request.method, request.path, skip_accept_encoding=True)
        connection.putheader("X-Auth-Token", request.token)
        for name, value in request.headers:
            connection.putheader(name, value.encode("utf-8") if isinstance(value, str)
                                 else value)
        body = request.body
        if body is None:
            if request.method in ("PUT", "POST"):
                connection.putheader("Content-Length", "0")
            connection.endheaders()
        else:
            connection.putheader("Content-Length", str(body.size))
            if body.data is not None:
                connection.endheaders(body.data)  # headers and body in one send
            else:
                connection.endheaders()
                body.send(connection)
        response = connection.getresponse()
        content = response.read()
        return Answer(response.status, response.reason,
                      {name.lower(): value for name, value in response.getheaders()}, content)

    def close(self):
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def _tls_context(cacert, insecure):
    """Verify Swift's certificate and host name unless insecure, trusting what requests does.

    Authentication goes through requests, so the data path trusts the same
    CAs: `cacert`, else REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, else the
    bundle requests uses (Debian's system store). One store for both, or a
    Keystone and a Swift behind one private CA would pass and fail apart.
    """
    cafile = (cacert or os.environ.get("REQUESTS_CA_BUNDLE")
              or os.environ.get("CURL_CA_BUNDLE") or requests.certs.where())
    context = ssl.create_default_context(cafile=os.fspath(cafile))
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
