"""The webhook under a receiver that misbehaves on purpose (``python -m tests.webhook_faults``)."""
