"""``swiftdrop queue ...``: one destination's container, or its stream, as a work queue.

The parser for these commands is in swiftdrop.cli; this is what each does.
Queue modules are imported when a command runs: ``--help`` pays for none.
"""

import collections
import datetime
import json
import os
import signal
import sys
import threading

from . import config as config_module
from .process import (
    EX_CONFIG,
    EX_NOPERM,
    EX_TEMPFAIL,
    EX_USAGE,
    configure_logging,
    print_config_error,
)

UNPROCESSED = ("cur/", "retry/")  # what purge deletes only when told twice
# How late the main thread may see a SIGTERM that the kernel gave a worker thread.
SIGNAL_LATENCY = 0.5  # seconds


def queue_command(options):
    """``swiftdrop queue ...``: one destination's container as a work queue."""
    # A worker under systemd logs to the journal with its fields (a webhook's
    # SWIFTDROP_WEBHOOK_*, for swiftdrop status); the one-shot commands to stderr.
    configure_logging("auto" if options.action == "run" else "stderr")
    # Under systemd stdout is the journal: what recover or purge did is
    # there as soon as it says so, not when the process exits.
    sys.stdout.reconfigure(line_buffering=True)
    try:
        config = config_module.load(options.config)
    except config_module.ConfigError as error:
        print_config_error(error)
        return EX_CONFIG
    sections = {destination.section: destination for destination in config.destinations}
    if options.destination not in sections:
        print(f"swiftdrop: {config.path}: no section [{options.destination}]", file=sys.stderr)
        return EX_CONFIG
    if options.action == "replay" and (problem := replay_selection_problem(options)):
        print(f"swiftdrop: {problem}", file=sys.stderr)
        return EX_USAGE
    from .failures import describe_failure, service_errors  # noqa: PLC0415 - see the module docstring

    destination = sections[options.destination]
    if (problem := index_problem(destination, options)) is not None:
        print(f"swiftdrop: {problem}", file=sys.stderr)
        return EX_USAGE
    if (options.action == "purge" and options.prefix in UNPROCESSED
            and not options.include_unprocessed):
        print(f"swiftdrop: queue purge --prefix {options.prefix} deletes mail no consumer has "
              "processed yet; add --include-unprocessed if that is what you want",
              file=sys.stderr)
        return EX_USAGE
    queue = make_queue(destination, queue_group(options))
    if options.action == "run":
        return run_worker(queue, options)  # it rides out outages itself
    try:
        if options.action == "reconcile":
            return reconcile_command(queue)
        return queue_action(queue, options)
    except (*service_errors(), *queue.errors) as error:
        refusal = queue.refusal(error)
        if refusal is not None:
            print(f"swiftdrop: queue {options.action}: {refusal}; {rights_needed(options)}",
                  file=sys.stderr)
            return EX_NOPERM
        # Swift or Keystone away: say so in one line; a script may try again later.
        print(f"swiftdrop: queue {options.action}: {describe_failure(error)}", file=sys.stderr)
        return EX_TEMPFAIL
    finally:
        queue.close()  # a claim's lock now lasts its lease: finish it within that


def replay_selection_problem(options):
    """Why replay's NAMEs, window and --all do not choose unambiguously, or None."""
    window = options.since is not None or options.until is not None
    if not (options.names or window or options.all):
        return "queue replay needs NAMEs, a window (--since, --until) or --all"
    if options.names and (window or options.all):
        return "queue replay takes NAMEs or a window or --all, not NAMEs with either"
    if options.all and window:
        return "queue replay takes a window or --all, not both"
    return None


def index_problem(destination, options):
    """Why these options do not fit the destination's queue_index (None: they do)."""
    from .stream_index import group_problem  # noqa: PLC0415 - see the module docstring

    streamed = destination.queue.index == "redis-stream"
    if not streamed:
        if options.action == "reconcile" or options.group is not None:
            what = "queue reconcile" if options.action == "reconcile" else "--group"
            return (f"{what} needs queue_index = redis-stream in [{destination.section}] "
                    "(it has the listing queue)")
        return None
    if options.group is not None and (problem := group_problem(options.group)) is not None:
        return problem
    if getattr(options, "dedup", False):
        return "--dedup needs the listing queue (queue_index = listing)"
    if options.action == "replay" and options.source != "failed/":
        return "with queue_index = redis-stream, queue replay takes dead letters (failed/)"
    if options.action == "purge" and options.prefix not in ("done/", "failed/"):
        return "with queue_index = redis-stream, queue purge takes --prefix done/ or failed/"
    return None


