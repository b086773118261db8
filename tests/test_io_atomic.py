"""atomic_write: all-or-nothing file replacement."""

from __future__ import annotations

import pytest

from glimpse3d_core.io import atomic_write, atomic_write_bytes


def test_replaces_whole_file_and_keeps_suffix(tmp_path):
    target = tmp_path / "deep" / "out.json"
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".json" and tmp != target
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_failure_keeps_previous_file(tmp_path):
    target = atomic_write_bytes(tmp_path / "a.bin", b"old")
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer crashed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_written_files_get_ordinary_permissions(tmp_path):
    from glimpse3d_core.io.atomic import FILE_MODE, atomic_write_bytes

    path = atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert path.stat().st_mode & 0o777 == FILE_MODE
    assert FILE_MODE & 0o044  # readable by others under any usual umask (a web server can serve it)


def test_published_folders_get_ordinary_permissions(tmp_path):
    from glimpse3d_assets.io_manager import publish_folder
    from glimpse3d_core.io.atomic import DIR_MODE

    src = tmp_path / "scratch"
    src.mkdir(mode=0o700)
    (src / "model.ply").write_bytes(b"ply")
    publish_folder(src, tmp_path / "out" / "key")
    assert (tmp_path / "out" / "key").stat().st_mode & 0o777 == DIR_MODE
    assert (tmp_path / "out" / "key" / "model.ply").read_bytes() == b"ply"
