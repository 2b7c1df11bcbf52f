"""swiftdrop queue replay: dead letters listed, and sent back to cur/, against the real Swift.

And purge, which takes what a webhook stored beside a message with it.
"""

from datetime import UTC, datetime
import json
import subprocess
import threading

import pytest

from swiftdrop.queue import retry_index
from swiftdrop.queue.replay import NOT_FOUND, REFUSED, REPLAYED, WOULD_REPLAY
from swiftdrop.worker import work
from tests.support.filterproc import swiftdrop_command
from tests.test_queue import ini, lock_kind, names_under, queue_for, store  # noqa: F401 - fixtures

FAILING = ["sh", "-c", "cat >/dev/null; exit 1"]


def cli(ini, *args):  # noqa: F811
    return subprocess.run(swiftdrop_command("queue", "--config", str(ini), *args),
                          capture_output=True, text=True, timeout=60, check=False)


def fail(queue, names):
    """Send `names` (all of cur/) to failed/ as a consumer that keeps crashing would."""
    outcomes = work(queue, FAILING, threading.Event(), once=True)
    assert outcomes["failed"] == len(names)
    assert names_under(queue, "failed/") == sorted(names)


def metadata_of(queue, path):
    headers = queue.connection.head_object(queue.container, path)
    return {key[len("x-object-meta-"):]: value for key, value in headers.items()
            if key.startswith("x-object-meta-")}


def iso(seconds, timespec="seconds"):
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec=timespec).replace(
        "+00:00", "Z")


@pytest.mark.queue(retry_delay=0, max_attempts=2)
def test_a_dry_run_lists_what_failed_and_why_and_changes_nothing(ini):  # noqa: F811
    queue = queue_for(ini)
    names = store(queue, 2)
    fail(queue, names)
    before = {name: metadata_of(queue, "failed/" + name) for name in names}
    listed = cli(ini, "replay", "--all")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        f"would replay {name} (delivered {iso(1_700_000_000 + number)}, 2 attempts): "
        "exit status 1" for number, name in enumerate(names)] + [
        "would replay 2 message(s) from failed/; add --execute"]
    as_json = cli(ini, "replay", "--all", "--json")
    assert as_json.returncode == 0, as_json.stderr
    [_, second] = json.loads(as_json.stdout)
    assert second == {"name": names[1], "from": "failed/",
                      "received_at": iso(1_700_000_001.000001, "microseconds"),
                      "attempts": 2, "deliveries": 2, "replayed": 0,
                      "last_error": "exit status 1",
                      "failed_reason": "gave up after 2 attempts; last: exit status 1",
                      "result": WOULD_REPLAY, "reason": ""}
    assert names_under(queue, "cur/") == []
    assert {name: metadata_of(queue, "failed/" + name) for name in names} == before


@pytest.mark.queue(retry_delay=0, max_attempts=2)
def test_a_replayed_message_comes_again_with_its_attempts_reset_marked_as_replayed(
        ini, tmp_path):  # noqa: F811
    queue = queue_for(ini)
    [name] = store(queue, 1)
    fail(queue, [name])
    failed = metadata_of(queue, "failed/" + name)
    assert failed["not-before"] and failed["deliveries"] == "2"
    # a crash's leftover of its last retry, which must not make it due
    leftover = retry_index.entry_path(name, float(failed["not-before"]))
    queue.connection.put_object(queue.container, leftover, "")

    replayed = cli(ini, "replay", "--execute", "failed/" + name)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.splitlines() == [
        f"replayed {name} (delivered {iso(1_700_000_000)}, 2 attempts): exit status 1",
        "replayed 1 message(s) from failed/"]
    assert (names_under(queue, "cur/"), names_under(queue, "failed/")) == ([name], [])
    assert names_under(queue, retry_index.RETRY_AT) == []
    now = metadata_of(queue, "cur/" + name)
    assert (now["attempts"], now["deliveries"], now["replayed"]) == ("0", "2", "1")
    assert float(now["replayed-at"]) >= float(failed["finished-at"])
    assert "last-error" not in now and "not-before" not in now
    kept = {key: value for key, value in failed.items()
            if key not in ("attempts", "last-error", "not-before")}
    assert {key: now[key] for key in kept} == kept

    claim = cli(ini, "claim")
    assert claim.returncode == 0, claim.stderr
    claimed = json.loads(claim.stdout)
    assert (claimed["delivery"], claimed["redelivered"], claimed["replayed"],
            claimed["attempts"]) == (3, True, 1, 0)
    finish = cli(ini, "finish", name, "--token", claimed["token"], "--state", "failed")
    assert finish.returncode == 0, finish.stderr

    assert cli(ini, "replay", "--execute", name).returncode == 0
    seen = tmp_path / "env"
    script = (f'cat >/dev/null; echo "$SWIFTDROP_REPLAYED $SWIFTDROP_DELIVERY '
              f'$SWIFTDROP_REDELIVERED $SWIFTDROP_ATTEMPTS" > {seen}')
    assert work(queue, ["sh", "-c", script], threading.Event(), once=True) == {"done": 1}
    assert seen.read_text().split() == ["2", "4", "1", "0"]


