"""Objects a webhook payload links to instead of carrying: stored once, handed out by TempURL.

A Swift TempURL is a signed, expiring GET of one object: the receiver
downloads a big attachment (or a message the parser could not read) straight
from Swift, without credentials, until the link expires. Swift's tempurl
middleware checks the signature against the container's
``X-Container-Meta-Temp-URL-Key`` (or the account's), so the worker makes
sure one is there when it starts (:func:`tempurl_key`).

The objects live beside the queue's states, under ``attachments/<name>/``:
``<index>`` for the attachment at that position among the message's
attachments, ``raw`` for a message the parser could not handle. Each is
written with ``If-None-Match: *``: a repeat of the hand-over finds it stored
already (412), and its links stay valid after the message moved to done/.
"""

from datetime import UTC, datetime
import logging
import secrets
import time
import urllib.parse

from .libraries import ClientException, generate_temp_url

log = logging.getLogger(__name__)

ATTACHMENTS = "attachments/"
CONTAINER_KEY = "x-container-meta-temp-url-key"
ACCOUNT_KEY = "x-account-meta-temp-url-key"
MAX_FILENAME_META = 256  # Swift's default max_meta_value_length


def attachment_path(name, index):
    return f"{ATTACHMENTS}{name}/{index}"


def raw_path(name):
    return f"{ATTACHMENTS}{name}/raw"


def tempurl_key(connection, container, configured=None):
    """The key TempURLs to `container` are signed with; set on the container if need be.

    webhook_tempurl_key, when `configured`, is written to the container
    (the ini is the truth). Otherwise the container's key is used, then the
    account's; with neither, a random key is set on the container and read
    back, so that workers starting together agree on the last one written.

    Only the account's owner may read or write the key (Swift's tempurl
    middleware hides it from everyone else): a worker whose user reaches the
    container through its ACLs only needs webhook_tempurl_key, with the same
    key set on the container by its owner.
    """
    key = connection.head_container(container).get(CONTAINER_KEY)
    if configured:
        if key != configured:
            try:
                connection.post_container(container, {CONTAINER_KEY: configured})
            except ClientException as error:
                if error.http_status != 403:
                    raise
                log.info("may not write container %s's TempURL key: signing with "
                         "webhook_tempurl_key, which its owner must have set", container)
        return configured
    if key:
        return key
    try:
        key = connection.head_account().get(ACCOUNT_KEY)
    except ClientException as error:
        if error.http_status != 403:  # a user of the container only may not read the account
            raise
        key = None
    if key:
        return key
    try:
        connection.post_container(container, {CONTAINER_KEY: secrets.token_hex(32)})
    except ClientException as error:
        if error.http_status == 403:
            log.error("may not set a TempURL key on container %s: set webhook_tempurl_key, "
                      "and the same X-Container-Meta-Temp-URL-Key on the container as its "
                      "owner", container)
        raise
    log.info("set a new random TempURL key on container %s (X-Container-Meta-Temp-URL-Key) "
             "for the webhook's links", container)
    return connection.head_container(container)[CONTAINER_KEY]


class Links:
    """Stores objects for a payload and signs their TempURLs; one per worker loop's connection."""

    def __init__(self, connection, container, key, lifetime, clock=time.time):
        self.connection, self.container, self.key = connection, container, key
        self.lifetime, self.clock = lifetime, clock

    def store(self, path, data, content_type, filename=None):
        """Store `data` at `path` unless a previous attempt did; (url, expires) of a link to it."""
        headers = {"If-None-Match": "*"}
        if filename:
            headers["X-Object-Meta-Filename"] = _fitting(filename, MAX_FILENAME_META)
        try:
            self.connection.put_object(self.container, path, data, content_type=content_type,
                                       headers=headers)
        except ClientException as error:
            if error.http_status != 412:
                raise
        return self.link(path)

    def link(self, path):
        """(TempURL, its expiry as ISO 8601 UTC) of the object at `path` in the container."""
        storage = urllib.parse.urlsplit(self.connection.url)
        expires = int(self.clock() + self.lifetime)
        signed = generate_temp_url(f"{storage.path}/{self.container}/{path}", expires,
                                   self.key, "GET", absolute=True)
        object_path, _, query = signed.partition("?")
        url = urllib.parse.urlunsplit((storage.scheme, storage.netloc,
                                       urllib.parse.quote(object_path), query, ""))
        return url, iso_time(expires)


def iso_time(seconds):
    """2026-12-02T10:00:00Z: unix seconds as ISO 8601 UTC."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fitting(text, limit):
    """`text` as a metadata value: printable, at most `limit` bytes of UTF-8, whole characters."""
    printable = "".join(char if char.isprintable() else "_" for char in text)
    return printable.encode()[:limit].decode(errors="ignore")
