"""Exceptions raised by simswap-trt. Every user-facing failure is a ``SimswapError``: the CLI prints its
message and exits with status 1 without a traceback."""


class SimswapError(Exception):
    """Base class of all errors caused by input, files or environment (not by bugs)."""


class CheckpointError(SimswapError):
    """A checkpoint is not what the converter expects (wrong architecture, wrong file, corrupt)."""


class UnsafeCheckpointError(CheckpointError):
    """A pickled checkpoint references something outside the allow-list; nothing from it was executed."""


class BundleError(SimswapError):
    """A model bundle is missing files, fails its hashes, or declares an unknown format."""


class EngineError(SimswapError):
    """An inference backend cannot be created or was fed inputs that do not match its signature."""


class InputError(SimswapError):
    """An image or array given to the SDK cannot be used (wrong shape, dtype, size)."""


class NoFaceError(InputError):
    """No face was found where one is required (a source or reference image)."""


class ConfigError(SimswapError, ValueError):
    """An argument or setting is out of range or contradicts another one (also a ``ValueError``)."""


class OutputError(SimswapError):
    """An output cannot be written where asked: it is an input of the same run, it exists (without
    overwrite), or its folder cannot be created or written."""


class BuildError(SimswapError):
    """The builder cannot produce a graph, plan or bundle from valid inputs (a tool or version limit)."""