def queue_group(options):
    """The consumer group an action works for; None: every group (recover and stats only).

    recover and stats create no group: one nobody consumes would keep every
    body from purge, as purge waits for every group.
    """
    if options.group is None and options.action not in ("recover", "stats"):
        return config_module.DEFAULT_GROUP
    return options.group


def make_queue(destination, group, connection=None):
    """The destination's queue: the container's listing, or its Redis stream index.

    With container_shards > 1, one such queue per shard container behind a
    ShardedQueue, which makes them one (swiftdrop.queue.sharded); their
    connections share one token.
    """
    if destination.container_shards > 1:
        from .queue.connection import SharedToken, connect  # noqa: PLC0415 - see the module docstring
        from .queue.sharded import ShardedQueue  # noqa: PLC0415

        token = SharedToken()
        return ShardedQueue(destination, lambda shard: make_queue(
            shard, group, connect(shard, shared=token)))
    if destination.queue.index == "redis-stream":
        from .queue.stream import StreamQueue  # noqa: PLC0415

        return StreamQueue(destination, group, connection=connection)
    from .queue import MailQueue  # noqa: PLC0415

    return MailQueue(destination, connection=connection)


def shard_queues(queue):
    """The single-container queues behind `queue`: its shards', or itself."""
    return getattr(queue, "shards", [queue])


def reconcile_command(queue):
    """``queue reconcile``: a line per copy announced now, and how many; every shard's."""
    from .stream_index import StreamIndex, reconcile  # noqa: PLC0415 - see the module docstring

    announced = []
    for shard in shard_queues(queue):
        index = StreamIndex(None, shard.container, client=shard.client)
        announced += reconcile(index, shard.connection,
                               envelope_of=lambda name, shard=shard: stored_envelope(shard, name))
    for name in announced:
        print(f"announced {name}")
    print(f"announced {len(announced)} copy(ies) the filter had not")
    return 0


def stored_envelope(queue, name):
    """(envelope, size, verdicts) of cur/`name` as stored, for the stream index's entry."""
    from .queue.envelope import read_recipients  # noqa: PLC0415 - see the module docstring
    from .queue.states import metadata_of  # noqa: PLC0415
    from .verdicts import VERDICT_KEYS  # noqa: PLC0415

    headers = queue.connection.head_object(queue.container, "cur/" + name)
    metadata = metadata_of(headers)
    envelope = {"mail_from": metadata.get("mail-from", "<>"),
                "rcpt_to": read_recipients(queue.connection, queue.container, metadata),
                **{key: metadata.get(key.replace("_", "-"), "") for key in (
                    "client_address", "client_name", "client_helo", "message_id")}}
    verdicts = {key: metadata[key] for key in VERDICT_KEYS if key in metadata}
    return envelope, int(headers.get("content-length", 0)), verdicts


def rights_needed(options):
    """Which rights on the container a queue action needs (docs/deployment.md)."""
    if options.action == "stats" or (options.action in ("purge", "replay")
                                      and not options.execute):
        return (f"queue {options.action} needs the container's read ACL (X-Container-Read) "
                "or Swift's operator role")
    return (f"queue {options.action} needs the container's read and write ACLs "
            "(X-Container-Read, X-Container-Write) or Swift's operator role")


def envelope_fields(claimed):
    """claim's JSON keys for the envelope (docs/queue.md, "What a consumer gets")."""
    metadata = claimed.metadata
    return {"mail_from": metadata.get("mail-from", ""), "rcpt_to": claimed.recipients,
            "rcpt_count": len(claimed.recipients),
            "message_id": metadata.get("message-id", ""),
            "dedup_md5": claimed.dedup_md5}


