"""Signed C2PA manifests (content credentials) with the ``c2pa-python`` library, an optional extra.

A ``Signer`` holds a certificate chain and its private key (PEM). ``Signer.from_files`` checks them
before any model loads: readable, not expired, the key belongs to the certificate, and the C2PA library
accepts the pair (a trial signature). ``Provenance`` carries what a run writes into each manifest:

* claim generator ``simswap-trt/<version>``;
* the target as the parent ingredient, so the actions are ``c2pa.opened`` then ``c2pa.edited`` with the
  digital source type ``compositeWithTrainedAlgorithmicMedia``;
* the assertion ``org.simswap-trt.models``: the bundle (its manifest's sha256), each graph or TensorRT plan
  that ran (role, file, sha256, precision, backend), the target's sha256 and, with ``credit_source``, the
  source photos' sha256.

Manifests are embedded: in JPEG, PNG, WebP and TIFF over the whole file's bytes (data hash), in MP4 and MOV over
the boxes (BMFF hash), computed once over the finished file. Thumbnails are off: a manifest never holds a
picture of the target's original face.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from simswap_trt.errors import ConfigError, OutputError
from simswap_trt.provenance.metadata import DIGITAL_SOURCE_TYPE

log = logging.getLogger(__name__)

MODELS_LABEL = "org.simswap-trt.models"
CERT_ENV, KEY_ENV = "SIMSWAP_SIGN_CERT", "SIMSWAP_SIGN_KEY"
# the formats a manifest is embedded in (by output suffix)
MIME_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".mp4": "video/mp4",
    ".m4v": "video/x-m4v",
    ".mov": "video/quicktime",
}
_CONTAINER_MIME = {".mkv": "video/x-matroska", ".webm": "video/webm", ".avi": "video/x-msvideo"}
# the formats of targets the library reads as ingredients, by their first bytes
_MAGIC = (
    (b"\x89PNG", 0, "image/png"),
    (b"\xff\xd8", 0, "image/jpeg"),
    (b"WEBP", 8, "image/webp"),
    (b"GIF8", 0, "image/gif"),
    (b"II*\0", 0, "image/tiff"),
    (b"MM\0*", 0, "image/tiff"),
    (b"ftypqt", 4, "video/quicktime"),
    (b"ftyp", 4, "video/mp4"),
)
_SETTINGS = {"builder": {"thumbnail": {"enabled": False}}}


def import_c2pa():
    """The ``c2pa`` module, or a one-line error naming the extra that installs it."""
    try:
        import c2pa
    except ImportError:
        raise ConfigError(
            "signing and verifying content credentials need c2pa-python: pip install 'simswap-trt[provenance]'"
        ) from None
    return c2pa


def mime_type(suffix: str) -> str:
    """The MIME type a manifest is embedded in for this output suffix; ``ConfigError`` where none can be."""
    try:
        return MIME_TYPES[suffix.lower()]
    except KeyError:
        raise ConfigError(
            f"C2PA manifests cannot be embedded in {suffix or 'files without a suffix'}; write one of "
            f"{' '.join(MIME_TYPES)} (e.g. .mp4 instead of .mkv) or leave out the signing key"
        ) from None


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


class Signer:
    """A C2PA signing identity: ``chain`` holds the signer's certificate first, then any intermediates (not
    the root), PEM; ``key`` its private key, PEM (unencrypted). ``tsa_url``: an RFC 3161 time-stamp
    authority, so signatures stay valid after the certificate expires (needs the network when signing).
    Create with ``from_files`` or ``from_env``, which check the pair."""

    def __init__(self, chain: bytes, key: bytes, tsa_url: str | None = None, name: str = "the signing certificate"):
        self.chain, self.key, self.tsa_url, self.name = chain, key, tsa_url, name
        self.algorithm = self._check()

    @classmethod
    def from_files(cls, chain: str | Path, key: str | Path, tsa_url: str | None = None) -> Signer:
        """Read and check a PEM certificate chain and private key (see the class)."""
        return cls(_read(Path(chain), "certificate chain"), _read(Path(key), "private key"), tsa_url, str(chain))

    @classmethod
    def from_env(cls) -> Signer | None:
        """The signer named by ``SIMSWAP_SIGN_CERT`` and ``SIMSWAP_SIGN_KEY``; None if neither is set."""
        cert, key = os.environ.get(CERT_ENV), os.environ.get(KEY_ENV)
        if not cert and not key:
            return None
        if not (cert and key):
            raise ConfigError(f"set both {CERT_ENV} and {KEY_ENV} (the certificate chain and its key), or neither")
        return cls.from_files(cert, key)

    def _check(self) -> str:
        """The signing algorithm; ``ConfigError`` for an unusable pair (before any model loads)."""
        c2pa = import_c2pa()
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        try:
            certificate = x509.load_pem_x509_certificates(self.chain)[0]
        except ValueError as exc:
            raise ConfigError(f"{self.name} is not a PEM certificate chain: {exc}") from None
        try:
            key = serialization.load_pem_private_key(self.key, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"the private key for {self.name} is not an unencrypted PEM key: {exc}") from None
        now = datetime.datetime.now(datetime.timezone.utc)
        if certificate.not_valid_after_utc < now:
            raise ConfigError(f"{self.name} expired on {certificate.not_valid_after_utc:%Y-%m-%d}; renew it")
        if certificate.not_valid_before_utc > now:
            raise ConfigError(f"{self.name} is not valid before {certificate.not_valid_before_utc:%Y-%m-%d}")
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        if key.public_key().public_bytes(serialization.Encoding.DER, public) != certificate.public_key().public_bytes(
            serialization.Encoding.DER, public
        ):
            raise ConfigError(f"the private key does not belong to {self.name} (the chain's first certificate)")
        if isinstance(key, ec.EllipticCurvePrivateKey):
            algorithm = {256: "es256", 384: "es384", 521: "es512"}.get(key.curve.key_size)
        elif isinstance(key, rsa.RSAPrivateKey):
            algorithm = "ps256"
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            algorithm = "ed25519"
        else:
            algorithm = None
        if algorithm is None:
            raise ConfigError(f"{self.name}: C2PA signs with EC P-256/384/521, RSA (PSS) or Ed25519 keys")
        self.algorithm = algorithm
        try:  # the library's own certificate rules (extended key usage, basic constraints...)
            _sign_stream(self, {"claim_generator_info": _generator()}, None, "image/png", io.BytesIO(_TINY_PNG))
        except c2pa.C2paError as exc:
            raise ConfigError(f"{self.name} cannot sign content credentials: {exc}") from None
        return algorithm

    def __repr__(self) -> str:
        return f"Signer({self.name}, {self.algorithm})"


# a 1x1 PNG for the trial signature
_TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8ffff3f0005fe02fe"
    "a7d6a4a80000000049454e44ae426082"
)


def _version() -> str:
    from simswap_trt import __version__

    return __version__


def _generator() -> list[dict[str, str]]:
    return [{"name": "simswap-trt", "version": _version()}]


def _sign_stream(
    signer: Signer, manifest: dict, target: tuple[str, str, BinaryIO] | None, mime: str, source: BinaryIO, dest=None
):
    """Sign ``source`` (a stream of ``mime``) into ``dest`` (default: a new BytesIO, returned)."""
    c2pa = import_c2pa()
    dest = io.BytesIO() if dest is None else dest
    native = c2pa.Signer.from_info(c2pa.C2paSignerInfo(signer.algorithm, signer.chain, signer.key, signer.tsa_url))
    with native, c2pa.Builder.from_json(manifest, context=c2pa.Context(c2pa.Settings.from_dict(_SETTINGS))) as builder:
        if target is None:
            kind = c2pa.C2paDigitalSourceType.COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
            builder.set_intent(c2pa.C2paBuilderIntent.CREATE, kind)
        else:
            title, target_mime, stream = target
            builder.set_intent(c2pa.C2paBuilderIntent.EDIT)
            builder.add_ingredient({"title": title, "relationship": "parentOf"}, target_mime, stream)
            builder.add_action(
                {
                    "action": "c2pa.edited",
                    "digitalSourceType": DIGITAL_SOURCE_TYPE,
                    "softwareAgent": {"name": "simswap-trt", "version": _version()},
                    "description": "faces swapped with a trained model (SimSwap)",
                }
            )
        builder.sign(native, mime, source, dest)
    return dest


def _sha256(data: bytes | Path) -> str:
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    from simswap_trt.schema import sha256_of

    return sha256_of(data)


@dataclass(frozen=True)
class Provenance:
    """What a run's outputs say about themselves. ``synthetic``: the always-on metadata label (XMP in
    images, container tags in video); ``signer``: sign a C2PA manifest into each output (None: unsigned);
    ``models``: what ran (``models_used``); ``sources``: sha256 of the source photos, recorded only when
    the user opts in (``--credit-source``)."""

    synthetic: bool = True
    signer: Signer | None = None
    models: dict[str, Any] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def with_models(self, swapper) -> Provenance:
        """This provenance with the bundle and engines of ``swapper`` as the models used."""
        return replace(self, models=models_used(swapper)) if self.signer is not None else self

    def _manifest(self, title: str, target_sha256: str | None) -> dict:
        data: dict[str, Any] = dict(self.models)
        if target_sha256 is not None:
            data["target_sha256"] = target_sha256
        if self.sources:
            data["source_sha256"] = list(self.sources)
        return {
            "claim_generator_info": _generator(),
            "title": title,
            "assertions": [{"label": MODELS_LABEL, "data": data}],
        }

    def sign_image(self, data: bytes, suffix: str, target: bytes | Path | None, title: str) -> bytes:
        """``data`` (an encoded image of ``suffix``) with a manifest signed in, ``target`` (the image that
        was changed: its bytes or path) as its parent; unchanged without a signer. ``OutputError`` naming
        ``title`` if signing fails."""
        if self.signer is None:
            return data
        mime = mime_type(suffix)
        target_bytes = _read(target, "target") if isinstance(target, Path) else target
        parent = None
        if target_bytes is not None and (kind := target_format(target_bytes[:16])) is not None:
            parent = (target.name if isinstance(target, Path) else f"target of {title}", kind, io.BytesIO(target_bytes))
        manifest = self._manifest(title, None if target_bytes is None else _sha256(target_bytes))
        try:
            return _sign_stream(self.signer, manifest, parent, mime, io.BytesIO(data)).getvalue()
        except import_c2pa().C2paError as exc:
            raise OutputError(f"{title}: signing its content credentials failed: {exc}") from None

    def sign_file(self, path: Path, target: Path | None, title: str) -> None:
        """Sign a manifest into the finished file ``path`` (a temporary output, renamed by the caller),
        ``target`` as its parent; nothing without a signer. On failure ``path`` is left as it was and an
        ``OutputError`` names ``title``."""
        if self.signer is None:
            return
        mime = mime_type(path.suffix)
        manifest = self._manifest(title, None if target is None else _sha256(target))
        fd, signed = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".signed", dir=path.parent)
        try:
            with open(path, "rb") as source, os.fdopen(fd, "w+b") as dest:
                if target is None:
                    _sign_stream(self.signer, manifest, None, mime, source, dest)
                else:
                    with open(target, "rb") as parent:
                        kind = target_format(parent.read(16), target.suffix)
                        parent.seek(0)
                        ingredient = None if kind is None else (target.name, kind, parent)
                        _sign_stream(self.signer, manifest, ingredient, mime, source, dest)
                os.fchmod(dest.fileno(), os.stat(path).st_mode & 0o777)
            os.replace(signed, path)
        except import_c2pa().C2paError as exc:
            Path(signed).unlink(missing_ok=True)
            raise OutputError(f"{title}: signing its content credentials failed: {exc}") from None
        except BaseException:
            Path(signed).unlink(missing_ok=True)
            raise


def target_format(header: bytes, suffix: str = "") -> str | None:
    """The MIME type of a target from its first 16 bytes (or, for Matroska, WebM and AVI, its suffix); None
    for formats the C2PA library cannot take as an ingredient (BMP...): the manifest then has no parent
    ingredient, only the target's sha256."""
    for magic, at, kind in _MAGIC:
        if header[at : at + len(magic)] == magic:
            return kind
    return _CONTAINER_MIME.get(suffix.lower())


def models_used(swapper) -> dict[str, Any]:
    """The bundle (folder name, its manifest's sha256) and each engine that ran (generator, arcface, the
    parser and the face enhancer where they run): role, file, sha256 and precision of the graph or plan
    (where the engine came from the bundle), backend."""
    from simswap_trt.bundle import MANIFEST_NAME

    engines = {"generator": swapper.generator, "arcface": swapper.arcface}
    if swapper.parser_engine is not None:
        engines["parser"] = swapper.parser_engine
    if swapper.enhancer is not None:
        engines["enhancer"] = swapper.enhancer.engine
    bundle = swapper.bundle
    return {
        "bundle": {
            "name": bundle.root.name,
            "manifest_sha256": _sha256(bundle.root / MANIFEST_NAME),
            "untrained": bundle.untrained,
        },
        "models": [{"role": role, **dict(e.graph or {}), "backend": e.backend} for role, e in engines.items()],
    }


def source_hashes(paths: Sequence[Path]) -> tuple[str, ...]:
    """sha256 of each source photo, for ``Provenance.sources``."""
    return tuple(_sha256(Path(p)) for p in paths)
