"""Find model files on this machine, report their status, and (only when asked) download them.

Lookup order for a model ``<id>``:

1. the model folder ``$GLIMPSE3D_MODELS_DIR/<id>/`` (default ``~/.cache/glimpse3d/models``), laid out like the
   source repository;
2. the Hugging Face hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``) at the
   spec's revision, for Hugging Face models;
3. rembg's own model folders (``$REMBG_HOME``/``$U2NET_HOME``/``~/.rembg``, via rembg's lookup), for rembg models.

Nothing here touches the network except :meth:`ModelStore.download`, which a user runs explicitly; the run-time
lookup is purely local, as with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from glimpse3d_core.models.errors import CorruptWeightsError, MissingWeightsError, ModelError
from glimpse3d_core.models.registry import FileSpec, ModelSpec, Source, get_spec

MODELS_DIR_ENV = "GLIMPSE3D_MODELS_DIR"
DEFAULT_MODELS_DIR = Path("~/.cache/glimpse3d/models")
HASH_CHUNK = 1 << 22
DOWNLOAD_TIMEOUT_S = 60


class Status(StrEnum):
    PRESENT = "present"
    MISSING = "missing"
    INCOMPLETE = "incomplete"
    WRONG_SIZE = "wrong size"


class DownloadError(ModelError):
    """A download that could not finish (network, offline mode, checksum)."""


@dataclass(frozen=True)
class FileStatus:
    spec: FileSpec
    path: Path | None
    size: int | None

    @property
    def ok(self) -> bool:
        return self.size is not None and self.spec.size_ok(self.size)


@dataclass(frozen=True)
class ModelStatus:
    """Where a model's files were found (``root``: the folder that holds them in the repository's layout)."""

    spec: ModelSpec
    status: Status
    location: str | None
    root: Path | None
    files: tuple[FileStatus, ...]

    @property
    def present(self) -> bool:
        return self.status is Status.PRESENT

    def path(self, relative: str) -> Path:
        """Absolute path of one of the spec's files (``relative`` as in the spec)."""
        for f in self.files:
            if f.spec.path == relative and f.path is not None:
                return f.path
        raise KeyError(f"{relative!r} is not a located file of model {self.spec.id!r}")

    def problems(self) -> list[str]:
        """One line per missing or wrongly sized file."""
        out = []
        for f in self.files:
            if f.path is None:
                out.append(f"  {self.spec.id}: {f.spec.path} not found")
            elif not f.ok:
                out.append(f"  {self.spec.id}: {f.path} has {f.size:,} bytes, expected "
                           f"{'' if f.spec.size_exact else 'about '}{f.spec.size:,}")
        return out


def _file_status(spec: FileSpec, path: Path | None) -> FileStatus:
    if path is None or not path.is_file():
        return FileStatus(spec, None, None)
    return FileStatus(spec, path, path.stat().st_size)


def _default_hf_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path("~/.cache/huggingface/hub").expanduser()


def _rembg_existing(spec: ModelSpec, filename: str) -> Path | None:
    """rembg's own lookup of an already-downloaded file (its per-model folder, then its legacy folder)."""
    try:
        from rembg.sessions import sessions
    except ImportError:
        return None
    session_cls = sessions.get(spec.options.get("session", ""))
    found = session_cls.resolve_existing(filename) if session_cls is not None else None
    return Path(found) if found else None


