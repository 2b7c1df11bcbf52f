"""SMTP smuggling (CVE-2023-51764): a fake end of data never splits one message into two.

A sender puts a sloppy end-of-data sequence in its message, then a whole
second transaction (MAIL, RCPT, DATA, a spoofed message), then the real
CRLF . CRLF. A server that takes the fake sequence for the end receives two
messages where the sender's own server, which stops only at CRLF . CRLF,
sent one: the second with a sender that passed no check. The sequences are
those SEC Consult and Postfix published, as Hanno Böck's smtpsmug tests
them. Each is sent in one DATA with QUIT right behind the real end, so every
reply the sender gets is counted: a split shows as replies to the smuggled
commands, and as a second object in the real Swift.

Through the real Postfix with the role's smtpd_forbid_bare_newline
settings, and straight to the filter, whose own reader ends lines at CRLF
only (RFC 5321 2.3.8).
"""

import pytest

from tests.support.filterproc import FULL_REPLY, FilterProcess
from tests.support.postfix import postfix_instance
from tests.support.rawsmtp import ConnectionClosed, RawSmtp
from tests.test_bad_input import object_counts, stored_objects
from tests.test_postfix import split_received
from tests.test_role_postfix import role_main_cf

# Runs a private Postfix and renders the role with Ansible: left out of the quick loop.
pytestmark = pytest.mark.slow

SENDER, RECIPIENT = "s@origin.test", "r@example.net"
HEADER = b"From: <s@origin.test>\r\nSubject: the one message\r\n\r\nbefore"
# A second transaction to another destination (BILLING) from a spoofed sender.
SMUGGLED = (b"MAIL FROM:<ceo@smuggled.test>\r\nRCPT TO:<billing@example.com>\r\nDATA\r\n"
            b"From: <ceo@smuggled.test>\r\nSubject: smuggled\r\n\r\npay now")

# (fake end of data, what Swift holds in its place when it went straight to the filter,
# and when it went through Postfix). The filter drops only a stuffing dot, one after
# CRLF. Postfix 3.7 with smtpd_forbid_bare_newline = normalize (3.10, Debian 13, does
# the same) ends a line at a bare LF as at CRLF, but only CRLF . CRLF ends the data: a
# "." line that follows or ends in a bare LF is dropped, and every other line reaches
# the filter with CRLF, dot and all.
SEQUENCES = {
    "LF . CRLF": (b"\n.\r\n", b"\n.\r\n", b"\r\n"),
    "LF . LF": (b"\n.\n", b"\n.\n", b"\r\n"),
    "CRLF . LF": (b"\r\n.\n", b"\r\n\n", b"\r\n"),
    "CR . CRLF": (b"\r.\r\n", b"\r.\r\n", b"\r.\r\n"),
    "CRLF . CR": (b"\r\n.\r", b"\r\n\r", b"\r\n\r"),
    "CR . CR": (b"\r.\r", b"\r.\r", b"\r.\r"),
    "CR . LF": (b"\r.\n", b"\r.\n", b"\r.\r\n"),
    "LF . CR": (b"\n.\r", b"\n.\r", b"\r\n\r"),
    "CRLF NUL . CRLF": (b"\r\n\0.\r\n", b"\r\n\0.\r\n", b"\r\n\0.\r\n"),
    "CRLF . NUL CRLF": (b"\r\n.\0\r\n", b"\r\n\0\r\n", b"\r\n\0\r\n"),
}


def smuggle(address, fake_end):
    """One transaction whose message hides another after `fake_end`; every reply code
    after DATA's 354, and the text of the first."""
    with RawSmtp(address, timeout=20) as client:
        assert client.command("EHLO client.origin.test")[0] == 250
        assert client.command(f"MAIL FROM:<{SENDER}>")[0] == 250
        assert client.command(f"RCPT TO:<{RECIPIENT}>")[0] == 250
        assert client.command("DATA")[0] == 354
        client.send(HEADER + fake_end + SMUGGLED + b"\r\n.\r\nQUIT\r\n")
        replies = []
        while True:
            try:
                replies.append(client.reply())
            except ConnectionClosed:
                break
    return [code for code, _ in replies], replies[0][1]


def the_one_object(swift, counts_before, reply_text):
    """The message's only copy, from the sender to the recipient; nothing else was stored."""
    after = object_counts(swift)
    assert after == {**counts_before, "fallback": counts_before["fallback"] + 1}, after
    [(headers, stored)] = stored_objects(swift, reply_text)
    assert headers["x-object-meta-mail-from"] == SENDER
    assert headers["x-object-meta-rcpt-to"] == RECIPIENT
    return stored


@pytest.fixture(scope="module")
def postfix_mx(swift, swift_ini, tmp_path_factory):
    """Postfix, with the bare-newline settings of the role's main.cf, -> filter -> Swift."""
    bare_newline = role_main_cf(tmp_path_factory.mktemp("role"), "smtpd_forbid_bare_newline",
                                "smtpd_forbid_bare_newline_exclusions")
    workdir = tmp_path_factory.mktemp("smuggling-postfix")
    with FilterProcess(swift_ini, workdir, "--log-target", "stderr", *FULL_REPLY) as proxy, \
            postfix_instance(proxy_filter=f"inet:127.0.0.1:{proxy.port}",
                             relay_domains=["example.com", "example.net"],
                             recipients=[RECIPIENT, "billing@example.com"],
                             extra_main=bare_newline) as postfix:
        yield "127.0.0.1", postfix.smtp_port


@pytest.fixture(scope="module")
def filter_address(swift, swift_ini, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("smuggling-filter")
    with FilterProcess(swift_ini, workdir, "--log-target", "stderr", *FULL_REPLY) as process:
        yield process.address


@pytest.mark.parametrize(("fake_end", "passed_on"),
                         [(fake_end, passed_on) for fake_end, _, passed_on in SEQUENCES.values()],
                         ids=SEQUENCES.keys())
def test_postfix_takes_one_message_with_the_smuggled_commands_as_its_content(
        swift, postfix_mx, fake_end, passed_on):
    counts = object_counts(swift)
    codes, text = smuggle(postfix_mx, fake_end)
    assert codes == [250, 221], text
    _, stored = split_received(the_one_object(swift, counts, text))
    assert stored == HEADER + passed_on + SMUGGLED + b"\r\n"


@pytest.mark.parametrize(("fake_end", "kept"),
                         [(fake_end, kept) for fake_end, kept, _ in SEQUENCES.values()],
                         ids=SEQUENCES.keys())
def test_the_filter_takes_one_message_with_the_sequence_as_data(
        swift, filter_address, fake_end, kept):
    counts = object_counts(swift)
    codes, text = smuggle(filter_address, fake_end)
    assert codes == [250, 221], text
    assert the_one_object(swift, counts, text) == HEADER + kept + SMUGGLED + b"\r\n"
