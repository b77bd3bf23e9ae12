"""The runtime command line as a package: one module per command with add_arguments/run, parser functions
of at most 60 lines, the flags mapped onto SwapperOptions, and from_bundle taking SwapperOptions."""

import ast
from pathlib import Path

import pytest

import simswap_trt.cli
from simswap_trt import FaceSwapper, SwapperOptions
from simswap_trt.cli import COMMANDS, build_parser, common


def test_every_command_is_a_module_with_its_parser_and_handler():
    names = [command.NAME for command in COMMANDS]
    assert names == ["swap", "demo", "swap-aligned", "bench", "serve", "batch", "video", "doctor", "info", "verify"]
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(subparsers.choices) == names
    for command in COMMANDS:
        assert callable(command.add_arguments)
        assert callable(getattr(command, "run", None)) != (command.NAME == "bench")  # bench is handed on


def test_no_function_of_the_cli_is_over_60_lines():
    long = []
    for path in Path(simswap_trt.cli.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno >= 60:
                long.append(f"{path.name}:{node.name}")
    assert long == []


def test_the_runtime_flags_become_swapper_options():
    argv = ["swap", "--bundle", "B", "--source", "s.jpg", "--target", "t.jpg", "--output", "o.jpg"]
    args = build_parser().parse_args(
        [*argv, "--batch", "4", "--threads", "2", "--backend", "onnxruntime", "--precision", "fp16"]
        + ["--enhancer", "--enhance-blend", "0.3", "--device", "1", "--cuda-graphs"]
    )
    assert common.swapper_options(args) == SwapperOptions(
        providers=["CPUExecutionProvider"],
        threads=2,
        max_batch=4,
        backend="onnxruntime",
        precision="fp16",
        device=1,
        cuda_graphs=True,
        enhance=True,
        enhance_blend=0.3,
    )
    assert common.swapper_options(args, device=0).device == 0  # serve places each instance itself
    aligned = build_parser().parse_args(["swap-aligned", *argv[1:]])
    assert not common.swapper_options(aligned).enhance  # a command without --enhancer keeps the default


def test_from_bundle_takes_options_and_keywords_replace_them(tiny_bundle):
    options = SwapperOptions(threads=1, max_batch=3, backend="onnxruntime")
    with FaceSwapper.from_bundle(tiny_bundle.root, options) as swapper:
        assert swapper.max_batch == 3
    with FaceSwapper.from_bundle(tiny_bundle.root, options, max_batch=2) as swapper:
        assert swapper.max_batch == 2
    with pytest.raises(TypeError, match="max_batches"):
        FaceSwapper.from_bundle(tiny_bundle.root, max_batches=2)
