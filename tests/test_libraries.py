"""The heavy client libraries stay out of processes whose configuration does not need them.

Debian's swiftclient would import keystoneclient (oslo.*, osprofiler,
eventlet: 40 MB, half a second) into every process, and keystoneauth1's
session osprofiler; :mod:`swiftdrop.libraries` refuses those optional
imports. These tests look at ``sys.modules`` of a fresh interpreter after
it did the real work of a command, so the heavy import cannot creep back
through a new ``import`` anywhere in the package. No timing: the start
times are measured by bench.filter_throughput.
"""

import json
import subprocess
import sys

import pytest

KEYSTONECLIENT_STACK = ("keystoneclient", "oslo_", "osprofiler", "eventlet", "pkg_resources")

BUILD_EVERYTHING = """
import json, sys
from swiftdrop import auth, cli, config, queue, service, storage, worker
from swiftdrop.delivery import Deliverer
from swiftdrop.naming import MaildirNamer
loaded = config.load(sys.argv[1])
store = storage.SwiftStore()
Deliverer(loaded, store, MaildirNamer("mx.test"), 60)
for destination in loaded.destinations:
    store.session(destination)
    queue.connect(destination)
    if destination.account.auth_version != "1.0":
        auth.keystone_session(destination.account, 5)
print(json.dumps(sorted(sys.modules)))
"""


def heavy(modules, stack=KEYSTONECLIENT_STACK):
    return sorted(name for name in modules if name.startswith(stack))


def write_ini(tmp_path, auth):
    ini = tmp_path / "swiftdrop.ini"
    ini.write_text("[DEFAULT]\nrecipient = DEFAULT\ncontainer = mail\n" + auth)
    ini.chmod(0o600)
    return ini


TEMPAUTH = "auth_version = 1\nauthurl = http://127.0.0.1:1/auth/v1.0\nuser = a:b\nkey = c\n"
KEYSTONE_V3 = ("auth_version = 3\nauthurl = http://127.0.0.1:1/v3\nuser = u\nkey = k\n"
               "os_options_project_name = p\nos_options_user_domain_name = Default\n"
               "os_options_project_domain_name = Default\n")


@pytest.mark.parametrize("auth", [TEMPAUTH, KEYSTONE_V3], ids=["tempauth", "keystone-v3"])
def test_filter_and_queue_objects_leave_keystoneclient_unimported(tmp_path, auth):
    result = subprocess.run([sys.executable, "-c", BUILD_EVERYTHING,
                             str(write_ini(tmp_path, auth))],
                            capture_output=True, text=True, check=True)
    modules = json.loads(result.stdout)
    assert "swiftclient.client" in modules  # the work was really done
    assert heavy(modules) == []
    if auth == TEMPAUTH:
        assert heavy(modules, ("keystoneauth1",)) == []
    else:
        assert "keystoneauth1.session" in modules


@pytest.mark.parametrize("command", [["--help"], ["check", "--config-only"]])
def test_cli_without_swift_work_imports_no_client_library(tmp_path, command):
    if command[0] == "check":
        command = [*command, "--config", str(write_ini(tmp_path, TEMPAUTH))]
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "swiftdrop", *command],
                            capture_output=True, text=True, check=True)
    modules = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
               if line.startswith("import time:")]
    assert "swiftdrop.cli" in modules
    assert heavy(modules, ("swiftclient", "requests", "keystoneauth1", *KEYSTONECLIENT_STACK)) \
        == []
