"""Kubernetes executor config, rendered without a cluster: the step pods that dagster-k8s would create for every
asset of both jobs, built by dagster-k8s's own helpers from the steps' tags (as its K8sStepHandler does)."""

from __future__ import annotations

import pytest

from glimpse3d_assets.executors import (
    CELERY_QUEUE_TAG,
    EXECUTOR_ENV,
    GPU_QUEUE,
    GPU_RESOURCE,
    K8S_IMAGE_ENV,
    Deployment,
    executor_from_env,
    k8s_config,
    reconstructable_job,
)

IMAGE = "registry.example.com/glimpse3d:1.0"
NAMESPACE = "glimpse3d"
DAGSTER_HOME = "/opt/dagster/dagster_home"
INSTANCE_CONFIG_MAP = "dagster-instance"
"""As the Dagster Helm chart's run launcher sets them (deploy/helm/values.yaml)."""
GPU_ASSETS = {"depth", "coarse_mesh", "multiview", "enhanced_views", "optimized_gaussians", "refined_gaussians",
              "exports"}
"""The stages that must land on GPU nodes (models, rasterisation)."""


def _step_pods(job_name: str, partition_key: str) -> dict:
    """Step key -> the V1Job dagster-k8s's executor would submit for it."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import (
        DagsterK8sJobConfig,
        construct_dagster_k8s_job,
        get_k8s_job_name,
        get_user_defined_k8s_config,
    )

    job = reconstructable_job(job_name).get_definition()
    run_tags = job.get_tags_for_partition_key(partition_key, None)
    executor_context = K8sContainerContext(namespace=NAMESPACE)
    pods = {}
    for name, node in job.graph.node_dict.items():  # one step per asset op; a step's tags = run tags + op tags
        step_tags = {**run_tags, **node.tags}
        context = executor_context.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step_tags)))
        job_config = DagsterK8sJobConfig(job_image=IMAGE, dagster_home=DAGSTER_HOME,
                                         instance_config_map=INSTANCE_CONFIG_MAP)  # what the run launcher sets
        pods[name] = construct_dagster_k8s_job(
            job_config, args=["dagster", "api", "execute_step"],
            job_name=f"dagster-step-{get_k8s_job_name('run', name)}", component="step_worker",
            user_defined_k8s_config=context.run_k8s_config,
            labels={"dagster/op": name},
        )
    return pods


@pytest.mark.parametrize("job_name,partition_key", [("image_stages", "ghost"), ("variant_stages", "ghost|default")])
def test_gpu_assets_request_gpus_cpu_assets_none(job_name, partition_key):
    from glimpse3d_assets.partitions import images_partitions  # noqa: F401  (the jobs' partition definitions)

    pods = _step_pods(job_name, partition_key)
    assert pods
    for step, pod in pods.items():
        spec = pod.spec.template.spec
        container = spec.containers[0]
        assert container.image == IMAGE and pod.metadata.namespace in (None, NAMESPACE)
        resources = container.resources
        limits = (resources.limits if resources else None) or {}
        requests = (resources.requests if resources else None) or {}
        tolerations = [t.key for t in spec.tolerations or []]
        if step in GPU_ASSETS:
            assert limits.get(GPU_RESOURCE) == "1" and requests.get(GPU_RESOURCE) == "1", step
            assert GPU_RESOURCE in tolerations, step
        else:
            assert GPU_RESOURCE not in limits and GPU_RESOURCE not in requests, step
            assert GPU_RESOURCE not in tolerations, step


def test_gpu_tags_match_celery_queue():
    """The same stages go to the Celery gpu queue and request a GPU under Kubernetes."""
    for job_name in ("image_stages", "variant_stages"):
        graph = reconstructable_job(job_name).get_definition().graph
        gpu_nodes = {name for name, node in graph.node_dict.items() if node.tags.get(CELERY_QUEUE_TAG) == GPU_QUEUE}
        assert gpu_nodes == GPU_ASSETS & set(graph.node_dict), job_name


def test_executor_config_validates():
    from dagster import job, op, validate_run_config
    from dagster_k8s import k8s_job_executor

    @op
    def noop() -> None:
        pass

    @job(executor_def=k8s_job_executor)
    def one_step():
        noop()

    deployment = Deployment.from_env({EXECUTOR_ENV: "k8s", K8S_IMAGE_ENV: IMAGE})
    resolved = validate_run_config(one_step, {"execution": {"config": k8s_config(deployment)}})  # raises if invalid
    assert resolved["execution"]["k8s"]["job_image"] == IMAGE
    assert executor_from_env({EXECUTOR_ENV: "k8s"}).name == "k8s"
    with pytest.raises(ValueError, match="GLIMPSE3D_EXECUTOR"):
        Deployment.from_env({EXECUTOR_ENV: "slurm"})
