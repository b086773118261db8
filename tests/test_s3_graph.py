"""The graph with its storage on a real S3 API (moto server on loopback), and the sensors on an s3:// inbox."""

from __future__ import annotations

import json

import boto3
import pytest
from dagster import DagsterEventType, DagsterInstance, build_run_status_sensor_context, build_sensor_context

from glimpse3d_assets.definitions import build_definitions, build_resources
from glimpse3d_assets.jobs import IMAGE_JOB
from glimpse3d_assets.resources import Inbox, PipelineSettings
from glimpse3d_assets.sensors import inbox_sensor, variants_sensor
from tests.test_dagster_graph import DELIVERABLES, glimpse3d, tiny_args
from tests.test_s3_storage import BUCKET, moto_s3  # noqa: F401 (fixture)

PHOTO = "dreamgaussian/ghost_rgba.png"


def test_run_with_storage_on_s3(moto_s3, shared_data, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    result = glimpse3d("run", shared_data / "inputs" / PHOTO, "--out", out, "--storage", f"s3://{BUCKET}/graph",
                       "--s3-endpoint", moto_s3, *tiny_args())
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "ghost_rgba").iterdir()) == DELIVERABLES
    s3 = boto3.client("s3", endpoint_url=moto_s3)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="graph/")["Contents"]}
    assert "graph/exports/ghost_rgba/default/value/model.ply" in keys
    assert "graph/initial_gaussians/ghost_rgba/value.ply" in keys
    assert not (out / ".glimpse3d" / "storage").exists()  # nothing went to the local default
    result = glimpse3d("rerun", "quality_metrics", "--images", "ghost_rgba", "--out", out)  # storage reused
    assert result.exit_code == 0, result.output


@pytest.fixture
def s3_inbox(moto_s3, shared_data):  # noqa: F811
    s3 = boto3.client("s3", endpoint_url=moto_s3)
    uploads = {"Ghost photo.png": PHOTO, "sub/cactus.png": "threestudio/cactus_rgba.png"}
    for name, source in uploads.items():
        s3.put_object(Bucket=BUCKET, Key=f"inbox2/{name}", Body=(shared_data / "inputs" / source).read_bytes())
    return s3, Inbox(url=f"s3://{BUCKET}/inbox2", endpoint_url=moto_s3, variants=["default", "no_refine"])


def test_sensors_register_s3_images_and_chain_the_variant_runs(s3_inbox, moto_s3, tmp_path):  # noqa: F811
    s3, inbox = s3_inbox
    instance = DagsterInstance.ephemeral()
    first = inbox_sensor(build_sensor_context(instance=instance, resources={"inbox": inbox}))
    assert first.dynamic_partitions_requests[0].partition_keys == ["cactus", "ghost_photo"]
    requests = {r.partition_key: r for r in first.run_requests}
    assert requests.keys() == {"cactus", "ghost_photo"}
    assert requests["ghost_photo"].run_config["ops"]["source_image"]["config"]["uri"].endswith("inbox2/Ghost photo.png")
    instance.add_dynamic_partitions("images", ["cactus", "ghost_photo"])

    again = inbox_sensor(build_sensor_context(instance=instance, cursor=first.cursor, resources={"inbox": inbox}))
    assert again.run_requests == [] and again.dynamic_partitions_requests == []
    s3.put_object(Bucket=BUCKET, Key="inbox2/sub/cactus.png", Body=b"new content")  # a changed file is run again
    changed = inbox_sensor(build_sensor_context(instance=instance, cursor=first.cursor, resources={"inbox": inbox}))
    assert [r.partition_key for r in changed.run_requests] == ["cactus"]
    assert changed.run_requests[0].run_key != requests["cactus"].run_key
    assert json.loads(changed.cursor)["keys"] == json.loads(first.cursor)["keys"]

    # the requested image-level run reads the photo from the s3:// inbox and stores on S3
    resources = build_resources(f"s3://{BUCKET}/sensed", endpoint_url=moto_s3, inbox=inbox.url,
                                mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                                settings=PipelineSettings(device="cpu", overrides={
                                    "segment": {"canvas_size": 64},
                                    "reconstruct": {"backend": {"fallback": {"resolution": 24}}},
                                    "gaussians": {"num_gaussians": 800}}))
    job = build_definitions(resources).resolve_job_def(IMAGE_JOB)
    request = requests["ghost_photo"]
    result = job.execute_in_process(run_config=request.run_config, partition_key="ghost_photo", instance=instance,
                                    tags=request.tags)
    assert result.success
    success = next(e for e in instance.all_logs(result.run_id) if e.dagster_event
                   and e.dagster_event.event_type == DagsterEventType.RUN_SUCCESS)
    context = build_run_status_sensor_context(
        sensor_name="variants_sensor", dagster_instance=instance, dagster_run=result.dagster_run,
        dagster_event=success.dagster_event, resources={"inbox": inbox})
    chained = variants_sensor(context)
    assert sorted(str(r.partition_key) for r in chained) == ["ghost_photo|default", "ghost_photo|no_refine"]
