"""Where a step runs: tags that put GPU steps on GPU machines, for the Kubernetes and Celery executors."""

from __future__ import annotations

from typing import Any

GPU_RESOURCE = "nvidia.com/gpu"
K8S_CONFIG_TAG = "dagster-k8s/config"
CELERY_QUEUE_TAG = "dagster-celery/queue"


def gpu_tags(count: int = 1, *, queue: str | None = "gpu", node_selector: dict[str, str] | None = None,
             memory: str | None = None) -> dict[str, Any]:
    """``op_tags`` for a step that needs ``count`` GPUs.

    On Kubernetes (``K8sRunLauncher`` with the ``k8s_job_executor``, or ``celery_k8s_job_executor``) the step's pod
    asks for ``count`` of ``nvidia.com/gpu`` (so the scheduler puts it on a GPU node) and tolerates the usual GPU
    node taint; ``node_selector`` narrows the node pool. With Celery, the step goes to ``queue``: start the workers
    of GPU machines with ``-Q gpu``. ``memory`` (e.g. ``"16Gi"``) is requested and limited as well.

        embed_asset("review_vectors", reviews, column="text", provider_key="local_embedder",
                    op_tags=gpu_tags())
    """
    if count < 1:
        raise ValueError(f"gpu_tags(count={count}): a GPU step needs at least one GPU")
    limits: dict[str, str] = {GPU_RESOURCE: str(count)}
    requests: dict[str, str] = {GPU_RESOURCE: str(count)}
    if memory:
        limits["memory"] = requests["memory"] = memory
    pod_spec: dict[str, Any] = {"tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]}
    if node_selector:
        pod_spec["node_selector"] = dict(node_selector)
    tags: dict[str, Any] = {K8S_CONFIG_TAG: {"container_config": {"resources": {"limits": limits,
                                                                               "requests": requests}},
                                             "pod_spec_config": pod_spec}}
    if queue:
        tags[CELERY_QUEUE_TAG] = queue
    return tags
