"""The Redis stream index (queue_index = redis-stream) against a real Swift, Redis and filter."""

import json
import signal
import smtplib
import subprocess
import threading
import time

import pytest

from swiftdrop import config as config_module
from swiftdrop.queue import LostLock
from swiftdrop.queue.stream import StreamQueue
from swiftdrop.stream_index import (
    IN_FLIGHT,
    StreamIndex,
    entry_fields,
    keys,
    reconcile,
    redis_client,
)
from swiftdrop.worker import WebhookConsumer, consume
from tests.support.faultproxy import FaultProxy
from tests.support.filterproc import FULL_REPLY, FilterProcess, run_swiftdrop
from tests.support.redisserver import RedisServer
from tests.test_service import send, stored_location
from tests.test_webhook import SECRET, Receiver, respond, verify

CONTAINERS = iter(range(10_000))


@pytest.fixture
def redis_server(tmp_path):
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        yield server


def stream_ini(path, swift, redis_url, **extra):
    container = f"stream-{next(CONTAINERS)}-{int(time.time())}"
    lines = ["[DEFAULT]", f"container = {container}", f"authurl = {swift.auth_url}",
             "user = test:tester", "key = testing", "create_container = true",
             "queue_index = redis-stream", f"queue_redis_url = {redis_url}",
             "queue_retry_delay = 0", "timeout = 5", "retries = 1",
             *(f"{key} = {value}" for key, value in extra.items())]
    path.write_text("\n".join(lines) + "\n")
    swift.connection().put_container(container)
    return path


@pytest.fixture
def ini(tmp_path, swift, redis_server):
    return stream_ini(tmp_path / "swiftdrop.ini", swift, redis_server.url)


def destination(ini):
    return config_module.load(str(ini)).catch_all


def queue_cli(ini, *args, group="default"):
    """``swiftdrop queue ... --group GROUP ARGS``; group None: no --group at all."""
    chosen = ("--group", group) if group is not None else ()
    return run_swiftdrop("queue", "--config", str(ini), *chosen, *args)


def old_name(number, age=3600):
    """A Maildir name the reconciler counts as settled (older than IN_FLIGHT)."""
    born = int(time.time() - age) + number
    return f"{born}.M{number:06d}P1Q{number}.mx.test,S=20"


def put_copy(swift, container, name, body=b"Subject: x\r\n\r\nbody\r\n", rcpt="a@example.com"):
    """A stored copy as the filter leaves it, without the announce."""
    swift.connection().put_object(container, "cur/" + name, body, headers={
        "X-Object-Meta-Mail-From": "sender@example.net", "X-Object-Meta-Rcpt-To": rcpt})


def entries(redis_url, container):
    client = redis_client(redis_url, 5)
    return client.xrange(keys(container)["stream"], "-", "+")


# -- the filter announces --------------------------------------------------------------


@pytest.fixture
def stream_filter(ini, tmp_path):
    with FilterProcess(ini, tmp_path, "--hostname", "mx1.example.test", "--log-target",
                       "stderr", *FULL_REPLY) as process:
        yield process


def test_the_filter_announces_each_copy_with_its_envelope(ini, stream_filter, redis_server,
                                                          swift):
    """One entry per stored copy, after the 201; a consumer needs no listing and no HEAD."""
    body = b"Message-ID: <s1@example.net>\r\nSubject: streamed\r\n\r\nhello\r\n"
    container, name = stored_location(send(stream_filter.address, "from@example.net",
                                           ["to@example.com", "cc@example.com"], body))
    [(_, fields)] = entries(redis_server.url, container)
    assert fields["name"] == name.removeprefix("cur/")
    assert fields["container"] == container
    assert fields["mail_from"] == "from@example.net"
    assert json.loads(fields["rcpt_to"]) == ["to@example.com", "cc@example.com"]
    assert fields["message_id"] == "<s1@example.net>"
    assert fields["size"] == str(len(body))
    assert fields["announced_by"] == "filter"
    assert json.loads(fields["verdicts"]) == {}
    claimed = json.loads(queue_cli(ini, "claim").stdout)
    assert claimed["name"] == fields["name"]
    assert (claimed["delivery"], claimed["redelivered"], claimed["possible_repeat"]) == \
        (1, False, False)
    assert claimed["rcpt_to"] == ["to@example.com", "cc@example.com"]
    done = queue_cli(ini, "finish", claimed["name"], "--token", claimed["token"],
                     "--state", "done")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done/" + claimed["name"]
    # Nothing moved in Swift: the body is where the filter put it, once.
    listed = [item["name"] for item in swift.connection().get_container(container)[1]]
    assert listed == [name]
    assert queue_cli(ini, "claim").returncode == 1  # nothing more for this group


