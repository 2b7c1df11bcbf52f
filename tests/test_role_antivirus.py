"""The role's virus verdicts: clamd for rspamd, --antivirus for the filter, and their checks.

Rendered and validated by Ansible itself on the controller; clamd and rspamd
scanning for real is in tests/test_verdicts.py (with this template's
settings, tests.support.rspamd.ANTIVIRUS_CONF) and in molecule/edge.
"""

import re

import pytest

from tests.support.role import VARIABLES, rendered, validate
from tests.support.rspamd import ANTIVIRUS_CONF
from tests.test_role_limits import exec_start_option

SETTING = re.compile(r"^\s*(\w+) = (.*);$", re.MULTILINE)


def settings_of(conf):
    return dict(SETTING.findall(conf))


@pytest.fixture
def directory(tmp_path):
    """Where rendered() writes rspamd/antivirus.conf."""
    (tmp_path / "rspamd").mkdir()
    return tmp_path


def test_with_antivirus_rspamd_asks_clamd_on_its_socket_for_every_whole_message(directory):
    conf = rendered(directory, "rspamd/antivirus.conf", swiftdrop_antivirus=True)
    settings = settings_of(conf)
    assert settings["servers"] == '"/run/clamav/clamd.ctl"'
    assert settings["scan_mime_parts"] == "false"
    assert settings["symbol"] == '"CLAM_VIRUS"'
    assert "action" not in settings  # tag only
    # clamd slow costs the virus verdict only: its wait ends before the filter's for rspamd
    assert float(settings["timeout"]) * int(settings["retransmits"]) < 5
    tested = settings_of(ANTIVIRUS_CONF.format(servers="127.0.0.1:3310"))
    assert set(tested) == set(settings), "the tests' rspamd scans as the role's does"
    assert {key: value for key, value in tested.items() if key not in ("servers", "timeout")} \
        == {key: value for key, value in settings.items() if key not in ("servers", "timeout")}


def test_without_antivirus_there_is_no_scanner_and_the_filter_calls_nothing_clean(directory):
    conf = rendered(directory, "rspamd/antivirus.conf")
    assert settings_of(conf) == {} and "clamav" not in conf.replace("# No scanner", "")
    assert "--antivirus" not in rendered(directory, "swiftdrop.service")


def test_the_filter_is_told_that_rspamd_scans(tmp_path):
    unit = rendered(tmp_path, "swiftdrop.service", swiftdrop_antivirus=True)
    assert exec_start_option(unit, "--rspamd-url") == "http://127.0.0.1:11333"
    assert " --antivirus" in unit


def test_antivirus_and_a_destination_that_refuses_viruses_pass(tmp_path):
    [default] = VARIABLES["swiftdrop_destinations"]
    passed, output = validate(tmp_path, swiftdrop_antivirus=True, swiftdrop_destinations=[
        {**default, "reject_verdicts": ["virus", "spam-reject"]}])
    assert passed, output


@pytest.mark.parametrize(("variables", "words"), [
    ({"swiftdrop_antivirus": True, "swiftdrop_verdicts": False},
     "swiftdrop_antivirus needs swiftdrop_verdicts: rspamd is what asks clamd"),
    ({"reject_verdicts": ["virus"]},
     "reject_verdicts of DEFAULT lists virus, but without swiftdrop_antivirus no message is "
     "scanned and none would be refused"),
])
def test_a_virus_verdict_nobody_scans_for_stops_the_play(tmp_path, variables, words):
    [default] = VARIABLES["swiftdrop_destinations"]
    refusals = {"reject_verdicts": variables.pop("reject_verdicts")} \
        if "reject_verdicts" in variables else {}
    passed, output = validate(tmp_path, swiftdrop_destinations=[{**default, **refusals}],
                              **variables)
    assert not passed
    assert words in output
