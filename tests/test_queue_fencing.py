"""The queue's fence against the real Swift: a holder frozen past its lease moves nothing.

A lock stops a second holder only while the first one's lease runs; a
holder frozen between checking its lease and sending its next request (a
stopped process, a paused VM, a request stuck on the way) acts after
someone else has claimed the message. Its move out of processing/ carries
``If-Unmodified-Since`` of its own claim's copy, which Swift checks against
the copy there now: the later claim's copy is newer, and Swift refuses.
A request stuck on the way comes from tests.support.faultproxy, in front
of the real Swift; the worker's heartbeat is stopped to freeze it.
"""

from concurrent.futures import ThreadPoolExecutor
import json
import socket
import subprocess
import time

import pytest
import swiftclient

from swiftdrop import config as config_module
from swiftdrop.locks import RedisLock
from swiftdrop.queue import LostLock, MailQueue, connect
from tests.support.faultproxy import FaultProxy
from tests.support.filterproc import swiftdrop_command
from tests.test_queue import make_ini, names_under, queue_for, store

COUNTER = iter(range(1000))
# One request may take 2 s * 2 + 1 s of back-off: the shortest lease is 8 s,
# and recover's grace 5 s. Retries are due at once.
QUICK = {"timeout": 2, "retries": 1, "lease": 8, "retry_delay": 0}
# The frozen worker's own connection waits this long for an answer: longer
# than its lease, recover's grace and the next claim together.
FROZEN_TIMEOUT = 120


@pytest.fixture
def proxy(swift):
    with FaultProxy(swift.port) as proxy:
        yield proxy


@pytest.fixture(params=["swift", "redis"])
def lock_ini(request, tmp_path, swift):
    """An ini for a fresh container and each lock kind: QUICK, and the marker's settings."""
    kind = request.param
    redis_url = request.getfixturevalue("redis_url") if kind == "redis" else None
    container = f"fence-{next(COUNTER)}-{kind}"
    swift.connection().put_container(container)
    marker = request.node.get_closest_marker("queue")
    return make_ini(tmp_path / "swiftdrop.ini", swift, container, kind, redis_url,
                    **{**QUICK, **(marker.kwargs if marker else {})})


def frozen_worker(ini, proxy):
    """A queue on `ini`'s container whose requests go through `proxy`, waiting long for each.

    Its connection waits FROZEN_TIMEOUT for an answer and sends each request
    once: a request the proxy holds stays on its way, as a frozen holder's
    would, until the test lets it go.
    """
    destination = config_module.load(str(through(ini, proxy))).catch_all
    connection = connect(destination, retries=0)
    connection.timeout = FROZEN_TIMEOUT
    return MailQueue(destination, connection=connection)


def through(ini, proxy):
    """The same ini, but for Swift through `proxy`."""
    through_proxy = ini.with_name("through-proxy.ini")
    through_proxy.write_text("\n".join(
        f"authurl = {proxy.auth_url}" if line.startswith("authurl") else line
        for line in ini.read_text().splitlines()) + "\n")
    return through_proxy


def processing_token(queue, name):
    headers = queue.connection.head_object(queue.container, "processing/" + name)
    return headers["x-object-meta-lock-token"]


def recovered(queue):
    """Run recover until it has returned something; what it did."""
    deadline = time.monotonic() + 60
    while not (actions := queue.recover()):
        assert time.monotonic() < deadline, "recover never found the lease run out"
        time.sleep(0.2)
    return actions


