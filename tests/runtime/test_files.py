"""The output policy helpers: umask modes, atomic replacement, the overwrite/skip decision, inputs by
identity, and one-line errors naming the path."""

import errno
import os
import stat

import numpy as np
import pytest
from support.folders import unwritable_folder

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


def dead_pid() -> int:
    """The id of a process that has exited."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_temporaries_of_dead_processes_of_this_host_are_removed_before_writing(tmp_path):
    mine = files.temporary_path(tmp_path / "a.png")  # this process: still writing, as far as others know
    assert mine.name.startswith(".a.") and mine.name.endswith(".partial.png") and f"-{os.getpid()}-" in mine.name
    stale = tmp_path / mine.name.replace(f"-{os.getpid()}-", f"-{dead_pid()}-")
    elsewhere = tmp_path / mine.name.replace(files._HOST, "another_host").replace(f"-{os.getpid()}-", "-1-")
    for path in (mine, stale, elsewhere):
        path.write_bytes(b"partial")
    assert files.host_temporaries(tmp_path) == {mine: os.getpid(), stale: int(stale.name.split("-")[-2])}
    write_atomic(tmp_path / "b.png", b"new")  # the first write into a folder removes the stale ones
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["b.png", mine.name, elsewhere.name])


def test_sigterm_is_an_interrupt_that_removes_the_temporary_and_keeps_the_old_file(tmp_path):
    import signal

    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def killed_while_writing(f):
        f.write(b"half")
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(files.Terminated), files.terminate_as_interrupt():
        files.write_atomic_with(target, killed_while_writing)
    assert signal.getsignal(signal.SIGTERM) is before  # restored
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_sigterm_during_a_command_exits_143(capsys):
    import argparse
    import signal

    from simswap_trt.cli import support as cli_support

    parser = argparse.ArgumentParser()
    cli_support.add_logging_flags(parser)
    parser.add_argument("command")

    def terminated(args):
        os.kill(os.getpid(), signal.SIGTERM)

    def interrupted(args):
        raise KeyboardInterrupt

    assert cli_support.run(parser, ["x"], {"x": terminated}) == 143
    assert "terminated" in capsys.readouterr().err
    assert cli_support.run(parser, ["x"], {"x": interrupted}) == 130
