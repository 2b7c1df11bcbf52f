"""The command line's bad-input contract (issue 25), against the real ``swiftdrop``.

Every subcommand given bad arguments answers with exit status 64
(EX_USAGE: the command line is wrong) or 78 (EX_CONFIG: the ini is), one
line on stderr naming what is wrong, never a traceback; and the commands
that delete or move mail (purge, replay --execute, finish) touch nothing
in a real Swift container. The duration and time parsers are fuzzed as
pure functions: any text is refused or gives a finite number.

Each case is an explicit list entry, so ``pytest -v`` shows and counts them
(docs/testing.md says how many there are).
"""

import argparse
import math
import os

from hypothesis import given, settings
from hypothesis import strategies as st
import pytest

from swiftdrop import config as config_module
from swiftdrop.arguments import duration, point_in_time, positive_duration, purge_age
from swiftdrop.queue import MailQueue
from tests.conftest import write_ini
from tests.support.filterproc import run_swiftdrop
from tests.support.ports import reserve_port

EX_USAGE, EX_CONFIG = 64, 78
CONTAINER = "bad-input-cli"
MAIL_PREFIXES = ("cur/", "retry/", "processing/", "done/", "failed/")
INI = "{ini}"  # stands for a valid ini's path in a case's arguments
FUZZ = settings(max_examples=int(os.environ.get("SWIFTDROP_FUZZ_EXAMPLES", "300")),
                deadline=None, database=None)


