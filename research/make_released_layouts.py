"""Write the key lists of the library-backed models' released weight files (glimpse3d_core/models/layouts/).

For each :data:`~glimpse3d_core.models.library_layouts.RELEASED_FILES` entry: the library architecture built from
the released config values on the meta device (no weights, no memory), its state dict's key names and shapes,
minus the keys :data:`~glimpse3d_core.models.released.ALLOWED_MISSING` lists where the released file is known to
leave them out (``omits_allowed_missing``). The
lists are derived, not read from the released files (they cannot be downloaded here); the ``source`` field says
so, and the tests check the parameter counts against the registry's file sizes.

Usage: ``python research/make_released_layouts.py [--out glimpse3d_core/models/layouts]``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from glimpse3d_core.models.library_layouts import RELEASED_FILES, ReleasedFile
from glimpse3d_core.models.registry import get_spec
from glimpse3d_core.models.released import ALLOWED_EXTRA, split_missing

PACKAGED = Path(__file__).resolve().parents[1] / "glimpse3d_core" / "models" / "layouts"


def layout_document(released: ReleasedFile) -> dict:
    """The JSON document of one released file's derived key list."""
    import importlib

    library = importlib.import_module(released.library)
    spec = get_spec(released.model_id)
    state = released.build().state_dict()
    _, omitted = split_missing(released.model_id, state) if released.omits_allowed_missing else ([], {})
    keys = {k: list(v.shape) for k, v in state.items() if k not in omitted}
    values = sum(v.numel() for k, v in state.items() if k not in omitted)
    source = (
        f"DERIVED, not read from the released file: the key names and shapes of {released.library} "
        f"{library.__version__} {released.cls} built on the meta device from the config values below "
        f"({released.config_source}), minus the {len(omitted)} keys the released file is known to omit "
        f"('omitted'). Released file: hf:{spec.repo} {released.weights} ({released.dtype}); "
        f"{values:,} values x {released.bytes_per_value} bytes = {values * released.bytes_per_value / 1e9:.3f} GB."
    )
    return {
        "model": released.model_id, "repo": spec.repo, "file": released.weights, "source": source,
        "library": f"{released.library} {library.__version__}", "class": released.cls, "dtype": released.dtype,
        "config": released.config, "omitted": omitted,
        "may_also_hold": dict(ALLOWED_EXTRA.get(released.model_id, ())),
        "keys": keys,
    }


def dumps(document: dict) -> str:
    """JSON text with one line per key of the ``keys`` mapping (the last field)."""
    head = json.dumps({k: v for k, v in document.items() if k != "keys"}, indent=1)[:-2]
    lines = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in document["keys"].items())
    return f'{head},\n "keys": {{\n{lines}\n }}\n}}\n'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PACKAGED)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, released in RELEASED_FILES.items():
        document = layout_document(released)
        (args.out / f"{name}.json").write_text(dumps(document))
        print(f"{name}: {len(document['keys'])} keys, {len(document['omitted'])} omitted -> {args.out / name}.json")


if __name__ == "__main__":
    main()
