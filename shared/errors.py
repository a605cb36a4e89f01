"""One error hierarchy. Every error says whether retrying can help.

``InvalidInput`` and ``InvalidSpec`` are permanent (the item or job is wrong: fix it, do not retry);
``TransientError`` is worth retrying with backoff (network, S3 5xx, a broker that went away).
"""

from __future__ import annotations


class AscentError(Exception):
    """Base of every error ascent raises on purpose."""

    retryable: bool = False


class InvalidInput(AscentError, ValueError):
    """An argument, image or item is unusable; retrying gives the same result."""


class InvalidSpec(InvalidInput):
    """A job spec field is wrong. ``field`` names it (dotted path, e.g. ``params.lr``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class ModelNotFound(InvalidInput):
    """Unknown model name or a checkpoint that cannot be loaded."""


class StoreError(AscentError):
    """A store operation failed."""


class NotFoundInStore(StoreError, KeyError):
    """The key does not exist in the store (permanent)."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else "not found"


class TransientError(AscentError):
    """A fault that may pass: network, throttling, 5xx. Retry with backoff."""

    retryable = True


class StoreUnavailable(TransientError):
    """The store cannot be written right now (full, read-only, unreachable). Nothing may be lost to
    it: the work is retried, with backoff, until the store takes it again."""


class AlreadyExists(StoreError):
    """A conditional write found the key already there (permanent for that key)."""


class RunCancelled(AscentError):
    """The run was cancelled (``ascent cancel``): the work in hand stops and is recorded cancelled."""
