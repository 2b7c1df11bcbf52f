"""How long a queue lock lasts for sure.

A lock is worth what its holder can be sure of by its own clock: it counts
its lease from just before it sent the request that set it, less
``margin``. Swift keeps a lock object's expiry in whole seconds, rounded
down, so the object can vanish up to a second before "lease seconds after
our request" (LEASE_MARGIN); the rest is for the clocks.

Nothing here sends a request itself.
"""

# Swift stores X-Delete-At in whole seconds, rounded down.
SWIFT_ROUNDING = 1.0
# Our clock against Swift's or Redis's over one lease; and the servers' among themselves.
CLOCK_MARGIN = 0.5
LEASE_MARGIN = SWIFT_ROUNDING + CLOCK_MARGIN
