"""Command-line parts of provenance: the signing flags shared by the commands that write, and
``simswap-trt verify`` (registered by simswap_trt.cli)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from simswap_trt.errors import ConfigError
from simswap_trt.provenance.signing import CERT_ENV, KEY_ENV, Provenance, Signer, mime_type, source_hashes

VERIFY_DESCRIPTION = """\
Read and validate the C2PA manifest (content credentials) of each FILE: whether the signature and the
file's hash check out, who signed it and whether that signer chains to --trust-anchors, what was done
(actions, digital source type) and which models did it. A file changed after signing is reported as
TAMPERED.

exit status: 0 every file valid (and trusted, when --trust-anchors is given); 1 some file invalid,
tampered or not trusted by --trust-anchors; 3 some file has no manifest (and none is invalid)."""


def add_signing_flags(parser: argparse.ArgumentParser, synthetic_flag: bool = False, credit: bool = True) -> None:
    """--sign-cert, --sign-key, --credit-source (unless ``credit`` is off: where outputs may come from other
    identities than --source) and --no-synthetic-tag where the command has none yet."""
    if synthetic_flag:
        parser.add_argument(
            "--no-synthetic-tag",
            action="store_true",
            help="do not label outputs as synthetic (IPTC digital source type in metadata); you remain "
            "responsible for disclosing that the media is AI-generated (docs/provenance.md)",
        )
    parser.add_argument(
        "--sign-cert",
        type=Path,
        default=None,
        help=f"sign a C2PA manifest into each output: the certificate chain, PEM, signer first (or {CERT_ENV}); "
        "needs 'simswap-trt[provenance]'",
    )
    parser.add_argument(
        "--sign-key", type=Path, default=None, help=f"the private key of --sign-cert, PEM (or {KEY_ENV})"
    )
    if credit:
        parser.add_argument(
            "--credit-source",
            action="store_true",
            help="record the sha256 of the --source photo(s) in the manifest (default: not recorded)",
        )


def provenance_from_args(args: argparse.Namespace, outputs: Sequence[Path | str] = ()) -> Provenance:
    """The run's ``Provenance`` from the flags (signer checked here, before any model loads); each of
    ``outputs`` must be a format a manifest can be embedded in when signing."""
    if (args.sign_cert is None) != (args.sign_key is None):
        raise ConfigError("--sign-cert and --sign-key go together: give the certificate chain and its private key")
    signer = Signer.from_files(args.sign_cert, args.sign_key) if args.sign_cert else Signer.from_env()
    if signer is not None:
        for output in outputs:
            mime_type(Path(str(output)).suffix)
    credit = getattr(args, "credit_source", False) and signer is not None
    sources = source_hashes(args.source) if credit else ()
    return Provenance(not args.no_synthetic_tag, signer, sources=sources)


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", type=Path, nargs="+", metavar="FILE", help="images or videos to check")
    parser.add_argument(
        "--trust-anchors",
        type=Path,
        default=None,
        help="PEM file of root certificates to trust; without it every signer is reported untrusted",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per file, as a JSON list")


def run_verify(args: argparse.Namespace) -> int:
    from simswap_trt.provenance.verify import INVALID, NO_MANIFEST, describe, verify

    results = [verify(path, args.trust_anchors) for path in args.files]
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    else:
        for result in results:
            print("\n".join(describe(result)))
    codes = {r.exit_code for r in results}
    return INVALID if INVALID in codes else NO_MANIFEST if NO_MANIFEST in codes else 0
