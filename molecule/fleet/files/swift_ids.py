#!/usr/bin/env python3
"""List the Message-IDs of the mail one container of the fleet's Swift holds.

Runs on the fleet scenario's Swift guest (python3-swiftclient and
python3-swift are there). Reads every object of --container through the
proxy and prints JSON: {"objects": N, "ids": [Message-ID, ...], "copies":
[n, ...]}, one entry per object, so that a message stored twice shows up
twice. copies[i] is how many of the storage nodes that the object ring in
--swift-dir names for object i hold it (asked directly, not through the
proxy), so that a node that was away shows whether it has caught up.
"""

import argparse
import json
import re
import sys
import urllib.parse

from swift.common import direct_client, utils
from swift.common.exceptions import ClientException
from swift.common.ring import Ring
from swiftclient import client

MESSAGE_ID = re.compile(rb"^Message-ID: <([^>]+)>\r?$", re.MULTILINE | re.IGNORECASE)


def copies_counter(swift_dir, account, container):
    """A function of an object's name: how many of its ring's nodes hold it."""
    utils.set_swift_dir(swift_dir)  # the cluster's hash suffix, not /etc/swift's
    ring = Ring(swift_dir, ring_name="object")

    def holds(node, partition, name):
        """A node that is down holds no copy anyone could read."""
        try:
            direct_client.direct_head_object(node, partition, account, container, name)
        except ConnectionRefusedError:
            return False
        except ClientException as error:
            if error.http_status == 404:
                return False
            raise
        return True

    def count(name):
        partition, nodes = ring.get_nodes(account, container, name)
        return sum(holds(node, partition, name) for node in nodes)

    return count


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--authurl", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--container", required=True)
    parser.add_argument("--swift-dir", required=True, help="the cluster's swift.conf and rings")
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
    account = urllib.parse.unquote(connection.url.rstrip("/").rpartition("/")[2])
    count = copies_counter(options.swift_dir, account, options.container)
    copies = [count(entry["name"]) for entry in listing]
    json.dump({"objects": len(listing), "ids": ids, "copies": copies}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
