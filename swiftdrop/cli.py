"""The ``swiftdrop`` command: ``serve``, ``check``, ``queue``, ``status``.

Each command imports what it needs when it runs, not at the top: ``--help``
or ``check --config-only`` must not pay for Swift's client libraries, and
``queue`` not for the filter.
"""

import argparse
import logging
import os
import stat
import sys
import textwrap

from . import __version__, migrate
from . import config as config_module
from .arguments import (
    CommandLineParser,
    alert_webhook_url,
    comma_list,
    duration,
    host_and_port,
    journal_match,
    listen_address,
    loopback_address,
    metadata_text,
    output_file,
    point_in_time,
    positive_count,
    positive_duration,
    purge_age,
    rspamd_url,
)
from .process import EX_CONFIG, EX_USAGE, configure_logging, print_config_error
from .queue_commands import queue_command
from .retries import retry_schedule
from .shards import shard_destinations

# Postfix gives up on the filter after smtpd_proxy_timeout (100 s by default);
# our reply must come well before, or a message stored after the client was
# told 451 would be stored twice when the client retries.
DEFAULT_STORE_TIMEOUT = 60.0
DEFAULT_MAX_MESSAGE_SIZE = 51 * 1024 * 1024
# RFC 5321 section 4.5.1 (postmaster) and RFC 2142 (abuse, hostmaster).
DEFAULT_ADMIN_LOCAL_PARTS = ("postmaster", "abuse", "hostmaster")
REPLY_DETAILS = ("id", "full")
RSPAMD_TIMEOUT = 5.0  # seconds; a share of the message's own --store-timeout
FINISHED_AS_FAILED = "finished as failed with swiftdrop queue finish"
QUEUE_CONTRACT = """\
The promise: every message is handed to a consumer at least once, and a
repeat can be recognised. Each hand-over is counted: claim's "delivery"
(1, 2, ...) and "redelivered" (false/true), SWIFTDROP_DELIVERY and
SWIFTDROP_REDELIVERED (0/1) for run's COMMAND. The object name ("name",
SWIFTDROP_NAME), unique in its container, is the idempotency key.

A message comes again, with a higher delivery number, after a retry
(run's COMMAND exiting with anything but 0 or 65, the one permanent
failure: 75, a crash, a signal, a timeout; or finish --state retry), or
once recover has returned it: its worker died, could not record its
finish, or lost its lock because Swift (or Redis) was away for longer than
the lease allows.

It can come twice with the same number only when two claims both win its
lock: with queue_lock = swift when two lock PUTs race (If-None-Match is a
check before a write; more so across replicas) and neither claim sees the
other's token; with either lock when Swift's clocks are stepped. A holder
frozen past its lease (a stopped process, a paused VM) is fenced: its moves
carry If-Unmodified-Since of its claim's copy, Swift refuses them once the
message was claimed again, and that later claim has the higher number. So
queue_lock = redis is strict while its one Redis server keeps its data.

The envelope comes whole: claim's "rcpt_to" lists every recipient of the
copy (with "rcpt_count", "mail_from", "message_id", "dedup_md5"); run's
COMMAND gets SWIFTDROP_RCPT_TO (one address a line), SWIFTDROP_RCPT_COUNT,
SWIFTDROP_RCPT_FILE (the same list in a file) and SWIFTDROP_DEDUP_MD5.
--dedup's key is Message-ID, Dedup-Md5 and the sorted recipients.

With queue_index = redis-stream the same commands work on the Redis
stream the filter announces each copy in: bodies stay in cur/ and are
never copied, --group NAME gives each team a consumer group of its own
(each gets every message), delivery is the stream's own count, and
"possible_repeat" (true also makes "redelivered" true) marks a copy found
again after Redis lost its data. reconcile announces what the filter could
not. See docs/stream-index.md.

See docs/queue.md for the details.
"""
EXIT_STATUS = """\
Exit status: 0 done; 1 done with a part that was not there or not yours
(claim found nothing, finish a claim not yours or not in processing/, check
a section failing, replay a NAME not found); 64 (EX_USAGE) the command line
is wrong, said in one line naming the subcommand and the option or value;
75 (EX_TEMPFAIL) Swift or Keystone away, try again later (queue); 77
(EX_NOPERM) Swift refused a right (queue); 78 (EX_CONFIG) the ini, its
--destination section or import-env's --env-file is wrong. queue run's
COMMAND answers with a contract of its own: see swiftdrop queue run --help.
"""
REPLAY_CONTRACT = """\
Without --execute, lists what it would replay, one line each: name,
delivery time, attempts and Last-Error (Failed-Reason when no attempt
recorded an error): what failed, and why. With --execute, moves each back
to cur/: attempts reset to 0, Last-Error and Not-Before dropped, Deliveries
kept, Replayed counted and Replayed-At set, so the next hand-over is marked
(delivery 2 or more, "replayed" in claim's JSON, SWIFTDROP_REPLAYED).

Choose by NAME, by delivery time (--since, --until: the time in the name),
or --all. A message whose lock is held, or that is in cur/, processing/ or
retry/ already, is not replayed, and the line says why. Exit status 1 when
a NAME is not in --from, after doing the rest.
"""
RUN_CONTRACT = """\
Each message goes to COMMAND's stdin. COMMAND's exit status is the
contract: 0 done; 65 (EX_DATAERR) failed for good, the one permanent
code; anything else is a retry: 75, 1, 2 (a crash, a Go panic, a Node
exception), a signal (the OOM killer's SIGKILL), or running past
--timeout. A message whose attempts run out goes to failed/ saying the last
cause ("gave up after 30 attempts; last: killed by SIGKILL").

"""
WEBHOOK_CONTRACT = """\
Without COMMAND, each message is POSTed to the destination's webhook_url
(or --webhook URL), signed with HMAC-SHA256 (X-SwiftDrop-Signature: v1=...
over "<X-SwiftDrop-Timestamp>.<body>"). The answer is the contract: 2xx
done; 406 and 410 failed for good; anything else is a retry: 429, 5xx,
other 4xx, 3xx (redirects are not followed), a timeout (webhook_timeout,
30 s, for the whole POST), a refused or reset connection, a TLS failure. A
Retry-After on 429 or 503 is waited for if longer than the back-off. See
docs/webhooks.md.

"""


