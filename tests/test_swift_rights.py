"""The Swift rights each party needs, proven with users that have exactly those.

docs/deployment.md ("The Swift account and its rights") lists every request
and the right it needs. Here the tempauth users of account test that own
nothing there (``tests.support.swiftserver.MEMBERS``) reach a container only
through the ACLs its owner set, as a user of a shared project would; and a
Keystone user whose role is not among Swift's ``operator_roles`` only
through ACLs naming it.
"""

import json
import subprocess

import pytest

from tests.support.filterproc import FULL_REPLY, FilterProcess, run_swiftdrop, swiftdrop_command
from tests.support.keystone import Credentials
from tests.test_keystone import write_keystone_ini
from tests.test_service import failure_journal_entry, send, stored_location

MESSAGE = (b"Message-ID: <rights@example.com>\r\nSubject: exactly these rights\r\n\r\n"
           b"8-bit \xe9, NUL \x00 and a bare CR\r here\r\n")
STORED_NAME = "1767225600.M000001P1Q1.mx.test,S=10"


def owned_container(swift, name, read=None, write=None):
    """Create `name` as the account's owner (test:tester), with these ACLs."""
    headers = {"X-Container-Read": read or "", "X-Container-Write": write or ""}
    swift.connection().put_container(name, headers=headers)
    return name


def member_ini(path, swift, container, member, create_container="false"):
    """An ini whose only destination is `container`, as tempauth user `member`."""
    user, key = swift.accounts[member]
    path.write_text(f"[DEFAULT]\nrecipient = DEFAULT\ncontainer = {container}\n"
                    f"authurl = {swift.auth_url}\nuser = {user}\nkey = {key}\n"
                    f"create_container = {create_container}\ntimeout = 5\nretries = 0\n")
    path.chmod(0o640)
    return path


def names(swift, container):
    """Every object in `container`, as the owner lists it."""
    return [item["name"] for item in swift.connection().get_container(container)[1]]


def queue(ini, *arguments):
    return subprocess.run(swiftdrop_command("queue", "--config", str(ini), *arguments),
                          capture_output=True, text=True, timeout=60, check=False)


def test_an_mx_user_with_the_read_and_write_acls_passes_check_and_stores(swift, tmp_path):
    container = owned_container(swift, "rights-mx", read="test:mx", write="test:mx")
    ini = member_ini(tmp_path / "swiftdrop.ini", swift, container, "mx")
    check = run_swiftdrop("check", "--config", str(ini))
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith("ok   [DEFAULT] container rights-mx in test:mx at ")
    assert names(swift, container) == []  # the probe of the right to write stored nothing
    with FilterProcess(ini, tmp_path, "--log-target", "stderr", *FULL_REPLY) as process:
        stored_in, name = stored_location(send(process.address, "s@o.test",
                                               ["a@example.com"], MESSAGE))
    assert stored_in == container
    assert swift.connection().get_object(container, name)[1] == MESSAGE
    assert names(swift, container) == [name]


@pytest.mark.parametrize(("granted", "lacking"), [
    ({"read": "test:mx"}, "may not write to the container: give it the container's write ACL "
                          "(X-Container-Write) or Swift's operator role"),
    ({"write": "test:mx"}, "may not read the container, or it does not exist (Swift tells only "
                           "the account's owner which): give it the container's read ACL "
                           "(X-Container-Read) or Swift's operator role"),
], ids=["no-write-acl", "no-read-acl"])
def test_check_names_the_section_and_the_right_that_is_missing(swift, tmp_path, granted,
                                                               lacking):
    container = owned_container(swift, f"rights-{'-'.join(granted)}-only", **granted)
    ini = member_ini(tmp_path / "swiftdrop.ini", swift, container, "mx")
    check = run_swiftdrop("check", "--config", str(ini))
    assert check.returncode == 1
    [line] = check.stdout.splitlines()
    assert line.startswith(f"FAIL [DEFAULT] container {container} in test:mx at "), line
    assert ": Swift answered 403 Forbidden; this user " + lacking in line
    assert "create_container" not in line


