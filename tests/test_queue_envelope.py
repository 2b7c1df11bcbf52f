"""What a consumer gets of a message's envelope: every recipient, in claim's JSON and in run.

Against the real Swift of tests/conftest.py, with objects stored the way the
filter stores them (swiftdrop.envelope); the filter's side is in
test_bad_input.py and test_bad_input_postfix.py.
"""

import hashlib
import json
import subprocess
import threading

import pytest

from swiftdrop.delivery import text_object
from swiftdrop.envelope import envelope_path, recipient_metadata
from swiftdrop.worker import work
from tests.support.filterproc import swiftdrop_command
from tests.test_queue import ini, names_under, queue_for  # noqa: F401 - `ini` is a fixture

BODY = b"Message-ID: <split@origin.test>\r\nSubject: split\r\n\r\nhello\r\n"
MANY = [f"{index:03d}-{'r' * 44}@example.org" for index in range(200)]


def store_for(queue, name, recipients, body=BODY, message_id="<split@origin.test>",
              **extra_metadata):
    """Store `cur/<name>` as the filter does: its recipients in keys and, if long, beside it."""
    metadata, recipient_list = recipient_metadata(recipients, "cur/" + name)
    metadata.update({"Mail-From": "sender@origin.test", "Message-Id": message_id,
                     "Dedup-Md5": hashlib.md5(body).hexdigest(), **extra_metadata})
    if recipient_list is not None:
        queue.connection.put_object(queue.container, envelope_path(name),
                                    text_object(recipient_list).spool.read())
    queue.connection.put_object(queue.container, "cur/" + name, body, headers={
        f"X-Object-Meta-{key}": value for key, value in metadata.items()})
    return name


@pytest.mark.parametrize("recipients", [["one@example.org"], MANY[:9], MANY],
                         ids=["one", "two keys", "beside the object"])
def test_a_claim_reads_every_recipient_wherever_they_are_kept(ini, recipients):  # noqa: F811
    queue = queue_for(ini)
    store_for(queue, "1700000000.M1P1Q1.mx.test,S=10", recipients)
    claimed = queue.claim()
    assert claimed.recipients == recipients
    queue.finish(claimed, "done")


def test_an_object_from_before_numbered_keys_reads_its_rcpt_to(ini):  # noqa: F811
    queue = queue_for(ini)
    queue.connection.put_object(queue.container, "cur/1700000000.M1P1Q1.mx.test,S=4", b"old",
                                headers={"X-Object-Meta-Rcpt-To": "a@example.org, b@example.org",
                                         "X-Object-Meta-Rcpt-Count": "2"})
    assert queue.claim().recipients == ["a@example.org", "b@example.org"]


@pytest.mark.queue(retry_delay=0)
def test_full_metadata_still_moves_through_every_state(ini):  # noqa: F811
    """Long sender, Message-ID, client names and verdicts, both recipient keys full: the
    queue's keys must still fit at each copy (Swift's 4096 bytes; on an ext4 object
    server all xattrs share one 4 KiB block, prefixes and pickling included)."""
    queue = queue_for(ini)
    store_for(queue, "1700000000.M1P1Q1.mx.test,S=10", MANY, message_id="<" + "m" * 98 + ">",
              **{"Mail-From": "s" * 100, "Received-By": "mx1.swiftdrop.example.net",
                 "Client-Address": "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                 "Client-Name": "c" * 80, "Client-Helo": "h" * 80, "Spam-Action": "add header",
                 "Spam-Score": "15.00", "Spf": "softfail", "Dkim": "permerror",
                 "Dmarc": "quarantine", "Dmarc-Policy": "quarantine",
                 "Verdict-Symbols": "v" * 256})
    claimed = queue.claim()
    assert queue.finish(claimed, "retry") == "retry/"
    claimed = queue.claim(dedup=True)
    assert claimed.recipients == MANY
    assert queue.finish(claimed, "failed", reason="exit status 3 " + "y" * 200) == "failed/"


