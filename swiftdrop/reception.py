"""Receiving one message's DATA: dot-unstuffed, spooled, digested, its Message-ID found.

The message is spooled (in memory up to a threshold, then to a temporary
file) so memory stays flat whatever the message size, and so the upload can
be retried from a seekable file. Its MD5 (Swift's ETag), the dedup MD5 and
the Message-ID are computed while it arrives, so nothing reads it twice.
The SMTP dialogue around it is :mod:`swiftdrop.smtp`.
"""

from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
import hashlib
import logging
import re
import tempfile

log = logging.getLogger(__name__)

DATA_CHUNK = 65536            # bytes scanned per step while receiving DATA
MAX_HEADER_SCAN = 65536       # how much of the header block is searched for Message-ID
# Messages up to this size stay in memory. Measured (bench.filter_throughput,
# 20 concurrent 1 MB sessions): at 1 MiB the filter peaked at 68 MiB, each
# session holding up to 2 MiB while its spool rolled over to disk; at 256 KiB
# 46 MiB. A spool file costs ~0.3 ms of CPU per MB more than memory; most
# mail is far smaller than 256 KiB and never touches the disk.
SPOOL_IN_MEMORY = 256 * 1024


class MessageTooBig(Exception):
    """The message exceeded the size limit; it was read to its end and dropped."""


class SpoolError(Exception):
    """The spool could not be written; the message was read to its end and dropped."""


@dataclass
class Message:
    """A spooled message, ready to upload from offset 0.

    `dedup_md5` is the MD5 without the topmost ``Received:`` field, the one
    this MX's Postfix prepended: when a sender retries after a 451 the new
    copy differs from the old only there, so consumers can spot it.
    """

    spool: object
    size: int
    md5: str
    message_id: str | None
    dedup_md5: str | None = None


class DedupDigest:
    """MD5 of a message stream, leaving out its first header field if that is Received:."""

    def __init__(self):
        self.digest = hashlib.md5(usedforsecurity=False)
        self.pending = bytearray()  # the start of the message, until its first field ends

    def update(self, chunk):
        if self.pending is None:
            self.digest.update(chunk)
            return
        self.pending += chunk
        end = re.search(rb"\n(?=[^ \t])", self.pending)
        if end or len(self.pending) >= MAX_HEADER_SCAN:
            self._flush(end.end() if end else 0)

    def _flush(self, first_field_end):
        skip = first_field_end if self.pending[:9].lower() == b"received:" else 0
        self.digest.update(self.pending[skip:])
        self.pending = None

    def hexdigest(self):
        if self.pending is not None:
            self._flush(0)
        return self.digest.hexdigest()


def receive(reader, *, max_message_size, spool_dir=None):
    """Read one message's DATA from `reader` up to its final dot; return the Message.

    A message over `max_message_size` or one the spool cannot take is still
    read to its end (the client sends it anyway, and the next command
    follows it), then MessageTooBig or SpoolError is raised. EOFError when
    the client vanishes before the end.
    """
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY, dir=spool_dir)
    digest, dedup = hashlib.md5(usedforsecurity=False), DedupDigest()
    size, header, problem = 0, bytearray(), None
    try:
        for chunk in unstuff(reader):
            size += len(chunk)
            if problem is not None:
                continue
            if size > max_message_size:
                problem = MessageTooBig(f"message over {max_message_size} bytes")
                continue
            if len(header) < MAX_HEADER_SCAN:
                header += chunk[:MAX_HEADER_SCAN]
            digest.update(chunk)
            dedup.update(chunk)
            try:
                spool.write(chunk)
            except OSError as error:
                log.error("cannot spool message: %s", error)
                problem = SpoolError(str(error))
    except BaseException:
        spool.close()
        raise
    if problem is not None:
        spool.close()
        raise problem
    return Message(spool, size, digest.hexdigest(), message_id(bytes(header)),
                   dedup.hexdigest())


def unstuff(reader):
    """Yield the message's bytes up to the terminating ``.CRLF`` line, dot-unstuffed.

    Works on blocks, not lines: only lines that start with a dot need any
    work, so the scan looks for ``LF .`` with bytes.find and copies the rest
    wholesale (per-line Python loops cost ~20 ms per MB of short lines).
    `reader` is a BufferedReader; exactly the message and its terminator are
    consumed, so pipelined commands after it stay readable. Only a line that
    is exactly ``.CRLF`` ends the data, as RFC 5321 says. Raises EOFError
    when the client vanishes before the end.
    """
    carry, at_line_start = b"", True  # carry: a line start too short to judge yet
    while True:
        view = reader.peek(DATA_CHUNK)[:DATA_CHUNK]
        if not view:
            raise EOFError("connection closed during DATA")
        data = carry + view
        pieces, start = [], 0
        dot = 0 if at_line_start and data[:1] == b"." else _next_dot_line(data, 0)
        carry = b""
        while dot >= 0:
            head = data[dot:dot + 3]
            if head == b".\r\n":
                pieces.append(data[start:dot])
                reader.read(dot + 3 - (len(data) - len(view)))
                if any(pieces):
                    yield b"".join(pieces)
                return
            if len(head) < 3 and b".\r\n".startswith(head):
                carry = data[dot:]
                break
            pieces.append(data[start:dot])  # drop the stuffing dot
            start = dot + 1
            dot = _next_dot_line(data, start)
        pieces.append(data[start:len(data) - len(carry)])
        reader.read(len(view))
        at_line_start = bool(carry) or data.endswith(b"\n")
        chunk = b"".join(pieces)
        if chunk:
            yield chunk


def _next_dot_line(data, position):
    """Index of the next dot that starts a line, or -1."""
    found = data.find(b"\n.", position)
    return found + 1 if found >= 0 else -1


def message_id(header_block):
    """The Message-ID header's value, if the header block has one."""
    end = re.search(rb"\r?\n\r?\n", header_block)
    if end:
        header_block = header_block[:end.start() + 1]
    value = BytesHeaderParser(policy=compat32).parsebytes(header_block).get("Message-ID")
    if value is None:
        return None
    return " ".join(str(value).split()) or None
