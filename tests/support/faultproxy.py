"""An HTTP proxy on loopback in front of the test Swift that fails the requests a test picks.

Faults of the network, not a fake Swift: a request it leaves alone reaches
the real Swift as the client sent it, and Swift's answer comes back as Swift
gave it. A :class:`Rule` picks requests by method and a regular expression
on the (unquoted) path, and does one thing to each of the next `times` of
them:

``refuse``
    answer 503 without passing it on, as Swift's proxy does when no object
    server answered;
``lose_answer``
    pass it on and let Swift act, call ``then()``, and answer 503, as if
    the answer had been lost on the way back;
``hold``
    keep it until ``release()``, then pass it on (a request stuck on the
    way; its client may have given up meanwhile, and Swift still acts).

The client's Host header goes through unchanged, so tempauth hands out
storage URLs that lead back through the proxy. Each request travels on a
connection of its own (``Connection: close`` towards Swift and back).
"""

import re
import socket
import threading
from urllib.parse import unquote, urlsplit

HOST = "127.0.0.1"
FAILED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
          b"Connection: close\r\n\r\n")


class Rule:
    def __init__(self, method, path, action, times, then):
        self.method, self.path = method, re.compile(path)
        self.action, self.left, self.then = action, times, then
        self.matched = 0  # requests it has acted on so far
        self.passed = 0  # of those, how many reached Swift and were answered
        self._released = threading.Event()
        self._changed = threading.Condition()

    def release(self):
        """Let the held requests go on to Swift (and any that match later)."""
        self._released.set()

    def wait_for(self, count, timeout=60, passed=False):
        """Block until the rule has acted on `count` requests (or passed them on: `passed`)."""
        with self._changed:
            if not self._changed.wait_for(
                    lambda: (self.passed if passed else self.matched) >= count, timeout):
                raise TimeoutError(f"{self.method} {self.path.pattern}: {self.matched} "
                                   f"requests, {self.passed} passed on, after {timeout} s")

    def _count(self, passed=False):
        with self._changed:
            if passed:
                self.passed += 1
            else:
                self.matched += 1
            self._changed.notify_all()


class FaultProxy:
    def __init__(self, upstream_port):
        self.upstream = (HOST, upstream_port)
        self.rules = []
        self.seen = []  # (method, path) of every request, in the order they came
        self._lock = threading.Lock()
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="faultproxy").start()

    @property
    def auth_url(self):
        return f"http://{HOST}:{self.port}/auth/v1.0"

    def add(self, method, path, action, times=1, then=None):
        """A rule for the next `times` requests of `method` whose path matches `path`."""
        assert action in ("refuse", "lose_answer", "hold")
        rule = Rule(method, path, action, times, then)
        with self._lock:
            self.rules.append(rule)
        return rule

    def close(self):
        self._closed = True
        for rule in self.rules:
            rule.release()
        self._listener.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _match(self, method, path):
        with self._lock:
            for rule in self.rules:
                if rule.left > 0 and rule.method == method and rule.path.search(path):
                    rule.left -= 1
                    return rule
        return None

    def _accept(self):
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        with client:
            try:
                request = _read_request(client)
            except (OSError, ValueError):
                return
            if request is None:
                return
            method, path, head, body = request
            with self._lock:
                self.seen.append((method, path))
            rule = self._match(method, path)
            if rule is not None and rule.action == "refuse":
                rule._count()
                _send(client, FAILED)
                return
            if rule is not None and rule.action == "hold":
                rule._count()
                rule._released.wait()
            answer = self._forward(head, body)
            if rule is not None:
                rule._count(passed=True)
            if rule is not None and rule.action == "lose_answer":
                if rule.then is not None:
                    rule.then()
                rule._count()
                answer = FAILED
            _send(client, answer)

    def _forward(self, head, body):
        with socket.create_connection(self.upstream) as upstream:
            upstream.sendall(head + body)
            chunks = []
            while chunk := upstream.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def _send(client, data):
    try:
        client.sendall(data)
    except OSError:
        pass  # the client gave up waiting


def _read_request(sock):
    """(method, unquoted path, head for Swift, body) of one request, or None at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    request_line, *fields = head.split(b"\r\n")
    method, target, _ = request_line.decode("latin-1").split(" ", 2)
    kept, length = [request_line], 0
    for line in fields:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"connection":
            continue
        if name.strip().lower() == b"content-length":
            length = int(value)
        if name.strip().lower() == b"transfer-encoding":
            raise ValueError("chunked requests are not supported")
        kept.append(line)
    kept.append(b"Connection: close")
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        body += chunk
    return method, unquote(urlsplit(target).path), b"\r\n".join(kept) + b"\r\n\r\n", body
