"""pytest helpers for meshrec's and plugins' tests: device parametrisation and skips."""

from __future__ import annotations

import pytest
import torch

__all__ = ["CUDA", "DEVICES", "requires_compiled_ops"]

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# Parametrise tests over devices: @pytest.mark.parametrize("device", DEVICES)
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


def requires_compiled_ops() -> None:
    """Skips the calling test when meshrec._C is not in use (reference-only runs)."""
    from meshrec import extension

    if not extension.has_compiled_ops():
        pytest.skip(f"compiled ops not in use: {extension.load_error()}")
