"""A webhook receiver on 127.0.0.1 that keeps every JSON notice POSTed to it."""

import http.server
import json
import threading
import time


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers["Content-Length"])
        self.server.notices.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


class Webhook:
    """``with Webhook() as hook``: POST to ``hook.url``, read ``hook.notices``."""

    def __init__(self):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.notices = []
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    @property
    def notices(self):
        return list(self.server.notices)

    def clear(self):
        self.server.notices.clear()

    def wait_for(self, count, timeout=10):
        """The notices once there are `count` (or the timeout passed): sending is async."""
        deadline = time.monotonic() + timeout
        while len(self.server.notices) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.notices

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