def queue_action(queue, options):
    """One claim, finish, recover, purge or stats; its exit status."""
    from .queue_report import format_stats, write_output  # noqa: PLC0415 - see the module docstring

    action = options.action
    if action == "claim":
        claimed = queue.claim(dedup=options.dedup)
        if claimed is None:
            print("swiftdrop: nothing to claim", file=sys.stderr)
            return 1
        if options.output:
            with open(options.output, "wb") as handle:
                handle.write(claimed.body)
        print(json.dumps({"name": claimed.name, "token": claimed.token,
                          "container": claimed.container or queue.container,
                          "size": len(claimed.body), "attempts": claimed.attempts,
                          "delivery": claimed.delivery, "redelivered": claimed.redelivered,
                          "replayed": claimed.replayed,
                          "possible_repeat": claimed.possible_repeat,
                          "metadata": claimed.metadata,
                          "skipped_duplicates": claimed.skipped_duplicates,
                          **envelope_fields(claimed)}))
    elif action == "finish":
        if not options.token:
            print("swiftdrop: queue finish needs --token, the token its claim printed: "
                  "without it, it could finish a claim that is not yours", file=sys.stderr)
            return EX_USAGE
        if queue.settings.index == "redis-stream":  # the token names the stream's entry
            return finish_held(queue, options)
        return finish_listed(queue, options)
    elif action == "recover":
        for what, name in queue.recover():
            print(f"{name}: {what}")
    elif action == "purge":
        old = queue.purge(options.older_than, options.prefix, execute=options.execute)
        verb = "deleted" if options.execute else "would delete"
        for item in old:
            print(f"{verb} {item['name']} ({item['bytes']} bytes, {item['last_modified']})")
        print(f"{verb} {len(old)} object(s)" + ("" if options.execute else "; add --execute"))
    elif action == "replay":
        return replay_command(queue, options)
    elif action == "stats":
        write_output(format_stats(queue.stats(), queue.destination, options.format),
                     options.output)
    return 0


def finish_listed(queue, options):
    """``queue finish`` on the listing queue: the claim its token names, if it still holds."""
    from .libraries import ClientException  # noqa: PLC0415 - see the module docstring
    from .queue import Claimed  # noqa: PLC0415
    from .queue.envelope import read_recipients  # noqa: PLC0415
    from .queue.states import CUR, DONE, FAILED, PROCESSING, RETRY, metadata_of  # noqa: PLC0415

    if queue.destination.container_shards > 1:  # the shard that has it in processing/
        queue = queue.holding(options.name, PROCESSING)
    try:
        headers = queue.connection.head_object(queue.container, PROCESSING + options.name)
    except ClientException as error:
        if error.http_status != 404:
            raise
        # No claim to finish: not a failure that passes by itself (75).
        state = queue.state_of(options.name, (DONE, FAILED, RETRY, CUR))
        where = f"it is in {state}" if state else "no such message in any state"
        print(f"swiftdrop: queue finish: {options.name} is not in {PROCESSING} "
              f"({where}): nothing to finish", file=sys.stderr)
        return 1
    # The claim records its token on the object: another token there is another
    # claim. The copy's Last-Modified fences the move, as the claim's own would.
    mine = headers.get("x-object-meta-lock-token") == options.token
    metadata = metadata_of(headers)
    dedup = metadata.get("dedup") == "1"  # its claim's --dedup: leave a marker
    # The marker's key needs the content's digest: from the body, unless
    # the filter stored it (earlier builds stored it as Dedup-Md5).
    body = (queue.connection.get_object(queue.container, PROCESSING + options.name)[1]
            if dedup and mine and "dedup-md5" not in metadata else b"")
    claimed = Claimed(options.name, body, metadata, options.token,
                      attempts=int(headers.get("x-object-meta-attempts", 0)),
                      delivery=int(headers.get("x-object-meta-deliveries", 0)) + 1,
                      fence=headers.get("last-modified"),
                      dedup=dedup,
                      recipients=read_recipients(queue.connection, queue.container,
                                                 metadata) if dedup and mine else [])
    if not mine:
        return not_yours(options.name, "lock")
    return finish_printing(queue, claimed, options, "lock")


def finish_held(queue, options):
    """``queue finish`` on the stream index: the claim the token names, if it still holds."""
    from .queue import LostLock  # noqa: PLC0415 - see the module docstring

    try:
        claimed = queue.held(options.name, options.token)
    except LostLock:
        return not_yours(options.name, "claim")
    return finish_printing(queue, claimed, options, "claim")


def finish_printing(queue, claimed, options, holding):
    """queue.finish as `options` say, printing where the message went; 1 if it is not ours now."""
    from .queue import LostLock  # noqa: PLC0415 - see the module docstring

    reason = options.reason if options.state == "failed" else None
    try:
        print(queue.finish(claimed, options.state, reason=reason) + options.name)
    except LostLock:
        return not_yours(options.name, holding)
    return 0


def not_yours(name, holding):
    """The refusal of a finish whose `holding` (lock, claim) is someone else's: exit status 1."""
    print(f"swiftdrop: the {holding} on {name} is not yours (any more)", file=sys.stderr)
    return 1


