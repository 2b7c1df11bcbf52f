"""Shared fixtures: a real Swift on loopback and ini files pointing at it."""

import json
import pathlib
import socket
import subprocess
import textwrap
import time

import pytest

# The tests' own Keystone clients authenticate through swiftclient, which
# finds keystoneclient only if it was importable when swiftclient.client was
# first imported; swiftdrop.libraries refuses that import (the filter never
# needs it) unless swiftclient is loaded already. Loaded here, before any
# test module imports swiftdrop, it is whole whatever order the tests run in.
import swiftclient.client  # noqa: F401

from tests.support.filterproc import run_swiftdrop
from tests.support.keystone import KeystoneServer
from tests.support.redisserver import RedisServer
from tests.support.swiftserver import SwiftServer

JOURNAL_SOCKET = "/run/systemd/journal/socket"
JOURNALD = "/lib/systemd/systemd-journald"
CONTAINERS = {"DEFAULT": "fallback", "PRODUCTION": "production", "BILLING": "billing"}


def write_ini(path, swift, **overrides):
    """An ini with the catch-all in account test, PRODUCTION in test2, BILLING in test.

    Keyword arguments add or replace [DEFAULT] keys (e.g. timeout="2").
    """
    defaults = {"recipient": "DEFAULT", "container": CONTAINERS["DEFAULT"],
                "auth_version": "1", "authurl": swift.auth_url, "user": "test:tester",
                "key": "testing", "create_container": "true", **overrides}
    path = pathlib.Path(path)
    path.write_text("[DEFAULT]\n" + "".join(f"{k} = {v}\n" for k, v in defaults.items())
                    + textwrap.dedent(f"""
        [PRODUCTION]
        recipient = prod@example.com, ops@example.com
        container = {CONTAINERS["PRODUCTION"]}
        user = test2:tester2
        key = testing2

        [BILLING]
        recipient = billing@example.com
        container = {CONTAINERS["BILLING"]}
        """))
    path.chmod(0o640)
    return path


def create_containers(ini):
    """``swiftdrop check`` creates the containers (create_container = true)."""
    result = run_swiftdrop("check", "--config", str(ini))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="session")
def swift(tmp_path_factory):
    with SwiftServer(tmp_path_factory.mktemp("swift")) as server:
        yield server


@pytest.fixture(scope="session")
def keystone(tmp_path_factory):
    """A real Keystone; tests that inject faults into it clear them again."""
    started = time.monotonic()
    with KeystoneServer(tmp_path_factory.mktemp("keystone")) as server:
        print(f"keystone startup (incl. users) took {time.monotonic() - started:.2f} s")
        yield server


@pytest.fixture(scope="session")
def keystone_swift(keystone, tmp_path_factory):
    """A Swift that authenticates against `keystone` (authtoken + keystoneauth)."""
    started = time.monotonic()
    with SwiftServer(tmp_path_factory.mktemp("swift"), keystone=keystone) as server:
        print(f"keystone-mode swift startup took {time.monotonic() - started:.2f} s")
        yield server


@pytest.fixture(scope="session")
def swift_ini(swift, tmp_path_factory):
    ini = write_ini(tmp_path_factory.mktemp("config") / "swiftdrop.ini", swift)
    create_containers(ini)
    return ini


class Journal:
    """Reads the real journal with journalctl."""

    def entries(self, timeout=10, **matches):
        """Entries matching all `matches` (FIELD=value); waits for them to be flushed."""
        return self._query(["-o", "json"], timeout, matches)

    def of_process(self, process, timeout=10, **matches):
        """The entries of one FilterProcess run, matching all `matches`.

        A PID alone does not name a process: over a whole test run the kernel
        hands the same PID to a later process, and the journal keeps the
        earlier one's entries. Entries from before the run started are not its.
        """
        return self._query(["-o", "json", f"--since=@{process.started:.6f}"], timeout,
                           dict(matches, _PID=process.process.pid))

    def text_of(self, process):
        """Every message one FilterProcess run logged, one per line."""
        return "".join(f"{entry['MESSAGE']}\n" for entry in self.of_process(process, timeout=0))

    @staticmethod
    def _query(options, timeout, matches):
        command = ["journalctl", "--no-pager", *options]
        command += [f"{field}={value}" for field, value in matches.items()]
        deadline = time.monotonic() + timeout
        while True:
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            entries = [json.loads(line) for line in output.splitlines()]
            if entries or time.monotonic() > deadline:
                return entries
            time.sleep(0.2)


def journald_listening():
    """True when a journald answers on its socket (a stale socket file refuses)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(JOURNAL_SOCKET)
        except OSError:
            return False
    return True


@pytest.fixture(scope="session")
def journald():
    """The machine's journald; started here where the machine runs without systemd.

    It is started as the system's own journal daemon, not as this test run's:
    every process on the machine logs to the one socket, so a second test run
    beside this one uses it too and must not lose it when this run ends.
    """
    if not journald_listening():
        process = subprocess.Popen([JOURNALD], start_new_session=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not journald_listening():
            assert process.poll() is None, f"journald exited with {process.returncode}"
            assert time.monotonic() < deadline, "journald did not start"
            time.sleep(0.05)
    return Journal()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A real redis-server (Debian's) on a loopback port, without persistence."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server.url
