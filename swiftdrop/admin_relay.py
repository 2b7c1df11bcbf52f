"""Hand role addresses (postmaster@, abuse@, ...) to Postfix instead of Swift.

RFC 5321 wants postmaster to reach a person, and abuse reports (RFC 2142)
are no use in a container nobody reads. Those recipients go to a second,
loopback-only Postfix smtpd, as SMTPD_PROXY_README describes for a proxy
filter: that smtpd queues the message and Postfix forwards it to the admin
address with its own retries. The client hears 250 only after that smtpd
took the message, so the promise is the same as for Swift: accepted means
queued or stored, never "probably".
"""

from contextlib import contextmanager
from email.message import EmailMessage
import email.utils
import logging
import smtplib
import socket

log = logging.getLogger(__name__)

RELAY_TIMEOUT = 30
CHUNK = 64 * 1024


class RelayError(Exception):
    """The admin relay did not take the message; the client must retry (451)."""


class AdminRelay:
    """SMTP client for the loopback Postfix listener that forwards to the admin."""

    def __init__(self, address, local_parts, hostname, timeout=RELAY_TIMEOUT):
        self.host, self.port = parse_address(address)
        self.local_parts = frozenset(part.casefold() for part in local_parts)
        self.hostname = hostname
        self.timeout = timeout

    def takes(self, recipient):
        """True for a role address of any domain (Postfix already vetted the domain)."""
        local_part, at, _ = recipient.rpartition("@")
        return bool(at) and local_part.casefold() in self.local_parts

    def forward(self, envelope, recipients, message, *, deadline):
        """Queue `message` for `recipients` in Postfix; return its reply text (queue id).

        Every SMTP step waits at most until the message's `deadline`.
        """
        options = []
        if envelope.body_8bit:
            options.append("BODY=8BITMIME")
        if envelope.smtputf8:
            options.append("SMTPUTF8")
        message.spool.seek(0)
        try:
            with self._session(deadline) as client:
                def step(reply_of, *codes):
                    client.sock.settimeout(self._step_timeout(deadline))
                    return _expect(reply_of(), *codes)

                step(client.ehlo, 250)
                step(lambda: client.mail(envelope.mail_from or "", options), 250)
                for recipient in recipients:
                    step(lambda recipient=recipient: client.rcpt(recipient), 250, 251)
                step(lambda: client.docmd("DATA"), 354)
                for chunk in dot_stuffed(iter(lambda: message.spool.read(CHUNK), b"")):
                    client.sock.settimeout(self._step_timeout(deadline))
                    client.sock.sendall(chunk)
                _, text = step(client.getreply, 250)
        finally:
            message.spool.seek(0)
        return text.decode("utf-8", "replace")

    def _step_timeout(self, deadline):
        timeout = deadline.timeout(self.timeout)
        if timeout <= 0:
            raise RelayError(f"admin relay {self.host}:{self.port}: no time left before "
                             f"the message's deadline")
        return timeout

    def notify(self, recipient, subject, text):
        """Mail a short notice from SwiftDrop itself (failure alerts)."""
        notice = EmailMessage()
        notice["From"] = f"SwiftDrop <MAILER-DAEMON@{self.hostname}>"
        notice["To"] = recipient
        notice["Subject"] = subject
        notice["Date"] = email.utils.formatdate()
        notice["Message-ID"] = email.utils.make_msgid("swiftdrop", domain=self.hostname)
        notice["Auto-Submitted"] = "auto-generated"
        notice.set_content(text)
        with self._session() as client:
            client.send_message(notice, from_addr="", to_addrs=[recipient])

    @contextmanager
    def _session(self, deadline=None):
        """An SMTP session with the relay; any failure in it is a RelayError."""
        timeout = self.timeout if deadline is None else self._step_timeout(deadline)
        try:
            with smtplib.SMTP(self.host, self.port, local_hostname=self.hostname,
                              timeout=timeout) as client:
                yield client
        except (OSError, smtplib.SMTPException) as error:
            raise RelayError(f"admin relay {self.host}:{self.port}: {error}") from None


def _expect(reply, *codes):
    code, text = reply
    if code not in codes:
        raise RelayError(f"admin relay answered {code} {text.decode('utf-8', 'replace')}")
    return code, text


def dot_stuffed(chunks):
    """The DATA stream for `chunks`: leading dots doubled, ending in CRLF . CRLF.

    A line starts only at the start of the data and after CRLF (RFC 5321
    2.3.8), the rule the filter's own reader keeps: a dot after a bare LF is
    data and is sent as it is. (What Postfix hands the filter has no bare
    LF: its smtpd ends every line it passes on with CRLF.) Works across
    chunk boundaries (CR, then LF and the dot in the next chunk) without
    holding the message in memory.
    """
    tail = b"\r\n"  # the data's last two bytes so far; the start counts as a line start
    for chunk in chunks:
        if not chunk:
            continue
        stuffed = chunk.replace(b"\r\n.", b"\r\n..")
        if tail == b"\r\n" and stuffed.startswith(b"."):
            stuffed = b"." + stuffed
        elif tail.endswith(b"\r") and stuffed.startswith(b"\n."):
            stuffed = b"\n." + stuffed[1:]
        tail = (tail + chunk)[-2:]
        yield stuffed
    # as smtplib does: a last line without CRLF gets one, so the end is CRLF . CRLF
    yield (b"" if tail == b"\r\n" else b"\r\n") + b".\r\n"


def parse_address(address):
    """``127.0.0.1:10026`` or ``[::1]:10026``; only loopback, like every hop we own."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        if not all(info[4][0].startswith("127.") or info[4][0] == "::1"
                   for info in socket.getaddrinfo(host, None)):
            raise ValueError
        return host, int(port)
    except (OSError, ValueError):
        raise ValueError(f"{address!r} is not a loopback HOST:PORT") from None
