"""Model bundles: a directory with ``manifest.json`` and the ONNX graphs it declares.

The manifest is the source of truth for what the runtime may assume: crop size, alignment template,
each model's file, sha256, architecture, precision and I/O signature, the checkpoints it came from and
whether the weights are untrained. ``Bundle.load`` refuses anything it cannot vouch for: unknown format
versions, missing files, hash mismatches, or signatures that break the contract below.

Contract (shared by every precision and backend):

* ``generator``: ``target`` float32[batch,3,S,S] RGB in [0,1], ``latent`` float32[batch,512] → ``swapped``
  float32[batch,3,S,S] RGB in [0,1];
* ``arcface``: ``crop`` float32[batch,3,S,S] RGB in [0,1] → ``latent`` float32[batch,512], L2-normalised.

Optional ``detector`` (added by ``simswap-build engine``): a face detector graph of architecture
``centerface`` or ``scrfd`` with one float32[batch,3,C,C] input (the letterboxed, normalised canvas of
``simswap_trt.vision.detect``) and the detector's own outputs (4 for CenterFace, 9 for SCRFD), so that its
TensorRT plan can run detection on the device.

Optional ``parser`` (added by ``simswap-build engine --parser``): the user's face-parsing graph
(``simswap_trt.vision.parsing``) with input float32[batch,3,512,512] and, as its only output, the class
logits float32[batch,19,512,512], so that its TensorRT plan can parse on the device.

Optional ``enhancer`` (added by ``simswap-build add-enhancer`` or ``convert --enhancer``): a face restorer
(GFPGAN v1.4) with ``face`` float32[batch,3,E,E] RGB in [0,1], aligned to the template named by its
``source["alignment"]`` at E px, → ``enhanced`` float32[batch,3,E,E] RGB in [0,1]; its ``source`` also
states the weights' licence. See docs/enhancer.md.

Optional ``default_precision`` (written by ``simswap-build validate --set-default``): per CPU backend
(``onnxruntime``, ``openvino``), the lower precision the runtime runs when none is asked for, with the
held-out figures that met its gate on that backend: ``{backend: {"precision", "gate", "faces", "set_by"}}``.
Bundles without it run FP32 by default.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simswap_trt.constants import LATENT_SIZE, PARSING_CLASSES, PARSING_SIZE
from simswap_trt.errors import BundleError
from simswap_trt.plans import PlanEntry
from simswap_trt.schema import TensorSpec, sha256_of

BUNDLE_FORMAT = "simswap-trt-bundle"
BUNDLE_VERSION = 1
MANIFEST_NAME = "manifest.json"
ALIGNMENTS = ("multipose", "ffhq")  # the official 224 templates ×S/112, or the FFHQ template ×S/512
ROLES = ("generator", "arcface")
DETECTOR = "detector"  # the optional detector role
DETECTOR_OUTPUTS = {"centerface": 4, "scrfd": 9}  # architecture -> number of outputs
PARSER = "parser"  # the optional face-parser role
ENHANCER = "enhancer"  # the optional face-restorer role
DEFAULT_BACKENDS = {"onnxruntime": ("fp16", "int8"), "openvino": ("int8", "bf16")}  # backend -> defaults it runs


def contract(role: str, crop_size: int) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The (inputs, outputs) every ``role`` graph must have for a ``crop_size`` bundle."""
    image = ("batch", 3, crop_size, crop_size)
    latent = TensorSpec("latent", "float32", ("batch", LATENT_SIZE))
    if role == "generator":
        return (TensorSpec("target", "float32", image), latent), (TensorSpec("swapped", "float32", image),)
    return (TensorSpec("crop", "float32", image),), (latent,)


