"""A deadline over a whole HTTP request, not over each socket operation.

requests' ``timeout`` bounds each connect, send and receive on its own: a
Swift (or a proxy before it) that hands its answer back a byte a second
never trips it, and a message waits as long as the answer drips. Postfix
then answers the client itself (``smtpd_proxy_timeout``) while the copy
lands later: the deadline broken, a duplicate at best.

So each request of swiftdrop.swift_client is watched: it adds every
connection it uses to its :class:`Cut`, and one :class:`Watchdog` thread
shuts those sockets down when the request's deadline passes. A shut-down
socket ends a blocked send or receive at once, with an error the request
raises as any broken connection; the request is then known to have been
cut, and says so.
"""

import heapq
import itertools
import socket
import threading
import time


class Cut:
    """One watched request: the connections it uses, and whether the deadline cut them."""

    def __init__(self):
        self.connections = []
        self.fired = False
        self.finished = False
        self._lock = threading.Lock()

    def add(self, connection):
        """Watch `connection` too; one taken after the deadline passed is shut at once."""
        with self._lock:
            self.connections.append(connection)
            if self.fired:
                _shut(connection)

    def fire(self):
        with self._lock:
            if self.finished:
                return
            self.fired = True
            for connection in self.connections:
                _shut(connection)

    def finish(self):
        """The request is over: a late fire must not touch a connection back in its pool."""
        with self._lock:
            self.finished = True


def _shut(connection):
    sock = connection.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # closed meanwhile


class Watchdog:
    """One thread that fires each watched request's Cut at its time."""

    def __init__(self):
        self._heap = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._thread = None

    def watch(self, seconds):
        """A context manager giving the Cut whose connections are shut after `seconds`."""
        return _Watching(self, seconds)

    def _add(self, at, cut):
        with self._changed:
            heapq.heappush(self._heap, (at, next(self._order), cut))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="swiftdrop-watchdog")
                self._thread.start()
            # Woken only for a new earliest time: with one store timeout for
            # all, a request's deadline is rarely the next, and the hot path
            # pays no thread switch for it.
            if self._heap[0][2] is cut:
                self._changed.notify()

    def _run(self):
        while True:
            with self._changed:
                heap = self._heap
                while True:
                    # A finished request has nothing left to cut: it leaves the heap
                    # without waking the thread at its time, so most requests
                    # cost the watchdog nothing but their push.
                    while heap and heap[0][2].finished:
                        heapq.heappop(heap)
                    if heap and heap[0][0] <= time.monotonic():
                        break
                    self._changed.wait(heap[0][0] - time.monotonic() if heap else None)
                _, _, cut = heapq.heappop(heap)
            cut.fire()


class _Watching:
    def __init__(self, watchdog, seconds):
        self.watchdog, self.seconds = watchdog, seconds
        self.cut = Cut()

    def __enter__(self):
        self.watchdog._add(time.monotonic() + self.seconds, self.cut)
        return self.cut

    def __exit__(self, *exc):
        self.cut.finish()


WATCHDOG = Watchdog()
