"""Provenance of every output: always-on synthetic-media metadata (``metadata``), signed C2PA manifests
(``signing``, needs the ``provenance`` extra) and their verification (``verify``)."""

from simswap_trt.provenance.metadata import DIGITAL_SOURCE_TYPE, tag_image, video_metadata, xmp_packet
from simswap_trt.provenance.signing import Provenance, Signer, models_used, source_hashes
from simswap_trt.provenance.verify import Verification, verify

__all__ = [
    "DIGITAL_SOURCE_TYPE",
    "Provenance",
    "Signer",
    "Verification",
    "models_used",
    "source_hashes",
    "tag_image",
    "verify",
    "video_metadata",
    "xmp_packet",
]
