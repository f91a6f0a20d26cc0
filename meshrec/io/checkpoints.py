"""Reading upstream checkpoints safely and loading them strictly.

``torch.load`` unpickles, and unpickling can run code; meshrec loads with
``weights_only=True`` (tensors, containers and plain values only). Checkpoints whose metadata
holds numpy scalars or arrays (mmcv's ``meta``) are admitted by allowing exactly those numpy
types. Anything else is refused with an explanation; a user who trusts the file can opt in to a
full unpickle with ``trust=True``.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from meshrec.errors import CheckpointError, spell

__all__ = ["identify_checkpoint", "load_checkpoint", "load_state_dict_strict", "strip_prefix"]

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip archive
_PICKLE_PROTOCOLS = {bytes([0x80, protocol]) for protocol in range(2, 6)}  # legacy torch.save


def identify_checkpoint(path: str | Path) -> str:
    """``"zip"`` or ``"legacy"``: the container format of a torch checkpoint, read from its first
    bytes. Cheap (nothing is unpickled), so callers run it before slower work.

    Raises:
        CheckpointError: the path is missing or a folder, or the file is not a torch checkpoint
            at all (empty, text, an image, ...).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; pass the checkpoint file itself")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    with path.open("rb") as handle:
        head = handle.read(4)
    if head == _ZIP_MAGIC:
        return "zip"
    if head[:2] in _PICKLE_PROTOCOLS:
        return "legacy"
    described = "an empty file" if not head else f"a file starting with {head!r}"
    raise CheckpointError(
        f"{path} is not a torch checkpoint at all ({described}; torch.save writes a zip archive or a pickle). "
        "Check that you passed the right file and that its download completed.")


def _numpy_globals() -> list[Any]:
    allowed: list[Any] = [np.dtype, np.ndarray]
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            imported = __import__(module, fromlist=["scalar", "_reconstruct"])
            allowed += [imported.scalar, imported._reconstruct]
        except (ImportError, AttributeError):
            continue
    allowed += [type(np.dtype(name)) for name in ("float16", "float32", "float64", "int32", "int64", "bool", "uint8")]
    return allowed


def load_checkpoint(path: str | Path, trust: bool = False) -> Any:
    """The object stored in a checkpoint file, on the CPU.

    Args:
        path: the ``.pth`` / ``.pt`` / ``.ckpt`` file.
        trust: unpickle everything (runs code the file asks for): only for files you trust.

    Raises:
        CheckpointError: missing, truncated, not a torch checkpoint, or refused by the safe loader.
    """
    path = Path(path).expanduser()
    identify_checkpoint(path)
    try:
        if trust:
            return torch.load(path, map_location="cpu", weights_only=False)
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            with torch.serialization.safe_globals(_numpy_globals()):
                return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        wanted = re.search(r"GLOBAL ([\w.]+)", str(error))
        detail = f"it asks for {wanted.group(1)}" if wanted else str(error).splitlines()[0]
        if "weights_only" not in str(error):  # torch did not get as far as its safe loader: corrupt
            raise CheckpointError(f"{path}: a damaged torch checkpoint ({detail}); download it again") from None
        raise CheckpointError(
            f"{path}: the safe loader (torch.load weights_only=True) refused this checkpoint: {detail}, "
            "beyond tensors and plain values, and nothing from it was run. If you trust the file, load it "
            f"with {spell('trust_checkpoint', 'True')}."
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, IndexError, KeyError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"{path}: a damaged or truncated torch checkpoint ({type(error).__name__}: "
                              f"{first_line}); download it again") from None


def strip_prefix(state_dict: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Keys starting with ``prefix``, with it removed."""
    return {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}


def load_state_dict_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with errors that name the keys.

    Raises:
        CheckpointError: listing missing keys, unexpected keys and shape mismatches (with shapes).
    """
    expected = module.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    mismatched = [
        f"{key}: checkpoint {tuple(state_dict[key].shape)}, network {tuple(expected[key].shape)}"
        for key in expected
        if key in state_dict and tuple(state_dict[key].shape) != tuple(expected[key].shape)
    ]
    problems = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", mismatched)):
        if items:
            shown = ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")
            problems.append(f"{title}: {shown}")
    if problems:
        raise CheckpointError(f"{source} does not match the network: " + "; ".join(problems))
    module.load_state_dict(state_dict, strict=True)
