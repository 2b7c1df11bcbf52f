"""The whole path: a client, a real Postfix, the real filter, the real Swift."""

import hashlib
import re
import smtplib
import subprocess

import pytest

from tests.conftest import create_containers, write_ini
from tests.support.filterproc import FilterProcess
from tests.support.postfix import postfix_instance
from tests.support.swiftserver import SwiftServer
from tests.test_service import ReplyRecordingSMTP, send, stored_location

# Runs a private Postfix: left out of the quick loop.
pytestmark = pytest.mark.slow

RELAY_DOMAINS = ["example.com", "example.net"]
RECIPIENTS = ["someone@example.com", "prod@example.com", "billing@example.com",
              "@example.net"]


@pytest.fixture(scope="module")
def mx(swift, swift_ini, tmp_path_factory):
    """Postfix on a loopback port with the filter as its smtpd_proxy_filter."""
    workdir = tmp_path_factory.mktemp("mx")
    with FilterProcess(swift_ini, workdir, "--hostname", "mx.swiftdrop.test",
                       "--log-target", "stderr") as proxy, \
            postfix_instance(proxy_filter=f"inet:127.0.0.1:{proxy.port}",
                             relay_domains=RELAY_DOMAINS, recipients=RECIPIENTS) as postfix:
        yield postfix


def fetch(swift, location, account="test"):
    container, name = location
    return swift.connection(account).get_object(container, name)


def split_received(stored):
    """Postfix prepends exactly one Received: header; return it and the rest."""
    assert stored.startswith(b"Received: from ")
    end = re.search(rb"\r\n(?![ \t])", stored).end()
    return stored[:end], stored[end:]


def test_smtplib_through_postfix_stores_the_message_and_postfix_logs_where(swift, mx):
    body = (b"From: <a@origin.test>\r\nMessage-ID: <via-postfix@origin.test>\r\n"
            b"Subject: through postfix\r\n\r\n.dot line\r\n8-bit \xe9\r\n")
    location = stored_location(send(("127.0.0.1", mx.smtp_port), "a@origin.test",
                                    ["someone@example.com"], body,
                                    mail_options=["BODY=8BITMIME"]))
    headers, stored = fetch(swift, location)
    received, rest = split_received(stored)
    assert rest == body
    assert b"by mx.swiftdrop.test (Postfix)" in received
    assert headers["etag"] == hashlib.md5(stored).hexdigest()
    assert headers["x-object-meta-client-address"] == "127.0.0.1"
    assert headers["x-object-meta-client-helo"]  # the client's HELO, via XFORWARD
    assert headers["x-object-meta-message-id"] == "<via-postfix@origin.test>"
    mx.wait_for_log(rf"proxy-accept: END-OF-MESSAGE: 250 2\.0\.0 Ok: stored as "
                    rf"{re.escape(location[0])}/{re.escape(location[1])}")


def test_swaks_through_postfix(swift, mx):
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{mx.smtp_port}", "--from", "swaks@origin.test",
         "--to", "prod@example.com", "--helo", "swaks.origin.test",
         "--header", "Subject: from swaks", "--body", "sent by swaks"],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout
    reply = re.search(r"<-\s+(250 2\.0\.0 Ok: stored as (\S+?)/(cur/\S+?,S=\d+))", result.stdout)
    assert reply, result.stdout
    headers, stored = fetch(swift, (reply.group(2), reply.group(3)), account="test2")
    assert reply.group(2) == "production"
    assert b"Subject: from swaks\r\n" in stored and b"sent by swaks" in stored
    assert headers["x-object-meta-client-helo"] == "swaks.origin.test"


