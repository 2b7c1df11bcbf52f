"""Where a stored message's recipients are kept, so that every consumer gets all of them.

Swift limits one metadata value to 256 bytes and all of an object's
metadata to 4096 (its default constraints; an object server on ext4 keeps
all xattrs in one 4 KiB block, key prefixes and pickling included), and
the filter's other keys, the verdicts and the queue's keys need most of
that. So the recipients of a copy are kept in RCPT_KEYS numbered keys
(``Rcpt-To``, ``Rcpt-To-2``, whole addresses joined by ", "), which is
enough for ordinary mail, and
``Rcpt-Count`` says how many there are. When they do not fit, or one of
them holds ", " itself (a quoted local part), the whole list is stored
beside the message, one address a line, in ``envelopes/<base name>``,
and ``Rcpt-List`` names that object: nothing is ever cut.
"""

from .storage import MAX_META_VALUE

RCPT_KEYS = 2  # leaves the queue room for its keys in 4 KiB (measured on ext4)
SEPARATOR = ", "
ENVELOPES = "envelopes/"


def rcpt_key(index):
    """``Rcpt-To``, ``Rcpt-To-2``, ...: the metadata key of the index'th value (from 1)."""
    return "Rcpt-To" if index == 1 else f"Rcpt-To-{index}"


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
    metadata = {rcpt_key(index): value
                for index, value in enumerate(values[:RCPT_KEYS], start=1)}
    metadata["Rcpt-Count"] = str(len(recipients))
    complete = (len(values) <= RCPT_KEYS
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
    found, index = [], 1
    while metadata.get(rcpt_key(index).lower()):
        found.extend(metadata[rcpt_key(index).lower()].split(SEPARATOR))
        index += 1
    return found
