#!/usr/bin/env python3
"""Summarise Exim's main log on the fleet scenario's sender, as JSON.

For every message whose Message-ID starts with --phase: the hosts it was
delivered to, the MX's reply, its time on the queue (QT=, arrival to
delivery) and how often it was deferred (== lines). Beside them, every
failed delivery (** lines) and every bounce Exim made (<= <>), of any phase:
the scenario allows none. verify.yml asserts on the output.
"""

import argparse
import json
import re
import sys

LINE = re.compile(r"^\S+ \S+ (?P<exim_id>\w{6}-\w+-\w+) (?P<flag><=|=>|->|==|\*\*) (?P<rest>.*)$")
MESSAGE_ID = re.compile(r" id=<?(?P<id>[^ >]+)>?")
HOST = re.compile(r" H=(?P<host>\S+) \[")
CONFIRMATION = re.compile(r' C="(?P<reply>[^"]*)"')
QUEUE_TIME = re.compile(r" QT=(?P<time>[0-9hms.]+)")
DURATION_PART = re.compile(r"([0-9.]+)([hms])")


def seconds(duration):
    """Exim's 1m2s (or 3s, 1h0m2s) in seconds."""
    factor = {"h": 3600, "m": 60, "s": 1}
    return sum(float(amount) * factor[unit] for amount, unit in DURATION_PART.findall(duration))


def group_or_none(pattern, text, group):
    """The named group of PATTERN's first match in TEXT, None without one."""
    found = pattern.search(text)
    return found[group] if found else None


def summarise(lines, phase):
    """The report of one phase from the log's lines (see the module's docstring)."""
    messages, by_exim_id, failed, bounces = {}, {}, [], []
    for line in lines:
        match = LINE.match(line)
        if not match:
            continue
        exim_id, flag, rest = match["exim_id"], match["flag"], match["rest"]
        if flag == "<=":
            if rest.startswith("<> "):
                bounces.append(line)
            found = MESSAGE_ID.search(rest)
            if found and found["id"].startswith(phase + "-"):
                entry = {"exim_id": exim_id, "hosts": [], "replies": [], "queue_seconds": None,
                         "deferrals": 0}
                messages[found["id"]] = by_exim_id[exim_id] = entry
        elif flag == "**":
            failed.append(line)
        elif exim_id in by_exim_id:
            entry = by_exim_id[exim_id]
            if flag == "==":
                entry["deferrals"] += 1
            else:
                entry["hosts"].append(group_or_none(HOST, rest, "host"))
                entry["replies"].append(group_or_none(CONFIRMATION, rest, "reply"))
                entry["queue_seconds"] = seconds(group_or_none(QUEUE_TIME, rest, "time") or "")
    return {"messages": messages, "failed": failed, "bounces": bounces}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase", required=True)
    parser.add_argument("--log", default="/var/log/exim4/mainlog")
    options = parser.parse_args()
    with open(options.log, errors="replace") as handle:
        json.dump(summarise(handle, options.phase), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
