"""Stands in for systemd's ``swiftdrop.socket`` + ``swiftdrop.service`` (Restart=).

PID 1 here is not systemd, and ``systemd-socket-activate`` passes a socket
but never restarts what it started. So this supervisor does the two things
of systemd that the "filter killed mid-DATA" fault depends on, the way
systemd does them: it holds the listening socket itself (connections that
arrive while no filter runs wait in the backlog instead of being refused)
and starts ``swiftdrop serve`` again whenever it dies, passing the socket
as fd 3 with ``LISTEN_FDS=1`` and ``LISTEN_PID=<the filter's pid>``
(``sd_listen_fds(3)``), and reading ``READY=1`` from ``NOTIFY_SOCKET``
(``Type=notify``). The real-systemd variant of this fault runs in the
Molecule scenario on a systemd host.

``python -m tests.faults.supervisor FD COMMAND...`` is the exec shim: it
moves FD to 3, sets LISTEN_PID to its own pid and execs COMMAND, so the pid
systemd would name is the filter's own.
"""

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import threading

from tests.support.filterproc import swiftdrop_command

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
SD_LISTEN_FDS_START = 3


class SupervisedFilter:
    """``swiftdrop serve`` on a socket we hold, restarted whenever it exits."""

    def __init__(self, config_path, workdir, *serve_args, restart_delay=0.1):
        self.config_path = str(config_path)
        self.workdir = pathlib.Path(workdir)
        self.serve_args = serve_args
        self.restart_delay = restart_delay
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.log_path = self.workdir / f"filter-{self.port}.log"
        self.notify_dir = tempfile.mkdtemp(prefix="notify-", dir=self.workdir)
        self.notify_path = os.path.join(self.notify_dir, "notify")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # before any READY
        self.notify.bind(self.notify_path)
        self.lock = threading.Condition()
        self.process = None
        self.ready_pid = None
        self.starts = 0
        self.stopping = False
        self.threads = []

    def start(self, timeout=20):
        for target in (self._watch, self._read_notifications):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self.threads.append(thread)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=20):
        """Wait until the current filter process said READY=1."""
        with self.lock:
            if not self.lock.wait_for(
                    lambda: self.process is not None and self.ready_pid == self.process.pid,
                    timeout):
                raise TimeoutError(f"filter not ready after {timeout} s; see {self.log_path}")

    def kill(self, signum=signal.SIGKILL):
        """Signal the running filter; the supervisor starts a new one."""
        with self.lock:
            process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signum)
            return process.pid
        return None

    def restart(self, timeout=20):
        """SIGTERM the filter (it finishes its sessions) and wait for the next one."""
        self.kill(signal.SIGTERM)
        with self.lock:
            self.lock.wait_for(lambda: self.ready_pid is None, timeout)
        self.wait_ready(timeout)

    def stop(self):
        with self.lock:
            self.stopping = True
            process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait(60)
        self.notify.close()
        self.listener.close()
        with contextlib.suppress(OSError):
            os.unlink(self.notify_path)
            os.rmdir(self.notify_dir)

    def _spawn(self):
        command = [sys.executable, "-m", "tests.faults.supervisor", str(self.listener.fileno()),
                   *swiftdrop_command("serve", "--config", self.config_path, *self.serve_args)]
        env = dict(os.environ, PYTHONUNBUFFERED="1", NOTIFY_SOCKET=self.notify_path)
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(command, stdout=log, stderr=log, env=env, cwd=REPO_ROOT,
                                    pass_fds=(self.listener.fileno(),))

    def _watch(self):
        """Restart=always: start the filter, wait for it to exit, start it again."""
        while True:
            with self.lock:
                if self.stopping:
                    return
                self.process = self._spawn()
                self.starts += 1
                self.lock.notify_all()
                process = self.process
            process.wait()
            with self.lock:
                self.ready_pid = None
                self.lock.notify_all()
                if self.stopping:
                    return
                self.lock.wait(self.restart_delay)

    def _read_notifications(self):
        while True:
            try:
                data, credentials = self._receive()
            except OSError:
                return  # closed by stop()
            if b"READY=1" in data.split(b"\n"):
                with self.lock:
                    self.ready_pid = credentials
                    self.lock.notify_all()

    def _receive(self):
        """One sd_notify datagram and the sender's pid (SCM_CREDENTIALS, as systemd uses)."""
        data, ancillary, _, _ = self.notify.recvmsg(4096, socket.CMSG_SPACE(12))
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                return data, int.from_bytes(payload[:4], sys.byteorder)
        return data, None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def exec_with_listen_fd(fd, command):
    """Become `command` with `fd` as fd 3 and the LISTEN_* variables systemd sets."""
    if fd != SD_LISTEN_FDS_START:
        os.dup2(fd, SD_LISTEN_FDS_START)
        os.close(fd)
    os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
    os.execvp(command[0], command)


if __name__ == "__main__":
    exec_with_listen_fd(int(sys.argv[1]), sys.argv[2:])
