"""meshrec: 3D human mesh recovery with one SMPL, one set of metrics and methods as plugins.

>>> import meshrec
>>> pred = meshrec.predict("photo.jpg", method="hmr", checkpoint="hmr_gta_ft.pth", bbox=[x, y, w, h])
>>> pred.vertices          # (people, 6890, 3), camera frame, metres
"""

from meshrec import extension
from meshrec._version import __version__
from meshrec.api import evaluate, list_datasets, list_methods, load_method, predict
from meshrec.errors import (
    BodyModelNotFoundError,
    CheckpointError,
    ImageReadError,
    MeshrecError,
    MissingInputError,
    UnknownDatasetError,
    UnknownMethodError,
    UnsafePickleError,
)
from meshrec.hookspecs import hookimpl
from meshrec.info import info
from meshrec.methods import Input, Method, Option, Prediction, Sample

# Submodules imported on first attribute access (``meshrec.body.SMPL`` right after
# ``import meshrec``), so that ``import meshrec`` stays cheap.
_LAZY_SUBMODULES = frozenset(
    {"body", "camera", "datasets", "io", "metrics", "nn", "ops", "plugins", "rotations", "scene"})


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        module = importlib.import_module(f"meshrec.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'meshrec' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | _LAZY_SUBMODULES)


__all__ = [
    "__version__",
    "BodyModelNotFoundError",
    "CheckpointError",
    "ImageReadError",
    "Input",
    "MeshrecError",
    "Method",
    "MissingInputError",
    "Option",
    "Prediction",
    "Sample",
    "UnknownDatasetError",
    "UnknownMethodError",
    "UnsafePickleError",
    "evaluate",
    "extension",
    "hookimpl",
    "info",
    "list_datasets",
    "list_methods",
    "load_method",
    "predict",
]
