"""The SMTP server side of one connection from Postfix's smtpd_proxy_filter client.

Postfix's proxy client sends EHLO, XFORWARD (when we advertise it), MAIL,
one RCPT per recipient, DATA and the dot-stuffed message, then QUIT, and
closes without waiting for our 221. We reply once per message: the final
reply after DATA is the one Postfix relays to the sending client, so it must
only be 2xx once every copy is stored.

Receiving the message itself (unstuffing, spooling, digests) is
:mod:`swiftdrop.reception`; this module is the dialogue around it.
"""

from dataclasses import dataclass, field
import logging
import re

from . import metrics
from .reception import Inbound, MessageTooBig, SpoolError, receive

log = logging.getLogger(__name__)

MAX_COMMAND_LINE = 4096       # RFC 5321 allows 512 plus extension parameters
MAX_ERRORS = 20
MAX_RECIPIENTS = 10000

XFORWARD_ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")
MAIL_PARAMETERS = frozenset({"SIZE", "BODY", "SMTPUTF8", "RET", "ENVID", "AUTH"})
RCPT_PARAMETERS = frozenset({"NOTIFY", "ORCPT"})
NOT_IMPLEMENTED = frozenset({"VRFY", "EXPN", "TURN", "ETRN", "STARTTLS", "AUTH", "BDAT",
                             "XCLIENT", "HELP"})
PATH = re.compile(r'^<((?:"(?:[^"\\]|\\.)*"|[^<>"\s])*)>(.*)$')

OK = "250 2.0.0 Ok"
QUEUE_WRITE_ERROR = "451 4.3.0 Error: queue file write error"


@dataclass
class Envelope:
    """What one mail transaction carries besides the message itself."""

    mail_from: str
    recipients: list = field(default_factory=list)
    helo: str | None = None
    xforward: dict = field(default_factory=dict)
    body_8bit: bool = False
    smtputf8: bool = False


class SyntaxProblem(Exception):
    """A command whose arguments we cannot accept; carries the reply."""


def printable(text):
    """Client text made fit to echo in a reply: RFC 5321 reply text is printable ASCII.

    Commands are decoded with surrogateescape, so 8-bit bytes would otherwise
    make the reply unencodable and end the session without any answer.
    """
    return "".join(ch if " " <= ch <= "~" else "?" for ch in text)