def refused(result, status, *words):
    """Exit `status`, and stderr exactly one non-empty line holding every one of `words`."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == status, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def with_ini(args, ini):
    return [str(ini) if arg == INI else arg for arg in args]


@pytest.fixture(scope="module")
def ini(tmp_path_factory, swift):
    """A valid ini whose catch-all is CONTAINER (the parser's cases never reach Swift)."""
    return write_ini(tmp_path_factory.mktemp("bad-input-cli") / "swiftdrop.ini", swift,
                     container=CONTAINER)


# (arguments, words the one line must hold): refused by the parser, or right
# after it, before anything is read from Swift.
USAGE_CASES = [
    # unknown commands, flags and subcommands, for every subcommand
    pytest.param([], ["swiftdrop:", "COMMAND"], id="no-command"),
    pytest.param(["bogus"], ["invalid choice: 'bogus'"], id="unknown-command"),
    pytest.param(["serve", "--bogus"], ["swiftdrop serve:", "--bogus"], id="serve-unknown-flag"),
    pytest.param(["check", "--bogus"], ["swiftdrop check:", "--bogus"], id="check-unknown-flag"),
    pytest.param(["import-env", "--bogus"], ["swiftdrop import-env:", "--bogus"],
                 id="import-env-unknown-flag"),
    pytest.param(["status", "--bogus"], ["swiftdrop status:", "--bogus"],
                 id="status-unknown-flag"),
    pytest.param(["queue", "--config", INI], ["swiftdrop queue:", "ACTION"],
                 id="queue-no-action"),
    pytest.param(["queue", "--config", INI, "bogus"], ["invalid choice: 'bogus'"],
                 id="queue-unknown-action"),
    pytest.param(["queue", "--config", INI, "claim", "--bogus"],
                 ["swiftdrop queue claim:", "--bogus"], id="claim-unknown-flag"),
    pytest.param(["queue", "--config", INI, "finish", "x", "--state", "done", "--token", "t",
                  "--bogus"], ["swiftdrop queue finish:", "--bogus"], id="finish-unknown-flag"),
    pytest.param(["queue", "--config", INI, "recover", "--bogus"],
                 ["swiftdrop queue recover:", "--bogus"], id="recover-unknown-flag"),
    pytest.param(["queue", "--config", INI, "reconcile", "--bogus"],
                 ["swiftdrop queue reconcile:", "--bogus"], id="reconcile-unknown-flag"),
    pytest.param(["queue", "--config", INI, "purge", "--older-than", "1d", "--bogus"],
                 ["swiftdrop queue purge:", "--bogus"], id="purge-unknown-flag"),
    pytest.param(["queue", "--config", INI, "replay", "--all", "--bogus"],
                 ["swiftdrop queue replay:", "--bogus"], id="replay-unknown-flag"),
    pytest.param(["queue", "--config", INI, "stats", "--bogus"],
                 ["swiftdrop queue stats:", "--bogus"], id="stats-unknown-flag"),
    pytest.param(["queue", "--config", INI, "run", "--bogus", "--", "cat"],
                 ["swiftdrop queue run:", "--bogus"], id="run-unknown-flag"),
    pytest.param(["serve", "--bo\ngus"], ["swiftdrop serve:", "--bo\\ngus"],
                 id="a-newline-stays-on-the-line"),
    # missing values
    pytest.param(["check", "--config"], ["--config", "expected one argument"],
                 id="check-config-without-value"),
    pytest.param(["serve", "--listen"], ["--listen", "expected one argument"],
                 id="serve-listen-without-value"),
    pytest.param(["import-env", "--env-file"], ["--env-file", "expected one argument"],
                 id="import-env-file-without-value"),
    pytest.param(["status", "--since"], ["--since", "expected one argument"],
                 id="status-since-without-value"),
    pytest.param(["queue", "--config", INI, "purge"], ["--older-than", "required"],
                 id="purge-without-age"),
    pytest.param(["queue", "--config", INI, "finish"], ["name", "--state", "required"],
                 id="finish-without-name-and-state"),
    pytest.param(["queue", "--config", INI, "replay", "--since"],
                 ["--since", "expected one argument"], id="replay-since-without-value"),
    # choices
    pytest.param(["import-env", "--format", "xml"], ["--format", "'xml'"],
                 id="import-env-unknown-format"),
    pytest.param(["import-env", "--dialect", "bash"], ["--dialect", "'bash'"],
                 id="import-env-unknown-dialect"),
    pytest.param(["import-env", "--dialect", "shell"], ["swiftdrop import-env:", "--dialect"],
                 id="import-env-dialect-without-file"),
    pytest.param(["serve", "--reply-detail", "all"], ["--reply-detail", "'all'"],
                 id="serve-unknown-reply-detail"),
    pytest.param(["serve", "--log-target", "syslog"], ["--log-target", "'syslog'"],
                 id="serve-unknown-log-target"),
    pytest.param(["queue", "--config", INI, "finish", "x", "--state", "gone", "--token", "t"],
                 ["--state", "'gone'"], id="finish-unknown-state"),
    pytest.param(["queue", "--config", INI, "purge", "--older-than", "1d", "--prefix", "tmp/"],
                 ["--prefix", "'tmp/'"], id="purge-unknown-prefix"),
    pytest.param(["queue", "--config", INI, "replay", "--all", "--from", "cur/"],
                 ["--from", "'cur/'"], id="replay-from-cur"),
    pytest.param(["queue", "--config", INI, "stats", "--format", "xml"], ["--format", "'xml'"],
                 id="stats-unknown-format"),
    pytest.param(["queue", "--config", INI, "stats", "--output", "/"], ["--output", "'/'"],
                 id="stats-output-a-directory"),
    pytest.param(["queue", "--config", INI, "run", "--webhook-format", "xml"],
                 ["--webhook-format", "'xml'"], id="run-unknown-webhook-format"),
    # durations and ages: negative, zero where it must be above, not finite, not a number
    *(pytest.param(["queue", "--config", INI, "purge", f"--older-than={age}"],
                   ["--older-than", repr(age)], id=f"purge-age-{age}")
      for age in ("-1d", "0", "0s", "nan", "inf", "1e400", "abc", "")),
    pytest.param(["queue", "--config", INI, "purge", "--older-than", "-1d"],
                 ["--older-than", "expected one argument"], id="purge-age-as-a-flag"),
    *(pytest.param(["serve", "--store-timeout", value], ["--store-timeout", repr(value)],
                   id=f"serve-store-timeout-{value}")
      for value in ("0", "-1", "nan", "1e400", "abc")),
    pytest.param(["serve", "--idle-timeout", "0"], ["--idle-timeout", "'0'"],
                 id="serve-idle-timeout-0"),
    pytest.param(["serve", "--rspamd-timeout", "inf"], ["--rspamd-timeout", "'inf'"],
                 id="serve-rspamd-timeout-inf"),
    pytest.param(["serve", "--alert-interval", "-5"], ["--alert-interval", "'-5'"],
                 id="serve-alert-interval-negative"),
    pytest.param(["serve", "--max-message-size", "abc"], ["--max-message-size", "'abc'"],
                 id="serve-max-message-size-abc"),
    pytest.param(["serve", "--max-connections", "0"], ["--max-connections", "'0'"],
                 id="serve-max-connections-0"),
    *(pytest.param(["status", "--since", value], ["--since", repr(value)],
                   id=f"status-since-{value}")
      for value in ("nan", "1e400", "abc", "-5")),
    *(pytest.param(["queue", "--config", INI, "run", "--poll", value, "--", "cat"],
                   ["--poll", repr(value)], id=f"run-poll-{value}")
      for value in ("0", "-1", "nan")),
    pytest.param(["queue", "--config", INI, "run", "--grace", "-1", "--", "cat"],
                 ["--grace", "'-1'"], id="run-grace-negative"),
    pytest.param(["queue", "--config", INI, "run", "--timeout", "nan", "--", "cat"],
                 ["--timeout", "'nan'"], id="run-timeout-nan"),
    pytest.param(["queue", "--config", INI, "run", "--concurrency", "0", "--", "cat"],
                 ["--concurrency", "'0'"], id="run-concurrency-0"),
    pytest.param(["queue", "--config", INI, "run", "--concurrency", "two", "--", "cat"],
                 ["--concurrency", "'two'"], id="run-concurrency-two"),
    # points in time for replay
    *(pytest.param(["queue", "--config", INI, "replay", "--since", value],
                   ["--since", repr(value)], id=f"replay-since-{value}")
      for value in ("yesterday", "nan", "1e400", "2026-13-01T00:00Z", "2h ago")),
    pytest.param(["queue", "--config", INI, "replay", "--until", "9" * 400],
                 ["--until", "not a duration"], id="replay-until-an-infinite-age"),
    # addresses: serve listens on loopback only
    *(pytest.param(["serve", "--config", INI, "--listen", address], ["--listen", repr(address)],
                   id=f"serve-listen-{address}")
      for address in ("0.0.0.0:2525", "[::]:2525", "192.0.2.1:25", "mx.example.com:25",
                      "127.0.0.1:abc", "127.0.0.1:70000", "127.0.0.1", "unix:", "nonsense")),
    pytest.param(["serve", "--admin-relay", "192.0.2.1:25"], ["--admin-relay", "loopback"],
                 id="serve-admin-relay-not-loopback"),
    pytest.param(["serve", "--alert-mail", "root@example.com"],
                 ["swiftdrop serve:", "--alert-mail needs --admin-relay"],
                 id="serve-alert-mail-without-relay"),
    pytest.param(["serve", "--metrics-listen", "127.0.0.1:99999"],
                 ["--metrics-listen", "'127.0.0.1:99999'"], id="serve-metrics-port-too-big"),
    pytest.param(["status", "--metrics", "localhost"], ["--metrics", "'localhost'"],
                 id="status-metrics-without-port"),
    pytest.param(["queue", "--config", INI, "run", "--metrics-listen", ":9100", "--", "cat"],
                 ["--metrics-listen", "':9100'"], id="run-metrics-without-host"),
    pytest.param(["status", "--match", "_hostname"], ["--match", "'_hostname'"],
                 id="status-match-without-value"),
    # URLs
    *(pytest.param(["serve", "--rspamd-url", url], ["--rspamd-url", repr(url)],
                   id=f"serve-rspamd-url-{url}")
      for url in ("127.0.0.1:11333", "https://127.0.0.1:11333", "http://127.0.0.1:abc",
                  "http://[::1", "http://")),
    pytest.param(["serve", "--alert-webhook", "ftp://hooks.example.com/"],
                 ["--alert-webhook", "not an http:// or https:// URL"],
                 id="serve-alert-webhook-ftp"),
    pytest.param(["serve", "--alert-webhook", "https://hooks.example.com:port/"],
                 ["--alert-webhook", "no valid port"], id="serve-alert-webhook-bad-port"),
    pytest.param(["queue", "--config", INI, "run", "--webhook", "ftp://hooks.example.com/"],
                 ["--webhook", "not an http:// or https:// URL"], id="run-webhook-ftp"),
    pytest.param(["queue", "--config", INI, "run", "--webhook", "http://hooks.example.com/"],
                 ["--webhook", "plain http to another host"], id="run-webhook-plain-http"),
    pytest.param(["queue", "--config", INI, "run", "--webhook", "http://127.0.0.1:port/"],
                 ["--webhook", "no valid port"], id="run-webhook-bad-port"),
    pytest.param(["queue", "--config", INI, "run", "--webhook", "http://127.0.0.1:9/", "--",
                  "cat"], ["COMMAND or a webhook", "not both"], id="run-webhook-and-command"),
    pytest.param(["queue", "--config", INI, "run"], ["needs a command after --"],
                 id="run-without-command-or-webhook"),
    # what a command needs besides valid values
    pytest.param(["queue", "--config", INI, "replay"], ["needs NAMEs"],
                 id="replay-without-selection"),
    pytest.param(["queue", "--config", INI, "replay", "NAME", "--all"],
                 ["not NAMEs with either"], id="replay-names-and-all"),
    pytest.param(["queue", "--config", INI, "--group", "team", "claim"],
                 ["--group needs queue_index = redis-stream"], id="group-on-the-listing"),
    pytest.param(["queue", "--config", INI, "reconcile"],
                 ["reconcile needs queue_index = redis-stream"], id="reconcile-on-the-listing"),
    pytest.param(["queue", "--config", INI, "finish", "x", "--state", "failed", "--token", "t",
                  "--reason", "x" * 300], ["--reason", "at most 256 bytes"],
                 id="finish-reason-too-long"),
]


@pytest.mark.parametrize("args, words", USAGE_CASES)
def test_a_bad_command_line_is_refused_with_64_in_one_line(ini, args, words):
    refused(run_swiftdrop(*with_ini(args, ini)), EX_USAGE, *words)


def test_the_help_lists_every_exit_status():
    result = run_swiftdrop("--help")
    assert result.returncode == 0, result.stderr
    statuses = result.stdout.partition("Exit status:")[2]
    for status in ("0 done", "1 done", "64 (EX_USAGE)", "75 (EX_TEMPFAIL)", "77 (EX_NOPERM)",
                   "78 (EX_CONFIG)"):
        assert status in " ".join(statuses.split()), statuses


def test_a_usage_error_points_to_the_subcommand_s_help(ini):
    line = refused(run_swiftdrop("queue", "--config", str(ini), "purge", "--older-than", "0"),
                   EX_USAGE)
    assert line.startswith("swiftdrop queue purge: argument --older-than: '0' ")
    assert line.endswith(" (see swiftdrop queue purge --help)")


def test_an_alert_webhook_s_credentials_stay_out_of_the_error(ini):
    line = refused(run_swiftdrop("serve", "--alert-webhook",
                                 "https://alerts:s3cret@hooks.example.com:port/?token=t0ken"),
                   EX_USAGE, "--alert-webhook", "hooks.example.com")
    assert "s3cret" not in line and "t0ken" not in line


def test_run_passes_its_command_s_own_flags_through(swift, tmp_path):
    """What follows run's COMMAND is the command's: its own flags reach it, not the parser."""
    container = CONTAINER + "-run"
    swift.connection().put_container(container)
    swift.connection().put_object(container, "cur/1700000000.M0P1Q0.mx.test,S=9",
                                  b"Subject: x\r\n\r\nx\r\n")
    ini = write_ini(tmp_path / "swiftdrop.ini", swift, container=container)
    seen = tmp_path / "arguments"
    result = run_swiftdrop("queue", "--config", str(ini), "run", "--once", "--", "sh", "-c",
                           'cat >/dev/null; echo "$@" >"$0"', str(seen), "--bogus", "-x")
    assert result.returncode == 0, result.stderr
    assert seen.read_text() == "--bogus -x\n"


# Configuration problems: the same for every command that reads the ini.
READS_THE_INI = [
    pytest.param(["serve", "--log-target", "stderr", "--listen", "127.0.0.1:{port}"], id="serve"),
    pytest.param(["check"], id="check"),
    pytest.param(["check", "--config-only"], id="check-config-only"),
    pytest.param(["queue", "claim"], id="queue-claim"),
    pytest.param(["queue", "purge", "--older-than", "1d", "--execute"], id="queue-purge"),
    pytest.param(["queue", "replay", "--all", "--execute"], id="queue-replay"),
    pytest.param(["queue", "run", "--once", "--", "cat"], id="queue-run"),
]


def missing(tmp_path):
    return tmp_path / "nowhere.ini", "No such file or directory"


def directory(tmp_path):
    return tmp_path, "Is a directory"


def under_a_file(tmp_path):
    (tmp_path / "plain").write_text("")
    return tmp_path / "plain" / "swiftdrop.ini", "Not a directory"


def not_utf8(tmp_path):
    path = tmp_path / "latin1.ini"
    path.write_bytes(b"[DEFAULT]\ncontainer = caf\xe9\n")
    return path, "not UTF-8"


def not_an_ini(tmp_path):
    path = tmp_path / "garbage.ini"
    path.write_text("[DEFAULT\ncontainer\n")
    return path, str(path)


def no_container(tmp_path):
    path = tmp_path / "incomplete.ini"
    path.write_text("[DEFAULT]\nauthurl = http://127.0.0.1:1/auth/v1.0\nuser = u\nkey = k\n")
    return path, "[DEFAULT] container: is required"


def unreadable(tmp_path):
    path = tmp_path / "secret.ini"
    path.write_text("[DEFAULT]\ncontainer = c\n")
    path.chmod(0)
    return path, "Permission denied"


BAD_CONFIGS = [
    pytest.param(missing, id="missing"),
    pytest.param(directory, id="a-directory"),
    pytest.param(under_a_file, id="under-a-file"),
    pytest.param(not_utf8, id="not-utf-8"),
    pytest.param(not_an_ini, id="not-an-ini"),
    pytest.param(no_container, id="no-container"),
    pytest.param(unreadable, id="unreadable", marks=pytest.mark.skipif(
        os.geteuid() == 0, reason="root reads a file of mode 0000")),
]


@pytest.mark.parametrize("make_config", BAD_CONFIGS)
@pytest.mark.parametrize("command", READS_THE_INI)
def test_a_bad_ini_is_refused_with_78_in_one_line(tmp_path, command, make_config):
    path, says = make_config(tmp_path)
    head, *rest = [arg.format(port=reserve_port()) for arg in command]
    result = run_swiftdrop(head, "--config", str(path), *rest)
    refused(result, EX_CONFIG, str(path), says)


OTHER_CONFIG_CASES = [
    pytest.param(["queue", "--config", INI, "--destination", "NOSUCH", "claim"],
                 ["no section [NOSUCH]"], id="queue-unknown-destination"),
    pytest.param(["import-env", "--env-file", "/nonexistent/swiftdrop.env"],
                 ["swiftdrop import-env:", "/nonexistent/swiftdrop.env"],
                 id="import-env-missing-file"),
    pytest.param(["import-env", "--env-file", "/"], ["swiftdrop import-env:", "directory"],
                 id="import-env-directory"),
]


@pytest.mark.parametrize("args, words", OTHER_CONFIG_CASES)
def test_a_bad_file_or_section_named_is_refused_with_78_in_one_line(ini, args, words):
    refused(run_swiftdrop(*with_ini(args, ini)), EX_CONFIG, *words)


# The commands that delete or move mail, given bad arguments, in a container
# full of mail: each would change it, were its arguments taken.
DESTRUCTIVE_CASES = [
    *(pytest.param(["purge", f"--older-than={age}", "--prefix", prefix, "--execute",
                    *(["--include-unprocessed"] if prefix == "cur/" else [])],
                   ["--older-than"], id=f"purge-{prefix}-age-{age}")
      for prefix in ("done/", "cur/") for age in ("-1d", "0", "nan", "1e400", "abc")),
    pytest.param(["purge", "--older-than", "1s", "--prefix", "cur/", "--execute"],
                 ["--include-unprocessed"], id="purge-cur-asked-once"),
    pytest.param(["purge", "--older-than", "1s", "--prefix", "cur", "--execute"],
                 ["--prefix", "'cur'"], id="purge-prefix-without-slash"),
    pytest.param(["purge", "--older-than", "1s", "--execute", "--all"],
                 ["swiftdrop queue purge:", "--all"], id="purge-unknown-flag"),
    pytest.param(["replay", "--execute", "--since", "yesterday"], ["--since", "'yesterday'"],
                 id="replay-since-garbage"),
    pytest.param(["replay", "--execute", "--until", "nan"], ["--until", "'nan'"],
                 id="replay-until-nan"),
    pytest.param(["replay", "--execute", "--all", "--since", "1d"], ["--all", "not both"],
                 id="replay-all-and-window"),
    pytest.param(["replay", "--execute", "{failed}", "--all"], ["not NAMEs with either"],
                 id="replay-name-and-all"),
    pytest.param(["replay", "--execute", "--all", "--from", "processing/"],
                 ["--from", "'processing/'"], id="replay-from-processing"),
    pytest.param(["replay", "--execute", "--all", "--force"],
                 ["swiftdrop queue replay:", "--force"], id="replay-unknown-flag"),
    pytest.param(["finish", "{claimed}", "--state", "done"], ["--token"],
                 id="finish-without-token"),
    pytest.param(["finish", "{claimed}", "--state", "finished", "--token", "{token}"],
                 ["--state", "'finished'"], id="finish-unknown-state"),
    pytest.param(["finish", "{claimed}", "--state", "failed", "--token", "{token}",
                  "--reason", "two\nlines"], ["--reason", "printable"],
                 id="finish-reason-not-printable"),
    pytest.param(["finish", "{claimed}", "--state", "done", "--token", "{token}", "--now"],
                 ["swiftdrop queue finish:", "--now"], id="finish-unknown-flag"),
    pytest.param(["finish", "--state", "done", "--token", "{token}"], ["name", "required"],
                 id="finish-without-name"),
    pytest.param(["claim", "--output", "/nonexistent/message.eml"],
                 ["--output", "'/nonexistent'"], id="claim-output-nowhere"),
]


def mail_in(connection):
    """Every mail object in CONTAINER: name and content digest."""
    _, listing = connection.get_container(CONTAINER, full_listing=True)
    return {(item["name"], item["hash"]) for item in listing
            if item["name"].startswith(MAIL_PREFIXES)}


@pytest.fixture(scope="module")
def full_container(swift, ini):
    """CONTAINER with mail in every state, one message claimed: (its fields, the mail)."""
    connection = swift.connection()
    connection.put_container(CONTAINER)
    names = {}
    for number, prefix in enumerate(("cur/", "cur/", "retry/", "done/", "failed/")):
        name = f"{1_700_000_000 + number}.M{number:06d}P1Q{number}.mx.test,S=10"
        connection.put_object(CONTAINER, prefix + name,
                              f"Subject: {number}\r\n\r\nmessage {number}\r\n".encode())
        names.setdefault(prefix, name)
    claimed = MailQueue(config_module.load(str(ini)).catch_all).claim()
    fields = {"claimed": claimed.name, "token": claimed.token,
              "failed": "failed/" + names["failed/"]}
    return fields, mail_in(connection)


@pytest.mark.parametrize("args, words", DESTRUCTIVE_CASES)
def test_a_refused_destructive_command_leaves_every_object(swift, ini, full_container,
                                                           args, words):
    fields, before = full_container
    result = run_swiftdrop("queue", "--config", str(ini),
                           *(arg.format(**fields) for arg in args))
    refused(result, EX_USAGE, *words)
    assert mail_in(swift.connection()) == before


def test_the_container_holds_what_a_destructive_command_would_take(full_container):
    """The cases above mean something only if there is mail for them to delete or move."""
    _, before = full_container
    held = {name.partition("/")[0] + "/" for name, _ in before}
    assert held == set(MAIL_PREFIXES)


# The parsers as pure functions: any text is refused with ArgumentTypeError,
# or gives a finite number (above zero where it must be).
DURATION_TEXT = st.one_of(
    st.text(),
    st.from_regex(r"\A[-+]?[0-9.eE]{0,12}(nan|inf)?[dhms]?\Z"),
    st.from_regex(r"\A[0-9]{1,400}(\.[0-9]{0,10})?[dhms]?\Z"))
TIME_TEXT = st.one_of(DURATION_TEXT, st.datetimes().map(lambda moment: moment.isoformat()),
                      st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9:.]{2,15})?"
                                    r"(Z|[+-][0-9]{2}:?[0-9]{2})?\Z"))


def parsed(parse, text):
    """`parse(text)`, or None when it refuses the text as argparse expects of a type."""
    try:
        return parse(text)
    except argparse.ArgumentTypeError:
        return None


@FUZZ
@given(DURATION_TEXT)
def test_a_duration_is_refused_or_finite_and_not_below_zero(text):
    seconds = parsed(duration, text)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)


@FUZZ
@given(DURATION_TEXT)
def test_an_age_or_timeout_is_refused_or_finite_and_above_zero(text):
    for parse in (purge_age, positive_duration):
        seconds = parsed(parse, text)
        assert seconds is None or (math.isfinite(seconds) and seconds > 0)


@FUZZ
@given(TIME_TEXT)
def test_a_point_in_time_is_refused_or_finite(text):
    moment = parsed(point_in_time, text)
    assert moment is None or math.isfinite(moment)


@pytest.mark.parametrize("text, seconds", [
    ("30d", 30 * 86400), ("12h", 12 * 3600), ("90m", 90 * 60), ("45s", 45), ("3600", 3600),
    ("0.5", 0.5),
])
def test_a_duration_in_its_units_is_taken(text, seconds):
    assert duration(text) == positive_duration(text) == purge_age(text) == seconds
