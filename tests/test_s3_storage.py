"""Asset storage: values as folders of real files, locally and on a real S3-compatible server (moto, loopback)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from glimpse3d_assets.io_manager import MANIFEST, read_value, storage_path, write_value
from glimpse3d_assets.resources import Inbox
from glimpse3d_assets.value_io import OutputFolder, io_for
from glimpse3d_core.cameras import syncdreamer16_rig
from glimpse3d_core.input_camera import SYNCDREAMER16_VIEW0
from glimpse3d_core.stages.segment import SegmentOutput
from glimpse3d_core.types import DepthMap, Gaussians, MeshAsset, ObjectImage, ViewSet

BUCKET = "glimpse3d-test"


@pytest.fixture(scope="session")
def moto_s3():
    """A real S3 API (moto in server mode) on 127.0.0.1, a bucket in it, and AWS_* credentials for s3fs/boto3.
    Yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    patch = pytest.MonkeyPatch()
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        patch.setenv(name, value)
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield endpoint
    patch.undo()
    server.stop()


@dataclass
class _Record:  # no stored type: refused when written, nothing half-written
    x: np.ndarray


def _values(tmp_path):
    g = torch.Generator().manual_seed(0)
    n = 50
    gaussians = Gaussians(torch.randn(n, 3, generator=g), torch.randn(n, 4, generator=g),
                          torch.randn(n, 3, generator=g) - 4, torch.randn(n, generator=g),
                          torch.randn(n, 1, 3, generator=g))
    rng = np.random.default_rng(0)
    image = ObjectImage(rng.random((12, 12, 3), dtype=np.float32), rng.random((12, 12), dtype=np.float32), "cat")
    segment = SegmentOutput(image, SYNCDREAMER16_VIEW0.camera(12), "alpha")
    rig = syncdreamer16_rig(8)
    views = ViewSet(rig, rng.random((16, 8, 8, 3), dtype=np.float32), rng.random((16, 8, 8), dtype=np.float32),
                    depth=rng.random((16, 8, 8), dtype=np.float32))
    depth = DepthMap(rng.random((6, 6), dtype=np.float32), rng.random((6, 6)) > 0.5)
    mesh = MeshAsset(rng.random((4, 3)), np.array([[0, 1, 2], [0, 2, 3]]), rng.random((4, 3)))
    folder = tmp_path / "exports_src"
    (folder / "sub").mkdir(parents=True)
    (folder / "metrics.json").write_text('{"psnr": 31.5}')
    (folder / "sub" / "a.bin").write_bytes(bytes(range(256)))
    return {"gaussians": gaussians, "segment": segment, "views": views, "depth": depth, "mesh": mesh,
            "stats": {"psnr": 31.5, "per_view": [1, 2.5], "note": "x"}, "folder": OutputFolder(folder)}


def _check_round_trip(root, tmp_path):
    values = _values(tmp_path)
    back = {}
    for name, value in values.items():
        manifest = write_value(value, root / name)
        assert manifest["type"] == io_for(value).name
        back[name] = read_value(root / name)
    for name, t in values["gaussians"].tensors().items():
        assert torch.equal(t, back["gaussians"].tensors()[name]), name
    views, segment = values["views"], values["segment"]
    assert np.array_equal(back["views"].rgb, views.rgb) and np.array_equal(back["views"].rig.Ks, views.rig.Ks)
    assert np.array_equal(back["views"].depth, views.depth)
    assert np.array_equal(back["views"].weights, views.weights)
    assert back["segment"].image.name == "cat" and back["segment"].alpha_source == "alpha"
    assert np.array_equal(back["segment"].image.alpha, segment.image.alpha)
    assert np.array_equal(back["segment"].camera.K, segment.camera.K)
    assert back["segment"].camera.width == segment.camera.width
    assert np.array_equal(back["depth"].valid, values["depth"].valid) and back["depth"].metric is False
    assert np.array_equal(back["mesh"].faces, values["mesh"].faces)
    assert np.array_equal(back["mesh"].vertex_colors, values["mesh"].vertex_colors)
    assert back["stats"] == values["stats"]
    files = back["folder"]
    assert json.loads((files.path / "metrics.json").read_text()) == {"psnr": 31.5}
    assert (files.path / "sub" / "a.bin").read_bytes() == bytes(range(256))


