"""systemd's view of the filter: STATUS= and WATCHDOG=1 on a real NOTIFY_SOCKET.

systemd's notify protocol is one datagram per notification, lines of
KEY=VALUE, sent to the unix socket named in $NOTIFY_SOCKET; the tests
create that socket and read what the filter sends. Whether systemd then
restarts a frozen process is tested with real systemd in Molecule.
"""

import contextlib
import os
import signal
import socket
import tempfile
import threading
import time

import pytest

from swiftdrop.health import Activity, Heartbeat
from swiftdrop.service import Server
from tests.support.filterproc import FilterProcess
from tests.test_metrics import send_without_size
from tests.test_service import send

WATCHDOG_USEC = 200_000  # a ping every 0.1 s


@contextlib.contextmanager
def notify_socket():
    """A datagram socket like systemd's; yields (path, socket). Short path: sun_path is 108."""
    with tempfile.TemporaryDirectory(prefix="sdnotify-") as directory:
        path = os.path.join(directory, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
            receiver.bind(path)
            yield path, receiver


def receive_until(receiver, wanted, timeout=30):
    """Datagrams until one has a line starting with `wanted`; that line."""
    deadline = time.monotonic() + timeout
    while True:
        receiver.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            datagram = receiver.recv(4096).decode()
        except TimeoutError:
            pytest.fail(f"no {wanted!r} within {timeout} s")
        for line in datagram.splitlines():
            if line.startswith(wanted):
                return line


def silent_for(receiver, seconds):
    """True if nothing at all arrives for `seconds` (many watchdog intervals)."""
    receiver.settimeout(seconds)
    try:
        receiver.recv(4096)
    except TimeoutError:
        return True
    return False


def drain(receiver):
    receiver.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while True:
            receiver.recv(4096)


@pytest.mark.slow  # over 10 s: the status line changes at most every 5 s
def test_status_line_and_watchdog_from_the_real_process(swift_ini, tmp_path):
    with notify_socket() as (path, receiver):
        env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
        with FilterProcess(swift_ini, tmp_path, "--log-target", "stderr",
                           "--max-message-size", "1000", env=env) as process:
            receive_until(receiver, "READY=1")
            assert receive_until(receiver, "STATUS=") == (
                "STATUS=stored 0, failed 0 in the last hour; last failure —")
            receive_until(receiver, "WATCHDOG=1")
            assert send(process.address, "s@o.test", ["a@example.com"], b"x\r\n")[0] == 250
            # Refused while spooling, not by the deliverer: counted all the same.
            assert send_without_size(process.address, b"x" * 2000 + b"\r\n") == 552
            expected = "STATUS=stored 1, failed 0, rejected 1 in the last hour; last failure —"
            deadline = time.monotonic() + 30
            while (status := receive_until(receiver, "STATUS=")) != expected:
                assert time.monotonic() < deadline, status
            # A frozen process sends nothing: this is what makes systemd restart it.
            process.process.send_signal(signal.SIGSTOP)
            try:
                drain(receiver)
                assert silent_for(receiver, 2.0)
            finally:
                process.process.send_signal(signal.SIGCONT)
            receive_until(receiver, "WATCHDOG=1")


class StallingListener:
    """A real listening socket whose accept() hangs until released: a stuck accept loop."""

    def __init__(self):
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.entered = threading.Event()
        self.release = threading.Event()

    def fileno(self):
        return self.socket.fileno()

    def getsockname(self):
        return self.socket.getsockname()

    def accept(self):
        self.entered.set()
        self.release.wait()
        return self.socket.accept()

    def close(self):
        self.socket.close()


class EndAtOnce:
    def __init__(self, connection):
        self.connection = connection

    def serve(self):
        """The session is not what this test is about."""


def test_a_stuck_accept_loop_stops_the_watchdog_pings(monkeypatch):
    listener = StallingListener()
    with notify_socket() as (path, receiver):
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        heartbeat = Heartbeat(Activity(), environ={"WATCHDOG_USEC": str(WATCHDOG_USEC)})
        server = Server([listener], EndAtOnce, heartbeat=heartbeat)
        loop = threading.Thread(target=server.run, kwargs={"grace": 5}, daemon=True)
        loop.start()
        try:
            receive_until(receiver, "WATCHDOG=1")
            with socket.create_connection(listener.getsockname(), timeout=5):
                assert listener.entered.wait(10)
                drain(receiver)
                assert silent_for(receiver, 1.5), "pinged while the accept loop was stuck"
                listener.release.set()
                receive_until(receiver, "WATCHDOG=1")
        finally:
            listener.release.set()
            server.stop()
            loop.join(10)
    assert not loop.is_alive()


def test_without_watchdog_usec_there_are_no_pings_only_status():
    sent = []
    heartbeat = Heartbeat(Activity(), send=sent.append, environ={})
    heartbeat.beat()
    heartbeat.beat()
    assert sent == ["STATUS=stored 0, failed 0 in the last hour; last failure —"]


def test_watchdog_pid_of_another_process_means_no_pings():
    sent = []
    environ = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    Heartbeat(Activity(), send=sent.append, environ=environ).beat()
    assert all("WATCHDOG" not in datagram for datagram in sent)


class FakeClock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


def test_activity_counts_the_last_hour_and_remembers_the_last_failure():
    clock = FakeClock()
    activity = Activity(clock=clock, wall_clock=lambda: 1_764_500_000)
    for _ in range(1204):
        activity.replied("250 2.0.0 Ok")
    assert activity.summary() == "stored 1,204, failed 0 in the last hour; last failure —"
    clock.now += 30 * 60
    activity.replied("451 4.3.0 Error: queue file write error")
    activity.replied("552 5.3.4 Error: message file too big")
    assert activity.summary() == ("stored 1,204, failed 1, rejected 1 in the last hour; "
                                  "last failure 2025-11-30 10:53:20 UTC")
    clock.now += 31 * 60
    assert activity.last_hour() == {"stored": 0, "failed": 1, "rejected": 1}
