"""``glimpse3d models verify``: full checks of a present model: its files, a strict load, its released layout.

File checks first (checksums where known, safetensors/torch/ONNX structure: :func:`check_files`), then the model's
own loader on CPU in fp32, which fails on any missing, unexpected or mis-shaped weight, then each weight file's key
names and shapes against the released file's key list (:mod:`glimpse3d_core.models.layout`; every model with a
packaged key list: all but rembg's ONNX files and the small depth ControlNet), which fails on a file that loads but
is not laid out as the released one (another size or variant of the model).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from glimpse3d_core.models.errors import CorruptWeightsError
from glimpse3d_core.models.loading import check_files, file_layout
from glimpse3d_core.models.store import ModelStatus, ModelStore

CPU = torch.device("cpu")


def _rembg(status: ModelStatus, store: ModelStore) -> str:
    from glimpse3d_core.backends.rembg_segment import RembgSegmenter

    RembgSegmenter(status.spec.options["session"], status.path(status.spec.files[0].path), status.spec.id)
    return "rembg session opened"


def _dpt(status: ModelStatus, store: ModelStore) -> str:
    from glimpse3d_core.backends.dpt_depth import load_dpt

    load_dpt(status.spec, str(status.root), CPU)
    return "DPTForDepthEstimation loaded strictly"


def _clip(status: ModelStatus, store: ModelStore) -> str:
    from glimpse3d_core.backends.clip_similarity import load_clip

    load_clip(status.spec, str(status.root), CPU)
    return "CLIPModel loaded strictly"


def _sdxl_base(status: ModelStatus, store: ModelStore) -> str:
    from glimpse3d_core.backends.sdxl_enhance import load_text_encoders

    load_text_encoders(status.spec.id, status, torch.float32)
    return "both text encoders loaded strictly, tokenizers read"


def _lightning(status: ModelStatus, store: ModelStore) -> str:
    from glimpse3d_core.backends.sdxl_enhance import load_lightning_unet

    base = store.status("sdxl-base")
    if not base.present:
        return "UNet architecture check skipped: it needs sdxl-base's unet/config.json"
    load_lightning_unet(base, status, torch.float32)
    return "UNet weights loaded strictly into SDXL base's UNet"


def _vae(status: ModelStatus, store: ModelStore) -> str:
    from glimpse3d_core.backends.sdxl_enhance import load_vae

    load_vae(status, torch.float32)
    return "AutoencoderKL loaded strictly"


def _controlnet(status: ModelStatus, store: ModelStore) -> str:
    from glimpse3d_core.backends.sdxl_enhance import load_controlnet

    load_controlnet(status, torch.float32)
    return "ControlNetModel loaded strictly"


def _triposr(status: ModelStatus, store: ModelStore) -> str:
    from glimpse3d_core.models.triposr import load_triposr

    load_triposr(status.root)
    return "TripoSR loaded strictly"


def _syncdreamer(status: ModelStatus, store: ModelStore) -> str:
    from glimpse3d_core.models.syncdreamer import load_syncdreamer

    load_syncdreamer(status.root)
    return "SyncDreamer loaded strictly"


VERIFIERS: dict[str, Callable[[ModelStatus, ModelStore], str]] = {
    "rembg": _rembg, "dpt": _dpt, "clip": _clip, "sdxl-base": _sdxl_base, "sdxl-lightning-unet": _lightning,
    "sdxl-vae": _vae, "controlnet": _controlnet, "triposr": _triposr, "syncdreamer": _syncdreamer,
}


def released_layouts(status: ModelStatus) -> list[str]:
    """One line per weight file of a present model that has a released key list: its keys and shapes match it;
    CorruptWeightsError naming the differing keys otherwise."""
    from glimpse3d_core.models.layout import check_state_dict, layouts_of

    lines = []
    for name, weights in layouts_of(status.spec.id):
        report = check_state_dict(name, file_layout(status.spec.id, status.path(weights)))
        if not report.ok:
            raise CorruptWeightsError(status.spec.id, f"{weights}: layout differs from the released key list: "
                                      f"{report.summary()}: {report.details()}")
        lines.append(f"{weights}: layout {report.summary()}")
    return lines


def verify_model(status: ModelStatus, store: ModelStore) -> Iterator[str]:
    """Report lines for a present model, each as its check passes; raises a ModelError subclass on the first
    failed check."""
    yield from check_files(status)
    yield VERIFIERS[status.spec.loader](status, store)
    yield from released_layouts(status)
