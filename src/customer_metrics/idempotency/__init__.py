"""Idempotency keys: one effect per key, the first completed response replayed for repeats."""
