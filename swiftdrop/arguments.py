"""What the command line may say: each option's value checked before anything starts.

A bad value is refused by the parser, in one line naming the option, with
exit status 64 (EX_USAGE): never a traceback, and never after a command has
begun to change anything (issue 25's bad-input suite, tests/test_bad_input_cli.py).
"""

import argparse
import datetime
import os
import re
import time
import urllib.parse

from . import config as config_module
from .admin_relay import parse_address
from .process import EX_USAGE
from .settings import duration_seconds

MAX_METADATA_VALUE = 256  # Swift's default max_meta_value_length


class CommandLineParser(argparse.ArgumentParser):
    """argparse, refusing a bad command line in one line and with EX_USAGE (64).

    Plain argparse prints its usage lines before the error and exits 2, which
    a script cannot tell from a command's own failures: one line names the
    subcommand and what is wrong, and 64 is what sysexits.h says it is.
    Subcommands' parsers are of this class too (add_subparsers makes them so).
    """

    def error(self, message):
        one_line = message.replace("\n", "\\n")  # a newline typed into an argument
        self.exit(EX_USAGE, f"{self.prog}: {one_line} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but unknown arguments are refused by the subcommand they follow."""
        options, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.chosen(options).error(f"unrecognized arguments: {' '.join(unknown)}")
        return options

    def chosen(self, options):
        """The parser of the deepest subcommand `options` were parsed by (``queue purge``)."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):  # argparse has no public way
                name = getattr(options, action.dest, None)
                if name in action.choices:
                    return action.choices[name].chosen(options)
        return self


def metadata_text(text):
    """`text` if Swift takes it as a metadata value: printable, at most 256 bytes."""
    if not text.isprintable() or len(text.encode()) > MAX_METADATA_VALUE:
        raise argparse.ArgumentTypeError(
            f"{text!r}: at most {MAX_METADATA_VALUE} bytes of printable text")
    return text


def point_in_time(text):
    """Unix seconds from an ISO 8601 time (UTC unless it says) or an age: 2h is 2 hours ago."""
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?[dhms]?", text):
        return time.time() - duration(text)
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO 8601 time like 2026-12-01T10:00Z nor an age "
            "like 2h") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def loopback_address(text):
    try:
        parse_address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def listen_address(text):
    """``unix:/path`` or a loopback ``HOST:PORT``: only Postfix on this host may reach us."""
    if text.startswith("unix:"):
        if not text[len("unix:"):]:
            raise argparse.ArgumentTypeError(f"{text!r} names no socket path")
        return text
    host_and_port(text)
    if not config_module.is_loopback(text.rpartition(":")[0].strip("[]")):
        raise argparse.ArgumentTypeError(f"{text!r}: the filter listens on loopback only")
    return text


def rspamd_url(text):
    """http://HOST[:PORT][/PATH], checked now: a bad one would stop the filter at its start."""
    try:
        parts = urllib.parse.urlsplit(text)
        usable = parts.scheme == "http" and parts.hostname and parts.port != 0
    except ValueError:  # a port that is not a number below 65536, an unclosed [V6
        usable = False
    if not usable:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http://HOST:PORT URL")
    return text


def alert_webhook_url(text):
    """An http:// or https:// URL with a valid port; the error shows no credential of it."""
    problem = config_module.webhook_url_problem(text, insecure=True)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def host_and_port(text):
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT or [V6]:PORT")
    return text


def journal_match(text):
    """FIELD=VALUE as journalctl takes it; the journal refuses anything else only later."""
    if not re.fullmatch(r"[A-Z0-9_]+=.*", text, re.DOTALL):
        raise argparse.ArgumentTypeError(f"{text!r} is not FIELD=VALUE (e.g. _HOSTNAME=mx1)")
    return text


def output_file(text):
    """A file that can be written, checked before claim moves a message it could not write."""
    directory = os.path.dirname(os.path.abspath(text))
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text!r} is a directory")
    if not (os.path.isdir(directory) and os.access(directory, os.W_OK)):
        raise argparse.ArgumentTypeError(f"{text!r}: {directory!r} is no directory "
                                         "this user can write in")
    return text


def positive_count(text):
    """A whole number above zero: a count or size of 0 would stop everything."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above zero")
    return number


def comma_list(text):
    return tuple(item.strip() for item in text.split(",") if item.strip())


def duration(text):
    """Seconds from 30d / 12h / 90m / 45s / 3600: finite, and not below zero."""
    seconds = duration_seconds(text)
    if seconds is None or seconds < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30d: "
                                         "finite, and not below zero")
    return seconds


def positive_duration(text):
    """A duration above zero: a timeout, poll or window of 0 would never wait at all."""
    seconds = duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration above zero like 30s")
    return seconds


def purge_age(text):
    """A duration above zero: what purge deletes must have waited a while.

    A negative or zero age makes every object "older" than it: purge
    --older-than=-1d once selected all of cur/, mail nobody had processed.
    """
    seconds = duration(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age above zero like 30d")
    return seconds

