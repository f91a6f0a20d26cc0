"""Released MA-HMR / SAT-HMR checkpoints -> :class:`~meshrec_mahmr.model.MAHMRNetwork`.

Layouts (plain ``state_dict`` files, no prefix; an Accelerate multi-GPU save may add
``module.``, which is stripped):

=====================  ===============================================================  =====
file                   content                                                          keys
=====================  ===============================================================  =====
mahmr_stage3.bin       fov_head, 11-beta shape heads, mean_shape (11)                   679
mahmr_stage2.bin       fov_head, 10 betas                                               679
mahmr_stage1.bin       no fov_head, 10 betas, dn_enc (denoising training)               673
sat_644.pth (SAT-HMR)  as stage 1                                                       673
=====================  ===============================================================  =====

(key counts after dropping ``human_model.*``: the 8 SMPL arrays, licensed, that upstream embeds;
meshrec builds SMPL from the user's own files.) ``decoder.decoder.bbox_embed.*`` repeats
``bbox_embed.*`` (the same modules registered twice upstream); both are present and loaded.

The architecture (dims, number of blocks and layers, betas, FoV head, denoising encoder) is read
from the tensors' shapes, so every file above, and small test checkpoints, load strictly with
no configuration. What shapes cannot tell apart (SAT-HMR vs MA-HMR stage 1: the depth output and
one token-selection quirk) comes from ``variant``.

DINOv2's own released weights (``dinov2_vitb14_pretrain.pth``) initialise the encoder for
training as upstream does: :func:`init_from_dinov2`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from meshrec.errors import CheckpointError
from meshrec.io.checkpoints import load_checkpoint, load_state_dict_strict
from meshrec.nn.vit import VisionTransformer
from meshrec_mahmr.model import PRESETS, MAHMRConfig, MAHMRNetwork

__all__ = ["DROPPED_PREFIXES", "config_from_state_dict", "init_from_dinov2", "load_dinov2", "load_mahmr_network",
           "mahmr_state_dict"]

DROPPED_PREFIXES = ("human_model.",)
REQUIRED = ("encoder.blocks.0.attn.qkv.weight", "encoder_patch_proj.0.weight", "scale_head.layers.0.weight",
            "decoder.decoder.layers.0.sa_qcontent_proj.weight", "pose_head.0.layers.0.weight", "tgt_embed.weight")


def mahmr_state_dict(checkpoint: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The network's entries of a released checkpoint (SMPL arrays dropped, ``module.`` stripped).

    Raises:
        CheckpointError: not an MA-HMR / SAT-HMR state_dict (says what was found).
    """
    state = checkpoint
    if isinstance(state, Mapping) and not any(torch.is_tensor(v) for v in state.values()):
        for wrapper in ("state_dict", "model", "module"):
            if isinstance(state.get(wrapper), Mapping):
                state = state[wrapper]
                break
    if not isinstance(state, Mapping) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{source} is not an MA-HMR / SAT-HMR checkpoint: expected a state_dict of tensors, "
                              f"found {type(checkpoint).__name__}")
    if all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        prefixes = sorted({key.split(".", 1)[0] for key in state})[:12]
        raise CheckpointError(f"{source} is not an MA-HMR / SAT-HMR checkpoint: it lacks {missing[:3]}; "
                              f"top-level names found: {prefixes}")
    return {key: value for key, value in state.items() if not key.startswith(DROPPED_PREFIXES)}


