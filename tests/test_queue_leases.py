"""The queue's leases against the real Swift, and the count of hand-overs that marks a repeat.

A lock is held from claim to finish and released only once its message has
moved; an error keeps it; a lock Swift has let go by its whole-second clock,
or that belongs to the next holder, is neither held, refreshed nor released;
recover gives what a holder sent in time the grace to land. Faults come from
tests.support.faultproxy, in front of the real Swift.
"""

import re
import subprocess
import threading
import time

import pytest
import swiftclient

from swiftdrop.locks import SwiftLock
from tests.support.faultproxy import FaultProxy
from tests.support.filterproc import swiftdrop_command
from tests.test_queue import make_ini, names_under, queue_for, store

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


@pytest.fixture
def ini(request, tmp_path, swift):
    """An ini for a fresh container; queue (and timeout, retries) settings from the marker."""
    marker = request.node.get_closest_marker("queue")
    return make_ini(tmp_path / "swiftdrop.ini", swift, container_in(swift),
                    **(marker.kwargs if marker else {}))


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


def exists(connection, container, path):
    try:
        connection.head_object(container, path)
    except swiftclient.ClientException as error:
        if error.http_status == 404:
            return False
        raise
    return True


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


@pytest.mark.slow  # waits out a lease and more
@pytest.mark.queue(lease=8, **QUICK)
def test_a_claim_stays_locked_past_its_lease_until_its_finish(ini):
    worker, other = queue_for(ini), queue_for(ini)
    [name] = store(worker, 1)
    claimed = worker.claim()
    claimed_at = time.monotonic()
    # The worker does nothing for longer than its lease; recover runs all along.
    while time.monotonic() < claimed_at + 8 + 2:
        assert other.recover() == []
        time.sleep(0.2)
    assert worker.finish(claimed, "done") == "done/"
    assert names_under(worker, "done/") == [name]
    assert names_under(worker, "retry/") == names_under(worker, "processing/") == []


def test_a_finish_swift_refuses_keeps_the_lock_and_the_next_try_uses_it(swift, proxy,
                                                                         tmp_path):
    container = container_in(swift)
    worker = queue_for(ini_for(proxy, tmp_path / "proxy.ini", container, **QUICK))
    [name] = store(worker, 1)
    claimed = worker.claim()
    # the copy to done/ fails twice: swiftclient's first attempt and its one retry
    proxy.add("PUT", f"/done/{re.escape(name)}$", "refuse", times=2)
    with pytest.raises(swiftclient.ClientException) as refused:
        worker.finish(claimed, "done")
    assert refused.value.http_status == 503
    direct = swift.connection()
    assert lock_holder(direct, container, name) == claimed.token  # still ours
    assert worker.finish(claimed, "done") == "done/"
    assert names_under(worker, "done/") == [name]
    assert names_under(worker, "processing/") == []
    assert lock_holder(direct, container, name) is None  # released once it had moved


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


def test_the_lock_is_released_only_once_its_message_has_moved(ini, monkeypatch):
    queue = queue_for(ini)
    [name] = store(queue, 1)
    claimed = queue.claim()
    events = []
    send = swiftclient.Connection._retry

    def noted(connection, reset_func, func, *args, **kwargs):
        """The real request, its start and end noted (by kind and object)."""
        what = (func.__name__, args[1] if len(args) > 1 else None)
        events.append(("start", *what))
        try:
            return send(connection, reset_func, func, *args, **kwargs)
        finally:
            events.append(("end", *what))

    monkeypatch.setattr(swiftclient.Connection, "_retry", noted)
    queue.finish(claimed, "done")
    moved = events.index(("end", "delete_object", f"processing/{name}"))
    released = events.index(("start", "delete_object", f"locks/{name}"))
    assert moved < released, events


