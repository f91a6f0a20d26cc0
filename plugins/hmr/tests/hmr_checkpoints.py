"""A synthetic checkpoint in mmhuman3d's exact HMR layout (random values)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

RESNET50_STAGES = ((3, 64), (4, 128), (6, 256), (3, 512))


def _batch_norm(prefix: str, channels: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": 1 + 0.1 * torch.randn(channels, generator=generator),
        f"{prefix}.bias": 0.1 * torch.randn(channels, generator=generator),
        f"{prefix}.running_mean": 0.1 * torch.randn(channels, generator=generator),
        f"{prefix}.running_var": 0.5 + torch.rand(channels, generator=generator),
        f"{prefix}.num_batches_tracked": torch.tensor(1000, dtype=torch.int64),
    }


def _conv(name: str, out_channels: int, in_channels: int, kernel: int, generator: torch.Generator) -> dict:
    fan_in = in_channels * kernel * kernel
    return {name: torch.randn(out_channels, in_channels, kernel, kernel, generator=generator) * (2 / fan_in) ** 0.5}


def mmhuman3d_hmr_state_dict(seed: int = 0) -> OrderedDict:
    """Every entry of an mmhuman3d ``resnet50_hmr_*`` checkpoint's state_dict, with its shape, in
    random values (facts from ../shared/reference/hmr_smpl_metrics.md §1.7)."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    state.update(_conv("backbone.conv1.weight", 64, 3, 7, g))
    state.update(_batch_norm("backbone.bn1", 64, g))
    in_channels = 64
    for stage, (blocks, planes) in enumerate(RESNET50_STAGES, start=1):
        for block in range(blocks):
            prefix = f"backbone.layer{stage}.{block}"
            state.update(_conv(f"{prefix}.conv1.weight", planes, in_channels, 1, g))
            state.update(_batch_norm(f"{prefix}.bn1", planes, g))
            state.update(_conv(f"{prefix}.conv2.weight", planes, planes, 3, g))
            state.update(_batch_norm(f"{prefix}.bn2", planes, g))
            state.update(_conv(f"{prefix}.conv3.weight", planes * 4, planes, 1, g))
            state.update(_batch_norm(f"{prefix}.bn3", planes * 4, g))
            if block == 0:
                state.update(_conv(f"{prefix}.downsample.0.weight", planes * 4, in_channels, 1, g))
                state.update(_batch_norm(f"{prefix}.downsample.1", planes * 4, g))
            in_channels = planes * 4
    head = {
        "head.init_pose": (1, 144), "head.init_shape": (1, 10), "head.init_cam": (1, 3),
        "head.fc1.weight": (1024, 2205), "head.fc1.bias": (1024,), "head.fc2.weight": (1024, 1024),
        "head.fc2.bias": (1024,), "head.decpose.weight": (144, 1024), "head.decpose.bias": (144,),
        "head.decshape.weight": (10, 1024), "head.decshape.bias": (10,), "head.deccam.weight": (3, 1024),
        "head.deccam.bias": (3,),
    }  # fmt: skip
    for key, shape in head.items():
        fan_in = shape[-1] if key.endswith("weight") else 1024
        state[key] = torch.randn(*shape, generator=g) / fan_in**0.5
    state["head.init_cam"] = torch.tensor([[0.9, 0.01, 0.2]])
    disc = {"disc.pose_discriminator.conv_blocks.conv_0.weight": (32, 9, 1, 1),
            "disc.pose_discriminator.conv_blocks.conv_0.bias": (32,),
            "disc.pose_discriminator.conv_blocks.conv_1.weight": (32, 32, 1, 1),
            "disc.pose_discriminator.conv_blocks.conv_1.bias": (32,),
            "disc.full_pose_discriminator.fc_blocks.regressor_fc_0.weight": (1024, 736),
            "disc.full_pose_discriminator.fc_blocks.regressor_fc_0.bias": (1024,),
            "disc.shape_discriminator.fc_blocks.regressor_fc_0.weight": (5, 10)}
    disc.update({f"disc.pose_discriminator.fc_layer.{i}.{p}": ((1, 32) if p == "weight" else (1,))
                 for i in range(23) for p in ("weight", "bias")})
    for key, shape in disc.items():
        state[key] = torch.randn(*shape, generator=g)
    for model in ("body_model_train", "body_model_test"):
        for key, shape in {"betas": (1, 10), "global_orient": (1, 3), "body_pose": (1, 69), "transl": (1, 3),
                           "shapedirs": (6890, 3, 10), "v_template": (6890, 3), "J_regressor": (24, 6890),
                           "posedirs": (207, 20670), "lbs_weights": (6890, 24)}.items():
            state[f"{model}.{key}"] = torch.zeros(shape)
        state[f"{model}.faces_tensor"] = torch.zeros(13776, 3, dtype=torch.int64)
        state[f"{model}.parents"] = torch.zeros(24, dtype=torch.int64)
        state[f"{model}.vertex_joint_selector.extra_joints_idxs"] = torch.zeros(21, dtype=torch.int64)
    state["body_model_train.joints_regressor_extra"] = torch.zeros(9, 6890)
    state["body_model_test.joints_regressor"] = torch.zeros(17, 6890)
    return OrderedDict(state)


def mmhuman3d_meta() -> dict:
    """mmcv runner metadata as published checkpoints carry it, numpy scalars included."""
    return {"mmcv_version": "1.4.8", "time": "Sat Apr 16 10:44:12 2022", "epoch": 50, "iter": 156250,
            "config": "model = dict(type='ImageBodyModelEstimator', ...)",
            "hook_msgs": {"last_ckpt": "work_dirs/epoch_50.pth", "best_score": np.float64(60.49)}}
