"""The retry schedule and the exit-status contract: pure logic, no Swift."""

import signal

import pytest

from swiftdrop.cli import retry_schedule_text, span
from swiftdrop.config import QueueSettings
from swiftdrop.retries import RETRY_JITTER, retry_delay, retry_schedule
from swiftdrop.worker import judge

DAY = 24 * 3600


def test_the_default_schedule_outlasts_a_day_of_consumer_downtime():
    rows = retry_schedule(QueueSettings())
    delays = [delay for _, delay, _ in rows[:-1]]
    assert delays[:8] == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert set(delays[6:]) == {3600}  # the doubling stops at queue_retry_longest
    last_attempt, no_delay, elapsed = rows[-1]
    assert (last_attempt, no_delay) == (30, None)
    assert DAY <= elapsed == 86580 < DAY + 3600


def test_the_jitter_only_lengthens_a_delay_and_by_a_tenth_at_most():
    settings = QueueSettings(retry_delay=10, retry_longest=100)
    assert retry_delay(settings, 1, jitter=lambda: 0.0) == 10
    assert retry_delay(settings, 3, jitter=lambda: 1.0) == pytest.approx(40 * (1 + RETRY_JITTER))
    assert retry_delay(settings, 5000, jitter=lambda: 0.5) == pytest.approx(105)


def test_run_s_help_states_the_schedule_in_time():
    text = " ".join(retry_schedule_text().split())
    assert "1 min, 2 min, 4 min, 8 min, 16 min, 32 min, 1 h" in text
    assert "attempt 30 comes at least 24 h 3 min after attempt 1 failed" in text
    assert (span(30), span(120), span(7200), span(86580)) == ("30 s", "2 min", "2 h",
                                                              "24 h 3 min")


@pytest.mark.parametrize(("status", "killed_because", "expected"), [
    (0, None, ("done", "exit status 0")),
    (65, None, ("failed", "exit status 65")),
    (75, None, ("retry", "exit status 75")),
    (1, None, ("retry", "exit status 1")),
    (2, None, ("retry", "exit status 2")),
    (-signal.SIGKILL, None, ("retry", "killed by SIGKILL")),
    (-signal.SIGSEGV, None, ("retry", "killed by SIGSEGV")),
    (-9, "timed out after 900 s", ("retry", "timed out after 900 s")),
    (0, "timed out after 900 s", ("retry", "timed out after 900 s")),
])
def test_only_0_and_65_are_final_and_everything_else_is_a_retry(status, killed_because,
                                                                 expected):
    assert judge(status, killed_because) == expected
