"""Writing outputs whole or not at all: a folder (atomic_dir) as a file (atomic_path)."""

import pytest

from ptmech.io import atomic_dir, atomic_path


def test_a_folder_appears_whole_and_replaces_the_old_one(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with atomic_dir(target) as tmp:
        (tmp / "a.json").write_text("{}")
        assert not (target / "a.json").exists()  # nothing shows before the end
    assert sorted(p.name for p in target.iterdir()) == ["a.json"]
    assert list(tmp_path.glob(".model.*.partial")) == []


def test_a_failed_writer_leaves_neither_folder_nor_partial(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "half.safetensors").write_bytes(b"\0" * 10)
        raise RuntimeError("killed mid-write")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_outputs_get_the_usual_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "d") as tmp:
            pass
        with atomic_path(tmp_path / "f.tsv") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(umask)
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "f.tsv").stat().st_mode & 0o777 == 0o644