def _count(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    indices = {int(key[len(prefix):].split(".", 1)[0]) for key in state if key.startswith(prefix)}
    return max(indices) + 1 if indices else 0


def config_from_state_dict(state: Mapping[str, torch.Tensor], variant: str | None = None,
                           **overrides: Any) -> MAHMRConfig:
    """The :class:`MAHMRConfig` whose network has exactly the tensors of ``state``.

    ``variant``: "mahmr" or "sathmr" (what shapes cannot tell; default "mahmr"). ``overrides``
    win over what is read (e.g. the thresholds)."""
    embed = state["encoder.blocks.0.norm1.weight"].shape[0]
    hidden = state["tgt_embed.weight"].shape[1]
    grid0 = state["encoder_pos_embeds"].shape[0]
    patch = state["encoder_patch_proj.0.weight"].shape[-1]
    shape_layers = _count(state, "shape_head.0.layers.")
    read = dict(
        input_size=grid0 * patch, patch_size=patch, embed_dim=embed, depth=_count(state, "encoder.blocks."),
        hidden_dim=hidden, dec_layers=_count(state, "decoder.decoder.layers."),
        dim_feedforward=state["decoder.decoder.layers.0.linear1.weight"].shape[0],
        num_queries=state["tgt_embed.weight"].shape[0],
        dim_shape=state[f"shape_head.0.layers.{shape_layers - 1}.weight"].shape[0],
        use_fov="fov_head.layers.0.weight" in state, use_dn="dn_enc.weight" in state,
        get_map_layer=_count(state, "encoder.additional_blocks."),
    )
    # heads are not visible in shapes: ViT-B has 12 (64 channels each); MA-HMR's decoder 4
    read["num_heads"] = overrides.pop("num_heads", max(1, embed // 64))
    read["nheads"] = overrides.pop("nheads", 4)
    variant = variant or "mahmr"
    if variant not in ("mahmr", "sathmr"):
        raise ValueError(f"variant must be 'mahmr' or 'sathmr', got {variant!r}")
    base = PRESETS["sat_644"] if variant == "sathmr" else PRESETS["mahmr_stage3"]
    return MAHMRConfig(**{**base.__dict__, **read, **overrides})


def load_mahmr_network(path: str | Path | Mapping[str, torch.Tensor], variant: str | None = None,
                       trust: bool = False, return_info: bool = False, **overrides: Any):
    """An :class:`MAHMRNetwork` with a released checkpoint's weights, strictly loaded (any
    missing, unexpected or mis-shaped entry raises :class:`CheckpointError` naming it).

    Args:
        path: ``mahmr_stage{1,2,3}.bin``, ``sat_644.pth``, or a state_dict already loaded.
        variant: "mahmr" (default) or "sathmr"; preset names ("mahmr_stage3", "sat_644", ...)
            are accepted too and mapped to their variant.
        trust: unpickle fully (only for files you trust); the default loads ``weights_only``.
        return_info: also return a dict with the key counts.
        overrides: config fields, e.g. ``num_heads`` for non-ViT-B encoders, thresholds.
    """
    if variant in PRESETS:
        variant = "sathmr" if variant == "sat_644" else "mahmr"
    source = str(path) if not isinstance(path, Mapping) else "state_dict"
    raw = path if isinstance(path, Mapping) else load_checkpoint(path, trust=trust)
    state = mahmr_state_dict(raw, source)
    config = config_from_state_dict(state, variant, **overrides)
    network = MAHMRNetwork(config)
    load_state_dict_strict(network, state, source)
    network.eval()
    if return_info:
        total = len(raw.get("state_dict", raw)) if isinstance(raw, Mapping) else len(state)
        return network, {"keys_in_file": total, "keys_loaded": len(state), "keys_dropped": total - len(state),
                         "config": config}
    return network


def load_dinov2(path: str | Path | Mapping[str, torch.Tensor], **kwargs: Any) -> VisionTransformer:
    """DINOv2's released ViT (``dinov2_vitb14_pretrain.pth``), strictly loaded into
    :class:`meshrec.nn.vit.VisionTransformer`; dims are read from the tensors (heads: 64
    channels each, as every DINOv2 model)."""
    state = path if isinstance(path, Mapping) else load_checkpoint(path)
    embed = state["cls_token"].shape[-1]
    patch = state["patch_embed.proj.weight"].shape[-1]
    grid = round((state["pos_embed"].shape[1] - 1) ** 0.5)
    registers = state["register_tokens"].shape[1] if "register_tokens" in state else 0
    config = dict(img_size=grid * patch, patch_size=patch, embed_dim=embed, depth=_count(state, "blocks."),
                  num_heads=embed // 64, num_register_tokens=registers)
    vit = VisionTransformer(**{**config, **kwargs})
    load_state_dict_strict(vit, state, str(path) if not isinstance(path, Mapping) else "DINOv2 state_dict")
    return vit


@torch.no_grad()
def init_from_dinov2(network: MAHMRNetwork, dinov2: VisionTransformer | str | Path | Mapping) -> MAHMRNetwork:
    """Initialises the encoder side of ``network`` from DINOv2's weights as upstream does for
    training: main blocks and final norm as they are, ``additional_blocks`` = copies of the first
    blocks, ``enc_inter_norm`` = the final norm, both patch projections = DINOv2's, the class
    token plus its position as ``encoder_cr_token``, and the position table bicubically resized
    to the level-0 grid (92 x 92 for 1288) as ``encoder_pos_embeds``."""
    vit = dinov2 if isinstance(dinov2, VisionTransformer) else load_dinov2(dinov2)
    if vit.embed_dim != network.config.embed_dim or len(vit.blocks) != len(network.encoder.blocks):
        raise ValueError(f"DINOv2 ViT ({vit.embed_dim} channels, {len(vit.blocks)} blocks) does not match the "
                         f"network's encoder ({network.config.embed_dim}, {len(network.encoder.blocks)})")
    network.encoder.blocks.load_state_dict(vit.blocks.state_dict())
    network.encoder.norm.load_state_dict(vit.norm.state_dict())
    for index, block in enumerate(network.encoder.additional_blocks):
        block.load_state_dict(copy.deepcopy(vit.blocks[index].state_dict()))
    network.enc_inter_norm.load_state_dict(vit.norm.state_dict())
    for proj in network.encoder_patch_proj:
        proj.load_state_dict(vit.patch_embed.proj.state_dict())
    network.encoder_cr_token.copy_((vit.cls_token.view(1, -1) + vit.pos_embed[:, 0].float().view(1, -1)))
    grid = int(network.config.grid_sizes[0])
    network.encoder_pos_embeds.copy_(vit.position_table(grid, grid))
    return network
