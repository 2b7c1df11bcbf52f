"""The role's checks of its variables as a whole (tasks/validate.yml), run by Ansible itself.

validate.yml runs before anything on a host changes, so a bad inventory
stops the play with the check's own message; these run it on the
controller alone, with the role's defaults and vars, as the play would.
"""

import json
import pathlib
import subprocess
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
ROLE = REPO / "roles/swiftdrop"
DESTINATIONS = [{"name": "DEFAULT", "container": "incoming", "auth_version": "1",
                 "authurl": "http://127.0.0.1:8080/auth/v1.0", "user": "test:tester",
                 "key": "testing"}]


def validate(directory, **variables):
    """Run validate.yml with these variables over the role's; the play's result."""
    playbook = directory / "validate.yml"
    playbook.write_text(textwrap.dedent(f"""\
        - hosts: localhost
          gather_facts: false
          tasks:
            - ansible.builtin.include_vars: {ROLE}/defaults/main.yml
            - ansible.builtin.include_vars: {ROLE}/vars/main.yml
            - ansible.builtin.import_tasks: {ROLE}/tasks/validate.yml
        """))
    python = REPO / ".venv-ansible/bin/python"
    extra_vars = {"swiftdrop_destinations": DESTINATIONS,
                  "swiftdrop_relay_domains": ["example.com"],
                  "ansible_python_interpreter": str(python), **variables}
    return subprocess.run(
        [str(REPO / ".venv-ansible/bin/ansible-playbook"), "-i", "localhost,", "-c", "local",
         "-e", json.dumps(extra_vars), str(playbook)],
        capture_output=True, text=True, check=False, env={"PATH": "/usr/bin:/bin",
                                                          "ANSIBLE_NOCOLOR": "1"})


@pytest.mark.parametrize("name", ["mx-1.example.com", "localhost"])
def test_a_host_name_passes(tmp_path, name):
    result = validate(tmp_path, swiftdrop_myhostname=name)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", ["192.0.2.10", "2001:db8::10", "mx1.example.com.",
                                  "mx_1.example.com", ""])
def test_an_address_or_a_malformed_name_stops_the_play_with_a_message(tmp_path, name):
    result = validate(tmp_path, swiftdrop_myhostname=name)
    assert result.returncode != 0
    assert f"swiftdrop_myhostname is {json.dumps(name)}: it must be this host's" in result.stdout