def test_claim_prints_the_whole_envelope_beside_the_existing_keys(ini):  # noqa: F811
    queue = queue_for(ini)
    name = store_for(queue, "1700000000.M1P1Q1.mx.test,S=10", MANY)
    result = subprocess.run(swiftdrop_command("queue", "--config", str(ini), "claim"),
                            capture_output=True, text=True, timeout=60, check=True)
    printed = json.loads(result.stdout)
    assert {"name", "token", "size", "attempts", "delivery", "redelivered", "metadata",
            "skipped_duplicates"} <= set(printed)
    assert (printed["name"], printed["rcpt_to"], printed["rcpt_count"]) == (name, MANY, 200)
    assert printed["mail_from"] == "sender@origin.test"
    assert printed["message_id"] == "<split@origin.test>"
    assert printed["dedup_md5"] == hashlib.md5(BODY).hexdigest()


def test_run_gives_the_command_every_recipient(ini, tmp_path):  # noqa: F811
    queue = queue_for(ini)
    store_for(queue, "1700000000.M1P1Q1.mx.test,S=10", MANY)
    seen = tmp_path / "seen"
    command = ["sh", "-c", 'cat >/dev/null; { printf "%s\\n" "$SWIFTDROP_RCPT_TO"; '
               'echo "count=$SWIFTDROP_RCPT_COUNT md5=$SWIFTDROP_DEDUP_MD5"; '
               f'cat "$SWIFTDROP_RCPT_FILE"; }} > {seen}']
    assert work(queue, command, threading.Event(), once=True) == {"done": 1}
    lines = seen.read_text().splitlines()
    assert lines[:200] == MANY
    assert lines[200] == f"count=200 md5={hashlib.md5(BODY).hexdigest()}"
    assert lines[201:] == MANY


def test_dedup_keeps_per_recipient_transactions_apart(ini):  # noqa: F811
    """Same Message-ID and body to two recipients in two transactions: two messages."""
    queue = queue_for(ini)
    first = store_for(queue, "1700000000.M1P1Q1.mx.test,S=10", ["a@example.org"])
    second = store_for(queue, "1700000001.M2P1Q2.mx.test,S=10", ["b@example.org"])
    repeat = store_for(queue, "1700000002.M3P1Q3.mx.test,S=10", ["a@example.org"])
    processed = []
    while (claimed := queue.claim(dedup=True)) is not None:
        processed.append(claimed.name)
        queue.finish(claimed, "done")
    assert sorted(processed) in ([first, second], [second, repeat])
    duplicate = ({first, repeat} - set(processed)).pop()
    headers = queue.connection.head_object(queue.container, "done/" + duplicate)
    assert headers["x-object-meta-duplicate-of"] in (first, repeat)


def test_only_a_dedup_claim_pays_for_a_dedup_marker(ini):  # noqa: F811
    queue = queue_for(ini)
    store_for(queue, "1700000000.M1P1Q1.mx.test,S=10", ["a@example.org"])
    store_for(queue, "1700000001.M2P1Q2.mx.test,S=10", ["b@example.org"])
    queue.finish(queue.claim(), "done")
    assert names_under(queue, "dedup/") == []
    queue.finish(queue.claim(dedup=True), "done")
    assert len(names_under(queue, "dedup/")) == 1


def test_purge_takes_a_long_envelope_with_its_message(ini):  # noqa: F811
    queue = queue_for(ini)
    long_list = store_for(queue, "1700000000.M1P1Q3.mx.test,S=10", MANY)
    short_list = store_for(queue, "1700000000.M1P1Q4.mx.test,S=10", MANY[:2])
    for _ in range(2):
        queue.finish(queue.claim(), "done")
    told = {item["name"] for item in queue.purge(0, execute=False)}
    assert told == {f"done/{long_list}", f"done/{short_list}", envelope_path(long_list)}
    queue.purge(0, execute=True)
    assert names_under(queue, "envelopes/") == []
    assert names_under(queue, "done/") == []
