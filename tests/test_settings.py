"""Settings: read once from the environment, overridden by CLI flags, never showing a secret."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ascent.shared.errors import InvalidInput
from ascent.shared.s3store import S3Store
from ascent.shared.settings import ENV_VARS, Settings, redact_basic_auth, redact_url
from ascent.shared.store import FileStore


def test_defaults_when_nothing_is_set() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.broker_url is None  # embedded Redis
    assert settings.store == "file://./ascent-data"
    assert settings.aws_endpoint_url is None
    assert settings.aws_region == "us-east-1"
    assert settings.max_attempts == 3
    assert settings.max_pixels == 64_000_000
    assert settings.flower_basic_auth is None


def test_every_variable_is_read() -> None:
    environ = {
        "ASCENT_BROKER_URL": "redis://:pw@redis:6379/0",
        "ASCENT_STORE": "s3://ascent/runs",
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "ASCENT_S3_PUBLIC_ENDPOINT": "http://localhost:9000",
        "ASCENT_MAX_ATTEMPTS": "5",
        "ASCENT_MAX_RETRIES": "0",
        "ASCENT_MAX_PIXELS": "1_000_000",
        "ASCENT_FLOWER_BASIC_AUTH": "admin:hunter2",
        "ASCENT_JOBS": "my_jobs:BLUR, my_jobs:SHARPEN",
        "ASCENT_INPUT_ROOTS": "/data/in, s3://inputs/val",
        "ASCENT_ALLOWED_STORES": "s3://other/runs",
        "ASCENT_SIGNING_KEY": "0123456789abcdef-secret",
        "ASCENT_MAX_INPUT_BYTES": "1000",
        "ASCENT_MAX_NPZ_BYTES": "2000",
        "ASCENT_MAX_ITEMS": "30",
        "ASCENT_MAX_SIDE": "512",
        "ASCENT_MAX_ITERS": "40",
        "ASCENT_MAX_CLASSES": "50",
        "ASCENT_MAX_MESSAGE_BYTES": "60000",
        "ASCENT_PARENT_PID": "4242",
        "ASCENT_FAULT_INJECT": "sleep:000001:2",
    }
    assert set(environ) == set(ENV_VARS.values())
    settings = Settings.from_env(environ)
    assert settings == Settings(
        broker_url="redis://:pw@redis:6379/0",
        store="s3://ascent/runs",
        aws_endpoint_url="http://minio:9000",
        aws_region="eu-west-1",
        s3_public_endpoint_url="http://localhost:9000",
        max_attempts=5,
        max_retries=0,
        max_pixels=1_000_000,
        flower_basic_auth="admin:hunter2",
        jobs=("my_jobs:BLUR", "my_jobs:SHARPEN"),
        input_roots=("/data/in", "s3://inputs/val"),
        allowed_stores=("s3://other/runs",),
        signing_key="0123456789abcdef-secret",
        max_input_bytes=1000,
        max_npz_bytes=2000,
        max_items=30,
        max_side=512,
        max_iters=40,
        max_classes=50,
        max_message_bytes=60000,
        parent_pid=4242,
        fault_inject="sleep:000001:2",
    )
    assert "0123456789abcdef-secret" not in repr(settings)


def test_empty_variables_count_as_unset() -> None:
    assert Settings.from_env({"ASCENT_BROKER_URL": "", "ASCENT_MAX_ATTEMPTS": " ", "ASCENT_STORE": ""}) == Settings()


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASCENT_MAX_ATTEMPTS", "7")
    monkeypatch.delenv("ASCENT_BROKER_URL", raising=False)
    assert Settings.from_env().max_attempts == 7


def test_aws_keys_are_never_part_of_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-key")
    settings = Settings.from_env()
    assert "very-secret-key" not in repr(settings)
    assert "AKIAEXAMPLE" not in repr(settings)
    # The only secret field is the signing key, which repr hides (test_every_variable_is_read).
    names = {f.name for f in dataclasses.fields(Settings)}
    assert {n for n in names if "secret" in n or "key" in n} == {"signing_key"}


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("ASCENT_MAX_ATTEMPTS", "three", "not an integer"),
        ("ASCENT_MAX_ATTEMPTS", "2.5", "not an integer"),
        ("ASCENT_MAX_ATTEMPTS", "0", "positive integer"),
        ("ASCENT_MAX_PIXELS", "-1", "positive integer"),
        ("ASCENT_BROKER_URL", "localhost", "not a URL"),
        ("AWS_ENDPOINT_URL", "minio:9000", "http"),
        ("ASCENT_S3_PUBLIC_ENDPOINT", "ftp://x", "http"),
        ("ASCENT_FLOWER_BASIC_AUTH", "admin", "user:password"),
        ("ASCENT_FLOWER_BASIC_AUTH", ":pw", "user:password"),
    ],
)
def test_invalid_values_name_the_variable(variable: str, value: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason) as info:
        Settings.from_env({variable: value})
    assert variable in str(info.value)
    assert not info.value.retryable


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().max_attempts = 9  # type: ignore[misc]


def test_overrides_replace_only_what_is_given() -> None:
    base = Settings.from_env({"ASCENT_BROKER_URL": "redis://env:6379/0", "ASCENT_MAX_ATTEMPTS": "4"})
    assert base.with_overrides() == base
    assert base.with_overrides(broker=None, store=None) == base
    changed = base.with_overrides(broker="redis://cli:6379/1", store="s3://b/p", max_pixels=1000)
    assert (changed.broker_url, changed.store, changed.max_pixels) == ("redis://cli:6379/1", "s3://b/p", 1000)
    assert changed.max_attempts == 4
    assert base.broker_url == "redis://env:6379/0"  # the original is untouched


def test_overrides_are_validated_too() -> None:
    with pytest.raises(InvalidInput, match="ASCENT_BROKER_URL"):
        Settings().with_overrides(broker="not-a-url")
    with pytest.raises(InvalidInput, match="unknown setting 'colour'"):
        Settings().with_overrides(colour="blue")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:secret@host:6379/0", "redis://:***@host:6379/0"),
        ("rediss://user:secret@host:6380/0", "rediss://user:***@host:6380/0"),
        ("redis://user:p%40ss@host/0", "redis://user:***@host/0"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("redis://user@host:6379/0", "redis://user@host:6379/0"),
        (None, None),
    ],
)
def test_redact_url_hides_only_the_password(url: str | None, shown: str | None) -> None:
    assert redact_url(url) == shown


def test_redact_basic_auth_keeps_user_names() -> None:
    assert redact_basic_auth("alice:pw1,bob:pw:2") == "alice:***,bob:***"


def test_repr_str_and_redacted_never_show_a_password() -> None:
    settings = Settings(broker_url="redis://:brokersecret@redis:6379/0", flower_basic_auth="admin:flowersecret")
    for shown in (repr(settings), str(settings), str(settings.redacted()), f"{settings}"):
        assert "brokersecret" not in shown and "flowersecret" not in shown
        assert "redis://:***@redis:6379/0" in shown and "admin:***" in shown
    assert settings.broker_url == "redis://:brokersecret@redis:6379/0"  # the real value is still there


def test_open_store_uses_the_store_and_the_s3_options() -> None:
    settings = Settings(store="s3://ascent/runs", aws_endpoint_url="http://minio:9000", aws_region="eu-west-1")
    store = settings.open_store()
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.endpoint_url, store.region) == (
        "ascent",
        "runs/",
        "http://minio:9000",
        "eu-west-1",
    )
    assert store.public_endpoint_url == "http://minio:9000"


def test_open_store_with_a_file_uri(tmp_path: Path) -> None:
    assert isinstance(Settings().open_store(f"file://{tmp_path}"), FileStore)


def test_a_bare_rediss_url_verifies_the_server_certificate():
    import ssl

    from ascent.shared.queue import create_app
    from ascent.shared.settings import Settings

    app = create_app(Settings.from_env({"ASCENT_BROKER_URL": "rediss://:pw@redis.example:6380/0"}))
    assert app.conf.broker_use_ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    explicit = "rediss://:pw@redis.example:6380/0?ssl_cert_reqs=optional"
    assert create_app(Settings.from_env({"ASCENT_BROKER_URL": explicit})).conf.broker_use_ssl is None
    assert create_app(Settings.from_env({"ASCENT_BROKER_URL": "redis://localhost:6379/0"})).conf.broker_use_ssl is None
