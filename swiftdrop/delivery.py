"""Turn one received message into stored copies and the single SMTP reply for it."""

import hashlib
import io
import logging
import threading
import time

from . import metrics
from .admin_relay import RelayError
from .deadline import Deadline
from .envelope import envelope_path, recipient_metadata
from .failures import StoreError
from .naming import MAILDIR_PREFIX
from .reception import Message
from .routing import Delivery, Router
from .shards import shard_for
from .smtp import QUEUE_WRITE_ERROR
from .storage import metadata_value
from .stream_index import entry_fields

log = logging.getLogger(__name__)

MAX_REPLY_TEXT = 400  # keep the 250 line well under SMTP's 512-octet reply limit
REFUSED = "550 5.7.1 Error: message refused by the recipient's policy"
CLEANUP_ATTEMPTS = 3
RECIPIENT_LIST_TYPE = "text/plain; charset=utf-8"


def opaque_id(name):
    """A short id for the reply that says nothing about our layout, host or PID.

    Derived from the object name, so it is the same in the journal entry
    (SWIFTDROP_ID) and can be recomputed from any stored object.
    """
    return hashlib.blake2b(name.encode(), digest_size=8).hexdigest()


class Deliverer:
    """Stores a message once per destination; 250 only if every copy is stored.

    Replies are per message, never per recipient: Postfix's speed_adjust mode
    relays our one reply to the client, so a partial success must become a 451
    for all, and the copies already made are removed again so the sender's
    retry does not leave duplicates behind. Everything done for one message
    is bounded by one Deadline, store_timeout from the end of DATA; removing
    copies that did not fit in it continues in the background.

    With a `verdicts` client (rspamd) every copy carries the message's
    verdicts. A destination with reject_verdicts refuses a matching message
    with 550; as the reply is one for all recipients, one refusing
    destination refuses the whole message: nothing is stored for anyone,
    and the sender learns it was not delivered (a 250 would tell the sender
    the refusing recipients got it).
    """

    def __init__(self, config, store, namer, store_timeout, *, alerter=None,
                 admin_relay=None, reply_detail="id", verdicts=None, announcer=None):
        self.router = Router(config)
        self.announcer = announcer
        self.verdicts = verdicts
        self.store = store
        self.namer = namer
        self.store_timeout = store_timeout
        self.alerter = alerter
        self.admin_relay = admin_relay
        self.reply_detail = reply_detail

    def __call__(self, envelope, message):
        deadline = Deadline(self.store_timeout)
        name = self.namer.name(message.size)
        fields = {"SWIFTDROP_ID": opaque_id(name), "SWIFTDROP_OBJECT": name,
                  "SWIFTDROP_SIZE": message.size,
                  "SWIFTDROP_MESSAGE_ID": message.message_id or "",
                  "SWIFTDROP_RECIPIENTS": len(envelope.recipients),
                  "SWIFTDROP_CLIENT_ADDRESS": envelope.xforward.get("ADDR") or "",
                  "SWIFTDROP_MAIL_FROM": envelope.mail_from or "<>",
                  "SWIFTDROP_ATTEMPTS": 0,
                  "SWIFTDROP_CONTAINER": "", "SWIFTDROP_SECTION": "",
                  "SWIFTDROP_SWIFT_STATUS": "", "SWIFTDROP_TRANS_ID": ""}
        try:
            return self.deliver(envelope, message, name, fields, deadline)
        except Exception as error:  # a bug must defer the message, never drop the session
            reason = f"internal error: {type(error).__name__}: {error}"
            fields.update(SWIFTDROP_RESULT="failed", SWIFTDROP_REASON=reason,
                          SWIFTDROP_DURATION_MS=_elapsed_ms(deadline))
            log.exception("internal error while storing %s; replied 451", name, extra=fields)
            self.notify(fields, reason)
            return QUEUE_WRITE_ERROR

    def deliver(self, envelope, message, name, fields, deadline):
        for_admin = self.admin_recipients(envelope.recipients)
        # Each copy goes to the shard container its name hashes to (swiftdrop.shards):
        # from here on, and in the reply and journal entry, that container is the copy's.
        deliveries = [Delivery(shard_for(delivery.destination, name), delivery.recipients)
                      for delivery in self.router.route(
                          [r for r in envelope.recipients if r not in for_admin])]
        fields["SWIFTDROP_CONTAINER"] = " ".join(d.destination.container for d in deliveries)
        fields["SWIFTDROP_SECTION"] = " ".join(d.destination.section for d in deliveries)
        verdicts = None
        if self.verdicts is not None and deliveries:
            verdicts = self.verdicts.check(envelope, message, deadline=deadline,
                                           queue_id=fields["SWIFTDROP_ID"])
            fields["SWIFTDROP_VERDICTS"] = verdicts.summary()
            refusals = refusing(verdicts, deliveries)
            if refusals:
                return self.refuse(name, refusals, fields, deadline)
        copies = self.store_copies(envelope, message, name, deliveries, fields=fields,
                                   deadline=deadline, verdicts=verdicts)
        if copies is None:
            return QUEUE_WRITE_ERROR
        stored, lists = copies
        if for_admin:
            relayed = self.forward_to_admin(envelope, message, name, for_admin, fields,
                                            deadline=deadline)
            if relayed is None:
                self.remove(stored + lists, name, deadline, fields)
                return QUEUE_WRITE_ERROR
            if not stored:
                if self.reply_detail == "full":
                    return f"250 2.0.0 Ok: forwarded to the administrator ({relayed})"[
                        :MAX_REPLY_TEXT]
                return f"250 2.0.0 Ok: forwarded, id {fields['SWIFTDROP_ID']}"
        if self.announcer:
            self.announce(envelope, message, stored, verdicts, deadline)
        if self.alerter is not None:
            for delivery, _ in stored:
                self.alerter.stored(delivery.destination.section)
        fields.update(SWIFTDROP_RESULT="stored", SWIFTDROP_DURATION_MS=_elapsed_ms(deadline),
                      SWIFTDROP_TRANS_ID=" ".join(copy.transaction_id or "-" for _, copy in stored))
        log.info("stored %s (%d bytes) in %s in %d ms", name, message.size,
                 ", ".join(f"[{d.destination.section}] {d.destination.container}"
                           for d, _ in stored),
                 fields["SWIFTDROP_DURATION_MS"], extra=fields)
        if self.reply_detail == "full":
            return stored_reply([f"{copy.container}/{copy.name}" for _, copy in stored])
        return f"250 2.0.0 Ok: stored, id {fields['SWIFTDROP_ID']}"

    def announce(self, envelope, message, stored, verdicts, deadline):
        """Announce each copy in its destination's stream index, if it has one.

        After every copy is stored and before the 250; a failed announce
        costs neither (swiftdrop.stream_index.Announcer).
        """
        verdict_values = verdicts.metadata() if verdicts is not None else {}
        for delivery, copy in stored:
            base = copy.name.removeprefix(MAILDIR_PREFIX)
            self.announcer.announce(delivery.destination, base, entry_fields(
                base, copy.container, size=message.size, verdicts=verdict_values,
                envelope={"mail_from": envelope.mail_from or "<>",
                          "rcpt_to": list(delivery.recipients),
                          "client_address": envelope.xforward.get("ADDR"),
                          "client_name": envelope.xforward.get("NAME"),
                          "client_helo": envelope.xforward.get("HELO"),
                          "message_id": message.message_id}), deadline=deadline)

    def refuse(self, name, refusals, fields, deadline):
        """The 550 for a message a destination's reject_verdicts refuses; nothing stored."""
        reason = "; ".join(f"[{section}] {', '.join(names)}" for section, names in refusals)
        for _, names in refusals:
            for verdict in names:
                metrics.VERDICT_REFUSALS.labels(verdict).inc()
        fields.update(SWIFTDROP_RESULT="refused", SWIFTDROP_REASON=reason,
                      SWIFTDROP_DURATION_MS=_elapsed_ms(deadline))
        log.info("refused %s (%s): %s; replied 550", name, fields["SWIFTDROP_VERDICTS"],
                 reason, extra=fields)
        return REFUSED

    def store_copies(self, envelope, message, name, deliveries, *, fields, deadline,
                     verdicts=None):
        """(copies, recipient lists beside them) all stored, or None after logging why.

        What was stored of a message that fails is removed again, its
        recipient lists included.
        """
        stored, lists = [], []
        try:
            for delivery in deliveries:
                metadata, recipient_list = self.metadata(envelope, message, delivery, name)
                if verdicts is not None:
                    metadata.update(verdicts.metadata())
                if recipient_list is not None:
                    # before the message: no consumer may see it without all its recipients
                    listed = self.store.put(delivery.destination, envelope_path(name),
                                            text_object(recipient_list), {},
                                            deadline=deadline, content_type=RECIPIENT_LIST_TYPE)
                    lists.append((delivery, listed))
                copy = self.store.put(delivery.destination, name, message, metadata,
                                      deadline=deadline)
                stored.append((delivery, copy))
                fields["SWIFTDROP_ATTEMPTS"] += copy.attempts
                metrics.COPIES.labels(delivery.destination.section, "stored").inc()
                metrics.SHARD_COPIES.labels(delivery.destination.section,
                                            str(delivery.destination.shard)).inc()
        except StoreError as error:
            destination = delivery.destination
            fields["SWIFTDROP_ATTEMPTS"] += getattr(error, "attempts", 0)
            metrics.COPIES.labels(destination.section, "failed").inc()
            fields.update(SWIFTDROP_SECTION=destination.section,
                          SWIFTDROP_CONTAINER=destination.container,
                          SWIFTDROP_SWIFT_STATUS=error.status or "",
                          SWIFTDROP_TRANS_ID=error.transaction_id or "")
            self.failed(fields, deadline, error.reason,
                        f"not stored {name} in [{destination.section}] container "
                        f"{destination.container}", status=error.status,
                        transaction_id=error.transaction_id)
            self.remove(stored + lists, name, deadline, fields)
            return None
        except Exception:
            self.remove(stored + lists, name, deadline, fields)
            raise
        return stored, lists

    def failed(self, fields, deadline, reason, what, *, status=None, transaction_id=None):
        """The err journal entry with every SWIFTDROP_* field, and the failure notice."""
        fields.update(SWIFTDROP_RESULT="failed", SWIFTDROP_REASON=reason,
                      SWIFTDROP_DURATION_MS=_elapsed_ms(deadline))
        log.error("%s: %s%s; replied 451", what, reason,
                  f" (transaction {transaction_id})" if transaction_id else "", extra=fields)
        self.notify(fields, reason, status, transaction_id)

    def notify(self, fields, reason, status=None, transaction_id=None):
        if self.alerter is not None:
            self.alerter.failure(fields["SWIFTDROP_SECTION"] or "-",
                                 fields["SWIFTDROP_CONTAINER"] or "-", reason, status,
                                 transaction_id)

    def forward_to_admin(self, envelope, message, name, recipients, fields, *, deadline):
        """Postfix's reply (with its queue id), or None after logging why it failed."""
        try:
            relayed = self.admin_relay.forward(envelope, recipients, message, deadline=deadline)
        except RelayError as error:
            self.failed(dict(fields, SWIFTDROP_SECTION="admin relay",
                             SWIFTDROP_CONTAINER=""), deadline, str(error),
                        f"not forwarded {name} for {', '.join(recipients)}")
            return None
        metrics.ADMIN_RELAYED.inc()
        log.info("forwarded %s (%d bytes) for %s to the admin relay: %s", name, message.size,
                 ", ".join(recipients), relayed, extra=dict(fields, SWIFTDROP_RESULT="forwarded"))
        return relayed

    def remove(self, stored, name, deadline, fields):
        """Delete the copies of a message that gets 451; what the deadline leaves, later.

        The reply must not wait for the cleanup once the deadline has passed,
        so the rest is removed by a background thread, and logged.
        """
        leftover = [(delivery.destination, copy.name) for delivery, copy in stored
                    if deadline.remaining() <= 0
                    or not self.store.delete(delivery.destination, copy.name,
                                             deadline=deadline)]
        if leftover:
            threading.Thread(target=self.remove_later, args=(leftover, fields),
                             daemon=True, name="swiftdrop-cleanup").start()

    def remove_later(self, leftover, fields):
        """Remove each (destination, object name) the reply did not wait for."""
        for destination, name in leftover:
            where = dict(fields, SWIFTDROP_SECTION=destination.section,
                         SWIFTDROP_CONTAINER=destination.container)
            for attempt in range(CLEANUP_ATTEMPTS):
                if attempt:
                    time.sleep(2 ** attempt)
                if self.store.delete(destination, name):
                    log.info("removed %s/%s after the reply (451)", destination.container,
                             name, extra=dict(where, SWIFTDROP_RESULT="removed"))
                    break
            else:
                log.error("could not remove %s/%s after its message got 451; it is a copy "
                          "of a message the sender will retry: delete it", destination.container,
                          name, extra=dict(where, SWIFTDROP_RESULT="not-removed"))

    def admin_recipients(self, recipients):
        """Role addresses the admin relay takes, unless a named section routes them."""
        if self.admin_relay is None:
            return []
        return [recipient for recipient in recipients
                if self.admin_relay.takes(recipient) and not self.router.routes(recipient)]

    def metadata(self, envelope, message, delivery, name):
        """(X-Object-Meta-* values, recipient list text or None): what a consumer needs.

        A copy lists the recipients of its destination only (swiftdrop.envelope
        says where): a consumer of one container learns nothing of the
        recipients another destination got.
        """
        recipient_keys, recipient_list = recipient_metadata(delivery.recipients, name)
        values = {
            "Mail-From": envelope.mail_from or "<>",
            **recipient_keys,
            "Received-By": self.namer.hostname,
            "Client-Address": envelope.xforward.get("ADDR"),
            "Client-Name": envelope.xforward.get("NAME"),
            "Client-Helo": envelope.xforward.get("HELO"),
            "Message-Id": message.message_id,
        }
        return ({key: metadata_value(value) for key, value in values.items() if value},
                recipient_list)


def refusing(verdicts, deliveries):
    """[(section, [reject_verdicts names that match])] of the destinations that refuse."""
    refusals = []
    for delivery in deliveries:
        names = verdicts.matching(delivery.destination.reject_verdicts)
        if names:
            refusals.append((delivery.destination.section, names))
    return refusals


def text_object(text):
    """A Message of `text`, for Store.put: the recipient list stored beside a message."""
    data = text.encode("utf-8")
    return Message(io.BytesIO(data), len(data), hashlib.md5(data, usedforsecurity=False)
                   .hexdigest(), None)


def stored_reply(locations):
    """``250 2.0.0 Ok: stored as <container>/<object>[, ...]``; Postfix logs this text."""
    text = "250 2.0.0 Ok: stored as " + locations[0]
    for index, location in enumerate(locations[1:], start=1):
        if len(text) + len(location) + 2 > MAX_REPLY_TEXT:
            return f"{text} and {len(locations) - index} more"
        text += ", " + location
    return text


def _elapsed_ms(deadline):
    return round(deadline.elapsed() * 1000)
