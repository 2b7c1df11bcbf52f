"""A loopback HTTP proxy in front of the test Swift with the consumer side's faults.

Workers, ``recover`` and the heartbeat reach Swift through it (their
``authurl`` names it, and tempauth's storage URLs follow the Host header).
A request it leaves alone reaches the real Swift as sent, and Swift's
answer comes back as given. Its faults, each off until set:

``trickle_share``
    that share of object requests gets its answer at a byte a second for
    the first ``trickle_bytes`` (a range) bytes, then the rest at once: a
    Swift too slow for the lease, yet never silent long enough for the
    client's socket timeout to fire;
``listing_lag``
    container listings lag this many seconds behind writes, as an eventually
    consistent container server does: an object created less than that ago
    is left out, one deleted less than that ago is still listed;
``hook``
    ``hook(method, path, moment)`` is called for every object request
    ``"before"`` it goes to Swift (``"drop"`` returned: it never does) and
    once Swift ``"answered"``, before the answer goes back: how a worker is
    SIGKILLed at an exact step of finish.
"""

from __future__ import annotations

import bisect
import collections
import http.client
import http.server
import json
import random
import re
import socket
import sys
import threading
import time
from urllib.parse import parse_qs, unquote, urlsplit

HOST = "127.0.0.1"
OBJECT_PATH = re.compile(r"^/v1/[^/]+/[^/]+/.+")
CONTAINER_PATH = re.compile(r"^/v1/[^/]+/[^/]+/?$")
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                        "transfer-encoding", "upgrade", "content-length"})


class ConsumerProxy:
    def __init__(self, upstream_port, seed=0):
        self.upstream_port = upstream_port
        self.trickle_share = 0.0
        self.trickle_bytes = (1, 12)
        self.listing_lag = 0.0
        self.hook = None
        self.rng = random.Random(seed)
        self.trickled = 0
        self.hidden = 0  # listing entries left out or kept beyond their object's life
        self.requests = collections.Counter()  # method -> requests relayed (bench/webhook_latency)
        self._lock = threading.Lock()
        self._created = {}  # "container/object" -> time it was created
        self._deleted = {}  # "container/object" -> (time deleted, its listing entry)
        self._entries = {}  # "container/object" -> its listing entry, last seen
        self.server = _Server((HOST, 0), _Handler)
        self.server.proxy = self
        self.port = self.server.server_address[1]

    @property
    def auth_url(self):
        return f"http://{HOST}:{self.port}/auth/v1.0"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True,
                         name="consumer-proxy").start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def clear(self):
        """Every fault off (what is already delayed goes on)."""
        self.trickle_share, self.listing_lag, self.hook = 0.0, 0.0, None

    def note_created(self, container, name):
        """An object created behind the proxy's back (the seeder writes to Swift directly)."""
        with self._lock:
            self._created[f"{container}/{name}"] = time.monotonic()

    def trickle_for(self):
        """Bytes to trickle for this answer: 0 for most."""
        with self._lock:
            if self.trickle_share and self.rng.random() < self.trickle_share:
                self.trickled += 1
                return self.rng.randint(*self.trickle_bytes)
        return 0

    def written(self, method, status, path):
        """Keep the times of creations and deletions for the listing lag."""
        key = "/".join(unquote(urlsplit(path).path).split("/")[3:])
        now = time.monotonic()
        with self._lock:
            if method == "PUT" and status == 201:
                self._created[key] = now
            elif method == "DELETE" and status == 204:
                entry = self._entries.get(key)
                if entry is not None:
                    self._deleted[key] = (now, entry)

    def lagging(self, path, body):
        """A container listing (JSON) as a lagging container server might give it."""
        parts = urlsplit(path)
        container = unquote(parts.path).split("/")[3]
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        if query.get("format") != "json":
            return body
        entries = json.loads(body)
        now = time.monotonic()
        limit = int(query.get("limit", 10000))
        marker, prefix = query.get("marker", ""), query.get("prefix", "")
        with self._lock:
            for entry in entries:
                self._entries[f"{container}/{entry['name']}"] = entry
            lag = self.listing_lag
            kept = [e for e in entries
                    if now - self._created.get(f"{container}/{e['name']}", -1e9) >= lag]
            names = {e["name"] for e in kept}
            last = entries[-1]["name"] if len(entries) >= limit else None
            for key, (when, entry) in list(self._deleted.items()):
                if now - when >= lag:
                    del self._deleted[key]
                    continue
                name = entry["name"]
                if (key.startswith(container + "/") and name.startswith(prefix)
                        and name > marker and (last is None or name < last)
                        and name not in names):
                    bisect.insort(kept, entry, key=lambda e: e["name"])
                    names.add(name)
            self.hidden += abs(len(kept) - len(entries))
        return json.dumps(kept).encode()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        """A worker killed mid-request is one of the faults, not the proxy's error."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        """Quiet: the ledger reports what matters."""

    def do_GET(self):
        self.relay()

    do_PUT = do_HEAD = do_DELETE = do_POST = do_COPY = do_GET

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size + 2)[:size]
                if not size:
                    return body
                body += chunk
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def relay(self):
        proxy = self.server.proxy
        path = self.path
        is_object = bool(OBJECT_PATH.match(urlsplit(path).path))
        body = self.read_body()
        with proxy._lock:
            proxy.requests[self.command] += 1
        hook = proxy.hook if is_object else None
        if hook and hook(self.command, unquote(urlsplit(path).path), "before") == "drop":
            self.hang_up()  # as if the client died before its request got out
            return
        upstream = http.client.HTTPConnection(HOST, proxy.upstream_port, timeout=60)
        try:
            upstream.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    upstream.putheader(name, value)
            upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body)
            response = upstream.getresponse()
            answer = response.read()
        except (OSError, http.client.HTTPException):
            self.hang_up()  # Swift is away: the client sees what a dead Swift looks like
            return
        finally:
            upstream.close()
        if is_object:
            proxy.written(self.command, response.status, path)
        elif self.command == "GET" and CONTAINER_PATH.match(urlsplit(path).path) \
                and response.status == 200:
            answer = proxy.lagging(path, answer)
        if hook:
            hook(self.command, unquote(urlsplit(path).path), "answered")
        head = [f"HTTP/1.1 {response.status} {response.reason}\r\n"]
        head += [f"{name}: {value}\r\n" for name, value in response.getheaders()
                 if name.lower() not in HOP_BY_HOP]
        length = response.getheader("Content-Length") if self.command == "HEAD" \
            else str(len(answer))
        if length is not None:
            head.append(f"Content-Length: {length}\r\n")
        data = "".join(head).encode("latin-1") + b"\r\n" + (
            b"" if self.command == "HEAD" else answer)
        trickle = proxy.trickle_for() if is_object else 0
        try:
            for index in range(min(trickle, len(data))):
                self.wfile.write(data[index:index + 1])
                self.wfile.flush()
                time.sleep(1)
            self.wfile.write(data[trickle:])
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def hang_up(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
