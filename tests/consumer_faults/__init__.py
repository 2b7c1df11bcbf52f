"""The consumer fault suite: every hand-over of `swiftdrop queue run` on the books.

See docs/testing.md ("Consumer fault suite") and ``python -m tests.consumer_faults --help``.
"""
