"""Ask rspamd what it thinks of a message: SPF, DKIM, DMARC, ARC, virus and spam verdicts.

A before-queue proxy cannot use milters for this (Postfix's milters see only
the SMTP commands in front of a proxy, never the message), so the filter
asks rspamd itself over HTTP (``POST /checkv2``), once per message, after
the message is spooled and before any copy is stored. The answer becomes a
few fixed, lower-case ``X-Object-Meta-*`` values on every copy (the
consumer's equivalent of SES's ``spfVerdict``, ``dkimVerdict`` ...); the
stored bytes are never changed.

With ``--antivirus`` rspamd also has clamd scan the message (its antivirus
module, symbol CLAM_VIRUS): the virus verdict is ``clean``, ``infected``
(with the name clamd gave) or ``unavailable`` (clamd down or slow, or
rspamd itself). Without it the message was not scanned, and no virus key
is written: "clean" would be a claim nobody checked.

A verdict engine must never cost mail: when rspamd is down, slow, or
answers something we cannot read, every verdict is ``unavailable``, the
message is stored as usual, and the operator hears of it (journal warning,
metric, rate-limited notice). The whole exchange is bounded by its own
timeout and by what is left of the message's Deadline: a watchdog closes
the connection when that time is up, however slowly rspamd trickles bytes.
"""

from dataclasses import dataclass
import http.client
import json
import logging
import socket
import threading
from urllib.parse import urlsplit

from . import metrics

log = logging.getLogger(__name__)

UNAVAILABLE = "unavailable"
SEND_BLOCK = 65536
MAX_ANSWER = 4 * 1024 * 1024  # rspamd's answer is a few KB; more is not an answer

# rspamd's actions, as /checkv2 names them.
ACTIONS = frozenset({"no action", "greylist", "add header", "rewrite subject",
                     "soft reject", "reject"})
# The rspamd symbol that decides each verdict, and the verdict it means. The
# first one present wins (rspamd inserts exactly one per check).
SPF_SYMBOLS = {"R_SPF_ALLOW": "pass", "R_SPF_FAIL": "fail", "R_SPF_SOFTFAIL": "softfail",
               "R_SPF_NEUTRAL": "neutral", "R_SPF_NA": "none", "R_SPF_DNSFAIL": "temperror",
               "R_SPF_PERMFAIL": "permerror"}
DKIM_SYMBOLS = {"R_DKIM_ALLOW": "pass", "R_DKIM_REJECT": "fail", "R_DKIM_TEMPFAIL": "temperror",
                "R_DKIM_PERMFAIL": "permerror", "R_DKIM_NA": "none"}
DMARC_SYMBOLS = {"DMARC_POLICY_ALLOW": "pass", "DMARC_POLICY_ALLOW_WITH_FAILURES": "pass",
                 "DMARC_POLICY_REJECT": "fail", "DMARC_POLICY_QUARANTINE": "fail",
                 "DMARC_POLICY_SOFTFAIL": "fail", "DMARC_NA": "none",
                 "DMARC_DNSFAIL": "temperror", "DMARC_BAD_POLICY": "permerror"}
# ARC (RFC 8617): what the forwarders on the way (mailing lists, forwarding
# hosts) vouch for, where SPF and DKIM alone mislead. The meanings are
# rspamd's own (lua_auth_results): ARC_REJECT is a seal that does not verify.
ARC_SYMBOLS = {"ARC_ALLOW": "pass", "ARC_REJECT": "fail", "ARC_INVALID": "permerror",
               "ARC_DNSFAIL": "temperror", "ARC_NA": "none"}
# What rspamd's antivirus module adds for clamd (the role's antivirus.conf):
# the symbol with the virus names as options, or _FAIL when clamd did not answer.
VIRUS_SYMBOL, VIRUS_FAIL_SYMBOL = "CLAM_VIRUS", "CLAM_VIRUS_FAIL"
CLEAN, INFECTED = "clean", "infected"
# The published policy, when the symbol says it (a failure's symbol names it;
# DMARC_POLICY_ALLOW carries it among its options).
DMARC_POLICY_OF_SYMBOL = {"DMARC_POLICY_REJECT": "reject",
                          "DMARC_POLICY_QUARANTINE": "quarantine",
                          "DMARC_POLICY_SOFTFAIL": "none"}
