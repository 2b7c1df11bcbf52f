"""container_shards: one destination's mail over several containers, from ingest to the queue.

Against the real Swift (and the real filter for ingest): every message is
in the container its name hashes to, and the queue's commands cover all of
them as one queue.
"""

import collections
from email.message import EmailMessage
import json
import subprocess
import threading
import time
import urllib.request

import pytest

from swiftdrop import config as config_module
from swiftdrop.queue import MailQueue
from swiftdrop.queue import connection as connection_module
from swiftdrop.queue.sharded import ShardedQueue, merge_figures
from swiftdrop.queue_commands import make_queue
from swiftdrop.shards import search_order, shard_for, shard_index, shard_names
from swiftdrop.status import render, summarize
from swiftdrop.worker import WebhookConsumer, consume
from tests.support.filterproc import FULL_REPLY, FilterProcess, run_swiftdrop, swiftdrop_command
from tests.support.ports import reserve_port
from tests.test_metrics import scrape, value
from tests.test_queue import ACCOUNT_KEYS
from tests.test_service import send, stored_location
from tests.test_webhook import Receiver
from tests.test_webhook import make_ini as webhook_ini

CONTAINER_COUNTER = iter(range(1000))


def sharded_ini(path, swift, container, shards, extra=(), **queue):
    """An ini whose catch-all is `container` over `shards` containers; `extra`: more lines."""
    lines = ["[DEFAULT]", "recipient = DEFAULT", f"container = {container}",
             f"authurl = {swift.auth_url}", "user = test:tester", "key = testing",
             "create_container = true", *extra]
    if shards is not None:
        lines.append(f"container_shards = {shards}")
    lines += [f"{key if key in ACCOUNT_KEYS else 'queue_' + key} = {value}"
              for key, value in queue.items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o640)
    return path


def fresh_container():
    return f"shards-{next(CONTAINER_COUNTER)}-{time.monotonic_ns()}"


def checked(ini):
    """``swiftdrop check`` creates every shard container; its lines, one per container."""
    result = run_swiftdrop("check", "--config", str(ini))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


def names_of(count, start=1_700_000_000):
    return [f"{start + number}.M{number:06d}P7Q{number}.mx.test,S=10" for number in range(count)]


def store(swift, destination, names):
    """Put each name into cur/ of the shard it hashes to, as the filter does."""
    connection = swift.connection()
    for name in names:
        container = shard_for(destination, "cur/" + name).container
        connection.put_object(container, "cur/" + name, f"Subject: {name}\r\n\r\nbody\r\n")


def names_in(swift, container, prefix):
    listing = swift.connection().get_container(container, prefix=prefix, full_listing=True)[1]
    return sorted(item["name"][len(prefix):] for item in listing)


def test_shard_0_is_the_container_itself_and_a_name_always_hashes_to_the_same_shard():
    assert shard_names("mail", 1) == ("mail",)
    assert shard_names("mail", 4) == ("mail", "mail-1", "mail-2", "mail-3")
    name = "1767225600.M042137P3141Q17.mx1.example.com,S=2048"
    assert shard_index("cur/" + name, 4) == shard_index(name, 4) == shard_index(name, 4)
    assert shard_index(name, 1) == 0
    order = search_order(name, 4)
    assert order[0] == shard_index(name, 4) and sorted(order) == [0, 1, 2, 3]
    spread = collections.Counter(shard_index(each, 4) for each in names_of(400))
    assert set(spread) == {0, 1, 2, 3} and min(spread.values()) > 60


@pytest.mark.parametrize("value", ["0", "abc", "-1", "2.5"])
def test_a_bad_container_shards_is_refused_naming_file_section_and_key(tmp_path, value):
    ini = tmp_path / "swiftdrop.ini"
    ini.write_text("[DEFAULT]\nrecipient = DEFAULT\ncontainer = c\nauthurl = http://127.0.0.1/\n"
                   f"user = u\nkey = k\n[P]\nrecipient = p@example.com\n"
                   f"container_shards = {value}\n")
    with pytest.raises(config_module.ConfigError) as raised:
        config_module.load(str(ini))
    assert [(p.path, p.section, p.key) for p in raised.value.problems] == [
        (str(ini), "P", "container_shards")]
    result = run_swiftdrop("check", "--config-only", "--config", str(ini))
    assert result.returncode == 78 and "[P] container_shards:" in result.stderr


