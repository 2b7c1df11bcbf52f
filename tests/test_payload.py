"""The webhook's JSON payload and raw headers, and the TempURLs they link, on the real Swift."""

import base64
from email.message import EmailMessage
import itertools
import json
import time
import urllib.error
import urllib.request

import pytest
from swiftclient import ClientException

from swiftdrop.links import Links, attachment_path, iso_time, raw_path, tempurl_key
from swiftdrop.payload import json_body, raw_headers
from swiftdrop.queue import Claimed

NAME = "1767225600.M042137P3141Q17.mx.test,S=100"
CONTAINERS = itertools.count()
# Python's own header parser raises on this one (an IndexError): a message
# the parser cannot handle, as a sender may well send.
UNPARSABLE = b"Message-ID: <<<>>>\r\nSubject: broken\r\n\r\nbody\r\n"


@pytest.fixture
def container(swift):
    name = f"payload-{next(CONTAINERS)}"
    swift.connection().put_container(name)
    return name


@pytest.fixture
def links(swift, container):
    connection = swift.connection()
    return Links(connection, container, tempurl_key(connection, container), lifetime=600)


def claimed(body, **metadata):
    return Claimed(NAME, body, {"mail-from": "sender@example.org", **metadata}, "token",
                   attempts=2, delivery=3, recipients=["a@example.com", "b@example.com"],
                   replayed=1)


def multipart(big):
    message = EmailMessage()
    message["From"] = "Zoë <zoe@example.org>"
    message["To"] = "a@example.com, b@example.com"
    message["Subject"] = "Café au lait ☕"
    message["Message-ID"] = "<m1@example.org>"
    message.set_content("plain text\n")
    message.add_alternative("<p>html</p>\n", subtype="html")
    message.add_attachment(b"small bytes", maintype="application", subtype="octet-stream",
                           filename="small.bin")
    message.add_attachment(big, maintype="application", subtype="pdf", filename="Grand été.pdf")
    return message.as_bytes()


