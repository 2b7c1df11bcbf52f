"""The role's monitoring variables as they reach the systemd unit (rendered, not deployed).

The deployed unit is exercised in Molecule; here the template is rendered
with the role's defaults by Jinja2 and Ansible's filters from the Ansible
venv, as Ansible would.
"""

import json
import pathlib
import subprocess
import textwrap

REPO = pathlib.Path(__file__).resolve().parent.parent
ROLE = REPO / "roles/swiftdrop"


def render_service_unit(**overrides):
    render = textwrap.dedent("""\
        import json, sys, jinja2, yaml
        role, overrides = sys.argv[1], json.loads(sys.argv[2])
        variables = yaml.safe_load(open(role + "/defaults/main.yml"))
        variables.update(ansible_managed="managed", swiftdrop_relay_domains=["example.com"],
                         swiftdrop_destinations=[], **overrides)
        from ansible.plugins.filter.core import FilterModule
        environment = jinja2.Environment(loader=jinja2.FileSystemLoader(role + "/templates"),
                                         undefined=jinja2.StrictUndefined)
        environment.filters.update(FilterModule().filters())  # comment, to_json, ...
        print(environment.get_template("swiftdrop.service.j2").render(variables))
        """)
    result = subprocess.run([str(REPO / ".venv-ansible/bin/python"), "-c", render, str(ROLE),
                             json.dumps(overrides)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def directive(unit, name):
    return [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith(f"{name}=")]


def test_by_default_metrics_on_loopback_and_a_watchdog():
    unit = render_service_unit()
    [exec_start] = directive(unit, "ExecStart")
    arguments = exec_start.split()
    assert arguments[arguments.index("--metrics-listen") + 1] == "127.0.0.1:10096"
    # Postfix's certificate, whose expiry the rules watch
    assert arguments[arguments.index("--tls-certificate") + 1] == "/etc/postfix/tls/cert.pem"
    assert directive(unit, "WatchdogSec") == ["30"]


def test_metrics_and_watchdog_can_be_switched_off():
    unit = render_service_unit(swiftdrop_metrics_listen="", swiftdrop_watchdog_sec=0)
    assert "--metrics-listen" not in unit and "--tls-certificate" not in unit
    assert directive(unit, "WatchdogSec") == []

