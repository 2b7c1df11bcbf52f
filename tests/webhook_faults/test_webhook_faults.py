"""The short webhook fault run: ~30 messages, every misbehaviour of the receiver mixed.

Real Swift, real ``swiftdrop queue run`` webhook workers, ``recover`` every
second, a real HTTPS receiver on loopback that misbehaves by a seeded
policy (tests/support/webhook_receiver.py). The full run with 1,000
messages is ``python -m tests.webhook_faults``.
"""

import pytest

from tests.consumer_faults.rig import Rig
from tests.webhook_faults.rig import details, run_ledger, table

pytestmark = pytest.mark.slow

MESSAGES = 30


def test_misbehaving_receiver_loses_nothing_and_sees_every_repeat_marked(tmp_path):
    with Rig(tmp_path) as rig:
        result = run_ledger(rig, MESSAGES)
    print(details(result))
    print(table([result]))
    books = result.books
    assert books.messages == MESSAGES
    assert books.counts["lost"] == 0, books.examples["lost"]
    assert books.counts["silent"] == 0, books.examples["silent"]
    assert (books.bad_signatures, books.corrupt, books.strays) == (0, 0, 0)
    assert books.counts["refused"] >= 1
    assert books.counts["once"] + books.counts["marked"] + books.counts["refused"] == MESSAGES
    assert result.worker_starts == 0, "a worker exited: it must ride out any receiver"
    # Each misbehaviour happened, or the run tested less than it says.
    assert result.refused_handshakes >= 1, "the wrong certificate never met a POST"
    kinds = {label.split()[0] for label in books.behaviours}
    assert {"500", "503", "429", "406", "reset", "hang"} <= kinds, books.behaviours
    assert any(label.endswith("slow") for label in books.behaviours), books.behaviours
    assert any(label.endswith("retry-after") for label in books.behaviours), books.behaviours
