"""Synthetic MotionBERT checkpoints in the exact layouts ``train_mesh.py`` and ``train.py`` save.

The ``model`` state_dict of ``nn.DataParallel(MeshRegressor)``: 293 ``module.``-prefixed keys,
260 ``backbone.*`` (DSTformer), 20 ``head.*`` and 13 ``head.smpl.*`` (smplx's SMPL with
batch_size=64 and create_transl=False, plus MotionBERT's two extra regressors). Values are
random (seeded); names, shapes and dtypes are the released ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

NUM_BLOCKS = 5
DIM = 512
HIDDEN = 1024


def backbone_shapes(dim: int = DIM, depth: int = NUM_BLOCKS, mlp_ratio: int = 2, maxlen: int = 243,
                    joints: int = 17) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the DSTformer's state_dict (260 entries for the released sizes)."""
    shapes: dict[str, tuple[int, ...]] = {
        "temp_embed": (1, maxlen, 1, dim), "pos_embed": (1, joints, dim),
        "joints_embed.weight": (dim, 3), "joints_embed.bias": (dim,),
    }
    for stream in ("blocks_st", "blocks_ts"):
        for i in range(depth):
            p = f"{stream}.{i}."
            for norm in ("norm1_s", "norm1_t", "norm2_s", "norm2_t"):
                shapes[p + norm + ".weight"] = (dim,)
                shapes[p + norm + ".bias"] = (dim,)
            for attn in ("attn_s", "attn_t"):
                shapes[p + attn + ".qkv.weight"] = (3 * dim, dim)
                shapes[p + attn + ".qkv.bias"] = (3 * dim,)
                shapes[p + attn + ".proj.weight"] = (dim, dim)
                shapes[p + attn + ".proj.bias"] = (dim,)
            for mlp in ("mlp_s", "mlp_t"):
                shapes[p + mlp + ".fc1.weight"] = (mlp_ratio * dim, dim)
                shapes[p + mlp + ".fc1.bias"] = (mlp_ratio * dim,)
                shapes[p + mlp + ".fc2.weight"] = (dim, mlp_ratio * dim)
                shapes[p + mlp + ".fc2.bias"] = (dim,)
    shapes.update({"norm.weight": (dim,), "norm.bias": (dim,), "pre_logits.fc.weight": (dim, dim),
                   "pre_logits.fc.bias": (dim,), "head.weight": (3, dim), "head.bias": (3,)})
    for i in range(depth):
        shapes[f"ts_attn.{i}.weight"] = (2, 2 * dim)
        shapes[f"ts_attn.{i}.bias"] = (2,)
    return shapes


def head_shapes(dim: int = DIM, hidden: int = HIDDEN, joints: int = 17) -> dict[str, tuple[int, ...]]:
    """The mesh head's 20 entries (without the SMPL copy)."""
    shapes = {"init_pose": (1, 144), "init_shape": (1, 10), "fc1.weight": (hidden, joints * dim),
              "fc1.bias": (hidden,), "fc2.weight": (hidden, joints * dim), "fc2.bias": (hidden,)}
    for bn in ("bn1", "bn2"):
        shapes.update({f"{bn}.weight": (hidden,), f"{bn}.bias": (hidden,), f"{bn}.running_mean": (hidden,),
                       f"{bn}.running_var": (hidden,), f"{bn}.num_batches_tracked": ()})
    shapes.update({"head_pose.weight": (144, hidden), "head_pose.bias": (144,), "head_shape.weight": (10, hidden),
                   "head_shape.bias": (10,)})
    return shapes


SMPL_COPY = {  # head.smpl.* in the released file: smplx.SMPL(batch_size=64, create_transl=False) + 2 regressors
    "betas": ((64, 10), torch.float32), "global_orient": ((64, 3), torch.float32),
    "body_pose": ((64, 69), torch.float32), "shapedirs": ((6890, 3, 10), torch.float32),
    "faces_tensor": ((13776, 3), torch.int64), "v_template": ((6890, 3), torch.float32),
    "J_regressor": ((24, 6890), torch.float32), "posedirs": ((207, 20670), torch.float32),
    "parents": ((24,), torch.int64), "lbs_weights": ((6890, 24), torch.float32),
    "J_regressor_extra": ((9, 6890), torch.float32), "J_regressor_h36m": ((17, 6890), torch.float32),
    "vertex_joint_selector.extra_joints_idxs": ((21,), torch.int64),
}


def _random(shape: tuple[int, ...], name: str, generator: torch.Generator) -> torch.Tensor:
    if name.endswith("num_batches_tracked"):
        return torch.tensor(1000, dtype=torch.int64)
    if name.endswith("running_var"):
        return torch.rand(shape, generator=generator) + 0.5
    if name.endswith(".weight") and len(shape) == 2:
        return torch.randn(shape, generator=generator) / shape[1] ** 0.5
    if name.endswith("init_pose"):  # identity rotations in SPIN's 6D layout, slightly perturbed
        return torch.tensor([1.0, 0, 0, 1, 0, 0]).repeat(24)[None] + 0.05 * torch.randn(shape, generator=generator)
    return 0.1 * torch.randn(shape, generator=generator)


def released_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """The ``model`` entry of a released mesh checkpoint (293 keys, ``module.``-prefixed)."""
    generator = torch.Generator().manual_seed(seed)
    state = {f"module.backbone.{k}": _random(s, k, generator) for k, s in backbone_shapes().items()}
    state.update({f"module.head.{k}": _random(s, k, generator) for k, s in head_shapes().items()})
    for key, (shape, dtype) in SMPL_COPY.items():
        state[f"module.head.smpl.{key}"] = torch.zeros(shape, dtype=dtype)  # stands for the licensed arrays
    return state


def save_released_checkpoint(path: str | Path, seed: int = 0) -> Path:
    """``train_mesh.py``'s dict: epoch, lr, optimizer (AdamW state_dict), model, best_jpe (numpy)."""
    state = released_state_dict(seed)
    optimizer = {"state": {}, "param_groups": [{"lr": 5e-5, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01,
                                                "amsgrad": False, "params": list(range(260))}]}
    torch.save({"epoch": 60, "lr": [5e-5, 5e-4], "optimizer": optimizer, "model": state,
                "best_jpe": np.float64(76.9)}, path)
    return Path(path)


def save_pretrained_backbone(path: str | Path, seed: int = 0) -> Path:
    """``train.py``'s pre-training dict (MB_release): model_pos (260 prefixed DSTformer keys)."""
    generator = torch.Generator().manual_seed(seed)
    state = {f"module.{k}": _random(s, k, generator) for k, s in backbone_shapes().items()}
    torch.save({"epoch": 90, "lr": 1e-4, "optimizer": {"state": {}, "param_groups": []}, "model_pos": state,
                "min_loss": np.float64(0.05)}, path)
    return Path(path)
