"""``simswap-trt bench``: the benchmark harness belongs to the builder's side; ``main`` hands the whole
command line to ``simswap-build bench`` before parsing (listed here for --help only)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from simswap_trt.cli.common import run_builder

NAME = "bench"
PARSER = {
    "help": "benchmark stages, backends and the official-style baseline: runs 'simswap-build bench' "
    "(see 'simswap-trt bench --help')",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """None: 'simswap-build bench' parses them."""


def wants(argv: Sequence[str]) -> bool:
    """Whether ``argv``'s command (its first word that is not an option) is ``bench``."""
    command = next((a for a in argv if not a.startswith("-")), None)
    return command == NAME


def forward(argv: Sequence[str]) -> int:
    """Run ``argv`` (``bench ...``) as ``simswap-build bench ...``."""
    return run_builder(argv)
