"""Bad input sent straight at a running filter process that stores in the real Swift.

Postfix stands in front of the filter in production and filters much of
this out; these cases make sure the filter does not depend on that. Each
case asserts the reply codes, what was stored (byte for byte, or nothing),
and afterwards that the process still serves and holds no more descriptors
or temporary files than before (`tests.support.leaks`).

The SMTP dialogue's pure logic is tested in test_smtp.py and test_reception.py;
here the same kind of input goes through the real process and the real
Swift, with a spool that reaches its disk, and the leak check.
"""

import hashlib
import re
import time

import pytest

from swiftdrop import envelope
from tests.support.filterproc import FULL_REPLY, FilterProcess
from tests.support.leaks import ResourceProbe
from tests.support.rawsmtp import RawSmtp, dot_stuff

STORED = re.compile(r"^2\.0\.0 Ok: stored as (.+)$")
ACCOUNT_OF = {"fallback": "test", "billing": "test", "production": "test2"}
IDLE_TIMEOUT = 2


@pytest.fixture(scope="module")
def filter_under_test(swift, swift_ini, tmp_path_factory):
    """One filter for the module, with its own TMPDIR and a short --idle-timeout.

    Its keep-alive connections to both Swift accounts are opened first, so
    the idle snapshot is the steady state.
    """
    workdir = tmp_path_factory.mktemp("bad-input")
    tmpdir = workdir / "tmp"
    tmpdir.mkdir()
    with FilterProcess(swift_ini, workdir, "--hostname", "mx.bad-input.test",
                       "--idle-timeout", str(IDLE_TIMEOUT), "--log-target", "stderr",
                       *FULL_REPLY,
                       env={"TMPDIR": str(tmpdir)}) as process:
        probe = ResourceProbe(process.process.pid, tmpdir, swift.port, process.port)
        with RawSmtp(process.address) as client:
            client.command("EHLO warm.up")
            code, _ = transaction(client, b"Subject: warm-up\r\n\r\n",
                                  recipients=("a@example.org", "prod@example.com"))
            assert code == 250
        yield process, probe, probe.idle()


@pytest.fixture
def filt(filter_under_test):
    """The filter's address; after the test: nothing leaked, and it still serves."""
    process, probe, idle = filter_under_test
    probe.wait_until_back_to(idle)
    yield process
    assert process.process.poll() is None, process.log()
    probe.wait_until_back_to(idle)
    with RawSmtp(process.address) as client:
        assert client.command("EHLO still.there")[0] == 250
        assert client.command("QUIT")[0] == 221
    assert "Traceback" not in process.log(), process.log()


def transaction(client, body, sender="<s@origin.test>", recipients=("r@example.org",),
                mail_parameters=""):
    """MAIL, RCPT..., DATA and the dot-stuffed body; returns the final reply."""
    assert client.command(f"MAIL FROM:{sender}{mail_parameters}")[0] == 250
    for recipient in recipients:
        assert client.command(f"RCPT TO:<{recipient}>")[0] == 250
    assert client.command("DATA")[0] == 354
    client.send(dot_stuff(body))
    return client.reply()


def stored_objects(swift, reply_text):
    """The (headers, bytes) of every copy a 250 reply names."""
    match = STORED.match(reply_text)
    assert match, reply_text
    copies = []
    for location in match.group(1).split(", "):
        container, name = location.split("/", 1)
        copies.append(swift.connection(ACCOUNT_OF[container]).get_object(container, name))
    return copies


def object_counts(swift):
    return {container: int(swift.connection(account).head_container(container)
                           ["x-container-object-count"])
            for container, account in ACCOUNT_OF.items()}


def send_one(filt, body, **options):
    with RawSmtp(filt.address) as client:
        assert client.command("EHLO client.test")[0] == 250
        reply = transaction(client, body, **options)
        assert client.command("QUIT")[0] == 221
    return reply


# --- message content: whatever the bytes, 250 and exactly those bytes stored -------------
#
# RFC 5321 4.5.3.1.6 limits a line to 1,000 octets and RFC 5322 forbids bare
# CR, bare LF and NUL, but a server "SHOULD" be liberal (RFC 5321 4.5.3.1)
# and Postfix, in front of the filter, accepts all of these. The filter's
# promise is the message byte for byte: it neither rejects nor repairs.

