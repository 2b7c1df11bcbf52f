#!/usr/bin/env python3
"""Send numbered messages over STARTTLS, several sessions at a time.

For the acme scenario's verify: mail flows while the certificate is renewed
and Postfix reloads. One session per message, so that sessions begin before,
during and after the reload. After --hold-at messages it waits for
--go-file (verify creates it once the renewal is over), so that some
sessions certainly begin after it. Writes the number sent so far to
--progress; prints JSON: the reply to each message (250 or the error) and
how many sessions saw each server certificate (SHA-256 of its DER).
"""

import argparse
import collections
import concurrent.futures
import hashlib
import json
import os
import smtplib
import ssl
import threading
import time


def send_one(options, number):
    """One session: EHLO, STARTTLS, one message. (reply code or error, certificate digest)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the certificate is what we look at, not trust
    body = (f"From: {options.sender}\r\nTo: {options.to}\r\n"
            f"Message-ID: <acme-{number}@acme.test>\r\nSubject: acme stream {number}\r\n"
            f"\r\nmessage {number}\r\n")
    try:
        with smtplib.SMTP(options.server, 25, local_hostname="sender.acme.test",
                          timeout=60) as smtp:
            smtp.starttls(context=context)
            digest = hashlib.sha256(smtp.sock.getpeercert(binary_form=True)).hexdigest()
            smtp.sendmail(options.sender, [options.to], body)
            return 250, digest
    except (smtplib.SMTPException, OSError) as error:
        return repr(error), None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--server", required=True)
    parser.add_argument("--sender", default="stream@sender.example")
    parser.add_argument("--to", required=True)
    parser.add_argument("--count", type=int, default=250)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--hold-at", type=int, required=True)
    parser.add_argument("--go-file", required=True)
    parser.add_argument("--progress", required=True)
    options = parser.parse_args()
    lock = threading.Lock()
    sent = 0

    def numbered(number):
        nonlocal sent
        if number > options.hold_at:
            while not os.path.exists(options.go_file):
                time.sleep(0.1)  # a file another process creates: nothing to block on
        result = send_one(options, number)
        with lock:
            sent += 1
            with open(options.progress + ".tmp", "w") as handle:
                handle.write(str(sent))
            os.replace(options.progress + ".tmp", options.progress)
        return result

    with concurrent.futures.ThreadPoolExecutor(options.parallel) as pool:
        results = list(pool.map(numbered, range(1, options.count + 1)))
    print(json.dumps({
        "replies": collections.Counter(str(code) for code, _ in results),
        "certificates": collections.Counter(digest for _, digest in results if digest),
    }))


if __name__ == "__main__":
    main()
