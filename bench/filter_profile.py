"""Profile: where the filter's CPU goes per message, through a real Postfix.

    PYTHONPATH=. .venv/bin/python -m bench.filter_profile [--size BYTES] [--messages N]

Runs the filter's own Server and SmtpSession in this process (the same
code ``swiftdrop serve`` runs), a real Swift and a private Postfix in
front, and sends `--messages` messages of `--size` bytes with smtp-source
over `--sessions` sessions. Every session thread is profiled with a CPU
clock (time.thread_time, so waiting for Postfix or Swift costs nothing),
and the profiles are summed. It prints the CPU per message and per MB,
then the functions by own CPU time: what of the time is ours (swiftdrop),
hashing, swiftclient/requests/urllib3 (0 % since the filter talks to Swift
with its own client, swiftdrop.swift_client: a figure above that means a
library crept back onto the hot path), or the standard library. The
profiler adds a fixed cost to every call, so code made of many small calls
looks bigger than it is. The CPU of the real process is what
bench.filter_throughput measures.
"""

import argparse
import contextlib
import cProfile
import pathlib
import pstats
import socket
import tempfile
import threading
import time

from bench.filter_throughput import RECIPIENT, smtp_source, write_ini
from swiftdrop import config
from swiftdrop.delivery import Deliverer
from swiftdrop.naming import MaildirNamer
from swiftdrop.service import Server
from swiftdrop.smtp import SmtpSession
from swiftdrop.storage import SwiftStore
from tests.support.postfix import postfix_instance
from tests.support.swiftserver import SwiftServer

GROUPS = (("hashing", ("_hashlib",)), ("swiftdrop", ("swiftdrop/",)),
          ("swiftclient, requests, urllib3", ("swiftclient", "requests", "urllib3")),
          ("sockets and files", ("_socket", "_io.", "socket.py", "tempfile")))


class ProfiledSessions:
    """make_session for Server: each session runs under its own CPU-clock profiler."""

    def __init__(self, make_session):
        self.make_session = make_session
        self.profiles = []
        self.lock = threading.Lock()

    def __call__(self, connection):
        session = self.make_session(connection)
        profiles, lock = self.profiles, self.lock

        class Profiled:
            def serve(self):
                profile = cProfile.Profile(time.thread_time)
                profile.runcall(session.serve)
                with lock:
                    profiles.append(profile)
        return Profiled()


def group_of(function):
    filename, _, name = function
    where = f"{filename}:{name}"
    for label, markers in GROUPS:
        if any(marker in where for marker in markers):
            return label
    return "the rest (standard library: email, http.client, logging ...)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024 * 1024)
    parser.add_argument("--messages", type=int, default=40)
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--top", type=int, default=25)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="swiftdrop-profile-") as scratch:
        workdir = pathlib.Path(scratch)
        with SwiftServer(workdir / "swift") as swift:
            ini = write_ini(workdir / "swiftdrop.ini", swift)
            deliver = Deliverer(config.load(str(ini)), SwiftStore(), MaildirNamer("mx.bench"),
                                60)
            listener = socket.create_server(("127.0.0.1", 0))
            sessions = ProfiledSessions(lambda connection: SmtpSession(
                connection, deliver, hostname="mx.bench", max_message_size=2**30))
            server = Server([listener], sessions)
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            port = listener.getsockname()[1]
            with contextlib.ExitStack() as stack:
                postfix = stack.enter_context(postfix_instance(
                    proxy_filter=f"inet:127.0.0.1:{port}", relay_domains=["example.com"],
                    recipients=[RECIPIENT]))
                smtp_source(postfix, options.size, 1, 1)  # authenticate, warm up
                with sessions.lock:
                    sessions.profiles.clear()
                smtp_source(postfix, options.size, options.sessions, options.messages)
            server.stop()
            thread.join(30)

    stats = pstats.Stats(*sessions.profiles)
    total = stats.total_tt
    megabytes = options.messages * options.size / 2**20
    print(f"{options.messages} messages of {options.size} bytes, {options.sessions} sessions: "
          f"session threads' CPU {total * 1000 / options.messages:.2f} ms/message, "
          f"{total * 1000 / megabytes:.1f} ms/MB (profiler included)")
    shares = {}
    for function, (_, _, own, _, _) in stats.stats.items():
        shares[group_of(function)] = shares.get(group_of(function), 0) + own
    for label, own in sorted(shares.items(), key=lambda item: -item[1]):
        print(f"  {own * 100 / total:5.1f} %  {label}")
    stats.sort_stats("tottime").print_stats(options.top)


if __name__ == "__main__":
    main()