def test_container_shards_is_inherited_from_default_and_one_unless_given(tmp_path, swift):
    ini = sharded_ini(tmp_path / "swiftdrop.ini", swift, "c", 3)
    ini.write_text(ini.read_text() + "[P]\nrecipient = p@example.com\ncontainer = p\n"
                   "[Q]\nrecipient = q@example.com\ncontainer = q\ncontainer_shards = 1\n")
    default, named, single = config_module.load(str(ini)).destinations
    assert (default.container_shards, named.container_shards, single.container_shards) \
        == (3, 3, 1)
    plain = sharded_ini(tmp_path / "plain.ini", swift, "c", None)
    assert config_module.load(str(plain)).catch_all.container_shards == 1
    result = run_swiftdrop("check", "--config-only", "--config", str(ini))
    assert [line.split(" in ")[0] for line in result.stdout.splitlines()] == [
        "ok   [DEFAULT] container c", "ok   [DEFAULT] container c-1",
        "ok   [DEFAULT] container c-2", "ok   [P] container p", "ok   [P] container p-1",
        "ok   [P] container p-2", "ok   [Q] container q"]


def test_sections_of_one_container_must_agree_on_its_shards(tmp_path, swift):
    ini = sharded_ini(tmp_path / "swiftdrop.ini", swift, "c", 3)
    ini.write_text(ini.read_text() + "[P]\nrecipient = p@example.com\ncontainer_shards = 2\n"
                   "[Q]\nrecipient = q@example.com\ncontainer = other\ncontainer_shards = 2\n")
    with pytest.raises(config_module.ConfigError) as raised:
        config_module.load(str(ini))
    [problem] = raised.value.problems
    assert (problem.section, problem.key) == ("P", "container_shards")
    assert "differs from [DEFAULT]'s, which stores into the same container 'c'" in \
        problem.problem


@pytest.mark.slow  # the real filter
def test_the_filter_spreads_the_mail_over_the_shards_byte_for_byte(swift, tmp_path):
    container = fresh_container()
    ini = sharded_ini(tmp_path / "swiftdrop.ini", swift, container, 4,
                      extra=["retention = 90d"])
    assert len(checked(ini)) == 4
    destination = config_module.load(str(ini)).catch_all
    sent = {}
    metrics_port = reserve_port()
    with FilterProcess(ini, tmp_path, "--hostname", "mx.test", "--log-target", "stderr",
                       "--metrics-listen", f"127.0.0.1:{metrics_port}",
                       *FULL_REPLY) as process:
        for number in range(24):
            body = f"Subject: {number}\r\n\r\n.dot and NUL \0 in {number}\r\n".encode()
            where, name = stored_location(send(process.address, "s@origin.test",
                                               [f"r{number}@example.com"], body))
            assert where == shard_for(destination, name).container
            sent[name] = (where, body)
        text = scrape(f"http://127.0.0.1:{metrics_port}/metrics")
    per_container = collections.Counter(where for where, _ in sent.values())
    assert set(per_container) == set(shard_names(container, 4))
    assert [value(text, "swiftdrop_shard_copies_total", destination="DEFAULT", shard=str(k))
            for k in range(4)] == [per_container[each] for each in shard_names(container, 4)]
    assert value(text, "swiftdrop_copies_total", destination="DEFAULT", result="stored") == 24
    connection = swift.connection()
    for name, (where, body) in sent.items():
        headers, stored = connection.get_object(where, name)
        assert stored == body
        assert headers["x-object-meta-rcpt-to"].startswith("r")
        assert "x-delete-at" in headers  # every shard keeps the destination's retention
    total = sum(int(connection.head_container(each)["x-container-object-count"])
                for each in shard_names(container, 4))
    assert total == len(sent)


@pytest.fixture
def sharded(tmp_path, swift, request):
    """(ini, destination) of a fresh container over 3 shards, every shard created."""
    marker = request.node.get_closest_marker("queue")
    ini = sharded_ini(tmp_path / "swiftdrop.ini", swift, fresh_container(), 3,
                      **(marker.kwargs if marker else {}))
    checked(ini)
    return ini, config_module.load(str(ini)).catch_all


def test_claim_and_finish_take_every_shard_s_mail_from_the_shard_it_is_in(swift, sharded):
    _, destination = sharded
    names = names_of(12)
    store(swift, destination, names)
    queue = make_queue(destination, None)
    assert isinstance(queue, ShardedQueue)
    claimed_from = collections.Counter()
    try:
        while (claimed := queue.claim()) is not None:
            expected = shard_for(destination, claimed.name).container
            assert claimed.container == expected
            assert queue.holder(claimed).container == expected
            assert names_in(swift, expected, "processing/") == [claimed.name]
            assert queue.finish(claimed, "done") == "done/"
            claimed_from[claimed.container] += 1
    finally:
        queue.close()
    assert sum(claimed_from.values()) == len(names) and len(claimed_from) == 3
    for container in shard_names(destination.container, 3):
        assert names_in(swift, container, "cur/") == []
        assert names_in(swift, container, "done/") == sorted(
            name for name in names if shard_for(destination, name).container == container)


