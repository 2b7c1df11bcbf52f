"""Notices that close the loop, and journal entries that say who sent what, how often tried."""

import uuid

from tests.conftest import write_ini
from tests.support.filterproc import FilterProcess
from tests.support.ports import reserve_port
from tests.support.rawsmtp import RawSmtp
from tests.support.webhook import Webhook
from tests.test_metrics import scrape, value


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
    with Webhook() as hook, FilterProcess(
            ini, tmp_path, "--alert-webhook", hook.url, "--alert-interval", "600",
            "--metrics-listen", f"127.0.0.1:{metrics_port}", "--log-target", "journal") as proc:
        codes = [send_from(proc.address, "192.0.2.7", f"s{n}@o.test") for n in range(3)]
        assert codes == [451, 451, 451]
        assert [n["event"] for n in hook.wait_for(1)] == ["swiftdrop.store_failed"]
        swift.connection().put_container(container)
        assert send_from(proc.address, "192.0.2.8", "back@o.test") == 250
        assert send_from(proc.address, "192.0.2.8", "again@o.test") == 250
        received = hook.wait_for(2)
        metrics = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
    recovered = received[1]
    assert recovered["event"] == "swiftdrop.store_recovered"
    assert recovered["section"] == "DEFAULT"
    assert recovered["failures_since_last_notice"] == 2
    assert "again" in recovered["text"]
    assert len(hook.notices) == 2  # the second stored message sends nothing more
    assert value(metrics, "swiftdrop_alerts_sent_total") == 2

    [failed] = journald.of_process(proc, SWIFTDROP_MAIL_FROM="s0@o.test")
    assert failed["SWIFTDROP_RESULT"] == "failed"
    assert failed["SWIFTDROP_CLIENT_ADDRESS"] == "192.0.2.7"
    assert failed["SWIFTDROP_ATTEMPTS"] == "1"  # a 404 is not retried
    [stored] = journald.of_process(proc, SWIFTDROP_MAIL_FROM="back@o.test")
    assert stored["SWIFTDROP_RESULT"] == "stored"
    assert stored["SWIFTDROP_CLIENT_ADDRESS"] == "192.0.2.8"
    assert stored["SWIFTDROP_ATTEMPTS"] == "1"
