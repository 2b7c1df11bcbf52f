"""Maildir-style object names for stored messages.

A name looks like ``cur/1767225600.M042137P3141Q17.mx1.example.com,S=2048``:

``<seconds>``
    Unix time of delivery, so a plain listing of ``cur/`` sorts oldest first.
``M<microseconds>``
    The microseconds of that same instant, always six digits (the earlier
    Docker-based SwiftDrop printed seven digits here, which no Maildir reader
    expects).
``P<pid>``
    The filter's process id.
``Q<n>``
    Per-process delivery counter, from the Maildir spec's list of unique
    fields. It keeps names unique when several threads deliver within the same
    microsecond, which the time fields alone cannot promise.
``<host>``
    The receiving host, with ``/`` and ``:`` written as ``\\057`` and ``\\072``
    as the Maildir spec asks, so the name stays one path segment and never
    looks like the ``:2,`` info suffix.
``,S=<size>``
    The message size in bytes (the Maildir++ extension), so consumers can
    size a download without a HEAD request.
"""

import itertools
import os
import socket
import threading
import time

MAILDIR_PREFIX = "cur/"


def sanitise_hostname(hostname: str) -> str:
    """Escape the two characters the Maildir spec reserves in host names."""
    return hostname.replace("/", "\\057").replace(":", "\\072")


class MaildirNamer:
    """Hands out unique object names; safe to share between threads."""

    def __init__(self, hostname: str | None = None, pid: int | None = None,
                 clock=time.time_ns):
        self.hostname = sanitise_hostname(hostname or socket.gethostname())
        self.pid = os.getpid() if pid is None else pid
        self._clock = clock
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def name(self, size: int) -> str:
        """Return a fresh ``cur/...`` name for a message of `size` bytes."""
        with self._lock:
            delivery = next(self._counter)
            now_ns = self._clock()
        seconds, remainder_ns = divmod(now_ns, 1_000_000_000)
        microseconds = remainder_ns // 1000
        return (f"{MAILDIR_PREFIX}{seconds}.M{microseconds:06d}P{self.pid}"
                f"Q{delivery}.{self.hostname},S={size}")


def delivery_time(path):
    """The delivery time encoded in a Maildir name: <seconds>.M<microseconds>..."""
    base = path.rsplit("/", 1)[-1]
    seconds, _, rest = base.partition(".M")
    try:
        return int(seconds) + int(rest[:6]) / 1e6
    except ValueError:
        return None
