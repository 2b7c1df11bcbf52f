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


@pytest.mark.parametrize("networks", [[], ["192.0.2.10"], ["198.51.100.0/24", "2001:db8::/48"],
                                      ["2001:db8::25"]])
def test_trusted_relays_given_as_addresses_or_networks_pass(tmp_path, networks):
    passed, output = validate(tmp_path, swiftdrop_trusted_networks=networks)
    assert passed, output


@pytest.mark.parametrize("network", ["0.0.0.0/0", "::/0", "relay.example.net", "198.51.100.0/33",
                                     "192.0.2", "2001:db8::/129", "192.0.2.0/24 permit"])
def test_a_trusted_relay_that_is_no_network_or_every_address_stops_the_play(tmp_path, network):
    passed, output = validate(tmp_path, swiftdrop_trusted_networks=["192.0.2.10", network])
    assert not passed
    assert "swiftdrop_trusted_networks: " in output and "is not an IPv4 or IPv6" in output
