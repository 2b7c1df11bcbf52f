"""postmaster/abuse/hostmaster go through Postfix's queue to the admin, the rest to Swift.

The whole chain is real: client -> Postfix smtpd -> filter -> second
(loopback) Postfix smtpd -> queue -> relayhost, played by smtp-sink.
"""

import io
import re

from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from swiftdrop.admin_relay import dot_stuffed
from swiftdrop.reception import unstuff
from tests.conftest import create_containers, write_ini
from tests.support.filterproc import FULL_REPLY, FilterProcess
from tests.support.ports import reserve_port
from tests.support.postfix import make_workdir, postfix_instance
from tests.support.rawsmtp import dot_stuff
from tests.support.smtpsink import SmtpSink
from tests.test_service import get, send, stored_location

# Runs a private Postfix and smtp-sink: left out of the quick loop.
pytestmark = pytest.mark.slow

ADMIN = "admin@admin.test"
DOMAINS = ["example.com", "example.org"]
ROLE_ADDRESSES = [f"{part}@{domain}" for part in ("postmaster", "abuse", "hostmaster")
                  for domain in DOMAINS]


@pytest.fixture(scope="module")
def admin_mx(swift, swift_ini, tmp_path_factory):
    """Postfix + filter, with the admin listener and a relayhost that records."""
    workdir = tmp_path_factory.mktemp("admin")
    admin_port = reserve_port()
    maps = make_workdir("swiftdrop-admin-maps-")
    (maps / "admin_aliases").write_text("".join(f"{a} {ADMIN}\n" for a in ROLE_ADDRESSES))
    (maps / "admin_recipients").write_text(
        "".join(f"{a} OK\n" for a in [*ROLE_ADDRESSES, ADMIN]))
    listener = (f"127.0.0.1:{admin_port} inet n - n - - smtpd -o smtpd_proxy_filter= "
                "-o smtpd_relay_restrictions= -o smtpd_recipient_restrictions="
                f"check_recipient_access,texthash:{maps}/admin_recipients,reject "
                "-o syslog_name=postfix/admin")
    with SmtpSink() as sink, \
            FilterProcess(swift_ini, workdir, "--admin-relay", f"127.0.0.1:{admin_port}",
                          "--log-target", "stderr", *FULL_REPLY) as proxy, \
            postfix_instance(proxy_filter=f"inet:127.0.0.1:{proxy.port}",
                             relay_domains=DOMAINS,
                             recipients=["someone@example.com", *ROLE_ADDRESSES],
                             extra_services=[listener],
                             extra_main={"default_transport": "smtp",
                                         "relayhost": f"[127.0.0.1]:{sink.port}",
                                         "virtual_alias_maps": f"texthash:{maps}/admin_aliases"},
                             ) as postfix:
        postfix.sink = sink
        yield postfix


def admin_copies(mx, count):
    mx.wait_for_log(rf"to=<{ADMIN}>.*status=sent", count=count, timeout=30)
    return mx.sink.transactions()


def test_role_address_is_forwarded_and_swift_recipients_still_stored(swift, admin_mx):
    body = b"Subject: abuse report\r\nMessage-ID: <r1@reporter.test>\r\n\r\n.spam\r\nlines\r\n"
    reply = send(("127.0.0.1", admin_mx.smtp_port), "reporter@reporter.test",
                 ["abuse@example.com", "someone@example.com"], body)
    container, name = stored_location(reply)
    headers, stored = get(swift, "test", container, name)
    assert headers["x-object-meta-rcpt-to"] == "someone@example.com"
    assert stored.endswith(body)
    (envelope, message), = admin_copies(admin_mx, 1)
    assert envelope["X-Rcpt-Args"] == [f"<{ADMIN}> ORCPT=rfc822;abuse@example.com"]
    assert envelope["X-Mail-Args"] == ["<reporter@reporter.test>"]
    assert message.endswith(body.replace(b"\r\n", b"\n") + b"\n")


def test_only_role_addresses_reply_names_postfix_queue(admin_mx):
    code, text = send(("127.0.0.1", admin_mx.smtp_port), "", ["Postmaster@example.org"],
                      b"Subject: bounce for you\r\n\r\nhello\r\n")
    assert code == 250
    assert "forwarded to the administrator (2.0.0 Ok: queued as" in text


def test_admin_relay_down_means_451_and_no_swift_copy(swift, tmp_path):
    ini = write_ini(tmp_path / "swiftdrop.ini", swift, container="passthrough-down")
    create_containers(ini)
    with FilterProcess(ini, tmp_path, "--admin-relay", f"127.0.0.1:{reserve_port()}",
                       "--log-target", "stderr") as process:
        code, _ = send(process.address, "s@o.test", ["someone@example.com",
                                                     "hostmaster@example.com"], b"x\r\n")
        assert code == 451
        assert re.search(r"ERROR: not forwarded cur/\S+ for hostmaster@example\.com: "
                         r"admin relay 127\.0\.0\.1:\d+: .*Connection refused", process.log())
    _, listing = swift.connection("test").get_container("passthrough-down")
    assert listing == []


