"""A real clamd (Debian's clamav-daemon) on loopback, with a signature database made here.

Signatures cannot be downloaded on the test machine, and clamd will not
start without a database: the test writes one of its own, a single
extended (``.ndb``) signature that matches SAMPLE anywhere in what clamd
scans, which clamd reports as SIGNATURE_NAME (``.UNOFFICIAL``: not from
ClamAV's own databases). clamd decodes a mail's MIME parts itself, so the
sample is found in a base64 attachment as in plain text.
"""

import pathlib
import socket
import struct
import subprocess
import time

from tests.support.ports import reserve_port

SAMPLE = b"SWIFTDROP-TEST-INFECTION-7f3a91"
SIGNATURE_NAME = "SwiftDrop.Test.Sample.UNOFFICIAL"
STARTUP_TIMEOUT = 60


class ClamdServer:
    """clamd on 127.0.0.1:port, in the foreground; stop() and start() again freely."""

    def __init__(self, workdir):
        self.workdir = pathlib.Path(workdir)
        self.port = reserve_port()
        database = self.workdir / "db"
        database.mkdir(parents=True, exist_ok=True)
        (database / "swiftdrop-test.ndb").write_text(
            f"{SIGNATURE_NAME.removesuffix('.UNOFFICIAL')}:0:*:{SAMPLE.hex()}\n")
        self.config = self.workdir / "clamd.conf"
        self.config.write_text(
            f"Foreground yes\nDatabaseDirectory {database}\nTCPSocket {self.port}\n"
            f"TCPAddr 127.0.0.1\nLogFile {self.workdir / 'clamd.log'}\nLogTime yes\n"
            f"PidFile {self.workdir / 'clamd.pid'}\n")
        self.process = None

    def start(self):
        log = open(self.workdir / "clamd.out", "ab")
        self.process = subprocess.Popen(["clamd", "--config-file", str(self.config)],
                                        stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("clamd did not start: "
                                   + (self.workdir / "clamd.out").read_text(errors="replace"))
            time.sleep(0.1)
        return self

    def answers(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as probe:
                probe.sendall(b"zPING\0")
                return probe.recv(16) == b"PONG\0"
        except OSError:
            return False

    def scan(self, data):
        """clamd's own answer for `data` (INSTREAM), as rspamd asks it."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as client:
            client.sendall(b"zINSTREAM\0" + struct.pack("!L", len(data)) + data
                           + struct.pack("!L", 0))
            return client.recv(256).rstrip(b"\0").decode()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
