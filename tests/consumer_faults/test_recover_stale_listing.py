"""The loss the consumer fault suite found, on its own: recover trusting a stale listing.

A message has just moved from processing/ to retry/ (by a worker's finish
with exit 75, or by another recover); the container listing still shows
the deleted processing/ entry, as a lagging listing, or one taken during
that move, does. recover then keeps the copy "furthest along" by the
listing and deleted retry/NAME, the only copy, before it looked at
processing/NAME. recover now looks at processing/NAME first, under the
lock, and settles nothing on a listing's word alone.
"""

import subprocess

import swiftclient

from tests.consumer_faults.proxy import ConsumerProxy
from tests.support.filterproc import swiftdrop_command

NAME = "1796190000.M000001P1Q1.mx.consumer-faults.swiftdrop.test,S=5"


def test_recover_keeps_the_only_copy_when_the_listing_lags(swift, tmp_path):
    direct = swift.connection()
    direct.put_container("stale-listing")
    direct.put_object("stale-listing", "retry/" + NAME, b"hello",
                      headers={"X-Object-Meta-Not-Before": "0"})
    direct.put_object("stale-listing", "processing/" + NAME, b"hello")
    with ConsumerProxy(swift.port) as proxy:
        proxy.listing_lag = 600
        through = swiftclient.Connection(authurl=proxy.auth_url, user="test:tester",
                                         key="testing", auth_version="1")
        through.get_container("stale-listing")  # the proxy has seen both entries
        through.delete_object("stale-listing", "processing/" + NAME)  # the move's delete
        ini = tmp_path / "swiftdrop.ini"
        ini.write_text("[DEFAULT]\nrecipient = DEFAULT\ncontainer = stale-listing\n"
                       f"auth_version = 1\nauthurl = {proxy.auth_url}\nuser = test:tester\n"
                       "key = testing\ntimeout = 2\nretries = 1\nqueue_lease = 8\n")
        ini.chmod(0o640)
        recovered = subprocess.run(swiftdrop_command("queue", "--config", str(ini), "recover"),
                                   capture_output=True, text=True, timeout=120, check=False)
    assert recovered.returncode == 0, recovered.stderr
    left = [item["name"] for item in direct.get_container("stale-listing", full_listing=True)[1]
            if not item["name"].startswith(("locks/", "retry-at/"))]
    assert left == ["retry/" + NAME], recovered.stdout
