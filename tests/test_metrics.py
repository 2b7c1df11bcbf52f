"""``swiftdrop serve --metrics-listen``: the counters match what was sent, checked from outside."""

import calendar
import subprocess
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from swiftdrop import __version__
from tests.conftest import create_containers, write_ini
from tests.support.filterproc import FilterProcess
from tests.support.ports import reserve_port
from tests.support.rawsmtp import RawSmtp
from tests.test_service import send

BROKEN_SECTION = """
[BROKEN]
recipient = broken@example.com
container = never-created
create_container = false
"""


def scrape(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def value(text, name, **labels):
    """The sample `name` with exactly these labels; None if the filter does not expose it."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def send_without_size(address, body):
    """Send as a client that ignores SIZE, so the limit is found in DATA; the reply's code."""
    with RawSmtp(address) as client:
        for line in ("EHLO client.test", "MAIL FROM:<s@o.test>", "RCPT TO:<a@example.com>",
                     "DATA"):
            client.command(line)
        client.send(body + b".\r\n")
        return client.reply()[0]


def wait_for_value(url, name, expected, timeout=15, **labels):
    """Poll until the sample has `expected` (a session's gauge drops after its reply)."""
    deadline = time.monotonic() + timeout
    while True:
        text = scrape(url)
        if value(text, name, **labels) == expected or time.monotonic() > deadline:
            return text


def test_counters_match_what_was_sent_and_promtool_accepts_them(swift, tmp_path):
    ini = write_ini(tmp_path / "swiftdrop.ini", swift)
    create_containers(ini)
    ini.write_text(ini.read_text() + BROKEN_SECTION)
    metrics_port = reserve_port()
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with FilterProcess(ini, tmp_path, "--metrics-listen", f"127.0.0.1:{metrics_port}",
                       "--max-message-size", "1000", "--log-target", "stderr") as process:
        replies = [send(process.address, "s@o.test", [to], b"hello\r\n")[0]
                   for to in ("a@example.com", "b@example.com", "billing@example.com",
                              "broken@example.com")]
        replies.append(send_without_size(process.address, b"x" * 2000 + b"\r\n"))
        assert replies == [250, 250, 250, 451, 552]
        text = wait_for_value(url, "swiftdrop_sessions_active", 0.0)
    assert value(text, "swiftdrop_messages_total", result="stored") == 3
    assert value(text, "swiftdrop_messages_total", result="failed") == 1
    assert value(text, "swiftdrop_messages_total", result="rejected") == 1
    assert value(text, "swiftdrop_copies_total", destination="DEFAULT", result="stored") == 2
    assert value(text, "swiftdrop_copies_total", destination="BILLING", result="stored") == 1
    assert value(text, "swiftdrop_copies_total", destination="BROKEN", result="failed") == 1
    assert value(text, "swiftdrop_copies_total", destination="PRODUCTION", result="stored") == 0
    # Four messages reached the deliverer; the oversized one was refused while spooling.
    assert value(text, "swiftdrop_store_duration_seconds_count") == 4
    assert value(text, "swiftdrop_message_size_bytes_sum") == 4 * len(b"hello\r\n")
    assert value(text, "swiftdrop_swift_requests_total", method="PUT", status="201") == 3
    assert value(text, "swiftdrop_swift_requests_total", method="PUT", status="404") == 1
    assert value(text, "swiftdrop_swift_retries_total") == 0
    # DEFAULT, BILLING and BROKEN share one account: one token for all four messages.
    auth = [value(text, "swiftdrop_auth_requests_total", destination=section)
            for section in ("DEFAULT", "BILLING", "BROKEN")]
    assert sum(count or 0 for count in auth) == 1
    assert value(text, "swiftdrop_sessions_active") == 0
    assert value(text, "swiftdrop_spool_bytes") == 0
    assert value(text, "swiftdrop_alerts_sent_total") == 0
    assert value(text, "swiftdrop_admin_relayed_total") == 0
    assert value(text, "swiftdrop_build_info", version=__version__) == 1
    for forbidden in ("never-created", "127.0.0.1", "cur/", "s@o.test", "example.com"):
        assert forbidden not in text, forbidden
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout + check.stderr == ""


def test_metrics_on_ipv6_loopback(swift_ini, tmp_path):
    metrics_port = reserve_port()
    with FilterProcess(swift_ini, tmp_path, "--metrics-listen", f"[::1]:{metrics_port}",
                       "--log-target", "stderr"):
        text = scrape(f"http://[::1]:{metrics_port}/metrics")
    assert value(text, "swiftdrop_build_info", version=__version__) == 1


def test_without_metrics_listen_the_filter_serves_no_metrics(swift_ini, tmp_path):
    """Off unless asked for: the process listens on its SMTP socket only."""
    with FilterProcess(swift_ini, tmp_path, "--log-target", "stderr") as process:
        listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True,
                                   check=True).stdout
    own = [line for line in listening.splitlines() if f"pid={process.process.pid}," in line]
    assert len(own) == 1 and f"127.0.0.1:{process.port} " in own[0], own


def certificate(path, days):
    """A self-signed certificate valid for `days` (openssl), written to `path`; its notAfter."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
                    "/CN=mx.example.test", "-days", str(days), "-keyout", str(path) + ".key",
                    "-out", str(path)], check=True, capture_output=True)
    end = subprocess.run(["openssl", "x509", "-in", str(path), "-noout", "-enddate", "-dateopt",
                          "iso_8601"], check=True, capture_output=True, text=True).stdout
    return calendar.timegm(time.strptime(end.strip().removeprefix("notAfter="),
                                         "%Y-%m-%d %H:%M:%SZ"))


def test_the_certificate_s_expiry_is_read_at_each_scrape(swift_ini, tmp_path):
    """A renewal shows at the next scrape, without a restart; a broken file says so."""
    cert = tmp_path / "cert.pem"
    first = certificate(cert, 5)
    metrics_port = reserve_port()
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with FilterProcess(swift_ini, tmp_path, "--metrics-listen", f"127.0.0.1:{metrics_port}",
                       "--tls-certificate", str(cert), "--log-target", "stderr") as process:
        text = scrape(url)
        assert value(text, "swiftdrop_tls_certificate_expiry_timestamp_seconds",
                     path=str(cert)) == first
        assert value(text, "swiftdrop_tls_certificate_readable", path=str(cert)) == 1
        renewed = certificate(cert, 90)
        assert renewed > first
        assert value(scrape(url), "swiftdrop_tls_certificate_expiry_timestamp_seconds",
                     path=str(cert)) == renewed
        cert.write_text("not a certificate\n")
        text = scrape(url)
        assert value(text, "swiftdrop_tls_certificate_readable", path=str(cert)) == 0
        assert value(text, "swiftdrop_tls_certificate_expiry_timestamp_seconds",
                     path=str(cert)) is None
        assert f"cannot read the TLS certificate {cert}" in process.log()
