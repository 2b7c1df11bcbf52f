"""The short fault suite: each fault on its own, then all of them mixed at random.

Real Postfix, the real filter (supervised like systemd would), the real
Swift behind the fault proxy. Every scenario must keep the promise: no
message with a 250 missing or different in Swift, every deferred message
stored once the fault is over, no object that is partial or of no message.
The full run with 1,000 messages is ``python -m tests.faults``.
"""

import pytest

from tests.faults.rig import FAULTS, Rig, run_scenario

# The fault rig (Postfix, supervisor, fault proxy): left out of the quick loop.
pytestmark = pytest.mark.slow

MESSAGES = 20
MIXED_MESSAGES = 50
# Faults the sender must notice (a 4xx), and faults it must not notice at all.
FELT = {"swift-stopped", "swift-503", "swift-507", "swift-slow", "connection-cut-mid-upload",
        "filter-killed-mid-upload", "filter-killed-before-reply", "spool-full"}
UNFELT = {"token-revoked", "token-expired", "postfix-reload"}


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    with Rig(tmp_path_factory.mktemp("faults")) as running:
        yield running


def assert_promise_kept(summary):
    print(summary.table())
    assert summary.no_reply == 0, "Postfix closed a session without a reply"
    assert summary.replies_5xx == 0
    assert summary.lost == 0
    assert summary.unresolved == 0, "a deferred message was not stored after the fault"
    assert (summary.corrupt, summary.bad_etag, summary.stray) == (0, 0, 0)
    assert summary.stored == summary.sent
    assert summary.replies_250 == summary.sent
    for reason in summary.duplicate_reasons:
        assert reason.startswith("4xx after the object landed"), reason


@pytest.mark.parametrize("fault", list(FAULTS))
def test_fault_on_its_own_loses_nothing(rig, fault):
    if fault == "spool-full" and rig.spool_dir is None:
        pytest.skip("cannot mount a tmpfs for the spool here")
    summary = run_scenario(rig, fault, [fault], MESSAGES, hold=(2, 3), gap=(2, 5),
                           big_share=0.6 if fault == "spool-full" else 0.08)
    assert_promise_kept(summary)
    assert summary.injected.get(fault, 0) >= 1
    if fault in FELT:
        assert summary.replies_4xx >= 1, "the fault never reached the sender"
    if fault in UNFELT:
        assert summary.replies_4xx == 0
    if fault.startswith("token-"):
        # The filter's first authentication, then exactly one per lost token:
        # no storm of re-authentications, and no 451 (asserted above).
        assert summary.auth_requests == 1 + summary.injected[fault]
    if fault.startswith("filter-killed"):
        assert summary.filter_restarts == summary.injected[fault]
        # The socket stayed open while no filter ran: Postfix waited in its backlog.
        assert "connect to proxy filter" not in rig.postfix.maillog()
    if fault == "spool-full":
        assert set(summary.deferrals) == {"451 4.3.0 Error: queue file write error"}
        assert list(rig.spool_dir.iterdir()) == [], "the spool kept something"


def test_all_faults_mixed_at_random_lose_nothing(rig):
    faults = [name for name in FAULTS if name != "spool-full" or rig.spool_dir is not None]
    summary = run_scenario(rig, "mixed", faults, MIXED_MESSAGES, seed=7, hold=(2, 3),
                           gap=(1, 3), big_share=0.08)
    assert_promise_kept(summary)
    # How many faults fit in 50 messages depends on the machine's speed; drawn
    # from a shuffled deck, each injection is a different fault until all came.
    assert len(summary.injected) >= 3
    token_faults = summary.injected.get("token-revoked", 0) + summary.injected.get(
        "token-expired", 0)
    assert summary.auth_requests <= 1 + token_faults + summary.filter_restarts
    # Across every fault so far (tokens revoked, re-auths, crashes, 401s): the
    # key and the tokens never reach a log.
    logs = rig.filter.log_path.read_text(errors="replace") + rig.postfix.maillog()
    assert "stored" in logs
    assert "testing" not in logs and "AUTH_tk" not in logs