DMARC_POLICIES = ("none", "quarantine", "reject")
# The metadata keys, lower-case as Swift returns them (queue claim's JSON).
VERDICT_KEYS = ("spam-action", "spam-score", "spf", "dkim", "dmarc", "dmarc-policy",
                "arc", "virus", "virus-name", "verdict-symbols")
MAX_SPAM_SYMBOLS = 5  # besides the SPF/DKIM/DMARC/ARC ones: the highest scores
MAX_SYMBOLS_VALUE = 200  # within Swift's 256-byte metadata values

# What a destination may refuse with 550 (ini key reject_verdicts).
REFUSABLE = {
    "spam-reject": lambda v: v.action == "reject",
    "spam-soft-reject": lambda v: v.action in ("soft reject", "reject"),
    "spf-fail": lambda v: v.spf == "fail",
    "dkim-fail": lambda v: v.dkim == "fail",
    "dmarc-reject": lambda v: v.dmarc == "fail" and v.dmarc_policy == "reject",
    "dmarc-quarantine": lambda v: v.dmarc == "fail" and v.dmarc_policy in ("quarantine",
                                                                          "reject"),
    "virus": lambda v: v.virus == INFECTED,
}


@dataclass(frozen=True)
class Verdicts:
    """rspamd's verdicts on one message, in the fixed vocabulary of the metadata."""

    action: str = UNAVAILABLE
    score: str = UNAVAILABLE
    spf: str = UNAVAILABLE
    dkim: str = UNAVAILABLE
    dmarc: str = UNAVAILABLE
    dmarc_policy: str | None = UNAVAILABLE
    arc: str = UNAVAILABLE
    virus: str | None = None  # None: not scanned (no --antivirus)
    virus_name: str | None = None
    symbols: str = ""

    @property
    def available(self):
        return self.action != UNAVAILABLE

    def metadata(self):
        """The X-Object-Meta-* keys (without the prefix) and their values."""
        values = {"Spam-Action": self.action, "Spam-Score": self.score, "Spf": self.spf,
                  "Dkim": self.dkim, "Dmarc": self.dmarc, "Dmarc-Policy": self.dmarc_policy,
                  "Arc": self.arc, "Virus": self.virus, "Virus-Name": self.virus_name,
                  "Verdict-Symbols": self.symbols}
        return {key: value for key, value in values.items() if value}

    def summary(self):
        """One line for the journal (SWIFTDROP_VERDICTS)."""
        return (f"spam={self.action}/{self.score} spf={self.spf} dkim={self.dkim} "
                f"dmarc={self.dmarc}/{self.dmarc_policy or '-'} arc={self.arc}"
                + ("" if self.virus is None else f" virus={self.virus}"))

    def matching(self, refusals):
        """The names among `refusals` (a destination's reject_verdicts) that apply."""
        return [name for name in refusals if REFUSABLE[name](self)]


NO_VERDICTS = Verdicts()  # rspamd unavailable, nothing scanned for viruses
NO_VERDICTS_SCANNED = Verdicts(virus=UNAVAILABLE)  # the same with --antivirus


class Unreadable(Exception):
    """rspamd answered, but not with a verdict we can trust."""


