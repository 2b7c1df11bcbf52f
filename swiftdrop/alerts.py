"""Tell someone when storing fails, without flooding them.

Every failure is already a journald entry at priority err. An operator who
does not watch the journal can also get a notice by HTTP POST (a chat or
paging webhook) and/or by mail through the local Postfix: at most one per
destination per interval, the next one saying how many failures were not
reported in between. Ten failures in a row during an outage are one notice,
not ten. When a destination that was reported failing stores again, a
"recovered" notice closes the loop, with the failures since the last notice.

The mail goes through the admin relay (Postfix's own queue), not Swift, so
it still leaves while Swift is the thing that is down.
"""

import json
import logging
import socket
import threading
import time
import urllib.request

from . import metrics
from .admin_relay import RelayError

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
        self._reported_failing = set()  # sections whose last notice said "failed"

    def failure(self, section, container, reason, status=None, transaction_id=None):
        """Note one failed store; send a notice if this destination's interval has passed."""
        suppressed = self._failing(section)
        if suppressed is None:
            return
        notice = {
            "event": "swiftdrop.store_failed", "host": self.hostname, "section": section,
            "container": container, "reason": reason, "swift_status": status,
            "transaction_id": transaction_id, "suppressed_since_last_notice": suppressed,
            "text": f"SwiftDrop on {self.hostname} could not store mail for [{section}] "
                    f"({container}): {reason}. Senders got 451 and will retry."
                    + (f" {suppressed} more failure(s) since the last notice." if suppressed
                       else ""),
        }
        self._send_later(notice, f"storing failed for [{section}]")

    def stored(self, section):
        """Note a stored copy; if the last notice for `section` said it failed, say it recovered.

        Flapping costs at most one failure and one recovery notice per interval:
        the next failure notice still waits for the interval since the last one.
        """
        failures = self._recovered(section)
        if failures is None:
            return
        notice = {
            "event": "swiftdrop.store_recovered", "host": self.hostname, "section": section,
            "failures_since_last_notice": failures,
            "text": f"SwiftDrop on {self.hostname} stores mail for [{section}] again"
                    f" ({failures} more failure(s) since the last notice).",
        }
        self._send_later(notice, f"storing works again for [{section}]")

    def verdicts_unavailable(self, url, reason):
        """Note a message stored without verdicts; a notice at most once per interval.

        The mail was stored, so this is worth less haste than a failed store,
        but a consumer that trusts the verdicts must learn they are missing.
        """
        suppressed = self._failing(("verdicts", url))
        if suppressed is None:
            return
        notice = {
            "event": "swiftdrop.verdicts_unavailable", "host": self.hostname, "rspamd": url,
            "reason": reason, "suppressed_since_last_notice": suppressed,
            "text": f"SwiftDrop on {self.hostname} could not get verdicts from rspamd at "
                    f"{url}: {reason}. Messages are stored with every verdict "
                    "\"unavailable\"."
                    + (f" {suppressed} more since the last notice." if suppressed else ""),
        }
        self._send_later(notice, "rspamd verdicts unavailable")

    def verdicts_available(self, url):
        """Note an answer from rspamd; say it recovered if the last notice said otherwise."""
        missed = self._recovered(("verdicts", url))
        if missed is None:
            return
        notice = {
            "event": "swiftdrop.verdicts_available", "host": self.hostname, "rspamd": url,
            "unavailable_since_last_notice": missed,
            "text": f"SwiftDrop on {self.hostname} gets verdicts from rspamd at {url} again "
                    f"({missed} more message(s) without verdicts since the last notice).",
        }
        self._send_later(notice, "rspamd verdicts available again")

    def _failing(self, key):
        """None while `key`'s interval runs (the failure is counted for the next
        notice); else the count held back since the last notice, one to send now."""
        now = self.clock()
        with self._lock:
            last = self._last_sent.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            self._last_sent[key] = now
            self._reported_failing.add(key)
            return self._suppressed.pop(key, 0)

    def _recovered(self, key):
        """The failures since the last notice if that notice said `key` failed; else None."""
        with self._lock:
            if key not in self._reported_failing:
                return None
            self._reported_failing.discard(key)
            return self._suppressed.pop(key, 0)

    def _send_later(self, notice, subject):
        threading.Thread(target=self._send, args=(notice, subject), daemon=True).start()

    def _send(self, notice, subject):
        delivered = False
        if self.webhook_url:
            delivered |= self._post(notice)
        if self.mail_to:
            delivered |= self._mail(notice, subject)
        if delivered:
            metrics.ALERTS_SENT.inc()

    def _mail(self, notice, subject):
        try:
            self.relay.notify(self.mail_to, f"SwiftDrop on {self.hostname}: {subject}",
                              notice["text"] + "\n\n" + json.dumps(notice, indent=2) + "\n")
        except RelayError as error:
            log.error("could not mail the notice to %s: %s", self.mail_to, error)
            return False
        return True

    def _post(self, notice):
        request = urllib.request.Request(
            self.webhook_url, data=json.dumps(notice).encode(), method="POST",
            headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:
                response.read()
        except OSError as error:
            log.error("could not send the notice to the webhook: %s", error)
            return False
        return True
