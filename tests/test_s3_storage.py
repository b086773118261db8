"""Asset storage: values as folders of real files, locally and on a real S3-compatible server (moto, loopback)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from glimpse3d_assets.codecs import OutputFolder
from glimpse3d_assets.io_manager import MANIFEST, read_value, storage_path, write_value
from glimpse3d_assets.resources import Inbox
from glimpse3d_core.cameras import syncdreamer16_rig
from glimpse3d_core.types import DepthMap, Gaussians, ObjectImage, ViewSet

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
class _Record:  # not a glimpse3d class: the manifest must refuse to rebuild it
    x: np.ndarray


def _values(tmp_path):
    g = torch.Generator().manual_seed(0)
    n = 50
    gaussians = Gaussians(torch.randn(n, 3, generator=g), torch.randn(n, 4, generator=g),
                          torch.randn(n, 3, generator=g) - 4, torch.randn(n, generator=g),
                          torch.randn(n, 1, 3, generator=g))
    rng = np.random.default_rng(0)
    image = ObjectImage(rng.random((12, 10, 3), dtype=np.float32), rng.random((12, 10), dtype=np.float32), "cat")
    rig = syncdreamer16_rig(8)
    views = ViewSet(rig, rng.random((16, 8, 8, 3), dtype=np.float32), rng.random((16, 8, 8), dtype=np.float32),
                    depth=rng.random((16, 8, 8), dtype=np.float32))
    depth = DepthMap(rng.random((6, 6), dtype=np.float32), rng.random((6, 6)) > 0.5)
    folder = tmp_path / "exports_src"
    (folder / "sub").mkdir(parents=True)
    (folder / "metrics.json").write_text('{"psnr": 31.5}')
    (folder / "sub" / "a.bin").write_bytes(bytes(range(256)))
    return gaussians, image, views, depth, OutputFolder(folder)


def _check_round_trip(root, tmp_path):
    gaussians, image, views, depth, folder = _values(tmp_path)
    value = {"gaussians": gaussians, "views": views, "image": image, "depth": depth, "stats": [1, 2.5, "x"]}
    write_value(value, root / "a")
    back = read_value(root / "a")
    for name, t in gaussians.tensors().items():
        assert torch.equal(t, back["gaussians"].tensors()[name]), name
    assert np.array_equal(back["views"].rgb, views.rgb) and np.array_equal(back["views"].rig.Ks, views.rig.Ks)
    assert np.array_equal(back["views"].depth, views.depth) and back["image"].name == "cat"
    assert np.array_equal(back["image"].alpha, image.alpha) and np.array_equal(back["depth"].valid, depth.valid)
    assert back["stats"] == [1, 2.5, "x"]
    write_value(folder, root / "b")
    files = read_value(root / "b")
    assert json.loads((files.path / "metrics.json").read_text()) == {"psnr": 31.5}
    assert (files.path / "sub" / "a.bin").read_bytes() == bytes(range(256))
    return value


def test_local_round_trip_and_atomic_replace(tmp_path):
    root = storage_path(str(tmp_path / "store"))
    _check_round_trip(root, tmp_path)
    listing = sorted(p.name for p in (tmp_path / "store" / "a").iterdir())
    assert {"manifest.json", "value.gaussians.ply", "value.views.npz", "value.views.png", "value.image.png"} <= set(
        listing)
    write_value({"psnr": float("inf")}, root / "a")  # replacing leaves no stale files and no temporaries
    assert sorted(p.name for p in (tmp_path / "store" / "a").iterdir()) == [MANIFEST, "value.json"]
    assert read_value(root / "a") == {"psnr": float("inf")}
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["a", "b"]


def test_corrupt_or_missing_or_untrusted_values_are_refused(tmp_path):
    root = storage_path(str(tmp_path / "store"))
    gaussians, *_ = _values(tmp_path)
    write_value(gaussians, root / "g")
    ply = tmp_path / "store" / "g" / "value.ply"
    ply.write_bytes(ply.read_bytes()[:-10])
    with pytest.raises(ValueError, match="manifest hash"):
        read_value(root / "g")
    with pytest.raises(FileNotFoundError, match="never written or interrupted"):
        read_value(root / "nothing")
    write_value(_Record(np.zeros(2)), root / "r")
    with pytest.raises(ValueError, match="not a glimpse3d class"):
        read_value(root / "r")


def test_s3_round_trip_on_loopback_server(moto_s3, tmp_path):
    root = storage_path(f"s3://{BUCKET}/store", moto_s3)
    _check_round_trip(root, tmp_path)
    write_value({"only": 1}, root / "a")
    assert sorted(root.fs.ls(f"{BUCKET}/store/a", detail=False)) == [f"{BUCKET}/store/a/{n}"
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