CONTENT = {
    "line of 1,500 octets": b"Subject: long\r\n\r\n" + b"a" * 1500 + b"\r\n",
    "line over 64 KB, across the 64 KB read blocks": (
        b"Subject: longer\r\n\r\n" + b"b" * 100_000 + b"\r\n" + b"." * 70_000 + b"\r\n"),
    "bare CR, bare LF and dots after them": (
        b"Subject: bare\r\n\r\na\rb\nc\n.\nd\r.\r\n..e\r\n"),
    "NUL bytes": b"Subject: nul\r\n\r\n\0\0x\0\r\n",
    "8-bit without BODY=8BITMIME": b"Subject: caf\xc3\xa9\r\n\r\n\xe9\xff\x80\r\n",
    "header only, no body, no empty line": b"Subject: only a header\r\n",
    "a spooled (over 256 KiB) message of binary lines": bytes(range(256)) * 5000 + b"\r\n",
}


@pytest.mark.parametrize("body", CONTENT.values(), ids=CONTENT.keys())
def test_content_is_stored_byte_for_byte(swift, filt, body):
    code, text = send_one(filt, body)
    assert code == 250, text
    [(headers, stored)] = stored_objects(swift, text)
    assert stored == body
    assert headers["etag"] == hashlib.md5(body).hexdigest()
    assert text.endswith(f",S={len(body)}")


def test_empty_message_is_stored_as_an_empty_object(swift, filt):
    """DATA followed at once by the terminator: SMTP allows it, so it is stored (0 bytes)."""
    code, text = send_one(filt, b"")
    assert code == 250, text
    [(headers, stored)] = stored_objects(swift, text)
    assert stored == b"" and headers["etag"] == hashlib.md5(b"").hexdigest()


def test_smtputf8_addresses_are_accepted_and_kept_in_the_metadata(swift, filt):
    """RFC 6531: with SMTPUTF8 the addresses are UTF-8; routing compares them casefolded."""
    code, text = send_one(filt, "Subject: =?utf-8?q?=C3=BC?=\r\n\r\nü\r\n".encode(),
                          sender="<józef@przykład.test>", mail_parameters=" SMTPUTF8",
                          recipients=("ünï@example.org", "PROD@example.com"))
    assert code == 250, text
    [(fallback, _), (production, _)] = stored_objects(swift, text)
    assert fallback["x-object-meta-mail-from"] == "józef@przykład.test"
    assert fallback["x-object-meta-rcpt-to"] == "ünï@example.org"
    assert production["x-object-meta-rcpt-to"] == "PROD@example.com"


def test_a_thousand_recipients_across_three_destinations_one_copy_each(swift, filt):
    """Postfix's smtpd_recipient_limit is 1,000: the most one message can bring."""
    catch_all = [f"user{index}@example.org" for index in range(997)]
    recipients = [*catch_all, "prod@example.com", "ops@example.com", "billing@example.com"]
    code, text = send_one(filt, b"Subject: many\r\n\r\nx\r\n", recipients=recipients)
    assert code == 250, text
    copies = stored_objects(swift, text)
    assert [c[0]["x-object-meta-rcpt-count"] for c in copies] == ["997", "2", "1"]
    rcpt_to = copies[0][0]["x-object-meta-rcpt-to"]
    assert rcpt_to.startswith("user0@example.org, user1@example.org")
    assert len(rcpt_to.encode()) <= 256  # whole addresses within Swift's value limit
    assert all(stored == b"Subject: many\r\n\r\nx\r\n" for _, stored in copies)
    # each copy's envelope lists exactly its destination's recipients, none cut
    assert [envelope_of(swift, text, index) for index in range(3)] == [
        catch_all, ["prod@example.com", "ops@example.com"], ["billing@example.com"]]


def envelope_of(swift, reply_text, index):
    """All recipients of the index'th copy a 250 reply names, as a consumer reads them."""
    location = STORED.match(reply_text).group(1).split(", ")[index]
    container, name = location.split("/", 1)
    connection = swift.connection(ACCOUNT_OF[container])
    headers = connection.head_object(container, name)
    metadata = {key[len("x-object-meta-"):]: value for key, value in headers.items()
                if key.startswith("x-object-meta-")}
    return envelope.recipients(metadata, lambda path: connection.get_object(container, path)[1])