def download(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def test_a_multipart_message_has_decoded_headers_bodies_and_attachments_inline_or_linked(
        swift, container, links):
    big = bytes(range(256)) * 40  # 10 KiB, over the limit below
    body = multipart(big)
    payload = json.loads(json_body(container, claimed(
        body, **{"client-address": "192.0.2.1", "client-name": "mail.example.org",
                 "client-helo": "mail.example.org", "received-by": "mx.test",
                 "spf": "pass", "spam-score": "1.5"}), links, inline_limit=1024))
    assert {key: payload[key] for key in (
        "id", "container", "name", "delivery", "redelivered", "replayed", "attempts",
        "received_at", "size", "parse_error", "raw_url")} == {
        "id": f"{container}/{NAME}", "container": container, "name": NAME, "delivery": 3,
        "redelivered": True, "replayed": 1, "attempts": 2,
        "received_at": "2026-01-01T00:00:00Z", "size": len(body), "parse_error": None,
        "raw_url": None}
    assert payload["envelope"] == {
        "mail_from": "sender@example.org", "rcpt_to": ["a@example.com", "b@example.com"],
        "rcpt_count": 2, "client_address": "192.0.2.1", "client_name": "mail.example.org",
        "client_helo": "mail.example.org", "received_by": "mx.test"}
    assert payload["verdicts"]["spf"] == "pass" and payload["verdicts"]["dkim"] == ""
    message = payload["message"]
    assert (message["subject"], message["from"], message["message_id"], message["cc"]) == (
        "Café au lait ☕", "Zoë <zoe@example.org>", "<m1@example.org>", "")
    assert ["Subject", "Café au lait ☕"] in message["headers"]
    assert (message["text"], message["html"]) == ("plain text\n", "<p>html</p>\n")
    small, linked = message["attachments"]
    assert (small["filename"], small["content_type"], small["size"], small["disposition"]) == (
        "small.bin", "application/octet-stream", 11, "attachment")
    assert base64.b64decode(small["content_base64"]) == b"small bytes"
    assert "url" not in small
    assert (linked["filename"], linked["content_type"], linked["size"]) == (
        "Grand été.pdf", "application/pdf", len(big))
    assert "content_base64" not in linked
    assert linked["url"].startswith(swift.connection().get_auth()[0].split("/v1/")[0])
    # the link downloads the very bytes, from Swift, without credentials
    assert download(linked["url"]) == big
    headers = swift.connection().head_object(container, attachment_path(NAME, 1))
    assert headers["content-type"] == "application/pdf"
    assert headers["x-object-meta-filename"] == "Grand été.pdf"
    # a repeat finds the attachment stored (If-None-Match: *) and links it again
    again = json.loads(json_body(container, claimed(body), links, inline_limit=1024))
    assert download(again["message"]["attachments"][1]["url"]) == big


def test_a_link_is_refused_once_it_has_expired(swift, container):
    connection = swift.connection()
    key = tempurl_key(connection, container)
    connection.put_object(container, attachment_path(NAME, 0), b"secret bytes")
    # made 10 s ago with a lifetime of 1 s: expired already, no waiting for it
    expired = Links(connection, container, key, lifetime=1, clock=lambda: time.time() - 10)
    url, expires = expired.link(attachment_path(NAME, 0))
    assert expires < iso_time(time.time())
    with pytest.raises(urllib.error.HTTPError) as refused:
        download(url)
    assert refused.value.code == 401
    fresh = Links(connection, container, key, lifetime=60).link(attachment_path(NAME, 0))[0]
    assert download(fresh) == b"secret bytes"
    # and a link signed with another key is no link at all
    forged = Links(connection, container, "not-the-key", lifetime=60)
    with pytest.raises(urllib.error.HTTPError):
        download(forged.link(attachment_path(NAME, 0))[0])


def test_an_unparsable_message_is_delivered_with_its_error_and_a_link_to_its_bytes(
        container, links, swift):
    payload = json.loads(json_body(container, claimed(UNPARSABLE), links, inline_limit=1024))
    assert payload["message"] is None
    assert payload["parse_error"].startswith("IndexError")
    assert download(payload["raw_url"]) == UNPARSABLE
    assert payload["raw_url_expires"].endswith("Z")
    assert swift.connection().head_object(container, raw_path(NAME))["content-type"] == \
        "message/rfc822"


def test_an_unknown_charset_is_a_parse_error_too(container, links):
    body = b"Subject: x\r\nContent-Type: text/plain; charset=x-nonsense\r\n\r\nhello\r\n"
    payload = json.loads(json_body(container, claimed(body), links, inline_limit=1024))
    assert payload["parse_error"] == "LookupError: unknown encoding: x-nonsense"
    assert download(payload["raw_url"]) == body


def test_a_plain_message_without_attachments_or_html(container, links):
    body = b"Subject: =?utf-8?q?caf=C3=A9?=\r\nTo: a@example.com\r\n\r\nhello\r\n"
    message = json.loads(json_body(container, claimed(body), links, 1024))["message"]
    assert (message["subject"], message["to"], message["text"], message["html"],
            message["attachments"], message["date"]) == (
        "café", "a@example.com", "hello\r\n", "", [], "")


def test_raw_headers_carry_the_envelope_and_verdicts_and_leave_out_a_huge_rcpt_list():
    message = claimed(b"x", **{"client-address": "192.0.2.1", "message-id": "<m@x>",
                               "spam-action": "no action", "dmarc": "pass"})
    headers = raw_headers(message)
    assert headers["X-SwiftDrop-Rcpt-To"] == "a@example.com, b@example.com"
    assert (headers["X-SwiftDrop-Rcpt-Count"], headers["X-SwiftDrop-Mail-From"],
            headers["X-SwiftDrop-Client-Address"], headers["X-SwiftDrop-Client-Name"],
            headers["X-SwiftDrop-Message-Id"], headers["X-SwiftDrop-Spam-Action"],
            headers["X-SwiftDrop-Dmarc"]) == (
        "2", "sender@example.org", "192.0.2.1", "", "<m@x>", "no action", "pass")
    message.recipients = [f"user{n:05d}@example.com" for n in range(1000)]
    headers = raw_headers(message)
    assert "X-SwiftDrop-Rcpt-To" not in headers
    assert headers["X-SwiftDrop-Rcpt-Count"] == "1000"


def test_the_tempurl_key_configured_found_or_made(swift):
    connection = swift.connection("test2")
    for name in ("keys-configured", "keys-found", "keys-made"):
        connection.put_container(name)
    assert tempurl_key(connection, "keys-configured", "from-the-ini") == "from-the-ini"
    assert connection.head_container("keys-configured")[
        "x-container-meta-temp-url-key"] == "from-the-ini"
    connection.post_container("keys-found", {"X-Container-Meta-Temp-URL-Key": "existing"})
    assert tempurl_key(connection, "keys-found") == "existing"
    made = tempurl_key(connection, "keys-made")
    assert len(made) == 64
    assert connection.head_container("keys-made")["x-container-meta-temp-url-key"] == made
    assert tempurl_key(connection, "keys-made") == made  # the next worker keeps it


def test_an_account_key_is_used_when_the_container_has_none(swift):
    connection = swift.connection("test3")
    connection.put_container("account-keyed")
    connection.post_account({"X-Account-Meta-Temp-URL-Key": "account-key"})
    try:
        assert tempurl_key(connection, "account-keyed") == "account-key"
        assert "x-container-meta-temp-url-key" not in connection.head_container("account-keyed")
        connection.put_object("account-keyed", "attachments/x/0", b"via the account")
        url = Links(connection, "account-keyed", "account-key", 60).link("attachments/x/0")[0]
        assert download(url) == b"via the account"
    finally:
        connection.post_account({"X-Account-Meta-Temp-URL-Key": ""})


def test_a_worker_with_the_container_s_acls_only_signs_with_the_configured_key(swift, caplog):
    """Only the owner sees or writes the key; a member signs with webhook_tempurl_key."""
    owner = swift.connection()
    owner.put_container("keys-shared", headers={"X-Container-Read": "test:worker",
                                                "X-Container-Write": "test:worker",
                                                "X-Container-Meta-Temp-URL-Key": "owner-set"})
    member = swift.connection("worker")
    assert "x-container-meta-temp-url-key" not in member.head_container("keys-shared")
    with pytest.raises(ClientException) as refused:
        tempurl_key(member, "keys-shared")
    assert refused.value.http_status == 403
    assert "set webhook_tempurl_key" in caplog.text
    assert tempurl_key(member, "keys-shared", "owner-set") == "owner-set"
    assert owner.head_container("keys-shared")["x-container-meta-temp-url-key"] == "owner-set"
    member.put_object("keys-shared", "attachments/y/0", b"signed by a member")
    url = Links(member, "keys-shared", "owner-set", 60).link("attachments/y/0")[0]
    assert download(url) == b"signed by a member"
