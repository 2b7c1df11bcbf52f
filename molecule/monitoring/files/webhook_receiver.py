#!/usr/bin/python3
"""Test-only webhook receiver in the monitoring guest: 200 for every POST, 406 for one recipient.

The 406 makes a dead letter (the webhook moves such a message to failed/ at
once), so the dashboard's dead-letter panel has a non-zero series to show.
It prints one line per POST (the journal of its unit): the id and the status.

    webhook_receiver.py ADDRESS PORT REFUSED-RECIPIENT
"""

from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json
import sys


class Receiver(BaseHTTPRequestHandler):
    refused = ""

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        recipients = json.loads(body)["envelope"]["rcpt_to"]
        status = 406 if self.refused in recipients else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
        print(self.headers.get("X-SwiftDrop-Id"), status, flush=True)

    def log_message(self, *args):
        """The line in do_POST says what matters; no access log besides."""


def main():
    address, port, refused = sys.argv[1:]
    Receiver.refused = refused
    ThreadingHTTPServer((address, int(port)), Receiver).serve_forever()


if __name__ == "__main__":
    main()
