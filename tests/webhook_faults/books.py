"""The webhook's books: every POST the receiver saw, and how each message fared.

:class:`~tests.support.webhook_receiver.FaultyReceiver` writes one JSON line
per POST. :func:`classify` puts every message seeded into ``cur/`` into
exactly one class:

*once*
    answered 2xx once, and in ``done/`` at the end;
*marked*
    POSTed again after a 2xx (the worker never saw that answer), every
    repeat with a delivery number above all before it and
    ``X-SwiftDrop-Redelivered: 1``; in ``done/`` at the end;
*refused*
    one of the messages the receiver answers 406, never answered 2xx, and
    in ``failed/`` with a ``Last-Error`` naming the 406;
*silent*
    some POST after its first came with a delivery number already seen, or
    without ``X-SwiftDrop-Redelivered: 1``: a receiver could not have told
    it from a first delivery;
*lost*
    anything else: never answered 2xx (a message not refused), not in
    ``done/`` (or not in ``failed/`` with its 406) at the end.

A POST whose body is not the stored message, or whose signature does not
hold, is no delivery of it. Pure logic: no Swift here.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
import json

from tests.consumer_faults.ledger import silent_repeats

CLASSES = ("once", "marked", "refused", "silent", "lost")


@dataclass(frozen=True)
class Post:
    """One line of the receiver's ledger."""

    id: str
    name: str
    number: int
    nth: int  # the receiver's count of POSTs of this message, this one included
    delivery: int
    redelivered: str  # "1" or "0", as the header said
    replayed: int
    signature_ok: bool
    behaviour: str
    status: int  # what the receiver answered; 0: none (a reset, or too late to write)
    digest: str
    time: float  # when it arrived: the order of a message's POSTs

    @property
    def delivered(self):
        return 200 <= self.status < 300


def read_posts(path):
    with open(path, encoding="utf-8") as ledger:
        return [Post(**json.loads(line)) for line in ledger if line.strip()]


@dataclass
class Books:
    """The classes of one run, and what explains them."""

    messages: int = 0
    counts: dict = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    posts: int = 0
    bad_signatures: int = 0
    corrupt: int = 0  # bodies that are not the stored message
    strays: int = 0  # POSTs of names never stored
    repeats_after_2xx: int = 0
    behaviours: collections.Counter = field(default_factory=collections.Counter)
    examples: dict = field(default_factory=lambda: collections.defaultdict(list))

    @property
    def promise_kept(self):
        return (self.counts["lost"] == 0 and self.counts["silent"] == 0
                and (self.bad_signatures, self.corrupt, self.strays) == (0, 0, 0))


def classify_one(posts, refused, done, last_error):
    """The class of one message from its good POSTs (time order) and where it ended."""
    delivered = [i for i, post in enumerate(posts) if post.delivered]
    if silent_repeats(posts):
        return "silent"
    if refused:
        return "refused" if (not delivered and last_error is not None
                             and "406" in last_error) else "lost"
    if not delivered or not done:
        return "lost"
    return "once" if len(posts) == delivered[0] + 1 else "marked"


def classify(stored, refused, posts, done, failed, *, keep_examples=5):
    """Books for `stored` ({name: sha256}) against the ledger.

    `refused` are the names answered 406; `done` the names in done/;
    `failed` maps the names in failed/ to their Last-Error.
    """
    books = Books(messages=len(stored), posts=len(posts))
    by_name = collections.defaultdict(list)
    for post in posts:
        books.behaviours[post.behaviour] += 1
        if post.name not in stored:
            books.strays += 1
        elif not post.signature_ok:
            books.bad_signatures += 1
        elif post.digest != stored[post.name]:
            books.corrupt += 1
        else:
            by_name[post.name].append(post)
    for name in stored:
        mine = sorted(by_name[name], key=lambda post: post.time)
        first = next((i for i, post in enumerate(mine) if post.delivered), len(mine))
        books.repeats_after_2xx += len(mine) - first - 1 if first < len(mine) else 0
        kind = classify_one(mine, name in refused, name in done, failed.get(name))
        books.counts[kind] += 1
        if kind in ("silent", "lost") and len(books.examples[kind]) < keep_examples:
            books.examples[kind].append((name, failed.get(name), [
                (post.delivery, post.redelivered, post.behaviour, post.status)
                for post in mine]))
    return books
