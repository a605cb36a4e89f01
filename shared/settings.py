"""Process settings, read once from the environment at start-up and passed down.

``Settings.from_env()`` is the only place that reads these variables:

    ASCENT_BROKER_URL         redis://[:password@]host:port/db, rediss://... (unset: embedded Redis)
    ASCENT_STORE              store URI (default file://./ascent-data)
    AWS_ENDPOINT_URL          S3-compatible endpoint, e.g. http://minio:9000 (unset: AWS)
    AWS_DEFAULT_REGION        default us-east-1
    ASCENT_S3_PUBLIC_ENDPOINT endpoint that presigned URLs point at, when clients reach S3 by
                              another name than workers do (unset: AWS_ENDPOINT_URL)
    ASCENT_MAX_ATTEMPTS       deliveries of a shard whose worker process died (killed, out of memory)
                              before its items are recorded failed (default 3; ascent.worker.attempts)
    ASCENT_MAX_RETRIES        retries of a shard after a transient error (network, S3 5xx) before
                              its items are recorded failed (default 5)
    ASCENT_FLOWER_BASIC_AUTH  user:password[,user2:password2] for Flower
    ASCENT_JOBS               extra job modules, module:ATTRIBUTE[,...] (ascent.shared.jobs)
    ASCENT_INPUT_ROOTS        where workers may read inputs, besides their stores: folders or files
                              and s3://bucket/prefix, comma-separated (default none: only the stores)
    ASCENT_ALLOWED_STORES     stores workers may write to besides ASCENT_STORE, comma-separated
    ASCENT_SIGNING_KEY        shared secret; when set, task messages are signed (HMAC-SHA256) and
                              workers discard any message without a valid signature
    ASCENT_MAX_*              limits (ascent.shared.limits: pixels, bytes, items, side, iterations,
                              classes, message size)
    ASCENT_PARENT_PID         a worker of the embedded default dies with this process
    ASCENT_FAULT_INJECT       a testing facility, never for production (ascent.worker.faults)

AWS keys are deliberately not here: boto3 reads ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``
(or a profile, or an instance role) itself, so they can never end up in a task message or a log.
Empty variables count as unset (compose files often write ``VAR=``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from ascent.shared.errors import InvalidInput
from ascent.shared.limits import LIMIT_VARS, Limits

if TYPE_CHECKING:
    from ascent.shared.jobs.base import Job
    from ascent.shared.store import Store

# Field -> environment variable; errors name both so the user knows what to fix.
ENV_VARS: dict[str, str] = {
    "broker_url": "ASCENT_BROKER_URL",
    "store": "ASCENT_STORE",
    "aws_endpoint_url": "AWS_ENDPOINT_URL",
    "aws_region": "AWS_DEFAULT_REGION",
    "s3_public_endpoint_url": "ASCENT_S3_PUBLIC_ENDPOINT",
    "max_attempts": "ASCENT_MAX_ATTEMPTS",
    "max_retries": "ASCENT_MAX_RETRIES",
    "flower_basic_auth": "ASCENT_FLOWER_BASIC_AUTH",
    "jobs": "ASCENT_JOBS",
    "input_roots": "ASCENT_INPUT_ROOTS",
    "allowed_stores": "ASCENT_ALLOWED_STORES",
    "signing_key": "ASCENT_SIGNING_KEY",
    **LIMIT_VARS,
    "parent_pid": "ASCENT_PARENT_PID",
    "fault_inject": "ASCENT_FAULT_INJECT",
}
_INT_FIELDS = ("max_attempts", "max_retries", "parent_pid", *LIMIT_VARS)
_LIST_FIELDS = ("jobs", "input_roots", "allowed_stores")
_HIDDEN = "***"


def redact_url(url: str | None) -> str | None:
    """``url`` with its password replaced by ``***`` (``redis://:secret@h:6379/0`` -> ``redis://:***@h:6379/0``)."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return _HIDDEN  # unparsable: it may still hold a secret
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:{_HIDDEN}@{hostport}"))


def redact_basic_auth(value: str | None) -> str | None:
    """``"alice:pw,bob:pw2"`` -> ``"alice:***,bob:***"``."""
    if not value:
        return value
    return ",".join(f"{pair.split(':', 1)[0]}:{_HIDDEN}" for pair in value.split(","))


def _problem(name: str, reason: str) -> InvalidInput:
    return InvalidInput(f"{ENV_VARS[name]} ({name}): {reason}; fix the setting, retrying will not help")


@dataclass(frozen=True, repr=False)
class Settings:
    """Everything a process needs to know about its surroundings. Immutable; secrets hidden in repr."""

    broker_url: str | None = None
    store: str = "file://./ascent-data"
    aws_endpoint_url: str | None = None
    aws_region: str = "us-east-1"
    s3_public_endpoint_url: str | None = None
    max_attempts: int = 3
    max_retries: int = 5
    flower_basic_auth: str | None = None
    jobs: tuple[str, ...] = ()
    input_roots: tuple[str, ...] = ()
    allowed_stores: tuple[str, ...] = ()
    signing_key: str | None = None
    max_pixels: int = Limits.max_pixels
    max_input_bytes: int = Limits.max_input_bytes
    max_npz_bytes: int = Limits.max_npz_bytes
    max_items: int = Limits.max_items
    max_side: int = Limits.max_side
    max_iters: int = Limits.max_iters
    max_classes: int = Limits.max_classes
    max_message_bytes: int = Limits.max_message_bytes
    parent_pid: int | None = None
    fault_inject: str | None = None

    def __post_init__(self) -> None:
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if name == "parent_pid" and value is None:
                continue
            least, what = (0, "a non-negative integer") if name == "max_retries" else (1, "a positive integer")
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise _problem(name, f"must be {what}, got {value!r}")
        if not isinstance(self.jobs, tuple) or not all(isinstance(j, str) and ":" in j for j in self.jobs):
            raise _problem("jobs", f"must be module:ATTRIBUTE references, got {self.jobs!r}")
        for name in ("input_roots", "allowed_stores"):
            if not isinstance(getattr(self, name), tuple):
                raise _problem(name, "must be a tuple of paths or URIs")
        if self.signing_key is not None and len(self.signing_key) < 16:
            raise _problem("signing_key", "must be at least 16 characters (e.g. openssl rand -hex 32)")
        if self.broker_url is not None and "://" not in self.broker_url:
            raise _problem("broker_url", f"{redact_url(self.broker_url)!r} is not a URL like redis://host:6379/0")
        if not self.store:
            raise _problem("store", "must be a store URI such as file:///data or s3://bucket/prefix")
        for name in ("aws_endpoint_url", "s3_public_endpoint_url"):
            url = getattr(self, name)
            if url is not None and urlsplit(url).scheme not in ("http", "https"):
                raise _problem(name, f"{url!r} must be an http:// or https:// URL")
        if not self.aws_region:
            raise _problem("aws_region", "must not be empty")
        if self.flower_basic_auth is not None and not all(
            ":" in pair and pair.split(":", 1)[0] for pair in self.flower_basic_auth.split(",")
        ):
            raise _problem("flower_basic_auth", "must be user:password (comma-separated for several users)")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the variables listed in the module docstring from ``environ`` (default ``os.environ``).

        Raises InvalidInput naming the variable when a value is malformed."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, var in ENV_VARS.items():
            raw = env.get(var, "").strip()
            if not raw:
                continue
            if name in _INT_FIELDS:
                try:
                    values[name] = int(raw)
                except ValueError:
                    raise _problem(name, f"{raw!r} is not an integer") from None
            elif name in _LIST_FIELDS:
                values[name] = tuple(part.strip() for part in raw.split(",") if part.strip())
            else:
                values[name] = raw
        return cls(**values)

    def with_overrides(self, *, broker: str | None = None, store: str | None = None, **fields: Any) -> Settings:
        """A copy with CLI flags applied; ``None`` means "keep the current value"."""
        changes = {k: v for k, v in fields.items() if v is not None}
        unknown = sorted(set(changes) - set(ENV_VARS))
        if unknown:
            raise InvalidInput(f"unknown setting {unknown[0]!r}; known: {', '.join(ENV_VARS)}")
        if broker is not None:
            changes["broker_url"] = broker
        if store is not None:
            changes["store"] = store
        return dataclasses.replace(self, **changes)

    @property
    def limits(self) -> Limits:
        return Limits(**{name: getattr(self, name) for name in LIMIT_VARS})

    def job_registry(self) -> Mapping[str, Job]:
        """Ascent's jobs and the extra ones these settings name (``ascent.shared.jobs.registry``)."""
        from ascent.shared.jobs import registry

        return registry(self.jobs)

    def store_options(self) -> dict[str, Any]:
        """Keyword arguments for ``open_store`` (used by ``s3://`` stores, ignored by the others)."""
        return {
            "endpoint_url": self.aws_endpoint_url,
            "region": self.aws_region,
            "public_endpoint_url": self.s3_public_endpoint_url,
        }

    def open_store(self, uri: str | None = None) -> Store:
        """The store at ``uri`` (default: this process's ``store``), configured from these settings."""
        from ascent.shared.store import open_store

        return open_store(uri or self.store, **self.store_options())

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict safe to log: passwords in URLs and Flower auth replaced by ``***``."""
        values = dataclasses.asdict(self)
        values["broker_url"] = redact_url(self.broker_url)
        values["store"] = redact_url(self.store)
        values["aws_endpoint_url"] = redact_url(self.aws_endpoint_url)
        values["s3_public_endpoint_url"] = redact_url(self.s3_public_endpoint_url)
        values["flower_basic_auth"] = redact_basic_auth(self.flower_basic_auth)
        values["signing_key"] = _HIDDEN if self.signing_key else None
        return values

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.redacted().items())
        return f"Settings({fields})"

    __str__ = __repr__
