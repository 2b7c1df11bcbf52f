"""The filter's own Swift client: one HTTP/1.1 request on a kept-alive connection.

Why not swiftclient's ``put_object`` (requests and urllib3 underneath) on
the hot path: measured in the filter (bench.filter_profile, 5 KB messages),
swiftclient + requests + urllib3 cost about 0.85 ms per PUT, most of it
URL re-parsing and a scan of the environment for proxy settings on every
request; even ``http.client`` spends a third of the filter's CPU on a 5 KB
message parsing each answer's headers with the email package. And
swiftclient sends a file body 8 KiB per read and write, where ``sendfile``
hands the spool file to the kernel in one call. The filter makes few kinds
of request (PUT, HEAD, DELETE, and ``check``'s HEAD, PUT and POST), all to
one storage URL per account, and reads short answers: little HTTP to own,
written and read here on a plain socket (:class:`Connection`).
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
from .failures import StoreError, store_error
from .watchdog import WATCHDOG

# Big enough that a large body goes out in few system calls over TLS,
# where sendfile cannot be used; small enough to stay in the CPU's cache.
SEND_BLOCK = 256 * 1024
# Object names are ours (swiftdrop.naming): these need no quoting in a path.
NAME_SAFE = "/,=:@"
MAX_LINE = 65536
MAX_HEADERS = 100
MAX_HEAD = MAX_HEADERS * 1024  # the status line and headers of one answer
RECEIVE_SIZE = 16384  # an answer's head and short body in one recv
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

    def send(self, sock):
        """Send the file body on `sock`: with sendfile over plain HTTP, in blocks over TLS."""
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
        self.netloc = parts.netloc
        self.path = parts.path.rstrip("/")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = _tls_context(cacert, insecure) if parts.scheme == "https" else None
        self._idle = []
        self._lock = threading.Lock()

    def url_path(self, container, name=None):
        """The quoted request path of a container or an object in this account."""
        path = f"{self.path}/{quote(container, safe='')}"
        return path if name is None else f"{path}/{quote(name, safe=NAME_SAFE)}"

    def request(self, method, path, *, token, headers=(), body=None, timeout, deadline,
                doing=None):
        """One request, answered or a StoreError; cut when `deadline` passes (the watchdog).

        `timeout` bounds each socket operation, `deadline` the whole request;
        `doing` starts the StoreError's reason, as store_error puts it.
        """
        left = deadline.remaining()
        with WATCHDOG.watch(left) as cut:
            try:
                return self._answer(Request(method, path, token, headers, body), timeout, cut)
            except (OSError, http.client.HTTPException) as error:
                metrics.SWIFT_REQUESTS.labels(method, "none").inc()
                if cut.fired:
                    prefix = f"{doing}: " if doing else ""
                    raise StoreError(f"{prefix}Swift at {self.origin} did not answer within "
                                     f"{left:.1f} s (the message's deadline)") from None
                raise store_error(error, server=f"Swift at {self.origin}", timeout=timeout,
                                  doing=doing, origin=self.origin) from None

    def _answer(self, request, timeout, cut):
        connection, reused = self._connection(timeout)
        cut.add(connection)
        try:
            try:
                answer = connection.exchange(request)
            except STALE:
                if not reused or cut.fired:
                    raise
                connection.close()  # closed by Swift while idle: once more, on a new one
                connection, _ = self._connection(timeout, fresh=True)
                cut.add(connection)
                answer = connection.exchange(request)
        except BaseException:
            connection.close()
            raise
        metrics.SWIFT_REQUESTS.labels(request.method, str(answer.status)).inc()
        if connection.reusable:
            with self._lock:
                self._idle.append(connection)
        else:
            connection.close()
        return answer

    def _connection(self, timeout, fresh=False):
        """(connection, whether it was kept alive from an earlier request)."""
        connection = None
        if not fresh:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
        if connection is None:
            return Connection(self.host, self.port, self.netloc, self.tls, timeout), False
        connection.sock.settimeout(timeout)
        return connection, True

    def close(self):
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


class Connection:
    """One kept-alive HTTP/1.1 connection: a request written in one send, its answer read.

    The few kinds of answer Swift gives the filter (a status, some headers,
    an empty or short body) are read here directly, with the socket's own
    ``recv``: http.client parses every answer's headers with the email
    package, a third of the filter's CPU on a 5 KB message, and even a
    BufferedReader costs a Python-level read per answer and a call per
    header line. `sock` is what the watchdog shuts down.
    """

    def __init__(self, host, port, netloc, tls, timeout):
        sock = socket.create_connection((host, port), timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.host = netloc.encode("idna")
        self.reusable = True
        self._received = bytearray()  # read from the socket, not yet taken as answer

    def exchange(self, request):
        """Send `request`, return Swift's Answer; what the socket raises, or an HTTPException."""
        body = request.body
        head = [b"%s %s HTTP/1.1\r\nHost: %s\r\nX-Auth-Token: %s\r\n" % (
            request.method.encode(), request.path.encode("ascii"), self.host,
            request.token.encode("ascii"))]
        for name, value in request.headers:
            encoded = value.encode("utf-8") if isinstance(value, str) else value
            if b"\n" in encoded or b"\r" in encoded:
                raise ValueError(f"header {name} holds a line break")
            head.append(b"%s: %s\r\n" % (name.encode("ascii"), encoded))
        if body is not None:
            head.append(b"Content-Length: %d\r\n" % body.size)
        elif request.method in ("PUT", "POST"):
            head.append(b"Content-Length: 0\r\n")
        head.append(b"\r\n")
        if body is not None and body.data is not None:
            head.append(body.data)  # headers and body in one send
        self.sock.sendall(b"".join(head))
        if body is not None and body.data is None:
            body.send(self.sock)
        return self._answer(request.method)

    def _answer(self, method):
        status, reason, version, headers = self._head()
        while 100 <= status < 200:  # an interim answer: the real one follows
            status, reason, version, headers = self._head()
        if method == "HEAD" or status in (204, 304):
            content = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            content = self._chunked()
        elif "content-length" in headers:
            content = self._exactly(_length(headers["content-length"]))
        else:
            content, self.reusable = self._to_the_end(), False
        if (headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
                or self._received):  # more than the answer: nothing to trust it for
            self.reusable = False
        return Answer(status, reason, headers, content)

    def _receive(self):
        """Add what the socket has to what was received; False once the peer closed."""
        more = self.sock.recv(RECEIVE_SIZE)
        self._received += more
        return bool(more)

    def _head(self):
        """(status, reason, version, headers) of the next answer, its blank line consumed."""
        received = self._received
        while (end := received.find(b"\r\n\r\n")) < 0:
            if len(received) > MAX_HEAD:
                raise http.client.LineTooLong("header block")
            if not self._receive():
                if not received:
                    raise http.client.RemoteDisconnected(
                        "Remote end closed connection without response")
                raise http.client.IncompleteRead(bytes(received))
        lines = received[:end].decode("latin-1").split("\r\n")
        del received[:end + 4]
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/") or len(code) != 3 or not code.isdigit():
            raise http.client.BadStatusLine(lines[0])
        if len(lines) > MAX_HEADERS + 1:
            raise http.client.HTTPException(f"more than {MAX_HEADERS} headers")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(code), reason.strip(), version, headers

    def _exactly(self, size):
        received = self._received
        while len(received) < size:
            if not self._receive():
                raise http.client.IncompleteRead(bytes(received), size - len(received))
        content = bytes(received[:size])
        del received[:size]
        return content

    def _line(self):
        received = self._received
        while (end := received.find(b"\n")) < 0:
            if len(received) > MAX_LINE:
                raise http.client.LineTooLong("chunk size line")
            if not self._receive():
                raise http.client.IncompleteRead(bytes(received))
        line = bytes(received[:end + 1])
        del received[:end + 1]
        return line

    def _chunked(self):
        parts = []
        while True:
            size = _length(self._line().split(b";", 1)[0], 16)
            if not size:
                break
            parts.append(self._exactly(size))
            self._exactly(2)  # the CRLF after the chunk
        while self._line() not in (b"\r\n", b"\n"):
            pass  # trailers: nothing the filter needs
        return b"".join(parts)

    def _to_the_end(self):
        while self._receive():
            pass
        content = bytes(self._received)
        self._received.clear()
        return content

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _length(text, base=10):
    try:
        size = int(text.strip(), base)
    except ValueError:
        raise http.client.HTTPException(f"bad length {text!r}") from None
    if size < 0:
        raise http.client.HTTPException(f"bad length {text!r}")
    return size


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
