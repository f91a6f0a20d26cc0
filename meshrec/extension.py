"""Loading of the compiled ops library ``meshrec._C`` and what it was built with.

The library is optional: when it is missing or cannot load (a CPU-only source checkout, a torch
upgraded after the build), every op runs its pure-PyTorch reference and one warning says so.
``MESHREC_DISABLE_COMPILED_OPS=1`` forces the reference path (for comparisons and debugging).
"""

from __future__ import annotations

import json
import os
import warnings
from functools import lru_cache

import torch

__all__ = [
    "MeshrecFallbackWarning",
    "active_backend",
    "build_info",
    "compiled_backends",
    "has_compiled_ops",
    "load_error",
    "use_compiled",
]

DISABLE_VARIABLE = "MESHREC_DISABLE_COMPILED_OPS"


class MeshrecFallbackWarning(UserWarning):
    """An op runs its pure-PyTorch reference instead of the compiled kernel."""


# Plain module globals rather than a cache decorator: torch.compile reads them as constants.
_loaded: bool | None = None
_load_error: str | None = None


def _load() -> None:
    global _loaded, _load_error
    if os.environ.get(DISABLE_VARIABLE, "").strip().lower() in {"1", "true", "yes", "on"}:
        _loaded, _load_error = False, f"disabled by {DISABLE_VARIABLE}"
        return
    try:
        from meshrec import _C  # noqa: F401  (loading runs the op registrations)
    except (ImportError, OSError) as error:
        _loaded, _load_error = False, f"{type(error).__name__}: {error}"
        return
    from meshrec.ops import _registrations  # noqa: F401  (autograd and fake kernels of every family)

    _loaded = True


def has_compiled_ops() -> bool:
    """Whether ``meshrec._C`` loaded and its ops are registered."""
    if _loaded is None:
        _load()
    return bool(_loaded)


def load_error() -> str | None:
    """Why the compiled library is not in use, or None when it is."""
    has_compiled_ops()
    return _load_error


@lru_cache(maxsize=None)
def build_info() -> dict:
    """How the compiled library was built: versions, CUDA and architectures. Empty when absent."""
    if not has_compiled_ops():
        return {}
    return json.loads(torch.ops.meshrec._build_info())


def compiled_backends() -> list[str]:
    """Devices the compiled kernels were built for: [], ["cpu"] or ["cpu", "cuda"]."""
    if not has_compiled_ops():
        return []
    return ["cpu", "cuda"] if build_info().get("cuda") else ["cpu"]


def active_backend() -> str:
    """``"compiled"`` when ``meshrec._C`` serves the ops, else ``"reference"`` (pure PyTorch)."""
    return "compiled" if has_compiled_ops() else "reference"


_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, MeshrecFallbackWarning, stacklevel=4)


def use_compiled(tensor: torch.Tensor) -> bool:
    """Whether an op on ``tensor`` runs the compiled kernel; warns once per reason when not."""
    if not has_compiled_ops():
        _warn_once(
            "library",
            f"meshrec: the compiled ops library is not in use ({load_error()}); every op runs its "
            "pure-PyTorch reference, which is slower. Build it with "
            "`pip install --no-build-isolation .` against the torch you run.",
        )
        return False
    device = tensor.device.type
    if device == "cuda" and "cuda" not in compiled_backends():
        _warn_once(
            "cuda",
            "meshrec: the compiled library was built without CUDA kernels; ops on CUDA tensors run "
            "the pure-PyTorch reference. Rebuild with a CUDA torch and nvcc (or FORCE_CUDA=1).",
        )
        return False
    return device in {"cpu", "cuda", "meta"}
