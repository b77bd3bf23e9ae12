"""A restricted pickle module for whole-module checkpoints such as SimSwap's ``arcface_checkpoint.tar``.

Pass this module as ``torch.load(..., pickle_module=safe_pickle, weights_only=False)``. Unpickling then
resolves only:

* the tensor-rebuild helpers and plain containers a torch checkpoint needs;
* an allow-list of module classes (the ArcFace classes under ``models.arcface_models`` / ``models``, the
  ``torch.nn`` layers they contain, and the training wrappers of the old dict format), each replaced by an
  inert ``PickledObject`` that records its pickled state and runs none of the class's code.

Any other global (``os.system``, ``builtins.eval``, an unknown class) raises ``UnsafeCheckpointError``
before anything is called.
"""

from __future__ import annotations

import _compat_pickle
import pickle
from typing import IO, Any

from simswap_trt.errors import UnsafeCheckpointError

_ARCFACE_CLASSES = ("ResNet", "IRBlock", "SEBlock")
_TORCH_LAYERS = {
    "torch.nn.modules.conv": ("Conv2d",),
    "torch.nn.modules.batchnorm": ("BatchNorm1d", "BatchNorm2d"),
    "torch.nn.modules.activation": ("PReLU", "Sigmoid", "ReLU"),
    "torch.nn.modules.pooling": ("MaxPool2d", "AdaptiveAvgPool2d"),
    "torch.nn.modules.container": ("Sequential",),
    "torch.nn.modules.linear": ("Linear",),
    "torch.nn.modules.dropout": ("Dropout",),
    "torch.nn.modules.flatten": ("Flatten",),
    # the pre-2023 file's training wrappers: recorded, never constructed
    "torch.nn.parallel.data_parallel": ("DataParallel",),
    "torch.optim.sgd": ("SGD",),
}
PLACEHOLDER_CLASSES: frozenset[str] = frozenset(
    [f"models.arcface_models.{c}" for c in _ARCFACE_CLASSES]
    + [f"models.models.{c}" for c in _ARCFACE_CLASSES]
    + [f"models.{c}" for c in (*_ARCFACE_CLASSES, "ArcMarginModel")]
    + [f"{module}.{name}" for module, names in _TORCH_LAYERS.items() for name in names]
)
_SAFE_BUILTINS = {
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("builtins", "dict"),
    ("builtins", "set"),
    ("builtins", "object"),
    ("copyreg", "_reconstructor"),
}
_TORCH_REBUILDERS = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter")}


class PickledObject:
    """Inert stand-in for an allow-listed class: holds the pickled ``__dict__`` state in ``state``."""

    pickled_class = ""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<pickled {self.pickled_class}>"


_placeholders: dict[str, type[PickledObject]] = {}


def _placeholder(qualified_name: str) -> type[PickledObject]:
    if qualified_name not in _placeholders:
        cls = type(qualified_name.rsplit(".", 1)[1], (PickledObject,), {"pickled_class": qualified_name})
        _placeholders[qualified_name] = cls
    return _placeholders[qualified_name]


class Unpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` admits only the allow-list above."""

    def find_class(self, module: str, name: str) -> Any:
        # protocol-2 pickles (torch's default) name Python 2 modules: __builtin__, copy_reg
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        qualified = f"{module}.{name}"
        if qualified in PLACEHOLDER_CLASSES:
            return _placeholder(qualified)
        if (module, name) in _SAFE_BUILTINS:
            return super().find_class(module, name)
        if (module, name) in _TORCH_REBUILDERS:
            import torch._utils  # the builder's own dependency; only reached while loading a torch file

            return getattr(torch._utils, name)
        raise UnsafeCheckpointError(
            f"refusing to load: the checkpoint references {qualified!r}, which is not a tensor, a plain container "
            "or an allow-listed ArcFace/torch.nn class. Nothing from the file was executed. If this is a genuine "
            "SimSwap file, please report the name."
        )


def load(file: IO[bytes], **kwargs: Any) -> Any:
    """``pickle.load`` with the restricted ``Unpickler``."""
    return Unpickler(file, **kwargs).load()
