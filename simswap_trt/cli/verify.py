"""``simswap-trt verify``: check the content credentials (C2PA manifest) of images and videos."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from simswap_trt.provenance.verify import INVALID, NO_MANIFEST, describe, verify

NAME = "verify"
PARSER = {
    "help": "check the content credentials (C2PA manifest) of images and videos: signer, models, tampering",
    "description": """\
Read and validate the C2PA manifest (content credentials) of each FILE: whether the signature and the
file's hash check out, who signed it and whether that signer chains to --trust-anchors, what was done
(actions, digital source type) and which models did it. A file changed after signing is reported as
TAMPERED.

exit status: 0 every file valid (and trusted, when --trust-anchors is given); 1 some file invalid,
tampered or not trusted by --trust-anchors; 3 some file has no manifest (and none is invalid).""",
    "formatter_class": argparse.RawDescriptionHelpFormatter,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", type=Path, nargs="+", metavar="FILE", help="images or videos to check")
    parser.add_argument(
        "--trust-anchors",
        type=Path,
        default=None,
        help="PEM file of root certificates to trust; without it every signer is reported untrusted",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per file, as a JSON list")


def run(args: argparse.Namespace) -> int:
    results = [verify(path, args.trust_anchors) for path in args.files]
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    else:
        for result in results:
            print("\n".join(describe(result)))
    codes = {r.exit_code for r in results}
    return INVALID if INVALID in codes else NO_MANIFEST if NO_MANIFEST in codes else 0
