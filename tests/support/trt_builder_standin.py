"""Strict stand-ins of the TensorRT 10.3 and 11.x builder APIs (tests/data/trt_api, with their documentation
sources): a module that has exactly the documented names and records what the builder calls."""

import json
import sys

from support.paths import DATA

API_DIR = DATA / "trt_api"


VERSIONS = {"10.3": "tensorrt-10.3.json", "11.x": "tensorrt-11.json"}


def api(version):
    return json.loads((API_DIR / VERSIONS[version]).read_text())


class _EnumMember:
    def __init__(self, name, value):
        self.name, self.value = name, value

    def __int__(self):
        return self.value


class _Enum:
    def __init__(self, qualified, members):
        self._qualified = qualified
        for value, name in enumerate(members):
            setattr(self, name, _EnumMember(name, value))

    def __getattr__(self, name):  # only reached for members the version does not have
        raise AttributeError(f"{self._qualified}.{name} does not exist in this TensorRT version")


def fake_builder_module(version, inputs, record, layers=(), dla_subgraph_limit=16):
    """A fake ``tensorrt`` whose classes allow exactly the attributes the version's data file lists.
    ``layers``: the network's (name, DLA-capable) layers; built for a DLA core, the engine places them as
    TensorRT does (see ``DlaEngineLayers``), at most ``dla_subgraph_limit`` DLA subgraphs."""
    data = api(version)
    allowed = {cls: set(names) for cls, names in data["classes"].items()}

    class Strict:
        """Fake TensorRT objects allow only the version's names. Subclasses the builder defines itself
        (loggers, progress monitors) keep their own attributes, but may only override interface methods."""

        _api = "object"

        def __init__(self):
            own = [n for n in vars(type(self)) if not n.startswith("_") and "_api" not in vars(type(self))]
            for name in own:
                if name not in allowed[self._api]:
                    raise AttributeError(f"{self._api}.{name} does not exist in TensorRT {version}")

        def _checked(self, name):
            cls = object.__getattribute__(self, "_api")
            strict = "_api" in vars(type(self))
            if strict and not name.startswith("_") and name not in allowed[cls]:
                raise AttributeError(f"{cls}.{name} does not exist in TensorRT {version}")
            return cls

        def __getattribute__(self, name):
            Strict._checked(self, name)
            return object.__getattribute__(self, name)

        def __setattr__(self, name, value):
            cls = Strict._checked(self, name)
            if "_api" in vars(type(self)):
                record.append((f"{cls}.{name}", value))
            object.__setattr__(self, name, value)

    class HostMemory(Strict):
        _api = "IHostMemory"

        def __init__(self, data):
            self._data = data

        def __bytes__(self):
            return self._data

    class TimingCache(Strict):
        _api = "ITimingCache"

        def serialize(self):
            return HostMemory(b"timing cache")

    class Profile(Strict):
        _api = "IOptimizationProfile"

        def set_shape(self, name, low, opt, high):
            record.append(("set_shape", name, low, opt, high))

    class Config(Strict):
        _api = "IBuilderConfig"

        def set_memory_pool_limit(self, pool, size):
            record.append(("pool", pool.name, size))

        def add_optimization_profile(self, profile):
            return 0

        def create_timing_cache(self, data):
            record.append(("timing cache in", data))
            return TimingCache()

        def set_timing_cache(self, cache, ignore_mismatch):
            return True

        def get_timing_cache(self):
            return TimingCache()

        def set_flag(self, flag):
            record.append(("flag", flag.name))

        def can_run_on_DLA(self, layer):
            return layer._dla

    class Tensor(Strict):
        _api = "ITensor"

        def __init__(self, name, shape):
            self._name, self._shape = name, shape

        @property
        def name(self):
            return self._name

        @property
        def shape(self):
            return self._shape

    class Network(Strict):
        _api = "INetworkDefinition"

        @property
        def num_inputs(self):
            return len(inputs)

        def get_input(self, i):
            return Tensor(*inputs[i])

        @property
        def num_layers(self):
            return len(layers)

        def get_layer(self, i):
            return Layer(*layers[i])

    class Layer(Strict):
        _api = "ILayer"

        def __init__(self, name, dla):
            self._name, self._dla = name, dla

        @property
        def name(self):
            return self._name

    class Builder(Strict):
        _api = "Builder"

        def __init__(self, logger):
            logger.log(module.ILogger.Severity.INFO, "builder created")

        def create_network(self, flags):
            record.append(("create_network", flags))
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            device = getattr(config, "default_device_type", None)
            on_dla = device is not None and device.name == "DLA"
            built[:] = [dla_engine_layers(layers, dla_subgraph_limit, on_dla, config)]
            return HostMemory(b"serialized plan")

    built = []

    class Inspector(Strict):
        _api = "EngineInspector"

        def get_engine_information(self, format):
            if format is not module.LayerInformationFormat.JSON:
                return "\n".join(layer if isinstance(layer, str) else layer["Name"] for layer in built[0])
            return json.dumps({"Layers": built[0], "Bindings": [name for name, _ in inputs]})

    class CudaEngine(Strict):
        _api = "ICudaEngine"

        def create_engine_inspector(self):
            return Inspector()

    class Runtime(Strict):
        _api = "Runtime"

        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            record.append(("deserialize", bytes(data)))
            return CudaEngine()

    class OnnxParser(Strict):
        _api = "OnnxParser"

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            return True

    class ILogger(Strict):
        _api = "ILogger"
        Severity = _Enum("ILogger.Severity", data["enums"]["ILogger.Severity"])

    class IProgressMonitor(Strict):
        _api = "IProgressMonitor"

    module = type(sys)("tensorrt")
    module.__version__ = "10.3.0.26" if version == "10.3" else "11.4.0.106"
    for name, members in data["enums"].items():
        if "." not in name:
            setattr(module, name, _Enum(name, members))
    for cls in (Builder, OnnxParser, ILogger, IProgressMonitor, Runtime):
        setattr(module, cls._api, cls)
    return module


def dla_engine_layers(layers, limit, on_dla, config):
    """The engine layers TensorRT makes of ``layers`` (name, DLA-capable): each run of DLA-capable layers is one
    "{ForeignNode[first...last]}" between "to nvm" / "from nvm" transfers, up to ``limit`` subgraphs (later
    runs fall back to the GPU); GPU layers keep their names, consecutive ones fused as "a + b". Names only
    unless the plan was built with detailed profiling verbosity, as the engine inspector reports them."""
    runs = []
    for name, dla in layers:
        dla = dla and on_dla
        if runs and runs[-1][0] == dla:
            runs[-1][1].append(name)
        else:
            runs.append((dla, [name]))
    engine, subgraphs = [], 0
    for dla, names in runs:
        if dla and subgraphs < limit:
            subgraphs += 1
            span = names[0] if len(names) == 1 else f"{names[0]}...{names[-1]}"
            engine += [f"{names[0]} to nvm", f"{{ForeignNode[{span}]}}", f"{names[-1]} from nvm"]
        else:
            engine.append(" + ".join(names))
    detailed = getattr(config, "profiling_verbosity", None)
    if detailed is not None and detailed.name == "DETAILED":
        return [{"Name": name} for name in engine]  # the real inspector adds types, tactics, tensors
    return engine
