from swiftdrop.config import Account, Config, Destination
from swiftdrop.routing import Router

ACCOUNT = Account(authurl="http://127.0.0.1:1/auth/v1.0", user="a:u", key="k")
OTHER_ACCOUNT = Account(authurl="http://127.0.0.1:1/auth/v1.0", user="b:u", key="k")


def config(*named):
    return Config("test.ini", (Destination("DEFAULT", (), "fallback", ACCOUNT), *named))


def test_unlisted_recipients_go_to_the_catch_all():
    router = Router(config(Destination("PROD", ("prod@example.com",), "prod", ACCOUNT)))
    [delivery] = router.route(["someone@example.com", "other@test.example"])
    assert delivery.destination.section == "DEFAULT"
    assert delivery.recipients == ("someone@example.com", "other@test.example")


def test_match_is_case_insensitive_on_the_full_address():
    router = Router(config(Destination("PROD", ("prod@example.com",), "prod", ACCOUNT)))
    assert router.destination_for("Prod@EXAMPLE.com").section == "PROD"
    assert router.destination_for("prod@example.org").section == "DEFAULT"


def test_one_copy_per_distinct_account_and_container():
    router = Router(config(
        Destination("A", ("a1@x.test", "a2@x.test"), "shared", ACCOUNT),
        Destination("B", ("b@x.test",), "shared", ACCOUNT),          # same target as A
        Destination("C", ("c@x.test",), "shared", OTHER_ACCOUNT),    # same name, other account
    ))
    deliveries = router.route(["a1@x.test", "c@x.test", "b@x.test", "a2@x.test", "z@x.test"])
    assert [(d.destination.section, d.recipients) for d in deliveries] == [
        ("A", ("a1@x.test", "b@x.test", "a2@x.test")),
        ("C", ("c@x.test",)),
        ("DEFAULT", ("z@x.test",)),
    ]
