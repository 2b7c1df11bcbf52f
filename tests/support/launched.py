"""The lifecycle the test Swift and the test Keystone share.

Each runs as a child launcher process (``python -m tests.support.X``) that
prints ``READY <port>`` once it listens and then answers an HTTP health
check; tests start, stop, kill (a crash) and restart it. Only the command,
the health path and any companion process (Swift's memcached) differ.
"""

from __future__ import annotations

import atexit
import http.client
import select
import signal
import subprocess
import time
import typing

HOST = "127.0.0.1"


def wait_until(ready, timeout: float, what: str) -> None:
    """Poll ``ready()`` until it is true; raise TimeoutError after timeout."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout} s")
        time.sleep(0.02)


def signal_and_wait(process: subprocess.Popen | None, signum: int) -> None:
    """Send signum and reap the process, escalating to SIGKILL."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signum)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class LaunchedServer:
    """Subclasses set `name`, `health_path`, `port`, and implement start()."""

    name: str
    health_path: str
    health_timeout: float = 1
    port: int
    process: subprocess.Popen | None = None

    def launch(self, command: list[str], *, cwd, env: dict[str, str],
               timeout: float) -> None:
        """Run the launcher; return once it said READY and answers its health check."""
        atexit.register(self.close)
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE)
        try:
            self._wait_for_ready(timeout)
            wait_until(self._healthy, timeout, f"{self.name} {self.health_path}")
        except BaseException:
            self.kill()
            raise

    def stop(self) -> None:
        """SIGTERM the server and wait for it."""
        signal_and_wait(self.process, signal.SIGTERM)
        self.process = None

    def kill(self) -> None:
        """SIGKILL the server, e.g. to simulate a crash."""
        signal_and_wait(self.process, signal.SIGKILL)
        self.process = None

    def close(self) -> None:
        """Stop the server and whatever it keeps running besides."""
        self.stop()
        self.release()
        atexit.unregister(self.close)

    def release(self) -> None:
        """Stop companion processes that outlive stop()/start(); none by default."""

    def where_to_look(self) -> str:
        return "its stderr tells why"

    def __enter__(self) -> typing.Self:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _wait_for_ready(self, timeout: float) -> None:
        """Read the launcher's single ``READY <port>`` line."""
        stdout = self.process.stdout
        ready, _, _ = select.select([stdout], [], [], timeout)
        line = stdout.readline().decode().strip() if ready else ""
        stdout.close()
        if line != f"READY {self.port}":
            raise RuntimeError(f"{self.name} did not start (said {line!r}); "
                               f"{self.where_to_look()}")

    def _healthy(self) -> bool:
        """GET the health path directly: urllib would honour any http_proxy."""
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}; "
                               f"{self.where_to_look()}")
        conn = http.client.HTTPConnection(HOST, self.port, timeout=self.health_timeout)
        try:
            conn.request("GET", self.health_path)
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()
