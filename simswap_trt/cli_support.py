"""What both command-line tools share: logging set-up and turning ``SimswapError`` into exit status 1."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from simswap_trt.errors import SimswapError


def add_logging_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log what runs where (backend, threads, timings)")


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None, handlers: dict[str, Callable]) -> int:
    """Parse ``argv``, dispatch to ``handlers[args.command]``; user errors print one line and return 1."""
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return handlers[args.command](args) or 0
    except SimswapError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
