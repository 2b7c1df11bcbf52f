"""Fault suite: the promise (250 only when stored, else 4xx and nothing lost) under fire.

``test_faults.py`` is the short variant every pytest run collects;
``python -m tests.faults`` is the full run (see docs/testing.md, "Fault suite").
"""
