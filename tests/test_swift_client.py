"""The filter's HTTP framing (swift_client.Connection) against answers as HTTP allows them.

Swift's own answers are covered end to end in test_storage.py; a proxy or
load balancer before Swift may answer in any form HTTP/1.1 allows, so each
form is written here by a scripted peer on loopback.
"""

import http.client
import socket
import threading

import pytest

from swiftdrop.swift_client import Body, Connection, Request


class ScriptedPeer:
    """Accepts one connection; answers each request with the next script entry, then closes.

    An entry is the answer's bytes, or (bytes, piece size) to send it trickled.
    """

    def __init__(self, *answers):
        self.answers = answers
        self.requests = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        peer, _ = self.listener.accept()
        with peer:
            received = b""
            for answer in self.answers:
                while b"\r\n\r\n" not in received:
                    received += peer.recv(65536)
                head, _, received = received.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(received) < length:
                    received += peer.recv(65536)
                self.requests.append((head, received[:length]))
                received = received[length:]
                data, piece = answer if isinstance(answer, tuple) else (answer, len(answer) or 1)
                for start in range(0, len(data), piece):
                    peer.sendall(data[start:start + piece])

    def connect(self):
        return Connection("127.0.0.1", self.listener.getsockname()[1], "swift.test", None, 30)


def put(connection, data=b"message"):
    return connection.exchange(Request("PUT", "/v1/AUTH_t/c/o", "token",
                                       (("ETag", "e"),), Body(data=data)))


def head(connection):
    return connection.exchange(Request("HEAD", "/v1/AUTH_t/c/o", "token", (), None))


CREATED = b"HTTP/1.1 201 Created\r\nEtag: e\r\nX-Trans-Id: tx1\r\nContent-Length: 0\r\n\r\n"


def test_answers_on_one_kept_alive_connection_each_read_whole():
    peer = ScriptedPeer(CREATED, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nEtag: e\r\n\r\n",
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy")
    connection = peer.connect()
    first = put(connection)
    assert (first.status, first.reason, first.transaction_id) == (201, "Created", "tx1")
    assert head(connection).headers["content-length"] == "5"  # HEAD: no body follows
    refused = put(connection)
    assert (refused.status, refused.body) == (503, b"busy")
    assert connection.reusable
    assert [request[1] for request in peer.requests] == [b"message", b"", b"message"]
    assert peer.requests[0][0].startswith(b"PUT /v1/AUTH_t/c/o HTTP/1.1\r\nHost: swift.test\r\n")


def test_a_head_trickled_a_byte_at_a_time_is_one_answer():
    peer = ScriptedPeer((CREATED, 1), CREATED)
    connection = peer.connect()
    assert put(connection).headers["etag"] == "e"
    assert put(connection).status == 201


def test_a_chunked_body_with_trailers_and_an_interim_answer():
    peer = ScriptedPeer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n4;x=y\r\nnot \r\n5\r\nfound\r\n"
                        b"0\r\nX-Trailer: t\r\n\r\n", CREATED)
    connection = peer.connect()
    answer = put(connection)
    assert (answer.status, answer.body) == (404, b"not found")
    assert put(connection).status == 201  # the trailer was consumed with the answer


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.0 201 Created\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\nextra bytes",
], ids=["connection-close", "http-1.0", "more-than-the-answer"])
def test_a_connection_not_to_reuse(answer):
    connection = ScriptedPeer(answer).connect()
    assert put(connection).status == 201
    assert not connection.reusable


def test_a_body_without_length_is_read_to_the_close():
    connection = ScriptedPeer(b"HTTP/1.1 500 Oops\r\n\r\nall of it").connect()
    answer = put(connection)
    assert (answer.status, answer.body, connection.reusable) == (500, b"all of it", False)


@pytest.mark.parametrize(("answer", "raised"), [
    (b"", http.client.RemoteDisconnected),
    (b"HTTP/1.1 201 Cre", http.client.IncompleteRead),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", http.client.IncompleteRead),
    (b"SMTP/1.1 200 OK\r\n\r\n", http.client.BadStatusLine),
    (b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", http.client.HTTPException),
    (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", http.client.HTTPException),
], ids=["closed-without-answer", "head-cut", "body-cut", "not-http", "too-many-headers",
        "negative-length"])
def test_a_broken_answer_raises_what_names_it(answer, raised):
    with pytest.raises(raised):
        put(ScriptedPeer(answer).connect())