class RspamdClient:
    """One ``POST /checkv2`` per message; never raises, never outlasts its time."""

    def __init__(self, url, timeout, *, mta_name=None, alerter=None, antivirus=False):
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{url!r} is not an http://HOST:PORT URL")
        self.url = url
        self.host, self.port = parts.hostname, parts.port or 11333
        self.path = (parts.path.rstrip("/") or "") + "/checkv2"
        self.timeout = timeout
        self.mta_name = mta_name  # this MX's name, for rspamd's Authentication-Results
        self.alerter = alerter
        self.antivirus = antivirus  # rspamd has clamd scan every message

    def check(self, envelope, message, *, deadline, queue_id=None):
        """The Verdicts for `message`; NO_VERDICTS (all unavailable) on any failure."""
        seconds = deadline.timeout(self.timeout)
        try:
            if seconds <= 0:
                raise TimeoutError("no time left before the message's deadline")
            answer = self._exchange(self.headers(envelope, message, queue_id), message,
                                    seconds)
            verdicts = parse_answer(answer, antivirus=self.antivirus)
        except (OSError, http.client.HTTPException, Unreadable) as error:
            return self.unavailable(describe(error, seconds))
        except Exception as error:  # a bug of ours must not cost the message either
            log.exception("asking rspamd failed")
            return self.unavailable(f"internal error: {type(error).__name__}: {error}")
        metrics.VERDICT_CHECKS.labels("checked").inc()
        if self.alerter is not None:
            self.alerter.verdicts_available(self.url)
        return verdicts

    def unavailable(self, reason):
        """NO_VERDICTS, after the warning, the metric and the (rate-limited) notice."""
        metrics.VERDICT_CHECKS.labels(UNAVAILABLE).inc()
        log.warning("rspamd at %s: %s; verdicts of this message are unavailable",
                    self.url, reason, extra={"SWIFTDROP_RSPAMD": self.url,
                                             "SWIFTDROP_REASON": reason})
        if self.alerter is not None:
            self.alerter.verdicts_unavailable(self.url, reason)
        return NO_VERDICTS_SCANNED if self.antivirus else NO_VERDICTS

    def headers(self, envelope, message, queue_id):
        """rspamd's request headers: the real client from XFORWARD, not Postfix's 127.0.0.1."""
        xforward = envelope.xforward
        headers = [("Content-Length", str(message.size)), ("From", envelope.mail_from or "<>")]
        address = xforward.get("ADDR") or ""
        if address[:5].upper() == "IPV6:":  # Postfix's XFORWARD form of an IPv6 address
            address = address[5:]
        for name, value in (("IP", address), ("Helo", xforward.get("HELO")),
                            ("Hostname", xforward.get("NAME")), ("Queue-Id", queue_id),
                            ("MTA-Name", self.mta_name)):
            if value:
                headers.append((name, value))
        headers += [("Rcpt", recipient) for recipient in envelope.recipients]
        return [(name, header_value(value)) for name, value in headers]

    def _exchange(self, headers, message, seconds):
        """Send the spooled message, return the answer's body; closed after `seconds`."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=seconds,
                                                blocksize=SEND_BLOCK)
        # The socket timeout bounds each step; the watchdog bounds their sum.
        watchdog = _Watchdog(connection, seconds)
        try:
            connection.putrequest("POST", self.path, skip_accept_encoding=True)
            for name, value in headers:
                connection.putheader(name, value)
            connection.endheaders()
            message.spool.seek(0)
            while block := message.spool.read(SEND_BLOCK):
                connection.send(block)
            response = connection.getresponse()
            body = response.read(MAX_ANSWER + 1)
        except (OSError, http.client.HTTPException):
            if watchdog.fired:
                raise TimeoutError from None
            raise
        finally:
            watchdog.cancel()
            connection.close()
        if watchdog.fired:
            raise TimeoutError
        if response.status != 200:
            raise Unreadable(f"answered HTTP {response.status} {response.reason}")
        if len(body) > MAX_ANSWER:
            raise Unreadable("answered more than 4 MiB")
        return body


class _Watchdog:
    """Cuts a request's connection when its time is up, however slowly rspamd trickles."""

    def __init__(self, connection, seconds):
        self.connection = connection
        self.fired = False
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True
        self._timer.start()

    def _cut(self):
        self.fired = True
        if self.connection.sock is not None:
            try:
                self.connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cancel(self):
        self._timer.cancel()


def header_value(text):
    """A request header value: UTF-8 (SMTPUTF8 addresses), no control characters."""
    return "".join(ch if ch.isprintable() else "?" for ch in str(text)).encode("utf-8")


