"""Where recipients are kept (swiftdrop.envelope): the pure logic, without Swift."""

from swiftdrop.envelope import recipient_metadata, recipients

NAME = "cur/1700000000.M1P1Q1.mx.test,S=10"


def read_back(recipient_list):
    """recipients() of what recipient_metadata made, with the side object in memory."""
    metadata, text = recipient_metadata(recipient_list, NAME)
    lowered = {key.lower(): value for key, value in metadata.items()}
    side = {metadata.get("Rcpt-List"): (text or "").encode()}
    return lowered, recipients(lowered, side.__getitem__)


def test_a_short_list_stays_in_the_metadata():
    metadata, found = read_back(["a@example.org", "b@example.org"])
    assert found == ["a@example.org", "b@example.org"]
    assert "rcpt-list" not in metadata
    assert metadata["rcpt-count"] == "2"


def test_addresses_that_would_split_wrongly_or_not_fit_go_beside_the_object():
    for awkward in ['"last, first"@example.org', "x" * 250 + "@example.org"]:
        metadata, found = read_back(["a@example.org", awkward, "b@example.org"])
        assert found == ["a@example.org", awkward, "b@example.org"]
        assert metadata["rcpt-list"] == "envelopes/1700000000.M1P1Q1.mx.test,S=10"
        assert all(len(value.encode()) <= 256 for value in metadata.values())


def test_a_long_list_is_whole_beside_the_object_and_begins_in_the_keys():
    many = [f"user{index}@example.org" for index in range(100)]
    metadata, found = read_back(many)
    assert found == many
    assert metadata["rcpt-to"].startswith("user0@example.org, user1@")
    assert metadata["rcpt-to-2"]