def retry_schedule_text():
    """The default retry schedule in time, for run's --help."""
    settings = config_module.QueueSettings()
    rows = retry_schedule(settings)
    delays = sorted({delay for _, delay, _ in rows if delay is not None})
    return textwrap.fill(
           f"Retry schedule with the defaults (queue_retry_delay {settings.retry_delay:g}, "
            f"queue_retry_longest {settings.retry_longest:g}, queue_max_attempts "
            f"{settings.max_attempts}): a failed attempt is tried again after "
            f"{', '.join(span(delay) for delay in delays)} (up to 10% more, at random), "
            f"the longest from then on; attempt {settings.max_attempts} comes at least "
            f"{span(rows[-1][2])} after attempt 1 failed, and goes to failed/ if it fails "
            "too: a consumer may be down for a day. See docs/queue.md, \"Exit status\".")


def span(seconds):
    """1 min, 2 h, 24 h 3 min: a time span as a person reads it."""
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{seconds:g} s" if seconds < 60 else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h" + (f" {minutes} min" if minutes else "")


def build_parser():
    parser = CommandLineParser(
        prog="swiftdrop",
        description="Postfix before-queue filter that stores every accepted message in Swift.",
        epilog=EXIT_STATUS)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_parser = commands.add_parser("serve", help="run the SMTP filter")
    add_config_option(serve_parser)
    serve_parser.add_argument(
        "--listen", action="append", type=listen_address, metavar="ADDRESS",
        help="bind unix:/path, 127.0.0.1:PORT or [::1]:PORT instead of taking the "
             "socket from systemd (repeatable; loopback only)")
    serve_parser.add_argument("--hostname", help="host name for object names and the banner")
    serve_parser.add_argument("--max-message-size", type=positive_count,
                              default=DEFAULT_MAX_MESSAGE_SIZE, metavar="BYTES",
                              help="refuse larger messages with 552 "
                              "(keep above Postfix's message_size_limit)")
    serve_parser.add_argument("--store-timeout", type=positive_duration,
                              default=DEFAULT_STORE_TIMEOUT, metavar="SECONDS",
                              help="give up storing a message (451) after "
                              "this long; keep well under Postfix's smtpd_proxy_timeout")
    serve_parser.add_argument("--idle-timeout", type=positive_duration, default=300,
                              metavar="SECONDS",
                              help="close a connection that sends nothing for this long")
    serve_parser.add_argument("--spool-dir", help="where messages over 256 KiB are spooled "
                              "(default: the temporary directory)")
    serve_parser.add_argument("--max-connections", type=positive_count, default=200,
                              help="concurrent sessions; more wait in the listen backlog")
    serve_parser.add_argument("--alert-webhook", type=alert_webhook_url, metavar="URL",
                              default=os.environ.get("SWIFTDROP_ALERT_WEBHOOK") or None,
                              help="POST a JSON notice here when storing fails (besides the "
                                   "journal entry at priority err); default "
                                   "$SWIFTDROP_ALERT_WEBHOOK, which keeps a secret URL out "
                                   "of the process list")
    serve_parser.add_argument("--alert-interval", type=duration, default=600, metavar="SECONDS",
                              help="at most one notice per destination this often; the next "
                                   "says how many failures were not reported")
    serve_parser.add_argument("--admin-relay", type=loopback_address, metavar="HOST:PORT",
                              help="loopback Postfix smtpd that queues mail for the "
                                   "administrator; recipients with an --admin-local-parts "
                                   "local part go there instead of Swift")
    serve_parser.add_argument("--admin-local-parts", type=comma_list,
                              default=",".join(DEFAULT_ADMIN_LOCAL_PARTS), metavar="LIST",
                              help="role addresses of every domain that go to the admin "
                                   "relay unless a section routes them (default: "
                                   "%(default)s)")
    serve_parser.add_argument("--alert-mail", metavar="ADDRESS",
                              help="mail failure notices to ADDRESS through --admin-relay")
    serve_parser.add_argument("--reply-detail", choices=REPLY_DETAILS, default="id",
                              help="id: the 250 reply names an opaque id, which the journal "
                                   "entry carries as SWIFTDROP_ID; full: container and object "
                                   "name of every copy (tells the sender your layout)")
    serve_parser.add_argument("--metrics-listen", type=host_and_port, metavar="ADDRESS",
                              help="serve Prometheus metrics on http://ADDRESS/metrics "
                                   "(127.0.0.1:PORT or [::1]:PORT; another address only if "
                                   "you mean it: the figures are not secret, but not public)")
    serve_parser.add_argument("--tls-certificate", action="append", default=[], metavar="PATH",
                              help="export when the certificate in PATH (PEM, e.g. Postfix's "
                                   "/etc/postfix/tls/cert.pem) expires, read at each scrape of "
                                   "--metrics-listen; repeatable")
    serve_parser.add_argument("--rspamd-url", type=rspamd_url, metavar="URL",
                              help="ask this rspamd (e.g. http://127.0.0.1:11333) for the "
                                   "SPF, DKIM, DMARC and spam verdicts of every message and "
                                   "store them as metadata on each copy (default: no "
                                   "verdicts); see reject_verdicts in the ini")
    serve_parser.add_argument("--antivirus", action="store_true",
                              help="the rspamd of --rspamd-url has clamd scan every message "
                                   "(its antivirus module, symbol CLAM_VIRUS): store the "
                                   "virus verdict, clean, infected or unavailable (default: "
                                   "not scanned, no virus verdict)")
    serve_parser.add_argument("--rspamd-timeout", type=positive_duration, default=RSPAMD_TIMEOUT,
                              metavar="SECONDS", help="give up on rspamd after this long "
                              "(cut to what is left of --store-timeout) and store the message "
                              "with every verdict \"unavailable\" (default: %(default)s)")
    serve_parser.add_argument("--log-target", choices=("auto", "journal", "stderr"),
                              default="auto", help="auto: journal when run by systemd")

    check_parser = commands.add_parser(
        "check", help="validate the config, authenticate and HEAD every container")
    add_config_option(check_parser)
    check_parser.add_argument("--config-only", action="store_true",
                              help="validate the file without contacting Swift "
                                   "(for a deployment tool's validate step)")
    add_queue_commands(commands)
    add_status_command(commands)

    import_parser = commands.add_parser(
        "import-env", help="convert the Docker SwiftDrop's environment to an ini or group_vars")
    import_parser.add_argument("--env-file", metavar="FILE",
                               help="read KEY=VALUE lines from FILE (default: this process's "
                                    "environment)")
    import_parser.add_argument("--dialect", choices=tuple(migrate.DIALECTS),
                               help="how the earlier SwiftDrop's users passed FILE: docker "
                                    "(docker run --env-file: each line literal, quotes kept) "
                                    "or shell (sourced: quotes and escapes read, $ refused); "
                                    "required unless FILE reads the same both ways")
    import_parser.add_argument("--format", choices=("ini", "ansible"), default="ini",
                               help="ini: /etc/swiftdrop.ini as confd wrote it; ansible: "
                                    "group_vars for roles/swiftdrop, secrets in a Vault part")
    return parser