def is_utf8(text):
    """False when the command carried bytes that are not UTF-8 (kept as surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def xtext_decode(value):
    """Decode RFC 3461 xtext (``+XX`` escapes), as XFORWARD uses it."""
    if "+" not in value:
        return value
    return re.sub(r"\+([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), value)


def parse_path(argument, keyword):
    """Split ``FROM:<addr> PARAMS`` into the address and a parameter dict."""
    if argument[:len(keyword)].upper() != keyword:
        raise SyntaxProblem(f"501 5.5.4 Syntax: {keyword}<address>")
    match = PATH.match(argument[len(keyword):].lstrip(" "))
    if not match:
        raise SyntaxProblem("501 5.1.7 Bad address syntax")
    parameters = {}
    for token in match.group(2).split():
        name, _, value = token.partition("=")
        parameters[name.upper()] = value
    return match.group(1), parameters


class SmtpSession:
    """Serve one connection; `deliver(envelope, message)` stores and returns the final reply."""

    def __init__(self, connection, deliver, *, hostname, max_message_size,
                 spool_dir=None, idle_timeout=300):
        self.connection = connection
        self.reader = Inbound(connection.recv)
        self.deliver = deliver
        self.hostname = hostname
        self.max_message_size = max_message_size
        self.spool_dir = spool_dir
        self.connection.settimeout(idle_timeout)
        self.greeted = None
        self.xforward = {}
        self.envelope = None
        self.errors = 0

    def serve(self):
        """Run the dialogue until QUIT, a fatal error or the client's disconnect."""
        try:
            self.send(f"220 {self.hostname} ESMTP SwiftDrop")
            while self.handle_command():
                pass
        except (ConnectionError, EOFError):
            log.debug("client closed the connection")
        except TimeoutError:
            self.send_quietly("421 4.4.2 Error: timeout exceeded")
            log.warning("closing idle connection after timeout")

    def send(self, reply):
        self.connection.sendall(reply.encode("utf-8") + b"\r\n")

    def send_quietly(self, reply):
        """Reply when the peer may already be gone (it need not read our 221 or 421)."""
        try:
            self.send(reply)
        except OSError:
            pass

    def read_command(self):
        """The next command line; None for one over MAX_COMMAND_LINE (skipped to its end).

        A line the client did not finish before closing is no command: it gets
        no reply (it used to get "line too long").
        """
        line = self.reader.readline(MAX_COMMAND_LINE)
        if not line.endswith(b"\n"):
            if len(line) < MAX_COMMAND_LINE:
                raise EOFError
            while not line.endswith(b"\n"):
                line = self.reader.readline(MAX_COMMAND_LINE)
                if not line:
                    raise EOFError
            return None
        return line.rstrip(b"\r\n").decode("utf-8", errors="surrogateescape")

    def handle_command(self):
        """Read and answer one command; False ends the session.

        Handlers return the reply to send, or None (QUIT) to end the session.
        """
        line = self.read_command()
        if line is None:
            reply = "500 5.5.2 Error: line too long"
        else:
            verb, _, argument = line.partition(" ")
            handler = (getattr(self, f"smtp_{verb.upper()}", None)
                       if verb.isascii() and verb.isalpha() else None)
            if handler is not None:
                try:
                    reply = handler(argument.strip())
                except SyntaxProblem as problem:
                    reply = str(problem)
            elif verb.upper() in NOT_IMPLEMENTED:
                reply = "502 5.5.1 Error: command not implemented"
            else:
                reply = "500 5.5.2 Error: command not recognized"
        if reply is None:
            return False
        if reply[0] in "45":
            self.errors += 1
            if self.errors > MAX_ERRORS:
                self.send_quietly("421 4.7.0 Error: too many errors")
                return False
        self.send(reply)
        return True

    def reset_transaction(self):
        self.envelope = None
        self.xforward = {}

    def smtp_EHLO(self, argument):
        if not argument:
            return "501 5.5.4 Syntax: EHLO hostname"
        self.greeted = argument
        self.reset_transaction()
        return "\r\n".join([
            f"250-{self.hostname}",
            "250-PIPELINING",
            f"250-SIZE {self.max_message_size}",
            "250-8BITMIME",
            "250-SMTPUTF8",
            "250-ENHANCEDSTATUSCODES",
            "250 XFORWARD " + " ".join(XFORWARD_ATTRIBUTES),
        ])

    def smtp_HELO(self, argument):
        if not argument:
            return "501 5.5.4 Syntax: HELO hostname"
        self.greeted = argument
        self.reset_transaction()
        return f"250 {self.hostname}"

    def smtp_XFORWARD(self, argument):
        if self.envelope is not None:
            return "503 5.5.1 Error: XFORWARD not allowed in a mail transaction"
        attributes = {}
        for token in argument.split():
            name, equals, value = token.partition("=")
            name = name.upper()
            if not equals or name not in XFORWARD_ATTRIBUTES:
                return f"501 5.5.4 Bad XFORWARD attribute: {printable(name)}"
            value = xtext_decode(value)
            attributes[name] = None if value in ("[UNAVAILABLE]", "[TEMPUNAVAIL]") else value
        if not attributes:
            return "501 5.5.4 Syntax: XFORWARD attribute=value..."
        self.xforward.update(attributes)
        return OK

    def smtp_MAIL(self, argument):
        if self.greeted is None:
            return "503 5.5.1 Error: send HELO/EHLO first"
        if self.envelope is not None:
            return "503 5.5.1 Error: nested MAIL command"
        address, parameters = parse_path(argument, "FROM:")
        if not is_utf8(address):
            return "501 5.1.7 Bad sender address syntax"
        unknown = set(parameters) - MAIL_PARAMETERS
        if unknown:
            return f"555 5.5.4 Unsupported option: {printable(sorted(unknown)[0])}"
        size = parameters.get("SIZE")
        if size is not None:
            if not size.isdigit():
                return "501 5.5.4 Bad message size syntax"
            if int(size) > self.max_message_size:
                return "552 5.3.4 Message size exceeds fixed limit"
        self.envelope = Envelope(
            mail_from=address, helo=self.greeted, xforward=dict(self.xforward),
            body_8bit=parameters.get("BODY", "").upper() == "8BITMIME",
            smtputf8="SMTPUTF8" in parameters)
        return OK

    def smtp_RCPT(self, argument):
        if self.envelope is None:
            return "503 5.5.1 Error: need MAIL command"
        address, parameters = parse_path(argument, "TO:")
        if not address or not is_utf8(address):
            return "501 5.1.3 Bad recipient address syntax"
        unknown = set(parameters) - RCPT_PARAMETERS
        if unknown:
            return f"555 5.5.4 Unsupported option: {printable(sorted(unknown)[0])}"
        if len(self.envelope.recipients) >= MAX_RECIPIENTS:
            return "452 4.5.3 Error: too many recipients"
        self.envelope.recipients.append(address)
        return OK

    def smtp_DATA(self, argument):
        if argument:
            return "501 5.5.4 Syntax: DATA"
        if self.envelope is None:
            return "503 5.5.1 Error: need MAIL command"
        if not self.envelope.recipients:
            return "503 5.5.1 Error: need RCPT command"
        self.send("354 End data with <CR><LF>.<CR><LF>")
        envelope, self.envelope = self.envelope, None
        self.xforward = {}
        try:
            message = receive(self.reader, max_message_size=self.max_message_size,
                              spool_dir=self.spool_dir)
        except EOFError:
            log.info("client disconnected during DATA; nothing stored")
            raise
        except MessageTooBig:
            return self.refuse("552 5.3.4 Error: message file too big")
        except SpoolError:
            return self.refuse(QUEUE_WRITE_ERROR)
        try:
            return self.deliver(envelope, message)
        finally:
            message.spool.close()

    @staticmethod
    def refuse(reply):
        """A message refused before delivery still counts among the replies."""
        metrics.message_replied(reply)
        return reply

    def smtp_RSET(self, argument):
        self.reset_transaction()
        return OK

    def smtp_NOOP(self, argument):
        return OK

    def smtp_QUIT(self, argument):
        self.send_quietly("221 2.0.0 Bye")