@pytest.mark.slow  # waits out a lease and recover's grace
def test_recover_gives_a_move_still_on_its_way_the_time_to_land(swift, proxy, tmp_path):
    """A worker is killed while the copy of its finish is stuck on the way to Swift.

    Its lease runs out and recover takes the lock; the copy lands after
    that. recover must see the message done, not send it round again.
    """
    container = container_in(swift)
    through_proxy = ini_for(proxy, tmp_path / "proxy.ini", container, lease=8, **QUICK)
    direct = swift.connection()
    [name] = store(queue_for(ini_for(swift, tmp_path / "direct.ini", container, **QUICK)), 1)
    stuck = proxy.add("PUT", f"/done/{re.escape(name)}$", "hold")
    worker = subprocess.Popen(
        swiftdrop_command("queue", "--config", str(through_proxy), "run", "--", "cat"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        stuck.wait_for(1)
        token = lock_holder(direct, container, name)
        worker.kill()
    finally:
        worker.kill()
        worker.wait()
    deadline = time.monotonic() + 60
    while lock_holder(direct, container, name) == token:  # its lease runs out
        assert time.monotonic() < deadline
        time.sleep(0.1)
    recovering = queue_for(ini_for(swift, tmp_path / "direct.ini", container, **QUICK))
    result = {}
    thread = threading.Thread(target=lambda: result.update(actions=recovering.recover()))
    thread.start()
    while thread.is_alive() and lock_holder(direct, container, name) is None:
        time.sleep(0.02)  # until recover holds the lock
    stuck.release()  # the dead worker's copy reaches Swift, late
    stuck.wait_for(1, passed=True)
    thread.join(60)
    assert result["actions"] == [("removed leftover processing/", name)]
    assert names_under(recovering, "done/") == [name]
    assert names_under(recovering, "processing/") == names_under(recovering, "retry/") == []
    assert not exists(direct, container, f"locks/{name}")


def test_a_claim_that_finds_another_claim_s_copy_does_not_hand_the_message_over(
        swift, proxy, tmp_path):
    """Two claims both got the lock (the race a Swift lock cannot exclude).

    The one whose copy to processing/ came first sees the other's token on
    the message when it reads it, and leaves the message to that claim.
    """
    container = container_in(swift)
    first = queue_for(ini_for(proxy, tmp_path / "proxy.ini", container))
    second = queue_for(ini_for(swift, tmp_path / "direct.ini", container))
    [name] = store(second, 1)
    held = [proxy.add("DELETE", f"/cur/{re.escape(name)}$", "hold"),
            proxy.add("GET", f"/processing/{re.escape(name)}$", "hold")]
    result = {}
    thread = threading.Thread(target=lambda: result.update(claimed=first.claim()))
    thread.start()
    for rule in held:
        rule.wait_for(1)  # the first claim has copied; its delete and its read are on the way
    # The second claim's lock PUT went through as if the first's were not there.
    swift.connection().delete_object(container, f"locks/{name}")
    winner = second.claim()
    assert winner.name == name
    for rule in held:
        rule.release()
    thread.join(60)
    assert result["claimed"] is None  # one hand-over, not two
    assert winner.delivery == 1
    assert second.finish(winner, "done") == "done/"
    assert names_under(second, "done/") == [name]


@pytest.mark.queue(retry_delay=0)
def test_every_hand_over_is_counted_on_the_message(ini):
    queue = queue_for(ini)
    [name] = store(queue, 1)
    first = queue.claim()
    assert (first.delivery, first.redelivered) == (1, False)
    assert queue.finish(first, "retry") == "retry/"
    again = queue.claim()
    assert (again.name, again.delivery, again.redelivered, again.attempts) == (name, 2, True, 1)
    assert queue.finish(again, "done") == "done/"
    done = queue.connection.head_object(queue.container, f"done/{name}")
    assert done["x-object-meta-deliveries"] == "2"


@pytest.mark.queue(retry_delay=0)
def test_run_tells_its_command_which_delivery_it_gets(ini, tmp_path):
    [name] = store(queue_for(ini), 1)
    log = tmp_path / "deliveries.log"
    script = (f'cat >/dev/null; echo "$SWIFTDROP_NAME $SWIFTDROP_DELIVERY '
              f'$SWIFTDROP_REDELIVERED $SWIFTDROP_ATTEMPTS" >> {log}; '
              '[ "$SWIFTDROP_DELIVERY" = 2 ] || exit 75')  # retry the first time
    result = subprocess.run(
        swiftdrop_command("queue", "--config", str(ini), "run", "--once", "--", "sh", "-c",
                          script), capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == [f"{name} 1 0 0", f"{name} 2 1 1"]


def test_finish_acts_only_with_the_claim_s_token(ini):
    queue = queue_for(ini)
    [name] = store(queue, 1)
    claimed = queue.claim()  # another worker's claim
    finish = ["queue", "--config", str(ini), "finish", name, "--state", "done"]
    without = subprocess.run(swiftdrop_command(*finish), capture_output=True, text=True,
                             check=False)
    assert without.returncode == 64 and "--token" in without.stderr, without.stderr
    wrong = subprocess.run(swiftdrop_command(*finish, "--token", "0" * 32),
                           capture_output=True, text=True, check=False)
    assert wrong.returncode == 1 and "not yours" in wrong.stderr, wrong.stderr
    assert names_under(queue, "processing/") == [name]
    assert queue.finish(claimed, "done") == "done/"