def test_redis_away_costs_the_sender_nothing_and_the_reconciler_announces(
        ini, stream_filter, redis_server):
    """Redis stopped: 250 all the same, a warning; reconcile announces it once, whenever run."""
    redis_server.stop()
    container, name = stored_location(send(stream_filter.address, "from@example.net",
                                           ["to@example.com"], b"Subject: r\r\n\r\nx\r\n"))
    assert "not announced" in stream_filter.log()
    redis_server.start()
    assert entries(redis_server.url, container) == []
    # Younger than IN_FLIGHT, it is left to a filter that may still be announcing it ...
    assert "announced 0 " in queue_cli(ini, "reconcile").stdout
    # ... and announced by the run after that, at most once however often it runs.
    index = StreamIndex(redis_server.url, container)
    index.client.set(index.keys["watermark"], f"{time.time() - 2 * IN_FLIGHT:.3f}")
    later = time.time() + IN_FLIGHT + 1
    cfg = destination(ini)
    queue = StreamQueue(cfg)
    try:
        first = reconcile(index, queue.connection, clock=lambda: later,
                          envelope_of=lambda _: ({"mail_from": "from@example.net",
                                                  "rcpt_to": ["to@example.com"]}, 20, {}))
        again = reconcile(index, queue.connection, clock=lambda: later,
                          envelope_of=lambda _: pytest.fail("announced twice"))
    finally:
        queue.close()
    assert first == [name.removeprefix("cur/")] and again == []
    [(_, fields)] = entries(redis_server.url, container)
    assert fields["announced_by"] == "reconciler"
    # Stored before this Redis indexed anything: it cannot tell a new index
    # from one that lost its data, and marks it (a false alarm, never a silent repeat).
    assert fields["possible_repeat"] == "1"


def test_reconcile_reads_the_envelope_from_the_object(ini, swift, redis_server):
    """What the command announces comes from the copy's own metadata."""
    cfg = destination(ini)
    name = old_name(1)
    put_copy(swift, cfg.container, name, rcpt="one@example.com")
    StreamIndex(redis_server.url, cfg.container).client.set(
        keys(cfg.container)["origin"], f"{time.time() - 7200:.3f}")
    result = queue_cli(ini, "reconcile")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"announced {name}",
                                          "announced 1 copy(ies) the filter had not"]
    [(_, fields)] = entries(redis_server.url, cfg.container)
    assert (fields["mail_from"], json.loads(fields["rcpt_to"])) == \
        ("sender@example.net", ["one@example.com"])
    assert queue_cli(ini, "reconcile").stdout.startswith("announced 0 ")


# -- consumer groups, retries, leases, dead letters ------------------------------------


@pytest.fixture
def announced(ini, swift, redis_server):
    """Three copies in Swift, announced as the filter would; their names."""
    cfg = destination(ini)
    index = StreamIndex(redis_server.url, cfg.container)
    names = [old_name(number, age=60) for number in range(3)]
    for name in names:
        put_copy(swift, cfg.container, name, body=f"Subject: {name}\r\n\r\n".encode())
        index.announce({"name": name, "container": cfg.container, "size": "20",
                        "rcpt_to": '["a@example.com"]'})
    return names


