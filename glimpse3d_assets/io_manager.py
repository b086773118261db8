"""IO manager: every asset partition is a folder of real files under ``<root>/<asset>/<partition>/``.

``root`` is any fsspec / universal-pathlib URL: a local folder (default) or ``s3://bucket/prefix`` (s3fs; an
``endpoint_url`` points it at MinIO, moto or another S3-compatible server; credentials come from the usual
``AWS_*`` environment variables). A multi-partition key (image x variant) becomes ``<image>/<variant>``.

Values are turned into files by their typed IO (:mod:`glimpse3d_assets.value_io`, chosen by the value's type)
in a local scratch folder, then published:

* a local root: the folder is copied beside the target and renamed into place (readers see the old or the new
  folder, never a half-written one);
* an object store: each PUT is atomic; the manifest (``manifest.json``: the value's stored type, its IO's
  metadata and a SHA-256 of every file) is removed first and uploaded last, so a partition without a manifest
  is "not there", and files of an older version that the new one lacks are deleted afterwards.

Loading checks the manifest's hashes, so a truncated or tampered file is an error, not a silent wrong result.
"""

from __future__ import annotations

import atexit
import base64
import hashlib
import io
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from dagster import (
    ConfigurableIOManagerFactory,
    InputContext,
    MetadataValue,
    OutputContext,
    UPathIOManager,
)
from PIL import Image
from pydantic import Field
from upath import UPath

from glimpse3d_assets.value_io import io_for, io_named
from glimpse3d_core.failpoints import failpoint
from glimpse3d_core.io.atomic import DIR_MODE

MANIFEST = "manifest.json"
MANIFEST_VERSION = 2
"""2: one typed IO per value (``type`` + ``meta``); 1 was the reflective codec's ``spec`` (re-run to rewrite)."""
LOCAL_PROTOCOLS = ("", "file", "local")
THUMBNAIL_PX = 384
"""Longest side of the inline preview in the Dagster UI (the metadata stays small)."""
_scratch_dirs: list[Path] = []


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def scratch_dir() -> Path:
    """A local folder that lives until the process exits (loaded values such as export folders point into it)."""
    path = Path(tempfile.mkdtemp(prefix="glimpse3d-"))
    _scratch_dirs.append(path)
    return path


@atexit.register
def _remove_scratch_dirs() -> None:
    for path in _scratch_dirs:
        shutil.rmtree(path, ignore_errors=True)


def storage_path(root: str, endpoint_url: str | None = None) -> UPath:
    """The UPath of a storage root (local folders are made absolute)."""
    if "://" not in root:
        return UPath(Path(root).expanduser().resolve())
    options: dict[str, Any] = {}
    if endpoint_url:
        options["endpoint_url"] = endpoint_url
    return UPath(root, **options)


PNG_MODES = ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA")
"""Pillow image modes its PNG writer takes."""


def markdown_thumbnail(data: bytes, location: str) -> str:
    """Markdown showing an image file's bytes inline as a PNG (downscaled to :data:`THUMBNAIL_PX`; modes PNG cannot
    hold, e.g. a CMYK JPEG or a float TIFF, converted to RGB(A) first) and naming where the full file lies."""
    image = Image.open(io.BytesIO(data))
    if image.mode not in PNG_MODES:
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"![preview](data:image/png;base64,{encoded})\n\n`{location}`"


def is_local(path: UPath) -> bool:
    return path.protocol in LOCAL_PROTOCOLS


