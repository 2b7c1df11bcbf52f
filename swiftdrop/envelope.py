"""Where a stored message's recipients are kept, so that every consumer gets all of them.

Swift limits one metadata value to 256 bytes and all of an object's
metadata to 4096 (its default constraints; an object server on ext4 keeps
all xattrs in one 4 KiB block, key prefixes and pickling included), and
the filter's other keys, the verdicts and the queue's keys need most of
that. So the recipients of a copy are kept in the RCPT_TO_KEYS
(``Rcpt-To``, ``Rcpt-To-2``, whole addresses joined by ", "), which is
enough for ordinary mail, and
``Rcpt-Count`` says how many there are. When they do not fit, or one of
them holds ", " itself (a quoted local part), the whole list is stored
beside the message, one address a line, in ``envelopes/<base name>``,
and ``Rcpt-List`` names that object: nothing is ever cut.
"""

from .storage import MAX_META_VALUE

# Two leave the queue room for its keys in 4 KiB (measured on ext4).
RCPT_TO_KEYS = ("Rcpt-To", "Rcpt-To-2")
SEPARATOR = ", "
ENVELOPES = "envelopes/"


def envelope_path(object_name):
    """``envelopes/<base>`` for ``cur/<base>``: the side object holding all recipients."""
    return ENVELOPES + object_name.rpartition("/")[2]


def recipient_metadata(recipients, object_name):
    """(metadata, side object text or None) that together keep every recipient.

    The metadata keys hold the recipients that fit, in order; the text,
    when not None, is the whole list and must be stored at
    envelope_path(object_name) before the message.
    """
    values, current = [], ""
    for address in recipients:
        candidate = f"{current}{SEPARATOR}{address}" if current else address
        if len(candidate.encode()) <= MAX_META_VALUE:
            current = candidate
            continue
        if current:
            values.append(current)
        current = address if len(address.encode()) <= MAX_META_VALUE else ""
    if current:
        values.append(current)
    metadata = dict(zip(RCPT_TO_KEYS, values, strict=False))
    metadata["Rcpt-Count"] = str(len(recipients))
    complete = (len(values) <= len(RCPT_TO_KEYS)
                and sum(len(v.split(SEPARATOR)) for v in values) == len(recipients)
                and not any(SEPARATOR in address for address in recipients))
    if complete:
        return metadata, None
    metadata["Rcpt-List"] = envelope_path(object_name)
    return metadata, "".join(f"{address}\n" for address in recipients)


def recipients(metadata, read_object):
    """All recipients of a stored message, from its metadata (lower-case keys, no prefix).

    `read_object(path)` returns the bytes of an object of the same
    container; it is called only for a message whose list is stored beside
    it (``Rcpt-List``). Objects stored before numbered keys existed have
    only ``Rcpt-To`` and read as before.
    """
    side_object = metadata.get("rcpt-list")
    if side_object:
        return read_object(side_object).decode("utf-8").splitlines()
    found = []
    for key in RCPT_TO_KEYS:
        if metadata.get(key.lower()):
            found.extend(metadata[key.lower()].split(SEPARATOR))
    return found