def drain(queue):
    got = []
    while (claimed := queue.claim()) is not None:
        got.append(claimed)
    return got


def test_each_group_gets_every_message_and_none_competes(ini, announced):
    """Fan-out: a ticketing team and an archive each read all three, in order."""
    cfg = destination(ini)
    ticketing, archive = StreamQueue(cfg, "ticketing"), StreamQueue(cfg, "archive")
    try:
        first = drain(ticketing)
        assert [c.name for c in first] == announced
        assert [c.body for c in first] == [f"Subject: {n}\r\n\r\n".encode() for n in announced]
        for claimed in first:
            assert ticketing.finish(claimed, "done") == "done/"
        second = drain(archive)
        assert [c.name for c in second] == announced
        assert all(c.delivery == 1 and not c.redelivered for c in first + second)
        assert ticketing.stats()["done/"]["count"] == 3
        assert archive.stats()["processing/"]["count"] == 3
    finally:
        ticketing.close()
        archive.close()


def test_a_retry_is_a_marked_repeat_and_attempts_run_out_into_a_dead_letter(
        ini, swift, redis_server, tmp_path):
    cfg_path = stream_ini(tmp_path / "retry.ini", swift, redis_server.url,
                          queue_max_attempts=2)
    cfg = destination(cfg_path)
    name = old_name(7, age=60)
    put_copy(swift, cfg.container, name)
    StreamIndex(redis_server.url, cfg.container).announce(
        {"name": name, "container": cfg.container, "size": "20"})
    queue = StreamQueue(cfg)
    try:
        claimed = queue.claim()
        assert queue.finish(claimed, "retry", reason="exit status 75") == "retry/"
        again = queue.claim()
        assert (again.name, again.delivery, again.redelivered, again.attempts) == \
            (name, 2, True, 1)
        assert queue.finish(again, "retry", reason="exit status 75") == "failed/"
        assert queue.claim() is None
        [letter] = queue.dead_letters().values()
        assert letter["reason"] == "gave up after 2 attempts; last: exit status 75"
        assert letter["deliveries"] == 2
        dry = queue.replay("failed/")
        assert [(d.name, d.outcome) for d in dry] == [(name, "would replay")]
        assert queue.claim() is None  # a dry run changes nothing
        [replayed] = queue.replay("failed/", execute=True)
        assert replayed.outcome == "replayed"
        back = queue.claim()
        assert (back.name, back.delivery, back.replayed, back.attempts) == (name, 3, 1, 0)
        # The other groups skip a replay meant for this one.
        other = StreamQueue(cfg, "other")
        try:
            assert [c.name for c in drain(other)] == [name]
        finally:
            other.close()
    finally:
        queue.close()


def test_a_lease_that_ran_out_goes_to_the_next_claim_and_the_old_holder_is_refused(
        ini, swift, redis_server, tmp_path):
    cfg_path = stream_ini(tmp_path / "lease.ini", swift, redis_server.url, queue_lease=20)
    cfg = destination(cfg_path)
    name = old_name(9, age=60)
    put_copy(swift, cfg.container, name)
    StreamIndex(redis_server.url, cfg.container).announce(
        {"name": name, "container": cfg.container, "size": "20"})
    dead, alive = StreamQueue(cfg), StreamQueue(cfg)
    try:
        stale = dead.claim()
        dead.heartbeat.stop()  # the worker froze: nobody refreshes its lease
        group = dead.group_keys["leases"]
        dead.client.zadd(group, {stale.token.partition("/")[0]: 0})  # ... until it ran out
        taken = alive.claim()
        assert (taken.name, taken.delivery, taken.redelivered) == (name, 2, True)
        with pytest.raises(LostLock):
            dead.finish(stale, "done")
        assert alive.finish(taken, "done") == "done/"
    finally:
        dead.close()
        alive.close()


