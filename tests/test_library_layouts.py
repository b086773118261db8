"""The library-backed models' released weight files (DPT-Large, DPT-Hybrid, CLIP B/32 and L/14, SDXL's two text
encoders, the Lightning 4-step UNet, the fp16-fix VAE, the depth ControlNet) against their packaged key lists
(glimpse3d_core/models/layouts/<name>.json).

The key lists are derived, not read from the released files (which cannot be downloaded here): the library
architecture built from the released config values on the meta device, minus the keys the released file is known
to leave out. Evidence for them beyond the config values: a file of the listed tensors has the size the registry
gives for every released file, to the three digits Hugging Face lists. Random weights saved under exactly those
key names and file names (at tiny widths with the released block structure, which gives the same key names) load
through the backends' own code path; any other missing or unexpected key is an error that names it.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from importlib import resources
from typing import NamedTuple

import pytest
import torch

from glimpse3d_core.models.errors import CorruptWeightsError
from glimpse3d_core.models.layout import WEIGHT_FILES, check_layout, check_state_dict, layouts_of, reference_layout
from glimpse3d_core.models.library_layouts import RELEASED_FILES
from glimpse3d_core.models.loading import clear_cache, file_layout
from glimpse3d_core.models.registry import MODELS, ModelSpec, get_spec
from glimpse3d_core.models.released import ALLOWED_MISSING
from glimpse3d_core.models.store import ModelStore
from tests.tiny_models import save_released_model, write_released_file

NAMES = list(RELEASED_FILES)


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


class Saved(NamedTuple):
    """Every library model saved once in its released layouts at tiny widths (read-only for the tests)."""

    store: ModelStore
    specs: dict[str, ModelSpec]
    tensors: dict[str, dict[str, torch.Tensor]]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Saved:
    root = tmp_path_factory.mktemp("released")
    store = ModelStore(models_dir=root / "models", hf_cache_dir=root / "hf")
    specs, tensors = {}, {}
    for model_id in dict.fromkeys(f.model_id for f in RELEASED_FILES.values()):
        specs[model_id], written = save_released_model(store, model_id)
        tensors.update(written)
    return Saved(store, specs, tensors)


def test_every_registry_weight_file_but_two_has_a_key_list() -> None:
    """Every weight file the pipeline loads has a released key list, except rembg's ONNX graphs (no state dict)
    and the small depth ControlNet (its config values are not known here)."""
    listed = set(WEIGHT_FILES.values())
    unlisted = {(spec.id, f.path) for spec in MODELS.values() for f in spec.files
                if f.kind.value in ("safetensors", "torch") and (spec.id, f.path) not in listed}
    assert unlisted == {("controlnet-depth-sdxl-small", "diffusion_pytorch_model.fp16.safetensors")}


@pytest.mark.parametrize("name", NAMES)
def test_architecture_from_the_released_config_has_the_listed_keys(name: str) -> None:
    """Full size, meta device: the library class built from the released config has exactly the listed key names
    and shapes (the keys the released file omits aside), the data file records those config values, and a
    safetensors file of the listed tensors has the size the registry gives for the released file, to the three
    digits Hugging Face lists (which tells, e.g., that dpt-hybrid-midas holds the fusion residual dpt-large
    omits: 489.5 MB with it, 484.8 MB without, listed 490 MB)."""
    released = RELEASED_FILES[name]
    report = check_layout(name)
    assert report.ok, f"{report.summary()}: {report.details()}"
    rules = [pattern for pattern, _ in ALLOWED_MISSING.get(released.model_id, ())]
    assert all(any(re.fullmatch(p, k) for p in rules) for k in report.optional)  # only the known omissions
    document = json.loads((resources.files("glimpse3d_core.models") / "layouts" / f"{name}.json").read_text())
    assert (document["model"], document["file"], document["config"]) == (
        released.model_id, released.weights, json.loads(json.dumps(released.config)))
    assert document["source"].startswith("DERIVED, not read from the released file")

    layout, _ = reference_layout(name)
    listed = next(f.size for f in get_spec(released.model_id).files if f.path == released.weights)
    size = _safetensors_size(layout, released.dtype)
    print(f"{name}: {len(layout)} keys, a {size / 1e6:,.2f} MB file, {_three_digits(size) / 1e6:,.0f} MB to three "
          f"digits; the registry lists {listed / 1e6:,.0f} MB")
    assert _three_digits(size) == listed


def _safetensors_size(layout: dict[str, tuple[int, ...]], dtype: str) -> int:
    """Bytes of a safetensors file holding ``layout`` in ``dtype``: 8 + its JSON header (padded to 8) + data."""
    width, code = (2, "F16") if dtype == "float16" else (4, "F32")
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for key, shape in sorted(layout.items()):
        end = offset + math.prod(shape) * width
        header[key] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, end]}
        offset = end
    text = len(json.dumps(header, separators=(",", ":")))
    return 8 + text + (-text) % 8 + offset


def _three_digits(size: int) -> int:
    """``size`` rounded to three significant digits, as Hugging Face lists file sizes (and the registry records
    them)."""
    unit = 10 ** (len(str(size)) - 3)
    return round(size / unit) * unit


def test_released_dpt_and_clip_layouts_load_through_their_backends(saved: Saved) -> None:
    """Each model's folder holds random weights under exactly the released key names and file names (the
    DPT-Large file without the omitted fusion residual, the CLIP files with their position-id buffers); the backend
    loads them from the model store and every weight lands where its name says."""
    from glimpse3d_core.backends.clip_similarity import ClipSimilarity
    from glimpse3d_core.backends.dpt_depth import DptDepth

    for model_id, backend in (("dpt-large", DptDepth), ("dpt-hybrid-midas", DptDepth),
                              ("clip-vit-base-patch32", ClipSimilarity), ("clip-vit-large-patch14", ClipSimilarity)):
        loaded = backend(saved.specs[model_id], saved.store, device="cpu")
        _assert_loaded(loaded.model, saved.tensors[model_id])


def test_released_sdxl_layouts_load_through_the_enhance_backend(saved: Saved) -> None:
    """SDXL base's two text encoders, the Lightning UNet file, the fp16-fix VAE and the depth ControlNet, each
    under exactly its released key names and file name, assemble into the enhance backend's pipeline with every
    weight where its name says."""
    from glimpse3d_core.backends.sdxl_enhance import SdxlLightningEnhancer, SdxlSettings

    pipe = SdxlLightningEnhancer(SdxlSettings(resolution=32), saved.store, device="cpu", models=saved.specs).pipe
    for name, module in (("sdxl-base.text_encoder", pipe.text_encoder), ("sdxl-base.text_encoder_2",
                         pipe.text_encoder_2), ("sdxl-lightning-4step", pipe.unet),
                         ("sdxl-vae-fp16-fix", pipe.vae), ("controlnet-depth-sdxl", pipe.controlnet)):
        _assert_loaded(module, saved.tensors[name])


def _assert_loaded(module: torch.nn.Module, written: dict[str, torch.Tensor]) -> None:
    state = module.state_dict()
    for key, tensor in written.items():
        if key.endswith("position_ids"):
            continue  # not a weight: skipped by the loader
        assert torch.equal(state[key].to(tensor.dtype), tensor), key


def _load(store: ModelStore, spec: ModelSpec) -> None:
    """The backend's own loader of the model ``spec`` (CPU, fp32)."""
    from glimpse3d_core.backends import sdxl_enhance
    from glimpse3d_core.backends.clip_similarity import load_clip
    from glimpse3d_core.backends.dpt_depth import load_dpt

    status = store.status(spec)
    cpu, fp32 = torch.device("cpu"), torch.float32
    if spec.loader == "dpt":
        load_dpt(spec, str(status.root), cpu)
    elif spec.loader == "clip":
        load_clip(spec, str(status.root), cpu)
    elif spec.loader == "sdxl-base":
        sdxl_enhance.load_text_encoders(spec.id, status, fp32)
    elif spec.loader == "sdxl-lightning-unet":  # its architecture: SDXL base's unet/config.json
        sdxl_enhance.load_lightning_unet(store.status("sdxl-base"), status, fp32)
    elif spec.loader == "sdxl-vae":
        sdxl_enhance.load_vae(status, fp32)
    else:
        sdxl_enhance.load_controlnet(status, fp32)


