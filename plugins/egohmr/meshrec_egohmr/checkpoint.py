"""EgoHMR's released checkpoints -> meshrec networks.

The release (``checkpoints_egohmr`` in EgoHMR's download) is laid out as::

    checkpoints_egohmr/
      53618/best_model.pt                               stage 1 (ProHMR-scene)
      91453/best_model_mpjpe_vis.pt                     stage 2 (pose diffusion)
      91453/preprocess_stats/preprocess_stats.npz       stage 2's Xmean / Xstd (144 each)

Both ``.pt`` files are ``{'state_dict': model.state_dict()}`` (plain ``torch.save``). They are
read with ``torch.load(weights_only=True)``; the SMPL models the upstream embeds
(``smpl.*``, ``smpl_male.*``, ``smpl_female.*``, including COAP's ``smpl.coap.*`` whose shapes
depend on the mesh) and stage 1's unused ``discriminator.*`` are dropped; every other key must
match the network exactly (missing, unexpected or misshapen keys raise ``CheckpointError``).

Key counts of the release (verified on upstream-built checkpoints): stage 1 has 624 keys, 526
loaded (``initialized`` 1, ``backbone`` 318, ``flow`` 183, ``scene_enc`` 24) and 98 dropped
(``discriminator`` 62, SMPL 3 x 12); stage 2 has 532 keys, 444 loaded (``input_process`` 2,
``sequence_pos_encoder`` 1, ``embed_timestep`` 5, ``backbone`` 318, ``scene_enc`` 24,
``transl_enc`` 4, ``diffusion_model`` 85, ``beta_layer`` 5) and 88 dropped (SMPL 64 + 12 + 12, of
which 52 ``smpl.coap.*``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from meshrec.errors import CheckpointError
from meshrec.io.checkpoints import load_checkpoint, load_state_dict_strict
from meshrec_egohmr.stage1 import ProHMRScene
from meshrec_egohmr.stage2 import EgoHMRDenoiser

__all__ = [
    "EgoHMRCheckpoints",
    "STAGE1_FILE",
    "STAGE2_FILE",
    "STATS_FILE",
    "convert_stage1",
    "convert_stage2",
    "load_stage1",
    "load_stage2",
    "read_statistics",
    "resolve_checkpoints",
]

STAGE1_FILE = Path("53618") / "best_model.pt"
STAGE2_FILE = Path("91453") / "best_model_mpjpe_vis.pt"
STATS_FILE = Path("preprocess_stats") / "preprocess_stats.npz"
SMPL_PREFIXES = ("smpl.", "smpl_male.", "smpl_female.")


@dataclass(frozen=True)
class EgoHMRCheckpoints:
    """Resolved paths: the stage-1 file, the stage-2 file and its statistics (None if absent)."""

    stage1: Path | None
    stage2: Path | None
    statistics: Path | None


def _state_dict(path: Path, trust: bool) -> dict[str, torch.Tensor]:
    payload = load_checkpoint(path, trust=trust)
    if isinstance(payload, Mapping) and "state_dict" in payload:
        payload = payload["state_dict"]
    if not isinstance(payload, Mapping) or not all(torch.is_tensor(v) for v in payload.values()):
        raise CheckpointError(f"{path}: expected {{'state_dict': {{name: tensor}}}} as EgoHMR saves it")
    return dict(payload)


def _split(state_dict: Mapping[str, torch.Tensor], dropped_prefixes: tuple[str, ...]):
    kept = {k: v for k, v in state_dict.items() if not k.startswith(dropped_prefixes)}
    dropped = sorted(k for k in state_dict if k.startswith(dropped_prefixes))
    return kept, dropped


def convert_stage1(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(state dict for :class:`ProHMRScene`, dropped keys): drops the SMPL models and the
    discriminator (training only)."""
    return _split(state_dict, SMPL_PREFIXES + ("discriminator.",))