def test_a_window_chooses_by_the_delivery_time_in_the_name(ini):  # noqa: F811
    queue = queue_for(ini)
    hour = 3600
    names = [store(queue, 1, start=1_700_000_000 + number * hour)[0] for number in range(3)]
    for _ in names:
        queue.finish(queue.claim(), "failed", reason="no such mailbox")
    since, until = 1_700_000_000 + hour, 1_700_000_000 + 2 * hour
    chosen = queue.replay("failed/", since=since, until=until)
    assert [(letter.name, letter.outcome) for letter in chosen] == [(names[1], WOULD_REPLAY)]
    assert chosen[0].cause == "no such mailbox"  # no attempt recorded a Last-Error
    assert [letter.name for letter in queue.replay("failed/", since=since)] == names[1:]
    assert [letter.name for letter in queue.replay("failed/", until=since)] == names[:1]

    by_age = cli(ini, "replay", "--until", "1d", "--json")  # delivered over a day ago
    assert [letter["name"] for letter in json.loads(by_age.stdout)] == names
    moved = cli(ini, "replay", "--execute", "--since", iso(since), "--until",
                "2023-11-15T02:13:20+02:00")  # until, as another zone writes it
    assert moved.returncode == 0, moved.stderr
    assert names_under(queue, "cur/") == [names[1]]
    assert names_under(queue, "failed/") == [names[0], names[2]]


def test_a_message_whose_lock_is_held_or_that_is_in_work_is_not_replayed(
        lock_kind, ini):  # noqa: F811
    queue, other = queue_for(ini), queue_for(ini)
    locked, waiting = store(queue, 2)
    for _ in range(2):
        queue.finish(queue.claim(), "failed", reason="bounced")
    token = other._acquire(locked)
    assert token is not None
    # the same name in cur/ too: a crash's leftover, or a copy put back by hand
    queue.connection.put_object(queue.container, "cur/" + waiting, b"again")
    letters = queue.replay("failed/", [locked, waiting], execute=True)
    assert [(letter.outcome, letter.reason) for letter in letters] == [
        (REFUSED, "its lock is held: a worker, recover or another replay is at it"),
        (REFUSED, "it is in cur/ already")]
    assert names_under(queue, "failed/") == [locked, waiting]
    assert queue.connection.get_object(queue.container, "cur/" + waiting)[1] == b"again"
    dry = cli(ini, "replay", waiting)
    assert dry.stdout.splitlines()[0] == f"would not replay {waiting}: it is in cur/ already"

    other._release(locked, token)
    [letter] = queue.replay("failed/", [locked], execute=True)
    assert letter.outcome == REPLAYED
    assert names_under(queue, "failed/") == [waiting]
    other.close()


def one_done_one_failed(queue):
    """(name in done/, name in failed/, bounced): the two places replay takes from."""
    [done] = store(queue, 1)
    queue.finish(queue.claim(), "done")
    [failed] = store(queue, 1, start=1_700_000_100)
    queue.finish(queue.claim(), "failed", reason="bounced")
    return done, failed


def test_a_name_not_in_from_is_reported_and_the_rest_is_replayed(ini):  # noqa: F811
    queue = queue_for(ini)
    done, failed = one_done_one_failed(queue)
    result = cli(ini, "replay", "--execute", done, "1700009999.M0P1Q0.mx.test,S=1", failed)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"swiftdrop: queue replay: {done} is not in failed/ (it is in done/)",
        "swiftdrop: queue replay: 1700009999.M0P1Q0.mx.test,S=1 is not in failed/ "
        "(in no state)"]
    assert result.stdout.splitlines()[-1] == "replayed 1 message(s) from failed/"
    assert (names_under(queue, "cur/"), names_under(queue, "done/")) == ([failed], [done])
    [letter] = queue.replay("done/", [failed])
    assert letter.outcome == NOT_FOUND


def test_a_message_replayed_from_done_is_not_taken_for_its_own_duplicate(ini):  # noqa: F811
    queue = queue_for(ini)
    [name] = store(queue, 1, message_id="<once@example.org>")
    queue.finish(queue.claim(dedup=True), "done")  # leaves its dedup marker
    [letter] = queue.replay("done/", [name], execute=True)
    assert letter.outcome == REPLAYED
    claimed = queue.claim(dedup=True)
    assert (claimed.name, claimed.replayed, claimed.skipped_duplicates) == (name, 1, [])


@pytest.mark.parametrize("arguments, problem", [
    ((), "needs NAMEs, a window (--since, --until) or --all"),
    (("NAME", "--all"), "takes NAMEs or a window or --all, not NAMEs with either"),
    (("--all", "--since", "2h"), "takes a window or --all, not both"),
])
def test_replay_refuses_a_choice_that_is_none_or_ambiguous(ini, arguments, problem):  # noqa: F811
    result = cli(ini, "replay", *arguments)
    assert (result.returncode, result.stdout) == (64, "")
    assert result.stderr == f"swiftdrop: queue replay {problem}\n"


def test_replay_says_what_a_time_must_look_like(ini):  # noqa: F811
    result = cli(ini, "replay", "--since", "yesterday")
    assert result.returncode == 64
    assert "neither an ISO 8601 time like 2026-12-01T10:00Z nor an age like 2h" in result.stderr


def test_purge_deletes_the_attachments_a_webhook_stored_beside_its_messages(ini):  # noqa: F811
    queue = queue_for(ini)
    purged, kept = one_done_one_failed(queue)
    for name in (purged, kept):
        for part in ("0", "1", "raw"):
            queue.connection.put_object(queue.container, f"attachments/{name}/{part}", b"a")
    everything_old = queue_for(ini, clock=lambda: 4_000_000_000.0)
    listed = everything_old.purge(60, "done/")
    assert sorted(item["name"] for item in listed) == sorted(
        [f"done/{purged}", *(f"attachments/{purged}/{part}" for part in ("0", "1", "raw"))])
    assert len(names_under(queue, "attachments/")) == 6  # a dry run deletes nothing
    everything_old.purge(60, "done/", execute=True)
    assert names_under(queue, "attachments/") == [f"{kept}/{part}" for part in ("0", "1", "raw")]
    assert names_under(queue, "done/") == []
