"""deploy/ kept in step with the code: the compose file, the Helm values, the instance config and the cluster's code
location parse, name files and settings that exist, agree with each other, and keep secrets out."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import dagster as dg
import pytest
import yaml

from ai_assets.dagster import gpu_tags

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
WORKDIR = "/opt/ai_assets"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture
def cluster_defs(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    for key, value in {"DAGSTER_CELERY_BROKER_URL": "redis://127.0.0.1:1/0", "AI_ASSETS_JOURNAL": "x.sqlite",
                       "OPENAI_API_KEY": "sk-deploy-test", "AWS_ENDPOINT_URL": "http://127.0.0.1:1"}.items():
        monkeypatch.setenv(key, value)
    spec = importlib.util.spec_from_file_location("cluster_definitions", DEPLOY / "cluster" / "code_location.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "cluster_definitions", module)
    spec.loader.exec_module(module)
    return module


def dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def test_the_image_holds_what_the_commands_name() -> None:
    text = dockerfile()
    assert f"WORKDIR {WORKDIR}" in text and "COPY deploy ./deploy" in text
    extras = re.search(r'pip install --no-cache-dir "\.\[([a-z0-9,]+)\]"', text)
    assert extras is not None
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras.group(1).split(",")) <= set(declared)
    assert "torch==2.13.0" in text  # an unpinned torch pulls the CUDA build


def test_compose_services_run_the_code_location_that_exists(cluster_defs: ModuleType) -> None:
    compose = load(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert {"postgres", "redis", "minio", "user_code", "webserver", "daemon", "worker"} <= set(services)
    dagster_services = [name for name, s in services.items() if s.get("image") == "ai-assets:latest"]
    assert sorted(dagster_services) == ["daemon", "user_code", "webserver", "worker"]
    for name in dagster_services:
        command = services[name]["command"]
        for arg in command:
            if arg.startswith("deploy/"):
                assert (ROOT / arg).exists(), f"{name}: {arg}"
    grpc = services["user_code"]["command"]
    assert grpc[grpc.index("-f") + 1] == "deploy/cluster/code_location.py"
    assert grpc[grpc.index("--location-name") + 1] == cluster_defs.LOCATION
    workspace = load(DEPLOY / "compose" / "workspace.yaml")["load_from"][0]["grpc_server"]
    assert workspace["location_name"] == cluster_defs.LOCATION
    assert (workspace["host"], str(workspace["port"])) == ("user_code", grpc[grpc.index("-p") + 1])
    worker = services["worker"]["command"]
    assert worker[worker.index("-A") + 1] == "dagster_celery.app" and worker[worker.index("-Q") + 1] == "dagster"
    for volume in services["postgres"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (DEPLOY / source).exists(), source


def test_compose_environment_covers_the_settings_and_holds_no_secret(cluster_defs: ModuleType) -> None:
    environment = load(DEPLOY / "compose.yaml")["x-dagster"]["environment"]
    source = (DEPLOY / "cluster" / "code_location.py").read_text()
    read = set(re.findall(r'"((?:AI_ASSETS|DAGSTER_CELERY|DAGSTER_POSTGRES)_[A-Z_]+)"', source))
    optional = {"AI_ASSETS_START", "AI_ASSETS_END", "AI_ASSETS_EXECUTOR"}
    assert read - optional <= set(environment), read - optional - set(environment)
    assert environment["OPENAI_API_KEY"] == "${OPENAI_API_KEY}"  # from the shell or .env, never the file
    assert environment["DAGSTER_POSTGRES_URL"].startswith("postgresql+psycopg2://")
    assert environment["AI_ASSETS_JOURNAL"].startswith("postgresql+psycopg2://")


def test_instance_config_is_valid_and_limits_the_llm_runs(cluster_defs: ModuleType,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from dagster._core.instance.config import dagster_instance_config

    monkeypatch.setenv("DAGSTER_POSTGRES_URL", "postgresql+psycopg2://u@127.0.0.1:1/dagster")
    config, _ = dagster_instance_config(str(DEPLOY / "cluster"))
    assert config["storage"]["postgres"]["postgres_url"] == {"env": "DAGSTER_POSTGRES_URL"}
    limits = config["concurrency"]["runs"]["tag_concurrency_limits"]
    job = cluster_defs.defs.resolve_job_def("reviews_job")
    assert {"key": "ai_assets/pool", "value": job.tags["ai_assets/pool"], "limit": 3} in limits
    assert config["run_retries"]["enabled"] and config["run_coordinator"]["class"] == "QueuedRunCoordinator"


def test_cluster_code_location_places_gpu_steps_and_pools_the_llm(cluster_defs: ModuleType) -> None:
    defs: dg.Definitions = cluster_defs.defs
    graph = defs.resolve_asset_graph()
    gpu = graph.get(dg.AssetKey("review_embeddings_gpu")).assets_def
    tags = gpu.op.tags
    assert tags["dagster-celery/queue"] == "gpu"
    k8s = tags["dagster-k8s/config"]
    k8s = k8s if isinstance(k8s, dict) else json.loads(k8s)
    assert k8s["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert graph.get(dg.AssetKey("review_insights")).assets_def.op.pools == {cluster_defs.LLM_POOL}
    for key in ("reviews", "review_insights", "review_embeddings"):  # the pipeline the cluster test backfills
        assert graph.get(dg.AssetKey(key)).assets_def.partitions_def is not None
    assert defs.resolve_job_def("reviews_job").executor_def.name == "celery"


def test_helm_values_reference_the_code_location_and_the_psycopg2_scheme(cluster_defs: ModuleType) -> None:
    values = load(DEPLOY / "helm" / "values.yaml")
    deployment = values["dagster-user-deployments"]["deployments"][0]
    args = deployment["dagsterApiGrpcArgs"]
    path = args[args.index("-f") + 1]
    assert path.startswith(WORKDIR + "/") and (ROOT / path.removeprefix(WORKDIR + "/")).exists()
    assert args[args.index("--location-name") + 1] == cluster_defs.LOCATION
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["AI_ASSETS_EXECUTOR"] == "k8s" and "OPENAI_API_KEY" not in env  # the key is in the secret
    secrets = {s["name"] for s in deployment["envSecrets"]}
    assert secrets == {s["name"] for s in values["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]}
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2" and not values["postgresql"]["enabled"]
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert any(t["key"] == "ai_assets/pool" and t["value"] == cluster_defs.LLM_POOL
               for t in queued["tagConcurrencyLimits"])
    celery = load(DEPLOY / "helm" / "values-celery-k8s.yaml")
    assert celery["runLauncher"]["type"] == "CeleryK8sRunLauncher"
    queues = {q["name"] for q in celery["runLauncher"]["config"]["celeryK8sRunLauncher"]["workerQueues"]}
    assert {"dagster", gpu_tags()["dagster-celery/queue"]} <= queues


def test_gpu_tags_ask_for_gpus_and_refuse_none() -> None:
    tags = gpu_tags(2, node_selector={"pool": "a100"}, memory="32Gi", queue=None)
    resources = tags["dagster-k8s/config"]["container_config"]["resources"]
    assert resources["limits"] == {"nvidia.com/gpu": "2", "memory": "32Gi"}
    assert tags["dagster-k8s/config"]["pod_spec_config"]["node_selector"] == {"pool": "a100"}
    assert "dagster-celery/queue" not in tags
    with pytest.raises(ValueError, match="at least one GPU"):
        gpu_tags(0)
