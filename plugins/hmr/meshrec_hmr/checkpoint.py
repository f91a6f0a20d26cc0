"""mmhuman3d's HMR checkpoints -> the state_dict of :class:`~meshrec_hmr.model.HMRNetwork`.

The released files (``resnet50_hmr_gta_bt``, ``resnet50_hmr_gta_ft``, ``resnet50_hmr_pw3d``)
are dicts ``{"meta": ..., "state_dict": ...}`` whose state_dict holds ``backbone.*`` (ResNet-50,
torchvision names) and ``head.*`` (HMRHead), which our network uses as they are, plus
``disc.*`` (the adversarial pose discriminator, training only) and ``body_model_train.*`` /
``body_model_test.*`` (copies of the licensed SMPL arrays and joint regressors), which are
dropped: meshrec builds SMPL from the user's own files.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from meshrec.errors import CheckpointError
from meshrec.io.checkpoints import load_checkpoint, load_state_dict_strict
from meshrec_hmr.model import HMRNetwork

__all__ = ["DROPPED_PREFIXES", "hmr_state_dict", "load_hmr_network"]

DROPPED_PREFIXES = ("disc.", "body_model_train.", "body_model_test.")
NETWORK_PREFIXES = ("backbone.", "head.")


def hmr_state_dict(checkpoint: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The network's entries of an mmhuman3d HMR checkpoint (or of a bare state_dict).

    Raises:
        CheckpointError: the object is not an HMR checkpoint in mmhuman3d's layout.
    """
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping) or not all(torch.is_tensor(value) for value in state.values()):
        raise CheckpointError(f"{source} is not an HMR checkpoint: expected a dict with a 'state_dict' of tensors "
                              f"(mmhuman3d's layout), found {type(checkpoint).__name__}")
    if all(key.startswith("module.") for key in state):  # saved from DistributedDataParallel
        state = {key[len("module."):]: value for key, value in state.items()}
    has_parts = {prefix: any(key.startswith(prefix) for key in state) for prefix in NETWORK_PREFIXES}
    if not all(has_parts.values()):
        prefixes = sorted({key.split(".", 1)[0] + "." for key in state})[:10]
        raise CheckpointError(
            f"{source} is not an HMR checkpoint in mmhuman3d's layout: it needs 'backbone.*' and 'head.*' "
            f"entries, found top-level prefixes {prefixes}"
        )
    return {key: value for key, value in state.items() if not key.startswith(DROPPED_PREFIXES)}


def load_hmr_network(path: str | Path, trust: bool = False) -> HMRNetwork:
    """An :class:`HMRNetwork` with the weights of an mmhuman3d HMR checkpoint, strictly loaded
    (any missing, unexpected or mis-shaped entry raises :class:`CheckpointError` naming it)."""
    checkpoint = load_checkpoint(path, trust=trust)
    network = HMRNetwork()
    load_state_dict_strict(network, hmr_state_dict(checkpoint, str(path)), str(path))
    return network
