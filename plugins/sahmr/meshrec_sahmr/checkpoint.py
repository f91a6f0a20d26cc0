"""SA-HMR's released checkpoints -> the state dict of :class:`~meshrec_sahmr.model.SAHMRNetwork`.

``sahmr_rich_e30.pth`` and ``sahmr_prox_e30.pth`` (Google Drive folder linked from
zju3dv/SA-HMR's README) are ``{"network": {"net.<key>": tensor}, "epoch": 30}``: every network key
prefixed ``net.`` (the training wrapper), 4437 entries: ``rcnet.root_net.hrnet`` 1830,
``rcnet.root_net.out_conv`` 2, ``rcnet.contact_net`` 319 (torchsparse ``kernel`` tensors),
``metro_enhanced.backbone`` 1956 (with the unused 1000-class head), ``trans_encoder.{0,1,2}``
108 each, ``conv_learn_tokens`` / ``upsampling`` / ``upsampling2`` 2 each. Entries that copy
licensed body-model data (``smpl.*``, ``mesh_sampler.*``, ``J_regressor*``, template buffers of the
training wrapper), if a file carries them, are dropped: meshrec builds the template from the
user's own SMPL files. Everything else loads strictly.

METRO's own 3DPW state dict (``metro_3dpw_state_dict.bin``, microsoft/MeshTransformer), which
SA-HMR initialises module 2 from, loads into :class:`~meshrec_sahmr.metro.METROEnhanced` with
:func:`load_metro_pretrained` (non-strict by nature: it lacks the contact layers).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from meshrec.errors import CheckpointError
from meshrec.io.checkpoints import load_checkpoint, load_state_dict_strict
from meshrec_sahmr.metro import METROEnhanced
from meshrec_sahmr.model import SAHMRNetwork

__all__ = ["DROPPED_PREFIXES", "NUM_KEYS", "load_metro_pretrained", "load_sahmr_network", "sahmr_state_dict"]

NUM_KEYS = 4437
# Body-model copies some training wrappers keep as buffers (SMPL arrays, regressors, mesh sampler).
DROPPED_PREFIXES = ("smpl.", "mesh_sampler.", "J_regressor", "init_verts", "init_joints", "verts431_pids",
                    "verts6890_pids", "pid_to_verts431", "smplh", "male_smplh.", "female_smplh.", "smplx2smplh")
NETWORK_PREFIXES = ("rcnet.", "metro_enhanced.")


def sahmr_state_dict(checkpoint: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The network entries of a released SA-HMR checkpoint, ``net.`` stripped.

    Accepts the released layout ``{"network": {"net.*": ...}}``, a bare ``{"net.*": ...}`` and a
    state dict already stripped. Raises :class:`CheckpointError` for anything else.
    """
    state = checkpoint.get("network", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(
            f"{source} is not an SA-HMR checkpoint: expected a dict with a 'network' state dict of tensors "
            f"(the layout of sahmr_rich_e30.pth / sahmr_prox_e30.pth), found {type(checkpoint).__name__}"
            + (f" with keys {sorted(checkpoint)[:8]}" if isinstance(checkpoint, Mapping) else "")
        )
    if all(key.startswith("net.") for key in state):
        state = {key[len("net."):]: value for key, value in state.items()}
    state = {key: value for key, value in state.items() if not key.startswith(DROPPED_PREFIXES)}
    missing = [prefix for prefix in NETWORK_PREFIXES if not any(key.startswith(prefix) for key in state)]
    if missing:
        prefixes = sorted({key.split(".", 1)[0] + "." for key in state})[:10]
        hint = (" (an RCNet-only checkpoint, e.g. out/rich/rcnet/checkpoints/30.pth, holds no module 2: "
                "use the released sahmr_*_e30.pth)" if missing == ["metro_enhanced."] else "")
        raise CheckpointError(f"{source} is not an SA-HMR checkpoint: no {', '.join(p + '*' for p in missing)} entries "
                              f"(after stripping 'net.'); found prefixes {prefixes}{hint}")
    return dict(state)


def load_sahmr_network(path: str | Path | None, trust: bool = False, **network_kwargs: Any) -> SAHMRNetwork:
    """A :class:`SAHMRNetwork` with a released checkpoint's weights, strictly loaded (any missing,
    unexpected or mis-shaped key raises :class:`CheckpointError` naming it). ``path=None`` gives
    random weights. ``network_kwargs`` go to :class:`SAHMRNetwork` (e.g. ``rounding``)."""
    network = SAHMRNetwork(**network_kwargs)
    if path is not None:
        checkpoint = load_checkpoint(path, trust=trust)
        load_state_dict_strict(network, sahmr_state_dict(checkpoint, str(path)), str(path))
    return network


def load_metro_pretrained(module: METROEnhanced, path: str | Path, trust: bool = False) -> list[str]:
    """Initialises METRO-enhanced from METRO's 3DPW state dict (``metro_3dpw_state_dict.bin``): every
    entry whose name and shape match (backbone, trans_encoder BERT layers, conv_learn_tokens,
    upsampling*); returns the names left at their initial values (the contact layers
    ``linear_cp`` / ``loftr_layer``, as in SA-HMR's training). Raises :class:`CheckpointError` if
    anything else is missing or mis-shaped."""
    state = load_checkpoint(path, trust=trust)
    if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
        state = state["model"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path} is not a METRO state dict")
    own = module.state_dict()
    bad = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise CheckpointError(f"{path}: shapes differ for {bad[:5]}")
    left = [k for k in own if k not in state]
    unexpected_left = [k for k in left if "linear_cp" not in k and "loftr_layer" not in k]
    if unexpected_left:
        raise CheckpointError(f"{path} lacks METRO entries {unexpected_left[:5]} ({len(unexpected_left)} in all): "
                              "is it metro_3dpw_state_dict.bin from microsoft/MeshTransformer?")
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return left
