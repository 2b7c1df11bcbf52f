"""What ``swiftdrop queue stats`` prints: for a person, for a script, for Prometheus.

The Prometheus form is the text exposition format that node_exporter's
textfile collector reads: a timer writes it to a file in that directory,
replacing the file atomically, so node_exporter never reads half of it.
"""

import json
import os
import tempfile

from .queue import PREFIXES

GAUGES = (
    ("swiftdrop_queue_messages", "Messages in the queue container, by state.", "count"),
    ("swiftdrop_queue_bytes", "Bytes of the messages in the queue container, by state.",
     "bytes"),
)


def format_stats(stats, destination, fmt):
    """`stats` from MailQueue.stats() as text, json or prometheus."""
    if fmt == "json":
        return json.dumps(stats) + "\n"
    if fmt == "prometheus":
        return _exposition(stats, destination)
    lines = [f"{prefix:<12} {stats[prefix]['count']:>8} messages "
             f"{stats[prefix]['bytes']:>14} bytes" for prefix in PREFIXES]
    lines.append(f"oldest in cur/: {stats['oldest_cur_age_seconds']} s")
    return "\n".join(lines) + "\n"


def _exposition(stats, destination):
    labels = f'destination="{_escape(destination.section)}",' \
             f'container="{_escape(destination.container)}"'
    if "group" in stats:  # the stream index: the figures are one consumer group's
        labels += f',group="{_escape(stats["group"])}"'
    lines = []
    for name, help_text, figure in GAUGES:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        lines += [f'{name}{{{labels},state="{prefix.rstrip("/")}"}} {stats[prefix][figure]}'
                  for prefix in PREFIXES]
    oldest = stats["oldest_cur_age_seconds"]
    lines += ["# HELP swiftdrop_queue_oldest_age_seconds How long the oldest message in cur/ "
              "has waited; 0 when none waits.",
              "# TYPE swiftdrop_queue_oldest_age_seconds gauge",
              f"swiftdrop_queue_oldest_age_seconds{{{labels}}} {oldest or 0}"]
    if "announce_lag_seconds" in stats:
        lines += ["# HELP swiftdrop_index_announce_lag_seconds How long the oldest stored "
                  "copy has waited unannounced in the stream index; 0 when none waits.",
                  "# TYPE swiftdrop_index_announce_lag_seconds gauge",
                  f"swiftdrop_index_announce_lag_seconds{{{labels}}} "
                  f"{stats['announce_lag_seconds']}"]
    return "\n".join(lines) + "\n"


def _escape(value):
    return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


def write_output(text, path=None):
    """Print `text`, or put it in `path` whole: a temporary file beside it, then a rename."""
    if path is None:
        print(text, end="")
        return
    directory = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile("w", dir=directory, prefix=".swiftdrop-",
                                     delete=False) as scratch:
        scratch.write(text)
    os.chmod(scratch.name, 0o644)  # node_exporter runs as its own user
    os.replace(scratch.name, path)
