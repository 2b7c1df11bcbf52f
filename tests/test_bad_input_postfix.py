"""Bad input through the real Postfix in front of the real filter and the real Swift.

Postfix answers much of this itself; where it passes a message on, what
reaches Swift must be exactly what Postfix passed on, and the expected bytes
below are what Postfix 3.7 (Debian 12) really does to them, found by sending
them. After every case the filter holds exactly its idle descriptors and
temporary files (`tests.support.leaks`) and the path still delivers.
"""

import hashlib

import pytest

from tests.support.filterproc import FULL_REPLY, FilterProcess
from tests.support.leaks import ResourceProbe
from tests.support.postfix import postfix_instance
from tests.support.rawsmtp import RawSmtp, dot_stuff
from tests.test_bad_input import envelope_of, object_counts, stored_objects, transaction
from tests.test_postfix import split_received
from tests.test_role_postfix import role_main_cf

# Runs a private Postfix: left out of the quick loop.
pytestmark = pytest.mark.slow

RELAY_DOMAINS = ["example.com", "example.net"]
RECIPIENTS = ["prod@example.com", "ops@example.com", "billing@example.com", "@example.net"]
SMTPD_TIMEOUT = 3


@pytest.fixture(scope="module")
def path(swift, swift_ini, tmp_path_factory):
    """Postfix -> filter (own TMPDIR) -> Swift; Postfix's smtpd_timeout shortened, its
    bare-newline settings the role's."""
    bare_newline = role_main_cf(tmp_path_factory.mktemp("role"), "smtpd_forbid_bare_newline",
                                "smtpd_forbid_bare_newline_exclusions")
    workdir = tmp_path_factory.mktemp("bad-input-postfix")
    tmpdir = workdir / "tmp"
    tmpdir.mkdir()
    with FilterProcess(swift_ini, workdir, "--hostname", "mx.swiftdrop.test",
                       "--log-target", "stderr", *FULL_REPLY,
                       env={"TMPDIR": str(tmpdir)}) as proxy, \
            postfix_instance(proxy_filter=f"inet:127.0.0.1:{proxy.port}",
                             relay_domains=RELAY_DOMAINS, recipients=RECIPIENTS,
                             extra_main={"smtpd_timeout": f"{SMTPD_TIMEOUT}s",
                                         **bare_newline}) as postfix:
        probe = ResourceProbe(proxy.process.pid, tmpdir, swift.port, proxy.port)
        address = ("127.0.0.1", postfix.smtp_port)
        code, _ = send_one(address, b"Subject: warm-up\r\n\r\n",
                           recipients=("a@example.net", "prod@example.com"))
        assert code == 250
        yield address, proxy, probe, probe.idle()


@pytest.fixture
def mx(path):
    """Postfix's address; afterwards: the filter leaked nothing and a message still gets in."""
    address, proxy, probe, idle = path
    probe.wait_until_back_to(idle)
    yield address
    probe.wait_until_back_to(idle)
    assert proxy.process.poll() is None, proxy.log()
    assert send_one(address, b"Subject: still there\r\n\r\n")[0] == 250
    probe.wait_until_back_to(idle)
    assert "Traceback" not in proxy.log(), proxy.log()


def send_one(address, body, sender="<s@origin.test>", recipients=("r@example.net",),
             mail_parameters=""):
    with RawSmtp(address) as client:
        assert client.command("EHLO client.origin.test")[0] == 250
        reply = transaction(client, body, sender, recipients, mail_parameters)
        assert client.command("QUIT")[0] == 221
    return reply


def stored_after_received(swift, reply_text):
    """The one copy's bytes after the Received: header Postfix prepends."""
    [(headers, stored)] = stored_objects(swift, reply_text)
    assert headers["etag"] == hashlib.md5(stored).hexdigest()
    return split_received(stored)[1]


# --- content: (what the client sends, what Postfix passes on) -------------------------------

CONTENT = {
    # Postfix reads lines in pieces of line_length_limit (2048) but passes a long
    # line on whole: no folding, no splitting, in the proxy stream.
    "line of 1,500 octets": (b"Subject: long\r\n\r\n" + b"a" * 1500 + b"\r\n",) * 2,
    "line over 64 KB": (b"Subject: longer\r\n\r\n" + b"b" * 100_000 + b"\r\n",) * 2,
    # smtpd takes a bare LF as the end of a line but not of the data (the role's
    # smtpd_forbid_bare_newline = normalize): every line goes to the filter with CRLF
    # except a "." line after or ending in a bare LF, which is dropped (the smuggling
    # sequences: tests/test_smuggling.py); a bare CR is data.
    "bare CR and bare LF": (b"Subject: bare\r\n\r\na\rb\nc\n.\nd\r\n",
                            b"Subject: bare\r\n\r\na\rb\r\nc\r\nd\r\n"),
    "NUL bytes": (b"Subject: nul\r\n\r\n\0\0x\0\r\n",) * 2,
    "8-bit without BODY=8BITMIME": (b"Subject: caf\xc3\xa9\r\n\r\n\xe9\xff\x80\r\n",) * 2,
    "header only": (b"Subject: only a header\r\n",) * 2,
    "empty message": (b"", b""),
}


