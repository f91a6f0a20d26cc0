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
from meshrec.nn.hrnet import HRNet
from meshrec.scene import SPVCNN
from meshrec_sahmr.metro import METROEnhanced
from meshrec_sahmr.model import SAHMRNetwork
from meshrec_sahmr.rcnet import RCNet, RootNet

__all__ = ["DROPPED_PREFIXES", "NUM_KEYS", "load_metro_pretrained", "load_sahmr_network", "network_from_state",
           "sahmr_state_dict"]

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


def _count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    """Number of consecutive indices i with keys '<prefix>.<i>.*'."""
    count = 0
    while any(key.startswith(f"{prefix}.{count}.") for key in state):
        count += 1
    return count


def _hrnet(state: Mapping[str, torch.Tensor], prefix: str, head: bool) -> HRNet:
    width = state[f"{prefix}.transition1.0.0.weight"].shape[0]
    modules = tuple(_count(state, f"{prefix}.stage{s}") for s in (2, 3, 4))
    blocks = _count(state, f"{prefix}.layer1")
    kwargs: dict[str, Any] = {}
    if head:
        kwargs = dict(head_channels=tuple(state[f"{prefix}.incre_modules.{i}.0.conv1.weight"].shape[0] for i in range(4)),
                      final_channels=state[f"{prefix}.final_layer.0.weight"].shape[0],
                      num_classes=state[f"{prefix}.classifier.weight"].shape[0])
    return HRNet(width=width, num_modules=modules, num_blocks=blocks, head=head,
                 stem_channels=state[f"{prefix}.conv1.weight"].shape[0], **kwargs)


def network_from_state(state: Mapping[str, torch.Tensor], **network_kwargs: Any) -> SAHMRNetwork:
    """A :class:`SAHMRNetwork` whose sizes are read from the state dict's shapes (the released
    checkpoints give the released architecture; smaller synthetic ones, e.g. in tests, give
    smaller networks). Attention heads (4) cannot be read from shapes: pass ``heads=`` to change."""
    heads = network_kwargs.pop("heads", 4)
    rounding = network_kwargs.pop("rounding", "trunc")
    try:
        root_net = RootNet(_hrnet(state, "rcnet.root_net.hrnet", head=False),
                           out_channels=state["rcnet.root_net.out_conv.weight"].shape[0])
        stem = state["rcnet.contact_net.stem.0.kernel"]
        contact_net = SPVCNN(stem.shape[1], state["rcnet.contact_net.classifier.0.weight"].shape[0],
                             channel_ratio=stem.shape[2] / 32, rounding=rounding)
        blocks = _count(state, "metro_enhanced.trans_encoder")
        block = "metro_enhanced.trans_encoder.{}.bert."
        embedding = [state[block.format(i) + "img_embedding.weight"] for i in range(blocks)]
        first = block.format(0)
        metro = METROEnhanced(
            _hrnet(state, "metro_enhanced.backbone", head=True),
            feature_dims=tuple(e.shape[1] for e in embedding), hidden_dims=tuple(e.shape[0] for e in embedding),
            image_channels=state["metro_enhanced.backbone.final_layer.0.weight"].shape[0],
            image_tokens=state["metro_enhanced.conv_learn_tokens.weight"].shape[1],
            num_vertices=state["metro_enhanced.upsampling2.weight"].shape[0],
            num_coarse=state["metro_enhanced.upsampling.weight"].shape[0],
            heads=heads, layers=_count(state, first + "encoder.layer"),
            intermediate=state[first + "encoder.layer.0.intermediate.dense.weight"].shape[0],
            vocab_size=state[first + "embeddings.word_embeddings.weight"].shape[0],
            max_positions=state[first + "position_embeddings.weight"].shape[0],
            type_vocab_size=state[first + "embeddings.token_type_embeddings.weight"].shape[0],
        )
    except KeyError as error:
        raise CheckpointError(f"the checkpoint lacks {error.args[0]!r}, which SA-HMR's network has") from None
    return SAHMRNetwork(RCNet(root_net, contact_net), metro, **network_kwargs)


def load_sahmr_network(path: str | Path | None, trust: bool = False, **network_kwargs: Any) -> SAHMRNetwork:
    """A :class:`SAHMRNetwork` with a released checkpoint's weights, strictly loaded (any missing,
    unexpected or mis-shaped key raises :class:`CheckpointError` naming it). ``path=None`` gives
    the released architecture with random weights. ``network_kwargs``: ``rounding``, ``heads``,
    ``num_contact_points``."""
    if path is None:
        rounding = network_kwargs.pop("rounding", "trunc")
        network_kwargs.pop("heads", None)
        return SAHMRNetwork(rounding=rounding, **network_kwargs)
    state = sahmr_state_dict(load_checkpoint(path, trust=trust), str(path))
    network = network_from_state(state, **network_kwargs)
    load_state_dict_strict(network, state, str(path))
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
