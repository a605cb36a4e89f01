"""docker/kubernetes/: the multi-machine deployment, checked by parsing (no cluster here).

Every container on our images runs a command our CLI parser accepts and gets only settings ascent reads;
Redis is persistent and wants a password; secrets come only from the Secret; one GPU per worker pod;
Flower behind basic auth; KEDA scales the worker Deployment on the Redis list the tasks wait in.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from ascent.shared.queue import DEFAULT_QUEUE, create_app
from ascent.shared.settings import ENV_VARS, Settings
from tests.test_docker import SECRET_NAME, cli_error

KUBERNETES = Path(__file__).resolve().parents[1] / "docker" / "kubernetes"
KUSTOMIZATION = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
DOCUMENTS: list[dict[str, Any]] = [
    doc for name in KUSTOMIZATION["resources"] for doc in yaml.safe_load_all((KUBERNETES / name).read_text()) if doc
]
SECRET = "ascent"
OUR_IMAGES = ("ascent-worker", "ascent-producer")


def objects(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in DOCUMENTS if doc["kind"] == kind}


def pod_specs() -> dict[str, dict[str, Any]]:
    workloads = {**objects("Deployment"), **objects("StatefulSet")}
    return {name: w["spec"]["template"]["spec"] for name, w in workloads.items()}


def containers() -> list[tuple[str, dict[str, Any]]]:
    return [(name, c) for name, spec in pod_specs().items() for c in spec["containers"]]


def ours() -> list[tuple[str, dict[str, Any]]]:
    return [(n, c) for n, c in containers() if c["image"].split(":")[0].rsplit("/", 1)[-1] in OUR_IMAGES]


def resolved_env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the cluster would give it: ConfigMap entries, secrets as
    placeholders ``<key-from-the-secret>``, and ``$(VAR)`` references expanded."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(objects("ConfigMap")[source["configMapRef"]["name"]]["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], var["value"])
        else:
            env[var["name"]] = f"<{var['valueFrom']['secretKeyRef']['key']}-from-the-secret>"
    return env


def test_every_file_here_is_a_resource_of_the_kustomization():
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert files == set(KUSTOMIZATION["resources"])
    assert {doc["kind"] for doc in DOCUMENTS} >= {"Deployment", "StatefulSet", "Service", "ScaledObject"}


def test_each_container_on_our_images_runs_a_command_the_cli_accepts():
    assert {n for n, _ in ours()} == {"ascent-worker", "flower"}
    for name, container in ours():
        argv = container["command"] + container.get("args", [])
        assert argv[0] == "ascent", f"{name} runs {argv}, not the ascent CLI"
        error = cli_error(argv[1:])
        assert error is None, f"{name}: `{' '.join(argv)}`: {error}"
    assert cli_error(["worker", "--gpus", "1"]) is not None  # the parser does refuse


def test_containers_get_only_settings_that_ascent_reads_and_they_are_valid():
    known = set(ENV_VARS.values()) | {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "REDIS_PASSWORD", "TORCH_HOME"}
    for name, container in ours():
        env = resolved_env(container)
        assert set(env) <= known, f"{name}: ascent does not read {sorted(set(env) - known)}"
        env["ASCENT_FLOWER_BASIC_AUTH"] = "user:password"  # a placeholder until the Secret fills it in
        settings = Settings.from_env(env)
        assert settings.broker_url == "redis://:<redis-password-from-the-secret>@redis:6379/0", name


def test_no_secret_is_written_in_a_manifest():
    secret_keys = set()
    for name, container in containers():
        for var in container.get("env", []):
            if SECRET_NAME.search(var["name"]):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                assert ref and ref["name"] == SECRET, f"{name}: {var['name']} must come from the Secret"
                secret_keys.add(ref["key"])
            elif "value" in var:
                for password in re.findall(r"://[^:@/\s]*:([^@/\s]*)@", var["value"]):
                    assert password == "$(REDIS_PASSWORD)", f"{name}: a password written in {var['name']}"
    assert not objects("Secret"), "the Secret is created with kubectl, never committed"
    readme = (KUBERNETES / "kustomization.yaml").read_text()
    assert all(f"--from-literal={key}=" in readme for key in secret_keys), "the setup creates every key"


def test_redis_keeps_tasks_on_a_volume_and_wants_the_secrets_password():
    redis = objects("StatefulSet")["redis"]
    args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    assert pairs["--appendonly"] == "yes" and pairs["--maxmemory-policy"] == "noeviction"
    assert pairs["--requirepass"] == "$(REDIS_PASSWORD)"
    mounts = redis["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    claims = [t["metadata"]["name"] for t in redis["spec"]["volumeClaimTemplates"]]
    assert {"name": claims[0], "mountPath": "/data"} in mounts


def test_one_gpu_and_one_pool_process_per_worker_pod_and_time_to_finish_a_shard():
    pod = pod_specs()["ascent-worker"]
    (worker,) = pod["containers"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    argv = worker["command"]
    assert argv[argv.index("--concurrency") + 1] == "1"
    assert pod["terminationGracePeriodSeconds"] >= 300


def test_flower_requires_basic_auth_from_the_secret():
    (flower,) = pod_specs()["flower"]["containers"]
    auth = next(v for v in flower["env"] if v["name"] == ENV_VARS["flower_basic_auth"])
    assert auth["valueFrom"]["secretKeyRef"]["name"] == SECRET
    assert objects("Service")["flower"]["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_services_select_the_pods_they_front():
    labels = {
        name: w["spec"]["template"]["metadata"]["labels"]
        for name, w in {**objects("Deployment"), **objects("StatefulSet")}.items()
    }
    for name, workload in {**objects("Deployment"), **objects("StatefulSet")}.items():
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels[name].items(), name
    for name, service in objects("Service").items():
        selector = service["spec"]["selector"].items()
        assert any(selector <= pod.items() for pod in labels.values()), f"service {name} selects no pod"


@pytest.mark.parametrize("scaled", objects("ScaledObject").values(), ids=lambda s: s["metadata"]["name"])
def test_keda_scales_the_worker_deployment_on_the_list_celery_fills(scaled):
    assert scaled["spec"]["scaleTargetRef"]["name"] in objects("Deployment")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    # The list is the queue our tasks are routed to, on the host, port and database the workers use.
    app = create_app(Settings(broker_url="redis://:pw@redis:6379/0"))
    try:
        assert app.conf.task_default_queue == DEFAULT_QUEUE == trigger["metadata"]["listName"]
    finally:
        app.close()
    service = objects("Service")["redis"]["spec"]["ports"][0]["port"]
    assert trigger["metadata"]["address"] == f"redis:{service}"
    assert trigger["metadata"]["databaseIndex"] == "0"
    auth = objects("TriggerAuthentication")[trigger["authenticationRef"]["name"]]
    assert auth["spec"]["secretTargetRef"] == [{"parameter": "password", "name": SECRET, "key": "redis-password"}]