@pytest.mark.slow  # waits out a lease and recover's grace
def test_a_holder_frozen_past_its_lease_moves_nothing_once_another_claimed(
        lock_ini, proxy):
    frozen = frozen_worker(lock_ini, proxy)
    other, housekeeper = queue_for(lock_ini), queue_for(lock_ini)
    [name] = store(other, 1)
    claimed = frozen.claim()
    assert claimed is not None and claimed.fence
    # Its finish's copy, sent while its lease surely ran, reaches Swift only
    # much later; and it is frozen meanwhile: nothing refreshes its lock.
    stuck = proxy.add("PUT", rf"/done/{name}$", "hold")
    finishing = in_thread(lambda: frozen.finish(claimed, "done"))
    stuck.wait_for(1)
    frozen.heartbeat.stop()

    assert recovered(housekeeper) == [("lease expired, moved to retry/", name)]
    again = other.claim()
    assert again.name == name and again.delivery == 2  # a repeat, and marked as one
    stuck.release()
    with pytest.raises(LostLock):
        finishing.result(timeout=FROZEN_TIMEOUT)

    assert names_under(other, "done/") == []  # Swift refused the frozen holder's copy
    assert processing_token(other, name) == again.token
    assert other.finish(again, "done") == "done/"
    assert names_under(other, "done/") == [name]
    assert names_under(other, "processing/") == names_under(other, "retry/") == []
    frozen.close()


@pytest.mark.slow  # waits out a lease and recover's grace
def test_a_recover_frozen_past_its_lease_leaves_the_next_claim_alone(lock_ini, proxy):
    """Recover's move to retry/ is fenced by the copy it found, not by the message's name."""
    frozen = frozen_worker(lock_ini, proxy)
    worker, other = queue_for(lock_ini), queue_for(lock_ini)
    [name] = store(worker, 1)
    worker.claim()
    worker.close()  # it dies: its lease runs out
    stuck = proxy.add("PUT", rf"/retry/{name}$", "hold")
    deadline = time.monotonic() + 60
    while True:  # until the dead worker's lease has run out and the frozen recover acts
        recovering = in_thread(frozen.recover)
        while not recovering.done() and not stuck.matched:
            time.sleep(0.1)
        if stuck.matched:
            break  # its copy to retry/ is on its way, and stays there
        assert recovering.result() == []
        assert time.monotonic() < deadline, "the dead worker's lease never ran out"
    frozen.heartbeat.stop()

    # The frozen recover's index entry, written before its held copy, is
    # earlier than this one's: it goes, lest the message be claimed too soon.
    assert sorted(recovered(other)) == [("lease expired, moved to retry/", name),
                                        ("removed superseded retry-at/ entry", name)]
    again = other.claim()
    assert again.name == name
    stuck.release()
    assert recovering.result(timeout=FROZEN_TIMEOUT) == []  # it moved nothing

    assert names_under(other, "retry/") == []
    assert processing_token(other, name) == again.token
    assert other.finish(again, "done") == "done/"
    frozen.close()


@pytest.mark.slow  # waits out a lease and recover's grace
@pytest.mark.queue(lease=20)  # the finish, a process of its own, starts within it
def test_queue_finish_in_another_process_is_fenced_like_the_claims_own(lock_ini, proxy):
    """`queue finish` builds its claim from a HEAD: the fence comes from that copy."""
    other, housekeeper = queue_for(lock_ini), queue_for(lock_ini)
    [name] = store(other, 1)
    claim = subprocess.run(swiftdrop_command("queue", "--config", str(lock_ini), "claim"),
                           capture_output=True, text=True, check=True)
    token = json.loads(claim.stdout)["token"]
    # Both of its copy's attempts stay on their way until the message is claimed again.
    stuck = proxy.add("PUT", rf"/done/{name}$", "hold", times=2)
    finish = subprocess.run(
        swiftdrop_command("queue", "--config", str(through(lock_ini, proxy)), "finish", name,
                          "--token", token, "--state", "done"),
        capture_output=True, text=True, check=False)
    assert finish.returncode == 75, finish.stderr  # Swift did not answer in time
    assert stuck.matched == 2

    assert recovered(housekeeper) == [("lease expired, moved to retry/", name)]
    again = other.claim()
    assert again.name == name
    stuck.release()
    stuck.wait_for(2, passed=True)
    assert names_under(other, "done/") == []  # both attempts refused at Swift
    assert processing_token(other, name) == again.token
    assert other.finish(again, "done") == "done/"


