"""The SMTP dialogue over a real socket pair; `deliver` is the seam to storage.

Receiving the message itself (unstuffing, digests) is tested in test_reception.py.
"""

import socket
import threading

import pytest

from swiftdrop.smtp import SmtpSession, xtext_decode
from tests.support.rawsmtp import dot_stuff


def test_xtext():
    assert xtext_decode("mail+2Eexample+2Ecom") == "mail.example.com"
    assert xtext_decode("a+3Db") == "a=b"


class Dialogue:
    """Client end of a socketpair whose other end is served by SmtpSession in a thread."""

    def __init__(self, max_message_size=10_000, reply="250 2.0.0 Ok: stored as c/cur/x"):
        self.client, server = socket.socketpair()
        self.client.settimeout(5)
        self.delivered = []
        self.reply = reply
        self.session = SmtpSession(server, self.deliver, hostname="mx.test",
                                   max_message_size=max_message_size, idle_timeout=5)
        self.thread = threading.Thread(target=self._serve, args=(server,), daemon=True)
        self.thread.start()
        self.reader = self.client.makefile("rb")
        assert self.read().startswith("220 mx.test ")

    def _serve(self, server):
        with server:
            self.session.serve()

    def deliver(self, envelope, message):
        message.spool.seek(0)
        self.delivered.append((envelope, message.spool.read(), message))
        return self.reply

    def read(self):
        lines = []
        while True:
            line = self.reader.readline().decode()
            lines.append(line.rstrip("\r\n"))
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    def send(self, raw):
        self.client.sendall(raw)

    def command(self, line):
        self.send(line.encode() + b"\r\n")
        return self.read()

    def close(self):
        self.reader.close()
        self.client.close()
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture
def smtp():
    dialogue = Dialogue()
    yield dialogue
    dialogue.close()


def transaction(smtp, body, sender="<s@x.test>", rcpts=("<r@y.test>",)):
    assert smtp.command(f"MAIL FROM:{sender}").startswith("250")
    for rcpt in rcpts:
        assert smtp.command(f"RCPT TO:{rcpt}").startswith("250")
    assert smtp.command("DATA").startswith("354")
    smtp.send(dot_stuff(body))
    return smtp.read()


def test_postfix_proxy_sequence_with_split_xforward(smtp):
    ehlo = smtp.command("EHLO mx.example")
    assert "250 XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE" in ehlo
    assert "SIZE 10000" in ehlo and "8BITMIME" in ehlo and "SMTPUTF8" in ehlo
    assert smtp.command("XFORWARD NAME=client+2Eexample ADDR=192.0.2.7 PORT=4711").startswith("250")
    assert smtp.command("XFORWARD PROTO=ESMTP HELO=[UNAVAILABLE] SOURCE=REMOTE").startswith("250")
    body = b"Subject: hi\r\nMessage-Id: <id@x>\r\n\r\n.leading dot\r\n\0\xff 8bit\r\n"
    smtp.command("MAIL FROM:<s@x.test> SIZE=100 BODY=8BITMIME SMTPUTF8")
    smtp.command("RCPT TO:<r@y.test> NOTIFY=NEVER ORCPT=rfc822;r@y.test")
    smtp.command("RCPT TO:<R2@y.test>")
    assert smtp.command("DATA").startswith("354")
    smtp.send(dot_stuff(body))
    assert smtp.read() == "250 2.0.0 Ok: stored as c/cur/x"
    [(envelope, stored, message)] = smtp.delivered
    assert stored == body
    assert message.size == len(body) and message.message_id == "<id@x>"
    assert envelope.mail_from == "s@x.test" and envelope.body_8bit and envelope.smtputf8
    assert envelope.recipients == ["r@y.test", "R2@y.test"]
    assert envelope.xforward == {"NAME": "client.example", "ADDR": "192.0.2.7", "PORT": "4711",
                                 "PROTO": "ESMTP", "HELO": None, "SOURCE": "REMOTE"}
    # XFORWARD lasts for one transaction only.
    transaction(smtp, b"second\r\n")
    assert smtp.delivered[1][0].xforward == {}
    assert smtp.command("QUIT").startswith("221")


