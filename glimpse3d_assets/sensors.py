"""Sensors: an inbox watcher that registers new images and runs them, and a chain to the variant stages.

``inbox_sensor`` lists the :class:`~glimpse3d_assets.resources.Inbox` (local folder or s3://), gives every new
file an image key (:func:`glimpse3d_core.naming.assign_keys`, stable across ticks: the cursor keeps the
assignment), adds new keys to the ``images`` partitions and requests a run of the image-level stages for each
new or changed file (a changed file = a new content fingerprint; the run key holds it, so a file is run once per
content). The request passes the file's URI to ``source_image``.

``variants_sensor`` watches those runs: when one succeeds it requests the variant-level stages of that image for
every variant in :attr:`Inbox.variants`.
"""


import json

from dagster import (
    DagsterRunStatus,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    run_status_sensor,
    sensor,
)

from glimpse3d_assets.jobs import IMAGE_JOB, image_job, variant_job
from glimpse3d_assets.partitions import image_variant_key, images_partitions
from glimpse3d_assets.resources import Inbox
from glimpse3d_core.naming import assign_keys

INBOX_INTERVAL_S = 30
SOURCE_TAG = "glimpse3d/source"
FINGERPRINT_TAG = "glimpse3d/fingerprint"


def source_run_config(uri: str, fingerprint: str = "") -> dict:
    """Run config telling ``source_image`` which file to read."""
    return {"ops": {"source_image": {"config": {"uri": uri, "fingerprint": fingerprint}}}}


@sensor(job=image_job, minimum_interval_seconds=INBOX_INTERVAL_S, default_status=DefaultSensorStatus.STOPPED)
def inbox_sensor(context: SensorEvaluationContext, inbox: Inbox) -> SensorResult:
    """Register new inbox images as partitions and request their image-level runs."""
    state = json.loads(context.cursor) if context.cursor else {"keys": {}, "fingerprints": {}}
    listing = inbox.list_images()
    keys = assign_keys(listing, state["keys"])
    known = set(context.instance.get_dynamic_partitions(images_partitions.name))
    new_keys = sorted({keys[name] for name in listing} - known)
    requests = []
    for name, fingerprint in sorted(listing.items()):
        if state["fingerprints"].get(name) == fingerprint:
            continue
        key = keys[name]
        requests.append(RunRequest(
            run_key=f"{key}:{fingerprint}",
            partition_key=key,
            run_config=source_run_config(inbox.uri(name), fingerprint),
            tags={SOURCE_TAG: inbox.uri(name), FINGERPRINT_TAG: fingerprint},
        ))
    state = {"keys": keys, "fingerprints": {**state["fingerprints"], **listing}}
    if requests:
        context.log.info(f"inbox {inbox.url}: {len(requests)} new or changed image(s), {len(new_keys)} new key(s)")
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[images_partitions.build_add_request(new_keys)] if new_keys else [],
        cursor=json.dumps(state, sort_keys=True),
    )


@run_status_sensor(
    run_status=DagsterRunStatus.SUCCESS,
    monitored_jobs=[image_job],
    request_job=variant_job,
    default_status=DefaultSensorStatus.STOPPED,
)
def variants_sensor(context, inbox: Inbox):
    """After an image's image-level run succeeds, request its variant-level run for each configured variant."""
    run = context.dagster_run
    image = run.tags.get("dagster/partition")
    if run.job_name != IMAGE_JOB or not image:
        return []
    return [
        RunRequest(run_key=f"{run.run_id}:{variant}", partition_key=image_variant_key(image, variant),
                   tags={"glimpse3d/after_run": run.run_id})
        for variant in inbox.variants
    ]