def test_the_cli_claims_finishes_and_counts_across_the_shards(swift, sharded):
    ini, destination = sharded
    names = names_of(6)
    store(swift, destination, names)
    claim = subprocess.run(swiftdrop_command("queue", "--config", str(ini), "claim"),
                           capture_output=True, text=True, check=True)
    claimed = json.loads(claim.stdout)
    assert claimed["container"] == shard_for(destination, claimed["name"]).container
    finish = subprocess.run(swiftdrop_command("queue", "--config", str(ini), "finish",
                                              claimed["name"], "--token", claimed["token"],
                                              "--state", "failed", "--reason", "no mailbox"),
                            capture_output=True, text=True, check=True)
    assert finish.stdout.strip() == f"failed/{claimed['name']}"
    script = "cat >/dev/null; echo \"$SWIFTDROP_CONTAINER $SWIFTDROP_NAME\" >&2"
    run = subprocess.run(swiftdrop_command("queue", "--config", str(ini), "run", "--once",
                                           "--", "sh", "-c", script),
                         capture_output=True, text=True, check=True)
    assert json.loads(run.stdout.splitlines()[-1]) == {"done": 5}
    handed = dict(reversed(line.split(" ", 1)) for line in run.stderr.splitlines()
                  if line.count(" ") == 1)
    assert {name: shard_for(destination, name).container for name in handed} == handed
    assert len(handed) == 5
    stats = json.loads(subprocess.run(
        swiftdrop_command("queue", "--config", str(ini), "stats", "--json"),
        capture_output=True, text=True, check=True).stdout)
    assert (stats["cur/"]["count"], stats["done/"]["count"], stats["failed/"]["count"]) \
        == (0, 5, 1)
    containers = stats["containers"]
    assert list(containers) == list(shard_names(destination.container, 3))
    assert sum(figures["done/"]["count"] for figures in containers.values()) == 5
    failed_in = shard_for(destination, claimed["name"]).container
    assert containers[failed_in]["failed/"]["count"] == 1
    prometheus = subprocess.run(
        swiftdrop_command("queue", "--config", str(ini), "stats", "--format", "prometheus"),
        capture_output=True, text=True, check=True).stdout
    done_lines = [line for line in prometheus.splitlines()
                  if line.startswith("swiftdrop_queue_messages{") and 'state="done"' in line]
    assert len(done_lines) == 3
    assert sum(float(line.rsplit(" ", 1)[1]) for line in done_lines) == 5
    assert prometheus.count("# TYPE swiftdrop_queue_messages gauge") == 1


@pytest.mark.queue(retry_delay=0, timeout=2, retries=1)
def test_recover_purge_and_replay_act_on_every_shard(swift, sharded):
    _, destination = sharded
    names = names_of(9)
    store(swift, destination, names)
    connection = swift.connection()
    # a crash between copy and delete, in each shard: recover resolves them all
    for name in names:
        container = shard_for(destination, name).container
        connection.put_object(container, "processing/" + name, None,
                              headers={"X-Copy-From": f"/{container}/cur/{name}"})
    queue = make_queue(destination, None)
    try:
        actions = list(queue.recover())
        assert sorted(name for what, name in actions if what == "removed leftover cur/") \
            == sorted(names)
        while (claimed := queue.claim()) is not None:
            queue.finish(claimed, "failed", reason="refused")
        assert queue.stats()["failed/"]["count"] == len(names)
        first, *rest = names
        [letter] = queue.replay("failed/", [first], execute=True)
        assert (letter.name, letter.outcome) == (first, "replayed")
        assert names_in(swift, shard_for(destination, first).container, "cur/") == [first]
        [missing] = queue.replay("failed/", ["1699999999.M000000P7Q0.mx.test,S=10"])
        assert missing.outcome == "not found"
        replayed = queue.replay("failed/", execute=True)
        assert sorted(letter.name for letter in replayed) == sorted(rest)
        while (claimed := queue.claim()) is not None:
            queue.finish(claimed, "done")
    finally:
        queue.close()
    later = ShardedQueue(destination, lambda shard: MailQueue(
        shard, clock=lambda: time.time() + 3600))
    try:
        assert len(later.purge(60, "done/")) == len(names)
        later.purge(60, "done/", execute=True)
    finally:
        later.close()
    for container in shard_names(destination.container, 3):
        assert names_in(swift, container, "") == []


