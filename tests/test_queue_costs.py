"""What stats, recover and claim cost follows the work in the queue, not its history.

done/ grows by every message ever processed; these tests fill it and check,
against the real Swift, that no listing returns a name of it and that the
number of requests stays the same.
"""

import collections
from concurrent.futures import ThreadPoolExecutor

import pytest
import swiftclient

from swiftdrop.retries import RETRY_JITTER
from tests import test_queue
from tests.test_queue import names_under, queue_for, store

# The fixture: a fresh container per test, its queue settings from the test's marker.
ini = test_queue.ini


def record_requests(monkeypatch):
    """Count every Swift request by kind, and note every name a listing returned."""
    requests = collections.Counter()
    listed = []
    send = swiftclient.Connection._retry

    def counted(connection, reset_func, func, *args, **kwargs):
        requests[func.__name__] += 1
        result = send(connection, reset_func, func, *args, **kwargs)
        if func.__name__ == "get_container":
            listed.extend(item["name"] for item in result[1])
        return result

    monkeypatch.setattr(swiftclient.Connection, "_retry", counted)
    return requests, listed


def fill_done(queue, count, start):
    """`count` tiny objects in done/, as processed messages would leave them."""
    def put(number):
        queue.connection.put_object(
            queue.container, f"done/{start + number}.M000000P1Q{number}.mx.test,S=1", b"x")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(count)))


def some_of_everything(queue):
    """Two waiting, one claimed (its lock held), one in retry/, one failed."""
    names = store(queue, 5)
    for state in ("retry", "failed"):
        claimed = queue.claim()
        queue.finish(claimed, state, reason="exit status 3" if state == "failed" else None)
    queue.claim()  # stays in processing/, under its lock
    return names


def test_stats_count_every_state_without_listing_done(ini, monkeypatch):
    queue = queue_for(ini)
    some_of_everything(queue)
    fill_done(queue, 30, start=1_600_000_000)
    requests, listed = record_requests(monkeypatch)
    stats = queue.stats()
    assert [name for name in listed if name.startswith("done/")] == []
    counts = {prefix: stats[prefix]["count"] for prefix in
              ("cur/", "processing/", "retry/", "done/", "failed/")}
    assert counts == {"cur/": 2, "processing/": 1, "retry/": 1, "done/": 30, "failed/": 1}
    assert stats["done/"]["bytes"] == 30  # one byte each: the lock and the index are not done/
    assert stats["oldest_cur_age_seconds"] > 0
    assert requests == {"get_container": 2}  # before done/, after done/; no HEAD


@pytest.mark.parametrize("action", ["stats", "recover"])
def test_stats_and_recover_cost_the_same_with_ten_times_as_much_done(ini, monkeypatch, action):
    queue = queue_for(ini)
    some_of_everything(queue)
    costs = []
    with monkeypatch.context() as counting:
        for done in (5, 50):
            fill_done(queue, done - len(names_under(queue, "done/")), start=1_500_000_000)
            requests, listed = record_requests(counting)
            getattr(queue, action)()
            assert [name for name in listed if name.startswith("done/")] == []
            costs.append(dict(requests))
            counting.undo()
    assert costs[0] == costs[1]


@pytest.mark.queue(retry_delay=100)
def test_a_claim_finds_due_retries_without_a_head_of_each_waiting_one(ini, monkeypatch):
    now = [1_800_000_000.0]
    queue = queue_for(ini, clock=lambda: now[0])
    names = store(queue, 6)
    for _ in names:
        queue.finish(queue.claim(), "retry")  # due at now + 100
    requests, _ = record_requests(monkeypatch)
    assert queue.claim() is None  # none due yet
    assert requests == {"get_container": 2}  # cur/ (empty), the index up to now
    now[0] += 100 * (1 + RETRY_JITTER) + 1  # past the latest a jittered delay can end
    first_due = names_under(queue, "retry-at/")[0].partition("/")[2]  # the earliest Not-Before
    claimed = queue.claim()
    assert claimed.name == first_due and requests["head_object"] == 0
    queue.finish(claimed, "done")
    assert len(names_under(queue, "retry-at/")) == len(names) - 1  # its entry went with it


@pytest.mark.queue(retry_delay=0, lease=10, timeout=1, retries=0)
def test_recover_indexes_a_retry_from_an_older_version_and_drops_stale_entries(ini):
    queue = queue_for(ini)
    [old, stale] = store(queue, 2)
    # in retry/ as an older version left it: Not-Before on the object, no entry
    queue.connection.put_object(queue.container, "retry/" + old, None, headers={
        "X-Copy-From": f"/{queue.container}/cur/{old}", "X-Object-Meta-Not-Before": "0"})
    queue.connection.delete_object(queue.container, "cur/" + old)
    # an entry whose finish never copied the message into retry/
    queue.connection.put_object(queue.container, f"retry-at/{0:015.3f}/{stale}", b"")
    assert queue.recover() == [("added retry-at/ entry", old)]
    claimed = queue.claim()
    assert claimed.name == stale  # from cur/: the stale entry took nothing
    queue.finish(claimed, "done")
    claimed = queue.claim()
    assert claimed.name == old
    queue.finish(claimed, "done")
    assert queue.claim() is None
    assert names_under(queue, "retry-at/") == []  # the claim's 404 removed the stale one
    assert sorted(names_under(queue, "done/")) == sorted([old, stale])


@pytest.mark.queue(retry_delay=100)
def test_recover_drops_an_earlier_retry_s_entry_that_would_claim_too_soon(ini):
    now = [1_800_000_000.0]
    queue = queue_for(ini, clock=lambda: now[0])
    [name] = store(queue, 1)
    queue.finish(queue.claim(), "retry")  # due at now + 100
    # left by an earlier round whose claim died before deleting its entry
    queue.connection.put_object(queue.container, f"retry-at/{now[0] - 50:015.3f}/{name}", b"")
    assert queue.recover() == [("removed superseded retry-at/ entry", name)]
    assert queue.claim() is None  # not due before its own Not-Before
    now[0] += 100 * (1 + RETRY_JITTER) + 1  # past the latest a jittered delay can end
    assert queue.claim().name == name
