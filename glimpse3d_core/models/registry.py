"""The models the pipeline can use: where each comes from, which files it needs, how big they are.

A :class:`ModelSpec` names a model by a short id (``glimpse3d models download <id>``). Files are given by their
path inside the source (a Hugging Face repository, or a release URL for rembg's ONNX files); the local model
folder mirrors that layout under ``<models dir>/<id>/``. Sizes are exact (``size_exact``) where the byte count is
known and otherwise the size Hugging Face lists, rounded to three digits, checked within
:data:`SIZE_REL_TOLERANCE`; checksums are given where the publisher states one (rembg's md5s, Git LFS sha256s).
Revisions default to ``main``: pin one (a commit hash) in the spec to freeze a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from glimpse3d_core.models.errors import UnknownModelError

SIZE_REL_TOLERANCE = 0.03
"""Relative tolerance for sizes that are only known as Hugging Face's rounded listing (3 significant digits)."""

MB = 1_000_000
GB = 1_000_000_000


class FileKind(StrEnum):
    """How a file is checked and loaded (``verify``): never by unpickling arbitrary objects."""

    CONFIG = "config"  # JSON / YAML / tokenizer text: read as text
    SAFETENSORS = "safetensors"  # safetensors: header + every tensor read
    TORCH = "torch"  # torch pickle of tensors: torch.load(weights_only=True)
    ONNX = "onnx"  # ONNX graph: an onnxruntime session is created


class Source(StrEnum):
    HUGGINGFACE = "huggingface"
    URL = "url"


@dataclass(frozen=True)
class FileSpec:
    """One file of a model. ``path`` is relative to the repository root (and to ``<models dir>/<id>/``)."""

    path: str
    kind: FileKind
    size: int | None = None
    size_exact: bool = False
    sha256: str | None = None
    md5: str | None = None
    url: str | None = None

    def size_ok(self, actual: int) -> bool:
        """Whether ``actual`` bytes matches the expected size (always true where no size is recorded)."""
        if self.size is None:
            return True
        if self.size_exact:
            return actual == self.size
        return abs(actual - self.size) <= SIZE_REL_TOLERANCE * self.size


