"""The test servers' port allocator: no port handed out twice, none already bound."""

import socket

from tests.support import ports


def test_ports_are_below_the_ephemeral_range_and_never_handed_out_twice(monkeypatch):
    # The same random start for every call: only the locks keep them apart.
    monkeypatch.setattr(ports.random, "randrange", lambda low, high: low + 500)
    first, second = ports.reserve_port(), ports.reserve_port()
    assert first != second
    assert max(first, second) < ports._ephemeral_range()[0]


def test_a_port_someone_else_listens_on_is_skipped(monkeypatch):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))  # an ephemeral port: no test server's
        taken = squatter.getsockname()[1]
        squatter.listen()
        # Pretend the range starts right at the squatter's port.
        monkeypatch.setattr(ports, "_ephemeral_range", lambda: (taken + 2000, 60999))
        monkeypatch.setattr(ports.random, "randrange", lambda low, high: taken)
        assert ports.reserve_port() != taken
