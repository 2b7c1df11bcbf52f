"""The webhook books and the receiver's policy on their own: pure logic, no Swift, no server."""

from tests.support.webhook_receiver import Policy
from tests.webhook_faults.books import Post, classify

STORED = {"a": "sha-a", "b": "sha-b"}


def post(name, delivery, status, *, redelivered=None, at=None, digest=None, signature_ok=True):
    return Post(id=f"c/{name}", name=name, number=0, nth=delivery, delivery=delivery,
                redelivered=redelivered or ("1" if delivery > 1 else "0"), replayed=0,
                signature_ok=signature_ok, behaviour=str(status), status=status,
                digest=digest or STORED.get(name, "?"), time=at if at is not None else delivery)


def books(posts, *, refused=(), done=("a", "b"), failed=None):
    return classify(STORED, set(refused), posts, set(done), failed or {})


def test_once_marked_refused():
    result = books([post("a", 1, 503), post("a", 2, 200), post("b", 1, 200), post("b", 2, 204)])
    assert result.counts == {"once": 1, "marked": 1, "refused": 0, "silent": 0, "lost": 0}
    assert result.repeats_after_2xx == 1 and result.promise_kept
    refused = books([post("a", 1, 200), post("b", 1, 0), post("b", 2, 406)], refused={"b"},
                    done={"a"}, failed={"b": "HTTP 406 Not Acceptable"})
    assert refused.counts["refused"] == 1 and refused.promise_kept


def test_a_repeat_after_a_2xx_without_its_mark_is_silent():
    result = books([post("a", 1, 200), post("a", 2, 200, redelivered="0"), post("b", 1, 200)])
    assert result.counts["silent"] == 1 and not result.promise_kept
    same_delivery = books([post("a", 1, 200), post("a", 1, 200, at=5), post("b", 1, 200)])
    assert same_delivery.counts["silent"] == 1


def test_lost_never_2xx_or_not_done_or_refused_without_its_406():
    assert books([post("a", 1, 500), post("b", 1, 200)]).counts["lost"] == 1
    assert books([post("a", 1, 200), post("b", 1, 200)], done={"a"}).counts["lost"] == 1
    wrong_error = books([post("a", 1, 200), post("b", 1, 500)], refused={"b"}, done={"a"},
                        failed={"b": "gave up after 25 attempts; last: HTTP 500"})
    assert wrong_error.counts["lost"] == 1
    answered = books([post("a", 1, 200), post("b", 1, 200)], refused={"b"}, done={"a", "b"})
    assert answered.counts["lost"] == 1  # a refused message must never get a 2xx


def test_bad_signature_other_body_or_stranger_is_no_delivery():
    result = books([post("a", 1, 200, signature_ok=False), post("b", 1, 200, digest="other"),
                    post("z", 1, 200)])
    assert (result.bad_signatures, result.corrupt, result.strays) == (1, 1, 1)
    assert result.counts["lost"] == 2 and not result.promise_kept


def test_policy_is_seeded_meets_every_misbehaviour_and_ends_in_the_final_answer():
    policy = Policy(7, timeout=2, refused={3})
    again = Policy(7, timeout=2, refused={3})
    draws = [(n, k) for n in range(1, 200) for k in range(1, 5)]
    assert [policy.choose(*d) for d in draws] == [again.choose(*d) for d in draws]
    firsts = {policy.choose(number, 1).label for number in range(1, 9) if number != 3}
    assert {"500", "503", "429", "reset", "hang", "200 slow"} <= firsts
    assert policy.choose(3, 3).status == 406 and policy.choose(4, 3).status in (200, 201, 202, 204)
    assert all(policy.choose(3, k).status != 200 for k in range(1, 4))
