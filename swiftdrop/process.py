"""What every swiftdrop command sets up first: its logging and its exit status for bad config.

Apart from :mod:`swiftdrop.service` so that the short-lived commands
(``check``, ``queue``) get it without importing the filter.
"""

import logging
import os
import sys

from systemd.journal import JournalHandler

# sysexits.h's exit statuses, as the commands use them (swiftdrop --help lists them)
EX_USAGE = 64  # the command line is wrong (argparse alone would exit 2)
EX_TEMPFAIL = 75  # a service we need is away; try again later
EX_NOPERM = 77  # Swift refused this user a request (403); someone must grant it
EX_CONFIG = 78  # systemd shows it as "exited, status=78/CONFIG"


def configure_logging(target="auto", level=logging.INFO):
    """Log to journald with structured fields under systemd, else to stderr."""
    if target == "auto":
        target = "journal" if os.environ.get("JOURNAL_STREAM") else "stderr"
    if target == "journal":
        handler = JournalHandler(SYSLOG_IDENTIFIER="swiftdrop")
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("swiftdrop: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # swiftclient and urllib3 log request details (headers) at debug level.
    for noisy in ("swiftclient", "urllib3", "requests", "keystoneclient", "keystoneauth"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def print_config_error(error):
    """Every problem of the file, a line each (``check --config-only`` lists them all)."""
    for problem in error.problems:
        print(f"swiftdrop: {problem.line}", file=sys.stderr)