def write_value(obj: Any, target: UPath) -> dict[str, Any]:
    """Store ``obj`` as the folder ``target`` (atomically, see the module docstring); returns the manifest."""
    value_io = io_for(obj)
    with tempfile.TemporaryDirectory(prefix="glimpse3d-write-") as tmp:
        local = Path(tmp) / "value"
        local.mkdir()
        meta = value_io.save(obj, local)
        files = {p.relative_to(local).as_posix(): _sha256(p) for p in sorted(local.rglob("*")) if p.is_file()}
        manifest = {"version": MANIFEST_VERSION, "type": value_io.name, "meta": meta, "files": files}
        (local / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if is_local(target):
            publish_folder(local, Path(target.path))
        else:
            _publish_remote(local, target, files)
        failpoint("store.published")
    return manifest


def publish_folder(local: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
    shutil.copytree(local, staging)
    os.chmod(staging, DIR_MODE)  # the copied temporary folder's 0700 would hide results from a web server
    failpoint("publish.staged")
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex}")
        os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old)
    else:
        os.replace(staging, target)


def _publish_remote(local: Path, target: UPath, files: dict[str, str]) -> None:
    fs, base = target.fs, target.path.rstrip("/")
    previous = set()
    if fs.exists(f"{base}/{MANIFEST}"):
        previous = set(json.loads(fs.cat_file(f"{base}/{MANIFEST}"))["files"])
        fs.rm_file(f"{base}/{MANIFEST}")
    for i, name in enumerate(files):
        if i == len(files) // 2:
            failpoint("store.uploading")
        fs.put_file(str(local / name), f"{base}/{name}")
    fs.put_file(str(local / MANIFEST), f"{base}/{MANIFEST}")
    for name in sorted(previous - files.keys()):
        fs.rm_file(f"{base}/{name}")


def read_manifest(target: UPath) -> dict[str, Any]:
    manifest_path = target / MANIFEST
    if not manifest_path.exists():
        raise FileNotFoundError(f"no stored value at {target} (missing {MANIFEST}: never written or interrupted)")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{target} was stored in format {manifest.get('version')}, this version reads "
                         f"{MANIFEST_VERSION}: materialise it again")
    return manifest


def read_value(target: UPath) -> Any:
    """Load the value stored as the folder ``target``, checking every file's hash."""
    manifest = read_manifest(target)
    if is_local(target):
        local = Path(target.path)
    else:
        local = scratch_dir() / "value"
        local.mkdir()
        for name in manifest["files"]:
            (local / name).parent.mkdir(parents=True, exist_ok=True)
            target.fs.get_file(f"{target.path.rstrip('/')}/{name}", str(local / name))
    for name, digest in manifest["files"].items():
        if _sha256(local / name) != digest:
            raise ValueError(f"{target}/{name} does not match its manifest hash (corrupted or changed)")
    return io_named(manifest["type"]).load(local, manifest["meta"])


class FolderIOManager(UPathIOManager):
    """UPathIOManager whose "file" per partition is a folder written by :func:`write_value`."""

    extension = ""

    def dump_to_path(self, context: OutputContext, obj: Any, path: UPath) -> None:
        self._last_written = (path, write_value(obj, path))

    def load_from_path(self, context: InputContext, path: UPath) -> Any:
        return read_value(path)

    def path_exists(self, path: UPath) -> bool:
        return (path / MANIFEST).exists()

    def get_metadata(self, context: OutputContext, obj: Any) -> dict[str, Any]:
        """The stored file names and, where the value has one, its preview inline (a thumbnail) in Markdown."""
        path, manifest = self._last_written
        metadata: dict[str, Any] = {"files": MetadataValue.json(sorted(manifest["files"]))}
        preview = io_named(manifest["type"]).preview
        if preview:
            with (path / preview).open("rb") as f:
                metadata["preview"] = MetadataValue.md(markdown_thumbnail(f.read(), f"{path}/{preview}"))
        return metadata


class GlimpseIOManager(ConfigurableIOManagerFactory):
    """Stores every asset partition as a folder of real files under ``root`` (a local folder or s3:// URL)."""

    root: str = Field(description="storage root: a local folder or an fsspec URL such as s3://bucket/prefix")
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto); None = AWS")

    def create_io_manager(self, context) -> FolderIOManager:
        return FolderIOManager(base_path=storage_path(self.root, self.endpoint_url))
