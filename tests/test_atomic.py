# SPD-YOLO, AGPL-3.0 license
"""spd_yolo.atomic.staged_folder: a folder built beside its place appears whole or not at all, the old one kept until
then (the dataset generators and converters build through it)."""

import os

import pytest

from spd_yolo import atomic
from spd_yolo.atomic import staged_folder


def _tree(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_new_folder_appears_whole_with_the_usual_mode(tmp_path):
    dst = tmp_path / "deep" / "set"
    with staged_folder(dst) as tmp:
        assert tmp.parent == dst.parent and tmp.name.startswith(".set.") and not dst.exists()
        (tmp / "a").mkdir()
        (tmp / "a" / "x.txt").write_text("x")
    assert _tree(dst) == {"a/x.txt": "x"}
    assert os.listdir(dst.parent) == ["set"]
    (tmp_path / "plain").mkdir()
    assert dst.stat().st_mode == (tmp_path / "plain").stat().st_mode  # not mkdtemp's 0o700


def test_an_old_folder_is_replaced_only_once_the_new_one_is_complete(tmp_path):
    dst = tmp_path / "set"
    dst.mkdir()
    (dst / "old.txt").write_text("old")
    with staged_folder(dst) as tmp:
        (tmp / "new.txt").write_text("new")
        assert _tree(dst) == {"old.txt": "old"}  # still there while the new one is built
    assert _tree(dst) == {"new.txt": "new"}
    assert os.listdir(tmp_path) == ["set"]


@pytest.mark.parametrize("error", [KeyboardInterrupt, ValueError])
def test_a_failed_build_leaves_the_old_folder_and_nothing_else(tmp_path, error):
    dst = tmp_path / "set"
    dst.mkdir()
    (dst / "old.txt").write_text("old")
    with pytest.raises(error), staged_folder(dst) as tmp:
        (tmp / "half.txt").write_text("half")
        raise error
    assert _tree(dst) == {"old.txt": "old"}
    assert os.listdir(tmp_path) == ["set"]


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    dst = tmp_path / "set"
    dst.mkdir()
    (dst / "old.txt").write_text("old")
    real = os.replace

    def replace(src, target):
        if str(src).endswith(".tmp"):  # the new folder into its place: the disk is gone, say
            raise OSError(5, "Input/output error")
        return real(src, target)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError, match="Input/output error"), staged_folder(dst) as tmp:
        (tmp / "new.txt").write_text("new")
    assert _tree(dst) == {"old.txt": "old"}
    assert os.listdir(tmp_path) == ["set"]