def test_local_round_trip_and_atomic_replace(tmp_path):
    root = storage_path(str(tmp_path / "store"))
    _check_round_trip(root, tmp_path)
    listing = sorted(p.name for p in (tmp_path / "store" / "views").iterdir())
    assert listing == ["manifest.json", "value.npz", "value.png"]
    write_value({"psnr": float("inf")}, root / "views")  # replacing leaves no stale files and no temporaries
    assert sorted(p.name for p in (tmp_path / "store" / "views").iterdir()) == [MANIFEST, "value.json"]
    assert read_value(root / "views") == {"psnr": float("inf")}
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == sorted(_values(tmp_path / "again"))


def test_corrupt_or_missing_or_unknown_values_are_refused(tmp_path):
    root = storage_path(str(tmp_path / "store"))
    write_value(_values(tmp_path)["gaussians"], root / "g")
    ply = tmp_path / "store" / "g" / "value.ply"
    ply.write_bytes(ply.read_bytes()[:-10])
    with pytest.raises(ValueError, match="manifest hash"):
        read_value(root / "g")
    with pytest.raises(FileNotFoundError, match="never written or interrupted"):
        read_value(root / "nothing")
    with pytest.raises(TypeError, match="no storage format for _Record"):
        write_value(_Record(np.zeros(2)), root / "r")
    with pytest.raises(TypeError, match="must be JSON"):
        write_value({"array": np.zeros(2)}, root / "r")
    assert not (tmp_path / "store" / "r").exists()
    manifest = tmp_path / "store" / "g" / MANIFEST
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": 1}))
    with pytest.raises(ValueError, match="materialise it again"):
        read_value(root / "g")


def test_s3_round_trip_on_loopback_server(moto_s3, tmp_path):
    root = storage_path(f"s3://{BUCKET}/store", moto_s3)
    _check_round_trip(root, tmp_path)
    write_value({"only": 1}, root / "views")
    assert sorted(root.fs.ls(f"{BUCKET}/store/views", detail=False)) == [f"{BUCKET}/store/views/{n}"
                                                                          for n in (MANIFEST, "value.json")]


def test_inbox_lists_s3_images_with_content_fingerprints(moto_s3):
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_s3)
    s3.put_object(Bucket=BUCKET, Key="inbox1/cat.png", Body=b"one")
    s3.put_object(Bucket=BUCKET, Key="inbox1/notes.txt", Body=b"ignored")
    s3.put_object(Bucket=BUCKET, Key="inbox1/.hidden.png", Body=b"ignored")
    inbox = Inbox(url=f"s3://{BUCKET}/inbox1", endpoint_url=moto_s3)
    first = inbox.list_images()
    assert list(first) == ["cat.png"]
    assert inbox.read_uri(inbox.uri("cat.png")) == b"one"
    s3.put_object(Bucket=BUCKET, Key="inbox1/cat.png", Body=b"two")
    assert inbox.list_images()["cat.png"] != first["cat.png"]


def test_local_inbox_fingerprints_content_and_skips_hidden_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.PNG").write_bytes(b"one")
    (tmp_path / ".partial.png").write_bytes(b"x")
    (tmp_path / "readme.md").write_text("no")
    inbox = Inbox(url=str(tmp_path))
    first = inbox.list_images()
    assert list(first) == ["sub/a.PNG"] and first["sub/a.PNG"].startswith("sha256:")
    (tmp_path / "sub" / "a.PNG").write_bytes(b"two")
    assert inbox.list_images()["sub/a.PNG"] != first["sub/a.PNG"]
    assert inbox.read_uri(inbox.uri("sub/a.PNG")) == b"two"
