"""The output policy helpers: umask modes, atomic replacement, the overwrite/skip decision, inputs by
identity, and one-line errors naming the path."""

import errno
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from simswap_trt import files
from simswap_trt.errors import OutputError
from simswap_trt.files import Inputs, check_output, staging_folder, write_atomic
from simswap_trt.images import write_image


@pytest.fixture()
def umask():
    """Set a umask for the test and restore the previous one."""
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("mask", "file_mode", "folder_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_files_and_folders_get_the_modes_the_umask_gives(tmp_path, umask, mask, file_mode, folder_mode):
    umask(mask)
    assert files.current_umask() == mask
    write_atomic(tmp_path / "new" / "deeper" / "a.bin", b"x")
    write_image(tmp_path / "b.png", np.zeros((4, 4, 3), np.uint8))
    assert mode(tmp_path / "new" / "deeper" / "a.bin") == file_mode
    assert mode(tmp_path / "b.png") == file_mode
    assert mode(tmp_path / "new") == folder_mode
    assert mode(staging_folder(tmp_path / "bundle")) == folder_mode


def test_a_failed_replace_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "a.png"
    target.write_bytes(b"old")

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "replace", full_disk)
    with pytest.raises(OutputError, match=f"cannot write {target}: No space left on device"):
        write_atomic(target, b"new content")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_check_output_decisions(tmp_path):
    existing = tmp_path / "exists.png"
    existing.write_bytes(b"x")
    assert check_output(tmp_path / "new.png") is True
    assert check_output(existing) is False  # skipped: exists and no overwrite
    assert check_output(existing, overwrite=True) is True
    assert check_output(tmp_path / "not" / "yet" / "there.png") is True  # folders can be created
    assert not (tmp_path / "not").exists()  # ... but are not created by the check


def test_check_output_refuses_inputs_including_links(tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"x")
    os.link(photo, tmp_path / "hard.jpg")
    (tmp_path / "soft.jpg").symlink_to(photo)
    for alias in ("photo.jpg", "hard.jpg", "soft.jpg"):
        with pytest.raises(OutputError, match="is also an input of this run"):
            check_output(tmp_path / alias, Inputs([photo]), overwrite=True)
    assert photo in Inputs([tmp_path / "soft.jpg"])
    assert tmp_path / "other.jpg" not in Inputs([photo])


def test_check_output_refuses_unwritable_places(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(OutputError, match=r"file is a file, not a folder"):
        check_output(tmp_path / "file" / "out.png")
    with pytest.raises(OutputError, match="is a folder; give a file name"):
        check_output(tmp_path)
    with pytest.raises(OutputError, match="is not writable"):
        check_output(unwritable_folder(tmp_path) / "out.png")


def unwritable_folder(tmp_path):
    """A folder this process cannot write: mode 0555, or for root (who ignores modes) /sys."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o555)
        return folder
    if not os.path.isdir("/sys"):
        pytest.skip("running as root without /sys: no folder here refuses writes")
    return Path("/sys")
