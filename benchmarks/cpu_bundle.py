"""A full-size UNTRAINED bundle with INT8 graphs, for CPU speed measurements only.

The INT8 recipe (``simswap-build precision``) needs a trained bundle (or BatchNorm statistics re-estimated
on faces) and, at full size, hours of search on a small CPU. Speed does not depend on the weights or on
which ranges the Q/DQ pairs carry, so this writes the recipe's graph form with every convolution in INT8
(no FP32 fallbacks: the recipe's fastest outcome) and max ranges from two random inputs, for the generator
and ArcFace. Its outputs mean nothing: use it for ``simswap-trt bench`` and ``benchmarks.video`` timings,
never for fidelity.

    python -m benchmarks.cpu_bundle OUT
"""

from __future__ import annotations

import argparse
from pathlib import Path

import onnx

from simswap_build.bench.measure import generator_feeds
from simswap_build.convert.bundle import untrained_bundle
from simswap_build.precision.qdq import activation_histograms, activation_ranges, qdq_graph, quantizable_convs
from simswap_build.tensorrt.builder import register_variants
from simswap_trt.bundle import Bundle


def all_int8(model: onnx.ModelProto, feeds: dict) -> onnx.ModelProto:
    """``model`` with every quantizable convolution in INT8, max ranges over ``feeds``."""
    convs = quantizable_convs(model)
    ranges = activation_ranges(activation_histograms(model, convs.values(), feeds), "max")
    return qdq_graph(model, ranges, convs)


def int8_bundle(output: Path) -> Bundle:
    """The untrained full-size 224 bundle at ``output`` with all-INT8 generator and ArcFace graphs."""
    bundle = untrained_bundle(output)
    feeds = generator_feeds(0, 2, bundle.crop_size)
    graphs = {
        ("generator", "int8"): all_int8(onnx.load(bundle.path_of("generator")), feeds),
        ("arcface", "int8"): all_int8(onnx.load(bundle.path_of("arcface")), {"crop": feeds["target"]}),
    }
    why = "benchmarks.cpu_bundle: every convolution INT8, max ranges from random inputs; for speed only"
    return register_variants(bundle, graphs, {key: {"recipe": why} for key in graphs})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="new bundle folder")
    print(f"wrote {int8_bundle(parser.parse_args().output).root}")


if __name__ == "__main__":
    main()