def convert_stage2(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(state dict for :class:`EgoHMRDenoiser`, dropped keys): drops the SMPL models and COAP."""
    return _split(state_dict, SMPL_PREFIXES)


def read_statistics(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``Xmean``, ``Xstd`` (144,) float32 from ``preprocess_stats.npz`` (no pickles)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"{path} does not exist: EgoHMR's stage 2 needs its pose statistics, "
            f"checkpoints_egohmr/91453/{STATS_FILE.as_posix()} in the release")
    try:
        with np.load(path, allow_pickle=False) as data:
            mean, std = data["Xmean"], data["Xstd"]
    except (KeyError, ValueError, OSError) as error:
        raise CheckpointError(f"{path}: expected an npz with arrays Xmean and Xstd (144 each): {error}") from None
    if mean.size != 144 or std.size != 144:
        raise CheckpointError(f"{path}: Xmean and Xstd must hold 144 values, got {mean.size} and {std.size}")
    return torch.from_numpy(mean.astype(np.float32).reshape(144)), torch.from_numpy(std.astype(np.float32).reshape(144))


def load_stage1(path: str | Path, trust: bool = False) -> ProHMRScene:
    """Stage 1 (``53618/best_model.pt``) as :class:`ProHMRScene` in eval mode."""
    path = Path(path).expanduser()
    converted, _ = convert_stage1(_state_dict(path, trust))
    network = ProHMRScene()
    load_state_dict_strict(network, converted, f"EgoHMR stage-1 checkpoint {path}")
    return network.eval()


def load_stage2(path: str | Path, statistics: str | Path | None = None, trust: bool = False) -> EgoHMRDenoiser:
    """Stage 2 (``91453/best_model_mpjpe_vis.pt``) as :class:`EgoHMRDenoiser` in eval mode,
    with ``Xmean`` / ``Xstd`` from ``statistics`` (default: ``preprocess_stats/
    preprocess_stats.npz`` beside the file)."""
    path = Path(path).expanduser()
    converted, _ = convert_stage2(_state_dict(path, trust))
    network = EgoHMRDenoiser()
    load_state_dict_strict(network, converted, f"EgoHMR stage-2 checkpoint {path}")
    network.set_statistics(*read_statistics(statistics if statistics is not None else path.parent / STATS_FILE))
    return network.eval()


def _file(value: Any, name: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        raise CheckpointError(f"EgoHMR {name} checkpoint {path} does not exist")
    return path


def resolve_checkpoints(checkpoint: str | Path | Mapping[str, Any], stage1: str | Path | None = None,
                        need_stage2: bool = True) -> EgoHMRCheckpoints:
    """Finds both stages from what a user passes.

    Accepted forms:
        - the release folder ``checkpoints_egohmr`` (or a folder holding it);
        - a mapping ``{"stage1": path, "stage2": path}`` (optional ``"statistics"``);
        - the stage-2 file ``.../91453/best_model_mpjpe_vis.pt``: stage 1 is then looked up at
          ``../53618/best_model.pt`` (the release layout) unless ``stage1`` is given;
        - with ``need_stage2=False``, the stage-1 file alone.
    """
    if isinstance(checkpoint, Mapping):
        unknown = set(checkpoint) - {"stage1", "stage2", "statistics"}
        if unknown:
            raise CheckpointError(f"checkpoint mapping keys must be 'stage1', 'stage2' (and 'statistics'), got {sorted(unknown)}")
        if "stage1" not in checkpoint or (need_stage2 and "stage2" not in checkpoint):
            raise CheckpointError("checkpoint mapping needs 'stage1'" + (" and 'stage2'" if need_stage2 else ""))
        first = _file(checkpoint["stage1"], "stage-1")
        second = _file(checkpoint["stage2"], "stage-2") if checkpoint.get("stage2") is not None else None
        stats = checkpoint.get("statistics")
        stats_path = Path(stats).expanduser() if stats is not None else (second.parent / STATS_FILE if second else None)
        return EgoHMRCheckpoints(first, second, stats_path)
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        for root in (path, path / "checkpoints_egohmr", path / "checkpoints" / "checkpoints_egohmr"):
            if (root / STAGE1_FILE).is_file() and (not need_stage2 or (root / STAGE2_FILE).is_file()):
                second = root / STAGE2_FILE if (root / STAGE2_FILE).is_file() else None
                first = Path(stage1).expanduser() if stage1 is not None else root / STAGE1_FILE
                return EgoHMRCheckpoints(_file(first, "stage-1"), second,
                                         second.parent / STATS_FILE if second else None)
        wanted = f"{STAGE1_FILE.as_posix()}" + (f" and {STAGE2_FILE.as_posix()}" if need_stage2 else "")
        raise CheckpointError(f"{path} is not EgoHMR's checkpoints_egohmr folder: it has no {wanted}")
    if not path.is_file():
        raise CheckpointError(f"EgoHMR checkpoint {path} does not exist")
    if not need_stage2:
        return EgoHMRCheckpoints(path, None, None)
    if stage1 is not None:
        first = _file(stage1, "stage-1")
    else:
        first = path.parent.parent / STAGE1_FILE
        if not first.is_file():
            raise CheckpointError(
                f"found the stage-2 file {path} but no stage-1 checkpoint at {first}: pass the checkpoints_egohmr "
                "folder, a mapping {'stage1': ..., 'stage2': ...}, or stage1_checkpoint=PATH")
    return EgoHMRCheckpoints(first, path, path.parent / STATS_FILE)