def test_raising_the_shards_leaves_waiting_mail_where_the_queue_finds_it(swift, tmp_path):
    container = fresh_container()
    single = sharded_ini(tmp_path / "one.ini", swift, container, None)
    checked(single)
    before = config_module.load(str(single)).catch_all
    waiting = names_of(10)
    store(swift, before, waiting)
    assert names_in(swift, container, "cur/") == sorted(waiting)
    raised = sharded_ini(tmp_path / "three.ini", swift, container, 3)
    checked(raised)
    after = config_module.load(str(raised)).catch_all
    new = names_of(10, start=1_700_001_000)
    store(swift, after, new)
    queue = make_queue(after, None)
    claimed = []
    try:
        while (message := queue.claim()) is not None:
            claimed.append((message.name, message.container))
            queue.finish(message, "done")
    finally:
        queue.close()
    assert sorted(name for name, _ in claimed) == sorted(waiting + new)
    assert {container for name, container in claimed if name in waiting} == {container}
    assert len(names_in(swift, container, "done/")) >= len(waiting)


def test_stats_of_the_shards_add_up_counts_and_take_the_longest_wait():
    one = {"cur/": {"count": 2, "bytes": 20}, "oldest_cur_age_seconds": 5.0}
    two = {"cur/": {"count": 1, "bytes": 7}, "oldest_cur_age_seconds": None}
    assert merge_figures([one, two]) == {"cur/": {"count": 3, "bytes": 27},
                                         "oldest_cur_age_seconds": 5.0}
    groups = [{"groups": {"a": {"done/": {"count": 1}}}, "announce_lag_seconds": 0},
              {"groups": {"a": {"done/": {"count": 2}}, "b": {"done/": {"count": 4}}},
               "announce_lag_seconds": 3}]
    assert merge_figures(groups) == {"groups": {"a": {"done/": {"count": 3}},
                                                "b": {"done/": {"count": 4}}},
                                     "announce_lag_seconds": 3}


def test_dedup_finds_a_repeat_stored_in_another_shard(swift, sharded):
    _, destination = sharded
    names = names_of(12)
    first = names[0]
    second = next(name for name in names
                  if shard_for(destination, name).container
                  != shard_for(destination, first).container)
    body = b"Message-ID: <same@x>\r\n\r\nsame\r\n"
    connection = swift.connection()
    for name in (first, second):
        connection.put_object(shard_for(destination, name).container, "cur/" + name, body,
                              headers={"X-Object-Meta-Message-Id": "<same@x>"})
    queue = make_queue(destination, None)
    try:
        claimed = queue.claim(dedup=True)
        queue.finish(claimed, "done")
        assert queue.claim(dedup=True) is None
    finally:
        queue.close()
    repeat = second if claimed.name == first else first
    headers = connection.head_object(shard_for(destination, repeat).container, "done/" + repeat)
    assert headers["x-object-meta-duplicate-of"] == claimed.name


@pytest.mark.slow  # the real filter and Redis
def test_the_stream_index_announces_each_copy_in_its_shard_s_stream(swift, tmp_path,
                                                                   redis_url):
    container = fresh_container()
    ini = sharded_ini(tmp_path / "swiftdrop.ini", swift, container, 3, index="redis-stream",
                      redis_url=redis_url, retry_delay=0)
    checked(ini)
    destination = config_module.load(str(ini)).catch_all
    stored = {}
    with FilterProcess(ini, tmp_path, "--hostname", "mx.test", "--log-target", "stderr",
                       *FULL_REPLY) as process:
        for number in range(12):
            where, name = stored_location(send(process.address, "s@origin.test",
                                               ["r@example.com"], f"Subject: {number}\r\n\r\n"))
            stored[name.removeprefix("cur/")] = where
    cli = ("queue", "--config", str(ini), "--group", "default")
    first = json.loads(subprocess.run(swiftdrop_command(*cli, "claim"), capture_output=True,
                                      text=True, check=True).stdout)
    assert first["container"] == stored[first["name"]]
    finish = subprocess.run(swiftdrop_command(*cli, "finish", first["name"], "--token",
                                              first["token"], "--state", "done"),
                            capture_output=True, text=True, check=True)
    assert finish.stdout.strip() == f"done/{first['name']}"
    queue = make_queue(destination, "default")
    got = {first["name"]: first["container"]}
    try:
        while (claimed := queue.claim()) is not None:
            got[claimed.name] = claimed.container
            assert claimed.entry["container"] == claimed.container
            queue.finish(claimed, "done")
    finally:
        queue.close()
    assert got == stored and len(set(got.values())) > 1
    stats = json.loads(subprocess.run(
        swiftdrop_command("queue", "--config", str(ini), "--group", "default", "stats",
                          "--json"), capture_output=True, text=True, check=True).stdout)
    assert stats["done/"]["count"] == 12
    assert sum(each["done/"]["count"] for each in stats["containers"].values()) == 12
    reconcile = subprocess.run(swiftdrop_command("queue", "--config", str(ini), "reconcile"),
                               capture_output=True, text=True, check=True)
    assert reconcile.stdout.splitlines()[-1].startswith("announced 0 ")


