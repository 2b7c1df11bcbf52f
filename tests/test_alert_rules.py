"""The role's Prometheus rules: promtool's unit tests, and the alert firing in a real Prometheus.

The shipped rules wait minutes (``for: 2m`` over ``[5m]``); the end-to-end
test runs a copy with the windows shortened to seconds, the only change, so
that a real Prometheus scraping a real filter shows SwiftDropStoreFailing
firing while Swift is down and resolving once a message is stored again.
"""

import json
import pathlib
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.conftest import create_containers, write_ini
from tests.support.filterproc import FilterProcess, wait_for_port
from tests.support.ports import reserve_port
from tests.support.swiftserver import SwiftServer
from tests.test_service import send

ROOT = pathlib.Path(__file__).resolve().parent.parent
RULES = ROOT / "roles/swiftdrop/files/swiftdrop.rules.yml"
RULE_TESTS = ROOT / "tests/prometheus/swiftdrop.rules.test.yml"


def test_promtool_checks_the_rules_and_runs_their_unit_tests():
    check = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True,
                           text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 10 rules found" in check.stdout
    unit = subprocess.run(["promtool", "test", "rules", str(RULE_TESTS)], capture_output=True,
                          text=True, check=False)
    assert unit.returncode == 0, unit.stdout + unit.stderr
    assert "SUCCESS" in unit.stdout


def test_the_role_variable_marks_only_store_failings_for_line():
    """The role rewrites the one `for:` line that names swiftdrop_prometheus_store_failing_for."""
    marker = "  # swiftdrop_prometheus_store_failing_for"
    marked = {block.split("\n", 1)[0]: [line.strip() for line in block.splitlines()
                                        if line.endswith(marker)]
              for block in RULES.read_text().split("- alert: ")[1:]}
    assert marked == {"SwiftDropStoreFailing": [f"for: 2m{marker}"], "SwiftDropNoMailStored": [],
                      "SwiftDropAuthStorm": [], "SwiftDropDown": [],
                      "SwiftDropWebhookDeadLetters": [], "SwiftDropQueueOldestWaiting": [],
                      "SwiftDropAnnounceLag": [], "SwiftDropAnnounceFailures": [],
                      "SwiftDropCertificateExpiresSoon": [], "SwiftDropCertificateUnreadable": []}
    days = [line.strip() for line in RULES.read_text().splitlines()
            if line.endswith("  # swiftdrop_prometheus_certificate_warning_days")]
    assert days == ["< 14 * 86400  # swiftdrop_prometheus_certificate_warning_days"]


def quick_rules(path):
    """The shipped rules with every range and `for:` shortened to seconds."""
    text = RULES.read_text()
    text = re.sub(r"\[\d+[mh]\]", "[20s]", text)
    text = re.sub(r"for: \d+[mh]", "for: 2s", text)
    path.write_text(text)
    return path


def api(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.loads(response.read())


def firing(port, alertname):
    """The labels of each `alertname` alert in state firing."""
    return [alert["labels"] for alert in api(port, "/api/v1/alerts")["data"]["alerts"]
            if alert["labels"]["alertname"] == alertname and alert["state"] == "firing"]


def wait_until(condition, timeout=90, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.5)


def ready(port):
    """True once Prometheus answers /-/ready with 200 (503 while it starts up)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=10):
            return True
    except urllib.error.HTTPError as error:
        if error.code == 503:
            return False
        raise


@pytest.fixture
def prometheus_for(tmp_path):
    """Start a real Prometheus scraping `metrics_port` every second; yields a starter."""
    processes = []

    def start(metrics_port):
        port = reserve_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(quick_rules(tmp_path / "swiftdrop.rules.yml"))],
            "scrape_configs": [{"job_name": "swiftdrop", "static_configs": [
                {"targets": [f"127.0.0.1:{metrics_port}"]}]}],
        }))
        log = open(tmp_path / "prometheus.log", "wb")
        process = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path}/tsdb",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log)
        log.close()
        processes.append(process)
        wait_for_port(port, timeout=60, process=process)
        wait_until(lambda: ready(port), what="ready Prometheus")
        return port

    yield start
    for process in processes:
        process.terminate()
        process.wait(30)


@pytest.mark.slow  # a real Prometheus; firing and resolving take tens of seconds
def test_store_failing_fires_while_swift_is_down_and_resolves(tmp_path, prometheus_for):
    swift = SwiftServer(tmp_path / "swift")
    swift.start()
    try:
        ini = write_ini(tmp_path / "swiftdrop.ini", swift, timeout="2", retries="0")
        create_containers(ini)
        metrics_port = reserve_port()
        with FilterProcess(ini, tmp_path, "--metrics-listen", f"127.0.0.1:{metrics_port}",
                           "--store-timeout", "5", "--log-target", "stderr") as process:
            port = prometheus_for(metrics_port)
            query = urllib.parse.quote('up{job="swiftdrop"}')
            wait_until(lambda: [r["value"][1] for r in
                                api(port, f"/api/v1/query?query={query}")["data"]["result"]]
                       == ["1"], what="scrape of the filter")
            assert firing(port, "SwiftDropStoreFailing") == []

            swift.stop()
            assert send(process.address, "s@o.test", ["a@example.com"], b"down\r\n")[0] == 451
            wait_until(lambda: firing(port, "SwiftDropStoreFailing"), what="firing alert")
            [labels] = firing(port, "SwiftDropStoreFailing")
            assert (labels["destination"], labels["severity"]) == ("DEFAULT", "critical")
            assert labels["instance"] == f"127.0.0.1:{metrics_port}"

            swift.start()
            assert send(process.address, "s@o.test", ["a@example.com"], b"back\r\n")[0] == 250
            wait_until(lambda: not firing(port, "SwiftDropStoreFailing"), what="resolution")
    finally:
        swift.close()
