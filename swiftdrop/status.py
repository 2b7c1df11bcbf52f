"""``swiftdrop status``: the last hour at a glance, for a person at the terminal.

The journal is the record of every message (one entry each, with
SWIFTDROP_RESULT, SWIFTDROP_SECTION, SWIFTDROP_DURATION_MS and the reason of
a failure) and of every webhook POST (SWIFTDROP_WEBHOOK_*, one entry each,
written by ``queue run`` under systemd), so the figures come from it and
cover any --since; the metrics endpoint, when given, adds what only the
running process knows (sessions now, bytes held, counts since it started).
"""

import datetime
import json
import math
import subprocess
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from systemd import journal

IDENTIFIER_MATCH = "SYSLOG_IDENTIFIER=swiftdrop"
SOCKET_UNIT = "swiftdrop.socket"
METRICS_TIMEOUT = 5


LAST_WEBHOOK_FAILURES = 3


def read_entries(since, matches):
    """(the filter's per-message entries, the webhook's per-POST entries) newer than `since`."""
    reader = journal.Reader()
    for match in (IDENTIFIER_MATCH, *matches):
        reader.add_match(match)
    reader.seek_realtime(since)
    ingest, webhook = [], []
    for entry in reader:
        if entry.get("SWIFTDROP_RESULT"):
            ingest.append(entry)
        elif entry.get("SWIFTDROP_WEBHOOK_RESULT"):
            webhook.append(entry)
    return ingest, webhook


def percentile(values, fraction):
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def summarize(entries):
    """Counts, store-time percentiles, per destination and the last failure."""
    # refused: a destination's reject_verdicts answered 550, nothing stored.
    counts = {"stored": 0, "failed": 0, "refused": 0, "forwarded": 0}
    destinations, durations, last_failure = {}, [], None
    containers = {}  # where the stored copies went: a destination's shard containers each
    for entry in entries:
        result = entry["SWIFTDROP_RESULT"]
        if result not in counts:
            continue  # removals after a 451 are not messages
        counts[result] += 1
        # A refusal stores nothing: its time is not a store time.
        if result != "refused" and entry.get("SWIFTDROP_DURATION_MS", "") != "":
            durations.append(int(entry["SWIFTDROP_DURATION_MS"]))
        # A stored message names all its sections; a failed one the one that failed.
        section = entry.get("SWIFTDROP_SECTION", "")
        for name in (section.split() if result == "stored" else [section]):
            if name:
                per = destinations.setdefault(name, {"stored": 0, "failed": 0})
                if result in per:
                    per[result] += 1
        if result == "stored":  # a container per section, in the same order
            for name, container in zip(section.split(),
                                       entry.get("SWIFTDROP_CONTAINER", "").split(),
                                       strict=False):
                per = containers.setdefault(container, {"section": name, "stored": 0})
                per["stored"] += 1
        if result == "failed":
            last_failure = {
                "time": entry["__REALTIME_TIMESTAMP"].astimezone(datetime.UTC).isoformat(),
                "section": section, "container": entry.get("SWIFTDROP_CONTAINER", ""),
                "reason": entry.get("SWIFTDROP_REASON", ""),
                "id": entry.get("SWIFTDROP_ID", ""),
                "client_address": entry.get("SWIFTDROP_CLIENT_ADDRESS", ""),
            }
    return {**counts,
            "store_ms": {"p50": percentile(durations, 0.5), "p99": percentile(durations, 0.99)},
            "destinations": destinations, "containers": containers,
            "last_failure": last_failure}


def summarize_webhooks(entries):
    """Per destination: what became of the POSTs, their times, the last failures.

    A retry is a POST that did not deliver, not a message lost: the message
    is counted again when a later POST delivers it (done) or gives up on it
    (failed, a dead letter).
    """
    destinations = {}
    for entry in entries:
        section = entry.get("SWIFTDROP_SECTION", "")
        per = destinations.setdefault(section, {
            "url": "", "done": 0, "retry": 0, "failed": 0, "outcomes": {}, "ms": [],
            "last_failures": []})
        per["url"] = entry.get("SWIFTDROP_WEBHOOK_URL", per["url"])
        result = entry["SWIFTDROP_WEBHOOK_RESULT"]
        if result in ("done", "retry", "failed"):
            per[result] += 1
        outcome = entry.get("SWIFTDROP_WEBHOOK_OUTCOME", "")
        per["outcomes"][outcome] = per["outcomes"].get(outcome, 0) + 1
        if entry.get("SWIFTDROP_WEBHOOK_MS", "") != "":
            per["ms"].append(int(entry["SWIFTDROP_WEBHOOK_MS"]))
        if result != "done":
            per["last_failures"] = [*per["last_failures"], {
                "time": entry["__REALTIME_TIMESTAMP"].astimezone(datetime.UTC).isoformat(),
                "object": entry.get("SWIFTDROP_OBJECT", ""), "result": result,
                "status": entry.get("SWIFTDROP_WEBHOOK_STATUS", ""),
                "reason": entry.get("SWIFTDROP_REASON", "")}][-LAST_WEBHOOK_FAILURES:]
    for per in destinations.values():
        durations = per.pop("ms")
        per["post_ms"] = {"p50": percentile(durations, 0.5), "p99": percentile(durations, 0.99)}
    return destinations