@pytest.mark.parametrize("name", NAMES)
def test_a_missing_or_unexpected_key_is_an_error_naming_it(saved: Saved, tmp_path, name: str) -> None:
    """The released layout with one listed key taken out and one foreign key put in: the backend's loader
    refuses it, naming both keys."""
    released = RELEASED_FILES[name]
    store = ModelStore(models_dir=tmp_path / "models", hf_cache_dir=tmp_path / "hf")
    shutil.copytree(saved.store.models_dir, store.models_dir)
    tensors = dict(saved.tensors[name])
    dropped = sorted(k for k in tensors if not k.endswith("position_ids"))[len(tensors) // 2]
    del tensors[dropped]
    tensors["foreign.weight"] = torch.zeros(2, dtype=getattr(torch, released.dtype))
    spec = saved.specs[released.model_id]
    write_released_file(store.model_dir(spec), name, tensors)
    with pytest.raises(CorruptWeightsError) as info:
        _load(store, spec)
    assert dropped in str(info.value) and "foreign.weight" in str(info.value)


def test_verify_compares_each_weight_file_with_its_released_key_list(saved: Saved) -> None:
    """``glimpse3d models verify`` reads each file's header: the tiny files hold exactly the released key names
    (none missing, none unexpected), so only their shapes differ from the full-size list, and verify says so,
    naming a key; the full-size architecture's own shapes match."""
    from glimpse3d_core.backends.verify import released_layouts

    status = saved.store.status(saved.specs["dpt-hybrid-midas"])
    report = check_state_dict("dpt-hybrid-midas", file_layout(status.spec.id, status.path("model.safetensors")))
    assert not report.missing and not report.unexpected and report.shape_mismatch
    with pytest.raises(CorruptWeightsError, match=r"layout differs from the released key list: .*shape: dpt\."):
        released_layouts(status)
    full = RELEASED_FILES["dpt-large"].build().state_dict()
    assert check_state_dict("dpt-large", full).ok  # with the fusion residual the released file omits
    assert [n for n, _ in layouts_of("sdxl-base")] == ["sdxl-base.text_encoder", "sdxl-base.text_encoder_2"]
