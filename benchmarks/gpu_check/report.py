"""Outcomes of the GPU check's parts: printed as they come, a summary table, one JSON file."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class Skipped(Exception):  # noqa: N818 (an outcome, not an error)
    """Raised by a part that cannot run here; its message says why."""


@dataclass(frozen=True)
class Part:
    """One part of the check: ``name`` (what ``--only`` takes) and ``run``, which returns its figures,
    raises ``Skipped`` with the reason, or fails by raising anything else. A ``setup`` part runs even when
    ``--only`` does not name it (the parts after it need what it makes)."""

    name: str
    run: Callable[[], dict | None]
    setup: bool = False


class Report:
    """Each part's outcome: ``{"result": "ok" | "FAIL" | "skipped", "seconds", figures | "error" | "reason"}``."""

    def __init__(self) -> None:
        self.checks: dict[str, dict] = {}

    def run(self, part: Part) -> None:
        start = time.perf_counter()
        try:
            outcome = {"result": "ok", **(part.run() or {})}
        except Skipped as exc:
            outcome = {"result": "skipped", "reason": str(exc)}
        except Exception as exc:  # a part that fails is reported, and the others still run
            outcome = {"result": "FAIL", "error": f"{type(exc).__name__}: {exc}"}
        outcome["seconds"] = round(time.perf_counter() - start, 2)
        self.checks[part.name] = outcome
        print(f"{outcome['result']:7} {part.name} ({outcome['seconds']} s) {note(outcome)}", flush=True)

    @property
    def failed(self) -> list[str]:
        return [name for name, outcome in self.checks.items() if outcome["result"] == "FAIL"]

    def table(self) -> str:
        """One line per part: name, result, seconds, and the error, the reason or the figures."""
        width = max(len(name) for name in self.checks)
        lines = [f"{'part':{width}}  {'result':7}  {'seconds':>7}  details", "-" * (width + 30)]
        for name, outcome in self.checks.items():
            details = note(outcome)
            details = details if len(details) <= 100 else details[:99] + "…"
            lines.append(f"{name:{width}}  {outcome['result']:7}  {outcome['seconds']:7.2f}  {details}")
        return "\n".join(lines)


def note(outcome: dict) -> str:
    """The error, the skip reason, or the figures of one outcome, on one line."""
    if "error" in outcome or "reason" in outcome:
        return outcome.get("error") or outcome["reason"]
    figures = {k: v for k, v in outcome.items() if k not in ("result", "seconds")}
    return ", ".join(f"{k}={v}" for k, v in figures.items())


def write_results(path: Path, result: dict, merge: bool) -> None:
    """Write ``result`` to ``path`` atomically; with ``merge``, the checks of an earlier file at ``path`` that
    this run did not repeat are kept (a rerun of the failed parts completes the first run's file)."""
    if merge and path.is_file():
        earlier = json.loads(path.read_text())
        result = {**result, "checks": {**earlier.get("checks", {}), **result["checks"]}}
        result["ok"] = not any(c.get("result") == "FAIL" for c in result["checks"].values())
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(result, indent=2) + "\n")
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