def test_ten_failures_mail_one_notice_to_the_admin(swift, admin_mx, tmp_path):
    """The notice leaves through Postfix's queue, so a Swift outage cannot stop it."""
    ini = write_ini(tmp_path / "swiftdrop.ini", swift, container="not-there",
                    create_container="false")
    admin_port = admin_mx.extra_services[0].split()[0].rpartition(":")[2]
    before = len(admin_mx.sink.transactions())
    with FilterProcess(ini, tmp_path, "--admin-relay", f"127.0.0.1:{admin_port}",
                       "--alert-mail", ADMIN, "--alert-interval", "3600",
                       "--log-target", "stderr") as process:
        for _ in range(10):
            assert send(process.address, "s@o.test", ["a@example.com"], b"x\r\n")[0] == 451
        admin_copies(admin_mx, before + 1)
        admin_mx.wait_until_queue_empty()
    notices = admin_mx.sink.transactions()[before:]
    assert len(notices) == 1
    envelope, message = notices[0]
    assert envelope["X-Rcpt-Args"][0].startswith(f"<{ADMIN}>")
    assert b"Subject: SwiftDrop on" in message and b"[DEFAULT]" in message
    assert b"not-there" in message and b"testing" not in message


TOKENS = st.sampled_from([b".", b"..", b"\r\n", b"\n", b"\r", b"x", b"\0", b"\xff"])


@given(st.lists(st.lists(TOKENS, max_size=12).map(b"".join), max_size=8))
@settings(max_examples=500, deadline=None)
def test_dot_stuffing_round_trips_through_the_filter_reader(chunks):
    """Whatever the chunking, the receiver's unstuff gives back the bytes (CRLF-ended)."""
    stream = b"".join(dot_stuffed(iter(chunks)))
    original = b"".join(chunks)
    expected = original if original.endswith(b"\r\n") or not original else original + b"\r\n"
    assert b"".join(unstuff(io.BufferedReader(io.BytesIO(stream)))) == expected


# (chunks, the DATA stream): a line starts at the start and after CRLF only (RFC 5321 2.3.8).
STUFFING = {
    "dot at the start": ([b".x\r\n"], b"..x\r\n.\r\n"),
    "dot after CRLF": ([b"a\r\n.b\r\n"], b"a\r\n..b\r\n.\r\n"),
    "dot after a bare LF is data": ([b"a\n.b\r\n"], b"a\n.b\r\n.\r\n"),
    "dot after a bare CR is data": ([b"a\r.b\r\n"], b"a\r.b\r\n.\r\n"),
    "LF . CRLF is data": ([b"a\n.\r\nMAIL FROM:<x@y>\r\n"],
                          b"a\n.\r\nMAIL FROM:<x@y>\r\n.\r\n"),
    "CR | LF .": ([b"a\r", b"\n.b\r\n"], b"a\r\n..b\r\n.\r\n"),
    "CR | LF | .": ([b"a\r", b"\n", b".b\r\n"], b"a\r\n..b\r\n.\r\n"),
    "CRLF | .": ([b"a\r\n", b".b\r\n"], b"a\r\n..b\r\n.\r\n"),
    "bare LF | .": ([b"a\n", b".b\r\n"], b"a\n.b\r\n.\r\n"),
    "bare CR | .": ([b"a\r", b".b\r\n"], b"a\r.b\r\n.\r\n"),
    "CR | CR LF .": ([b"a\r", b"\r\n.b\r\n"], b"a\r\r\n..b\r\n.\r\n"),
    "empty chunk | dot at the start": ([b"", b".x\r\n"], b"..x\r\n.\r\n"),
    "one-byte chunks": ([bytes([byte]) for byte in b"\r\n.\n.\r\n."],
                        b"\r\n..\n.\r\n..\r\n.\r\n"),
    "last line ending in a bare LF gets CRLF": ([b"a\n"], b"a\n\r\n.\r\n"),
    "empty message": ([], b".\r\n"),
}


@pytest.mark.parametrize(("chunks", "stream"), STUFFING.values(), ids=STUFFING.keys())
def test_dots_are_doubled_only_where_a_line_starts_whatever_the_chunks(chunks, stream):
    assert b"".join(dot_stuffed(iter(chunks))) == stream


@given(st.lists(st.lists(TOKENS, max_size=12).map(b"".join), max_size=8))
@settings(max_examples=500, deadline=None)
def test_the_relay_stuffs_as_a_client_stuffs_the_whole_message(chunks):
    """Chunked or whole, the relay's stream is what the tests' client sends for it."""
    message = b"".join(chunks)
    if message and not message.endswith(b"\r\n"):
        message += b"\r\n"
    assert b"".join(dot_stuffed(iter(chunks))) == dot_stuff(message)
