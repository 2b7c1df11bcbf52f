"""Prometheus metrics of the filter and of the queue's workers, served at ``/metrics``.

The counters live in this module, so the modules that do the work need a
single line to count (no object passed through every constructor). There
are two registries: the filter's (``serve --metrics-listen``) and a
worker's (``queue run --metrics-listen``), because a worker's endpoint
must not show the filter's counters at 0, or a rule such as "no mail
stored for 6 hours" fires for every worker. Counting costs a lock and an addition; without
``--metrics-listen`` nothing exposes them. Labels never carry addresses,
container or object names: only the result, the ini section (a handful per
host) and Swift's method and status.
"""

import time

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

from . import __version__

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
WORKER_REGISTRY = CollectorRegistry()
ProcessCollector(registry=WORKER_REGISTRY)

RESULTS = ("stored", "failed", "rejected")
# A store takes tens of milliseconds to the deadline (60 s by default).
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
SIZE_BUCKETS = tuple(2 ** power for power in range(10, 27, 2))  # 1 KiB .. 64 MiB

MESSAGES = Counter("swiftdrop_messages", "Messages by final reply: stored (250), failed "
                   "(451), rejected (5xx)", ["result"], registry=REGISTRY)
COPIES = Counter("swiftdrop_copies", "Copies of messages by destination (ini section) and "
                 "result", ["destination", "result"], registry=REGISTRY)
# By the shard's number, not its container's name: no label holds a container's name.
SHARD_COPIES = Counter("swiftdrop_shard_copies", "Copies stored by destination and shard "
                       "container (0: the container itself, k: <container>-k)",
                       ["destination", "shard"], registry=REGISTRY)
STORE_DURATION = Histogram("swiftdrop_store_duration_seconds", "End of DATA to the reply",
                           buckets=DURATION_BUCKETS, registry=REGISTRY)
MESSAGE_SIZE = Histogram("swiftdrop_message_size_bytes", "Size of received messages",
                         buckets=SIZE_BUCKETS, registry=REGISTRY)
SWIFT_REQUESTS = Counter("swiftdrop_swift_requests", "Requests to Swift by method and HTTP "
                         "status (\"none\": no answer)", ["method", "status"],
                         registry=REGISTRY)
ANNOUNCES = Counter("swiftdrop_index_announces", "Stored copies announced in a Redis stream "
                    "index by destination and result (failed: the reconciler announces it)",
                    ["destination", "result"], registry=REGISTRY)
SWIFT_RETRIES = Counter("swiftdrop_swift_retries", "Store attempts after a failed one",
                        registry=REGISTRY)
AUTH_REQUESTS = Counter("swiftdrop_auth_requests", "Authentications (one per new token) by "
                        "destination that asked first", ["destination"], registry=REGISTRY)
SESSIONS_ACTIVE = Gauge("swiftdrop_sessions_active", "SMTP sessions being served",
                        registry=REGISTRY)
SPOOL_BYTES = Gauge("swiftdrop_spool_bytes", "Bytes of received messages held while they "
                    "are stored", registry=REGISTRY)
ALERTS_SENT = Counter("swiftdrop_alerts_sent", "Failure and recovery notices sent",
                      registry=REGISTRY)
ADMIN_RELAYED = Counter("swiftdrop_admin_relayed", "Messages forwarded to the admin relay",
                        registry=REGISTRY)
VERDICT_CHECKS = Counter("swiftdrop_verdict_checks", "Messages sent to rspamd by result: "
                         "checked, or unavailable (down, slow, unreadable: stored without "
                         "verdicts)", ["result"], registry=REGISTRY)
VERDICT_REFUSALS = Counter("swiftdrop_verdict_refusals", "Messages refused (550) for a "
                           "verdict, by the reject_verdicts name that refused them",
                           ["verdict"], registry=REGISTRY)
WEBHOOK_OUTCOMES = ("2xx", "3xx", "4xx", "5xx", "timeout", "connection", "tls")
# A POST takes milliseconds on a LAN; webhook_timeout is 30 s by default.
WEBHOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
WEBHOOK_REQUESTS = Counter("swiftdrop_webhook_requests", "Webhook POSTs by destination and "
                           "outcome: the answer's status class, or timeout, connection, tls "
                           "for none", ["destination", "outcome"], registry=WORKER_REGISTRY)
