#!/usr/bin/env python3
"""Test-only webhook receiver for molecule/consumer, run in the guest as a unit.

It checks each POST's X-SwiftDrop-Signature as docs/webhooks.md tells a
consumer to (HMAC-SHA256 of "<timestamp>.<body>" with the shared secret,
read from --secret-file, python3's own hmac; a timestamp more than 300 s
off refused), appends one JSON line per POST to --out (the
headers, names in lower case; whether the signature verified, the body's id) and answers 200
when it verified, 401 when not (which SwiftDrop retries).

    webhook_receiver.py --port 8099 --secret-file FILE --out /var/lib/webhook-receiver/posts.jsonl
"""

import argparse
import hashlib
import hmac
import http.server
import json
import time

TOLERANCE = 300


def verified(secret, headers, body):
    """True when the signature is v1=HMAC(secret, timestamp "." body) and the timestamp is fresh."""
    timestamp = headers.get("X-SwiftDrop-Timestamp", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE:
        return False
    expected = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(headers.get("X-SwiftDrop-Signature", ""), "v1=" + expected)


def handler(secret, out):
    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            ok = verified(secret, self.headers, body)
            try:
                posted_id = json.loads(body).get("id")
            except ValueError:
                posted_id = None
            with open(out, "a", encoding="utf-8") as log:
                headers = {name.lower(): value for name, value in self.headers.items()}
                log.write(json.dumps({"headers": headers, "verified": ok,
                                      "id": posted_id, "size": len(body)}) + "\n")
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Receiver


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("--out", required=True)
    options = parser.parse_args()
    with open(options.secret_file, "rb") as secret_file:
        secret = secret_file.read()
    server = http.server.HTTPServer(("127.0.0.1", options.port), handler(secret, options.out))
    server.serve_forever()


if __name__ == "__main__":
    main()
