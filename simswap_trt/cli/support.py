"""What both command-line tools share: logging and --debug, argument types with ranges, and turning user
errors into one line on stderr and an exit status (1: nothing done) instead of a traceback."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable, Sequence

from simswap_trt import __version__
from simswap_trt.errors import SimswapError
from simswap_trt.files import Terminated, terminate_as_interrupt


def add_logging_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="log what runs where (backend, threads, timings)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (for bug reports)")


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    """``--version``: the program name and the simswap-trt version, then exit 0."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum``; the message states the accepted range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int>={minimum}"
    return parse


positive_int = int_at_least(1)


def float_between(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a number in [``low``, ``high``]; the message states the accepted range."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in [{low:g}, {high:g}], got {text!r}") from None
        if not low <= value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be in [{low:g}, {high:g}], got {text}")
        return value

    parse.__name__ = f"number in [{low:g}, {high:g}]"
    return parse


def run(parser: argparse.ArgumentParser, argv: Sequence[str] | None, handlers: dict[str, Callable]) -> int:
    """Parse ``argv``, dispatch to ``handlers[args.command]``. Bad arguments (argparse prints the usage) and
    user errors (one line, ``error: ...``; the traceback with ``--debug``) return 1. SIGTERM is handled as
    Ctrl-C (``files.terminate_as_interrupt``: outputs being written are deleted); they return 143 and 130."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code == 2:  # argparse has printed the usage and the error
            return 1
        raise
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        with terminate_as_interrupt():
            return handlers[args.command](args) or 0
    except (SimswapError, OSError, MemoryError) as exc:
        if args.debug:
            traceback.print_exc()
        message = str(exc) or type(exc).__name__
        if isinstance(exc, MemoryError):
            message = "out of memory: use smaller images (--max-pixels) or a smaller --batch"
        print(f"error: {message}", file=sys.stderr)
        return 1
    except Terminated:
        print("terminated (SIGTERM)", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
