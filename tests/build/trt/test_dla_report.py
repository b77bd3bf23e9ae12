"""The DLA layer report of `simswap-build engine --dla-core N`: built against the strict stand-ins of the
TensorRT 10.3 and 11.x APIs (builder, runtime, engine inspector; tests/data/trt_api), parsed into which network
layers run on the DLA and which fall back to the GPU, stored next to the plan and named in the manifest."""

import json
import shutil

import onnx
import pytest
from support.fake_gpu import install_fake_cuda, strict_runtime_module
from support.trt_builder_standin import fake_builder_module

from simswap_build import cli as build_cli
from simswap_build.tensorrt import builder as engine_builder
from simswap_build.tensorrt.builder import BuildOptions, build_engine, register_variants
from simswap_trt.bundle import Bundle
from simswap_trt.engines import tensorrt as trt_engine
from simswap_trt.errors import BuildError, ConfigError

# a generator-like network: convolutions the DLA takes, instance norm / style layers it does not
LAYERS = [
    ("/enc/conv0/Conv", True),
    ("/enc/relu0/Relu", True),
    ("/blocks.0/InstanceNormalization", False),
    ("/blocks.0/style/Gemm", False),
    ("/dec/conv0/Conv", True),
    ("/dec/relu0/Relu", True),
    ("/dec/out/Tanh", True),
]
DLA_CAPABLE = [name for name, dla in LAYERS if dla]
NOT_CAPABLE = [name for name, dla in LAYERS if not dla]
INPUTS = [("target", (-1, 3, 224, 224)), ("latent", (-1, 512))]


@pytest.fixture()
def bundle_root(tiny_bundle, tmp_path, monkeypatch):
    install_fake_cuda(monkeypatch, compute_capability=(8, 7), name="Orin")
    root = tmp_path / "bundle"
    shutil.copytree(tiny_bundle.root, root)
    bundle = Bundle.load(root)  # an fp16 graph (the DLA runs FP16/INT8 layers only); the fake builder ignores it
    register_variants(bundle, {("generator", "fp16"): onnx.load(bundle.path_of("generator"))})
    return root


def dla_options(core: int) -> BuildOptions:
    """A DLA build: one fixed batch (the DLA runs static shapes only)."""
    return BuildOptions(min_batch=8, opt_batch=8, max_batch=8, dla_core=core, progress=False)


@pytest.mark.parametrize("version", ["10.3", "11.x"])
def test_dla_report_is_parsed_and_stored_next_to_the_plan(bundle_root, version):
    record = []
    trt = fake_builder_module(version, INPUTS, record, layers=LAYERS)
    entry = build_engine(bundle_root, "generator", dla_options(1), precision="fp16", trt=trt)
    report_file = entry.extra["dla_report"]
    assert report_file == entry.file.removesuffix(".plan") + ".dla.json"  # next to the plan
    assert Bundle.load(bundle_root).plans[0].extra == {"dla_report": report_file}  # named in the manifest
    report = json.loads((bundle_root / report_file).read_text())
    assert report["dla_core"] == 1 and report["tensorrt_version"] == trt.__version__
    assert report["network_layers"] == {"dla": DLA_CAPABLE, "gpu": NOT_CAPABLE}
    assert report["summary"] == {"network_layers_on_dla": 5, "network_layers_on_gpu": 2, "dla_subgraphs": 2}
    assert [(layer["name"], layer["device"]) for layer in report["engine_layers"]] == [
        ("/enc/conv0/Conv to nvm", "transfer"),
        ("{ForeignNode[/enc/conv0/Conv.../enc/relu0/Relu]}", "dla"),
        ("/enc/relu0/Relu from nvm", "transfer"),
        ("/blocks.0/InstanceNormalization + /blocks.0/style/Gemm", "gpu"),
        ("/dec/conv0/Conv to nvm", "transfer"),
        ("{ForeignNode[/dec/conv0/Conv.../dec/out/Tanh]}", "dla"),
        ("/dec/out/Tanh from nvm", "transfer"),
    ]
    settings = {name: value for name, value, *_ in record if isinstance(name, str)}
    assert settings["IBuilderConfig.profiling_verbosity"].name == "DETAILED"
    assert settings["Runtime.DLA_core"] == 1  # the plan was inspected on the core it was built for


def test_layers_past_the_subgraph_limit_are_reported_on_the_gpu(bundle_root):
    trt = fake_builder_module("10.3", INPUTS, [], layers=LAYERS, dla_subgraph_limit=1)
    entry = build_engine(bundle_root, "generator", dla_options(0), precision="fp16", trt=trt)
    report = json.loads((bundle_root / entry.extra["dla_report"]).read_text())
    assert report["network_layers"] == {
        "dla": ["/enc/conv0/Conv", "/enc/relu0/Relu"],
        "gpu": [*NOT_CAPABLE, "/dec/conv0/Conv", "/dec/relu0/Relu", "/dec/out/Tanh"],  # eligible, fell back
    }
    assert report["summary"]["dla_subgraphs"] == 1


def test_gpu_plans_have_no_report(bundle_root):
    record = []
    trt = fake_builder_module("11.x", INPUTS, record, layers=LAYERS)
    entry = build_engine(bundle_root, "generator", BuildOptions(progress=False), trt=trt)
    assert entry.extra == {}
    assert not list((bundle_root / "engines").glob("*.dla.json"))
    assert not [r for r in record if r[0] == "deserialize"]