def describe(error, seconds):
    if isinstance(error, (TimeoutError, socket.timeout)):
        return f"no answer within {seconds:.1f} s"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, Unreadable):
        return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def parse_answer(body, *, antivirus=False):
    """Verdicts from /checkv2's JSON; Unreadable if it is not what rspamd sends.

    `antivirus`: rspamd was set to have clamd scan the message, so no
    virus symbol means clean.
    """
    try:
        answer = json.loads(body)
    except ValueError:
        raise Unreadable("answered something that is not JSON") from None
    if not isinstance(answer, dict):
        raise Unreadable("answered JSON that is not an object")
    action, score, symbols = answer.get("action"), answer.get("score"), answer.get("symbols")
    if action not in ACTIONS:
        raise Unreadable(f"answered an unknown action {str(action)[:40]!r}")
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise Unreadable("answered without a numeric score")
    if not isinstance(symbols, dict) or not all(isinstance(value, dict)
                                                for value in symbols.values()):
        raise Unreadable("answered without a symbols object")
    spf, spf_symbol = _decide(symbols, SPF_SYMBOLS)
    dkim, dkim_symbol = _decide(symbols, DKIM_SYMBOLS)
    dmarc, dmarc_symbol = _decide(symbols, DMARC_SYMBOLS)
    arc, arc_symbol = _decide(symbols, ARC_SYMBOLS)
    virus, virus_name, virus_symbol = _virus(symbols) if antivirus else (None, None, None)
    deciding = [symbol for symbol in (spf_symbol, dkim_symbol, dmarc_symbol, arc_symbol,
                                      virus_symbol) if symbol]
    return Verdicts(action=action, score=f"{score:.2f}", spf=spf, dkim=dkim, dmarc=dmarc,
                    dmarc_policy=_dmarc_policy(symbols, dmarc_symbol), arc=arc,
                    virus=virus, virus_name=virus_name,
                    symbols=_symbols_value(deciding, symbols,
                                           pre_result=answer.get("is_skipped") is True))


def _decide(symbols, meanings):
    """(verdict, symbol) of the first deciding symbol present, else ("none", None)."""
    for symbol, verdict in meanings.items():
        if symbol in symbols:
            return verdict, symbol
    return "none", None


def _virus(symbols):
    """(verdict, the first name clamd gave or None, the deciding symbol or None)."""
    if VIRUS_SYMBOL in symbols:
        options = symbols[VIRUS_SYMBOL].get("options") or []
        names = [str(name) for name in options] if isinstance(options, list) else []
        name = "".join(ch if ch.isprintable() and ch.isascii() else "?"
                       for ch in names[0])[:MAX_SYMBOLS_VALUE] if names else None
        return INFECTED, name, VIRUS_SYMBOL
    if VIRUS_FAIL_SYMBOL in symbols:
        return UNAVAILABLE, None, VIRUS_FAIL_SYMBOL
    return CLEAN, None, None


def _dmarc_policy(symbols, dmarc_symbol):
    if dmarc_symbol in DMARC_POLICY_OF_SYMBOL:
        return DMARC_POLICY_OF_SYMBOL[dmarc_symbol]
    if dmarc_symbol is not None:
        options = symbols[dmarc_symbol].get("options") or []
        for option in options if isinstance(options, list) else []:
            if option in DMARC_POLICIES:
                return option
    return None


def _symbols_value(deciding, symbols, *, pre_result):
    """The deciding symbols, then the highest-scoring others: one short value.

    A pre-result (GTUBE, a ratelimit) decides the action before the scan,
    with symbols of score 0, so then those few symbols are the reason.
    """
    others = [name for name in symbols if name not in deciding
              and (pre_result or _score(symbols[name]) > 0)]
    others.sort(key=lambda name: -_score(symbols[name]))
    text = ""
    for name in deciding + others[:MAX_SPAM_SYMBOLS]:
        candidate = f"{text} {name}" if text else name
        if len(candidate) > MAX_SYMBOLS_VALUE:
            break
        text = candidate
    return "".join(ch if ch.isalnum() or ch in " _" else "?" for ch in text)


def _score(symbol):
    score = symbol.get("score")
    return score if isinstance(score, (int, float)) and not isinstance(score, bool) else 0
