"""A folder this process cannot write."""

import os
from pathlib import Path

import pytest


def unwritable_folder(tmp_path):
    """A folder this process cannot write: mode 0555, or for root (who ignores modes) /sys."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir(mode=0o555)
        return folder
    if not os.path.isdir("/sys"):
        pytest.skip("running as root without /sys: no folder here refuses writes")
    return Path("/sys")
