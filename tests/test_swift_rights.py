"""The Swift rights each party needs, proven with users that have exactly those.

docs/deployment.md ("The Swift account and its rights") lists every request
and the right it needs. Here the tempauth users of account test that own
nothing there (``tests.support.swiftserver.MEMBERS``) reach a container only
through the ACLs its owner set, as a user of a shared project would.
"""

import pytest

from tests.support.filterproc import FULL_REPLY, FilterProcess, run_swiftdrop
from tests.test_service import failure_journal_entry, send, stored_location

MESSAGE = (b"Message-ID: <rights@example.com>\r\nSubject: exactly these rights\r\n\r\n"
           b"8-bit \xe9, NUL \x00 and a bare CR\r here\r\n")


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