def test_without_the_write_acl_the_filter_answers_451_at_error_priority(swift, tmp_path,
                                                                        journald):
    container = owned_container(swift, "rights-451", read="test:mx")
    ini = member_ini(tmp_path / "swiftdrop.ini", swift, container, "mx")
    entry, _ = failure_journal_entry(ini, tmp_path, journald, MESSAGE)  # 451, PRIORITY 3
    assert entry["SWIFTDROP_SECTION"] == "DEFAULT"
    assert entry["SWIFTDROP_CONTAINER"] == container
    assert entry["SWIFTDROP_SWIFT_STATUS"] == "403"
    assert entry["SWIFTDROP_REASON"] == "Swift answered 403 Forbidden"
    assert names(swift, container) == []  # nothing stored: the sender keeps the message


def test_create_container_without_the_operator_role_says_only_the_owner_may(swift, tmp_path):
    ini = member_ini(tmp_path / "swiftdrop.ini", swift, "rights-never-created", "mx",
                     create_container="true")
    check = run_swiftdrop("check", "--config", str(ini))
    assert check.returncode == 1
    [line] = check.stdout.splitlines()
    assert line.startswith("FAIL [DEFAULT] container rights-never-created in test:mx at "), line
    assert line.endswith("; create_container = true cannot create it, only Swift's operator "
                         "role may create containers")
    assert "rights-never-created" not in [item["name"]
                                          for item in swift.connection().get_account()[1]]


def store_waiting_message(swift, container):
    """One message in cur/ as the filter stores it, Message-ID included (for dedup)."""
    swift.connection().put_object(container, f"cur/{STORED_NAME}", MESSAGE, headers={
        "X-Object-Meta-Message-Id": "<rights@example.com>"})


def test_a_worker_with_the_read_and_write_acls_claims_finishes_and_recovers(swift, tmp_path):
    container = owned_container(swift, "rights-worker", read="test:worker", write="test:worker")
    store_waiting_message(swift, container)
    ini = member_ini(tmp_path / "swiftdrop.ini", swift, container, "worker")
    claim = queue(ini, "claim", "--dedup")  # locks/, the dedup marker's GET
    assert claim.returncode == 0, claim.stderr
    claimed = json.loads(claim.stdout)
    assert claimed["name"] == STORED_NAME
    finish = queue(ini, "finish", STORED_NAME, "--token", claimed["token"],
                   "--state", "done")  # and the dedup marker
    assert (finish.returncode, finish.stdout) == (0, f"done/{STORED_NAME}\n"), finish.stderr
    # done/ just now, so older than a millisecond by the time purge lists it
    for action in (["recover"], ["purge", "--older-than", "0.001", "--execute"]):
        result = queue(ini, *action)
        assert result.returncode == 0, result.stderr
    assert [name for name in names(swift, container) if not name.startswith("dedup/")] == []