def test_finish_from_the_command_line_needs_the_claims_token(ini, announced):
    claimed = json.loads(queue_cli(ini, "claim").stdout)
    wrong = queue_cli(ini, "finish", claimed["name"], "--token", "1-0/someone", "--state",
                      "done")
    assert wrong.returncode == 1 and "not yours" in wrong.stderr
    right = queue_cli(ini, "finish", claimed["name"], "--token", claimed["token"],
                      "--state", "failed", "--reason", "bad input")
    assert right.returncode == 0, right.stderr
    listed = json.loads(queue_cli(ini, "replay", "--all", "--json").stdout)
    assert [(d["name"], d["failed_reason"]) for d in listed] == \
        [(claimed["name"], "bad input")]


def test_purge_deletes_a_body_once_every_group_is_done_with_it(ini, announced, swift):
    cfg = destination(ini)
    fast, slow = StreamQueue(cfg, "fast"), StreamQueue(cfg, "slow")
    try:
        for claimed in drain(fast):
            fast.finish(claimed, "done")
        first_of_slow = slow.claim()
        slow.finish(first_of_slow, "done")
        # Announced before the claims above: older than a millisecond (0 is refused).
        purge = queue_cli(ini, "purge", "--older-than", "0.001", "--execute", group="fast")
        assert purge.returncode == 0, purge.stderr
        assert f"deleted cur/{announced[0]}" in purge.stdout
        assert "deleted 1 object(s)" in purge.stdout
        listed = [item["name"] for item in swift.connection().get_container(cfg.container)[1]]
        assert listed == [f"cur/{name}" for name in announced[1:]]
        assert [c.name for c in drain(slow)] == announced[1:]
    finally:
        fast.close()
        slow.close()


def test_stats_count_this_groups_states(ini, announced):
    cfg = destination(ini)
    queue = StreamQueue(cfg)
    try:
        claimed = queue.claim()
        stats = json.loads(queue_cli(ini, "stats", "--json").stdout)
        assert {state: stats[state]["count"] for state in
                ("cur/", "processing/", "retry/", "done/", "failed/")} == \
            {"cur/": 2, "processing/": 1, "retry/": 0, "done/": 0, "failed/": 0}
        assert stats["oldest_cur_age_seconds"] >= 0
        queue.finish(claimed, "done")
    finally:
        queue.close()


def test_listing_only_options_are_refused_with_the_stream_index(ini):
    for args, says in ((("claim", "--dedup"), "--dedup needs the listing queue"),
                       (("replay", "--all", "--from", "done/"), "takes dead letters"),
                       (("purge", "--older-than", "1d", "--prefix", "cur/"), "--prefix done/")):
        result = queue_cli(ini, *args)
        assert result.returncode == 64 and says in result.stderr, result.stderr
    bad_group = queue_cli(ini, "stats", group="no spaces")
    assert bad_group.returncode == 64 and "consumer group" in bad_group.stderr


# -- Redis restarted, killed: the consumer's ledger ------------------------------------


def consume_all(queue, ledger):
    """Claim and finish everything; record each hand-over as the consumer sees it."""
    for claimed in drain(queue):
        ledger.append((claimed.name, claimed.delivery, claimed.redelivered))
        queue.finish(claimed, "done")


def verdict(ledger, names):
    """(lost, silent repeats, marked repeats) of a consumer that saw `ledger`.

    A repeat is marked if it says redelivered and a delivery above 1.
    """
    seen = set()
    silent = marked = 0
    for name, delivery, redelivered in ledger:
        if name in seen:
            marked += redelivered and delivery > 1
            silent += not (redelivered and delivery > 1)
        seen.add(name)
    return len(set(names) - seen), silent, marked


