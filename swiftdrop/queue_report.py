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
    """`stats` from MailQueue.stats() as text, json or prometheus.

    The stream index's stats are one group's (with "group"), or every
    group's under "groups"; either way with the index's announce lag. A
    destination of several shard containers has its totals, and each
    container's figures under "containers" (swiftdrop.queue.sharded): the
    text shows both, Prometheus each container's series, which add up.
    """
    if fmt == "json":
        return json.dumps(stats) + "\n"
    if fmt == "prometheus":
        return _exposition(containers_of(stats, destination), destination)
    lines = _text(stats)
    for container, figures in stats.get("containers", {}).items():
        lines += [f"container {container}:"] + ["  " + line for line in _text(figures)]
    return "\n".join(lines) + "\n"


def containers_of(stats, destination):
    """[(container, its stats)]: each shard container's, or the one container's."""
    if "containers" in stats:
        return list(stats["containers"].items())
    return [(destination.container, stats)]


def _groups(stats):
    return stats["groups"] if "groups" in stats else {stats.get("group"): stats}


def _text(stats):
    lines = []
    for group, figures in _groups(stats).items():
        if group is not None:
            lines.append(f"group {group}:")
        lines += [f"{prefix:<12} {figures[prefix]['count']:>8} messages "
                  f"{figures[prefix]['bytes']:>14} bytes" for prefix in PREFIXES]
        lines.append(f"oldest in cur/: {figures['oldest_cur_age_seconds']} s")
    if "announce_lag_seconds" in stats:
        lines.append(f"oldest copy not announced: {stats['announce_lag_seconds']} s")
    return lines


def _labels(destination, container, group=None):
    labels = f'destination="{_escape(destination.section)}",' \
             f'container="{_escape(container)}"'
    if group is not None:  # the stream index: the figures are one consumer group's
        labels += f',group="{_escape(group)}"'
    return labels


def _exposition(containers, destination):
    """The gauges of each container's (group, figures), one block per metric as the format wants."""
    labelled = [(_labels(destination, container, group), figures)
                for container, stats in containers
                for group, figures in _groups(stats).items()]
    lines = []
    if labelled:
        for name, help_text, figure in GAUGES:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            lines += [f'{name}{{{labels},state="{prefix.rstrip("/")}"}} '
                      f'{figures[prefix][figure]}'
                      for labels, figures in labelled for prefix in PREFIXES]
        lines += ["# HELP swiftdrop_queue_oldest_age_seconds How long the oldest message in "
                  "cur/ has waited; 0 when none waits.",
                  "# TYPE swiftdrop_queue_oldest_age_seconds gauge"]
        lines += [f"swiftdrop_queue_oldest_age_seconds{{{labels}}} "
                  f"{figures['oldest_cur_age_seconds'] or 0}" for labels, figures in labelled]
    lags = [(container, stats["announce_lag_seconds"]) for container, stats in containers
            if "announce_lag_seconds" in stats]
    if lags:  # the stream index's announce lag: the index's, whichever group asked
        lines += ["# HELP swiftdrop_index_announce_lag_seconds How long the oldest stored copy "
                  "has waited unannounced in the stream index; 0 when none waits.",
                  "# TYPE swiftdrop_index_announce_lag_seconds gauge"]
        lines += [f"swiftdrop_index_announce_lag_seconds{{{_labels(destination, container)}}} "
                  f"{lag}" for container, lag in lags]
    return "\n".join(lines) + "\n" if lines else ""


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