def test_long_recipients_all_reach_the_envelope_none_cut(swift, filt):
    """200 recipients of 60 bytes: 12 KB, three times what all of an object's metadata
    may hold. The first ones are in numbered keys, the whole list beside the message."""
    recipients = [f"{index:03d}-{'r' * 44}@example.org" for index in range(200)]
    assert {len(address) for address in recipients} == {60}
    code, text = send_one(filt, b"Subject: long\r\n\r\nx\r\n", recipients=recipients)
    assert code == 250, text
    [(headers, _)] = stored_objects(swift, text)
    assert headers["x-object-meta-rcpt-count"] == "200"
    assert headers["x-object-meta-rcpt-to-2"].startswith("004-")  # 4 a key, in order
    assert headers["x-object-meta-rcpt-list"].startswith("envelopes/")
    assert envelope_of(swift, text, 0) == recipients


# --- commands out of order or not commands at all -----------------------------------------

def test_out_of_order_commands_get_503_and_store_nothing(swift, filt):
    """RFC 5321 4.1.4 and 3.3: MAIL before RCPT before DATA; otherwise 503 (bad sequence)."""
    before = object_counts(swift)
    with RawSmtp(filt.address) as client:
        assert client.command("MAIL FROM:<a@origin.test>")[0] == 503  # before EHLO
        assert client.command("EHLO client.test")[0] == 250
        assert client.command("DATA")[0] == 503  # before MAIL
        assert client.command("RCPT TO:<r@example.org>")[0] == 503  # before MAIL
        assert client.command("MAIL FROM:<a@origin.test>")[0] == 250
        code, text = client.command("DATA")  # MAIL without RCPT
        assert (code, text[:5]) == (503, "5.5.1")
        # The body a broken client sends anyway is read as commands, each refused.
        assert client.command("Subject: not a command")[0] == 500
        assert client.command(".")[0] == 500
        assert client.command("QUIT")[0] == 221
        assert client.at_eof()
    assert object_counts(swift) == before


def test_garbage_and_binary_commands_get_500_then_421_after_twenty_errors(swift, filt):
    """RFC 5321 4.2.4: 500 for an unrecognised command; like Postfix's smtpd_hard_error_limit
    (20), the 21st error closes the session with 421 (4.3.2: the server closes)."""
    garbage = [b"\0\1\2\3", b"\xff\xfe\xfd", b"GET / HTTP/1.1", b"", b"   ", b"\x1b[2J",
               b"MAIL\0FROM:<a@b>", b"X" * 70_000, "ÄÖÜ".encode(), b"\r\r\r"]
    with RawSmtp(filt.address) as client:
        assert client.command("EHLO client.test")[0] == 250
        for line in garbage * 2:
            assert client.command(line)[0] == 500, line
        code, text = client.command(b"\x80\x81")
        assert (code, text[:5]) == (421, "4.7.0")
        assert client.at_eof()


def test_undecodable_bytes_in_arguments_are_refused_not_echoed_raw(swift, filt):
    """A reply must be printable ASCII text (RFC 5321 4.2); a parameter name made of
    8-bit bytes still gets its 555 (RFC 1869 6: unknown parameter) and the session goes on."""
    with RawSmtp(filt.address) as client:
        assert client.command("EHLO client.test")[0] == 250
        code, text = client.command(b"MAIL FROM:<a@origin.test> \xff\xfe=1")
        assert code == 555 and text.isascii() and text.isprintable(), text
        code, text = client.command(b"XFORWARD \xc3\xa9\x01=1")
        assert code == 501 and text.isascii() and text.isprintable(), text
        assert client.command("NOOP")[0] == 250


def test_addresses_that_are_not_utf8_are_refused_at_mail_and_rcpt(swift, filt):
    """RFC 6531 3.3: addresses are ASCII or, with SMTPUTF8, UTF-8; other bytes are a
    permanent syntax error (501 5.1.7 / 5.1.3), not a 451 that the sender retries forever."""
    before = object_counts(swift)
    with RawSmtp(filt.address) as client:
        assert client.command("EHLO client.test")[0] == 250
        code, text = client.command(b"MAIL FROM:<\xff\xfe@origin.test>")
        assert (code, text[:5]) == (501, "5.1.7")
        assert client.command("MAIL FROM:<a@origin.test>")[0] == 250
        code, text = client.command(b"RCPT TO:<\xe9t\xe9@example.org>")
        assert (code, text[:5]) == (501, "5.1.3")
        assert client.command("RCPT TO:<r@example.org>")[0] == 250
        assert client.command("QUIT")[0] == 221
    assert object_counts(swift) == before