def test_smtp_source_dot_stuffing_is_undone(swift, mx, tmp_path):
    """smtp-source -F dot-stuffs the file; what lands in Swift must be the file."""
    content = (b"From: <s@origin.test>\nSubject: dots\n\n.leading dot\n..two dots\n.\n"
               b"after a lone dot\n... three\n")
    path = tmp_path / "message.txt"
    path.write_bytes(content)
    before = {o["name"] for o in swift.connection().get_container("fallback",
                                                                    full_listing=True)[1]}
    result = subprocess.run(
        ["smtp-source", "-m", "1", "-s", "1", "-M", "source.origin.test", "-f", "s@origin.test",
         "-t", "dots@example.net", "-F", str(path), f"127.0.0.1:{mx.smtp_port}"],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    after = swift.connection().get_container("fallback", full_listing=True)[1]
    [name] = [o["name"] for o in after if o["name"] not in before]
    _, stored = swift.connection().get_object("fallback", name)
    # smtp-source sends the file with CRLF line ends and one empty line more.
    assert split_received(stored)[1] == content.replace(b"\n", b"\r\n") + b"\r\n"


def test_unknown_recipient_and_relay_attempts_are_refused_at_rcpt(swift, mx):
    with smtplib.SMTP("127.0.0.1", mx.smtp_port, timeout=30) as client:
        client.ehlo("client.origin.test")
        client.mail("a@origin.test")
        code, text = client.rcpt("nobody@example.com")
        assert (code, text[:5]) == (550, b"5.1.1")
        code, text = client.rcpt("victim@foreign.test")
        assert code == 554 and b"Relay access denied" in text
        client.rset()
        client.mail("someone@example.com")  # a spoofed local sender changes nothing
        code, _ = client.rcpt("victim@foreign.test")
        assert code == 554


def test_mixed_destinations_get_one_reply(swift, mx):
    code, text = send(("127.0.0.1", mx.smtp_port), "a@origin.test",
                      ["prod@example.com", "billing@example.com"], b"Subject: two\r\n\r\nx\r\n")
    assert code == 250
    assert re.match(r"2\.0\.0 Ok: stored as production/cur/\S+, billing/cur/\S+$", text)


def test_swift_down_through_postfix_gives_451_and_retry_is_stored(tmp_path):
    swift = SwiftServer(tmp_path / "swift")
    swift.start()
    try:
        ini = write_ini(tmp_path / "swiftdrop.ini", swift, timeout="2", retries="1")
        create_containers(ini)
        with FilterProcess(ini, tmp_path, "--store-timeout", "8",
                           "--log-target", "stderr") as proxy, \
                postfix_instance(proxy_filter=f"inet:127.0.0.1:{proxy.port}",
                                 relay_domains=RELAY_DOMAINS, recipients=RECIPIENTS) as postfix:
            address = ("127.0.0.1", postfix.smtp_port)
            body = b"Subject: deferred\r\n\r\nstore me later\r\n"
            swift.stop()
            assert send(address, "a@origin.test", ["someone@example.com"], body) == (
                451, "4.3.0 Error: queue file write error")
            swift.start()
            assert swift.connection().get_container("fallback")[1] == []
            location = stored_location(send(address, "a@origin.test",
                                            ["someone@example.com"], body))
            assert split_received(fetch(swift, location)[1])[1] == body
    finally:
        swift.close()


def test_reply_recording_client_sees_the_final_text(mx):
    """Guard for the helper the other tests rely on: it must see the DATA reply."""
    with ReplyRecordingSMTP("127.0.0.1", mx.smtp_port, timeout=30) as client:
        client.sendmail("a@origin.test", ["someone@example.com"], b"x\r\n")
        assert client.last_data_reply[0] == 250


def test_size_limits_give_552_and_store_nothing(swift, swift_ini, tmp_path):
    """Postfix refuses at MAIL SIZE= and at the end of DATA; the filter's own cap holds too."""
    with FilterProcess(swift_ini, tmp_path, "--max-message-size", "3000",
                       "--log-target", "stderr") as proxy, \
            postfix_instance(proxy_filter=f"inet:127.0.0.1:{proxy.port}",
                             relay_domains=RELAY_DOMAINS, recipients=RECIPIENTS,
                             extra_main={"message_size_limit": "5000"}) as postfix:
        before = swift.connection().head_container("fallback")["x-container-object-count"]
        with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=30) as client:
            client.ehlo("client.origin.test")
            code, text = client.mail("a@origin.test", ["SIZE=999999"])
            assert (code, text[:5]) == (552, b"5.3.4")
            client.rset()
            # A client that declares a small size and then sends more.
            assert client.mail("a@origin.test", ["SIZE=100"])[0] == 250
            assert client.rcpt("someone@example.com")[0] == 250
            code, text = client.data(b"Subject: liar\r\n\r\n" + b"x" * 8000 + b"\r\n")
            assert (code, text[:5]) == (552, b"5.3.4")
        # Under Postfix's limit but over the filter's: the filter's 552 reaches the client.
        code, text = send(("127.0.0.1", postfix.smtp_port), "a@origin.test",
                          ["someone@example.com"], b"Subject: big\r\n\r\n" + b"y" * 4000 + b"\r\n")
        assert (code, text[:5]) == (552, "5.3.4")
        after = swift.connection().head_container("fallback")["x-container-object-count"]
        assert after == before
