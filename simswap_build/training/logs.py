"""Loss logs without TensorBoard: ``log.csv`` (one row per step, appended at each checkpoint so it never
runs ahead of the checkpoint), ``run.json`` (settings and a summary) and an optional ``losses.png``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from simswap_build.training.trainer import LOSS_NAMES
from simswap_trt.files import write_atomic_with

COLUMNS = ("step", "same_identity", *LOSS_NAMES, "seconds")


class LossLog:
    """Rows of ``log.csv``. Opening it for a resumed run drops rows past the resumed step."""

    def __init__(self, out: Path, resumed_step: int = 0) -> None:
        self.path = Path(out) / "log.csv"
        self.pending: list[dict] = []
        rows = read_rows(self.path) if self.path.is_file() and resumed_step else []
        kept = [r for r in rows if r["step"] <= resumed_step]
        self._write(kept, mode="replace")

    def add(self, step: int, same_identity: bool, values: dict[str, float], seconds: float) -> None:
        self.pending.append({"step": step, "same_identity": int(same_identity), **values, "seconds": seconds})

    def flush(self) -> None:
        self._write(self.pending, mode="append")
        self.pending = []

    def _write(self, rows: list[dict], mode: str) -> None:
        if mode == "replace":
            text = io.StringIO()
            writer = csv.DictWriter(text, COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
            write_atomic_with(self.path, lambda f: f.write(text.getvalue().encode()))
        elif rows:
            with self.path.open("a", newline="") as f:
                csv.DictWriter(f, COLUMNS).writerows(rows)


def read_rows(path: Path) -> list[dict]:
    """``log.csv`` as dicts of numbers."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: int(v) if k in ("step", "same_identity") else float(v) for k, v in r.items()} for r in rows]


def summary(rows: list[dict], last: int = 100) -> dict:
    """Mean of each loss over the last ``last`` steps (reconstruction: same-identity steps only), and the
    median seconds per step."""
    tail = rows[-last:]
    if not tail:
        return {}
    out = {name: float(np.mean([r[name] for r in tail])) for name in LOSS_NAMES}
    out["g_rec"] = float(np.mean([r["g_rec"] for r in tail if r["same_identity"]] or [0.0]))
    out["seconds_per_step_median"] = float(np.median([r["seconds"] for r in tail]))
    out["steps"] = rows[-1]["step"]
    return out


def write_json(path: Path, data: dict) -> None:
    write_atomic_with(path, lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))


def plot_losses(rows: list[dict], path: Path, window: int = 50) -> None:
    """Loss curves (moving average over ``window`` steps) of the generator terms and the discriminator."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([r["step"] for r in rows])
    window = max(1, min(window, len(rows)))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, names in zip(axes, (("g_adv", "g_fm", "g_id", "g_rec"), ("d_real", "d_fake", "d_gp")), strict=True):
        for name in names:
            values = np.convolve([r[name] for r in rows], np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1 :], values, label=name)
        ax.set_xlabel("step")
        ax.legend()
    axes[0].set_title("generator")
    axes[1].set_title("discriminator")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    write_atomic_with(path, lambda f: f.write(buffer.getvalue()))