# --- timing and framing ---------------------------------------------------------------------

def test_client_stalling_in_data_times_out_and_nothing_is_stored_or_left(swift, filt):
    """After --idle-timeout without a byte the filter says 421 4.4.2 (RFC 5321 4.5.3.2.7:
    the server's data-block timeout; Postfix's smtpd_timeout does the same) and closes.
    2 MiB are sent first, so the message had reached a spool file on disk."""
    before = object_counts(swift)
    with RawSmtp(filt.address) as client:
        assert client.command("EHLO client.test")[0] == 250
        assert client.command("MAIL FROM:<a@origin.test>")[0] == 250
        assert client.command("RCPT TO:<r@example.org>")[0] == 250
        assert client.command("DATA")[0] == 354
        client.send(b"Subject: stalled\r\n\r\n" + (b"z" * 1022 + b"\r\n") * 2048)
        code, text = client.reply()  # waits the idle timeout out
        assert (code, text[:5]) == (421, "4.4.2")
        assert client.at_eof()
    assert object_counts(swift) == before


def test_client_vanishing_mid_data_after_a_spooled_megabyte_leaves_nothing(swift, filt):
    """No reply is possible; what matters is that the half message and its spool file are
    dropped (the fixture checks the spool and descriptors, and that the filter serves on)."""
    before = object_counts(swift)
    client = RawSmtp(filt.address)
    client.command("EHLO client.test")
    client.command("MAIL FROM:<a@origin.test>")
    client.command("RCPT TO:<r@example.org>")
    assert client.command("DATA")[0] == 354
    client.send(b"Subject: gone\r\n\r\n" + b"y" * 3_000_000)
    client.close()
    assert object_counts(swift) == before


def test_pipelined_transactions_in_one_write_are_answered_in_order(swift, filt):
    """RFC 2920: the client may send every command without waiting; replies come in order.
    Two whole transactions, the second with a dot line the first's terminator must not eat."""
    first, second = b"Subject: one\r\n\r\n1\r\n", b"Subject: two\r\n\r\n.2\r\n"
    with RawSmtp(filt.address) as client:
        client.send(b"EHLO client.test\r\nMAIL FROM:<a@origin.test>\r\n"
                    b"RCPT TO:<r@example.org>\r\nDATA\r\n" + dot_stuff(first)
                    + b"MAIL FROM:<a@origin.test>\r\nRCPT TO:<billing@example.com>\r\n"
                    b"RCPT TO:<nobody>\r\nDATA\r\n" + dot_stuff(second) + b"QUIT\r\n")
        replies = [client.reply() for _ in range(11)]
        assert client.at_eof()
    assert [code for code, _ in replies] == [250, 250, 250, 354, 250, 250, 250, 250, 354, 250, 221]
    [(_, stored_first)] = stored_objects(swift, replies[4][1])
    [(_, stored_second), (_, copy)] = stored_objects(swift, replies[9][1])
    assert (stored_first, stored_second, copy) == (first, second, second)


def test_the_leak_probe_sees_an_open_connection_and_an_open_spool_file(filter_under_test):
    """Guard for the check every case above relies on: it must be able to fail."""
    process, probe, idle = filter_under_test
    with RawSmtp(process.address) as client:
        assert client.command("EHLO client.test")[0] == 250
        with pytest.raises(AssertionError, match="did not return to its idle resources"):
            probe.wait_until_back_to(idle, timeout=0.3)
        client.command("MAIL FROM:<a@origin.test>")
        client.command("RCPT TO:<r@example.org>")
        assert client.command("DATA")[0] == 354
        client.send(b"Subject: spooled\r\n\r\n" + b"s" * 2_000_000)
        deadline = time.monotonic() + IDLE_TIMEOUT
        while probe.snapshot().tmp_descriptors == 0:  # an O_TMPFILE spool file
            assert time.monotonic() < deadline, "the spool file never showed"
            time.sleep(0.02)
    probe.wait_until_back_to(idle)
