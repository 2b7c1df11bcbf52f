"""Receiving DATA: dot-unstuffing byte for byte however the network splits it, digests."""

import io

from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from swiftdrop.queue.dedup import content_digest
from swiftdrop.reception import Inbound, message_id, unstuff
from tests.support.rawsmtp import dot_stuff


class TrickleRaw(io.RawIOBase):
    """A raw stream handing out `stream` in pieces of the given sizes, like a socket."""

    def __init__(self, stream, sizes):
        self.stream, self.sizes, self.reads, self.offset = stream, list(sizes), 0, 0

    def readable(self):
        return True

    def readinto(self, buffer):
        size = min(len(buffer), self.sizes[self.reads % len(self.sizes)])
        self.reads += 1
        piece = self.stream[self.offset:self.offset + size]
        buffer[:len(piece)] = piece
        self.offset += len(piece)
        return len(piece)


def unstuff_all(stream, sizes=(65536,), after=b""):
    """Unstuff `stream` + `after`; check that `after` (pipelined input) is left unread."""
    inbound = Inbound(TrickleRaw(stream + after, sizes).read)
    body = b"".join(unstuff(inbound))
    assert inbound.readline(1 << 20) == after
    return body


@given(st.binary(max_size=4096).map(lambda body: body + b"\r\n"))
@settings(max_examples=500)
def test_stuff_then_unstuff_is_the_identity(body):
    assert unstuff_all(dot_stuff(body)) == body


@given(st.lists(st.sampled_from([b".", b"..", b"\r\n", b"\n", b"\r", b"x", b"\0", b"\xff"]),
                max_size=200).map(b"".join).map(lambda body: body + b"\r\n"),
       st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=20))
@settings(max_examples=500)
def test_identity_whatever_the_network_splits(body, sizes):
    assert unstuff_all(dot_stuff(body), sizes, after=b"QUIT\r\n") == body


def test_long_lines_keep_every_byte_and_dots_only_unstuffed_at_line_start():
    body = b"." + b"a" * 200_000 + b".\r\n..x\r\n.\n.y\r\n"
    assert unstuff_all(dot_stuff(body)) == body
    assert unstuff_all(dot_stuff(body), sizes=(1, 2, 3, 65536)) == body


# What an SMTP smuggling sender puts where a lax reader sees the end of data
# (CVE-2023-51764 and its kin): a dot between line ends that are not both CRLF.
FAKE_ENDS = {"LF.CRLF": b"\n.\r\n", "LF.LF": b"\n.\n", "CR.CRLF": b"\r.\r\n",
             "CRLF.LF": b"\r\n.\n", "CR.CR": b"\r.\r"}
SMUGGLED = b"MAIL FROM:<forged@example.org>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"


@pytest.mark.parametrize("fake_end", FAKE_ENDS.values(), ids=FAKE_ENDS.keys())
@pytest.mark.parametrize("sizes", [(65536,), (1, 2, 3)], ids=["whole", "trickled"])
def test_a_dot_after_a_bare_line_end_is_data_so_nothing_is_smuggled(fake_end, sizes):
    sent = b"Subject: one\r\n\r\nfirst" + fake_end + SMUGGLED + b"Subject: two\r\n\r\n.\r\n"
    body = unstuff_all(sent, sizes, after=b"QUIT\r\n")
    # One message, the would-be second transaction inside it; only a dot that
    # starts a CRLF line is a stuffing dot (CRLF.LF loses it, as RFC 5321 says).
    assert body == sent[:-3].replace(b"\r\n.\n", b"\r\n\n")
    assert SMUGGLED in body


def test_eof_before_the_final_dot_is_an_error():
    with pytest.raises(EOFError):
        unstuff_all(b"Subject: x\r\n\r\nno end")


def test_message_id_is_found_in_folded_headers_only():
    header = b"From: a@b\r\nMessage-ID:\r\n <x@y>\r\nSubject: s\r\n\r\n"
    assert message_id(header) == "<x@y>"
    assert message_id(b"Subject: s\r\n\r\nMessage-ID: <not@header>\r\n") is None


@pytest.mark.parametrize(("first", "second", "same"), [
    (b"Received: from a\r\n\tby mx; 1\r\nSubject: x\r\n\r\nbody\r\n",
     b"Received: from a\r\n\tby mx; 2\r\nSubject: x\r\n\r\nbody\r\n", True),
    (b"Received: from a; 1\r\nSubject: x\r\n\r\nbody\r\n",
     b"Received: from a; 1\r\nSubject: x\r\n\r\nbody!\r\n", False),
    (b"Subject: 1\r\n\r\nbody\r\n", b"Subject: 2\r\n\r\nbody\r\n", False),
])
def test_dedup_digest_ignores_only_the_topmost_received_field(first, second, same):
    assert (content_digest(first) == content_digest(second)) is same


def test_inbound_lines_span_receives_and_stop_at_the_limit():
    inbound = Inbound(TrickleRaw(b"EHLO a\r\nMAIL FROM:<x@y>\r\nRCPT TO:<" + b"z" * 40
                                 + b">\r\nQUIT", (3, 1, 7)).read)
    assert inbound.readline(4096) == b"EHLO a\r\n"
    assert inbound.readline(4096) == b"MAIL FROM:<x@y>\r\n"
    assert inbound.readline(20) == b"RCPT TO:<" + b"z" * 11  # cut at the limit
    assert inbound.readline(4096) == b"z" * 29 + b">\r\n"
    assert inbound.readline(4096) == b"QUIT"  # the peer closed before its line end
    assert inbound.readline(4096) == b""


def test_inbound_hands_data_on_before_it_reads_more():
    inbound = Inbound(TrickleRaw(b"DATA\r\nSubject: x\r\n", (65536,)).read)
    assert inbound.readline(4096) == b"DATA\r\n"
    assert bytes(inbound.read1(65536)) == b"Subject: x\r\n"  # received with the command
    inbound.unread(b"QUIT\r\n")
    assert inbound.readline(4096) == b"QUIT\r\n"
    assert inbound.read1(65536) == b""
