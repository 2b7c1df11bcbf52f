"""``swiftdrop status`` reads back what the filter wrote to the real journal and its metrics."""

from datetime import datetime
import json
import os
import pathlib
import subprocess
import time

import pytest

from swiftdrop.status import percentile, summarize
from tests.conftest import create_containers, write_ini
from tests.support.filterproc import FilterProcess, run_swiftdrop, swiftdrop_command
from tests.support.ports import reserve_port
from tests.test_metrics import BROKEN_SECTION
from tests.test_service import send
from tests.test_webhook import Receiver, Rig, respond


def wait_for(condition, timeout=15):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def status(*args):
    result = run_swiftdrop("status", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.slow  # over 10 s: waits for journald to flush
def test_status_reads_the_journal_and_the_metrics(swift, tmp_path, journald):
    ini = write_ini(tmp_path / "swiftdrop.ini", swift)
    create_containers(ini)
    ini.write_text(ini.read_text() + BROKEN_SECTION)
    metrics_port = reserve_port()
    metrics = f"127.0.0.1:{metrics_port}"
    with FilterProcess(ini, tmp_path, "--metrics-listen", metrics,
                       "--log-target", "journal") as proc:
        assert send(proc.address, "s@o.test", ["a@example.com"], b"1\r\n")[0] == 250
        assert send(proc.address, "s@o.test", ["a@example.com", "billing@example.com"],
                    b"2\r\n")[0] == 250
        assert send(proc.address, "s@o.test", ["broken@example.com"], b"3\r\n")[0] == 451
        own = f"_PID={proc.process.pid}"

        def of_this_run(*options):
            """Its PID and its lifetime: the PID alone may name an earlier process too."""
            lifetime = f"{int(time.time() - proc.started) + 2}s"
            return status("--since", lifetime, "--match", own, *options)
        assert wait_for(lambda: json.loads(of_this_run("--json"))["failed"] == 1)
        report = json.loads(of_this_run("--metrics", metrics, "--json"))
        text = of_this_run("--metrics", metrics)
    assert (report["stored"], report["failed"], report["forwarded"]) == (2, 1, 0)
    assert report["destinations"] == {"DEFAULT": {"stored": 2, "failed": 0},
                                      "BILLING": {"stored": 1, "failed": 0},
                                      "BROKEN": {"stored": 0, "failed": 1}}
    assert 0 <= report["store_ms"]["p50"] <= report["store_ms"]["p99"]
    failure = report["last_failure"]
    assert (failure["section"], failure["container"], failure["reason"]) == (
        "BROKEN", "never-created", "Swift answered 404 Not Found")
    if pathlib.Path("/run/systemd/system").is_dir():  # booted with systemd
        assert report["socket"] in ("active", "inactive", "failed", "activating")
    else:
        assert report["socket"] == "unknown"
    assert report["metrics"]["sessions_active"] == 0
    assert (report["metrics"]["messages_stored"], report["metrics"]["messages_failed"]) == (2, 1)
    assert "stored 2, failed 1, refused 0, forwarded 0" in text
    assert "[BROKEN] stored 0, failed 1" in text
    assert "last failure: " in text and "Swift answered 404 Not Found" in text
    # Nothing older than --since: a window that ends before the messages is empty.
    assert json.loads(status("--since", "0s", "--match", own, "--json"))["stored"] == 0


def test_summary_splits_multi_copy_sections_and_ranks_store_times():
    """Pure logic: a stored entry names every section; p50/p99 are nearest-rank."""
    def entry(result, section, ms, **more):
        return {"SWIFTDROP_RESULT": result, "SWIFTDROP_SECTION": section,
                "SWIFTDROP_DURATION_MS": str(ms),
                "__REALTIME_TIMESTAMP": datetime(2026, 11, 30, 12, 0, 0), **more}

    entries = [entry("stored", "DEFAULT BILLING", 10), entry("stored", "DEFAULT", 20),
               entry("failed", "admin relay", 30, SWIFTDROP_REASON="refused"),
               entry("removed", "DEFAULT", 0), entry("forwarded", "", 5),
               entry("refused", "", 15, SWIFTDROP_REASON="[DEFAULT] spam-reject")]
    summary = summarize(entries)
    assert (summary["stored"], summary["failed"], summary["refused"], summary["forwarded"]) \
        == (2, 1, 1, 1)
    assert summary["destinations"] == {"DEFAULT": {"stored": 2, "failed": 0},
                                       "BILLING": {"stored": 1, "failed": 0},
                                       "admin relay": {"stored": 0, "failed": 1}}
    assert summary["last_failure"]["reason"] == "refused"
    assert summary["store_ms"] == {"p50": 10, "p99": 30}
    assert percentile(list(range(1, 101)), 0.99) == 99
    assert percentile([], 0.5) is None


@pytest.mark.usefixtures("journald")
def test_status_shows_each_webhook_s_posts_times_and_last_failures(swift, tmp_path):
    """Three messages, three answers: one delivered, one to retry, one refused for good."""
    container = f"status-webhook-{os.urandom(4).hex()}"
    swift.connection().put_container(container)
    with Receiver() as receiver:
        rig = Rig(swift, container, tmp_path, receiver.url)
        check_status_of_webhook(rig, receiver)


def check_status_of_webhook(rig, receiver):
    container = rig.container
    for _ in range(3):
        rig.store()
    receiver.script.extend([respond(204), respond(503), respond(406, b"no such user")])
    run = subprocess.run(swiftdrop_command("queue", "--config", str(rig.ini), "run", "--once"),
                         env={**os.environ, "JOURNAL_STREAM": "8:8"}, capture_output=True,
                         text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr
    rig.queue.close()
    own = f"SWIFTDROP_CONTAINER={container}"

    def webhook():
        return json.loads(status("--since", "10m", "--match", own, "--json"))["webhooks"]

    assert wait_for(lambda: sum(webhook().get("DEFAULT", {}).get("outcomes", {}).values()) == 3)
    [(section, per)] = webhook().items()
    assert section == "DEFAULT" and per["url"] == receiver.url
    assert (per["done"], per["retry"], per["failed"]) == (1, 1, 1)
    assert per["outcomes"] == {"2xx": 1, "5xx": 1, "4xx": 1}
    assert 0 <= per["post_ms"]["p50"] <= per["post_ms"]["p99"]
    reasons = [(failure["result"], failure["reason"]) for failure in per["last_failures"]]
    assert sorted(reasons) == [("failed", "HTTP 406 Not Acceptable: no such user"),
                               ("retry", "HTTP 503 Service Unavailable")]
    text = status("--since", "10m", "--match", own)
    assert f"webhook [DEFAULT] {receiver.url}" in text
    assert "done 1, retry 1, failed 1; POSTs: 2xx 1, 4xx 1, 5xx 1" in text
    assert "HTTP 406 Not Acceptable: no such user (failed)" in text
    # The filter's own figures are untouched by the worker's entries.
    assert json.loads(status("--since", "10m", "--match", own, "--json"))["stored"] == 0
