"""Markers of done messages, so that a worker with --dedup can skip a repeat."""

import hashlib

from ..libraries import ClientException

DEDUP_PREFIX = "dedup/"


class Dedup:
    """Remember what was done, and look it up; both only for claims made with --dedup."""

    def _dedup_marker(self, claimed):
        """dedup/<sha256 of Message-ID, content and the sorted recipients>, or None.

        The recipients are part of the key: a sender that splits recipients
        over transactions sends the same Message-ID and body once per
        recipient, and each of those is a message to process, not a repeat.
        """
        message_id = claimed.metadata.get("message-id")
        content = claimed.metadata.get("dedup-md5") or hashlib.md5(
            claimed.body, usedforsecurity=False).hexdigest()
        if not message_id:
            return None  # identical content alone may be two real messages
        recipients = "\n".join(sorted(claimed.recipients))
        key = hashlib.sha256(f"{message_id}\0{content}\0{recipients}".encode()).hexdigest()
        return DEDUP_PREFIX + key

    def remember_done(self, claimed):
        """Note a done message for the dedup window: one PUT, for --dedup claims only."""
        marker = self._dedup_marker(claimed) if claimed.dedup else None
        if marker and self.settings.dedup_window > 0:
            self.connection.put_object(
                self.container, marker, claimed.name,  # str: swiftclient can resend it
                headers={"X-Delete-After": str(int(self.settings.dedup_window))})

    def duplicate_of(self, claimed):
        """The done message this one duplicates within the window, or None."""
        marker = self._dedup_marker(claimed)
        if marker is None:
            return None
        try:
            return self.connection.get_object(self.container, marker)[1].decode()
        except ClientException as error:
            if error.http_status == 404:
                return None
            raise
