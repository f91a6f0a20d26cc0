"""Synthetic EgoHMR checkpoints in the released layout (no upstream code, no real weights).

Keys and shapes of every loaded entry are the upstream's (written from the state dicts of the
meshrec networks, which the upstream comparison in the README checks name by name); the dropped
entries (SMPL arrays, COAP, the discriminator) carry the upstream's key names with small
placeholder shapes, since the converter drops them by prefix whatever their shapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from meshrec_egohmr.stage1 import ProHMRScene
from meshrec_egohmr.stage2 import EgoHMRDenoiser

SMPL_KEYS = ("shapedirs", "v_template", "J_regressor", "posedirs", "lbs_weights", "parents", "faces_tensor",
             "vertex_joint_selector.extra_joints_idxs", "betas", "global_orient", "body_pose", "transl")
COAP_KEYS = (
    tuple(f"partitioner.{name}" for name in ("parents", "joint_mapper", "tight_face_tensor", "extended_face_tensor",
                                              "tight_vert_selector"))
    + ("k_one_hot",)
    + tuple(f"{part}.layer{i}.{kind}" for part in ("encoder", "query_encoder", "decoder") for i in range(8)
            for kind in ("weight", "bias"))[:46]
)
DISCRIMINATOR_KEYS = (
    ["D_conv1.weight", "D_conv1.bias", "D_conv2.weight", "D_conv2.bias"]
    + [f"pose_out.{i}.{kind}" for i in range(23) for kind in ("weight", "bias")]
    + [f"{name}.{kind}" for name in ("betas_fc1", "betas_fc2", "betas_out", "D_alljoints_fc1", "D_alljoints_fc2",
                                     "D_alljoints_out") for kind in ("weight", "bias")]
)


def _randomised(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in module.state_dict().items():
        if value.dtype.is_floating_point and not key.endswith("dummy_buffer") and not key.endswith(".pe"):
            noise = torch.randn(value.shape, generator=generator) * 0.05
            if key.endswith("running_var"):
                noise = noise.abs() + 0.8
            elif key.endswith("bn.weight") or ".batch_norm_layers." in key and key.endswith("weight") or key.endswith("bn1.weight"):
                noise = noise + 1.0
            value = noise.to(value.dtype)
        state[key] = value.clone()
    return state


def _smpl_entries(prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{key}": torch.zeros(2) for key in SMPL_KEYS}


def stage1_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """624 keys as ``53618/best_model.pt``'s state dict (526 loaded, 98 dropped)."""
    state = _randomised(ProHMRScene(), seed)
    # a plausible crop camera (s = 0.9 around SPIN's mean) so that the body lands in front of the camera
    state["flow.fc_head.layers.2.weight"] = state["flow.fc_head.layers.2.weight"] * 1e-3
    state["flow.fc_head.init_cam"] = torch.tensor([[[0.9, 0.0, 0.0]]])
    state.update({f"discriminator.{key}": torch.zeros(2) for key in DISCRIMINATOR_KEYS})
    for prefix in ("smpl", "smpl_male", "smpl_female"):
        state.update(_smpl_entries(prefix))
    return state


def stage2_state_dict(seed: int = 1) -> dict[str, torch.Tensor]:
    """532 keys as ``91453/best_model_mpjpe_vis.pt``'s state dict (444 loaded, 88 dropped)."""
    state = _randomised(EgoHMRDenoiser(), seed)
    for prefix in ("smpl", "smpl_male", "smpl_female"):
        state.update(_smpl_entries(prefix))
    state.update({f"smpl.coap.{key}": torch.zeros(2) for key in COAP_KEYS})
    return state


def write_release(root: Path, seed: int = 0) -> Path:
    """A ``checkpoints_egohmr`` folder with both stages and the statistics; returns it."""
    root = Path(root) / "checkpoints_egohmr"
    (root / "53618").mkdir(parents=True, exist_ok=True)
    (root / "91453" / "preprocess_stats").mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": stage1_state_dict(seed)}, root / "53618" / "best_model.pt")
    torch.save({"state_dict": stage2_state_dict(seed + 1)}, root / "91453" / "best_model_mpjpe_vis.pt")
    rng = np.random.default_rng(seed)
    std = np.concatenate([np.full(6, 0.4), np.full(138, 0.3)]).astype(np.float32)
    np.savez(root / "91453" / "preprocess_stats" / "preprocess_stats.npz",
             Xmean=(rng.normal(size=144) * 0.2).astype(np.float32), Xstd=std)
    return root
