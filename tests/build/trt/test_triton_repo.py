"""The Triton model repository export: every config.pbtxt parses against Triton's model_config.proto (the
schema tritonclient ships) and states the bundle's contract; planted errors fail the check."""

import shutil

import pytest
from support.plans import plan

from simswap_build.cli import main as build_main
from simswap_build.tensorrt.builder import register_plan
from simswap_build.tensorrt.triton_repo import RepoOptions, TritonConfigError, check_config, write_triton_repo
from simswap_trt.bundle import Bundle, contract, sha256_of
from simswap_trt.engines import TensorSpec
from simswap_trt.errors import SimswapError

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")


@pytest.fixture(scope="module")
def bundle_with_plans(tiny_bundle, tmp_path_factory):
    """The tiny bundle plus two generator plans (sm 8.6, max batch 4; sm 9.0) and an ArcFace plan."""
    root = tmp_path_factory.mktemp("triton") / "b"
    shutil.copytree(tiny_bundle.root, root)
    (root / "engines").mkdir()
    bundle = Bundle.load(root)
    arcface_io = contract("arcface", 224)
    arcface_profile = {"crop": ((1, 3, 224, 224), (8, 3, 224, 224), (16, 3, 224, 224))}
    generator_profile = plan().profile
    small = {name: (s[0], s[0], (4, *s[2][1:])) for name, s in generator_profile.items()}
    for file, changes in (
        ("engines/generator.sm_86.plan", dict(compute_capability=(8, 6), profile=small)),
        ("engines/generator.sm_90.plan", dict(compute_capability=(9, 0))),
        (
            "engines/arcface.sm_90.plan",
            dict(role="arcface", inputs=arcface_io[0], outputs=arcface_io[1], profile=arcface_profile),
        ),
    ):
        (root / file).write_bytes(f"plan {file}".encode())
        bundle = register_plan(bundle, plan(file=file, sha256=sha256_of(root / file), **changes))
    return bundle


def parse(path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def expected_tensors(specs):
    types = {"float32": model_config_pb2.TYPE_FP32, "float16": model_config_pb2.TYPE_FP16}
    return [(s.name, types[s.dtype], list(s.shape[1:])) for s in specs]


def test_every_config_parses_and_states_the_contract(bundle_with_plans, tmp_path):
    options = RepoOptions(max_batch=8, queue_delay_us=700, instances=2, gpus=(0, 1))
    configs = write_triton_repo(bundle_with_plans.root, tmp_path / "repo", options)
    names = sorted(c.parent.name for c in configs)
    assert names == ["simswap_arcface_onnx", "simswap_arcface_trt", "simswap_generator_onnx", "simswap_generator_trt"]
    for path in configs:
        config = parse(path)  # independent of the exporter's own check
        check_config(path.read_text())
        role = config.name.split("_")[1]
        inputs, outputs = contract(role, 224)
        assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == expected_tensors(inputs)
        assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == expected_tensors(outputs)
        assert config.dynamic_batching.max_queue_delay_microseconds == 700
        assert [(g.count, g.kind, list(g.gpus)) for g in config.instance_group] == [
            (2, model_config_pb2.ModelInstanceGroup.KIND_GPU, [0, 1])
        ]
        version = path.parent / "1"
        if config.platform == "onnxruntime_onnx":
            assert config.max_batch_size == 8
            assert (version / "model.onnx").read_bytes() == bundle_with_plans.path_of(role).read_bytes()
        else:
            assert config.platform == "tensorrt_plan"
            plans = {"{}.{}".format(*p.compute_capability): p for p in bundle_with_plans.plans if p.role == role}
            assert set(config.cc_model_filenames) == set(plans)
            for capability, file in config.cc_model_filenames.items():
                source = bundle_with_plans.root / plans[capability].file
                assert (version / file).read_bytes() == source.read_bytes()
    generator_trt = parse(tmp_path / "repo" / "simswap_generator_trt" / "config.pbtxt")
    assert set(generator_trt.cc_model_filenames) == {"8.6", "9.0"}
    assert generator_trt.max_batch_size == 4  # the sm 8.6 plan's profile allows no more
    assert "simswap-trt serve" in (tmp_path / "repo" / "README.md").read_text()


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("TYPE_FP32", "TYPE_FP33", "does not parse"),
        ("max_batch_size", "max_batch", "does not parse"),
        ("dims: [ 512 ]", "dims: [ 0 ]", "has dims"),
        ("count: 1", "count: 0", "count is 0"),
        ('name: "latent"', 'name: ""', "no name"),
    ],
)
def test_planted_errors_fail_the_check(tiny_bundle, tmp_path, old, new, message):
    config = write_triton_repo(tiny_bundle.root, tmp_path / "repo")[0]
    text = config.read_text()
    assert old in text
    with pytest.raises(TritonConfigError, match=message):
        check_config(text.replace(old, new, 1))


def test_bad_contract_is_refused_before_writing(tiny_bundle, tmp_path):
    from simswap_build.tensorrt.triton_repo import model_config

    with pytest.raises(TritonConfigError, match="no batch axis"):
        model_config("m", "onnxruntime_onnx", [TensorSpec("x", "float32", (3, 8))], [], RepoOptions(), 8)


def test_cli_writes_and_refuses_an_existing_folder(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "repo"
    assert build_main(["triton-repo", str(tiny_bundle.root), str(out), "--onnx-on-cpu", "--max-batch", "4"]) == 0
    config = parse(out / "simswap_generator_onnx" / "config.pbtxt")
    assert config.max_batch_size == 4
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert build_main(["triton-repo", str(tiny_bundle.root), str(out)]) == 1
    assert "exists" in capsys.readouterr().err
    assert build_main(["triton-repo", str(tiny_bundle.root), str(out), "--overwrite"]) == 0
    with pytest.raises(SimswapError):
        write_triton_repo(tiny_bundle.root, out)


@pytest.mark.parametrize("kind", ["user folder", "bundle", "file"])
def test_overwrite_replaces_only_a_repository_written_here(tiny_bundle, tmp_path, capsys, kind):
    out = tmp_path / "target"
    if kind == "bundle":
        shutil.copytree(tiny_bundle.root, out)
    elif kind == "file":
        out.write_bytes(b"precious")
    else:
        out.mkdir()
        (out / "thesis.tex").write_text("precious")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert build_main(["triton-repo", str(tiny_bundle.root), str(out), "--overwrite"]) == 1
    assert "refusing to replace" in capsys.readouterr().err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_overwrite_refuses_a_repository_holding_the_bundle(tiny_bundle, tmp_path, capsys):
    out = tmp_path / "repo"
    assert build_main(["triton-repo", str(tiny_bundle.root), str(out)]) == 0
    inner = out / "bundle"
    shutil.copytree(tiny_bundle.root, inner)
    assert build_main(["triton-repo", str(inner), str(out), "--overwrite"]) == 1
    assert "inside" in capsys.readouterr().err and (inner / "manifest.json").is_file()