@pytest.mark.parametrize(("sent", "passed_on"), CONTENT.values(), ids=CONTENT.keys())
def test_content_reaches_swift_as_postfix_passed_it_on(swift, mx, sent, passed_on):
    code, text = send_one(mx, sent)
    assert code == 250, text
    assert stored_after_received(swift, text) == passed_on


def test_smtputf8_addresses_through_postfix(swift, mx):
    """With smtputf8_enable = yes Postfix accepts UTF-8 addresses with MAIL ... SMTPUTF8
    (RFC 6531) and passes them on; the filter stores them as metadata."""
    code, text = send_one(mx, "Subject: ü\r\n\r\nü\r\n".encode(), sender="<józef@przykład.test>",
                          mail_parameters=" SMTPUTF8", recipients=("ünï@example.net",))
    assert code == 250, text
    [(headers, _)] = stored_objects(swift, text)
    assert headers["x-object-meta-mail-from"] == "józef@przykład.test"
    assert headers["x-object-meta-rcpt-to"] == "ünï@example.net"


def test_utf8_addresses_without_smtputf8_are_passed_on_too(swift, mx):
    """Postfix 3.7 does not insist on the SMTPUTF8 parameter for a UTF-8 address (only
    on valid UTF-8); the filter takes what Postfix takes."""
    code, text = send_one(mx, b"Subject: x\r\n\r\nx\r\n", sender="<\u00fc@origin.test>",
                          recipients=("\u00fc@example.net",))
    assert code == 250, text
    [(headers, _)] = stored_objects(swift, text)
    assert headers["x-object-meta-rcpt-to"] == "\u00fc@example.net"


def test_a_thousand_recipients_then_postfix_says_452(swift, mx):
    """smtpd_recipient_limit (1,000): the 1,001st RCPT gets 452 4.5.3 (RFC 5321 4.5.3.1.10:
    a server must take 100; the client sends the rest later). The message is stored once
    per destination."""
    recipients = [f"user{index}@example.net" for index in range(997)]
    recipients += ["prod@example.com", "ops@example.com", "billing@example.com"]
    with RawSmtp(mx) as client:
        assert client.command("EHLO client.origin.test")[0] == 250
        assert client.command("MAIL FROM:<s@origin.test>")[0] == 250
        client.send(b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in recipients))
        assert [client.reply()[0] for _ in recipients] == [250] * 1000
        code, text = client.command("RCPT TO:<one-too-many@example.net>")
        assert (code, text[:5]) == (452, "4.5.3")
        assert client.command("DATA")[0] == 354
        client.send(dot_stuff(b"Subject: many\r\n\r\nx\r\n"))
        code, text = client.reply()
    assert code == 250, text
    copies = stored_objects(swift, text)
    assert [c[0]["x-object-meta-rcpt-count"] for c in copies] == ["997", "2", "1"]
    assert all(split_received(stored)[1] == b"Subject: many\r\n\r\nx\r\n"
               for _, stored in copies)
    assert [envelope_of(swift, text, index) for index in range(3)] == [
        recipients[:997], ["prod@example.com", "ops@example.com"], ["billing@example.com"]]


def test_200_long_recipients_through_postfix_all_reach_the_envelope(swift, mx):
    """200 recipients of 60 bytes, 12 KB of addresses, through the real Postfix: one
    transaction, one 250, every recipient in the stored copy's envelope."""
    recipients = [f"{index:03d}-{'r' * 44}@example.net" for index in range(200)]
    with RawSmtp(mx) as client:
        assert client.command("EHLO client.origin.test")[0] == 250
        assert client.command("MAIL FROM:<s@origin.test>")[0] == 250
        client.send(b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in recipients))
        assert [client.reply()[0] for _ in recipients] == [250] * 200
        assert client.command("DATA")[0] == 354
        client.send(dot_stuff(b"Subject: long\r\n\r\nx\r\n"))
        code, text = client.reply()
    assert code == 250, text
    assert envelope_of(swift, text, 0) == recipients


