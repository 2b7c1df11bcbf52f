"""Markers of done messages, so that a worker with --dedup can skip a repeat."""

import hashlib
import re

from ..libraries import ClientException
from ..shards import shard_index

DEDUP_PREFIX = "dedup/"
FIRST_FIELD_END = re.compile(rb"\n(?=[^ \t])")


def content_digest(body):
    """The MD5 of `body` without its first header field if that is Received:.

    When a sender retries after a 451 the new copy differs from the old only
    in the topmost Received: field, the one this MX's Postfix prepended, so
    equal digests spot a repeat the sender made. Computed here, from the
    bytes a claim reads anyway, and not by the filter while it receives:
    there it was a second MD5 pass over every message (~1.8 ms per MB) on
    the path whose time the sender waits for, for consumers that may never
    ask for it. Copies that earlier builds stored carry it as Dedup-Md5 metadata.
    """
    skip = 0
    if body[:9].lower() == b"received:":
        end = FIRST_FIELD_END.search(body)
        skip = end.end() if end else 0
    return hashlib.md5(memoryview(body)[skip:], usedforsecurity=False).hexdigest()


class Dedup:
    """Remember what was done, and look it up; both only for claims made with --dedup."""

    def _dedup_marker(self, claimed):
        """dedup/<sha256 of Message-ID, content and the sorted recipients>, or None.

        The recipients are part of the key: a sender that splits recipients
        over transactions sends the same Message-ID and body once per
        recipient, and each of those is a message to process, not a repeat.
        """
        message_id = claimed.metadata.get("message-id")
        content = claimed.dedup_md5
        if not message_id:
            return None  # identical content alone may be two real messages
        recipients = "\n".join(sorted(claimed.recipients))
        key = hashlib.sha256(f"{message_id}\0{content}\0{recipients}".encode()).hexdigest()
        return DEDUP_PREFIX + key

    def _marker_container(self, marker):
        """The container of a dedup marker: with shards, the one its key hashes to.

        A marker is keyed by content, not by message, and a repeat's name
        hashes to any shard: every shard's queue puts and looks for a
        marker in the same container (``marker_containers``, all of the
        destination's, which swiftdrop.queue.sharded sets).
        """
        containers = self.marker_containers
        return containers[shard_index(marker, len(containers))]

    def remember_done(self, claimed):
        """Note a done message for the dedup window: one PUT, for --dedup claims only."""
        marker = self._dedup_marker(claimed) if claimed.dedup else None
        if marker and self.settings.dedup_window > 0:
            # the name as str: swiftclient can resend it
            self.connection.put_object(
                self._marker_container(marker), marker, claimed.name,
                headers={"X-Delete-After": str(int(self.settings.dedup_window))})

    def duplicate_of(self, claimed):
        """The done message this one duplicates within the window, or None."""
        marker = self._dedup_marker(claimed)
        if marker is None:
            return None
        try:
            return self.connection.get_object(self._marker_container(marker),
                                              marker)[1].decode()
        except ClientException as error:
            if error.http_status == 404:
                return None
            raise