def add_status_command(commands):
    status = commands.add_parser(
        "status", help="the last hour from the journal: stored/failed, store time, per "
                       "destination, the last failure; the socket; the metrics if given")
    status.add_argument("--since", type=duration, default=3600, metavar="AGE",
                        help="how far back, e.g. 30m, 12h, 2d (default: 1h)")
    status.add_argument("--match", action="append", default=[], type=journal_match,
                        metavar="FIELD=VALUE",
                        help="only journal entries with this field too, as journalctl "
                             "takes it (e.g. _HOSTNAME=mx1, _PID=1234; repeatable)")
    status.add_argument("--metrics", type=host_and_port, metavar="ADDRESS",
                        help="the filter's --metrics-listen address, for what it "
                             "knows now (sessions, bytes held, counts since start)")
    status.add_argument("--json", action="store_true", help="one JSON object")


def import_env(options):
    """``swiftdrop import-env``: print the converted configuration."""
    if options.dialect and not options.env_file:
        print("swiftdrop import-env: --dialect says how to read --env-file's FILE; "
              "the environment needs no reading", file=sys.stderr)
        return EX_USAGE
    variables, warnings = dict(os.environ), []
    try:
        if options.env_file:
            variables, warnings = migrate.read_env_file(
                options.env_file, options.dialect, os.environ)
        for warning in warnings:
            print(f"swiftdrop import-env: warning: {warning}", file=sys.stderr)
        convert = migrate.to_ini if options.format == "ini" else migrate.to_ansible
        sys.stdout.write(convert(variables))
    except migrate.DialectNeeded as error:
        print(f"swiftdrop import-env: {error}", file=sys.stderr)
        return EX_USAGE
    except (OSError, migrate.MigrationError) as error:
        print(f"swiftdrop import-env: {error}", file=sys.stderr)
        return EX_CONFIG
    return 0


