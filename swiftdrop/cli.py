"""The ``swiftdrop`` command: ``serve``, ``check``."""

import argparse
import logging
import os
import stat
import sys

from . import config as config_module
from .service import EX_CONFIG, configure_logging, serve
from .storage import SwiftStore

# Postfix gives up on the filter after smtpd_proxy_timeout (100 s by default);
# our reply must come well before, or a message stored after the client was
# told 451 would be stored twice when the client retries.
DEFAULT_STORE_TIMEOUT = 60.0
DEFAULT_MAX_MESSAGE_SIZE = 51 * 1024 * 1024


def build_parser():
    parser = argparse.ArgumentParser(
        prog="swiftdrop",
        description="Postfix before-queue filter that stores every accepted message in Swift.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_parser = commands.add_parser("serve", help="run the SMTP filter")
    add_config_option(serve_parser)
    serve_parser.add_argument(
        "--listen", action="append", metavar="ADDRESS",
        help="bind unix:/path, 127.0.0.1:PORT or [::1]:PORT instead of taking the "
             "socket from systemd (repeatable; loopback only)")
    serve_parser.add_argument("--hostname", help="host name for object names and the banner")
    serve_parser.add_argument("--max-message-size", type=int, default=DEFAULT_MAX_MESSAGE_SIZE,
                              metavar="BYTES", help="refuse larger messages with 552 "
                              "(keep above Postfix's message_size_limit)")
    serve_parser.add_argument("--store-timeout", type=float, default=DEFAULT_STORE_TIMEOUT,
                              metavar="SECONDS", help="give up storing a message (451) after "
                              "this long; keep well under Postfix's smtpd_proxy_timeout")
    serve_parser.add_argument("--idle-timeout", type=float, default=300, metavar="SECONDS",
                              help="close a connection that sends nothing for this long")
    serve_parser.add_argument("--spool-dir", help="where messages over 1 MiB are spooled "
                              "(default: the temporary directory)")
    serve_parser.add_argument("--max-connections", type=int, default=200,
                              help="concurrent sessions; more wait in the listen backlog")
    serve_parser.add_argument("--log-target", choices=("auto", "journal", "stderr"),
                              default="auto", help="auto: journal when run by systemd")

    check_parser = commands.add_parser(
        "check", help="validate the config, authenticate and HEAD every container")
    add_config_option(check_parser)
    check_parser.add_argument("--config-only", action="store_true",
                              help="validate the file without contacting Swift "
                                   "(for a deployment tool's validate step)")
    return parser


def add_config_option(parser):
    parser.add_argument("--config", default=config_module.DEFAULT_PATH, metavar="PATH",
                        help="the ini file (default: %(default)s)")


def check(options):
    """Print one line per section; exit 0 only if every destination is usable."""
    configure_logging("stderr", level=logging.WARNING)
    try:
        config = config_module.load(options.config)
    except config_module.ConfigError as error:
        print(f"swiftdrop: {error}", file=sys.stderr)
        return EX_CONFIG
    mode = os.stat(config.path).st_mode
    if mode & stat.S_IROTH:
        print(f"swiftdrop: warning: {config.path} is world-readable and holds Swift keys; "
              "chmod 0640 it", file=sys.stderr)
    if options.config_only:
        for destination in config.destinations:
            print(f"ok   [{destination.section}] container {destination.container} "
                  f"in {destination.account.describe()}")
        return 0
    store, failures = SwiftStore(), 0
    for destination in config.destinations:
        where = (f"[{destination.section}] container {destination.container} "
                 f"in {destination.account.describe()}")
        try:
            headers = store.check(destination)
        except Exception as error:  # whatever breaks one section, report it and go on
            failures += 1
            print(f"FAIL {where}: {error}")
            continue
        print(f"ok   {where}: {headers.get('x-container-object-count', '?')} objects")
    return 1 if failures else 0


def main(argv=None):
    options = build_parser().parse_args(argv)
    if options.command == "serve":
        return serve(options)
    return check(options)


if __name__ == "__main__":
    sys.exit(main())
