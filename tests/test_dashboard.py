"""The Grafana dashboard, without Grafana or Prometheus: every query parses and names real metrics.

The proof that each query returns data is in the monitoring scenario
(molecule/monitoring/verify.yml asks the guest's Prometheus); this catches
a typo, a renamed metric or an empty panel before a guest is booted.
"""

import json
import pathlib
import re
import subprocess
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families
import yaml

from swiftdrop import metrics
from swiftdrop.queue import PREFIXES
from swiftdrop.queue_report import format_stats

ROOT = pathlib.Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "dashboards/swiftdrop.json"
# What Grafana puts in place of its variables, and of the dashboard's own.
VARIABLES = {"$__rate_interval": "5m", "$__range": "5m", "$destination": ".*"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and",
                "or", "unless", "offset", "inf", "nan"}
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
            "histogram": ("_bucket", "_sum", "_count", "_created")}


def dashboard():
    return json.loads(DASHBOARD.read_text())


def panels():
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def concrete(expr):
    """`expr` as the monitoring scenario sends it to Prometheus."""
    for variable, value in VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def exported_names():
    """Every series name the filter, a worker or the queue-stats textfile can carry."""
    names = {"up"}
    for family in (*metrics.REGISTRY.collect(), *metrics.WORKER_REGISTRY.collect()):
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    stats = {prefix: {"count": 0, "bytes": 0} for prefix in PREFIXES}
    stats["oldest_cur_age_seconds"] = None
    destination = SimpleNamespace(section="DEFAULT", container="inbox")
    text = format_stats(stats, destination, "prometheus")
    names |= {family.name for family in text_string_to_metric_families(text)}
    return names


def named_metrics(expr):
    """The metric names in a PromQL expression: not functions, keywords, labels or strings."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    words = re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*(?!\s*\()(?![A-Za-z0-9_:])", expr)
    return {word for word in words if word.lower() not in PROMQL_WORDS}


def test_the_dashboard_imports_anywhere_through_its_datasource_input():
    board = dashboard()
    assert [entry["name"] for entry in board["__inputs"]] == ["DS_PROMETHEUS"]
    assert board["schemaVersion"] >= 39
    assert [panel["title"] for panel in board["panels"] if panel["type"] == "row"] \
        == ["Ingest", "Hand-off"]
    sources = [panel["datasource"] for panel in panels()]
    sources += [target["datasource"] for panel in panels() for target in panel["targets"]]
    sources += [variable["datasource"] for variable in board["templating"]["list"]]
    assert {source["uid"] for source in sources} == {"${DS_PROMETHEUS}"}


def test_every_panel_has_targets_a_unit_and_a_unique_id():
    for panel in panels():
        assert panel["targets"], panel["title"]
        assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
    ids = [panel["id"] for panel in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_promtool_parses_every_query(tmp_path):
    """Each query as a recording rule: `promtool check rules` parses its PromQL."""
    rules = [{"record": f"dashboard:panel{panel['id']}:{target['refId']}",
              "expr": concrete(target["expr"])}
             for panel in panels() for target in panel["targets"]]
    rule_file = tmp_path / "dashboard.rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    check = subprocess.run(["promtool", "check", "rules", str(rule_file)], capture_output=True,
                           text=True, check=False)
    titles = {f"dashboard:panel{panel['id']}": panel["title"] for panel in panels()}
    assert check.returncode == 0, (check.stdout + check.stderr, titles)
    assert f"SUCCESS: {len(rules)} rules found" in check.stdout


def test_every_query_names_only_metrics_swiftdrop_exports():
    known = exported_names()
    for panel in panels():
        for target in panel["targets"]:
            names = named_metrics(target["expr"])
            assert names, (panel["title"], target["expr"])
            assert names <= known, (panel["title"], sorted(names - known))


def test_the_name_finder_sees_a_metric_and_ignores_functions_labels_and_keywords():
    """The check above could pass vacuously if this found nothing."""
    expr = ('histogram_quantile(0.99, sum by (destination, le) '
            '(rate(swiftdrop_nope_bucket{destination=~"a|b"}[5m]))) and on (x) up')
    assert named_metrics(expr) == {"swiftdrop_nope_bucket", "up"}
