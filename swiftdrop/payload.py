"""What a webhook POST carries: the JSON view of a message, or its raw bytes with headers.

The JSON format (docs/webhooks.md, "The JSON payload") is the envelope, the
queue's counters and the verdicts, and the message as the standard
library's ``email`` package (``policy.default``) reads it: decoded headers,
the text and HTML bodies, the attachments. An attachment up to
webhook_inline_limit bytes comes inline (base64), a bigger one is stored
once as an object of its own and linked by TempURL (swiftdrop.links).

A message the parser cannot handle is delivered all the same: with
``parse_error`` saying why, no ``message``, and a TempURL to its raw bytes.
The raw format is the stored bytes as ``message/rfc822``, with the envelope
and the verdicts as ``X-SwiftDrop-*`` headers.
"""

import base64
import email
import email.policy
import json

from .links import attachment_path, iso_time, raw_path
from .verdicts import VERDICT_KEYS

ENVELOPE_KEYS = ("client-address", "client-name", "client-helo", "received-by")
# Longer recipient lists are left out of the raw format's headers (a receiver's
# header limit is often 8 KiB in all); the JSON format always has them.
MAX_RCPT_HEADER = 8192


def identity_headers(container, claimed):
    """The X-SwiftDrop-* headers of every POST: the idempotency key and the hand-over count."""
    return {"X-SwiftDrop-Id": f"{container}/{claimed.name}",
            "X-SwiftDrop-Delivery": str(claimed.delivery),
            "X-SwiftDrop-Redelivered": "1" if claimed.redelivered else "0",
            "X-SwiftDrop-Replayed": str(claimed.replayed)}


def raw_headers(claimed):
    """The raw format's envelope and verdict headers (values UTF-8, as stored)."""
    metadata = claimed.metadata
    headers = {"X-SwiftDrop-Mail-From": metadata.get("mail-from", ""),
               "X-SwiftDrop-Rcpt-Count": str(len(claimed.recipients))}
    listed = ", ".join(claimed.recipients)
    if len(listed.encode()) <= MAX_RCPT_HEADER:
        headers["X-SwiftDrop-Rcpt-To"] = listed
    for key in ("client-address", "client-name", "client-helo", "message-id", *VERDICT_KEYS):
        headers[f"X-SwiftDrop-{_title(key)}"] = metadata.get(key, "")
    return headers


def json_body(container, claimed, links, inline_limit):
    """The JSON payload of `claimed`, as UTF-8 bytes; stores what it links to via `links`."""
    metadata = claimed.metadata
    payload = {
        "id": f"{container}/{claimed.name}", "container": container, "name": claimed.name,
        "delivery": claimed.delivery, "redelivered": claimed.redelivered,
        "replayed": claimed.replayed, "attempts": claimed.attempts,
        "received_at": received_at(claimed.name), "size": len(claimed.body),
        "envelope": {"mail_from": metadata.get("mail-from", ""),
                     "rcpt_to": list(claimed.recipients),
                     "rcpt_count": len(claimed.recipients),
                     **{key.replace("-", "_"): metadata.get(key, "") for key in ENVELOPE_KEYS}},
        "verdicts": {key: metadata.get(key, "") for key in VERDICT_KEYS},
        "message": None, "parse_error": None, "raw_url": None, "raw_url_expires": None,
    }
    try:
        parsed = read_message(claimed.body)
    except Exception as error:  # whatever the parser raises on these bytes
        payload["parse_error"] = f"{type(error).__name__}: {error}"
        payload["raw_url"], payload["raw_url_expires"] = links.store(
            raw_path(claimed.name), claimed.body, "message/rfc822")
    else:
        payload["message"] = message_view(parsed, claimed.name, links, inline_limit)
    # A header or body with undecodable bytes holds lone surrogates: "?" in UTF-8.
    return json.dumps(payload, ensure_ascii=False).encode(errors="replace")


def received_at(name):
    """The delivery time in a Maildir name (``1767225600.M042137P...``) as ISO 8601 UTC."""
    seconds = name.split(".", 1)[0]
    return iso_time(int(seconds)) if seconds.isdigit() else ""


class Parsed:
    """A message read whole: everything the JSON view takes from it, with no Swift request yet.

    Reading is kept apart from storing, so that a message the parser fails
    on (a header it trips over, an unknown charset) fails before any
    attachment is stored.
    """

    def __init__(self, message):
        self.headers = [[name, str(value)] for name, value in message.items()]
        self.fields = {key: str(message.get(header, ""))
                       for key, header in (("message_id", "Message-ID"),
                                           ("subject", "Subject"), ("from", "From"),
                                           ("to", "To"), ("cc", "Cc"), ("date", "Date"))}
        text, html = message.get_body(("plain",)), message.get_body(("html",))
        self.text = text.get_content() if text is not None else ""
        self.html = html.get_content() if html is not None else ""
        self.attachments = [_attachment(part) for part in _leaves(message)
                            if part is not text and part is not html]


def read_message(body):
    """Parse `body` with ``policy.default``; raises what the parser raises on it."""
    return Parsed(email.message_from_bytes(body, policy=email.policy.default))


def message_view(parsed, name, links, inline_limit):
    """The payload's ``message``: the parsed fields, attachments inline or linked."""
    attachments = []
    for index, (data, described) in enumerate(parsed.attachments):
        entry = dict(described, size=len(data))
        if len(data) <= inline_limit:
            entry["content_base64"] = base64.b64encode(data).decode()
        else:
            entry["url"], entry["url_expires"] = links.store(
                attachment_path(name, index), data, described["content_type"],
                filename=described["filename"])
        attachments.append(entry)
    return {**parsed.fields, "headers": parsed.headers, "text": parsed.text,
            "html": parsed.html, "attachments": attachments}


def _leaves(part):
    """The parts below multipart/* containers, in order; a message/rfc822 is one leaf."""
    if part.get_content_maintype() == "multipart":
        for child in part.iter_parts():
            yield from _leaves(child)
    else:
        yield part


def _attachment(part):
    """(bytes, description) of one attachment; a forwarded message's bytes are itself."""
    if part.get_content_type() == "message/rfc822":
        data = part.get_payload(0).as_bytes()
    else:
        data = part.get_payload(decode=True) or b""
    return data, {"filename": part.get_filename() or "",
                  "content_type": part.get_content_type(),
                  "content_id": str(part.get("Content-ID", "")),
                  "disposition": part.get_content_disposition() or ""}


def _title(key):
    """spam-action -> Spam-Action."""
    return "-".join(word.capitalize() for word in key.split("-"))