@pytest.mark.parametrize("persistence", ["append-only file", "none"])
def test_redis_restarted_or_killed_loses_nothing_and_repeats_nothing_silently(
        persistence, tmp_path, swift):
    with RedisServer(tmp_path / "redis", appendonly=persistence != "none") as server:
        cfg_path = stream_ini(tmp_path / "swiftdrop.ini", swift, server.url)
        cfg = destination(cfg_path)
        names = [old_name(number, age=7200) for number in range(6)]
        for name in names:
            put_copy(swift, cfg.container, name)
        # Half announced by the filter, half never (Redis away at the time).
        for name in names[:3]:
            StreamIndex(server.url, cfg.container).announce(
                {"name": name, "container": cfg.container, "size": "20"})
        queue = StreamQueue(cfg)
        ledger = []
        consume_all(queue, ledger)
        queue.close()
        server.kill()
        server.start()
        assert queue_cli(cfg_path, "reconcile").returncode == 0
        queue = StreamQueue(cfg)
        consume_all(queue, ledger)
        queue.close()
        lost, silent, marked = verdict(ledger, names)
        assert (lost, silent) == (0, 0)
        if persistence == "none":  # everything Redis knew is gone: the first three repeat
            assert marked == 3
        else:
            assert marked == 0 and len(ledger) == 6


def test_reconcile_says_when_redis_is_away(ini, redis_server):
    redis_server.stop()
    result = queue_cli(ini, "reconcile")
    assert result.returncode == 75
    assert "Redis" in result.stderr or "Connection" in result.stderr, result.stderr


def test_no_redis_url_is_a_config_error(tmp_path, swift):
    path = tmp_path / "bad.ini"
    path.write_text(f"[DEFAULT]\ncontainer = c\nauthurl = {swift.auth_url}\nuser = u\n"
                    "key = k\nqueue_index = redis-stream\n")
    result = run_swiftdrop("check", "--config-only", "--config", str(path))
    assert result.returncode == 78
    assert "[DEFAULT] queue_redis_url: is required" in result.stderr + result.stdout


# -- consumers in any language ---------------------------------------------------------


def test_a_plain_redis_client_consumes_as_the_docs_show(ini, announced, redis_server, swift):
    """redis-cli and redis-py, no swiftdrop code: the documented keys and fields are enough."""
    cfg = destination(ini)
    stream = f"swiftdrop:{{{cfg.container}}}:stream"
    cli = ["redis-cli", "-p", str(redis_server.port)]
    assert subprocess.run([*cli, "XGROUP", "CREATE", stream, "billing", "0", "MKSTREAM"],
                          capture_output=True, text=True, check=True).stdout.strip() == "OK"
    read = subprocess.run([*cli, "--no-raw", "XREADGROUP", "GROUP", "billing", "worker-1",
                           "COUNT", "1", "STREAMS", stream, ">"],
                          capture_output=True, text=True, check=True).stdout
    assert f'"{announced[0]}"' in read
    r = redis_client(redis_server.url, 5)
    _, taken, _ = r.xautoclaim(stream, "billing", "worker-2", 0, count=1)  # worker-1 "died"
    [(entry_id, fields)] = taken
    [pending] = r.xpending_range(stream, "billing", entry_id, entry_id, 1)
    assert (fields["name"], pending["times_delivered"]) == (announced[0], 2)
    _, body = swift.connection().get_object(fields["container"], "cur/" + fields["name"])
    assert body == f"Subject: {announced[0]}\r\n\r\n".encode()
    assert r.xack(stream, "billing", entry_id) == 1
    # purge waits for the plain client's group like any other.
    ours = StreamQueue(cfg)
    try:
        for claimed in drain(ours):
            ours.finish(claimed, "done")
    finally:
        ours.close()
    deleted = [item["name"] for item in ours.purge(0, execute=True)]
    assert deleted == [f"cur/{announced[0]}"]


def test_run_hands_each_message_to_the_command_with_the_groups_counts(ini, announced, tmp_path):
    out = tmp_path / "seen"
    result = queue_cli(ini, "run", "--once", "--", "sh", "-c",
                       f'echo "$SWIFTDROP_NAME $SWIFTDROP_DELIVERY $SWIFTDROP_REDELIVERED" '
                       f'>> {out}', group="tickets")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"done": 3}
    assert out.read_text().splitlines() == [f"{name} 1 0" for name in announced]


