"""An HTTP proxy between the filter and the real Swift that can misbehave on command.

Swift itself cannot be told to answer 503 or 507, or to store an object and
answer too late, so these faults are injected here; everything else (tokens,
ETag checks, ``If-None-Match``, what lands on disk) stays the real Swift's.
The filter's ``authurl`` points at this proxy and the proxy passes the
``Host`` header on unchanged, so tempauth's storage URL (``$HOST/v1/...``)
names the proxy too and every request of the filter comes through here.

Only object requests (``/v1/<account>/<container>/<object>``) are disturbed;
auth and container requests always pass, so a fault hits uploads and the
filter's check of an earlier upload, as an overloaded Swift would.

Modes (:meth:`FaultProxy.set_mode`):

* ``pass``: forward everything;
* ``status`` (``arg`` 503, 507...): read the request, answer ``arg``, forward
  nothing;
* ``delay`` (``arg`` seconds): forward, then hold Swift's answer back for
  ``arg`` seconds -- Swift stored the object but the filter may give up first;
* ``drop``: forward half the request body, then cut both connections, as a
  network failure in the middle of an upload would;
* ``drip`` (``arg`` seconds): forward, then hand Swift's whole answer back
  a byte every ``arg`` seconds: each read the filter makes succeeds, so no
  socket timeout ever trips, and only a deadline over the whole request ends it;
* ``stall`` (``arg`` bytes a second): read the request body that slowly;
* ``cut-after-headers`` (``arg`` N): forward, relay Swift's status line and
  headers (the body announced as chunked), then cut the connection before
  the body, for the next N requests, then ``pass`` again. Swift has stored
  the object; the client learns it only by asking again.

``methods`` limits a mode to some request methods (e.g. only ``HEAD``).

:meth:`FaultProxy.arm` runs a callback once, from inside the next upload
(half its body forwarded, or after Swift's answer and before the filter
sees it): that is how Swift or the filter is killed at an exact moment.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
import http.client
import http.server
import re
import socket
import sys
import threading
import time

HOST = "127.0.0.1"
CHUNK = 65536
OBJECT_PATH = re.compile(r"^/v1/[^/]+/[^/]+/.+")
# Hop-by-hop headers are the proxy's own business, not to be relayed.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                        "transfer-encoding", "upgrade"})


@dataclass(frozen=True)
class Mode:
    kind: str = "pass"
    arg: float = 0
    methods: tuple = ()  # only these request methods; () means all

    def __str__(self):
        return self.kind if self.kind == "pass" else f"{self.kind} {self.arg:g}"


class Stats:
    """What went through, for assertions (auth requests) and the report."""

    def __init__(self):
        self.lock = threading.Lock()
        self.auth_requests = 0
        self.object_requests = 0
        self.injected = 0
        self.last_token = None

    def snapshot(self):
        with self.lock:
            return {"auth_requests": self.auth_requests,
                    "object_requests": self.object_requests, "injected": self.injected}


class Trap:
    """A one-shot callback for the next object upload, at `moment` 'midway' or 'answered'.

    `fired` is set once the callback has returned (the victim is dead).
    """

    def __init__(self, moment, callback, min_size):
        self.moment, self.callback, self.min_size = moment, callback, min_size
        self.taken = False
        self.fired = threading.Event()
        self.lock = threading.Lock()

    def take(self, moment, size):
        """True for exactly one caller at the right moment with a big enough body."""
        with self.lock:
            if self.taken or moment != self.moment or size < self.min_size:
                return False
            self.taken = True
            return True

    def disarm(self):
        """False if it is too late: the callback has been taken already."""
        with self.lock:
            was_taken, self.taken = self.taken, True
            return not was_taken


class FaultProxy:
    """A threaded HTTP/1.1 proxy on 127.0.0.1 in front of Swift at `upstream_port`."""

    def __init__(self, upstream_port, port=0):
        self.upstream_port = upstream_port
        self.mode = Mode()
        self.stats = Stats()
        self.trap = None
        self._lock = threading.Lock()
        self.server = _Server((HOST, port), _Handler)
        self.server.proxy = self
        self.port = self.server.server_address[1]
        self.thread = None

    @property
    def url(self):
        return f"http://{HOST}:{self.port}"

    @property
    def auth_url(self):
        return f"{self.url}/auth/v1.0"

    def start(self):
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True,
                                       name="faultproxy")
        self.thread.start()
        return self

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def set_mode(self, kind="pass", arg=0, methods=()):
        with self._lock:
            self.mode = Mode(kind, arg, tuple(methods))

    def current_mode(self):
        with self._lock:
            return self.mode

    def take_cut(self):
        """True if this answer is to be cut: exactly N of them with ``arg`` N (0: all).

        Decided when the answer is there, not when the request came: of
        several concurrent uploads only as many are cut as were asked for.
        """
        with self._lock:
            if self.mode.kind != "cut-after-headers":
                return False
            if self.mode.arg > 0:
                left = self.mode.arg - 1
                self.mode = Mode("cut-after-headers", left, self.mode.methods) if left \
                    else Mode()
            return True

    def arm(self, moment, callback, min_size=0):
        """Run `callback` once inside the next upload of at least `min_size` bytes.

        'midway': after half the body went to Swift; 'answered': after Swift
        answered, before the answer is relayed. Returns the Trap (wait on
        ``trap.fired``).
        """
        if moment not in ("midway", "answered"):
            raise ValueError(moment)
        with self._lock:
            self.trap = Trap(moment, callback, min_size)
            return self.trap

    def spring(self, moment, size):
        with self._lock:
            trap = self.trap
        if trap is not None and trap.take(moment, size):
            try:
                trap.callback()
            finally:
                trap.fired.set()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """A filter killed mid-request is one of the faults, not the proxy's error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "faultproxy"

    def log_message(self, format, *args):
        """Quiet: the ledger reports what matters."""

    def do_GET(self):
        self.relay()

    do_PUT = do_HEAD = do_DELETE = do_POST = do_COPY = do_GET

    @property
    def proxy(self) -> FaultProxy:
        return self.server.proxy

    def relay(self):
        stats = self.proxy.stats
        is_object = bool(OBJECT_PATH.match(self.path))
        with stats.lock:
            if self.path.startswith("/auth/"):
                stats.auth_requests += 1
            if is_object:
                stats.object_requests += 1
                stats.last_token = self.headers.get("X-Auth-Token") or stats.last_token
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            self.answer(411)  # the filter always sends Content-Length
            return
        length = int(self.headers.get("Content-Length") or 0)
        mode = self.proxy.current_mode() if is_object else Mode()
        if mode.methods and self.command not in mode.methods:
            mode = Mode()
        if mode.kind == "status":
            self.rfile.read(length)
            with stats.lock:
                stats.injected += 1
            self.answer(int(mode.arg))
            return
        upstream = http.client.HTTPConnection(HOST, self.proxy.upstream_port, timeout=60)
        try:
            self.forward(upstream, length, mode, is_object)
        except (OSError, http.client.HTTPException):
            # Swift vanished (stopped or killed) or we cut the line on purpose:
            # the filter sees what a real network failure looks like.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        finally:
            upstream.close()

    def forward(self, upstream, length, mode, is_object):
        upstream.putrequest(self.command, self.path, skip_host=True,
                            skip_accept_encoding=True)
        for name, value in self.headers.items():
            if name.lower() not in HOP_BY_HOP:
                upstream.putheader(name, value)
        upstream.endheaders()
        is_upload = is_object and self.command == "PUT"
        sent = 0
        for limit in (length // 2, length):
            while sent < limit:
                if mode.kind == "stall":
                    time.sleep(1)
                chunk = self.rfile.read(min(int(mode.arg) if mode.kind == "stall" else CHUNK,
                                            limit - sent))
                if not chunk:
                    raise ConnectionError("client went away during the body")
                upstream.send(chunk)
                sent += len(chunk)
            if is_upload and limit < length:  # half the body is with Swift
                if mode.kind == "drop":
                    with self.proxy.stats.lock:
                        self.proxy.stats.injected += 1
                    raise ConnectionError("dropped mid-body on purpose")
                self.proxy.spring("midway", length)
        response = upstream.getresponse()
        body = response.read()
        if is_upload:
            self.proxy.spring("answered", length)
        if mode.kind == "delay":
            with self.proxy.stats.lock:
                self.proxy.stats.injected += 1
            time.sleep(mode.arg)
        if mode.kind == "cut-after-headers" and self.proxy.take_cut():
            self.cut_after_headers(response)
        if mode.kind == "drip":
            self.drip(response, body, mode.arg)
            return
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        if self.command != "HEAD" or response.getheader("Content-Length") is None:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Content-Length", response.getheader("Content-Length"))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def drip(self, response, body, seconds):
        """Swift's answer, a byte every `seconds`, until it is through or the client is gone."""
        with self.proxy.stats.lock:
            self.proxy.stats.injected += 1
        head = [f"HTTP/1.1 {response.status} {response.reason}"]
        head += [f"{name}: {value}" for name, value in response.getheaders()
                 if name.lower() not in HOP_BY_HOP and name.lower() != "content-length"]
        head.append(f"Content-Length: {len(body)}")
        answer = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        self.close_connection = True
        for byte in answer:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(seconds)

    def cut_after_headers(self, response):
        """Relay the status and headers, promise a chunked body, and hang up."""
        with self.proxy.stats.lock:
            self.proxy.stats.injected += 1
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        raise ConnectionError("cut after the response headers on purpose")

    def answer(self, status):
        self.send_response_only(status)
        self.send_header("Content-Length", "0")
        self.send_header("X-Trans-Id", "txfaultproxy")
        self.end_headers()
