"""Reading upstream checkpoints safely and loading them strictly.

``torch.load`` unpickles, and unpickling can run code; meshrec loads with
``weights_only=True`` (tensors, containers and plain values only). Checkpoints whose metadata
holds numpy scalars or arrays (mmcv's ``meta``) are admitted by allowing exactly those numpy
types. Anything else is refused with an explanation; a user who trusts the file can opt in to a
full unpickle with ``trust=True``.

Integrity: OpenMMLab (and torch hub) release names carry the first hex digits of the file's
SHA-256 (``resnet50_hmr_gta_bt-aa643b97_20220416.pth``). :func:`load_checkpoint` verifies them
when the name has them, and verifies the hashes plugins register for their upstream files
(:func:`register_checkpoint_hashes`), warning with :class:`CheckpointHashWarning` on a mismatch: a
bit-flipped or truncated download that still unpickles would otherwise load silently. Hashing
reads the file once more (about 1 s per GB), once per file per process.

Weights: :func:`load_state_dict_strict` refuses NaN anywhere and infinities in parameters,
naming the file and key.

How a plugin lists its upstream files' hashes (in its ``checkpoint.py``, which the loading code
imports anyway; ``plugin.py`` stays cheap)::

    from meshrec.io.checkpoints import register_checkpoint_hashes

    register_checkpoint_hashes({
        # file name as released -> its SHA-256 (all 64 hex digits, or a prefix of at least 8)
        "resnet50_hmr_pw3d-04f40f58_20211201.pth": "04f40f58",
    }, owner="meshrec-hmr")
"""

from __future__ import annotations

import hashlib
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from meshrec.errors import CheckpointError, spell

__all__ = [
    "CheckpointHashWarning",
    "checkpoint_sha256",
    "expected_checkpoint_hashes",
    "identify_checkpoint",
    "load_checkpoint",
    "load_state_dict_strict",
    "register_checkpoint_hashes",
    "strip_prefix",
    "verify_checkpoint_hash",
]

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


class CheckpointHashWarning(UserWarning):
    """A checkpoint's SHA-256 differs from the one its name or its plugin declares."""


# Released file name -> [(SHA-256 or a prefix of >= 8 hex digits, who declared it)].
_KNOWN_HASHES: dict[str, list[tuple[str, str]]] = {}
# (resolved path, size, mtime_ns) -> SHA-256, so a file is hashed once per process.
_HASH_CACHE: dict[tuple[str, int, int], str] = {}
# OpenMMLab "<name>-<8 hex>_<yyyymmdd>.pth" and torch hub "<name>-<hex>.pth".
_NAME_HASH = re.compile(r"-([0-9a-f]{8,64})(?:_\d{8})?\.[A-Za-z0-9]+$")


def register_checkpoint_hashes(hashes: Mapping[str, str], owner: str) -> None:
    """Declares the SHA-256 of upstream checkpoint files by their released names.

    Args:
        hashes: file name (no folder) -> SHA-256 hex digest, or a prefix of it of at least 8
            hex digits (what the name itself carries).
        owner: who declares them (a plugin's distribution name), shown in warnings.

    Raises:
        ValueError: a name with a folder, or a hash that is not 8 to 64 hex digits.
    """
    for name, digest in hashes.items():
        if Path(name).name != name:
            raise ValueError(f"register_checkpoint_hashes: {name!r} must be a file name without a folder")
        digest = str(digest).lower()
        if not re.fullmatch(r"[0-9a-f]{8,64}", digest):
            raise ValueError(f"register_checkpoint_hashes: the hash of {name!r} must be 8 to 64 hex digits, got "
                             f"{digest!r}")
        entries = _KNOWN_HASHES.setdefault(name, [])
        if (digest, owner) not in entries:
            entries.append((digest, owner))


def expected_checkpoint_hashes(path: str | Path) -> list[tuple[str, str]]:
    """The (hash or hash prefix, source) pairs a checkpoint is checked against: the prefix in
    its file name, then those registered for that name."""
    name = Path(path).name
    expected = []
    match = _NAME_HASH.search(name)
    if match:
        expected.append((match.group(1), "its file name"))
    expected += [(digest, f"the hashes registered by {owner}") for digest, owner in _KNOWN_HASHES.get(name, [])]
    return expected


def checkpoint_sha256(path: str | Path) -> str:
    """The SHA-256 hex digest of a file (cached per path, size and modification time)."""
    path = Path(path).expanduser()
    status = path.stat()
    key = (str(path.resolve()), status.st_size, status.st_mtime_ns)
    if key not in _HASH_CACHE:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _HASH_CACHE[key] = digest.hexdigest()
    return _HASH_CACHE[key]


def verify_checkpoint_hash(path: str | Path) -> bool | None:
    """Checks a checkpoint against :func:`expected_checkpoint_hashes`.

    Returns:
        None when nothing is declared for it (not hashed), True when every declared hash
        matches, False otherwise (after a :class:`CheckpointHashWarning` saying which).
    """
    expected = expected_checkpoint_hashes(path)
    if not expected:
        return None
    actual = checkpoint_sha256(path)
    wrong = [(digest, source) for digest, source in expected if not actual.startswith(digest)]
    for digest, source in wrong:
        warnings.warn(
            f"{path}: SHA-256 {actual[:16]}... does not match {digest} from {source}: the file is damaged "
            "(e.g. an interrupted or corrupted download) or is not the released file. Download it again; results "
            "from it may be wrong.", CheckpointHashWarning, stacklevel=3)
    return not wrong


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


def load_checkpoint(path: str | Path, trust: bool = False, verify_hash: bool = True) -> Any:
    """The object stored in a checkpoint file, on the CPU.

    Args:
        path: the ``.pth`` / ``.pt`` / ``.ckpt`` file.
        trust: unpickle everything (runs code the file asks for): only for files you trust.
        verify_hash: check the SHA-256 its name carries or its plugin registered (a
            :class:`CheckpointHashWarning` on a mismatch; see the module docstring).

    Raises:
        CheckpointError: missing, truncated, not a torch checkpoint, or refused by the safe loader.
    """
    path = Path(path).expanduser()
    identify_checkpoint(path)
    if verify_hash:
        verify_checkpoint_hash(path)
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
    parameters = {name for name, _ in module.named_parameters()}
    for key in expected:
        value = state_dict[key]
        if not torch.is_tensor(value) or not value.is_floating_point() or value.numel() == 0:
            continue
        # Parameters must be finite; buffers may hold infinities (attention masks), never NaN.
        bad = value.isnan() if key not in parameters else ~torch.isfinite(value)
        count = int(bad.sum())
        if count:
            raise CheckpointError(
                f"{source}: {key} holds {count} {'NaN' if key not in parameters else 'NaN or infinite'} values (of "
                f"{value.numel()}); the checkpoint is damaged or comes from a diverged training run. Download it "
                "again or use another checkpoint.")
    module.load_state_dict(state_dict, strict=True)