@dataclass(frozen=True)
class ModelEntry:
    """One model of a bundle as the manifest declares it."""

    role: str
    file: str
    sha256: str
    architecture: str
    precision: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    source: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "file": self.file,
            "sha256": self.sha256,
            "architecture": self.architecture,
            "precision": self.precision,
            "inputs": [s.to_json() for s in self.inputs],
            "outputs": [s.to_json() for s in self.outputs],
            "source": dict(self.source),
        }

    @classmethod
    def from_json(cls, role: str, data: Mapping[str, Any]) -> ModelEntry:
        return cls(
            role=role,
            file=str(data["file"]),
            sha256=str(data["sha256"]),
            architecture=str(data["architecture"]),
            precision=str(data["precision"]),
            inputs=tuple(TensorSpec.from_json(s) for s in data["inputs"]),
            outputs=tuple(TensorSpec.from_json(s) for s in data["outputs"]),
            source=dict(data.get("source", {})),
        )


@dataclass(frozen=True)
class Bundle:
    """A validated bundle on disk. Create with ``Bundle.load(path)``."""

    root: Path
    crop_size: int
    alignment: str
    untrained: bool
    models: Mapping[str, ModelEntry]
    created_with: Mapping[str, str]
    plans: tuple[PlanEntry, ...] = ()
    variants: Mapping[str, Mapping[str, ModelEntry]] = field(default_factory=dict)  # role -> precision -> entry
    default_precision: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # backend -> record

    @property
    def detector(self) -> ModelEntry | None:
        """The detector graph, or None for a bundle without one (detection then runs on ONNX Runtime)."""
        return self.models.get(DETECTOR)

    @property
    def parser(self) -> ModelEntry | None:
        """The face-parser graph, or None (a parser then runs on ONNX Runtime only)."""
        return self.models.get(PARSER)

    @property
    def enhancer(self) -> ModelEntry | None:
        """The face-restorer graph, or None for a bundle without one."""
        return self.models.get(ENHANCER)

    def require_enhancer(self) -> ModelEntry:
        """The face-restorer graph; a ``BundleError`` naming the command that adds one when there is none."""
        if self.enhancer is None:
            raise BundleError(
                f"{self.root} has no enhancer: add one with 'simswap-build add-enhancer {self.root} GFPGANv1.4.pth'"
            )
        return self.enhancer

    @property
    def detector_canvas(self) -> int:
        """The detector graph's canvas size C (its input is [batch, 3, C, C])."""
        return int(self.models[DETECTOR].inputs[0].shape[2])

    def model(self, role: str, precision: str = "fp32") -> ModelEntry:
        """The ``role`` graph in ``precision`` (``fp32`` is the reference graph; others come from
        ``simswap-build precision``)."""
        if precision == self.models[role].precision:
            return self.models[role]
        try:
            return self.variants[role][precision]
        except KeyError:
            raise BundleError(
                f"{self.root} has no {precision} {role} graph; create it with 'simswap-build precision {self.root}'"
            ) from None

    def default_for(self, backend: str) -> str | None:
        """The validated lower precision the bundle runs by default on CPU ``backend``, or None (FP32)."""
        record = self.default_precision.get(backend)
        return None if record is None else str(record["precision"])

    def path_of(self, role: str, precision: str = "fp32") -> Path:
        """Absolute path of the ``role`` model file in ``precision``."""
        return self.root / self.model(role, precision).file

    def to_json(self) -> dict:
        data = {
            "format": BUNDLE_FORMAT,
            "format_version": BUNDLE_VERSION,
            "crop_size": self.crop_size,
            "alignment": self.alignment,
            "untrained": self.untrained,
            "created_with": dict(self.created_with),
            "models": {role: entry.to_json() for role, entry in self.models.items()},
            "variants": {role: {p: e.to_json() for p, e in by.items()} for role, by in self.variants.items()},
            "engines": [plan.to_json() for plan in self.plans],
        }
        if self.default_precision:  # absent unless set: manifests without it stay as they were
            data["default_precision"] = {b: dict(r) for b, r in self.default_precision.items()}
        return data

    @classmethod
    def load(cls, root: str | Path, verify_hashes: bool = True) -> Bundle:
        """Read and validate ``root/manifest.json``; with ``verify_hashes`` every file's sha256 is checked."""
        root = Path(root)
        manifest_path = root / MANIFEST_NAME
        if not manifest_path.is_file():
            raise BundleError(
                f"{root} is not a bundle: {MANIFEST_NAME} is missing. Create one with "
                "'simswap-build convert' (official checkpoints) or 'simswap-build untrained' (random weights)."
            )
        try:
            data = json.loads(manifest_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{manifest_path} is not a {BUNDLE_FORMAT} manifest")
        if data.get("format_version") != BUNDLE_VERSION:
            raise BundleError(
                f"{manifest_path} has format_version {data.get('format_version')!r}; this simswap-trt reads version "
                f"{BUNDLE_VERSION}. Re-create the bundle with this version's 'simswap-build', or upgrade simswap-trt."
            )
        try:
            bundle = cls(
                root=root,
                crop_size=int(data["crop_size"]),
                alignment=str(data["alignment"]),
                untrained=bool(data["untrained"]),
                models={role: ModelEntry.from_json(role, m) for role, m in data["models"].items()},
                variants={
                    role: {p: ModelEntry.from_json(role, e) for p, e in by.items()}
                    for role, by in data.get("variants", {}).items()
                },
                created_with=dict(data.get("created_with", {})),
                plans=tuple(PlanEntry.from_json(p) for p in data.get("engines", [])),
                default_precision={b: dict(r) for b, r in data.get("default_precision", {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BundleError(
                f"{manifest_path} is missing a field or has one of the wrong type ({type(exc).__name__}: {exc}); "
                "re-create the bundle with 'simswap-build convert' or restore the original manifest"
            ) from exc
        bundle._validate(verify_hashes)
        return bundle

    def _check_file(self, what: str, file: str, sha256: str, verify_hashes: bool) -> None:
        path = self.root / file
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise BundleError(f"{self.root}: {what} file {file!r} points outside the bundle")
        if not path.is_file():
            raise BundleError(f"{self.root}: {what} file {file} is missing")
        if verify_hashes and sha256_of(path) != sha256:
            raise BundleError(
                f"{path} does not match the sha256 in {MANIFEST_NAME}: the file was modified or corrupted. "
                "Re-create it (bundle: simswap-build convert; TensorRT plan: simswap-build engine)."
            )

    def _validate(self, verify_hashes: bool) -> None:
        if self.alignment not in ALIGNMENTS:
            raise BundleError(f"{self.root}: unknown alignment {self.alignment!r} (known: {', '.join(ALIGNMENTS)})")
        for role in ROLES:
            if role not in self.models:
                raise BundleError(f"{self.root}: the manifest declares no {role} model")
        for role, entry in self.models.items():
            if role == PARSER:
                self._validate_parser(entry)
                self._check_file(role, entry.file, entry.sha256, verify_hashes)
                continue
            if role == ENHANCER:
                self._validate_enhancer(entry)
                self._check_file(role, entry.file, entry.sha256, verify_hashes)
                continue
            if role == DETECTOR:
                self._validate_detector(entry)
                self._check_file(role, entry.file, entry.sha256, verify_hashes)
                continue
            if role not in ROLES:
                raise BundleError(f"{self.root}: unknown model role {role!r}")
            if (entry.inputs, entry.outputs) != contract(role, self.crop_size):
                raise BundleError(
                    f"{self.root}: the {role} signature {[s.describe() for s in entry.inputs + entry.outputs]} breaks "
                    f"the {self.crop_size}px contract"
                )
            self._check_file(role, entry.file, entry.sha256, verify_hashes)
        for role, by_precision in self.variants.items():
            for precision, entry in by_precision.items():
                if role not in (*ROLES, ENHANCER) or entry.precision != precision:
                    raise BundleError(f"{self.root}: malformed {precision} variant of {role!r}")
                if role == ENHANCER:
                    self._validate_enhancer(entry)
                elif (entry.inputs, entry.outputs) != contract(role, self.crop_size):
                    raise BundleError(f"{self.root}: the {precision} {role} signature breaks the contract")
                self._check_file(f"{precision} {role}", entry.file, entry.sha256, verify_hashes)
        self._validate_default_precision()
        for plan in self.plans:
            if plan.role not in ROLES and plan.role not in self.models:
                raise BundleError(f"{self.root}: TensorRT plan {plan.file} has unknown role {plan.role!r}")
            self._check_file(f"{plan.role} TensorRT plan", plan.file, plan.sha256, verify_hashes)

    def _validate_default_precision(self) -> None:
        for backend, record in self.default_precision.items():
            precision = record.get("precision")
            if precision not in DEFAULT_BACKENDS.get(backend, ()):
                raise BundleError(
                    f"{self.root}: default precision {precision!r} for backend {backend!r} is not one of "
                    f"{DEFAULT_BACKENDS}; set it again with 'simswap-build validate --set-default'"
                )
            if precision != "bf16" and any(precision not in self.variants.get(role, {}) for role in ROLES):
                raise BundleError(
                    f"{self.root}: the default precision {precision} on {backend} has no {precision} graphs; "
                    f"create them with 'simswap-build precision {self.root}' and validate again"
                )

    def _validate_parser(self, entry: ModelEntry) -> None:
        shapes = [(s.dtype, s.shape[1:]) for s in entry.inputs + entry.outputs]
        want = [
            ("float32", (3, PARSING_SIZE, PARSING_SIZE)),
            ("float32", (PARSING_CLASSES, PARSING_SIZE, PARSING_SIZE)),
        ]
        if shapes != want:
            raise BundleError(
                f"{self.root}: the parser graph must take float32 [batch, 3, 512, 512] and give only float32 "
                f"[batch, 19, 512, 512] logits; got {[s.describe() for s in entry.inputs + entry.outputs]}. "
                "Re-add it with 'simswap-build engine --parser'"
            )

    def _validate_enhancer(self, entry: ModelEntry) -> None:
        shape = entry.inputs[0].shape if len(entry.inputs) == 1 else ()
        square = len(shape) == 4 and shape[1] == 3 and isinstance(shape[2], int) and shape[2] == shape[3]
        image = TensorSpec("enhanced", "float32", shape)
        if (
            not square
            or entry.inputs[0].name != "face"
            or entry.inputs[0].dtype != "float32"
            or entry.outputs != (image,)
        ):
            raise BundleError(
                f"{self.root}: the enhancer graph must take float32 face [batch, 3, E, E] and give float32 enhanced "
                f"of the same shape; got {[s.describe() for s in entry.inputs + entry.outputs]}. "
                "Re-add it with 'simswap-build add-enhancer'"
            )
        if entry.source.get("alignment") not in ALIGNMENTS:
            raise BundleError(
                f"{self.root}: the enhancer's alignment {entry.source.get('alignment')!r} is not one of "
                f"{', '.join(ALIGNMENTS)}. Re-add it with 'simswap-build add-enhancer'"
            )

    def _validate_detector(self, entry: ModelEntry) -> None:
        outputs = DETECTOR_OUTPUTS.get(entry.architecture)
        shape = entry.inputs[0].shape if len(entry.inputs) == 1 else ()
        square = len(shape) == 4 and shape[1] == 3 and isinstance(shape[2], int) and shape[2] == shape[3]
        if outputs is None or len(entry.outputs) != outputs or not square or entry.inputs[0].dtype != "float32":
            raise BundleError(
                f"{self.root}: the detector graph must be {' or '.join(DETECTOR_OUTPUTS)} with one float32 "
                f"[batch, 3, C, C] input and its {outputs or 'own'} outputs; got {entry.architecture} with "
                f"{[s.describe() for s in entry.inputs + entry.outputs]}. Re-add it with 'simswap-build engine'"
            )