def test_out_of_order_commands_are_answered_by_postfix(swift, mx):
    """Postfix refuses these itself (RFC 5321 4.1.4: 503 bad sequence; 554 for DATA
    with no valid recipient); with speed_adjust it never opens the filter connection.
    MAIL before EHLO is allowed: smtpd_helo_required = no, Postfix's default."""
    before = object_counts(swift)
    with RawSmtp(mx) as client:
        assert client.command("RCPT TO:<r@example.net>") == (503, "5.5.1 Error: need MAIL command")
        assert client.command("DATA") == (503, "5.5.1 Error: need RCPT command")
        assert client.command("MAIL FROM:<a@origin.test>")[0] == 250
        assert client.command("DATA") == (554, "5.5.1 Error: no valid recipients")
        assert client.command("QUIT")[0] == 221
    assert object_counts(swift) == before


def test_garbage_and_binary_commands_then_postfix_hangs_up(swift, mx):
    """Postfix answers each itself (bad syntax, bad UTF-8 with smtputf8_enable, a line over
    line_length_limit, unknown commands); the 21st error (smtpd_hard_error_limit = 20)
    gets 421 4.7.0 and the connection is closed."""
    garbage = [(b"\0\1\2\3", 500), (b"\xff\xfe\xfd", 500), (b"X" * 70_000, 500),
               (b"MAIL\0FROM:<a@b>", 501), (b"\r\r\r", 500), (b"DATA\0", 503),
               (b"HELO", 501), (b"FROBNICATE", 500), (b"MAIL FROM:<\xff@x>", 500),
               (b"", 500)]
    with RawSmtp(mx) as client:
        assert client.command("EHLO client.origin.test")[0] == 250
        replies = [client.command(line) for line, _ in garbage * 2]
        assert [code for code, _ in replies] == [code for _, code in garbage * 2], replies
        code, text = client.command(b"\x80")
        assert (code, text[:5]) == (421, "4.7.0")
        assert client.at_eof()


@pytest.mark.parametrize("line", [b"GET / HTTP/1.1", b"\x1b[2J", "ÄÖÜ".encode()])
def test_non_smtp_commands_make_postfix_hang_up_at_once(mx, line):
    """smtpd_forbidden_commands (CONNECT, GET, POST, anything not starting with A-Z):
    a web client or a binary stream gets 221 2.7.0 and the connection ends."""
    with RawSmtp(mx) as client:
        assert client.command("EHLO client.origin.test")[0] == 250
        assert client.command(line) == (221, "2.7.0 Error: I can break rules, too. Goodbye.")
        assert client.at_eof()


def test_client_stalling_in_data_gets_421_from_postfix_and_nothing_is_stored(swift, mx):
    """Postfix's smtpd_timeout covers the DATA phase (RFC 5321 4.5.3.2.7): 421 4.4.2, and
    with speed_adjust the half message never reached the filter."""
    before = object_counts(swift)
    with RawSmtp(mx) as client:
        assert client.command("EHLO client.origin.test")[0] == 250
        assert client.command("MAIL FROM:<a@origin.test>")[0] == 250
        assert client.command("RCPT TO:<r@example.net>")[0] == 250
        assert client.command("DATA")[0] == 354
        client.send(b"Subject: stalled\r\n\r\n" + (b"z" * 1022 + b"\r\n") * 2048)
        code, text = client.reply()
        assert (code, text[:5]) == (421, "4.4.2")
        assert client.at_eof()
    assert object_counts(swift) == before


def test_pipelined_transactions_through_postfix(swift, mx):
    """RFC 2920 with PIPELINING: two whole transactions in one write; Postfix answers in
    order and each message reaches Swift as sent."""
    first, second = b"Subject: one\r\n\r\n1\r\n", b"Subject: two\r\n\r\n.2\r\n"
    with RawSmtp(mx) as client:
        client.send(b"EHLO client.origin.test\r\nMAIL FROM:<a@origin.test>\r\n"
                    b"RCPT TO:<r@example.net>\r\nDATA\r\n" + dot_stuff(first)
                    + b"MAIL FROM:<a@origin.test>\r\nRCPT TO:<billing@example.com>\r\n"
                    b"DATA\r\n" + dot_stuff(second) + b"QUIT\r\n")
        replies = [client.reply() for _ in range(10)]
        assert client.at_eof()
    assert [code for code, _ in replies] == [250, 250, 250, 354, 250, 250, 250, 354, 250, 221]
    assert stored_after_received(swift, replies[4][1]) == first
    assert stored_after_received(swift, replies[8][1]) == second
