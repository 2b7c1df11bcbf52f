#!/usr/bin/env python3
"""Submit numbered messages to the sender guest's Exim at a steady pace.

For the fleet scenario's verify: each message has a Message-ID of its own,
<PHASE-N@DOMAIN>, so that verify can follow it from Exim's log (id=) to
the objects in the MX hosts' Swift. Exim delivers each one in the
background (-odb), as a sending MTA does with mail handed to it.

Runs until --count messages are submitted or --stop-file exists, writing
the number submitted so far to --progress after each one, so that a
playbook can wait for the stream to be under way and end it when its faults
are over, whatever the machine's speed. Prints JSON: {"phase", "ids"}.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def message(message_id, sender, recipient, number):
    """The bytes of message NUMBER: headers and a short body naming it."""
    return (
        f"From: {sender}\nTo: {recipient}\nMessage-ID: <{message_id}>\n"
        f"Subject: fleet stream {number}\n\nmessage {number} of the stream\n"
    ).encode()


def submit(body, sender, recipient):
    """Hand one message to Exim, which queues it and forks its delivery."""
    subprocess.run(["/usr/sbin/exim4", "-odb", "-f", sender, "--", recipient],
                   input=body, check=True)


def write_progress(path, count):
    """Replace PATH with COUNT in one rename: a reader never sees it half-written."""
    temporary = f"{path}.tmp"
    with open(temporary, "w") as handle:
        handle.write(str(count))
    os.replace(temporary, path)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase", required=True, help="prefix of the Message-IDs")
    parser.add_argument("--sender", required=True)
    parser.add_argument("--to", required=True)
    parser.add_argument("--count", type=int, required=True, help="most messages to submit")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between messages")
    parser.add_argument("--progress", required=True)
    parser.add_argument("--stop-file")
    options = parser.parse_args()

    domain = options.sender.rpartition("@")[2]
    ids = []
    start = time.monotonic()
    for number in range(1, options.count + 1):
        if options.stop_file and os.path.exists(options.stop_file):
            break
        message_id = f"{options.phase}-{number}@{domain}"
        submit(message(message_id, options.sender, options.to, number), options.sender, options.to)
        ids.append(message_id)
        write_progress(options.progress, number)
        # Pace by the clock, not by the time each submission took.
        time.sleep(max(0.0, start + number * options.interval - time.monotonic()))
    json.dump({"phase": options.phase, "ids": ids}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
