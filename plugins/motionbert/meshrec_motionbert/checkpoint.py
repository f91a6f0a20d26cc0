"""MotionBERT's checkpoints -> meshrec's networks.

Files (Walter0807/MotionBERT, docs/mesh.md and docs/pretrain.md; OneDrive and Hugging Face
``walterzhu/MotionBERT``):

- ``checkpoint/mesh/FT_MB_release_MB_ft_pw3d/best_epoch.bin`` (mesh, fine-tuned on 3DPW), as
  ``train_mesh.py`` saves it: ``{"epoch", "lr", "optimizer", "model", "best_jpe"}``. ``model`` is
  the state_dict of ``nn.DataParallel(MeshRegressor)``: 293 keys, all ``module.``-prefixed, 260
  ``backbone.*``, 20 ``head.*`` and 13 ``head.smpl.*`` (smplx's buffers of the licensed SMPL
  model and its regressors). ``best_jpe`` is a ``numpy.float64``, admitted by meshrec's safe
  loader through an allowlist of numpy scalar types (``torch.load(weights_only=True)``), never a
  full unpickle unless the user asks for it (``trust=True``).
- ``checkpoint/pretrain/MB_release/best_epoch.bin`` (the pre-trained backbone alone):
  ``{"epoch", "lr", "optimizer", "model_pos", "min_loss"}`` with ``model_pos`` the 260
  ``module.``-prefixed DSTformer keys.

Converting: the ``module.`` prefix is removed, ``head.smpl.*`` dropped (meshrec runs the user's
own SMPL files), and everything else must match the network exactly: errors name the missing,
unexpected and mis-shaped keys. ``epoch``, ``lr``, ``optimizer`` and ``best_jpe`` are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from meshrec.errors import CheckpointError
from meshrec.io.checkpoints import load_checkpoint, load_state_dict_strict
from meshrec_motionbert.model import DSTformer, MeshRegressor

__all__ = [
    "DROPPED_PREFIXES",
    "backbone_state_dict",
    "load_backbone",
    "load_mesh_network",
    "load_pretrained_backbone",
    "mesh_state_dict",
]

DROPPED_PREFIXES = ("head.smpl.",)


def _state(checkpoint: Any, key: str, source: str, what: str) -> dict[str, torch.Tensor]:
    state = checkpoint.get(key, checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping) or not state or not all(torch.is_tensor(v) for v in state.values()):
        found = sorted(checkpoint)[:10] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise CheckpointError(f"{source} is not {what}: expected a dict with a {key!r} state_dict of tensors "
                              f"(MotionBERT's layout), found {found}")
    if all(name.startswith("module.") for name in state):  # saved from nn.DataParallel
        state = {name[len("module."):]: value for name, value in state.items()}
    return dict(state)


def mesh_state_dict(checkpoint: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The :class:`MeshRegressor` entries of a MotionBERT mesh checkpoint (``train_mesh.py``'s
    dict, or its ``model`` state_dict alone), without ``module.`` and without ``head.smpl.*``.

    Raises:
        CheckpointError: not a mesh checkpoint (e.g. the pre-trained backbone or the refiner).
    """
    if isinstance(checkpoint, Mapping) and "model" not in checkpoint and "model_pos" in checkpoint:
        raise CheckpointError(f"{source} is MotionBERT's pre-trained backbone (key 'model_pos'), not a mesh "
                              "checkpoint: load it with meshrec_motionbert.checkpoint.load_pretrained_backbone "
                              "(for fine-tuning) or use checkpoint/mesh/FT_MB_release_MB_ft_pw3d/best_epoch.bin")
    state = _state(checkpoint, "model", source, "a MotionBERT mesh checkpoint")
    if not any(k.startswith("backbone.") for k in state) or not any(k.startswith("head.") for k in state):
        prefixes = sorted({k.split(".", 1)[0] + "." for k in state})[:10]
        raise CheckpointError(f"{source} is not a MotionBERT mesh checkpoint: it needs 'backbone.*' and 'head.*' "
                              f"entries, found top-level prefixes {prefixes}")
    weight = state.get("head.fc2.weight")
    if weight is not None and weight.dim() == 3:
        raise CheckpointError(f"{source} is MotionBERT's refiner checkpoint (a temporal-convolution head); load it "
                              "with refine='motionbert' (meshrec_motionbert.refine), not as the mesh method")
    return {k: v for k, v in state.items() if not k.startswith(DROPPED_PREFIXES)}


def backbone_state_dict(checkpoint: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The :class:`DSTformer` entries of the pre-trained ``MB_release`` checkpoint (``model_pos``)
    or of a mesh checkpoint's ``backbone.*``, without prefixes."""
    if isinstance(checkpoint, Mapping) and "model_pos" in checkpoint:
        return _state(checkpoint, "model_pos", source, "a MotionBERT checkpoint")
    state = _state(checkpoint, "model", source, "a MotionBERT checkpoint")
    if any(k.startswith("backbone.") for k in state):
        return {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    return state


def load_mesh_network(path: str | Path, trust: bool = False, hidden_dim: int = 1024, checkpoint: Any = None,
                      **architecture: Any) -> MeshRegressor:
    """A :class:`MeshRegressor` with the weights of a mesh ``best_epoch.bin``, strictly loaded.

    Args:
        path: the checkpoint file.
        trust: unpickle everything (only for files you trust); the default loads tensors, plain
            values and numpy scalars only.
        hidden_dim: width of the head's layers (1024 in the released model).
        checkpoint: the file's content when already read.
        architecture: :class:`DSTformer` keyword arguments, if not the released configuration.
    """
    checkpoint = load_checkpoint(path, trust=trust) if checkpoint is None else checkpoint
    backbone = DSTformer(**architecture) if architecture else None
    network = MeshRegressor(backbone, dim_rep=architecture.get("dim_rep", 512),
                            num_joints=architecture.get("num_joints", 17), hidden_dim=hidden_dim)
    load_state_dict_strict(network, mesh_state_dict(checkpoint, str(path)), str(path))
    return network


def load_backbone(path: str | Path, trust: bool = False, **architecture: Any) -> DSTformer:
    """The pre-trained DSTformer of ``MB_release/best_epoch.bin`` (or a mesh checkpoint's
    backbone), strictly loaded."""
    backbone = DSTformer(**architecture)
    load_state_dict_strict(backbone, backbone_state_dict(load_checkpoint(path, trust=trust), str(path)), str(path))
    return backbone


def load_pretrained_backbone(network: MeshRegressor, path: str | Path, trust: bool = False) -> MeshRegressor:
    """Loads the pre-trained backbone into ``network.backbone`` (strictly) for fine-tuning, as
    ``train_mesh.py`` does with ``MB_release``; the head keeps its initialisation."""
    state = backbone_state_dict(load_checkpoint(path, trust=trust), str(path))
    load_state_dict_strict(network.backbone, state, str(path))
    return network
