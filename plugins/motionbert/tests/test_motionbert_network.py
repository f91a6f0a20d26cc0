"""The network against an independent float64 recomputation, and its output contract."""

from __future__ import annotations

import math

import pytest
import torch

from meshrec.rotations import rodrigues
from motionbert_small import SMALL, body, small_network


def _linear(state, name, x):
    return x @ state[f"{name}.weight"].T + state[f"{name}.bias"]


def _layer_norm(state, name, x, eps=1e-6):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * state[f"{name}.weight"] + state[f"{name}.bias"]


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _attention(state, name, x, heads, temporal, frames):
    """x (B, T, J, C) -> (B, T, J, C); softmax(q k^T / sqrt(c)) v per head, among joints of a frame
    (spatial) or frames of a joint (temporal)."""
    b, t, j, c = x.shape
    d = c // heads
    qkv = _linear(state, f"{name}.qkv", x).reshape(b, t, j, 3, heads, d)
    q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]  # (B, T, J, H, d)
    if temporal:
        scores = torch.einsum("btjhd,bsjhd->bjhts", q, k) / math.sqrt(d)
        out = torch.einsum("bjhts,bsjhd->btjhd", scores.softmax(-1), v)
    else:
        scores = torch.einsum("btjhd,btkhd->bthjk", q, k) / math.sqrt(d)
        out = torch.einsum("bthjk,btkhd->btjhd", scores.softmax(-1), v)
    return _linear(state, f"{name}.proj", out.reshape(b, t, j, c))


def _sublayers(state, name, x, heads, kind):
    x = x + _attention(state, f"{name}.attn_{kind}", _layer_norm(state, f"{name}.norm1_{kind}", x), heads,
                       kind == "t", x.shape[1])
    hidden = _gelu(_linear(state, f"{name}.mlp_{kind}.fc1", _layer_norm(state, f"{name}.norm2_{kind}", x)))
    return x + _linear(state, f"{name}.mlp_{kind}.fc2", hidden)


def _representation(state, x, depth, heads):
    t = x.shape[1]
    h = _linear(state, "joints_embed", x) + state["pos_embed"][:, None] + state["temp_embed"][:, :t]
    for i in range(depth):
        st = _sublayers(state, f"blocks_st.{i}", _sublayers(state, f"blocks_st.{i}", h, heads, "s"), heads, "t")
        ts = _sublayers(state, f"blocks_ts.{i}", _sublayers(state, f"blocks_ts.{i}", h, heads, "t"), heads, "s")
        alpha = _linear(state, f"ts_attn.{i}", torch.cat([st, ts], -1)).softmax(-1)
        h = st * alpha[..., :1] + ts * alpha[..., 1:]
    return torch.tanh(_linear(state, "pre_logits.fc", _layer_norm(state, "norm", h)))


def _batch_norm(state, name, x):
    return ((x - state[f"{name}.running_mean"]) / torch.sqrt(state[f"{name}.running_var"] + 1e-5)
            * state[f"{name}.weight"] + state[f"{name}.bias"])


def _gram_schmidt_columns(six):
    """SPIN's layout: the six numbers are R[:, :2] row by row."""
    a = six.reshape(*six.shape[:-1], 3, 2)
    b1 = a[..., 0] / a[..., 0].norm(dim=-1, keepdim=True)
    a2 = a[..., 1] - (b1 * a[..., 1]).sum(-1, keepdim=True) * b1
    b2 = a2 / a2.norm(dim=-1, keepdim=True)
    return torch.stack([b1, b2, torch.linalg.cross(b1, b2)], dim=-1)


def functional_mesh(state, x, depth, heads):
    n, t = x.shape[:2]
    rep = _representation({k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}, x,
                          depth, heads)
    head = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    feat = rep.reshape(n, t, -1)
    pose = torch.relu(_batch_norm(head, "bn1", _linear(head, "fc1", feat))) @ head["head_pose.weight"].T
    pose = pose + head["head_pose.bias"] + head["init_pose"]
    shape = torch.relu(_batch_norm(head, "bn2", _linear(head, "fc2", feat.mean(1))))
    betas = _linear(head, "head_shape", shape) + head["init_shape"]
    return rep, _gram_schmidt_columns(pose.reshape(n, t, 24, 6)), betas


def test_network_equals_functional_recomputation_float64(body_models_dir):
    network = small_network(seed=1)
    state = network.state_dict()
    x = torch.rand(2, 7, 17, 3, dtype=torch.float64) * 2 - 1
    rep, rotmat, betas = functional_mesh(state, x, SMALL["depth"], SMALL["num_heads"])
    with torch.no_grad():
        assert (network.backbone.get_representation(x) - rep).abs().max() < 1e-10
        out = network.regress(x)
    assert (out["rotmat"] - rotmat).abs().max() < 1e-10
    assert (out["betas"] - betas[:, None]).abs().max() < 1e-10


def test_forward_returns_upstream_outputs_in_millimetres(motionbert_body_models):
    smpl, regressor = body(motionbert_body_models)
    network = small_network(seed=2).set_body_model(smpl, regressor)
    x = torch.rand(2, 5, 17, 3, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        outputs = network(x)
        parts = network.regress(x)
    assert isinstance(outputs, list) and len(outputs) == 1
    out = outputs[0]
    assert out["theta"].shape == (2, 5, 82) and out["verts"].shape == (2, 5, 6890, 3)
    assert out["kp_3d"].shape == (2, 5, 17, 3)
    rotmat = parts["rotmat"].reshape(-1, 24, 3, 3)
    assert (rodrigues(out["theta"][..., :72].reshape(-1, 24, 3)) - rotmat).abs().max() < 1e-9
    assert (out["theta"][:, :, 72:] - out["theta"][:, :1, 72:]).abs().max() == 0  # one set of betas per clip
    betas = out["theta"][..., 72:].reshape(-1, 10)
    smpl_out = smpl(betas=betas, body_pose=rotmat[:, 1:], global_orient=rotmat[:, :1], pose2rot=False)
    assert (out["verts"].reshape(-1, 6890, 3) - smpl_out.vertices * 1000).abs().max() < 1e-9
    dense = regressor.to_dense()
    assert (out["kp_3d"].reshape(-1, 17, 3) - dense @ (smpl_out.vertices * 1000)).abs().max() < 1e-8


def test_network_without_body_model_says_what_to_do():
    network = small_network()
    with pytest.raises(RuntimeError, match="set_body_model"):
        network(torch.zeros(1, 3, 17, 3, dtype=torch.float64))


@pytest.mark.parametrize("shape, match", [((1, 3, 16, 3), "17"), ((1, 25, 17, 3), "1 to 24 frames"),
                                          ((1, 0, 17, 3), "1 to 24 frames")])
def test_network_rejects_bad_clips(shape, match):
    with pytest.raises(ValueError, match=match):
        small_network().regress(torch.zeros(shape, dtype=torch.float64))


@pytest.mark.slow
def test_parameter_count_of_released_backbone():
    from meshrec_motionbert.model import DSTformer

    backbone = DSTformer()
    assert sum(p.numel() for p in backbone.parameters()) == 42_466_317
    assert len(backbone.state_dict()) == 260