def test_status_counts_each_container_a_destination_stored_into():
    """Pure logic: a stored entry names a container per section, in the same order."""
    def stored(sections, containers):
        return {"SWIFTDROP_RESULT": "stored", "SWIFTDROP_SECTION": sections,
                "SWIFTDROP_CONTAINER": containers, "SWIFTDROP_DURATION_MS": "5"}

    summary = summarize([stored("DEFAULT BILLING", "mail-2 billing"), stored("DEFAULT", "mail"),
                         stored("DEFAULT", "mail-2")])
    assert summary["containers"] == {"mail-2": {"section": "DEFAULT", "stored": 2},
                                     "billing": {"section": "BILLING", "stored": 1},
                                     "mail": {"section": "DEFAULT", "stored": 1}}
    for per in summary["containers"].values():
        per["per_second"] = per["stored"] / 10
    lines = render({"since": "2026-12-04T00:00:00", **summary, "socket": "unknown",
                    "webhooks": {}}).splitlines()
    at = lines.index("  [DEFAULT] stored 3, failed 0")
    assert lines[at + 1:at + 3] == ["    mail: stored 1, 0.1/s", "    mail-2: stored 2, 0.2/s"]
    assert "  [BILLING] stored 1, failed 0" in lines  # one container: no line of its own
    assert not any(line.startswith("    billing") for line in lines)


def test_the_webhook_posts_each_shard_s_mail_naming_and_linking_its_container(swift, tmp_path):
    container = fresh_container()
    with Receiver() as receiver:
        ini = webhook_ini(tmp_path / "swiftdrop.ini", swift, container, receiver.url,
                          container_shards="3", webhook_inline_limit="1024",
                          create_container="true")
        checked(ini)
        destination = config_module.load(str(ini)).catch_all
        big = b"x" * 5000
        message = EmailMessage()
        message["Subject"] = "linked"
        message.set_content("see attached\n")
        message.add_attachment(big, maintype="application", subtype="octet-stream",
                               filename="big.bin")
        names = names_of(9)
        for name in names:
            swift.connection().put_object(shard_for(destination, name).container, "cur/" + name,
                                          message.as_bytes())
        queue = make_queue(destination, None)
        try:
            outcomes = consume(queue, WebhookConsumer(destination, destination.webhook),
                               threading.Event(), once=True)
        finally:
            queue.close()
        assert outcomes == {"done": len(names)}
        posted = {request.json["name"]: request for request in receiver.requests}
    assert set(posted) == set(names)
    for name, request in posted.items():
        expected = shard_for(destination, name).container
        assert request.headers["X-SwiftDrop-Id"] == f"{expected}/{name}"
        assert request.json["container"] == expected
        [linked] = request.json["message"]["attachments"]
        assert f"/{expected}/attachments/" in linked["url"]
        with urllib.request.urlopen(linked["url"], timeout=10) as response:
            assert response.read() == big


def test_the_shards_of_a_queue_share_one_token_and_renew_it_once_refused(swift, sharded,
                                                                        monkeypatch):
    _, destination = sharded
    store(swift, destination, names_of(9))
    asked = []
    real = connection_module.authenticate
    monkeypatch.setattr(connection_module, "authenticate",
                        lambda *args: asked.append(args) or real(*args))
    queue = make_queue(destination, None)
    try:
        for _ in range(3):  # a claim from each shard in turn
            queue.finish(queue.claim(), "done")
        assert len(asked) == 1
        for shard in queue.shards:  # the token runs out: Swift refuses it (401)
            shard.connection.token = shard.connection._taken = "AUTH_tk-run-out"
        queue.shards[0].connection._shared.token = "AUTH_tk-run-out"
        while (claimed := queue.claim()) is not None:
            queue.finish(claimed, "done")
        assert len(asked) == 2
    finally:
        queue.close()
    assert sum(len(names_in(swift, each, "done/"))
               for each in shard_names(destination.container, 3)) == 9