def add_queue_commands(commands):
    queue_parser = commands.add_parser(
        "queue", help="work through a destination's container: claim, finish, recover, ...",
        description="Work through a destination's container as a queue.\n\n" + QUEUE_CONTRACT,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_option(queue_parser)
    queue_parser.add_argument("--destination", default=config_module.CATCH_ALL,
                              metavar="SECTION", help="the ini section (default: DEFAULT)")
    queue_parser.add_argument("--group", metavar="NAME",
                              help="with queue_index = redis-stream: the consumer group, one "
                                   "per team; each group gets every message (default: "
                                   f"{config_module.DEFAULT_GROUP}; recover and stats without "
                                   "it: every group)")
    actions = queue_parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    claim = actions.add_parser("claim", help="move the oldest message to processing/ and "
                               "print its name, lock token, delivery count and metadata "
                               "as JSON")
    claim.add_argument("--output", type=output_file, metavar="FILE",
                       help="write the message's bytes here")
    claim.add_argument("--dedup", action="store_true", help="skip (mark done) messages whose "
                       "Message-ID and content were done within queue_dedup_window")
    finish = actions.add_parser("finish", help="move a claimed message on and release it")
    finish.add_argument("name")
    finish.add_argument("--token", help="the token claim printed (required: without it, "
                        "finish could move another worker's claim)")
    finish.add_argument("--state", required=True, choices=("done", "failed", "retry"))
    finish.add_argument("--reason", type=metadata_text, default=FINISHED_AS_FAILED,
                        metavar="TEXT", help="why, with --state failed: the message's "
                        "Failed-Reason (default: \"%(default)s\")")
    actions.add_parser("recover", help="return messages of dead workers to retry/ and "
                       "resolve leftovers of interrupted moves")
    actions.add_parser("reconcile", help="with queue_index = redis-stream: announce the "
                       "stored copies the filter could not announce (Redis away, the filter "
                       "killed); each copy is announced once, however often this runs")
    purge = actions.add_parser("purge", help="delete old messages (dry run unless --execute)")
    purge.add_argument("--older-than", required=True, type=purge_age, metavar="AGE",
                       help="e.g. 30d, 12h, 90m, 3600")
    purge.add_argument("--prefix", default="done/", choices=("done/", "failed/", "cur/",
                                                              "retry/", "envelopes/"),
                       help="envelopes/: the recipient lists kept beside long envelopes; "
                       "purge them with the age failed/ is purged with")
    purge.add_argument("--include-unprocessed", action="store_true",
                       help="needed for --prefix cur/ or retry/: they hold mail no consumer "
                       "has processed yet")
    purge.add_argument("--execute", action="store_true", help="really delete")
    replay = actions.add_parser(
        "replay", help="list the dead letters in failed/ (name, last error, attempts, "
                       "delivery time), or with --execute move them back to cur/",
        description=REPLAY_CONTRACT, formatter_class=argparse.RawDescriptionHelpFormatter)
    replay.add_argument("names", nargs="*", metavar="NAME",
                        help="these messages (base names, or with the --from prefix)")
    replay.add_argument("--from", dest="source", default="failed/",
                        choices=("failed/", "done/"), help="where to take them from "
                        "(default: %(default)s)")
    replay.add_argument("--since", type=point_in_time, metavar="WHEN",
                        help="those delivered at or after WHEN: an ISO 8601 time "
                             "(2026-12-01T10:00Z; UTC unless it says) or an age (2h, 30m, 1d)")
    replay.add_argument("--until", type=point_in_time, metavar="WHEN",
                        help="those delivered before WHEN")
    replay.add_argument("--all", action="store_true", help="every message in --from")
    replay.add_argument("--execute", action="store_true", help="really move them")
    replay.add_argument("--json", action="store_true", help="one JSON array")
    stats = actions.add_parser("stats", help="count and bytes per prefix, oldest waiting")
    stats.add_argument("--format", choices=("text", "json", "prometheus"), default="text",
                       help="prometheus: the text exposition format, e.g. for node_exporter's "
                            "textfile collector")
    stats.add_argument("--json", action="store_const", const="json", dest="format",
                       help="the same as --format json")
    stats.add_argument("--output", type=output_file, metavar="FILE",
                       help="write to FILE, replacing it atomically (default: stdout)")
    run = actions.add_parser("run", help="worker loop: pipe each message to COMMAND (exit 0 "
                             "done, 65 failed, anything else retry), or POST it to the "
                             "destination's webhook",
                             description=RUN_CONTRACT + WEBHOOK_CONTRACT
                             + retry_schedule_text(),
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--dedup", action="store_true")
    run.add_argument("--poll", type=positive_duration, default=5.0, metavar="SECONDS",
                     help="wait this long when the queue is empty")
    run.add_argument("--once", action="store_true", help="stop when the queue is empty")
    run.add_argument("--concurrency", type=positive_count, default=1, metavar="N",
                     help="N worker loops in this process, each with its own connection")
    run.add_argument("--grace", type=duration, default=30.0, metavar="SECONDS",
                     help="after SIGTERM, let a running command finish for this long")
    run.add_argument("--timeout", type=duration, metavar="SECONDS",
                     help="kill a command running longer (SIGTERM, SIGKILL 5 s later) and "
                          "retry its message; 0: no limit (default: the ini's "
                          "queue_command_timeout, 900); a webhook has webhook_timeout")
    run.add_argument("--webhook", metavar="URL", help="POST each message to URL instead of "
                     "the ini's webhook_url (the other webhook_* keys apply; the secret is "
                     "webhook_secret, else $SWIFTDROP_WEBHOOK_SECRET); not with a COMMAND")
    run.add_argument("--webhook-format", choices=config_module.WEBHOOK_FORMATS,
                     help="json: the parsed message; raw: its bytes as message/rfc822 "
                          "(default: the ini's webhook_format, json)")
    run.add_argument("--metrics-listen", type=host_and_port, metavar="ADDRESS",
                     help="serve the worker's Prometheus metrics on http://ADDRESS/metrics "
                          "(127.0.0.1:PORT or [::1]:PORT)")
    run.add_argument("worker_command", nargs=argparse.REMAINDER, metavar="-- COMMAND")


def add_config_option(parser):
    parser.add_argument("--config", default=config_module.DEFAULT_PATH, metavar="PATH",
                        help="the ini file (default: %(default)s)")


def check(options):
    """Print one line per section; exit 0 only if every destination is usable."""
    configure_logging("stderr", level=logging.WARNING)
    try:
        config = config_module.load(options.config)
    except config_module.ConfigError as error:
        print_config_error(error)
        return EX_CONFIG
    mode = os.stat(config.path).st_mode
    if mode & stat.S_IROTH:
        print(f"swiftdrop: warning: {config.path} is world-readable and holds Swift keys; "
              "chmod 0640 it", file=sys.stderr)
    def where(destination):
        return (f"[{destination.section}] container {destination.container} "
                f"in {destination.account.describe()}")

    # Every shard container of a destination, each a line: a missing one would
    # fail the copies that hash to it (swiftdrop.shards).
    containers = [shard for destination in config.destinations
                  for shard in shard_destinations(destination)]
    if options.config_only:
        for destination in containers:
            print(f"ok   {where(destination)}")
        return 0
    from .failures import describe_failure  # noqa: PLC0415 - see the module docstring
    from .storage import SwiftStore  # noqa: PLC0415

    store, failures = SwiftStore(), 0
    for destination in containers:
        try:
            headers = store.check(destination)
        except Exception as error:  # whatever breaks one section, report it and go on
            failures += 1
            print(f"FAIL {where(destination)}: {describe_failure(error)}")
            continue
        index = ""
        if destination.queue.index == "redis-stream":
            from .stream_index import index_entries  # noqa: PLC0415 - see the module docstring

            # A Redis away costs no mail (the reconciler announces later): a
            # warning, never a failed check, or the filter's ExecStartPre would
            # keep it from starting while Redis is down.
            try:
                index = f", {index_entries(destination)} entries in its stream index"
            except Exception as error:  # Redis away, or refusing us
                index = (f"; warning: its stream index does not answer ({error}): copies "
                         "wait for the reconciler")
        print(f"ok   {where(destination)}: "
              f"{headers.get('x-container-object-count', '?')} objects{index}")
    return 1 if failures else 0


def main(argv=None):
    parser = build_parser()
    if "_ARGCOMPLETE" in os.environ:  # bash asks for completions (python3-argcomplete)
        import argcomplete  # noqa: PLC0415 - only then, not on every start

        argcomplete.autocomplete(parser)
    options = parser.parse_args(argv)
    if options.command == "serve":
        if options.alert_mail and not options.admin_relay:
            parser.chosen(options).error(
                "--alert-mail needs --admin-relay (the mail goes through Postfix)")
        from .service import serve  # noqa: PLC0415 - see the module docstring

        return serve(options)
    if options.command == "queue":
        return queue_command(options)
    if options.command == "status":
        from .status import status_command  # noqa: PLC0415 - see the module docstring

        return status_command(options)
    if options.command == "import-env":
        return import_env(options)
    return check(options)


if __name__ == "__main__":
    sys.exit(main())
