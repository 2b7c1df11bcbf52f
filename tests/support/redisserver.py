"""Debian's redis-server on a reserved loopback port: the Redis lock's tests and benchmarks."""

import pathlib
import subprocess

from tests.support.filterproc import wait_for_port
from tests.support.ports import reserve_port

# What Debian's default configuration saves: an RDB snapshot, also written on SIGTERM.
DEBIAN_SAVE = "3600 1 300 100 60 10000"


class RedisServer:
    """One redis-server; `save` as redis.conf's (``""``: nothing kept over a restart).

    With Debian's default (DEBIAN_SAVE) a restart is a restart, not a wipe.
    """

    def __init__(self, workdir, save="", appendonly=False):
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(exist_ok=True)
        self.save = save
        # appendfsync always, as the role's index Redis: what it acknowledged is on disk.
        self.appendonly = appendonly
        self.port = reserve_port()
        self.process = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
             "--save", self.save, "--appendonly", "yes" if self.appendonly else "no",
             "--appendfsync", "always", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL)
        wait_for_port(self.port, process=self.process)

    def stop(self):
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)
            self.process = None

    def kill(self):
        """SIGKILL: no snapshot on the way out, only what the append-only file holds."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(30)
            self.process = None

    def restart(self):
        self.stop()
        self.start()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
