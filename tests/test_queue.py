"""swiftdrop queue against the real Swift (and a real Redis for the strict lock)."""

import collections
import ctypes
import hashlib
import json
import os
import signal
import subprocess
import threading
import time

import pytest
import swiftclient

from swiftdrop import config as config_module
from swiftdrop.locks import RedisLock, SwiftLock
from swiftdrop.queue import MailQueue
from swiftdrop.worker import work
from tests.support.filterproc import run_swiftdrop, swiftdrop_command
from tests.support.ports import reserve_port

CONTAINER_COUNTER = iter(range(1000))
# Keys of the account, not of the queue, that a test's queue marker may set:
# recover waits one whole request's time (timeout * (retries + 1) + back-off)
# before it acts, and a lease must hold one (swiftdrop.lease).
ACCOUNT_KEYS = ("timeout", "retries")


@pytest.fixture(params=["swift", "redis"])
def lock_kind(request):
    return request.param


def make_ini(path, swift, container, lock_kind="swift", redis_url=None, **queue):
    lines = ["[DEFAULT]", f"container = {container}", f"authurl = {swift.auth_url}",
             "user = test:tester", "key = testing", "create_container = true",
             f"queue_lock = {lock_kind}"]
    if lock_kind == "redis":
        lines.append(f"queue_redis_url = {redis_url}")
    lines += [f"{key if key in ACCOUNT_KEYS else 'queue_' + key} = {value}"
              for key, value in queue.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def ini(request, tmp_path, swift):
    """An ini for a fresh container; the queue settings come from the test's marker."""
    kind = request.getfixturevalue("lock_kind") if "lock_kind" in request.fixturenames \
        else "swift"
    redis_url = request.getfixturevalue("redis_url") if kind == "redis" else None
    marker = request.node.get_closest_marker("queue")
    container = f"queue-{next(CONTAINER_COUNTER)}-{kind}"
    swift.connection().put_container(container)
    return make_ini(tmp_path / "swiftdrop.ini", swift, container, kind, redis_url,
                    **(marker.kwargs if marker else {}))


def queue_for(ini, **kwargs):
    return MailQueue(config_module.load(str(ini)).catch_all, **kwargs)


def store(queue, count, start=1_700_000_000, message_id=None, body=None):
    """Put messages into cur/ as the filter would name them; return their names."""
    names = []
    for number in range(count):
        name = f"{start + number}.M{number % 1_000_000:06d}P1Q{number}.mx.test,S=10"
        content = body or f"Subject: {number}\r\n\r\nmessage {number}\r\n".encode()
        headers = {"X-Object-Meta-Dedup-Md5": hashlib.md5(content).hexdigest()}
        if message_id:
            headers["X-Object-Meta-Message-Id"] = message_id
        queue.connection.put_object(queue.container, "cur/" + name, content, headers=headers)
        names.append(name)
    return names


def names_under(queue, prefix):
    return sorted(item["name"][len(prefix):] for item in queue.listing(prefix))


def test_claim_takes_an_old_message_and_finish_moves_it(ini):
    queue = queue_for(ini)
    names = store(queue, 3)
    claimed = queue.claim()
    assert claimed.name in names
    assert claimed.body.startswith(b"Subject: ")
    assert claimed.metadata["claimed-by"] == queue.worker
    assert names_under(queue, "processing/") == [claimed.name]
    assert claimed.name not in names_under(queue, "cur/")
    assert queue.finish(claimed, "done") == "done/"
    assert names_under(queue, "done/") == [claimed.name]
    assert names_under(queue, "processing/") == []
    stats = queue.stats()
    assert (stats["cur/"]["count"], stats["done/"]["count"]) == (2, 1)
    assert stats["oldest_cur_age_seconds"] > 0


# Enough messages that all eight contend for the same ones for a while; the
# consumer fault suite (tests/consumer_faults) takes the same claim through
# a thousand under faults.
DRAINED = 150


@pytest.mark.slow  # eight workers over one queue
def test_eight_workers_threads_and_processes_drain_a_queue_exactly_once(lock_kind, ini,
                                                                        tmp_path):
    queue = queue_for(ini)
    names = store(queue, DRAINED)
    claims, errors = [], []

    def thread_worker():
        own = queue_for(ini)
        try:
            while (claimed := own.claim()) is not None:
                claims.append(claimed.name)
                own.finish(claimed, "done")
        except Exception as error:  # the assertion below shows it
            errors.append(error)

    logs = [tmp_path / f"worker-{n}.log" for n in range(4)]
    processes = [subprocess.Popen(
        swiftdrop_command("queue", "--config", str(ini), "run", "--once", "--",
                          "sh", "-c", f'cat >/dev/null; echo "$SWIFTDROP_NAME" >> {log}'),
        stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL) for log in logs]
    threads = [threading.Thread(target=thread_worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    for process in processes:
        assert process.wait(600) == 0
    assert errors == []
    from_processes = [line for log in logs if log.exists()
                      for line in log.read_text().split()]
    processed = claims + from_processes
    assert len(processed) == len(set(processed)) == DRAINED  # none twice, none lost
    assert sorted(processed) == sorted(names)
    assert names_under(queue, "done/") == sorted(names)
    assert names_under(queue, "cur/") == names_under(queue, "processing/") == []
    assert claims and from_processes  # both kinds of worker took part


# The lease leaves room for a loaded machine between the worker's last
# refresh and our first recover() (the shortest lease these timeouts allow).
@pytest.mark.queue(lease=8, retry_delay=0, timeout=2, retries=1)
def test_a_killed_worker_s_message_is_recovered_after_the_lease(lock_kind, ini, tmp_path):
    queue = queue_for(ini)
    [name] = store(queue, 1)
    worker = subprocess.Popen(
        swiftdrop_command("queue", "--config", str(ini), "run", "--", "sleep", "60"),
        start_new_session=True, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while names_under(queue, "processing/") != [name]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    assert queue.recover() == []  # the dead worker's lock still holds for now
    deadline = time.monotonic() + 60
    while not (actions := queue.recover()):
        assert time.monotonic() < deadline, "recover never returned the dead worker's message"
        time.sleep(0.5)
    assert actions == [("lease expired, moved to retry/", name)]
    claimed = queue.claim()
    assert (claimed.name, claimed.attempts) == (name, 1)
    assert claimed.metadata["recovered-from"].endswith(f":{worker.pid}")
    # the dead worker's command had it: this is a second hand-over, and says so
    assert (claimed.delivery, claimed.redelivered) == (2, True)
    queue.finish(claimed, "done")
    assert names_under(queue, "done/") == [name]


@pytest.mark.queue(retry_delay=0, timeout=2, retries=1)
def test_a_crash_between_copy_and_delete_is_resolved_not_duplicated(ini):
    queue = queue_for(ini)
    [name] = store(queue, 1)
    queue.connection.put_object(queue.container, "processing/" + name, None,
                                headers={"X-Copy-From": f"/{queue.container}/cur/{name}"})
    actions = queue.recover()
    assert ("removed leftover cur/", name) in actions
    assert names_under(queue, "cur/") == names_under(queue, "processing/") == []
    assert names_under(queue, "retry/") == [name]
    assert queue.claim().name == name
    assert queue.claim() is None


@pytest.mark.queue(retry_delay=100, retry_longest=150, max_attempts=3)
def test_retry_backs_off_exponentially_up_to_the_longest_and_fails_after_n_attempts(ini):
    now = [1_800_000_000.0]
    queue = queue_for(ini, clock=lambda: now[0])
    [name] = store(queue, 1)
    for attempt, delay in ((1, 100), (2, 150)):  # 200 but for queue_retry_longest
        claimed = queue.claim()
        assert (claimed.name, claimed.attempts) == (name, attempt - 1)
        assert queue.finish(claimed, "retry", reason="exit status 1") == "retry/"
        headers = queue.connection.head_object(queue.container, "retry/" + name)
        not_before = float(headers["x-object-meta-not-before"])
        # the delay, stretched by the jitter of up to a tenth
        assert now[0] + delay - 0.001 <= not_before <= now[0] + delay * 1.1 + 0.001
        assert headers["x-object-meta-attempts"] == str(attempt)
        now[0] = not_before - 1
        assert queue.claim() is None  # not due yet
        now[0] = not_before + 1
    claimed = queue.claim()
    assert queue.finish(claimed, "retry", reason="killed by SIGKILL") == "failed/"
    headers = queue.connection.head_object(queue.container, "failed/" + name)
    assert headers["x-object-meta-failed-reason"] == \
        "gave up after 3 attempts; last: killed by SIGKILL"


def failed_metadata(queue, name, prefix="failed/"):
    headers = queue.connection.head_object(queue.container, prefix + name)
    return {key: headers.get(f"x-object-meta-{key}")
            for key in ("failed-reason", "exit-status", "last-error")}


@pytest.mark.queue(retry_delay=0, max_attempts=2)
def test_only_exit_65_fails_at_once_and_a_crash_is_retried_until_the_attempts_run_out(ini):
    """The exit status as a contract: 0 done, 65 failed, anything else (a crash) retry."""
    queue = queue_for(ini)
    permanent, crashing, killed, once = store(queue, 4)
    script = (f'cat >/dev/null; case "$SWIFTDROP_NAME" in {permanent}) exit 65;; '
              f'{crashing}) exit 1;; {killed}) kill -KILL $$;; esac; '
              '[ "$SWIFTDROP_ATTEMPTS" = 0 ] && exit 2; exit 0')
    outcomes = work(queue, ["sh", "-c", script], threading.Event(), once=True)
    assert outcomes == {"failed": 3, "retry": 3, "done": 1}
    assert failed_metadata(queue, permanent) == {
        "failed-reason": "exit status 65", "exit-status": "65", "last-error": "exit status 65"}
    assert failed_metadata(queue, crashing) == {
        "failed-reason": "gave up after 2 attempts; last: exit status 1", "exit-status": "1",
        "last-error": "exit status 1"}
    assert failed_metadata(queue, killed) == {
        "failed-reason": "gave up after 2 attempts; last: killed by SIGKILL",
        "exit-status": "-9", "last-error": "killed by SIGKILL"}
    # done at its second attempt; the first one's cause stays for whoever looks
    assert failed_metadata(queue, once, "done/") == {
        "failed-reason": None, "exit-status": "0", "last-error": "exit status 2"}


@pytest.mark.queue(command_timeout=1)
def test_a_command_past_its_timeout_is_killed_with_its_children_and_retried(ini, tmp_path):
    """SIGTERM ignored, the SIGKILL after it still ends the command and what it started."""
    queue = queue_for(ini)
    [name] = store(queue, 1)
    child = tmp_path / "child.pid"
    script = f'cat >/dev/null; trap "" TERM; sleep 600 & echo $! > {child}; wait'
    outcomes = work(queue, ["sh", "-c", script], threading.Event(), once=True)
    assert outcomes == {"retry": 1}
    assert failed_metadata(queue, name, "retry/") == {
        "failed-reason": None, "exit-status": None, "last-error": "timed out after 1 s"}
    assert not running(int(child.read_text()))


def running(pid):
    """Whether `pid` is a live process (a killed child whose reaper has not come is not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_run_s_timeout_overrides_the_ini_s_and_0_is_none(ini):
    queue = queue_for(ini)
    assert queue.settings.command_timeout == 900
    [name] = store(queue, 1)
    outcomes = work(queue, ["sh", "-c", "cat >/dev/null; sleep 3"], threading.Event(),
                    once=True, timeout=0.5)
    assert outcomes == {"retry": 1}
    assert failed_metadata(queue, name, "retry/")["last-error"] == "timed out after 0.5 s"


def test_a_command_killed_after_the_grace_goes_to_retry_without_an_exit_status(ini):
    queue = queue_for(ini)
    [name] = store(queue, 1)
    stop, outcomes = threading.Event(), []
    loop = threading.Thread(target=lambda: outcomes.append(work(
        queue, ["sh", "-c", "cat >/dev/null; exec sleep 60"], stop, grace=0.5)))
    loop.start()
    deadline = time.monotonic() + 30
    while names_under(queue, "processing/") != [name]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    stop.set()
    loop.join(30)
    assert outcomes == [{"retry": 1}]
    headers = queue.connection.head_object(queue.container, "retry/" + name)
    assert headers["x-object-meta-attempts"] == "1"
    assert "x-object-meta-exit-status" not in headers


def test_finishing_as_failed_without_a_reason_is_refused_before_anything_moves(ini):
    queue = queue_for(ini)
    [name] = store(queue, 1)
    claimed = queue.claim()
    with pytest.raises(ValueError, match="needs a reason"):
        queue.finish(claimed, "failed")
    assert names_under(queue, "processing/") == [name]
    assert names_under(queue, "failed/") == []
    queue.finish(claimed, "failed", reason="no such mailbox")
    assert failed_metadata(queue, name)["failed-reason"] == "no such mailbox"


def test_purge_deletes_only_what_is_older_than_asked(ini):
    queue = queue_for(ini)
    for _ in store(queue, 2):
        queue.finish(queue.claim(), "done")
    # "young" must still be younger than the cut-off when purge lists it,
    # also on a loaded machine: a few seconds between the two.
    time.sleep(5)
    [young] = store(queue, 1, start=1_700_000_100)
    queue.finish(queue.claim(), "done")
    old = queue.purge(4.0)
    assert len(old) == 2 and young not in {item["name"] for item in old}
    assert len(names_under(queue, "done/")) == 3  # a dry run deletes nothing
    queue.purge(4.0, execute=True)
    assert names_under(queue, "done/") == [young]


def test_dedup_skips_a_message_already_done(ini):
    queue = queue_for(ini)
    body = b"Message-ID: <same@x>\r\n\r\nsame\r\n"
    first, second = store(queue, 2, message_id="<same@x>", body=body)
    claimed = queue.claim(dedup=True)
    queue.finish(claimed, "done")
    assert queue.claim(dedup=True) is None
    done = {name: queue.connection.head_object(queue.container, "done/" + name)
            for name in names_under(queue, "done/")}
    assert set(done) == {first, second}
    duplicate = second if claimed.name == first else first
    assert done[duplicate]["x-object-meta-duplicate-of"] == claimed.name


@pytest.mark.slow  # over 10 s: kept out of the quick loop
def test_cli_claim_finish_and_stats(ini, tmp_path):
    queue = queue_for(ini)
    [name] = store(queue, 1)
    output = tmp_path / "message.eml"
    claim = subprocess.run(swiftdrop_command("queue", "--config", str(ini), "claim",
                                             "--output", str(output)),
                           capture_output=True, text=True, check=True)
    claimed = json.loads(claim.stdout)
    assert claimed["name"] == name and output.read_bytes().startswith(b"Subject: 0")
    assert (claimed["delivery"], claimed["redelivered"]) == (1, False)
    finish = subprocess.run(swiftdrop_command("queue", "--config", str(ini), "finish", name,
                                              "--token", claimed["token"], "--state", "done"),
                            capture_output=True, text=True, check=True)
    assert finish.stdout.strip() == f"done/{name}"
    [second] = store(queue, 1, start=1_700_000_300)
    claim = subprocess.run(swiftdrop_command("queue", "--config", str(ini), "claim"),
                           check=True, capture_output=True, text=True)
    token = json.loads(claim.stdout)["token"]
    finish = subprocess.run(swiftdrop_command("queue", "--config", str(ini), "finish", second,
                                              "--token", token, "--state", "failed",
                                              "--reason", "no such mailbox"),
                            capture_output=True, text=True, check=True)
    assert finish.stdout.strip() == f"failed/{second}"
    assert failed_metadata(queue, second)["failed-reason"] == "no such mailbox"
    stats = subprocess.run(swiftdrop_command("queue", "--config", str(ini), "stats", "--json"),
                           capture_output=True, text=True, check=True)
    figures = json.loads(stats.stdout)
    assert figures["done/"] == {"count": 1, "bytes": output.stat().st_size}
    assert figures["failed/"]["count"] == 1
    empty = subprocess.run(swiftdrop_command("queue", "--config", str(ini), "claim"),
                           capture_output=True, text=True, check=False)
    assert empty.returncode == 1 and "nothing to claim" in empty.stderr


@pytest.mark.slow  # over 10 s: kept out of the quick loop
def test_run_maps_exit_status_and_stops_on_sigterm(ini, tmp_path):
    queue = queue_for(ini)
    names = store(queue, 3)
    script = tmp_path / "worker.sh"
    script.write_text('#!/bin/sh\ncat >/dev/null\ncase "$SWIFTDROP_NAME" in\n'
                      f'  {names[0]}) exit 0;;\n  {names[1]}) exit 1;;\n  *) exit 65;;\nesac\n')
    script.chmod(0o755)
    result = subprocess.run(swiftdrop_command("queue", "--config", str(ini), "run", "--once",
                                              "--", str(script)),
                            capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.splitlines()[-1]) == {"done": 1, "retry": 1, "failed": 1}
    assert names_under(queue, "done/") == [names[0]]
    assert names_under(queue, "retry/") == [names[1]]
    assert names_under(queue, "failed/") == [names[2]]

    store(queue, 1, start=1_700_000_200)
    worker = subprocess.Popen(swiftdrop_command("queue", "--config", str(ini), "run", "--",
                                                "sh", "-c", "cat >/dev/null; sleep 2"),
                              stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not names_under(queue, "processing/"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert json.loads(worker.stdout.read().splitlines()[-1]) == {"done": 1}
    assert names_under(queue, "processing/") == []


def test_run_stops_on_a_sigterm_the_kernel_gave_a_worker_thread(ini):
    """The kernel may hand a process's signal to any of its threads.

    Python runs the handler in the main thread only, and only once that
    thread runs Python code again: a main thread asleep in a join() without
    a timeout never did, and `queue run` went on working (seen once in CI).
    tgkill sends the signal to one worker thread, the case that is rare
    with kill(1) and certain here.
    """
    worker = subprocess.Popen(swiftdrop_command("queue", "--config", str(ini), "run",
                                                "--poll", "0.2", "--", "cat"),
                              stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while len(threads := os.listdir(f"/proc/{worker.pid}/task")) < 2:
        assert time.monotonic() < deadline, "queue run started no worker thread"
        time.sleep(0.1)
    thread_id = next(int(each) for each in threads if int(each) != worker.pid)
    assert ctypes.CDLL(None, use_errno=True).tgkill(worker.pid, thread_id,
                                                    signal.SIGTERM) == 0
    try:
        assert worker.wait(30) == 0
    finally:
        worker.kill()
    assert json.loads(worker.stdout.read().splitlines()[-1]) == {}


def test_swift_lock_excludes_and_expires(swift):
    connection = swift.connection()
    connection.put_container("locks-test")
    lock = SwiftLock(connection, "locks-test", attempt_time=1)
    lease = 6  # long enough for the requests before the sleep on a loaded machine
    token = lock.acquire("m", lease=lease)
    assert token and lock.acquire("m", lease=lease) is None
    assert lock.refresh("m", token, lease) and not lock.refresh("m", "not-mine", lease)
    lock.release("m", "not-mine")
    assert lock.acquire("m", lease=lease) is None  # someone else's release did nothing
    time.sleep(lease + 0.5)
    assert lock.acquire("m", lease=lease)  # the lease ran out


def test_redis_lock_is_strict_about_tokens(redis_url):
    lock = RedisLock(redis_url, "test")
    token = lock.acquire("m", lease=1)
    assert token and lock.acquire("m", lease=1) is None
    assert not lock.refresh("m", "not-mine", 1)
    lock.release("m", "not-mine")
    assert lock.acquire("m", lease=1) is None
    assert lock.refresh("m", token, 1)
    lock.release("m", token)
    assert lock.acquire("m", lease=1)


def test_bad_queue_settings_name_file_section_and_key(tmp_path, swift):
    ini = make_ini(tmp_path / "q.ini", swift, "c", "redis", None)
    result = subprocess.run(swiftdrop_command("queue", "--config", str(ini), "stats"),
                            capture_output=True, text=True, check=False)
    assert result.returncode == 78
    assert "[DEFAULT] queue_redis_url: is required" in result.stderr


def count_requests(monkeypatch):
    """Count every Swift request by kind, on every connection (authentication aside).

    The requests are real; only their number is noted on the way. A lease
    refresh is left out: it comes when a lease runs low, not per claim, and
    the heartbeat of a claim an earlier test left open in this process may
    send one at any time (it did, once, on a machine under load).
    """
    requests = collections.Counter()
    send = swiftclient.Connection._retry

    def counted(connection, reset_func, func, *args, **kwargs):
        if threading.current_thread().name != "queue-heartbeat":
            requests[func.__name__] += 1
        return send(connection, reset_func, func, *args, **kwargs)

    monkeypatch.setattr(swiftclient.Connection, "_retry", counted)
    return requests


def test_a_claim_and_its_finish_cost_eight_requests_or_five_with_redis(lock_kind, ini,
                                                                         monkeypatch):
    destination = config_module.load(str(ini)).catch_all
    queue = MailQueue(destination)
    names = store(queue_for(ini), 20)
    requests = count_requests(monkeypatch)
    done = []
    while (claimed := queue.claim()) is not None:
        queue.finish(claimed, "done")
        done.append(claimed.name)
    assert sorted(done) == names
    listings = requests.pop("get_container")
    per_message = {"swift": 8, "redis": 5}[lock_kind]
    assert sum(requests.values()) == per_message * len(names)
    # a page of cur/ for all 20, the empty page that ends it, and retry/
    assert listings == 3


def test_stats_for_prometheus_pass_promtool_and_count_right(ini, tmp_path):
    queue = queue_for(ini)
    store(queue, 3)
    queue.finish(queue.claim(), "done")
    output = tmp_path / "textfile" / "swiftdrop_queue.prom"
    output.parent.mkdir()
    result = subprocess.run(
        swiftdrop_command("queue", "--config", str(ini), "stats", "--format", "prometheus",
                          "--output", str(output)), capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout) == (0, ""), result.stderr
    assert list(output.parent.iterdir()) == [output]  # no temporary file left beside it
    text = output.read_text()
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                          text=True, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    labels = f'destination="DEFAULT",container="{queue.container}"'
    assert f'swiftdrop_queue_messages{{{labels},state="cur"}} 2\n' in text
    assert f'swiftdrop_queue_messages{{{labels},state="done"}} 1\n' in text
    assert f'swiftdrop_queue_messages{{{labels},state="processing"}} 0\n' in text
    age = float(text.split(f"swiftdrop_queue_oldest_age_seconds{{{labels}}} ")[1].split()[0])
    assert age > 0


def test_run_with_concurrency_takes_each_message_once(ini, tmp_path):
    names = store(queue_for(ini), 30)
    log = tmp_path / "processed.log"
    result = subprocess.run(
        swiftdrop_command("queue", "--config", str(ini), "run", "--once", "--concurrency", "3",
                          "--", "sh", "-c", f'cat >/dev/null; echo "$SWIFTDROP_NAME" >> {log}'),
        capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"done": 30}
    assert sorted(log.read_text().split()) == names


@pytest.mark.parametrize("action", ["claim", "recover", "stats"])
def test_with_swift_away_a_queue_command_says_so_in_one_line(tmp_path, action):
    """Exit 75 (try again later) and the reason, not a traceback, when nobody answers."""
    ini = tmp_path / "away.ini"
    ini.write_text(f"[DEFAULT]\ncontainer = c\nauthurl = http://127.0.0.1:{reserve_port()}"
                   "/auth/v1.0\nuser = test:tester\nkey = testing\nretries = 0\n")
    result = subprocess.run(swiftdrop_command("queue", "--config", str(ini), action),
                            capture_output=True, text=True, check=False)
    assert result.returncode == 75, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"swiftdrop: queue {action}: ") and "refused" in line, line


@pytest.mark.parametrize("age", ["-1d", "0", "0s", "nan", "inf", "-inf", "1e400"])
def test_purge_refuses_an_age_that_is_not_above_zero_and_finite(ini, age):
    queue = queue_for(ini)
    names = store(queue, 2, start=1_700_000_200)
    result = run_swiftdrop("queue", "--config", str(ini), "purge", f"--older-than={age}",
                           "--prefix", "cur/", "--include-unprocessed", "--execute")
    assert result.returncode == 64
    assert f"argument --older-than: {age!r} is not a" in result.stderr
    assert "Traceback" not in result.stderr
    assert set(names) <= set(names_under(queue, "cur/"))  # nothing deleted


@pytest.mark.parametrize("prefix", ["cur/", "retry/"])
def test_purge_of_unprocessed_mail_needs_include_unprocessed(ini, prefix):
    queue = queue_for(ini)
    names = store(queue, 1, start=1_700_000_300)
    result = run_swiftdrop("queue", "--config", str(ini), "purge", "--older-than=1s",
                           "--prefix", prefix, "--execute")
    assert result.returncode == 64
    assert "--include-unprocessed" in result.stderr and "Traceback" not in result.stderr
    assert set(names) <= set(names_under(queue, "cur/"))  # nothing deleted