def replay_command(queue, options):
    """``queue replay``: a line per message (or one JSON array); 1 if a NAME was not there."""
    from .queue.replay import NOT_FOUND, REPLAYED, WOULD_REPLAY  # noqa: PLC0415 - see the module docstring

    source = options.source
    names = [name.removeprefix(source) for name in options.names]
    letters = queue.replay(source, names, since=options.since, until=options.until,
                           execute=options.execute)
    if options.json:
        print(json.dumps([{"name": letter.name, "from": source,
                           "received_at": iso_time(letter.received_at),
                           "attempts": letter.attempts, "deliveries": letter.deliveries,
                           "replayed": letter.replayed, "last_error": letter.last_error,
                           "failed_reason": letter.failed_reason, "result": letter.outcome,
                           "reason": letter.reason} for letter in letters]))
    else:
        for letter in letters:
            if letter.outcome == NOT_FOUND:
                print(f"swiftdrop: queue replay: {letter.name} is {letter.reason}",
                      file=sys.stderr)
            elif letter.outcome in (WOULD_REPLAY, REPLAYED):
                print(f"{letter.outcome} {letter.name} (delivered "
                      f"{iso_time(letter.received_at, 'seconds') or 'at an unknown time'}, "
                      f"{letter.attempts} attempts): {letter.cause}")
            else:
                verb = "would not replay" if not options.execute else "not replayed"
                print(f"{verb} {letter.name}: {letter.reason}")
        moved = sum(letter.outcome in (WOULD_REPLAY, REPLAYED) for letter in letters)
        verb = "replayed" if options.execute else "would replay"
        print(f"{verb} {moved} message(s) from {source}"
              + ("" if options.execute else "; add --execute"))
    return 1 if any(letter.outcome == NOT_FOUND for letter in letters) else 0


def iso_time(seconds, timespec="auto"):
    """2026-12-01T10:00:00.123456Z (to the second with timespec="seconds"), or None for None."""
    if seconds is None:
        return None
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec=timespec).replace("+00:00", "Z")


def run_worker(queue, options):
    from .metrics import WORKER_REGISTRY, serve_metrics  # noqa: PLC0415 - see the module docstring
    from .worker import consume  # noqa: PLC0415

    consumer = worker_consumer(queue.destination, options)
    if isinstance(consumer, str):
        print(f"swiftdrop: {consumer}", file=sys.stderr)
        return EX_USAGE
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if options.metrics_listen:
        serve_metrics(options.metrics_listen, WORKER_REGISTRY)
    queues = [queue] + [make_queue(queue.destination, queue_group(options))
                        for _ in range(options.concurrency - 1)]
    results = [None] * len(queues)

    def loop(index):
        results[index] = consume(queues[index], consumer, stop, poll=options.poll,
                                 dedup=options.dedup, once=options.once)

    threads = [threading.Thread(target=loop, args=(index,), name=f"worker-{index + 1}")
               for index in range(len(queues))]
    for thread in threads:
        thread.start()
    for thread in threads:
        # The kernel hands SIGTERM to any thread; Python runs the handler in
        # the main thread, once that thread runs Python code again. A join()
        # without a timeout would sleep through the signal, for good.
        while thread.is_alive():
            thread.join(SIGNAL_LATENCY)
    for each in queues:
        each.close()
    if None in results:  # a loop died of a bug in our code: its traceback is above
        return 1
    print(json.dumps(dict(sum(results, collections.Counter()))))
    return 0


def worker_consumer(destination, options):
    """What ``queue run`` hands messages to: the COMMAND, the webhook, or why neither.

    A string is the usage error to print: a command and --webhook together,
    or neither a command nor a webhook to POST to.
    """
    from .worker import CommandConsumer, WebhookConsumer  # noqa: PLC0415 - see the module docstring

    command = options.worker_command[1:] if options.worker_command[:1] == ["--"] \
        else options.worker_command
    if command:
        if options.webhook or options.webhook_format:
            return "queue run takes a COMMAND or a webhook (--webhook, --webhook-format), " \
                   "not both"
        timeout = destination.queue.command_timeout if options.timeout is None \
            else options.timeout
        return CommandConsumer(command, grace=options.grace, timeout=timeout)
    if options.webhook is None and destination.webhook is None:
        return (f"queue run needs a command after --, or a webhook: webhook_url in "
                f"[{destination.section}] or --webhook URL")
    try:
        settings = config_module.webhook_override(
            destination, options.webhook, secret=os.environ.get("SWIFTDROP_WEBHOOK_SECRET"),
            webhook_format=options.webhook_format)
    except ValueError as error:
        return f"queue run --webhook: {error}"
    return WebhookConsumer(destination, settings)

