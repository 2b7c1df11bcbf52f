"""The filter and the queue on a three-replica Swift whose nodes go away.

The one-replica test Swift is all or nothing; a production cluster is not:
a PUT succeeds on a quorum (two of three object servers), a node can die in
the middle of one, and a container listing can miss an object for as long
as the object-updater has not brought its container server up to date.
What SwiftDrop promises there: a 250 only for an object that is really
stored (with our ETag), a 451 with the reason in the log otherwise, and a
queue that may find a message late but never loses it.

One cluster serves the whole module; after each test every node is whole
again (``cluster.restore()``).
"""

import hashlib
import json
import os
import re
import threading
import time

import pytest

from tests.conftest import create_containers, write_ini
from tests.support.filterproc import FULL_REPLY, FilterProcess, run_swiftdrop
from tests.support.launched import wait_until
from tests.support.swiftcluster import SwiftCluster
from tests.test_service import send, stored_location

pytestmark = pytest.mark.slow  # a cluster of 20 processes, and nodes going away

# Every write of this module's filter goes through one object server per
# node; a message this big keeps them busy long enough to kill one mid-PUT.
LARGE_MESSAGE_BYTES = 40_000_000
# How long the updater and the replicators (sweeping every second) may take
# to put a stored message into a listing once its container servers are back.
CATCH_UP_SECONDS = 30


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    started = time.monotonic()
    with SwiftCluster(tmp_path_factory.mktemp("cluster")) as cluster:
        print(f"cluster startup took {time.monotonic() - started:.2f} s")
        yield cluster


@pytest.fixture(autouse=True)
def whole_cluster(cluster):
    """Each test starts on a whole cluster and leaves one behind."""
    yield
    cluster.restore()


@pytest.fixture(scope="module")
def cluster_ini(cluster, tmp_path_factory):
    ini = write_ini(tmp_path_factory.mktemp("config") / "swiftdrop.ini", cluster,
                    timeout="5", retries="1")
    create_containers(ini)
    return ini


@pytest.fixture(scope="module")
def filter_process(cluster_ini, tmp_path_factory):
    with FilterProcess(cluster_ini, tmp_path_factory.mktemp("filter"),
                       "--hostname", "mx1.example.test", "--store-timeout", "10",
                       "--max-message-size", str(2 * LARGE_MESSAGE_BYTES),
                       "--log-target", "stderr", *FULL_REPLY) as process:
        yield process


def stored_object(cluster, reply):
    """The stored copy a 250 names, read back through the proxy."""
    container, name = stored_location(reply)
    return cluster.connection().get_object(container, name)


def test_one_object_server_down_still_stores_on_the_quorum(cluster, filter_process):
    cluster.stop_object_server(0)
    body = b"Subject: two of three\r\n\r\nstill stored\r\n"
    headers, stored = stored_object(cluster, send(filter_process.address, "s@o.test",
                                                  ["a@example.com"], body))
    assert stored == body
    assert headers["etag"] == hashlib.md5(body).hexdigest()


def test_two_object_servers_down_is_a_451_that_says_why(cluster, filter_process):
    cluster.stop_object_server(0)
    cluster.stop_object_server(1)
    log_before = len(filter_process.log())
    code, text = send(filter_process.address, "s@o.test", ["a@example.com"],
                      b"Subject: one of three\r\n\r\nnot enough\r\n")
    assert (code, text) == (451, "4.3.0 Error: queue file write error")
    log = filter_process.log()[log_before:]
    # Swift's reason is the proxy's: fewer object servers than a quorum.
    assert re.search(r"ERROR: not stored cur/\S+ in \[DEFAULT\] container fallback: "
                     r"Swift answered 503 Service Unavailable \(transaction tx", log), log


def open_object_files(pid, device):
    """How many files the process `pid` has open under `device` (a PUT's temp file)."""
    count = 0
    for descriptor in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{descriptor}").startswith(f"{device}/")
        except FileNotFoundError:  # closed meanwhile
            pass
    return count


def test_a_node_killed_mid_upload_means_250_only_with_the_object(cluster, filter_process):
    body = b"Subject: big\r\n\r\n" + (b"0123456789" * 99 + b"\r\n") * (
        LARGE_MESSAGE_BYTES // 1000)
    victim = cluster.nodes[2]
    object_server = victim.servers["object"].process.pid
    reply = []
    sender = threading.Thread(target=lambda: reply.append(
        send(filter_process.address, "s@o.test", ["a@example.com"], body)))
    sender.start()
    wait_until(lambda: open_object_files(object_server, victim.device) or reply,
               60, "the PUT reaching node 2's object server")
    assert not reply, "the PUT was over before the node could be killed: make it bigger"
    cluster.kill_node(2)
    sender.join(120)
    [(code, text)] = reply
    if code == 250:
        headers, stored = stored_object(cluster, (code, text))
        assert headers["etag"] == hashlib.md5(body).hexdigest()
        assert stored == body
    else:
        assert (code, text) == (451, "4.3.0 Error: queue file write error")


def queue_claim(ini):
    """``swiftdrop queue claim`` on the catch-all: the claimed name, or None."""
    result = run_swiftdrop("queue", "--config", str(ini), "claim")
    if result.returncode == 1 and "nothing to claim" in result.stderr:
        return None
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["name"]


def test_a_listing_that_lags_finds_the_message_late_never_loses_it(
        cluster, filter_process, tmp_path):
    """Only node 2's container server sees the PUT; the others learn it from the updater.

    With nodes 0 and 1's container servers down, their object servers keep
    the container update as an async pending. Once node 2's container server
    is away and the other two are back, no listing shows the message until
    the object-updater sends those updates. The updaters are stopped
    meanwhile, and so are the container replicators: node 2's would copy
    the row from its database to the others (the other way to catch up).
    """
    ini = write_ini(tmp_path / "queue.ini", cluster, container="lagging", timeout="5",
                    retries="1")
    create_containers(ini)
    cluster.stop_daemons("object-updater")
    cluster.stop_daemons("container-replicator")
    with FilterProcess(ini, tmp_path, "--log-target", "stderr", *FULL_REPLY) as process:
        cluster.stop_server(0, "container")
        cluster.stop_server(1, "container")
        container, name = stored_location(send(process.address, "s@o.test",
                                               ["a@example.com"], b"Subject: late\r\n\r\nx\r\n"))
    assert container == "lagging"
    cluster.stop_server(2, "container")
    cluster.start_server(0, "container")
    cluster.start_server(1, "container")

    assert queue_claim(ini) is None  # stored, but in no listing yet
    cluster.start_daemons("object-updater")
    claims = []

    def claimed_one():
        claims.append(queue_claim(ini))
        return claims[-1] is not None

    wait_until(claimed_one, CATCH_UP_SECONDS, "the updater bringing the message into the listing")
    assert "cur/" + claims[-1] == name
