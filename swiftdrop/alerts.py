"""Tell someone when storing fails, without flooding them.

Every failure is already a journald entry at priority err. An operator who
does not watch the journal can also get a notice by HTTP POST (a chat or
paging webhook) and/or by mail through the local Postfix: at most one per
destination per interval, the next one saying how many failures were not
reported in between. Ten failures in a row during an outage are one notice,
not ten.

The mail goes through the admin relay (Postfix's own queue), not Swift, so
it still leaves while Swift is the thing that is down.
"""

import json
import logging
import socket
import threading
import time
import urllib.request

from .passthrough import RelayError

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT = 5


class Alerter:
    """Rate-limited failure notices; sending never delays an SMTP reply."""

    def __init__(self, interval, *, webhook_url=None, mail_to=None, relay=None,
                 clock=time.monotonic):
        self.webhook_url = webhook_url
        self.mail_to = mail_to
        self.relay = relay
        self.interval = interval
        self.clock = clock
        self.hostname = socket.gethostname()
        self._lock = threading.Lock()
        self._last_sent = {}
        self._suppressed = {}

    def failure(self, section, container, reason, status=None, transaction_id=None):
        """Note one failed store; send a notice if this destination's interval has passed."""
        now = self.clock()
        with self._lock:
            last = self._last_sent.get(section)
            if last is not None and now - last < self.interval:
                self._suppressed[section] = self._suppressed.get(section, 0) + 1
                return
            self._last_sent[section] = now
            suppressed = self._suppressed.pop(section, 0)
        notice = {
            "event": "swiftdrop.store_failed", "host": self.hostname, "section": section,
            "container": container, "reason": reason, "swift_status": status,
            "transaction_id": transaction_id, "suppressed_since_last_notice": suppressed,
            "text": f"SwiftDrop on {self.hostname} could not store mail for [{section}] "
                    f"({container}): {reason}. Senders got 451 and will retry."
                    + (f" {suppressed} more failure(s) since the last notice." if suppressed
                       else ""),
        }
        threading.Thread(target=self._send, args=(notice,), daemon=True).start()

    def _send(self, notice):
        if self.webhook_url:
            self._post(notice)
        if self.mail_to:
            self._mail(notice)

    def _mail(self, notice):
        subject = f"SwiftDrop on {self.hostname}: storing failed for [{notice['section']}]"
        try:
            self.relay.notify(self.mail_to, subject, notice["text"] + "\n\n"
                              + json.dumps(notice, indent=2) + "\n")
        except RelayError as error:
            log.error("could not mail the failure notice to %s: %s", self.mail_to, error)

    def _post(self, notice):
        request = urllib.request.Request(
            self.webhook_url, data=json.dumps(notice).encode(), method="POST",
            headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:
                response.read()
        except OSError as error:
            log.error("could not send the failure notice to the webhook: %s", error)
