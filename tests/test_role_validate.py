"""The role's checks of its variables as a whole (tasks/validate.yml), run by Ansible itself.

validate.yml runs before anything on a host changes, so a bad inventory
stops the play with the check's own message; these run it on the
controller alone, with the role's defaults and vars, as the play would.
The checks of the connection limit and the spool are in test_role_limits.py.
"""

import json

import pytest

from tests.support.role import validate


@pytest.mark.parametrize("name", ["mx-1.example.com", "localhost"])
def test_a_host_name_passes(tmp_path, name):
    passed, output = validate(tmp_path, swiftdrop_myhostname=name)
    assert passed, output


@pytest.mark.parametrize("name", ["192.0.2.10", "2001:db8::10", "mx1.example.com.",
                                  "mx_1.example.com", ""])
def test_an_address_or_a_malformed_name_stops_the_play_with_a_message(tmp_path, name):
    passed, output = validate(tmp_path, swiftdrop_myhostname=name)
    assert not passed
    assert f"swiftdrop_myhostname is {json.dumps(name)}: it must be this host's" in output