@dataclass(frozen=True)
class ModelSpec:
    """A downloadable model: ``stage`` is the pipeline stage that uses it, ``loader`` the backend that loads it."""

    id: str
    stage: str
    description: str
    source: Source
    files: tuple[FileSpec, ...]
    licence: str
    loader: str
    repo: str | None = None
    revision: str = "main"
    variant: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Total expected bytes (files without a recorded size count as 0)."""
        return sum(f.size or 0 for f in self.files)

    @property
    def origin(self) -> str:
        """Where the files come from, for humans."""
        if self.source is Source.HUGGINGFACE:
            return f"hf:{self.repo}@{self.revision}"
        return self.files[0].url or "?"


def _hf(path: str, kind: FileKind = FileKind.CONFIG, size: int | None = None, **kw: object) -> FileSpec:
    return FileSpec(path=path, kind=kind, size=size, **kw)  # type: ignore[arg-type]


_REMBG_RELEASE = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/"


def _rembg(model_id: str, session: str, upstream_name: str, md5: str, size: int, licence: str, what: str) -> ModelSpec:
    # rembg keeps each file as "<session name>.onnx"; so do we, so either folder can serve the other.
    return ModelSpec(
        id=model_id, stage="segment", description=what, source=Source.URL, licence=licence, loader="rembg",
        files=(FileSpec(f"{session}.onnx", FileKind.ONNX, size, md5=md5, url=_REMBG_RELEASE + upstream_name),),
        options={"session": session},
    )


def _sdxl_text(sub: str, size: int) -> tuple[FileSpec, ...]:
    return (_hf(f"{sub}/config.json"), _hf(f"{sub}/model.fp16.safetensors", FileKind.SAFETENSORS, size))


def _tokenizer(sub: str) -> tuple[FileSpec, ...]:
    names = ("merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json")
    return tuple(_hf(f"{sub}/{n}") for n in names)


_CLIP_FILES = ("config.json", "preprocessor_config.json")

_SPECS: tuple[ModelSpec, ...] = (
    _rembg("rembg-u2net", "u2net", "u2net.onnx", "60024c5c889badc19c04ad937298a77b", 176 * MB, "Apache-2.0",
           "U²-Net salient-object segmentation (rembg's default general model)"),
    _rembg("rembg-isnet-general-use", "isnet-general-use", "isnet-general-use.onnx",
           "fc16ebd8b0c10d971d3513d564d01e29", 179 * MB, "Apache-2.0", "IS-Net (DIS) general-use segmentation"),
    _rembg("rembg-birefnet-general", "birefnet-general", "BiRefNet-general-epoch_244.onnx",
           "7a35a0141cbbc80de11d9c9a28f52697", 973 * MB, "MIT", "BiRefNet general segmentation (1024 px, slow)"),
    ModelSpec(
        id="dpt-hybrid-midas", stage="depth", description="MiDaS v3 DPT-Hybrid relative inverse depth",
        source=Source.HUGGINGFACE, repo="Intel/dpt-hybrid-midas", licence="Apache-2.0", loader="dpt",
        files=(_hf("config.json"), _hf("preprocessor_config.json"),
               _hf("model.safetensors", FileKind.SAFETENSORS, 490 * MB)),
    ),
    ModelSpec(
        id="dpt-large", stage="depth", description="MiDaS v3 DPT-Large relative inverse depth",
        source=Source.HUGGINGFACE, repo="Intel/dpt-large", licence="Apache-2.0", loader="dpt",
        files=(_hf("config.json"), _hf("preprocessor_config.json"),
               _hf("model.safetensors", FileKind.SAFETENSORS, 1370 * MB)),
    ),
    ModelSpec(
        id="sdxl-base", stage="enhance",
        description="SDXL 1.0 base: text encoders, tokenizers, scheduler and UNet config (fp16)",
        source=Source.HUGGINGFACE, repo="stabilityai/stable-diffusion-xl-base-1.0", licence="CreativeML OpenRAIL++-M",
        loader="sdxl-base", variant="fp16",
        files=(_hf("scheduler/scheduler_config.json"), _hf("unet/config.json"),
               *_sdxl_text("text_encoder", 246 * MB), *_sdxl_text("text_encoder_2", 1390 * MB),
               *_tokenizer("tokenizer"), *_tokenizer("tokenizer_2")),
    ),
    ModelSpec(
        id="sdxl-lightning-4step", stage="enhance", description="SDXL-Lightning distilled 4-step UNet (fp16)",
        source=Source.HUGGINGFACE, repo="ByteDance/SDXL-Lightning", licence="CreativeML OpenRAIL++-M",
        loader="sdxl-lightning-unet",
        files=(_hf("sdxl_lightning_4step_unet.safetensors", FileKind.SAFETENSORS, 5140 * MB),),
        options={"steps": "4"},
    ),
    ModelSpec(
        id="sdxl-vae-fp16-fix", stage="enhance", description="SDXL VAE fine-tuned to run in fp16 without NaNs",
        source=Source.HUGGINGFACE, repo="madebyollin/sdxl-vae-fp16-fix", licence="MIT", loader="sdxl-vae",
        files=(_hf("config.json"), _hf("diffusion_pytorch_model.safetensors", FileKind.SAFETENSORS, 335 * MB)),
    ),
    ModelSpec(
        id="controlnet-depth-sdxl", stage="enhance", description="SDXL depth ControlNet (fp16)",
        source=Source.HUGGINGFACE, repo="diffusers/controlnet-depth-sdxl-1.0", licence="CreativeML OpenRAIL++-M",
        loader="controlnet", variant="fp16",
        files=(_hf("config.json"), _hf("diffusion_pytorch_model.fp16.safetensors", FileKind.SAFETENSORS, 2500 * MB)),
    ),
    ModelSpec(
        id="controlnet-depth-sdxl-small", stage="enhance", description="SDXL depth ControlNet, small (fp16)",
        source=Source.HUGGINGFACE, repo="diffusers/controlnet-depth-sdxl-1.0-small",
        licence="CreativeML OpenRAIL++-M", loader="controlnet", variant="fp16",
        files=(_hf("config.json"), _hf("diffusion_pytorch_model.fp16.safetensors", FileKind.SAFETENSORS, 320 * MB)),
    ),
    ModelSpec(
        id="clip-vit-base-patch32", stage="metrics", description="CLIP ViT-B/32 image embeddings (CLIP similarity)",
        source=Source.HUGGINGFACE, repo="openai/clip-vit-base-patch32", licence="MIT", loader="clip",
        files=(*(_hf(n) for n in _CLIP_FILES), _hf("model.safetensors", FileKind.SAFETENSORS, 605 * MB)),
    ),
    ModelSpec(
        id="clip-vit-large-patch14", stage="metrics", description="CLIP ViT-L/14 image embeddings (CLIP similarity)",
        source=Source.HUGGINGFACE, repo="openai/clip-vit-large-patch14", licence="MIT", loader="clip",
        files=(*(_hf(n) for n in _CLIP_FILES), _hf("model.safetensors", FileKind.SAFETENSORS, 1710 * MB)),
    ),
    ModelSpec(
        id="triposr", stage="reconstruct", description="TripoSR single-image triplane NeRF (plain state_dict)",
        source=Source.HUGGINGFACE, repo="stabilityai/TripoSR", licence="MIT", loader="triposr",
        files=(_hf("config.yaml"), _hf("model.ckpt", FileKind.TORCH, 1680 * MB)),
    ),
    ModelSpec(
        id="syncdreamer", stage="multiview", description="SyncDreamer 16-view diffusion (UNet, volume, CLIP, VAE)",
        source=Source.HUGGINGFACE, repo="camenduru/SyncDreamer", licence="MIT", loader="syncdreamer",
        # The original code also reads OpenAI's ViT-L-14.pt at construction, but the checkpoint holds every CLIP
        # weight and our implementation builds CLIP from its config, so that file is not needed.
        files=(_hf("syncdreamer-pretrain.ckpt", FileKind.TORCH, 5570 * MB,
                   sha256="5ebb31334d9e4002b2590dd805e25238beaf95fa082f6e39a132344624448dcb"),),
    ),
)

MODELS: dict[str, ModelSpec] = {spec.id: spec for spec in _SPECS}
"""Every model the pipeline knows, by id."""

ENHANCE_MODELS = ("sdxl-base", "sdxl-lightning-4step", "sdxl-vae-fp16-fix")
"""The models SDXL-Lightning enhancement needs besides its optional ControlNet."""


def get_spec(model_id: str) -> ModelSpec:
    """The registered spec for ``model_id``."""
    try:
        return MODELS[model_id]
    except KeyError:
        raise UnknownModelError(model_id, list(MODELS)) from None


def specs_for_stage(stage: str) -> list[ModelSpec]:
    return [s for s in MODELS.values() if s.stage == stage]
