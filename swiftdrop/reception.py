"""Receiving one message's DATA: dot-unstuffed, spooled, digested, its Message-ID found.

The message is spooled (in memory up to a threshold, then to a temporary
file) so memory stays flat whatever the message size, and so the upload can
be retried from a seekable file. Its MD5 (Swift's ETag) and the Message-ID
are taken from the bytes as they arrive, in one pass: the message is not
read again before it is sent, and a spooled file goes to Swift with
sendfile (swiftdrop.swift_client). The SMTP dialogue around it is
:mod:`swiftdrop.smtp`.

Only CRLF ends a line (RFC 5321 section 2.3.8): a dot after a bare LF is
data, neither a stuffing dot nor the end of the message. A reader that
took ``LF . CRLF`` or ``LF . LF`` for the end would let a sender hide a
second transaction inside the first (SMTP smuggling, CVE-2023-51764).
"""

from dataclasses import dataclass
import hashlib
import io
import logging
import re
import tempfile

log = logging.getLogger(__name__)

DATA_CHUNK = 65536            # bytes read per step while receiving DATA
COMMAND_CHUNK = 8192          # bytes read per step while waiting for a command line
MAX_HEADER_SCAN = 65536       # how much of the header block is searched for Message-ID
# Messages up to this size stay in memory. Measured (bench.filter_throughput,
# 20 concurrent 1 MB sessions): at 1 MiB the filter peaked at 68 MiB, each
# session holding up to 2 MiB while its spool rolled over to disk; at 256 KiB
# 46 MiB. A spool file costs ~0.3 ms of CPU per MB more than memory; most
# mail is far smaller than 256 KiB and never touches the disk.
SPOOL_IN_MEMORY = 256 * 1024
LINE_START = b"\r\n."
DOT = b"."
END_OF_DATA = b"\r\n.\r\n"
MESSAGE_ID = re.compile(rb"^message-id:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


class MessageTooBig(Exception):
    """The message exceeded the size limit; it was read to its end and dropped."""


class SpoolError(Exception):
    """The spool could not be written; the message was read to its end and dropped."""


@dataclass
class Message:
    """A spooled message, ready to upload from offset 0.

    `spool` is an io.BytesIO for a message held in memory, else an open
    temporary file (swiftdrop.storage sends the one as bytes, the other
    with sendfile).
    """

    spool: object
    size: int
    md5: str
    message_id: str | None


class Inbound:
    """The client's byte stream: lines for commands, blocks for DATA.

    Read with the socket's own ``recv`` (`receive`): a BufferedReader on
    ``socket.makefile`` goes through SocketIO's readinto, a Python-level
    call per read, on each of the half-dozen commands of every message.
    DATA is read in blocks, and the block that holds the final dot may hold
    commands the client pipelined after it; :meth:`unread` keeps those for
    the next :meth:`readline`.
    """

    def __init__(self, receive):
        self.receive = receive  # recv(n): up to n bytes, b"" once the peer closed
        self._pending = b""

    def readline(self, limit):
        """The next line with its line end, at most `limit` bytes; short only at the end."""
        pending, searched = self._pending, 0
        while (end := pending.find(b"\n", searched, limit)) < 0 and len(pending) < limit:
            more = self.receive(COMMAND_CHUNK)
            if not more:
                self._pending = b""
                return pending
            searched = len(pending)
            pending += more
        cut = end + 1 if end >= 0 else limit
        self._pending = pending[cut:]
        return pending[:cut]

    def read1(self, size):
        if self._pending:
            block, self._pending = self._pending, b""
            return block
        return self.receive(size)

    def unread(self, data):
        self._pending = data + self._pending


class _Spool:
    """Memory until SPOOL_IN_MEMORY, then a temporary file in `directory`."""

    def __init__(self, directory):
        self.directory = directory
        self.file = io.BytesIO()
        self.in_memory = True

    def write(self, piece, size_after):
        if self.in_memory and size_after > SPOOL_IN_MEMORY:
            spooled = tempfile.TemporaryFile(dir=self.directory)
            try:
                spooled.write(self.file.getbuffer())
            except BaseException:
                spooled.close()
                raise
            self.file, self.in_memory = spooled, False
        self.file.write(piece)


def receive(inbound, *, max_message_size, spool_dir=None):
    """Read one message's DATA from `inbound` up to its final dot; return the Message.

    A message over `max_message_size` or one the spool cannot take is still
    read to its end (the client sends it anyway, and the next command
    follows it), then MessageTooBig or SpoolError is raised. EOFError when
    the client vanishes before the end.
    """
    spool = _Spool(spool_dir)
    digest = hashlib.md5(usedforsecurity=False)
    size, header, problem = 0, bytearray(), None
    try:
        for piece in unstuff(inbound):
            size += len(piece)
            if problem is not None:
                continue
            if size > max_message_size:
                problem = MessageTooBig(f"message over {max_message_size} bytes")
                continue
            if len(header) < MAX_HEADER_SCAN:
                header += piece[:MAX_HEADER_SCAN - len(header)]
            digest.update(piece)
            try:
                spool.write(piece, size)
            except OSError as error:
                log.error("cannot spool message: %s", error)
                problem = SpoolError(str(error))
    except BaseException:
        spool.file.close()
        raise
    if problem is not None:
        spool.file.close()
        raise problem
    spool.file.seek(0)
    return Message(spool.file, size, digest.hexdigest(), message_id(bytes(header)))


def unstuff(inbound):
    """Yield the message's bytes up to the terminating ``CRLF . CRLF``, dot-unstuffed.

    Works on blocks, not lines: only lines that start with a dot need any
    work, so the scan looks for ``CRLF .`` with bytes.find and hands on the
    rest as views of the block read, copying nothing (per-line Python loops
    cost ~20 ms per MB of short lines). A block is prefixed with an unsent
    CRLF where one precedes it: the one that starts the data (not part of
    the message, so never yielded) or a line end left over from the block
    before, kept until it is known not to begin the end of data.
    Exactly the message and its terminator are consumed; what follows goes
    back to `inbound` (:meth:`Inbound.unread`). Raises EOFError when the
    client vanishes before the end.
    """
    carry, unsent = b"\r\n", 2  # unsent: leading bytes of carry that are not message data
    while True:
        block = inbound.read1(DATA_CHUNK)
        if not block:
            raise EOFError("connection closed during DATA")
        data = carry + block
        view = memoryview(data)
        # A block without a dot holds no CRLF-dot: memchr finds that out at
        # a tenth of what searching for the three bytes costs (~0.6 ms per MB
        # of 80-column lines), and base64 attachments, most of a large
        # message, have no dot at all.
        start, found = unsent, data.find(LINE_START) if DOT in data else -1
        carry, unsent = b"", 0
        while found >= 0:
            after = data[found:found + 5]
            if after == END_OF_DATA:
                if found + 2 > start:
                    yield view[start:found + 2]
                if found + 5 < len(data):
                    inbound.unread(data[found + 5:])
                return
            if END_OF_DATA.startswith(after):  # the block ends before it is decided
                carry, unsent = data[found:], max(0, start - found)
                break
            if found + 2 > start:
                yield view[start:found + 2]
            start = found + 3  # past the stuffing dot
            found = data.find(LINE_START, start)
        else:
            keep = 2 if data.endswith(b"\r\n") else 1 if data.endswith(b"\r") else 0
            cut = max(start, len(data) - keep)
            carry = data[cut:]
        if start < len(data) - len(carry):
            yield view[start:len(data) - len(carry)]


def message_id(header_block):
    """The first Message-ID field's value in the header block (unfolded), if it has one."""
    end = re.search(rb"\r?\n\r?\n", header_block)
    if end:
        header_block = header_block[:end.start() + 1]
    match = MESSAGE_ID.search(header_block)
    if match is None:
        return None
    return " ".join(match.group(1).decode("ascii", "surrogateescape").split()) or None