def in_thread(call):
    """Run `call` in a thread of its own; its Future."""
    executor = ThreadPoolExecutor(max_workers=1)
    try:
        return executor.submit(call)
    finally:
        executor.shutdown(wait=False)


def test_finish_of_a_name_not_in_processing_says_where_it_is(tmp_path, swift):
    container = f"fence-{next(COUNTER)}-cli"
    swift.connection().put_container(container)
    ini = make_ini(tmp_path / "swiftdrop.ini", swift, container)
    queue = queue_for(ini)
    names = store(queue, 2)
    claimed = queue.claim()
    queue.finish(claimed, "done")
    [waiting] = [name for name in names if name != claimed.name]
    for name, where in ((claimed.name, "it is in done/"), (waiting, "it is in cur/"),
                        ("1700000009.M000009P1Q9.mx.test,S=10",
                         "no such message in any state")):
        finish = subprocess.run(
            swiftdrop_command("queue", "--config", str(ini), "finish", name,
                              "--token", claimed.token, "--state", "done"),
            capture_output=True, text=True, check=False)
        assert finish.returncode == 1, finish.stderr
        assert f"{name} is not in processing/ ({where}): nothing to finish" in finish.stderr
    assert names_under(queue, "done/") == [claimed.name]
    assert names_under(queue, "cur/") == [waiting]


def test_a_redis_lock_gives_up_on_a_redis_that_does_not_answer():
    """A Redis that accepts connections but never answers must not hang a worker."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        lock = RedisLock(f"redis://127.0.0.1:{port}/0", "fence", timeout=0.5)
        acquiring = in_thread(lambda: lock.acquire("m", 10))
        with pytest.raises(lock.errors):  # not the Future's own TimeoutError: a hang
            acquiring.result(timeout=60)


def test_swift_refuses_a_fenced_copy_of_a_newer_source(swift):
    """What the fence rests on, seen at the real Swift.

    A copy's If-Unmodified-Since is checked against its source, not its
    target (a finish tried again replaces its own earlier copy), and a
    server-side copy is as new as its request.
    """
    connection = swift.connection()
    container = f"fence-{next(COUNTER)}-swift"
    connection.put_container(container)
    connection.put_object(container, "cur/m", "message")
    connection.put_object(container, "processing/m", None,
                          headers={"X-Copy-From": f"/{container}/cur/m"})
    fence = connection.head_object(container, "processing/m")["last-modified"]
    # Last-Modified is in whole seconds: a target newer than the fence, then a
    # later claim's copy, each take until the next second.
    newer_than_fence(connection, container, "done/m", fence, lambda: connection.put_object(
        container, "done/m", "a finish's earlier copy"))
    connection.put_object(container, "done/m", None, headers={
        "X-Copy-From": f"/{container}/processing/m", "If-Unmodified-Since": fence})
    assert connection.get_object(container, "done/m")[1] == b"message"
    connection.delete_object(container, "done/m")
    newer_than_fence(connection, container, "processing/m", fence, lambda: connection.put_object(
        container, "processing/m", None, headers={"X-Copy-From": f"/{container}/cur/m"}))
    with pytest.raises(swiftclient.ClientException) as refused:
        connection.put_object(container, "done/m", None, headers={
            "X-Copy-From": f"/{container}/processing/m", "If-Unmodified-Since": fence})
    assert refused.value.http_status == 412
    assert "done/m" not in [item["name"] for item in connection.get_container(container)[1]]


def newer_than_fence(connection, container, path, fence, write):
    """write() until `path`'s Last-Modified is past `fence`."""
    deadline = time.monotonic() + 10
    while True:
        write()
        if connection.head_object(container, path)["last-modified"] != fence:
            return
        assert time.monotonic() < deadline, f"{path} stayed at {fence}"
        time.sleep(0.2)
