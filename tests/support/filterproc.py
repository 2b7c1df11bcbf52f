"""Run the real ``swiftdrop serve`` as a child process for end-to-end tests."""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

from tests.support.ports import reserve_port

# The 250 reply names container and object only with this; tests that fetch
# the stored object by the reply use it (the default reply is an opaque id).
FULL_REPLY = ("--reply-detail", "full")


def wait_for_port(port, timeout=15, process=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def swiftdrop_command(*args):
    return [sys.executable, "-m", "swiftdrop", *args]


def run_swiftdrop(*args, timeout=60):
    return subprocess.run(swiftdrop_command(*args), capture_output=True, text=True,
                          timeout=timeout, check=False)


class FilterProcess:
    """``swiftdrop serve --listen 127.0.0.1:PORT``, logging to a file we can read."""

    def __init__(self, config_path, workdir, *extra_args, port=None, launcher=(), env=None):
        self.config_path = str(config_path)
        self.env = dict(env or {})  # e.g. its own TMPDIR, to count its temporary files
        self.port = port or reserve_port()
        self.log_path = pathlib.Path(workdir) / f"filter-{self.port}.log"
        self.extra_args = extra_args
        self.launcher = list(launcher)
        self.process = None
        self.started = None  # wall clock, for the journal: its PID is reused later

    @property
    def address(self):
        return ("127.0.0.1", self.port)

    def command(self):
        if self.launcher:
            return [*self.launcher, *swiftdrop_command(
                "serve", "--config", self.config_path, *self.extra_args)]
        return swiftdrop_command("serve", "--config", self.config_path,
                                 "--listen", f"127.0.0.1:{self.port}", *self.extra_args)

    def start(self):
        log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self.started = time.time()
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=log, env=env)
        log.close()
        wait_for_port(self.port, process=self.process)
        return self

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout)
        return self.process.returncode if self.process else None

    def log(self):
        return self.log_path.read_text(errors="replace")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
