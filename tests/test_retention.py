"""retention: every stored copy expires through Swift's own object-expirer.

Against the real Swift and the real filter: the PUT carries X-Delete-After,
the queue's server-side copies keep the X-Delete-At it became, and one pass
of the expirer (tests.support.expirer) empties a destination whose mail is
past its age.
"""

import time

import pytest

from swiftdrop import config as config_module
from swiftdrop.queue import MailQueue
from tests.conftest import create_containers, write_ini
from tests.support.expirer import expire_once
from tests.support.filterproc import FULL_REPLY, FilterProcess
from tests.test_service import send, stored_location

pytestmark = pytest.mark.slow  # a filter process, and a wait for the expiry


def stored(tmp_path, swift, retention, count, container):
    """`count` messages through the filter into `container`; their (container, name)."""
    ini = write_ini(tmp_path / "swiftdrop.ini", swift, container=container,
                    retention=retention)
    create_containers(ini)
    with FilterProcess(ini, tmp_path, "--log-target", "stderr", *FULL_REPLY) as process:
        places = [stored_location(send(process.address, "s@o.test", ["archive@example.com"],
                                       b"Subject: keep me a while\r\n\r\n%d\r\n" % number))
                  for number in range(count)]
    return ini, places


def test_the_stored_copy_and_every_move_of_it_expire_at_one_time(swift, tmp_path):
    before = time.time()
    ini, [(container, name)] = stored(tmp_path, swift, "90d", 1, "retention-moves")
    connection = swift.connection()
    delete_at = int(connection.head_object(container, name)["x-delete-at"])
    assert before + 90 * 86400 - 1 <= delete_at <= time.time() + 90 * 86400 + 1

    queue = MailQueue(config_module.load(str(ini)).catch_all)
    try:
        claimed = queue.claim()
        assert claimed is not None
        processing = connection.head_object(container, "processing/" + claimed.name)
        assert int(processing["x-delete-at"]) == delete_at
        queue.finish(claimed, "done", {})
    finally:
        queue.close()
    done = connection.head_object(container, "done/" + claimed.name)
    assert int(done["x-delete-at"]) == delete_at, "done/ must not outlive the retention"


def test_a_destination_past_its_retention_empties_itself_through_the_expirer(swift, tmp_path):
    _, places = stored(tmp_path, swift, "2s", 3, "retention-expiry")
    container = places[0][0]
    connection = swift.connection()
    names = sorted(name for _, name in places)
    assert [item["name"] for item in connection.get_container(container)[1]] == names
    last = max(int(connection.head_object(container, name)["x-delete-at"]) for name in names)
    while time.time() <= last:  # the expirer takes what is due by its clock, not ours
        time.sleep(0.2)
    # Past its X-Delete-At an object is gone for a GET, but listed until the expirer runs.
    assert [item["name"] for item in connection.get_container(container)[1]] == names
    expire_once(swift)
    assert connection.get_container(container)[1] == []
