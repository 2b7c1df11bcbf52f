"""The retry schedule: how long a message waits after each failed attempt.

Pure arithmetic on the queue settings, apart from the queue so that
``swiftdrop queue run --help`` can state the schedule without importing
swiftclient.
"""

import random

# Each delay is stretched by up to this share, at random: messages that
# failed together (a consumer down) do not all come due in the same second.
RETRY_JITTER = 0.1


def retry_delay(settings, attempts, jitter=random.random):
    """Seconds before a message is tried again after its `attempts`-th attempt failed.

    ``queue_retry_delay`` doubling per attempt, capped at
    ``queue_retry_longest``, and stretched by up to RETRY_JITTER: so the
    schedule of :func:`retry_schedule` is the least a message waits.
    """
    return retry_step(settings, attempts) * (1 + RETRY_JITTER * jitter())


def retry_step(settings, attempts):
    """The delay after the `attempts`-th failed attempt, without jitter."""
    # min() before the power would overflow: 2 ** 2000 is no float.
    doublings = min(attempts - 1, 64)
    return min(settings.retry_delay * 2 ** doublings, settings.retry_longest)


def retry_schedule(settings):
    """[(attempt, delay after it, seconds since the first attempt failed)], least values.

    The last row is the attempt that goes to failed/ (delay None): its
    elapsed time is how long a consumer may be down before messages do.
    """
    rows, elapsed = [], 0.0
    for attempt in range(1, settings.max_attempts):
        delay = retry_step(settings, attempt)
        rows.append((attempt, delay, elapsed))
        elapsed += delay
    rows.append((settings.max_attempts, None, elapsed))
    return rows
