"""Postfix's smtp-sink on a loopback port, standing in for the admin's relayhost.

It accepts everything and dumps each transaction to its own file: envelope
records (X-Mail-Args:, X-Rcpt-Args:, ...), its own Received: line, then the
message with line ends as LF and one empty line appended.
"""

import shutil
import subprocess

from tests.support.filterproc import wait_for_port
from tests.support.ports import reserve_port
from tests.support.postfix import make_workdir

SMTP_SINK = "/usr/sbin/smtp-sink"


class SmtpSink:
    def __init__(self):
        self.port = reserve_port()
        # smtp-sink writes as nobody, who cannot enter pytest's 0700 tmp dirs
        self.dump_dir = make_workdir("swiftdrop-sink-")
        self.dump_dir.chmod(0o777)
        self.process = None

    def __enter__(self):
        self.process = subprocess.Popen(
            [SMTP_SINK, "-u", "nobody", "-h", "relay.admin.test",
             "-d", f"{self.dump_dir}/%H%M%S.", f"127.0.0.1:{self.port}", "50"])
        wait_for_port(self.port, process=self.process)
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.dump_dir, ignore_errors=True)

    def transactions(self):
        """Each dumped transaction as (envelope dict of lists, message bytes)."""
        found = []
        for path in sorted(self.dump_dir.iterdir()):
            raw = path.read_bytes()
            envelope, message = {}, raw
            while message.startswith(b"X-"):
                line, _, message = message.partition(b"\n")
                name, _, value = line.decode().partition(": ")
                envelope.setdefault(name, []).append(value.strip())
            found.append((envelope, message))
        return found

