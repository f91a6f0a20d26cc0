"""Synthetic checkpoints in the released MA-HMR / SAT-HMR layout, written from the layout's
description (shapes per key), independently of meshrec-mahmr's network code."""

from __future__ import annotations

import math

import torch

FULL = dict(input_size=1288, embed=768, depth=12, hidden=768, layers=6, ffn=2048, queries=50)
SMALL = dict(input_size=224, embed=64, depth=5, hidden=64, layers=3, ffn=96, queries=7)
SMALL_OVERRIDES = dict(num_heads=4, nheads=4)  # heads are not visible in the shapes


def upstream_shapes(dims: dict = FULL, kid: bool = True, fov: bool = True, dn: bool = False,
                    smpl: bool = True) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``Model.state_dict()`` of gouba2333/MA-HMR ``models/sat_model.py`` (SAT-HMR:
    kid=False, fov=False, dn=True)."""
    C, D, F = dims["embed"], dims["hidden"], dims["ffn"]
    betas = 11 if kid else 10
    grid0 = dims["input_size"] // 14
    zdepth = math.ceil(math.log2(dims["input_size"] / 28))
    shapes: dict[str, tuple[int, ...]] = {
        "cam_intrinsics": (3, 3), "mean_pose": (144,), "mean_shape": (betas,),
        "z_order_map": (1 << zdepth,) * 2, "y_coords": (1 << zdepth,) * 2, "x_coords": (1 << zdepth,) * 2,
    }

    def linear(name, out, inp):
        shapes[f"{name}.weight"] = (out, inp)
        shapes[f"{name}.bias"] = (out,)

    def norm(name, width):
        shapes[f"{name}.weight"] = (width,)
        shapes[f"{name}.bias"] = (width,)

    def mlp(name, inp, hidden, out, layers):
        dims_ = [inp] + [hidden] * (layers - 1) + [out]
        for i in range(layers):
            linear(f"{name}.layers.{i}", dims_[i + 1], dims_[i])

    if smpl:
        shapes.update({
            "human_model.layer_n.shapedirs": (6890, 3, betas), "human_model.layer_n.v_template": (6890, 3),
            "human_model.layer_n.J_regressor": (24, 6890), "human_model.layer_n.posedirs": (207, 20670),
            "human_model.layer_n.lbs_weights": (6890, 24), "human_model.layer_n.parents": (24,),
            "human_model.layer_n.faces_tensor": (13776, 3),
            "human_model.layer_n.vertex_joint_selector.extra_joints_idxs": (21,),
        })
    for group, count in (("encoder.blocks", dims["depth"]), ("encoder.additional_blocks", 3)):
        for i in range(count):
            b = f"{group}.{i}"
            norm(f"{b}.norm1", C)
            linear(f"{b}.attn.qkv", 3 * C, C)
            linear(f"{b}.attn.proj", C, C)
            shapes[f"{b}.ls1.gamma"] = (C,)
            norm(f"{b}.norm2", C)
            linear(f"{b}.mlp.fc1", 4 * C, C)
            linear(f"{b}.mlp.fc2", C, 4 * C)
            shapes[f"{b}.ls2.gamma"] = (C,)
    norm("encoder.norm", C)
    norm("enc_inter_norm", C)
    mlp("scale_head", C, C, 2, 4)
    for i in range(2):
        shapes[f"encoder_patch_proj.{i}.weight"] = (C, 3, 14, 14)
        shapes[f"encoder_patch_proj.{i}.bias"] = (C,)
    shapes["level_embed"] = (3, D)
    if fov:
        mlp("fov_head", C, C, 1, 4)
    shapes["encoder_cr_token"] = (1, C)
    shapes["encoder_pos_embeds"] = (grid0, grid0, C)
    for i in range(dims["layers"]):
        layer = f"decoder.decoder.layers.{i}"
        names = ["sa_qcontent_proj", "sa_qpos_proj", "sa_kcontent_proj", "sa_kpos_proj", "sa_v_proj", "sa_out_proj",
                 "ca_qcontent_proj", "ca_kcontent_proj", "ca_kpos_proj", "ca_v_proj", "ca_qpos_sine_proj",
                 "ca_out_proj"] + (["ca_qpos_proj"] if i == 0 else [])
        for name in names:
            linear(f"{layer}.{name}", D, D)
        linear(f"{layer}.linear1", F, D)
        linear(f"{layer}.linear2", D, F)
        for n in ("norm1", "norm2", "norm3"):
            norm(f"{layer}.{n}", D)
    norm("decoder.decoder.norm", D)
    mlp("decoder.decoder.query_scale", D, D, D, 2)
    mlp("decoder.decoder.ref_point_head", 2 * D, D, D, 2)
    mlp("decoder.decoder.ref_anchor_head", D, D, 2, 2)
    for prefix in ("decoder.decoder.bbox_embed", "bbox_embed"):
        for i in range(dims["layers"]):
            mlp(f"{prefix}.{i}", D, D, 4, 3)
    linear("feature_proj", D, C)
    for i in range(dims["layers"]):
        mlp(f"pose_head.{i}", D, D, 144, 6)
        mlp(f"shape_head.{i}", D, D, betas, 5)
    mlp("cam_head", D, D // 2, 3, 3)
    linear("conf_head", 1, D)
    shapes["refpoint_embed.weight"] = (dims["queries"], 4)
    shapes["tgt_embed.weight"] = (dims["queries"], D)
    if dn:
        linear("dn_enc", D, 72 + betas)
    return shapes


def synthetic_state(dims: dict = SMALL, seed: int = 0, **layout) -> dict[str, torch.Tensor]:
    """Random tensors in the layout (bbox_embed duplicates share values, as upstream's aliases)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in upstream_shapes(dims, **layout).items():
        if key.startswith("decoder.decoder.bbox_embed"):
            continue
        if key in ("z_order_map", "y_coords", "x_coords") or key.startswith("human_model"):
            state[key] = torch.zeros(shape, dtype=torch.int64 if "map" in key or "coords" in key else torch.float32)
            continue
        fan = shape[-1] if len(shape) > 1 else 1
        if len(shape) == 4:
            fan = shape[1] * shape[2] * shape[3]
        std = 1 / math.sqrt(fan) if len(shape) > 1 else 0.1
        value = torch.randn(shape, generator=g) * std
        if key.endswith(("norm1.weight", "norm2.weight", "norm3.weight", "norm.weight", "gamma")):
            value += 1
        state[key] = value
    for key in list(state):
        if key.startswith("bbox_embed."):
            state["decoder.decoder." + key] = state[key]
    # the Z-order table and its coordinates (x in the low bit)
    side = state["z_order_map"].shape[0]
    ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    z = torch.zeros_like(ys)
    for bit in range(side.bit_length() - 1):
        z += (((xs >> bit) & 1) << (2 * bit)) + (((ys >> bit) & 1) << (2 * bit + 1))
    state["z_order_map"], state["y_coords"], state["x_coords"] = z, ys.clone(), xs.clone()
    f = dims["input_size"] / (2 * math.tan(math.pi / 6))
    state["cam_intrinsics"] = torch.tensor([[f, 0, dims["input_size"] / 2], [0, f, dims["input_size"] / 2], [0, 0, 1.0]])
    return state
