"""The watchdog that bounds a whole Swift request: it cuts what is late, and only that."""

import socket
import threading

from swiftdrop.watchdog import Watchdog


class Held:
    """What the watchdog shuts: an object with a `sock`, like swift_client.Connection."""

    def __init__(self):
        self.sock, self.peer = socket.socketpair()


def test_a_request_past_its_time_is_cut_and_its_blocked_receive_ends():
    watchdog, held = Watchdog(), Held()
    ended = threading.Event()

    def receive():
        assert held.sock.recv(1) == b""  # shut down under it: end of stream, not a hang
        ended.set()

    with watchdog.watch(0.2) as cut:
        cut.add(held)
        receiver = threading.Thread(target=receive, daemon=True)
        receiver.start()
        receiver.join(30)
    assert ended.is_set() and cut.fired


def test_finished_requests_are_never_cut_and_leave_the_heap():
    watchdog, finished = Watchdog(), [Held() for _ in range(50)]
    for held in finished:
        with watchdog.watch(0.05) as cut:
            cut.add(held)
        assert not cut.fired
    late = Held()
    with watchdog.watch(0.1) as last:
        last.add(late)
        assert late.sock.recv(1) == b""  # cut: the watchdog has run past every time above
    assert last.fired
    with watchdog._changed:
        assert watchdog._heap == []
    for held in finished:  # still open: nothing shut them
        held.peer.sendall(b"x")
        assert held.sock.recv(1) == b"x"


def test_a_connection_added_after_the_cut_is_shut_at_once():
    watchdog, held = Watchdog(), Held()
    with watchdog.watch(0.0) as cut:
        while not cut.fired:
            threading.Event().wait(0.01)
        cut.add(held)
        assert held.sock.recv(1) == b""
