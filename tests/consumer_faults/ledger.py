"""The consumer side's books: every hand-over to a command, and how each message fared.

The COMMAND of ``swiftdrop queue run`` (:mod:`tests.consumer_faults.consumer`)
appends one JSON line per hand-over to the ledger file. :func:`classify`
then puts every message stored in ``cur/`` into exactly one class:

*once*
    handed over once, and in ``done/`` at the end;
*marked*
    handed over more than once, every repeat with a delivery number above
    all before it and ``SWIFTDROP_REDELIVERED=1``; in ``done/`` at the end;
*silent*
    a silent duplicate: some repeat came with a delivery number already
    seen (or lower), or with ``SWIFTDROP_REDELIVERED=0``: a consumer could
    not have told it from a first delivery;
*lost*
    never handed over, or not in ``done/`` once the faults stopped and
    ``recover`` ran.

A lost message counts as lost even if it was also handed over silently
twice: losing is the worse break of the promise. Pure logic: no Swift here.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
import json

CLASSES = ("once", "marked", "silent", "lost")


@dataclass(frozen=True)
class HandOver:
    """One line of the ledger: what the command was told, and by whom."""

    name: str
    delivery: int
    redelivered: str  # "1" or "0", as the environment gave it
    worker: int
    time: float
    digest: str = ""  # sha256 of what the command read on stdin
    fault: str = ""  # what the command did to itself after this line: "sleep 9.2", "kill"

    @classmethod
    def parse(cls, line):
        return cls(**json.loads(line))


def read_ledger(path):
    """The hand-overs in the file, in the order they were written.

    A last line without its newline is a command killed mid-write: not a
    hand-over the command could have acted on, and not counted.
    """
    with open(path, encoding="utf-8") as ledger:
        text = ledger.read()
    lines = text.split("\n")
    return [HandOver.parse(line) for line in lines[:-1] if line]


def silent_repeats(hand_overs):
    """How many of one message's hand-overs (in time order) a consumer could not tell apart."""
    silent = 0
    highest = None
    for hand_over in hand_overs:
        if highest is not None and (hand_over.delivery <= highest
                                    or hand_over.redelivered != "1"):
            silent += 1
        highest = hand_over.delivery if highest is None else max(highest, hand_over.delivery)
    return silent


def classify_one(hand_overs, done, *, digest=None):
    """The class of one message, from its hand-overs and whether it is in done/ at the end.

    `digest`, if given, is the sha256 of the stored message: a hand-over of
    other bytes is no hand-over of this message.
    """
    good = [h for h in hand_overs if digest is None or h.digest == digest]
    if not good or not done:
        return "lost"
    if silent_repeats(sorted(good, key=lambda h: h.time)):
        return "silent"
    return "once" if len(good) == 1 else "marked"


@dataclass
class Books:
    """The classes of one run, and what explains them."""

    messages: int = 0
    counts: dict = field(default_factory=lambda: dict.fromkeys(CLASSES, 0))
    hand_overs: int = 0
    corrupt_hand_overs: int = 0  # bytes on stdin that are not the stored message
    strays: int = 0  # hand-overs of names never stored
    examples: dict = field(default_factory=lambda: collections.defaultdict(list))

    @property
    def promise_kept(self):
        return (self.counts["lost"] == 0 and self.counts["silent"] == 0
                and self.corrupt_hand_overs == 0 and self.strays == 0)


def classify(stored, hand_overs, done_names, keep_examples=5):
    """Books for `stored` ({name: sha256 of its bytes}) against the ledger and done/'s names."""
    books = Books(messages=len(stored), hand_overs=len(hand_overs))
    by_name = collections.defaultdict(list)
    for hand_over in hand_overs:
        if hand_over.name not in stored:
            books.strays += 1
            continue
        if hand_over.digest != stored[hand_over.name]:
            books.corrupt_hand_overs += 1
        by_name[hand_over.name].append(hand_over)
    done_names = set(done_names)
    for name, digest in stored.items():
        kind = classify_one(by_name[name], name in done_names, digest=digest)
        books.counts[kind] += 1
        if kind in ("silent", "lost") and len(books.examples[kind]) < keep_examples:
            books.examples[kind].append((name, [(h.delivery, h.redelivered, h.worker)
                                                for h in by_name[name]]))
    return books
