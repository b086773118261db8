"""Safe, stable keys for input images (used as Dagster partition keys and output folder names).

A key is ASCII ``[a-z0-9_-]``, at most :data:`MAX_KEY_LENGTH` characters, never empty, never ``.``/``..`` and
never holding a path separator, so it can be a folder name on any file system and an S3 prefix. The key of a
file comes from its stem: accents are stripped (NFKD), everything else outside the alphabet becomes ``_``.
Names that leave nothing usable (e.g. all CJK) get ``img-<hash>`` of the stem.

Collisions (``Cat.png`` and ``cat.jpg``) are resolved by :func:`assign_keys`: keys already assigned never
change, and each new name, in order (names whose stem already is their key first, then by name), takes its
base key if free, else the base key plus a short hash of
the full name (plus a counter in the astronomically unlikely case that is taken too). The result depends only
on the existing assignment and the set of new names, not on listing order.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import PurePosixPath

MAX_KEY_LENGTH = 64
HASH_LENGTH = 8
_INVALID = re.compile(r"[^a-z0-9_-]+")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_LENGTH]


def _stem(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).stem or name


def image_key(name: str) -> str:
    """The base key of a file name or path (only its stem counts): lowercase ASCII ``[a-z0-9_-]``."""
    stem = _stem(name)
    ascii_text = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii").lower()
    slug = _INVALID.sub("_", ascii_text).strip("_-")
    if not slug:
        return f"img-{_short_hash(stem)}"
    return slug[:MAX_KEY_LENGTH].rstrip("_-")


def assign_keys(names: Iterable[str], existing: Mapping[str, str] | None = None) -> dict[str, str]:
    """Keys for ``names`` (file names or relative paths), keeping every assignment in ``existing``.

    Returns the full mapping name -> key (existing plus new); keys are unique.
    """
    assigned = dict(existing or {})
    taken = set(assigned.values())
    if len(taken) != len(assigned):
        raise ValueError("existing assignment maps two names to one key")
    for name in sorted(set(names) - assigned.keys(), key=lambda n: (_stem(n) != image_key(n), n)):
        base = image_key(name)
        key = base
        if key in taken:
            key = f"{base[: MAX_KEY_LENGTH - HASH_LENGTH - 1]}-{_short_hash(name)}"
            counter = 2
            while key in taken:
                key = f"{base[: MAX_KEY_LENGTH - HASH_LENGTH - 4]}-{_short_hash(name)}{counter}"
                counter += 1
        assigned[name] = key
        taken.add(key)
    return assigned