WEBHOOK_DURATION = Histogram("swiftdrop_webhook_duration_seconds", "One webhook POST, "
                             "connect to answer", ["destination"], buckets=WEBHOOK_BUCKETS,
                             registry=WORKER_REGISTRY)
WEBHOOK_DEAD_LETTERS = Counter("swiftdrop_webhook_dead_letters", "Messages the webhook moved "
                               "to failed/", ["destination"], registry=WORKER_REGISTRY)
WEBHOOK_DELIVERED = Counter("swiftdrop_webhook_delivered", "Messages the webhook moved to "
                            "done/", ["destination"], registry=WORKER_REGISTRY)
BUILD_INFO = Gauge("swiftdrop_build_info", "Always 1; the version as a label", ["version"],
                   registry=REGISTRY)
BUILD_INFO.labels(__version__).set(1)
WORKER_REGISTRY.register(BUILD_INFO)
for _result in RESULTS:
    MESSAGES.labels(_result)
for _result in ("checked", "unavailable"):
    VERDICT_CHECKS.labels(_result)

def known_destinations(destinations):
    """Create each destination's series at 0, so a first failure is an increase.

    Prometheus' increase() cannot see the step to a series' first value.
    Each shard container of a destination has its own series of stored copies.
    """
    for destination in destinations:
        for result in ("stored", "failed"):
            COPIES.labels(destination.section, result)
        for shard in range(destination.container_shards):
            SHARD_COPIES.labels(destination.section, str(shard))


def known_webhook(section):
    """Create a webhook destination's series at 0, every outcome: Prometheus sees 0, not absence."""
    for outcome in WEBHOOK_OUTCOMES:
        WEBHOOK_REQUESTS.labels(section, outcome)
    WEBHOOK_DURATION.labels(section)
    WEBHOOK_DEAD_LETTERS.labels(section)
    WEBHOOK_DELIVERED.labels(section)


def webhook_posted(section, outcome, seconds):
    """One POST of the webhook worker for `section`: its outcome and how long it took."""
    WEBHOOK_REQUESTS.labels(section, outcome).inc()
    WEBHOOK_DURATION.labels(section).observe(seconds)


def webhook_finished(section, target):
    """A message the webhook moved on: done/ is delivered, failed/ a dead letter."""
    if target == "done/":
        WEBHOOK_DELIVERED.labels(section).inc()
    elif target == "failed/":
        WEBHOOK_DEAD_LETTERS.labels(section).inc()


# Also told of every final reply (the status line's last hour), so that it
# counts exactly what swiftdrop_messages_total counts.
_reply_listeners = []


def on_reply(listener):
    """Call `listener(reply)` for every message's final reply from now on."""
    _reply_listeners.append(listener)


def message_replied(reply):
    """Count one message's final reply: 2xx stored, 4xx failed, 5xx rejected."""
    MESSAGES.labels(RESULTS["245".index(reply[0])]).inc()
    for listener in _reply_listeners:
        listener(reply)


class MeasuredDelivery:
    """Wraps the deliverer: message count by reply, store time and size."""

    def __init__(self, deliver):
        self.deliver = deliver

    def __call__(self, envelope, message):
        started = time.monotonic()
        with _Held(message.size):
            reply = self.deliver(envelope, message)
        STORE_DURATION.observe(time.monotonic() - started)
        MESSAGE_SIZE.observe(message.size)
        message_replied(reply)
        return reply


class _Held:
    """Adds a message's size to swiftdrop_spool_bytes while it is being stored."""

    def __init__(self, size):
        self.size = size

    def __enter__(self):
        SPOOL_BYTES.inc(self.size)

    def __exit__(self, *exc):
        SPOOL_BYTES.dec(self.size)


def serve_metrics(spec, registry=REGISTRY):
    """Serve `registry` at /metrics on ``HOST:PORT`` or ``[V6]:PORT`` in a daemon thread."""
    host, _, port = spec.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]") or "127.0.0.1", registry=registry)
