#!/usr/bin/env python3
"""Read one stored message back from Swift for Molecule's verify.

Runs on the guest (python3-swiftclient is there for the filter). Prints
JSON: whether the object is exactly Postfix's Received: header followed by
the bytes of --expect, its ETag check, and its metadata.
"""

import argparse
import hashlib
import json
import re
import sys

from swiftclient import client


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--authurl", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--container", required=True)
    parser.add_argument("--object", required=True)
    parser.add_argument("--expect", required=True, help="file with the bytes the client sent")
    options = parser.parse_args()

    connection = client.Connection(authurl=options.authurl, user=options.user,
                                   key=options.key, retries=0)
    headers, stored = connection.get_object(options.container, options.object)
    with open(options.expect, "rb") as handle:
        expected = handle.read().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    received = re.match(rb"Received: .*?\r\n(?![ \t])", stored, re.DOTALL)
    json.dump({
        "size": len(stored),
        "exact": bool(received) and stored[received.end():] == expected,
        "etag_ok": headers["etag"] == hashlib.md5(stored).hexdigest(),
        "content_type": headers.get("content-type"),
        "metadata": {k: v for k, v in headers.items() if k.startswith("x-object-meta-")},
    }, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
