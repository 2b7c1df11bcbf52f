"""Notices that close the loop, and journal entries that say who sent what, how often tried."""

import contextlib
import http.server
import json
import threading
import time
import uuid

from tests.conftest import write_ini
from tests.support.filterproc import FilterProcess
from tests.support.ports import reserve_port
from tests.support.rawsmtp import RawSmtp
from tests.test_metrics import scrape, value


@contextlib.contextmanager
def webhook_receiver():
    """A real HTTP server on loopback; yields (url, list of the JSON bodies POSTed)."""
    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", reserve_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def wait_for(condition, timeout=15):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def send_from(address, client_address, sender, body=b"hello\r\n"):
    """One message as Postfix sends it: XFORWARD with the client's address first."""
    with RawSmtp(address) as client:
        for line in ("EHLO mx.test", f"XFORWARD ADDR={client_address} NAME=client.test",
                     f"MAIL FROM:<{sender}>", "RCPT TO:<a@example.com>", "DATA"):
            client.command(line)
        client.send(body + b".\r\n")
        return client.reply()[0]


def test_a_recovered_notice_follows_the_failure_notice(swift, tmp_path, journald):
    container = f"late-{uuid.uuid4().hex[:8]}"
    ini = write_ini(tmp_path / "swiftdrop.ini", swift, container=container,
                    create_container="false")
    metrics_port = reserve_port()
    with webhook_receiver() as (url, received), FilterProcess(
            ini, tmp_path, "--alert-webhook", url, "--alert-interval", "600",
            "--metrics-listen", f"127.0.0.1:{metrics_port}", "--log-target", "journal") as proc:
        codes = [send_from(proc.address, "192.0.2.7", f"s{n}@o.test") for n in range(3)]
        assert codes == [451, 451, 451]
        assert wait_for(lambda: len(received) == 1)
        assert received[0]["event"] == "swiftdrop.store_failed"
        swift.connection().put_container(container)
        assert send_from(proc.address, "192.0.2.8", "back@o.test") == 250
        assert send_from(proc.address, "192.0.2.8", "again@o.test") == 250
        assert wait_for(lambda: len(received) == 2)
        metrics = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
        pid = proc.process.pid
    recovered = received[1]
    assert recovered["event"] == "swiftdrop.store_recovered"
    assert recovered["section"] == "DEFAULT"
    assert recovered["failures_since_last_notice"] == 2
    assert "again" in recovered["text"]
    assert len(received) == 2  # the second stored message sends nothing more
    assert value(metrics, "swiftdrop_alerts_sent_total") == 2

    [failed] = journald.entries(_PID=str(pid), SWIFTDROP_MAIL_FROM="s0@o.test")
    assert failed["SWIFTDROP_RESULT"] == "failed"
    assert failed["SWIFTDROP_CLIENT_ADDRESS"] == "192.0.2.7"
    assert failed["SWIFTDROP_ATTEMPTS"] == "1"  # a 404 is not retried
    [stored] = journald.entries(_PID=str(pid), SWIFTDROP_MAIL_FROM="back@o.test")
    assert stored["SWIFTDROP_RESULT"] == "stored"
    assert stored["SWIFTDROP_CLIENT_ADDRESS"] == "192.0.2.8"
    assert stored["SWIFTDROP_ATTEMPTS"] == "1"