def test_prometheus_stats_show_the_announce_lag(ini, swift, redis_server):
    """A copy nobody announced shows as lag, and the reconciler's run clears it."""
    cfg = destination(ini)
    name = old_name(3, age=1800)
    put_copy(swift, cfg.container, name)
    exposition = queue_cli(ini, "stats", "--format", "prometheus", group="ops").stdout
    lag = [line for line in exposition.splitlines()
           if line.startswith("swiftdrop_index_announce_lag_seconds{")]
    assert len(lag) == 1 and "group=" not in lag[0]  # the index's, whichever group asks
    assert 1790 < float(lag[0].rsplit(" ", 1)[1]) < 1900
    assert 'swiftdrop_queue_messages{destination="DEFAULT",container=' \
           f'"{cfg.container}",group="ops",state="cur"}} 0' in exposition
    assert queue_cli(ini, "reconcile").returncode == 0
    exposition = queue_cli(ini, "stats", "--format", "prometheus", group="ops").stdout
    assert f'swiftdrop_index_announce_lag_seconds{{destination="DEFAULT",container=' \
           f'"{cfg.container}"}} 0' in exposition


def test_a_filter_killed_between_swifts_201_and_the_announce_loses_nothing(
        tmp_path, swift, redis_server):
    """Swift stores the copy, the filter dies before it hears so: the reconciler announces it."""
    with FaultProxy(swift.port) as proxy:
        ini = stream_ini(tmp_path / "swiftdrop.ini", swift, redis_server.url)
        ini.write_text(ini.read_text().replace(f"authurl = {swift.auth_url}",
                                               f"authurl = {proxy.auth_url}"))
        cfg = destination(ini)
        with FilterProcess(ini, tmp_path, "--hostname", "mx1.example.test", "--log-target",
                           "stderr", *FULL_REPLY) as process:
            rule = proxy.add("PUT", r"/cur/", "lose_answer",
                             then=lambda: process.stop(signal.SIGKILL))
            with pytest.raises(smtplib.SMTPServerDisconnected):  # no reply: the sender retries
                send(process.address, "from@example.net", ["to@example.com"],
                     b"Subject: killed\r\n\r\nx\r\n")
            assert rule.passed == 1
        stored = [item["name"] for item in swift.connection().get_container(cfg.container)[1]]
        assert len(stored) == 1 and entries(redis_server.url, cfg.container) == []
        with FilterProcess(ini, tmp_path, "--hostname", "mx1.example.test", "--log-target",
                           "stderr", *FULL_REPLY) as process:  # the sender tries again
            assert send(process.address, "from@example.net", ["to@example.com"],
                        b"Subject: killed\r\n\r\nx\r\n")[0] == 250
    index = StreamIndex(redis_server.url, cfg.container)
    queue = StreamQueue(cfg, connection=swift.connection())  # the proxy is gone
    try:
        later = time.time() + IN_FLIGHT + 1
        announced = reconcile(index, queue.connection, clock=lambda: later,
                              envelope_of=lambda _: ({"mail_from": "from@example.net",
                                                      "rcpt_to": ["to@example.com"]}, 20, {}))
        assert announced == [stored[0].removeprefix("cur/")]
        names = {fields["name"] for _, fields in entries(redis_server.url, cfg.container)}
        assert len(names) == 2 and stored[0].removeprefix("cur/") in names
        assert sorted(c.name for c in drain(queue)) == sorted(names)
    finally:
        queue.close()


def test_check_names_the_stream_index_and_warns_when_it_does_not_answer(
        ini, announced, redis_server):
    result = run_swiftdrop("check", "--config", str(ini))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 objects, 3 entries in its stream index" in result.stdout
    redis_server.stop()  # mail is still stored: the filter must be able to start
    result = run_swiftdrop("check", "--config", str(ini))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning: its stream index does not answer" in result.stdout


