"""Task messages: the JSON body of one shard task, ``{"version", "spec", "shard"}``, optionally signed.

With a signing key (``ASCENT_SIGNING_KEY``, the same on producers and workers) every message carries
``signature``: HMAC-SHA256 of its canonical JSON without that field. A worker with a key verifies it
before it reads anything else and discards (never runs) a message that has no valid signature, so
only holders of the key can have work done; see docs/reliability.md for the threat model.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ascent.shared.errors import InvalidInput, InvalidSpec
from ascent.shared.limits import Limits
from ascent.shared.spec import SPEC_VERSION, JobSpec, Shard

if TYPE_CHECKING:
    from ascent.shared.jobs.base import Job

SIGNATURE = "signature"


class BadSignature(InvalidInput):
    """A message without a valid signature reached a worker that has a signing key."""


def canonical(body: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: sorted keys, no spaces, ASCII, no NaN."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def signature(body: Mapping[str, Any], key: str) -> str:
    unsigned = {k: v for k, v in body.items() if k != SIGNATURE}
    return hmac.new(key.encode(), canonical(unsigned), hashlib.sha256).hexdigest()


def task_message(spec: JobSpec, shard: Shard, key: str | None = None) -> dict[str, Any]:
    """The JSON body of one shard task, signed with ``key`` when one is given."""
    body: dict[str, Any] = {"version": SPEC_VERSION, "spec": spec.to_dict(), "shard": shard.to_dict()}
    if key:
        body[SIGNATURE] = signature(body, key)
    return body


def parse_task_message(
    message: Any,
    jobs: Mapping[str, Job] | None = None,
    limits: Limits | None = None,
    key: str | None = None,
) -> tuple[JobSpec, Shard]:
    """Inverse of ``task_message``. With ``key`` the signature is checked first (BadSignature); with
    ``limits`` the message size and the spec's limits. Raises InvalidSpec on a malformed message."""
    if not isinstance(message, Mapping):
        raise InvalidSpec("message", "a task message must be a JSON object")
    if key:
        given = message.get(SIGNATURE)
        if not isinstance(given, str) or not hmac.compare_digest(given, signature(message, key)):
            raise BadSignature("the message is unsigned or its signature is wrong (ASCENT_SIGNING_KEY)")
    if limits is not None:
        try:
            size = len(canonical(message))
        except (TypeError, ValueError):
            raise InvalidSpec("message", "not strict JSON (NaN, infinity or a non-JSON value)") from None
        limits.check("max_message_bytes", size, "message size in bytes")
    if message.get("version") != SPEC_VERSION:
        raise InvalidSpec("message.version", f"unsupported message version {message.get('version')!r}")
    return JobSpec.from_dict(message.get("spec"), jobs, limits), Shard.from_dict(message.get("shard"))