def test_engine_command_prints_the_placement(bundle_root, monkeypatch, capsys):
    trt = fake_builder_module("10.3", INPUTS, [], layers=LAYERS)
    monkeypatch.setattr(engine_builder, "import_builder", lambda: trt)
    argv = [
        "engine",
        str(bundle_root),
        "--role",
        "generator",
        "--precision",
        "fp16",
        "--dla-core",
        "0",
        "--no-progress",
    ]
    assert build_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert (
        "DLA core 0: 5 of 7 network layers on the DLA in 2 subgraph(s), 2 on the GPU: "
        "/blocks.0/InstanceNormalization, /blocks.0/style/Gemm\n"
        "  layer report: engines/generator.fp16.sm_87.trt10.3.0.26.dla.json" in out
    )


def test_a_gpu_rebuild_removes_the_dla_report(bundle_root):
    trt = fake_builder_module("10.3", INPUTS, [], layers=LAYERS)
    dla = build_engine(bundle_root, "generator", dla_options(0), precision="fp16", trt=trt)
    assert (bundle_root / dla.extra["dla_report"]).is_file()
    gpu = build_engine(bundle_root, "generator", BuildOptions(progress=False), "fp16", trt=trt, overwrite=True)
    assert gpu.file == dla.file and gpu.extra == {} and gpu.dla_core is None
    assert not (bundle_root / dla.extra["dla_report"]).exists()
    assert [plan.extra for plan in Bundle.load(bundle_root).plans] == [{}]


def test_a_built_dla_plan_is_deserialized_on_its_core(bundle_root, monkeypatch):
    """Builder to runtime: the core given to `engine --dla-core` is recorded with the plan and set on the
    runtime before the plan is deserialized."""
    lean = pytest.importorskip("tensorrt_lean")
    builder = fake_builder_module("10.3", INPUTS, [], layers=LAYERS)
    build_engine(bundle_root, "generator", dla_options(1), precision="fp16", trt=builder)
    (plan,) = Bundle.load(bundle_root).plans
    assert plan.dla_core == 1
    io = [("target", "in", (-1, 3, 224, 224)), ("latent", "in", (-1, 512)), ("swapped", "out", (-1, 3, 224, 224))]
    runtime = strict_runtime_module(lean, io, lambda inputs: {}, version=builder.__version__, dla_cores=2)
    monkeypatch.setattr(trt_engine, "import_tensorrt", lambda: (runtime, False))
    with trt_engine.TensorRTEngine(bundle_root, plan):
        pass
    deserialized = next(i for i, call in enumerate(runtime.calls) if call[0] == "deserialize")
    assert ("DLA_core", 1) in runtime.calls[:deserialized]


@pytest.mark.parametrize(
    "options, precision, refusal",
    [
        (lambda: BuildOptions(dla_core=0), "fp16", "needs a fixed batch .* got 1/8/32"),
        (lambda: BuildOptions(8, 8, 8, version_compatible=True, dla_core=0), "fp16", "cannot be --version-compatible"),
        (lambda: BuildOptions(8, 8, 8, hardware_compatibility="ampere_plus", dla_core=0), "fp16", "compatibility"),
        (lambda: dla_options(0), "fp32", "FP16 and INT8 layers only, and the fp32 generator graph has none"),
    ],
    ids=["dynamic-batch", "version-compatible", "hardware-compatible", "fp32"],
)
def test_a_dla_build_that_would_place_nothing_on_the_dla_is_refused(bundle_root, options, precision, refusal):
    record = []
    with pytest.raises(ConfigError, match=refusal):
        build_engine(bundle_root, "generator", options(), precision, trt=fake_builder_module("10.3", INPUTS, record))
    assert not record and not list((bundle_root / "engines").glob("*.plan"))


def test_a_network_without_a_dla_layer_is_refused_before_building(bundle_root):
    record = []
    trt = fake_builder_module("10.3", INPUTS, record, layers=[(name, False) for name, _ in LAYERS])
    with pytest.raises(BuildError, match="no layer of generator.fp16.onnx can run on DLA core 0: build it without"):
        build_engine(bundle_root, "generator", dla_options(0), "fp16", trt=trt)
    assert "build_serialized_network" not in [r[0] for r in record]
    assert not list((bundle_root / "engines").glob("*.plan"))


@pytest.mark.parametrize(
    "flags, profile",
    [([], 8), (["--max-batch", "4"], 4), (["--opt-batch", "2", "--max-batch", "2", "--min-batch", "2"], 2)],
)
def test_engine_dla_core_builds_one_fixed_batch(bundle_root, monkeypatch, flags, profile):
    monkeypatch.setattr(engine_builder, "import_builder", lambda: fake_builder_module("10.3", INPUTS, [], LAYERS))
    argv = ["engine", str(bundle_root), "--role", "generator", "--precision", "fp16", "--dla-core", "0", *flags]
    assert build_cli.main([*argv, "--no-progress"]) == 0
    (plan,) = Bundle.load(bundle_root).plans
    assert plan.profile["target"] == tuple((profile, 3, 224, 224) for _ in range(3))


def test_engine_dla_core_with_a_batch_range_is_one_line(bundle_root, monkeypatch, capsys):
    monkeypatch.setattr(engine_builder, "import_builder", lambda: fake_builder_module("10.3", INPUTS, [], LAYERS))
    argv = [
        "engine",
        str(bundle_root),
        "--precision",
        "fp16",
        "--dla-core",
        "0",
        "--min-batch",
        "1",
        "--max-batch",
        "8",
    ]
    assert build_cli.main(argv) != 0
    err = capsys.readouterr().err
    assert "a DLA plan needs a fixed batch" in err and "Traceback" not in err