def test_a_read_only_consumer_reads_every_message_but_cannot_claim(swift, tmp_path):
    container = owned_container(swift, "rights-reader", read="test:reader")
    store_waiting_message(swift, container)
    reader = swift.connection("reader", retries=0)
    listed = [item["name"] for item in reader.get_container(container)[1]]
    assert listed == [f"cur/{STORED_NAME}"]
    assert reader.get_object(container, listed[0])[1] == MESSAGE
    ini = member_ini(tmp_path / "swiftdrop.ini", swift, container, "reader")
    stats = queue(ini, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["cur/"]["count"] == 1
    dry_run = queue(ini, "purge", "--prefix", "cur/", "--include-unprocessed",
                    "--older-than", "0.001")
    assert dry_run.returncode == 0 and "would delete 1 object(s)" in dry_run.stdout

    claim = queue(ini, "claim")
    assert claim.returncode == 77, claim.stderr
    [line] = claim.stderr.splitlines()
    assert line.startswith(f"swiftdrop: queue claim: Swift answered 403 Forbidden to PUT "
                           f"locks/{STORED_NAME}: test:reader at "), line
    assert line.endswith(f"may not write to container {container}; queue claim needs the "
                         "container's read and write ACLs (X-Container-Read, "
                         "X-Container-Write) or Swift's operator role")
    purge = queue(ini, "purge", "--prefix", "cur/", "--include-unprocessed",
                  "--older-than", "0.001", "--execute")
    assert purge.returncode == 77 and "may not write to container" in purge.stderr
    assert names(swift, container) == [f"cur/{STORED_NAME}"]  # it still waits, untouched


def test_a_read_only_worker_says_what_it_lacks_at_error_priority_and_keeps_trying(swift,
                                                                                tmp_path):
    """`queue run` rides out what passes by itself; a missing right is for someone to grant."""
    container = owned_container(swift, "rights-reader-run", read="test:reader")
    store_waiting_message(swift, container)
    ini = member_ini(tmp_path / "swiftdrop.ini", swift, container, "reader")
    worker = subprocess.Popen(swiftdrop_command("queue", "--config", str(ini), "run", "--",
                                                "cat"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first, second = worker.stderr.readline(), worker.stderr.readline()
    finally:
        worker.terminate()
        stdout, _ = worker.communicate(timeout=30)
    for line, wait in ((first, 1), (second, 2)):
        assert line.startswith(f"swiftdrop: ERROR: cannot claim from {container}: Swift "
                               f"answered 403 Forbidden to PUT locks/{STORED_NAME}: "
                               "test:reader at "), line
        assert line.endswith(f"may not write to container {container}; trying again in "
                             f"{wait} s\n"), line
    assert (worker.returncode, json.loads(stdout)) == (0, {})
    assert names(swift, container) == [f"cur/{STORED_NAME}"]


@pytest.mark.slow  # a real Keystone
@pytest.mark.filterwarnings("ignore::DeprecationWarning:keystoneclient")
@pytest.mark.filterwarnings("ignore:Using the 'tenant_id' argument:DeprecationWarning")
def test_a_keystone_user_without_an_operator_role_needs_acls_naming_it(keystone,
                                                                      keystone_swift,
                                                                      tmp_path):
    """A role outside operator_roles gets a token, and 403s until the ACLs name the user.

    Both forms keystoneauth takes: ``project_id:user_id``, and names
    (``project:user``) for a project and user of the default domain.
    """
    mx = Credentials("rights-mx", "rights-mx-secret", keystone.mail.project, "reader")
    project_id, user_id = keystone.create_user(mx)
    owner = keystone_swift.connection(retries=0)
    owner.put_container("keystone-rights")
    ini = write_keystone_ini(tmp_path / "swiftdrop.ini", keystone)
    ini.write_text(ini.read_text().replace("keystone-mail", "keystone-rights")
                   .replace(keystone.mail.user, mx.user).replace(keystone.mail.password,
                                                                 mx.password)
                   .replace("create_container = true", "create_container = false"))
    check = run_swiftdrop("check", "--config", str(ini))
    assert check.returncode == 1
    assert ": Swift answered 403 Forbidden; this user may not read the container" \
        in check.stdout

    owner.post_container("keystone-rights", headers={
        "X-Container-Read": f"{mx.project}:{mx.user}",
        "X-Container-Write": f"{project_id}:{user_id}"})
    check = run_swiftdrop("check", "--config", str(ini))
    assert check.returncode == 0, check.stdout + check.stderr
    with FilterProcess(ini, tmp_path, "--log-target", "stderr", *FULL_REPLY) as process:
        stored_in, name = stored_location(send(process.address, "s@o.test",
                                               ["a@example.com"], MESSAGE))
    assert owner.get_object(stored_in, name)[1] == MESSAGE
