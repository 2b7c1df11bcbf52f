"""An SMTP client that sends exactly the bytes it is given.

smtplib turns bare CR and bare LF in a message into CRLF and never
pipelines; bad-input tests need to send bare CR, bare LF, NUL, binary
commands and whole pipelined transactions in one write, and to see every
reply, including the one that closes the connection.
"""

import re
import socket

REPLY_LINE = re.compile(rb"^(\d{3})([ -])(.*)\r\n$", re.DOTALL)


class ConnectionClosed(Exception):
    """The server closed the connection while a reply was expected."""


class RawSmtp:
    """`server` is an address to connect to, or a connected socket (one end of a pair)."""

    def __init__(self, server, timeout=60):
        self.socket = (server if isinstance(server, socket.socket)
                       else socket.create_connection(server, timeout=timeout))
        self.socket.settimeout(timeout)
        self.reader = self.socket.makefile("rb")
        self.banner = self.reply()

    def send(self, raw):
        self.socket.sendall(raw)

    def reply(self):
        """One whole (possibly multi-line) reply as (code, text); text lines joined by \\n."""
        lines, code = [], None
        while True:
            line = self.reader.readline()
            if not line:
                raise ConnectionClosed(f"closed after {lines!r}")
            match = REPLY_LINE.match(line)
            assert match, f"malformed reply line {line!r}"
            assert code in (None, int(match.group(1))), f"code changed within a reply: {line!r}"
            code = int(match.group(1))
            lines.append(match.group(3).decode("utf-8", errors="replace"))
            if match.group(2) == b" ":
                return code, "\n".join(lines)

    def command(self, line):
        """Send one command line (bytes or str, CRLF added) and return its reply."""
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\r\n")
        return self.reply()

    def at_eof(self):
        """True when the server has closed the connection and sent nothing more.

        A server that closes with our input still unread makes the kernel send
        a reset; that is a close too.
        """
        try:
            return self.reader.read() == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.reader.close()
        self.socket.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def dot_stuff(data):
    """What a client does to a message before DATA: double leading dots, end with CRLF.CRLF.

    A line starts at the start of the data and after CRLF only (RFC 5321
    2.3.8), so a dot after a bare LF is sent as it is; the message must end
    with CRLF so that the terminator is a line of its own.
    """
    assert data == b"" or data.endswith(b"\r\n"), "end the message with CRLF"
    stuffed = re.sub(rb"(^|\r\n)\.", rb"\1..", data)
    return stuffed + b".\r\n"
