#!/usr/bin/env python3
"""SMTP probe for Molecule's verify: send mail, try recipients, or flood.

Prints one JSON document on stdout; the playbook asserts on it. Standard
library only, so it runs with whatever Python the controller has.

  smtp_probe.py send  --server H --to RCPT --file MSG      -> {"code", "text"}
  smtp_probe.py rcpt  --server H --to RCPT                 -> {"code", "text"}
  smtp_probe.py flood --server H --to RCPT --count N --seconds S
                    [--progress FILE] [--stop-file FILE]   -> {"sent", "replies": {code: n}}

A flood with --progress writes how many messages it has sent to FILE after
each one, and stops once --stop-file exists: a playbook can wait for the
stream to be under way, do its faults, wait for a message after them, and
then end it, whatever the machine's speed.
"""

import argparse
import collections
import json
import os
import smtplib
import sys
import time


class RecordingSMTP(smtplib.SMTP):
    """Keeps the final reply to DATA, whose text names the stored object."""

    def data(self, msg):
        code, text = super().data(msg)
        self.data_reply = (code, text.decode(errors="replace"))
        return code, text


def crlf(body):
    """SMTP lines end in CRLF; a file written with LF is sent the way SMTP has it."""
    return body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def send(options, body):
    try:
        with RecordingSMTP(options.server, options.port, timeout=120) as client:
            client.ehlo("probe.example.net")
            client.sendmail(options.sender, [options.to], body)
            return client.data_reply
    except (smtplib.SMTPDataError, smtplib.SMTPRecipientsRefused,
            smtplib.SMTPSenderRefused) as error:
        if isinstance(error, smtplib.SMTPRecipientsRefused):
            code, text = next(iter(error.recipients.values()))
            return code, text.decode(errors="replace")
        return error.smtp_code, error.smtp_error.decode(errors="replace")
    except (OSError, smtplib.SMTPException) as error:
        return 0, f"{type(error).__name__}: {error}"


def rcpt(options):
    with smtplib.SMTP(options.server, options.port, timeout=60) as client:
        client.ehlo("probe.example.net")
        client.mail(options.sender)
        code, text = client.rcpt(options.to)
        return code, text.decode(errors="replace")


def flood(options):
    replies = collections.Counter()
    deadline = time.monotonic() + options.seconds
    for number in range(options.count):
        if time.monotonic() > deadline or (
                options.stop_file and os.path.exists(options.stop_file)):
            break
        body = f"Subject: flood {number}\r\n\r\nmessage {number}\r\n".encode()
        replies[send(options, body)[0]] += 1
        if options.progress:
            with open(options.progress + ".new", "w") as handle:
                handle.write(str(number + 1))
            os.replace(options.progress + ".new", options.progress)
    return {"sent": sum(replies.values()), "replies": dict(replies)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["send", "rcpt", "flood"])
    parser.add_argument("--server", required=True)
    parser.add_argument("--port", type=int, default=25)
    parser.add_argument("--sender", default="probe@example.net")
    parser.add_argument("--to", required=True)
    parser.add_argument("--file")
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--progress")
    parser.add_argument("--stop-file")
    options = parser.parse_args()

    if options.mode == "send":
        with open(options.file, "rb") as handle:
            code, text = send(options, crlf(handle.read()))
        result = {"code": code, "text": text}
    elif options.mode == "rcpt":
        code, text = rcpt(options)
        result = {"code": code, "text": text}
    else:
        result = flood(options)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