class ModelStore:
    """Local lookup (and explicit download) of the registry's models."""

    def __init__(self, models_dir: str | os.PathLike[str] | None = None,
                 hf_cache_dir: str | os.PathLike[str] | None = None) -> None:
        default = os.environ.get(MODELS_DIR_ENV) or DEFAULT_MODELS_DIR
        self.models_dir = Path(models_dir if models_dir is not None else default).expanduser()
        self.hf_cache_dir = Path(hf_cache_dir).expanduser() if hf_cache_dir is not None else _default_hf_cache()

    def model_dir(self, spec: ModelSpec) -> Path:
        """The folder in the model folder where ``spec``'s files live (and where downloads go)."""
        return self.models_dir / spec.id

    def _candidates(self, spec: ModelSpec) -> Iterable[tuple[str, Path, dict[str, Path | None]]]:
        """(label, root, {file: path or None}) for each place that could hold the model, in lookup order."""
        own = self.model_dir(spec)
        yield "models dir", own, {f.path: own / f.path for f in spec.files}
        if spec.source is Source.HUGGINGFACE and spec.repo:
            from huggingface_hub import try_to_load_from_cache

            found: dict[str, Path | None] = {}
            for f in spec.files:
                hit = try_to_load_from_cache(spec.repo, f.path, cache_dir=self.hf_cache_dir, revision=spec.revision)
                found[f.path] = Path(hit) if isinstance(hit, str) else None
            roots = {str(p)[: -len(rel)] for rel, p in found.items() if p is not None}
            root = Path(roots.pop()) if len(roots) == 1 else self.hf_cache_dir
            yield "HF cache", root, found
        if spec.loader == "rembg":
            found = {f.path: _rembg_existing(spec, f.path) for f in spec.files}
            hit = next((p for p in found.values() if p is not None), None)
            yield "rembg home", hit.parent if hit else own, found

    def status(self, model: str | ModelSpec) -> ModelStatus:
        """Status of one model: the first place that holds all its files wins; otherwise the most complete."""
        spec = get_spec(model) if isinstance(model, str) else model
        best: ModelStatus | None = None
        for label, root, paths in self._candidates(spec):
            files = tuple(_file_status(f, paths.get(f.path)) for f in spec.files)
            found = sum(f.path is not None for f in files)
            if found == 0:
                continue
            if found < len(files):
                status = Status.INCOMPLETE
            elif all(f.ok for f in files):
                return ModelStatus(spec, Status.PRESENT, label, root, files)
            else:
                status = Status.WRONG_SIZE
            if best is None:
                best = ModelStatus(spec, status, label, root, files)
        if best is not None:
            return best
        return ModelStatus(spec, Status.MISSING, None, None, tuple(FileStatus(f, None, None) for f in spec.files))

    def available(self, *models: str | ModelSpec) -> bool:
        """Whether every one of ``models`` is present (for ``auto`` backend selection)."""
        return all(self.status(m).present for m in models)

    def require(self, *models: str | ModelSpec) -> list[ModelStatus]:
        """Statuses of ``models``, all present; otherwise one error naming every missing model and the command."""
        statuses = [self.status(m) for m in models]
        wrong = [s for s in statuses if s.status is Status.WRONG_SIZE]
        absent = [s for s in statuses if s.status in (Status.MISSING, Status.INCOMPLETE)]
        if absent:
            details = [line for s in absent for line in s.problems()]
            details.append(f"  looked in {self.models_dir}/<id>/ and the Hugging Face cache {self.hf_cache_dir}")
            raise MissingWeightsError([s.spec.id for s in absent], details)
        if wrong:
            raise CorruptWeightsError(wrong[0].spec.id, "wrong file size:\n" + "\n".join(wrong[0].problems()))
        return statuses

    # ---- explicit, networked ----------------------------------------------------------------------------------

    def download(self, model: str | ModelSpec, progress: Callable[[str], None] = print) -> ModelStatus:
        """Fetch ``model`` into the model folder (resumable); a model already present is left alone."""
        spec = get_spec(model) if isinstance(model, str) else model
        current = self.status(spec)
        if current.present:
            progress(f"{spec.id}: already present ({current.location}: {current.root})")
            return current
        target = self.model_dir(spec)
        for f in spec.files:
            dest = target / f.path
            if dest.is_file() and f.size_ok(dest.stat().st_size):
                continue
            progress(f"{spec.id}: fetching {f.path} from {spec.origin}")
            if spec.source is Source.HUGGINGFACE:
                _hf_download(spec, f, target)
            else:
                _url_download(f, dest)
            check_hashes(spec.id, f, dest)
        status = self.status(spec)
        if not status.present:
            raise DownloadError(f"{spec.id}: files still not right after download:\n" + "\n".join(status.problems()))
        return status


def _hf_download(spec: ModelSpec, f: FileSpec, target: Path) -> None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import OfflineModeIsEnabled

    try:
        hf_hub_download(spec.repo or "", f.path, revision=spec.revision, local_dir=target)
    except OfflineModeIsEnabled as exc:
        raise DownloadError(f"{spec.id}: Hugging Face offline mode is on (HF_HUB_OFFLINE); unset it to download "
                            f"({exc})") from exc
    except Exception as exc:  # network, auth, missing file: say which model and file, keep the cause
        raise DownloadError(f"{spec.id}: could not download {f.path} from {spec.origin}: "
                            f"{type(exc).__name__}: {exc}") from exc


def _url_download(f: FileSpec, dest: Path) -> None:
    """HTTP download to ``dest`` via ``dest.part``, resuming a partial file with a Range request."""
    if not f.url:
        raise DownloadError(f"{f.path}: no URL recorded")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(f.url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            resumed = offset > 0 and response.status == 206
            with open(part, "ab" if resumed else "wb") as out:
                shutil.copyfileobj(response, out, HASH_CHUNK)
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"could not download {f.url}: {exc} (rerun the same command to resume)") from exc
    os.replace(part, dest)


def file_hash(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_hashes(model_id: str, f: FileSpec, path: Path) -> None:
    """Compare ``path`` with the spec's sha256/md5 where known; a mismatch raises CorruptWeightsError."""
    for algorithm, expected in (("sha256", f.sha256), ("md5", f.md5)):
        if expected and (actual := file_hash(path, algorithm)) != expected:
            raise CorruptWeightsError(model_id, f"{path} has {algorithm} {actual}, expected {expected}")


__all__ = ["DownloadError", "FileStatus", "ModelStatus", "ModelStore", "Status", "check_hashes", "file_hash"]
