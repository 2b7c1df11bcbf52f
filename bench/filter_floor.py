"""Benchmark: the least CPU a Python proxy filter can spend per message, next to SwiftDrop's.

    PYTHONPATH=. .venv/bin/python -m bench.filter_floor [--messages N] [--size BYTES]

Why: bench.filter_throughput prints the filter's CPU per message; this says
how much of it is the job itself. It runs, behind the same private Postfix
and against the same real Swift, first ``swiftdrop serve`` and then a
floor filter of a few dozen lines: a connection at a time in each of a few
threads kept for the next (as SwiftDrop, and as Postfix's proxy client needs:
it waits for each reply before the next command); the same replies,
so the same sends and receives; the message read in big blocks with no
unstuffing and no spool; one MD5 pass; one PUT with If-None-Match and the
ETag on a kept-alive connection; and nothing else: no routing, checks,
metrics, log line, deadline or retry. It is not a filter anyone should
run (it keeps nothing it is not sure of, and stores dot-stuffed bytes);
it is what the syscalls and the interpreter cost on this machine.

Printed for each: CPU ms per message, user and system apart (the kernel's
part is mostly the loopback TCP of the dialogue, which Postfix dictates).
"""

import argparse
import hashlib
import pathlib
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.parse

from bench.filter_throughput import RECIPIENT, end_to_end_rate, write_ini
from tests.support.filterproc import FilterProcess, wait_for_port
from tests.support.ports import reserve_port
from tests.support.postfix import postfix_instance
from tests.support.swiftserver import SwiftServer

EHLO = (b"250-floor\r\n250-PIPELINING\r\n250-SIZE 52428800\r\n250-8BITMIME\r\n"
        b"250-ENHANCEDSTATUSCODES\r\n250 XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE\r\n")


class FloorFilter:
    """The floor itself: run as ``python -m bench.filter_floor --serve PORT URL TOKEN``."""

    def __init__(self, port, storage_url, token):
        self.url = urllib.parse.urlsplit(storage_url)
        self.token = token
        self.idle = []
        self.lock = threading.Lock()
        self.count = 0
        self.listener = socket.create_server(("127.0.0.1", port))

    def run(self, threads=8):
        for _ in range(threads - 1):
            threading.Thread(target=self.serve, daemon=True).start()
        self.serve()

    def serve(self):
        while True:
            self.session(self.listener.accept()[0])

    def session(self, connection):
        with connection:
            reader = connection.makefile("rb", buffering=65536)
            connection.sendall(b"220 floor ESMTP\r\n")
            for line in reader:
                verb = line[:4].upper()
                if verb == b"EHLO":
                    connection.sendall(EHLO)
                elif verb == b"DATA":
                    connection.sendall(b"354 go ahead\r\n")
                    connection.sendall(self.store(self.message(reader)))
                elif verb == b"QUIT":
                    connection.sendall(b"221 bye\r\n")
                    return
                else:
                    connection.sendall(b"250 ok\r\n")

    @staticmethod
    def message(reader):
        parts = []
        while True:
            block = reader.read1(65536)
            if not block:
                raise EOFError
            parts.append(block)
            if block.endswith(b"\r\n.\r\n"):
                return b"".join(parts)[:-3]

    def store(self, body):
        with self.lock:
            self.count += 1
            name = f"floor/{self.count}"
            sock = self.idle.pop() if self.idle else socket.create_connection(
                (self.url.hostname, self.url.port))
        head = (f"PUT {self.url.path}/bench/{name} HTTP/1.1\r\nHost: {self.url.netloc}\r\n"
                f"X-Auth-Token: {self.token}\r\nContent-Length: {len(body)}\r\n"
                f"ETag: {hashlib.md5(body).hexdigest()}\r\nIf-None-Match: *\r\n"
                "Content-Type: message/rfc822\r\n\r\n").encode()
        sock.sendall(head + body)
        answer = sock.recv(65536)
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        head, _, rest = answer.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += sock.recv(65536)
        with self.lock:
            self.idle.append(sock)
        return b"250 ok\r\n" if head[9:10] == b"2" else b"451 not stored\r\n"


def cpu_split(pid):
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = 100  # USER_HZ
    return int(fields[11]) / ticks, int(fields[12]) / ticks


def measure(swift, postfix, pid, size, messages):
    """(msg/s, user ms/msg, system ms/msg) through a Postfix whose proxy filter is `pid`."""
    end_to_end_rate(swift, postfix, size, 1, 20, filter_pid=pid)  # warm up
    user, system = cpu_split(pid)
    rate, _ = end_to_end_rate(swift, postfix, size, 1, messages, filter_pid=pid)
    user_after, system_after = cpu_split(pid)
    return (rate, (user_after - user) * 1000 / messages,
            (system_after - system) * 1000 / messages)


def main():
    if sys.argv[1:2] == ["--serve"]:
        port, url, token = sys.argv[2:5]
        FloorFilter(int(port), url, token).run()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--size", type=int, default=5 * 1024)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swiftdrop-bench-") as scratch:
        workdir = pathlib.Path(scratch)
        with SwiftServer(workdir / "swift") as swift:
            ini = write_ini(workdir / "swiftdrop.ini", swift)
            storage_url, token = swift.connection().get_auth()
            print(f"{options.messages} messages of {options.size} bytes, one session at a time")
            print(f"{'filter':>10} {'msg/s':>7} {'user ms/msg':>12} {'sys ms/msg':>11} "
                  f"{'CPU ms/msg':>11}")
            with FilterProcess(ini, workdir, "--log-target", "stderr") as proxy, \
                    postfix_instance(proxy_filter=f"inet:127.0.0.1:{proxy.port}",
                                     relay_domains=["example.com"],
                                     recipients=[RECIPIENT]) as postfix:
                report("SwiftDrop", measure(swift, postfix, proxy.process.pid,
                                            options.size, options.messages))
            port = reserve_port()
            floor = subprocess.Popen([sys.executable, "-m", "bench.filter_floor", "--serve",
                                      str(port), storage_url, token])
            try:
                wait_for_port(port, process=floor)
                with postfix_instance(proxy_filter=f"inet:127.0.0.1:{port}",
                                      relay_domains=["example.com"],
                                      recipients=[RECIPIENT]) as postfix:
                    report("floor", measure(swift, postfix, floor.pid,
                                            options.size, options.messages))
            finally:
                floor.kill()
                floor.wait()


def report(label, figures):
    rate, user, system = figures
    print(f"{label:>10} {rate:>7.1f} {user:>12.2f} {system:>11.2f} {user + system:>11.2f}",
          flush=True)


if __name__ == "__main__":
    main()
