"""Image keys: safe, stable, collision-free (glimpse3d_core.naming)."""

from __future__ import annotations

import re

from glimpse3d_core.naming import MAX_KEY_LENGTH, assign_keys, image_key

SAFE = re.compile(r"^[a-z0-9_-]+$")


def test_image_key_is_safe_for_any_name():
    names = ["My Photo (1).PNG", "../../etc/passwd.png", "a/b\\c.jpg", "Crème brûlée.jpg", "猫.png", "..png",
             " .png", "x" * 300 + ".png", "dir/..", "a|b,c[d].webp"]
    for name in names:
        key = image_key(name)
        assert SAFE.match(key), (name, key)
        assert key not in (".", "..") and len(key) <= MAX_KEY_LENGTH
    assert image_key("My Photo (1).PNG") == "my_photo_1"
    assert image_key("Crème brûlée.jpg") == "creme_brulee"
    assert image_key("../../etc/passwd.png") == "passwd"
    assert image_key("猫.png").startswith("img-") and image_key("猫.png") != image_key("犬.png")


def test_collisions_resolved_deterministically_and_stably():
    names = ["cat.png", "Cat.jpg", "sub/cat.webp", "dog.png"]
    first = assign_keys(names)
    assert assign_keys(list(reversed(names))) == first  # order of the listing does not matter
    assert len(set(first.values())) == len(names)
    assert first["cat.png"] == "cat" and first["dog.png"] == "dog"  # an exact stem wins its key
    # keys already assigned never change when a colliding name arrives later
    later = assign_keys([*names, "CAT.tiff"], first)
    assert {k: later[k] for k in names} == first and later["CAT.tiff"] not in first.values()
