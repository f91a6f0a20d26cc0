"""What is installed and how it was built: ``meshrec.info()`` and ``meshrec info``."""

from __future__ import annotations

import platform
from typing import Any

import torch

from meshrec import extension
from meshrec._version import __version__

__all__ = ["info"]


def info() -> dict[str, Any]:
    """Versions, compiled backends, the active op backend and the installed plugins.

    Keys: ``meshrec``, ``torch``, ``python``, ``compiled_backends`` (e.g. ["cpu"]),
    ``cuda_archs`` (architectures the CUDA kernels were built for), ``op_backend``
    ("compiled" or "reference"), ``compiled_library_error`` (why it is not loaded, or None),
    ``build`` (the library's own build record), ``cpu_kernels`` (the instruction set the CPU
    sparse convolution runs with: "avx512", "avx2" or "generic"; "" without the compiled
    library), ``cuda_available``, ``torch_cuda``,
    ``plugins`` (one dict per plugin: name, distribution, version, methods, status, error).
    """
    from meshrec.plugins import get_plugin_manager

    build = extension.build_info()
    return {
        "meshrec": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "compiled_backends": extension.compiled_backends(),
        "cuda_archs": build.get("cuda_archs", ""),
        "op_backend": extension.active_backend(),
        "compiled_library_error": extension.load_error(),
        "build": build,
        "cpu_kernels": torch.ops.meshrec._sparse_cpu_kernels() if extension.has_compiled_ops() else "",
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
        "plugins": [plugin.as_dict() for plugin in get_plugin_manager().plugins()],
    }
