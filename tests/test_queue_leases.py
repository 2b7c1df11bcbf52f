"""The queue's locks against the real Swift: what a holder counts on, and what it touches.

A lock Swift has let go by its whole-second clock, or that belongs to the
next holder, is neither held, refreshed nor released by the one before.
Faults come from tests.support.faultproxy, in front of the real Swift.
"""

import re
import time

import pytest
import swiftclient

from swiftdrop.locks import SwiftLock
from tests.support.faultproxy import FaultProxy
from tests.test_queue import make_ini, queue_for, store

COUNTER = iter(range(1000))
# One request may take 2 s * 2 + 1 s of back-off: the shortest lease is 8 s,
# and recover's grace 5 s.
QUICK = {"timeout": 2, "retries": 1}


@pytest.fixture
def proxy(swift):
    with FaultProxy(swift.port) as proxy:
        yield proxy


def container_in(swift):
    container = f"lease-{next(COUNTER)}"
    swift.connection().put_container(container)
    return container


def ini_for(server, path, container, **queue):
    """An ini for `container`, through `server` (the Swift or a FaultProxy in front of it)."""
    return make_ini(path, server, container, **queue)


def lock_holder(connection, container, name):
    """The token in locks/<name>, or None if there is no lock."""
    try:
        return connection.get_object(container, f"locks/{name}")[1].decode()
    except swiftclient.ClientException as error:
        if error.http_status == 404:
            return None
        raise


def test_a_lock_swift_let_go_by_its_whole_seconds_is_neither_held_refreshed_nor_released(
        swift):
    """Swift stores a lock's expiry rounded down to a whole second: up to a second early.

    The holder must be done counting on its lock before then; once the next
    worker has it, the holder's release and refresh must leave it alone.
    """
    connection = swift.connection()
    connection.put_container("locks-rounding")
    holder = SwiftLock(connection, "locks-rounding")
    lease = 3
    # Late in a second, rounding down takes the most: here 0.7 to 0.8 s.
    while not 0.7 <= time.time() % 1 < 0.8:
        time.sleep(0.005)
    mine = holder.acquire("m", lease)
    assert mine
    other = SwiftLock(swift.connection(), "locks-rounding")
    deadline = time.monotonic() + 30
    while (theirs := other.acquire("m", lease)) is None:  # the next worker, trying all along
        assert time.monotonic() < deadline, "the lock never ran out"
    expiry = connection.head_object("locks-rounding", "locks/m")["x-delete-at"]
    assert not holder.holds("m", mine)
    assert not holder.refresh("m", mine, lease)
    holder.release("m", mine)
    headers, body = connection.get_object("locks-rounding", "locks/m")
    assert body.decode() == theirs
    assert headers["x-delete-at"] == expiry  # not extended either


def test_a_release_whose_answer_was_lost_leaves_the_next_holder_s_lock(swift, proxy, tmp_path):
    """swiftclient sends a DELETE again when its answer is lost: the lock may be another's."""
    container = container_in(swift)
    worker = queue_for(ini_for(proxy, tmp_path / "proxy.ini", container, **QUICK))
    [name] = store(worker, 1)
    claimed = worker.claim()
    next_holder = SwiftLock(swift.connection(), container)
    taken = []
    proxy.add("DELETE", f"/locks/{re.escape(name)}$", "lose_answer",
              then=lambda: taken.append(next_holder.acquire(name, 300)))
    assert worker.finish(claimed, "done") == "done/"
    [token] = taken
    assert token  # the lock was released, and the next holder took it at once
    assert lock_holder(swift.connection(), container, name) == token
