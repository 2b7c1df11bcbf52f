"""Loopback ports for test servers that nothing else can take before they bind.

Binding to port 0 and closing again (the usual ``reserve_port()``) hands out a
port from the kernel's ephemeral range, the same range every outgoing
connection and every other ``bind(0)`` on the machine draws from: between
choosing and binding, a connection to Swift or another test's listener can
take it, and the server fails with EADDRINUSE. Our servers need the port
before they bind (Swift's proxy must keep it across restarts, Postfix
writes it into master.cf), so instead:

* ports come from below the ephemeral range, where the kernel never
  assigns one by itself;
* each port is claimed with an exclusive lock on a file named after it,
  held until this process exits, so that test runs in parallel (two pytest
  processes, a benchmark beside the suite) never share one;
* a port is handed out only if it can be bound right now (a server from
  outside the test suite may hold it).
"""

import fcntl
import pathlib
import random
import socket
import tempfile

HOST = "127.0.0.1"
LOCK_DIR = pathlib.Path(tempfile.gettempdir()) / "swiftdrop-test-ports"
LOWEST = 10000
_held = []  # lock files of the ports this process claimed: closing one frees it


def _ephemeral_range():
    low, high = pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return int(low), int(high)


def _candidates():
    """Every port below the ephemeral range, from a random start, each once."""
    low = _ephemeral_range()[0]
    if low - LOWEST < 1000:
        raise RuntimeError(f"ephemeral ports start at {low}: too few ports below them "
                           "for test servers; lower net.ipv4.ip_local_port_range")
    start = random.randrange(LOWEST, low)
    yield from range(start, low)
    yield from range(LOWEST, start)


def _bindable(port):
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def reserve_port():
    """A loopback TCP port that stays ours, and free, for this process's lifetime."""
    LOCK_DIR.mkdir(mode=0o1777, exist_ok=True)
    for port in _candidates():
        lock = open(LOCK_DIR / str(port), "a")  # held until this process exits
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        if _bindable(port):
            _held.append(lock)
            return port
        lock.close()
    raise RuntimeError("no free loopback port below the ephemeral range")
