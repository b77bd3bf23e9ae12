"""Reading and validating the C2PA manifest of a file: ``verify(path)``.

The C2PA library checks the claim signature, the certificate chain (against ``trust_anchors`` when
given), and that the asset's bytes still match the hash in the manifest. A changed pixel, sample or box
after signing is a hash mismatch (``assertion.dataHash.mismatch`` in images, ``assertion.bmffHash.*`` in
MP4/MOV): the file is reported as tampered.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from simswap_trt.errors import InputError
from simswap_trt.provenance.signing import MODELS_LABEL, import_c2pa

# exit status of 'simswap-trt verify' per file, the highest wins
VALID, INVALID, NO_MANIFEST = 0, 1, 3


@dataclass(frozen=True)
class Verification:
    """What ``verify`` found in one file. ``status``: ``valid`` (the signature and the hashes check out),
    ``invalid`` (they do not) or ``no manifest``. ``trust``: ``trusted`` (the signer chains to one of the
    given anchors), ``untrusted`` or ``unknown`` (no manifest); ``anchored``: anchors were given, so an
    untrusted signer fails the check."""

    path: str
    status: str
    trust: str = "unknown"
    tampered: bool = False
    signer: str = ""  # the signing certificate's common name
    issuer: str = ""  # the organisation named in it (the library's signature_info.issuer)
    generator: str = ""
    actions: list[dict[str, Any]] = field(default_factory=list)
    models: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # the library's failure codes, with explanations
    anchored: bool = False

    @property
    def exit_code(self) -> int:
        """0 valid (and trusted, when anchored), 1 invalid or tampered or untrusted by the anchors, 3 no manifest."""
        if self.status == "no manifest":
            return NO_MANIFEST
        return VALID if self.status == "valid" and (self.trust == "trusted" or not self.anchored) else INVALID

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _context(trust_anchors: Path | None):
    c2pa = import_c2pa()
    if trust_anchors is None:
        return None
    try:
        anchors = trust_anchors.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the trust anchors {trust_anchors}: {exc}") from None
    if "BEGIN CERTIFICATE" not in anchors:
        raise InputError(f"{trust_anchors} holds no PEM certificate; give the root certificate(s) to trust")
    settings = c2pa.Settings.from_dict({"trust": {"trust_anchors": anchors}, "verify": {"verify_trust": True}})
    return c2pa.Context(settings)


def verify(path: str | Path, trust_anchors: str | Path | None = None) -> Verification:
    """Read and validate the manifest embedded in ``path``. ``trust_anchors``: a PEM file of root
    certificates the signer must chain to (without it, every signer is reported ``untrusted``: the
    signature is still checked). ``InputError`` for a file that cannot be read."""
    c2pa = import_c2pa()
    path = Path(path)
    context = _context(None if trust_anchors is None else Path(trust_anchors))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        reader = c2pa.Reader.try_create(path.name, io.BytesIO(data), None, context)
    except c2pa.C2paError.NotSupported:  # a format without C2PA embedding (Matroska, BMP...)
        return Verification(str(path), "no manifest")
    except c2pa.C2paError as exc:
        return Verification(str(path), "invalid", failures=[f"unreadable manifest: {exc}"])
    if reader is None:
        return Verification(str(path), "no manifest")
    with reader:
        manifest = reader.get_active_manifest() or {}
        state = reader.get_validation_state() or "Invalid"
        results = (reader.get_validation_results() or {}).get("activeManifest", {})
    failures = results.get("failure", [])
    codes = [f"{f['code']}: {f.get('explanation', '')}" for f in failures]
    tampered = any(f["code"].endswith(".mismatch") for f in failures)  # a hash no longer matches the bytes
    status = "valid" if state in ("Valid", "Trusted") else "invalid"
    info = manifest.get("signature_info", {})
    assertions = {a["label"]: a.get("data", {}) for a in manifest.get("assertions", [])}
    actions = assertions.get("c2pa.actions.v2", assertions.get("c2pa.actions", {})).get("actions", [])
    generators = manifest.get("claim_generator_info", [])
    generator = " ".join(f"{g.get('name', '')}/{g.get('version', '')}" for g in generators)
    return Verification(
        str(path),
        status,
        "trusted" if state == "Trusted" else "untrusted",
        tampered,
        info.get("common_name", ""),
        info.get("issuer", ""),
        generator,
        [{k: a[k] for k in ("action", "digitalSourceType", "description") if k in a} for a in actions],
        assertions.get(MODELS_LABEL, {}),
        codes,
        context is not None,
    )


def describe(result: Verification) -> list[str]:
    """Human-readable lines for one file, as 'simswap-trt verify' prints them."""
    if result.status == "no manifest":
        return [f"{result.path}: no content credentials (no C2PA manifest)"]
    verdict = "TAMPERED: changed after signing" if result.tampered else result.status
    if result.status == "valid" and result.anchored and result.trust != "trusted":
        verdict += ", but the signer is NOT TRUSTED by --trust-anchors"
    lines = [
        f"{result.path}: {verdict}",
        f"  signer     {result.signer or '?'} ({result.issuer or 'no organisation'}), {result.trust}",
        f"  generator  {result.generator or '?'}",
    ]
    for action in result.actions:
        source = action.get("digitalSourceType", "").rsplit("/", 1)[-1]
        lines.append(f"  action     {action['action']}" + (f" ({source})" if source else ""))
    for model in result.models.get("models", []):
        sha = model.get("sha256", "")[:16]
        lines.append(
            f"  model      {model.get('role')}: {model.get('file', '?')} sha256 {sha}... "
            f"{model.get('precision', '')} on {model.get('backend', '?')}"
        )
    lines += [f"  failure    {code}" for code in result.failures]
    return lines
