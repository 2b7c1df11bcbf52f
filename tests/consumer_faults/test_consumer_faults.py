"""The short consumer fault suite: each fault class on its own, a few dozen messages each.

Real Swift behind the fault proxy, real ``swiftdrop queue run`` workers
(SIGKILLed and started again where the class says), ``recover`` every
second, real Redis for the Redis lock. Each class must keep the queue's
promise: no message lost, no repeat a consumer cannot tell from a first
delivery. The full run with 1,000 messages per class is
``python -m tests.consumer_faults``.
"""

import pytest

from tests.consumer_faults.rig import CLASSES, Rig, details, run_class, table

pytestmark = pytest.mark.slow

MESSAGES = 25


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    with Rig(tmp_path_factory.mktemp("consumer-faults")) as running:
        yield running


@pytest.mark.parametrize("fault", list(CLASSES))
def test_fault_class_loses_nothing_and_marks_every_repeat(rig, fault):
    result = run_class(rig, fault, MESSAGES, least_hits=3)
    print(details(result))
    print(table([result]))
    books = result.books
    assert books.messages == MESSAGES
    assert books.counts["lost"] == 0, books.examples["lost"]
    assert books.counts["silent"] == 0, books.examples["silent"]
    assert (books.corrupt_hand_overs, books.strays) == (0, 0)
    assert books.counts["once"] + books.counts["marked"] == MESSAGES
    assert result.injected >= 1, "the fault never happened: the class tested nothing"
    if not CLASSES[fault].kills_workers:  # a worker rides out Swift, Redis, slow answers
        # worker_starts counts the starts after the first: a worker that exited
        assert result.worker_starts == 0, "a worker exited under the fault"
