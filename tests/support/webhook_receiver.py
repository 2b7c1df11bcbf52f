"""A webhook receiver that misbehaves on purpose, and keeps a ledger line per POST.

:class:`FaultyReceiver` is a ``ThreadingHTTPServer`` on a reserved loopback
port, speaking HTTPS with a certificate the worker trusts (its
``webhook_cacert``), or, while :meth:`FaultyReceiver.wrong_certificate` is
on, with a self-signed one it does not. What it answers each POST is chosen
by a :class:`Policy`, seeded, from the message and how often it came:
deterministic whatever order the worker's loops send in.

Each POST's signature is checked with Python's ``hmac`` over
``"<timestamp>.<body>"`` (never the project's own code, so that a bug
there cannot agree with itself), and one JSON line is appended to the
ledger: who it was, what the headers said, whether the signature held,
the body's sha256 and what the receiver did.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
import hashlib
import hmac
import http.server
import json
import random
import re
import socket
import ssl
import struct
import threading
import time

from tests.support.ports import HOST, reserve_port

# A receiver refuses timestamps further than this from its clock (docs/webhooks.md).
TOLERANCE = 300
MESSAGE_NUMBER = re.compile(r"<?(\d+)\.")  # Message-ID: <number.run@domain>
HANDSHAKE_SECONDS = 10


@dataclass(frozen=True)
class Behaviour:
    """What to do with one POST: answer `status` after `delay` s, or `reset`, or `hang`."""

    kind: str  # "answer", "reset", "hang" (past webhook_timeout, then answer late)
    status: int = 200
    delay: float = 0.0
    retry_after: str | None = None

    @property
    def label(self):
        return self.kind if self.kind != "answer" else str(self.status) + (
            " slow" if self.delay else "") + (" retry-after" if self.retry_after else "")


class Policy:
    """The seeded choice of a Behaviour per (message number, how many POSTs of it so far).

    The first `faulty_posts` POSTs of a message draw from the misbehaviours
    (and a 2xx now and then); after that a message always gets its final
    answer, so that every message gets through whatever the draw. Messages
    in `refused` get 406 where others get 2xx (slow or late too), never a 2xx. The first
    POSTs of messages 1, 2, 3 ... get each misbehaviour in turn, so that a
    short run meets every one of them whatever the seed.
    """

    def __init__(self, seed, timeout, refused=(), faulty_posts=2):
        self.seed, self.timeout = seed, timeout
        self.refused = frozenset(refused)
        self.faulty_posts = faulty_posts
        slow, late = timeout / 3, timeout + 1.5
        self.choices = [  # (weight, behaviour)
            (4, None),  # the final answer: 2xx (or 406)
            (2, Behaviour("answer", 500)), (2, Behaviour("answer", 503)),
            (1, Behaviour("answer", 503, retry_after="1")),
            (2, Behaviour("answer", 429)), (1, Behaviour("answer", 429, retry_after="2")),
            (1, Behaviour("hang", delay=late)), (2, Behaviour("answer", 200, delay=slow)),
            (2, Behaviour("reset")),
        ]

    def final(self, number, rng):
        if number in self.refused:
            return Behaviour("answer", 406)
        return Behaviour("answer", rng.choice((200, 201, 202, 204)))

    def choose(self, number, nth):
        """The Behaviour for the `nth` (1-based) POST of message `number`."""
        rng = random.Random(f"{self.seed}-{number}-{nth}")
        if nth > self.faulty_posts:
            return self.final(number, rng)
        weights, behaviours = zip(*self.choices, strict=True)
        misbehaviours = [behaviour for behaviour in behaviours if behaviour is not None]
        if nth == 1 and 1 <= number <= len(misbehaviours):
            behaviour = misbehaviours[number - 1]
        else:
            behaviour = rng.choices(behaviours, weights)[0]
        if behaviour is None:
            return self.final(number, rng)
        if number in self.refused and behaviour.status == 200:  # slow, or late: still a 406
            return dataclasses.replace(behaviour, status=406)
        return behaviour


def _message_number(headers, body):
    """The number in the message's Message-ID: from the raw format's header, or the JSON's."""
    text = headers.get("X-SwiftDrop-Message-Id")
    if text is None and headers.get("Content-Type", "").startswith("application/json"):
        try:
            text = (json.loads(body).get("message") or {}).get("message_id")
        except ValueError:
            text = None
    match = MESSAGE_NUMBER.match(text or "")
    return int(match.group(1)) if match else 0


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        server, arrived = self.server, time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        identity = self.headers.get("X-SwiftDrop-Id", "")
        number = _message_number(self.headers, body)
        with server.lock:
            server.posts[identity] = nth = server.posts.get(identity, 0) + 1
        behaviour = server.policy.choose(number, nth)
        answered = self._act(behaviour)
        server.write({
            "id": identity, "name": identity.split("/", 1)[-1], "number": number, "nth": nth,
            "delivery": int(self.headers.get("X-SwiftDrop-Delivery", 0)),
            "redelivered": self.headers.get("X-SwiftDrop-Redelivered", ""),
            "replayed": int(self.headers.get("X-SwiftDrop-Replayed", 0)),
            "signature_ok": self._signed(body), "behaviour": behaviour.label,
            "status": answered, "digest": hashlib.sha256(body).hexdigest(),
            "time": arrived})
        self.close_connection = True

    def _signed(self, body):
        timestamp = self.headers.get("X-SwiftDrop-Timestamp", "")
        expected = "v1=" + hmac.new(self.server.secret.encode(),
                                    timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        given = self.headers.get("X-SwiftDrop-Signature", "")
        return (timestamp.isdigit() and abs(time.time() - int(timestamp)) <= TOLERANCE
                and hmac.compare_digest(given, expected))

    def _act(self, behaviour):
        """Carry `behaviour` out; the status answered (0: none, a reset or a failed write)."""
        if behaviour.kind == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()
            return 0
        if self.server.stopping.wait(behaviour.delay):
            return 0
        try:
            self.send_response(behaviour.status)
            if behaviour.retry_after:
                self.send_header("Retry-After", behaviour.retry_after)
            self.send_header("Content-Length", "0")
            self.end_headers()
            self.wfile.flush()
        except OSError:
            return 0  # the worker gave up first (a hang): it never saw the answer
        return behaviour.status

    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def finish_request(self, request, client_address):
        """The TLS handshake here, in the request's thread: a slow one holds up no other."""
        wrong = self.wrong.is_set()
        request.settimeout(HANDSHAKE_SECONDS)
        try:
            tls = (self.wrong_context if wrong else self.context).wrap_socket(
                request, server_side=True)
        except (ssl.SSLError, OSError):
            with self.lock:
                self.refused_handshakes += wrong
            return
        tls.settimeout(None)
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()

    def write(self, entry):
        with self.lock, open(self.ledger_path, "a", encoding="utf-8") as ledger:
            ledger.write(json.dumps(entry) + "\n")


def _context(cert, key):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


class FaultyReceiver:
    """``with FaultyReceiver(...) as receiver``: POST to ``receiver.url``; the ledger is JSON lines.

    `tls` is the (certificate, key) the worker trusts, `wrong_tls` the one it must not.
    """

    def __init__(self, secret, ledger_path, policy, tls, wrong_tls):
        self.port = reserve_port()
        self.server = _Server((HOST, self.port), _Handler)
        server = self.server
        server.secret, server.ledger_path, server.policy = secret, ledger_path, policy
        server.context, server.wrong_context = _context(*tls), _context(*wrong_tls)
        server.lock, server.posts, server.refused_handshakes = threading.Lock(), {}, 0
        server.wrong, server.stopping = threading.Event(), threading.Event()
        self.url = f"https://{HOST}:{self.port}/hook"

    @property
    def post_count(self):
        with self.server.lock:
            return sum(self.server.posts.values())

    @property
    def refused_handshakes(self):
        """TLS handshakes that failed while the wrong certificate was on."""
        return self.server.refused_handshakes

    @contextlib.contextmanager
    def wrong_certificate(self):
        """Present the untrusted certificate while inside the block."""
        self.server.wrong.set()
        try:
            yield
        finally:
            self.server.wrong.clear()

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.stopping.set()
        self.server.shutdown()
        self.server.server_close()
