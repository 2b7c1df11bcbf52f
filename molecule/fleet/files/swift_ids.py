#!/usr/bin/env python3
"""List the Message-IDs of the mail one container of the guest's Swift holds.

Runs on an MX guest of the fleet scenario (python3-swiftclient is there for
the filter). Reads every object of --container and prints JSON:
{"objects": N, "ids": [Message-ID, ...]}, one entry per object, so that a
message stored twice shows up twice.
"""

import argparse
import json
import re
import sys

from swiftclient import client

MESSAGE_ID = re.compile(rb"^Message-ID: <([^>]+)>\r?$", re.MULTILINE | re.IGNORECASE)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--authurl", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--container", required=True)
    options = parser.parse_args()

    connection = client.Connection(authurl=options.authurl, user=options.user,
                                   key=options.key, retries=0)
    _, listing = connection.get_container(options.container, full_listing=True)
    ids = []
    for entry in listing:
        _, body = connection.get_object(options.container, entry["name"])
        headers = body.split(b"\r\n\r\n", 1)[0]
        found = MESSAGE_ID.search(headers)
        ids.append(found[1].decode() if found else None)
    json.dump({"objects": len(listing), "ids": ids}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