def test_the_webhook_posts_from_the_stream_and_a_retry_is_a_marked_redelivery(
        tmp_path, swift, redis_server):
    """The webhook is a consumer like any other: its claims and retries are the stream's."""
    with Receiver() as receiver:
        ini = stream_ini(tmp_path / "swiftdrop.ini", swift, redis_server.url,
                         webhook_url=receiver.url, webhook_secret=SECRET)
        cfg = destination(ini)
        name = old_name(5, age=60)
        put_copy(swift, cfg.container, name, body=b"Subject: hooked\r\n\r\nhello\r\n")
        StreamIndex(redis_server.url, cfg.container).announce(entry_fields(
            name, cfg.container, size=27, envelope={"mail_from": "sender@example.net",
                                                    "rcpt_to": ["a@example.com"]}))
        receiver.script.append(respond(500, b"database down"))
        queue = StreamQueue(cfg, "hooks")
        try:
            outcome = consume(queue, WebhookConsumer(cfg, cfg.webhook), threading.Event(),
                              once=True)
        finally:
            queue.close()
        assert outcome == {"retry": 1, "done": 1}
        first, second = receiver.requests
        for request in (first, second):
            verify(request)
        assert first.headers["X-SwiftDrop-Id"] == second.headers["X-SwiftDrop-Id"] == \
            f"{cfg.container}/{name}"
        assert (second.headers["X-SwiftDrop-Delivery"],
                second.headers["X-SwiftDrop-Redelivered"]) == ("2", "1")
        assert second.json["message"]["subject"] == "hooked"


def test_the_filter_refuses_a_store_timeout_the_reconciler_cannot_wait_for(ini, tmp_path):
    process = FilterProcess(ini, tmp_path, "--store-timeout", str(int(IN_FLIGHT)),
                            "--log-target", "stderr")
    with pytest.raises(RuntimeError, match="exited with 78"):
        process.start()
    assert "--store-timeout 120 must be below 120 s with a stream index" in process.log()


def test_stats_and_recover_without_a_group_cover_every_group_and_create_none(
        ini, announced, redis_server, tmp_path):
    """The role's timers name no group: they must see each team's, and invent none.

    A group nobody consumes would keep every body from purge, which waits for all groups.
    """
    cfg = destination(ini)
    client = redis_client(redis_server.url, 5)
    stream = keys(cfg.container)["stream"]
    assert queue_cli(ini, "stats", "--json", group=None).returncode == 0
    assert queue_cli(ini, "recover", group=None).returncode == 0
    assert client.xinfo_groups(stream) == []  # nobody has read the stream: no group
    archive, tickets = StreamQueue(cfg, "archive"), StreamQueue(cfg, "tickets")
    try:
        held = archive.claim()
        archive.heartbeat.stop()  # the worker died holding it ...
        client.zadd(archive.group_keys["leases"], {held.token.partition("/")[0]: 0})
        assert len(drain(tickets)) == 3  # another team holds all three
        stats = json.loads(queue_cli(ini, "stats", "--json", group=None).stdout)
        assert sorted(stats["groups"]) == ["archive", "tickets"]
        assert stats["groups"]["archive"]["processing/"]["count"] == 1
        assert stats["groups"]["tickets"]["processing/"]["count"] == 3
        recovered = queue_cli(ini, "recover", group=None)
        assert recovered.stdout.splitlines() == [
            f"{held.name}: returned to retry for group archive (its lease ran out)"]
        assert [g["name"] for g in client.xinfo_groups(stream)] == ["archive", "tickets"]
        again = archive.claim()
        assert (again.name, again.delivery) == (held.name, 2)
        text = queue_cli(ini, "stats", group=None).stdout
        assert "group archive:" in text and "group tickets:" in text
    finally:
        archive.close()
        tickets.close()