@pytest.mark.parametrize(("commands", "expected"), [
    (["MAIL FROM:<a@b>"], "503 5.5.1"),                               # before EHLO
    (["EHLO x", "RCPT TO:<a@b>"], "503 5.5.1"),                       # RCPT before MAIL
    (["EHLO x", "DATA"], "503 5.5.1"),                                # DATA before MAIL
    (["EHLO x", "MAIL FROM:<a@b>", "DATA"], "503 5.5.1"),             # DATA before RCPT
    (["EHLO x", "MAIL FROM:<a@b>", "MAIL FROM:<a@b>"], "503 5.5.1"),  # nested MAIL
    (["EHLO x", "MAIL FROM:<a@b>", "XFORWARD ADDR=1.2.3.4"], "503 5.5.1"),
    (["EHLO x", "MAIL FROM:a@b"], "501 5.1.7"),
    (["EHLO x", "MAIL TO:<a@b>"], "501 5.5.4"),
    (["EHLO x", "MAIL FROM:<a@b> FROB=1"], "555 5.5.4"),
    (["EHLO x", "MAIL FROM:<a@b> SIZE=20000"], "552 5.3.4"),
    (["EHLO x", "MAIL FROM:<a@b>", "RCPT TO:<>"], "501 5.1.3"),
    (["EHLO x", "XFORWARD COLOR=red"], "501 5.5.4"),
    (["EHLO"], "501 5.5.4"),
    (["EHLO x", "VRFY root"], "502 5.5.1"),
    (["EHLO x", "STARTTLS"], "502 5.5.1"),
    (["EHLO x", "FROBNICATE"], "500 5.5.2"),
    (["EHLO x", "\x00\x01\x02 binary"], "500 5.5.2"),
    (["EHLO x", "ma\u0131l FROM:<a@b>"], "500 5.5.2"),          # dotless i: "MAIL" upper-cased
    (["EHLO x", "MAIL FROM:<a@b>", "RSET", "RCPT TO:<a@b>"], "503 5.5.1"),
    (["NOOP"], "250 2.0.0"),
])
def test_bad_commands_get_the_right_code_and_the_session_goes_on(smtp, commands, expected):
    for command in commands:
        reply = smtp.command(command)
    assert reply.startswith(expected)
    assert smtp.command("NOOP").startswith("250")


def test_over_long_command_line(smtp):
    assert smtp.command("NOOP " + "x" * 100_000).startswith("500 5.5.2")
    assert smtp.command("NOOP").startswith("250")


def test_a_line_cut_off_by_the_close_gets_no_reply(smtp):
    smtp.send(b"NOOP")
    smtp.client.shutdown(socket.SHUT_WR)
    assert smtp.reader.read() == b""


def test_oversized_data_is_refused_and_nothing_delivered():
    smtp = Dialogue(max_message_size=1000)
    smtp.command("EHLO x")
    assert transaction(smtp, b"x" * 5000 + b"\r\n").startswith("552 5.3.4")
    assert smtp.delivered == []
    assert transaction(smtp, b"small\r\n").startswith("250")
    smtp.close()


def test_pipelined_commands_are_answered_in_order(smtp):
    smtp.send(b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
    replies = [smtp.read() for _ in range(4)]
    assert [reply[:3] for reply in replies] == ["250", "250", "250", "354"]
    smtp.send(b"body\r\n.\r\nQUIT\r\n")
    assert smtp.read().startswith("250") and smtp.read().startswith("221")


def test_client_vanishing_mid_data_stores_nothing():
    smtp = Dialogue()
    smtp.command("EHLO x")
    smtp.command("MAIL FROM:<a@b>")
    smtp.command("RCPT TO:<c@d>")
    smtp.command("DATA")
    smtp.send(b"Subject: half\r\n\r\npart of a bo")
    smtp.close()
    assert smtp.delivered == []


def test_quit_without_reading_the_221_is_quiet(smtp, caplog):
    smtp.send(b"QUIT\r\n")
    smtp.client.shutdown(socket.SHUT_RDWR)
    smtp.thread.join(5)
    assert not smtp.thread.is_alive()
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "WARNING")]
