"""Turn one received message into stored copies and the single SMTP reply for it."""

import logging
import time

from .passthrough import RelayError
from .routing import Router
from .smtp import QUEUE_WRITE_ERROR
from .storage import MAX_META_VALUE, StoreError, metadata_value

log = logging.getLogger(__name__)

MAX_REPLY_TEXT = 400  # keep the 250 line well under SMTP's 512-octet reply limit


class Deliverer:
    """Stores a message once per destination; 250 only if every copy is stored.

    Replies are per message, never per recipient: Postfix's speed_adjust mode
    relays our one reply to the client, so a partial success must become a 451
    for all, and the copies already made are removed again so the sender's
    retry does not leave duplicates behind.
    """

    def __init__(self, config, store, namer, store_timeout, *, alerter=None,
                 admin_relay=None):
        self.router = Router(config)
        self.store = store
        self.namer = namer
        self.store_timeout = store_timeout
        self.alerter = alerter
        self.admin_relay = admin_relay

    def __call__(self, envelope, message):
        try:
            return self.deliver(envelope, message)
        except Exception:  # a bug must defer the message, never drop the session silently
            log.exception("internal error while storing a message; replied 451")
            return QUEUE_WRITE_ERROR

    def deliver(self, envelope, message):
        started = time.monotonic()
        name = self.namer.name(message.size)
        fields = {"SWIFTDROP_OBJECT": name, "SWIFTDROP_SIZE": message.size,
                  "SWIFTDROP_MESSAGE_ID": message.message_id or "",
                  "SWIFTDROP_RECIPIENTS": len(envelope.recipients)}
        for_admin = self.admin_recipients(envelope.recipients)
        deliveries = self.router.route([r for r in envelope.recipients if r not in for_admin])
        fields["SWIFTDROP_CONTAINER"] = " ".join(d.destination.container for d in deliveries)
        fields["SWIFTDROP_SECTION"] = " ".join(d.destination.section for d in deliveries)
        stored = self.store_copies(envelope, message, name, deliveries, started=started,
                                   fields=fields)
        if stored is None:
            return QUEUE_WRITE_ERROR
        if for_admin:
            relayed = self.forward_to_admin(envelope, message, name, for_admin, fields)
            if relayed is None:
                self.remove(stored, name)
                return QUEUE_WRITE_ERROR
            if not stored:
                return f"250 2.0.0 Ok: forwarded to the administrator ({relayed})"[
                    :MAX_REPLY_TEXT]
        fields.update(SWIFTDROP_RESULT="stored", SWIFTDROP_DURATION_MS=_elapsed_ms(started),
                      SWIFTDROP_TRANS_ID=" ".join(copy.transaction_id or "-" for _, copy in stored))
        log.info("stored %s (%d bytes) in %s in %d ms", name, message.size,
                 ", ".join(f"[{d.destination.section}] {d.destination.container}"
                           for d, _ in stored),
                 fields["SWIFTDROP_DURATION_MS"], extra=fields)
        return stored_reply([f"{copy.container}/{copy.name}" for _, copy in stored])

    def store_copies(self, envelope, message, name, deliveries, *, started, fields):
        """All copies stored, or None after logging why and removing the partial ones."""
        deadline = started + self.store_timeout
        stored = []
        try:
            for delivery in deliveries:
                metadata = self.metadata(envelope, message, delivery)
                copy = self.store.put(delivery.destination, name, message, metadata,
                                      deadline=deadline)
                stored.append((delivery, copy))
        except StoreError as error:
            self.remove(stored, name)
            fields.update(SWIFTDROP_RESULT="failed", SWIFTDROP_SECTION=delivery.destination.section,
                          SWIFTDROP_CONTAINER=delivery.destination.container,
                          SWIFTDROP_SWIFT_STATUS=error.status or "",
                          SWIFTDROP_TRANS_ID=error.transaction_id or "",
                          SWIFTDROP_DURATION_MS=_elapsed_ms(started))
            log.error("not stored %s in [%s] container %s: %s%s; replied 451",
                      name, delivery.destination.section, delivery.destination.container,
                      error.reason,
                      f" (transaction {error.transaction_id})" if error.transaction_id else "",
                      extra=fields)
            if self.alerter is not None:
                self.alerter.failure(delivery.destination.section, delivery.destination.container,
                                     error.reason, error.status, error.transaction_id)
            return None
        return stored

    def forward_to_admin(self, envelope, message, name, recipients, fields):
        """Postfix's reply (with its queue id), or None after logging why it failed."""
        try:
            relayed = self.admin_relay.forward(envelope, recipients, message)
        except RelayError as error:
            log.error("not forwarded %s for %s: %s; replied 451", name, ", ".join(recipients),
                      error, extra=dict(fields, SWIFTDROP_RESULT="failed"))
            return None
        log.info("forwarded %s (%d bytes) for %s to the admin relay: %s", name, message.size,
                 ", ".join(recipients), relayed, extra=dict(fields, SWIFTDROP_RESULT="forwarded"))
        return relayed

    def remove(self, stored, name):
        for delivery, _ in stored:
            self.store.delete(delivery.destination, name)

    def admin_recipients(self, recipients):
        """Role addresses the admin relay takes, unless a named section routes them."""
        if self.admin_relay is None:
            return []
        return [recipient for recipient in recipients
                if self.admin_relay.takes(recipient) and not self.router.routes(recipient)]

    def metadata(self, envelope, message, delivery):
        """The X-Object-Meta-* values a consumer needs without parsing the message."""
        values = {
            "Mail-From": envelope.mail_from or "<>",
            "Rcpt-To": join_within(delivery.recipients, MAX_META_VALUE),
            "Rcpt-Count": str(len(delivery.recipients)),
            "Received-By": self.namer.hostname,
            "Client-Address": envelope.xforward.get("ADDR"),
            "Client-Name": envelope.xforward.get("NAME"),
            "Client-Helo": envelope.xforward.get("HELO"),
            "Message-Id": message.message_id,
            "Dedup-Md5": message.dedup_md5,
        }
        return {key: metadata_value(value) for key, value in values.items() if value}


def join_within(items, limit):
    """Join whole items with ", " up to `limit` UTF-8 bytes; Rcpt-Count tells the full count."""
    text = ""
    for item in items:
        candidate = f"{text}, {item}" if text else item
        if len(candidate.encode()) > limit:
            break
        text = candidate
    return text


def stored_reply(locations):
    """``250 2.0.0 Ok: stored as <container>/<object>[, ...]``; Postfix logs this text."""
    text = "250 2.0.0 Ok: stored as " + locations[0]
    for index, location in enumerate(locations[1:], start=1):
        if len(text) + len(location) + 2 > MAX_REPLY_TEXT:
            return f"{text} and {len(locations) - index} more"
        text += ", " + location
    return text


def _elapsed_ms(started):
    return round((time.monotonic() - started) * 1000)
