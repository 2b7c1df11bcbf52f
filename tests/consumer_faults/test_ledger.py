"""The ledger's classes, on hand-made hand-overs (pure logic, no Swift)."""

import json

import pytest

from tests.consumer_faults.ledger import HandOver, classify, classify_one, read_ledger


def hand_over(delivery, redelivered=None, at=0.0, name="m", digest="d"):
    if redelivered is None:
        redelivered = "1" if delivery > 1 else "0"
    return HandOver(name, delivery, redelivered, worker=1, time=at, digest=digest)


@pytest.mark.parametrize(("deliveries", "done", "expected"), [
    ([], True, "lost"),
    ([(1, "0")], False, "lost"),  # handed over, but never made it to done/
    ([(1, "0")], True, "once"),
    ([(1, "0"), (2, "1")], True, "marked"),
    ([(2, "1")], True, "once"),  # recover counted a hand-over that never happened
    ([(1, "0"), (3, "1"), (4, "1")], True, "marked"),
    ([(1, "0"), (1, "0")], True, "silent"),  # two claims at once, both first
    ([(1, "0"), (2, "0")], True, "silent"),  # a higher count, but not marked
    ([(1, "0"), (3, "1"), (2, "1")], True, "silent"),  # a repeat below one seen
    ([(1, "0"), (1, "0")], False, "lost"),  # lost is the worse of the two
])
def test_a_message_is_in_exactly_one_class(deliveries, done, expected):
    hand_overs = [hand_over(d, r, at=i) for i, (d, r) in enumerate(deliveries)]
    assert classify_one(hand_overs, done) == expected


def test_hand_overs_count_in_the_order_they_happened_not_as_written():
    late_first = [hand_over(2, at=5.0), hand_over(1, at=1.0)]
    assert classify_one(late_first, True) == "marked"


def test_a_hand_over_of_other_bytes_is_not_one_of_this_message():
    books = classify({"m": "good"}, [hand_over(1, digest="bad")], {"m"})
    assert books.counts["lost"] == 1
    assert books.corrupt_hand_overs == 1
    assert not books.promise_kept


def test_books_count_every_stored_message_once_and_strays_apart():
    stored = {"a": "d", "b": "d", "c": "d", "e": "d"}
    hand_overs = [hand_over(1, name="a"), hand_over(1, name="b"), hand_over(2, name="b"),
                  hand_over(1, name="c"), hand_over(1, name="c", at=1),
                  hand_over(1, name="z")]
    books = classify(stored, hand_overs, {"a", "b", "c"})
    assert books.counts == {"once": 1, "marked": 1, "silent": 1, "lost": 1}
    assert books.strays == 1
    assert [name for name, _ in books.examples["silent"]] == ["c"]
    assert not books.promise_kept


def test_a_line_cut_short_by_a_kill_is_not_a_hand_over(tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    whole = json.dumps({"name": "a", "delivery": 1, "redelivered": "0", "worker": 7,
                        "time": 1.0, "digest": "d"})
    ledger.write_text(whole + "\n" + whole[:20])
    assert read_ledger(ledger) == [HandOver("a", 1, "0", 7, 1.0, "d")]