def socket_state():
    """systemctl's word for the socket unit, or "unknown" without systemd."""
    try:
        result = subprocess.run(["systemctl", "is-active", SOCKET_UNIT], capture_output=True,
                                text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    state = result.stdout.strip()
    return state if state and not result.stderr.strip() else "unknown"


def read_metrics(address):
    """What the running filter says about itself now, or {"error": why}."""
    url = f"http://{address}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=METRICS_TIMEOUT) as response:
            text = response.read().decode()
    except OSError as error:
        return {"error": f"{url}: {error}"}
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "swiftdrop_messages_total":
                samples[f"messages_{sample.labels['result']}"] = int(sample.value)
            elif sample.name in ("swiftdrop_sessions_active", "swiftdrop_spool_bytes",
                                 "swiftdrop_swift_retries_total"):
                samples[sample.name.removeprefix("swiftdrop_")] = int(sample.value)
            elif sample.name == "swiftdrop_build_info":
                samples["version"] = sample.labels["version"]
    return samples


def report(since_seconds, matches=(), metrics_address=None, now=None):
    """Everything ``swiftdrop status`` shows, as one dict (what --json prints)."""
    now = now or datetime.datetime.now(datetime.UTC)
    since = now - datetime.timedelta(seconds=since_seconds)
    ingest, webhook = read_entries(since, matches)
    status = {"since": since.isoformat(), "until": now.isoformat(), **summarize(ingest),
              "socket": socket_state(), "webhooks": summarize_webhooks(webhook)}
    for per in status["containers"].values():  # --since 0s: an empty window, no rate
        per["per_second"] = round(per["stored"] / since_seconds, 3) if since_seconds else 0.0
    if metrics_address:
        status["metrics"] = read_metrics(metrics_address)
    return status


def render(status):
    """The report as lines for a terminal."""
    lines = [f"SwiftDrop since {status['since'][:19]}Z",
             f"  stored {status['stored']:,}, failed {status['failed']:,}, "
             f"refused {status['refused']:,}, forwarded {status['forwarded']:,}"]
    p50, p99 = status["store_ms"]["p50"], status["store_ms"]["p99"]
    lines.append(f"  store time p50 {p50} ms, p99 {p99} ms" if p50 is not None
                 else "  store time: no messages")
    for name, per in sorted(status["destinations"].items()):
        lines.append(f"  [{name}] stored {per['stored']:,}, failed {per['failed']:,}")
        lines.extend(render_shards(name, status.get("containers", {})))
    failure = status["last_failure"]
    lines.append("  last failure: —" if failure is None else
                 f"  last failure: {failure['time'][:19]}Z [{failure['section']}] "
                 f"{failure['container']}: {failure['reason']} (id {failure['id']})")
    lines.append(f"  socket {SOCKET_UNIT}: {status['socket']}")
    lines.extend(render_webhooks(status["webhooks"]))
    metrics = status.get("metrics")
    if metrics is not None:
        lines.append(f"  metrics: {metrics['error']}" if "error" in metrics else
                     f"  now: {metrics.get('sessions_active', '?')} session(s), "
                     f"{metrics.get('spool_bytes', '?')} bytes held; since start: stored "
                     f"{metrics.get('messages_stored', '?')}, failed "
                     f"{metrics.get('messages_failed', '?')}, rejected "
                     f"{metrics.get('messages_rejected', '?')}")
    return "\n".join(lines)


def render_shards(section, containers):
    """A line per container of a destination that stored into several (container_shards).

    Each container's write rate, as Swift's guidance on a container is in
    writes a second; nothing for a destination of one container.
    """
    own = sorted((container, per) for container, per in containers.items()
                 if per["section"] == section)
    if len(own) < 2:
        return []
    return [f"    {container}: stored {per['stored']:,}, {per['per_second']:g}/s"
            for container, per in own]


def render_webhooks(webhooks):
    """A destination's webhook in three lines and its last failures; nothing without POSTs."""
    lines = []
    for section, per in sorted(webhooks.items()):
        outcomes = ", ".join(f"{outcome} {count:,}"
                             for outcome, count in sorted(per["outcomes"].items()))
        lines += [f"  webhook [{section}] {per['url']}",
                  f"    done {per['done']:,}, retry {per['retry']:,}, failed {per['failed']:,}"
                  f"; POSTs: {outcomes}",
                  f"    POST time p50 {per['post_ms']['p50']} ms, p99 {per['post_ms']['p99']} ms"]
        lines += [f"    {failure['time'][:19]}Z {failure['object']}: {failure['reason']} "
                  f"({failure['result']})" for failure in per["last_failures"]]
    return lines


def status_command(options):
    status = report(options.since, options.match, options.metrics)
    print(json.dumps(status, indent=2) if options.json else render(status))
    return 0
